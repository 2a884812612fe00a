"""Fixtures for tests that run real daemons (see ``scripts/daemons.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripts.daemons import Daemon, DaemonPool


@pytest.fixture
def daemons(tmp_path: Any) -> Iterator[DaemonPool]:
    """A pool of daemons for one test; every one is killed at teardown, pass or fail."""
    with DaemonPool(tmp_path) as pool:
        yield pool


@pytest.fixture
def start_daemon(daemons: DaemonPool) -> Callable[..., Daemon]:
    """``start_daemon(peers=[other], args=[...])``: a running daemon, cleaned up after the test."""
    return daemons.start


@pytest.fixture(scope="module")
def module_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonPool]:
    """Like ``daemons``, shared by the tests of one module (for a mesh they all use)."""
    with DaemonPool(tmp_path_factory.mktemp("daemons")) as pool:
        yield pool


@pytest.fixture(scope="module")
def mesh3(module_daemons: DaemonPool) -> list[Daemon]:
    """Three daemons started in parallel, the second and third bootstrapped to the first,
    and waited on until each lists all three as CONNECTED."""
    first = module_daemons.new("n1")
    others = [module_daemons.new(f"n{i}", peers=[first]) for i in (2, 3)]
    nodes = module_daemons.start_all([first, *others])
    for node in nodes:
        node.wait_connected([n.peer_id for n in nodes], timeout=30)
    return nodes
