"""The bacnode DHT: a CID is found on a node that nobody asking knows how to reach.

Real daemons on loopback, the real CLI. Peer exchange is off (``--peer-exchange 0``), so
each leaf keeps one connection, to the hub it bootstrapped to, and learns of the other only
through gossip (which does not tell it who holds what).
"""

from __future__ import annotations

import os
from pathlib import Path

from node.dht import PROTOCOL_ID
from node.mesh import Mesh
from protocol.identity import NodeKey
from scripts.daemons import DaemonPool, wait_until

CONVERGE_TIMEOUT = 30.0


def test_a_cid_held_by_a_node_neither_connected_nor_bootstrapped_is_found_and_fetched(
        daemons: DaemonPool, tmp_path: Path):
    lonely = ["--peer-exchange", "0"]
    hub = daemons.new("hub", args=lonely)
    holder = daemons.new("holder", peers=[hub], args=lonely)
    daemons.start_all([hub, holder])
    holder.wait_connected([hub.peer_id], timeout=CONVERGE_TIMEOUT)
    content = tmp_path / "dataset"
    content.mkdir()
    (content / "a.bin").write_bytes(os.urandom(300_000))  # two chunks and a root
    (content / "notes.txt").write_text("held by one node only\n")
    added = holder.cli("ipfs", "add", "-q", str(content))
    assert added.returncode == 0, added.stderr
    cid = added.stdout.strip()
    # The holder stores its provider record with the servers closest to the CID: the hub.
    wait_until(lambda: hub.mesh_stats()["DHT"]["ProviderRecords"] >= 1,
               timeout=CONVERGE_TIMEOUT, what="the hub to keep the holder's provider record")

    # A newcomer that knows the hub only. It hears of the holder by gossip, but nothing
    # tells it that the holder has the CID, and nobody it is connected to has it.
    seeker = daemons.new("seeker", peers=[hub], args=lonely)
    seeker.start()
    seeker.wait_connected([hub.peer_id, holder.peer_id], timeout=CONVERGE_TIMEOUT)
    assert set(seeker.mesh_stats()["Peers"]) == {hub.peer_id}

    fetched = seeker.cli("ipfs", "get", cid, "-o", str(tmp_path / "got"), "--timeout", "60")
    assert fetched.returncode == 0, fetched.stderr
    for name in ("a.bin", "notes.txt"):
        assert (tmp_path / "got" / name).read_bytes() == (content / name).read_bytes()
    # The seeker found the holder through the DHT and fetched from it directly.
    assert holder.peer_id in seeker.mesh_stats()["Peers"]


def test_a_cid_nobody_holds_fails_with_what_was_asked(daemons: DaemonPool, tmp_path: Path):
    hub = daemons.new("hub")
    seeker = daemons.new("seeker", peers=[hub])
    daemons.start_all([hub, seeker])
    seeker.wait_connected([hub.peer_id], timeout=CONVERGE_TIMEOUT)
    wait_until(lambda: hub.peer_id in seeker.mesh_stats()["Peers"], timeout=CONVERGE_TIMEOUT,
               what="the seeker to connect to the hub")
    missing = "QmcJZs2DmFsnXJ2HG5DB4rGNGYp9H7J4qt9BgwyhrWqhrT"  # a CID nobody added
    fetched = seeker.cli("ipfs", "get", missing, "-o", str(tmp_path / "got"),
                         "--timeout", "5")
    assert fetched.returncode != 0
    assert "named by the DHT" in fetched.stderr, fetched.stderr
    assert not (tmp_path / "got").exists()


def test_the_dht_speaks_its_own_protocol_never_the_public_ipfs_one():
    async def ignore(*_: object) -> None:
        pass

    mesh = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore)
    offered = {str(protocol) for protocol in mesh.host.get_mux().get_protocols()}
    assert PROTOCOL_ID in offered
    assert "/ipfs/kad/1.0.0" not in offered


async def test_provider_records_a_peer_sends_are_bounded(monkeypatch):
    """A real peer sends ADD_PROVIDER messages on the DHT's protocol, each naming itself with
    1,000 addresses, for more keys than the target takes from others (lowered to 4 here;
    py-libp2p lets a peer add 10 every 10 s): the target keeps 8 addresses a record and
    records for 4 keys, and still takes its own."""
    import multiaddr
    import trio
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.utils.varint import encode_varint_prefixed

    import node.dht
    from scripts.daemons import free_ports

    monkeypatch.setattr(node.dht, "MAX_PROVIDER_KEYS", 4)

    async def ignore(*args: object) -> None:
        pass

    def mesh() -> Mesh:
        (port,) = free_ports(1)
        return Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                    on_message=ignore)

    target, attacker = mesh(), mesh()
    addresses = [multiaddr.Multiaddr(f"/ip4/10.0.{i // 250}.{i % 250}/tcp/4001").to_bytes()
                 for i in range(1000)]
    keys = [bytes([i]) * 34 for i in range(6)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for each in (target, attacker):
                await nursery.start(each.run)
            target_info = info_from_p2p_addr(multiaddr.Multiaddr(target.addresses()[0]))
            await attacker.host.connect(target_info)
            for key in keys:
                message = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
                message.providerPeers.add(id=attacker.host.get_id().to_bytes(), addrs=addresses)
                stream = await attacker.host.new_stream(target_info.peer_id, [PROTOCOL_ID])
                await stream.write(encode_varint_prefixed(message.SerializeToString()))
                with trio.move_on_after(5):
                    await stream.read(1 << 16)  # the echo, once it is stored
                await stream.close()
            store = target.dht.provider_store
            held = [key for key in keys if store.get_providers(key)]
            assert held == keys[:4]
            for key in held:
                (record,) = store.get_providers(key)
                assert record.peer_id == ID.from_base58(attacker.peer_id)
                assert len(record.addrs) == node.dht.MAX_PROVIDER_ADDRESSES
            await store.provide(b"\x09" * 34)
            assert store.get_providers(b"\x09" * 34)  # its own, past the bound
            for each in (target, attacker):
                each.stop()
