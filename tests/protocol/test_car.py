import random

import pytest

from protocol.car import MAX_FRAME, CarReader, encode_block, encode_header
from protocol.cid import RAW, Cid, IpfsFormatError, encode_uvarint
from protocol.unixfs import Block, DirectoryBuilder, FileEntry, dag_order, import_bytes, walk
from tests.protocol.ipfs_vectors import EMPTY_FILE, TREE, chacha_bytes


def sample_dag() -> tuple[list[Block], Cid]:
    builder = DirectoryBuilder()
    blocks: list[Block] = []
    for path, data in {"a": b"a\n", "d/big": chacha_bytes("car-seed", 600_000), "e": b""}.items():
        file_blocks, link = import_bytes(data)
        blocks += file_blocks
        builder.add_file(path, link)
    directory_blocks, root = builder.finish()
    return blocks + directory_blocks, root.cid


def car_of(blocks: list[Block], root: Cid) -> bytes:
    store = {block.cid: block.data for block in blocks}
    order = list(dag_order(root, store.__getitem__))
    return encode_header([root]) + b"".join(encode_block(cid, store[cid]) for cid in order)


def read(data: bytes, pieces: list[int] | None = None) -> tuple[CarReader, list[Block]]:
    reader = CarReader()
    out: list[Block] = []
    pos = 0
    for n in pieces or [len(data)]:
        reader.feed(data[pos : pos + n])
        pos += n
        while (block := reader.next_block()) is not None:
            out.append(block)
    reader.feed(data[pos:])
    while (block := reader.next_block()) is not None:
        out.append(block)
    reader.finished()
    return reader, out


def test_header_bytes():
    root = Cid.parse(EMPTY_FILE)
    header = encode_header([root])
    body = (
        b"\xa2\x65roots\x81\xd8\x2a\x58\x23\x00" + bytes(root) + b"\x67version\x01"
    )  # fmt: skip
    assert header == encode_uvarint(len(body)) + body
    v1 = Cid.for_block(b"", version=1, codec=RAW)
    # The well-known prefix of a CARv1 with one CIDv1 root (e.g. from `ipfs dag export`).
    assert encode_header([v1]).startswith(bytes.fromhex("3aa265726f6f747381d82a5825000155"))
    assert encode_header([]) == b"\x11\xa2\x65roots\x80\x67version\x01"


def test_block_section():
    cid = Cid.for_block(b"data", version=1, codec=RAW)
    assert encode_block(cid, b"data") == bytes([36 + 4]) + bytes(cid) + b"data"


def test_round_trip_in_random_pieces():
    blocks, root = sample_dag()
    data = car_of(blocks, root)
    reader, got = read(data)
    assert reader.roots == (root,)
    store = {block.cid: block.data for block in got}
    assert list(dag_order(root, store.__getitem__)) == [block.cid for block in got]
    rng = random.Random(3)
    for _ in range(3):
        pieces = [rng.choice([1, 7, 100, 40_000, 300_000]) for _ in range(200)]
        assert read(data, pieces)[1] == got
    files = {
        e.path: b"".join(e.chunks)
        for e in walk(root, store.__getitem__)
        if isinstance(e, FileEntry)
    }
    assert files["d/big"] == chacha_bytes("car-seed", 600_000)


def test_byte_by_byte_header_and_roots():
    roots = [Cid.parse(TREE), Cid.for_block(b"", version=1, codec=RAW)]
    data = encode_header(roots) + encode_block(roots[1], b"")
    reader = CarReader()
    for i, byte in enumerate(data):
        assert reader.next_block() is None
        reader.feed(bytes([byte]))
        if i < len(encode_header(roots)) - 1:
            assert reader.roots is None
    assert reader.roots == tuple(roots)
    assert reader.next_block() == Block(roots[1], b"")
    assert reader.next_block() is None
    reader.finished()


def test_truncated_input():
    blocks, root = sample_dag()
    data = car_of(blocks, root)
    header_length = len(encode_header([root]))
    for cut in (header_length + 1, header_length + 50, len(data) - 1):
        with pytest.raises(IpfsFormatError, match="ended in the middle of block section"):
            read(data[:cut])
    with pytest.raises(IpfsFormatError, match="ended inside its header"):
        read(data[: header_length - 1])
    with pytest.raises(IpfsFormatError, match="ended before its header"):
        read(b"")


def test_oversize_section_is_refused_before_it_arrives():
    reader = CarReader()
    reader.feed(encode_header([Cid.parse(EMPTY_FILE)]) + encode_uvarint(MAX_FRAME + 1))
    with pytest.raises(IpfsFormatError, match="over the 4194304-byte limit"):
        reader.next_block()
    with pytest.raises(IpfsFormatError, match="header is 70000 bytes"):
        CarReader().feed(encode_uvarint(70_000))
    with pytest.raises(IpfsFormatError, match="over 9 bytes"):
        read(encode_header([]) + b"\xff" * 10)


def test_wrong_block_is_rejected_naming_its_cid():
    cid = Cid.for_block(b"right", version=1, codec=RAW)
    data = encode_header([cid]) + encode_block(cid, b"wrong")
    with pytest.raises(IpfsFormatError, match=f"block {cid} does not match its CID"):
        read(data)


def section(body: bytes) -> bytes:
    return encode_uvarint(len(body)) + body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode_header([]) + b"\x00", "is empty"),
        (encode_header([]) + section(b"\x01\x55\x12"), "block section 1: data ends in the middle"),
        (encode_header([]) + section(b"\x02\x55"), "version 2"),
        (b"\x0a\xa1\x67version\x02", "CAR version 2 is not supported"),  # the CARv2 pragma
        (section(b"\xa1\x67versioo\x01"), "version None"),
        (section(b"\x80"), "not a map"),
        (section(b"\xa1\x01\x01"), "non-string"),
        (section(b"\xa1\x61"), "truncated"),
        (section(b"\xf9\x00\x00"), "unsupported CBOR"),
        (section(b"\x18\x01"), "over-long"),
        (section(b"\xa2\x65roots\xd8\x2b\x40\x67version\x01"), "unsupported CBOR item"),
        (section(b"\xa2\x65roots\x81\xd8\x2a\x41\x01\x67version\x01"), "malformed CID link"),
        (section(b"\xa2\x65roots\x80\x67version\x01\x00"), "trailing bytes"),
        (section(b"\xa2\x65roots\x81\x01\x67version\x01"), "roots must be a list of CIDs"),
        (section(b"\xa2\x65roots\x80\x65roots\x80"), "repeated key"),
    ],
)
def test_malformed_streams(data, message):
    with pytest.raises(IpfsFormatError, match=message):
        read(data)


def test_finished_with_unread_blocks_is_a_caller_error():
    cid = Cid.for_block(b"x", version=1, codec=RAW)
    reader = CarReader()
    reader.feed(encode_header([cid]) + encode_block(cid, b"x"))
    with pytest.raises(ValueError, match="unread blocks"):
        reader.finished()
