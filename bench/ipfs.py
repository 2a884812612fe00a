"""IPFS benchmark: UnixFS import throughput and bitswap transfer between two daemons.

Run: ``.venv/bin/python bench/ipfs.py [--import-mib 256] [--transfer-mib 64] [--runs 3]``.

1. Import of one file of random bytes, against ``hashlib.sha256`` over the same bytes
   (the floor: every byte must be hashed once for its CID):
   - ``FileImporter`` in memory, fed 256 KiB pieces (the CID computation alone);
   - ``node.ipfs.files.import_file`` from a file into a ``Blockstore`` on disk
     (what publishing results does, including the manifest's SHA-256 pass).
2. Bitswap: two daemons on loopback (``scripts/daemons.py``: fresh data dirs, free ports);
   a file is added on the first with ``bacnode ipfs add``, then the second fetches it.
   Measured by the fetching daemon (``X-Fetch-Seconds`` of ``/api/v1/ipfs/car``: blocks
   over bitswap into its blockstore), beside the whole ``bacnode ipfs get`` as a user
   sees it. Baseline: the same bytes over one raw py-libp2p stream (Noise + yamux,
   256 KiB writes) between two hosts in this process.

Each measurement runs ``--runs`` times; the best run is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The daemons and boto3 never ask the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import trio

from bench._cleanup import signals_deferred
from node.ipfs.blockstore import Blockstore
from node.ipfs.files import import_file
from protocol.unixfs import CHUNK_SIZE, FileImporter
from scripts.daemons import DaemonPool, run_cli, wait_until

MiB = 1024 * 1024
TRANSFER_TARGET_MBPS = 50.0
IMPORT_TARGET_RATIO = 0.5


def best(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def bench_import(size_mib: int, runs: int, workdir: Path) -> dict[str, float]:
    data = os.urandom(size_mib * MiB)
    view = memoryview(data)
    source = workdir / "import.bin"
    source.write_bytes(data)

    def floor() -> None:
        digest = hashlib.sha256()
        for offset in range(0, len(data), CHUNK_SIZE):
            digest.update(view[offset:offset + CHUNK_SIZE])

    def in_memory() -> None:
        importer = FileImporter()
        for offset in range(0, len(data), CHUNK_SIZE):
            importer.write(view[offset:offset + CHUNK_SIZE])
        importer.finish()

    def to_disk() -> None:
        store = Blockstore(workdir / f"blocks-{time.monotonic_ns()}")
        with source.open("rb") as handle:
            import_file(handle, store.put_many)

    size = len(data)
    result = {
        "sha256": mbps(size, best(runs, floor)),
        "importer": mbps(size, best(runs, in_memory)),
        "to_disk": mbps(size, best(runs, to_disk)),
    }
    return result


async def raw_stream_baseline(size: int) -> float:
    from libp2p.custom_types import TProtocol

    from node.mesh import Mesh
    from protocol.identity import NodeKey

    protocol = TProtocol("/bench/raw/1")

    async def nothing(*_: object) -> None:
        return None

    sender = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=nothing)
    receiver = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=nothing)
    done = trio.Event()

    async def sink(stream: object) -> None:
        got = 0
        while got < size:
            chunk = await stream.read(MiB)  # type: ignore[attr-defined]
            if not chunk:
                break
            got += len(chunk)
        done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await nursery.start(receiver.run)
        receiver.host.set_stream_handler(protocol, sink)
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        info = info_from_p2p_addr(multiaddr.Multiaddr(receiver.addresses()[0]))
        await sender.host.connect(info)
        stream = await sender.host.new_stream(info.peer_id, [protocol])
        payload = os.urandom(CHUNK_SIZE)
        start = time.perf_counter()
        for _ in range(size // CHUNK_SIZE):
            await stream.write(payload)
        await done.wait()
        seconds = time.perf_counter() - start
        sender.stop()
        receiver.stop()
    return mbps(size, seconds)


def bench_transfer(size_mib: int, runs: int, workdir: Path) -> dict[str, float]:
    pool = DaemonPool(workdir / "daemons")
    try:
        holder = pool.new("holder")
        fetchers = [pool.new(f"fetcher{i}", peers=[holder]) for i in range(runs)]
        nodes = [holder, *fetchers]
        for node in nodes:
            _ = node.peer_id
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready(60)
        ids = {node.peer_id for node in nodes}
        wait_until(lambda: all(node.connected() >= {holder.peer_id} for node in fetchers)
                   and holder.connected() >= ids, 60, what="the daemons to connect")
        source = workdir / "transfer.bin"
        source.write_bytes(os.urandom(size_mib * MiB))
        added = holder.cli("ipfs", "add", "-q", str(source), timeout=300)
        if added.returncode:
            raise RuntimeError(added.stderr)
        cid = added.stdout.strip()
        print(f"  added {size_mib} MiB on {holder.name}: {cid}", flush=True)

        fetch_rates, cli_rates = [], []
        for index, fetcher in enumerate(fetchers):
            # A fresh daemon each round: nothing is held yet, every block crosses bitswap.
            if index % 2 == 0:
                url = f"{fetcher.api_url}/api/v1/ipfs/car/{cid}?peer={holder.peer_id}"
                start = time.perf_counter()
                with urllib.request.urlopen(url, timeout=600) as response:
                    fetch_seconds = float(response.headers["X-Fetch-Seconds"])
                    fetched = int(response.headers["X-Fetched-Bytes"])
                    while response.read(MiB):
                        pass
                whole = time.perf_counter() - start
                fetch_rates.append(mbps(fetched, fetch_seconds))
                print(f"  run {index + 1}: bitswap {fetched / MiB:.1f} MiB in "
                      f"{fetch_seconds:.2f} s; with the CAR stream {whole:.2f} s", flush=True)
            else:
                out = workdir / f"got-{index}.bin"
                start = time.perf_counter()
                got = run_cli("ipfs", "get", cid, "-o", str(out), api_port=fetcher.api_port,
                              timeout=600)
                seconds = time.perf_counter() - start
                if got.returncode or out.stat().st_size != source.stat().st_size:
                    raise RuntimeError(got.stderr)
                cli_rates.append(mbps(out.stat().st_size, seconds))
                print(f"  run {index + 1}: bacnode ipfs get (fetch, stream, verify, write) "
                      f"{seconds:.2f} s", flush=True)
        stats = fetchers[0].api("/api/v1/agent/ipfs")["Bitswap"]
        print(f"  {fetchers[0].name} counters: {stats}", flush=True)
    finally:
        with signals_deferred():
            pool.close()
    baseline = trio.run(raw_stream_baseline, size_mib * MiB)
    return {"bitswap": max(fetch_rates), "cli_get": max(cli_rates or [0.0]),
            "raw_stream": baseline}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--import-mib", type=int, default=256)
    parser.add_argument("--transfer-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bacnode-bench-ipfs-") as scratch:
        workdir = Path(scratch)
        print(f"1. import of {args.import_mib} MiB", flush=True)
        imp = bench_import(args.import_mib, args.runs, workdir)
        print(f"2. bitswap transfer of {args.transfer_mib} MiB between two daemons", flush=True)
        xfer = bench_transfer(args.transfer_mib, max(2, args.runs), workdir)
    print(f"\nResults (best of {args.runs}; MB/s = 10^6 bytes/s)")
    header = f"{'measurement':<44} {'MB/s':>8} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    floor = imp["sha256"]
    rows = [
        ("hashlib.sha256 (floor)", floor, 1.0, ""),
        ("FileImporter, in memory", imp["importer"], imp["importer"] / floor,
         f">= {IMPORT_TARGET_RATIO}x: {'met' if imp['importer'] / floor >= 0.5 else 'NOT met'}"),
        ("import_file into the blockstore (disk)", imp["to_disk"], imp["to_disk"] / floor, ""),
        ("raw libp2p stream (baseline)", xfer["raw_stream"], 1.0, ""),
        ("bitswap fetch between daemons", xfer["bitswap"], xfer["bitswap"] / xfer["raw_stream"],
         f">= {TRANSFER_TARGET_MBPS:.0f} MB/s: "
         f"{'met' if xfer['bitswap'] >= TRANSFER_TARGET_MBPS else 'NOT met'}"),
        ("bacnode ipfs get, end to end", xfer["cli_get"], xfer["cli_get"] / xfer["raw_stream"],
         ""),
    ]
    for name, rate, ratio, target in rows:
        print(f"{name:<44} {rate:>8.1f} {ratio:>6.2f}x  {target}")
    print("\nratio: import rows against sha256; transfer rows against the raw stream.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.TimeoutExpired as exc:
        print(f"timed out: {exc}", file=sys.stderr)
        sys.exit(1)
