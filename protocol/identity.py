"""Node identity: an Ed25519 key and the libp2p peer ID derived from it.

A peer ID for an Ed25519 key is the base58btc identity multihash of the protobuf
``PublicKey{Type: Ed25519, Data: key}``, so the public key can be read back out of
the ID itself: knowing who sent a message is enough to check its signature.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .base58 import b58decode, b58encode
from .errors import MalformedMessage

# protobuf PublicKey: field 1 (KeyType) varint = 1 (Ed25519), field 2 (Data) 32 bytes.
_ED25519_PROTOBUF_PREFIX = b"\x08\x01\x12\x20"
# multihash: code 0x00 (identity), length 36 (the protobuf above).
_IDENTITY_MULTIHASH_PREFIX = b"\x00\x24"


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID (``12D3KooW…``) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return b58encode(_IDENTITY_MULTIHASH_PREFIX + _ED25519_PROTOBUF_PREFIX + public_key)


@functools.lru_cache(maxsize=4096)
def public_key_from_peer_id(peer_id: str) -> bytes:
    """Recover the raw Ed25519 key inside a peer ID; raises ``MalformedMessage`` otherwise.

    Peer IDs that hash their key (RSA, or any sha2-256 multihash) carry no key and
    are refused: bacnode nodes always use Ed25519.
    """
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 60:
        raise MalformedMessage(f"{peer_id!r} is not an Ed25519 libp2p peer ID")
    try:
        raw = b58decode(peer_id)
    except ValueError as exc:
        raise MalformedMessage(f"peer ID {peer_id!r}: {exc}") from None
    prefix = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PROTOBUF_PREFIX
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise MalformedMessage(f"{peer_id!r} is not an Ed25519 libp2p peer ID")
    return raw[len(prefix) :]


def is_peer_id(text: object) -> bool:
    try:
        public_key_from_peer_id(text)
    except MalformedMessage:
        return False
    return True


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key. ``seed`` is the 32-byte Ed25519 private seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(bytes(SigningKey.generate()))

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        private = SigningKey(self.seed)
        public = bytes(private.verify_key)
        object.__setattr__(self, "_private", private)
        # Derived once: every message a node seals names its sender (a base58 encoding).
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_peer_id", peer_id_from_public_key(public))

    def __repr__(self) -> str:  # never print the seed
        return f"NodeKey(peer_id={self.peer_id!r})"

    @property
    def public_key(self) -> bytes:
        return self._public  # type: ignore[attr-defined]

    @property
    def peer_id(self) -> str:
        return self._peer_id  # type: ignore[attr-defined]

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data).signature  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=4096)
def _verify_key(peer_id: str) -> VerifyKey:
    """libsodium's verifying key for ``peer_id``.

    Every gossiped message is checked, and libsodium checks an Ed25519 signature in 55–60 %
    of the time OpenSSL takes through ``cryptography`` on these machines (88 against 157 µs).
    It is also the stricter of the two: it refuses small-order keys and points that an
    honestly made key or signature never has.
    """
    return VerifyKey(public_key_from_peer_id(peer_id))


def verify_signature(peer_id: str, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``peer_id``'s Ed25519 signature over ``data``."""
    try:
        _verify_key(peer_id).verify(data, signature)
    except (BadSignatureError, MalformedMessage, ValueError, TypeError):
        return False
    return True
