"""An AutoNAT dial-back leaves the connection between asker and server as it was
(``node.reach``): two real meshes on loopback, in one process.

With one connection per peer, the swarm closed the older connection when the dial-back's
arrived, on both sides, and then the dial-back's was closed too: every 5 minutes (the
recheck) each node lost the connections to the peers it asked, and with them its gossip
mesh, until it dialled them again."""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.mesh import TOPIC_NODES, Mesh
from protocol.identity import NodeKey


async def ignore(*_: object) -> None:
    pass


def open_connections(mesh: Mesh, peer: Any) -> list[Any]:
    return [conn for conn in mesh.host.get_network().get_connections(peer)
            if not conn.muxed_conn.is_closed]


async def test_a_dial_back_keeps_the_connection_it_was_asked_over() -> None:
    asker = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    server = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    for mesh in (asker, server):
        # The swarm spares a connection younger than its grace period (20 s) when it trims,
        # and so the dial-back's, not the older one asked over: every recheck after the
        # first comes later than that. 1 s here, and the dial-backs past it.
        mesh.host.get_network().connection_config.grace_period = 1.0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(asker.run)
            await nursery.start(server.run)
            server_id, asker_id = server.host.get_id(), asker.host.get_id()
            await asker.host.connect(
                info_from_p2p_addr(multiaddr.Multiaddr(server.addresses()[0])))
            while asker_id not in server.gossipsub.mesh.get(TOPIC_NODES, set()):
                await trio.sleep(0.05)
            (before_asker,) = open_connections(asker, server_id)
            (before_server,) = open_connections(server, asker_id)
            await trio.sleep(1.5)

            for _ in range(2):
                assert await asker.reach._ask_for_dial_backs([server_id]) == [True]
                await trio.sleep(1)  # what a closed connection sets off has happened
                assert open_connections(asker, server_id) == [before_asker]
                assert open_connections(server, asker_id) == [before_server]
                assert asker_id in server.gossipsub.mesh[TOPIC_NODES]
                assert server_id in asker.gossipsub.mesh[TOPIC_NODES]
            asker.stop()
            server.stop()
