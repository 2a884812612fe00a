"""Request channel throughput: requests a second between two nodes, against a raw libp2p stream.

Run: ``.venv/bin/python bench/channel.py [--requests 2000] [--rounds 3]``. Two
``node.mesh.Mesh`` hosts in this process, on loopback (Noise, yamux, as a daemon's). The
sender asks the other node 600-byte requests on ``/bacnode/requests/1`` (answered
``ok``), one after another and 16 at once; the baseline, measured in the same run, is the
same round trip on a raw py-libp2p stream: a frame read with py-libp2p's own varint
reader and echoed back. Printed: requests a second and CPU microseconds a request (both
ends, this process), best of ``--rounds``, and the channel's rate over the raw stream's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import trio  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.utils.varint import (  # noqa: E402
    encode_varint_prefixed,
    read_varint_prefixed_bytes_limited,
)

from node.mesh import Mesh  # noqa: E402
from protocol.identity import NodeKey  # noqa: E402
from scripts.daemons import free_ports  # noqa: E402

RAW_PROTOCOL = TProtocol("/bacnode-bench/echo/1")
PAYLOAD = b"x" * 600
CONCURRENCY = 16
WARM_UP = 50


async def _ignore(*args: Any) -> None:
    pass


async def _ok(sender: str, data: bytes) -> bytes:
    return b"ok"


async def _echo(stream: Any) -> None:
    try:
        while True:
            frame = await read_varint_prefixed_bytes_limited(stream, 1 << 20)
            await stream.write(encode_varint_prefixed(frame))
    except Exception:
        await stream.reset()


async def measure(round_trip: Callable[[], Awaitable[None]], count: int,
                  concurrency: int) -> tuple[float, float]:
    """(round trips a second, CPU microseconds each) for ``count`` of them."""
    async def worker() -> None:
        for _ in range(count // concurrency):
            await round_trip()

    wall, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    done = count // concurrency * concurrency
    return done / (time.perf_counter() - wall), (time.process_time() - cpu) / done * 1e6


async def main(requests: int, rounds: int) -> None:
    port_a, port_b = free_ports(2)
    server = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port_a}",),
                  on_message=_ignore, on_request=_ok)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        server.host.set_stream_handler(RAW_PROTOCOL, _echo)
        client = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port_b}",),
                      bootstrap=(server.addresses()[0],), on_message=_ignore)
        await nursery.start(client.run)
        raw_streams = [await client.host.new_stream(ID.from_base58(server.peer_id),
                                                    [RAW_PROTOCOL])
                       for _ in range(CONCURRENCY)]
        free_streams = list(raw_streams)

        async def raw_round_trip() -> None:
            stream = free_streams.pop()
            try:
                await stream.write(encode_varint_prefixed(PAYLOAD))
                await read_varint_prefixed_bytes_limited(stream, 1 << 20)
            finally:
                free_streams.append(stream)

        async def request() -> None:
            await client.request(server.peer_id, PAYLOAD)

        for _ in range(WARM_UP):
            await request()
            await raw_round_trip()
        print(f"{requests} round trips of {len(PAYLOAD)} bytes, best of {rounds}")
        print(f"{'':44}{'per second':>12}{'CPU µs each':>13}{'vs raw':>8}")
        for concurrency in (1, CONCURRENCY):
            best: dict[str, tuple[float, float]] = {}
            for _ in range(rounds):
                for name, trip in (("raw", raw_round_trip), ("channel", request)):
                    rate, cpu = await measure(trip, requests, concurrency)
                    if name not in best or rate > best[name][0]:
                        best[name] = (rate, cpu)
            for name, label in (("raw", "raw libp2p stream (baseline)"),
                                ("channel", "request channel")):
                rate, cpu = best[name]
                print(f"{label + f', {concurrency} at once':44}{rate:>12.0f}{cpu:>13.0f}"
                      f"{rate / best['raw'][0]:>7.2f}x")
        server.stop()
        client.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.requests, args.rounds)
