"""A node closes the connections it does not use once it has more than it needs
(``Mesh._trim_connections``): a real mesh and real libp2p peers on loopback, in one
process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

import node.mesh as mesh_module
from node.mesh import RESULTS_PROTOCOL, Mesh
from protocol.identity import NodeKey


async def ignore(*_: object) -> None:
    pass


@asynccontextmanager
async def plain_peer() -> AsyncIterator[Any]:
    """A libp2p host that speaks no gossip: what a DHT lookup leaves connected."""
    secret = Ed25519PrivateKey.from_bytes(NodeKey.generate().seed)
    key_pair = KeyPair(secret, secret.get_public_key())
    host = new_host(key_pair=key_pair,
                    sec_opt={TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
                        key_pair, noise_privkey=new_x25519_key_pair().private_key)},
                    muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux})
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


async def test_idle_connections_over_the_target_are_closed_and_the_needed_ones_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No trimming until every peer is connected and the gossip mesh has formed: on a busy
    # machine the four connections take longer than the idle time this test uses.
    monkeypatch.setattr(mesh_module, "CONNECTION_TARGET", 100)
    monkeypatch.setattr(mesh_module, "CONNECTION_IDLE_SECONDS", 0.5)
    monkeypatch.setattr(mesh_module, "TRIM_CHECK_SECONDS", 0.5)
    hub = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    gossiping = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, plain_peer() as idle_a, \
                plain_peer() as idle_b, plain_peer() as transferring:
            await nursery.start(hub.run)
            await nursery.start(gossiping.run)
            hub_info = info_from_p2p_addr(multiaddr.Multiaddr(hub.addresses()[0]))
            for host in (gossiping.host, idle_a, idle_b, transferring):
                await host.connect(hub_info)
            stream = await transferring.new_stream(hub.host.get_id(), [RESULTS_PROTOCOL])
            keep = {gossiping.host.get_id(), transferring.get_id()}

            def connected() -> set[Any]:
                return set(hub.host.get_connected_peers())

            assert len(connected()) == 4
            while gossiping.host.get_id() not in set().union(*hub.gossipsub.mesh.values()):
                await trio.sleep(0.1)
            monkeypatch.setattr(mesh_module, "CONNECTION_TARGET", 1)
            while connected() != keep:
                await trio.sleep(0.1)
            # Kept, not closed again and again: the gossip peer and the open transfer stay.
            await trio.sleep(2)
            assert connected() == keep
            await stream.reset()
            hub.stop()
            gossiping.stop()
