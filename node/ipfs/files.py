"""Files on disk to blocks and back (blocking: run in a worker thread).

Importing reads each file once: the same pass feeds the UnixFS importer and the
SHA-256 of the signed manifest. Symbolic links and special files are skipped, as
the manifest skips them; a container cannot make us read outside its results.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from protocol.cid import Cid
from protocol.messages import ManifestEntry
from protocol.unixfs import (
    CHUNK_SIZE,
    Block,
    DirectoryBuilder,
    DirectoryEntry,
    FileImporter,
    Link,
    walk,
)

PutBlocks = Callable[[Iterable[Block]], None]
READ_SIZE = 4 * CHUNK_SIZE


def import_file(handle: BinaryIO, put: PutBlocks) -> tuple[Link, str, int]:
    """Import one open file; return its root link, SHA-256 hex and size."""
    importer = FileImporter()
    digest = hashlib.sha256()
    while chunk := handle.read(READ_SIZE):
        digest.update(chunk)
        put(importer.write(chunk))
    blocks, link = importer.finish()
    put(blocks)
    return link, digest.hexdigest(), importer.size


def import_path(path: Path, put: PutBlocks) -> tuple[Link, list[ManifestEntry]]:
    """Import a file or a directory tree as ``ipfs add -r`` would; also list its files."""
    if path.is_file():
        with path.open("rb") as handle:
            link, sha, size = import_file(handle, put)
        return link, [ManifestEntry(path.name, size, sha)]
    builder = DirectoryBuilder()
    manifest: list[ManifestEntry] = []
    for directory, dirnames, filenames in os.walk(path):
        dirnames.sort()
        relative_dir = Path(directory).relative_to(path).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        if prefix:
            builder.add_directory(relative_dir)
        for name in sorted(filenames):
            full = os.path.join(directory, name)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            with open(full, "rb") as handle:
                link, sha, size = import_file(handle, put)
            builder.add_file(prefix + name, link)
            manifest.append(ManifestEntry(prefix + name, size, sha))
    blocks, root = builder.finish()
    put(blocks)
    manifest.sort(key=lambda entry: entry.path)
    return root, manifest


def import_tar(handle: BinaryIO, put: PutBlocks) -> Link:
    """Import an uncompressed tar stream (what ``bacnode ipfs add`` uploads).

    Its one top-level entry is the root: a single file, or a directory named like the
    path the user gave, whose contents become the DAG (as ``ipfs add -r`` does).
    """
    builder = DirectoryBuilder()
    single: Link | None = None
    top: set[str] = set()
    with tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            name = member.name.strip("/")
            if name.startswith("./"):
                name = name[2:]
            first, _, rest = name.partition("/")
            top.add(first)
            if member.isdir():
                if rest:
                    builder.add_directory(rest)
            elif member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                link, _, _ = import_file(extracted, put)
                if rest:
                    builder.add_file(rest, link)
                else:
                    single = link
    if len(top) != 1:
        raise ValueError(f"expected one file or directory, got {len(top)} top-level entries")
    if single is not None:
        return single
    blocks, root = builder.finish()
    put(blocks)
    return root


def export_to(root: Cid, get_block: Callable[[Cid], bytes], destination: Path) -> int:
    """Write the DAG under ``root`` to ``destination`` (a directory, or a file when
    the root is one); every block is verified. Returns the bytes written."""
    written = 0
    for entry in walk(root, get_block):
        target = destination / entry.path if entry.path else destination
        if isinstance(entry, DirectoryEntry):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            for chunk in entry.chunks:
                handle.write(chunk)
                written += len(chunk)
    return written
