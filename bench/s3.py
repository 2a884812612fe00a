"""S3 staging and publishing throughput against a local SeaweedFS, next to plain boto3.

Run: ``.venv/bin/python bench/s3.py [--big-mib 256] [--small-count 2000] [--runs 3]``.

Starts one SeaweedFS S3 server on 127.0.0.1 (``scripts.services.SeaweedS3``, temporary data
dir, stopped and removed at the end) and measures, each against a baseline run on the same
server, same objects, same machine:

1. staging one big object: ``S3Storage.stage`` vs boto3 ``download_file`` (default
   ``TransferConfig``: 8 MiB threshold/parts, 10 threads);
2. staging many 8 KiB objects under a prefix (``prefix/*``): ``S3Storage.stage`` vs
   ``list_objects_v2`` + a ``ThreadPoolExecutor(10)`` of ``get_object`` (10 = boto3's default
   ``max_pool_connections`` and ``TransferConfig.max_concurrency``), each written to a file;
3. publishing a results dir (one incompressible big file + stdout/stderr/exitCode) with
   ``Compress``: ``publish_s3`` vs ``tar czf`` (subprocess) + boto3 ``upload_file``.

Each measurement runs ``--runs`` times, ours and the baseline interleaved (the order flips
every round), and the best run of each is reported. ``S3Storage`` uses ``cache_dir=None`` so
every stage really downloads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The daemons and boto3 never ask the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import trio
from boto3.s3.transfer import TransferConfig

from node.publisher.s3 import publish_s3
from node.storage.s3 import S3Storage
from protocol.uris import parse_input
from scripts.services import SeaweedS3

MiB = 1024 * 1024
BUCKET = "bench"
BIG_KEY = "big/object.bin"
SMALL_PREFIX = "small"
SMALL_SIZE = 8 * 1024
BASELINE_WORKERS = 10  # boto3 default max_pool_connections / TransferConfig.max_concurrency


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(runs: int, ours: Callable[[], None], base: Callable[[], None],
               label: str) -> tuple[float, float, list[float], list[float]]:
    """Run both ``runs`` times, alternating which goes first; return (best ours, best base, all)."""
    ours_t: list[float] = []
    base_t: list[float] = []
    for r in range(runs):
        order = [("ours", ours, ours_t), ("base", base, base_t)]
        if r % 2:
            order.reverse()
        for name, fn, sink in order:
            t = timed(fn)
            sink.append(t)
            print(f"  [{label}] run {r + 1} {name:<4} {t:7.3f} s", flush=True)
    return min(ours_t), min(base_t), ours_t, base_t


def dir_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=256, help="big object / results size (MiB)")
    ap.add_argument("--small-count", type=int, default=2000, help="number of 8 KiB objects")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (best is kept)")
    args = ap.parse_args()
    big = args.big_mib * MiB
    n_small = args.small_count
    runs = args.runs

    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bacnode-bench-s3-"))
    try:
        with SeaweedS3() as s3:
            print(f"SeaweedFS S3 at {s3.endpoint} (started in {s3.start_seconds:.1f} s); "
                  f"work dir {work}; {os.cpu_count()} CPUs; best of {runs} interleaved runs",
                  flush=True)
            os.environ.update(s3.env())
            client = s3.client()
            client.create_bucket(Bucket=BUCKET)
            rows = []

            # -- setup (not timed) ------------------------------------------------------------
            big_src = work / "big.src"
            with open(big_src, "wb") as f:
                for _ in range(big // MiB):
                    f.write(os.urandom(MiB))
                f.write(os.urandom(big % MiB))
            t = timed(lambda: client.upload_file(str(big_src), BUCKET, BIG_KEY))
            print(f"setup: uploaded {args.big_mib} MiB object in {t:.1f} s", flush=True)

            def put(i: int) -> None:
                client.put_object(Bucket=BUCKET, Key=f"{SMALL_PREFIX}/obj-{i:06d}.bin",
                                  Body=os.urandom(SMALL_SIZE))

            def put_all() -> None:
                with ThreadPoolExecutor(32) as ex:
                    list(ex.map(put, range(n_small)))

            t = timed(put_all)
            print(f"setup: uploaded {n_small} x 8 KiB objects (32 threads) in {t:.1f} s",
                  flush=True)

            results_dir = work / "results"
            (results_dir / "outputs").mkdir(parents=True)
            shutil.move(str(big_src), results_dir / "outputs" / "data.bin")
            (results_dir / "stdout").write_text("hello from the job\n" * 100)
            (results_dir / "stderr").write_text("")
            (results_dir / "exitCode").write_text("0")
            _, results_bytes = dir_bytes(results_dir)

            storage = S3Storage(cache_dir=None)
            stage_root = work / "stage"
            stage_root.mkdir()

            def stage(uri: str, expect_files: int, expect_bytes: int) -> None:
                src = parse_input(uri)
                holder = trio.run(storage.stage, src, stage_root)
                got = dir_bytes(holder)
                shutil.rmtree(holder)
                if got != (expect_files, expect_bytes):
                    raise SystemExit(f"stage of {uri}: got {got}, want "
                                     f"{(expect_files, expect_bytes)}")

            # -- 1. one big object ------------------------------------------------------------
            print(f"\n1. staging 1 x {args.big_mib} MiB object", flush=True)
            base_dl = work / "base-big.bin"
            cfg = TransferConfig()

            def base_big() -> None:
                client.download_file(BUCKET, BIG_KEY, str(base_dl), Config=cfg)
                size = base_dl.stat().st_size
                base_dl.unlink()
                assert size == big, size

            o, b, _, _ = interleave(
                runs, lambda: stage(f"s3://{BUCKET}/{BIG_KEY}:/inputs", 1, big), base_big,
                "big")
            rows.append((f"stage 1 x {args.big_mib} MiB", "MiB/s",
                         big / MiB / o, big / MiB / b, "higher", 1.0,
                         f"{o:.2f} s vs {b:.2f} s"))

            # -- 2. many small objects --------------------------------------------------------
            print(f"\n2. staging {n_small} x 8 KiB objects ({SMALL_PREFIX}/*)", flush=True)
            small_dir = work / "base-small"

            def base_small() -> None:
                small_dir.mkdir()
                keys = []
                for page in client.get_paginator("list_objects_v2").paginate(
                        Bucket=BUCKET, Prefix=SMALL_PREFIX + "/"):
                    keys += [o["Key"] for o in page.get("Contents", [])]

                def get(key: str) -> None:
                    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    (small_dir / key.rsplit("/", 1)[1]).write_bytes(body)

                with ThreadPoolExecutor(BASELINE_WORKERS) as ex:
                    list(ex.map(get, keys))
                got = dir_bytes(small_dir)
                shutil.rmtree(small_dir)
                assert got == (n_small, n_small * SMALL_SIZE), got

            o, b, _, _ = interleave(
                runs,
                lambda: stage(f"s3://{BUCKET}/{SMALL_PREFIX}/*:/inputs", n_small,
                              n_small * SMALL_SIZE),
                base_small, "small")
            rows.append((f"stage {n_small} x 8 KiB", "obj/s", n_small / o, n_small / b,
                         "higher", 1.0,
                         f"{n_small * SMALL_SIZE / MiB / o:.1f} vs "
                         f"{n_small * SMALL_SIZE / MiB / b:.1f} MiB/s; {o:.2f} s vs {b:.2f} s"))

            # -- 3. publishing with Compress --------------------------------------------------
            print(f"\n3. publishing {args.big_mib} MiB of results, compressed", flush=True)
            tarball = work / "base.tar.gz"
            published: list[dict] = []

            def ours_pub() -> None:
                rec = trio.run(lambda: publish_s3(
                    {"Bucket": BUCKET, "Key": "pub/ours", "Compress": True}, results_dir,
                    job_id="j-bench", execution_id="e-bench", node_id="n-bench",
                    now=datetime.now(UTC)))
                published.append(rec)

            def base_pub() -> None:
                subprocess.run(["tar", "czf", str(tarball), "-C", str(results_dir), "."],
                               check=True)
                client.upload_file(str(tarball), BUCKET, "pub/base.tar.gz", Config=cfg)
                tarball.unlink()

            o, b, _, _ = interleave(runs, ours_pub, base_pub, "publish")
            key = published[-1]["S3"]["Key"]
            ours_size = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
            base_size = client.head_object(Bucket=BUCKET, Key="pub/base.tar.gz")["ContentLength"]
            print(f"  published s3://{BUCKET}/{key}: {ours_size / MiB:.1f} MiB; "
                  f"baseline tarball {base_size / MiB:.1f} MiB "
                  f"(results dir {results_bytes / MiB:.1f} MiB)", flush=True)
            rows.append((f"publish {args.big_mib} MiB (gz)", "seconds", o, b, "lower", 1.1,
                         f"{results_bytes / MiB / o:.1f} vs {results_bytes / MiB / b:.1f} "
                         f"MiB/s of input"))

            # -- table ------------------------------------------------------------------------
            print(f"\nResults (best of {runs} interleaved runs each; baseline on the same "
                  f"server and objects; small-object baseline uses {BASELINE_WORKERS} threads)")
            hdr = (f"{'measurement':<24} {'unit':<8} {'bacnode':>9} {'baseline':>9} "
                   f"{'ratio':>7} {'target':>12}  {'verdict':<8} detail")
            print(hdr)
            print("-" * len(hdr))
            all_met = True
            for name, unit, ours_v, base_v, better, target, detail in rows:
                ratio = ours_v / base_v
                met = ratio >= target if better == "higher" else ratio <= target
                all_met &= met
                tgt = f"{'>=' if better == 'higher' else '<='} {target:.1f}x"
                print(f"{name:<24} {unit:<8} {ours_v:>9.2f} {base_v:>9.2f} {ratio:>6.2f}x "
                      f"{tgt:>12}  {'MET' if met else 'NOT MET':<8} {detail}")
            print(f"\nratio = bacnode / baseline (for seconds, lower is better). "
                  f"Total bench time {time.perf_counter() - began:.0f} s.")
            return 0 if all_met else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
