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
