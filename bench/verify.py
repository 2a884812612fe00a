"""What verification costs: ``docker run --wait --count 3 --verify`` beside ``--count 1`` and
a plain ``--count 3``, on one 3-node devnet, in the same run.

Run from anywhere: ``.venv/bin/python bench/verify.py [--runs 10] [--json PATH]``.

Three fresh daemons on loopback (node 1 the requester, all three compute nodes,
``--heartbeat-seconds 1``), once node 1 lists all three CONNECTED. Each kind of job runs
``--runs`` times after one warm-up round, interleaved in a shuffled order: busybox writing a
file to ``/outputs``, published with ``ipfs``. Reported per kind: the p50 and p95 of what a
user waits (the CLI's wall time) and of the server's created -> completed time (from the
job's ``ModifyTime`` and ``CreateTime``), and the ratio to ``--count 1``. The verified job's
extra time is the commit, the reveal round trip and the verdict; the plain ``--count 3`` shows
how much of it is running three containers at all. Every job must end Completed (and
Verified, for ``--verify``); the daemons are stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from scripts.daemons import DaemonPool, wait_until  # noqa: E402

KINDS = {
    "count 1": ["--count", "1"],
    "count 3": ["--count", "3"],
    "count 3 --verify": ["--count", "3", "--verify"],
}
SCRIPT = "echo 42 > /outputs/answer; echo done"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run_one(node: Any, flags: list[str]) -> tuple[float, float]:
    """(CLI wall seconds, server created -> last change seconds) of one job."""
    began = time.monotonic()
    result = node.cli("docker", "run", "--wait", "--id-only", *flags, "-p", "ipfs", "busybox",
                      "--", "sh", "-c", SCRIPT, timeout=180)
    wall = time.monotonic() - began
    if result.returncode != 0:
        raise RuntimeError(f"docker run {' '.join(flags)} failed: {result.stderr.strip()}")
    job_id = result.stdout.strip().splitlines()[0]
    job = json.loads(node.cli("describe", job_id, "--json").stdout)["Job"]
    state = job["State"]
    if state["StateType"] != "Completed" or (
            "--verify" in flags and state.get("Verification", {}).get("State") != "Verified"):
        raise RuntimeError(f"job {job_id} ended {state}")
    return wall, (job["ModifyTime"] - job["CreateTime"]) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="samples per kind")
    parser.add_argument("--seed", type=int, default=1, help="seed of the interleaving")
    parser.add_argument("--json", metavar="PATH", help="also write the samples here")
    args = parser.parse_args()
    if subprocess.run(["docker", "image", "inspect", "busybox:latest"],
                      capture_output=True).returncode != 0:
        sys.exit("image busybox:latest is missing: python3 -m scripts.services image")
    samples: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="bacnode-bench-verify-") as root, \
            DaemonPool(Path(root)) as pool:
        node1 = pool.new("node1", heartbeat=1)
        nodes = [node1, *(pool.new(f"node{i}", peers=[node1], heartbeat=1) for i in (2, 3))]
        pool.start_all(nodes)
        wait_until(lambda: len(node1.connected()) == 3, timeout=60, interval=0.2,
                   what="node 1 listing all 3 nodes CONNECTED")
        for flags in KINDS.values():  # warm-up: images, connections, caches
            run_one(node1, flags)
        order = [kind for kind in KINDS for _ in range(args.runs)]
        random.Random(args.seed).shuffle(order)
        for i, kind in enumerate(order, 1):
            samples[kind].append(run_one(node1, KINDS[kind]))
            print(f"\r  {i}/{len(order)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    base_wall = percentile([w for w, _ in samples["count 1"]], 0.5)
    base_server = percentile([s for _, s in samples["count 1"]], 0.5)
    print(f"{'job (busybox, -p ipfs, 3 nodes)':34} {'wall p50':>9} {'p95':>7} "
          f"{'server p50':>11} {'p95':>7} {'wall x':>7} {'server x':>9}")
    for kind, rows in samples.items():
        walls, servers = [w for w, _ in rows], [s for _, s in rows]
        print(f"{'docker run --wait ' + kind:34} {percentile(walls, 0.5) * 1000:7.0f}ms "
              f"{percentile(walls, 0.95) * 1000:5.0f}ms {percentile(servers, 0.5) * 1000:9.0f}ms "
              f"{percentile(servers, 0.95) * 1000:5.0f}ms "
              f"{percentile(walls, 0.5) / base_wall:6.2f}x "
              f"{percentile(servers, 0.5) / base_server:8.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (2 cores shared by the daemons, "
          "dockerd and this process)")
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
