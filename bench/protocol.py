"""Protocol throughput: envelopes signed and verified per second, encode/decode per second.

Run: ``python bench/protocol.py [--seconds S]``. Prints each figure next to the
machine's ``hashlib.sha256`` throughput measured in the same run, as a reference
for how fast this machine is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocol import codec
from protocol.envelope import EnvelopeVerifier
from protocol.examples import author_key, example_messages
from protocol.messages import open_message, seal_message

NOW = 1_780_000_000_000


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``operation``, over at least ``seconds``."""
    calls = 0
    batch = 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            operation()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed
        batch = min(batch * 2, 4096)


def verify_all(sealed: list[bytes]) -> None:
    # A fresh verifier per pass: the same bytes again would be replays.
    verifier = EnvelopeVerifier()
    for data in sealed:
        open_message(verifier, data, now_ms=NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    block = os.urandom(1 << 20)
    sha_mb_s = rate(lambda: hashlib.sha256(block).digest(), args.seconds)
    print(f"reference  hashlib.sha256 over 1 MiB blocks: {sha_mb_s:,.0f} MB/s")
    print(f"{'message':<18}{'bytes':>7}{'encode/s':>12}{'decode/s':>12}"
          f"{'sign/s':>10}{'verify/s':>10}{'verify MB/s':>13}{'vs sha256':>11}")
    for message in example_messages():
        key = author_key(message)
        body = message.to_body()
        encoded = codec.encode(body)
        encode_rate = rate(lambda b=body: codec.encode(b), args.seconds)
        kind = type(message)
        decode_rate = rate(lambda e=encoded, k=kind: k.from_body(codec.decode(e)), args.seconds)
        sign_rate = rate(lambda m=message, k=key: seal_message(k, m, now_ms=NOW), args.seconds)
        sealed = [seal_message(key, message, now_ms=NOW) for _ in range(4096)]
        verify_rate = rate(lambda s=sealed: verify_all(s), args.seconds) * len(sealed)
        verify_mb_s = verify_rate * len(sealed[0]) / 1e6
        print(
            f"{type(message).TYPE:<18}{len(sealed[0]):>7}{encode_rate:>12,.0f}{decode_rate:>12,.0f}"
            f"{sign_rate:>10,.0f}{verify_rate:>10,.0f}{verify_mb_s:>13.2f}"
            f"{verify_mb_s / sha_mb_s:>10.4f}x"
        )


if __name__ == "__main__":
    main()
