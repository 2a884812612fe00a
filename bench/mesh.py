"""Mesh benchmark: gossip delay, idle CPU and RSS of N bacnode daemons on loopback.

Run from anywhere: ``.venv/bin/python bench/mesh.py [--sizes 5,10,20] [--seconds 10]``.

For each N, N daemons start fresh (new data dirs in a temp dir, free loopback ports,
``--no-mdns``), nodes 2..N bootstrapping to node 1 (a star, as ``scripts/devnet.sh``
does; ``--topology spread`` has each bootstrap to two random nodes already up). Once
every daemon lists all N nodes CONNECTED (and a short settle time has passed), the
benchmark sleeps for the measurement window and then reports:

- gossip propagation: heartbeat send->receive delays (ms) received during the window,
  from every daemon's ``/api/v1/agent/mesh?since_ms=<window start>``; p50/p99/max;
  also how many samples arrived out of the N*(N-1)*window/heartbeat expected;
- idle CPU % per daemon: utime+stime deltas from /proc/<pid>/stat over the window,
  divided by wall time (100 % = one core busy); mean and max, and node 1 (the hub of
  the star, which relays every heartbeat) on its own;
- RSS per daemon (VmRSS from /proc/<pid>/status) at the end of the window, in MiB.

As a baseline measured in the same run, it also reports the RSS of idle processes that
only import (bare python3; libp2p + trio; everything ``node.daemon`` imports), so
readers see how much of a daemon's RSS the interpreter and libraries account for.

Targets, printed beside the results: gossip p99 <= 100 ms at N = 20; idle RSS
<= 120 MiB and CPU <= 2 % per daemon (every daemon, every N).

Every daemon is stopped (SIGTERM, then SIGKILL after 10 s) when a size is done, on
error, on Ctrl-C and on SIGTERM; they also get SIGTERM from the kernel if this process
dies hard (PR_SET_PDEATHSIG). A size that fails (a daemon exits, no full membership in
time) is reported and the others still run. Exit status: 0 when every size completed,
1 when one failed; with ``--check``, 2 when a target is missed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
# The daemons and boto3 never ask the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from bench._cleanup import Interrupted, signals_deferred  # noqa: E402
from node.config import NodeConfig  # noqa: E402
from scripts.services import free_ports  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_P99_MS = 100
TARGET_P99_AT_N = 20
TARGET_RSS_MIB = 120
TARGET_CPU_PCT = 2.0
STOP_GRACE_S = 10
NO_SAMPLES_SINCE = 10**15  # a since_ms far in the future: counters without the samples


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


# --------------------------------------------------------------------------------------------
# Processes


def _pdeathsig() -> None:
    """In the child: get SIGTERM when the benchmark dies, however it dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the daemons
            preexec_fn=_pdeathsig,
        )


def stop(procs: Iterable[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process, SIGKILL what still runs after ``grace`` s; pids killed."""
    with signals_deferred():
        return _stop([p for p in procs if p.poll() is None], grace)


def _stop(procs: list[subprocess.Popen[bytes]], grace: float) -> list[int]:
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    killed = []
    for proc in procs:
        if proc.poll() is None:
            killed.append(proc.pid)
            proc.kill()
            proc.wait()
    return killed


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid``, in clock ticks."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 3, utime 14, stime 15 (1-based, man 5 proc).
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        status = fh.read()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    state = next((line for line in status.splitlines() if line.startswith("State:")), "?")
    raise BenchError(f"no VmRSS for pid {pid} ({state}); /proc/{pid}/status:\n{status}")


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (log is empty)"


# --------------------------------------------------------------------------------------------
# HTTP


def get_json(port: int, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------------------------
# Baseline: what importing costs


BASELINES = [
    ("python3, nothing imported", "pass"),
    ("python3 + import libp2p, trio", "import libp2p, trio"),
    ("python3 + import node.daemon (all the daemon imports)", "import node.daemon"),
]


def measure_baselines(workdir: Path) -> list[tuple[str, float | None, str]]:
    """RSS of idle processes that only import; (label, MiB or None, note)."""
    procs = []
    for i, (label, code) in enumerate(BASELINES):
        script = f"{code}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep(120)\n"
        log = workdir / f"baseline-{i}.log"
        procs.append((label, spawn([sys.executable, "-c", script], log), log))
    results = []
    try:
        deadline = time.monotonic() + 60
        for label, proc, log in procs:
            while time.monotonic() < deadline and proc.poll() is None:
                if "ready" in log.read_text(errors="replace"):
                    break
                time.sleep(0.05)
            if proc.poll() is not None or "ready" not in log.read_text(errors="replace"):
                last = (log.read_text(errors="replace").strip().splitlines() or ["?"])[-1]
                results.append((label, None, f"failed: {last}"))
                continue
            time.sleep(0.3)  # let it settle into its sleep
            results.append((label, rss_mib(proc.pid), ""))
    finally:
        stop(p for _, p, _ in procs)
    return results


# --------------------------------------------------------------------------------------------
# A set of daemons


@dataclass
class Daemon:
    index: int
    p2p_port: int
    api_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    peer_id: str = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def describe_exit(self) -> str:
        code = self.proc.returncode if self.proc else None
        return f"node {self.index} (pid {self.pid}) exited with {code}; log:\n{log_tail(self.log)}"


@dataclass
class Fleet:
    n: int
    workdir: Path
    heartbeat: float
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.n)
        for i in range(self.n):
            data_dir = self.workdir / f"node-{i + 1}"
            data_dir.mkdir(parents=True)
            self.daemons.append(
                Daemon(i + 1, ports[2 * i], ports[2 * i + 1], data_dir, data_dir / "serve.log")
            )

    def start_one(self, daemon: Daemon, peers: list[Daemon]) -> None:
        """Start ``daemon`` with ``--peer`` for each of ``peers`` (none: a first node)."""
        addresses = [f"/ip4/{HOST}/tcp/{p.p2p_port}/p2p/{p.peer_id}" for p in peers]
        argv = [
            sys.executable, "-m", "node", "serve",
            "--data-dir", str(daemon.data_dir),
            "--listen", f"/ip4/{HOST}/tcp/{daemon.p2p_port}",
            *[arg for address in addresses or ["none"] for arg in ("--peer", address)],
            "--api-host", HOST,
            "--api-port", str(daemon.api_port),
            "--no-mdns",
            "--heartbeat-seconds", str(self.heartbeat),
            "--labels", f"zone=z{daemon.index}",
        ]
        daemon.proc = spawn(argv, daemon.log)

    def wait_api(self, daemons: list[Daemon], timeout: float) -> None:
        """Wait until each daemon's API answers; record its peer ID."""
        pending = list(daemons)
        deadline = time.monotonic() + timeout
        while pending:
            for daemon in list(pending):
                assert daemon.proc is not None
                if daemon.proc.poll() is not None:
                    raise BenchError(daemon.describe_exit())
                try:
                    info = get_json(daemon.api_port, "/api/v1/agent/node", timeout=1.0)
                except OSError:
                    continue
                daemon.peer_id = info["NodeID"]
                pending.remove(daemon)
            if pending and time.monotonic() > deadline:
                names = ", ".join(str(d.index) for d in pending)
                raise BenchError(
                    f"N={self.n}: the API of node(s) {names} did not answer within {timeout:.0f}s;"
                    f" log of node {pending[0].index}:\n{log_tail(pending[0].log)}"
                )
            if pending:
                time.sleep(0.1)

    def start(self, batch: int, timeout: float, topology: str) -> None:
        """Node 1 alone (the others need its peer ID), then the rest in parallel batches.

        star: every node bootstraps to node 1. spread: every node bootstraps to two nodes
        picked at random (seeded) among those already up, so no node relays for all.
        """
        first = self.daemons[0]
        self.start_one(first, [])
        self.wait_api([first], timeout)
        chooser = random.Random(self.n)
        up = [first]
        rest = self.daemons[1:]
        for k in range(0, len(rest), batch):
            group = rest[k : k + batch]
            for daemon in group:
                peers = [first] if topology == "star" else chooser.sample(up, min(2, len(up)))
                self.start_one(daemon, peers)
            self.wait_api(group, timeout)
            up.extend(group)

    def wait_membership(self, timeout: float) -> None:
        """Until every daemon lists all N nodes CONNECTED."""
        expected = {d.peer_id for d in self.daemons}
        deadline = time.monotonic() + timeout
        while True:
            lacking: dict[int, int] = {}
            for daemon in self.daemons:
                assert daemon.proc is not None
                if daemon.proc.poll() is not None:
                    raise BenchError(daemon.describe_exit())
                try:
                    nodes = get_json(daemon.api_port, "/api/v1/orchestrator/nodes")["Nodes"]
                    seen = {n["Info"]["NodeID"] for n in nodes if n["Connection"] == "CONNECTED"}
                except OSError:
                    seen = set()
                if expected - seen:
                    lacking[daemon.index] = len(expected & seen)
            if not lacking:
                return
            if time.monotonic() > deadline:
                worst = min(lacking, key=lacking.__getitem__)
                detail = ", ".join(f"node {i} sees {k}/{self.n}" for i, k in lacking.items())
                raise BenchError(
                    f"N={self.n}: no full membership within {timeout:.0f}s ({detail}); "
                    f"log of node {worst}:\n{log_tail(self.daemons[worst - 1].log)}"
                )
            time.sleep(1.0)

    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [d.proc for d in self.daemons if d.proc is not None]

    def stop(self) -> list[int]:
        # Leaves first, node 1 last, as the devnet does.
        killed = stop([d.proc for d in self.daemons[1:] if d.proc is not None])
        return killed + stop(self.procs())


# --------------------------------------------------------------------------------------------
# One size


def percentile(ordered: list[int], fraction: float) -> int | None:
    """Nearest rank, as the daemon computes it (``node/daemon.py``)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def mesh_counters(daemon: Daemon) -> tuple[dict[str, int], dict[str, int]]:
    stats = get_json(daemon.api_port, f"/api/v1/agent/mesh?since_ms={NO_SAMPLES_SINCE}")
    return stats.get("Accepted", {}), stats.get("Dropped", {})


def counter_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def run_size(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    fleet = Fleet(n, root / f"n{n}", args.heartbeat)
    try:
        t_start = time.monotonic()
        fleet.start(args.batch, args.start_timeout, args.topology)
        t_apis = time.monotonic()
        fleet.wait_membership(args.join_timeout)
        t_joined = time.monotonic()
        print(f"  N={n}: APIs up in {t_apis - t_start:.1f}s, full membership "
              f"{t_joined - t_apis:.1f}s later; settling {args.settle:.0f}s, "
              f"measuring {args.seconds:.0f}s", file=sys.stderr, flush=True)
        time.sleep(args.settle)

        before = {d.index: mesh_counters(d) for d in fleet.daemons}
        since_ms = time.time_ns() // 1_000_000
        wall0 = time.monotonic()
        host0 = host_cpu()
        ticks0 = {d.index: cpu_ticks(d.pid) for d in fleet.daemons}
        time.sleep(args.seconds)
        ticks1 = {d.index: cpu_ticks(d.pid) for d in fleet.daemons}
        host1 = host_cpu()
        wall = time.monotonic() - wall0
        rss = {d.index: rss_mib(d.pid) for d in fleet.daemons}
        for daemon in fleet.daemons:
            assert daemon.proc is not None
            if daemon.proc.poll() is not None:
                raise BenchError(daemon.describe_exit())

        samples: list[int] = []
        hub_samples: list[int] = []
        leaf_samples: list[int] = []
        accepted: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for daemon in fleet.daemons:
            stats = get_json(daemon.api_port, f"/api/v1/agent/mesh?since_ms={since_ms}")
            samples.extend(stats["GossipDelayMs"]["Samples"])
            (hub_samples if daemon.index == 1 else leaf_samples).extend(
                stats["GossipDelayMs"]["Samples"])
            for total, now, then in ((accepted, stats.get("Accepted", {}), before[daemon.index][0]),
                                     (dropped, stats.get("Dropped", {}), before[daemon.index][1])):
                for key, value in counter_delta(now, then).items():
                    total[key] = total.get(key, 0) + value
        samples.sort()
        hub_samples.sort()
        leaf_samples.sort()
        cpu = {i: (ticks1[i] - ticks0[i]) / CLK_TCK / wall * 100 for i in ticks0}
        # Whole machine, 100 % = every core busy; "others": what our daemons did not use.
        host_jiffies = max(1, host1[1] - host0[1])
        host_busy = (host1[0] - host0[0]) / host_jiffies * 100
        ours = sum(ticks1.values()) - sum(ticks0.values())
        # /proc/stat counts USER_HZ per CPU; both it and /proc/<pid>/stat use clock ticks.
        others_busy = max(0.0, (host1[0] - host0[0] - ours) / host_jiffies * 100)
        return {
            "N": n,
            "StartSeconds": round(t_apis - t_start, 1),
            "JoinSeconds": round(t_joined - t_apis, 1),
            "WindowSeconds": round(wall, 2),
            "Samples": len(samples),
            "ExpectedSamples": round(n * (n - 1) * wall / args.heartbeat),
            "P50": percentile(samples, 0.50),
            "P99": percentile(samples, 0.99),
            "Max": samples[-1] if samples else None,
            "CpuMean": sum(cpu.values()) / n,
            "CpuMax": max(cpu.values()),
            "CpuHub": cpu[1],
            "RssMean": sum(rss.values()) / n,
            "RssMax": max(rss.values()),
            "HostCpuBusy": host_busy,
            "OtherCpuBusy": others_busy,
            "HubP50": percentile(hub_samples, 0.50),
            "HubP99": percentile(hub_samples, 0.99),
            "LeafP50": percentile(leaf_samples, 0.50),
            "LeafP99": percentile(leaf_samples, 0.99),
            "Accepted": accepted,
            "Dropped": dropped,
        }
    finally:
        killed = fleet.stop()
        if killed:
            print(f"  N={n}: SIGKILLed {len(killed)} daemon(s) that ignored SIGTERM for "
                  f"{STOP_GRACE_S}s: {killed}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def fmt(value: float | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def report(baselines: list[tuple[str, float | None, str]], everything: list[dict[str, Any]],
           args: argparse.Namespace) -> bool:
    results = [r for r in everything if "Error" not in r]
    try:
        libp2p_version = metadata.version("libp2p")
    except metadata.PackageNotFoundError:
        libp2p_version = "?"
    print(f"bacnode mesh benchmark: {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, libp2p {libp2p_version}; heartbeat {args.heartbeat:g}s, "
          f"window {args.seconds:g}s, " + ("star bootstrap to node 1" if args.topology == "star"
                                             else "spread bootstrap (2 random peers each)"))
    print()
    print("Baseline RSS, idle processes measured in this run:")
    width = max(len(label) for label, _, _ in baselines)
    for label, mib, note in baselines:
        print(f"  {label:<{width}}  {fmt(mib, '6.1f')} MiB {note}".rstrip())
    print()
    print(f"{'':>4}  {'start':>6} {'join':>5}  {'gossip samples':>15}  "
          f"{'gossip delay ms':^17}  {'CPU % per daemon':^20}  {'RSS MiB/daemon':^14}  "
          f"{'host CPU %':^11}")
    print(f"{'N':>4}  {'s':>6} {'s':>5}  {'got/expected':>15}  {'p50':>5} {'p99':>5} {'max':>5}  "
          f"{'mean':>6} {'max':>6} {'node1':>6}  {'mean':>6} {'max':>7}  {'all':>5} {'other':>5}")
    for r in everything:
        if "Error" in r:
            print(f"{r['N']:>4}  failed: {textwrap.shorten(r['Error'], 90)}")
            continue
        got = f"{r['Samples']}/{r['ExpectedSamples']}"
        print(f"{r['N']:>4}  {r['StartSeconds']:>6.1f} {r['JoinSeconds']:>5.1f}  {got:>15}  "
              f"{fmt(r['P50'], '>5')} {fmt(r['P99'], '>5')} {fmt(r['Max'], '>5')}  "
              f"{r['CpuMean']:>6.2f} {r['CpuMax']:>6.2f} {r['CpuHub']:>6.2f}  "
              f"{r['RssMean']:>6.1f} {r['RssMax']:>7.1f}  {r['HostCpuBusy']:>5.1f} "
              f"{r['OtherCpuBusy']:>5.1f}")
    drops = [(r["N"], r["Dropped"]) for r in results if r["Dropped"]]
    for n, dropped in drops:
        print(f"  N={n}: gossip messages dropped during the window: "
              + ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
    if args.topology == "star":
        print("  gossip delay ms by receiver, p50/p99: node 1 (one hop from the sender) | "
              "nodes 2..N (two hops, relayed by node 1)")
    else:
        print("  gossip delay ms by receiver, p50/p99: node 1 | nodes 2..N")
    for r in results:
        print(f"    N={r['N']:<3} node 1: {fmt(r['HubP50'])}/{fmt(r['HubP99'])}   "
              f"nodes 2..N: {fmt(r['LeafP50'])}/{fmt(r['LeafP99'])}")
    notes = (
        f"start: node 1 alone, then the others {args.batch} at a time, until every API "
        "answers. join: until every daemon lists all N CONNECTED. node1: "
        + ("the star's hub, which relays every heartbeat. " if args.topology == "star"
           else "the first node. ")
        + "gossip samples: heartbeats received in the window, "
        "of N(N-1) x window / heartbeat sent. host CPU %: the whole machine during the "
        "window (100 = every core busy); other: the part these daemons did not use (other "
        "processes compete for the same cores and inflate delays and CPU %)."
    )
    print(textwrap.fill(notes, width=100, initial_indent="  ", subsequent_indent="  "))
    print()
    print("Targets:")
    all_ok = True
    at_n = [r for r in results if r["N"] == TARGET_P99_AT_N]
    if at_n:
        p99 = at_n[0]["P99"]
        ok = p99 is not None and p99 <= TARGET_P99_MS
        all_ok &= ok
        print(f"  gossip p99 <= {TARGET_P99_MS} ms at N = {TARGET_P99_AT_N}: "
              f"{fmt(p99)} ms  {verdict(ok)}")
    elif TARGET_P99_AT_N in args.sizes:
        all_ok = False
        print(f"  gossip p99 <= {TARGET_P99_MS} ms at N = {TARGET_P99_AT_N}: "
              f"N = {TARGET_P99_AT_N} failed  {verdict(False)}")
    else:
        print(f"  gossip p99 <= {TARGET_P99_MS} ms at N = {TARGET_P99_AT_N}: not measured "
              f"(N = {TARGET_P99_AT_N} not in --sizes)")
    if results:
        worst_rss = max(results, key=lambda r: r["RssMax"])
        ok = worst_rss["RssMax"] <= TARGET_RSS_MIB
        all_ok &= ok
        print(f"  idle RSS <= {TARGET_RSS_MIB} MiB per daemon: max {worst_rss['RssMax']:.1f} MiB "
              f"(at N = {worst_rss['N']})  {verdict(ok)}")
        worst_cpu = max(results, key=lambda r: r["CpuMax"])
        ok = worst_cpu["CpuMax"] <= TARGET_CPU_PCT
        all_ok &= ok
        print(f"  idle CPU <= {TARGET_CPU_PCT:g} % per daemon: max {worst_cpu['CpuMax']:.2f} % "
              f"(at N = {worst_cpu['N']}; mean {worst_cpu['CpuMean']:.2f} %)  {verdict(ok)}")
    return all_ok


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--sizes", default="5,10,20",
                        help="comma-separated daemon counts [default: 5,10,20]")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measurement window per size [default: 10]")
    parser.add_argument("--heartbeat", type=float, default=NodeConfig.heartbeat_seconds,
                        help="--heartbeat-seconds of every daemon "
                        f"[default: the daemon's, {NodeConfig.heartbeat_seconds:g}]")
    parser.add_argument("--topology", choices=["star", "spread"], default="star",
                        help="star: nodes 2..N bootstrap to node 1, as the devnet does; "
                        "spread: each to 2 random nodes already up [default: star]")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between full membership and the window [default: 3]")
    parser.add_argument("--batch", type=int, default=max(4, 2 * (os.cpu_count() or 1)),
                        help="daemons started at once [default: max(4, 2 x CPUs)]")
    parser.add_argument("--start-timeout", type=float, default=90.0,
                        help="seconds a batch may take until its APIs answer [default: 90]")
    parser.add_argument("--join-timeout", type=float, default=90.0,
                        help="seconds until full membership [default: 90]")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir with the daemons' data dirs and logs")
    parser.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: comma-separated whole numbers, e.g. 5,10,20")
    if not args.sizes or min(args.sizes) < 2:
        parser.error("--sizes: every size must be at least 2")
    if args.seconds <= 0 or args.heartbeat <= 0 or args.batch < 1:
        parser.error("--seconds, --heartbeat and --batch must be positive")
    return args


def main() -> int:
    args = parse_args()
    if not Path("/proc/self/stat").exists():
        print("bench/mesh.py: error: needs Linux /proc", file=sys.stderr)
        return 1

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="bacnode-mesh-bench-"))
    failed = True
    try:
        print(f"bench/mesh.py: working in {root}", file=sys.stderr, flush=True)
        baselines = measure_baselines(root)
        results: list[dict[str, Any]] = []
        for n in args.sizes:
            try:
                results.append(run_size(n, args, root))
            except BenchError as exc:  # report it, and go on with the other sizes
                print(f"bench/mesh.py: error: {exc}", file=sys.stderr, flush=True)
                results.append({"N": n, "Error": str(exc).splitlines()[0]})
        failed = any("Error" in r for r in results)
    except BenchError as exc:
        print(f"bench/mesh.py: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        failed = False  # nothing to look at
        print("bench/mesh.py: interrupted; every daemon was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep or failed:
            print(f"bench/mesh.py: logs and data dirs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    all_ok = report(baselines, results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"Baselines": [{"Label": label, "RssMiB": mib, "Note": note}
                           for label, mib, note in baselines],
             "Results": results,
             "Targets": {"P99Ms": TARGET_P99_MS, "P99AtN": TARGET_P99_AT_N,
                         "RssMiB": TARGET_RSS_MIB, "CpuPercent": TARGET_CPU_PCT},
             "AllTargetsMet": all_ok}, indent=2))
    if failed:
        return 1
    return 2 if args.check and not all_ok else 0


if __name__ == "__main__":
    sys.exit(main())
