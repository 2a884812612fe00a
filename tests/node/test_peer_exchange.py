"""Peer exchange: which announced addresses a node will dial."""

from __future__ import annotations

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
