"""libp2p's Noise security (``/noise``: Noise_XX_25519_ChaChaPoly_SHA256) on libsodium.

py-libp2p's own Noise transport is built on the ``noiseprotocol`` package, whose only
backend is ``cryptography``: a 14 MiB Rust extension with its own OpenSSL, which put 9-10
MiB of an idle daemon's RSS (its mapped library and its Python modules) behind three
primitives that PyNaCl (libsodium) already loaded for signatures has too: X25519,
ChaCha20-Poly1305 (IETF) and, with ``hashlib``, SHA-256. This module is the XX handshake
of the Noise specification (revision 34) with the libp2p payload of the libp2p Noise spec,
and the transport framing both prescribe; a connection is a py-libp2p ``SecureSession``
like the one py-libp2p's transport returns, so everything above it is unchanged.

What the libp2p spec asks, and this does:
- the prologue is empty; each handshake and transport message has a 2-byte big-endian
  length prefix; message 1 carries no payload;
- messages 2 and 3 carry a ``NoiseHandshakePayload`` with the sender's identity key and
  its signature over ``"noise-libp2p-static-key:" + Noise static public key``;
- a dialler refuses a responder whose identity is not the peer it dialled.

Extensions (early data, WebTransport hashes, muxers in the handshake) are neither sent
nor needed: the muxer is negotiated by multistream-select afterwards, as py-libp2p's own
transport does, which go-libp2p and kubo accept.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from libp2p.abc import IRawConnection, ISecureConn, ISecureTransport
from libp2p.crypto.keys import KeyPair, PrivateKey, PublicKey
from libp2p.custom_types import TProtocol
from libp2p.io.abc import EncryptedMsgReadWriter
from libp2p.io.exceptions import DecryptionFailedException, IncompleteReadError
from libp2p.io.msgio import FixedSizeLenMsgReadWriter
from libp2p.peer.id import ID
from libp2p.security.noise.exceptions import (
    InvalidSignature,
    NoiseFailure,
    PeerIDMismatchesPubkey,
)
from libp2p.security.noise.messages import NoiseHandshakePayload
from libp2p.security.secure_session import SecureSession
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

PROTOCOL_ID = TProtocol("/noise")
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
SIGNED_PREFIX = b"noise-libp2p-static-key:"
DH_LENGTH = 32
TAG_LENGTH = 16
#: A Noise message is at most 65535 bytes, its MAC included.
MAX_MESSAGE = 65535
MAX_PLAINTEXT = MAX_MESSAGE - TAG_LENGTH
#: Nonce 2^64 - 1 is reserved by the spec; a connection never gets near it.
MAX_NONCE = 2**64 - 2
#: Bytes asked of the socket at a time: a whole Noise message and its length, and under
#: the allocator's 128 KiB threshold for a mapping of its own.
READ_CHUNK = 2 + MAX_MESSAGE


def _hkdf(chaining_key: bytes, material: bytes) -> tuple[bytes, bytes]:
    temporary = hmac.digest(chaining_key, material, "sha256")
    first = hmac.digest(temporary, b"\x01", "sha256")
    return first, hmac.digest(temporary, first + b"\x02", "sha256")


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return crypto_scalarmult(private, public)
    except (CryptoError, RuntimeError, ValueError, TypeError) as exc:
        # libsodium refuses a low-order point (an all-zero shared secret).
        raise NoiseFailure(f"invalid X25519 public key from peer: {exc}") from None


class CipherState:
    """A key and its message counter (Noise's CipherState, ChaChaPoly)."""

    __slots__ = ("key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.nonce = 0

    def _next_nonce(self) -> bytes:
        nonce = self.nonce
        if nonce > MAX_NONCE:
            raise NoiseFailure("Noise nonce exhausted: the connection must be closed")
        self.nonce = nonce + 1
        # 32 bits of zeros, then the counter in 64 little-endian bits.
        return (nonce << 32).to_bytes(12, "little")

    def encrypt(self, associated: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        return crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, associated, self._next_nonce(), self.key)

    def decrypt(self, associated: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        # A failed message still used its nonce: the connection is dead either way.
        return crypto_aead_chacha20poly1305_ietf_decrypt(
            ciphertext, associated, self._next_nonce(), self.key)


class HandshakeState:
    """The XX pattern, one side of it: ``-> e``, ``<- e, ee, s, es``, ``-> s, se``.

    Pure: it only turns bytes into bytes. The caller sends and reads the messages in order
    (initiator: write, read, write; responder: read, write, read), then calls ``split``.
    """

    def __init__(self, initiator: bool, static_private: bytes,
                 ephemeral_private: bytes | None = None) -> None:
        self.initiator = initiator
        self.static_private = static_private
        self.static_public = crypto_scalarmult_base(static_private)
        self.ephemeral_private = ephemeral_private or os.urandom(DH_LENGTH)
        self.ephemeral_public = crypto_scalarmult_base(self.ephemeral_private)
        self.remote_ephemeral: bytes | None = None
        self.remote_static: bytes | None = None
        # The protocol name is exactly HASHLEN (32) bytes, so it is h itself.
        self.hash = PROTOCOL_NAME
        self.chaining_key = PROTOCOL_NAME
        self.cipher = CipherState()
        self._mix_hash(b"")  # the empty prologue
        self.messages_done = 0

    def _mix_hash(self, data: bytes) -> None:
        self.hash = hashlib.sha256(self.hash + data).digest()

    def _mix_key(self, material: bytes) -> None:
        self.chaining_key, key = _hkdf(self.chaining_key, material)
        self.cipher = CipherState(key)

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.hash, plaintext)
        self._mix_hash(ciphertext)
        return ciphertext

    def _decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = self.cipher.decrypt(self.hash, ciphertext)
        except CryptoError:
            raise NoiseFailure("Noise handshake message failed authentication") from None
        self._mix_hash(ciphertext)
        return plaintext

    def _take(self, message: bytes, length: int, what: str) -> tuple[bytes, bytes]:
        if len(message) < length:
            raise NoiseFailure(f"Noise handshake message too short for the {what}")
        return message[:length], message[length:]

    def write_message(self, payload: bytes) -> bytes:
        step = self.messages_done
        if step == 0 and self.initiator:  # -> e
            out = self.ephemeral_public
            self._mix_hash(self.ephemeral_public)
        elif step == 1 and not self.initiator:  # <- e, ee, s, es
            assert self.remote_ephemeral is not None
            out = self.ephemeral_public
            self._mix_hash(self.ephemeral_public)
            self._mix_key(_dh(self.ephemeral_private, self.remote_ephemeral))
            out += self._encrypt_and_hash(self.static_public)
            self._mix_key(_dh(self.static_private, self.remote_ephemeral))
        elif step == 2 and self.initiator:  # -> s, se
            assert self.remote_ephemeral is not None
            out = self._encrypt_and_hash(self.static_public)
            self._mix_key(_dh(self.static_private, self.remote_ephemeral))
        else:
            raise NoiseFailure(f"Noise handshake: not ours to write message {step + 1}")
        self.messages_done += 1
        return out + self._encrypt_and_hash(payload)

    def read_message(self, message: bytes) -> bytes:
        step = self.messages_done
        if step == 0 and not self.initiator:  # -> e
            self.remote_ephemeral, message = self._take(message, DH_LENGTH, "ephemeral key")
            self._mix_hash(self.remote_ephemeral)
        elif step == 1 and self.initiator:  # <- e, ee, s, es
            self.remote_ephemeral, message = self._take(message, DH_LENGTH, "ephemeral key")
            self._mix_hash(self.remote_ephemeral)
            self._mix_key(_dh(self.ephemeral_private, self.remote_ephemeral))
            sealed, message = self._take(message, DH_LENGTH + TAG_LENGTH, "static key")
            self.remote_static = self._decrypt_and_hash(sealed)
            self._mix_key(_dh(self.ephemeral_private, self.remote_static))
        elif step == 2 and not self.initiator:  # -> s, se
            assert self.remote_ephemeral is not None
            sealed, message = self._take(message, DH_LENGTH + TAG_LENGTH, "static key")
            self.remote_static = self._decrypt_and_hash(sealed)
            self._mix_key(_dh(self.ephemeral_private, self.remote_static))
        else:
            raise NoiseFailure(f"Noise handshake: not ours to read message {step + 1}")
        self.messages_done += 1
        return self._decrypt_and_hash(message)

    def split(self) -> tuple[CipherState, CipherState]:
        """(sending, receiving) cipher states once all three messages are done."""
        if self.messages_done != 3:
            raise NoiseFailure("Noise handshake not finished")
        initiator_to_responder, responder_to_initiator = _hkdf(self.chaining_key, b"")
        first, second = CipherState(initiator_to_responder), CipherState(responder_to_initiator)
        return (first, second) if self.initiator else (second, first)


class _NoiseFrames(FixedSizeLenMsgReadWriter):
    size_len_bytes = 2


class NoiseReadWriter(EncryptedMsgReadWriter):
    """The transport phase: each write one or more length-prefixed ChaChaPoly messages.

    Reads take whatever the socket has (up to ``READ_CHUNK``) and cut the messages out of
    it: a length and its message are one receive, not two, and messages that arrive
    together (a gossip flood, a bulk transfer) are read with one.
    """

    def __init__(self, conn: IRawConnection, sending: CipherState,
                 receiving: CipherState) -> None:
        super().__init__(conn)
        self._raw = conn
        self._frames = _NoiseFrames(conn)  # type: ignore[arg-type]
        self._sending = sending
        self._receiving = receiving
        self._received = bytearray()

    def encrypt(self, data: bytes) -> bytes:
        return self._sending.encrypt(b"", data)

    def decrypt(self, data: bytes) -> bytes:
        try:
            return self._receiving.decrypt(b"", data)
        except CryptoError:
            raise DecryptionFailedException("Noise message failed authentication") from None

    async def write_msg(self, msg: bytes) -> None:
        if len(msg) <= MAX_PLAINTEXT:  # nearly every write
            await self._frames.write_msg(self._sending.encrypt(b"", msg))
            return
        view = memoryview(msg)
        for start in range(0, len(msg), MAX_PLAINTEXT):
            await self._frames.write_msg(self.encrypt(bytes(view[start:start + MAX_PLAINTEXT])))

    async def read_msg(self) -> bytes:
        received = self._received
        while True:
            if len(received) >= 2:
                end = 2 + int.from_bytes(received[:2], "big")
                if len(received) >= end:
                    message = bytes(received[2:end])
                    del received[:end]
                    return self.decrypt(message)
            chunk = await self._raw.read(READ_CHUNK)
            if not chunk:
                raise IncompleteReadError(
                    f"Connection closed during read operation: {len(received)} bytes of a "
                    "Noise message received", expected_bytes=max(2, len(received) + 1),
                    received_bytes=len(received))
            received += chunk

    async def close(self) -> None:
        await self._frames.close()


def _signed_data(static_public: bytes) -> bytes:
    return SIGNED_PREFIX + static_public


class NoiseTransport(ISecureTransport):
    """``/noise`` for a host: one X25519 static key for all its connections, as
    py-libp2p's transport has."""

    def __init__(self, libp2p_keypair: KeyPair, static_private: bytes | None = None) -> None:
        self.libp2p_privkey: PrivateKey = libp2p_keypair.private_key
        self.local_peer = ID.from_pubkey(libp2p_keypair.public_key)
        self.static_private = static_private or os.urandom(DH_LENGTH)
        static_public = crypto_scalarmult_base(self.static_private)
        self._payload = NoiseHandshakePayload(
            libp2p_keypair.public_key,
            self.libp2p_privkey.sign(_signed_data(static_public)),
        ).serialize()

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        handshake = HandshakeState(False, self.static_private)
        frames = _NoiseFrames(conn)  # type: ignore[arg-type]
        handshake.read_message(await frames.read_msg())
        await frames.write_msg(handshake.write_message(self._payload))
        remote_key = self._remote_identity(handshake, handshake.read_message(
            await frames.read_msg()))
        return self._session(conn, handshake, remote_key, initiator=False)

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        handshake = HandshakeState(True, self.static_private)
        frames = _NoiseFrames(conn)  # type: ignore[arg-type]
        await frames.write_msg(handshake.write_message(b""))
        remote_key = self._remote_identity(handshake, handshake.read_message(
            await frames.read_msg()))
        remote_peer = ID.from_pubkey(remote_key)
        if peer_id is not None and remote_peer != peer_id:
            raise PeerIDMismatchesPubkey(
                f"dialled {peer_id} but the peer proved to be {remote_peer}")
        await frames.write_msg(handshake.write_message(self._payload))
        return self._session(conn, handshake, remote_key, initiator=True)

    @staticmethod
    def _remote_identity(handshake: HandshakeState, payload_bytes: bytes) -> PublicKey:
        assert handshake.remote_static is not None
        try:
            payload = NoiseHandshakePayload.deserialize(payload_bytes)
        except Exception as exc:  # protobuf or key type errors: all mean a bad peer
            raise NoiseFailure(f"malformed Noise handshake payload: {exc}") from None
        try:
            signed = payload.id_pubkey.verify(_signed_data(handshake.remote_static),
                                              payload.id_sig)
        except Exception:  # a key type's verifier may raise on a malformed signature
            signed = False
        if not signed:
            raise InvalidSignature("the peer's identity key did not sign its Noise key")
        return payload.id_pubkey

    def _session(self, conn: IRawConnection, handshake: HandshakeState,
                 remote_key: PublicKey, *, initiator: bool) -> ISecureConn:
        sending, receiving = handshake.split()
        return SecureSession(
            local_peer=self.local_peer,
            local_private_key=self.libp2p_privkey,
            remote_peer=ID.from_pubkey(remote_key),
            remote_permanent_pubkey=remote_key,
            is_initiator=initiator,
            conn=NoiseReadWriter(conn, sending, receiving),
        )
