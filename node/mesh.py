"""The libp2p side of a node: host, gossipsub topics, and the point-to-point bid protocol.

Every gossiped message passes ``protocol``'s envelope verification inside the
topic validator, so an unsigned, forged, replayed or malformed message is
dropped (and counted by reason) before gossipsub forwards it or we act on it.

py-libp2p 0.8 facts this module is shaped around (found by experiment):
- Pubsub must be running before the host accepts streams, or an early peer
  stream kills the swarm; so pubsub starts first, then ``host.run``.
- A sync validator that raises tears the host down: ours never raises.
- Leaving ``host.run`` does not close TCP connections; ``host.close()`` does.
- Defaults changed on purpose: heartbeat 1 s (not 120 s), adaptive gossip off
  (it stretches the heartbeat on small meshes), eclipse protection off (a
  loopback devnet has one IP), spam limit raised from 10 msg/s, inbound peer
  exchange ignored (it would make us dial addresses any peer hands us).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from protocol import PROTOCOL_NAME, codec
from protocol.cid import IpfsFormatError, decode_uvarint
from protocol.envelope import Envelope, EnvelopeVerifier
from protocol.errors import ClockSkew, RemoteProtocolError, ReplayedMessage
from protocol.identity import NodeKey
from protocol.messages import (
    ANNOUNCEMENT_BURST,
    ANNOUNCEMENTS_PER_SECOND,
    OPEN_ANNOUNCEMENT_BURST,
    OPEN_ANNOUNCEMENTS_PER_SECOND,
    JobAnnouncement,
    Message,
    NodeInfo,
    ResultRecord,
    Verdict,
    open_message,
    seal_message,
)

from . import dht, libp2p_tuning
from .addresses import host_of, is_public
from .core.buckets import TokenBuckets
from .noise import PROTOCOL_ID as NOISE_PROTOCOL_ID
from .noise import NoiseTransport
from .notifee import Notifee
from .reach import Reach, is_relayed

log = logging.getLogger("bacnode.mesh")

libp2p_tuning.apply()

TOPIC_JOBS = f"{PROTOCOL_NAME}/jobs"
TOPIC_RESULTS = f"{PROTOCOL_NAME}/results"
TOPIC_NODES = f"{PROTOCOL_NAME}/nodes"
#: Which message types each topic carries; anything else on a topic is dropped.
TOPIC_MESSAGE_TYPES: dict[str, tuple[type[Message], ...]] = {
    TOPIC_JOBS: (JobAnnouncement,),
    TOPIC_RESULTS: (ResultRecord, Verdict),
    TOPIC_NODES: (NodeInfo,),
}
#: Requests and their acks, many over one long-lived stream per peer (see ``_Channel``).
REQUESTS_PROTOCOL = TProtocol("/bacnode/requests/1")
RESULTS_PROTOCOL = TProtocol("/bacnode/results/1")
#: A running execution's output, pushed as it is written (asked for by the job's requester).
LOGS_PROTOCOL = TProtocol("/bacnode/logs/1")
#: A joining node's copy of a peer's membership table: one frame per row, ``[milliseconds
#: since heard, signed NodeInfo as its origin sent it]``, the responder's own first.
MEMBERS_PROTOCOL = TProtocol("/bacnode/members/1")
#: Rows taken from one peer's table, and how long reading them may take.
MAX_MEMBER_ROWS = 10_000
MEMBERS_READ_SECONDS = 10.0
#: After copying a bootstrap peer's table, a node copies it again this much later, once:
#: nodes that joined together with it were not in the first copy (the peer had not heard
#: them yet), and their one heartbeat may have come before this node was in the gossip
#: mesh. Without it such a node stayed unlisted until its next heartbeat (a test of three
#: nodes started together, at long intervals, missed one now and then; a 100-node run once
#: listed every node only after 16.6 s, 2-3 s in others).
MEMBERS_RECOPY_SECONDS = 6.0
#: How old a copied row's heartbeat may be. Gossip refuses messages older than the 60 s skew
#: limit, but a live row in a large network is a heartbeat up to two intervals old (100 s
#: at 100 nodes); a row is its origin's signed word, so an old one can only be stale.
MEMBERS_MAX_AGE_MS = 15 * 60_000
#: Largest output chunk in one logs frame.
LOG_CHUNK = 64 * 1024
RESULT_CHUNK = 256 * 1024
#: Connections one peer may hold with us at once: one, a second while two dials cross, and
#: a third for an AutoNAT dial-back or a hole punch (the relayed connection stays a while).
CONNECTIONS_PER_PEER = 3
#: Inbound connections still in their handshake at once (a SYN flood of libp2p dials).
MAX_PENDING_INBOUND = 128
#: How long one bootstrap dial may take (they run at once, so this is also how long the
#: slowest one can delay a retry round).
BOOTSTRAP_DIAL_SECONDS = 5.0
#: Streams one peer may hold open to us at once, per protocol. An honest peer keeps one
#: request channel (two across a reconnect), fetches a few results at a time, and follows
#: the logs of the executions it requested here (at most --max-jobs of them run at once).
#: A peer that opens more gets the extra ones reset: it cannot tie up our tasks and memory.
STREAMS_PER_PEER = {"/bacnode/requests/1": 4, "/bacnode/results/1": 8,
                    "/bacnode/logs/1": 32, "/bacnode/members/1": 2}
MAX_STREAM_MESSAGE = 256 * 1024
RECONNECT_SECONDS = 2.0
#: ... and, while connected to every bootstrap peer, this often (a dropped connection
#: wakes it at once).
RECONNECT_SETTLED_SECONDS = 60.0
#: Peer exchange: when none of its bootstrap peers answers, a node keeps this many
#: connections by dialling nodes it learned of from their signed heartbeats, so the mesh
#: stays whole when its bootstrap peers go away. Not while one answers: every connection
#: costs gossipsub work each heartbeat, and on 20 daemons sharing 2 cores 8 of them each
#: took gossip p99 from 77 ms to 8.6 s and idle CPU from 0.8 % to 4.1 % (bench/mesh.py).
PEER_TARGET = 3
#: Peers dialled at once to reach PEER_TARGET, so a node joining a large network does not
#: dial everyone it hears of at the same moment.
PEER_DIALS_AT_ONCE = 4
#: How long a learned peer whose dial failed is left alone.
PEER_DIAL_BACKOFF_SECONDS = 60.0
#: Validated messages waiting for py-libp2p to deliver them; bounded against floods.
MAX_PENDING_DELIVERIES = 10_000
#: Refusals that cost the forwarder nothing (go-libp2p's ValidationIgnore): a message that
#: waited over the skew window in queues on a loaded network, or a copy that came back,
#: says nothing about the peer that relayed it. Scored like the others, they had honest
#: relays of a 100-daemon devnet graylisted by the dozen once it fell behind, and the
#: reconnections that followed kept it behind.
UNBLAMED_REFUSALS = (ClockSkew, ReplayedMessage)
MAX_QUEUED_MESSAGES = 10_000
STOP_GRACE_SECONDS = 5
ADDRESS_TTL_SECONDS = 600
HEALTH_CHECK_SECONDS = 30.0
#: Past this many connections a node closes its idlest ones. Every connection is a gossip
#: peer, so each one costs gossip control traffic every heartbeat, and nothing else closes
#: them: the DHT's lookups (each provide and find) and a requester's asks leave them open.
#: (The DHT's refresh did too; it now runs once: see ``node.dht``.)
CONNECTION_TARGET = 24
#: A connection is in use this long after the last request over it (either way).
CONNECTION_IDLE_SECONDS = 120.0
#: How often the connections are counted, and how old one must be to be closed.
TRIM_CHECK_SECONDS = 30.0
#: Streams of these protocols do not keep a connection open: every peer has them.
_IDLE_PROTOCOLS = frozenset({"/meshsub/1.1.0", "/meshsub/1.0.0", "/meshsub/1.2.0",
                             "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0",
                             str(REQUESTS_PROTOCOL)})
#: Gossipsub v1.1 peer scoring: each message a peer forwards that bacnode's validators
#: refuse costs it a point on that topic (decaying by 0.1 % a heartbeat, so it is forgotten
#: in about an hour). Below GOSSIP_THRESHOLD it gets no gossip from us. Below
#: GRAYLIST_THRESHOLD gossipsub refuses its GRAFTs, and bacnode (py-libp2p 0.8 does not do
#: it by itself) prunes it from every topic's mesh and drops whatever it sends before
#: decoding it, each drop counting against it again, so it stays there while it keeps on.
#: py-libp2p's own publish gate is left open (its receive path would stop the counting at
#: its threshold). An honest peer sends no invalid message; a garbled relay costs one point.
INVALID_MESSAGE_PENALTY = 1.0
GOSSIP_THRESHOLD = -40.0
GRAYLIST_THRESHOLD = -80.0
#: Graylisted peers are looked for (to prune and disconnect them) once a message is refused,
#: at most this often: a score falls below the threshold only through refused messages.
GRAYLIST_CHECK_SECONDS = 0.25
#: ... and otherwise this often, in case a score fell some other way.
GRAYLIST_BACKSTOP_SECONDS = 60.0
#: How long a graylisted peer's connections are refused after we disconnect it. Its score
#: decays meanwhile; when it comes back it starts from what is left of it.
BAN_SECONDS = 600.0
#: Job announcements taken from one origin, by default: the rate a requester keeps to
#: (protocol.messages.ANNOUNCEMENTS_PER_SECOND), with twice its burst. An honest requester
#: sends at most BURST + RATE·t in any t seconds; gossip can only delay its announcements,
#: so they arrive within 2·BURST + RATE·t as long as none is held up more than BURST/RATE
#: (1 s): the bucket never refuses one. Beyond, they are refused unread, each costing the
#: origin a point if it sent it itself (81 refusals graylist it, so an honest requester
#: sending at its full rate would need to be held up 1.8 s), and a relay nothing
#: (Mesh._refuse_unread). Operators set the rate (``announcements_per_origin``); the burst
#: stays this many seconds' worth of it.
ORIGIN_ANNOUNCEMENTS_PER_SECOND = ANNOUNCEMENTS_PER_SECOND
ORIGIN_BURST_SECONDS = 2 * ANNOUNCEMENT_BURST / ANNOUNCEMENTS_PER_SECOND
#: Of those, announcements gossiped (open to any node): the rate an honest requester keeps
#: to for those (protocol.messages.OPEN_ANNOUNCEMENTS_PER_SECOND), or the rate above when
#: an operator set it lower, with twice the requester's burst for them, as above.
ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND = OPEN_ANNOUNCEMENTS_PER_SECOND
ORIGIN_OPEN_BURST_SECONDS = 2 * OPEN_ANNOUNCEMENT_BURST / OPEN_ANNOUNCEMENTS_PER_SECOND
#: Job announcements taken from one forwarding peer, whatever their origins, as a multiple
#: of the per-origin rate: one peer inventing many requesters (each signing its own) cannot
#: flood us either. Generous, since a hub relays every requester's announcements.
PEER_ANNOUNCEMENT_FACTOR = 10
#: Origins whose announcement rate is followed (the least recently heard are forgotten).
MAX_TRACKED_ORIGINS = 10_000
#: Nodes whose announced addresses are kept parsed (a heartbeat repeats them).
MAX_PARSED_ADDRESS_SETS = 10_000

MessageHandler = Callable[[str, Envelope, Message], Awaitable[None]]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
#: Returns the file holding an execution's results, or None when it is not here.
ResultsLookup = Callable[[str], Awaitable[Path | None]]
#: (execution ID, asking peer) -> its output as it is written, or None when not for them.
LogsSource = Callable[[str, str], AsyncIterator[tuple[int, bytes]] | None]
#: This node's membership table: (milliseconds since heard, signed NodeInfo wire bytes).
MembersSource = Callable[[], list[tuple[int, bytes]]]
#: Rows copied from a peer's table, each verified: (when the peer heard it, our clock in
#: milliseconds; envelope; info); and whether this is the second copy of a join.
MembersHandler = Callable[[list[tuple[int, Envelope, Message]], bool], Awaitable[None]]


class MeshError(Exception):
    """The mesh could not start or a peer could not be reached; the message says why."""


def message_id(msg: Any) -> bytes:
    """A pubsub message's ID: the SHA-256 of its topics and data, which nobody can give to
    a message with other content, as they could its unsigned origin and sequence number.
    The topics count (as in Ethereum's gossip), so the same bytes on two topics are two
    messages, each validated for its own.

    py-libp2p asks for a message's ID eight times on its way in (seen, validation cache,
    seen again, message cache...), one after the other: the last one asked is remembered,
    with the message itself, so that it cannot be another's that took its place."""
    global _last_message_id
    last_msg, last_id = _last_message_id
    if msg is last_msg:
        return last_id
    digest = hashlib.sha256()
    for topic in msg.topicIDs:
        name = topic.encode()
        digest.update(len(name).to_bytes(4, "big") + name)
    digest.update(msg.data)
    found = digest.digest()
    _last_message_id = (msg, found)
    return found


_last_message_id: tuple[Any, bytes] = (None, b"")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_swarm_key(path: Path) -> str:
    """The 64-hex-digit PSK from a go-libp2p style ``swarm.key`` file."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise MeshError(f"cannot read swarm key {path}: {exc.strerror}") from None
    if len(lines) != 3 or lines[0] != "/key/swarm/psk/1.0.0/" or lines[1] != "/base16/":
        raise MeshError(
            f"{path} is not a swarm key (expected '/key/swarm/psk/1.0.0/', '/base16/', "
            "64 hex digits); create one with: bacnode swarm-key generate"
        )
    key = lines[2].lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise MeshError(f"{path}: the key must be 64 hex digits")
    return key


_REQUEST_ID_BYTES = 8
#: The longest varint a frame's length may take (as ``protocol.cid.decode_uvarint`` reads).
_MAX_VARINT_BYTES = 9


class _StreamClosed(MeshError):
    """The stream ended between frames (its connection is going, or the peer closed it)."""


class _FrameReader:
    """The varint-prefixed frames of a stream, read in whatever chunks have arrived.
    py-libp2p's reader takes a frame's length one byte at a time, each read an await of
    its own, so on a busy node every frame of a request stream waited several turns of
    the event loop; frames that arrived together are now taken without waiting at all
    (bench/channel.py: 1.2x the requests a second, a fifth less CPU each)."""

    def __init__(self, stream: Any, max_size: int) -> None:
        self._stream = stream
        # The muxer's stream, read straight: py-libp2p's stream takes a lock around every
        # read only to look at its state, and taking a trio lock is a trip through the
        # scheduler, for every message (3 % of a gossip leaf's CPU).
        self._read = getattr(getattr(stream, "muxed_stream", None), "read", stream.read)
        self._max_size = max_size
        self._buffer = bytearray()

    async def next(self) -> bytes:
        while (frame := self._take()) is None:
            try:
                chunk = await self._read()
            except Exception:
                # The end (or a reset), read again through py-libp2p's stream: it raises
                # its own exception for it and keeps its state, which frees the stream
                # once both sides are closed.
                chunk = await self._stream.read()
            if not chunk:
                raise _StreamClosed("the stream closed")
            self._buffer += chunk
        return frame

    def _take(self) -> bytes | None:
        if all(byte & 0x80 for byte in self._buffer[:_MAX_VARINT_BYTES]):
            if len(self._buffer) >= _MAX_VARINT_BYTES:
                raise MeshError("a frame's length is no varint")
            return None  # its length has not all arrived yet
        try:
            length, start = decode_uvarint(self._buffer)
        except IpfsFormatError as exc:
            raise MeshError(f"a frame's length is no varint: {exc}") from None
        if length > self._max_size:
            raise MeshError(f"a frame of {length} bytes, over the limit of {self._max_size}")
        if len(self._buffer) < start + length:
            return None
        frame = bytes(self._buffer[start:start + length])
        del self._buffer[:start + length]
        return frame


class _Reply:
    """Where a reply is left for the request waiting on it: ``None`` when the stream
    closed first. Lighter than a memory channel, which is two objects and a state to make
    for every request."""

    __slots__ = ("arrived", "data")

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.data: bytes | None = None

    def put(self, data: bytes | None) -> None:
        self.data = data
        self.arrived.set()


class _Channel:
    """The requests this node sends one peer, over one stream: each frame is a request's
    number (8 bytes) and its bytes; each reply comes back under the same number."""

    def __init__(self, stream: Any, peer_id: str) -> None:
        self.stream = stream
        self.peer_id = peer_id
        self.closed = False
        self._next = 0
        self._waiting: dict[int, _Reply] = {}
        # Taken without a scheduler pass when free: the write yields in its socket's send.
        self._write_lock = libp2p_tuning.EagerLock(trio.Lock())

    async def request(self, data: bytes) -> bytes:
        if self.closed:
            raise MeshError(f"the stream to {self.peer_id} closed")
        number, self._next = self._next, self._next + 1
        self._waiting[number] = waiting = _Reply()
        try:
            async with self._write_lock:
                await self.stream.write(encode_varint_prefixed(
                    number.to_bytes(_REQUEST_ID_BYTES, "big") + data))
            await waiting.arrived.wait()
        finally:
            self._waiting.pop(number, None)
        if waiting.data is None:
            raise MeshError(f"the stream to {self.peer_id} closed before it answered")
        return waiting.data

    def deliver(self, frame: bytes) -> None:
        waiting = self._waiting.pop(int.from_bytes(frame[:_REQUEST_ID_BYTES], "big"), None)
        if waiting is not None:
            waiting.put(frame[_REQUEST_ID_BYTES:])

    def close(self) -> None:
        self.closed = True
        for waiting in self._waiting.values():
            waiting.put(None)
        self._waiting.clear()


@dataclass
class MeshStats:
    accepted: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    #: Inbound streams reset over ``STREAMS_PER_PEER``, by protocol.
    refused_streams: Counter[str] = field(default_factory=Counter)
    #: Connections of banned (graylisted, disconnected) peers closed as they opened.
    refused_connections: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"Accepted": dict(self.accepted), "Dropped": dict(self.dropped),
                "RefusedStreams": dict(self.refused_streams),
                "RefusedConnections": self.refused_connections}


class _Pubsub(Pubsub):
    """py-libp2p's pubsub, asking ``refuse(forwarder, msg)`` about a peer's message before
    anything else: a graylisted peer's messages, and announcements over a rate, are
    dropped before py-libp2p looks them up, scores them and queues them for validation.
    ``refuse`` is told whether the message was seen before (it is then dropped anyway)."""

    def __init__(self, *args: Any, refuse: Callable[[ID, Any, bool], bool],
                 before_push: Callable[[], None], deliver: Callable[[Any], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refuse = refuse
        self._before_push = before_push
        self._deliver = deliver

    def notify_subscriptions(self, publish_message: Any) -> None:
        # Straight to the mesh's own queues: py-libp2p's subscription channel (32 messages,
        # the rest dropped) needed a task of ours to drain it, one more hop through the
        # scheduler for every message a node takes.
        self._deliver(publish_message)

    async def push_msg(self, msg_forwarder: ID, msg: Any) -> None:
        self._before_push()
        if msg_forwarder != self.my_id and self._refuse(
                msg_forwarder, msg, self._is_msg_seen(msg)):
            return
        await super().push_msg(msg_forwarder, msg)

    async def continuously_read_stream(self, stream: Any) -> None:
        """A peer's pubsub stream, read as py-libp2p reads it but for two costs of every
        message (a gossip leaf spent 8 % of its CPU on them):
        - RPCs are taken from whatever bytes have arrived (``_FrameReader``), not with an
          await for each byte of their length and one more for the rest;
        - each message is pushed here, in order, not in a task of its own spawned through
          py-libp2p's task manager (which walks its task tree to find each one's parent).
          Nothing in a push waits on the network: every topic's validator is synchronous,
          and forwarding only queues the message for each peer's sender task.

        A peer whose framing or protobuf is malformed has its stream reset and is dropped
        as dead, as py-libp2p does for a malformed length (py-libp2p let a protobuf error
        out of the handler, and the host stopped)."""
        peer_id = stream.muxed_conn.peer_id
        frames = _FrameReader(stream, self.max_inbound_rpc_size)
        try:
            while self.manager.is_running:
                rpc = _parse_rpc(await frames.next())
                # Looked up at each call: libp2p_tuning wraps it in the module.
                if not pubsub_module.maybe_consume_signed_record(rpc, self.host, peer_id):
                    continue
                for msg in rpc.publish:
                    if self._is_subscribed_to_msg(msg):
                        await self.push_msg(peer_id, msg)
                if rpc.subscriptions:
                    if len(rpc.subscriptions) > self.max_subscriptions_per_rpc:
                        log.debug("%s sent %d subscriptions in one RPC; ignored", peer_id,
                                  len(rpc.subscriptions))
                    else:
                        for subscription in rpc.subscriptions:
                            self.handle_subscription(peer_id, subscription)
                if rpc.HasField("control"):
                    await self.router.handle_rpc(rpc, peer_id)
        except (_StreamClosed, StreamEOF, StreamError, IOException, RawConnError):
            pass  # the stream or its connection closed: left to py-libp2p, as it does
        except MeshError as exc:
            log.debug("dropping %s's pubsub stream: %s", peer_id, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer_id)


def _parse_rpc(frame: bytes) -> Any:
    """A pubsub RPC from a peer's frame. protobuf's ``DecodeError`` is not imported: its
    package's top-level name, ``google``, is also an unrelated distribution on PyPI, so
    it cannot be declared by that name. Parsing is all that can fail here, so any error
    is the frame's, reported as ours."""
    rpc = rpc_pb2.RPC()
    try:
        rpc.ParseFromString(frame)
    except Exception as exc:
        raise MeshError(f"a frame that is no pubsub RPC: {exc}") from None
    return rpc


class _ConnectionEvents(Notifee):
    """Wakes the reconnect loop when a connection closes; hands new connections to
    ``opened`` (which closes those of banned peers); tells ``linked`` of both."""

    def __init__(self, wake: Callable[[], None],
                 opened: Callable[[Any], Awaitable[None]] | None = None,
                 linked: Callable[[ID, bool], None] | None = None) -> None:
        self._wake = wake
        self._opened = opened
        self._linked = linked

    async def connected(self, network: Any, conn: Any) -> None:
        if self._opened is not None:
            await self._opened(conn)
        if self._linked is not None:
            self._linked(conn.muxed_conn.peer_id, True)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._wake()
        if self._linked is not None:
            self._linked(conn.muxed_conn.peer_id, False)


class Mesh:
    """A libp2p host in the bacnode mesh. Run it with ``await nursery.start(mesh.run)``."""

    def __init__(
        self,
        key: NodeKey,
        *,
        listen: tuple[str, ...],
        bootstrap: tuple[str, ...] = (),
        mdns: bool = False,
        psk: str | None = None,
        on_message: MessageHandler,
        on_request: RequestHandler | None = None,
        results_lookup: ResultsLookup | None = None,
        logs_source: LogsSource | None = None,
        members_source: MembersSource | None = None,
        on_members: MembersHandler | None = None,
        announcements_per_origin: float = ORIGIN_ANNOUNCEMENTS_PER_SECOND,
        dial_private: bool = True,
        peer_target: int = PEER_TARGET,
        relay_service: bool = False,
    ) -> None:
        self.key = key
        #: Whether addresses that strangers cannot reach (loopback, private ranges) are
        #: dialled when other nodes announce them: not on a public network, where they
        #: would point our dials at our own LAN.
        self.dial_private = dial_private
        self.peer_target = peer_target
        #: Per origin, all its job announcements; of those, the ones it gossips; per
        #: forwarding peer, what it gossips to us whatever the origins.
        self._announcements = TokenBuckets(
            announcements_per_origin, announcements_per_origin * ORIGIN_BURST_SECONDS,
            max_keys=MAX_TRACKED_ORIGINS)
        open_rate = min(announcements_per_origin, ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND)
        self._open_announcements = TokenBuckets(
            open_rate, open_rate * ORIGIN_OPEN_BURST_SECONDS, max_keys=MAX_TRACKED_ORIGINS)
        self._forwarded_announcements = TokenBuckets(
            announcements_per_origin * PEER_ANNOUNCEMENT_FACTOR,
            announcements_per_origin * ORIGIN_BURST_SECONDS * PEER_ANNOUNCEMENT_FACTOR,
            max_keys=MAX_TRACKED_ORIGINS)
        self.peer_id = key.peer_id
        self._listen = [_parse_multiaddr(addr, "--listen") for addr in listen]
        self._bootstrap = [_parse_bootstrap(addr) for addr in bootstrap]
        self._on_message = on_message
        self._on_request = on_request
        self._results_lookup = results_lookup
        self._logs_source = logs_source
        self._members_source = members_source
        self._on_members = on_members
        self.stats = MeshStats()
        self._verifier = EnvelopeVerifier()
        #: Validated messages waiting for py-libp2p to deliver them (``_deliver``), by
        #: message ID: its checks after validation may still drop one.
        self._verified: dict[bytes, tuple[str, Envelope, Message]] = {}
        self._origin_names: dict[bytes, str] = {}
        #: Per topic, delivered messages waiting for their handler.
        self._topic_queues: dict[str, trio.MemorySendChannel[tuple[Envelope, Message]]] = {}
        #: Messages refused as stale or replayed (see ``UNBLAMED_REFUSALS``), by message
        #: ID: their other copies are dropped unread and unscored too.
        self._unblamed: dict[bytes, None] = {}
        #: Set by a validator refusing one of those, for ``_score_invalid`` to skip.
        self._refusal_unblamed = False
        #: Inbound streams open now, by (protocol, peer): see ``STREAMS_PER_PEER``.
        self._open_streams: dict[tuple[str, Any], int] = {}
        #: Graylisted peers disconnected, and until when their connections are refused.
        self._banned: dict[ID, float] = {}
        #: Each node's announced addresses as last parsed: (peer_id, addresses) -> (ID, the
        #: multiaddrs). Parsing them again for each node's periodic refresh showed in the
        #: profile of an idle leaf of a 100-node devnet.
        self._parsed_addresses: OrderedDict[tuple[str, tuple[str, ...]], tuple[ID, list[Any]]] = (
            OrderedDict())
        #: Peers learned from heartbeats (peer exchange), and until when not to dial them.
        self._learned: dict[ID, float] = {}
        self._reconnect_now = trio.Event()
        #: Told ``(peer ID, True)`` when a first connection to a peer opens, and
        #: ``(peer ID, False)`` when its last one closes.
        self.link_listeners: list[Callable[[str, bool], None]] = []
        #: Set when a peer not yet banned is found graylisted: cut it off now, not at the
        #: next periodic check (a flood goes on at thousands of messages a second).
        self._graylisted_now = trio.Event()
        self._stop = trio.Event()
        self._channels: dict[str, _Channel] = {}
        #: When each peer's connection opened or last carried a request (either way).
        self._last_used: dict[str, float] = {}
        self._channel_locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._body_scope: trio.CancelScope | None = None

        secret = Ed25519PrivateKey.from_bytes(key.seed)
        key_pair = KeyPair(secret, secret.get_public_key())
        self.host = new_host(
            key_pair=key_pair,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(key_pair)},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=self._listen,
            enable_mDNS=mdns,
            enable_upnp=False,
            bootstrap=None,
            psk=psk,
            resource_manager=_resource_manager(),
            # One connection per peer: below the per-peer limit every dial waits out a
            # 250 ms "happy eyeballs" delay. Health pings find half-open peers (a
            # frozen process keeps its TCP connection) in two minutes, not never (three
            # failed pings in a row: node.libp2p_tuning); each
            # is a new stream, so on a hub with many peers they are not free: every 30 s
            # (yamux's own keepalive in go-libp2p is also 30 s). A killed peer's TCP
            # connection closes at once and needs no ping.
            connection_config=ConnectionConfig(
                max_connections_per_peer=1,
                enable_health_monitoring=True,
                abort_connection_on_ping_failure=True,
                health_check_interval=HEALTH_CHECK_SECONDS,
                ping_timeout=10.0,
            ),
        )
        self.gossipsub = GossipSub(
            # Not 1.2: py-libp2p then sends an IDONTWANT RPC to every mesh peer for every
            # message, however small (go-libp2p only for messages over 1 KiB), which on a
            # hub tripled the RPCs per heartbeat.
            protocols=[MESHSUB_11, MESHSUB_10],
            degree=6,
            degree_low=4,
            # Above any devnet's size: py-libp2p prunes equal-score peers arbitrarily
            # and a pruned leaf of a star can stay cut off for its 60 s backoff.
            degree_high=64,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=1,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=1000.0,
            eclipse_protection_enabled=False,
            score_params=ScoreParams(
                p4_invalid_messages=TopicScoreParams(
                    weight=INVALID_MESSAGE_PENALTY, cap=1000.0, decay=0.999),
                gossip_threshold=GOSSIP_THRESHOLD,
                graylist_threshold=GRAYLIST_THRESHOLD,
                accept_px_threshold=math.inf,
            ),
        )
        # No pubsub signature: every message's data is an envelope its origin signed, and
        # the validators check it against the origin named (``from_id``), so a second
        # Ed25519 signature over the same bytes proved nothing more and cost each receiver
        # 3-11 % of its CPU for a heartbeat (and each publisher a signing). Unsigned, the
        # origin and sequence number are the forwarder's word, so messages are known by
        # their content instead (gossipsub's StrictNoSign with content IDs, as Ethereum's
        # consensus layer runs it).
        self.pubsub = _Pubsub(self.host, self.gossipsub, strict_signing=False,
                              msg_id_constructor=message_id,
                              refuse=self._refuse_unread, before_push=self._before_push,
                              deliver=self._deliver)
        scorer = self.gossipsub.scorer
        if scorer is not None:
            # py-libp2p scores down the forwarder of every message a validator refuses, and
            # has no "ignore" outcome (go-libp2p's ValidationIgnore): see _score_invalid.
            self._score_invalid_as_libp2p = scorer.on_invalid_message
            scorer.on_invalid_message = self._score_invalid
        # Before host.run, so that identify offers the DHT from the first connection on.
        self.dht = dht.new_dht(self.host, server=True)
        self._dht_routing = dht.RoutingNotifee(self.dht)
        self.host.get_network().register_notifee(self._dht_routing)
        self.reach = Reach(self.host, relay_service=relay_service)
        self.host.get_network().register_notifee(
            _ConnectionEvents(lambda: self._reconnect_now.set(), self._refuse_banned,
                              self._link_changed))

    # -- lifecycle ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Mesh] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the mesh; returns after ``stop()`` once connections are closed.

        The libp2p part runs shielded: cancelling py-libp2p's connection tasks
        from outside leaks sockets, so outer cancellation becomes a stop request.
        """
        try:
            async with trio.open_nursery() as nursery:
                # The shielded body never sees outer cancellation, and the nursery waits
                # for it: turn cancellation into a stop request here, also mid start-up.
                nursery.start_soon(self._stop_when_cancelled)
                await nursery.start(self._run_shielded)
                task_status.started(self)
                await self._stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._stop.set()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(STOP_GRACE_SECONDS):
                    await self._stopped.wait()
                if not self._stopped.is_set() and self._body_scope is not None:
                    log.warning("libp2p did not stop within %ss; cancelling it", STOP_GRACE_SECONDS)
                    self._body_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def _stop_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._stop.set()

    async def _run_shielded(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope(shield=True) as self._body_scope:
            try:
                await self._serve(task_status)
            finally:
                self._stopped.set()

    def _check_listen_ports(self) -> None:
        """Fail early and clearly when a TCP listen port is taken.

        libp2p's listener sets SO_REUSEPORT, so a second node on the same port would
        start and silently share connections; a plain bind finds the owner.
        """
        for address in self._listen:
            try:
                host = address.value_for_protocol("ip4") or address.value_for_protocol("ip6")
                port = int(address.value_for_protocol("tcp"))
            except Exception:
                continue
            if port == 0:
                continue
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # SO_REUSEADDR: connections of an earlier run in TIME_WAIT are no owner.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    raise MeshError(
                        f"cannot listen on {address}: {exc.strerror}; is another bacnode "
                        "running? choose another port with --listen"
                    ) from None

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self._check_listen_ports()
        async with (
            background_trio_service(self.pubsub),
            background_trio_service(self.gossipsub),
        ):
            await self.pubsub.wait_until_ready()
            handlers = []
            for topic in TOPIC_MESSAGE_TYPES:
                self.pubsub.set_topic_validator(topic, self._make_validator(topic), False)
                send, receive = trio.open_memory_channel[tuple[Envelope, Message]](
                    MAX_QUEUED_MESSAGES)
                self._topic_queues[topic] = send
                handlers.append((topic, receive))
                await self.pubsub.subscribe(topic)
            for protocol_id, handler in ((REQUESTS_PROTOCOL, self._serve_channel),
                                         (RESULTS_PROTOCOL, self._serve_results),
                                         (LOGS_PROTOCOL, self._serve_logs),
                                         (MEMBERS_PROTOCOL, self._serve_members)):
                self.host.set_stream_handler(protocol_id, self._limited(protocol_id, handler))
            try:
                async with self.host.run(listen_addrs=self._listen):
                    # We dial our bootstrap peers ourselves; the auto-connector would
                    # re-dial every address identify ever taught us.
                    await self.host.get_network().auto_connector.stop()
                    async with background_trio_service(self.dht), \
                            trio.open_nursery() as nursery:
                        self._nursery = self._dht_routing.nursery = nursery
                        # Before the first dial: relayed connections are accepted, and
                        # identify offers the relay service, from the first peer on.
                        await nursery.start(self.reach.run)
                        for topic, receive in handlers:
                            nursery.start_soon(self._handle_topic, topic, receive)
                        nursery.start_soon(self._keep_connected)
                        nursery.start_soon(self._prune_graylisted)
                        nursery.start_soon(self._trim_connections)
                        task_status.started()
                        await self._stop.wait()
                        nursery.cancel_scope.cancel()
                    with trio.move_on_after(5):
                        await self.host.close()
            except OSError as exc:
                addresses = ", ".join(str(a) for a in self._listen)
                raise MeshError(
                    f"cannot listen on {addresses}: {exc.strerror or exc}; "
                    "is another bacnode running? choose another port with --listen"
                ) from None

    # -- gossip ------------------------------------------------------------

    def _make_validator(self, topic: str) -> Callable[[ID, Any], bool]:
        expected_types = {kind.TYPE for kind in TOPIC_MESSAGE_TYPES[topic]}

        own_peer = self.host.get_id()
        own_id = own_peer.to_bytes()

        def validate(forwarder: ID, msg: Any) -> bool:
            if check(forwarder, msg):
                return True
            if not self._refusal_unblamed:
                # py-libp2p scores the refusal down next: time to look for graylisted peers.
                self._graylisted_now.set()
            return False

        def check(forwarder: ID, msg: Any) -> bool:
            if forwarder == own_peer:
                # We publish it (its envelope sealed just now); what we publish is handled
                # here directly, not looped back through our own subscription (so this is
                # not queued for it either).
                return msg.from_id == own_id
            # Its origin's token: one that came from its origin was taken unread
            # (_refuse_unread), a relayed one only once its signature is checked.
            relayed_announcement = topic == TOPIC_JOBS and msg.from_id != forwarder.to_bytes()
            if relayed_announcement and not self._may_take_gossiped_announcement(msg.from_id):
                self.stats.dropped["RateLimited"] += 1
                return False
            try:
                origin = self._origin_name(msg.from_id)
                envelope, message = open_message(
                    self._verifier, msg.data, now_ms=now_ms(), expected_sender=origin
                )
                if envelope.type not in expected_types:
                    self.stats.dropped["WrongTopic"] += 1
                    return False
            except RemoteProtocolError as exc:
                self.stats.dropped[type(exc).__name__] += 1
                log.debug("dropped %s message from %s: %s", topic, forwarder, exc)
                if isinstance(exc, UNBLAMED_REFUSALS):
                    self._refusal_unblamed = True
                    if len(self._unblamed) >= MAX_PENDING_DELIVERIES:
                        del self._unblamed[next(iter(self._unblamed))]
                    self._unblamed[message_id(msg)] = None
                return False
            except Exception as exc:  # never let a validator raise: it kills the host
                self.stats.dropped["Invalid"] += 1
                log.debug("dropped %s message from %s: %r", topic, forwarder, exc)
                return False
            if relayed_announcement:
                self._take_gossiped_announcement(msg.from_id)
            self.stats.accepted[envelope.type] += 1
            if len(self._verified) >= MAX_PENDING_DELIVERIES:
                del self._verified[next(iter(self._verified))]
            self._verified[message_id(msg)] = (topic, envelope, message)
            return True

        return validate

    def _origin_name(self, from_id: bytes) -> str:
        """The base58 peer ID of a message's origin; remembered, as every node hears from
        the same few hundred origins over and over."""
        name = self._origin_names.get(from_id)
        if name is None:
            if len(self._origin_names) >= MAX_TRACKED_ORIGINS:
                self._origin_names.clear()
            name = self._origin_names[from_id] = ID(from_id).to_base58()
        return name

    def _deliver(self, msg: Any) -> None:
        """A message py-libp2p takes, after every check: to its topic's handler."""
        verified = self._verified.pop(message_id(msg), None)
        if verified is None:
            return
        topic, envelope, message = verified
        try:
            self._topic_queues[topic].send_nowait((envelope, message))
        except trio.WouldBlock:
            self.stats.dropped["QueueFull"] += 1

    async def _handle_topic(self, topic: str, receive: trio.MemoryReceiveChannel) -> None:
        async for envelope, message in receive:
            try:
                await self._on_message(topic, envelope, message)
            except Exception:
                log.exception("handling %s from %s failed", envelope.type, envelope.sender)

    async def publish(self, topic: str, message: Message) -> None:
        """Sign ``message`` with the node key and gossip it on ``topic``."""
        await self.pubsub.publish(topic, seal_message(self.key, message, now_ms=now_ms()))

    # -- point to point ----------------------------------------------------

    def remember_addresses(self, peer_id: str, addresses: tuple[str, ...]) -> None:
        """Addresses a peer announced (in its signed node info), for dialling it directly.

        Gossip reaches nodes we have no connection to; bids and results go point to
        point, so we must be able to dial the requester or compute node itself.
        """
        key = (peer_id, addresses)
        if (known := self._parsed_addresses.get(key)) is not None:
            self._parsed_addresses.move_to_end(key)
            peer, parsed = known
        else:
            try:
                peer = ID.from_base58(peer_id)
                parsed = []
                for text in addresses:
                    if not self.dial_private and not is_public(text):
                        continue
                    address = multiaddr.Multiaddr(text)
                    if address.value_for_protocol("p2p") == peer_id:
                        address = address.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
                    parsed.append(address)
            except Exception as exc:
                log.debug("ignoring addresses of %s: %r", peer_id, exc)
                return
            self._parsed_addresses[key] = (peer, parsed)
            if len(self._parsed_addresses) > MAX_PARSED_ADDRESS_SETS:
                self._parsed_addresses.popitem(last=False)
        if not parsed or peer == self.host.get_id():
            return
        # What a node signs now replaces what it said before (a node that finds itself
        # behind NAT swaps its addresses for relayed ones; the old ones only time out).
        self.host.get_peerstore().clear_addrs(peer)
        self.host.get_peerstore().add_addrs(peer, parsed, ADDRESS_TTL_SECONDS)
        self._learned.setdefault(peer, 0.0)

    def provide(self, cid: str) -> None:
        """Tell the DHT that this node holds ``cid`` (in the background)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._provide, cid)

    async def _provide(self, cid: str) -> None:
        # A record stored with nobody is only republished a day later: wait for peers.
        while self.dht.get_routing_table_size() == 0:
            await trio.sleep(1.0)
        try:
            await self.dht.provide(cid)
        except Exception as exc:
            log.debug("DHT: cannot provide %s: %r", cid, exc)

    async def find_providers(self, cid: str) -> list[ID]:
        """Peers the DHT says hold ``cid``, their addresses remembered for dialling."""
        try:
            found = await dht.providers(self.dht, cid)
        except Exception as exc:
            log.debug("DHT: cannot look up %s: %r", cid, exc)
            return []
        peers = []
        for info in found:
            if info.peer_id == self.host.get_id():
                continue
            self.remember_addresses(info.peer_id.to_base58(),
                                    tuple(str(address) for address in info.addrs))
            peers.append(info.peer_id)
        return peers

    async def find_peer(self, peer: ID) -> bool:
        """Look ``peer``'s addresses up in the DHT when none are known; whether any are."""
        if _known_addrs(self.host.get_peerstore(), peer):
            return True
        try:
            info = await self.dht.find_peer(peer)
        except Exception as exc:
            log.debug("DHT: cannot find %s: %r", peer, exc)
            return False
        if info is None:
            return False
        self.remember_addresses(peer.to_base58(), tuple(str(a) for a in info.addrs))
        return bool(_known_addrs(self.host.get_peerstore(), peer))

    def add_peer(self, text: str, flag: str) -> ID:
        """Remember a ``/…/p2p/<id>`` address to dial later; returns the peer's ID."""
        info, _ = _parse_bootstrap(text, flag)
        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, ADDRESS_TTL_SECONDS)
        return info.peer_id

    async def _resolve_known_names(self, peer: ID) -> None:
        """Add the IP addresses of the DNS names ``peer`` announced (``--announce-addr``)
        to the peerstore, which py-libp2p dials: its TCP transport dials IPs only."""
        if peer in self.host.get_connected_peers():
            return
        store = self.host.get_peerstore()
        known = _known_addrs(store, peer)
        if not any(_is_name(address) for address in known):
            return
        try:
            resolved = await _resolved(PeerInfo(peer, known))
        except MeshError as exc:
            log.debug("%s: %s", peer, exc)
            return
        # Only the IPs stay: a name py-libp2p tried to dial would fail the whole dial.
        store.clear_addrs(peer)
        store.add_addrs(peer, resolved.addrs, ADDRESS_TTL_SECONDS)

    async def route_to(self, peer: ID) -> None:
        """Get ready to open a stream to ``peer``: its names resolved, and its addresses
        looked up in the DHT when we have none (a node we never heard a heartbeat from)."""
        self._prepare_dial(peer)
        if peer in self.host.get_connected_peers():
            return
        await self._resolve_known_names(peer)
        await self.find_peer(peer)

    def _prepare_dial(self, peer: ID) -> None:
        if peer not in self.host.get_connected_peers():
            self.host.get_network().unblock_peer(peer)

    async def request(self, peer_id: str, data: bytes, *, timeout: float = 10.0) -> bytes:
        """Send one request to ``peer_id`` and return its reply (an ack, or why not).

        Requests to a peer share one stream (``_Channel``): opening a stream costs a
        yamux round trip and a multistream negotiation, which was most of what a bid,
        a decision or an update cost on the wire.
        """
        self._last_used[peer_id] = time.monotonic()
        try:
            with trio.fail_after(timeout):
                channel = await self._channel_to(peer_id)
                return await channel.request(data)
        except trio.TooSlowError:
            self._drop_channel(peer_id)  # a stuck stream would hold up every later request
            raise MeshError(f"peer {peer_id} did not answer within {timeout:.0f}s") from None
        except MeshError:
            raise
        except Exception as exc:
            self._drop_channel(peer_id)
            raise MeshError(f"request to {peer_id} failed: {exc!r}") from None

    async def _channel_to(self, peer_id: str) -> _Channel:
        channel = self._channels.get(peer_id)
        if channel is not None and not channel.closed:
            return channel
        lock = self._channel_locks.setdefault(peer_id, trio.Lock())
        async with lock:  # one stream per peer, even when many requests start at once
            channel = self._channels.get(peer_id)
            if channel is not None and not channel.closed:
                return channel
            peer = ID.from_base58(peer_id)
            await self.route_to(peer)
            stream = await self.host.new_stream(peer, [REQUESTS_PROTOCOL])
            channel = _Channel(stream, peer_id)
            self._channels[peer_id] = channel
            assert self._nursery is not None
            self._nursery.start_soon(self._read_replies, channel)
            return channel

    def _drop_channel(self, peer_id: str) -> None:
        channel = self._channels.pop(peer_id, None)
        if channel is not None:
            channel.close()

    async def _read_replies(self, channel: _Channel) -> None:
        frames = _FrameReader(channel.stream, MAX_STREAM_MESSAGE)
        try:
            while True:
                channel.deliver(await frames.next())
        except Exception as exc:
            log.debug("request channel to %s closed: %r", channel.peer_id, exc)
        finally:
            if self._channels.get(channel.peer_id) is channel:
                del self._channels[channel.peer_id]
            channel.close()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await channel.stream.reset()

    def _limited(self, protocol_id: str, handler: Callable[[Any], Awaitable[None]]
                 ) -> Callable[[Any], Awaitable[None]]:
        """``handler``, for at most ``STREAMS_PER_PEER[protocol_id]`` streams of one peer at
        once; beyond, a stream is reset unread and counted in ``refused_streams``."""
        limit = STREAMS_PER_PEER[protocol_id]

        async def serve(stream: Any) -> None:
            key = (protocol_id, stream.muxed_conn.peer_id)
            if self._open_streams.get(key, 0) >= limit:
                self.stats.refused_streams[protocol_id] += 1
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.reset()
                return
            self._open_streams[key] = self._open_streams.get(key, 0) + 1
            try:
                await handler(stream)
            finally:
                self._open_streams[key] -= 1
                if not self._open_streams[key]:
                    del self._open_streams[key]

        return serve

    async def _serve_channel(self, stream: Any) -> None:
        """Answer a peer's requests in the order they come, each reply tagged with its
        request's number. In order, so that what one node reports arrives in order."""
        sender = stream.muxed_conn.peer_id.to_base58()
        frames = _FrameReader(stream, MAX_STREAM_MESSAGE)
        try:
            while True:
                frame = await frames.next()
                if self._on_request is None:
                    raise MeshError("this node takes no requests")
                if len(frame) < _REQUEST_ID_BYTES:
                    self._refuse_scored(stream.muxed_conn.peer_id, "MalformedMessage")
                    raise MeshError("malformed request frame")
                self._last_used[sender] = time.monotonic()
                reply = await self._on_request(sender, frame[_REQUEST_ID_BYTES:])
                await stream.write(encode_varint_prefixed(frame[:_REQUEST_ID_BYTES] + reply))
        except Exception as exc:
            log.debug("request channel from %s closed: %r", sender, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.reset()

    async def _serve_results(self, stream: Any) -> None:
        """Send the results file of the requested execution as varint-framed chunks."""
        try:
            with trio.fail_after(30):
                execution_id = (await read_varint_prefixed_bytes_limited(stream, 256)).decode()
            path = await self._results_lookup(execution_id) if self._results_lookup else None
            if path is None:
                await stream.write(encode_varint_prefixed(b"E" + b"no such results here"))
            else:
                async with await trio.open_file(path, "rb") as handle:
                    while chunk := await handle.read(RESULT_CHUNK):
                        await stream.write(encode_varint_prefixed(b"D" + chunk))
                await stream.write(encode_varint_prefixed(b"."))
            await stream.close()
        except Exception as exc:
            log.debug("results stream failed: %r", exc)
            await stream.reset()

    async def _serve_logs(self, stream: Any) -> None:
        """Stream an execution's output as it is written: ``1``/``2`` + bytes (stdout,
        stderr), then ``.``; ``E`` + reason when there is nothing to follow."""
        try:
            with trio.fail_after(30):
                execution_id = (await read_varint_prefixed_bytes_limited(stream, 256)).decode()
            asker = stream.muxed_conn.peer_id.to_base58()
            chunks = self._logs_source(execution_id, asker) if self._logs_source else None
            if chunks is None:
                await stream.write(encode_varint_prefixed(
                    b"E" + f"{execution_id} is not running here for you".encode()))
            else:
                async for kind, data in chunks:
                    await stream.write(encode_varint_prefixed(str(kind).encode() + data))
                await stream.write(encode_varint_prefixed(b"."))
            await stream.close()
        except Exception as exc:
            log.debug("logs stream failed: %r", exc)
            await stream.reset()

    async def _serve_members(self, stream: Any) -> None:
        """Our membership table, a row a frame, then the end of the stream."""
        try:
            rows = self._members_source() if self._members_source else []
            for age_ms, data in rows[:MAX_MEMBER_ROWS]:
                await stream.write(encode_varint_prefixed(codec.encode([age_ms, data])))
            await stream.close()
        except Exception as exc:
            log.debug("members stream failed: %r", exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.reset()

    async def _copy_members(self, peer: ID, *, again: bool = False) -> None:
        """Read ``peer``'s membership table and hand its valid rows to ``on_members``.

        Each row is a heartbeat signed by the node it describes, so the peer can leave
        rows out or send old ones, but not forge one; a bad row is dropped and counted.
        Rows are checked with their own replay guard: the same heartbeat may be on its
        way by gossip too, and that copy must still pass (and be forwarded).
        """
        if self._on_members is None:
            return
        verifier = EnvelopeVerifier(known_types=frozenset({NodeInfo.TYPE}),
                                    max_skew_ms=MEMBERS_MAX_AGE_MS)
        rows: list[tuple[int, Envelope, Message]] = []
        try:
            with trio.fail_after(MEMBERS_READ_SECONDS):
                stream = await self.host.new_stream(peer, [MEMBERS_PROTOCOL])
                try:
                    for _ in range(MAX_MEMBER_ROWS):
                        try:
                            frame = await read_varint_prefixed_bytes_limited(
                                stream, MAX_STREAM_MESSAGE)
                        except Exception:  # the end of the stream (or a broken one)
                            break
                        try:
                            age_ms, data = codec.decode(frame)
                            if not isinstance(age_ms, int) or not isinstance(data, bytes):
                                raise RemoteProtocolError("malformed members row")
                            envelope, message = open_message(verifier, data, now_ms=now_ms())
                        except RemoteProtocolError as exc:
                            self.stats.dropped[f"Members{type(exc).__name__}"] += 1
                            continue
                        except Exception:
                            self.stats.dropped["MembersInvalid"] += 1
                            continue
                        # Nobody heard it before it was sent (when clocks agree).
                        now = now_ms()
                        heard_ms = max(now - max(0, age_ms), min(envelope.ts, now))
                        rows.append((heard_ms, envelope, message))
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await stream.reset()
        except Exception as exc:
            log.debug("cannot copy the membership table of %s: %s", peer, _describe(exc))
        if rows:
            try:
                await self._on_members(rows, again)
            except Exception:  # ours, not the peer's: never "cannot reach bootstrap peer"
                log.exception("taking the membership table of %s failed", peer)

    async def _copy_members_again(self, peer: ID) -> None:
        """The second copy of a join (``MEMBERS_RECOPY_SECONDS``)."""
        await trio.sleep(MEMBERS_RECOPY_SECONDS)
        if peer in self.host.get_connected_peers():
            await self._copy_members(peer, again=True)

    async def wait_topic_peers(self, topic: str, timeout: float) -> bool:
        """Wait (at most ``timeout``) until a peer subscribed to ``topic`` is known, so
        that what we publish reaches someone; whether one is."""
        with trio.move_on_after(timeout):
            while not self.pubsub.peer_topics.get(topic):
                await trio.sleep(0.05)
            return True
        return False

    async def follow_logs(self, peer_id: str, execution_id: str,
                          ) -> AsyncIterator[tuple[int, bytes]]:
        """The output of ``execution_id`` on ``peer_id`` as it is written, until it ends:
        ``(1, stdout bytes)`` / ``(2, stderr bytes)``. Raises ``MeshError``."""
        try:
            await self.route_to(ID.from_base58(peer_id))
            stream = await self.host.new_stream(ID.from_base58(peer_id), [LOGS_PROTOCOL])
        except Exception as exc:
            raise MeshError(f"cannot reach {peer_id} for logs: {exc}") from None
        try:
            await stream.write(encode_varint_prefixed(execution_id.encode()))
            while True:
                try:
                    frame = await read_varint_prefixed_bytes_limited(stream, LOG_CHUNK + 1)
                except Exception as exc:
                    raise MeshError(f"{peer_id} stopped sending logs: {exc}") from None
                kind, body = frame[:1], frame[1:]
                if kind in (b"1", b"2"):
                    yield int(kind), body
                elif kind == b".":
                    return
                else:
                    raise MeshError(f"{peer_id}: {body.decode(errors='replace')}")
        finally:
            with trio.CancelScope(shield=True):
                await stream.close()

    async def fetch_results(self, peer_id: str, execution_id: str, destination: Path) -> None:
        """Download an execution's results file from ``peer_id`` into ``destination``."""
        try:
            await self.route_to(ID.from_base58(peer_id))
            stream = await self.host.new_stream(ID.from_base58(peer_id), [RESULTS_PROTOCOL])
        except Exception as exc:
            raise MeshError(f"cannot reach {peer_id} for results: {exc}") from None
        try:
            await stream.write(encode_varint_prefixed(execution_id.encode()))
            async with await trio.open_file(destination, "wb") as handle:
                while True:
                    with trio.fail_after(60):
                        frame = await read_varint_prefixed_bytes_limited(
                            stream, RESULT_CHUNK + 1
                        )
                    kind, body = frame[:1], frame[1:]
                    if kind == b"D":
                        await handle.write(body)
                    elif kind == b".":
                        return
                    else:
                        raise MeshError(f"{peer_id}: {body.decode(errors='replace')}")
        except trio.TooSlowError:
            raise MeshError(f"{peer_id} stopped sending results") from None
        finally:
            await stream.close()

    # -- peers -------------------------------------------------------------

    def connected_peers(self) -> list[str]:
        return sorted(peer.to_base58() for peer in self.host.get_connected_peers())

    def peer_transports(self) -> dict[str, str]:
        """Each connected peer's transport: ``relayed`` when every connection to it goes
        through a circuit relay, else ``direct``."""
        kinds = {}
        for peer, conns in list(self.host.get_network().connections.items()):
            conns = conns if isinstance(conns, list) else [conns]
            if conns:
                relayed = all(is_relayed(conn) for conn in conns)
                kinds[peer.to_base58()] = "relayed" if relayed else "direct"
        return kinds

    def connection_counts(self) -> dict[str, int]:
        """Open connections by peer (at most ``CONNECTIONS_PER_PEER`` each)."""
        return {peer.to_base58(): len(conns) if isinstance(conns, list) else 1
                for peer, conns in list(self.host.get_network().connections.items()) if conns}

    def peer_counts(self) -> dict[str, int]:
        """Connected peers by transport (see ``peer_transports``)."""
        kinds = list(self.peer_transports().values())
        return {"direct": kinds.count("direct"), "relayed": kinds.count("relayed")}

    def take_announcement_token(self, origin: str) -> bool:
        """Charge an announcement ``origin`` sent straight to this node (on a request
        stream, so from ``origin`` itself) to the bucket of all its announcements; False
        when it has no token left, counted and costing ``origin`` a point as on gossip, so
        that one flooding us this way is graylisted and cut off too."""
        peer = ID.from_base58(origin)
        if self._announcements.take(peer.to_bytes(), time.monotonic()):
            return True
        self._refuse_scored(peer, "RateLimited")
        return False

    def penalise(self, peer_id: str, reason: str) -> None:
        """Count a refusal, for ``reason``, of what ``peer_id`` sent us straight, and score
        it down a point as a refused gossip message would: one that keeps on is
        graylisted, disconnected and banned."""
        self._refuse_scored(ID.from_base58(peer_id), reason)

    def _may_take_gossiped_announcement(self, origin: bytes) -> bool:
        """Whether both of ``origin``'s buckets have a token left for a gossiped
        announcement."""
        now = time.monotonic()
        return (self._announcements.has_token(origin, now)
                and self._open_announcements.has_token(origin, now))

    def _take_gossiped_announcement(self, origin: bytes) -> bool:
        """Charge a gossiped announcement to both of its origin's buckets, if each has a
        token left."""
        if not self._may_take_gossiped_announcement(origin):
            return False
        now = time.monotonic()
        self._announcements.take(origin, now)
        self._open_announcements.take(origin, now)
        return True

    def _refuse_unread(self, forwarder: ID, msg: Any, seen: bool) -> bool:
        """Whether to drop a peer's message before its signature is checked: everything a
        graylisted peer sends, and job announcements beyond their forwarder's or their
        origin's rate.

        A forwarder's bucket is charged for all it sends, and an origin's for what the
        origin sends us itself: the connection proves who they are (a bad signature then
        wastes their own tokens), and each refusal costs the sender a point, as a
        validator's would. What others relay names an origin unproven, so here it only
        reads the origin's bucket, to drop unread and unscored what could not be taken
        anyway; it is charged once its signature checks out (the validator), so that
        nobody can spend an honest requester's tokens."""
        if self._refuse_graylisted(forwarder):
            return True
        if message_id(msg) in self._unblamed:
            return True  # refused before, blaming nobody; py-libp2p would blame this relay
        if seen or TOPIC_JOBS not in msg.topicIDs:
            return False
        sender = forwarder.to_bytes()
        now = time.monotonic()
        if not self._forwarded_announcements.take(sender, now):
            return self._refuse_scored(forwarder, "PeerRateLimited")
        origin = msg.from_id
        if origin == sender:
            if self._take_gossiped_announcement(origin):
                return False
            return self._refuse_scored(forwarder, "RateLimited")
        if not (self._announcements.has_token(origin, now)
                and self._open_announcements.has_token(origin, now)):
            self.stats.dropped["RateLimited"] += 1
            return True
        return False

    def _before_push(self) -> None:
        self._refusal_unblamed = False

    def _score_invalid(self, peer: ID, topic: str) -> None:
        """py-libp2p's penalty for a refused message, unless the refusal blames nobody."""
        if not self._refusal_unblamed:
            self._score_invalid_as_libp2p(peer, topic)

    def _refuse_scored(self, forwarder: ID, reason: str) -> bool:
        """Count a refusal of what ``forwarder`` sent and score it down, as a validator's
        refusal would, but without py-libp2p remembering the message as invalid: the same
        message relayed by an honest peer later is then neither refused nor held against
        that peer."""
        self.stats.dropped[reason] += 1
        scorer = self.gossipsub.scorer
        if scorer is not None:
            scorer.on_invalid_message(forwarder, TOPIC_JOBS)
            self._graylisted_now.set()
        return True

    def _refuse_graylisted(self, forwarder: ID) -> bool:
        if self.is_graylisted(forwarder):
            self.stats.dropped["Graylisted"] += 1
            if forwarder not in self._banned:
                self._graylisted_now.set()
            return True
        return False

    def is_graylisted(self, peer: ID) -> bool:
        scorer = self.gossipsub.scorer
        return scorer is not None and scorer.score(peer, list(TOPIC_MESSAGE_TYPES)) < (
            GRAYLIST_THRESHOLD)

    def _link_changed(self, peer: ID, opened: bool) -> None:
        # The swarm lists a connection before it tells of it, and no more once closed.
        peer_id = peer.to_base58()
        if self.connection_counts().get(peer_id, 0) != (1 if opened else 0):
            return  # a second connection opened, or one of two closed
        for listener in self.link_listeners:
            listener(peer_id, opened)

    async def _refuse_banned(self, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        self._last_used[peer.to_base58()] = time.monotonic()
        if self._banned.get(peer, -math.inf) > time.monotonic():
            self.stats.refused_connections += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._close_quietly, conn)

    async def _trim_connections(self) -> None:
        """Keep at most ``CONNECTION_TARGET`` connections, less those a node needs: to its
        bootstrap peers, its gossip mesh, its relays and the peers holding a reservation
        with it, peers it exchanged requests with in the last ``CONNECTION_IDLE_SECONDS``,
        and peers with a stream open other than gossip, identify and ping (a transfer, a
        DHT query). Of the others, the longest unused are closed first."""
        await trio.sleep(random.uniform(0.5, 1.5) * TRIM_CHECK_SECONDS)
        while True:
            for peer in self._surplus_connections(time.monotonic()):
                log.debug("closing the idle connection to %s (over %d)", peer,
                          CONNECTION_TARGET)
                await self._disconnect(peer)
            for peer_id in set(self._last_used) - {
                    peer.to_base58() for peer in self.host.get_connected_peers()}:
                del self._last_used[peer_id]
            await trio.sleep(TRIM_CHECK_SECONDS)

    def _surplus_connections(self, now: float) -> list[ID]:
        connected = self.host.get_connected_peers()
        if len(connected) <= CONNECTION_TARGET:
            return []
        needed = {info.peer_id for info, _ in self._bootstrap}
        for members in self.gossipsub.mesh.values():
            needed.update(members)
        needed.update(self.reach.relayed)
        relay_service = self.reach.circuit.resource_manager
        idle: list[tuple[float, ID]] = []
        for peer in connected:
            if peer in needed or relay_service.has_reservation(peer):
                continue
            last_used = self._last_used.get(peer.to_base58(), now)
            if now - last_used < max(CONNECTION_IDLE_SECONDS, TRIM_CHECK_SECONDS):
                continue
            if any(stream.get_protocol() not in _IDLE_PROTOCOLS
                   for conn in self.host.get_network().get_connections(peer)
                   for stream in conn.get_streams()):
                continue
            idle.append((last_used, peer))
        idle.sort(key=lambda entry: entry[0])
        return [peer for _, peer in idle[:len(connected) - CONNECTION_TARGET]]

    @staticmethod
    async def _close_quietly(conn: Any) -> None:
        try:
            await conn.close()
        except Exception as exc:
            log.debug("closing a banned peer's connection: %r", exc)

    def banned_peers(self) -> list[str]:
        """Peers disconnected as graylisted, whose connections are refused for now."""
        now = time.monotonic()
        return sorted(peer.to_base58() for peer, until in self._banned.items() if until > now)

    async def _prune_graylisted(self) -> None:
        """Disconnect graylisted peers (see GRAYLIST_THRESHOLD), refuse their connections
        for ``BAN_SECONDS`` and take them out of every topic's mesh: what they send would
        be dropped unread anyway, but reading it is what a flood costs."""
        while True:
            with trio.move_on_after(GRAYLIST_BACKSTOP_SECONDS):
                await self._graylisted_now.wait()
            self._graylisted_now = trio.Event()
            now = time.monotonic()
            for peer in [p for p, until in self._banned.items() if until <= now]:
                del self._banned[peer]
            cut_off: set[ID] = set()
            for peer in [p for p in self.host.get_connected_peers() if self.is_graylisted(p)]:
                if self._banned.get(peer, -math.inf) > time.monotonic():
                    continue
                self._banned[peer] = time.monotonic() + BAN_SECONDS
                log.warning("disconnected %s for %.0f s: it keeps sending what we refuse",
                            peer, BAN_SECONDS)
                # At once: until the connection closes, all it sends is still read (and
                # a flooding peer sends thousands a second), to be dropped unread.
                cut_off.add(peer)
                self._nursery.start_soon(self._disconnect, peer)  # type: ignore[union-attr]
            for topic, members in list(self.gossipsub.mesh.items()):
                for peer in [p for p in members if self.is_graylisted(p)]:
                    members.discard(peer)
                    if self.gossipsub.scorer is not None:
                        self.gossipsub.scorer.on_leave_mesh(peer, topic)
                    log.warning("pruned %s from the %s mesh: it keeps sending invalid "
                                "messages", peer, topic)
                    if peer in cut_off:
                        continue  # its connection is closing: a PRUNE would tell it nothing
                    try:
                        await self.gossipsub.emit_prune(topic, peer, False, False)
                    except Exception as exc:  # it may be gone already
                        log.debug("prune to %s: %r", peer, exc)
            await trio.sleep(GRAYLIST_CHECK_SECONDS)

    async def _disconnect(self, peer: ID) -> None:
        try:
            await self.host.disconnect(peer)
        except Exception as exc:
            log.debug("disconnecting %s: %r", peer, exc)

    def peer_scores(self) -> dict[str, float]:
        """Each connected peer's gossipsub score over our topics (0: nothing against it)."""
        scorer = self.gossipsub.scorer
        topics = list(TOPIC_MESSAGE_TYPES)
        return {peer.to_base58(): round(scorer.score(peer, topics), 2)
                for peer in self.host.get_connected_peers()} if scorer else {}

    def mesh_peers(self) -> dict[str, list[str]]:
        """The peers in our gossipsub mesh, by topic."""
        return {topic: sorted(peer.to_base58() for peer in self.gossipsub.mesh.get(topic, ()))
                for topic in TOPIC_MESSAGE_TYPES}

    def dht_stats(self) -> dict[str, Any]:
        """The DHT's mode, how many servers its routing table holds, and how many provider
        records (CIDs held by other nodes) it keeps for the network."""
        return {"Mode": str(self.dht.mode.name).lower(),
                "RoutingTable": self.dht.get_routing_table_size(),
                "ProviderRecords": self.dht.provider_store.size(),
                "Providing": len(self.dht.provider_store.providing_keys)}

    def addresses(self) -> list[str]:
        """Where this node listens, with ``/p2p/<id>``: the ``--peer`` value for others.
        Behind NAT (AutoNAT says nobody can dial us), our addresses through relays."""
        relayed = self.reach.relayed_addresses()
        if relayed and self.reach.status_name == "private":
            return relayed
        return [str(addr) for addr in self.host.get_addrs()]

    def reach_stats(self) -> dict[str, Any]:
        return self.reach.stats()

    async def _keep_connected(self) -> None:
        """Dial every bootstrap peer we are not connected to, all at once (one dead or slow
        peer must not hold up the others), then, while none of them answers, learned peers
        up to ``peer_target`` connections; again every ``RECONNECT_SECONDS`` (every
        ``RECONNECT_SETTLED_SECONDS`` once connected to them all) or as soon as a connection
        drops."""
        warned: set[str] = set()

        async def dial(info: Any, text: str) -> None:
            try:
                await self._dial(info)
                warned.discard(text)
                log.info("connected to bootstrap peer %s", text)
                await self._copy_members(info.peer_id)
                assert self._nursery is not None
                self._nursery.start_soon(self._copy_members_again, info.peer_id)
            except Exception as exc:
                if text not in warned:
                    warned.add(text)
                    log.warning("cannot reach bootstrap peer %s (%s); retrying every %.0fs",
                                text, _describe(exc), RECONNECT_SECONDS)

        own_id = self.host.get_id()
        while True:
            connected = set(self.host.get_connected_peers())
            async with trio.open_nursery() as nursery:
                for info, text in self._bootstrap:
                    if info.peer_id not in connected and info.peer_id != own_id:
                        nursery.start_soon(dial, info, text)
            await self._dial_learned_peers()
            self._reconnect_now = trio.Event()
            connected = set(self.host.get_connected_peers())
            # Connected to every bootstrap peer: nothing to do until a connection drops.
            settled = all(info.peer_id in connected or info.peer_id == own_id
                          for info, _ in self._bootstrap)
            with trio.move_on_after(RECONNECT_SETTLED_SECONDS if settled else RECONNECT_SECONDS):
                await self._reconnect_now.wait()

    async def _dial(self, info: PeerInfo) -> None:
        """Connect to ``info`` (its names resolved now) within BOOTSTRAP_DIAL_SECONDS."""
        # A failed dial blocks the peer for 60 s inside the swarm; we retry on our own
        # schedule, so lift that block first.
        self.host.get_network().unblock_peer(info.peer_id)
        with trio.fail_after(BOOTSTRAP_DIAL_SECONDS):
            await self.host.connect(await _resolved(info))

    async def _dial_learned_peers(self) -> None:
        connected = set(self.host.get_connected_peers())
        if not self._bootstrap or any(info.peer_id in connected for info, _ in self._bootstrap):
            return
        missing = min(self.peer_target - len(connected), PEER_DIALS_AT_ONCE)
        if missing <= 0:
            return
        now = time.monotonic()
        store = self.host.get_peerstore()
        for peer in [p for p in self._learned if not _known_addrs(store, p)]:
            del self._learned[peer]  # its heartbeats stopped long ago: its addresses expired
        candidates = [peer for peer, not_before in self._learned.items()
                      if not_before <= now and peer not in connected
                      and self._banned.get(peer, -math.inf) <= now]

        async def dial(peer: ID) -> None:
            try:
                await self._dial(PeerInfo(peer, _known_addrs(store, peer)))
            except Exception as exc:
                log.debug("peer exchange: cannot reach %s (%s)", peer, _describe(exc))
                if peer in self._learned:
                    self._learned[peer] = time.monotonic() + PEER_DIAL_BACKOFF_SECONDS
                return
            await self._copy_members(peer)

        async with trio.open_nursery() as nursery:
            for peer in random.sample(candidates, min(missing, len(candidates))):
                nursery.start_soon(dial, peer)


def _known_addrs(store: Any, peer: ID) -> list[multiaddr.Multiaddr]:
    try:
        return list(store.addrs(peer))
    except Exception:  # py-libp2p raises for an unknown peer and for expired addresses
        return []


_DNS_FAMILIES = {"dns": socket.AF_UNSPEC, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


def _is_name(address: multiaddr.Multiaddr) -> bool:
    host = host_of(str(address))
    return host is not None and host[0] in _DNS_FAMILIES


async def _resolved(info: PeerInfo) -> PeerInfo:
    """``info`` with each ``/dns``, ``/dns4`` or ``/dns6`` address replaced by the IP
    addresses its name resolves to now (py-libp2p's TCP transport dials IPs only). Looked
    up at every dial, so a bootstrap name that moves is followed."""
    addresses: list[multiaddr.Multiaddr] = []
    for address in info.addrs:
        host = host_of(str(address))
        if host is None or host[0] not in _DNS_FAMILIES:
            addresses.append(address)
            continue
        kind, name, rest = host
        try:
            found = await trio.socket.getaddrinfo(name, None, _DNS_FAMILIES[kind],
                                                  socket.SOCK_STREAM)
        except OSError as exc:
            raise MeshError(f"cannot resolve {name!r}: {exc.strerror or exc}") from None
        for family, *_, sockaddr in found:
            kind = "ip6" if family == socket.AF_INET6 else "ip4"
            resolved = multiaddr.Multiaddr(f"/{kind}/{sockaddr[0]}{rest}")
            if resolved not in addresses:
                addresses.append(resolved)
    return PeerInfo(info.peer_id, addresses)


def _resource_manager() -> Any:
    """py-libp2p's resource manager with per-peer connection limits, which it has none of by
    default: one peer (one identity) could otherwise hold any number of connections."""
    from libp2p.rcmgr import new_resource_manager
    from libp2p.rcmgr.connection_limits import ConnectionLimits

    return new_resource_manager(connection_limits=ConnectionLimits(
        max_established_per_peer=CONNECTIONS_PER_PEER,
        max_pending_inbound=MAX_PENDING_INBOUND))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _parse_multiaddr(text: str, flag: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise MeshError(
            f"{flag} {text!r} is not a multiaddr ({exc}); e.g. /ip4/0.0.0.0/tcp/1235"
        ) from None


def _parse_bootstrap(text: str, flag: str = "--peer") -> tuple[Any, str]:
    address = _parse_multiaddr(text, flag)
    try:
        return info_from_p2p_addr(address), text
    except Exception:
        raise MeshError(
            f"{flag} {text!r} has no /p2p/<peer ID>; use the full address a node prints "
            "at start-up, e.g. /ip4/127.0.0.1/tcp/1235/p2p/12D3KooW…"
        ) from None
