"""UnixFS over dag-pb, byte-for-byte as kubo's default ``ipfs add`` builds it.

The default profile (``unixfs-v0-2015``): CIDv0, dag-pb UnixFS leaves, 256 KiB fixed
chunks, balanced layout with 174 links per node, and directories that are plain (one
block, links sorted by name) up to a size estimate of 256 KiB and HAMT-sharded above it
(see ``directory_blocks``). Importing streams: the importer holds at most one partial
chunk plus one list of links per tree level. Reading (``walk``) verifies every block
against its CID and parses strictly, since blocks come from untrusted peers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import mmh3

from .cid import DAG_PB, RAW, Buffer, Cid, IpfsFormatError, codec_name, encode_uvarint

CHUNK_SIZE = 262_144
MAX_LINKS = 174
#: Deeper DAGs are refused: kubo's file trees are a handful of levels, and a long
#: chain of one-link nodes is only ever an attack on the reader.
MAX_DEPTH = 1024

#: kubo (boxo's ``io.DynamicDirectory``) turns a directory into a HAMT once the sum of
#: len(name) + len(CID bytes) over its entries exceeds this (strictly greater: a directory
#: exactly at it stays plain). Kubo's defaults ``Import.UnixFSHAMTDirectorySizeThreshold``
#: = 256KiB and ``Import.UnixFSHAMTDirectorySizeEstimation`` = "links".
HAMT_THRESHOLD = 262_144
#: Slots per HAMT shard (``Import.UnixFSHAMTDirectoryMaxFanout``); readers accept any
#: power of two from 8 to 1024, as boxo does.
HAMT_FANOUT = 256
#: UnixFS hashType of HAMT shards: murmur3-x64-64, the multicodec kubo writes and the only
#: one it reads.
MURMUR3_X64_64 = 0x22
_HASH_BITS = 64

# UnixFS Data.Type values.
_RAW, _DIRECTORY, _FILE, _METADATA, _SYMLINK, _HAMT_SHARD = range(6)
_UNSUPPORTED_TYPES = {
    _METADATA: "Metadata",
    _SYMLINK: "Symlink (symbolic link)",
}

_EMPTY_FILE = b"\x0a\x04\x08\x02\x18\x00"  # PBNode{Data: UnixFS{Type: File, filesize: 0}}
_DIRECTORY_DATA = b"\x0a\x02\x08\x01"  # PBNode Data field: UnixFS{Type: Directory}


@dataclass(frozen=True, slots=True)
class Block:
    cid: Cid
    data: bytes


@dataclass(frozen=True, slots=True)
class Link:
    """A dag-pb link; ``tsize`` is the encoded size of the whole subtree it points to."""

    name: str
    cid: Cid
    tsize: int


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded block. ``kind`` is "file", "directory", "raw" (a raw-codec leaf) or
    "shard": one node of a HAMT-sharded directory, whose links are named by their slot
    in upper-case hex (two digits at fanout 256), followed by the entry's name for an
    entry, or by nothing for a child shard. ``walk`` turns the shards of a sharded
    directory back into its entries."""

    kind: str
    links: tuple[Link, ...]
    data: bytes  # file content held in this block itself
    filesize: int | None  # content bytes under this node; None for directories
    fanout: int = 0  # slots per shard, for "shard" nodes only


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    path: str  # "" for the root directory, else "a/b"


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # "" when the root itself is a file
    size: int
    chunks: Iterator[bytes]  # consume before asking the walk for its next entry


# --- encoding ---------------------------------------------------------------------


def _encode_link(link: Link) -> bytes:
    cid = bytes(link.cid)
    name = link.name.encode("utf-8")
    # PBLink fields in number order; Name is written even when empty, as kubo does.
    body = b"".join(
        (
            b"\x0a", encode_uvarint(len(cid)), cid,
            b"\x12", encode_uvarint(len(name)), name,
            b"\x18", encode_uvarint(link.tsize),
        )
    )  # fmt: skip
    return b"\x12" + encode_uvarint(len(body)) + body


def _encode_node(links: Iterable[Link], data_field: bytes) -> bytes:
    """A PBNode: links first, then the already-framed Data field (dag-pb's order)."""
    return b"".join([*map(_encode_link, links), data_field])


def _make_block(data: bytes) -> Block:
    return Block(Cid.for_block(data), data)


def _link_to(block: Block, children: Iterable[Link] = (), name: str = "") -> Link:
    return Link(name, block.cid, len(block.data) + sum(child.tsize for child in children))


def _leaf(parts: Sequence[Buffer]) -> bytes:
    """PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: len(chunk)}} in one copy;
    the chunk is given as consecutive pieces."""
    n = sum(map(len, parts))
    size = encode_uvarint(n)
    inner = 4 + 2 * len(size) + n
    return b"".join((b"\x0a", encode_uvarint(inner), b"\x08\x02\x12", size, *parts, b"\x18", size))


class FileImporter:
    """Chunks and hashes one file as it is written, emitting blocks as they complete."""

    def __init__(self) -> None:
        self._pending = bytearray()
        # levels[k]: links (with content sizes) waiting for their parent at level k+1.
        self._levels: list[list[tuple[Link, int]]] = [[]]
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Content bytes written so far."""
        return self._size

    def write(self, data: Buffer) -> list[Block]:
        """Add content; return the blocks this write completed, children first."""
        if self._done:
            raise ValueError("write() after finish()")
        view = memoryview(data).cast("B")
        total = len(view)
        self._size += total
        out: list[Block] = []
        pos = 0
        pending = self._pending
        if pending:
            pos = min(CHUNK_SIZE - len(pending), total)
            if len(pending) + pos == CHUNK_SIZE:
                # The piece that completes the chunk goes straight into the block.
                self._add_leaf((pending, view[:pos]), out)
                pending.clear()
            else:
                pending += view[:pos]
        # Whole chunks go straight from the caller's buffer into the block.
        while total - pos >= CHUNK_SIZE:
            self._add_leaf((view[pos : pos + CHUNK_SIZE],), out)
            pos += CHUNK_SIZE
        if pos < total:
            pending += view[pos:]
        return out

    def finish(self) -> tuple[list[Block], Link]:
        """Return the remaining blocks (root last) and the root link (name "")."""
        if self._done:
            raise ValueError("finish() called twice")
        self._done = True
        out: list[Block] = []
        if self._pending:
            self._add_leaf((self._pending,), out)
            self._pending = bytearray()
        if self._size == 0:
            block = _make_block(_EMPTY_FILE)
            return [block], _link_to(block)
        levels = self._levels
        k = 0
        # Wrap every partial group below the top, then the top until one node is left:
        # that is kubo's balanced layout (a trailing group is wrapped even if alone).
        while not (k == len(levels) - 1 and len(levels[k]) == 1):
            if levels[k]:
                self._close(k, out)
            k += 1
        return out, levels[k][0][0]

    def _add_leaf(self, parts: Sequence[Buffer], out: list[Block]) -> None:
        block = _make_block(_leaf(parts))
        out.append(block)
        self._push(0, _link_to(block), sum(map(len, parts)), out)

    def _push(self, level: int, link: Link, size: int, out: list[Block]) -> None:
        if level == len(self._levels):
            self._levels.append([])
        group = self._levels[level]
        group.append((link, size))
        # A full node is final whether or not more data follows, so emit it now.
        if len(group) == MAX_LINKS:
            self._close(level, out)

    def _close(self, level: int, out: list[Block]) -> None:
        group = self._levels[level]
        self._levels[level] = []
        links = [link for link, _ in group]
        sizes = [size for _, size in group]
        total = sum(sizes)
        unixfs = b"".join(
            [b"\x08\x02\x18", encode_uvarint(total)]
            # blocksizes unpacked, one tag per value, as kubo writes them.
            + [b"\x20" + encode_uvarint(size) for size in sizes]
        )
        block = _make_block(_encode_node(links, b"\x0a" + encode_uvarint(len(unixfs)) + unixfs))
        out.append(block)
        self._push(level + 1, _link_to(block, links), total, out)


def import_bytes(data: Buffer) -> tuple[list[Block], Link]:
    """All blocks of ``data`` (root last) and its root link; for tests and small files."""
    importer = FileImporter()
    blocks = importer.write(data)
    rest, link = importer.finish()
    return blocks + rest, link


def _check_name(name: str, where: str) -> bytes:
    """The UTF-8 of a directory entry name, refusing names that could escape a path."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise IpfsFormatError(f"unsafe name {name!r} in {where}")
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise IpfsFormatError(f"name {name!r} in {where} is not valid UTF-8") from None


def _sorted_entries(links: Iterable[Link]) -> list[tuple[bytes, Link]]:
    """(UTF-8 name, link) sorted as kubo sorts (Go compares strings bytewise), names
    checked and unique."""
    keyed = sorted(
        ((_check_name(link.name, "a directory"), link) for link in links), key=lambda pair: pair[0]
    )
    for (a, _), (b, _) in zip(keyed, keyed[1:], strict=False):
        if a == b:
            raise IpfsFormatError(f"two entries named {a.decode()!r} in one directory")
    return keyed


def directory_block(links: Iterable[Link]) -> Block:
    """A plain UnixFS directory holding ``links`` (sorted by name, as kubo does),
    whatever its size; ``directory_blocks`` shards a large one as kubo does."""
    return _make_block(_encode_node((link for _, link in _sorted_entries(links)), _DIRECTORY_DATA))


def directory_blocks(links: Iterable[Link]) -> tuple[list[Block], Link]:
    """The directory holding ``links`` as ``ipfs add`` builds it: its blocks (root last)
    and its root link (name "").

    Plain while the sum of len(name in UTF-8) + len(CID bytes) over the entries is at
    most ``HAMT_THRESHOLD``, else a HAMT-sharded directory (``sharded_directory``).
    kubo checks that estimate as each entry is added and, since ``ipfs add`` never
    removes one, the last check decides.
    """
    keyed = _sorted_entries(links)
    estimate = sum(len(name) + len(bytes(link.cid)) for name, link in keyed)
    if estimate > HAMT_THRESHOLD:
        return _sharded(keyed, HAMT_FANOUT)
    entries = [link for _, link in keyed]
    block = _make_block(_encode_node(entries, _DIRECTORY_DATA))
    return [block], _link_to(block, entries)


def sharded_directory(links: Iterable[Link], fanout: int = HAMT_FANOUT) -> tuple[list[Block], Link]:
    """``links`` as a HAMT-sharded directory, whatever its size, byte for byte as boxo's
    ``hamt.Shard`` builds it: blocks children first (root last), and the root link.

    Each entry goes in the slot numbered by the next log2(fanout) bits of the murmur3
    hash of its name; a slot shared by several entries holds a child shard that splits
    them by the following bits. The shape depends only on the names, not on the order
    they were added in.
    """
    if not _fanout_ok(fanout):
        raise ValueError(f"fanout {fanout} is not a power of two from 8 to 1024")
    return _sharded(_sorted_entries(links), fanout)


def _hamt_hash(name: bytes) -> int:
    """The 64-bit murmur3 hash of a name, as boxo's HAMT reads it most significant bit
    first: the first half of MurmurHash3_x64_128 with seed 0 (Go's murmur3.Sum64)."""
    return mmh3.hash64(name, signed=False)[0]


def _fanout_ok(fanout: int) -> bool:
    # boxo's rule: a power of two (log2 bits per level), a multiple of 8 (whole bitfield
    # bytes), at most 1024.
    return 8 <= fanout <= 1024 and fanout & (fanout - 1) == 0


def _shard_data(bitmap: int, fanout: int) -> bytes:
    """The PBNode Data field of a shard: UnixFS{Type: HAMTShard, Data: bitfield,
    hashType: murmur3, fanout}. The bitfield is big-endian, slot i being bit i, with
    leading zero bytes dropped (go-bitfield's Bytes()); none at all when empty."""
    bitfield = bitmap.to_bytes(fanout // 8, "big").lstrip(b"\0")
    unixfs = b"".join(
        (
            b"\x08\x05",
            b"\x12" + encode_uvarint(len(bitfield)) + bitfield if bitfield else b"",
            b"\x28", encode_uvarint(MURMUR3_X64_64),
            b"\x30", encode_uvarint(fanout),
        )
    )  # fmt: skip
    return b"\x0a" + encode_uvarint(len(unixfs)) + unixfs


def _sharded(keyed: list[tuple[bytes, Link]], fanout: int) -> tuple[list[Block], Link]:
    blocks: list[Block] = []
    entries = [(_hamt_hash(name), link) for name, link in keyed]
    root, links = _build_shard(entries, 0, fanout, blocks)
    return blocks, _link_to(root, links)


def _build_shard(
    entries: list[tuple[int, Link]], depth: int, fanout: int, out: list[Block]
) -> tuple[Block, list[Link]]:
    bits = fanout.bit_length() - 1
    shift = _HASH_BITS - (depth + 1) * bits
    if shift < 0:
        names = ", ".join(repr(link.name) for _, link in entries)
        raise IpfsFormatError(f"the names {names} have the same {_HASH_BITS}-bit HAMT hash")
    width = len(f"{fanout - 1:X}")
    slots: dict[int, list[tuple[int, Link]]] = {}
    for entry in entries:
        slots.setdefault((entry[0] >> shift) & (fanout - 1), []).append(entry)
    links: list[Link] = []
    bitmap = 0
    for slot in sorted(slots):
        group = slots[slot]
        bitmap |= 1 << slot
        prefix = f"{slot:0{width}X}"
        if len(group) == 1:
            link = group[0][1]
            links.append(Link(prefix + link.name, link.cid, link.tsize))
        else:
            block, children = _build_shard(group, depth + 1, fanout, out)
            links.append(_link_to(block, children, prefix))
    block = _make_block(_encode_node(links, _shard_data(bitmap, fanout)))
    out.append(block)
    return block, links


_Tree = dict[str, "Link | _Tree"]


class DirectoryBuilder:
    """Collects files (as root Links) and directories by relative POSIX path, then
    builds directory blocks bottom-up."""

    def __init__(self) -> None:
        self._root: _Tree = {}

    def _parts(self, path: str) -> list[str]:
        if path == "":
            return []
        parts = path.split("/")
        for part in parts:
            _check_name(part, f"path {path!r}")
        return parts

    def _directory(self, parts: list[str], path: str) -> _Tree:
        tree = self._root
        for i, part in enumerate(parts):
            child = tree.setdefault(part, {})
            if isinstance(child, Link):
                where = "/".join(parts[: i + 1])
                raise IpfsFormatError(f"{path!r}: {where!r} is already a file")
            tree = child
        return tree

    def add_file(self, path: str, link: Link) -> None:
        """Add a file at ``path`` (e.g. "outputs/a/b.txt"); parents are created."""
        parts = self._parts(path)
        if not parts:
            raise IpfsFormatError("a file needs a non-empty path")
        parent = self._directory(parts[:-1], path)
        if parts[-1] in parent:
            kind = "file" if isinstance(parent[parts[-1]], Link) else "directory"
            raise IpfsFormatError(f"{path!r} is added twice (already a {kind})")
        parent[parts[-1]] = Link(parts[-1], link.cid, link.tsize)

    def add_directory(self, path: str) -> None:
        """Add a (possibly empty) directory; adding an existing one does nothing."""
        self._directory(self._parts(path), path)

    def finish(self) -> tuple[list[Block], Link]:
        """All directory blocks (children before parents) and the root link; each
        directory plain or sharded as kubo makes it (``directory_blocks``)."""
        # Pre-order listing without recursion; reversed, children come before parents.
        order: list[_Tree] = []
        stack = [self._root]
        while stack:
            tree = stack.pop()
            order.append(tree)
            stack.extend(child for child in tree.values() if not isinstance(child, Link))
        built: dict[int, Link] = {}
        blocks: list[Block] = []
        for tree in reversed(order):
            links = [
                child if isinstance(child, Link) else _renamed(built[id(child)], name)
                for name, child in tree.items()
            ]
            directory, built[id(tree)] = directory_blocks(links)
            blocks += directory
        return blocks, built[id(self._root)]


def _renamed(link: Link, name: str) -> Link:
    return Link(name, link.cid, link.tsize)


# --- decoding ---------------------------------------------------------------------


def _varint(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
    """A protobuf varint (up to 10 bytes, non-minimal forms allowed, as protobuf does)."""
    value = 0
    shift = 0
    end = len(buf)
    start = pos
    while True:
        if pos >= end:
            raise IpfsFormatError(f"{what} ends in the middle of a varint (at byte {start})")
        if shift >= 64:
            raise IpfsFormatError(f"{what} has a varint longer than 10 bytes (at byte {start})")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= 1 << 64:
                raise IpfsFormatError(f"{what} has a varint over 64 bits (at byte {start})")
            return value, pos
        shift += 7


def _fields(buf: memoryview, what: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) for each protobuf field; LEN values are views."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, what)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise IpfsFormatError(f"{what} has a field numbered 0")
        if wire == 0:
            value, pos = _varint(buf, pos, what)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, what)
            if length > end - pos:
                raise IpfsFormatError(
                    f"{what}: field {field} claims {length} bytes but only {end - pos} remain"
                )
            yield field, wire, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > end - pos:
                raise IpfsFormatError(f"{what}: field {field} is truncated")
            yield field, wire, buf[pos : pos + width]
            pos += width
        else:
            raise IpfsFormatError(f"{what}: field {field} has unknown wire type {wire}")


def _decode_link(buf: memoryview) -> Link:
    cid: Cid | None = None
    name = ""
    tsize = 0
    last = 0
    for field, wire, value in _fields(buf, "dag-pb link"):
        # The dag-pb spec fixes the order Hash, Name, Tsize, each at most once.
        if field <= last:
            raise IpfsFormatError("dag-pb link has its fields repeated or out of order")
        last = field
        if field == 1 and wire == 2:
            assert isinstance(value, memoryview)
            cid = Cid.from_bytes(bytes(value))
        elif field == 2 and wire == 2:
            assert isinstance(value, memoryview)
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise IpfsFormatError("dag-pb link name is not valid UTF-8") from None
        elif field == 3 and wire == 0:
            assert isinstance(value, int)
            tsize = value
        else:
            raise IpfsFormatError(f"dag-pb link has unexpected field {field} (wire type {wire})")
    if cid is None:
        raise IpfsFormatError("dag-pb link has no Hash")
    return Link(name, cid, tsize)


def _decode_dag_pb(cid: Cid, block: bytes) -> Node:
    links: list[Link] = []
    data: memoryview | None = None
    view = memoryview(block)
    for field, wire, value in _fields(view, "dag-pb node"):
        if field == 2 and wire == 2:
            if data is not None:
                raise IpfsFormatError("dag-pb node has a link after its Data field")
            assert isinstance(value, memoryview)
            links.append(_decode_link(value))
        elif field == 1 and wire == 2:
            if data is not None:
                raise IpfsFormatError("dag-pb node has two Data fields")
            assert isinstance(value, memoryview)
            data = value
        else:
            raise IpfsFormatError(f"dag-pb node has unexpected field {field} (wire type {wire})")
    if data is None:
        raise IpfsFormatError("dag-pb node carries no UnixFS data")

    kind: int | None = None
    content: memoryview = data[:0]
    filesize: int | None = None
    blocksizes: list[int] = []
    hash_type: int | None = None
    fanout: int | None = None
    for field, wire, value in _fields(data, "UnixFS data"):
        if field == 1 and wire == 0:
            assert isinstance(value, int)
            kind = value
        elif field == 2 and wire == 2:
            assert isinstance(value, memoryview)
            content = value
        elif field == 3 and wire == 0:
            assert isinstance(value, int)
            filesize = value
        elif field == 4 and wire == 0:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif field == 4 and wire == 2:  # packed, which protobuf readers must accept
            assert isinstance(value, memoryview)
            pos = 0
            while pos < len(value):
                size, pos = _varint(value, pos, "UnixFS blocksizes")
                blocksizes.append(size)
        elif field == 5 and wire == 0:
            assert isinstance(value, int)
            hash_type = value
        elif field == 6 and wire == 0:
            assert isinstance(value, int)
            fanout = value
        elif field <= 6:
            raise IpfsFormatError(f"UnixFS data: field {field} has the wrong wire type {wire}")
        # Later fields (mode = 7, mtime = 8, ...) are metadata that carries no content.
    if kind is None:
        raise IpfsFormatError("UnixFS data has no Type")
    if kind in _UNSUPPORTED_TYPES:
        raise IpfsFormatError(f"unsupported UnixFS type {_UNSUPPORTED_TYPES[kind]}")
    if kind == _DIRECTORY:
        seen: set[str] = set()
        for link in links:
            _check_name(link.name, f"directory {cid}")
            if link.name in seen:
                raise IpfsFormatError(f"two entries named {link.name!r} in directory {cid}")
            seen.add(link.name)
        return Node("directory", tuple(links), b"", None)
    if kind == _HAMT_SHARD:
        return _shard_node(cid, links, bytes(content), hash_type, fanout)
    if kind not in (_FILE, _RAW):
        raise IpfsFormatError(f"unknown UnixFS type {kind}")
    if links and len(blocksizes) != len(links):
        raise IpfsFormatError(f"file node has {len(links)} links but {len(blocksizes)} blocksizes")
    computed = len(content) + sum(blocksizes)
    if filesize is not None and filesize != computed:
        raise IpfsFormatError(
            f"file node says it holds {filesize} bytes but its data and "
            f"blocksizes add up to {computed}"
        )
    return Node("file", tuple(links), bytes(content), computed)


def _shard_node(
    cid: Cid, links: list[Link], bitfield: bytes, hash_type: int | None, fanout: int | None
) -> Node:
    """Check one HAMT shard by itself: hash function, fanout, and one link per bit set
    in the bitfield, in slot order, each named by its slot. Whether each entry sits in
    the slot its hash picks depends on the shard's place in the tree: ``walk`` checks."""
    where = f"HAMT shard {cid}"
    if hash_type != MURMUR3_X64_64:
        used = "no hash function" if hash_type is None else f"hash function 0x{hash_type:x}"
        raise IpfsFormatError(f"{where} names {used}; only murmur3-x64-64 (0x22) is supported")
    if fanout is None:
        raise IpfsFormatError(f"{where} has no fanout")
    if not _fanout_ok(fanout):
        raise IpfsFormatError(f"{where} has fanout {fanout}, not a power of two from 8 to 1024")
    if len(bitfield) > fanout // 8:
        raise IpfsFormatError(f"{where} has a {len(bitfield)}-byte bitfield for {fanout} slots")
    bitmap = int.from_bytes(bitfield, "big")
    if bitmap.bit_count() != len(links):
        raise IpfsFormatError(
            f"{where} has {len(links)} links but {bitmap.bit_count()} slots marked used"
        )
    width = len(f"{fanout - 1:X}")
    slots = [slot for slot in range(fanout) if bitmap >> slot & 1]
    for slot, link in zip(slots, links, strict=True):
        prefix = f"{slot:0{width}X}"
        if not link.name.startswith(prefix):
            raise IpfsFormatError(
                f"{where}: link {link.name!r} should start with {prefix!r}, "
                "the slot the bitfield gives it"
            )
        if len(link.name) > width:
            _check_name(link.name[width:], where)
    return Node("shard", tuple(links), b"", None, fanout)


def decode_node(cid: Cid, block: bytes) -> Node:
    """Verify ``block`` against ``cid``, then parse it (dag-pb UnixFS or raw)."""
    cid.verify(block)
    if cid.codec == RAW:
        return Node("raw", (), bytes(block), len(block))
    if cid.codec != DAG_PB:
        raise IpfsFormatError(
            f"block {cid} uses codec {codec_name(cid.codec)}; only dag-pb and raw are supported"
        )
    try:
        return _decode_dag_pb(cid, block)
    except IpfsFormatError as exc:
        if str(cid) in str(exc):
            raise
        raise IpfsFormatError(f"block {cid}: {exc}") from None


def child_cids(cid: Cid, block: bytes) -> list[Cid]:
    """The CIDs a verified block links to, in order (for fetching a DAG)."""
    return [link.cid for link in decode_node(cid, block).links]


# --- walking ----------------------------------------------------------------------


GetBlock = Callable[[Cid], bytes]


def _file_chunks(root: Cid, node: Node, get_block: GetBlock) -> Iterator[bytes]:
    """A file's content in order: each node's own data, then its children's."""
    expected = node.filesize
    assert expected is not None
    seen = 0
    stack: list[Iterator[Link]] = []
    while True:
        if node.data:
            seen += len(node.data)
            # Checked as we go, so a DAG that repeats subtrees cannot run on for long.
            if seen > expected:
                raise IpfsFormatError(
                    f"file {root} holds more than the {expected} bytes it declares"
                )
            yield node.data
        if node.links:
            if len(stack) >= MAX_DEPTH:
                raise IpfsFormatError(f"file {root} is nested more than {MAX_DEPTH} levels")
            stack.append(iter(node.links))
        link = None
        while stack and (link := next(stack[-1], None)) is None:
            stack.pop()
        if link is None:
            break
        node = decode_node(link.cid, get_block(link.cid))
        if node.kind in _DIRECTORY_KINDS:
            raise IpfsFormatError(f"file {root} links to a directory ({link.cid})")
    if seen != expected:
        raise IpfsFormatError(
            f"file {root}: chunks add up to {seen} bytes but its size is {expected}"
        )


_DIRECTORY_KINDS = ("directory", "shard")


def walk(root: Cid, get_block: GetBlock) -> Iterator[DirectoryEntry | FileEntry]:
    """Every directory and file under ``root``, depth-first pre-order, verified.

    A plain directory's entries come in link order (by name); a sharded directory's in
    the order of its HAMT, slot by slot and depth first (boxo's ``ForEachLink``), each
    child shard fetched when the walk reaches it.

    A file's chunks must be consumed before the next entry is asked for; whatever is
    left unread is fetched and checked then, so ``get_block`` calls always follow
    ``dag_order``.
    """
    node = decode_node(root, get_block(root))
    if node.kind not in _DIRECTORY_KINDS:
        yield from _yield_file("", root, node, get_block)
        return
    yield DirectoryEntry("")
    stack: list[tuple[str, Iterator[Link]]] = [("", _entries(root, node, get_block))]
    while stack:
        path, links = stack[-1]
        link = next(links, None)
        if link is None:
            stack.pop()
            continue
        _check_name(link.name, f"directory {path or root}")
        child_path = f"{path}/{link.name}" if path else link.name
        child = decode_node(link.cid, get_block(link.cid))
        if child.kind in _DIRECTORY_KINDS:
            if len(stack) >= MAX_DEPTH:
                raise IpfsFormatError(f"directory {root} is nested more than {MAX_DEPTH} levels")
            yield DirectoryEntry(child_path)
            stack.append((child_path, _entries(link.cid, child, get_block)))
        else:
            yield from _yield_file(child_path, link.cid, child, get_block)


def directory_links(cid: Cid, get_block: GetBlock) -> Iterator[Link]:
    """The entries of directory ``cid`` (plain or HAMT-sharded), named as in the directory,
    each link to the entry itself; raises ``IpfsFormatError`` when ``cid`` is no directory."""
    node = decode_node(cid, get_block(cid))
    if node.kind not in _DIRECTORY_KINDS:
        raise IpfsFormatError(f"{cid} is not a directory")
    for link in _entries(cid, node, get_block):
        _check_name(link.name, f"directory {cid}")
        yield link


def _entries(cid: Cid, node: Node, get_block: GetBlock) -> Iterator[Link]:
    """A directory's entries, named as in the directory."""
    return _shard_entries(cid, node, get_block) if node.kind == "shard" else iter(node.links)


def _shard_entries(root: Cid, node: Node, get_block: GetBlock) -> Iterator[Link]:
    """The entries of the sharded directory ``root`` (its root shard ``node``), with
    their slot prefixes removed, fetching child shards as they come.

    Every entry must sit where its name's hash puts it, at every level: that is what
    makes a shard tree canonical, and it leaves no room for a name twice or a shard
    reused elsewhere in the tree.
    """
    fanout = node.fanout
    bits = fanout.bit_length() - 1
    width = len(f"{fanout - 1:X}")
    # (shard CID, the slots leading to it as one number, its links); depth = index.
    stack: list[tuple[Cid, int, Iterator[Link]]] = [(root, 0, iter(node.links))]
    while stack:
        shard, path, links = stack[-1]
        link = next(links, None)
        if link is None:
            stack.pop()
            continue
        depth = len(stack)  # levels of hash bits used once this link's slot is taken
        slots = (path << bits) | int(link.name[:width], 16)
        name = link.name[width:]
        if name:
            if _hamt_hash(name.encode("utf-8")) >> (_HASH_BITS - depth * bits) != slots:
                raise IpfsFormatError(
                    f"sharded directory {root}: entry {name!r} of shard {shard} is not in "
                    "the slot its hash gives it"
                )
            yield Link(name, link.cid, link.tsize)
            continue
        if (depth + 1) * bits > _HASH_BITS:
            raise IpfsFormatError(
                f"sharded directory {root}: shard {shard} links to a shard deeper than "
                f"its {_HASH_BITS}-bit hashes reach"
            )
        child = decode_node(link.cid, get_block(link.cid))
        if child.kind != "shard" or child.fanout != fanout:
            raise IpfsFormatError(
                f"sharded directory {root}: {link.cid}, in slot {link.name} of shard "
                f"{shard}, is not a HAMT shard of fanout {fanout}"
            )
        stack.append((link.cid, slots, iter(child.links)))


def _yield_file(path: str, cid: Cid, node: Node, get_block: GetBlock) -> Iterator[FileEntry]:
    assert node.filesize is not None
    chunks = _file_chunks(cid, node, get_block)
    yield FileEntry(path, node.filesize, chunks)
    for _ in chunks:  # drain what the caller left, keeping get_block order fixed
        pass


def dag_order(root: Cid, get_block: GetBlock) -> Iterator[Cid]:
    """The CIDs in the exact order ``walk`` asks ``get_block`` for them, repeats
    included (identical chunks or files are asked for each time they occur)."""
    calls: deque[Cid] = deque()

    def recording(cid: Cid) -> bytes:
        calls.append(cid)
        return get_block(cid)

    for entry in walk(root, recording):
        yield from _drain(calls)
        if isinstance(entry, FileEntry):
            for _ in entry.chunks:
                yield from _drain(calls)
    yield from _drain(calls)


def _drain(calls: deque[Cid]) -> Iterator[Cid]:
    while calls:
        yield calls.popleft()
