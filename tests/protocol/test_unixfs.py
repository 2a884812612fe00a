import functools
import random
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.cid import DAG_PB, RAW, Cid, IpfsFormatError, encode_uvarint
from protocol.unixfs import (
    CHUNK_SIZE,
    HAMT_FANOUT,
    HAMT_THRESHOLD,
    MAX_LINKS,
    Block,
    DirectoryBuilder,
    DirectoryEntry,
    FileEntry,
    FileImporter,
    Link,
    _build_shard,
    _hamt_hash,
    child_cids,
    dag_order,
    decode_node,
    directory_block,
    directory_blocks,
    import_bytes,
    sharded_directory,
    walk,
)
from tests.protocol.ipfs_vectors import (
    EMPTY_DIRECTORY,
    EMPTY_FILE,
    FILES,
    PAD_AT_THRESHOLD,
    PAD_OVER_THRESHOLD,
    TREE,
    TREE_EMPTY_DIRECTORIES,
    TREE_SUB,
    Tree,
    chacha_bytes,
    chacha_pieces,
    content,
    deep_sharded_tree,
    nested_sharded_tree,
    threshold_tree,
    tree_files,
)

MiB = 1024 * 1024


@functools.cache
def vector_content(description: str) -> bytes:
    spec = next(spec for d, spec, _ in FILES if d == description)
    return content(spec)


@functools.cache
def vector_import(description: str) -> tuple[list[Block], Link]:
    return import_bytes(vector_content(description))


def store_of(blocks: list[Block]) -> dict[Cid, bytes]:
    return {block.cid: block.data for block in blocks}


def getter(store: dict[Cid, bytes], calls: list[Cid] | None = None) -> Callable[[Cid], bytes]:
    def get_block(cid: Cid) -> bytes:
        if calls is not None:
            calls.append(cid)
        return store[cid]

    return get_block


def read_all(root: Cid, get_block: Callable[[Cid], bytes]) -> dict[str, bytes | None]:
    """path -> content (None for directories), in walk order."""
    out: dict[str, bytes | None] = {}
    for entry in walk(root, get_block):
        if isinstance(entry, DirectoryEntry):
            out[entry.path] = None
        else:
            data = b"".join(entry.chunks)
            assert len(data) == entry.size
            out[entry.path] = data
    return out


def depth(cid: Cid, store: dict[Cid, bytes]) -> int:
    node = decode_node(cid, store[cid])
    return 1 + max((depth(link.cid, store) for link in node.links), default=0)


# --- kubo's CIDs ------------------------------------------------------------------


@pytest.mark.parametrize(("description", "cid"), [(d, c) for d, _, c in FILES])
def test_file_vectors(description, cid):
    blocks, link = vector_import(description)
    assert str(link.cid) == cid
    assert link.name == ""
    assert blocks[-1].cid == link.cid  # root last
    # Tsize of the root counts every block of the (duplicate-free) DAG once.
    assert link.tsize == sum(len(block.data) for block in blocks)
    assert read_all(link.cid, getter(store_of(blocks))) == {"": vector_content(description)}


def test_empty_file_and_directory_blocks():
    blocks, link = import_bytes(b"")
    assert [block.data for block in blocks] == [b"\x0a\x04\x08\x02\x18\x00"]
    assert str(link.cid) == EMPTY_FILE and link.tsize == 6
    block = directory_block([])
    assert block.data == b"\x0a\x02\x08\x01" and str(block.cid) == EMPTY_DIRECTORY
    assert decode_node(block.cid, block.data).kind == "directory"


def build_tree() -> tuple[list[Block], Link]:
    builder = DirectoryBuilder()
    blocks: list[Block] = []
    for path, data in tree_files().items():
        file_blocks, link = import_bytes(data)
        blocks += file_blocks
        builder.add_file(path, link)
    for path in TREE_EMPTY_DIRECTORIES:
        builder.add_directory(path)
    directory_blocks, root = builder.finish()
    return blocks + directory_blocks, root


def test_tree_vector():
    blocks, root = build_tree()
    assert str(root.cid) == TREE
    store = store_of(blocks)
    links = {link.name: link for link in decode_node(root.cid, store[root.cid]).links}
    assert list(links) == ["a.txt", "empty", "sub", "z.bin"]  # sorted by name
    assert str(links["sub"].cid) == TREE_SUB
    assert str(links["empty"].cid) == EMPTY_DIRECTORY
    assert read_all(root.cid, getter(store)) == {
        "": None,
        "a.txt": b"a\n",
        "empty": None,
        "sub": None,
        "sub/b.txt": b"b\n",
        "sub/deeper": None,
        "sub/deeper/zero": b"",
        "z.bin": chacha_bytes("dir-seed", 300_000),
    }


def test_directory_blocks_come_children_first():
    blocks, root = build_tree()
    directory_blocks = DirectoryBuilder()
    for path, data in tree_files().items():
        directory_blocks.add_file(path, import_bytes(data)[1])
    directory_blocks.add_directory("empty")
    built, _ = directory_blocks.finish()
    position = {block.cid: i for i, block in enumerate(built)}
    for block in built:
        for cid in child_cids(block.cid, block.data):
            if cid in position:
                assert position[cid] < position[block.cid]
    assert built[-1].cid == root.cid


def test_directory_insertion_order_does_not_matter():
    _, first = build_tree()
    builder = DirectoryBuilder()
    builder.add_directory("sub/deeper")
    builder.add_directory("empty")
    for path, data in reversed(list(tree_files().items())):
        builder.add_file(path, import_bytes(data)[1])
    builder.add_directory("sub")
    assert builder.finish()[1] == first


# --- layout -----------------------------------------------------------------------


def test_exactly_one_chunk_is_a_single_leaf():
    blocks, link = vector_import("one chunk")
    assert len(blocks) == 1
    node = decode_node(link.cid, blocks[0].data)
    assert node.kind == "file" and node.links == () and node.filesize == CHUNK_SIZE


def test_one_chunk_plus_one_byte():
    blocks, link = vector_import("two chunks")
    store = store_of(blocks)
    root = decode_node(link.cid, store[link.cid])
    assert len(root.links) == 2 and root.data == b"" and root.filesize == CHUNK_SIZE + 1
    assert [link.name for link in root.links] == ["", ""]
    sizes = [decode_node(child.cid, store[child.cid]).filesize for child in root.links]
    assert sizes == [CHUNK_SIZE, 1]
    # blocksizes unpacked (tag 0x20 per value) after filesize, and Name always written.
    assert store[link.cid].endswith(
        b"\x08\x02\x18" + encode_uvarint(CHUNK_SIZE + 1) + b"\x20\x80\x80\x10\x20\x01"
    )
    assert b"\x12\x00\x18" in store[link.cid]


def test_one_full_level():
    blocks, link = vector_import("one full level")
    store = store_of(blocks)
    assert len(decode_node(link.cid, store[link.cid]).links) == MAX_LINKS
    assert depth(link.cid, store) == 2


def test_two_levels():
    blocks, link = vector_import("two levels")
    store = store_of(blocks)
    root = decode_node(link.cid, store[link.cid])
    assert len(root.links) == 2
    assert depth(link.cid, store) == 3
    full, partial = (decode_node(child.cid, store[child.cid]) for child in root.links)
    assert len(full.links) == MAX_LINKS and full.filesize == MAX_LINKS * CHUNK_SIZE
    assert len(partial.links) == 1 and partial.filesize == 1
    assert root.links[0].tsize == len(store[root.links[0].cid]) + sum(
        child.tsize for child in full.links
    )


def test_streaming_writes_in_odd_pieces_give_the_same_dag():
    data = vector_content("two levels")
    expected_blocks, expected = vector_import("two levels")
    importer = FileImporter()
    blocks: list[Block] = []
    rng = random.Random(7)
    pos = 0
    while pos < len(data):
        n = rng.choice([0, 1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 5, 2 * MiB])
        blocks += importer.write(memoryview(data)[pos : pos + n])
        pos += n
    assert importer.size == len(data)
    rest, link = importer.finish()
    assert link == expected
    assert blocks + rest == expected_blocks
    with pytest.raises(ValueError):
        importer.write(b"more")


def test_write_accepts_bytearray_and_copies_it():
    importer = FileImporter()
    buf = bytearray(b"hello ")
    assert importer.write(buf) == []
    buf[:] = b"XXXXXX"  # the caller reusing its buffer must not change what was written
    importer.write(bytearray(b"world"))
    blocks, link = importer.finish()
    assert link == import_bytes(b"hello world")[1]


def test_50_mib_import_keeps_memory_bounded():
    importer = FileImporter()
    count = 0
    tracemalloc.start()
    try:
        # Each 1 MiB input piece and the zeros behind it are counted too (~2 MiB).
        for piece in chacha_pieces("memory-seed", 50 * MiB, MiB):
            count += len(importer.write(piece))
        rest, link = importer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert importer.size == 50 * MiB
    assert count + len(rest) == 200 + 2 + 1  # leaves, two level-1 nodes, root
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


# --- directories ------------------------------------------------------------------


def test_nested_directories_with_empty_directory_and_empty_file():
    builder = DirectoryBuilder()
    files = {"outputs/a/b.txt": b"bee", "outputs/empty.txt": b"", "top": b"t" * 300_000}
    blocks: list[Block] = []
    for path, data in files.items():
        file_blocks, link = import_bytes(data)
        blocks += file_blocks
        builder.add_file(path, link)
    builder.add_directory("outputs/nothing/here")
    directory_blocks, root = builder.finish()
    assert root.tsize == sum(len(block.data) for block in blocks + directory_blocks)
    assert read_all(root.cid, getter(store_of(blocks + directory_blocks))) == {
        "": None,
        "outputs": None,
        "outputs/a": None,
        "outputs/a/b.txt": b"bee",
        "outputs/empty.txt": b"",
        "outputs/nothing": None,
        "outputs/nothing/here": None,
        "top": b"t" * 300_000,
    }


@pytest.mark.parametrize(
    "path", ["", "/abs", "a//b", "a/", "./a", "a/../b", "..", "nul\0l", "x/./y"]
)
def test_directory_builder_rejects_unsafe_paths(path):
    link = import_bytes(b"x")[1]
    with pytest.raises(IpfsFormatError):
        DirectoryBuilder().add_file(path, link)


def test_directory_builder_rejects_clashes():
    link = import_bytes(b"x")[1]
    builder = DirectoryBuilder()
    builder.add_file("a/b", link)
    with pytest.raises(IpfsFormatError, match="added twice"):
        builder.add_file("a/b", link)
    with pytest.raises(IpfsFormatError, match="already a file"):
        builder.add_file("a/b/c", link)
    with pytest.raises(IpfsFormatError, match="already a file"):
        builder.add_directory("a/b")
    with pytest.raises(IpfsFormatError, match="already a directory"):
        builder.add_file("a", link)
    builder.add_directory("a")  # an existing directory again is fine
    builder.add_directory("")


def test_directory_block_sorts_by_utf8_bytes_and_rejects_duplicates():
    link = import_bytes(b"x")[1]
    names = ["é", "Z", "a", "ab", "a b", "\u00ff", "\U0001f600"]
    block = directory_block(Link(name, link.cid, link.tsize) for name in names)
    stored = [link.name for link in decode_node(block.cid, block.data).links]
    assert stored == sorted(names, key=lambda name: name.encode())
    with pytest.raises(IpfsFormatError, match="two entries"):
        directory_block([Link("a", link.cid, 1), Link("a", link.cid, 1)])
    with pytest.raises(IpfsFormatError, match="unsafe"):
        directory_block([Link("", link.cid, 1)])


# --- round trip -------------------------------------------------------------------

names = st.text(alphabet="abcXYZ019-_.é", min_size=1, max_size=6).filter(
    lambda name: name not in (".", "..")
)
trees = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map(tuple),
    st.one_of(st.none(), st.integers(0, 600_000)),  # None: an (empty) directory
    max_size=6,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, seed=st.integers(0, 2**32))
def test_round_trip(tree, seed):
    # Drop entries that would clash (a file where another entry needs a directory).
    files: dict[str, bytes] = {}
    directories: set[str] = set()
    rng = random.Random(seed)
    for parts, size in sorted(tree.items(), key=lambda item: len(item[0])):
        path = "/".join(parts)
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if path in files or path in directories or any(p in files for p in parents):
            continue
        directories.update(parents)
        if size is None:
            directories.add(path)
        else:
            files[path] = rng.randbytes(size)
    builder = DirectoryBuilder()
    blocks: list[Block] = []
    for path, data in files.items():
        file_blocks, link = import_bytes(data)
        blocks += file_blocks
        builder.add_file(path, link)
    for path in directories:
        builder.add_directory(path)
    directory_blocks, root = builder.finish()
    store = store_of(blocks + directory_blocks)

    calls: list[Cid] = []
    got = read_all(root.cid, getter(store, calls))
    expected: dict[str, bytes | None] = {"": None, **{d: None for d in directories}, **files}
    assert got == expected
    # Pre-order: every entry comes after its parent directory.
    seen: set[str] = set()
    for path in got:
        if path:
            assert path.rpartition("/")[0] in seen
        seen.add(path)
    assert list(dag_order(root.cid, getter(store))) == calls


# --- dag_order --------------------------------------------------------------------


def test_dag_order_matches_walk_even_when_chunks_are_skipped():
    blocks, root = build_tree()
    store = store_of(blocks)
    consumed: list[Cid] = []
    read_all(root.cid, getter(store, consumed))
    skipped: list[Cid] = []
    entries = list(walk(root.cid, getter(store, skipped)))  # no chunk read
    assert [entry.path for entry in entries][:3] == ["", "a.txt", "empty"]
    assert consumed == skipped == list(dag_order(root.cid, getter(store)))
    assert sorted(map(str, consumed)) == sorted(map(str, store))  # no repeats in this tree


def test_dag_order_repeats_identical_chunks():
    blocks, link = import_bytes(bytes(3 * CHUNK_SIZE))
    order = list(dag_order(link.cid, getter(store_of(blocks))))
    assert order[0] == link.cid and len(order) == 4 and len(set(order)) == 2


# --- rejection --------------------------------------------------------------------


def test_flipped_byte_in_any_block_names_that_block():
    blocks, root = build_tree()
    store = store_of(blocks)
    for cid, data in store.items():
        bad = dict(store)
        i = len(data) // 2
        bad[cid] = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        with pytest.raises(IpfsFormatError, match=f"block {cid} does not match its CID"):
            read_all(root.cid, getter(bad))


def pb_field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return encode_uvarint(number << 3) + encode_uvarint(payload)
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(payload)) + payload


def pb_link(cid: Cid, name: str | None, tsize: int) -> bytes:
    body = pb_field(1, bytes(cid)) + (b"" if name is None else pb_field(2, name.encode()))
    return pb_field(2, body + pb_field(3, tsize))


def unixfs(kind: int, data: bytes | None = None, filesize: int | None = None, sizes=()) -> bytes:
    out = pb_field(1, kind)
    if data is not None:
        out += pb_field(2, data)
    if filesize is not None:
        out += pb_field(3, filesize)
    return out + b"".join(pb_field(4, size) for size in sizes)


LEAF = Cid.parse(EMPTY_FILE)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x0a\x80", "ends in the middle of a varint"),
        (b"\x0a\x05\x08\x02", "claims 5 bytes but only 2 remain"),
        (b"\x0b\x00", "unknown wire type 3"),
        (b"\x08\x01", "unexpected field 1"),
        (b"\x1a\x00", "unexpected field 3"),
        (b"", "no UnixFS data"),
        (pb_field(1, unixfs(2)) + pb_link(LEAF, "", 6), "link after its Data"),
        (pb_field(1, unixfs(2)) * 2, "two Data fields"),
        (pb_field(2, pb_field(2, b"x")) + pb_field(1, unixfs(1)), "no Hash"),
        (pb_field(2, pb_field(1, b"\x12\x20")) + pb_field(1, unixfs(1)), "middle of a CID"),
        (pb_field(2, pb_field(3, 1) + pb_field(1, bytes(LEAF))), "out of order"),
        (pb_link(LEAF, "../x", 6) + pb_field(1, unixfs(1)), "unsafe name '../x'"),
        (pb_link(LEAF, "a/b", 6) + pb_field(1, unixfs(1)), "unsafe name 'a/b'"),
        (pb_link(LEAF, ".", 6) + pb_field(1, unixfs(1)), "unsafe name '.'"),
        (pb_link(LEAF, None, 6) + pb_field(1, unixfs(1)), "unsafe name ''"),
        (pb_link(LEAF, "a", 6) * 2 + pb_field(1, unixfs(1)), "two entries named 'a'"),
        (
            pb_field(2, pb_field(1, bytes(LEAF)) + pb_field(2, b"\xff")) + pb_field(1, unixfs(1)),
            "not valid UTF-8",
        ),  # fmt: skip
        (pb_field(1, unixfs(5)), "names no hash function; only murmur3-x64-64"),
        (pb_field(1, unixfs(4, b"/etc/passwd")), "unsupported UnixFS type Symlink"),
        (pb_field(1, unixfs(3)), "unsupported UnixFS type Metadata"),
        (pb_field(1, unixfs(9)), "unknown UnixFS type 9"),
        (pb_field(1, pb_field(2, b"abc")), "no Type"),
        (pb_field(1, pb_field(1, b"\x02")), "wrong wire type"),
        (pb_field(1, b"\x08" + b"\xff" * 10 + b"\x01"), "longer than 10 bytes"),
        (pb_field(1, unixfs(2, b"abc", 4)), "says it holds 4 bytes"),
        (pb_link(LEAF, "", 6) + pb_field(1, unixfs(2, None, 0)), "1 links but 0 blocksizes"),
    ],
)
def test_decode_node_rejects_malformed_blocks(block, message):
    cid = Cid.for_block(block)
    with pytest.raises(IpfsFormatError, match=message) as info:
        decode_node(cid, block)
    assert str(cid) in str(info.value)


def test_decode_node_accepts_packed_blocksizes_and_unknown_unixfs_fields():
    packed = pb_field(4, encode_uvarint(CHUNK_SIZE) + encode_uvarint(1))
    data = pb_field(1, 2) + pb_field(3, CHUNK_SIZE + 1) + packed + pb_field(7, 0o644)
    blocks, link = vector_import("two chunks")
    root = decode_node(link.cid, blocks[-1].data)
    block = b"".join(pb_link(child.cid, "", child.tsize) for child in root.links)
    block += pb_field(1, data)
    node = decode_node(Cid.for_block(block), block)
    assert node.links == root.links and node.filesize == CHUNK_SIZE + 1


def test_decode_node_rejects_other_codecs():
    cid = Cid.for_block(b"\xa0", version=1, codec=0x71)
    with pytest.raises(IpfsFormatError, match="dag-cbor"):
        decode_node(cid, b"\xa0")


def file_node(links: list[tuple[Cid, int]], sizes: list[int]) -> bytes:
    return b"".join(pb_link(cid, "", tsize) for cid, tsize in links) + pb_field(
        1, unixfs(2, None, sum(sizes), sizes)
    )


def test_chunks_that_do_not_add_up_are_rejected():
    leaf_blocks, leaf = import_bytes(b"abc")
    for claimed, message in [(5, "chunks add up to 3 bytes but its size is 5"), (2, "more than")]:
        root = file_node([(leaf.cid, leaf.tsize)], [claimed])
        root_cid = Cid.for_block(root)
        store = {leaf.cid: leaf_blocks[0].data, root_cid: root}
        with pytest.raises(IpfsFormatError, match=message) as info:
            read_all(root_cid, getter(store))
        assert str(root_cid) in str(info.value)


def test_a_file_linking_to_a_directory_is_rejected():
    directory = directory_block([])
    root = file_node([(directory.cid, 4)], [0])
    store = {directory.cid: directory.data, Cid.for_block(root): root}
    with pytest.raises(IpfsFormatError, match="links to a directory"):
        read_all(Cid.for_block(root), getter(store))


def test_repeated_subtrees_cannot_inflate_a_file():
    # A node that lists the same 1-byte leaf twice but claims one byte overall.
    leaf_blocks, leaf = import_bytes(b"x")
    root = b"".join(pb_link(leaf.cid, "", leaf.tsize) for _ in range(2))
    root += pb_field(1, unixfs(2, None, 1, [1, 0]))
    store = {leaf.cid: leaf_blocks[0].data, Cid.for_block(root): root}
    with pytest.raises(IpfsFormatError, match="more than the 1 bytes"):
        read_all(Cid.for_block(root), getter(store))


# --- CIDv1 and raw leaves ---------------------------------------------------------


def test_cidv1_dag_pb_root_with_raw_leaves():
    chunks = [b"hello ", b"raw ", b"leaves"]
    leaves = [Block(Cid.for_block(c, version=1, codec=RAW), c) for c in chunks]
    file_block = file_node([(b.cid, len(b.data)) for b in leaves], [len(c) for c in chunks])
    file_cid = Cid.for_block(file_block, version=1, codec=DAG_PB)
    directory = pb_link(file_cid, "f.txt", len(file_block) + 16) + pb_link(leaves[0].cid, "raw", 6)
    directory += pb_field(1, unixfs(1))
    root = Cid.for_block(directory, version=1)
    store = {b.cid: b.data for b in leaves} | {file_cid: file_block, root: directory}
    assert str(root).startswith("bafybei")
    assert read_all(root, getter(store)) == {
        "": None,
        "f.txt": b"hello raw leaves",
        "raw": b"hello ",
    }
    raw = decode_node(leaves[1].cid, leaves[1].data)
    assert (raw.kind, raw.data, raw.filesize, raw.links) == ("raw", b"raw ", 4, ())
    assert child_cids(file_cid, file_block) == [b.cid for b in leaves]
    # A raw block as the root is a file by itself.
    entries = list(walk(leaves[2].cid, getter(store)))
    assert [(e.path, e.size) for e in entries if isinstance(e, FileEntry)] == [("", 6)]


# --- HAMT-sharded directories -----------------------------------------------------

#: CIDs from kubo v0.42.0 (default config, ``ipfs add -r --only-hash`` of the trees of
#: ``tests.protocol.ipfs_vectors`` written out by ``write_tree``; see the comment there).
HAMT_AT_THRESHOLD = "QmZDxtqqxwyFGvSWBsb91Po937ZyehUwzS8791VwPJT6mG"  # plain
HAMT_OVER_THRESHOLD = "QmY19BttMVrnRs54jRCUh9kapBXrLv9sVszWvWkepk9b8B"  # sharded
HAMT_NESTED = "QmXy7fMfMJrP5wjrrRb59iaNck3h6FuX4QHUJdTkWWsZ67"
HAMT_NESTED_SHARDED_SUB = "QmYfgRTbukdhwRM7SyAyTuNAuPEVt8deEQRXNB498v2KWs"
HAMT_NESTED_PLAIN_SUB = "QmP5PqGJ5KvJhf2VA4Yqctabz3zsvmNn3iw5A6sogUNEfx"
HAMT_DEEP = "QmeRrdhMifwfvUh3WhHRV5rZtFX7iJCJ3iWsLKpyC4HRkn"
#: The deep tree again with ``Import.UnixFSHAMTDirectoryMaxFanout`` set in kubo's config
#: (its ``--max-hamt-fanout`` flag has no effect on ``ipfs add -r`` in v0.42.0).
HAMT_DEEP_BY_FANOUT = {
    8: "QmQyaXCTfzYvaaq2NbxL4PxqtUvRpJFrsQbXvNjJAWeYoe",
    64: "QmY58af7FfVWr7aFFDeCmxwVhX1qMAuhcygA34k74hPE9F",
    1024: "QmQhBxqa35NsnS88CvkxLWyxkZ3P9d6L1qpPSuDizA8Lxm",
}
#: boxo's own vector (ipld/unixfs/hamt/hamt_test.go, TestDirBuilding): 200 empty
#: directories named DIRNAME0..DIRNAME199 in a fanout-256 shard, inserted shuffled.
BOXO_DIRNAMES = "QmY89TkSEVHykWMHDmyejSWFj9CYNtvzw4UwnT9xbc4Zjc"

HAMT_TREES: dict[str, Callable[[], Tree]] = {
    "at threshold": lambda: threshold_tree(PAD_AT_THRESHOLD),
    "over threshold": lambda: threshold_tree(PAD_OVER_THRESHOLD),
    "nested": nested_sharded_tree,
    "deep": deep_sharded_tree,
}


@functools.cache
def hamt_tree(name: str) -> tuple[dict[Cid, bytes], Link]:
    files, empty = HAMT_TREES[name]()
    builder = DirectoryBuilder()
    blocks: list[Block] = []
    for path, data in files.items():
        file_blocks, link = import_bytes(data)
        blocks += file_blocks
        builder.add_file(path, link)
    for path in empty:
        builder.add_directory(path)
    directory_blocks, root = builder.finish()
    return store_of(blocks + directory_blocks), root


def expected_contents(name: str) -> dict[str, bytes | None]:
    files, empty = HAMT_TREES[name]()
    directories = {"", *empty}
    for path in [*files, *empty]:
        parts = path.split("/")
        directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return {**dict.fromkeys(directories), **files}


def shards_under(cid: Cid, store: dict[Cid, bytes]) -> list[int]:
    """The depth (root shard = 1) of every shard of the sharded directory ``cid``."""
    depths: list[int] = []
    pending = [(cid, 1)]
    while pending:
        cid, level = pending.pop()
        node = decode_node(cid, store[cid])
        assert node.kind == "shard" and node.fanout
        depths.append(level)
        width = len(f"{node.fanout - 1:X}")
        pending += [(link.cid, level + 1) for link in node.links if len(link.name) == width]
    return depths


@pytest.mark.parametrize(
    ("data", "h1"),
    [  # spaolacci/murmur3 (what boxo hashes with) murmur_test.go, seed 0: Sum64
        (b"", 0x0000000000000000),
        (b"hello", 0xCBD8A7B341BD9B02),
        (b"hello, world", 0x342FAC623A5EBC8E),
        (b"19 Jan 2038 at 3:14:07 AM", 0xB89E5988B737AFFC),
        (b"The quick brown fox jumps over the lazy dog.", 0xCD99481F9EE902C9),
    ],
)
def test_hamt_hash_is_gos_murmur3_sum64(data, h1):
    assert _hamt_hash(data) == h1


def test_boxo_hamt_vector():
    empty = directory_block([])
    links = [Link(f"DIRNAME{i}", empty.cid, len(empty.data)) for i in range(200)]
    random.Random(3).shuffle(links)
    blocks, root = sharded_directory(links)
    assert str(root.cid) == BOXO_DIRNAMES
    assert blocks[-1].cid == root.cid
    store = store_of(blocks) | {empty.cid: empty.data}
    got = read_all(root.cid, getter(store))
    assert sorted(got) == sorted(["", *(f"DIRNAME{i}" for i in range(200))])
    assert set(got.values()) == {None}


def test_directory_exactly_at_the_threshold_stays_plain():
    store, root = hamt_tree("at threshold")
    assert str(root.cid) == HAMT_AT_THRESHOLD
    node = decode_node(root.cid, store[root.cid])
    assert node.kind == "directory" and len(node.links) == 5461
    # The estimate counts UTF-8 bytes: 5,460 x (14 + 34) + (30 + 34).
    assert sum(len(link.name.encode()) + 34 for link in node.links) == HAMT_THRESHOLD
    assert read_all(root.cid, getter(store)) == expected_contents("at threshold")


def test_directory_one_byte_over_the_threshold_is_sharded():
    store, root = hamt_tree("over threshold")
    assert str(root.cid) == HAMT_OVER_THRESHOLD
    node = decode_node(root.cid, store[root.cid])
    assert node.kind == "shard" and node.fanout == HAMT_FANOUT and len(node.links) == 256
    assert all(len(link.name) == 2 for link in node.links)  # every slot holds a child shard
    assert [link.name for link in node.links] == [f"{i:02X}" for i in range(256)]
    assert max(shards_under(root.cid, store)) >= 3
    assert root.tsize == sum(map(len, store.values()))
    calls: list[Cid] = []
    got = read_all(root.cid, getter(store, calls))
    assert got == expected_contents("over threshold")
    assert list(dag_order(root.cid, getter(store))) == calls
    assert child_cids(root.cid, store[root.cid]) == [link.cid for link in node.links]


def test_sharded_directory_with_nested_subdirectories():
    store, root = hamt_tree("nested")
    assert str(root.cid) == HAMT_NESTED
    top = decode_node(root.cid, store[root.cid])
    assert top.kind == "shard"
    entries = {link.name: link.cid for link in _top_entries(root.cid, store)}
    assert str(entries["sharded-sub"]) == HAMT_NESTED_SHARDED_SUB
    assert str(entries["plain-sub"]) == HAMT_NESTED_PLAIN_SUB
    assert str(entries["empty"]) == EMPTY_DIRECTORY
    assert decode_node(entries["sharded-sub"], store[entries["sharded-sub"]]).kind == "shard"
    assert decode_node(entries["plain-sub"], store[entries["plain-sub"]]).kind == "directory"
    calls: list[Cid] = []
    got = read_all(root.cid, getter(store, calls))
    assert got == expected_contents("nested")
    # Pre-order: a directory comes before everything in it.
    seen: set[str] = set()
    for path in got:
        if path:
            assert path.rpartition("/")[0] in seen
        seen.add(path)
    assert list(dag_order(root.cid, getter(store))) == calls


def _top_entries(root: Cid, store: dict[Cid, bytes]) -> list[Link]:
    """The entries of a fanout-256 sharded directory, read from its shards directly."""
    links: list[Link] = []
    pending = [root]
    while pending:
        cid = pending.pop()
        for link in decode_node(cid, store[cid]).links:
            if len(link.name) == 2:
                pending.append(link.cid)
            else:
                links.append(Link(link.name[2:], link.cid, link.tsize))
    return links


def test_deep_sharded_directory():
    store, root = hamt_tree("deep")
    assert str(root.cid) == HAMT_DEEP
    # The names sharing 32 hash bits sit in a shard five levels down.
    assert max(shards_under(root.cid, store)) == 5
    assert read_all(root.cid, getter(store)) == expected_contents("deep")


@pytest.mark.parametrize("fanout", sorted(HAMT_DEEP_BY_FANOUT))
def test_other_fanouts(fanout):
    store, deep = hamt_tree("deep")
    links = _top_entries(deep.cid, store)
    blocks, root = sharded_directory(reversed(links), fanout)
    assert str(root.cid) == HAMT_DEEP_BY_FANOUT[fanout]
    assert read_all(root.cid, getter(store | store_of(blocks))) == expected_contents("deep")
    assert decode_node(root.cid, blocks[-1].data).fanout == fanout


def test_sharding_does_not_depend_on_insertion_order():
    files, empty = deep_sharded_tree()
    builder = DirectoryBuilder()
    for path, data in reversed(list(files.items())):
        builder.add_file(path, import_bytes(data)[1])
    assert builder.finish()[1] == hamt_tree("deep")[1]


def test_directory_blocks_shards_only_above_the_threshold():
    leaf = import_bytes(b"x")[1]
    # 4,000 entries of 32 + 34 bytes: 264,000 > 262,144.
    links = [Link(f"{i:032d}", leaf.cid, leaf.tsize) for i in range(4000)]
    blocks, root = directory_blocks(links)
    assert decode_node(root.cid, blocks[-1].data).kind == "shard"
    blocks, root = directory_blocks(links[:3971])  # 262,086: still plain
    assert len(blocks) == 1 and root.cid == directory_block(links[:3971]).cid
    with pytest.raises(IpfsFormatError, match="two entries"):
        directory_blocks([*links, links[0]])
    with pytest.raises(ValueError, match="fanout 12"):
        sharded_directory(links, 12)


names_for_shards = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1)


@settings(max_examples=25, deadline=None)
@given(names=st.sets(names_for_shards.filter(lambda n: n not in (".", "..")), max_size=80))
def test_sharded_round_trip_at_fanout_8(names):
    # Fanout 8 takes three bits a level, so a few dozen names already nest deeply.
    leaf_blocks, leaf = import_bytes(b"leaf")
    blocks, root = sharded_directory([Link(name, leaf.cid, leaf.tsize) for name in names], 8)
    store = store_of(blocks + leaf_blocks)
    assert read_all(root.cid, getter(store)) == {"": None, **dict.fromkeys(names, b"leaf")}
    assert root.tsize == sum(len(block.data) for block in blocks) + leaf.tsize * len(names)


# --- malformed shards -------------------------------------------------------------

LEAF_BLOCK = import_bytes(b"leaf\n")


def shard_block(links: list[tuple[str, Cid]], bitfield: bytes, fanout=256, hash_type=0x22):
    data = pb_field(1, 5) + pb_field(2, bitfield) + pb_field(5, hash_type) + pb_field(6, fanout)
    return b"".join(pb_link(cid, name, 9) for name, cid in links) + pb_field(1, data)


def bitfield_of(*slots: int, fanout: int = 256) -> bytes:
    return sum(1 << slot for slot in slots).to_bytes(fanout // 8, "big").lstrip(b"\0")


def slot_of(name: str, depth: int = 0) -> int:
    return (_hamt_hash(name.encode()) >> (56 - 8 * depth)) & 0xFF


LEAF = LEAF_BLOCK[1].cid
A = slot_of("a")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (shard_block([], b"", hash_type=0x11), "hash function 0x11; only murmur3-x64-64"),
        (pb_field(1, pb_field(1, 5) + pb_field(5, 0x22)), "has no fanout"),
        (shard_block([], b"", fanout=100), "fanout 100, not a power of two"),
        (shard_block([], b"", fanout=4), "fanout 4"),
        (shard_block([], b"", fanout=2048), "fanout 2048"),
        (shard_block([], bytes(33)), "33-byte bitfield for 256 slots"),
        (shard_block([(f"{A:02X}a", LEAF)], b""), "1 links but 0 slots marked used"),
        (shard_block([], bitfield_of(3)), "0 links but 1 slots marked used"),
        (shard_block([("03a", LEAF)], bitfield_of(4)), "should start with '04'"),
        (shard_block([("0aa", LEAF)], bitfield_of(10)), "should start with '0A'"),
        (shard_block([("3", LEAF)], bitfield_of(3)), "should start with '03'"),
        (shard_block([("03../x", LEAF)], bitfield_of(3)), "unsafe name '../x'"),
        (
            shard_block([("02b", LEAF), ("01a", LEAF)], bitfield_of(1, 2)),
            "'02b' should start with '01'",
        ),
        (
            shard_block([("FFa", LEAF)], bitfield_of(255, fanout=1024), fanout=1024),
            "should start with '0FF'",
        ),
    ],
)
def test_decode_node_rejects_malformed_shards(block, message):
    cid = Cid.for_block(block)
    with pytest.raises(IpfsFormatError, match=message) as info:
        decode_node(cid, block)
    assert str(cid) in str(info.value)


def test_decode_node_reads_a_shard():
    block = shard_block([(f"{A:02X}a", LEAF), ("FF", LEAF)], bitfield_of(A, 255))
    node = decode_node(Cid.for_block(block), block)
    assert (node.kind, node.fanout, node.filesize) == ("shard", 256, None)
    assert [link.name for link in node.links] == [f"{A:02X}a", "FF"]
    assert child_cids(Cid.for_block(block), block) == [LEAF, LEAF]


def walk_shards(*blocks: bytes) -> dict[str, bytes | None]:
    store = {Cid.for_block(block): block for block in blocks}
    store[LEAF] = LEAF_BLOCK[0][0].data
    return read_all(Cid.for_block(blocks[-1]), getter(store))


def test_an_entry_in_the_wrong_slot_is_rejected():
    wrong = (A + 1) % 256
    root = shard_block([(f"{wrong:02X}a", LEAF)], bitfield_of(wrong))
    with pytest.raises(IpfsFormatError, match="entry 'a' of shard .* is not in the slot") as info:
        walk_shards(root)
    assert str(Cid.for_block(root)) in str(info.value)
    assert walk_shards(shard_block([(f"{A:02X}a", LEAF)], bitfield_of(A))) == {
        "": None,
        "a": b"leaf\n",
    }


def test_an_entry_in_the_wrong_child_shard_is_rejected():
    # "a" belongs in the child shard of its own first slot, not of another one.
    child = shard_block([(f"{slot_of('a', 1):02X}a", LEAF)], bitfield_of(slot_of("a", 1)))
    good = shard_block([(f"{A:02X}", Cid.for_block(child))], bitfield_of(A))
    assert walk_shards(child, good) == {"": None, "a": b"leaf\n"}
    other = (A + 7) % 256
    bad = shard_block([(f"{other:02X}", Cid.for_block(child))], bitfield_of(other))
    with pytest.raises(IpfsFormatError, match="not in the slot its hash gives it"):
        walk_shards(child, bad)


@pytest.mark.parametrize(
    ("child", "message"),
    [
        (directory_block([]).data, "is not a HAMT shard of fanout 256"),
        (LEAF_BLOCK[0][0].data, "is not a HAMT shard"),
        (shard_block([], b"", fanout=64), "is not a HAMT shard of fanout 256"),
    ],
)
def test_a_child_shard_must_be_a_shard_of_the_same_fanout(child, message):
    root = shard_block([("00", Cid.for_block(child))], bitfield_of(0))
    with pytest.raises(IpfsFormatError, match=message):
        walk_shards(child, root)


def test_shards_cannot_nest_deeper_than_the_hash():
    # Eight levels use all 64 bits; a shard linking to a ninth is refused before it is
    # fetched.
    chain = [shard_block([], b"")]
    for _ in range(8):
        chain.append(shard_block([("00", Cid.for_block(chain[-1]))], bitfield_of(0)))
    assert walk_shards(*chain[:8]) == {"": None}
    with pytest.raises(IpfsFormatError, match="deeper than its 64-bit hashes reach"):
        walk_shards(*chain)


def test_a_file_linking_to_a_shard_is_rejected():
    shard = shard_block([], b"")
    root = file_node([(Cid.for_block(shard), len(shard))], [0])
    store = {Cid.for_block(shard): shard, Cid.for_block(root): root}
    with pytest.raises(IpfsFormatError, match="links to a directory"):
        read_all(Cid.for_block(root), getter(store))


def test_names_with_the_same_hash_cannot_be_sharded():
    leaf = import_bytes(b"x")[1]
    with pytest.raises(IpfsFormatError, match="same 64-bit HAMT hash"):
        _build_shard([(7, Link("a", leaf.cid, 1)), (7, Link("b", leaf.cid, 1))], 0, 256, [])
