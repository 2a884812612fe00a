"""Content-addressed block files in the data dir.

One file per block, named by the hex of its multihash (so a dag-pb block is shared by
its CIDv0 and CIDv1 names). Writes go to a temporary file renamed into place, so a
crash never leaves a partial block under a real name; reads verify the hash, so a
block damaged on disk is deleted and reported missing rather than served.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from protocol.cid import Cid, IpfsFormatError
from protocol.unixfs import Block, child_cids

log = logging.getLogger("bacnode.ipfs")


class Blockstore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Leftovers of writes a crash interrupted.
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def _path(self, cid: Cid) -> Path:
        name = cid.multihash.hex()
        return self.root / name[-3:-1] / name

    def has(self, cid: Cid) -> bool:
        return cid.inline_data is not None or self._path(cid).exists()

    def put(self, block: Block) -> None:
        if block.cid.inline_data is not None:
            return  # the CID holds the data
        path = self._path(block.cid)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        tmp = self._tmp / f"{path.name}.{os.getpid()}.{time.monotonic_ns()}"
        with open(tmp, "wb") as handle:
            handle.write(block.data)
        os.replace(tmp, path)

    def put_many(self, blocks: Iterable[Block]) -> None:
        for block in blocks:
            self.put(block)

    def get(self, cid: Cid) -> bytes | None:
        """The block's bytes, verified against ``cid``; None when absent or damaged."""
        if cid.inline_data is not None:
            return cid.inline_data
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            cid.verify(data)
        except IpfsFormatError:
            log.warning("block %s was damaged on disk; deleted", cid)
            path.unlink(missing_ok=True)
            return None
        return data

    def size(self, cid: Cid) -> int | None:
        try:
            return self._path(cid).stat().st_size
        except FileNotFoundError:
            return None

    def _files(self) -> Iterator[Path]:
        for directory in self.root.iterdir():
            if directory.is_dir() and directory != self._tmp:
                yield from directory.iterdir()

    def usage(self) -> tuple[int, int]:
        """(number of blocks, total bytes)."""
        count = total = 0
        for path in self._files():
            count += 1
            total += path.stat().st_size
        return count, total

    def reachable(self, roots: Iterable[Cid]) -> set[bytes]:
        """Multihashes of every block present under ``roots``."""
        seen: set[bytes] = set()
        pending = list(roots)
        while pending:
            cid = pending.pop()
            if cid.multihash in seen:
                continue
            data = self.get(cid)
            if data is None:
                continue
            seen.add(cid.multihash)
            try:
                pending.extend(child_cids(cid, data))
            except IpfsFormatError:
                pass  # a block we cannot parse has no children we could keep
        return seen

    def collect_garbage(self, roots: Iterable[Cid], *, grace_seconds: float) -> tuple[int, int]:
        """Delete blocks not under ``roots`` and older than ``grace_seconds``.

        The grace period protects blocks of an import or fetch still under way, whose
        root is not pinned yet. Returns (blocks deleted, bytes freed).
        """
        keep = self.reachable(roots)
        cutoff = time.time() - grace_seconds
        deleted = freed = 0
        for path in list(self._files()):
            try:
                digest = bytes.fromhex(path.name)
                stat = path.stat()
            except (ValueError, FileNotFoundError):
                continue
            if digest in keep or stat.st_mtime > cutoff:
                continue
            path.unlink(missing_ok=True)
            deleted += 1
            freed += stat.st_size
        return deleted, freed
