"""Peer exchange: which announced addresses a node will dial."""

from __future__ import annotations

import multiaddr
from libp2p.peer.id import ID

from node.mesh import Mesh
from protocol.identity import NodeKey


def test_on_a_public_network_announced_private_addresses_are_not_dialled():
    """A stranger's heartbeat naming LAN or loopback addresses must not point our peer
    exchange dials at our own LAN; on a LAN or devnet those are the addresses to dial."""
    async def ignore(*_: object) -> None:
        pass

    stranger = NodeKey.generate().peer_id
    claimed = ("/ip4/10.0.0.7/tcp/1235", "/ip4/127.0.0.1/tcp/1235", "/ip4/8.8.4.4/tcp/1235",
               "/dns4/node.example.org/tcp/1235")
    for dial_private, expected in (
            (False, {"/ip4/8.8.4.4/tcp/1235", "/dns4/node.example.org/tcp/1235"}),
            (True, set(claimed))):
        mesh = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore,
                    dial_private=dial_private)
        mesh.remember_addresses(stranger, tuple(f"{a}/p2p/{stranger}" for a in claimed))
        known = mesh.host.get_peerstore().addrs(ID.from_base58(stranger))
        assert {str(address) for address in known} == expected


def test_a_node_announcing_the_same_addresses_again_keeps_them_and_a_change_replaces_them():
    """Addresses parsed once are reused for the same announcement (each node's is refreshed
    every minute); what the peerstore holds is what the node announced last."""
    async def ignore(*_: object) -> None:
        pass

    mesh = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    node = NodeKey.generate().peer_id
    first = (f"/ip4/127.0.0.1/tcp/4210/p2p/{node}", f"/ip4/10.0.0.5/tcp/4210/p2p/{node}")
    later = (f"/ip4/10.0.0.9/tcp/4211/p2p/{node}",)
    peerstore = mesh.host.get_peerstore()
    for announced, expected in ((first, {"/ip4/127.0.0.1/tcp/4210", "/ip4/10.0.0.5/tcp/4210"}),
                                (first, {"/ip4/127.0.0.1/tcp/4210", "/ip4/10.0.0.5/tcp/4210"}),
                                (later, {"/ip4/10.0.0.9/tcp/4211"}),
                                (first, {"/ip4/127.0.0.1/tcp/4210", "/ip4/10.0.0.5/tcp/4210"})):
        # Learned elsewhere meanwhile (identify): replaced by what the node signed.
        peerstore.add_addrs(ID.from_base58(node), [multiaddr.Multiaddr("/ip4/10.1.1.1/tcp/9")],
                            600)
        mesh.remember_addresses(node, announced)
        assert {str(a) for a in peerstore.addrs(ID.from_base58(node))} == expected
