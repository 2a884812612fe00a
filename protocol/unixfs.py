"""UnixFS over dag-pb, byte-for-byte as kubo's default ``ipfs add`` builds it.

The default profile (``unixfs-v0-2015``): CIDv0, dag-pb UnixFS leaves, 256 KiB fixed
chunks, balanced layout with 174 links per node, sorted plain (unsharded) directories.
Importing streams: the importer holds at most one partial chunk plus one list of
links per tree level. Reading (``walk``) verifies every block against its CID and
parses strictly, since blocks come from untrusted peers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .cid import DAG_PB, RAW, Buffer, Cid, IpfsFormatError, codec_name, encode_uvarint

CHUNK_SIZE = 262_144
MAX_LINKS = 174
#: Deeper DAGs are refused: kubo's file trees are a handful of levels, and a long
#: chain of one-link nodes is only ever an attack on the reader.
MAX_DEPTH = 1024

# UnixFS Data.Type values.
_RAW, _DIRECTORY, _FILE, _METADATA, _SYMLINK, _HAMT_SHARD = range(6)
_UNSUPPORTED_TYPES = {
    _METADATA: "Metadata",
    _SYMLINK: "Symlink (symbolic link)",
    _HAMT_SHARD: "HAMTShard (sharded directory)",
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
    """A decoded block. ``kind`` is "file", "directory" or "raw" (a raw-codec leaf)."""

    kind: str
    links: tuple[Link, ...]
    data: bytes  # file content held in this block itself
    filesize: int | None  # content bytes under this node; None for directories


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


def directory_block(links: Iterable[Link]) -> Block:
    """A plain UnixFS directory holding ``links`` (sorted by name, as kubo does)."""
    # Go compares strings bytewise, so kubo's order is that of the UTF-8 bytes.
    keyed = sorted(
        ((_check_name(link.name, "a directory"), link) for link in links), key=lambda pair: pair[0]
    )
    for (a, _), (b, _) in zip(keyed, keyed[1:], strict=False):
        if a == b:
            raise IpfsFormatError(f"two entries named {a.decode()!r} in one directory")
    return _make_block(_encode_node((link for _, link in keyed), _DIRECTORY_DATA))


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
        """All directory blocks (children before parents) and the root link."""
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
            block = directory_block(links)
            blocks.append(block)
            built[id(tree)] = _link_to(block, links)
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
        elif field in (5, 6) and wire == 0:
            pass  # hashType, fanout: only meaningful for HAMT shards
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
        if node.kind == "directory":
            raise IpfsFormatError(f"file {root} links to a directory ({link.cid})")
    if seen != expected:
        raise IpfsFormatError(
            f"file {root}: chunks add up to {seen} bytes but its size is {expected}"
        )


def walk(root: Cid, get_block: GetBlock) -> Iterator[DirectoryEntry | FileEntry]:
    """Every directory and file under ``root``, depth-first pre-order, verified.

    A file's chunks must be consumed before the next entry is asked for; whatever is
    left unread is fetched and checked then, so ``get_block`` calls always follow
    ``dag_order``.
    """
    node = decode_node(root, get_block(root))
    if node.kind != "directory":
        yield from _yield_file("", root, node, get_block)
        return
    yield DirectoryEntry("")
    stack: list[tuple[str, Iterator[Link]]] = [("", iter(node.links))]
    while stack:
        path, links = stack[-1]
        link = next(links, None)
        if link is None:
            stack.pop()
            continue
        _check_name(link.name, f"directory {path or root}")
        child_path = f"{path}/{link.name}" if path else link.name
        child = decode_node(link.cid, get_block(link.cid))
        if child.kind == "directory":
            if len(stack) >= MAX_DEPTH:
                raise IpfsFormatError(f"directory {root} is nested more than {MAX_DEPTH} levels")
            yield DirectoryEntry(child_path)
            stack.append((child_path, iter(child.links)))
        else:
            yield from _yield_file(child_path, link.cid, child, get_block)


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
