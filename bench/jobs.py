"""Job benchmark: bacnode beside the real Bacalhau v1.9.3, in the same run on the same machine.

Run from anywhere: ``.venv/bin/python bench/jobs.py [--runs 20] [--burst 50] [--noop-jobs 300]
[--rounds 3] [--json PATH] [--check] [--keep]``. It takes about 2 minutes with the defaults.

It starts, all on 127.0.0.1 and side by side (they share the machine's cores):

- **Bacalhau**: one ``bacalhau serve --orchestrator --compute`` node
  (``scripts/bacalhau_node.py``), with busybox pushed to a local registry as
  ``127.0.0.1:PORT/busybox:bench``: Bacalhau bids only on an image with a registry digest;
- **bacnode 1 node**: one ``python -m node serve`` daemon (``scripts/daemons.py``);
- **bacnode 3 nodes**: a devnet of three daemons, nodes 2 and 3 bootstrapping to node 1,
  ``--heartbeat-seconds 1``; everything goes through node 1 once it lists all 3 CONNECTED.

bacnode runs ``busybox:latest`` directly (the same image content). Then, in this order, with
a wait between parts until every job of the previous part is terminal and no container of
ours runs:

1. **Idle RSS**: ``VmRSS`` (``/proc/PID/status``) of every daemon and of ``bacalhau serve``
   after 10 s idle, before any job. Target: each bacnode daemon <= Bacalhau.
2. **CLI start-up**: p50 wall time of ``bacnode version`` and ``bacnode list`` (against the
   1-node daemon; ``version`` asks the daemon too) and of ``bacalhau version`` and
   ``bacalhau job list``, ``--runs`` each after 2 warm-up rounds, interleaved in a shuffled
   order every round. Target: <= 120 ms for bacnode.
3. **Latency** of one ``busybox true`` job as a user waits for it: the CLI's wall time of
   ``docker run --wait --id-only IMAGE -- true`` against Bacalhau, bacnode 1 node and node 1
   of bacnode 3 nodes, beside raw ``docker run --rm --network none busybox true``; ``--runs``
   samples each after 2 warm-up rounds, the kinds shuffled every round so that drifting
   machine load hits them alike. p50/p95 and the overhead over raw docker (p50 difference).
   Target: bacnode's overhead <= Bacalhau's, on 1 and on 3 nodes. Where the time goes: the
   phases of the job histories (``GET /api/v1/orchestrator/jobs/{id}/history``: created ->
   bid accepted -> running -> container done -> completed) and the client's share (CLI wall
   time minus created -> job completed), of which the CLI start-up (part 2's ``version``).
4. **Burst**: ``--burst`` ``busybox true`` jobs PUT at once (``PUT /api/v1/orchestrator/jobs``,
   body ``{"Job": {...}}``, the same shape for both systems) from one thread per job; the time
   from the first PUT to the last job's terminal state (the server's ``ModifyTime``), for
   Bacalhau, bacnode 1 node and bacnode 3 nodes. Also the peak number of their containers
   running at once (dockerd polled every 100 ms, by each system's container label) and whether
   every job ended Completed with exactly one Completed execution, and where the machine's
   CPU went until the last job ended: the system's daemons, this benchmark, the rest (dockerd,
   containerd, shims, runc). ``--rounds`` rounds, each system once a round in a shuffled
   order; the table gives the medians. Target: bacnode <= Bacalhau.
5. **No-op throughput**: ``--noop-jobs`` jobs with the noop engine and publisher PUT from 16
   threads; jobs/s from the first PUT to the last terminal state, and the rate of the PUTs
   alone, in ``--rounds`` interleaved rounds (median). Target: >= 100 jobs/s through node 1
   of bacnode 3 nodes (the 1-node daemon is measured too). Bacalhau is probed with one noop
   job first and measured only if it runs it (v1.9.3's compute node does not: "does not
   support noop, only docker, wasm").

A final table puts the figures side by side with the targets, then the load average and how
much CPU *other* processes used during the run (processes that are neither ours, nor dockerd,
containerd and their shims; approximate: a process that ends is counted in its parent once
reaped, with all its CPU time): with a busy host the figures are only comparable within this run;
compare runs only from a quiet machine.

Everything is bounded (every subprocess, HTTP call and wait has a timeout; the whole run stops
after ``--max-seconds``). Daemons, Bacalhau and the registry are stopped and every container
of this run removed (by label) at the end, on error, on Ctrl-C and on SIGTERM; the temp dir
(logs, data) is removed unless ``--keep`` or the run failed. Exit status: 0 when the run
completed, 1 on error, 2 with ``--check`` when a target is missed. Everything started gets
``AWS_EC2_METADATA_DISABLED=true``, and nothing talks to anything but 127.0.0.1.
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
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http import client as http_client
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Set before anything starts: the daemons and Bacalhau (boto3, the AWS SDK) would otherwise ask
# the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from bench._cleanup import Interrupted, signals_deferred  # noqa: E402
from protocol.states import execution_state_name  # noqa: E402
from scripts.bacalhau_node import BacalhauNode, bacalhau_node, local_registry  # noqa: E402
from scripts.daemons import Daemon, DaemonPool, wait_until  # noqa: E402
from scripts.daemons import child_env as daemon_child_env  # noqa: E402

API = "/api/v1/orchestrator"
TERMINAL = {"Completed", "Failed", "Stopped", "Cancelled"}
BENCH_LABEL = "bacnode.bench"
#: Docker labels the systems put on their job containers (key; the value names the node).
BACNODE_LABEL = "bacnode.node"
BACALHAU_LABEL = "bacalhau-executor"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGET_CLI_MS = 120.0
TARGET_NOOP_RATE = 100.0
WARMUP_ROUNDS = 2
IDLE_SECONDS = 10.0
HEARTBEAT = 1.0
NOOP_THREADS = 16
MAX_BURST_THREADS = 64
DOCKER_POLL_S = 0.1
#: Bounds of single steps (seconds); generous for a loaded 2-core machine.
JOB_TIMEOUT = 120.0
HTTP_TIMEOUT = 30.0
#: How often a burst lists its jobs to see whether all have ended. The time is taken from
#: the servers' ModifyTime, not from the poll, so polling more often would only load the
#: server being measured.
STATE_POLL_SECONDS = 1.0
START_TIMEOUT = 120.0
MESH_TIMEOUT = 60.0
SETTLE_TIMEOUT = 120.0
STOP_GRACE = 10.0
MAX_FAILURES = 10
#: Other processes using more than this share of one core on average make the host "busy".
BUSY_CORES = 0.10

#: Phases of a job's history, (name, from mark, to mark); Timeline.spans gives those known.
PHASES = [
    ("created->bid accepted", "created", "accepted"),
    ("accepted->running", "accepted", "running"),
    ("running->container done", "running", "container_done"),
    ("container done->exec completed", "container_done", "exec_done"),
    ("running->exec completed", "running", "exec_done"),
    ("exec completed->job completed", "exec_done", "job_done"),
    ("created->job completed", "created", "job_done"),
]

KINDS = {  # latency kinds, in the order they are printed
    "docker": "raw docker run --rm --network none",
    "bacalhau": "Bacalhau (1 node)",
    "bacnode1": "bacnode 1 node",
    "bacnode3": "bacnode 3 nodes (node 1)",
}


class BenchError(Exception):
    """The benchmark could not run (or one sample failed); the message says why."""


# -- small helpers ---------------------------------------------------------------------------


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


def stats(samples: list[float]) -> dict[str, Any]:
    """p50/p95/min/max of ``samples`` (ms), and the samples themselves, for the JSON."""
    return {"p50": percentile(samples, 0.5), "p95": percentile(samples, 0.95),
            "min": min(samples, default=None), "max": max(samples, default=None),
            "n": len(samples), "samples": [round(s, 1) for s in samples]}


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def rss_mib(pid: int) -> float | None:
    """``VmRSS`` of ``pid`` in MiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# One kept-alive connection per thread and server, as real API clients (Bacalhau's
# included) keep theirs: a new TCP connection per call would measure connection set-up.
# Straight to the address given, so no proxy from the environment ever sees this traffic.
_CONNECTIONS = threading.local()


def _connection(host: str, port: int, timeout: float) -> http_client.HTTPConnection:
    pool = getattr(_CONNECTIONS, "pool", None)
    if pool is None:
        pool = _CONNECTIONS.pool = {}
    connection = pool.get((host, port))
    if connection is None:
        connection = pool[(host, port)] = http_client.HTTPConnection(host, port, timeout=timeout)
    connection.timeout = timeout
    return connection


def http(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> Any:
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    for attempt in (1, 2):
        connection = _connection(parts.hostname or "127.0.0.1", parts.port or 80, timeout)
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (http_client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            connection.close()  # the server closed a kept-alive connection: one new try
            if attempt == 2:
                raise BenchError(f"{method} {url}: {exc}") from None
            continue
        except (OSError, http_client.HTTPException) as exc:  # refused, timed out
            connection.close()
            raise BenchError(f"{method} {url}: {exc}") from None
        if response.status >= 400:
            detail = payload.decode(errors="replace")[:300]
            raise BenchError(f"{method} {url}: HTTP {response.status}: {detail}")
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise BenchError(f"{method} {url}: {exc}") from None
    raise AssertionError("unreachable")


def fetch_all(fn: Callable[[str], Any], items: list[str], threads: int = 8) -> list[Any]:
    """``fn`` over ``items`` in threads; an item whose call fails gives None."""
    def safe(item: str) -> Any:
        try:
            return fn(item)
        except Exception:  # reported by the caller as "could not read"
            return None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(safe, items))


def count(items: Iterable[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(items).items())) or "-"


def progress(message: str) -> None:
    """Progress goes to stderr, so that stdout holds the results alone."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- other processes' CPU: is the host quiet? ------------------------------------------------

#: dockerd and its helpers work for every system here (and for anyone's containers).
DOCKER_INFRA = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
                "containerd-shim-runc-v1", "runc", "docker-init", "docker-proxy"}


def process_table() -> dict[int, tuple[int, str, float]]:
    """{pid: (parent pid, command name, CPU s including reaped children)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is None:
            continue  # exited meanwhile
        name, fields = stat
        # utime, stime, cutime, cstime: the children's share comes in once they are reaped.
        ticks = sum(int(v) for v in fields[11:15])
        table[int(entry)] = (int(fields[1]), name, ticks / CLK_TCK)
    return table


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """``pid``'s command name and the fields of /proc/PID/stat after it (state first), or
    None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 2:].split()


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent on anything but idling since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    ticks = [int(v) for v in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def own_cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of ``pids`` (all their threads), not their children's."""
    total = 0.0
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None:
            total += (int(stat[1][11]) + int(stat[1][12])) / CLK_TCK
    return total


@dataclass
class CpuWatch:
    """Where the machine's CPU went between ``start()`` and ``stop()``: the system's own
    daemons, this benchmark (its PUT and polling threads), and the rest, which in a burst
    is dockerd, containerd, the shims and runc starting the containers."""

    pids: list[int]
    machine: float = 0.0
    daemons: float = 0.0
    bench: float = 0.0

    def start(self) -> CpuWatch:
        self.machine = -machine_busy_seconds()
        self.daemons = -own_cpu_seconds(self.pids)
        self.bench = -sum(os.times()[:2])
        return self

    def stop(self) -> CpuWatch:
        self.machine += machine_busy_seconds()
        self.daemons += own_cpu_seconds(self.pids)
        self.bench += sum(os.times()[:2])
        return self

    def as_json(self, jobs: int) -> dict[str, float]:
        rest = self.machine - self.daemons - self.bench
        return {"machine_s": round(self.machine, 2), "daemons_s": round(self.daemons, 2),
                "bench_s": round(self.bench, 2), "rest_s": round(rest, 2),
                "daemons_ms_per_job": round(1000 * self.daemons / max(jobs, 1), 1),
                "rest_ms_per_job": round(1000 * rest / max(jobs, 1), 1)}


def foreign(table: dict[int, tuple[int, str, float]]) -> dict[int, tuple[str, float]]:
    """The processes that are neither this benchmark's (its descendants), nor docker's (and
    the containers' processes below it), nor the init process or kernel threads."""
    mine = os.getpid()
    result = {}
    for pid, (_, name, cpu) in table.items():
        ancestor, excluded = pid, False
        for _ in range(64):  # walk up to init; bounded in case of a cycle from pid reuse
            if ancestor == mine or table.get(ancestor, (0, "", 0.0))[1] in DOCKER_INFRA:
                excluded = True
                break
            ancestor = table.get(ancestor, (0, "", 0.0))[0]
            if ancestor <= 2:
                break
        if not excluded and pid > 2 and table[pid][0] != 2:
            result[pid] = (name, cpu)
    return result


def command_line(pid: int, width: int = 60) -> str:
    """The start of ``pid``'s command line, to tell the user which work was in the way."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "(exited)"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return f"({text[:width]}{'...' if len(text) > width else ''})"


@dataclass
class HostWatch:
    """CPU seconds used by other processes between ``start()`` and ``stop()``."""

    loadavg_start: str = ""
    begin: dict[int, tuple[str, float]] = field(default_factory=dict)
    t0: float = 0.0
    other_cpu: float = 0.0
    wall: float = 0.0
    top: list[tuple[str, float]] = field(default_factory=list)

    def start(self) -> HostWatch:
        self.loadavg_start = loadavg()
        self.begin = foreign(process_table())
        self.t0 = time.monotonic()
        return self

    def stop(self) -> HostWatch:
        end = foreign(process_table())
        self.wall = time.monotonic() - self.t0
        used = Counter()
        for pid, (name, cpu) in end.items():
            # A process that appeared meanwhile counts whole; a pid reused by another
            # process (cpu went down) too.
            before = self.begin.get(pid, (name, 0.0))[1]
            used[f"{name}[{pid}]"] = cpu - before if cpu >= before else cpu
        self.other_cpu = sum(used.values())
        self.top = [(f"{k} {command_line(int(k.rsplit('[', 1)[1][:-1]))}", round(v, 1))
                    for k, v in used.most_common(3) if v >= 0.5]
        return self

    @property
    def busy(self) -> bool:
        start_load = float(self.loadavg_start.split()[0]) if self.loadavg_start else 0.0
        return self.other_cpu / max(self.wall, 1e-9) > BUSY_CORES or start_load > 1.0


# -- commands --------------------------------------------------------------------------------


@dataclass
class Command:
    """A CLI command line with the environment and directory it runs in."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path

    def run(self, timeout: float = JOB_TIMEOUT) -> tuple[float, str]:
        """Run it; (wall seconds, stdout). Raises BenchError on a non-zero exit."""
        start = time.perf_counter()
        try:
            result = subprocess.run(self.argv, cwd=self.cwd, env=self.env, capture_output=True,
                                    text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{self}` took more than {timeout:.0f}s") from None
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise BenchError(f"`{self}` exited {result.returncode}: "
                             f"{(result.stderr or result.stdout).strip()[-300:]}")
        return elapsed, result.stdout

    def __str__(self) -> str:
        return " ".join([Path(self.argv[0]).name, *self.argv[1:]])


def bacnode_env() -> dict[str, str]:
    env = daemon_child_env()  # without BACNODE_* overrides, AWS metadata off
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@dataclass
class System:
    """One of the three systems jobs are sent to: its API, CLI, image and container label."""

    key: str
    title: str
    api_url: str
    cli_prefix: list[str]
    env: dict[str, str]
    cwd: Path
    #: The image the system's jobs run: Bacalhau's needs a registry digest.
    image: str
    #: What ``docker run --wait --id-only ... -- true`` needs besides the image.
    run_options: list[str]
    label_key: str
    label_values: set[str]
    pids: list[int]

    def cli(self, *args: str) -> Command:
        return Command([*self.cli_prefix, *args], self.env, self.cwd)

    def run_command(self) -> Command:
        return self.cli("docker", "run", "--wait", "--id-only", *self.run_options, self.image,
                        "--", "true")

    def job_body(self, noop: bool) -> dict[str, Any]:
        engine = ({"Type": "noop"} if noop else
                  {"Type": "docker", "Params": {"Image": self.image, "Parameters": ["true"]}})
        return {"Job": {"Type": "batch", "Count": 1, "Tasks": [
            {"Name": "main", "Engine": engine, "Publisher": {"Type": "noop"}}]}}

    def submit(self, noop: bool) -> tuple[str, float, float]:
        """PUT one job; (job ID, wall time before, wall time after)."""
        before = time.time()
        answer = http("PUT", f"{self.api_url}{API}/jobs", self.job_body(noop))
        return answer["JobID"], before, time.time()

    def job(self, job_id: str) -> dict[str, Any]:
        return http("GET", f"{self.api_url}{API}/jobs/{job_id}")["Job"]

    def history(self, job_id: str) -> list[dict[str, Any]]:
        return http("GET", f"{self.api_url}{API}/jobs/{job_id}/history")["Items"]

    def executions(self, job_id: str) -> list[dict[str, Any]]:
        return http("GET", f"{self.api_url}{API}/jobs/{job_id}/executions")["Items"]

    def job_states(self) -> dict[str, tuple[str, int]]:
        """{job ID: (state, modify time ns)} of every job the API lists, all pages."""
        states: dict[str, tuple[str, int]] = {}
        token = ""
        for _ in range(1000):  # bounded: 1000 pages of 1000 jobs
            page = http("GET", f"{self.api_url}{API}/jobs?limit=1000"
                        + (f"&next_token={token}" if token else ""))
            for job in page.get("Items") or []:
                states[job["ID"]] = (job["State"]["StateType"], int(job["ModifyTime"]))
            token = page.get("NextToken") or ""
            if not token:
                break
        return states


def docker_client() -> Any:
    import docker  # lazy: only the burst and the clean-up need it

    return docker.from_env(timeout=30)


def running_containers(client: Any, systems: Iterable[System]) -> int:
    """How many containers of ``systems`` are running now (by their label and node)."""
    total = 0
    for system in systems:
        for container in client.api.containers(filters={"label": system.label_key}):
            if (container.get("Labels") or {}).get(system.label_key) in system.label_values:
                total += 1
    return total


# -- job histories ---------------------------------------------------------------------------


def parse_time(value: str) -> float:
    """An API time (RFC 3339, up to nanoseconds) in ms since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e3


@dataclass
class Timeline:
    """A job's milestones (ms since the epoch) from its history; the execution that ran."""

    marks: dict[str, float]
    node: str | None
    executions: int
    retries: int

    @classmethod
    def of(cls, history: list[dict[str, Any]]) -> Timeline:
        """From a bacnode history (states named in ``JobState``/``ExecutionState``), else
        from a Bacalhau one (``of_bacalhau``)."""
        if not any("JobState" in item or "ExecutionState" in item for item in history):
            return cls.of_bacalhau(history)
        marks: dict[str, float] = {}
        by_execution: dict[str, dict[str, float]] = {}
        nodes: dict[str, str] = {}
        retries = 0
        for item in history:
            ms = parse_time(item["Time"])
            message = item["Event"]["Message"]
            if item["Type"] == "JobLevel":
                key = {"Pending": "created", "Completed": "job_done",
                       "Failed": "job_done"}.get((item.get("JobState") or {}).get("New"))
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

    @classmethod
    def of_bacalhau(cls, history: list[dict[str, Any]]) -> Timeline:
        """Bacalhau v1.9.3's history has events only (no states): "Job submitted",
        "Requested execution on N" (taken as the bid accepted: the node was chosen),
        the execution's "Running" and "Completed successfully", the job's NewState. It has
        no event for the container's end, so those two phases stay unknown."""
        marks: dict[str, float] = {}
        executions: set[str] = set()
        node = None
        for item in history:
            ms = parse_time(item["Time"])
            event = item.get("Event") or {}
            message = event.get("Message", "")
            new_state = (event.get("Details") or {}).get("NewState")
            if item["Type"] == "JobLevel":
                if event.get("Topic") == "Submission":
                    marks.setdefault("created", ms)
                elif new_state in ("Completed", "Failed"):
                    marks.setdefault("job_done", ms)
                continue
            executions.add(item.get("ExecutionID", ""))
            if message.startswith("Requested execution on "):
                marks.setdefault("accepted", ms)
                node = message.rsplit(" ", 1)[1]
            elif message == "Running":
                marks.setdefault("running", ms)
            elif message.startswith("Completed"):
                marks.setdefault("exec_done", ms)
        return cls(marks, node, len(executions), 0)

    def spans(self) -> dict[str, float]:
        """Milliseconds of each phase that both its ends are known for."""
        return {name: self.marks[b] - self.marks[a] for name, a, b in PHASES
                if a in self.marks and b in self.marks}


def phase_table(timelines: dict[str, list[Timeline]]) -> dict[str, dict[str, float | None]]:
    """{phase: {system: p50 ms}} over the timelines of each system."""
    return {name: {key: percentile([t.spans()[name] for t in found if name in t.spans()], 0.5)
                   for key, found in timelines.items()}
            for name, _, _ in PHASES}


# -- starting everything ---------------------------------------------------------------------


def bacnode_system(key: str, title: str, node1: Daemon, nodes: list[Daemon],
                   bacnode: Path) -> System:
    return System(
        key=key, title=title, api_url=node1.api_url,
        cli_prefix=[str(bacnode), "--api-port", str(node1.api_port)], env=bacnode_env(),
        cwd=REPO_ROOT, image="busybox", run_options=["-p", "noop"], label_key=BACNODE_LABEL,
        label_values={d.peer_id for d in nodes},
        pids=[d.process.pid for d in nodes if d.process])


def bacalhau_system(node: BacalhauNode, image: str) -> System:
    env = dict(node.env)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return System(
        key="bacalhau", title="Bacalhau", api_url=node.api_url, cli_prefix=[str(node.binary)],
        env=env, cwd=node.workdir, image=image, run_options=[], label_key=BACALHAU_LABEL,
        label_values={f"bacalhau-{node.name}"}, pids=[node.pid])


def start_all(stack: contextlib.ExitStack, root: Path) -> tuple[dict[str, System],
                                                                 dict[str, list[Daemon]]]:
    """Bacalhau (with the registry), bacnode 1 node and the 3-node devnet, all ready."""
    bacnode = Path(sys.executable).with_name("bacnode")
    if not bacnode.is_file():
        raise BenchError(f"{bacnode} is missing: install the package into the venv")
    check = subprocess.run(["docker", "image", "inspect", "busybox:latest"],
                           capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise BenchError("image busybox:latest is missing; build it with "
                         "`python3 -m scripts.services image`")
    pool = DaemonPool(root / "bacnode")
    # Stopped last-in first-out by the stack; signals held so a Ctrl-C cannot cut it short.
    stack.callback(_close_pool, pool)
    solo = pool.new("solo", heartbeat=HEARTBEAT)
    node1 = pool.new("node1", heartbeat=HEARTBEAT)
    devnet = [node1, pool.new("node2", peers=[node1], heartbeat=HEARTBEAT),
              pool.new("node3", peers=[node1], heartbeat=HEARTBEAT)]
    daemons = [solo, *devnet]
    for daemon in daemons:
        _ = daemon.peer_id  # the key exists before a peer names it
    for daemon in daemons:  # launched now, waited for after Bacalhau: start-up overlaps
        daemon.launch()
    t0 = time.monotonic()
    image = stack.enter_context(local_registry())
    node = stack.enter_context(bacalhau_node(root / "bacalhau", timeout=START_TIMEOUT))
    progress(f"Bacalhau up in {node.startup_seconds:.1f} s (image {image})")
    for daemon in daemons:
        daemon.wait_ready(START_TIMEOUT)
    wait_until(lambda: len(node1.connected()) == 3, MESH_TIMEOUT, interval=0.2,
               what="node 1 listing all 3 nodes CONNECTED")
    progress(f"bacnode daemons up, the devnet meshed, {time.monotonic() - t0:.1f} s")
    systems = {
        "bacalhau": bacalhau_system(node, image),
        "bacnode1": bacnode_system("bacnode1", "bacnode 1 node", solo, [solo], bacnode),
        "bacnode3": bacnode_system("bacnode3", "bacnode 3 nodes", node1, devnet, bacnode),
    }
    return systems, {"bacnode1": [solo], "bacnode3": devnet}


def _close_pool(pool: DaemonPool) -> None:
    with signals_deferred():
        pool.close(grace=STOP_GRACE)


def nodes_not_idle(system: System) -> list[str]:
    """Why ``system``'s orchestrator does not see its compute nodes idle yet (none: it does).
    Right after a burst Bacalhau's node can still report its capacity taken, and its
    orchestrator then fails new jobs at once ("not enough nodes to run job ... node busy")
    rather than queue them: a burst measured then would say nothing of its speed."""
    try:
        nodes = http("GET", f"{system.api_url}{API}/nodes").get("Nodes") or []
    except BenchError as exc:
        return [f"nodes not read: {exc}"]
    reasons = []
    for node in nodes:
        info = (node.get("Info") or {}).get("ComputeNodeInfo") or {}
        if not info:
            continue
        name = (node.get("Info") or {}).get("NodeID", "?")[:16]
        free = float((info.get("AvailableCapacity") or {}).get("CPU") or 0)
        total = float((info.get("MaxCapacity") or {}).get("CPU") or 0)
        if info.get("RunningExecutions") or info.get("EnqueuedExecutions") or free < total - 1e-6:
            reasons.append(f"node {name} reports {info.get('RunningExecutions', 0)} running, "
                           f"{info.get('EnqueuedExecutions', 0)} queued, CPU {free:g} of "
                           f"{total:g} free")
    return reasons


def settle(systems: Iterable[System], client: Any, what: str) -> None:
    """Wait (bounded) until every job of ``systems`` is terminal, none of their containers
    runs and their orchestrators see their compute nodes idle, so that one part's leftovers
    do not load (or turn away) the next."""
    systems = list(systems)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        busy = []
        for system in systems:
            try:
                states = system.job_states()
            except BenchError as exc:
                busy.append(f"{system.title}: {exc}")
                continue
            pending = sum(1 for state, _ in states.values() if state not in TERMINAL)
            if pending:
                busy.append(f"{system.title}: {pending} jobs not terminal")
        running = running_containers(client, systems)
        if running:
            busy.append(f"{running} containers running")
        for system in systems:
            busy.extend(f"{system.title}: {why}" for why in nodes_not_idle(system))
        if not busy:
            return
        if time.monotonic() > deadline:
            print(f"  warning: after {what}, still {'; '.join(busy)} after "
                  f"{SETTLE_TIMEOUT:.0f} s; going on")
            return
        time.sleep(0.5)


# -- 1. idle RSS -----------------------------------------------------------------------------


def measure_idle_rss(systems: dict[str, System], daemons: dict[str, list[Daemon]],
                     ) -> dict[str, Any]:
    progress(f"idle {IDLE_SECONDS:.0f} s before reading RSS")
    time.sleep(IDLE_SECONDS)
    result: dict[str, Any] = {"bacalhau": rss_mib(systems["bacalhau"].pids[0])}
    for key, nodes in daemons.items():
        result[key] = {d.name: rss_mib(d.process.pid) for d in nodes if d.process}
    print(f"\n1. idle RSS after {IDLE_SECONDS:.0f} s idle, no job yet (VmRSS, MiB)")
    print(f"  bacalhau serve (orchestrator+compute): {fmt(result['bacalhau'], '.1f')}")
    for key in daemons:
        each = ", ".join(f"{name} {fmt(v, '.1f')}" for name, v in result[key].items())
        print(f"  {systems[key].title}: {each}")
    return result


# -- 2. CLI start-up -------------------------------------------------------------------------


def interleaved(kinds: dict[str, Callable[[], tuple[float, str | None]]], runs: int, seed: int,
                what: str) -> tuple[dict[str, list[float]], dict[str, list[tuple[str, float]]],
                                    dict[str, list[str]]]:
    """Run every kind once per round in a shuffled order; ``WARMUP_ROUNDS`` rounds first.
    Returns, by kind: the ms samples, (job ID, ms) of the samples that made a job, failures."""
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    ids: dict[str, list[tuple[str, float]]] = {k: [] for k in kinds}
    failures: dict[str, list[str]] = {k: [] for k in kinds}
    rng = random.Random(seed)
    rounds = WARMUP_ROUNDS + runs
    for round_no in range(rounds):
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            try:
                seconds, job_id = kinds[kind]()
            except BenchError as exc:
                failures[kind].append(str(exc))
                progress(f"{what}: {kind} failed: {exc}")
                if sum(map(len, failures.values())) > MAX_FAILURES:
                    raise BenchError(f"more than {MAX_FAILURES} {what} samples failed; "
                                     f"last: {exc}") from None
                continue
            if round_no >= WARMUP_ROUNDS:
                samples[kind].append(seconds * 1000)
                if job_id:
                    ids[kind].append((job_id, seconds * 1000))
        if (round_no + 1) % 5 == 0 or round_no + 1 == rounds:
            progress(f"{what}: {round_no + 1}/{rounds} rounds ({WARMUP_ROUNDS} warm-up)")
    return samples, ids, failures


def measure_cli(systems: dict[str, System], runs: int, seed: int) -> dict[str, Any]:
    bacalhau, bacnode = systems["bacalhau"], systems["bacnode1"]
    commands = {
        "bacalhau version": bacalhau.cli("version"),
        "bacalhau job list": bacalhau.cli("job", "list"),
        "bacnode version": bacnode.cli("version"),
        "bacnode list": bacnode.cli("list"),
    }
    kinds = {name: (lambda c=command: (c.run(HTTP_TIMEOUT)[0], None))
             for name, command in commands.items()}
    samples, _, failures = interleaved(kinds, runs, seed, "CLI start-up")
    result = {name: {**stats(samples[name]), "failed": len(failures[name]),
                     "command": str(commands[name])} for name in commands}
    print(f"\n2. CLI start-up, {runs} runs each after {WARMUP_ROUNDS} warm-up rounds, "
          "interleaved (wall ms; both ask their server)")
    print(f"  {'':<20}{'p50':>7}{'p95':>7}{'min':>7}{'failed':>7}")
    for name, item in result.items():
        print(f"  {name:<20}{fmt(item['p50']):>7}{fmt(item['p95']):>7}"
              f"{fmt(item['min']):>7}{item['failed']:>7}")
    print(f"  ({commands['bacnode list']}: the 1-node daemon; Bacalhau's CLI: its own node)")
    return result


# -- 3. latency ------------------------------------------------------------------------------


def measure_latency(systems: dict[str, System], runs: int, seed: int, tag: str,
                    cli_start: dict[str, float | None]) -> dict[str, Any]:
    docker = Command(["docker", "run", "--rm", "--network", "none", "--label",
                      f"{BENCH_LABEL}={tag}", "busybox", "true"], bacnode_env(), REPO_ROOT)

    def job_kind(system: System) -> Callable[[], tuple[float, str | None]]:
        command = system.run_command()

        def run() -> tuple[float, str | None]:
            seconds, out = command.run()
            lines = out.strip().splitlines()
            return seconds, lines[-1].strip() if lines else None
        return run

    kinds: dict[str, Callable[[], tuple[float, str | None]]] = {
        "docker": lambda: (docker.run()[0], None)}
    kinds.update({key: job_kind(systems[key]) for key in ("bacalhau", "bacnode1", "bacnode3")})
    samples, ids, failures = interleaved(kinds, runs, seed + 1, "latency")

    # Every measured job must have completed; then its history says where the time went.
    timelines: dict[str, list[Timeline]] = {}
    client_share: dict[str, list[float]] = {}
    not_completed: dict[str, list[str]] = {}
    for key in ("bacalhau", "bacnode1", "bacnode3"):
        system = systems[key]
        job_ids = [job_id for job_id, _ in ids[key]]
        jobs = fetch_all(system.job, job_ids)
        not_completed[key] = [f"{j}: {job['State']['StateType'] if job else 'unreadable'}"
                              for j, job in zip(job_ids, jobs, strict=True)
                              if not job or job["State"]["StateType"] != "Completed"]
        found = fetch_all(system.history, job_ids)
        timelines[key] = []
        client_share[key] = []
        for (_, wall_ms), history in zip(ids[key], found, strict=True):
            if not history:
                continue
            timeline = Timeline.of(history)
            timelines[key].append(timeline)
            # What the user waits beyond the server's created -> completed, job by job.
            server_ms = timeline.spans().get("created->job completed")
            if server_ms is not None:
                client_share[key].append(wall_ms - server_ms)
    result: dict[str, Any] = {k: {**stats(samples[k]), "failed": len(failures[k])}
                              for k in kinds}
    docker_p50 = result["docker"]["p50"]
    for key in ("bacalhau", "bacnode1", "bacnode3"):
        p50 = result[key]["p50"]
        result[key]["overhead_p50"] = (None if p50 is None or docker_p50 is None
                                       else p50 - docker_p50)
        result[key]["not_completed"] = not_completed[key]
        result[key]["client_share_p50"] = percentile(client_share[key], 0.5)
    result["phases_p50"] = phase_table(timelines)
    result["cli_start_p50"] = cli_start

    print(f"\n3. latency of one `busybox true` job: CLI `docker run --wait --id-only IMAGE -- "
          f"true`, {runs} runs each after {WARMUP_ROUNDS} warm-up rounds, interleaved (wall ms)")
    print(f"  {'':<38}{'p50':>7}{'p95':>7}{'min':>7}{'max':>7}{'p50-docker':>12}{'failed':>7}")
    for key, title in KINDS.items():
        item = result[key]
        overhead = fmt(item.get("overhead_p50"), "+.0f") if key != "docker" else ""
        print(f"  {title:<38}{fmt(item['p50']):>7}{fmt(item['p95']):>7}{fmt(item['min']):>7}"
              f"{fmt(item['max']):>7}{overhead:>12}{item['failed']:>7}")
    for key, messages in failures.items():
        for message in messages[:2]:
            print(f"    {key} failure: {message}")
    for key, bad in not_completed.items():
        if bad:
            print(f"    {key}: {len(bad)} jobs not Completed, e.g. {bad[:2]}")
    print("  where the time goes, p50 ms (phases from the job histories; Bacalhau's history "
          "has\n  no container-done event, and its 'bid accepted' is \"Requested execution "
          "on\")")
    print(f"  {'':<38}{'Bacalhau':>10}{'bacnode 1':>11}{'bacnode 3':>11}")
    keys = ("bacalhau", "bacnode1", "bacnode3")
    for name, values in result["phases_p50"].items():
        print(f"  {name:<38}" + "".join(f"{fmt(values[k]):>{w}}"
                                        for k, w in zip(keys, (10, 11, 11), strict=True)))
    print(f"  {'client: CLI wall - created->completed':<38}"
          + "".join(f"{fmt(result[k]['client_share_p50']):>{w}}"
                    for k, w in zip(keys, (10, 11, 11), strict=True)))
    print(f"  {'  of which CLI start-up (version, 2.)':<38}"
          + "".join(f"{fmt(cli_start.get(k)):>{w}}"
                    for k, w in zip(keys, (10, 11, 11), strict=True)))
    return result


# -- 4. burst and 5. no-op throughput --------------------------------------------------------


class ContainerPeak:
    """Polls dockerd every 100 ms in a thread: the most containers of ``system`` at once."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.peak = 0
        self.polls = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="container-peak", daemon=True)

    def _run(self) -> None:
        client = docker_client()  # its own connection: the main thread's is busy elsewhere
        try:
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, running_containers(client, [self.system]))
                    self.polls += 1
                except Exception as exc:  # noted in the report; polling goes on
                    self.error = str(exc)[:200]
                self._stop.wait(DOCKER_POLL_S)
        finally:
            client.close()

    def __enter__(self) -> ContainerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def burst(system: System, n: int, threads: int, noop: bool, timeout: float) -> dict[str, Any]:
    """PUT ``n`` jobs from ``threads`` threads, wait (bounded) until all are terminal, check
    each has exactly one Completed execution."""
    what = f"{'noop' if noop else 'burst'} {system.title}"
    submitted: list[tuple[str, float, float]] = []
    errors: list[str] = []
    # No-op jobs start no container: polling dockerd then would only add load.
    peak = ContainerPeak(system) if not noop else None
    cpu = CpuWatch(system.pids).start()
    with peak or contextlib.nullcontext(), concurrent.futures.ThreadPoolExecutor(threads) as pool:
        t_start = time.time()
        futures = [pool.submit(system.submit, noop) for _ in range(n)]
        try:
            for future in concurrent.futures.as_completed(futures, timeout=timeout):
                try:
                    submitted.append(future.result())
                except Exception as exc:  # counted and shown: a refused PUT is a result
                    errors.append(str(exc))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        first_put = min((s[1] for s in submitted), default=t_start)
        last_answer = max((s[2] for s in submitted), default=time.time())
        ids = {s[0] for s in submitted}
        progress(f"{what}: {len(ids)} jobs PUT in {last_answer - first_put:.2f} s "
                 f"({len(errors)} refused); waiting for them to end")
        deadline = time.monotonic() + timeout
        states: dict[str, tuple[str, int]] = {}
        poll_errors: list[str] = []
        last_report = time.monotonic()
        while True:
            try:
                states = {k: v for k, v in system.job_states().items() if k in ids}
            except BenchError as exc:
                poll_errors.append(str(exc))
            done = sum(1 for state, _ in states.values() if state in TERMINAL)
            if done == len(ids) or time.monotonic() > deadline:
                break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                progress(f"{what}: {done}/{len(ids)} terminal (load {loadavg()})")
            time.sleep(STATE_POLL_SECONDS)
        t_seen = time.time()
        cpu.stop()
    terminal_ns = [ns for state, ns in states.values() if state in TERMINAL]
    job_states = Counter(states.get(j, ("unlisted", 0))[0] for j in ids)
    all_terminal = len(terminal_ns) == len(ids) == n
    # The server's time of the last terminal state, not when the 200 ms poll saw it.
    last_terminal = max(terminal_ns) / 1e9 if all_terminal else t_seen
    seconds = last_terminal - first_put
    ordered = sorted(ids)
    found = fetch_all(system.executions, ordered)
    per_job = Counter()
    exactly_one = 0
    problems = []
    for job_id, items in zip(ordered, found, strict=True):
        if items is None:
            per_job["unreadable"] += 1
            continue
        completed = [e for e in items if compute_state(e) == "Completed"]
        per_job[f"{len(items)} exec"] += 1
        if len(completed) == 1 and states.get(job_id, ("",))[0] == "Completed":
            exactly_one += 1
        elif len(problems) < 3:
            detail = [(compute_state(e), e["ComputeState"].get("Message", "")[:80])
                      for e in items]
            try:
                why = system.job(job_id)["State"].get("Message", "").strip()[:200]
            except BenchError as exc:
                why = f"(not read: {exc})"
            problems.append(f"{job_id}: job {states.get(job_id, ('?',))[0]} ({why}), "
                            f"executions {detail}")
    return {
        "jobs": n, "submitted": len(ids), "refused": len(errors), "errors": errors[:3],
        "submit_seconds": last_answer - first_put,
        "submit_rate": len(ids) / max(last_answer - first_put, 1e-9),
        "seconds": seconds if all_terminal else None,
        "rate": n / seconds if all_terminal and seconds > 0 else None,
        "states": dict(job_states), "exactly_once": exactly_one,
        "all_completed_once": exactly_one == n, "executions_per_job": dict(per_job),
        "problems": problems, "poll_errors": poll_errors[:3],
        "peak_containers": peak.peak if peak else None,
        "peak_error": peak.error if peak else None, "timed_out": not all_terminal,
        "cpu": cpu.as_json(n),
    }


def compute_state(execution: dict[str, Any]) -> str:
    """An API execution's state by name (both send Bacalhau's number)."""
    state = execution["ComputeState"]["StateType"]
    return state if isinstance(state, str) else execution_state_name(state)


def print_burst(result: dict[str, Any], title: str) -> None:
    seconds = result["seconds"]
    timing = (f"all terminal {seconds:.2f} s after the first PUT ({result['rate']:.1f} jobs/s)"
              if seconds is not None else "NOT ALL TERMINAL within the timeout")
    peak = ("" if result["peak_containers"] is None
            else f"; peak containers at once {result['peak_containers']}")
    print(f"  {title:<18}{timing}; PUTs {result['submit_seconds']:.2f} s "
          f"({result['submit_rate']:.0f}/s, refused {result['refused']}){peak}")
    print(f"  {'':<18}jobs: {count(Counter(result['states']).elements())}; exactly one "
          f"Completed execution: {result['exactly_once']}/{result['jobs']}")
    for line in result["problems"] + result["errors"] + result["poll_errors"]:
        print(f"  {'':<18}problem: {line}")
    cpu = result["cpu"]
    print(f"  {'':<18}CPU until then: machine {cpu['machine_s']:.1f} s; the daemons "
          f"{cpu['daemons_s']:.2f} s ({cpu['daemons_ms_per_job']:.1f} ms a job), this bench "
          f"{cpu['bench_s']:.2f} s, the rest {cpu['rest_s']:.1f} s "
          f"({cpu['rest_ms_per_job']:.0f} ms a job)")
    if result["peak_error"]:
        print(f"  {'':<18}container polling: {result['peak_error']}")


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's rounds of a burst as one result: the median time and rate of the rounds
    in which every job Completed exactly once (a round whose jobs failed says nothing of the
    speed: its failures are reported, and the exactly-once check fails), every job of every
    round checked, the highest peak, the median CPU a job; each round kept under "rounds"."""
    good = [r for r in rounds if r["all_completed_once"] and r["seconds"] is not None]

    def median(name: str) -> float | None:
        return percentile([r[name] for r in good], 0.5) if good else None

    jobs = sum(r["jobs"] for r in rounds)
    peaks = [r["peak_containers"] for r in rounds if r["peak_containers"] is not None]
    return {
        "jobs": rounds[0]["jobs"], "rounds": rounds, "rounds_counted": len(good),
        "seconds": median("seconds"), "rate": median("rate"),
        "seconds_range": ([min(r["seconds"] for r in good), max(r["seconds"] for r in good)]
                          if good else None),
        "submit_rate": median("submit_rate"),
        "exactly_once": sum(r["exactly_once"] for r in rounds), "jobs_all_rounds": jobs,
        "all_completed_once": all(r["all_completed_once"] for r in rounds),
        "peak_containers": max(peaks) if peaks else None,
        "cpu": {name: percentile([r["cpu"][name] for r in good or rounds], 0.5)
                for name in rounds[0]["cpu"]},
    }


def print_combined(result: dict[str, Any], title: str) -> None:
    rounds = result["rounds"]
    if len(rounds) < 2:
        return
    if result["seconds"] is None:
        print(f"  {title:<18}no round in which every job Completed exactly once")
        return
    low, high = result["seconds_range"]
    counted = result["rounds_counted"]
    left_out = (f" (left out: {len(rounds) - counted} round(s) whose jobs did not all "
                "complete exactly once)" if counted < len(rounds) else "")
    print(f"  {title:<18}median of {counted} rounds{left_out} {result['seconds']:.2f} s "
          f"({result['rate']:.1f} jobs/s; {low:.2f}-{high:.2f} s); daemons' CPU "
          f"{result['cpu']['daemons_ms_per_job']:.1f} ms a job")


def interleaved_bursts(systems: dict[str, System], keys: list[str], n: int, threads: int,
                       noop: bool, rounds: int, seed: int, timeout: float, client: Any,
                       what: str) -> dict[str, Any]:
    """``rounds`` rounds, each system once a round in a shuffled order, so that a machine
    that speeds up or slows down during the run weighs on every system alike."""
    order = random.Random(seed)
    per_system: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for number in range(1, rounds + 1):
        shuffled = keys[:]
        order.shuffle(shuffled)
        if rounds > 1:
            print(f"  round {number} of {rounds}: {', '.join(systems[k].title for k in shuffled)}")
        for key in shuffled:
            result = burst(systems[key], n, threads, noop, timeout)
            per_system[key].append(result)
            print_burst(result, systems[key].title)
            settle(systems.values(), client, f"the {systems[key].title} {what}")
    combined = {key: combine_rounds(per_system[key]) for key in keys}
    for key in keys:
        print_combined(combined[key], systems[key].title)
    return combined


def measure_bursts(systems: dict[str, System], n: int, rounds: int, seed: int, timeout: float,
                   client: Any) -> dict[str, Any]:
    threads = min(n, MAX_BURST_THREADS)
    print(f"\n4. burst: {n} `busybox true` jobs PUT at once ({threads} threads), until every "
          f"job is terminal (the server's ModifyTime); {rounds} round(s), median")
    return interleaved_bursts(systems, ["bacalhau", "bacnode1", "bacnode3"], n, threads,
                              False, rounds, seed, timeout, client, "burst")


def measure_noop(systems: dict[str, System], n: int, rounds: int, seed: int, timeout: float,
                 client: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    print(f"\n5. no-op throughput: {n} jobs with the noop engine and publisher, PUT from "
          f"{NOOP_THREADS} threads; {rounds} round(s), median")
    # Bacalhau first gets one noop job: only if it runs it is the burst worth measuring.
    bacalhau = systems["bacalhau"]
    def terminal_state(job_id: str) -> dict[str, Any] | None:
        state = bacalhau.job(job_id)["State"]
        return state if state["StateType"] in TERMINAL else None

    try:
        job_id = bacalhau.submit(noop=True)[0]
        state = wait_until(lambda: terminal_state(job_id), 30.0, interval=0.2,
                           what="Bacalhau's noop probe job")
        refused = (None if state["StateType"] == "Completed"
                   else f"{state['StateType']}: {state.get('Message', '').strip()}")
    except (BenchError, AssertionError) as exc:
        refused = f"probe failed: {exc}"
    if refused:
        results["bacalhau"] = {"noop_refused": refused}
        print(f"  {'Bacalhau':<18}does not run noop jobs: {refused.splitlines()[-1].strip()}")
    keys = ["bacnode1", "bacnode3"] if refused else ["bacalhau", "bacnode1", "bacnode3"]
    results.update(interleaved_bursts(systems, keys, n, NOOP_THREADS, True, rounds, seed,
                                      timeout, client, "no-op jobs"))
    return results


# -- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    docker: str = ""
    bacalhau: str = ""
    bacnode1: str = ""
    bacnode3: str = ""
    target: str = ""
    met: bool | None = None


def le(a: float | None, b: float | None) -> bool | None:
    """a <= b, or None (not judged) when a figure is missing."""
    return None if a is None or b is None else a <= b


def both(*values: bool | None) -> bool | None:
    """Met when all are; missed when one is; not judged when one is missing and none missed."""
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def table_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    rss = results["idle_rss_mib"]
    worst1 = max((v for v in rss["bacnode1"].values() if v is not None), default=None)
    worst3 = max((v for v in rss["bacnode3"].values() if v is not None), default=None)
    rows.append(Row("idle RSS per daemon, MiB (max)", "", fmt(rss["bacalhau"], ".1f"),
                    fmt(worst1, ".1f"), fmt(worst3, ".1f"), "bacnode <= Bacalhau",
                    both(le(worst1, rss["bacalhau"]), le(worst3, rss["bacalhau"]))))
    cli = results["cli_ms"]
    version, listing = cli["bacnode version"]["p50"], cli["bacnode list"]["p50"]
    rows.append(Row("CLI `version` p50, ms", "", fmt(cli["bacalhau version"]["p50"]),
                    fmt(version), "", f"bacnode <= {TARGET_CLI_MS:.0f}",
                    le(version, TARGET_CLI_MS)))
    rows.append(Row("CLI `list` / `job list` p50, ms", "", fmt(cli["bacalhau job list"]["p50"]),
                    fmt(listing), "", f"bacnode <= {TARGET_CLI_MS:.0f}",
                    le(listing, TARGET_CLI_MS)))
    lat = results["latency_ms"]
    rows.append(Row("latency `docker run --wait` p50, ms", fmt(lat["docker"]["p50"]),
                    fmt(lat["bacalhau"]["p50"]), fmt(lat["bacnode1"]["p50"]),
                    fmt(lat["bacnode3"]["p50"])))
    rows.append(Row("latency p95, ms", fmt(lat["docker"]["p95"]), fmt(lat["bacalhau"]["p95"]),
                    fmt(lat["bacnode1"]["p95"]), fmt(lat["bacnode3"]["p95"])))
    over = {k: lat[k]["overhead_p50"] for k in ("bacalhau", "bacnode1", "bacnode3")}
    rows.append(Row("latency overhead over docker p50, ms", "0", fmt(over["bacalhau"], "+.0f"),
                    fmt(over["bacnode1"], "+.0f"), fmt(over["bacnode3"], "+.0f"),
                    "bacnode <= Bacalhau",
                    both(le(over["bacnode1"], over["bacalhau"]),
                         le(over["bacnode3"], over["bacalhau"]))))
    b = results["burst"]
    n = b["bacalhau"]["jobs"]
    rounds = len(b["bacalhau"]["rounds"])
    of_rounds = f" (median of {rounds})" if rounds > 1 else " to all terminal"
    secs = {k: b[k]["seconds"] for k in b}

    def median_cell(item: dict[str, Any], name: str) -> str:
        """The median, and how many rounds it is of when some were left out."""
        counted = item.get("rounds_counted", rounds)
        return fmt(item.get(name), ".2f" if name == "seconds" else ".1f") + (
            f" ({counted}/{rounds})" if counted < rounds else "")

    rows.append(Row(f"burst of {n} jobs, s{of_rounds}", "",
                    *(median_cell(b[k], "seconds") for k in ("bacalhau", "bacnode1",
                                                             "bacnode3")),
                    "bacnode <= Bacalhau",
                    both(le(secs["bacnode1"], secs["bacalhau"]),
                         le(secs["bacnode3"], secs["bacalhau"]))))
    rows.append(Row("burst: daemons' CPU, ms a job", "",
                    *(fmt(b[k]["cpu"]["daemons_ms_per_job"], ".1f")
                      for k in ("bacalhau", "bacnode1", "bacnode3"))))
    rows.append(Row("burst: other CPU (docker), ms a job", "",
                    *(fmt(b[k]["cpu"]["rest_ms_per_job"], ".0f")
                      for k in ("bacalhau", "bacnode1", "bacnode3"))))
    rows.append(Row("burst: peak containers at once", "",
                    *(str(b[k]["peak_containers"]) for k in ("bacalhau", "bacnode1",
                                                               "bacnode3"))))
    once = {k: b[k]["all_completed_once"] for k in b}
    rows.append(Row("burst: all Completed exactly once", "",
                    *(f"{'yes' if once[k] else 'NO'} {b[k]['exactly_once']}/"
                      f"{b[k]['jobs_all_rounds']}"
                      for k in ("bacalhau", "bacnode1", "bacnode3")),
                    "bacnode: yes", once["bacnode1"] and once["bacnode3"]))
    noop = results["noop"]
    nn = noop["bacnode3"]["jobs"]

    def noop_cell(key: str, field_name: str) -> str:
        item = noop.get(key) or {}
        return "refused" if "noop_refused" in item else median_cell(item, field_name)

    rate3 = noop["bacnode3"]["rate"]
    rows.append(Row(f"no-op: {nn} jobs, jobs/s{of_rounds}", "", noop_cell("bacalhau", "rate"),
                    noop_cell("bacnode1", "rate"), noop_cell("bacnode3", "rate"),
                    f"3 nodes >= {TARGET_NOOP_RATE:.0f}",
                    both(le(TARGET_NOOP_RATE, rate3), noop["bacnode3"]["all_completed_once"])))
    rows.append(Row("no-op: PUTs alone, jobs/s", "", noop_cell("bacalhau", "submit_rate"),
                    noop_cell("bacnode1", "submit_rate"), noop_cell("bacnode3", "submit_rate")))
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [40, 11, 10, 15, 16]  # the measure left-aligned, figures right-aligned

    def line(cells: list[str]) -> str:
        figures = "".join(f"{c:>{w}}" for c, w in zip(cells[1:5], widths[1:], strict=True))
        return f"{cells[0]:<{widths[0]}}{figures}  {cells[5]:<22}{cells[6]}".rstrip()

    print("\n" + line(["measure", "raw docker", "Bacalhau", "bacnode 1 node", "bacnode 3 nodes",
                       "target", "met?"]))
    print("-" * 126)
    for row in rows:
        met = {True: "MET", False: "NOT MET", None: "not judged" if row.target else ""}
        print(line([row.measure, row.docker, row.bacalhau, row.bacnode1, row.bacnode3,
                    row.target, met[row.met]]))


# -- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20,
                        help="measured rounds of the latency and CLI parts (default 20)")
    parser.add_argument("--burst", type=int, default=50,
                        help="jobs PUT at once in the burst part (default 50)")
    parser.add_argument("--noop-jobs", type=int, default=300,
                        help="jobs of the no-op throughput part (default 300)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the burst and no-op parts, each system once a round "
                             "in a shuffled order; the median is compared (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds one burst (or no-op batch) may take (default 300)")
    parser.add_argument("--max-seconds", type=float, default=1200.0,
                        help="bound on the whole run (default 1200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the interleaving order")
    parser.add_argument("--json", metavar="PATH", help="also write every number here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state)")
    parser.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args()
    if min(args.runs, args.burst, args.noop_jobs, args.rounds) < 1:
        parser.error("--runs, --burst, --noop-jobs and --rounds must be >= 1")
    return args


def run(args: argparse.Namespace, root: Path, tag: str, results: dict[str, Any],
        cleanup_labels: list[str]) -> bool:
    """Every part, in order; True when every target was met. ``results`` is filled as the
    parts finish; ``cleanup_labels`` with the container labels of what was started."""
    with contextlib.ExitStack() as stack:
        systems, daemons = start_all(stack, root)
        for system in systems.values():
            cleanup_labels.extend(f"{system.label_key}={v}" for v in system.label_values)
        client = docker_client()
        stack.callback(client.close)
        results["idle_rss_mib"] = measure_idle_rss(systems, daemons)
        results["cli_ms"] = measure_cli(systems, args.runs, args.seed)
        cli_start = {"bacalhau": results["cli_ms"]["bacalhau version"]["p50"],
                     "bacnode1": results["cli_ms"]["bacnode version"]["p50"],
                     "bacnode3": results["cli_ms"]["bacnode version"]["p50"]}
        settle(systems.values(), client, "the CLI part")
        results["latency_ms"] = measure_latency(systems, args.runs, args.seed, tag, cli_start)
        settle(systems.values(), client, "the latency part")
        results["burst"] = measure_bursts(systems, args.burst, args.rounds, args.seed,
                                          args.timeout, client)
        results["noop"] = measure_noop(systems, args.noop_jobs, args.rounds, args.seed,
                                       args.timeout, client)
    rows = table_rows(results)
    results["table"] = [vars(row) for row in rows]
    print_table(rows)
    return all(row.met is True for row in rows if row.target)


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
    labels = [f"{BENCH_LABEL}={tag}"]
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "cores": os.cpu_count(), "args": vars(args)}
    ok = targets_met = False
    began = time.monotonic()
    host = HostWatch().start()
    print(f"bench/jobs.py: {os.cpu_count()} cores, load average {host.loadavg_start} at "
          f"start; python {sys.version.split()[0]}; temp dir {root}", flush=True)
    try:
        targets_met = run(args, root, tag, results, labels)
        ok = True
    except BenchError as exc:
        print(f"bench/jobs.py: error: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"bench/jobs.py: interrupted ({str(exc) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
    except Exception:  # a bug here or a surprise from a system: show it, then clean up
        traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with signals_deferred():
            removed = remove_containers(labels)
            if removed:
                print(f"removed {removed} leftover container(s)", file=sys.stderr)
            if ok and not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                print(f"logs and data kept in {root}", file=sys.stderr)
    host.stop()
    results["host"] = {"loadavg_start": host.loadavg_start, "loadavg_end": loadavg(),
                       "other_cpu_seconds": round(host.other_cpu, 1),
                       "wall_seconds": round(host.wall, 1), "busy": host.busy,
                       "top_other": host.top}
    results["targets_met"] = targets_met
    print(f"\nload average {host.loadavg_start} at start, {loadavg()} at the end; other "
          f"processes used {host.other_cpu:.0f} CPU-s in {host.wall:.0f} s "
          f"({100 * host.other_cpu / max(host.wall, 1e-9):.0f}% of one core, "
          f"{os.cpu_count()} cores shared by all three systems)")
    if host.busy:
        top = ", ".join(f"{name} {cpu:.0f} s" for name, cpu in host.top)
        print(f"WARNING: the host was busy (other processes: {top}); compare these figures "
              "only within this run, and runs only from a quiet machine")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"numbers written to {args.json}")
    print(f"total {time.monotonic() - began:.0f} s")
    if not ok:
        return 1
    return 2 if args.check and not targets_met else 0


if __name__ == "__main__":
    sys.exit(main())
