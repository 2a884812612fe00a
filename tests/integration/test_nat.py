"""Nodes behind NAT: a job submitted behind one NAT runs behind another, through a relay.

The test builds its own network in namespaces (root is needed; CI runs as root):

    internet (10.77.0.0/24, a bridge)     the bootstrap node, with --relay-service
      ├── NAT A (10.77.0.2) ── 192.168.1.0/24: the requester
      ├── NAT B (10.77.0.3) ── 192.168.2.0/24: a compute node (zone=b)
      └── NAT C (10.77.0.4) ── 192.168.3.0/24: a compute node (zone=c)

Each NAT is a namespace that masquerades its private side and, as a home router does,
drops connections opened from the outside. Every daemon is a real ``bacnode serve`` in its
namespace, and every command the real CLI run there. Addresses are private and exist only
inside these namespaces; the namespaces go at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration

PREFIX = f"bnt{os.getpid() % 100000}"
INTERNET = f"{PREFIX}-inet"
RELAY_IP = "10.77.0.10"
NATS = {"a": ("10.77.0.2", "192.168.1"), "b": ("10.77.0.3", "192.168.2"),
        "c": ("10.77.0.4", "192.168.3")}
CONVERGE_TIMEOUT = 90.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _in(netns: str, *command: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *command], check=True, capture_output=True,
                   timeout=30)


def _namespaces() -> list[str]:
    return [INTERNET] + [f"{PREFIX}-nat{x}" for x in NATS] + [f"{PREFIX}-{x}" for x in NATS]


def _tear_down() -> None:
    for netns in _namespaces():
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)


def _build() -> None:
    for netns in _namespaces():
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", INTERNET, "link", "add", "br0", "type", "bridge")
    _ip("-n", INTERNET, "addr", "add", f"{RELAY_IP}/24", "dev", "br0")
    _ip("-n", INTERNET, "link", "set", "br0", "up")
    for name, (outside, inside) in NATS.items():
        router, host = f"{PREFIX}-nat{name}", f"{PREFIX}-{name}"
        _ip("link", "add", f"{PREFIX}{name}o", "netns", INTERNET, "type", "veth",
            "peer", "name", "out", "netns", router)
        _ip("-n", INTERNET, "link", "set", f"{PREFIX}{name}o", "master", "br0", "up")
        _ip("-n", router, "addr", "add", f"{outside}/24", "dev", "out")
        _ip("-n", router, "link", "set", "out", "up")
        _ip("link", "add", f"{PREFIX}{name}i", "netns", router, "type", "veth",
            "peer", "name", "eth0", "netns", host)
        _ip("-n", router, "link", "set", f"{PREFIX}{name}i", "name", "in")
        _ip("-n", router, "addr", "add", f"{inside}.1/24", "dev", "in")
        _ip("-n", router, "link", "set", "in", "up")
        _ip("-n", host, "addr", "add", f"{inside}.2/24", "dev", "eth0")
        _ip("-n", host, "link", "set", "eth0", "up")
        _ip("-n", host, "route", "add", "default", "via", f"{inside}.1")
        _in(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _in(router, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "out", "-j",
            "MASQUERADE")
        for chain in ("FORWARD", "INPUT"):
            _in(router, "iptables", "-A", chain, "-i", "out", "-m", "conntrack", "--ctstate",
                "ESTABLISHED,RELATED", "-j", "ACCEPT")
            _in(router, "iptables", "-A", chain, "-i", "out", "-j", "DROP")


@pytest.fixture(scope="module")
def nat_network(tmp_path_factory: pytest.TempPathFactory,
                busybox_image: str) -> Iterator[dict[str, Daemon]]:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.fail("the NAT tests build network namespaces: they need root and iptables")
    _tear_down()
    try:
        _build()
        with DaemonPool(tmp_path_factory.mktemp("nat")) as pool:
            relay = pool.new("relay", netns=INTERNET, host=RELAY_IP,
                             args=["--orchestrator", "--relay-service", "--labels",
                                   "zone=internet"])
            nodes = {"relay": relay}
            for name, (_, inside) in NATS.items():
                nodes[name] = pool.new(name, netns=f"{PREFIX}-{name}", host=f"{inside}.2",
                                       peers=[relay], args=["--labels", f"zone={name}"])
            pool.start_all(list(nodes.values()))
            everyone = [node.peer_id for node in nodes.values()]
            for node in nodes.values():
                node.wait_connected(everyone, timeout=CONVERGE_TIMEOUT)
            yield nodes
    finally:
        _tear_down()


def _reachable_through_relay(node: Daemon) -> bool:
    stats = node.mesh_stats()
    return stats["Reachability"] == "private" and bool(stats["RelayedAddresses"])


def test_nodes_learn_who_is_behind_nat_and_the_natted_ones_get_relayed_addresses(
        nat_network: dict[str, Daemon]) -> None:
    relay = nat_network["relay"]
    wait_until(lambda: relay.mesh_stats()["Reachability"] == "public", timeout=60,
               what="the public node to learn that it is reachable")
    for name in NATS:
        node = nat_network[name]
        wait_until(lambda node=node: _reachable_through_relay(node), timeout=60,
                   what=f"{name} to find itself behind NAT and reserve a relay slot")
        relayed = node.mesh_stats()["RelayedAddresses"]
        assert relayed == [f"{relay.multiaddr}/p2p-circuit/p2p/{node.peer_id}"]
        # ... and that is what the others are told to dial.
        wait_until(lambda node=node, relayed=relayed:
                   relay.api_nodes()[node.peer_id]["Info"]["Addresses"] == relayed,
                   timeout=30, what=f"{name}'s heartbeats to carry its relayed address")


def test_a_job_from_behind_nat_a_runs_behind_nat_b_and_its_results_come_back(
        nat_network: dict[str, Daemon], tmp_path: Path) -> None:
    requester, relay = nat_network["a"], nat_network["relay"]
    for name in NATS:
        wait_until(lambda name=name: _reachable_through_relay(nat_network[name]), timeout=60,
                   what=f"{name} to be reachable through the relay")
    transports: dict[str, dict[str, str]] = {}
    for publisher in ("ipfs", "local"):
        ran = requester.cli("docker", "run", "--wait", "--id-only", "-p", publisher,
                            "-s", "zone=b", "busybox", "--", "sh", "-c",
                            f"echo behind NAT B > /outputs/where.txt; echo {publisher}",
                            timeout=180)
        assert ran.returncode == 0, ran.stderr
        job_id = ran.stdout.strip().splitlines()[0]
        (execution,) = _describe(requester, job_id)["State"]["Executions"]
        assert execution["NodeID"] == nat_network["b"].peer_id
        out = tmp_path / publisher
        got = requester.cli("get", job_id, "--output-dir", str(out), timeout=180)
        assert got.returncode == 0, got.stderr
        assert (out / "outputs" / "where.txt").read_text() == "behind NAT B\n"
        assert (out / "stdout").read_text() == f"{publisher}\n"
        transports[publisher] = requester.mesh_stats()["Transports"]

    # Which connections were relayed and which direct: the relay is dialled directly;
    # NAT B's node through the relay, then directly where hole punching worked (these NATs
    # keep ports, so it does: a direct connection to B must come from a hole punch).
    b = nat_network["b"]
    punched = {**requester.mesh_stats()["HolePunches"], **{
        peer: outcome for peer, outcome in b.mesh_stats()["HolePunches"].items()
        if peer == requester.peer_id}}
    relaying = relay.mesh_stats()["Relaying"]
    print(f"requester's connections: {transports}; hole punches A<->B: {punched}; "
          f"relay: {relaying}")
    assert relaying["CircuitsOpened"] >= 1
    for seen in transports.values():
        assert seen[relay.peer_id] == "direct"
        assert seen[b.peer_id] == "relayed" or "direct" in punched.values(), (seen, punched)


def test_a_second_job_behind_nat_c_reads_the_first_ones_cid(
        nat_network: dict[str, Daemon], tmp_path: Path) -> None:
    requester = nat_network["a"]
    made = requester.cli("docker", "run", "--wait", "--id-only", "-p", "ipfs", "-s", "zone=b",
                         "busybox", "--", "sh", "-c", "echo made behind B > /outputs/made.txt",
                         timeout=180)
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip().splitlines()[0]
    (result,) = requester.api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"]
    cid = result["Params"]["CID"]
    read = requester.cli("docker", "run", "--wait", "--id-only", "-p", "local", "-s", "zone=c",
                         "-i", f"ipfs://{cid}:/inputs", "busybox", "--", "cat",
                         "/inputs/outputs/made.txt", timeout=180)
    assert read.returncode == 0, read.stderr
    second = read.stdout.strip().splitlines()[0]
    out = tmp_path / "second"
    got = requester.cli("get", second, "--output-dir", str(out), timeout=180)
    assert got.returncode == 0, got.stderr
    assert (out / "stdout").read_text() == "made behind B\n"


def _describe(node: Daemon, job_id: str) -> dict:
    described = node.cli("describe", job_id, "--json")
    assert described.returncode == 0, described.stderr
    return json.loads(described.stdout)
