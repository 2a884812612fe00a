"""20,000 random and mutated envelopes: the verifier raises only RemoteProtocolError."""

import random

import msgpack

from protocol.envelope import EnvelopeVerifier, seal
from protocol.errors import RemoteProtocolError
from protocol.examples import KEYS, author_key, example_messages
from protocol.messages import open_message, seal_message

NOW = 1_780_000_000_000
CASES = 20_000


def _seeds() -> list[bytes]:
    seeds = [seal(KEYS[0], "node.info", {"a": 1}, now_ms=NOW)]
    for message in example_messages():
        seeds.append(seal_message(author_key(message), message, now_ms=NOW))
    return seeds


def _structured_garbage(rng: random.Random) -> bytes:
    """Well-formed msgpack maps with envelope-like keys and wrong values."""
    pool = [None, True, 0, -1, 2**63, "", "x" * rng.randint(0, 50), b"", b"\x00" * 16,
            b"\x00" * 64, [], {}, [1, [2, [3]]], {"k": {"k": {}}}, KEYS[0].peer_id, NOW, 1]
    keys = ["v", "type", "from", "ts", "nonce", "body", "sig", "extra"]
    raw = {k: rng.choice(pool) for k in rng.sample(keys, rng.randint(0, len(keys)))}
    return msgpack.packb(raw, use_bin_type=True)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if choice < 0.4 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice < 0.6 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif choice < 0.8:
            position = rng.randrange(len(buf) + 1)
            buf[position:position] = rng.randbytes(rng.randint(1, 16))
        else:
            start = rng.randrange(len(buf) + 1)
            buf[start:start] = buf[start : start + rng.randint(1, 32)]
    return bytes(buf)


def test_fuzzed_envelopes_raise_only_the_declared_error():
    rng = random.Random(20_000)
    seeds = _seeds()
    verifier = EnvelopeVerifier()
    outcomes = {"rejected": 0, "accepted": 0}
    for i in range(CASES):
        kind = i % 4
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 300))
        elif kind == 1:
            data = _structured_garbage(rng)
        else:
            data = _mutate(rng.choice(seeds), rng)
        try:
            open_message(verifier, data, now_ms=NOW)
        except RemoteProtocolError:
            outcomes["rejected"] += 1
        else:
            outcomes["accepted"] += 1  # a mutation that left the signed bytes intact
    assert outcomes["rejected"] + outcomes["accepted"] == CASES
    assert outcomes["rejected"] > CASES * 0.95


def test_unmutated_seeds_are_accepted():
    verifier = EnvelopeVerifier()
    opened = [open_message(verifier, data, now_ms=NOW)[1] for data in _seeds()[1:]]
    assert opened == example_messages()
