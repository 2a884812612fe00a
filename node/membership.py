"""Who this node has heard from: the live table of heartbeats, and the delays measured on them.

A heartbeat (``NodeInfo``) refreshes its node's row; a node is CONNECTED while its last
heartbeat is within the detection window (``heartbeat_seconds × missed_heartbeats``).
A row is written to the store at once when a node first appears or changes its addresses
or labels; the other heartbeats are written together, once a ``NODE_PERSIST_INTERVAL_MS``
and at shutdown, so ``node list`` remembers nodes across restarts without a write per
heartbeat. Written one by one (a thread hop and an fsync each, about one a second in a
network of 100), they were a third of an idle leaf's samples under py-spy.

A node that joins asks a peer for its table (``snapshot``: each row's signed heartbeat as its
origin sent it, and how long ago it was heard), so it lists the network at once, without
every node heartbeating again for it. Those were N heartbeats per join, N² while a network
of N starts, and they starved a 100-daemon devnet on 2 cores.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import trio

from protocol.envelope import Envelope
from protocol.messages import NodeInfo

from .api import NodeStatus
from .store import Store, StoreError

log = logging.getLogger("bacnode.membership")

NODE_PERSIST_INTERVAL_MS = 60_000
#: Nodes that heartbeat at the configured interval; past this many, the interval grows in
#: proportion, so that a node handles at most this many heartbeats an interval (every node
#: handles every heartbeat: at a fixed interval each costs O(N) and the network O(N²), and
#: 100 daemons on 15 s heartbeats kept 2 cores saturated and never listed each other).
NODES_AT_CONFIGURED_INTERVAL = 30
#: Heartbeat turns come in steps of this many: a node count is rounded up to a multiple of
#: it, for the interval and its turns (see ``heartbeat_turn``).
TURN_STEP = 10
GOSSIP_DELAY_SAMPLES = 20_000


def _turns(nodes: int) -> int:
    return -(-max(nodes, 1) // TURN_STEP) * TURN_STEP


def heartbeat_interval_ms(configured_ms: int, nodes: int) -> int:
    """How often each of ``nodes`` nodes heartbeats: the configured interval, or longer in
    a network of more than ``NODES_AT_CONFIGURED_INTERVAL``, in proportion to the node
    count rounded up to a multiple of ``TURN_STEP`` (15 s: 50 s at 91-100 nodes). Every
    node works it out from its own count, so they agree as closely as their node lists do;
    the detection window (missed heartbeats × this) leaves room for the rest."""
    return max(configured_ms, configured_ms * _turns(nodes) // NODES_AT_CONFIGURED_INTERVAL)


class HeartbeatTurn(NamedTuple):
    """A node's turn to heartbeat: ``offset_ms`` into each interval (on the wall clock),
    one of the interval's turns, ``width_ms`` apart."""

    offset_ms: int
    width_ms: int
    #: Which of the spots between turns it takes when late (``between_turns_ms``).
    spot: int = 0


#: A late heartbeat goes between two turns within this many turns (``next_heartbeat_ms``).
LATE_TURNS = 4


def heartbeat_turn(own_id: str, node_ids: Iterable[str], interval_ms: int,
                   started_ms: Mapping[str, int] | None = None) -> HeartbeatTurn:
    """``own_id``'s turn: its rank among ``node_ids`` (and itself) spreads the network's
    heartbeats evenly over the interval.

    Every node relays every heartbeat, so heartbeats sent together pile up on every node.
    Nodes started together (a devnet's batch, a fleet restarted at once) kept the phase
    they started with: a 100-daemon devnet on 2 cores heartbeat in fours, and the last of
    each four took twice as long to reach everyone as a heartbeat sent alone. Nodes that
    list the same members agree on the turns without a word; one that lists others only
    heartbeats out of turn until its list catches up.

    An interval has as many turns as there are nodes, rounded up to a multiple of
    ``TURN_STEP``, so that a node that joins or leaves moves the others' turns by a turn
    at most. Counted exactly, each change of the count moved every turn (the turns are
    counted from the Unix epoch, modulo the interval), and nodes found theirs behind
    them all the while a network grew or churned.

    Its spot between turns, for when it is late, is its place in the order the nodes
    started (``started_ms``, by node; its rank when not given). Nodes are late together
    when they started together (they planned under the same smaller network, they learn
    their reach at the same moment), and in that order they are next to one another, so
    a few of them take as many different spots. By rank, as before, two of the four nodes
    a 100-daemon devnet starts at once shared a spot about two times in five, and their
    heartbeats crossed (p99 ~80 -> 120 ms for that pair)."""
    ranked = sorted({own_id, *node_ids})
    width_ms = interval_ms // _turns(len(ranked))
    rank = ranked.index(own_id)
    spot = rank
    if started_ms is not None:
        by_start = sorted(ranked, key=lambda node_id: (started_ms.get(node_id, 0), node_id))
        spot = by_start.index(own_id)
    return HeartbeatTurn(rank * width_ms, width_ms, spot)


def next_heartbeat_ms(last_sent_ms: int, now_ms: int, interval_ms: int,
                      turn: HeartbeatTurn) -> int:
    """The wall-clock time of the heartbeat after one sent at ``last_sent_ms``: ``turn`` in
    the interval nearest to a full interval later, so between half an interval and one and
    a half after it. A node out of turn is in turn at its next heartbeat (moving by halves
    of an interval instead landed it in other nodes' turns), and one at most half an
    interval late is not missed: a node stays CONNECTED for
    ``node.config.MIN_MISSED_HEARTBEATS`` intervals or more.

    When that time has passed (the node's turn moved back while it waited: a node before
    it left, or the network grew while it slept), the heartbeat goes soon, between turns
    so that it lands in no node's turn: at a quarter, half or three quarters of one of the
    next ``LATE_TURNS`` turns, the spot picked by ``turn.spot``. Nodes late together (they
    joined together, so planned under the same smaller network) all took the next
    halfway point at first, and crossed there on 100 daemons."""
    due = last_sent_ms + interval_ms
    late_by = (turn.offset_ms - due) % interval_ms
    due += late_by if late_by <= interval_ms // 2 else late_by - interval_ms
    if now_ms - due <= turn.width_ms // 4:  # woken a little late is still in turn
        return due
    return between_turns_ms(now_ms, interval_ms, turn)


def between_turns_ms(now_ms: int, interval_ms: int, turn: HeartbeatTurn) -> int:
    """The next of this node's spots between turns (see ``next_heartbeat_ms``), or the one
    it is at (woken a little after it)."""
    # Its spots recur every LATE_TURNS turns, fixed on the clock as the turns are, so that
    # a node woken at its spot finds itself there, not a spot further on.
    turns_ahead, quarter = divmod(turn.spot % (LATE_TURNS * 3), 3)
    shift_ms = turns_ahead * turn.width_ms + (quarter + 1) * (turn.width_ms // 4)
    period_ms = LATE_TURNS * turn.width_ms
    cycle_start_ms = now_ms - now_ms % interval_ms
    since_ms = now_ms - turn.width_ms // 8 - cycle_start_ms - shift_ms
    return cycle_start_ms + shift_ms + max(0, -(-since_ms // period_ms)) * period_ms


class Membership:
    def __init__(self, store: Store, own_id: str, *, detection_window_ms: int,
                 remember_addresses: Callable[[str, tuple[str, ...]], None]) -> None:
        self.store = store
        self.own_id = own_id
        self.detection_window_ms = detection_window_ms
        self._remember_addresses = remember_addresses
        self._nodes: dict[str, NodeStatus] = {}
        self._remembered_ms: dict[str, int] = {}
        #: The latest heartbeat of each node whose row was not written since (see ``saw``).
        self._unsaved: dict[str, tuple[NodeInfo, int]] = {}
        #: The signed heartbeat behind each row, as its origin sent it (for ``snapshot``).
        self._envelopes: dict[str, Envelope] = {}
        # (received_ms, delay_ms) of recent heartbeats: gossip latency, observable via the API.
        self._gossip_delays: deque[tuple[int, int]] = deque(maxlen=GOSSIP_DELAY_SAMPLES)

    def is_connected(self, last_seen_ms: int, now: int) -> bool:
        return now - last_seen_ms <= self.detection_window_ms

    async def saw(self, info: NodeInfo, now: int, *, envelope: Envelope | None = None,
                  heard_ms: int | None = None) -> bool:
        """Record a heartbeat; whether it was news (not older than what we have).

        ``heard_ms``: when a peer heard it, for a row copied from that peer's table (it is
        not a gossip delay then); by default now.
        """
        if info.node_id != self.own_id and heard_ms is None:
            self._gossip_delays.append((now, max(0, now - info.seq)))
        previous = self._nodes.get(info.node_id)
        if previous is not None and info.seq <= previous.info.seq:
            return False
        if previous is not None:
            first_seen = previous.first_seen_ms
        else:  # first heartbeat since start: keep the FirstSeen stored before a restart
            stored = await self.store.get_node(info.node_id)
            # A copied table and gossip may bring the same node at once.
            previous = self._nodes.get(info.node_id)
            if previous is not None:
                if info.seq <= previous.info.seq:
                    return False
                first_seen = previous.first_seen_ms
            else:
                first_seen = stored.first_seen_ms if stored is not None else now
        if envelope is not None:
            self._envelopes[info.node_id] = envelope
        last_seen = now if heard_ms is None else min(now, heard_ms)
        self._nodes[info.node_id] = NodeStatus(info, True, last_seen, first_seen)
        changed = previous is None or (
            previous.info.addresses, previous.info.labels) != (info.addresses, info.labels)
        if changed or now - self._remembered_ms.get(info.node_id, 0) >= NODE_PERSIST_INTERVAL_MS:
            # Parsing multiaddrs on every heartbeat showed in a hub's profile; the
            # peerstore keeps them ten times longer than this interval.
            if info.node_id != self.own_id:
                self._remember_addresses(info.node_id, info.addresses)
            self._remembered_ms[info.node_id] = now
        if changed:
            self._unsaved.pop(info.node_id, None)
            await self.store.upsert_node(info, now)
        else:
            self._unsaved[info.node_id] = (info, now)
        return True

    async def save_periodically(self) -> None:
        """Store the heartbeats heard since the last time, together, every
        ``NODE_PERSIST_INTERVAL_MS``."""
        while True:
            await trio.sleep(NODE_PERSIST_INTERVAL_MS / 1000)
            try:
                await self.save()
            except StoreError as exc:
                log.warning("storing the heartbeats heard: %s (retrying in %ds)",
                            exc, NODE_PERSIST_INTERVAL_MS // 1000)

    async def save(self) -> None:
        """Store every heartbeat heard and not stored yet, in one transaction; on a
        ``StoreError`` they stay unsaved, under any newer ones heard meanwhile."""
        unsaved, self._unsaved = self._unsaved, {}
        if not unsaved:
            return
        try:
            await self.store.upsert_nodes(list(unsaved.values()))
        except BaseException:
            self._unsaved = unsaved | self._unsaved
            raise

    def snapshot(self, now: int) -> Iterator[tuple[int, Envelope]]:
        """(milliseconds since heard, signed heartbeat) of every CONNECTED node but this one."""
        for node_id, status in self._nodes.items():
            envelope = self._envelopes.get(node_id)
            if envelope is not None and self.is_connected(status.last_seen_ms, now):
                yield now - status.last_seen_ms, envelope

    def connected_count(self, now: int) -> int:
        """How many nodes are CONNECTED now, this one included."""
        return 1 + sum(1 for node_id in self.connected(now) if node_id != self.own_id)

    def connected(self, now: int) -> Iterator[str]:
        """The IDs of the nodes CONNECTED now."""
        for node_id, status in self._nodes.items():
            if self.is_connected(status.last_seen_ms, now):
                yield node_id

    def connected_started_ms(self, now: int) -> dict[str, int]:
        """When each node CONNECTED now started (``NodeInfo.started_ms``), by node ID."""
        return {node_id: status.info.started_ms for node_id, status in self._nodes.items()
                if self.is_connected(status.last_seen_ms, now)}

    async def statuses(self, me: NodeInfo, now: int) -> list[NodeStatus]:
        """Every node heard from, stored ones included, this one first as always CONNECTED."""
        statuses = {
            record.info.node_id: NodeStatus(
                record.info, False, record.last_seen_ms, record.first_seen_ms
            )
            for record in await self.store.list_nodes()
        }
        for node_id, status in self._nodes.items():
            statuses[node_id] = NodeStatus(
                status.info,
                self.is_connected(status.last_seen_ms, now),
                status.last_seen_ms,
                status.first_seen_ms,
            )
        statuses[self.own_id] = NodeStatus(me, True, now, statuses.get(self.own_id, NodeStatus(
            me, True, now, now)).first_seen_ms)
        return sorted(statuses.values(), key=lambda s: s.info.node_id)

    def gossip_delays(self, since_ms: int) -> dict[str, Any]:
        """Heartbeat send-to-receive times since ``since_ms`` (meaningful when clocks agree:
        one host, or NTP)."""
        delays = sorted(delay for received, delay in self._gossip_delays if received >= since_ms)
        return {
            "Count": len(delays),
            "P50": _percentile(delays, 0.50),
            "P99": _percentile(delays, 0.99),
            "Max": delays[-1] if delays else None,
            "Samples": delays,
        }


def _percentile(ordered: list[int], fraction: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
