"""IPFS on a bacnode: a blockstore, bitswap on the mesh's host, pins and GC.

CIDs are kubo's (``protocol.unixfs``), so what a node publishes can be fetched by
ordinary IPFS tools that connect to it, and what they hold can be a job's input.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from protocol.car import encode_block, encode_header
from protocol.cid import Cid, IpfsFormatError
from protocol.messages import ManifestEntry
from protocol.unixfs import Link, dag_order

from .bitswap import Bitswap, FetchError
from .blockstore import Blockstore
from .files import export_to, import_path, import_tar

__all__ = ["FetchError", "IpfsNode"]

log = logging.getLogger("bacnode.ipfs")

GC_INTERVAL_SECONDS = 3600.0
#: Unpinned blocks younger than this survive GC: an import or fetch may still need them.
GC_GRACE_SECONDS = 3600.0
CAR_BATCH_BYTES = 4 * 1024 * 1024


class IpfsNode:
    def __init__(self, data_dir: Path, *, store: Any, retention_hours: float) -> None:
        self.blockstore = Blockstore(data_dir / "blocks")
        self.store = store
        self.retention_ms = int(retention_hours * 3600 * 1000)
        self._tmp = data_dir / "blocks" / "tmp"
        self.bitswap: Bitswap | None = None
        self._provide: Callable[[str], None] = lambda cid: None

    async def run(
        self,
        host: Any,
        *,
        route_to: Callable[[ID], Awaitable[None]] | None = None,
        find_providers: Callable[[str], Awaitable[list[ID]]] | None = None,
        provide: Callable[[str], None] | None = None,
        task_status: trio.TaskStatus[IpfsNode] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve and fetch blocks over bitswap on ``host``. ``provide`` tells the DHT
        which CIDs are held here (every live pin at start, then each new one), and
        ``find_providers`` asks it who holds a root no known peer has."""
        self.bitswap = Bitswap(host, self.blockstore, route_to=route_to,
                               find_providers=find_providers)
        if provide is not None:
            self._provide = provide
        async with trio.open_nursery() as nursery:
            await nursery.start(self.bitswap.run)
            nursery.start_soon(self._collect_garbage_periodically)
            for cid in await self.store.live_pins(int(time.time() * 1000)):
                self._provide(cid)
            task_status.started(self)

    # -- adding --------------------------------------------------------------

    async def add_path(self, path: Path, *, reason: str) -> tuple[Link, list[ManifestEntry]]:
        """Import a file or directory and pin it for the retention period."""
        link, manifest = await trio.to_thread.run_sync(
            import_path, path, self.blockstore.put_many
        )
        await self._pin(link.cid, reason)
        return link, manifest

    async def add_tar(self, tar_path: Path, *, reason: str) -> Link:
        def run() -> Link:
            with tar_path.open("rb") as handle:
                return import_tar(handle, self.blockstore.put_many)

        link = await trio.to_thread.run_sync(run)
        await self._pin(link.cid, reason)
        return link

    async def _pin(self, cid: Cid, reason: str) -> None:
        now = int(time.time() * 1000)
        await self.store.pin(str(cid), reason, now, now + self.retention_ms)
        self._provide(str(cid))

    def temporary_file(self) -> Any:
        return tempfile.NamedTemporaryFile(dir=self._tmp, delete=False, prefix="upload-")

    # -- fetching ------------------------------------------------------------

    def dag_size(self, root: Cid) -> int:
        """Bytes of every block under ``root`` (held here); blocking."""
        return sum(self.blockstore.size(cid) or 0 for cid in dag_order(root, self.read_block))

    async def fetch(
        self,
        root: Cid,
        peers: Iterable[ID],
        *,
        timeout: float,
        on_root: Callable[[int], None] | None = None,
    ) -> int:
        """Make every block under ``root`` local; raises ``FetchError``."""
        if self.bitswap is None:
            raise FetchError("IPFS is not running on this node")
        return await self.bitswap.fetch_dag(root, peers, timeout=timeout, on_root=on_root)

    async def export(self, root: Cid, destination: Path) -> int:
        """Write a DAG already held here to ``destination`` (verified block by block)."""
        return await trio.to_thread.run_sync(export_to, root, self.read_block, destination)

    def read_block(self, cid: Cid) -> bytes:
        """A block held here (verified by whoever decodes it); FetchError if missing."""
        data = self.blockstore.get(cid)
        if data is None:
            raise FetchError(f"block {cid} is missing from the blockstore")
        return data

    def car_chunks(self, root: Cid) -> Iterator[bytes]:
        """A CARv1 of the DAG in the order ``protocol.unixfs.walk`` reads it; blocking."""
        batch = [encode_header([root])]
        size = 0
        for cid in dag_order(root, self.read_block):
            frame = encode_block(cid, self.read_block(cid))
            batch.append(frame)
            size += len(frame)
            if size >= CAR_BATCH_BYTES:
                yield b"".join(batch)
                batch, size = [], 0
        if batch:
            yield b"".join(batch)

    # -- garbage collection --------------------------------------------------

    async def collect_garbage(self, *, grace_seconds: float = GC_GRACE_SECONDS) -> tuple[int, int]:
        pins = await self.store.live_pins(int(time.time() * 1000))
        roots = []
        for text in pins:
            try:
                roots.append(Cid.parse(text))
            except IpfsFormatError:
                log.warning("ignoring an unreadable pin %r", text)
        deleted, freed = await trio.to_thread.run_sync(
            lambda: self.blockstore.collect_garbage(roots, grace_seconds=grace_seconds)
        )
        if deleted:
            log.info("IPFS GC: deleted %d blocks, %d bytes", deleted, freed)
        return deleted, freed

    async def _collect_garbage_periodically(self) -> None:
        while True:
            try:
                await self.collect_garbage()
            except Exception as exc:
                log.warning("IPFS GC failed: %r", exc)
            await trio.sleep(GC_INTERVAL_SECONDS)

    def stats(self) -> dict[str, Any]:
        return self.bitswap.stats.as_json() if self.bitswap else {}
