"""Job benchmark: end-to-end latency and throughput of busybox jobs on a 3-node devnet.

Run from anywhere: ``.venv/bin/python bench/jobs.py [--runs N] [--jobs M]``.

One run starts a fresh devnet of 3 daemons (``scripts/daemons.py``: temp data dirs, free
127.0.0.1 ports, ``--no-mdns``, the daemon's default 1 s heartbeat, node2 and node3
bootstrapping to node1), waits until every node lists all 3 CONNECTED, then measures,
submitting everything through node1:

(a) latency of one ``busybox true`` job, ``--runs`` times each after ``--warmup`` rounds,
    the kinds interleaved in a shuffled order every round so that drifting machine load
    hits them alike:

    - ``cli``: ``python3 -m cli.main --api-port A docker run --id-only --wait -p noop
      busybox -- true`` as a subprocess, wall time (what a user waits);
    - ``api``: the same job through the HTTP API in-process (urllib): PUT, then GET every
      20 ms until the job is terminal; no CLI start-up, so cli - api is the CLI's share;
    - ``cli-start``: ``python3 -m cli.main --api-port A id`` (interpreter + CLI start-up
      + one GET), the fixed cost inside every CLI figure;
    - ``docker``: ``docker run --rm --network none busybox true``, the reference.

    Printed: p50/p95 of each, overhead (p50 and p95 differences against ``docker``) and
    ratio, the target (CLI overhead <= 300 ms at p50) and whether it is met, and where
    the time goes: the phases in the jobs' histories (created -> bid accepted -> running
    -> container done -> execution completed -> job completed) and the client's share.

(b) throughput: ``--jobs`` jobs PUT at once from a thread pool (``--submitters``
    threads), each ``busybox true`` with the noop publisher; jobs/second from the first
    submit to the last job reaching a terminal state (the server's terminal timestamp).
    Every job must end Completed with exactly one Completed execution
    (``/jobs/{id}/executions``); refused, lost, failed and unfinished jobs are counted,
    and so are retries. Also: the phase breakdown, the peak number of containers running
    at once, and CPU seconds of the daemons, dockerd+containerd and the host.

    Baseline without bacnode: dockerd alone running the same number of containers with
    the executor's recipe (docker-py create+attach+start+wait+remove, network none,
    capabilities dropped, log driver none, a bind-mounted /outputs) at each
    ``--baseline-concurrency`` (default 6 and 24), after the daemons are stopped;
    bacnode's rate is printed as a ratio of it.

After each part the daemons' health is printed: process alive, API answering, and the
errors in their stderr (a daemon whose API died while its process lives on is a bug).

Everything is bounded: each subprocess, HTTP call and wait has a timeout, and the whole
run stops after ``--max-seconds``. The daemons are stopped (SIGTERM, SIGKILL after a
grace) and every container of this run removed (by label) at the end, on error, on
Ctrl-C and on SIGTERM; the temp dir is removed unless ``--keep`` or the run failed.
Exit status: 0 when the run completed, 1 on error, 2 with ``--check`` when a target is
missed (the latency target, or a throughput job not Completed exactly once).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# The daemons and boto3 never ask the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from protocol.states import execution_state_name  # noqa: E402


def compute_state(execution: dict[str, Any]) -> str:
    """An API execution's state by name (Bacalhau sends the number)."""
    return execution_state_name(execution["ComputeState"]["StateType"])

from bench._cleanup import Interrupted, signals_deferred  # noqa: E402
from scripts.daemons import Daemon, DaemonPool, wait_until  # noqa: E402

API = "/api/v1/orchestrator"
TARGET_OVERHEAD_P50_MS = 300.0
POLL_S = 0.02
TERMINAL = {"Completed", "Failed", "Stopped", "Cancelled"}
BENCH_LABEL = "bacnode.bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Bounds of single steps (seconds); generous for a loaded 2-core machine.
JOB_TIMEOUT = 120.0
HTTP_TIMEOUT = 30.0
MESH_TIMEOUT = 60.0
START_TIMEOUT = 120.0
STOP_GRACE = 10.0
#: The throughput part gives up when node1's API has not answered for this long.
API_LOST_AFTER = 60.0
#: The latency part gives up after this many failed samples.
MAX_LATENCY_FAILURES = 10
PHASES = ["created->bid accepted", "accepted->running", "running->container done",
          "publish->exec completed", "exec->job completed", "created->job completed"]

JOB_BODY = {
    "Job": {
        "Type": "batch",
        "Tasks": [
            {
                "Name": "main",
                "Engine": {"Type": "docker", "Params": {"Image": "busybox",
                                                        "Parameters": ["true"]}},
                "Publisher": {"Type": "noop"},
            }
        ],
    }
}


class BenchError(Exception):
    """The benchmark could not run (or one sample failed); the message says why."""


# -- small helpers -----------------------------------------------------------------------


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime of ``pids`` (those still alive), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host since boot, all cores."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() in names:
                    found.append(int(entry))
        except OSError:
            pass
    return found


@dataclass
class CpuWindow:
    """CPU seconds used between ``start()`` and ``stop()`` by groups of processes."""

    groups: dict[str, list[int]]
    begin: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    cores: float = 1.0

    def start(self) -> CpuWindow:
        self.begin = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        self.begin["host"], self.begin["_total"] = host_cpu()
        self.begin["_wall"] = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        for name, pids in self.groups.items():
            self.used[name] = cpu_seconds(pids) - self.begin[name]
        busy, total = host_cpu()
        self.used["host"] = busy - self.begin["host"]
        self.wall = time.monotonic() - self.begin["_wall"]
        self.cores = (total - self.begin["_total"]) / max(self.wall, 1e-9)
        return self

    def describe(self) -> str:
        host = self.used["host"]
        known = sum(self.used[name] for name in self.groups)
        parts = "".join(f", {name} {self.used[name]:.1f}" for name in self.groups)
        return (f"CPU s over {self.wall:.1f} s: host {host:.1f} "
                f"({100 * host / max(self.wall * self.cores, 1e-9):.0f}% of {self.cores:.0f} "
                f"cores){parts}, rest {host - known:.1f} (shims, runc, this benchmark, CLI "
                "processes, other work)")


def http(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise BenchError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except (OSError, ValueError) as exc:  # refused, timed out, reset, bad JSON
        raise BenchError(f"{method} {url}: {exc}") from None


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACNODE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def timed_run(argv: list[str], timeout: float = JOB_TIMEOUT) -> tuple[float, str]:
    """Run ``argv``; (wall seconds, stdout). Raises BenchError on a non-zero exit."""
    start = time.perf_counter()
    try:
        result = subprocess.run(argv, cwd=REPO_ROOT, env=child_env(), capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv[-8:])}` took more than {timeout:.0f}s") from None
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(argv[-8:])}` exited {result.returncode}: "
                         f"{(result.stderr or result.stdout).strip()[-300:]}")
    return elapsed, result.stdout


def count(items: Iterable[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(items).items())) or "-"


# -- the devnet --------------------------------------------------------------------------


@contextlib.contextmanager
def devnet(root: Path, heartbeat: float) -> Iterator[list[Daemon]]:
    """Three daemons, node2 and node3 bootstrapping to node1; stopped on the way out."""
    pool = DaemonPool(root)
    try:
        first = pool.new("node1", heartbeat=heartbeat)
        nodes = [first, pool.new("node2", peers=[first], heartbeat=heartbeat),
                 pool.new("node3", peers=[first], heartbeat=heartbeat)]
        for daemon in nodes:  # as pool.start_all, with room for a loaded machine
            _ = daemon.peer_id  # the key exists before a peer names it
        for daemon in nodes:
            daemon.launch()
        for daemon in nodes:
            daemon.wait_ready(START_TIMEOUT)
        wait_until(lambda: all(len(d.connected()) == 3 for d in nodes), MESH_TIMEOUT,
                   interval=0.2, what="all 3 nodes CONNECTED on every node")
        yield nodes
    finally:
        with signals_deferred():
            pool.close(grace=STOP_GRACE)


def remove_containers(labels: list[str]) -> int:
    """Force-remove every container carrying one of ``labels`` (``key=value``)."""
    removed = 0
    for label in labels:
        try:
            listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                                    capture_output=True, text=True, timeout=60)
            ids = listed.stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True,
                               timeout=120)
                removed += len(ids)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"warning: could not remove containers labelled {label}: {exc}",
                  file=sys.stderr)
    return removed


def health(nodes: list[Daemon]) -> str:
    """One line per daemon: process, API, and the exceptions its stderr reports."""
    lines = []
    for daemon in nodes:
        process = "running" if daemon.running else f"EXITED {daemon.returncode}"
        try:
            api = "API ok" if daemon.api("/api/v1/agent/alive", timeout=5) else "API ?"
        except Exception as exc:  # refused or timed out: that is the finding
            api = f"API DOWN ({type(exc).__name__})"
        errors = Counter()
        text = daemon.stderr.splitlines()
        for index, line in enumerate(text):
            if line.startswith("Traceback") or "Exception Group Traceback" in line:
                for later in text[index + 1:]:
                    if later and not later[0].isspace() and not later.startswith("Traceback"):
                        errors[later.strip()[:110]] += 1
                        break
        found = "; ".join(f"{n}x {e}" for e, n in errors.most_common(3)) or "no tracebacks"
        lines.append(f"    {daemon.name}: {process}, {api}; stderr: {found}")
    return "\n".join(lines)


# -- jobs through the API ----------------------------------------------------------------


def submit(api_url: str) -> tuple[str, float, float]:
    """PUT one job; (job ID, wall time before, wall time after)."""
    before = time.time()
    answer = http("PUT", f"{api_url}{API}/jobs", JOB_BODY)
    return answer["JobID"], before, time.time()


def api_job(api_url: str) -> tuple[float, str, float, float]:
    """PUT, then GET every 20 ms until terminal: (seconds, job ID, t_put, t_seen) (wall)."""
    start = time.perf_counter()
    job_id, t_put, _ = submit(api_url)
    deadline = start + JOB_TIMEOUT
    while True:
        state = http("GET", f"{api_url}{API}/jobs/{job_id}")["Job"]["State"]
        if state["StateType"] in TERMINAL:
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"job {job_id} still {state['StateType']} after {JOB_TIMEOUT}s")
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - start
    if state["StateType"] != "Completed":
        raise BenchError(f"job {job_id} ended {state['StateType']}: {state.get('Message')}")
    return elapsed, job_id, t_put, time.time()


@dataclass
class Timeline:
    """A job's milestones (ms since the epoch) from its history; the execution that ran."""

    marks: dict[str, float]
    node: str | None
    executions: int
    retries: int

    @classmethod
    def of(cls, history: list[dict[str, Any]]) -> Timeline:
        marks: dict[str, float] = {}
        by_execution: dict[str, dict[str, float]] = {}
        nodes: dict[str, str] = {}
        retries = 0
        for item in history:
            ms = datetime.fromisoformat(item["Time"].replace("Z", "+00:00")).timestamp() * 1e3
            message = item["Event"]["Message"]
            if item["Type"] == "JobLevel":
                key = {"Pending": "created", "Completed": "job_done",
                       "Failed": "job_done"}.get(item["JobState"]["New"])
                if key:
                    marks.setdefault(key, ms)
                continue
            execution = item["ExecutionID"]
            key = {"BidAccepted": "accepted", "Running": "running",
                   "Publishing": "container_done",
                   "Completed": "exec_done"}.get(
                execution_state_name(item["ExecutionState"]["New"]))
            if key:
                by_execution.setdefault(execution, {}).setdefault(key, ms)
            if message.startswith("bid accepted from "):
                nodes[execution] = message.rsplit(" ", 1)[1]
            if message.endswith("; placing it again"):  # see Requester._execution_lost
                retries += 1
        # The execution that completed (else the last one) stands for the job.
        chosen = next((e for e, m in by_execution.items() if "exec_done" in m),
                      next(reversed(by_execution), None))
        if chosen is not None:
            marks.update(by_execution[chosen])
        return cls(marks, nodes.get(chosen or ""), len(by_execution), retries)

    def spans(self) -> dict[str, float]:
        """Milliseconds of each phase that both its ends are known for."""
        pairs = [("created", "accepted"), ("accepted", "running"),
                 ("running", "container_done"), ("container_done", "exec_done"),
                 ("exec_done", "job_done"), ("created", "job_done")]
        return {name: self.marks[b] - self.marks[a]
                for name, (a, b) in zip(PHASES, pairs, strict=True)
                if a in self.marks and b in self.marks}


def fetch_all(fn: Callable[[str], Any], items: list[str], threads: int = 8) -> list[Any]:
    """``fn`` over ``items`` in threads; an item whose call fails gives None."""
    def safe(item: str) -> Any:
        try:
            return fn(item)
        except Exception:  # reported by the caller as "could not read"
            return None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(safe, items))


def print_phases(label: str, timelines: list[Timeline]) -> None:
    spans = [t.spans() for t in timelines]
    print(f"  {label}: phases from the job histories, ms (p50 / p95 / max, n={len(spans)})")
    for name in PHASES:
        values = [s[name] for s in spans if name in s]
        print(f"    {name:<26}{fmt(percentile(values, 0.5)):>7}{fmt(percentile(values, 0.95)):>7}"
              f"{fmt(max(values) if values else None):>7}")


def histories(node: Daemon, ids: list[str]) -> list[list[dict[str, Any]] | None]:
    return fetch_all(lambda j: node.api(f"{API}/jobs/{j}/history", timeout=HTTP_TIMEOUT)["Items"],
                     ids)


# -- (a) latency -------------------------------------------------------------------------


def measure_latency(nodes: list[Daemon], args: argparse.Namespace, tag: str) -> dict[str, Any]:
    node = nodes[0]
    port = str(node.api_port)
    py = sys.executable

    def cli() -> tuple[float, str | None, Any]:
        seconds, out = timed_run([py, "-m", "cli.main", "--api-port", port, "docker", "run",
                                  "--id-only", "--wait", "-p", "noop", "busybox", "--", "true"])
        return seconds, (out.split() or [""])[0], None

    def api() -> tuple[float, str | None, Any]:
        seconds, job_id, t_put, t_seen = api_job(node.api_url)
        return seconds, job_id, (t_put, t_seen)

    def cli_start() -> tuple[float, str | None, Any]:
        return timed_run([py, "-m", "cli.main", "--api-port", port, "id"])[0], None, None

    def docker() -> tuple[float, str | None, Any]:
        argv = ["docker", "run", "--rm", "--network", "none", "--label",
                f"{BENCH_LABEL}={tag}", "busybox", "true"]
        return timed_run(argv)[0], None, None

    kinds = {"cli": cli, "api": api, "cli-start": cli_start, "docker": docker}
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    failures: dict[str, list[str]] = {k: [] for k in kinds}
    job_ids: dict[str, list[str]] = {"cli": [], "api": []}
    client_times: dict[str, tuple[float, float]] = {}
    rng = random.Random(args.seed)
    rounds = args.warmup + args.runs
    window = CpuWindow({"daemons": [d.process.pid for d in nodes if d.process],
                        "dockerd+containerd": pids_named("dockerd", "containerd")}).start()
    for round_no in range(rounds):
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            try:
                seconds, job_id, times = kinds[kind]()
            except BenchError as exc:
                failures[kind].append(str(exc))
                print(f"  latency: {kind} failed: {exc}", file=sys.stderr, flush=True)
                if sum(map(len, failures.values())) > MAX_LATENCY_FAILURES:
                    raise BenchError(f"more than {MAX_LATENCY_FAILURES} latency samples "
                                     f"failed; last: {exc}") from None
                continue
            if round_no < args.warmup:
                continue
            samples[kind].append(seconds)
            if job_id:
                job_ids[kind].append(job_id)
            if times:
                client_times[job_id or ""] = times
        done = round_no + 1
        if done == args.warmup or done % 5 == 0 or done == rounds:
            print(f"  latency: {done}/{rounds} rounds ({min(done, args.warmup)} warm-up)",
                  file=sys.stderr, flush=True)
    window.stop()
    return {"samples": samples, "failures": failures, "job_ids": job_ids,
            "client_times": client_times, "window": window}


def report_latency(result: dict[str, Any], nodes: list[Daemon], args: argparse.Namespace,
                   ) -> bool:
    ms = {k: [v * 1000 for v in vs] for k, vs in result["samples"].items()}
    p50 = {k: percentile(v, 0.5) for k, v in ms.items()}
    p95 = {k: percentile(v, 0.95) for k, v in ms.items()}
    print(f"\n(a) latency of one `busybox true` job, {args.runs} runs each after "
          f"{args.warmup} warm-up rounds, interleaved (ms)")
    print(f"  {'':<44}{'p50':>7}{'p95':>7}{'min':>7}{'max':>7}"
          f"{'p50-docker':>11}{'p95-docker':>11}{'ratio p50':>10}{'failed':>7}")
    labels = {
        "docker": "docker run --rm --network none busybox true",
        "cli": "bacnode docker run --wait (CLI subprocess)",
        "api": "API: PUT + GET every 20 ms (in-process)",
        "cli-start": "CLI start-up alone (bacnode id: 1 GET)",
    }
    for kind in ("docker", "cli", "api", "cli-start"):
        values = ms[kind]
        line = (f"  {labels[kind]:<44}{fmt(p50[kind]):>7}{fmt(p95[kind]):>7}"
                f"{fmt(min(values, default=None)):>7}{fmt(max(values, default=None)):>7}")
        if kind in ("cli", "api") and values and ms["docker"]:
            line += (f"{fmt(p50[kind] - p50['docker'], '+.0f'):>11}"
                     f"{fmt(p95[kind] - p95['docker'], '+.0f'):>11}"
                     f"{fmt(p50[kind] / p50['docker'], '.2f', 'x'):>10}")
        else:
            line += " " * 32
        print(line + f"{len(result['failures'][kind]):>7}")
    for kind, messages in result["failures"].items():
        for message in messages[:2]:
            print(f"    {kind} failure: {message}")
    if None in (p50["cli"], p50["docker"], p50["api"], p50["cli-start"]):
        print("  target: not judged (a kind has no successful sample)")
        return False
    overhead = p50["cli"] - p50["docker"]
    met = overhead <= TARGET_OVERHEAD_P50_MS
    print(f"  target: CLI overhead over raw docker <= {TARGET_OVERHEAD_P50_MS:.0f} ms at p50: "
          f"{overhead:+.0f} ms -> {'MET' if met else 'NOT MET'}"
          f"  (through the API alone: {p50['api'] - p50['docker']:+.0f} ms)")
    residual = p50["cli"] - p50["api"] - p50["cli-start"]
    print(f"  CLI share at p50: cli - api = {p50['cli'] - p50['api']:+.0f} ms = start-up "
          f"(cli-start) {p50['cli-start']:.0f} ms {residual:+.0f} ms rest (mostly --wait "
          "polling: the CLI backs off from 50 ms x1.5 per GET, the API loop polls every 20 ms)")
    print(f"  {result['window'].describe()}")

    # Where the time goes, from the histories of the measured jobs.
    names = {d.peer_id: d.name for d in nodes}
    for kind in ("api", "cli"):
        ids = result["job_ids"][kind]
        found = histories(nodes[0], ids)
        timelines = [Timeline.of(h) for h in found if h is not None]
        print_phases(f"{kind} jobs", timelines)
        print(f"    ran on: {count(names.get(t.node or '', '?') for t in timelines)} (node1 "
              "is the requester: local there, over libp2p elsewhere); retries "
              f"{sum(t.retries for t in timelines)}; histories unreadable "
              f"{sum(h is None for h in found)}")
        if kind == "api":
            before, after = [], []
            for job_id, history in zip(ids, found, strict=True):
                if history is None:
                    continue
                marks = Timeline.of(history).marks
                t_put, t_seen = result["client_times"][job_id]
                if "created" in marks and "job_done" in marks:
                    before.append(marks["created"] - t_put * 1000)
                    after.append(t_seen * 1000 - marks["job_done"])
            print(f"    {'client PUT->created':<26}{fmt(percentile(before, 0.5)):>7}"
                  f"{fmt(percentile(before, 0.95)):>7}{fmt(max(before, default=None)):>7}")
            print(f"    {'job completed->client saw':<26}{fmt(percentile(after, 0.5)):>7}"
                  f"{fmt(percentile(after, 0.95)):>7}{fmt(max(after, default=None)):>7}"
                  "  (polls every 20 ms: ~10 ms of it is waiting for the next GET)")
    return met


# -- (b) throughput ----------------------------------------------------------------------


def list_states(api_url: str) -> dict[str, tuple[str, int]]:
    """{job ID: (state, modify time ns)} of every job node1 knows, all pages."""
    states: dict[str, tuple[str, int]] = {}
    token = ""
    while True:
        page = http("GET", f"{api_url}{API}/jobs?limit=1000"
                    + (f"&next_token={token}" if token else ""))
        for job in page["Items"]:
            states[job["ID"]] = (job["State"]["StateType"], job["ModifyTime"])
        token = page.get("NextToken") or ""
        if not token:
            return states


def measure_throughput(nodes: list[Daemon], args: argparse.Namespace) -> dict[str, Any]:
    node1 = nodes[0]
    url = node1.api_url
    window = CpuWindow({"daemons": [d.process.pid for d in nodes if d.process],
                        "dockerd+containerd": pids_named("dockerd", "containerd")})
    submitted: list[tuple[str, float, float]] = []
    errors: list[str] = []
    window.start()
    t_start = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.submitters) as pool:
        futures = [pool.submit(submit, url) for _ in range(args.jobs)]
        try:
            for future in concurrent.futures.as_completed(futures, timeout=args.timeout):
                try:
                    submitted.append(future.result())
                except Exception as exc:  # counted and shown: a refused submit is a result
                    errors.append(str(exc))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    t_submitted = time.time()
    first_put = min((s[1] for s in submitted), default=t_start)
    ids = {s[0] for s in submitted}
    print(f"  throughput: {len(submitted)} jobs submitted in {t_submitted - t_start:.1f} s "
          f"({len(errors)} refused); waiting for them to end", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.timeout
    states: dict[str, tuple[str, int]] = {}
    last_report = last_answer = time.monotonic()
    poll_errors: list[str] = []
    api_lost = False
    while True:
        try:
            states = {k: v for k, v in list_states(url).items() if k in ids}
            last_answer = time.monotonic()
        except BenchError as exc:
            poll_errors.append(str(exc))
            if time.monotonic() - last_answer > API_LOST_AFTER:
                api_lost = True
                break
        done = sum(1 for state, _ in states.values() if state in TERMINAL)
        if done == len(ids) or time.monotonic() > deadline:
            break
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  throughput: {done}/{len(ids)} terminal ({loadavg()} load)",
                  file=sys.stderr, flush=True)
        time.sleep(0.5)
    t_seen = time.time()
    window.stop()
    ordered = sorted(ids)
    executions = dict(zip(ordered, fetch_all(
        lambda j: node1.api(f"{API}/jobs/{j}/executions", timeout=HTTP_TIMEOUT)["Items"],
        ordered), strict=True))
    return {"submitted": submitted, "errors": errors, "first_put": first_put,
            "t_submitted": t_submitted, "t_seen": t_seen, "states": states, "ids": ids,
            "executions": executions, "histories": dict(zip(ordered, histories(node1, ordered),
                                                            strict=True)),
            "window": window, "poll_errors": poll_errors, "api_lost": api_lost,
            "health": health(nodes)}


def peak_running(timelines: Iterable[Timeline]) -> int:
    """Most executions between Running and the end of their container at one time."""
    edges = []
    for timeline in timelines:
        marks = timeline.marks
        if "running" in marks and "container_done" in marks:
            edges += [(marks["running"], 1), (marks["container_done"], -1)]
    peak = current = 0
    for _, delta in sorted(edges):
        current += delta
        peak = max(peak, current)
    return peak


def report_throughput(result: dict[str, Any], baselines: list[dict[str, Any]],
                      nodes: list[Daemon], args: argparse.Namespace) -> bool:
    ids = result["ids"]
    states = result["states"]
    job_states = Counter(states.get(j, ("unknown to node1", 0))[0] for j in ids)
    terminal_ns = [ns for state, ns in states.values() if state in TERMINAL]
    finished = len(terminal_ns)
    last_terminal = max(terminal_ns) / 1e9 if terminal_ns else result["t_seen"]
    elapsed = last_terminal - result["first_put"]
    rate = finished / elapsed if elapsed > 0 else 0.0
    names = {d.peer_id: d.name for d in nodes}
    exactly_one = 0
    problems: list[str] = []
    ran_on: list[str] = []
    per_job = Counter()
    for job_id in sorted(ids):
        items = result["executions"].get(job_id)
        if items is None:
            per_job["unreadable"] += 1
            continue
        per_job[f"{len(items)} exec"] += 1
        completed = [e for e in items if compute_state(e) == "Completed"]
        if len(completed) == 1:
            exactly_one += 1
            ran_on.append(names.get(completed[0]["NodeID"], "?"))
        elif len(problems) < 5:
            detail = [(compute_state(e), e["ComputeState"]["Message"][:80])
                      for e in items]
            problems.append(f"{job_id}: job {states.get(job_id, ('?',))[0]}, executions "
                            f"{detail}")
    timelines = [Timeline.of(h) for h in result["histories"].values() if h is not None]
    submit_ms = [(after - before) * 1000 for _, before, after in result["submitted"]]
    print(f"\n(b) throughput: {args.jobs} jobs PUT at once to node1 from {args.submitters} "
          "threads, busybox true, noop publisher")
    print(f"  submitted {len(result['submitted'])}, refused {len(result['errors'])}; last PUT "
          f"answered {result['t_submitted'] - result['first_put']:.1f} s after the first "
          f"(PUT p50 {fmt(percentile(submit_ms, 0.5))} ms, p95 "
          f"{fmt(percentile(submit_ms, 0.95))} ms)")
    lost = job_states["unknown to node1"]
    unfinished = [s for s in job_states.elements() if s not in TERMINAL and s != "unknown to node1"]
    other = finished - job_states["Completed"] - job_states["Failed"]
    print(f"  jobs: Completed {job_states['Completed']}, Failed {job_states['Failed']}, other "
          f"terminal {other}, not terminal {len(unfinished)} ({count(unfinished)}), lost (PUT "
          f"answered, unknown to node1) {lost}"
          + ("; node1's API STOPPED ANSWERING" if result["api_lost"] else ""))
    print(f"  exactly one Completed execution: {exactly_one}/{len(ids)} jobs; executions per "
          f"job: {count(per_job.elements())}; jobs with retries "
          f"{sum(1 for t in timelines if t.retries)}; completed on: {count(ran_on)}")
    for problem in problems:
        print(f"    problem: {problem}")
    for error in (result["errors"][:3] + result["poll_errors"][:3]):
        print(f"    error: {error}")
    print(f"  {finished} jobs terminal {elapsed:.1f} s after the first submit: "
          f"{rate:.2f} jobs/s; peak containers running at once {peak_running(timelines)}")
    print(f"  {result['window'].describe()}")
    print_phases("throughput jobs", timelines)
    for baseline in baselines:
        ratio = rate / baseline["rate"] if baseline["rate"] else 0.0
        print(f"  baseline, dockerd alone at concurrency {baseline['concurrency']}: "
              f"{baseline['n']} containers in {baseline['seconds']:.1f} s = "
              f"{baseline['rate']:.2f}/s (each p50 {baseline['p50']:.0f} ms, p95 "
              f"{baseline['p95']:.0f} ms; failed {baseline['failed']}); "
              f"bacnode/dockerd = {ratio:.2f}")
        print(f"    {baseline['window'].describe()}")
    print("  daemons after (b):\n" + result["health"])
    return (job_states.get("Completed", 0) == len(ids) == args.jobs
            and exactly_one == len(ids))


# -- baseline: dockerd alone --------------------------------------------------------------


def docker_baseline(n: int, concurrency: int, workdir: Path, tag: str,
                    timeout: float) -> dict[str, Any]:
    """``n`` containers with the executor's recipe, ``concurrency`` at a time (docker-py)."""
    import docker
    from docker.types import LogConfig, Mount

    client = docker.from_env(timeout=int(JOB_TIMEOUT), max_pool_size=concurrency * 2 + 4)
    stop = threading.Event()

    def one(index: int) -> float:
        if stop.is_set():
            raise BenchError("stopped")
        outputs = workdir / f"c{concurrency}-{index}"
        outputs.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        host_config = client.api.create_host_config(
            mounts=[Mount(target="/outputs", source=str(outputs), type="bind")],
            network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"],
            privileged=False, pids_limit=1024, log_config=LogConfig(type="none"),
        )
        container = client.api.create_container(
            "busybox", command=["true"], labels={BENCH_LABEL: tag}, host_config=host_config,
            stdin_open=False, tty=False,
        )["Id"]
        try:
            stream = client.api.attach(container, stdout=True, stderr=True, stream=True,
                                       logs=False, demux=True)
            try:
                client.api.start(container)
                for _ in stream:
                    pass
            finally:
                stream.close()
            code = client.api.wait(container, timeout=JOB_TIMEOUT)["StatusCode"]
        finally:
            client.api.remove_container(container, force=True, v=True)
        if code != 0:
            raise BenchError(f"container exited {code}")
        return time.perf_counter() - began

    window = CpuWindow({"dockerd+containerd": pids_named("dockerd", "containerd")}).start()
    durations: list[float] = []
    failed = 0
    start = time.perf_counter()
    pool = concurrent.futures.ThreadPoolExecutor(concurrency)
    try:
        futures = [pool.submit(one, i) for i in range(n)]
        for future in concurrent.futures.as_completed(futures, timeout=timeout):
            try:
                durations.append(future.result())
            except Exception:  # counted: a failed container is a result
                failed += 1
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()
    seconds = time.perf_counter() - start
    window.stop()
    ms = [d * 1000 for d in durations]
    return {"n": n, "concurrency": concurrency, "seconds": seconds,
            "rate": len(durations) / seconds, "p50": percentile(ms, 0.5) or 0.0,
            "p95": percentile(ms, 0.95) or 0.0, "failed": failed, "window": window}


# -- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20,
                        help="measured latency runs per kind (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="latency warm-up rounds (default 3)")
    parser.add_argument("--jobs", type=int, default=200,
                        help="jobs of the throughput test (default 200)")
    parser.add_argument("--submitters", type=int, default=16,
                        help="threads PUTting the throughput jobs (default 16)")
    parser.add_argument("--baseline-concurrency", default="6,24",
                        help="comma-separated concurrencies of the dockerd-alone baseline "
                        "(default 6,24; 0: none)")
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="the daemons' --heartbeat-seconds (default 1, the daemon's own)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds the throughput jobs (and each baseline) may take "
                        "(default 600)")
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="bound on the whole run (default 1800)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the interleaving order")
    parser.add_argument("--skip", choices=["latency", "throughput"], action="append",
                        default=[], help="leave out a part (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state)")
    parser.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args()
    if args.runs < 1 or args.jobs < 1 or args.warmup < 0 or args.submitters < 1:
        parser.error("--runs, --jobs and --submitters must be >= 1, --warmup >= 0")
    try:
        args.concurrencies = [int(c) for c in args.baseline_concurrency.split(",") if int(c) > 0]
    except ValueError:
        parser.error("--baseline-concurrency takes integers, e.g. 6 or 6,24")
    return args


def preflight() -> None:
    try:
        result = subprocess.run(["docker", "image", "inspect", "busybox:latest"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"the docker CLI does not answer: {exc}") from None
    if result.returncode != 0:
        raise BenchError("image busybox:latest is missing; build it with "
                         "`python3 -m scripts.services image`")


def run(args: argparse.Namespace, root: Path, tag: str, node_ids: list[str]) -> bool:
    """Both parts; True when every target was met. ``node_ids`` is filled for cleanup."""
    targets_met = True
    preflight()
    t0 = time.monotonic()
    throughput: dict[str, Any] | None = None
    with devnet(root, args.heartbeat) as nodes:
        node_ids.extend(d.peer_id for d in nodes)
        print(f"devnet: 3 daemons up and meshed in {time.monotonic() - t0:.1f} s (heartbeat "
              f"{args.heartbeat:g} s; node1 API {nodes[0].api_url}); load average {loadavg()}",
              flush=True)
        if "latency" not in args.skip:
            latency = measure_latency(nodes, args, tag)
            targets_met &= report_latency(latency, nodes, args)
            print(f"  daemons after (a):\n{health(nodes)}")
            print(f"  load average after (a): {loadavg()}", flush=True)
        if "throughput" not in args.skip:
            print(f"\nload average before (b): {loadavg()}", flush=True)
            throughput = measure_throughput(nodes, args)
            print(f"  load average after the bacnode part of (b): {loadavg()}", flush=True)
    if throughput is not None:
        # dockerd alone, once the daemons are gone so that they cannot compete with it.
        baselines = []
        for concurrency in args.concurrencies:
            print(f"  baseline: {args.jobs} containers, concurrency {concurrency}",
                  file=sys.stderr, flush=True)
            baselines.append(docker_baseline(args.jobs, concurrency, root / "baseline",
                                             tag, args.timeout))
        targets_met &= report_throughput(throughput, baselines, nodes, args)
        print(f"  load average at the end: {loadavg()}")
    return targets_met


def main() -> int:
    args = parse_args()

    def on_signal(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM" if signum == signal.SIGTERM else
                          f"--max-seconds {args.max_seconds:g} reached")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.max_seconds)
    tag = f"jobs-{os.getpid()}-{int(time.time())}"
    root = Path(tempfile.mkdtemp(prefix="bacnode-bench-jobs-"))
    node_ids: list[str] = []
    ok = targets_met = False
    began = time.monotonic()
    print(f"bench/jobs.py: {os.cpu_count()} cores, load average {loadavg()} at start; "
          f"python {sys.version.split()[0]}; temp dir {root}", flush=True)
    try:
        targets_met = run(args, root, tag, node_ids)
        ok = True
    except BenchError as exc:
        print(f"bench/jobs.py: error: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"bench/jobs.py: interrupted ({str(exc) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
    except Exception:  # a bug here or a surprise from a daemon: show it, then clean up
        traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with signals_deferred():
            labels = [f"{BENCH_LABEL}={tag}"] + [f"bacnode.node={n}" for n in node_ids]
            removed = remove_containers(labels)
            if removed:
                print(f"removed {removed} leftover container(s)", file=sys.stderr)
            if ok and not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                print(f"logs and data kept in {root}", file=sys.stderr)
    print(f"total {time.monotonic() - began:.0f} s")
    if not ok:
        return 1
    return 2 if args.check and not targets_met else 0


if __name__ == "__main__":
    sys.exit(main())
