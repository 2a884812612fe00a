"""``bacnode serve``: the daemon that ties store, mesh, heartbeats and API together.

Start order is store → mesh → heartbeats → API; shutdown (SIGINT/SIGTERM) runs
it backwards under a grace deadline: stop announcing, close the API, leave the
mesh, close the store.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import shutil
import signal
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

import protocol
from protocol.envelope import Envelope, EnvelopeVerifier, encode_envelope
from protocol.errors import RemoteProtocolError
from protocol.jobspec import Resources
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    Message,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
    open_message,
    seal_message,
)
from protocol.quantities import parse_bytes, parse_cpu
from protocol.scheduling import NodePolicy

from . import metrics
from .addresses import advertised, on_public_network
from .api import NodeStatus, create_app, serve_api
from .compute import RESULTS_GC_MAX_PERIOD_SECONDS, Compute, remove_stale_results
from .config import ConfigError, NodeConfig
from .executor import ExecutorRegistry, NoopExecutor
from .ipfs import IpfsNode
from .keys import load_or_create_api_key, load_or_create_key
from .membership import (
    HeartbeatTurn,
    Membership,
    between_turns_ms,
    heartbeat_interval_ms,
    heartbeat_turn,
    next_heartbeat_ms,
)
from .mesh import TOPIC_NODES, UNBLAMED_REFUSALS, Mesh, MeshError, now_ms, read_swarm_key
from .publisher import (
    IpfsPublisher,
    LocalPublisher,
    NoopPublisher,
    PublisherRegistry,
    S3Publisher,
)
from .requester import Requester
from .store import Store, StoreError, open_store

log = logging.getLogger("bacnode.daemon")

SHUTDOWN_GRACE_SECONDS = 10
#: A change in load is told at once, before the next heartbeat, but a node sends news (load,
#: or an engine's availability) at most this often.
MIN_HEARTBEAT_GAP_SECONDS = 1.0
#: How often in an interval the heartbeat loop works out its turn again (``_heartbeat``).
REPLANS_PER_INTERVAL = 8
#: A requester that does not take our load news within this long hears it at the next
#: heartbeat.
LOAD_NEWS_TIMEOUT_SECONDS = 5.0
#: Peers whose last load news time is remembered before the stale ones are forgotten.
MAX_LOAD_NEWS_SENDERS = 4096
#: After copying a peer's membership table, how long our heartbeat waits for a gossip peer
#: on the nodes topic (published before one is known, it would reach nobody).
HEARTBEAT_AFTER_JOIN_WAIT_SECONDS = 3.0
#: What SIGHUP reloads from the config file (and the environment): labels and limits.
RELOADABLE = ("labels", "limit_cpu", "limit_memory", "limit_disk", "max_jobs",
              "max_jobs_per_requester", "allowed_images", "accept_jobs_from",
              "reject_jobs_from", "default_job_cpu", "default_job_memory", "log_level")
#: Node records are written to disk on first sight and then at most this often.
#: Peers asked for a DAG's root: the mesh is small enough to ask every live node.
MAX_IPFS_CANDIDATES = 64


def machine_capacity(config: NodeConfig) -> Capacity:
    """What this machine has, capped by the configured limits."""
    cpu = (os.cpu_count() or 1) * 1000
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    disk = shutil.disk_usage(config.data_dir).free
    if config.limit_cpu:
        cpu = min(cpu, parse_cpu(config.limit_cpu))
    if config.limit_memory:
        memory = min(memory, parse_bytes(config.limit_memory))
    if config.limit_disk:
        disk = min(disk, parse_bytes(config.limit_disk, what="disk"))
    return Capacity(cpu_milli=cpu, memory=memory, disk=disk, gpu=0)


class Daemon:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key = load_or_create_key(config.key_path)
        #: What API requests must carry; empty when none is needed.
        self.api_key = config.api_key or (
            load_or_create_api_key(config.api_key_path) if config.api_needs_key else "")
        self.peer_id = self.key.peer_id
        self.store: Store | None = None
        self.mesh: Mesh | None = None
        self.total = machine_capacity(config)
        self.membership: Membership | None = None
        self._seq = 0
        #: When this run started: in every heartbeat, so peers can tell a restart.
        self.started_ms = now_ms()
        self._shutdown = trio.Event()
        self.requester: Requester | None = None
        self._requester_ready = trio.Event()
        self.compute: Compute | None = None
        self.ipfs: IpfsNode | None = None
        self._p2p_verifier = EnvelopeVerifier()
        self._nursery: trio.Nursery | None = None
        self._mesh_joined = False
        self._started = False
        #: Set to wake the heartbeat loop; with _heartbeat_now, to send at once.
        self._heartbeat_wake = trio.Event()
        self._heartbeat_now = False
        self._wake_on_load = False
        #: Set to heartbeat at the next spot between turns (``_heartbeat_between_turns``).
        self._heartbeat_spot = False
        #: The addresses in the last heartbeat sent to every node.
        self._told_addresses: tuple[str, ...] | None = None
        #: When each peer's last load news came (``_take_load_news``).
        self._load_news_at: dict[str, float] = {}

    # -- what the API reads --------------------------------------------------

    def local_node_info(self) -> NodeInfo:
        # seq is the send time, so it keeps growing across restarts.
        self._seq = max(self._seq + 1, now_ms())
        return NodeInfo(
            node_id=self.peer_id,
            version=protocol.__version__,
            addresses=self._advertised_addresses(),
            labels=dict(self.config.labels),
            roles=self.config.roles,
            # What is really installed here, from the compute side's registries.
            engines=self.compute.policy.engines if self.compute else (),
            storages=self.compute.policy.storages if self.compute else (),
            publishers=self.compute.policy.publishers if self.compute else (),
            total=self.total,
            free=self.compute.free if self.compute else self.total,
            running_executions=self.compute.running if self.compute else 0,
            seq=self._seq,
            started_ms=self.started_ms,
            unavailable=dict(self.compute.unavailable) if self.compute else {},
        )

    def _advertised_addresses(self) -> tuple[str, ...]:
        if self.mesh is None:
            return ()
        return tuple(advertised(
            self.mesh.addresses(), peer_id=self.peer_id, announce=self.config.announce_addrs,
            bootstrap=self.config.peers, announce_private=self.config.announce_private))

    async def list_nodes(self) -> list[NodeStatus]:
        assert self.membership is not None
        return await self.membership.statuses(self.local_node_info(), now_ms())

    def mesh_stats(self, since_ms: int = 0) -> dict[str, Any]:
        stats = self.mesh.stats.as_json() if self.mesh else {"Accepted": {}, "Dropped": {}}
        return {
            "NodeID": self.peer_id,
            "Peers": self.mesh.connected_peers() if self.mesh else [],
            "Scores": self.mesh.peer_scores() if self.mesh else {},
            "MeshPeers": self.mesh.mesh_peers() if self.mesh else {},
            "Connections": self.mesh.connection_counts() if self.mesh else {},
            "Banned": self.mesh.banned_peers() if self.mesh else [],
            "DHT": self.mesh.dht_stats() if self.mesh else {},
            **(self.mesh.reach_stats() if self.mesh else {}),
            "Transports": self.mesh.peer_transports() if self.mesh else {},
            **stats,
            "GossipDelayMs": self.membership.gossip_delays(since_ms) if self.membership else {},
        }

    async def readiness(self) -> dict[str, str]:
        """Each readiness check: ``ok``, or why not (see ``/readyz``)."""
        checks: dict[str, str] = {
            "started": "ok" if self._started else "starting: compute and orchestrator not up yet"}
        try:
            if self.store is None:
                raise StoreError("not open yet")
            await self.store.check()
            checks["store"] = "ok"
        except StoreError as exc:
            checks["store"] = str(exc)
        if self.mesh is None or not self._mesh_joined:
            checks["mesh"] = "not joined yet"
        elif self.config.peers and not self.mesh.connected_peers():
            checks["mesh"] = (f"no peer connected; trying {len(self.config.peers)} "
                              "bootstrap peer(s)")
        else:
            checks["mesh"] = "ok"
        if self.compute is not None and "docker" in self.compute.policy.engines:
            checks["docker"] = self.compute.unavailable.get("docker", "ok")
        return checks

    def reload(self, new: NodeConfig) -> None:
        """Take the labels and limits of ``new`` (SIGHUP); say which other changes need a
        restart. Executions already running keep their resources."""
        old = self.config
        self.config = replace(old, **{name: getattr(new, name) for name in RELOADABLE})
        self.total = machine_capacity(self.config)
        if self.compute is not None:
            self.compute.set_policy(self._policy(self.compute.policy),
                                    max_jobs=self.config.max_jobs)
        changed = sorted(name for name in RELOADABLE if getattr(old, name) != getattr(new, name))
        fixed = sorted(name for name in vars(new)
                       if name not in RELOADABLE and getattr(old, name) != getattr(new, name))
        log.warning("reloaded the config: %s", ", ".join(changed) or "nothing changed")
        if fixed:
            log.warning("these settings change only at a restart: %s", ", ".join(fixed))
        self._heartbeat_soon()

    def _policy(self, base: NodePolicy) -> NodePolicy:
        """``base`` (what is installed here) with the labels and limits of the config: what
        start-up and SIGHUP both apply."""
        config = self.config
        return replace(
            base,
            labels=dict(config.labels),
            total=self.total,
            image_allowlist=config.allowed_images,
            job_defaults=Resources(cpu_milli=parse_cpu(config.default_job_cpu),
                                   memory=parse_bytes(config.default_job_memory)),
            accept_requesters=frozenset(config.accept_jobs_from),
            reject_requesters=frozenset(config.reject_jobs_from),
            max_per_requester=config.max_jobs_per_requester,
        )

    def peer_transports(self) -> dict[str, str]:
        """How each connected peer is reached: direct or relayed."""
        return self.mesh.peer_transports() if self.mesh else {}

    def metrics_snapshot(self) -> dict[str, Any]:
        """What ``/metrics`` reads from the running parts (see node/metrics.py)."""
        stats = self.mesh.stats if self.mesh else None
        return {
            "accepted": dict(stats.accepted) if stats else {},
            "dropped": dict(stats.dropped) if stats else {},
            "refused_streams": dict(stats.refused_streams) if stats else {},
            "peers": self.mesh.peer_counts() if self.mesh else {},
            "bitswap": self.ipfs.bitswap.stats.as_json()
            if self.ipfs is not None and self.ipfs.bitswap is not None else {},
        }

    # -- gossip --------------------------------------------------------------

    async def on_message(self, topic: str, envelope: Envelope, message: Message) -> None:
        if isinstance(message, NodeInfo):
            await self._saw_node(message, envelope)
        elif (isinstance(message, JobAnnouncement) and self.compute is not None
              and envelope.sender != self.peer_id):  # our own came straight from the requester
            assert self._nursery is not None
            self._nursery.start_soon(self._guarded, self.compute.on_announcement, message)
        elif isinstance(message, ResultRecord):
            if self.requester is not None and self.requester.may_have_requested(message.job_id):
                await self.requester.on_result(message, encode_envelope(envelope))
        elif isinstance(message, Verdict):
            if self.compute is not None:
                await self.compute.on_verdict(message, envelope.sender)
            if self.requester is not None and envelope.sender in self.config.trusted_requesters:
                await self.requester.on_trusted_verdict(message)

    def _open_from(self, sender: str, data: bytes) -> tuple[Envelope, Message] | bytes:
        """``sender``'s signed message in ``data``; or, when it is not one, why not (as a
        reply), the sender blamed unless an honest one could have sent it."""
        try:
            return open_message(self._p2p_verifier, data, now_ms=now_ms(),
                                expected_sender=sender)
        except RemoteProtocolError as exc:
            if self.mesh is not None:
                if isinstance(exc, UNBLAMED_REFUSALS):  # an honest sender's clock or retry
                    self.mesh.stats.dropped[type(exc).__name__] += 1
                else:  # a point off, as for gossip: one that keeps on is cut off
                    self.mesh.penalise(sender, type(exc).__name__)
            return b"error: " + str(exc).encode()[:500]

    async def on_request(self, sender: str, data: bytes) -> bytes:
        """A point-to-point message (announcement, bid, decision, update, result, a node's
        load news); the reply is an ack, or news that would otherwise go back as a request of
        its own: to an announcement the bid when it is made at once, to an accepting decision
        Running."""
        opened = self._open_from(sender, data)
        if isinstance(opened, bytes):
            return opened
        envelope, message = opened
        if isinstance(message, JobAnnouncement) and self.compute is not None:
            # Asked straight, as one of its candidates: the bid goes back as the reply, one
            # message fewer each way than sending it as a request of its own. A bid that
            # waits for its inputs to be measured follows on its own.
            if self.mesh is not None and not self.mesh.take_announcement_token(sender):
                return b"error: too many announcements"
            bid = await self.compute.answer_announcement(message, sender)
            if bid is not None:
                assert self.mesh is not None
                return seal_message(self.mesh.key, bid, now_ms=now_ms())
        elif isinstance(message, Bid) and self.requester is not None:
            if not await self.requester.on_bid(message):
                # Nobody honest bids for a job we never announced: a point off, as for an
                # announcement over its rate, so a peer flooding us with bids is cut off.
                if self.mesh is not None:
                    self.mesh.penalise(sender, "UnknownJob")
                return b"error: no job of this node has that ID"
        elif isinstance(message, BidDecision) and self.compute is not None:
            # Accepted and started: the reply says it is Running (see Compute.answer_decision).
            update = await self.compute.answer_decision(message, sender)
            if update is not None:
                assert self.mesh is not None
                return seal_message(self.mesh.key, update, now_ms=now_ms())
        elif isinstance(message, NodeInfo):
            # Its load, news to us as the requester of a job it bid on (Daemon._tell_load).
            if not self._take_load_news(sender):
                if self.mesh is not None:
                    self.mesh.penalise(sender, "LoadNewsTooOften")
                return b"error: load news comes at most once a second"
            await self._saw_node(message, envelope)
        elif isinstance(message, ExecutionUpdate) and self.requester is not None:
            await self.requester.on_update(message)
        elif isinstance(message, ResultRecord) and self.requester is not None:
            await self.requester.on_result(message, data)
        elif isinstance(message, ResultCommitment) and self.requester is not None:
            await self.requester.on_commitment(message)
        elif isinstance(message, RevealRequest) and self.compute is not None:
            await self.compute.on_reveal_request(message, sender)
        else:
            return b"error: not accepted here"
        return b"ok"

    def _take_load_news(self, sender: str) -> bool:
        """Whether ``sender``'s load news is due: an honest node sends it at most once a
        second (``MIN_HEARTBEAT_GAP_SECONDS``); half that leaves room for delivery jitter."""
        now = trio.current_time()
        last = self._load_news_at.get(sender)
        if last is not None and now - last < MIN_HEARTBEAT_GAP_SECONDS / 2:
            return False
        if len(self._load_news_at) >= MAX_LOAD_NEWS_SENDERS:
            self._load_news_at = {peer: at for peer, at in self._load_news_at.items()
                                  if now - at < MIN_HEARTBEAT_GAP_SECONDS}
        self._load_news_at[sender] = now
        return True

    async def on_reply(self, peer: str, data: bytes, expected: type[Bid | ExecutionUpdate],
                       ) -> None:
        """What ``peer`` sent back as its reply to our request, other than an ack: its
        bid on the job we asked it about, or the update that says the execution we accepted
        is Running. Anything else, or news of another node, costs ``peer`` a point."""
        opened = self._open_from(peer, data)
        if isinstance(opened, bytes) or self.requester is None:
            return
        _, message = opened
        if not isinstance(message, expected) or message.node_id != peer:
            if self.mesh is not None:
                self.mesh.penalise(peer, "UnexpectedReply")
            return
        if isinstance(message, ExecutionUpdate):
            await self.requester.on_update(message)
        elif not await self.requester.on_bid(message) and self.mesh is not None:
            self.mesh.penalise(peer, "UnknownJob")

    def reputation_of(self, node_id: str) -> Any:
        """What this node's requester remembers of ``node_id`` (None: nothing yet)."""
        return self.requester.core.reputation.get(node_id) if self.requester else None

    async def ready_requester(self) -> Requester | None:
        """This node's requester once it has taken up its stored jobs; None when the node is
        not an orchestrator. The API answers before libp2p is up, so a job submitted during
        start-up waits here rather than racing the requester's restart."""
        if not self.config.orchestrator:
            return None
        await self._requester_ready.wait()
        return self.requester

    async def _send_local(self, message: Message, sealed: bytes | None) -> None:
        """What our compute side tells our requester: no signature to check, no network."""
        if self.requester is None:
            return
        if isinstance(message, Bid):
            await self.requester.on_bid(message)
        elif isinstance(message, ExecutionUpdate):
            await self.requester.on_update(message)
        elif isinstance(message, ResultRecord) and sealed is not None:
            await self.requester.on_result(message, sealed)
        elif isinstance(message, ResultCommitment):
            await self.requester.on_commitment(message)

    async def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))

    async def _saw_node(self, info: NodeInfo, envelope: Envelope,
                        heard_ms: int | None = None) -> None:
        assert self.membership is not None
        if (await self.membership.saw(info, now_ms(), envelope=envelope, heard_ms=heard_ms)
                and self.requester is not None):
            await self.requester.heard(info)

    def _membership_rows(self) -> list[tuple[int, bytes]]:
        """What a joining peer copies: our own heartbeat, fresh, then every live row."""
        assert self.membership is not None and self.mesh is not None
        now = now_ms()
        rows = [(0, seal_message(self.key, self.local_node_info(), now_ms=now))]
        rows += [(age, encode_envelope(envelope))
                 for age, envelope in self.membership.snapshot(now)]
        return rows

    async def _copied_members(self, rows: list[tuple[int, Envelope, Message]],
                              again: bool) -> None:
        """A peer's table, copied as we (re)joined: list its nodes, then heartbeat once the
        gossip mesh can carry it, so that they list us as soon as we list them. The second
        copy (``again``) only lists: those who joined with us copy again too, and find our
        heartbeat there."""
        assert self.mesh is not None
        for heard_ms, envelope, info in rows:
            if isinstance(info, NodeInfo) and info.node_id != self.peer_id:
                await self._saw_node(info, envelope, heard_ms=heard_ms)
        if again:
            return
        await self.mesh.wait_topic_peers(TOPIC_NODES, HEARTBEAT_AFTER_JOIN_WAIT_SECONDS)
        self._heartbeat_soon()

    async def _heartbeat(self) -> None:
        """Node info to every node by gossip every ``heartbeat_seconds`` (longer in a large
        network: see ``heartbeat_interval_ms``) in this node's turn (``heartbeat_turn``),
        at once when asked (after joining, when the addresses we advertise change), and when
        an engine stops or comes back. A change in load goes straight to the requesters it
        concerns (``Compute.load_watchers``), at once or a second after the last news,
        whichever is later. Nothing here wakes in between but to work out its turn again
        (``REPLANS_PER_INTERVAL``).

        An idle node's heartbeats are what the mesh relays all day, so they stay sparse.
        Load went to every node too until a 100-node devnet showed what that costs: each
        job changed its candidates' load a few times, every node relayed each change, and
        placing a no-op job took ~1.4 s of CPU across the network. What schedulers and
        ``node list`` care about still shows promptly where it is used: a requester hears
        the load of the nodes it bid with, the rest of the network at the next heartbeat.
        A newcomer is not greeted with heartbeats: it copies a peer's membership table
        (``Mesh._copy_members``) instead.
        """
        assert self.mesh is not None
        last_sent = -math.inf  # to every node
        last_sent_wall_ms: int | None = None  # the same, on the clock the turns are on
        last_told = -math.inf  # load news, straight to its watchers
        told_load: tuple[Any, ...] = ()
        told_unavailable: dict[str, str] = {}
        while True:
            interval_ms, turn = self._heartbeat_schedule_ms()
            load, unavailable = self._load(), self._unavailable()
            now = trio.current_time()
            wall_ms = now_ms()
            due_in = 0.0
            if last_sent_wall_ms is not None:
                due_in = (next_heartbeat_ms(last_sent_wall_ms, wall_ms, interval_ms, turn)
                          - wall_ms) / 1000
                # However far the wall clock is set back, no later than a turn can be.
                due_in = min(due_in, 1.5 * interval_ms / 1000 - (now - last_sent))
            if self._heartbeat_spot:
                due_in = min(due_in, (between_turns_ms(wall_ms, interval_ms, turn) - wall_ms)
                             / 1000)
            since_news = now - max(last_sent, last_told)
            news_allowed = since_news >= MIN_HEARTBEAT_GAP_SECONDS
            if due_in <= 0 or (unavailable != told_unavailable and news_allowed):
                info = self.local_node_info()
                try:
                    await self.mesh.publish(TOPIC_NODES, info)
                except Exception as exc:
                    log.debug("heartbeat not sent: %r", exc)
                else:
                    self._told_addresses = info.addresses
                if self.requester is not None:  # gossip does not bring our own back
                    await self.requester.heard(info)
                if self.compute is not None:
                    self.compute.forget_load_watchers()
                last_sent, told_load, told_unavailable = trio.current_time(), load, unavailable
                self._heartbeat_spot = False
                last_sent_wall_ms = wall_ms
                continue  # the load may have changed while it was sent
            if load != told_load and news_allowed:
                await self._tell_load()
                last_told, told_load = trio.current_time(), load
                continue
            # Planned again every REPLANS_PER_INTERVAL-th of an interval: a network that grew
            # while a node slept moved its turn (and the interval), and a node that woke only
            # at the turn it had planned found its new turn passed, late, as did the others
            # that joined with it.
            wait = min(due_in, interval_ms / 1000 / REPLANS_PER_INTERVAL)
            # A load not yet told waits only for the rate limit; a told one for its next
            # change (Compute calls _load_changed), or the interval.
            self._wake_on_load = load == told_load and unavailable == told_unavailable
            if not self._wake_on_load:
                wait = min(wait, MIN_HEARTBEAT_GAP_SECONDS - since_news)
            with trio.move_on_after(wait):
                await self._heartbeat_wake.wait()
            self._heartbeat_wake = trio.Event()
            if self._heartbeat_now:
                self._heartbeat_now = False
                last_sent, last_sent_wall_ms = -math.inf, None

    async def _tell_load(self) -> None:
        """Our node info, now, to the requesters that care about our load (and to our own
        requester)."""
        assert self.compute is not None and self._nursery is not None
        watchers = self.compute.load_watchers() - {self.peer_id}
        if not watchers and self.requester is None:
            return
        info = self.local_node_info()
        if self.requester is not None:
            await self.requester.heard(info)
        if watchers:
            data = seal_message(self.key, info, now_ms=now_ms())
            for peer in watchers:
                self._nursery.start_soon(self._send_load, peer, data)

    async def _send_load(self, peer: str, data: bytes) -> None:
        assert self.mesh is not None
        try:
            await self.mesh.request(peer, data, timeout=LOAD_NEWS_TIMEOUT_SECONDS)
        except MeshError as exc:  # it hears our load at the next heartbeat
            log.debug("load news to %s not delivered: %s", peer, exc)

    def _load(self) -> tuple[Any, ...]:
        """What node info says about the load, told to its watchers whenever it changes."""
        if self.compute is None:
            return ()
        return self.compute.free, self.compute.running

    def _unavailable(self) -> dict[str, str]:
        return dict(self.compute.unavailable) if self.compute is not None else {}

    def _load_changed(self) -> None:
        if self._wake_on_load:
            self._heartbeat_wake.set()

    def _heartbeat_between_turns(self) -> None:
        """Heartbeat soon, at this node's next spot between turns (``between_turns_ms``)."""
        self._heartbeat_spot = True
        self._heartbeat_wake.set()

    def _heartbeat_soon(self) -> None:
        """Heartbeat at once, whatever the interval (after joining, a reload, new addresses)."""
        self._heartbeat_now = True
        self._heartbeat_wake.set()

    def _heartbeat_schedule_ms(self) -> tuple[int, HeartbeatTurn]:
        """This node's heartbeat interval now, and its turn in it (``heartbeat_turn``);
        the detection windows follow the interval."""
        configured_ms = int(self.config.heartbeat_seconds * 1000)
        if self.membership is None:
            return configured_ms, HeartbeatTurn(0, configured_ms)
        started_ms = self.membership.connected_started_ms(now_ms())
        started_ms[self.peer_id] = self.started_ms
        interval_ms = heartbeat_interval_ms(configured_ms, len(started_ms))
        window_ms = interval_ms * self.config.missed_heartbeats
        self.membership.detection_window_ms = window_ms
        if self.requester is not None:
            self.requester.core.detection_window_ms = window_ms
        return interval_ms, heartbeat_turn(self.peer_id, started_ms.keys(), interval_ms,
                                           started_ms)

    async def _heartbeat_when_reach_changes(self) -> None:
        """A node that finds itself behind NAT, or gets or loses a relay, says at once
        where it can be reached now. One whose addresses stay the same (it learnt that it is
        public, ~10 s after it started) heartbeats too, as a newcomer's second word (its
        first, as it joined, can miss nodes), but between turns, at a spot of its own:
        nodes started together learn it together, and their heartbeats, out of turn and at
        once, crossed on 100 daemons (p99 95 -> 187 ms)."""
        assert self.mesh is not None
        while True:
            await self.mesh.reach.changed()
            if self._advertised_addresses() != self._told_addresses:
                self._heartbeat_soon()
            else:
                self._heartbeat_between_turns()

    # -- lifecycle -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        unregister_metrics = metrics.register_daemon(self.metrics_snapshot)
        try:
            await self._run(task_status)
        finally:
            unregister_metrics()

    async def _run(self, task_status: trio.TaskStatus[Daemon]) -> None:
        config = self.config
        psk = read_swarm_key(config.swarm_key) if config.swarm_key else None
        async with open_store(config.store_path) as store:
            self.store = store
            self.mesh = Mesh(
                self.key,
                listen=config.listen,
                bootstrap=config.peers,
                mdns=config.mdns,
                psk=psk,
                on_message=self.on_message,
                on_request=self.on_request,
                results_lookup=self.results_tar,
                logs_source=self._logs_source,
                members_source=self._membership_rows,
                on_members=self._copied_members,
                announcements_per_origin=config.announcements_per_origin,
                dial_private=config.announce_private or not on_public_network(config.peers),
                peer_target=config.peer_exchange,
                relay_service=config.relay_service,
            )
            self.membership = Membership(
                store, self.peer_id,
                detection_window_ms=int(config.heartbeat_seconds * 1000
                                        * config.missed_heartbeats),
                remember_addresses=self.mesh.remember_addresses)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # The API binds first: a busy port must fail before libp2p is up, since
                # py-libp2p can hang when cancelled in the middle of its start-up.
                app = create_app(self)
                api_urls = await nursery.start(
                    lambda task_status: serve_api(
                        app, config.api_host, config.api_port, api_key=self.api_key,
                        access_log=config.log_format == "json",
                        shutdown_trigger=self._shutdown.wait, task_status=task_status,
                    )
                )
                for text in config.ipfs_peers:  # a bad address fails start-up, clearly
                    self.mesh.add_peer(text, "--ipfs-peer")
                await nursery.start(self.mesh.run)
                self._mesh_joined = True
                self.ipfs = IpfsNode(
                    config.data_dir, store=store, retention_hours=config.ipfs_retention_hours
                )
                mesh = self.mesh
                await nursery.start(
                    lambda task_status: self.ipfs.run(  # type: ignore[union-attr]
                        mesh.host, route_to=mesh.route_to, find_providers=mesh.find_providers,
                        provide=mesh.provide, task_status=task_status)
                )
                if config.compute:
                    self.compute = await self._start_compute(nursery)
                if config.orchestrator:
                    self.requester = Requester(
                        store=store,
                        mesh=self.mesh,
                        started_ms=self.started_ms,
                        detection_window_ms=self.membership.detection_window_ms,
                        local_compute=self._decide_locally if self.compute else None,
                        local_announce=self._announce_locally if self.compute else None,
                        on_reply=self.on_reply,
                        local_reveal=self._reveal_locally if self.compute else None,
                        local_verdict=self._verdict_locally if self.compute else None,
                        default_execution_timeout=config.default_execution_timeout,
                        min_reputation=config.min_reputation,
                    )
                    await nursery.start(self.requester.run)
                    self._requester_ready.set()
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self.membership.save_periodically)
                nursery.start_soon(self._heartbeat_when_reach_changes)
                nursery.start_soon(self._collect_old_downloads)
                self._announce_start(api_urls)
                self._started = True
                task_status.started(self)
                await self._shutdown.wait()
                log.info("shutting down")
                with trio.move_on_after(SHUTDOWN_GRACE_SECONDS) as grace:
                    self.mesh.stop()
                    await trio.sleep(0)
                    await self._save_membership()
                nursery.cancel_scope.cancel()
                if grace.cancelled_caught:
                    log.warning("shutdown grace period ran out")

    async def _save_membership(self) -> None:
        assert self.membership is not None
        try:
            await self.membership.save()
        except StoreError as exc:
            log.warning("storing the heartbeats heard: %s", exc)

    async def _start_compute(self, nursery: trio.Nursery) -> Compute:
        assert self.mesh is not None
        executors = await _open_executors(self.peer_id)
        storages = _storage_registry(self.config.data_dir, self)
        publishers = PublisherRegistry([LocalPublisher(), NoopPublisher(),
                                        IpfsPublisher(self.ipfs), S3Publisher()])
        compute = Compute(
            mesh=self.mesh,
            policy=self._policy(NodePolicy(
                engines=executors.types, storages=storages.types,
                publishers=publishers.types, labels={}, total=self.total,
                allow_networked_jobs=self.config.allow_networked_jobs)),
            executors=executors,
            publishers=publishers,
            storages=storages,
            results_root=self.config.data_dir / "results",
            max_jobs=self.config.max_jobs,
            send_local=self._send_local,
            outbox=self.store,
            results_retention_seconds=self.config.results_retention_hours * 3600,
            on_load_change=self._load_changed,
        )
        await nursery.start(compute.run)
        return compute

    async def results_tar(self, execution_id: str) -> Path | None:
        """A tar of an execution's results held on this node (built once, then cached)."""
        if self.compute is None:
            return None
        directory = self.compute.results_dir(execution_id)
        if directory is None:
            return None
        return await trio.to_thread.run_sync(_tar_results, directory)

    def _logs_source(self, execution_id: str, asker: str,
                     ) -> AsyncIterator[tuple[int, bytes]] | None:
        return self.compute.follow_output(execution_id, asker) if self.compute else None

    def follow_logs(self, node_id: str, execution_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """A running execution's output as it is written, from the node that runs it."""
        if node_id == self.peer_id and self.compute is not None:
            local = self.compute.follow_output(execution_id, self.peer_id)
            if local is not None:
                return local
        assert self.mesh is not None
        return self.mesh.follow_logs(node_id, execution_id)

    async def _collect_old_downloads(self) -> None:
        """Results fetched from other nodes for our users are kept as their own results
        are: for the results retention."""
        retention = self.config.results_retention_hours * 3600
        while True:
            await trio.to_thread.run_sync(
                remove_stale_results, self.config.data_dir / "downloads", retention, set())
            await trio.sleep(min(RESULTS_GC_MAX_PERIOD_SECONDS, max(1.0, retention / 4)))

    async def fetch_results_tar(self, execution_id: str) -> Path | None:
        """The results tar of one of our jobs' executions, fetched from its node if needed."""
        local = await self.results_tar(execution_id)
        if local is not None or self.store is None or self.mesh is None:
            return local
        execution = await self.store.get_execution(execution_id)
        if execution is None or execution.node_id == self.peer_id:
            return None  # unknown, or ours and gone (past the results retention)
        downloads = self.config.data_dir / "downloads"
        downloads.mkdir(exist_ok=True)
        destination = downloads / f"{execution_id}.tar"
        if not destination.exists():
            partial = destination.with_name(destination.name + ".partial")
            await self.mesh.fetch_results(execution.node_id, execution_id, partial)
            partial.replace(destination)
        return destination

    def ipfs_candidates(self, hints: tuple[str, ...] = ()) -> list[Any]:
        """Peers to ask for a DAG first: hinted nodes, --ipfs-peer, then connected ones.
        When none of them has its root, the DHT is asked who does (node.ipfs.bitswap)."""
        from libp2p.peer.id import ID

        assert self.mesh is not None
        ordered: list[Any] = []
        for peer_id in hints:
            try:
                ordered.append(ID.from_base58(peer_id))
            except Exception:
                continue
        # Re-added each time: the peerstore forgets addresses after their TTL.
        ordered += [self.mesh.add_peer(text, "--ipfs-peer") for text in self.config.ipfs_peers]
        ordered += list(self.mesh.host.get_connected_peers())
        me = self.mesh.host.get_id()
        unique = list(dict.fromkeys(peer for peer in ordered if peer != me))
        return unique[:MAX_IPFS_CANDIDATES]

    async def _announce_locally(self, announcement: JobAnnouncement) -> Bid | None:
        assert self.compute is not None
        return await self.compute.answer_announcement(announcement, self.peer_id)

    async def _decide_locally(self, decision: BidDecision) -> None:
        assert self.compute is not None
        await self.compute.on_decision(decision, self.peer_id)

    async def _reveal_locally(self, request: RevealRequest) -> None:
        assert self.compute is not None
        await self.compute.on_reveal_request(request, self.peer_id)

    async def _verdict_locally(self, verdict: Verdict) -> None:
        assert self.compute is not None
        await self.compute.on_verdict(verdict, self.peer_id)

    def shutdown(self) -> None:
        self._shutdown.set()

    def _announce_start(self, api_urls: list[str]) -> None:
        assert self.mesh is not None
        addresses = self.mesh.addresses()
        lines = [
            f"bacnode {protocol.__version__} node {self.peer_id}",
            f"  roles:      {', '.join(self.config.roles)}",
            f"  data dir:   {self.config.data_dir}",
            f"  API:        {', '.join(api_urls)}",
            *([f"  API key:    {self.config.api_key_path} (or your api_key setting): clients "
               "send it as BACNODE_API_KEY, or BACALHAU_API_KEY"]
              if self.api_key else []),
            "  listening:  " + "\n              ".join(addresses),
            "To join this network from another machine, run:",
            f"  bacnode serve --peer {_shareable(addresses)}",
        ]
        print("\n".join(lines), flush=True)


def _storage_registry(data_dir: Path, daemon: Daemon) -> Any:
    from .storage import InlineStorage, StorageRegistry, UrlDownloadStorage
    from .storage.ipfs import IpfsStorage
    from .storage.s3 import S3Storage

    assert daemon.ipfs is not None
    return StorageRegistry(
        [
            InlineStorage(),
            UrlDownloadStorage(),
            S3Storage(cache_dir=data_dir / "s3-cache"),
            IpfsStorage(daemon.ipfs, daemon.ipfs_candidates),
        ]
    )


async def _open_executors(node_id: str) -> ExecutorRegistry:
    """Docker, after removing containers a crashed run left behind, and the no-op engine."""
    from .executor.docker import DockerExecutor

    docker = DockerExecutor(node_id=node_id)
    try:
        removed = await docker.cleanup_orphans()
    except Exception as exc:
        log.warning("Docker is not reachable (%s); jobs will fail until it is", exc)
    else:
        if removed:
            log.warning("removed %d container(s) left behind by an earlier run", removed)
    return ExecutorRegistry([docker, NoopExecutor()])


def _tar_results(directory: Path) -> Path:
    archive = directory.with_name(directory.name + ".tar")
    if not archive.exists():
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            for path in sorted(directory.rglob("*")):
                tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
        partial.replace(archive)
    return archive


def _shareable(addresses: list[str]) -> str:
    """The address other machines should dial: not loopback when there is a choice."""
    for address in addresses:
        if not address.startswith(("/ip4/127.", "/ip6/::1")):
            return address
    return addresses[0] if addresses else "<no listen address>"


async def run_daemon(config: NodeConfig,
                     reload_config: Callable[[], NodeConfig] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully; on SIGHUP take the labels and
    limits of ``reload_config()`` (flags still win over the file).

    A signal during start-up (which may wait on dockerd) cancels the start-up at once.
    """
    with _lock_data_dir(config.data_dir):
        daemon = Daemon(config)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                started = trio.Event()

                async def start() -> None:
                    await nursery.start(daemon.run)
                    started.set()
                    # Everything made during start-up (modules, libp2p, the API app) lives
                    # as long as the daemon: out of the collector's sight, a full
                    # collection scans only what came later (was ~0.7 s, now ms).
                    gc.collect()
                    gc.freeze()

                nursery.start_soon(start)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        _reload(daemon, reload_config)
                        continue
                    log.warning("received %s, shutting down", signal.Signals(signum).name)
                    if started.is_set():
                        daemon.shutdown()
                    else:
                        nursery.cancel_scope.cancel()
                    break


def _reload(daemon: Daemon, reload_config: Callable[[], NodeConfig] | None) -> None:
    if reload_config is None:
        log.warning("SIGHUP: nothing to reload from")
        return
    try:
        new = reload_config()
    except ConfigError as exc:
        log.error("SIGHUP: config not reloaded, the old one stays: %s", exc)
        return
    logging.getLogger().setLevel(new.log_level)
    daemon.reload(new)


class DataDirError(Exception):
    """The data dir cannot be used: not writable, or another bacnode runs on it."""


@contextlib.contextmanager
def _lock_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir: two daemons must never share one identity."""
    import fcntl

    lock_path = data_dir / "serve.lock"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
    except OSError as exc:
        raise DataDirError(
            f"cannot use data dir {data_dir}: {exc.strerror}; choose a writable one with "
            "--data-dir"
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise DataDirError(
                f"data dir {data_dir} is in use by another bacnode (pid {owner}); stop it, "
                "or give this one its own --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()

