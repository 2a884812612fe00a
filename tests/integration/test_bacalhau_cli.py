"""Bacalhau v1.9.3's own CLI, unchanged, against a 3-node bacnode devnet.

The binary is the real one (``scripts/setup.sh`` builds it from the Go module proxy); it talks
to node a's API exactly as it talks to a Bacalhau orchestrator. Every command is checked for
what a Bacalhau user would see: exit status, the IDs and states it prints, the files ``job get``
writes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from protocol.states import execution_state_name
from scripts.daemons import Daemon, wait_until
from tests.conftest import BacalhauCli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(s3_devnet: list[Daemon]) -> Daemon:
    return s3_devnet[0]


ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def bacalhau(cli: BacalhauCli, node: Daemon, *args: str, ok: bool = True, **kwargs: Any,
             ) -> subprocess.CompletedProcess:
    """``bacalhau ARGS`` against ``node``; what it prints, without its colours."""
    result = cli.run(*args, api_port=node.api_port, **kwargs)
    result.stdout = ANSI_STYLE.sub("", result.stdout)
    result.stderr = ANSI_STYLE.sub("", result.stderr)
    assert "panic:" not in result.stderr, result.stderr
    if ok:
        assert result.returncode == 0, f"bacalhau {' '.join(args)}:\n{result.stderr}"
    return result


def job_state(node: Daemon, job_id: str) -> str:
    return node.api(f"/api/v1/orchestrator/jobs/{job_id}")["Job"]["State"]["StateType"]


def run_job(cli: BacalhauCli, node: Daemon, *args: str) -> str:
    result = bacalhau(cli, node, "docker", "run", "--wait", "--id-only", *args)
    job_id = result.stdout.strip()
    assert job_id.startswith("j-"), result.stdout
    return job_id


def test_agent_and_node_commands(bacalhau_cli: BacalhauCli, s3_devnet: list[Daemon]) -> None:
    node = s3_devnet[0]
    assert bacalhau(bacalhau_cli, node, "agent", "alive").stdout.strip() == "Status: OK"
    version = bacalhau(bacalhau_cli, node, "agent", "version").stdout
    assert version.startswith("Bacalhau v0.1.0")
    agent_node = bacalhau(bacalhau_cli, node, "agent", "node").stdout
    assert f"NodeID: {node.peer_id}" in agent_node
    assert "NodeType: Compute" in agent_node
    listed = bacalhau(bacalhau_cli, node, "node", "list", "--output", "json").stdout
    nodes = {state["Info"]["NodeID"]: state for state in json.loads(listed)}
    assert set(nodes) == {n.peer_id for n in s3_devnet}
    for state in nodes.values():
        assert state["ConnectionState"]["Status"] == "CONNECTED"
        assert state["Info"]["ComputeNodeInfo"]["MaxCapacity"]["CPU"] > 0
    table = bacalhau(bacalhau_cli, node, "node", "list", "--labels", "zone=b").stdout
    assert "zone=b" in table and "zone=a" not in table
    assert "NodeID" in bacalhau(bacalhau_cli, node, "node", "describe", node.peer_id).stdout
    config = bacalhau(bacalhau_cli, node, "agent", "config").stdout
    assert str(node.api_port) in config


def test_docker_run_waits_until_the_job_is_done(bacalhau_cli: BacalhauCli, node: Daemon) -> None:
    job_id = run_job(bacalhau_cli, node, "busybox", "--", "sh", "-c", "sleep 2; echo hi")
    # --wait returned only once the job had ended (it polls history until NextToken is "").
    assert job_state(node, job_id) == "Completed"
    assert bacalhau(bacalhau_cli, node, "job", "logs", job_id).stdout == "hi\n"


def test_job_run_of_a_lower_case_spec(bacalhau_cli: BacalhauCli, node: Daemon,
                                      tmp_path: Path) -> None:
    spec = tmp_path / "hello.yaml"
    spec.write_text(
        "name: A Simple Docker Job\n"
        "type: batch\n"
        "count: 1\n"
        "tasks:\n"
        "  - name: My main task\n"
        "    engine:\n"
        "      type: docker\n"
        "      params:\n"
        "        Image: busybox\n"
        "        Entrypoint: [/bin/sh]\n"
        "        Parameters: [-c, 'echo Hello Bacalhau! $GREETING']\n"
        "    env:\n"
        "      GREETING: from-env\n"
        "    timeouts:\n"
        "      totalTimeout: 120\n"
    )
    result = bacalhau(bacalhau_cli, node, "job", "run", "--wait", "--id-only", str(spec))
    job_id = result.stdout.strip()
    assert job_state(node, job_id) == "Completed"
    job = node.api(f"/api/v1/orchestrator/jobs/{job_id}")["Job"]
    assert job["Name"] == "A Simple Docker Job"
    assert job["Tasks"][0]["Timeouts"]["TotalTimeout"] == 120
    logs = bacalhau(bacalhau_cli, node, "job", "logs", job_id).stdout
    assert logs == "Hello Bacalhau! from-env\n"


def test_list_describe_executions_history(bacalhau_cli: BacalhauCli, node: Daemon) -> None:
    job_id = run_job(bacalhau_cli, node, "-l", "purpose=describe", "busybox", "--",
                     "echo", "described")
    listed = bacalhau(bacalhau_cli, node, "job", "list", "--labels", "purpose=describe").stdout
    assert job_id[:10] in listed and "Completed" in listed
    everything = bacalhau(bacalhau_cli, node, "job", "list", "--output", "json",
                          "--limit", "100").stdout
    assert job_id in {job["ID"] for job in json.loads(everything)}

    described = bacalhau(bacalhau_cli, node, "job", "describe", job_id).stdout
    assert f"ID            = {job_id}" in described
    assert "State         = Completed" in described
    assert "described" in described.split("Standard Output", 1)[1]

    document = json.loads(bacalhau(bacalhau_cli, node, "job", "describe", job_id,
                                   "--output", "json").stdout)
    assert document["Job"]["ID"] == job_id
    (execution,) = [e for e in document["Executions"]["Items"]
                    if execution_state_name(e["ComputeState"]["StateType"]) == "Completed"]
    assert execution["RunOutput"]["Stdout"] == "described\n"
    assert execution["PublishedResult"]["Type"] == "ipfs"
    assert document["History"]["Items"][0]["Event"]["Topic"] == "Submission"

    executions = bacalhau(bacalhau_cli, node, "job", "executions", job_id).stdout
    assert execution["ID"][:10] in executions and "Completed" in executions
    history = bacalhau(bacalhau_cli, node, "job", "history", job_id).stdout
    assert "JobLevel" in history and "ExecutionLevel" in history
    assert "all executions completed" in history


def test_logs_follow_a_running_job(bacalhau_cli: BacalhauCli, node: Daemon) -> None:
    ticks = "for i in 1 2 3; do echo tick $i; sleep 1; done"
    started = bacalhau(bacalhau_cli, node, "docker", "run", "--wait=false", "--id-only",
                       "busybox", "--", "sh", "-c", ticks)
    job_id = started.stdout.strip()
    from scripts.services import bacalhau_env

    follower = subprocess.Popen(
        [str(bacalhau_cli.binary), "job", "logs", "-f", job_id], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=bacalhau_env(bacalhau_cli.home, {"BACALHAU_API_HOST": "127.0.0.1",
                                              "BACALHAU_API_PORT": str(node.api_port)}))
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        state_then = job_state(node, job_id)  # the first line came while the job ran
        rest, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    assert first == "tick 1\n" and state_then == "Running"
    assert first + rest == "tick 1\ntick 2\ntick 3\n"
    assert job_state(node, job_id) == "Completed"


def test_stop_a_running_job_then_refuse_to_stop_it_again(
        bacalhau_cli: BacalhauCli, node: Daemon) -> None:
    started = bacalhau(bacalhau_cli, node, "docker", "run", "--wait=false", "--id-only",
                       "busybox", "--", "sleep", "120")
    job_id = started.stdout.strip()
    wait_until(lambda: job_state(node, job_id) == "Running", timeout=30, what="the job to run")
    stopped = bacalhau(bacalhau_cli, node, "job", "stop", job_id)
    assert "Job stop successfully submitted" in stopped.stdout
    wait_until(lambda: job_state(node, job_id) == "Stopped", timeout=30, what="the job to stop")
    again = bacalhau(bacalhau_cli, node, "job", "stop", job_id, ok=False)
    assert again.returncode == 1
    assert "Job is already in a terminal state" in again.stderr


def _results(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


SCRIPT = "echo out; mkdir -p /outputs/sub; echo data > /outputs/sub/a.txt; echo top > /outputs/t"
EXPECTED = {"exitCode": b"0", "outputs/sub/a.txt": b"data\n", "outputs/t": b"top\n",
            "stderr": b"", "stdout": b"out\n"}


@pytest.mark.parametrize("publisher", ["local", "ipfs", "s3"])
def test_job_get_writes_the_results_layout(
        bacalhau_cli: BacalhauCli, node: Daemon, tmp_path: Path, s3_bucket: Any,
        publisher: str) -> None:
    target = {"local": "local", "ipfs": "ipfs",
              "s3": f"s3://{s3_bucket.name}/bacalhau-{{jobID}},opt=compress=true"}[publisher]
    job_id = run_job(bacalhau_cli, node, "-p", target, "busybox", "--", "sh", "-c", SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    # Bacalhau's IPFS downloader goes through a kubo RPC endpoint: the node's own API.
    env = {"BACALHAU_RESULTDOWNLOADERS_TYPES_IPFS_ENDPOINT":
           f"/ip4/127.0.0.1/tcp/{node.api_port}"}
    got = bacalhau(bacalhau_cli, node, "job", "get", job_id, "--output-dir", str(out), env=env)
    assert "have been written to" in got.stdout
    assert _results(out) == EXPECTED


def test_errors_are_bacalhau_style_one_liners(bacalhau_cli: BacalhauCli, node: Daemon,
                                              tmp_path: Path) -> None:
    missing = bacalhau(bacalhau_cli, node, "job", "describe", "j-nonexistent", ok=False)
    assert missing.returncode == 1
    assert "Error: job 'j-nonexistent' not found" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: batch\ntasks:\n  - name: main\n    engine:\n      type: docker\n"
                   "      params: {Imag: busybox}\n")
    refused = bacalhau(bacalhau_cli, node, "job", "run", str(bad), ok=False)
    assert refused.returncode == 1
    assert "Image: required field is missing" in refused.stderr


def test_commands_bacnode_does_not_offer_say_so(bacalhau_cli: BacalhauCli, node: Daemon) -> None:
    job_id = run_job(bacalhau_cli, node, "busybox", "--", "true")
    versions = bacalhau(bacalhau_cli, node, "job", "versions", job_id)
    assert versions.stdout.split()[-1] == "1"  # one version, as submitted
    rerun = bacalhau(bacalhau_cli, node, "job", "rerun", job_id, ok=False)
    assert rerun.returncode == 1
    assert "Error: bacnode does not rerun jobs" in rerun.stderr
    for action in ("approve", "reject", "delete"):
        refused = bacalhau(bacalhau_cli, node, "node", action, node.peer_id, ok=False)
        assert refused.returncode == 1, action
        assert "Error: bacnode nodes need no approval" in refused.stderr, action
