"""An acknowledged job is never lost and never completed twice, whoever is killed -9.

Real daemons on loopback, real dockerd: 20 jobs of a few seconds each, then the
requester (or a compute node) is SIGKILLed five times at random points (seeded,
so a failure can be replayed) and started again each time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration

JOBS = 20
KILLS = 5


def _network(pool: DaemonPool) -> tuple[Daemon, list[Daemon]]:
    """A requester and two compute nodes; heartbeats every 2 s, two missed: a 4 s window."""
    timing = {"heartbeat": 2}
    flags = ["--missed-heartbeats", "2"]
    requester = pool.new("req", args=["--orchestrator", *flags], **timing)
    workers = [pool.new(f"w{i}", peers=[requester], args=flags, **timing) for i in (1, 2)]
    ids = {node.peer_id for node in pool.start_all([requester, *workers])}
    wait_until(lambda: requester.connected() >= ids, timeout=30, what="the mesh")
    return requester, workers


def _submit_jobs(requester: Daemon) -> list[str]:
    job_ids = []
    for i in range(JOBS):
        result = requester.cli("docker", "run", "--id-only", "--no-wait", "-p", "local",
                               "busybox", "--", "sh", "-c",
                               f"sleep {1 + i % 3}; echo {i} > /outputs/n", timeout=60)
        assert result.returncode == 0, result.stderr
        job_ids.append(result.stdout.strip())
    return job_ids


def _jobs(requester: Daemon) -> dict[str, dict[str, Any]]:
    result = requester.cli("list", "--output", "json", "--limit", "100", timeout=60)
    assert result.returncode == 0, result.stderr
    return {job["ID"]: job for job in json.loads(result.stdout)}


def _kill_and_restart(victim: Daemon, rng: random.Random) -> None:
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.2, 3.0))
        victim.kill()
        time.sleep(rng.uniform(0.0, 2.0))
        victim.start()


def _assert_each_completed_exactly_once(requester: Daemon, job_ids: list[str]) -> None:
    def ended() -> bool:
        states = {job_id: job["State"]["StateType"] for job_id, job in _jobs(requester).items()}
        return all(states.get(job_id) in {"Completed", "Failed", "Stopped"}
                   for job_id in job_ids)

    wait_until(ended, timeout=180, interval=1.0, what="every job to end")
    for job_id in job_ids:
        result = requester.cli("describe", job_id, "--json", timeout=60)
        document = json.loads(result.stdout)
        executions = document["State"]["Executions"]
        completed = [e for e in executions if e["State"] == "Completed"]
        assert document["State"]["State"] == "Completed", (job_id, executions)
        assert len(completed) == 1, (job_id, executions)
        active = [e for e in executions if e["State"] in {"BidAccepted", "Running",
                                                          "Publishing"}]
        assert not active, (job_id, executions)


def test_jobs_survive_five_kill_9s_of_their_requester(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    with DaemonPool(tmp_path_factory.mktemp("kill-requester")) as pool:
        requester, _ = _network(pool)
        job_ids = _submit_jobs(requester)
        _kill_and_restart(requester, random.Random(11))
        _assert_each_completed_exactly_once(requester, job_ids)


def test_jobs_survive_five_kill_9s_of_a_compute_node(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    with DaemonPool(tmp_path_factory.mktemp("kill-compute")) as pool:
        requester, workers = _network(pool)
        job_ids = _submit_jobs(requester)
        _kill_and_restart(workers[0], random.Random(12))
        _assert_each_completed_exactly_once(requester, job_ids)


def test_a_job_whose_end_cannot_be_written_on_a_full_disk_ends_once_there_is_room(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """A real full disk: the requester's data dir is a 16 MiB tmpfs (the test runs as root,
    as CI does), filled while its job runs. The job's end cannot be stored; it is kept and
    written once there is room again, so the job does not stay Running for ever."""
    import subprocess

    with _requester_on_a_small_disk(tmp_path_factory.mktemp("disk-full")) as (
            requester, worker):
        filler = requester.data_dir / "filler"
        result = requester.cli("docker", "run", "--id-only", "--no-wait", "-p", "local",
                               "busybox", "--", "sh", "-c", "sleep 4; exit 3")
        job_id = result.stdout.strip()
        wait_until(lambda: _state(requester, job_id) == "Running", timeout=30,
                   what="the job to run")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"],
                       capture_output=True, check=False)  # until the disk is full
        wait_until(lambda: "kept to try again" in requester.stderr, timeout=30,
                   what="the requester to fail writing the job's end")
        assert _state(requester, job_id) == "Running"  # what the store still says
        filler.unlink()
        wait_until(lambda: _state(requester, job_id) == "Failed", timeout=15,
                   what="the job's end to be written")
        document = json.loads(requester.cli("describe", job_id, "--json").stdout)
        (execution,) = document["State"]["Executions"]
        assert execution["State"] == "Failed" and "exit code 3" in execution["Message"]
        assert requester.running


def test_a_job_put_on_a_full_disk_is_refused_in_one_line_and_never_runs(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """The requester asks its nodes while the job is being written. When the write fails (a
    real full disk: a 16 MiB tmpfs, filled), the client gets one line saying so, and the
    job goes nowhere although the node it asked had bid: no container runs, nothing is
    listed, no write of it is kept to try again. Once there is room, jobs run as before."""
    import subprocess

    with _requester_on_a_small_disk(tmp_path_factory.mktemp("full-at-put")) as (
            requester, worker):
        filler = requester.data_dir / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"],
                       capture_output=True, check=False)  # until the disk is full
        # A spec too big for the room the store's log has left, so its write must grow it.
        padding = [arg for i in range(4) for arg in ("-e", f"PAD{i}={'x' * 60_000}")]
        refused = requester.cli("docker", "run", "--id-only", "-p", "local", *padding,
                                "busybox", "--", "true")
        assert refused.returncode != 0
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message, message
        assert "the job was not stored" in message and "full" in message, message
        # It was asked (while the job was written) and bid, and was turned down.
        wait_until(lambda: worker.metrics().get(
            'bacnode_bids_sent_total{answer="accept"}', 0) >= 1, timeout=10,
            what="the worker's bid")
        time.sleep(2)
        assert not any(name.startswith("bacnode_container_run_seconds_count")
                       and value for name, value in worker.metrics().items())
        assert json.loads(requester.cli("list", "--output", "json").stdout) == []
        assert "updating job" not in requester.stderr, requester.stderr[-2000:]
        filler.unlink()
        ran = requester.cli("docker", "run", "--id-only", "-p", "local", "busybox",
                            "--", "true", timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert _state(requester, ran.stdout.strip()) == "Completed"
        assert requester.running


@contextmanager
def _requester_on_a_small_disk(root: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """A requester whose data dir is a 16 MiB tmpfs (the tests run as root, as CI does),
    and a worker, connected; the tmpfs is unmounted however the test ends."""
    import subprocess

    with DaemonPool(root) as pool:
        requester = pool.new("req", args=["--orchestrator"])
        worker = pool.new("w", peers=[requester])
        requester.data_dir.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                        str(requester.data_dir)], check=True)
        try:
            pool.start_all([requester, worker])
            wait_until(lambda: requester.connected() >= {worker.peer_id}, timeout=30,
                       what="the mesh")
            yield requester, worker
        finally:
            pool.close()
            subprocess.run(["umount", str(requester.data_dir)], check=False)


def _state(requester: Daemon, job_id: str) -> str:
    result = requester.cli("describe", job_id, "--json", timeout=30)
    return json.loads(result.stdout)["State"]["State"]


def _put_job(daemon: Daemon, command: str) -> tuple[int, dict[str, Any]]:
    """PUT one Docker job the way Bacalhau's clients do; (HTTP status, JSON answer)."""
    import urllib.error
    import urllib.request

    body = {"Job": {"Type": "batch", "Count": 1, "Tasks": [{
        "Name": "main", "Publisher": {"Type": "local"},
        "Engine": {"Type": "docker",
                   "Params": {"Image": "busybox", "Parameters": ["sh", "-c", command]}}}]}}
    request = urllib.request.Request(
        f"{daemon.api_url}/api/v1/orchestrator/jobs", data=json.dumps(body).encode(),
        method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_jobs_put_while_a_restarted_requester_starts_up_are_taken_not_refused(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """The API answers before libp2p and the requester are up. Jobs PUT in that moment, on
    a requester that restarts with unfinished jobs in its store, wait for it: none is refused
    ("not an orchestrator"), the daemon does not fall over taking up its stored jobs beside
    the new ones (it once died writing Queued -> Queued), and every job completes once."""
    from concurrent.futures import ThreadPoolExecutor

    with DaemonPool(tmp_path_factory.mktemp("put-at-start")) as pool:
        node = pool.start("solo")
        stored = [_put_job(node, "sleep 2")[1]["JobID"] for _ in range(4)]
        node.kill()
        node.launch()
        wait_until(lambda: _answers(node), timeout=30, interval=0.01, what="the API")
        with ThreadPoolExecutor(8) as threads:
            answers = list(threads.map(lambda i: _put_job(node, f"echo {i}"), range(8)))
        assert all(status == 200 for status, _ in answers), answers
        fresh = [answer["JobID"] for _, answer in answers]
        _assert_each_completed_exactly_once(node, stored + fresh)
        assert node.running, node.stderr


def _answers(daemon: Daemon) -> bool:
    try:
        return daemon.api("/api/v1/agent/alive", timeout=1) == {"Status": "OK"}
    except (OSError, ValueError):
        return False
