"""Real ``bacnode serve`` daemons as subprocesses, for tests that need a mesh.

Every daemon listens on 127.0.0.1 only, runs with ``--no-mdns`` and half-second
heartbeats, and writes its stdout/stderr to files next to its data dir, so a
failing test can show what the daemon said.

Who cleans up: a ``DaemonPool`` owns every daemon it started and kills them all
when closed (the fixtures close it in their teardown, also on failure). As a
last resort each daemon asks the kernel to SIGKILL it when the process that
launched it dies, so even a killed pytest leaves nothing behind; that is why
daemons are only launched from the main thread (the signal follows the
launching *thread*).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
HEARTBEAT_SECONDS = 0.5
#: With half-second heartbeats a loaded machine can delay one; three keep peers steady.
MISSED_HEARTBEATS = 3
#: Generous bounds for a loaded 2-core CI machine; tests wait on predicates, so
#: these only matter when something is wrong.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0

T = TypeVar("T")


class DaemonError(AssertionError):
    """A daemon did not start, answer or stop as expected; the message has its stderr."""


# -- waiting -----------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Exceptions from the predicate count as "not yet"; on timeout the last value
    or exception is in the ``AssertionError`` message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # "not yet"; reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what or predicate!r}; last: {last!r}"
            )
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """``wait_until`` for trio tests: the (blocking) predicate runs in a worker thread."""
    import trio

    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await trio.to_thread.run_sync(predicate)
            if last:
                return last
        except Exception as exc:  # "not yet"; reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what or predicate!r}; last: {last!r}"
            )
        await trio.sleep(interval)


# -- ports -------------------------------------------------------------------------------

#: Daemons listen on ports below the kernel's ephemeral range (32768-60999 by default).
#: A port from bind(0) is an ephemeral one, which the next outbound connection of any
#: process on the machine may take as its local port; a daemon then cannot listen on
#: it ("Address already in use"), as seen in full test runs. 22000-32000 also keeps
#: clear of the devnet's default ports (4200+i, 21300+i).
PORT_RANGE = (22000, 32000)
_reserved_ports: set[int] = set()
_ports_lock = threading.Lock()
_random = random.Random()  # seeded per process: concurrent test runs pick differently


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    # A plain bind, as the daemon's own start-up check does (no SO_REUSEADDR).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports, free now and never handed out twice by this
    process, from ``PORT_RANGE`` (below the ephemeral range, see above)."""
    low, high = PORT_RANGE[0], min(PORT_RANGE[1], _ephemeral_low() - 1)
    ports: list[int] = []
    with _ports_lock:
        for _ in range(1000):
            if len(ports) == count:
                return ports
            port = _random.randint(low, high)
            if port not in _reserved_ports and _bindable(port):
                _reserved_ports.add(port)
                ports.append(port)
    raise DaemonError(f"no {count} free ports in {low}-{high} on {LOOPBACK}")


def free_port() -> int:
    return free_ports(1)[0]


# -- processes ---------------------------------------------------------------------------


def _find_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the pool still kills on teardown
        return None


# Looked up now, in the parent: between fork and exec the child must not dlopen (a
# lock held by another thread at fork time would never be released there).
_PRCTL = _find_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL this child when the launching thread exits (PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


#: boto3 asks the cloud metadata address (169.254.169.254) for credentials when none are
#: configured; nothing here may send traffic off this machine.
NO_CLOUD_METADATA = {"AWS_EC2_METADATA_DISABLED": "true"}


#: Passed on, unlike the settings: a test run's daemons check their API answers
#: (``node.api_routing.CHECK_RESPONSES_ENV``).
KEPT_BACNODE_VARIABLES = frozenset({"BACNODE_API_CHECK_RESPONSES"})


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its ``BACNODE_*`` settings, which would override
    what a daemon is told on its command line."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BACNODE_") or k in KEPT_BACNODE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT dumps every thread's stack: see Daemon.stop
    env.update(NO_CLOUD_METADATA)
    env.update(extra or {})
    return env


def popen(args: list[str], *, stdout: Any, stderr: Any, env: dict[str, str] | None = None,
          ) -> subprocess.Popen:
    """Start a child of the test process that dies with it (see module docstring)."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=child_env(env),
        preexec_fn=_die_with_parent if on_main_thread else None,
    )


def in_netns(netns: str | None, command: list[str]) -> list[str]:
    """``command`` run inside network namespace ``netns`` (None: this one)."""
    return ["ip", "netns", "exec", netns, *command] if netns else command


def run_cli(*args: str, api_port: int | None = None, timeout: float = CLI_TIMEOUT,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            netns: str | None = None) -> subprocess.CompletedProcess:
    """``bacnode [--api-port P] ARGS`` as a user types it (in ``cwd``, else the checkout;
    inside ``netns`` if given); never raises on a non-zero exit."""
    command = in_netns(netns, [sys.executable, "-m", "cli.main"])
    if api_port is not None:
        command += ["--api-port", str(api_port)]
    return subprocess.run(
        [*command, *args], cwd=cwd or REPO_ROOT, env=child_env(env), capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Daemon:
    """One ``bacnode serve`` process, with its own data dir and loopback ports.

    Ports are chosen once, so ``restart()`` comes back on the same addresses.
    ``launch()`` returns at once; ``wait_ready()`` waits for the API. Between
    them other daemons can be launched, so several start in parallel.
    """

    def __init__(self, root: Path, name: str, *, peers: Iterable[str | Daemon] = (),
                 args: Iterable[str] = (), heartbeat: float = HEARTBEAT_SECONDS,
                 env: dict[str, str] | None = None,
                 module: Sequence[str] = ("node",), netns: str | None = None,
                 host: str = LOOPBACK) -> None:
        self.name = name
        #: A network namespace to run in (its API is on that namespace's loopback), and
        #: the address there to listen on.
        self.netns = netns
        self.host = host
        self.env = env
        self.data_dir = root / name
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.api_port = free_ports(2)
        self.peers = list(peers)
        self.args = list(args)
        self.heartbeat = heartbeat
        #: What runs ``serve``: ``python -m node``, or e.g. an adversary wrapping it.
        self.module = list(module)
        self.process: subprocess.Popen | None = None
        self.runs = 0
        self._peer_id: str | None = None

    # -- identity and addresses ------------------------------------------------------------

    @property
    def listen(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.port}"

    @property
    def peer_id(self) -> str:
        """The node's peer ID, read from its key file (created on demand by ``ensure_key``)."""
        if self._peer_id is None:
            self._peer_id = self.ensure_key()
        return self._peer_id

    @property
    def multiaddr(self) -> str:
        return f"{self.listen}/p2p/{self.peer_id}"

    def ensure_key(self) -> str:
        """Create (or read) the node key as the daemon would, so peers can name it before it
        starts; returns the peer ID."""
        from node.keys import load_or_create_key

        return load_or_create_key(self.data_dir / "node.key").peer_id

    @property
    def key_path(self) -> Path:
        return self.data_dir / "node.key"

    # -- process ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", *self.module, "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.listen,
            "--api-port", str(self.api_port),
            "--no-mdns",
            "--heartbeat-seconds", str(self.heartbeat),
            "--missed-heartbeats", str(MISSED_HEARTBEATS),
        ]
        for peer in self.peers:
            command += ["--peer", peer.multiaddr if isinstance(peer, Daemon) else peer]
        return command + self.args

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.runs}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.runs}.stderr"

    def launch(self) -> Daemon:
        if self.running:
            raise DaemonError(f"{self.name} is already running")
        self.runs += 1
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = popen(in_netns(self.netns, self.command()), stdout=out, stderr=err,
                                 env=self.env)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Daemon:
        """Wait until the API answers; fail at once, with its stderr, if the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise DaemonError(f"{self.name} exited with {self.returncode} before its API "
                                  f"answered:\n{self.stderr}")
            try:
                if self.api("/api/v1/agent/alive", timeout=2) == {"Status": "OK"}:
                    return self
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise DaemonError(f"{self.name}'s API did not answer within {timeout}s:\n"
                                  f"{self.stderr}")
            time.sleep(0.05)

    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        return self.launch().wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, as a service manager would; returns the exit code (SIGKILL after timeout)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.dump_and_kill()
                raise DaemonError(f"{self.name} ignored SIGTERM for {timeout}s:\n"
                                  f"{self.stderr}") from None
        return self.process.returncode

    def dump_and_kill(self) -> None:
        """SIGABRT (Python prints where every thread is to stderr), then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL: no goodbye to the mesh, as when a machine loses power."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def restart(self, timeout: float = START_TIMEOUT) -> Daemon:
        """Stop (SIGTERM) if running, then start again with the same data dir and ports."""
        if self.running:
            self.stop()
        return self.start(timeout)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    # -- API and CLI -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def api(self, path: str, timeout: float = 5.0) -> Any:
        """GET ``path`` (e.g. ``/api/v1/agent/mesh``) from the daemon's API, as JSON."""
        if self.netns is None:
            return http_get_json(self.api_url + path, timeout)
        fetch = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                 "sys.argv[1], timeout=float(sys.argv[2])).read().decode())")
        done = subprocess.run(in_netns(self.netns, [sys.executable, "-c", fetch,
                                                    self.api_url + path, str(timeout)]),
                              capture_output=True, text=True, timeout=timeout + 10)
        if done.returncode != 0:
            raise OSError(f"GET {path} in {self.netns}: {done.stderr.strip()[-300:]}")
        return json.loads(done.stdout)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` (Prometheus' text format) as ``{'name{labels}': value}``."""
        with urllib.request.urlopen(f"{self.api_url}/metrics", timeout=10) as answer:
            kind = answer.headers["Content-Type"]
            if not kind.startswith("text/plain"):
                raise OSError(f"/metrics answered {kind}, not Prometheus' text format")
            text = answer.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess:
        """``bacnode --api-port <this daemon> ARGS``."""
        return run_cli(*args, api_port=self.api_port, timeout=timeout, cwd=cwd,
                       netns=self.netns)

    def node_list(self) -> dict[str, dict[str, Any]]:
        """``bacnode node list --output json`` through the real CLI, keyed by node ID."""
        result = self.cli("node", "list", "--output", "json")
        if result.returncode != 0:
            raise DaemonError(f"node list on {self.name} failed: {result.stderr}")
        return {state["Info"]["NodeID"]: state for state in json.loads(result.stdout)}

    def api_nodes(self) -> dict[str, dict[str, Any]]:
        """The same list straight from the API (no CLI start-up): for tight polling."""
        nodes = self.api("/api/v1/orchestrator/nodes")["Nodes"]
        return {state["Info"]["NodeID"]: state for state in nodes}

    def connections(self, *, via_cli: bool = False) -> dict[str, str]:
        """``{node ID: "CONNECTED" | "DISCONNECTED"}`` as this daemon reports them."""
        nodes = self.node_list() if via_cli else self.api_nodes()
        return {node_id: state["Connection"] for node_id, state in nodes.items()}

    def connected(self, *, via_cli: bool = False) -> set[str]:
        return {n for n, c in self.connections(via_cli=via_cli).items() if c == "CONNECTED"}

    def wait_connected(self, peer_ids: Iterable[str], *, via_cli: bool = False,
                       timeout: float = 20.0) -> dict[str, str]:
        """Wait until this daemon lists every one of ``peer_ids`` as CONNECTED.

        Waiting, rather than looking once, keeps a test steady on a loaded machine,
        where a heartbeat can come late and a peer flap to DISCONNECTED for a moment.
        Returns the connections seen last.
        """
        wanted = set(peer_ids)

        def check() -> dict[str, str]:
            connections = self.connections(via_cli=via_cli)
            ok = all(connections.get(peer_id) == "CONNECTED" for peer_id in wanted)
            return connections if ok else {}

        how = " (through the CLI)" if via_cli else ""
        return wait_until(check, timeout=timeout,
                          what=f"{self.name} to list {sorted(wanted)} as CONNECTED{how}")

    def mesh_stats(self) -> dict[str, Any]:
        return self.api("/api/v1/agent/mesh")

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<Daemon {self.name} api={self.api_port} p2p={self.port} {state}>"


class DaemonPool:
    """Creates daemons under one directory and kills every one of them on ``close()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemons: list[Daemon] = []
        self._names = 0

    def new(self, name: str | None = None, **kwargs: Any) -> Daemon:
        """A daemon not yet launched (``peers`` may name daemons of this pool)."""
        self._names += 1
        daemon = Daemon(self.root, name or f"node{self._names}", **kwargs)
        self.daemons.append(daemon)
        return daemon

    def start(self, name: str | None = None, **kwargs: Any) -> Daemon:
        return self.new(name, **kwargs).start()

    def start_all(self, daemons: Iterable[Daemon]) -> list[Daemon]:
        """Launch all at once, then wait for each: start-up runs in parallel."""
        daemons = list(daemons)
        for daemon in daemons:
            daemon.peer_id  # noqa: B018 - create the key before any peer needs the ID
        for daemon in daemons:
            daemon.launch()
        for daemon in daemons:
            daemon.wait_ready()
        return daemons

    def close(self, grace: float = 3.0) -> None:
        """SIGTERM everything still running, SIGKILL what is left after ``grace`` seconds."""
        running = [d for d in self.daemons if d.running]
        for daemon in running:
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for daemon in running:
            assert daemon.process is not None
            try:
                daemon.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.kill()

    def __enter__(self) -> DaemonPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
