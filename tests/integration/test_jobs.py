"""Jobs end to end on a 3-node devnet: real daemons, real libp2p, real dockerd."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.states import execution_state_name
from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration


def compute_state(execution: dict[str, Any]) -> str:
    """An API execution's state by name (Bacalhau sends the number)."""
    return execution_state_name(execution["ComputeState"]["StateType"])


def run(node: Daemon, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return node.cli(*args, timeout=timeout)


def submit(node: Daemon, *args: str) -> tuple[str, subprocess.CompletedProcess]:
    result = run(node, "docker", "run", "--id-only", "--wait", "-p", "local", *args)
    job_id = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
    return job_id, result


def describe(node: Daemon, job_id: str) -> dict[str, Any]:
    result = run(node, "describe", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_job_runs_and_results_come_back_verified(devnet: list[Daemon], tmp_path: Path) -> None:
    client = devnet[0]
    job_id, result = submit(client, "busybox", "--", "sh", "-c",
                            "echo hi; echo data > /outputs/a.txt")
    assert result.returncode == 0, result.stderr
    assert job_id.startswith("j-")

    results = tmp_path / "results"
    got = run(client, "get", job_id[:12], "--output-dir", str(results))
    assert got.returncode == 0, got.stderr
    assert (results / "outputs" / "a.txt").read_text() == "data\n"
    assert (results / "stdout").read_text() == "hi\n"
    assert (results / "exitCode").read_text().strip() == "0"

    document = describe(client, job_id)
    assert document["Job"]["ID"] == job_id
    assert document["State"]["State"] == "Completed"
    (execution,) = document["State"]["Executions"]
    assert execution["State"] == "Completed"
    assert execution["NodeID"] in {node.peer_id for node in devnet}
    assert execution["ExecutionID"].startswith("e-")
    assert execution["RunOutput"] == {"stdout": "hi\n", "stderr": "", "exitCode": 0}
    assert execution["PublishedResults"]["StorageSource"] == "Local"
    # No timeout given: the orchestrator's default applies (--default-execution-timeout).
    assert document["Job"]["Tasks"][0]["Timeouts"]["ExecutionTimeout"] == 1800
    states = [e.get("JobState", {}).get("New") for e in document["History"]]
    assert states[-1] == "Completed" and "Running" in states


def test_non_zero_exit_fails_with_its_stderr(devnet: list[Daemon]) -> None:
    job_id, result = submit(devnet[1], "busybox", "--", "sh", "-c", "echo broken >&2; exit 3")
    assert result.returncode == 1
    assert "exit code 3: broken" in result.stderr
    document = describe(devnet[1], job_id)
    assert document["State"]["State"] == "Failed"
    (execution,) = document["State"]["Executions"]
    assert execution["RunOutput"]["exitCode"] == 3
    assert execution["RunOutput"]["stderr"] == "broken\n"


def test_timeout_kills_the_container_and_says_so(devnet: list[Daemon]) -> None:
    job_id, result = submit(devnet[0], "--timeout", "1", "busybox", "--", "sleep", "60")
    assert result.returncode == 1
    assert "timed out after 1s" in result.stderr
    assert describe(devnet[0], job_id)["State"]["State"] == "Failed"


def test_unknown_image_is_a_clear_error(devnet: list[Daemon]) -> None:
    # A registry on a closed loopback port: the pull fails at once, with no DNS lookup.
    _, result = submit(devnet[0], "localhost:1/nosuch:1", "--", "true")
    assert result.returncode == 1
    assert "image 'localhost:1/nosuch:1' not found locally and could not be pulled" in result.stderr
    assert "Traceback" not in result.stderr


def test_job_too_big_for_every_node_gets_no_bid(devnet: list[Daemon]) -> None:
    _, result = submit(devnet[0], "--memory", "4096Gi", "busybox", "--", "true")
    assert result.returncode == 1
    assert "no node can run this job — 3 node(s): needs 4Ti memory" in result.stderr


def test_a_job_that_asks_for_no_limits_runs_with_the_nodes_defaults(
        devnet: list[Daemon]) -> None:
    """Bacalhau's JobDefaults: 500m of CPU and 512Mb of memory, never no limit at all."""
    script = ("cat /sys/fs/cgroup/memory.max 2>/dev/null "
              "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
              "cat /sys/fs/cgroup/cpu.max 2>/dev/null "
              "|| echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
              "$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)")
    job_id, result = submit(devnet[0], "busybox", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    (execution,) = describe(devnet[0], job_id)["State"]["Executions"]
    assert execution["RunOutput"]["stdout"].split("\n")[:2] == ["512000000", "50000 100000"]
    job_id, result = submit(devnet[0], "--memory", "64Mi", "--cpu", "250m", "busybox", "--",
                            "sh", "-c", script)
    (execution,) = describe(devnet[0], job_id)["State"]["Executions"]
    assert execution["RunOutput"]["stdout"].split("\n")[:2] == [str(64 * 1024**2),
                                                                 "25000 100000"]


def _put(node: Daemon, body: bytes) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{node.api_url}/api/v1/orchestrator/jobs", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_requests_too_big_for_the_api_or_for_an_announcement_are_refused_up_front(
        devnet: list[Daemon]) -> None:
    """A job that cannot be announced once failed as "no node bid in time"; a 300 MB PUT took
    1.1 GB of memory. Both are refused at once, saying why, and nothing is stored."""
    node = devnet[0]
    before = len(json.loads(run(node, "list", "--output", "json").stdout))
    spec = {"Type": "batch", "Tasks": [{"Name": "t", "Engine": {"Type": "noop"},
                                        "Env": {"DATA": "x" * (600 * 1024)}}]}
    status, answer = _put(node, json.dumps({"Job": spec}).encode())
    assert status == 400, answer
    assert answer["Message"].startswith("the job spec is 600 KiB encoded and a job "
                                        "announcement carries at most 480 KiB")
    # Only the headers are sent: the answer must come without the body being read.
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=30)
    connection.putrequest("PUT", "/api/v1/orchestrator/jobs")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(300 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    status, answer = response.status, json.loads(response.read())
    connection.close()
    assert status == 413, answer
    assert answer["Message"].startswith("the request body is larger than the 4 MiB PUT "
                                        "/api/v1/orchestrator/jobs takes")
    assert len(json.loads(run(node, "list", "--output", "json").stdout)) == before
    assert node.running


def test_selector_places_the_job_on_the_matching_node(devnet: list[Daemon]) -> None:
    zone_b = devnet[1]
    for _ in range(3):
        job_id, result = submit(devnet[0], "-s", "zone=b", "busybox", "--", "true")
        assert result.returncode == 0, result.stderr
        (execution,) = describe(devnet[0], job_id)["State"]["Executions"]
        assert execution["NodeID"] == zone_b.peer_id


def test_count_runs_on_distinct_nodes(devnet: list[Daemon], tmp_path: Path) -> None:
    job_id, result = submit(devnet[2], "--count", "3", "busybox", "--", "sh", "-c",
                            "hostname > /outputs/host")
    assert result.returncode == 0, result.stderr
    executions = describe(devnet[2], job_id)["State"]["Executions"]
    completed = [e for e in executions if e["State"] == "Completed"]
    assert {e["NodeID"] for e in completed} == {node.peer_id for node in devnet}
    got = run(devnet[2], "get", job_id, "--output-dir", str(tmp_path))
    assert got.returncode == 0, got.stderr
    assert len(list(tmp_path.glob("e-*/outputs/host"))) == 3


def test_containers_have_no_network_and_no_capabilities(devnet: list[Daemon]) -> None:
    job_id, result = submit(devnet[0], "busybox", "--", "sh", "-c",
                            "ls /sys/class/net; grep -E 'CapEff|NoNewPrivs' /proc/self/status")
    assert result.returncode == 0, result.stderr
    (execution,) = describe(devnet[0], job_id)["State"]["Executions"]
    stdout = execution["RunOutput"]["stdout"]
    assert stdout.split()[0] == "lo" and "eth0" not in stdout
    assert "CapEff:\t0000000000000000" in stdout
    assert "NoNewPrivs:\t1" in stdout


def test_a_client_following_a_job_is_told_of_each_change_without_polling(
        devnet: list[Daemon]) -> None:
    import urllib.error

    client = devnet[0]
    result = run(client, "docker", "run", "--id-only", "--no-wait", "-p", "local",
                 "busybox", "--", "sleep", "3")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    started = time.monotonic()
    # A bad request about a job still running is refused at once, not after its wait.
    with pytest.raises(urllib.error.HTTPError) as refused:
        client.api(f"/api/v1/orchestrator/jobs/{job_id}?wait=20&include=everything", timeout=2)
    assert "include: unknown everything" in refused.value.read().decode()
    states: list[str] = []
    while not states or states[-1] not in {"Completed", "Failed", "Stopped"}:
        answer = client.api(f"/api/v1/orchestrator/jobs/{job_id}?wait=20", timeout=30)
        states.append(answer["Job"]["State"]["StateType"])
        assert time.monotonic() - started < 60, states
    # Each answer is a change (a bid, the container starting, its end); polling every 20 ms,
    # as the CLI did, took some 150 requests to see this 3 s job end.
    assert states[-1] == "Completed" and len(states) <= 12, states
    assert time.monotonic() - started >= 3
    with pytest.raises(urllib.error.HTTPError) as refused:
        client.api(f"/api/v1/orchestrator/jobs/{job_id}?wait=3600")
    assert refused.value.code == 400
    assert "query.wait: Input should be less than or equal to 30" in refused.value.read().decode()


def test_stop_kills_the_running_container(devnet: list[Daemon]) -> None:
    client = devnet[0]
    result = run(client, "docker", "run", "--id-only", "--no-wait", "-p", "local",
                 "busybox", "--", "sleep", "120")
    job_id = result.stdout.strip()
    wait_until(lambda: describe(client, job_id)["State"]["State"] == "Running", timeout=30,
               what="the job to run")
    stopped = run(client, "job", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: describe(client, job_id)["State"]["State"] == "Stopped", timeout=15,
               what="the job to stop")
    import docker

    def containers() -> list:
        labelled = {"label": f"bacnode.job={job_id}"}
        return docker.from_env().containers.list(all=True, filters=labelled)

    wait_until(lambda: not containers(), timeout=15, what="the container to be removed")


def test_tampered_results_are_refused(devnet: list[Daemon], tmp_path: Path) -> None:
    client = devnet[0]
    job_id, result = submit(client, "-s", "zone=a", "busybox", "--", "sh", "-c",
                            "echo genuine > /outputs/r.txt")
    assert result.returncode == 0, result.stderr
    (execution,) = describe(client, job_id)["State"]["Executions"]
    # The compute node's cached archive is what peers download: rewrite a file in it.
    first = run(client, "get", job_id, "--output-dir", str(tmp_path / "ok"))
    assert first.returncode == 0, first.stderr
    archive = client.data_dir / "results" / f"{execution['ExecutionID']}.tar"
    forged = tmp_path / "forged"
    (forged / "outputs").mkdir(parents=True)
    (forged / "outputs" / "r.txt").write_text("forged!\n")
    for name in ("stdout", "stderr", "exitCode"):
        (forged / name).write_bytes((tmp_path / "ok" / name).read_bytes())
    with tarfile.open(archive, "w") as tar:
        for path in sorted(forged.rglob("*")):
            tar.add(path, arcname=path.relative_to(forged).as_posix(), recursive=False)
    bad = run(client, "get", job_id, "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 1
    assert "does not match its signed SHA-256" in bad.stderr
    assert not (tmp_path / "bad" / "outputs").exists()


def test_a_job_the_requesters_own_bid_settles_is_not_offered_to_anyone_else(
        devnet: list[Daemon]) -> None:
    """The requester asks itself first; when its own bid wins at once (its tie-break
    ranks first), the other nodes are never asked. Each job another node wins is asked of
    both others, so the bids they send count exactly the jobs node a did not run itself."""
    client, others = devnet[0], devnet[1:]
    body = json.dumps({"Job": {"Type": "batch", "Tasks": [{
        "Name": "main", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}}).encode()

    def bids_sent() -> float:
        return sum(node.metrics().get(f'bacnode_bids_sent_total{{answer="{answer}"}}', 0)
                   for node in others for answer in ("accept", "decline"))

    before = bids_sent()
    ran_here = ran_elsewhere = 0
    # Each equal node wins one job in three: run until node a has won twice (40 at most).
    while ran_here < 2 and ran_here + ran_elsewhere < 40:
        status, answer = _put(client, body)
        assert status == 200, answer
        job_id = answer["JobID"]
        wait_until(lambda job_id=job_id: client.api(f"/api/v1/orchestrator/jobs/{job_id}")[
            "Job"]["State"]["StateType"] == "Completed", timeout=30,
            what=f"job {job_id} to complete")
        (execution,) = [e for e in client.api(
            f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
            if execution_state_name(e["ComputeState"]["StateType"]) == "Completed"]
        if execution["NodeID"] == client.peer_id:
            ran_here += 1
        else:
            ran_elsewhere += 1
    assert ran_here == 2, f"node a won none of {ran_elsewhere} jobs"
    # A bid is counted as it is sent: the last job's may trail its completion by a moment.
    wait_until(lambda: bids_sent() - before >= 2 * ran_elsewhere, timeout=10,
               what="the other nodes' bids to be counted")
    assert bids_sent() - before == 2 * ran_elsewhere


def test_fifty_jobs_at_once_all_complete_exactly_once(devnet: list[Daemon]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = devnet[0]
    body = {"Job": {"Type": "batch", "Tasks": [{"Name": "main", "Engine": {
        "Type": "docker", "Params": {"Image": "busybox", "Parameters": ["true"]}},
        "Publisher": {"Type": "noop"}}]}}

    def put(_: int) -> str:
        import urllib.request

        request = urllib.request.Request(
            client.api_url + "/api/v1/orchestrator/jobs", method="PUT",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["JobID"]

    with ThreadPoolExecutor(max_workers=25) as pool:
        job_ids = list(pool.map(put, range(50)))
    assert len(set(job_ids)) == 50

    def states() -> dict[str, str]:
        return {j: client.api(f"/api/v1/orchestrator/jobs/{j}")["Job"]["State"]["StateType"]
                for j in job_ids}

    wait_until(lambda: set(states().values()) <= {"Completed", "Failed", "Stopped"},
               timeout=240, what="50 jobs to finish")
    assert set(states().values()) == {"Completed"}
    for job_id in job_ids:
        executions = client.api(f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        ran = [e for e in executions if compute_state(e) == "Completed"]
        assert len(ran) == 1, (job_id, executions)


def test_a_burst_of_500_jobs_from_one_requester_loses_none(devnet: list[Daemon]) -> None:
    """Beyond its allowance of announcements (a burst of 100, then 100 a second), a
    requester's jobs wait Queued for a token instead of being refused or dropped: every one
    of 500 no-op jobs submitted at once completes, once."""
    from concurrent.futures import ThreadPoolExecutor

    from protocol.messages import ANNOUNCEMENT_BURST

    client = devnet[0]
    count = 500
    assert count > 4 * ANNOUNCEMENT_BURST
    body = json.dumps({"Job": {"Type": "batch", "Tasks": [{
        "Name": "main", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}}).encode()

    def put(_: int) -> str:
        import urllib.request

        request = urllib.request.Request(
            client.api_url + "/api/v1/orchestrator/jobs", method="PUT", data=body,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["JobID"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        job_ids = set(pool.map(put, range(count)))
    assert len(job_ids) == count

    def states() -> dict[str, str]:
        listed = client.api("/api/v1/orchestrator/jobs?limit=1000")["Items"]
        return {job["ID"]: job["State"]["StateType"] for job in listed if job["ID"] in job_ids}

    wait_until(lambda: len(ended := states()) == count
               and set(ended.values()) <= {"Completed", "Failed", "Stopped"},
               timeout=180, what=f"{count} jobs to end")
    assert set(states().values()) == {"Completed"}
    for job_id in list(job_ids)[::25]:  # each one ran once; a sample, the API is slow
        executions = client.api(f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        assert [compute_state(e) for e in executions].count("Completed") == 1, executions


def _when_ended(requester: Daemon, job_id: str) -> dict[str, Any]:
    """``describe`` of the job once it has ended (at most a minute from now)."""
    wait_until(lambda: describe(requester, job_id)["State"]["State"] in {"Completed", "Failed"},
               timeout=60, what=f"{job_id} to end")
    return describe(requester, job_id)


def _job_on_one_of_two_workers(
    pool: DaemonPool, *, seconds: int, heartbeat: float | None = None, missed: int | None = None,
) -> tuple[Daemon, list[Daemon], str, dict[str, Any]]:
    """A requester, two workers, and a job of ``seconds`` running on one of them:
    (requester, workers, job ID, the running execution)."""
    timing: dict[str, Any] = {"heartbeat": heartbeat} if heartbeat else {}
    flags = ["--missed-heartbeats", str(missed)] if missed else []
    requester = pool.new("req", args=["--orchestrator", "--labels", "role=req", *flags],
                         **timing)
    workers = [pool.new(f"w{i}", peers=[requester], args=["--labels", "role=worker", *flags],
                        **timing) for i in (1, 2)]
    ids = {node.peer_id for node in pool.start_all([requester, *workers])}
    wait_until(lambda: requester.connected() >= ids, timeout=30, what="the mesh")
    result = run(requester, "docker", "run", "--id-only", "--no-wait", "-p", "local",
                 "busybox", "--", "sh", "-c", f"sleep {seconds}; echo done > /outputs/ok")
    job_id = result.stdout.strip()

    def running() -> list[dict[str, Any]]:
        items = requester.api(f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        return [e for e in items if compute_state(e) == "Running"]

    wait_until(running, timeout=30, what="the job to run")
    (first,) = running()
    return requester, workers, job_id, first


def test_job_moves_to_another_node_when_its_node_dies(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    with DaemonPool(tmp_path_factory.mktemp("failover")) as pool:
        requester, workers, job_id, first = _job_on_one_of_two_workers(pool, seconds=4)
        victim = next(w for w in workers if w.peer_id == first["NodeID"])
        victim.kill()
        document = _when_ended(requester, job_id)
        assert document["State"]["State"] == "Completed"
        finished = [e for e in document["State"]["Executions"] if e["State"] == "Completed"]
        assert [e["NodeID"] for e in finished] != [victim.peer_id]
        assert len(finished) == 1
        lost = next(e for e in document["State"]["Executions"] if e["NodeID"] == victim.peer_id)
        assert lost["State"] == "Failed" and "stopped responding" in lost["Message"]
        import docker

        # The killed daemon could not remove its container; its restart would.
        for container in docker.from_env().containers.list(
            all=True, filters={"label": f"bacnode.job={job_id}"}
        ):
            container.remove(force=True)


def test_networked_jobs_are_declined_unless_a_node_opts_in(devnet: list[Daemon]) -> None:
    _, result = submit(devnet[0], "--network", "full", "busybox", "--", "true")
    assert result.returncode == 1
    assert "3 node(s): networked jobs are not allowed on this node" in result.stderr


def test_get_never_overwrites_a_users_files(devnet: list[Daemon], tmp_path: Path) -> None:
    client = devnet[0]
    job_id, result = submit(client, "busybox", "--", "sh", "-c",
                            "echo new; echo result > /outputs/mine.txt")
    assert result.returncode == 0, result.stderr
    mine = tmp_path / "mine"
    (mine / "outputs").mkdir(parents=True)
    (mine / "outputs" / "mine.txt").write_text("the user's own notes\n")
    (mine / "stdout").write_text("an earlier run\n")

    refused = run(client, "get", job_id, "--output-dir", str(mine))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: {mine} already holds outputs, stdout; get never overwrites files: choose "
        "another --output-dir (or leave it out for a new job-<id> directory)"]
    assert (mine / "outputs" / "mine.txt").read_text() == "the user's own notes\n"
    assert (mine / "stdout").read_text() == "an earlier run\n"
    assert sorted(p.name for p in mine.rglob("*")) == ["mine.txt", "outputs", "stdout"]

    # Without --output-dir: a new job-<short id> directory where the user stands, as Bacalhau.
    got = client.cli("get", job_id, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    fresh = tmp_path / f"job-{job_id[:10]}"
    assert (fresh / "outputs" / "mine.txt").read_text() == "result\n"
    assert (fresh / "stdout").read_text() == "new\n"
    # ... and a second get there is refused the same way, leaving the first intact.
    again = client.cli("get", job_id, cwd=tmp_path)
    assert again.returncode == 1 and "get never overwrites files" in again.stderr
    assert (fresh / "stdout").read_text() == "new\n"


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_user_errors_are_one_line(devnet: list[Daemon], tmp_path: Path) -> None:
    client = devnet[0]
    for _ in range(2):  # two jobs at least, so that "j-" is ambiguous
        assert submit(client, "busybox", "--", "true")[1].returncode == 0
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes("Name: caf\xe9\n".encode("latin-1"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"Tasks": [')
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("Tasks:\n  - Engine: {Type: docker, Params: {Imag: busybox}}\n")
    cases = {
        ("job", "run", str(not_utf8)): "is not UTF-8 text (byte 0xe9 at offset 9)",
        ("job", "run", str(broken)): "is not valid YAML or JSON: expected the node content",
        ("job", "run", str(wrong)): "invalid job spec",
        ("describe", "j-0000dead"): "job 'j-0000dead' not found",
        ("describe", "j-"): "'j-' matches several jobs",
        ("get", "j-0000dead"): "job 'j-0000dead' not found",
    }
    for args, expected in cases.items():
        line = _one_error_line(run(client, *args))
        assert expected in line, (args, line)
    no_daemon = run_cli_without_daemon("list")
    assert "no bacnode daemon answers" in _one_error_line(no_daemon)


def run_cli_without_daemon(*args: str) -> subprocess.CompletedProcess:
    from scripts.daemons import free_ports, run_cli

    (port,) = free_ports(1)
    return run_cli(*args, api_port=port)


@pytest.mark.parametrize("publisher", ["local", "ipfs"])
def test_symbolic_links_in_outputs_fail_the_job_with_the_reason(
        devnet: list[Daemon], publisher: str) -> None:
    job_id, result = submit(devnet[0], "-p", publisher, "busybox", "--", "sh", "-c",
                            "echo x > /outputs/real; ln -s real /outputs/rel_link")
    assert result.returncode == 1
    assert "the outputs hold symbolic links (outputs/rel_link)" in result.stderr
    assert "cp -L" in result.stderr


def test_bacalhau_v1_spellings_and_output_flags(devnet: list[Daemon], tmp_path: Path) -> None:
    import yaml

    node = devnet[0]
    followed = run(node, "docker", "run", "-f", "-l", "spelling=v1", "busybox", "--",
                   "echo", "followed")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines()[-1] == "followed"
    listed = yaml.safe_load(run(node, "job", "list", "--labels", "spelling=v1",
                                "--output", "yaml").stdout)
    (job,) = listed
    job_id = job["ID"]
    assert job["State"]["StateType"] == "Completed"
    table = run(node, "job", "list", "--labels", "spelling=v1", "--hide-header", "--no-style")
    assert table.stdout.split()[1:4] == [job_id[:10], "batch", "Completed"]
    assert json.loads(run(node, "job", "describe", job_id, "--output", "json").stdout)[
        "Job"]["ID"] == job_id
    assert run(node, "job", "logs", job_id).stdout == "followed\n"
    assert yaml.safe_load(run(node, "job", "executions", job_id, "--output", "yaml").stdout)
    got = run(node, "job", "get", job_id, "--output-dir", str(tmp_path / "got"))
    assert got.returncode == 0 and (tmp_path / "got" / "stdout").read_text() == "followed\n"

    assert run(node, "agent", "alive").stdout.strip() == "Status: OK"
    assert yaml.safe_load(run(node, "agent", "node").stdout)["NodeID"] == node.peer_id
    assert yaml.safe_load(run(node, "agent", "config").stdout)["API"]["Port"] == node.api_port
    assert yaml.safe_load(run(node, "agent", "version").stdout)["GitVersion"] == "v0.1.0"
    assert yaml.safe_load(run(node, "node", "describe", devnet[1].peer_id[:20]).stdout)[
        "Info"]["NodeID"] == devnet[1].peer_id
    version = json.loads(run(node, "version", "--output", "json").stdout)
    assert version["Server"] == "v0.1.0"


def test_cli_finds_the_daemon_through_its_config_file(devnet: list[Daemon],
                                                      tmp_path: Path) -> None:
    from scripts.daemons import run_cli

    (tmp_path / "config.yaml").write_text(f"api_port: {devnet[1].api_port}\n")
    found = run_cli("agent", "node", "--output", "json",
                    env={"BACNODE_DATA_DIR": str(tmp_path)})
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["NodeID"] == devnet[1].peer_id
    (tmp_path / "config.yaml").write_text("api_port: [not a port\n")
    broken = run_cli("agent", "alive", env={"BACNODE_DATA_DIR": str(tmp_path)})
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"Error: {tmp_path / 'config.yaml'} is not valid YAML")


def test_logs_follow_prints_lines_as_a_remote_container_writes_them(
        devnet: list[Daemon]) -> None:
    from scripts.daemons import child_env

    client = devnet[0]
    started = run(client, "docker", "run", "--wait=false", "--id-only", "-s", "zone=b",
                  "busybox", "--", "sh", "-c",
                  "for i in 1 2 3; do echo tick $i; echo tock $i >&2; sleep 1; done")
    job_id = started.stdout.strip()
    follower = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--api-port", str(client.api_port), "logs", "-f",
         job_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        # The first line is there while the container (on another node) still runs.
        state_then = client.api(f"/api/v1/orchestrator/jobs/{job_id}")["Job"]["State"]
        rest, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert first == "tick 1\n"
    assert state_then["StateType"] == "Running"
    assert first + rest == "tick 1\ntick 2\ntick 3\n"
    assert errors == "tock 1\ntock 2\ntock 3\n"
    assert follower.returncode == 0
    executions = client.api(f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
    assert {e["NodeID"] for e in executions} == {devnet[1].peer_id}


def test_count_more_than_the_nodes_fails_whole_after_its_queue_timeout(
        devnet: list[Daemon]) -> None:
    started = time.monotonic()
    job_id, result = submit(devnet[0], "--count", "4", "--queue-timeout", "3", "busybox", "--",
                            "true")
    assert result.returncode == 1
    assert "Count 4: 4 more execution(s) need as many distinct compute nodes, and only 3" \
        in result.stderr
    assert time.monotonic() - started < 30
    document = describe(devnet[0], job_id)
    assert document["State"]["State"] == "Failed"
    # Nothing was started: no execution holds a node.
    assert document["State"]["Executions"] == []


def test_an_execution_lost_to_a_quick_restart_is_retried_not_left_running(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """The compute node is killed and back well inside the detection window (heartbeats
    every 4 s, two missed: 8 s), so it never looks dead; its new run gives it away."""
    with DaemonPool(tmp_path_factory.mktemp("restart")) as pool:
        requester, workers, job_id, first = _job_on_one_of_two_workers(
            pool, seconds=3, heartbeat=4, missed=2)
        victim = next(w for w in workers if w.peer_id == first["NodeID"])
        victim.restart()
        document = _when_ended(requester, job_id)
        assert document["State"]["State"] == "Completed"
        finished = [e for e in document["State"]["Executions"] if e["State"] == "Completed"]
        assert len(finished) == 1
        lost = next(e for e in document["State"]["Executions"]
                    if e["ExecutionID"] == first["ID"])
        assert lost["State"] == "Failed", lost
        assert "restarted during it" in lost["Message"], lost


def _running_on_a_worker(pool: DaemonPool, *, seconds: int) -> tuple[Daemon, Daemon, str]:
    """A requester and one worker (heartbeats every 4 s, 2 missed: an 8 s window), and a
    job of ``seconds`` running on the worker: (requester, worker, job ID)."""
    requester = pool.new("req", args=["--orchestrator", "--missed-heartbeats", "2"],
                         heartbeat=4)
    worker = pool.new("w", peers=[requester], heartbeat=4, args=["--missed-heartbeats", "2"])
    pool.start_all([requester, worker])
    wait_until(lambda: requester.connected() >= {worker.peer_id}, timeout=30, what="the mesh")
    result = run(requester, "docker", "run", "--id-only", "--no-wait", "-p", "local",
                 "busybox", "--", "sh", "-c", f"sleep {seconds}; echo done > /outputs/ok")
    job_id = result.stdout.strip()
    wait_until(lambda: describe(requester, job_id)["State"]["State"] == "Running",
               timeout=30, what="the job to run")
    return requester, worker, job_id


def test_a_restarted_requester_waits_for_heartbeats_before_calling_nodes_dead(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """Restarted, the requester has heard from nobody yet; a healthy node's execution must
    not be failed (and run twice) before that node's first heartbeat can arrive."""
    with DaemonPool(tmp_path_factory.mktemp("requester-restart")) as pool:
        requester, worker, job_id = _running_on_a_worker(pool, seconds=8)
        requester.restart()
        document = _when_ended(requester, job_id)
        assert document["State"]["State"] == "Completed"
        (only,) = document["State"]["Executions"]  # it ran once, where it was placed
        assert only["State"] == "Completed" and only["NodeID"] == worker.peer_id


def test_what_a_down_requester_missed_is_sent_again_once_it_is_back(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """The job ends on its node while its requester is down: the node keeps the update and
    the result in its outbox and sends them again until the restarted requester has them."""
    with DaemonPool(tmp_path_factory.mktemp("outbox")) as pool:
        requester, worker, job_id = _running_on_a_worker(pool, seconds=2)
        requester.stop()
        time.sleep(5)  # the container ends meanwhile; its update and result find nobody
        requester.start()
        document = _when_ended(requester, job_id)
        assert document["State"]["State"] == "Completed"
        (only,) = document["State"]["Executions"]  # delivered late, not run again
        assert only["State"] == "Completed" and only["NodeID"] == worker.peer_id
        results = requester.api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"]
        assert [item["ExecutionID"] for item in results] == [only["ExecutionID"]]


def test_a_restarted_requester_resumes_a_job_still_waiting_for_a_node(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    with DaemonPool(tmp_path_factory.mktemp("resume")) as pool:
        requester = pool.start("req", args=["--orchestrator"])
        result = run(requester, "docker", "run", "--id-only", "--no-wait", "-p", "local",
                     "-s", "zone=later", "--queue-timeout", "120", "busybox", "--", "true")
        job_id = result.stdout.strip()
        wait_until(lambda: describe(requester, job_id)["State"]["State"] == "Queued",
                   timeout=30, what="the job to wait for a node")
        requester.kill()  # its scheduling of the job dies with it
        requester.start()
        # The node it waits for comes only now, after the restart.
        late = pool.start("late", peers=[requester], args=["--labels", "zone=later"])
        document = _when_ended(requester, job_id)
        assert document["State"]["State"] == "Completed", document["State"]
        (only,) = document["State"]["Executions"]
        assert only["NodeID"] == late.peer_id


def test_a_resumed_job_keeps_the_queue_timeout_it_started_with(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    with DaemonPool(tmp_path_factory.mktemp("resume-timeout")) as pool:
        requester = pool.start("req", args=["--orchestrator"])
        started = time.monotonic()
        result = run(requester, "docker", "run", "--id-only", "--no-wait", "-s", "zone=never",
                     "--queue-timeout", "8", "busybox", "--", "true")
        job_id = result.stdout.strip()
        wait_until(lambda: describe(requester, job_id)["State"]["State"] == "Queued",
                   timeout=30, what="the job to wait for a node")
        requester.kill()
        time.sleep(5)
        requester.start()  # about 7 s after submission
        document = _when_ended(requester, job_id)
        ended = time.monotonic() - started
        assert document["State"]["State"] == "Failed"
        # About 8 s after submission, not 8 s after the restart (15 s or more).
        assert ended < 12.5, ended


def test_the_noop_engine_runs_nothing_and_every_node_says_it_has_it(
    devnet: list[Daemon], tmp_path: Path
) -> None:
    """Bacalhau's no-op engine, for measuring orchestration alone: no container starts."""
    spec = tmp_path / "noop.json"
    spec.write_text(json.dumps({"Type": "batch", "Count": 2, "Tasks": [{
        "Name": "nothing", "Engine": {"Type": "noop"}, "Publisher": {"Type": "local"}}]}))
    before = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout
    result = run(devnet[0], "job", "run", "--id-only", "--wait", str(spec))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    document = describe(devnet[0], job_id)
    assert document["State"]["State"] == "Completed"
    assert [e["State"] for e in document["State"]["Executions"]] == ["Completed"] * 2
    assert subprocess.run(["docker", "ps", "-aq"], capture_output=True,
                          text=True).stdout == before
    # A job without an image is listed by its engine (`list` once failed on it).
    listed = run(devnet[0], "list", "--wide", "--hide-header", "--no-style")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[5] for line in listed.stdout.splitlines()
            if job_id in line] == ["noop"]
    for info in devnet[0].api("/api/v1/orchestrator/nodes")["Nodes"]:
        assert info["Info"]["ComputeNodeInfo"]["ExecutionEngines"] == ["docker", "noop"]
    # Published locally, its results are those of an empty run, fetched and verified.
    got = run(devnet[0], "get", job_id, "--output-dir", str(tmp_path / "got"))
    assert got.returncode == 0, got.stderr
    for execution_dir in (tmp_path / "got").glob("e-*"):
        assert (execution_dir / "exitCode").read_text() == "0"
        assert (execution_dir / "stdout").read_bytes() == b""
        assert list((execution_dir / "outputs").iterdir()) == []
    assert len(list((tmp_path / "got").glob("e-*"))) == 2


def test_a_result_record_reaches_every_other_node_by_gossip_after_the_job_ends(
        devnet: list[Daemon], tmp_path: Path) -> None:
    """Anyone can verify a result: its signed record goes to every node, not only to the
    requester, though the node that ran it sends its final state first (the gossip costs
    every node some work, and the requester has the record already)."""

    def records_heard() -> dict[str, int]:
        return {node.peer_id: node.api("/api/v1/agent/mesh")["Accepted"].get("result", 0)
                for node in devnet}

    before = records_heard()
    spec = tmp_path / "noop.json"
    spec.write_text(json.dumps({"Type": "batch", "Tasks": [{
        "Name": "nothing", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}))
    result = run(devnet[0], "job", "run", "--id-only", "--wait", str(spec))
    assert result.returncode == 0, result.stderr
    (execution,) = describe(devnet[0], result.stdout.strip())["State"]["Executions"]
    assert execution["State"] == "Completed"
    others = {node.peer_id for node in devnet} - {execution["NodeID"]}
    wait_until(lambda: all(count > before[node] for node, count in records_heard().items()
                           if node in others),
               timeout=15, what="the result record gossiped to every other node")


def test_a_noop_job_published_nowhere_leaves_no_files_yet_signs_its_manifest(
        devnet: list[Daemon], tmp_path: Path) -> None:
    import base64

    from node.executor.base import empty_results_manifest
    from protocol.envelope import parse_unverified
    from protocol.messages import ResultRecord, decode_message

    spec = tmp_path / "noop.json"
    spec.write_text(json.dumps({"Type": "batch", "Tasks": [{
        "Name": "nothing", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}))
    result = run(devnet[0], "job", "run", "--id-only", "--wait", str(spec))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    (execution,) = describe(devnet[0], job_id)["State"]["Executions"]
    assert execution["State"] == "Completed"
    (item,) = devnet[0].api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"]
    record = decode_message(parse_unverified(base64.b64decode(item["SignedRecord"])))
    assert isinstance(record, ResultRecord)
    assert list(record.outputs) == empty_results_manifest(0)
    ran_it = next(node for node in devnet if node.peer_id == execution["NodeID"])
    assert not list((ran_it.data_dir / "results").glob(f"{execution['ExecutionID']}*"))
