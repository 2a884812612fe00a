"""kubo, the reference IPFS node, built from the Go module proxy and run on loopback."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from .common import LOOPBACK, ServiceError, ServiceProcess, free_ports
from .gobuild import _find_checked, _go_build_module, _install_checked

# --------------------------------------------------------------------------------------------
# kubo (the reference IPFS implementation), for interoperability tests

KUBO_VERSION = "0.42.0"
KUBO_MODULE = "github.com/ipfs/kubo"
#: Where ``scripts/setup.sh`` installs the ``ipfs`` binary; ``$BACNODE_KUBO`` overrides it.
KUBO_PATH = f"/usr/local/lib/bacnode/kubo-v{KUBO_VERSION}/ipfs"
KUBO_ENV = "BACNODE_KUBO"
#: Swarm filters covering every address but 127.0.0.0/8: a test kubo cannot dial anything else.
KUBO_ADDR_FILTERS: tuple[str, ...] = (
    "/ip4/0.0.0.0/ipcidr/2",
    "/ip4/64.0.0.0/ipcidr/3",
    "/ip4/96.0.0.0/ipcidr/4",
    "/ip4/112.0.0.0/ipcidr/5",
    "/ip4/120.0.0.0/ipcidr/6",
    "/ip4/124.0.0.0/ipcidr/7",
    "/ip4/126.0.0.0/ipcidr/8",
    "/ip4/128.0.0.0/ipcidr/1",
    "/ip6/::/ipcidr/0",
)
_SETUP_HINT = "run `bash scripts/setup.sh` (its kubo step builds it from the Go module proxy)"


def kubo_path() -> Path:
    """Where the kubo ``ipfs`` binary is expected: ``$BACNODE_KUBO``, else :data:`KUBO_PATH`."""
    return Path(os.environ.get(KUBO_ENV) or KUBO_PATH)


def _kubo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for any ``ipfs`` command: no telemetry, ever."""
    env = dict(os.environ)
    env["IPFS_TELEMETRY"] = "off"  # kubo's telemetry plugin would report to a public URL
    env.update(extra or {})
    return env


def kubo_version(binary: Path | str) -> str | None:
    """``ipfs version --number`` of ``binary``, or None if it does not run."""
    try:
        done = subprocess.run(
            [str(binary), "version", "--number"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_kubo_env(),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_kubo() -> Path:
    """The kubo binary, checked to be version :data:`KUBO_VERSION`; ServiceError if not."""
    return _find_checked(kubo_path(), "kubo (ipfs)", KUBO_VERSION, kubo_version, _SETUP_HINT)


def install_kubo(path: Path | str | None = None) -> bool:
    """Build kubo :data:`KUBO_VERSION` into ``path`` unless it is already there; returns
    whether it built."""
    target = Path(path) if path is not None else kubo_path()
    if target.is_file() and kubo_version(target) == KUBO_VERSION:
        return False
    _go_build_module(KUBO_MODULE, KUBO_VERSION, "./cmd/ipfs", target, env=_kubo_env())
    _install_checked(target, "kubo", KUBO_VERSION, kubo_version)
    return True



def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config["A"]["B"]["C"] = value`` for ``dotted`` = ``"A.B.C"``."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


class Kubo(ServiceProcess):
    """One kubo daemon isolated for tests: its own repo, loopback only, nothing else dialled.

    ``ipfs init --profile test``, then: swarm on ``127.0.0.1:swarm_port`` (TCP only), API on
    ``127.0.0.1:api_port``, no gateway, no bootstrap peers, no mDNS, ``Routing.Type=none``, no
    AutoNAT, relay, hole punching, AutoTLS, AutoConf, UPnP, HTTP retrieval or providing, no
    telemetry, and swarm filters that refuse every address outside 127.0.0.0/8. The daemon is
    online (not ``--offline``), so it speaks bitswap with the peers it is connected to.
    """

    LOG = "daemon.log"

    def __init__(
        self,
        repo: str | os.PathLike[str],
        *,
        swarm_port: int | None = None,
        api_port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        log_level: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.binary = Path(binary) if binary is not None else None
        self.swarm_port = swarm_port
        self.api_port = api_port
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.peer_id = ""
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def multiaddr(self) -> str:
        """``/ip4/127.0.0.1/tcp/<swarm port>/p2p/<peer id>`` (only once started)."""
        if not self.peer_id:
            raise ServiceError("kubo is not started")
        return f"/ip4/{LOOPBACK}/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        """Where the daemon's stdout and stderr go."""
        return self.repo / self.LOG

    def start(self) -> Kubo:
        """Init the repo if new, configure it, start ``ipfs daemon``, wait for its API."""
        if self.running():
            return self
        if self.binary is None:
            self.binary = find_kubo()
        began = time.monotonic()
        if self.swarm_port is None or self.api_port is None:
            self.swarm_port, self.api_port = free_ports(2)
        self.repo.mkdir(parents=True, exist_ok=True)
        if not (self.repo / "config").exists():
            self._run_checked("init", "--profile", "test", "--empty-repo")
        self._configure()
        self._spawn()
        try:
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop(grace=0)
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the repo is kept."""
        self._terminate(grace)

    def env(self) -> dict[str, str]:
        """The environment for ``ipfs`` commands on this node's repo."""
        return _kubo_env({"IPFS_PATH": str(self.repo)})

    def run(
        self, *args: str, timeout: float = 60.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``ipfs ARGS`` against this node (through its API while it runs); never raises on a
        non-zero exit. Output is bytes (``ipfs cat`` is binary)."""
        assert self.binary is not None, "start() first"
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            env=self.env(),
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def api(self, command: str, timeout: float = 10.0, **params: str) -> Any:
        """``POST /api/v0/<command>?params`` on the RPC API, decoded from JSON."""
        from urllib.parse import urlencode

        query = f"?{urlencode(params)}" if params else ""
        conn = http.client.HTTPConnection(LOOPBACK, self.api_port, timeout=timeout)
        try:
            conn.request("POST", f"/api/v0/{command}{query}")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise ServiceError(f"kubo {command}: HTTP {resp.status}: {body[:500]!r}")
        return json.loads(body)

    def __repr__(self) -> str:
        state = f"pid {self.pid} api :{self.api_port}" if self.running() else "stopped"
        return f"<Kubo {state} repo={self.repo}>"

    # -- internals ---------------------------------------------------------------------------

    def _run_checked(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        done = self.run(*args)
        if done.returncode != 0:
            raise ServiceError(
                f"ipfs {' '.join(args)} failed (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-2000:]}"
            )
        return done

    def _configure(self) -> None:
        """Rewrite the repo's config for an isolated, loopback-only test node."""
        path = self.repo / "config"
        config = json.loads(path.read_text())
        settings: dict[str, Any] = {
            "Addresses.API": [f"/ip4/{LOOPBACK}/tcp/{self.api_port}"],
            "Addresses.Gateway": [],
            "Addresses.Swarm": [f"/ip4/{LOOPBACK}/tcp/{self.swarm_port}"],
            "Addresses.Announce": [],
            "Addresses.AppendAnnounce": [],
            "Bootstrap": [],
            "Peering.Peers": [],
            "Discovery.MDNS.Enabled": False,
            "Routing.Type": "none",
            "Routing.DelegatedRouters": [],
            "AutoConf.Enabled": False,
            "AutoNAT.ServiceMode": "disabled",
            "AutoTLS.Enabled": False,
            "DNS.Resolvers": {},
            "Ipns.DelegatedPublishers": [],
            "Provide.Enabled": False,
            "HTTPRetrieval.Enabled": False,
            "Swarm.AddrFilters": list(KUBO_ADDR_FILTERS),
            "Swarm.DisableNatPortMap": True,
            "Swarm.EnableHolePunching": False,
            "Swarm.RelayClient.Enabled": False,
            "Swarm.RelayService.Enabled": False,
            "Swarm.Transports.Network.QUIC": False,
            "Swarm.Transports.Network.WebTransport": False,
            "Swarm.Transports.Network.WebRTCDirect": False,
            "Swarm.Transports.Network.Websocket": False,
            "Swarm.Transports.Network.Relay": False,
            "Plugins.Plugins.telemetry.Config.Mode": "off",
        }
        for key, value in settings.items():
            _set(config, key, value)
        path.write_text(json.dumps(config, indent=2) + "\n")
        self.peer_id = str(config["Identity"]["PeerID"])

    def _spawn(self) -> None:
        """Start ``ipfs daemon`` in its own session, logging to the repo."""
        assert self.binary is not None
        env = self.env()
        if self.log_level:
            env["GOLOG_LOG_LEVEL"] = self.log_level
        self._launch([str(self.binary), "daemon", "--migrate=false"], cwd=self.repo, env=env,
                     log=self.log_path)

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``/api/v0/id`` until it names this node."""
        last = "no answer yet"
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"kubo daemon exited with code {code} during start; last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.api("id", timeout=2).get("ID") == self.peer_id:
                    return
                last = "the API answers for another peer ID"
            except (OSError, ValueError, http.client.HTTPException, ServiceError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"kubo's API on {LOOPBACK}:{self.api_port} not ready in "
                    f"{self.start_timeout:.0f}s ({last}); last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)
