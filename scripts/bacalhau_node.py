"""The real Bacalhau v1.9.3 as a single loopback node, for benchmarks that compare bacnode with it.

Two context managers::

    from scripts.bacalhau_node import bacalhau_node, local_registry

    with local_registry() as image, bacalhau_node(tmpdir) as node:
        done = node.cli("docker", "run", "--wait", "--id-only", image, "--", "true")
        job_id = done.stdout.strip().splitlines()[-1]

:func:`local_registry` exists because Bacalhau's compute node only bids on a local image that
has a registry digest (``RepoDigests``): otherwise it asks the image's registry for the manifest,
and there is no internet here. ``busybox:latest`` is made by ``docker import``, so it has none;
pushing it to a CNCF Distribution registry on 127.0.0.1 gives ``127.0.0.1:PORT/busybox:bench``
one, and from then on Bacalhau resolves and runs it without any network traffic.

:func:`bacalhau_node` runs ``bacalhau serve --orchestrator --compute`` with every listener on
127.0.0.1 (API, NATS) and with what would phone home or listen on all interfaces switched off
(update checks, analytics, the Web UI, the "local" result publisher that binds 0.0.0.0:6001).

A job without ``--network`` runs with no network at all (its container has only ``lo``), which
is what dockerd here (``--bridge=none``) allows; ``--network Bridge`` cannot work (not tried),
as there is no ``bridge`` network. Bacalhau v1.9.3 needs no other outbound connection to run
such a job: it talks to the docker socket and to its own loopback API and NATS ports only.

One thing cannot be configured away: at start-up Bacalhau checks that its NATS port is free by
listening on ``[::]:PORT`` and closing it at once (pkg/nats/server.go, network.IsPortOpen); the
real listeners are all on 127.0.0.1.

Every process started here gets ``AWS_EC2_METADATA_DISABLED=true`` (Bacalhau's S3 code loads the
AWS default config, which would otherwise probe 169.254.169.254) and OpenTelemetry switched off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.services import (
    BUSYBOX_TAG,
    ServiceError,
    bacalhau_env,
    build_busybox_image,
    docker_ping,
    ensure_dockerd,
    find_bacalhau,
    free_port,
)
from scripts.services.common import _log_tail
from scripts.services.gobuild import _go_build_module, _install_checked

__all__ = [
    "BENCH_IMAGE_NAME",
    "BacalhauNode",
    "REGISTRY_PATH",
    "REGISTRY_VERSION",
    "bacalhau_node",
    "ensure_registry_binary",
    "local_registry",
    "registry_version",
]

LOOPBACK = "127.0.0.1"

REGISTRY_VERSION = "3.0.0"
REGISTRY_MODULE = "github.com/distribution/distribution/v3"
#: Where the registry binary is built; ``$BACNODE_REGISTRY`` overrides.
REGISTRY_PATH = f"/usr/local/lib/bacnode/registry-v{REGISTRY_VERSION}/registry"
REGISTRY_ENV = "BACNODE_REGISTRY"
#: The repository and tag busybox is pushed as (``127.0.0.1:PORT/`` is prepended).
BENCH_IMAGE_NAME = "busybox:bench"

#: Docker label Bacalhau's docker executor puts on its containers and networks; the value is
#: ``bacalhau-<node name>`` (pkg/node/factories.go), so one node's leftovers can be told apart.
_EXECUTOR_LABEL = "bacalhau-executor"

#: Added to the environment of everything started here: nothing may reach the internet.
_OFFLINE_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",  # AWS SDK: no instance-metadata probe (169.254.169.254)
    "OTEL_SDK_DISABLED": "true",
    "OTEL_TRACES_EXPORTER": "none",  # the registry's autoexport would send OTLP to :4318
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def _offline_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` without inherited OpenTelemetry/registry overrides, plus :data:`_OFFLINE_ENV`."""
    env = {
        k: v for k, v in base.items()
        if not k.startswith(("OTEL_", "REGISTRY_"))  # REGISTRY_* would override its config
    }
    env.update(_OFFLINE_ENV)
    return env


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores ``http_proxy``: every URL polled here is on loopback."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """``(status, body)`` of a GET on ``url``, or None if nothing answers."""
    try:
        with _no_proxy_opener().open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None


def _stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` seconds, then reap it.

    Processes started here run in their own session, so the group is theirs alone.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _docker(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    """Run the ``docker`` CLI; its stdout, or ServiceError (when ``check``) if it fails."""
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, env=_offline_env(dict(os.environ)),
        )
    except subprocess.TimeoutExpired as exc:
        if check:
            raise ServiceError(f"docker {' '.join(args)} timed out after {timeout:.0f}s") from exc
        return ""
    if check and done.returncode != 0:
        raise ServiceError(
            f"docker {' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def _ensure_docker() -> None:
    """dockerd must answer: the registry push and every Bacalhau job go through it."""
    if not docker_ping():
        ensure_dockerd()


# --------------------------------------------------------------------------------------------
# CNCF Distribution registry


def registry_path() -> Path:
    """Where the registry binary is expected: ``$BACNODE_REGISTRY``, else the default."""
    return Path(os.environ.get(REGISTRY_ENV) or REGISTRY_PATH)


def registry_version(binary: Path | str) -> str | None:
    """The version ``binary --version`` reports (without the leading v), or None."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL, env=_offline_env(dict(os.environ)),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # "registry github.com/distribution/distribution/v3 v3.0.0"
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        return None
    return words[-1].removeprefix("v").removesuffix("+unknown")


def _build_registry(target: Path) -> None:
    """``go build`` the registry of :data:`REGISTRY_MODULE` into ``_partial(target)``.

    Its module zip keeps only ``vendor/modules.txt`` of its vendor directory, so Go's automatic
    ``-mod=vendor`` fails and ``-mod=mod`` is needed; the dependencies then come from the Go
    module proxy (about 2 min 40 s cold on 2 cores).
    """
    _go_build_module(REGISTRY_MODULE, REGISTRY_VERSION, "./cmd/registry", target,
                     env=dict(os.environ), goflags="-mod=mod",
                     ldflags=f"-s -w -X {REGISTRY_MODULE}/version.version=v{REGISTRY_VERSION}")


def ensure_registry_binary() -> Path:
    """The CNCF Distribution registry v3.0.0 binary, built first if it is not installed yet.

    A file lock beside the binary keeps two concurrent benchmark runs from building at once.
    """
    target = registry_path()
    if target.is_file() and registry_version(target) == REGISTRY_VERSION:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target.is_file() and registry_version(target) == REGISTRY_VERSION):
            _build_registry(target)
            _install_checked(target, "registry", REGISTRY_VERSION, registry_version)
    return target


def _registry_config(root: Path, port: int) -> str:
    """A minimal registry config: files under ``root``, HTTP on 127.0.0.1:``port`` only.

    No debug server, no notifications, no proxy (pull-through) mode, no upload purging
    goroutine; the registry has no other outbound connections.
    """
    return (
        "version: 0.1\n"
        "log:\n"
        "  level: warn\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {root}\n"
        "  maintenance:\n"
        "    uploadpurging:\n"
        "      enabled: false\n"
        "http:\n"
        f"  addr: {LOOPBACK}:{port}\n"
    )


@contextlib.contextmanager
def local_registry(timeout: float = 60.0) -> Iterator[str]:
    """Run a registry on a free loopback port holding busybox; yield its reference there,
    ``127.0.0.1:PORT/busybox:bench``.

    The yielded reference has a ``RepoDigests`` entry in dockerd, which is what makes Bacalhau
    bid on it without asking a remote registry. On exit the registry is stopped, its
    temporary storage removed and the tag dropped from dockerd (``busybox:latest`` stays).
    """
    binary = ensure_registry_binary()
    _ensure_docker()
    build_busybox_image(BUSYBOX_TAG)
    tmp = Path(tempfile.mkdtemp(prefix="bacnode-registry-"))
    proc: subprocess.Popen[bytes] | None = None
    image = ""
    try:
        port = free_port(LOOPBACK)
        config = tmp / "config.yml"
        config.write_text(_registry_config(tmp / "storage", port))
        log_path = tmp / "registry.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(binary), "serve", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_offline_env(dict(os.environ)), cwd=tmp, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            answer = _http_status(f"http://{LOOPBACK}:{port}/v2/")
            if answer is not None and answer[0] == 200:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with code {proc.returncode}" if proc.poll() is not None
                         else f"did not answer within {timeout:.0f}s")
                raise ServiceError(f"the registry {state}; its log:\n{_log_tail(log_path)}")
            time.sleep(0.05)
        image = f"{LOOPBACK}:{port}/{BENCH_IMAGE_NAME}"
        _docker("tag", BUSYBOX_TAG, image)
        _docker("push", "--quiet", image, timeout=timeout)
        digests = json.loads(
            _docker("image", "inspect", "--format", "{{json .RepoDigests}}", image)
        ) or []
        if not any(d.startswith(f"{LOOPBACK}:{port}/") for d in digests):
            raise ServiceError(f"pushed {image} but dockerd lists no digest for it: {digests}")
        yield image
    finally:
        if image:
            # Drop the tag and the digest reference; the image stays as busybox:latest.
            refs = _docker("image", "inspect", "--format", "{{json .RepoDigests}}", image,
                           check=False).strip()
            own = [d for d in (json.loads(refs) if refs else []) or []
                   if d.startswith(image.rsplit("/", 1)[0] + "/")]
            _docker("image", "rm", "--no-prune", image, *own, check=False)
        if proc is not None:
            _stop_process(proc, grace=10.0)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Bacalhau node


@dataclass
class BacalhauNode:
    """A running ``bacalhau serve`` (orchestrator + compute) and how to talk to it."""

    name: str
    api_port: int
    orchestrator_port: int
    process: subprocess.Popen[bytes]
    #: The environment for the ``bacalhau`` CLI against this node (its own client repo).
    env: dict[str, str]
    binary: Path
    workdir: Path
    config_path: Path
    log_path: Path
    #: Seconds from spawning ``bacalhau serve`` to the compute node being connected.
    startup_seconds: float = 0.0
    command: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The ``bacalhau serve`` process id."""
        return self.process.pid

    @property
    def api_url(self) -> str:
        """Base URL of the node's REST API."""
        return f"http://{LOOPBACK}:{self.api_port}"

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``bacalhau ARGS...`` against this node (text output captured, never raises on
        a non-zero exit; raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds)."""
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=timeout,
            env=self.env, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )

    def rss_kib(self) -> int | None:
        """``VmRSS`` of the serve process in KiB (None once it has exited)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the serve log, for error messages."""
        return _log_tail(self.log_path, lines)


def _serve_config(data_dir: Path, api_port: int, orchestrator_port: int) -> dict[str, Any]:
    """The ``bacalhau serve`` config: loopback only, offline, resources for small jobs.

    - API and NATS (the orchestrator) on 127.0.0.1; ``Compute.Orchestrators`` names that NATS
      port explicitly, since the default (nats://127.0.0.1:4222) could be someone else's.
    - ``Publishers.Disabled: [local]``: the local publisher always listens on 0.0.0.0:6001
      (pkg/publisher/local/server.go), and the benchmark publishes nothing.
    - Compute capacity is Bacalhau's default (80 % of CPU, memory and disk); jobs default to
      500m CPU and 512 MiB, plenty for busybox.
    - A 5 s heartbeat (default 15 s) only makes the node list show it sooner; it does not
      change how jobs are scheduled.
    """
    return {
        "DataDir": str(data_dir),
        "API": {"Host": LOOPBACK, "Port": api_port},
        "Orchestrator": {
            "Enabled": True,
            "Host": LOOPBACK,
            "Port": orchestrator_port,
            "Advertise": f"{LOOPBACK}:{orchestrator_port}",
        },
        "Compute": {
            "Enabled": True,
            "Orchestrators": [f"nats://{LOOPBACK}:{orchestrator_port}"],
            "Network": {"AdvertisedAddress": LOOPBACK},
            "Heartbeat": {"Interval": "5s"},
        },
        "Publishers": {"Disabled": ["local"]},
        "WebUI": {"Enabled": False},
        "UpdateConfig": {"Interval": "0s"},
        "DisableAnalytics": True,
        "Logging": {"Level": "info", "Mode": "default"},
    }


def _connected_compute(done: subprocess.CompletedProcess[str], name: str) -> bool:
    """Whether ``bacalhau node list --output json`` lists ``name`` as a connected compute
    node that is approved (so the orchestrator will ask it to bid)."""
    if done.returncode != 0:
        return False
    try:
        nodes = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False
    for node in nodes or []:
        info = node.get("Info") or {}
        if info.get("NodeID") != name:
            continue
        connected = str((node.get("ConnectionState") or {}).get("Status", "")).upper()
        approval = str(node.get("Membership", "")).upper()
        compute = info.get("NodeType") in ("Compute", "Hybrid")
        return connected == "CONNECTED" and approval == "APPROVED" and compute
    return False


def _remove_leftovers(name: str) -> None:
    """Remove the containers and networks Bacalhau's docker executor made for node ``name``."""
    label = f"label={_EXECUTOR_LABEL}=bacalhau-{name}"
    containers = _docker("ps", "-aq", "--filter", label, check=False).split()
    if containers:
        _docker("rm", "-f", *containers, check=False)
    networks = _docker("network", "ls", "-q", "--filter", label, check=False).split()
    if networks:
        _docker("network", "rm", *networks, check=False)


@contextlib.contextmanager
def bacalhau_node(workdir: Path, *, timeout: float = 90.0,
                  extra_args: Sequence[str] = ()) -> Iterator[BacalhauNode]:
    """Run ``bacalhau serve --orchestrator --compute`` in ``workdir``; yield it once it can
    take jobs.

    Ready means: ``GET /api/v1/agent/alive`` answers and ``bacalhau node list`` shows this node
    as a connected, approved compute node. The node gets its own name
    (``bacnode-bench-<hex>``) so its containers are known by their label. On exit the node gets
    SIGTERM, then SIGKILL after 20 s, and every container or network it left is removed.
    """
    binary = find_bacalhau()
    _ensure_docker()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"bacnode-bench-{os.urandom(4).hex()}"
    node_home = workdir / "node"
    cli_home = workdir / "cli"
    node_home.mkdir(exist_ok=True)
    cli_home.mkdir(exist_ok=True)
    api_port = free_port(LOOPBACK)
    orchestrator_port = free_port(LOOPBACK)
    config_path = workdir / "bacalhau-serve.yaml"
    # JSON is valid YAML; viper picks the YAML decoder from the .yaml suffix.
    config_path.write_text(json.dumps(
        _serve_config(node_home / ".bacalhau", api_port, orchestrator_port), indent=2) + "\n")
    serve_env = _offline_env(bacalhau_env(node_home))
    cli_env = _offline_env(bacalhau_env(cli_home, {
        "BACALHAU_API_HOST": LOOPBACK,
        "BACALHAU_API_PORT": str(api_port),
    }))
    log_path = workdir / "serve.log"
    command = [str(binary), "serve", "--orchestrator", "--compute", "--config", str(config_path),
               "--name", name, *extra_args]
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=serve_env, cwd=workdir, start_new_session=True,
        )
    node = BacalhauNode(
        name=name, api_port=api_port, orchestrator_port=orchestrator_port, process=proc,
        env=cli_env, binary=binary, workdir=workdir, config_path=config_path,
        log_path=log_path, command=command,
    )
    try:
        deadline = started + timeout

        def check_alive(what: str) -> None:
            if proc.poll() is not None:
                raise ServiceError(f"bacalhau serve exited with code {proc.returncode} "
                                   f"{what}; its log:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"bacalhau serve did not become ready ({what}) within "
                                   f"{timeout:.0f}s; its log:\n{node.log_tail()}")

        while True:
            answer = _http_status(f"{node.api_url}/api/v1/agent/alive")
            if answer is not None and answer[0] == 200:
                break
            check_alive("before its API answered")
            time.sleep(0.1)
        while True:
            left = max(5.0, deadline - time.monotonic())
            try:
                listed = node.cli("node", "list", "--output", "json", timeout=left)
            except subprocess.TimeoutExpired:
                listed = None
            if listed is not None and _connected_compute(listed, name):
                break
            check_alive("before it listed itself as a connected compute node")
            time.sleep(0.2)
        node.startup_seconds = time.monotonic() - started
        yield node
    finally:
        _stop_process(proc, grace=20.0)
        _remove_leftovers(name)
