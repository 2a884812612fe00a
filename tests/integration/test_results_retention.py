"""Results do not pile up on a compute node: those published elsewhere go once published,
those kept for the local publisher go after ``--results-retention-hours``.

Once, 411 results directories remained after 450 jobs. Real daemon, real dockerd.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration

RETENTION_HOURS = 0.002  # 7.2 s


def _run(node: Daemon, publisher: str) -> tuple[str, str]:
    result = node.cli("docker", "run", "--wait", "--id-only", "-p", publisher, "busybox", "--",
                      "sh", "-c", "echo kept > /outputs/a.txt")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    document = json.loads(node.cli("describe", job_id, "--json").stdout)
    (execution,) = document["State"]["Executions"]
    return job_id, execution["ExecutionID"]


def test_results_go_once_published_or_once_past_their_retention(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str, tmp_path: Path) -> None:
    with DaemonPool(tmp_path_factory.mktemp("retention")) as pool:
        node = pool.start("solo", args=["--results-retention-hours", str(RETENTION_HOURS)])
        results = node.data_dir / "results"
        _, published = _run(node, "ipfs")
        wait_until(lambda: not (results / published).exists(), timeout=10,
                   what="the IPFS-published results to leave the results dir")
        job_id, kept = _run(node, "local")
        finished = time.monotonic()
        assert (results / kept / "outputs" / "a.txt").read_text() == "kept\n"
        got = node.cli("get", job_id, "--output-dir", str(tmp_path / "first"))
        assert got.returncode == 0, got.stderr
        wait_until(lambda: not any(results.glob(f"{kept}*")), timeout=30,
                   what="the local results to go after their retention")
        assert time.monotonic() - finished >= RETENTION_HOURS * 3600 * 0.5
        late = node.cli("get", job_id, "--output-dir", str(tmp_path / "late"))
        assert late.returncode == 1
        assert f"no results for {kept}" in late.stderr and "Traceback" not in late.stderr
        assert not (tmp_path / "late").exists() or not any((tmp_path / "late").iterdir())
