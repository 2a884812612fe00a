"""The Docker executor: one locked-down container per execution.

How a task runs (Bacalhau's semantics where it has them):

- The image is pulled when it is missing, within ``pull_timeout``; a node without a
  reachable registry fails fast with an error that says how to fix it.
- ``Entrypoint`` replaces the image's entrypoint (and then the image's CMD is not used);
  ``Parameters`` are the arguments (the image's CMD when empty). ``EnvironmentVariables``
  and ``WorkingDirectory`` are passed as given.
- Mounts: every input read-only at its target, ``results_dir/outputs`` read-write at
  ``/outputs``. Nothing else of the host is visible.
- Network: none (loopback only) unless the job asks for ``Full``, which gets the node's
  ``full_network_mode`` (host networking by default: this project's dockerd runs without
  the default bridge, see shared/DESIGN.md). A job without network is created with
  networking disabled as well as ``network_mode="none"``, as Bacalhau does: dockerd then
  leaves the network namespace to runc (a fresh one with only ``lo``) instead of having
  libnetwork build a sandbox for the ``none`` network, which doubled a short container's
  life here (50 ``busybox true``, three at a time: 6.7 s, 3.2 s without the sandbox).
- Hardening: all capabilities dropped, ``no-new-privileges``, not privileged, a pids
  limit, CPU (``nano_cpus``) and memory limits (swap = memory, so no swap) from the
  job's resources, and the ``none`` log driver (output goes to our files, not dockerd's).
  The task runs as the image's user, root by default: a root without capabilities
  cannot chown, override file permissions, mount or load modules, and with
  no-new-privileges a setuid binary gives nothing. The root filesystem stays writable
  because many images write to /tmp or their home; it is the container's own layer and
  vanishes with the container. The ``Disk`` resource is not enforced (overlay2 on
  extfs has no per-container quota). GPUs are not offered: a request for one fails.
- Output: stdout and stderr are streamed from an attach made before the start, straight
  into ``results_dir/stdout`` and ``results_dir/stderr`` (nothing is held whole in
  memory), hashed on the way, and their tails kept for the result.
- The timeout, ``cancel`` and cancellation of the calling trio task all SIGKILL the
  container; ``run`` then waits (bounded) for the output to be flushed. The timeout
  counts from the container's creation: an image pull is bounded separately.
- The container is always removed (with its anonymous volumes), whatever happened.
  Containers carry the labels ``bacnode.job``, ``bacnode.execution`` and
  ``bacnode.node``, so ``cleanup_orphans`` can find what a crashed daemon left behind.
- The Engine API is spoken over dockerd's socket with the standard library
  (``node.executor.docker_socket``); docker-py only pulls images, and speaks for the rest
  when dockerd is behind TLS or ssh.

Threads: the Engine API calls block, so short ones run in worker threads under a
``CapacityLimiter`` (``api_threads``); each running container additionally has one
thread that streams its output and then waits for its exit. Nothing blocks the loop.

Invariant between those two sides: a container is started only under ``_Run.lock``
and only if no kill was requested, and a kill is sent only under the same lock and
only to a started container; so a kill can never be lost to a container that starts
just after it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from protocol.quantities import format_bytes

from .base import (
    OUTPUTS_TARGET,
    STDERR_FILE,
    STDOUT_FILE,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    StreamCapture,
    prepare_results_dir,
    write_exit_code,
)
from .docker_socket import STDERR, STDOUT, EngineError, EngineSocket, found

__all__ = [
    "DEFAULT_PIDS_LIMIT",
    "DEFAULT_PULL_TIMEOUT",
    "LABEL_EXECUTION",
    "LABEL_JOB",
    "LABEL_NODE",
    "DockerExecutor",
]

log = logging.getLogger("bacnode.executor.docker")

T = TypeVar("T")

LABEL_JOB = "bacnode.job"
LABEL_EXECUTION = "bacnode.execution"
LABEL_NODE = "bacnode.node"
DEFAULT_PIDS_LIMIT = 1024
#: Seconds a missing image may take to pull. Real images take minutes on slow links.
DEFAULT_PULL_TIMEOUT = 600.0
#: Socket timeout of short Docker API calls (create, start, kill, remove, inspect).
DEFAULT_API_TIMEOUT = 60.0
#: How long a killed container may take to die and flush its output, and a removal.
KILL_WAIT = 30.0
#: Force-removals tried when dockerd fails one with a 500 (see ``_remove``), and the pause.
REMOVE_ATTEMPTS = 3
REMOVE_RETRY_SECONDS = 0.2
#: How often a job with a disk limit has what it wrote measured.
DISK_POLL_SECONDS = 0.5
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


class _Run:
    """One execution in flight, shared by its trio task and its output thread."""

    def __init__(self, request: ExecutionRequest, token: trio.lowlevel.TrioToken) -> None:
        self.request = request
        self.scope = trio.CancelScope()  # cancelled by DockerExecutor.cancel
        self.token = token
        self.container_id: str | None = None
        self.lock = threading.Lock()
        self.kill_requested = False  # under lock
        self.started = False  # under lock
        self.exit_code: int | None = None
        self.stdout: StreamCapture | None = None
        self.stderr: StreamCapture | None = None
        self.failure: BaseException | None = None
        #: Bytes written when the job went over its disk limit and was killed.
        self.over_disk: int | None = None
        self.thread_done = trio.Event()
        #: What it speaks to dockerd through, once known (``cancel`` kills through it).
        self.engine: _Engine | None = None

    def notify_done(self) -> None:
        """Called from the output thread as its last act: wake the trio side."""
        try:
            self.token.run_sync_soon(self.thread_done.set)
        except trio.RunFinishedError:
            pass  # the daemon's trio run is gone; nobody is waiting


class DockerExecutor(Executor):
    """Runs ``docker`` engine tasks on the local Docker engine.

    ``node_id`` goes into every container's ``bacnode.node`` label. ``client`` is a
    ``docker.DockerClient`` to use (by default one is made from the environment, in a
    worker thread, on first use). ``full_network_mode`` is the Docker network mode of
    jobs with network ``Full``; never the default bridge on these machines.
    """

    engine_type = "docker"

    def __init__(
        self,
        node_id: str,
        *,
        client: Any = None,
        api_threads: int = 8,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
        api_timeout: float = DEFAULT_API_TIMEOUT,
        full_network_mode: str = "host",
    ) -> None:
        if not node_id:
            raise ValueError("DockerExecutor needs the node's ID for its container labels")
        self.node_id = node_id
        self.pids_limit = pids_limit
        self.pull_timeout = pull_timeout
        self.api_timeout = api_timeout
        self.full_network_mode = full_network_mode
        self._client = client
        self._client_lock = trio.Lock()
        #: dockerd's socket, when it is a plain one (see ``docker_socket``); else every
        #: call goes through docker-py.
        self._socket = None if client is not None else EngineSocket.from_env(
            timeout=api_timeout)
        self._api_limiter = trio.CapacityLimiter(api_threads)
        self._runs: dict[str, _Run] = {}

    # -- the Executor interface ------------------------------------------------------

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run the task in a new container; see ``node.executor.base`` for the contract."""
        began = time.monotonic()
        if request.execution_id in self._runs:
            raise ValueError(f"execution {request.execution_id} is already running here")
        run = _Run(request, trio.lowlevel.current_trio_token())
        self._runs[request.execution_id] = run
        try:
            return await self._execute(run, began)
        finally:
            del self._runs[request.execution_id]

    async def cancel(self, execution_id: str) -> bool:
        """Kill that execution's container (if started) and make its ``run`` return.

        Returns once the kill was sent; False if the execution is not running here.
        """
        run = self._runs.get(execution_id)
        if run is None:
            return False
        run.scope.cancel()
        if run.container_id is not None and run.engine is not None:
            await self._kill(run.engine, run)
        return True

    async def is_installed(self) -> bool:
        """Whether a Docker engine answers."""
        return await self.unavailable_reason() is None

    async def unavailable_reason(self) -> str | None:
        try:
            engine = await self._engine()
            await self._api(engine.ping)
        except Exception as exc:  # EngineError, and docker-py's connecting errors
            log.debug("Docker engine unavailable: %s", exc)
            return f"dockerd does not answer ({_first_line(exc)})"
        return None

    async def cleanup_orphans(self) -> int:
        """Remove every container labelled with this node that no ``run`` here owns.

        Meant for start-up, after a crash; returns how many containers it removed.
        Raises ``EngineError`` (or docker-py's errors) if the engine cannot be reached.
        """
        engine = await self._engine()
        labelled = await self._api(engine.containers, f"{LABEL_NODE}={self.node_id}")
        live = {run.container_id for run in self._runs.values()}
        removed = 0
        for container in labelled:
            if container["Id"] in live:
                continue
            if await self._remove(engine, container["Id"]):
                log.info(
                    "removed orphaned container %s (execution %s)",
                    container["Id"][:12],
                    (container.get("Labels") or {}).get(LABEL_EXECUTION, "?"),
                )
                removed += 1
        return removed

    # -- one execution -----------------------------------------------------------------

    async def _execute(self, run: _Run, began: float) -> ExecutionResult:
        request = run.request
        image = request.engine.image

        def failed(error: str) -> ExecutionResult:
            return ExecutionResult(exit_code=None, error=error, duration=time.monotonic() - began)

        if request.resources.gpu:
            return failed(
                f"the job asks for {request.resources.gpu} GPU(s) but this node's Docker "
                "executor offers none; run it on a node that advertises GPUs"
            )
        for host, target in request.inputs:
            if not host.exists():
                return failed(f"input for {target} was not staged: {host} does not exist")
        await trio.to_thread.run_sync(
            prepare_results_dir, request.results_dir, limiter=self._api_limiter
        )
        try:
            engine = run.engine = await self._engine()
        except Exception as exc:  # docker-py's connecting errors
            return failed(f"the Docker engine is not reachable: {_explain(exc)}")

        timed_out = False
        try:
            with run.scope:
                config = _container_config(request, self.node_id, self.pids_limit,
                                           self.full_network_mode)
                name = _container_name(request)
                try:
                    # Created first and pulled only if dockerd has no such image, as `docker
                    # run` does: a node runs the images it has far more often than it pulls,
                    # and asking first cost an inspect (a thread hop and a call) every job.
                    try:
                        run.container_id = await self._api(engine.create, config, name)
                    except EngineError as exc:
                        if exc.status != 404:
                            raise
                        problem = await self._ensure_image(engine, image)
                        if problem is not None:
                            return failed(problem)
                        run.container_id = await self._api(engine.create, config, name)
                except EngineError as exc:
                    if exc.status is None:
                        return failed(f"the Docker engine is not reachable: {exc}")
                    return failed(f"Docker refused to create the container: {exc}")
                with trio.move_on_after(request.timeout_seconds or math.inf) as deadline:
                    await self._supervise(engine, run)
                timed_out = deadline.cancelled_caught
        finally:
            if run.container_id is not None:
                with trio.CancelScope(shield=True):
                    await self._remove(engine, run.container_id)
        cancelled = run.scope.cancelled_caught
        return await self._result(run, began, timed_out=timed_out, cancelled=cancelled)

    async def _result(
        self, run: _Run, began: float, *, timed_out: bool, cancelled: bool
    ) -> ExecutionResult:
        request = run.request
        error: str | None = None
        if run.over_disk is not None:
            error = (f"the job wrote more than its disk limit of "
                     f"{format_bytes(request.resources.disk)} (at least "
                     f"{format_bytes(run.over_disk)} in /outputs, stdout and stderr) and was "
                     "killed; ask for more with --disk")
        elif timed_out:
            error = f"execution timed out after {request.timeout_seconds}s and was killed"
        elif cancelled:
            error = (
                "execution was cancelled and its container killed"
                if run.started
                else "execution was cancelled before its container started"
            )
        elif run.failure is not None:
            if not run.started:
                error = f"Docker could not start the container: {_explain(run.failure)}"
            else:
                error = f"lost track of the running container: {_explain(run.failure)}"
        if run.exit_code is not None:
            await trio.to_thread.run_sync(
                write_exit_code, request.results_dir, run.exit_code, limiter=self._api_limiter
            )
        out, err = run.stdout, run.stderr
        return ExecutionResult(
            exit_code=run.exit_code,
            stdout_tail=out.tail() if out else "",
            stderr_tail=err.tail() if err else "",
            stdout_truncated=out.truncated if out else False,
            stderr_truncated=err.truncated if err else False,
            stdout_bytes=out.size if out else 0,
            stderr_bytes=err.size if err else 0,
            **({"stdout_sha256": out.sha256} if out else {}),
            **({"stderr_sha256": err.sha256} if err else {}),
            error=error,
            timed_out=timed_out,
            cancelled=cancelled,
            duration=time.monotonic() - began,
        )

    async def _supervise(self, engine: _Engine, run: _Run) -> None:
        """Start the container and wait for it to exit; kill it if cancelled meanwhile.

        The output thread is started directly (no checkpoint in between), so when this
        is cancelled the thread is known to exist and ``thread_done`` will be set.
        """

        def work() -> None:
            try:
                self._attach_start_wait(engine, run)
            except BaseException as exc:  # reported to the trio side through run.failure
                run.failure = exc

        trio.lowlevel.start_thread_soon(
            work,
            lambda _outcome: run.notify_done(),
            name=f"bacnode docker {run.request.execution_id}",
        )
        async with trio.open_nursery() as watchers:
            if run.request.resources.disk:
                watchers.start_soon(self._watch_disk, engine, run)
            # Caught here, in the nursery's body: out of it, the nursery would raise the
            # Cancelled inside an exception group, which ``except trio.Cancelled`` misses.
            try:
                await run.thread_done.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await self._kill(engine, run)
                    with trio.move_on_after(KILL_WAIT):
                        await run.thread_done.wait()
                raise
            watchers.cancel_scope.cancel()
        if run.request.resources.disk and run.over_disk is None:
            # A job that wrote it all between two looks is over the limit all the same.
            written = await self._written(run)
            if written > run.request.resources.disk:
                run.over_disk = written

    async def _watch_disk(self, engine: _Engine, run: _Run) -> None:
        """Kill the container once what the job wrote (its outputs, stdout and stderr) is
        over its disk limit. Polled: a fast writer may overshoot by what it writes between
        two looks."""
        limit = run.request.resources.disk
        while True:
            await trio.sleep(DISK_POLL_SECONDS)
            written = await self._written(run)
            if written > limit:
                run.over_disk = written
                await self._kill(engine, run)
                return

    @staticmethod
    async def _written(run: _Run) -> int:
        written = await trio.to_thread.run_sync(_tree_bytes, run.request.outputs_dir)
        return written + sum(capture.size for capture in (run.stdout, run.stderr) if capture)

    @staticmethod
    def _attach_start_wait(engine: _Engine, run: _Run) -> None:
        """In the output thread: attach, start, stream output to the files, wait for exit."""
        request = run.request
        container_id = run.container_id
        assert container_id is not None
        run.stdout = StreamCapture(request.results_dir / STDOUT_FILE, request.stdout_tail_bytes)
        run.stderr = StreamCapture(request.results_dir / STDERR_FILE, request.stderr_tail_bytes)
        with run.stdout, run.stderr:
            # Attach before starting, so not a byte of output is missed.
            output = engine.attach(container_id)
            try:
                with run.lock:
                    if run.kill_requested:
                        return
                    engine.start(container_id)
                    run.started = True
                for stream, chunk in output:
                    if stream == STDOUT:
                        run.stdout.write(chunk)
                    elif stream == STDERR:
                        run.stderr.write(chunk)
            finally:
                output.close()
        # The streams close when the last holder of the container's stdio is gone, which
        # may be before the main process exits; wait for the exit itself (no timeout).
        run.exit_code = engine.wait(container_id)

    # -- Docker calls ------------------------------------------------------------------

    async def _engine(self) -> _Engine:
        """dockerd's plain socket, else docker-py (its client made on first use)."""
        if self._socket is not None:
            return self._socket
        return _DockerPyEngine(await self._docker())

    async def _docker(self) -> Any:
        """The docker-py client, made on first use in a worker thread."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._api(self._connect)
        return self._client

    def _connect(self) -> Any:
        import docker

        client = docker.from_env(timeout=int(self.api_timeout), max_pool_size=64)
        client.ping()
        return client

    async def _api(
        self, fn: Callable[..., T], *args: Any, abandon: bool = False, **kwargs: Any
    ) -> T:
        """Call blocking ``fn`` in a worker thread under the API limiter."""
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs),
            limiter=self._api_limiter,
            abandon_on_cancel=abandon,
        )

    async def _ensure_image(self, engine: _Engine, image: str) -> str | None:
        """Pull ``image`` if it is missing; None when it is there, else why it is not."""
        try:
            if await self._api(engine.image_present, image):
                return None
        except EngineError as exc:
            if exc.status is None:
                return f"the Docker engine is not reachable: {exc}"
            return f"could not inspect image {image!r}: {exc}"
        log.info("pulling image %s", image)
        try:
            client = await self._docker()
        except Exception as exc:  # docker-py's connecting errors
            return f"the Docker engine is not reachable: {_explain(exc)}"
        # A hung registry must not hold the execution: give up on the thread at the
        # deadline (it ends when dockerd gives up; pulls have no socket timeout).
        with trio.move_on_after(self.pull_timeout) as deadline:
            reason = await trio.to_thread.run_sync(
                self._pull, client, image, abandon_on_cancel=True
            )
        if deadline.cancelled_caught:
            reason = f"the pull did not finish within {self.pull_timeout:g}s"
        if reason is None:
            return None
        return (
            f"image {image!r} not found locally and could not be pulled: {reason}; "
            "build or load it on this node, or pick an image the node has"
        )

    @staticmethod
    def _pull(client: Any, image: str) -> str | None:
        """Pull in a worker thread; None on success, else the registry's or Docker's reason."""
        import docker.errors

        try:
            for event in client.api.pull(image, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    detail = event.get("errorDetail") or {}
                    return str(detail.get("message") or event["error"])
            client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return "the pull finished but the image is still missing"
        except docker.errors.APIError as exc:
            return _explain(exc)
        except Exception as exc:  # requests' connection errors and the like
            return _explain(exc)
        return None

    async def _kill(self, engine: _Engine, run: _Run) -> None:
        """SIGKILL the run's container if it started; stop it from starting otherwise."""

        def kill() -> None:
            with run.lock:
                run.kill_requested = True
                if not run.started:
                    return
            assert run.container_id is not None
            try:
                engine.kill(run.container_id)
            except EngineError as exc:
                if exc.status not in (404, 409):  # gone, or not running (any more)
                    log.warning("could not kill container %s: %s", run.container_id, exc)

        await self._api(kill)

    async def _remove(self, engine: _Engine, container_id: str) -> bool:
        """Force-remove a container and its anonymous volumes; False if it was not there."""
        with trio.move_on_after(KILL_WAIT):
            for attempt in range(REMOVE_ATTEMPTS):
                try:
                    await self._api(engine.remove, container_id, abandon=True)
                    return True
                except EngineError as exc:
                    if exc.status is None:
                        raise  # dockerd does not answer
                    error = exc
                if error.status == 409:  # removal already in progress
                    return True
                if error.status == 404:
                    return False
                # dockerd answers 500 ("Could not kill running container ..., cannot
                # remove - Container ... is not running") when the container exits while
                # it force-removes it; asked again, it removes it.
                if error.status != 500 or attempt == REMOVE_ATTEMPTS - 1:
                    log.warning("could not remove container %s: %s", container_id[:12], error)
                    return False
                await trio.sleep(REMOVE_RETRY_SECONDS)
        log.warning("removing container %s took more than %gs", container_id[:12], KILL_WAIT)
        return False


def _container_name(request: ExecutionRequest) -> str:
    return f"bacnode-{_NAME_UNSAFE.sub('-', request.execution_id)}"


def _container_config(request: ExecutionRequest, node_id: str, pids_limit: int,
                      full_network_mode: str) -> dict[str, Any]:
    """The Engine API's container config (``POST /containers/create``) for ``request``."""
    engine = request.engine
    resources = request.resources
    mounts = [{"Target": target, "Source": str(host.resolve()), "Type": "bind",
               "ReadOnly": True} for host, target in request.inputs]
    mounts.append({"Target": OUTPUTS_TARGET, "Source": str(request.outputs_dir.resolve()),
                   "Type": "bind", "ReadOnly": False})
    networked = request.network == "Full"
    host_config: dict[str, Any] = {
        "Mounts": mounts,
        "NetworkMode": full_network_mode if networked else "none",
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Privileged": False,
        "PidsLimit": pids_limit,
        "LogConfig": {"Type": "none", "Config": {}},
    }
    if resources.cpu_milli:
        host_config["NanoCpus"] = resources.cpu_milli * 1_000_000
    if resources.memory:
        host_config["Memory"] = host_config["MemorySwap"] = resources.memory
    config: dict[str, Any] = {
        "Image": engine.image,
        "Env": [*engine.environment_variables, *request.task_env],
        "Labels": {LABEL_JOB: request.job_id, LABEL_EXECUTION: request.execution_id,
                   LABEL_NODE: node_id},
        "HostConfig": host_config,
        "NetworkDisabled": not networked,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
    }
    if engine.parameters:
        config["Cmd"] = list(engine.parameters)
    if engine.entrypoint:
        config["Entrypoint"] = list(engine.entrypoint)
    if engine.working_directory:
        config["WorkingDir"] = engine.working_directory
    return config


class _Engine(Protocol):
    """The Engine API calls the executor makes; blocking, each raises ``EngineError``."""

    def ping(self) -> None: ...
    def containers(self, label: str) -> list[dict[str, Any]]: ...
    def image_present(self, image: str) -> bool: ...
    def create(self, config: Mapping[str, Any], name: str) -> str: ...
    def attach(self, container_id: str) -> _Output: ...
    def start(self, container_id: str) -> None: ...
    def wait(self, container_id: str) -> int: ...
    def kill(self, container_id: str) -> None: ...
    def remove(self, container_id: str) -> None: ...


class _Output(Protocol):
    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...
    def close(self) -> None: ...


class _DockerPyEngine:
    """The same calls through docker-py, for a dockerd behind TLS or ssh."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import docker.errors

        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError as exc:
            # 0: an answer without a status, which must not read as "unreachable" (None)
            raise EngineError(exc.status_code or 0, _explain(exc)) from exc
        except Exception as exc:  # requests' connection errors and the like
            raise EngineError(None, _explain(exc)) from exc

    def ping(self) -> None:
        self._call(self.client.ping)

    def containers(self, label: str) -> list[dict[str, Any]]:
        return self._call(self.client.api.containers, all=True, filters={"label": label})

    def image_present(self, image: str) -> bool:
        return found(functools.partial(self._call, self.client.api.inspect_image, image))

    def create(self, config: Mapping[str, Any], name: str) -> str:
        created = self._call(self.client.api.create_container_from_config, dict(config), name)
        return str(created["Id"])

    def attach(self, container_id: str) -> _Output:
        stream = self._call(self.client.api.attach, container_id, stdout=True, stderr=True,
                            stream=True, logs=False, demux=True)
        return _DemuxedOutput(stream)

    def start(self, container_id: str) -> None:
        self._call(self.client.api.start, container_id)

    def wait(self, container_id: str) -> int:
        return int(self._call(self.client.api.wait, container_id, timeout=None)["StatusCode"])

    def kill(self, container_id: str) -> None:
        self._call(self.client.api.kill, container_id)

    def remove(self, container_id: str) -> None:
        self._call(self.client.api.remove_container, container_id, force=True, v=True)


class _DemuxedOutput:
    """docker-py's ``(stdout, stderr)`` chunks as ``(stream, bytes)`` frames."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for out_chunk, err_chunk in self._stream:
            if out_chunk:
                yield STDOUT, out_chunk
            if err_chunk:
                yield STDERR, err_chunk

    def close(self) -> None:
        self._stream.close()


def _tree_bytes(root: Path) -> int:
    """Bytes in the regular files under ``root`` (links not followed), as they would be
    published."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                status = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                total += status.st_size  # as published: a sparse file counts in full
    return total


def _explain(exc: BaseException) -> str:
    """Docker's own words for an API error, else the exception's message."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        return str(explanation).strip()
    return str(exc) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
