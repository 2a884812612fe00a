"""node.noise: libp2p's Noise (XX, X25519, ChaChaPoly, SHA-256) on libsodium.

Checked against two references: the ``noiseprotocol`` package (what py-libp2p's Noise is
built on), byte for byte with the same keys, and py-libp2p's own Noise transport, over
real TCP connections both ways. kubo, a third (go-libp2p), is dialled over it by
tests/integration/test_ipfs.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import DecryptionFailedException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.exceptions import (
    InvalidSignature,
    NoiseFailure,
    PeerIDMismatchesPubkey,
)
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from node.noise import PROTOCOL_ID, HandshakeState, NoiseTransport

ECHO = TProtocol("/test/echo/1")
#: More than one Noise message can carry (65,519 bytes of plaintext).
PAYLOAD = os.urandom(150_000)


def _reference(initiator: bool, static: bytes, ephemeral: bytes) -> Any:
    from noise.connection import Keypair, NoiseConnection

    connection = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
    connection.set_as_initiator() if initiator else connection.set_as_responder()
    connection.set_keypair_from_private_bytes(Keypair.STATIC, static)
    connection.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    connection.start_handshake()
    return connection


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs")  # fixed keys, on purpose
@pytest.mark.parametrize("we_initiate", [True, False])
def test_handshake_and_transport_bytes_are_noiseprotocols_with_the_same_keys(
        we_initiate: bool) -> None:
    keys = [os.urandom(32) for _ in range(4)]
    ours = HandshakeState(we_initiate, keys[0], ephemeral_private=keys[1])
    mirror = _reference(we_initiate, keys[0], keys[1])  # noiseprotocol in our place
    peer = _reference(not we_initiate, keys[2], keys[3])
    payloads = [b"", b"responder's payload", b"initiator's payload"]
    for step, payload in enumerate(payloads):
        if (step % 2 == 0) == we_initiate:  # our turn to write
            message = ours.write_message(payload)
            assert message == bytes(mirror.write_message(payload))
            assert bytes(peer.read_message(message)) == payload
        else:
            message = bytes(peer.write_message(payload))
            assert ours.read_message(message) == payload
            assert bytes(mirror.read_message(message)) == payload
    assert peer.handshake_finished and mirror.handshake_finished
    sending, receiving = ours.split()
    for size in (0, 1, 1000, 65_519):
        data = os.urandom(size)
        ciphertext = sending.encrypt(b"", data)
        assert ciphertext == bytes(mirror.encrypt(data))
        assert bytes(peer.decrypt(ciphertext)) == data
        assert receiving.decrypt(b"", bytes(peer.encrypt(data))) == data


def _host(kind: str) -> Any:
    key_pair = create_new_key_pair()
    if kind == "node.noise":
        security = NoiseTransport(key_pair)
    else:
        from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
        from libp2p.security.noise.transport import Transport

        security = Transport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(key_pair=key_pair, sec_opt={PROTOCOL_ID: security},
                    muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux})


async def _echo(stream: Any) -> None:
    received = b""
    while len(received) < len(PAYLOAD):
        received += await stream.read(1 << 20)
    await stream.write(received[::-1])
    await stream.close()


@pytest.mark.parametrize(("dialler", "listener"), [("node.noise", "py-libp2p"),
                                                   ("py-libp2p", "node.noise"),
                                                   ("node.noise", "node.noise")])
async def test_a_connection_carries_a_stream_both_ways_with_py_libp2ps_noise(
        dialler: str, listener: str) -> None:
    a, b = _host(dialler), _host(listener)
    loopback = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    with trio.fail_after(30):
        async with a.run([loopback]), b.run([loopback]):
            b.set_stream_handler(ECHO, _echo)
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            # Each end knows the other by the identity it proved in the handshake.
            assert [peer.to_base58() for peer in a.get_network().connections] == [
                b.get_id().to_base58()]
            assert a.get_id() in b.get_network().connections
            stream = await a.new_stream(b.get_id(), [ECHO])
            await stream.write(PAYLOAD)
            received = b""
            while len(received) < len(PAYLOAD):
                received += await stream.read(1 << 20)
            assert received == PAYLOAD[::-1]
            await a.close()
            await b.close()


class _Pipe:
    """One end of a connection over memory, as py-libp2p's raw connection is read."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, n: int | None = None) -> bytes:
        return await self.reader.receive_some(n)

    async def write(self, data: bytes) -> None:
        await self.writer.send_all(data)

    async def close(self) -> None:
        await self.writer.aclose()


async def _handshake(dialler: NoiseTransport, listener: NoiseTransport, expected: ID,
                     to_dialler: Callable[[bytes], bytes] = bytes) -> tuple[Any, Any]:
    """Both ends over memory, the listener's bytes passing through ``to_dialler``; each end's
    secure connection, or the exception it raised."""
    dialler_writes, listener_reads = trio.testing.memory_stream_pair()
    listener_writes, relay_reads = trio.testing.memory_stream_pair()
    relay_writes, dialler_reads = trio.testing.memory_stream_pair()
    outcome: dict[str, Any] = {}

    async def relay() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while chunk := await relay_reads.receive_some():
                await relay_writes.send_all(to_dialler(chunk))

    async def run(name: str, call: Awaitable[Any]) -> None:
        try:
            outcome[name] = await call
        except Exception as exc:  # the test looks at which end failed, and how
            outcome[name] = exc
        if isinstance(outcome[name], Exception) or len(outcome) == 2:
            nursery.cancel_scope.cancel()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            nursery.start_soon(run, "dialler", dialler.secure_outbound(
                _Pipe(dialler_reads, dialler_writes), expected))  # type: ignore[arg-type]
            nursery.start_soon(run, "listener", listener.secure_inbound(
                _Pipe(listener_reads, listener_writes)))  # type: ignore[arg-type]
    return outcome.get("dialler"), outcome.get("listener")


async def test_a_dialler_refuses_a_listener_that_is_not_the_peer_it_dialled() -> None:
    listener = NoiseTransport(create_new_key_pair())
    someone_else = NoiseTransport(create_new_key_pair())
    dialled, _ = await _handshake(NoiseTransport(create_new_key_pair()), listener,
                                  someone_else.local_peer)
    assert isinstance(dialled, PeerIDMismatchesPubkey), dialled


async def test_a_handshake_signed_by_another_identity_is_refused() -> None:
    listener = NoiseTransport(create_new_key_pair())
    impostor = NoiseTransport(create_new_key_pair())
    # The listener presents its own Noise key with the impostor's identity and signature.
    listener._payload = impostor._payload
    dialled, _ = await _handshake(NoiseTransport(create_new_key_pair()), listener,
                                  impostor.local_peer)
    assert isinstance(dialled, InvalidSignature), dialled


async def test_a_changed_byte_in_the_handshake_fails_it() -> None:
    listener = NoiseTransport(create_new_key_pair())

    def flip_last(chunk: bytes) -> bytes:  # message 2's tag: its last byte
        return chunk[:-1] + bytes([chunk[-1] ^ 1]) if len(chunk) > 40 else chunk

    dialled, _ = await _handshake(NoiseTransport(create_new_key_pair()), listener,
                                  listener.local_peer, to_dialler=flip_last)
    assert isinstance(dialled, NoiseFailure), dialled


def test_a_low_order_key_from_a_peer_is_refused() -> None:
    responder = HandshakeState(False, os.urandom(32))
    responder.read_message(b"\0" * 32)  # message 1: its ephemeral key, the zero point
    with pytest.raises(NoiseFailure, match="invalid X25519 public key"):
        responder.write_message(b"")  # ee: DH with it


async def test_a_changed_byte_in_a_transport_message_fails_the_read() -> None:
    dialler_transport = NoiseTransport(create_new_key_pair())
    listener_transport = NoiseTransport(create_new_key_pair())
    dialled, listened = await _handshake(dialler_transport, listener_transport,
                                         listener_transport.local_peer)
    assert not isinstance(dialled, Exception) and not isinstance(listened, Exception)
    assert dialled.get_remote_peer() == listener_transport.local_peer
    assert listened.get_remote_peer() == dialler_transport.local_peer
    assert listened.conn.decrypt(dialled.conn.encrypt(b"hello")) == b"hello"
    sealed = dialled.conn.encrypt(b"hello")
    changed = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(DecryptionFailedException):
        listened.conn.decrypt(changed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2))
def test_any_bytes_for_a_handshake_message_fail_as_a_handshake_failure(garbage: bytes,
                                                                       step: int) -> None:
    """py-libp2p's upgrader turns a ``HandshakeFailure`` into a refused connection; anything
    else a peer's bytes could raise would escape it. Messages 2 and 3 are authenticated, so
    no bytes but the honest ones pass; message 1 is a bare ephemeral key."""
    honest = NoiseTransport(create_new_key_pair())
    ours = HandshakeState(step == 1, os.urandom(32))  # reads message step + 1
    peer = HandshakeState(step != 1, os.urandom(32))
    for done in range(step):  # the messages before, honestly
        writer, reader = (ours, peer) if (done % 2 == 0) == ours.initiator else (peer, ours)
        reader.read_message(writer.write_message(honest._payload if done else b""))
    if step == 0:
        with contextlib.suppress(NoiseFailure):  # too short, or a low-order key
            ours.read_message(garbage)
        return
    with pytest.raises(NoiseFailure):
        NoiseTransport._remote_identity(ours, ours.read_message(garbage))
