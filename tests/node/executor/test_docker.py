"""The Docker executor against the real dockerd and the local busybox image.

Every test bounds its own time with ``trio.fail_after``, and the ``executor`` fixture
checks afterwards that no container labelled with the test's node ID is left.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from node.executor.base import ExecutionResult
from node.executor.docker import LABEL_EXECUTION, LABEL_JOB, LABEL_NODE, DockerExecutor
from protocol.jobspec import Resources

from .conftest import HttpServer, make_request

pytestmark = pytest.mark.integration


def _labelled(docker_client: Any, execution_id: str) -> list[Any]:
    # sparse: the listing alone, no inspect per container that may be gone by then
    return docker_client.containers.list(
        all=True, sparse=True, filters={"label": f"{LABEL_EXECUTION}={execution_id}"}
    )


async def _wait_for_container(docker_client: Any, execution_id: str) -> Any:
    """Poll until the execution's container is running; return it."""
    with trio.fail_after(15):
        while True:
            found = await trio.to_thread.run_sync(_labelled, docker_client, execution_id)
            if found and found[0].status == "running":
                await trio.to_thread.run_sync(found[0].reload)  # its full inspect
                return found[0]
            await trio.sleep(0.05)


# ------------------------------------------------------------------------- running a task


async def test_output_exit_code_and_results_layout(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["echo hi; echo data > /outputs/a.txt"])
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.error is None
    assert result.exit_code == 0 and result.succeeded
    assert result.stdout_tail == "hi\n" and result.stderr_tail == ""
    assert not result.stdout_truncated and result.stdout_bytes == 3
    assert result.stdout_sha256 == hashlib.sha256(b"hi\n").hexdigest()
    results = request.results_dir
    assert (results / "stdout").read_bytes() == b"hi\n"
    assert (results / "stderr").read_bytes() == b""
    assert (results / "exitCode").read_text() == "0"
    assert (results / "outputs" / "a.txt").read_text() == "data\n"
    assert _labelled(docker_client, request.execution_id) == []


async def test_non_zero_exit_and_stderr_are_captured(executor, tmp_path):
    request = make_request(tmp_path, command=["echo out; echo oops >&2; exit 3"])
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code == 3 and not result.succeeded
    assert result.error is None  # the task failed, not the executor
    assert result.stdout_tail == "out\n" and result.stderr_tail == "oops\n"
    assert (request.results_dir / "stderr").read_text() == "oops\n"
    assert (request.results_dir / "exitCode").read_text() == "3"


async def test_entrypoint_parameters_environment_and_working_directory(executor, tmp_path):
    # Entrypoint replaces the image's; Parameters are its arguments.
    request = make_request(tmp_path, entrypoint=["echo"], command=["a", "b c"])
    result = await executor.run(request)
    assert result.stdout_tail == "a b c\n"
    # No Entrypoint: the Parameters are the command (busybox has no entrypoint).
    request = make_request(tmp_path, entrypoint=[], command=["echo", "plain"])
    result = await executor.run(request)
    assert result.stdout_tail == "plain\n"
    request = make_request(
        tmp_path,
        command=['echo "$GREETING"; pwd'],
        environment_variables=("GREETING=hello world",),
        working_directory="/tmp",
    )
    result = await executor.run(request)
    assert result.stdout_tail == "hello world\n/tmp\n"


async def test_stdin_is_closed(executor, tmp_path):
    request = make_request(tmp_path, entrypoint=["cat"], timeout_seconds=20)
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code == 0 and not result.timed_out


async def test_stdout_larger_than_the_cap_is_whole_on_disk(executor, tmp_path):
    size = 3_000_000
    request = make_request(
        tmp_path,
        command=[f"yes 0123456789abcdef | head -c {size}; echo tail-of-stderr >&2"],
        stdout_tail_bytes=1000,
    )
    with trio.fail_after(60):
        result = await executor.run(request)
    data = (request.results_dir / "stdout").read_bytes()
    assert len(data) == size == result.stdout_bytes
    assert result.stdout_sha256 == hashlib.sha256(data).hexdigest()
    assert result.stdout_truncated
    assert len(result.stdout_tail) == 1000
    assert result.stdout_tail.encode() == data[-1000:]
    assert not result.stderr_truncated and result.stderr_tail == "tail-of-stderr\n"


async def test_a_command_that_cannot_start_is_an_error(executor, docker_client, tmp_path):
    request = make_request(tmp_path, entrypoint=["/no/such/program"])
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code is None
    assert result.error is not None
    assert result.error.startswith("Docker could not start the container:")
    assert "/no/such/program" in result.error
    assert _labelled(docker_client, request.execution_id) == []


async def test_gpu_requests_are_refused(executor, tmp_path):
    request = make_request(tmp_path, command=["true"], resources=Resources(gpu=1))
    result = await executor.run(request)
    assert result.exit_code is None
    assert "GPU" in (result.error or "")


# ------------------------------------------------------------------ images, time, cancel


async def test_unknown_image_fails_fast_with_a_clear_error(executor, docker_client, tmp_path):
    request = make_request(tmp_path, image="nosuch:1", command=["true"])
    began = time.monotonic()
    with trio.fail_after(30):
        result = await executor.run(request)
    assert time.monotonic() - began < 30
    assert result.exit_code is None
    assert result.error is not None
    assert result.error.startswith("image 'nosuch:1' not found locally and could not be pulled: ")
    assert result.error.endswith("; build or load it on this node, or pick an image the node has")
    assert _labelled(docker_client, request.execution_id) == []


async def test_a_hung_pull_is_bounded(docker_client, busybox_image, node_id, tmp_path):
    executor = DockerExecutor(node_id, pull_timeout=0.5)

    def never_pulls(client: Any, image: str) -> str | None:
        time.sleep(3)
        return None

    executor._pull = never_pulls  # type: ignore[method-assign]
    request = make_request(tmp_path, image="nosuch:2", command=["true"])
    began = time.monotonic()
    result = await executor.run(request)
    assert time.monotonic() - began < 2.5
    assert "the pull did not finish within 0.5s" in (result.error or "")


async def test_timeout_kills_and_reports(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["echo started; sleep 30"], timeout_seconds=1)
    began = time.monotonic()
    with trio.fail_after(20):
        result = await executor.run(request)
    assert time.monotonic() - began < 10
    assert result.timed_out and not result.cancelled
    assert result.error == "execution timed out after 1s and was killed"
    assert result.exit_code == 137
    assert result.stdout_tail == "started\n"
    assert (request.results_dir / "exitCode").read_text() == "137"
    assert _labelled(docker_client, request.execution_id) == []


async def test_a_timed_out_container_is_killed_and_has_exited_before_it_is_removed(
        executor, docker_client, tmp_path):
    # Its output and exit code are whole only once it has exited: a force-removal of a
    # container still running would kill it too, but race the thread that reads them.
    seen: list[tuple[str, int]] = []
    remove = executor._remove

    async def looking_first(engine: Any, container_id: str) -> bool:
        state = (await trio.to_thread.run_sync(
            lambda: docker_client.api.inspect_container(container_id)))["State"]
        seen.append((state["Status"], state["ExitCode"]))
        return await remove(engine, container_id)

    executor._remove = looking_first
    request = make_request(tmp_path, command=["echo started; sleep 30"], timeout_seconds=1)
    with trio.fail_after(20):
        result = await executor.run(request)
    assert result.timed_out
    assert seen == [("exited", 137)]


async def test_cancel_kills_a_running_container_promptly(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["echo running; sleep 60"])
    results: list[ExecutionResult] = []

    async def run() -> None:
        results.append(await executor.run(request))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await _wait_for_container(docker_client, request.execution_id)
            began = time.monotonic()
            assert await executor.cancel(request.execution_id) is True
        elapsed = time.monotonic() - began
    assert elapsed < 5
    (result,) = results
    assert result.cancelled and not result.timed_out
    assert result.error == "execution was cancelled and its container killed"
    assert result.stdout_tail == "running\n"
    assert _labelled(docker_client, request.execution_id) == []
    assert await executor.cancel(request.execution_id) is False
    assert await executor.cancel("e-not-running-here") is False


async def test_cancel_before_the_container_starts(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["sleep 60"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            results: list[ExecutionResult] = []

            async def run() -> None:
                results.append(await executor.run(request))

            nursery.start_soon(run)
            # Cancel as soon as run() has registered the execution, long before it starts.
            while not await executor.cancel(request.execution_id):
                await trio.sleep(0)
    (result,) = results
    assert result.cancelled and result.exit_code is None
    assert result.error == "execution was cancelled before its container started"
    assert _labelled(docker_client, request.execution_id) == []


async def test_cancelling_the_caller_removes_the_container(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["sleep 60"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, request)
            await _wait_for_container(docker_client, request.execution_id)
            nursery.cancel_scope.cancel()
    assert _labelled(docker_client, request.execution_id) == []


_BLOCKING_MODULES = ("docker", "requests", "urllib3", "http.client")
#: What the garbage collector runs, on whichever thread it happens to be, when it frees a
#: finished response of a worker thread's call: closing a socket, no request. Seen once on
#: the loop thread as ``http.client:_close_conn``, with no Docker call under it.
_FINALIZERS = frozenset({"__del__", "close", "_close_conn"})


def _blocking_call_on(thread_id: int) -> str | None:
    """The Docker API call the thread is inside right now, if any, as ``module:function``."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        finalizing = module == "http.client" and frame.f_code.co_name in _FINALIZERS
        if (module.split(".")[0] in _BLOCKING_MODULES or module == "http.client"
                ) and not finalizing:
            return f"{module}:{frame.f_code.co_name}"
        frame = frame.f_back
    return None


async def test_runs_do_not_block_the_event_loop(executor, tmp_path):
    """Four containers at once, and the loop's thread is never seen inside a Docker API call.

    A thread samples the loop thread's stack every 2 ms. That, not the loop's wall-clock
    gaps, is the assertion: on a loaded machine the loop can wait 0.35 s for a core without
    any fault of ours (CI saw it), while a Docker call made on the loop shows up in the
    samples however fast or slow the machine is.
    """
    loop_thread = threading.get_ident()
    seen_blocking: list[str] = []
    sampling = threading.Event()

    def sample() -> None:
        while sampling.is_set():
            call = _blocking_call_on(loop_thread)
            if call is not None:
                seen_blocking.append(call)
            time.sleep(0.002)

    results: list[ExecutionResult] = []

    async def one(index: int) -> None:
        request = make_request(tmp_path, command=[f"sleep 0.5; echo {index}"])
        results.append(await executor.run(request))

    sampling.set()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(4):
                    nursery.start_soon(one, index)
    finally:
        sampling.clear()
        sampler.join()
    assert sorted(r.stdout_tail for r in results) == ["0\n", "1\n", "2\n", "3\n"]
    assert seen_blocking == [], (
        f"the event loop called the Docker API: {sorted(set(seen_blocking))}"
    )


# ------------------------------------------------------------------- isolation and limits


def _http_get(port: int, path: str) -> str:
    """A shell command printing the body of GET http://127.0.0.1:PORT/PATH, or NO-NETWORK.

    busybox's nc rather than its wget: Debian busybox-static's wget segfaults on these
    machines, on the host as well as in containers, so it would prove nothing.
    """
    return (
        f"if printf 'GET /{path} HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 {port} > /tmp/r; "
        "then sed '1,/^\\r$/d' /tmp/r; else echo NO-NETWORK; fi"
    )


async def test_no_network_by_default(executor, http_server: HttpServer, tmp_path):
    (http_server.root / "hello.txt").write_text("hello from the host\n")
    script = f"ls /sys/class/net; {_http_get(http_server.port, 'hello.txt')}"
    with trio.fail_after(30):
        result = await executor.run(make_request(tmp_path, command=[script]))
    assert result.exit_code == 0, result.stderr_tail
    assert result.stdout_tail.split() == ["lo", "NO-NETWORK"]
    assert "Connection refused" in result.stderr_tail
    assert http_server.hits == []


async def test_full_network_uses_host_networking(executor, http_server: HttpServer, tmp_path):
    (http_server.root / "hello.txt").write_text("hello from the host\n")
    script = _http_get(http_server.port, "hello.txt")
    request = make_request(tmp_path, command=[script], network="Full")
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code == 0, result.stderr_tail
    assert result.stdout_tail == "hello from the host\n"
    assert http_server.hits == ["/hello.txt"]


async def test_no_capabilities_no_new_privileges_and_limits(executor, tmp_path):
    script = (
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; "
        "cat /sys/fs/cgroup/memory.max 2>/dev/null "
        "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; "
        "if chown nobody /tmp 2>/dev/null; then echo CHOWNED; else echo NO-CHOWN; fi"
    )
    request = make_request(
        tmp_path, command=[script], resources=Resources(cpu_milli=500, memory=64 * 1024**2)
    )
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code == 0, result.stderr_tail
    lines = result.stdout_tail.splitlines()
    status = dict(line.split(":\t") for line in lines[:4])
    assert status == {
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }
    assert lines[4:] == [str(64 * 1024**2), "1024", "NO-CHOWN"]


async def test_host_config_while_running(executor, docker_client, tmp_path):
    """What Docker was told: limits, hardening, network, log driver, mounts, labels."""
    staged = tmp_path / "staged"
    staged.mkdir()
    request = make_request(
        tmp_path,
        command=["sleep 60"],
        resources=Resources(cpu_milli=1500, memory=128 * 1024**2),
        inputs=[(staged, "/inputs")],
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, request)
            container = await _wait_for_container(docker_client, request.execution_id)
            attrs = container.attrs
            await executor.cancel(request.execution_id)
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024**2
    assert host["PidsLimit"] == 1024
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert attrs["Config"]["NetworkDisabled"] is True  # no libnetwork sandbox: see docker.py
    assert host["LogConfig"]["Type"] == "none"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert set(mounts) == {"/inputs", "/outputs"}
    assert mounts["/inputs"]["RW"] is False and mounts["/outputs"]["RW"] is True
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_JOB] == request.job_id
    assert labels[LABEL_EXECUTION] == request.execution_id
    assert labels[LABEL_NODE] == executor.node_id


async def test_inputs_are_mounted_read_only(executor, tmp_path):
    staged_dir = tmp_path / "staged-dir"
    staged_dir.mkdir()
    (staged_dir / "in.txt").write_text("dir input\n")
    staged_file = tmp_path / "staged-file.txt"
    staged_file.write_text("file input\n")
    script = (
        "cat /inputs/in.txt /data/x.txt; "
        "if echo x > /inputs/new 2>/dev/null; then echo WROTE-DIR; else echo RO-DIR; fi; "
        "if echo x > /data/x.txt 2>/dev/null; then echo WROTE-FILE; else echo RO-FILE; fi; "
        "if rm /inputs/in.txt 2>/dev/null; then echo REMOVED; else echo KEPT; fi"
    )
    request = make_request(
        tmp_path, command=[script], inputs=[(staged_dir, "/inputs"), (staged_file, "/data/x.txt")]
    )
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.stdout_tail.splitlines() == [
        "dir input",
        "file input",
        "RO-DIR",
        "RO-FILE",
        "KEPT",
    ]
    assert sorted(p.name for p in staged_dir.iterdir()) == ["in.txt"]
    assert staged_file.read_text() == "file input\n"


async def test_missing_input_is_an_error(executor, tmp_path):
    request = make_request(tmp_path, command=["true"], inputs=[(tmp_path / "nope", "/inputs")])
    result = await executor.run(request)
    assert result.exit_code is None
    assert "was not staged" in (result.error or "")


# ------------------------------------------------------------------- housekeeping


async def test_cleanup_orphans_removes_only_this_nodes_containers(
    executor, docker_client, busybox_image, tmp_path
):
    def create(labels: dict[str, str], start: bool) -> Any:
        container = docker_client.containers.create(
            busybox_image, ["sleep", "60"], labels=labels, network_mode="none"
        )
        if start:
            container.start()
        return container

    mine = {LABEL_NODE: executor.node_id, LABEL_EXECUTION: "e-orphan", LABEL_JOB: "j-orphan"}
    orphan_created = create(mine, start=False)
    orphan_running = create(mine, start=True)
    unlabelled = create({}, start=False)
    other_node = create({LABEL_NODE: "some-other-node"}, start=False)
    try:
        with trio.fail_after(30):
            assert await executor.cleanup_orphans() == 2
            assert await executor.cleanup_orphans() == 0
        remaining = {c.id for c in docker_client.containers.list(all=True)}
        assert orphan_created.id not in remaining and orphan_running.id not in remaining
        assert unlabelled.id in remaining and other_node.id in remaining
    finally:
        for container in (orphan_created, orphan_running, unlabelled, other_node):
            try:
                container.remove(force=True)
            except Exception:
                pass


async def test_cleanup_orphans_spares_running_executions(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["sleep 60"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, request)
            await _wait_for_container(docker_client, request.execution_id)
            assert await executor.cleanup_orphans() == 0
            assert len(_labelled(docker_client, request.execution_id)) == 1
            await executor.cancel(request.execution_id)


def test_a_node_on_a_plain_socket_checks_cleans_up_and_runs_jobs_without_docker_py(
    docker_client, busybox_image, node_id
):
    """docker-py is ~6 MiB of a daemon and most of its CPU per short container: on a plain
    socket the engine check, the start-up clean-up and the jobs all go to dockerd's socket
    (docker-py would load to pull an image)."""
    orphan = docker_client.containers.create(
        busybox_image, ["sleep", "60"], labels={LABEL_NODE: node_id}, network_mode="none"
    )
    orphan.start()
    code = f"""
import json, sys, tempfile
from pathlib import Path
import trio
sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
from node.executor.docker import DockerExecutor
from tests.node.executor.conftest import make_request

async def main():
    executor = DockerExecutor({node_id!r})
    installed = await executor.is_installed()
    removed = await executor.cleanup_orphans()
    idle = [m for m in ("docker", "requests", "urllib3") if m in sys.modules]
    result = await executor.run(make_request(Path(tempfile.mkdtemp()), command=["true"]))
    print(json.dumps({{"installed": installed, "removed": removed, "idle": idle,
                      "exit_code": result.exit_code, "after_a_job": "docker" in sys.modules}}))

trio.run(main)
"""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report == {"installed": True, "removed": 1, "idle": [], "exit_code": 0,
                          "after_a_job": False}
        assert not docker_client.containers.list(all=True, filters={"id": orphan.id})
    finally:
        try:
            orphan.remove(force=True)
        except Exception:
            pass


async def test_is_installed(executor, node_id, monkeypatch):
    assert await executor.is_installed() is True
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert await DockerExecutor(node_id).is_installed() is False


async def test_unreachable_docker_is_an_error_not_a_crash(node_id, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = await DockerExecutor(node_id).run(make_request(tmp_path, command=["true"]))
    assert result.exit_code is None
    assert (result.error or "").startswith("the Docker engine is not reachable:")


async def test_the_same_execution_cannot_run_twice_at_once(executor, docker_client, tmp_path):
    request = make_request(tmp_path, command=["sleep 60"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, request)
            await _wait_for_container(docker_client, request.execution_id)
            with pytest.raises(ValueError, match="already running"):
                await executor.run(request)
            await executor.cancel(request.execution_id)


def test_requests_are_checked():
    with pytest.raises(ValueError, match="network"):
        make_request(Path("/tmp"), command=["true"], network="Host")
    for target in ("/outputs", "/outputs/in"):
        with pytest.raises(ValueError, match="inside /outputs"):
            make_request(Path("/tmp"), command=["true"], inputs=[(Path("/tmp"), target)])
    with pytest.raises(ValueError, match="already mounted"):
        make_request(Path("/tmp"), command=["true"], inputs=[(Path("/a"), "/in"), ("/b", "/in")])
    with pytest.raises(ValueError, match="absolute"):
        make_request(Path("/tmp"), command=["true"], inputs=[(Path("/tmp"), "inputs")])


async def test_a_job_that_writes_past_its_disk_limit_is_killed_and_fails_saying_so(
    executor, tmp_path
):
    """--disk 10Mi once let a job write 300 MB. A slow writer is killed within a poll or
    two; one that writes it all at once still fails, however fast it was."""
    slow = (
        "i=0; while [ $i -lt 100 ]; do dd if=/dev/zero of=/outputs/f$i bs=1M count=5 "
        "2>/dev/null; i=$((i+1)); sleep 0.1; done"
    )
    request = make_request(
        tmp_path / "slow", command=[slow], resources=Resources(disk=10 * 1024**2)
    )
    began = time.monotonic()
    with trio.fail_after(60):
        result = await executor.run(request)
    assert time.monotonic() - began < 6  # writing it all takes over 10 s
    assert result.error is not None and result.error.startswith(
        "the job wrote more than its disk limit of 10Mi (at least "
    )
    written = sum(f.stat().st_size for f in request.outputs_dir.iterdir())
    assert 10 * 1024**2 < written < 100 * 1024**2
    fast = "dd if=/dev/zero of=/outputs/big bs=1M count=30 2>/dev/null"
    request = make_request(
        tmp_path / "fast", command=[fast], resources=Resources(disk=10 * 1024**2)
    )
    with trio.fail_after(60):
        result = await executor.run(request)
    assert result.error is not None and "disk limit of 10Mi" in result.error
    within = make_request(
        tmp_path / "within",
        command=[fast.replace("30", "5")],
        resources=Resources(disk=10 * 1024**2),
    )
    with trio.fail_after(60):
        result = await executor.run(within)
    assert result.error is None and result.exit_code == 0
