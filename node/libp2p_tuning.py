"""What py-libp2p 0.8 does that a busy or long-lived node cannot afford: per-message costs
of its pubsub, a health monitor that gives up on a connection at the first late ping, a
window update for every yamux read, and inbound connections that keep their slot once closed.

Found by profiling the hub of a 20-node devnet (bench/mesh.py):

- Every pubsub RPC carries the sender's signed peer record, and the receiver verifies
  its signature for every RPC, twice (``Pubsub`` and again in ``GossipSub.handle_rpc``),
  although a peer's record only changes with its addresses. We verify each distinct
  record once per peer and remember the bytes that passed.
- Every RPC sent rebuilds the local record's address set to see whether a cached
  record is still current. We keep the answer for a minute (a record that comes with
  pubsub RPCs only feeds the peerstore; peers dial the addresses in signed heartbeats).
  For 5 s it was still 5 % of a 100-node devnet leaf's active samples: a leaf forwards
  nothing, but py-libp2p builds the RPC, record included, before it finds no one to send
  it to, and the rebuild every 5 s parses every listen address.

These wrap the functions where the pubsub modules look them up, so the behaviour is
py-libp2p's own; only repeated work on identical inputs is skipped. (gossipsub 1.2's
IDONTWANT, sent to every mesh peer for every message however small, is avoided by
not offering 1.2: see ``node.mesh``.)

And one of its connection health monitor, found on 100 daemons sharing 2 cores: with
``abort_connection_on_ping_failure`` it closes a connection on the first ping that takes
over ``ping_timeout``, so a peer whose event loop is busy for a while (a loaded host) loses
its connections, and the reconnections load it further: a requester's decision to the node
it chose failed twice that way. A connection is now closed after
``PING_FAILURES_TO_CLOSE`` failed pings in a row; the ones before count as skipped probes.

And one of its yamux, found by timing each task of an idle leaf in a 20-node devnet: a
stream's reader granted the sender more window after every read, however small, so every
gossip RPC (about 1 KB) was answered by a WINDOW_UPDATE frame: one more encrypted write on
one end and read on the other, a third of the node's pubsub stream work. Its own hysteresis
(go-yamux's: grant once half the window is consumed) is bypassed by a "partial slack"
branch. A reader now grants only once ``WINDOW_GRANT_BYTES`` (or half its window, go-yamux's
rule) are consumed, and py-libp2p's own code does the granting (and its window
auto-tuning) from there.

And one of its pubsub, found by profiling an idle leaf of a 100-node devnet: the cache of
validation results keeps its LRU order in a list, so every message received searched and
shifted a list of up to 1,000 message IDs (``in``, ``remove``, ``pop(0)``): 15 % of the
leaf's active samples, 9-11 µs a message, now 1. The same cache, TTL and eviction, now
keeps its order in an ``OrderedDict``.

And one of its swarm, found when a node flooded by banned peers' redials stopped taking any
connection: its handler for an inbound connection holds one of the swarm's inbound slots
(``max_connections - min_connections``, 250) and, once the connection is up, waits for the
swarm to stop, not for the connection to close. So each connection a node ever accepted
kept its slot, and its handler task with the connection's objects, for good: after 250,
opened and closed, by anyone, a node refused every peer until restarted. The handler now
returns once its connection has closed, and the slot is given back.

And one more of its yamux, found by profiling a gossip leaf: its ``PY_YAMUX_*`` tunables
are read from the environment at every call, several times for each frame received (the
data frame's read timeout, the window's grant threshold, the debug switch), 1.5 % of a
leaf's active samples. They are read once, when these wrappers are installed: a daemon's
environment does not change while it runs.

And one more of its yamux, found by profiling the leaves of a 100-node devnet: it reads
each data frame's body under a fresh ``trio.fail_after`` (a cancel scope with a deadline,
entered and left), so that a peer cannot stall it halfway; a tenth of a leaf's active
samples. The body of a small frame is nearly always decrypted already, with its header,
and waits in the secure session's buffer: there is nothing to wait for, so it is taken
from there with no timer. A body not all there is read as before.

And one of its locks, found by counting the scheduler passes of a request's reply on 100
daemons sharing 2 cores: a small write through yamux, Noise and TCP takes four locks (the
stream's writer and window locks, the connection's, the socket's), and trio's ``acquire``
yields to the scheduler even when the lock is free, so writing one frame took seven passes
through the run loop, each a batch of trio's scheduler and an ``epoll_wait``. Those locks
now take a free lock without yielding (``EagerLock``); a lock held by another task is
waited for as before, in trio's fair order. Of the three passes left, one was yamux's own,
after each frame written, where the socket's ``send_all`` has just yielded; the same
function formatted a debug line for every frame (its header unpacked, its flags named)
whether or not debug logging was on. A frame is now written under the connection's lock
and nothing else (``_write_frame``): two passes a write, and a request's round trip between
two nodes costs 17-20 % less CPU than with neither (``bench/channel.py``).

And one of its host, found when a peer's pubsub frame that was no protobuf took a daemon
down: an exception that any protocol's stream handler lets out is not contained to its
stream. It leaves the connection's nursery and the swarm's, and the whole host stops, so
one malformed message from anybody stopped the node. A handler's failure now resets its
stream and is logged at debug level; nothing else is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import libp2p.stream_muxer.yamux.yamux as yamux_module
import trio
from libp2p.host.basic_host import BasicHost
from libp2p.io.trio import TrioTCPStream
from libp2p.network.health.monitor import ConnectionHealthMonitor
from libp2p.network.health.ping_probe import ConnectionPingResult
from libp2p.network.swarm import Swarm
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.rw_lock import ReadWriteLock

log = logging.getLogger("bacnode.libp2p")

#: Distinct (peer, record) pairs remembered as verified.
MAX_VERIFIED_RECORDS = 4096
#: How long the local record is reused without re-checking the listen addresses.
LOCAL_RECORD_SECONDS = 60.0

#: Failed health pings in a row after which a connection is closed (one a check interval).
PING_FAILURES_TO_CLOSE = 3

#: A yamux reader grants more window once it has consumed this much (or half its window).
#: Not go-yamux's half window alone: py-libp2p's sender polls every 10 ms while its window is
#: empty, so a bulk transfer (bitswap's 256 KiB blocks) that ran it dry stalled.
WINDOW_GRANT_BYTES = 32 * 1024

#: yamux's functions that read a ``PY_YAMUX_*`` variable and that nothing else changes.
YAMUX_TUNABLES = ("_perf_yamux_debug_enabled", "_yamux_disable_hysteresis",
                  "_yamux_release_on_read", "_yamux_batch_threshold_divisor",
                  "_yamux_data_read_timeout")

_applied = False

#: The raw stream of the inbound connection whose handler runs in this task.
_inbound_stream: ContextVar[Any] = ContextVar("bacnode_inbound_stream", default=None)


class _OrderedValidationCache(pubsub_module.ValidationCache):
    """py-libp2p's cache of validation results (same TTL, size and LRU eviction), its
    order kept by an ``OrderedDict`` instead of a list searched on every access."""

    def __init__(self, ttl: int = 300, max_size: int = 1000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.cache: OrderedDict[bytes, Any] = OrderedDict()  # type: ignore[assignment]

    def get(self, msg_id: bytes) -> Any:
        result = self.cache.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.cache[msg_id]
            return None
        self.cache.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: Any) -> None:
        while self.cache and len(self.cache) >= self.max_size:  # as py-libp2p's, even
            self.cache.popitem(last=False)  # when msg_id is in: it is put back, last
        self.cache[msg_id] = result
        self.cache.move_to_end(msg_id)

    def _remove(self, msg_id: bytes) -> None:
        self.cache.pop(msg_id, None)

    def clear_expired(self) -> None:
        now = time.time()
        for msg_id in [key for key, result in self.cache.items()
                       if now - result.timestamp > self.ttl]:
            del self.cache[msg_id]


class EagerLock:
    """A trio ``Lock`` or ``Semaphore`` whose ``acquire`` takes a free one at once, without
    the scheduler pass trio's own makes first; a taken one is waited for in trio's order.
    For locks on a path that yields anyway (a socket's send or receive), so that the task
    still checkpoints; anything else is the wrapped lock's own."""

    __slots__ = ("_inner",)

    def __init__(self, inner: trio.Lock | trio.Semaphore) -> None:
        self._inner = inner

    async def acquire(self) -> None:
        try:
            self._inner.acquire_nowait()
        except trio.WouldBlock:
            await self._inner.acquire()

    def release(self) -> None:
        self._inner.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._inner.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _write_frame(self: Any, data: bytes) -> None:
    """yamux's: one frame at a time on the connection."""
    async with self._write_lock:
        await self.secured_conn.write(data)


def _eager_locks(init: Callable[..., None], *names: str) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in names:
            setattr(self, name, EagerLock(getattr(self, name)))

    return __init__


class _InboundConnectionClosed(Exception):
    """Ends py-libp2p's handler of an inbound connection once that connection has closed
    (its ``except Exception`` closes the raw connection, already closed, and returns)."""


def _memoize_record_checks(check: Callable[..., bool]) -> Callable[..., bool]:
    verified: OrderedDict[tuple[Any, bytes], None] = OrderedDict()

    def consume(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return check(msg, host, peer_id)
        key = (peer_id, hashlib.sha256(msg.senderRecord).digest())
        if key in verified:
            verified.move_to_end(key)
            return True
        ok = check(msg, host, peer_id)
        if ok:
            verified[key] = None
            if len(verified) > MAX_VERIFIED_RECORDS:
                verified.popitem(last=False)
        return ok

    return consume


def _cache_local_record(build: Callable[[Any], tuple[bytes, bool]]) -> Callable[..., Any]:
    # Keyed by the peerstore's current record object: when identify (or anything else)
    # issues a newer record, the cache misses, so we never send one older than a peer saw.
    cached: dict[int, tuple[float, Any, bytes]] = {}

    def local_record(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        current = host.get_peerstore().get_local_record()
        hit = cached.get(id(host))
        if (
            hit is not None
            and current is not None
            and hit[1] is current
            and now - hit[0] < LOCAL_RECORD_SECONDS
        ):
            return hit[2], False
        record, fresh = build(host)
        cached[id(host)] = (now, host.get_peerstore().get_local_record(), record)
        return record, fresh

    return local_record


def _tolerate_late_pings(ping: Callable[..., Any]) -> Callable[..., Any]:
    failures: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    async def ping_connection(self: Any, conn: Any) -> ConnectionPingResult:
        result = await ping(self, conn)
        if result.skipped:
            return result
        if result.success:
            failures.pop(conn, None)
            return result
        failures[conn] = failures.get(conn, 0) + 1
        if failures[conn] < PING_FAILURES_TO_CLOSE:
            return ConnectionPingResult(success=False, skipped=True)
        return result

    return ping_connection


def _grant_window_in_batches(grant: Callable[..., Any]) -> Callable[..., Any]:
    async def auto_tune_and_send_window_update(stream: Any, *, bytes_read: int = 0) -> None:
        buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
        consumed = stream.target_recv_window - (stream.recv_window + buffered)
        # The constant first: nearly every read is of a small message, well under it.
        if consumed < WINDOW_GRANT_BYTES or consumed < stream._grow_threshold():
            return
        await grant(stream, bytes_read=bytes_read)

    return auto_tune_and_send_window_update


def _take_buffered_bodies(read_body: Callable[..., Any]) -> Callable[..., Any]:
    async def read_data_body(self: Any, length: int) -> bytes:
        session = self.secured_conn
        if (isinstance(session, SecureSession)
                and session.high_watermark - session.low_watermark >= length):
            return session._drain(length)
        body: bytes = await read_body(self, length)
        return body

    return read_data_body


def _end_inbound_handlers_on_close(
    handle: Callable[..., Any], upgrade: Callable[..., Any],
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def handle_inbound(self: Any, read_write_closer: Any, *args: Any) -> None:
        token = _inbound_stream.set(read_write_closer)
        try:
            await handle(self, read_write_closer, *args)
        finally:
            _inbound_stream.reset(token)

    async def upgrade_inbound(self: Any, raw_conn: Any, maddr: Any) -> Any:
        muxed_conn = await upgrade(self, raw_conn, maddr)
        closed = getattr(muxed_conn, "event_closed", None)
        # Only for the handler's own upgrade: hole punching upgrades inbound too, and
        # wants the connection back.
        if closed is None or getattr(raw_conn, "stream", None) is not _inbound_stream.get():
            return muxed_conn
        await closed.wait()
        raise _InboundConnectionClosed

    return handle_inbound, upgrade_inbound


def _contain_stream_handler_failures(handle: Callable[..., Any]) -> Callable[..., Any]:
    async def handle_stream(self: Any, net_stream: Any) -> None:
        try:
            await handle(self, net_stream)
        except Exception as exc:
            log.debug("a %s stream from %s failed: %r", net_stream.get_protocol(),
                      net_stream.muxed_conn.peer_id, exc)
            with contextlib.suppress(Exception):
                await net_stream.reset()

    return handle_stream


def _read_yamux_tunables_once() -> None:
    for name in YAMUX_TUNABLES:
        read = getattr(yamux_module, name, None)
        if read is not None:
            setattr(yamux_module, name, lambda value=read(): value)


def apply() -> None:
    """Install the wrappers (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    consume = _memoize_record_checks(pubsub_module.maybe_consume_signed_record)
    pubsub_module.maybe_consume_signed_record = consume  # type: ignore[assignment]
    gossipsub_module.maybe_consume_signed_record = consume  # type: ignore[assignment]
    local = _cache_local_record(gossipsub_module.env_to_send_in_RPC)
    gossipsub_module.env_to_send_in_RPC = local  # type: ignore[assignment]
    pubsub_module.env_to_send_in_RPC = local  # type: ignore[assignment]
    ConnectionHealthMonitor._ping_connection = _tolerate_late_pings(  # type: ignore[method-assign]
        ConnectionHealthMonitor._ping_connection)
    stream = yamux_module.YamuxStream
    stream._auto_tune_and_send_window_update = _grant_window_in_batches(  # type: ignore[method-assign]
        stream._auto_tune_and_send_window_update)
    _read_yamux_tunables_once()
    yamux_module.Yamux._read_data_body = _take_buffered_bodies(  # type: ignore[method-assign]
        yamux_module.Yamux._read_data_body)
    BasicHost._swarm_stream_handler = _contain_stream_handler_failures(  # type: ignore[method-assign]
        BasicHost._swarm_stream_handler)
    pubsub_module.ValidationCache = _OrderedValidationCache  # type: ignore[misc]
    TrioTCPStream.__init__ = _eager_locks(  # type: ignore[method-assign]
        TrioTCPStream.__init__, "read_lock", "write_lock")
    yamux_module.Yamux.__init__ = _eager_locks(  # type: ignore[method-assign]
        yamux_module.Yamux.__init__, "_write_lock")
    yamux_module.Yamux._write_frame = _write_frame  # type: ignore[method-assign]
    stream.__init__ = _eager_locks(stream.__init__, "window_lock")  # type: ignore[method-assign]
    ReadWriteLock.__init__ = _eager_locks(  # type: ignore[method-assign]
        ReadWriteLock.__init__, "_readers_lock", "_writer_lock")
    Swarm._do_handle_inbound_connection, Swarm.upgrade_inbound_raw_conn = (  # type: ignore[method-assign]
        _end_inbound_handlers_on_close(Swarm._do_handle_inbound_connection,
                                       Swarm.upgrade_inbound_raw_conn))
