"""The local API's IPFS routes: add (a tar upload), fetch as a CAR stream, and stats.

The CLI never speaks bitswap: the daemon fetches blocks from the mesh, and the CLI
re-verifies every block of the CAR it streams back against the CID it asked for.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import StreamingResponse

from protocol.cid import Cid, IpfsFormatError

from .api_routing import Api
from .ipfs import FetchError, IpfsNode

logger = logging.getLogger(__name__)

API = "/api/v1"
#: Largest upload ``bacnode ipfs add`` may send, bytes.
MAX_UPLOAD_BYTES = 64 * 1024**3
DEFAULT_FETCH_SECONDS = 120.0


def _storage_error(exc: OSError, doing: str) -> HTTPException:
    """A 507 for a full disk, a 500 otherwise; logged either way, as nothing else tells the
    node's operator."""
    logger.error("ipfs add: %s: %s", doing, exc)
    if exc.errno == errno.ENOSPC:
        return HTTPException(507, f"{doing}: the node's disk is full; nothing was added")
    return HTTPException(500, f"{doing}: {exc.strerror or exc}; nothing was added")


#: What one ``ipfs add`` may upload.
MAX_UPLOAD_BYTES = 1 << 40


def add_ipfs_routes(
    app: Api,
    get_ipfs: Callable[[], IpfsNode | None],
    candidates: Callable[[tuple[str, ...]], list[Any]],
) -> None:
    def need_ipfs() -> IpfsNode:
        ipfs = get_ipfs()
        if ipfs is None:
            raise HTTPException(503, "IPFS is not running on this node yet")
        return ipfs

    # An upload is spooled to disk as it arrives: the disk bounds it, not the API's limit.
    @app.post(f"{API}/ipfs/add", tags=["ipfs"], max_body_size=MAX_UPLOAD_BYTES)
    async def add(request: Request) -> dict[str, Any]:
        """Import an uncompressed tar of one file or directory; pin it; return its CID."""
        ipfs = need_ipfs()
        try:
            spool = ipfs.temporary_file()
        except OSError as exc:
            raise _storage_error(exc, "cannot take the upload") from None
        path = Path(spool.name)
        try:
            received = 0
            failed: OSError | None = None
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_UPLOAD_BYTES:
                    raise HTTPException(413, f"upload over {MAX_UPLOAD_BYTES} bytes")
                if failed is not None:
                    continue  # read the rest: a client still sending would wait forever
                try:
                    await trio.to_thread.run_sync(spool.write, chunk)
                except OSError as exc:  # e.g. the disk is full
                    failed = exc
                    # Give the space back now. Not spool.truncate(): it flushes first, which
                    # fails the same way and would end the request before the body is read.
                    with contextlib.suppress(OSError):
                        os.ftruncate(spool.fileno(), 0)
            if failed is not None:
                raise failed
            await trio.to_thread.run_sync(spool.close)
            try:
                link = await ipfs.add_tar(path, reason="bacnode ipfs add")
            except (tarfile.TarError, ValueError, IpfsFormatError) as exc:
                logger.warning("ipfs add: refused an upload of %d bytes: %s", received, exc)
                raise HTTPException(400, f"the upload is not a readable tar ({exc}); "
                                         "nothing was added") from None
            size = await trio.to_thread.run_sync(ipfs.dag_size, link.cid)
            return {"CID": str(link.cid), "Size": size}
        except OSError as exc:
            raise _storage_error(exc, "cannot import the upload") from None
        finally:
            with contextlib.suppress(OSError):  # its unflushed bytes may not fit either
                spool.close()
            os.unlink(path)

    @app.get(f"{API}/ipfs/car/{{cid}}", tags=["ipfs"])
    async def car(
        cid: str, peer: str = "", timeout: float = DEFAULT_FETCH_SECONDS
    ) -> StreamingResponse:
        """Fetch the DAG (over bitswap when not held here), then stream it as a CARv1.

        ``peer`` names a node likely to hold it (e.g. the one that published it).
        """
        ipfs = need_ipfs()
        try:
            root = Cid.parse(cid)
        except IpfsFormatError as exc:
            raise HTTPException(400, str(exc)) from None
        started = trio.current_time()
        try:
            fetched = await ipfs.fetch(root, candidates((peer,) if peer else ()), timeout=timeout)
            size = await trio.to_thread.run_sync(ipfs.dag_size, root)
        except FetchError as exc:
            raise HTTPException(504, str(exc)) from None
        except IpfsFormatError as exc:
            raise HTTPException(502, f"{cid} cannot be read: {exc}") from None

        async def chunks() -> AsyncIterator[bytes]:
            frames = ipfs.car_chunks(root)
            while (chunk := await trio.to_thread.run_sync(next, frames, None)) is not None:
                yield chunk

        headers = {
            "X-Dag-Size": str(size),
            # What came over bitswap, and how long it took (0 when all was held here).
            "X-Fetched-Bytes": str(fetched),
            "X-Fetch-Seconds": f"{trio.current_time() - started:.6f}",
        }
        return StreamingResponse(chunks(), media_type="application/vnd.ipld.car", headers=headers)

    @app.get(f"{API}/agent/ipfs", tags=["agent"])
    async def stats() -> dict[str, Any]:
        """Bitswap counters (blocks served, received, rejected) and blockstore usage."""
        ipfs = need_ipfs()
        blocks, size = await trio.to_thread.run_sync(ipfs.blockstore.usage)
        return {"Bitswap": ipfs.stats(), "Blockstore": {"Blocks": blocks, "Bytes": size}}
