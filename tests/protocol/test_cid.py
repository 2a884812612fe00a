import base64
import subprocess
import sys

import pytest

from protocol.base58 import b58encode
from protocol.cid import (
    DAG_PB,
    RAW,
    SHA2_256,
    Cid,
    IpfsFormatError,
    decode_uvarint,
    encode_uvarint,
)
from protocol.errors import RemoteProtocolError
from tests.protocol.ipfs_vectors import EMPTY_DIRECTORY, EMPTY_FILE, FILES, TREE, TREE_SUB

# Well-known CIDv1 forms, as kubo prints them.
EMPTY_RAW_V1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIRECTORY_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def test_new_modules_stay_pure():
    forbidden = ["trio", "libp2p", "docker", "boto3", "botocore", "yaml", "socket", "asyncio"]
    code = (
        "import sys\n"
        "import protocol.cid, protocol.unixfs, protocol.car\n"
        f"print(sorted(m for m in {forbidden!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_error_is_a_remote_protocol_error():
    assert issubclass(IpfsFormatError, RemoteProtocolError)


# --- varints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (16384, "808001")],
)
def test_uvarint_known_encodings(value, encoded):
    assert encode_uvarint(value).hex() == encoded
    assert decode_uvarint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@pytest.mark.parametrize("value", [0, 1, 2**7 - 1, 2**7, 2**35 + 17, 2**63 - 1])
def test_uvarint_round_trip_with_offset(value):
    buf = b"xyz" + encode_uvarint(value) + b"tail"
    assert decode_uvarint(buf, 3) == (value, len(buf) - 4)


def test_uvarint_limits():
    assert len(encode_uvarint(2**63 - 1)) == 9
    with pytest.raises(ValueError):
        encode_uvarint(2**63)
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\xff\xff", b"\x01\x80"])
def test_uvarint_truncated(raw):
    offset = 1 if raw == b"\x01\x80" else 0
    with pytest.raises(IpfsFormatError, match="middle of a varint"):
        decode_uvarint(raw, offset)


def test_uvarint_longer_than_nine_bytes():
    with pytest.raises(IpfsFormatError, match="longer than 9 bytes"):
        decode_uvarint(b"\x80" * 9 + b"\x01")


# --- text and binary forms --------------------------------------------------------

ALL_V0 = [cid for _, _, cid in FILES] + [EMPTY_DIRECTORY, TREE, TREE_SUB]


@pytest.mark.parametrize("text", ALL_V0)
def test_v0_round_trips(text):
    cid = Cid.parse(text)
    assert (cid.version, cid.codec) == (0, DAG_PB)
    assert cid.multihash[:2] == b"\x12\x20" and len(cid.multihash) == 34
    assert str(cid) == text
    assert bytes(cid) == cid.multihash
    assert Cid.from_bytes(bytes(cid)) == cid
    assert cid.prefix == b"\x00\x70\x12\x20"
    assert cid.hash_code == SHA2_256 and len(cid.digest) == 32
    assert repr(cid) == f"Cid({text!r})"


def test_v1_known_strings():
    empty_raw = Cid.for_block(b"", version=1, codec=RAW)
    assert str(empty_raw) == EMPTY_RAW_V1
    assert Cid.parse(EMPTY_RAW_V1) == empty_raw
    empty_dir = Cid.parse(EMPTY_DIRECTORY)
    v1 = Cid(1, DAG_PB, empty_dir.multihash)
    assert str(v1) == EMPTY_DIRECTORY_V1
    assert Cid.parse(EMPTY_DIRECTORY_V1) == v1
    assert v1 != empty_dir  # same hash, different CID
    assert bytes(v1) == b"\x01\x70" + empty_dir.multihash
    assert v1.prefix == b"\x01\x70\x12\x20"
    assert empty_raw.prefix == b"\x01\x55\x12\x20"


def test_v1_multibase_forms_agree():
    cid = Cid.parse(EMPTY_RAW_V1)
    raw = bytes(cid)
    assert Cid.parse("z" + b58encode(raw)) == cid
    assert Cid.parse("f" + raw.hex()) == cid
    assert Cid.parse("b" + base64.b32encode(raw).decode().lower().rstrip("=")) == cid


def test_cids_are_hashable_values():
    a = Cid.parse(EMPTY_FILE)
    b = Cid.from_bytes(bytes(a))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a CID"),
        ("hello", "not a CID: expected"),
        ("Qm" + "0" * 44, "not a valid CIDv0"),  # "0" is not base58
        (EMPTY_RAW_V1.upper(), "not a CID: expected"),  # "B" (upper base32) is not accepted
        ("b" + EMPTY_RAW_V1[1:].upper(), "lowercase base32"),
        ("bafkrei", "bad length"),
        ("bafkreia", "not a valid CID: data ends in the middle of a CID"),
        ("b" + EMPTY_RAW_V1[1:-1] + "v", "canonical"),  # stray trailing bits
        ("f0155122", "base16"),  # odd length
        ("F01551220", "not a CID: expected"),
        ("f 01551220", "base16"),
        ("z" + b58encode(bytes(Cid.parse(EMPTY_FILE))), "CIDv0 cannot be multibase"),
        ("f" + (b"\x02\x55" + b"\x12\x20" + bytes(32)).hex(), "version 2"),
        ("f" + (b"\x01\x55\x12\x20" + bytes(31)).hex(), "middle of a CID"),
        ("f" + (b"\x01\x55\x12\x20" + bytes(33)).hex(), "unexpected bytes"),
        ("f" + (b"\x01\xd5\x00\x12\x20" + bytes(32)).hex(), "non-minimal"),
        ("Q" * 600, "too long"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(IpfsFormatError, match=message):
        Cid.parse(text)


def test_from_bytes_rejects_truncated_v0():
    with pytest.raises(IpfsFormatError, match="middle of a CID"):
        Cid.from_bytes(bytes(Cid.parse(EMPTY_FILE))[:-1])


def test_constructor_enforces_shape():
    digest = Cid.parse(EMPTY_FILE).multihash
    with pytest.raises(IpfsFormatError, match="CIDv0"):
        Cid(0, RAW, digest)
    with pytest.raises(IpfsFormatError, match="version 3"):
        Cid(3, DAG_PB, digest)
    with pytest.raises(IpfsFormatError, match="digest"):
        Cid(1, RAW, digest[:-1])
    with pytest.raises(ValueError):
        Cid.for_block(b"", version=0, codec=RAW)


def test_decode_from_reads_a_cid_followed_by_data():
    cid = Cid.for_block(b"x", version=1, codec=RAW)
    buf = b"??" + bytes(cid) + b"payload"
    assert Cid.decode_from(buf, 2) == (cid, 2 + len(bytes(cid)))
    v0 = Cid.parse(EMPTY_FILE)
    assert Cid.decode_from(bytes(v0) + b"x") == (v0, 34)


# --- blocks -----------------------------------------------------------------------


def test_for_block_and_verify():
    block = b"\x0a\x04\x08\x02\x18\x00"
    cid = Cid.for_block(block)
    assert str(cid) == EMPTY_FILE
    cid.verify(block)
    with pytest.raises(IpfsFormatError, match=f"block {EMPTY_FILE} does not match its CID"):
        cid.verify(block[:-1] + b"\x01")


def test_verify_refuses_other_hash_functions():
    sha512 = Cid(1, RAW, b"\x13\x40" + bytes(64))
    with pytest.raises(IpfsFormatError, match="sha2-512"):
        sha512.verify(b"")


def test_from_prefix():
    block = b"some bytes"
    for cid in (Cid.for_block(block), Cid.for_block(block, version=1, codec=RAW)):
        assert Cid.from_prefix(cid.prefix, block) == cid
    with pytest.raises(IpfsFormatError, match="blake2b-256"):
        Cid.from_prefix(b"\x01\x55" + encode_uvarint(0xB220) + b"\x20", block)
    with pytest.raises(IpfsFormatError, match="extra bytes"):
        Cid.from_prefix(b"\x01\x55\x12\x20\x00", block)
    with pytest.raises(IpfsFormatError, match="CIDv0 with codec raw"):
        Cid.from_prefix(b"\x00\x55\x12\x20", block)
    with pytest.raises(IpfsFormatError, match="varint"):
        Cid.from_prefix(b"\x01\x55\x12", block)


def test_an_inline_cid_carries_its_block() -> None:
    from protocol.cid import IDENTITY, RAW

    data = b"tiny\n"
    cid = Cid(1, RAW, bytes([IDENTITY, len(data)]) + data)
    assert cid.inline_data == data
    cid.verify(data)
    with pytest.raises(IpfsFormatError, match="inlined"):
        cid.verify(b"other")
    assert Cid.parse(str(cid)) == cid
    sha = Cid.for_block(data, version=1, codec=RAW)
    assert sha.inline_data is None
