"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemons import Daemon, DaemonPool, wait_until


@pytest.fixture(scope="module")
def s3_devnet(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, s3_server
) -> Iterator[list[Daemon]]:
    """Three daemons whose AWS chain points at the SeaweedFS server (AWS_ENDPOINT_URL_S3)."""
    with DaemonPool(tmp_path_factory.mktemp("s3net")) as pool:
        first = pool.new("a", env=s3_server.env())
        others = [pool.new(name, peers=[first], env=s3_server.env()) for name in "bc"]
        nodes = pool.start_all([first, *others])
        ids = {node.peer_id for node in nodes}
        for node in nodes:
            wait_until(lambda node=node: node.connected() >= ids, timeout=30, what="the mesh")
        yield nodes
