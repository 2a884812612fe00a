"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until


def _three_node_mesh(pool: DaemonPool, **settings: object) -> list[Daemon]:
    """Daemons a, b, c labelled zone=a/b/c, b and c bootstrapped to a, all seeing each other."""
    first = pool.new("a", args=["--labels", "zone=a"], **settings)  # type: ignore[arg-type]
    others = [
        pool.new(z, peers=[first], args=["--labels", f"zone={z}"], **settings)  # type: ignore[arg-type]
        for z in "bc"
    ]
    nodes = pool.start_all([first, *others])
    ids = {node.peer_id for node in nodes}
    for node in nodes:
        wait_until(lambda node=node: node.connected() >= ids, timeout=30,
                   what=f"{node.name} to see the 3-node mesh")
    return nodes


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[list[Daemon]]:
    """Three daemons labelled zone=a/b/c, all seeing each other (one devnet per module)."""
    with DaemonPool(tmp_path_factory.mktemp("devnet")) as pool:
        yield _three_node_mesh(pool)


@pytest.fixture(scope="module")
def s3_devnet(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, s3_server
) -> Iterator[list[Daemon]]:
    """Like ``devnet``; the AWS chain points at the SeaweedFS server (AWS_ENDPOINT_URL_S3)."""
    with DaemonPool(tmp_path_factory.mktemp("s3net")) as pool:
        yield _three_node_mesh(pool, env=s3_server.env())
