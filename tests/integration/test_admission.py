"""A compute node says whose jobs it takes: --accept-jobs-from, --reject-jobs-from.

Real daemons on loopback, real dockerd: a requester, a worker that takes jobs only from
some other requester, and (later) one that takes anybody's.
"""

from __future__ import annotations

import json

import pytest

from protocol.examples import KEYS
from scripts.daemons import DaemonPool, wait_until

pytestmark = pytest.mark.integration


def test_a_job_goes_only_to_nodes_that_take_jobs_from_its_requester(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    with DaemonPool(tmp_path_factory.mktemp("admission")) as pool:
        requester = pool.new("req", args=["--orchestrator"])
        picky = pool.new("picky", peers=[requester],
                         args=["--compute", "--accept-jobs-from", KEYS[0].peer_id])
        pool.start_all([requester, picky])
        wait_until(lambda: picky.peer_id in requester.connected(), timeout=30, what="mesh")
        refused = requester.cli("docker", "run", "--wait", "--id-only", "-p", "local",
                                "busybox", "--", "true")
        assert refused.returncode == 1
        assert ("this node takes jobs only from the requesters it lists" in refused.stderr
                ), refused.stderr
        anyone = pool.start("anyone", peers=[requester],
                            args=["--compute", "--reject-jobs-from", KEYS[0].peer_id])
        wait_until(lambda: anyone.peer_id in requester.connected(), timeout=30, what="mesh")
        ran = requester.cli("docker", "run", "--wait", "--id-only", "-p", "local", "busybox",
                            "--", "true")
        assert ran.returncode == 0, ran.stderr
        document = json.loads(requester.cli("describe", ran.stdout.strip(), "--json").stdout)
        (execution,) = [e for e in document["State"]["Executions"]
                        if e["State"] == "Completed"]
        assert execution["NodeID"] == anyone.peer_id
