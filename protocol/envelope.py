"""Signed envelopes: every bacnode message travels in one.

Wire form: a canonical msgpack map ``{v, type, from, ts, nonce, body, sig}`` where
``sig`` is the Ed25519 signature by ``from`` over the canonical encoding of the map
without ``sig``. ``ts`` is milliseconds since the epoch, ``nonce`` 16 random bytes.

Checks run cheapest first, and nothing is remembered about a message until its
signature holds, so forged messages cannot fill the replay cache:
size → shape → version → type → signature → expected sender → clock skew → replay → body.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import PROTOCOL_VERSION, codec
from .errors import (
    BadSignature,
    ClockSkew,
    MalformedMessage,
    OversizeMessage,
    ReplayedMessage,
    SenderMismatch,
    UnknownMessageType,
    UnknownVersion,
)
from .identity import NodeKey, is_peer_id, verify_signature

ENVELOPE_FIELDS = frozenset({"v", "type", "from", "ts", "nonce", "body", "sig"})
NONCE_BYTES = 16
SIGNATURE_BYTES = 64
#: Default limits; a node may tighten them.
MAX_MESSAGE_BYTES = 1 << 20
MAX_BODY_BYTES = 512 * 1024
MAX_SKEW_MS = 60_000


@dataclass(frozen=True)
class Envelope:
    """A verified (or about to be signed) message; ``body`` is the raw map."""

    type: str
    sender: str
    ts: int
    nonce: bytes
    body: Mapping[str, Any]
    sig: bytes = b""
    v: int = PROTOCOL_VERSION
    #: Whether ``body`` arrived with its maps in canonical order (only ever set when parsed).
    canonical_body: bool = field(default=False, compare=False, repr=False)

    def signed_part(self) -> dict[str, Any]:
        # In canonical (sorted) order, as ``EnvelopeVerifier.verify`` relies on.
        return {
            "body": self.body,
            "from": self.sender,
            "nonce": self.nonce,
            "ts": self.ts,
            "type": self.type,
            "v": self.v,
        }


def seal(
    key: NodeKey,
    msg_type: str,
    body: Mapping[str, Any],
    *,
    now_ms: int,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``body`` as a ``msg_type`` message from ``key`` and return the wire bytes."""
    envelope = Envelope(
        type=msg_type,
        sender=key.peer_id,
        ts=now_ms,
        nonce=nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES),
        body=body,
    )
    # Made canonical once for the signature and the wire bytes both; "sig" sorts
    # between "nonce" and "ts", and the other fields stay in their order around it.
    unsigned = codec.canonical(envelope.signed_part())
    signature = key.sign(codec.encode_in_order(unsigned))
    return codec.encode_in_order(dict(sorted({**unsigned, "sig": signature}.items())))


def parse_unverified(data: bytes, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Decode and shape-check an envelope without checking its signature."""
    if len(data) > max_message_bytes:
        raise OversizeMessage(f"message is {len(data)} bytes; the limit is {max_message_bytes}")
    raw, in_order = codec.decode_noting_order(data, max_size=max_message_bytes)
    if not isinstance(raw, dict):
        raise MalformedMessage(f"envelope must be a map, got {type(raw).__name__}")
    keys = set(raw)
    if keys != ENVELOPE_FIELDS:
        missing = sorted(ENVELOPE_FIELDS - keys)
        extra = sorted(keys - ENVELOPE_FIELDS)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise MalformedMessage(f"envelope fields: {'; '.join(parts)}")
    version = raw["v"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UnknownVersion(f"protocol version {version!r}; this node speaks {PROTOCOL_VERSION}")
    for name, kind in (
        ("type", str),
        ("from", str),
        ("ts", int),
        ("nonce", bytes),
        ("body", dict),
        ("sig", bytes),
    ):
        if type(raw[name]) is not kind:
            raise MalformedMessage(
                f"envelope field {name!r} must be {kind.__name__}, got {type(raw[name]).__name__}"
            )
    if len(raw["nonce"]) != NONCE_BYTES:
        raise MalformedMessage(f"nonce must be {NONCE_BYTES} bytes, got {len(raw['nonce'])}")
    if len(raw["sig"]) != SIGNATURE_BYTES:
        raise MalformedMessage(f"signature must be {SIGNATURE_BYTES} bytes")
    if not is_peer_id(raw["from"]):
        raise MalformedMessage(f"'from' is not an Ed25519 peer ID: {raw['from']!r:.80}")
    return Envelope(
        type=raw["type"],
        sender=raw["from"],
        ts=raw["ts"],
        nonce=raw["nonce"],
        body=raw["body"],
        sig=raw["sig"],
        v=version,
        canonical_body=in_order,
    )


@dataclass
class ReplayGuard:
    """Remembers ``(sender, nonce)`` pairs for as long as their timestamp is acceptable.

    A message older than the skew window is rejected as stale anyway, so pairs are
    forgotten once they leave it; ``max_entries`` bounds memory under a flood.
    """

    window_ms: int = MAX_SKEW_MS
    max_entries: int = 200_000
    _seen: set[tuple[str, bytes]] = field(default_factory=set)
    _expiry: list[tuple[int, str, bytes]] = field(default_factory=list)

    def check_and_remember(self, sender: str, nonce: bytes, ts: int, now_ms: int) -> None:
        self._forget_before(now_ms - self.window_ms)
        pair = (sender, nonce)
        if pair in self._seen:
            raise ReplayedMessage(f"message {nonce.hex()} from {sender} was already received")
        while len(self._seen) >= self.max_entries:
            _, old_sender, old_nonce = heapq.heappop(self._expiry)
            self._seen.discard((old_sender, old_nonce))
        self._seen.add(pair)
        heapq.heappush(self._expiry, (ts, sender, nonce))

    def _forget_before(self, cutoff_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < cutoff_ms:
            _, sender, nonce = heapq.heappop(self._expiry)
            self._seen.discard((sender, nonce))

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class EnvelopeVerifier:
    """Turns wire bytes into verified envelopes, or raises one ``RemoteProtocolError``.

    ``known_types`` restricts message types (``None`` accepts any); state is the
    replay guard, so use one verifier per node.
    """

    known_types: frozenset[str] | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    max_skew_ms: int = MAX_SKEW_MS
    replay_guard: ReplayGuard = field(default_factory=ReplayGuard)

    def verify(
        self,
        data: bytes,
        *,
        now_ms: int,
        expected_sender: str | None = None,
    ) -> Envelope:
        envelope = parse_unverified(data, max_message_bytes=self.max_message_bytes)
        if self.known_types is not None and envelope.type not in self.known_types:
            raise UnknownMessageType(f"unknown message type {envelope.type!r:.60}")
        if not _signature_verifies(envelope):
            raise BadSignature(f"signature does not verify for sender {envelope.sender}")
        if expected_sender is not None and envelope.sender != expected_sender:
            raise SenderMismatch(
                f"message signed by {envelope.sender} arrived from {expected_sender}"
            )
        skew = envelope.ts - now_ms
        if abs(skew) > self.max_skew_ms:
            direction = "ahead of" if skew > 0 else "behind"
            raise ClockSkew(
                f"timestamp is {abs(skew) / 1000:.1f}s {direction} this node's clock "
                f"(limit {self.max_skew_ms / 1000:.0f}s)"
            )
        # The canonical encoding is the shortest there is, so a body that came in fewer
        # bytes than the limit needs no encoding to know it fits.
        if len(data) > self.max_body_bytes and (
                body_size := len(codec.encode(envelope.body))) > self.max_body_bytes:
            raise OversizeMessage(f"body is {body_size} bytes; the limit is {self.max_body_bytes}")
        self.replay_guard.check_and_remember(envelope.sender, envelope.nonce, envelope.ts, now_ms)
        return envelope


def _signature_verifies(envelope: Envelope) -> bool:
    """Whether the sender signed the canonical encoding of what arrived.

    A body that came with its maps in canonical order encodes canonically as it is, in one
    C call; sorting it again walks the whole body in Python, which was half of opening a
    heartbeat.
    """
    signed_part = envelope.signed_part()
    signed_bytes = (codec.encode_in_order(signed_part) if envelope.canonical_body
                    else codec.encode(signed_part))
    return verify_signature(envelope.sender, envelope.sig, signed_bytes)


def encode_envelope(envelope: Envelope) -> bytes:
    """The wire bytes of a signed envelope (canonical, so identical to what was sent)."""
    return codec.encode({**envelope.signed_part(), "sig": envelope.sig})
