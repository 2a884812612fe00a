"""Every way an envelope can be wrong, each with its own error type and message."""

import msgpack
import pytest

from protocol import codec
from protocol.envelope import EnvelopeVerifier, ReplayGuard, seal
from protocol.errors import (
    BadSignature,
    ClockSkew,
    MalformedMessage,
    OversizeMessage,
    ReplayedMessage,
    SenderMismatch,
    UnknownMessageType,
    UnknownVersion,
)
from protocol.identity import NodeKey

NOW = 1_780_000_000_000
ALICE = NodeKey(b"\x01" * 32)
MALLORY = NodeKey(b"\x02" * 32)
NONCE = b"n" * 16


def signed(fields: dict, key: NodeKey = ALICE) -> bytes:
    """Encode ``fields`` with a valid signature over them, whatever they contain."""
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    return codec.encode({**unsigned, "sig": key.sign(codec.encode(unsigned))})


def good_fields(**changes: object) -> dict:
    fields = {
        "v": 1,
        "type": "node.info",
        "from": ALICE.peer_id,
        "ts": NOW,
        "nonce": NONCE,
        "body": {"hello": "world"},
    }
    fields.update(changes)
    return fields


def verifier() -> EnvelopeVerifier:
    return EnvelopeVerifier(known_types=frozenset({"node.info", "bid"}), max_body_bytes=1000)


def test_sealed_envelope_verifies():
    data = seal(ALICE, "node.info", {"hello": "world"}, now_ms=NOW, nonce=NONCE)
    envelope = verifier().verify(data, now_ms=NOW + 5)
    assert envelope.sender == ALICE.peer_id
    assert envelope.body == {"hello": "world"}
    assert envelope.type == "node.info"


def _reordered(data: bytes) -> bytes:
    """``data`` with every map in its body written in reverse key order, as a relay that
    re-encodes what it forwards might; the signature is left as it was."""

    def reverse(value: object) -> object:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(list(value.items()))}
        if isinstance(value, list):
            return [reverse(item) for item in value]
        return value

    raw = codec.decode(data)
    return msgpack.packb({**raw, "body": reverse(raw["body"])}, use_bin_type=True)


def test_the_signature_is_over_the_canonical_encoding_whatever_order_the_maps_came_in():
    body = {"hello": "world", "nested": {"b": [{"y": 1, "x": 2}], "a": 1}}
    data = seal(ALICE, "node.info", body, now_ms=NOW, nonce=NONCE)
    reordered = _reordered(data)
    assert reordered != data
    assert verifier().verify(reordered, now_ms=NOW).body == body
    # ...and a signature over anything but the canonical encoding is refused, in any order.
    fields = good_fields(body={"b": 1, "a": 2})
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    as_written = msgpack.packb(unsigned, use_bin_type=True)
    assert as_written != codec.encode(unsigned)
    forged = msgpack.packb({**unsigned, "sig": ALICE.sign(as_written)}, use_bin_type=True)
    for data in (forged, codec.encode(codec.decode(forged))):
        with pytest.raises(BadSignature):
            verifier().verify(data, now_ms=NOW)


def test_a_changed_body_in_canonical_order_is_refused():
    data = seal(ALICE, "node.info", {"a": 1, "b": 2}, now_ms=NOW, nonce=NONCE)
    raw = codec.decode(data)
    with pytest.raises(BadSignature):
        verifier().verify(codec.encode({**raw, "body": {"a": 1, "b": 3}}), now_ms=NOW)


def _forged_signature() -> bytes:
    raw = codec.decode(signed(good_fields()))
    raw["sig"] = MALLORY.sign(codec.encode({k: v for k, v in raw.items() if k != "sig"}))
    return codec.encode(raw)


def _tampered_body() -> bytes:
    raw = codec.decode(signed(good_fields()))
    raw["body"] = {"hello": "mallory"}
    return codec.encode(raw)


MALFORMED_ENVELOPES = [
    # (wire bytes, error type, message fragment)
    (b"\x00" * 2_000_000, OversizeMessage, "message is 2000000 bytes; the limit is 1048576"),
    (b"\xc1garbage", MalformedMessage, "not valid msgpack"),
    (msgpack.packb([1, 2, 3]), MalformedMessage, "envelope must be a map, got list"),
    (codec.encode({**good_fields(), "sig": b"s" * 64, "extra": 1}), MalformedMessage,
     "envelope fields: unexpected extra"),
    (codec.encode(good_fields()), MalformedMessage, "envelope fields: missing sig"),
    (signed(good_fields(v=2)), UnknownVersion, "protocol version 2; this node speaks 1"),
    (signed(good_fields(v="1")), UnknownVersion, "protocol version '1'"),
    (signed(good_fields(ts="now")), MalformedMessage, "field 'ts' must be int, got str"),
    (signed(good_fields(body=[1])), MalformedMessage, "field 'body' must be dict, got list"),
    (signed(good_fields(nonce=b"short")), MalformedMessage, "nonce must be 16 bytes, got 5"),
    (codec.encode({**good_fields(), "sig": b"x" * 10}), MalformedMessage,
     "signature must be 64 bytes"),
    (signed(good_fields(**{"from": "QmNotAnEd25519Key"})), MalformedMessage,
     "'from' is not an Ed25519 peer ID"),
    (signed(good_fields(type="job.delete")), UnknownMessageType,
     "unknown message type 'job.delete'"),
    (codec.encode({**good_fields(), "sig": b"\x00" * 64}), BadSignature,
     "signature does not verify"),
    (_forged_signature(), BadSignature, "signature does not verify"),
    (_tampered_body(), BadSignature, "signature does not verify"),
    (signed(good_fields(**{"from": MALLORY.peer_id})), BadSignature,
     "signature does not verify"),
    (signed(good_fields(ts=NOW - 120_000)), ClockSkew, "120.0s behind this node's clock"),
    (signed(good_fields(ts=NOW + 61_000)), ClockSkew, "61.0s ahead of this node's clock"),
    (signed(good_fields(body={"x": "y" * 2000})), OversizeMessage,
     "body is 2006 bytes; the limit is 1000"),
]


@pytest.mark.parametrize(("data", "error", "message"), MALFORMED_ENVELOPES)
def test_malformed_envelopes_are_rejected_with_their_reason(data, error, message):
    with pytest.raises(error) as caught:
        verifier().verify(data, now_ms=NOW)
    assert message in str(caught.value)


def test_replayed_nonce_is_rejected_but_a_new_nonce_passes():
    check = verifier()
    data = seal(ALICE, "bid", {}, now_ms=NOW, nonce=NONCE)
    check.verify(data, now_ms=NOW)
    with pytest.raises(ReplayedMessage, match=f"message {NONCE.hex()} from {ALICE.peer_id}"):
        check.verify(data, now_ms=NOW + 1)
    check.verify(seal(ALICE, "bid", {}, now_ms=NOW), now_ms=NOW + 1)


def test_same_nonce_from_another_sender_is_not_a_replay():
    check = verifier()
    check.verify(seal(ALICE, "bid", {}, now_ms=NOW, nonce=NONCE), now_ms=NOW)
    check.verify(seal(MALLORY, "bid", {}, now_ms=NOW, nonce=NONCE), now_ms=NOW)


def test_forged_messages_do_not_fill_the_replay_cache():
    check = verifier()
    for _ in range(3):
        with pytest.raises(BadSignature):
            check.verify(_forged_signature(), now_ms=NOW)
    assert len(check.replay_guard) == 0


def test_sender_must_be_the_peer_it_arrived_from():
    data = seal(ALICE, "bid", {}, now_ms=NOW)
    with pytest.raises(SenderMismatch, match=f"signed by {ALICE.peer_id} arrived from"):
        verifier().verify(data, now_ms=NOW, expected_sender=MALLORY.peer_id)


def test_replay_guard_forgets_nonces_once_they_are_too_old_to_pass():
    guard = ReplayGuard(window_ms=1000)
    guard.check_and_remember("a", b"1", ts=0, now_ms=0)
    guard.check_and_remember("a", b"2", ts=700, now_ms=700)
    guard.check_and_remember("a", b"3", ts=1600, now_ms=1600)
    assert len(guard) == 2  # b"1" left the window


def test_replay_guard_is_bounded():
    guard = ReplayGuard(window_ms=10**9, max_entries=100)
    for i in range(1000):
        guard.check_and_remember("a", i.to_bytes(4, "big"), ts=i, now_ms=i)
    assert len(guard) == 100
