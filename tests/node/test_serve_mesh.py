"""``bacnode serve``: daemons form a mesh, notice who comes and goes, and survive restarts.

What a user sees is ``bacnode node list``; these tests read it through the real CLI
(``--output json``), and poll the API directly only to wait. They share one 3-node
mesh (``mesh3``); each extra node a test starts is its own and goes at its end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.membership import heartbeat_turn
from scripts.daemons import Daemon, DaemonPool, wait_until

#: 5 missed half-second heartbeats make 2.5 s; the rest is slack for a loaded machine.
DISCONNECT_TIMEOUT = 15.0
CONVERGE_TIMEOUT = 20.0


def ids(nodes: list[Daemon]) -> set[str]:
    return {node.peer_id for node in nodes}


def test_three_nodes_list_each_other_as_connected(mesh3):
    expected = ids(mesh3)
    for node in mesh3:
        # Itself and the other two, CONNECTED, through the real CLI (--output json).
        node.wait_connected(expected, via_cli=True)
        listed = node.node_list()
        assert expected <= set(listed), f"{node.name} lists {sorted(listed)}"
        # Every node lists itself as the node it is, at the address it listens on.
        me = listed[node.peer_id]
        assert me["Info"]["Addresses"] == [node.multiaddr]
        # Bacalhau's node types are Requester and Compute: a node with both is Compute.
        assert me["Info"]["NodeType"] == "Compute"
        assert me["Info"]["Roles"] == ["requester", "compute"]
        # ... and the others as they announced themselves.
        for other in mesh3:
            assert listed[other.peer_id]["Info"]["Addresses"] == [other.multiaddr]


def test_node_list_table_shows_every_node(mesh3):
    def table_rows() -> dict[str, list[str]]:
        result = mesh3[0].cli("node", "list")
        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split()[:3] == ["ID", "TYPE", "STATUS"]
        by_id = {row.split()[0]: row.split() for row in rows}
        ok = all(by_id.get(n.peer_id, [])[1:3] == ["Compute", "CONNECTED"] for n in mesh3)
        return by_id if ok else {}

    wait_until(table_rows, timeout=CONVERGE_TIMEOUT, what="a table row per node, CONNECTED")


def test_late_joiner_is_seen_by_all_four(mesh3, daemons: DaemonPool):
    fourth = daemons.start("late", peers=[mesh3[0]])
    everyone = [*mesh3, fourth]
    for node in everyone:
        node.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)
    for node in everyone:
        node.wait_connected(ids(everyone), via_cli=True)


def test_sigkilled_node_turns_disconnected_and_comes_back_after_restart(
    mesh3, daemons: DaemonPool
):
    doomed = daemons.start("doomed", peers=[mesh3[0]])
    everyone = ids([*mesh3, doomed])
    peer_id = doomed.peer_id
    doomed.wait_connected(everyone, timeout=CONVERGE_TIMEOUT)
    for node in mesh3:
        node.wait_connected([peer_id], timeout=CONVERGE_TIMEOUT)
    before = doomed.node_list()

    doomed.kill()  # no goodbye: only the missing heartbeats tell
    for node in mesh3:
        wait_until(
            lambda node=node: node.connections().get(peer_id) == "DISCONNECTED",
            timeout=DISCONNECT_TIMEOUT, what=f"{node.name} to mark the killed node DISCONNECTED",
        )
        # The CLI shows the same; the node is still listed, it is not forgotten.
        assert node.connections(via_cli=True)[peer_id] == "DISCONNECTED"
        node.wait_connected(ids(mesh3))  # the living stay CONNECTED

    # Restart it (same data dir, same ports) with no bootstrap peer first, so that it
    # cannot hear anyone: it still knows the mesh from its store, every peer listed
    # DISCONNECTED, with the FirstSeen it had before.
    doomed.peers = []
    doomed.start()
    assert doomed.api("/api/v1/agent/node")["NodeID"] == peer_id
    alone = doomed.node_list()
    assert set(alone) == set(before)
    assert alone[peer_id]["Connection"] == "CONNECTED"  # itself
    for node in mesh3:
        assert alone[node.peer_id]["Connection"] == "DISCONNECTED", node.name
        assert alone[node.peer_id]["FirstSeen"] == before[node.peer_id]["FirstSeen"], node.name
        assert alone[node.peer_id]["Info"]["Addresses"] == [node.multiaddr]
    assert doomed.stop() == 0

    # Back in the mesh: CONNECTED again, both ways, and what it hears now does not
    # rewrite what it stored before.
    doomed.peers = [mesh3[0]]
    doomed.start()
    assert doomed.api("/api/v1/agent/node")["NodeID"] == peer_id
    doomed.wait_connected(everyone, timeout=CONVERGE_TIMEOUT)
    for node in mesh3:
        node.wait_connected([peer_id], timeout=CONVERGE_TIMEOUT)
    final = doomed.node_list()
    for node in mesh3:
        assert final[node.peer_id]["FirstSeen"] == before[node.peer_id]["FirstSeen"], node.name


def test_sigterm_shuts_down_cleanly(mesh3, daemons: DaemonPool):
    node = daemons.start("leaving", peers=[mesh3[0]])
    node.wait_connected([mesh3[0].peer_id], timeout=CONVERGE_TIMEOUT)
    assert node.stop(timeout=15) == 0
    assert "shutting down" in node.stderr
    assert "Traceback" not in node.stderr
    # The rest of the mesh carries on.
    for peer in mesh3:
        assert peer.api("/api/v1/agent/alive") == {"Status": "OK"}


def test_sigterm_during_start_up_exits_promptly(mesh3, daemons: DaemonPool):
    """A service manager may stop a node that is still starting (the API answers before
    the mesh is up): it must exit, not hang with its listeners half closed."""
    starting = [daemons.new(f"starting{i}", peers=[mesh3[0]]) for i in range(3)]
    for node in starting:
        node.peer_id  # noqa: B018 - create the key now, outside the timed part
        node.launch()
    for node in starting:
        node.wait_ready()
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)  # at once: the mesh is likely still starting
    for node in starting:
        try:
            code = node.wait_exit(timeout=15)
        except subprocess.TimeoutExpired:
            node.dump_and_kill()
            raise AssertionError(f"{node.name} hung after SIGTERM:\n{node.stderr}") from None
        assert code == 0, node.stderr
        assert "shutting down" in node.stderr
        # (No "no Traceback" check here: py-libp2p prints one of its own to stderr when
        # a dial it has in flight is cancelled by the shutdown.)


def test_restarted_bootstrap_node_is_rejoined(mesh3):
    """The others dialled n1 at start; when it comes back they dial it again by themselves.

    Last in this module: it takes the shared mesh apart for a moment and waits until it
    is whole again.
    """
    first, *others = mesh3
    first_id = first.peer_id
    assert first.stop() == 0
    first.start()  # it dials nobody: it has no --peer
    assert first.api("/api/v1/agent/node")["NodeID"] == first_id
    # Fresh connections, and heartbeats heard since the restart: both were redialled.
    wait_until(lambda: set(first.mesh_stats()["Peers"]) >= ids(others),
               timeout=CONVERGE_TIMEOUT, what="n2 and n3 to dial the restarted n1")
    for node in mesh3:
        node.wait_connected(ids(mesh3), timeout=CONVERGE_TIMEOUT)


def test_a_dead_bootstrap_peer_does_not_hold_up_the_others(mesh3, daemons: DaemonPool):
    """Four bootstrap peers that accept a TCP connection and then never answer (each dial
    hangs until its 5 s timeout), listed before a live one: the node dials them all at
    once, so it joins through the live one without waiting out the dead ones (one after
    another they would take 20 s)."""
    import socket
    import threading
    import time

    from protocol.identity import NodeKey

    listeners = []
    for _ in range(4):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listeners.append(listener)
    held: list[socket.socket] = []

    def hold(listener: socket.socket) -> None:
        while True:
            try:
                held.append(listener.accept()[0])  # and say nothing
            except OSError:
                return

    for listener in listeners:
        threading.Thread(target=hold, args=(listener,), daemon=True).start()
    dead = [f"/ip4/127.0.0.1/tcp/{listener.getsockname()[1]}/p2p/{NodeKey.generate().peer_id}"
            for listener in listeners]
    try:
        node = daemons.new("patient", peers=[*dead, mesh3[0]])
        node.start()
        ready = time.monotonic()
        node.wait_connected({mesh3[0].peer_id}, timeout=CONVERGE_TIMEOUT)
        assert time.monotonic() - ready < 10, "the live peer waited behind the dead ones"
        wait_until(lambda: node.stderr.count("cannot reach bootstrap peer") == 4, timeout=15,
                   what="the dead peers' dials to time out, each said once")
    finally:
        for sock in [*listeners, *held]:
            sock.close()


def test_a_bootstrap_peer_can_be_named_by_dns(mesh3, daemons: DaemonPool):
    """``--peer /dns4/localhost/tcp/PORT/p2p/ID``: the name is resolved at each dial
    (py-libp2p's TCP transport dials IP addresses only)."""
    first = mesh3[0]
    node = daemons.new("by-name", peers=[f"/dns4/localhost/tcp/{first.port}/p2p/{first.peer_id}"])
    node.start()
    node.wait_connected(ids(mesh3), timeout=CONVERGE_TIMEOUT)


def test_nodes_learn_peers_from_heartbeats_and_outlive_their_bootstrap(daemons: DaemonPool):
    """Peer exchange: two leaves that only know the hub, once the hub is gone, dial each
    other from the addresses in each other's signed heartbeats and go on hearing each
    other. While the hub answers they dial nobody else (each connection costs gossip work)."""
    hub = daemons.new("hub")
    leaves = [daemons.new(f"leaf{i}", peers=[hub]) for i in (1, 2)]
    daemons.start_all([hub, *leaves])
    first, second = leaves
    for node in leaves:
        node.wait_connected([n.peer_id for n in (hub, *leaves)], timeout=CONVERGE_TIMEOUT)
    assert first.mesh_stats()["Peers"] == [hub.peer_id]
    assert hub.stop() == 0
    wait_until(lambda: second.peer_id in first.mesh_stats()["Peers"]
               or first.peer_id in second.mesh_stats()["Peers"],
               timeout=CONVERGE_TIMEOUT, what="the leaves to dial each other")
    for node, other in ((first, second), (second, first)):
        wait_until(lambda node=node: node.node_list()[hub.peer_id]["Connection"] == "DISCONNECTED",
                   timeout=DISCONNECT_TIMEOUT, what=f"{node.name} to notice the hub is gone")
        wait_until(lambda node=node, other=other:
                   node.node_list()[other.peer_id]["Connection"] == "CONNECTED",
                   timeout=DISCONNECT_TIMEOUT, what=f"{node.name} to hear {other.name} still")


def test_nodes_started_together_take_turns_to_heartbeat(daemons: DaemonPool):
    """Five nodes started at once heartbeat one after another, each in its turn of the
    interval (its rank among the node IDs), not together: every node relays every
    heartbeat, and a 100-daemon devnet started in fours heartbeat in fours, which doubled
    how long the last of each four took to reach everyone."""
    interval_s = 2.0
    hub = daemons.new("hub", heartbeat=interval_s)
    five = [hub, *(daemons.new(f"leaf{i}", peers=[hub], heartbeat=interval_s)
                   for i in range(1, 5))]
    daemons.start_all(five)
    for node in five:
        node.wait_connected(ids(five), timeout=CONVERGE_TIMEOUT)
    interval_ms = int(interval_s * 1000)
    turns = {node.peer_id: heartbeat_turn(node.peer_id, ids(five), interval_ms)
             for node in five}
    width_ms = turns[hub.peer_id].width_ms

    def heard_out_of_turn() -> dict[str, int]:
        """How far into the interval, past its turn, each node's last heartbeat was heard
        (by the hub; the hub's by a leaf), for those heard outside half a turn's width."""
        late = {}
        for observer, listed in ((hub, five[1:]), (five[1], [hub])):
            nodes = observer.node_list()
            for node in listed:
                seen = datetime.fromisoformat(nodes[node.peer_id]["LastSeen"])
                past_turn = (round(seen.timestamp() * 1000)
                             - turns[node.peer_id].offset_ms) % interval_ms
                if past_turn >= width_ms // 2:
                    late[node.name] = past_turn
        return late

    def all_in_turn() -> bool:
        late = heard_out_of_turn()
        assert not late, f"last heard this many ms past their turns: {late}"
        return True

    # Out of turn after joining and when reachability changes, and then in turn from the
    # next heartbeat on. Nodes that kept their own phases would all be in turn at once
    # about once in 10⁴ tries.
    wait_until(all_in_turn, timeout=CONVERGE_TIMEOUT, what="every node to heartbeat in its turn")


#: Heartbeats so rare that a test which sees a node listed within seconds knows they were
#: not what listed it.
RARE_HEARTBEAT = 600.0


#: How long gossipsub may still hand a new peer a message it has seen (its history of 5
#: heartbeats, 1 s apart here), with a second to spare.
GOSSIP_CACHE_SECONDS = 6.0


def test_a_joiner_copies_the_membership_table_and_nobody_heartbeats_for_it(
        daemons: DaemonPool):
    """A node that joins lists the whole network at once, from its bootstrap peer's table,
    and is listed by all after its own one heartbeat. The others do not heartbeat again
    for it: N heartbeats a join were N² while a network of N started, and starved a
    100-daemon devnet on 2 cores."""
    root = daemons.new("root", heartbeat=RARE_HEARTBEAT)
    left, right = (daemons.new(name, peers=[root], heartbeat=RARE_HEARTBEAT)
                   for name in ("left", "right"))
    daemons.start_all([root, left, right])
    three = [root, left, right]
    for node in three:
        node.wait_connected(ids(three), timeout=CONVERGE_TIMEOUT)
    # Nodes heartbeat once more when AutoNAT tells them they are reachable: wait until
    # that is over, and what each heard of the others stays put.
    for node in three:
        wait_until(lambda node=node: node.mesh_stats()["Reachability"] != "unknown",
                   timeout=CONVERGE_TIMEOUT, what=f"{node.name} to learn its reachability")

    def last_heard() -> dict[tuple[str, str], str]:
        return {(node.name, other.peer_id): node.api_nodes()[other.peer_id]["LastSeen"]
                for node in three for other in three if other is not node}

    def settled() -> dict[tuple[str, str], str] | None:
        first = last_heard()
        time.sleep(2)
        return first if first == last_heard() else None

    heard_before = wait_until(settled, timeout=CONVERGE_TIMEOUT, what="heartbeats to stop")
    # ... and until the last of them has left gossipsub's message cache (5 heartbeats of
    # 1 s): a joiner that came sooner may be sent that very heartbeat by gossip (IHAVE,
    # IWANT) before its copy of the table arrives, and list it as heard just then.
    newest = max(datetime.fromisoformat(seen.replace("Z", "+00:00"))
                 for seen in heard_before.values())
    time.sleep(max(0.0, (newest - datetime.now(UTC)).total_seconds() + GOSSIP_CACHE_SECONDS))

    joiner_started = datetime.now(UTC)
    joiner = daemons.start("joiner", peers=[left], heartbeat=RARE_HEARTBEAT)
    everyone = [*three, joiner]
    for node in everyone:
        node.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)
    # The rows the joiner copied are the very heartbeats the three last sent.
    assert last_heard() == heard_before, "a node heartbeated again for the joiner"
    # The joiner lists right as last heard before the joiner even started: a copied row.
    heard = joiner.api_nodes()[right.peer_id]["LastSeen"]
    assert datetime.fromisoformat(heard.replace("Z", "+00:00")) < joiner_started, heard


def test_a_change_in_load_is_told_to_its_requester_when_it_happens_and_to_no_one_else(
        daemons: DaemonPool):
    """The requester of a job sees its node take the job and finish it within seconds,
    though the node heartbeats every 10 minutes: a change in load goes straight to the
    requesters it concerns as it happens. The rest of the network hears of it at the next
    heartbeat, not at every change (that made each job cost work on every node), and once
    nothing changes the node is quiet again."""
    requester = daemons.new("busy-req", heartbeat=RARE_HEARTBEAT)
    worker = daemons.new("busy-worker", peers=[requester], heartbeat=RARE_HEARTBEAT,
                         args=["--labels", "zone=busy"])
    bystander = daemons.new("bystander", peers=[requester], heartbeat=RARE_HEARTBEAT)
    everyone = [requester, worker, bystander]
    daemons.start_all(everyone)
    for node in everyone:
        node.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)

    def worker_row(node: Daemon = requester) -> dict[str, Any]:
        return node.api_nodes()[worker.peer_id]

    def running(node: Daemon = requester) -> int:
        return worker_row(node)["Info"]["ComputeNodeInfo"]["RunningExecutions"]

    assert running() == 0
    heard_by_bystander = worker_row(bystander)["LastSeen"]
    submitted = requester.cli("docker", "run", "--wait=false", "--id-only", "-s", "zone=busy",
                              "-p", "noop", "busybox", "--", "sleep", "4")
    assert submitted.returncode == 0, submitted.stderr
    wait_until(lambda: running() == 1, timeout=3.5,
               what="the requester to hear that the worker runs the job")
    wait_until(lambda: running() == 0, timeout=15,
               what="the requester to hear that the worker is free again")
    assert worker_row(bystander)["LastSeen"] == heard_by_bystander
    assert running(bystander) == 0
    # And quiet again: no news a second once nothing changes.
    heard = worker_row()["LastSeen"]
    time.sleep(2.5)
    assert worker_row()["LastSeen"] == heard


def test_a_job_is_announced_to_the_nodes_it_asks_and_to_no_one_else(
        daemons: DaemonPool, tmp_path: Path):
    """In a network of more nodes than a job asks (its Count and two more), the requester
    asks its candidates straight: the job runs on one of them, and none of the five
    compute nodes hears of it on gossip, where every node would have had to read it."""
    requester = daemons.new("asker", args=["--orchestrator"])
    workers = [daemons.new(f"asked-{i}", peers=[requester]) for i in range(5)]
    everyone = [requester, *workers]
    daemons.start_all(everyone)
    for node in everyone:
        node.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)
    spec = tmp_path / "noop.json"
    spec.write_text(json.dumps({"Type": "batch", "Count": 1, "Tasks": [
        {"Name": "main", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}))

    ran = requester.cli("job", "run", str(spec), "--wait", "--id-only")
    assert ran.returncode == 0, ran.stderr
    described = json.loads(requester.cli("describe", ran.stdout.split()[-1], "--json").stdout)
    assert described["State"]["State"] == "Completed", described["State"]
    (execution,) = described["State"]["Executions"]
    assert execution["NodeID"] in ids(workers)
    for node in workers:
        assert node.mesh_stats()["Accepted"].get("job.announce", 0) == 0, node.name


def test_a_requester_asks_the_nodes_it_is_connected_to_rather_than_dial_others(
        daemons: DaemonPool, tmp_path: Path):
    """A requester connected to three of seven compute nodes (its bootstrap peers) asks
    those three, and its jobs run there: it dials none of the others, whose dial would
    have cost each job a handshake first (on 100 daemons sharing 2 cores, ~70 ms against
    ~20 for a placement)."""
    hub = daemons.new("hub")
    near = [daemons.new(f"near-{i}", peers=[hub]) for i in range(3)]
    far = [daemons.new(f"far-{i}", peers=[hub]) for i in range(3)]
    requester = daemons.new("asker", peers=near, args=["--orchestrator"])
    everyone = [hub, *near, *far, requester]
    daemons.start_all(everyone)
    requester.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)
    assert set(requester.mesh_stats()["Peers"]) == ids(near)
    spec = tmp_path / "noop.json"
    spec.write_text(json.dumps({"Type": "batch", "Count": 1, "Tasks": [
        {"Name": "main", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}))

    ran_on = set()
    for _ in range(6):
        ran = requester.cli("job", "run", str(spec), "--wait", "--id-only")
        assert ran.returncode == 0, ran.stderr
        described = json.loads(requester.cli("describe", ran.stdout.split()[-1], "--json").stdout)
        assert described["State"]["State"] == "Completed", described["State"]
        ran_on |= {execution["NodeID"] for execution in described["State"]["Executions"]}
    assert ran_on <= ids(near)
    assert set(requester.mesh_stats()["Peers"]) == ids(near)


def test_forged_rows_of_a_membership_table_are_dropped(daemons: DaemonPool):
    """A bootstrap peer (a real daemon, tests/adversaries ``member_forger``) that rewrites
    every row of its table to list its own addresses, signed with its own key, and adds a
    garbage row: the joiner drops those rows, counts them, and still lists every node at
    its real addresses (the honest rows that follow are taken)."""
    root = daemons.new("root")
    forger = daemons.new("forger", peers=[root], module=("tests.adversaries", "member_forger"))
    other = daemons.new("other", peers=[root])
    daemons.start_all([root, forger, other])
    for node in (root, forger, other):
        node.wait_connected(ids([root, forger, other]), timeout=CONVERGE_TIMEOUT)

    joiner = daemons.start("joiner", peers=[forger])
    everyone = [root, forger, other, joiner]
    joiner.wait_connected(ids(everyone), timeout=CONVERGE_TIMEOUT)
    listed = joiner.api_nodes()
    for node in (root, other):
        assert listed[node.peer_id]["Info"]["Addresses"] == [node.multiaddr]
    dropped = joiner.mesh_stats()["Dropped"]
    # Two forged rows (root's and other's) and the garbage one, at least (a reconnect
    # copies the table again).
    assert sum(count for reason, count in dropped.items()
               if reason.startswith("Members")) >= 3, dropped
