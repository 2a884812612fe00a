"""The part of kubo's RPC API (``/api/v0``) that Bacalhau's IPFS result downloader calls.

``bacalhau job get`` fetches IPFS results through a kubo node it is pointed at
(``BACALHAU_RESULTDOWNLOADERS_TYPES_IPFS_ENDPOINT=/ip4/127.0.0.1/tcp/<API port>``): it asks
``id``, then walks the results with ``files/stat`` and ``ls`` and reads files with ``cat``,
all as POSTs with an ``arg`` of ``/ipfs/<CID>[/path]``. A bacnode daemon answers these itself:
the DAG is fetched over bitswap on first use, as for ``bacnode get``, and every block read is
verified against its CID. Nothing else of kubo's API is served.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import trio
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

import protocol
from protocol.cid import Cid, IpfsFormatError
from protocol.unixfs import FileEntry, GetBlock, decode_node, directory_links, walk

from .api_routing import Api
from .ipfs import FetchError, IpfsNode

KUBO_API = "/api/v0"
FETCH_SECONDS = 120.0
#: UnixFS types as kubo's ``ls`` numbers them.
_LS_DIRECTORY, _LS_FILE = 1, 2


def add_kubo_rpc_routes(
    app: Api,
    peer_id: str,
    get_ipfs: Callable[[], IpfsNode | None],
    candidates: Callable[[tuple[str, ...]], list[Any]],
) -> None:
    async def resolve(arg: str) -> tuple[IpfsNode, Cid]:
        """The node and CID that ``arg`` (``/ipfs/<CID>/a/b`` or a bare CID) names, with
        the whole DAG of its root held here."""
        ipfs = get_ipfs()
        if ipfs is None:
            raise HTTPException(503, "IPFS is not running on this node yet")
        parts = [part for part in arg.removeprefix("/ipfs/").split("/") if part]
        if not parts:
            raise HTTPException(400, f"arg {arg!r}: expected /ipfs/<CID>[/path]")
        try:
            root = Cid.parse(parts[0])
        except IpfsFormatError as exc:
            raise HTTPException(400, f"arg {arg!r}: {exc}") from None
        try:
            await ipfs.fetch(root, candidates(()), timeout=FETCH_SECONDS)
            cid = await trio.to_thread.run_sync(_follow, root, parts[1:], ipfs.read_block)
        except FetchError as exc:
            raise HTTPException(504, str(exc)) from None
        except IpfsFormatError as exc:
            raise HTTPException(500, f"{arg}: {exc}") from None
        return ipfs, cid

    @app.post(f"{KUBO_API}/id", tags=["kubo"])
    async def identity() -> dict[str, Any]:
        """Who answers: this node's peer ID."""
        return {"ID": peer_id, "AgentVersion": f"bacnode/{protocol.__version__}",
                "Addresses": [], "Protocols": []}

    @app.post(f"{KUBO_API}/files/stat", tags=["kubo"])
    async def files_stat(arg: str) -> dict[str, Any]:
        """Type and size of a file or directory."""
        ipfs, cid = await resolve(arg)
        node = await trio.to_thread.run_sync(lambda: decode_node(cid, ipfs.read_block(cid)))
        is_file = node.kind in ("file", "raw")
        size = await trio.to_thread.run_sync(ipfs.dag_size, cid)
        return {"Hash": str(cid), "Type": "file" if is_file else "directory",
                "Size": node.filesize if is_file else 0, "CumulativeSize": size,
                "Blocks": len(node.links), "Mode": "", "Mtime": 0}

    @app.post(f"{KUBO_API}/ls", tags=["kubo"])
    async def ls(arg: str) -> StreamingResponse:
        """A directory's entries, one JSON object per line as kubo streams them."""
        ipfs, cid = await resolve(arg)
        entries = await trio.to_thread.run_sync(_ls, cid, ipfs.read_block)

        async def lines() -> AsyncIterator[bytes]:
            for entry in entries:
                yield json.dumps({"Objects": [{"Hash": str(cid), "Links": [entry]}]}).encode()
                yield b"\n"

        return StreamingResponse(lines(), media_type="application/json")

    @app.post(f"{KUBO_API}/cat", tags=["kubo"])
    async def cat(arg: str) -> StreamingResponse:
        """A file's bytes, each block verified as it is read."""
        ipfs, cid = await resolve(arg)
        chunks = await trio.to_thread.run_sync(_file_chunks, cid, ipfs.read_block)

        async def body() -> AsyncIterator[bytes]:
            while (chunk := await trio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream")


def _follow(root: Cid, names: list[str], get_block: GetBlock) -> Cid:
    cid = root
    for name in names:
        found = next((link.cid for link in directory_links(cid, get_block)
                      if link.name == name), None)
        if found is None:
            raise IpfsFormatError(f"no entry {name!r} in directory {cid}")
        cid = found
    return cid


def _ls(cid: Cid, get_block: GetBlock) -> list[dict[str, Any]]:
    entries = []
    for link in directory_links(cid, get_block):
        node = decode_node(link.cid, get_block(link.cid))
        is_file = node.kind in ("file", "raw")
        entries.append({"Name": link.name, "Hash": str(link.cid),
                        "Size": node.filesize if is_file else 0,
                        "Type": _LS_FILE if is_file else _LS_DIRECTORY, "Target": ""})
    return entries


def _file_chunks(cid: Cid, get_block: GetBlock) -> Iterator[bytes]:
    first = next(walk(cid, get_block))
    if not isinstance(first, FileEntry):
        raise HTTPException(400, f"{cid} is a directory, not a file")
    return first.chunks
