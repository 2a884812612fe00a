"""Bitswap with peers that are not bacnode daemons (a liar, an IPFS node outside the mesh, a
peer serving a block that is not UnixFS), and with no peer at all.

Both are real libp2p hosts in the test process running our own bitswap engine. The
liar's store claims every block and flips a byte of each one it serves (so it speaks
the protocol exactly and lies only about content): the daemon fetching through it
must reject those blocks, fetch them again from the honest daemon, and count the
rejections. The outside node is reachable only through ``--ipfs-peer``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.ipfs.bitswap import Bitswap
from node.ipfs.blockstore import Blockstore
from node.mesh import Mesh
from protocol.cid import Cid
from protocol.identity import NodeKey
from protocol.unixfs import Block, import_bytes
from scripts.daemons import Daemon, DaemonPool, free_ports

TEST_TIMEOUT = 90


class TamperingStore:
    """Says it has everything; serves each real block with one byte flipped."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = {block.cid.multihash: block.data for block in blocks}
        self.served = 0

    def has(self, cid: Cid) -> bool:
        return True

    def get(self, cid: Cid) -> bytes:
        data = self.blocks.get(cid.multihash, b"no such block, but here are bytes")
        self.served += 1
        return data[:-1] + bytes([data[-1] ^ 0x01])

    def put_many(self, blocks: Any) -> None:
        pass


async def noop_handler(topic: str, envelope: Any, message: Any) -> None:
    pass


async def test_tampered_blocks_are_rejected_and_fetched_from_an_honest_peer(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    honest = daemons.new("honest")
    fetcher = daemons.new("fetcher", peers=[honest])
    for daemon in (honest, fetcher):
        daemon.peer_id  # noqa: B018 - the key exists before the peer is told the address
        daemon.launch()  # from the main thread: see scripts/daemons.py on cleanup
    for daemon in (honest, fetcher):
        await trio.to_thread.run_sync(daemon.wait_ready)
    await trio.to_thread.run_sync(fetcher.wait_connected, {honest.peer_id, fetcher.peer_id})

    payload = os.urandom(4 * 1024 * 1024 + 123)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    added = await trio.to_thread.run_sync(lambda: honest.cli("ipfs", "add", "-q", str(source)))
    assert added.returncode == 0, added.stderr
    cid = added.stdout.strip()
    blocks, root = import_bytes(payload)
    assert str(root.cid) == cid

    store = TamperingStore(blocks)
    (port,) = free_ports(1)
    mesh = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                on_message=noop_handler)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            liar = Bitswap(mesh.host, store)  # type: ignore[arg-type]
            await nursery.start(liar.run)
            try:
                await mesh.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(fetcher.multiaddr)))
                await check_fetch(fetcher, cid, payload, tmp_path / "out.bin", store)
            finally:
                mesh.stop()
                nursery.cancel_scope.cancel()


async def check_fetch(fetcher: Daemon, cid: str, payload: bytes, out: Path,
                      store: TamperingStore) -> None:
    got = await trio.to_thread.run_sync(lambda: fetcher.cli("ipfs", "get", cid, "-o", str(out)))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == payload
    stats = await trio.to_thread.run_sync(fetcher.api, "/api/v1/agent/ipfs")
    assert store.served >= 1, "the liar was never asked: the test proves nothing"
    assert stats["Bitswap"]["BlocksRejected"] >= 1
    # Nothing it sent was kept: every stored block verifies, the payload is intact.
    assert stats["Bitswap"]["BlocksReceived"] >= len(payload) // (256 * 1024)


@asynccontextmanager
async def _outside_peer(
    daemons: DaemonPool, tmp_path: Path, blocks: list[Block]
) -> AsyncIterator[tuple[Daemon, Bitswap]]:
    """A daemon whose ``--ipfs-peer`` is a plain libp2p/bitswap host (not a bacnode) holding
    ``blocks``; both up, the daemon ready."""
    key = NodeKey.generate()
    (port,) = free_ports(1)
    address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{key.peer_id}"
    node = daemons.new("node", args=["--ipfs-peer", address])
    node.peer_id  # noqa: B018
    node.launch()
    store = Blockstore(tmp_path / "outside-blocks")
    store.put_many(blocks)
    mesh = Mesh(key, listen=(f"/ip4/127.0.0.1/tcp/{port}",), on_message=noop_handler)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            outside = Bitswap(mesh.host, store)
            await nursery.start(outside.run)
            try:
                await trio.to_thread.run_sync(node.wait_ready)
                yield node, outside
            finally:
                mesh.stop()
                nursery.cancel_scope.cancel()


async def test_blocks_come_from_an_ipfs_peer_outside_the_mesh(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    """``--ipfs-peer``: a plain libp2p/bitswap host, not a bacnode, holding the data."""
    payload = os.urandom(1_500_000)
    blocks, root = import_bytes(payload)
    async with _outside_peer(daemons, tmp_path, blocks) as (node, outside):
        out = tmp_path / "got.bin"
        got = await trio.to_thread.run_sync(
            lambda: node.cli("ipfs", "get", str(root.cid), "-o", str(out)))
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == payload
        assert outside.stats.blocks_served == len(blocks)


async def test_a_block_that_is_not_unixfs_is_a_clear_error_not_a_crash(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    """A peer serves a block whose bytes match its CID but are no dag-pb node: the fetch
    stops with why, as a one-line error, and the daemon goes on serving."""
    garbage = b"\xff" * 64  # no protobuf field starts with 0xff
    block = Block(Cid.for_block(garbage), garbage)
    async with _outside_peer(daemons, tmp_path, [block]) as (node, _):
        got = await trio.to_thread.run_sync(
            lambda: node.cli("ipfs", "get", str(block.cid), "-o", str(tmp_path / "got")))
        assert got.returncode == 1
        assert f"{block.cid} cannot be read: " in got.stderr
        assert len(got.stderr.strip().splitlines()) == 1, got.stderr
        assert not (tmp_path / "got").exists()
        assert node.running and node.cli("version").returncode == 0


def test_a_lone_node_says_at_once_that_nobody_holds_a_cid(
    daemons: DaemonPool, busybox_image: str, tmp_path: Path
) -> None:
    """No peer to ask, and the DHT names none: there is nobody to wait for, so neither a get
    nor a job's staging waits out its timeout (a job's is its whole execution timeout)."""
    node = daemons.start("alone")
    _, root = import_bytes(b"nobody has these bytes " + os.urandom(16))
    missing = str(root.cid)
    reason = f"{missing} not found: no peers to ask, and the DHT knows of no holder"

    began = time.monotonic()
    got = node.cli("ipfs", "get", missing, "-o", str(tmp_path / "got"))
    assert got.returncode == 1 and reason in got.stderr, got.stderr
    assert not (tmp_path / "got").exists()
    job = node.cli("docker", "run", "--wait", "--id-only", "-p", "local",
                   "-i", f"ipfs://{missing}:/inputs", "busybox", "--", "true")
    assert job.returncode == 1 and reason in job.stderr, job.stderr
    assert time.monotonic() - began < 30
