"""A node whose API more than its own user can reach asks for a key.

Here the trigger is ``--allow-networked-jobs``: a networked job's container shares the host's
network, so it reaches the API on loopback like any local process. Real daemon, real CLI,
real container; the only traffic is to 127.0.0.1.
"""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from typing import Any

import pytest

from scripts.daemons import Daemon, DaemonPool, run_cli

pytestmark = pytest.mark.integration


def _get(url: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Any:
    with DaemonPool(tmp_path_factory.mktemp("api-key")) as pool:
        node = pool.start("guarded", args=["--allow-networked-jobs"])
        yield node


def _key(node: Daemon) -> str:
    path = node.data_dir / "api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def test_requests_without_the_key_are_refused_and_liveness_still_answers(
        guarded: Daemon) -> None:
    jobs = f"{guarded.api_url}/api/v1/orchestrator/jobs"
    status, answer = _get(jobs)
    assert status == 401
    assert answer["Message"].startswith("this API needs its key")
    status, answer = _get(jobs, key="not-the-key")
    assert (status, answer["Message"]) == (401, "the API key given is not this node's")
    assert _get(jobs, key=_key(guarded))[0] == 200
    assert _get(f"{guarded.api_url}/api/v1/agent/alive")[0] == 200
    # The CLI without a key says what to do, in one line.
    result = run_cli("list", api_port=guarded.api_port,
                     env={"BACNODE_DATA_DIR": str(guarded.data_dir / "elsewhere")})
    assert result.returncode == 1
    assert "this API needs its key" in result.stderr and "Traceback" not in result.stderr


def test_the_cli_finds_the_key_and_a_networked_job_cannot_use_the_api(
        guarded: Daemon, tmp_path: Any) -> None:
    key = _key(guarded)
    env = {"BACNODE_DATA_DIR": str(guarded.data_dir)}  # the daemon's own user
    probe = (f"wget -q -O- http://127.0.0.1:{guarded.api_port}/api/v1/orchestrator/jobs "
             f"2>&1; env | grep -c -F -e {key} -e api-key")
    result = run_cli("docker", "run", "--wait", "--id-only", "--network", "full", "-p",
                     "local", "busybox", "--", "sh", "-c", probe, api_port=guarded.api_port,
                     env=env)
    job_id = result.stdout.strip().splitlines()[0]
    logs = run_cli("logs", job_id, api_port=guarded.api_port, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "server returned error: HTTP/1.1 401" in logs.stdout, logs.stdout
    assert logs.stdout.rstrip().endswith("0"), logs.stdout  # no key in its environment
    # Results come back through the signed URL the node hands out, not the key.
    got = run_cli("get", job_id, "--output-dir", str(tmp_path / "out"),
                  api_port=guarded.api_port, env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "stdout").read_text() == logs.stdout
    results = json.loads(_get(f"{guarded.api_url}/api/v1/orchestrator/jobs/{job_id}/results",
                              key=key)[1])
    (url,) = [item["Params"]["URL"] for item in results["Items"]]
    assert _get(url)[0] == 200
    unsigned, _, _ = url.partition("?")
    assert _get(unsigned)[0] == 401
    # A signature is for its one path.
    assert _get(url.replace("/executions/e-", "/executions/e-0"))[0] == 401


def test_bacalhaus_own_cli_sends_the_key_from_bacalhau_api_key(
        guarded: Daemon, bacalhau_cli: Any, tmp_path: Any) -> None:
    env = {"BACALHAU_API_KEY": _key(guarded)}
    run = bacalhau_cli.run("docker", "run", "--wait", "--id-only", "-p", "local", "busybox",
                           "--", "echo", "hi", api_port=guarded.api_port, env=env)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    out = tmp_path / "out"
    out.mkdir()
    got = bacalhau_cli.run("job", "get", job_id, "--output-dir", str(out),
                           api_port=guarded.api_port, env=env)
    assert got.returncode == 0, got.stderr
    assert (out / "stdout").read_text() == "hi\n"
    refused = bacalhau_cli.run("job", "list", api_port=guarded.api_port)
    assert refused.returncode != 0 and "panic:" not in refused.stderr
