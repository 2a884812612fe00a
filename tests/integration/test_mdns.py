"""mDNS, on by default for ``bacnode serve``: two nodes on one LAN find each other with no
``--peer`` at all.

mDNS is also the family of py-libp2p modules a node loads only when it is turned on
(node.libp2p_imports), so this is where the hand-over to the real zeroconf is exercised.
The LAN is a veth pair between two network namespaces the test builds (multicast never
leaves them), and removes, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.daemons import Daemon, DaemonPool

pytestmark = pytest.mark.integration

PREFIX = f"bnm{os.getpid() % 100000}"
LAN = {"a": "10.78.1.1", "b": "10.78.1.2"}
FIND_TIMEOUT = 60.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _namespace(name: str) -> str:
    return f"{PREFIX}-{name}"


def _tear_down() -> None:
    for name in LAN:
        subprocess.run(["ip", "netns", "del", _namespace(name)], capture_output=True,
                       timeout=30)


@pytest.fixture
def lan() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("the mDNS test builds network namespaces: it needs root")
    _tear_down()
    try:
        for name in LAN:
            _ip("netns", "add", _namespace(name))
            _ip("-n", _namespace(name), "link", "set", "lo", "up")
        _ip("link", "add", "eth0", "netns", _namespace("a"), "type", "veth",
            "peer", "name", "eth0", "netns", _namespace("b"))
        for name, address in LAN.items():
            _ip("-n", _namespace(name), "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", _namespace(name), "link", "set", "eth0", "up")
        yield {name: _namespace(name) for name in LAN}
    finally:
        _tear_down()


def test_two_nodes_on_a_lan_find_each_other_by_mdns(lan: dict[str, str],
                                                     tmp_path: Path) -> None:
    with DaemonPool(tmp_path) as pool:
        nodes: dict[str, Daemon] = {
            name: pool.new(name, netns=lan[name], host=LAN[name], args=["--mdns"])
            for name in LAN}
        pool.start_all(nodes.values())
        a, b = nodes["a"], nodes["b"]
        a.wait_connected([b.peer_id], timeout=FIND_TIMEOUT)
        b.wait_connected([a.peer_id], timeout=FIND_TIMEOUT)
        assert b.peer_id in a.node_list() and a.peer_id in b.node_list()
