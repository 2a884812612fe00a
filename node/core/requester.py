"""The requester's decisions: place a job's executions, follow them, retry the lost ones.

One ``RequesterCore`` per node holds every unfinished job this node requested
and its view of the compute nodes it has heard from. ``handle(event, now_ms)``
returns the instructions to carry out, in order; persisting comes before
telling a node it won, so what it was told is always on disk first (an ask, or a bid
turned down, needs nothing on disk: the daemon sends those at once).

Placement, per job:

1. **Ask.** Compute nodes that fit the job (engine, storage, publisher, labels,
   total capacity, as their heartbeats say) are ranked: those with room first,
   then those with a clean record, then this node itself (its answer crosses no
   network and is never lost), then those this node is connected to
   (``LinkChanged``: asked without a dial), then by XOR distance between the
   hashes of their ID and the job's. The first
   ``needed + BID_FANOUT`` are asked, passing over nodes that already have
   ``MAX_OPEN_ASKS_PER_NODE`` of our asks unanswered (a job that finds only such
   nodes waits for their answers). When the requester knows too few compute
   nodes yet, the announcement is open to all (gossiped, and allowed far less
   often: ``OPEN_ANNOUNCEMENTS_PER_SECOND``).
2. **Decide.** As soon as every node asked has answered, or the bids in hand beat
   any bid the others could still make (``_outcome_known``), or enough accepted and
   ``DECIDE_AFTER_MS`` passed, or the window (``BID_WINDOW_MS``) closes. The best
   bids win (``protocol.scheduling``); losers are told so they free their slot. The
   daemon asks, and may decide, while the job's creation is still being written (the
   winner's record commits with it or after it, and is told after that); if the
   creation fails, ``JobNotStored`` forgets the job and turns every bidder down.
3. **Wait.** Too few accepted: nodes that declined as *busy* will have room
   later, so the job waits (``Queued``) and asks again, with a widening circle
   of nodes and a growing delay, or at once when a node it fits may have a slot:
   one of our executions there ended, its load news shows fewer running, we turned
   down its accepting bid, or it accepted one (it may have room for more). Then the
   longest-waiting such job asks that node alone: one slot, one ask.
   A job whose ``Count`` more nodes than can ever take it need fails when its
   queue timeout passes, with the reason.

A job with ``Verification`` is decided by commit-reveal (``protocol.verification``):
an execution that ran commits to its result's digest (a seal) and publishes nothing;
once ``Count`` executions have committed, each is asked for its record, whose digest
must open its seal; when ``Count`` have revealed, the group of at least ``Confidence``
wins, its executions complete and the others fail as outvoted, and the requester signs
the verdict. A reveal that does not open its seal, or none within ``REVEAL_WINDOW_MS``,
fails the execution as retryable: it is placed again elsewhere, as a lost one is.

Each accepted execution gets one deadline, fixed here at acceptance and sent in
the decision: its node stops it there, and the watchdog fails it
``DEADLINE_GRACE_MS`` later if no final word came. An execution whose node went
silent, restarted, or could not be told is failed as *retryable* and placed
again elsewhere, ``MAX_RETRIES`` times at most, counted from the job's stored
executions, so a restart neither resets nor loses the budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.envelope import MAX_SKEW_MS
from protocol.jobspec import Job
from protocol.messages import (
    ANNOUNCEMENT_BURST,
    ANNOUNCEMENTS_PER_SECOND,
    MAX_CANDIDATES,
    OPEN_ANNOUNCEMENT_BURST,
    OPEN_ANNOUNCEMENTS_PER_SECOND,
    Bid,
    BidDecision,
    ExecutionUpdate,
    JobAnnouncement,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
    VerdictGroup,
)
from protocol.scheduling import (
    NodePolicy,
    best_possible_rank,
    bid_rank,
    choose_bids,
    decline_reason,
    job_requirements,
    no_bid_reason,
    rank_bids,
    xor_key,
)
from protocol.states import EXECUTION_TRANSITIONS, ExecutionState, JobState
from protocol.verification import NO_CONSENSUS, VERIFIED, opens_seal, record_digest, tally

from .buckets import TokenBuckets, wait_ms
from .compute import CONTAINERLESS_ENGINES
from .events import (
    Announce,
    BidReceived,
    CommitmentReceived,
    DecisionUndelivered,
    JobNotStored,
    LinkChanged,
    NodeHeard,
    PersistCommitment,
    PersistExecution,
    PersistJob,
    PersistReputation,
    PublishVerdict,
    RequesterEvent,
    RequesterInstruction,
    Restarted,
    ResultReceived,
    SendDecision,
    SendRevealRequest,
    StopRequested,
    StoredJob,
    StoreResult,
    Submitted,
    Tick,
    UpdateReceived,
    VerdictHeard,
)
from .reputation import (
    AGREEMENTS,
    DEFAULT_MIN_SCORE,
    DISAGREEMENTS,
    FAILURES,
    TIMEOUTS,
    WITHHELD,
    Reputation,
)

#: Longest wait for bids from the nodes asked.
BID_WINDOW_MS = 3000
#: With enough accepting bids in hand, how long the others still get to answer.
DECIDE_AFTER_MS = 50
#: Nodes asked beyond the number of executions needed.
BID_FANOUT = 2
#: Asks for a slot (a job that runs a container) one node may have from this requester,
#: unanswered, at once. A compute node declines as busy more undecided bids of that kind
#: from one requester (at least 2, see ``node.core.compute``): a burst of jobs asks other
#: nodes, or waits for an answer, rather than draw those declines (a burst of 50 jobs on 3
#: nodes drew ~140 of them). Jobs that take no slot (``noop``) are asked for freely.
MAX_OPEN_ASKS_PER_NODE = 2
#: Times an execution is placed again after its node was lost.
MAX_RETRIES = 2
#: Rounds in a row in which some node asked never answered, before its silence no longer
#: keeps a job waiting.
MAX_SILENT_ROUNDS = 5
#: A waiting job asks again after this delay, doubling up to the maximum.
RETRY_FIRST_MS = 500
RETRY_MAX_MS = 5000
#: The least a job waits for *busy* nodes before asking again on its own. It is mostly
#: woken sooner, when a node it fits frees a slot (an execution there ended, or the node's
#: heartbeat shows fewer running), and put off while its queue moves; the timer is for
#: when it stalls. With every waiting job asking on its own 500 ms timer, a burst of 50
#: jobs on 3 nodes announced each 3.5 times on average (1.8 now), and the bids those drew,
#: nearly all "busy", cost the nodes more than the placements did.
BUSY_RETRY_FIRST_MS = 1000
#: After an execution's deadline, how long its node's last word may take to arrive.
DEADLINE_GRACE_MS = 10_000
#: How long a node that committed has to reveal once asked.
REVEAL_WINDOW_MS = 30_000


def _takes_a_slot(job: Job) -> bool:
    return job.task.engine.type not in CONTAINERLESS_ENGINES


_PLACED = frozenset({ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING,
                     ExecutionState.PUBLISHING, ExecutionState.COMPLETED})
_ACTIVE = frozenset({ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING,
                     ExecutionState.PUBLISHING})


@dataclass
class _Execution:
    execution_id: str
    node_id: str
    state: ExecutionState
    created_ms: int
    deadline_ms: int
    retryable: bool = False
    #: Verified jobs: the node's commitment, the digest that opened it, when it was asked.
    seal: str = ""
    digest: str = ""
    reveal_asked_ms: int | None = None


@dataclass
class _Round:
    asked: frozenset[str]  # empty: open to every node
    opened_ms: int
    bids: dict[str, Bid] = field(default_factory=dict)


@dataclass
class _Plan:
    """One unfinished job."""

    job: Job
    state: JobState
    waiting_since_ms: int
    executions: dict[str, _Execution] = field(default_factory=dict)
    round: _Round | None = None
    #: When to ask again (None: not waiting).
    retry_at_ms: int | None = None
    retry_delay_ms: int = RETRY_FIRST_MS
    width: int = 0
    silent_rounds: int = 0
    #: The node whose freed slot woke this job: asked first in its next round.
    woken_by: str | None = None
    #: Waiting for busy nodes to free a slot (not for nodes that can take it at all).
    busy_wait: bool = False
    #: Verified jobs: reveals are asked for once ``count`` executions have committed.
    revealing: bool = False
    verdict: str = ""
    #: Per node, whether this job fits it, and the node's ``fit_generation`` then: a
    #: burst's waiting jobs are checked against a node each time a slot frees there. One
    #: table for every job of the same ``_fit_shape`` (set on first use).
    fits: dict[str, tuple[int, bool]] | None = None

    @property
    def job_id(self) -> str:
        return self.job.id or ""

    def placed(self) -> list[_Execution]:
        return [e for e in self.executions.values() if e.state in _PLACED]

    def needed(self) -> int:
        return self.job.count - len(self.placed())

    def tried_nodes(self) -> set[str]:
        return {e.node_id for e in self.executions.values()}


@dataclass
class _NodeView:
    info: NodeInfo
    heard_ms: int
    restart_seen_ms: int = 0
    #: When one of our executions ending here last woke a waiting job (-1: never): the
    #: node's next load news counts that slot among those freed.
    woke_ms: int = -1
    #: Changes (to a number no view had before) with each heartbeat that changes which
    #: jobs could fit here (see ``_fit_fields``).
    fit_generation: int = 0
    #: The node's place in XOR space (``xor_key``), hashed once rather than per job.
    xor_key: int = 0

    def __post_init__(self) -> None:
        self.xor_key = xor_key(self.info.node_id)


def _fit_fields(info: NodeInfo) -> tuple[object, ...]:
    """What a node's heartbeat says that decides which jobs could ever run there."""
    return (info.engines, info.storages, info.publishers, info.labels, info.total,
            info.unavailable)


def _fit_shape(job: Job) -> tuple[object, ...]:
    """What of a job decides which nodes it could ever run on: every field ``decline``
    reads. Jobs of one shape fit the same nodes, so they share what was worked out."""
    task = job.task
    return (task.engine.type, task.engine.image, task.network.type, task.publisher.type,
            tuple(source.source_type for source in task.input_sources), job.constraints,
            job_requirements(job))


#: Shapes whose fit tables are kept for the jobs to come; the oldest is dropped beyond.
FIT_SHAPES_KEPT = 64


class RequesterCore:
    def __init__(self, node_id: str, *, detection_window_ms: int,
                 min_reputation: int = DEFAULT_MIN_SCORE) -> None:
        self.node_id = node_id
        self.detection_window_ms = detection_window_ms
        #: Compute nodes scoring below this are not asked to bid.
        self.min_reputation = min_reputation
        self.reputation: dict[str, Reputation] = {}
        #: Announcements this requester may send now, and of those open to any node (one
        #: bucket each, keyed by this node, on the core's millisecond clock).
        self._announcements = TokenBuckets(ANNOUNCEMENTS_PER_SECOND / 1000,
                                           ANNOUNCEMENT_BURST)
        self._open_announcements = TokenBuckets(OPEN_ANNOUNCEMENTS_PER_SECOND / 1000,
                                                OPEN_ANNOUNCEMENT_BURST)
        self.started_ms = 0
        self.plans: dict[str, _Plan] = {}
        self.nodes: dict[str, _NodeView] = {}
        #: Nodes this one has a connection to. Asking one costs a round trip; asking
        #: another costs a dial first, which on 100 daemons sharing 2 cores tripled a
        #: placement (~70 ms against ~25), and over the internet costs a few round trips.
        self.linked: set[str] = set()
        #: The latest message of each execution still followed (for a job's failure reason).
        self._last_message: dict[str, str] = {}
        self._out: list[RequesterInstruction] = []
        self._fit_generations = 0
        #: Per ``_fit_shape``, the fit table its jobs share (in insertion order, to drop
        #: the oldest): placing a job on 100 nodes checked each of them anew (1 ms a job).
        self._fit_tables: dict[tuple[object, ...], dict[str, tuple[int, bool]]] = {}

    # -- the interface ---------------------------------------------------------

    def handle(self, event: RequesterEvent, now: int) -> list[RequesterInstruction]:
        self._out = []
        match event:
            case Tick():
                self._tick(now)
            case Submitted(job):
                self._submitted(job, now)
            case JobNotStored(job_id, reason):
                self._not_stored(job_id, reason, now)
            case BidReceived(bid):
                self._bid(bid, now)
            case UpdateReceived(update):
                self._update(update, now)
            case ResultReceived(record, envelope):
                plan = self.plans.get(record.job_id)
                execution = plan.executions.get(record.execution_id) if plan else None
                if plan is not None and plan.job.verification is not None:
                    if execution is not None and execution.node_id == record.node_id:
                        self._revealed(plan, execution, record, envelope, now)
                # Results also arrive for jobs finished here already: the store decides.
                elif execution is None or execution.node_id == record.node_id:
                    self._out.append(StoreResult(record, envelope))
            case CommitmentReceived(commitment):
                self._committed(commitment, now)
            case VerdictHeard(verdict):
                self._tally_verdict(verdict)
            case NodeHeard(info):
                self._heard(info, now)
            case LinkChanged(node_id, linked):
                if linked:
                    self.linked.add(node_id)
                else:
                    self.linked.discard(node_id)
            case DecisionUndelivered(execution_id, reason):
                self._undelivered(execution_id, reason, now)
            case StopRequested(job_id, reason):
                self._stop(job_id, reason)
            case Restarted(started_ms, jobs, reputations):
                self.reputation = dict(reputations)
                self._restarted(started_ms, jobs, now)
        out, self._out = self._out, []
        return out

    def wake_at(self) -> int | None:
        """When ``Tick`` next has something to do (Unix ms), if ever."""
        # Read after every event while jobs are in flight: one plain pass, no generators.
        earliest: int | None = None
        for plan in self.plans.values():
            bid_round = plan.round
            if bid_round is not None:
                # With enough accepting bids in, the round closes DECIDE_AFTER_MS after it
                # opened, whoever is still to answer (see _maybe_close).
                accepting = 0
                for bid in bid_round.bids.values():
                    accepting += bid.accept
                at = bid_round.opened_ms + (DECIDE_AFTER_MS if accepting >= plan.needed()
                                            else BID_WINDOW_MS)
                if earliest is None or at < earliest:
                    earliest = at
            if plan.retry_at_ms is not None and (earliest is None
                                                 or plan.retry_at_ms < earliest):
                earliest = plan.retry_at_ms
            for e in plan.executions.values():
                if e.state not in _ACTIVE:
                    continue
                if e.deadline_ms and not e.seal:
                    at = e.deadline_ms + DEADLINE_GRACE_MS
                    if earliest is None or at < earliest:
                        earliest = at
                if e.reveal_asked_ms is not None and not e.digest:
                    at = e.reveal_asked_ms + REVEAL_WINDOW_MS
                    if earliest is None or at < earliest:
                        earliest = at
        return earliest

    def still_asking(self, announcement: JobAnnouncement) -> bool:
        """Whether the round ``announcement`` opened is still open. One this node's own bid
        settled at once (``_outcome_known``) is not: the others it names would only bid to
        be turned down."""
        plan = self.plans.get(announcement.job_id)
        bid_round = plan.round if plan is not None else None
        return (bid_round is not None
                and bid_round.opened_ms + BID_WINDOW_MS == announcement.bid_deadline_ms
                and bid_round.asked == frozenset(announcement.candidates))

    def is_alive(self, node_id: str, now: int) -> bool:
        view = self.nodes.get(node_id)
        if view is None:
            # Not heard from since this node started: unknown, not dead, until a whole
            # detection window has passed (a restarted requester must not fail healthy
            # nodes' executions before their first heartbeat reaches it).
            return now - self.started_ms <= self.detection_window_ms
        return now - view.heard_ms <= self.detection_window_ms

    def restarted_after(self, node_id: str, local_ms: int) -> bool:
        """Whether ``node_id`` began a new run after ``local_ms``: seen here as a new run in
        its heartbeats, or a run that began later than clock skew could explain."""
        if node_id == self.node_id:
            return self.started_ms > local_ms
        view = self.nodes.get(node_id)
        if view is None:
            return False
        return view.restart_seen_ms > local_ms or view.info.started_ms > local_ms + MAX_SKEW_MS

    # -- submission and placement ----------------------------------------------

    def _submitted(self, job: Job, now: int) -> None:
        plan = _Plan(job=job, state=JobState.PENDING, waiting_since_ms=now)
        self.plans[plan.job_id] = plan
        self._set_job(plan, JobState.QUEUED, "looking for compute nodes")
        self._ask(plan, now)

    def _not_stored(self, job_id: str, reason: str, now: int) -> None:
        """Forget a job whose creation failed: every node that bid gets its slot back, the
        one chosen too (it was never told), and nothing is written (there is no job)."""
        plan = self.plans.get(job_id)
        if plan is None:
            return
        self._forget(plan)
        why = f"the job could not be stored: {reason}"[:300]
        turned_down = set()
        for execution in plan.executions.values():
            turned_down.add(execution.execution_id)
            self._out.append(SendDecision(BidDecision(
                job_id, execution.execution_id, execution.node_id, False, why)))
            self._wake_one_waiting(execution.node_id, now)
        for bid in plan.round.bids.values() if plan.round is not None else ():
            if bid.accept and bid.execution_id not in turned_down:
                self._decide(bid, False, why, 0)
                self._wake_one_waiting(bid.node_id, now)

    def _ask(self, plan: _Plan, now: int) -> None:
        """Open a bid round for what ``plan`` still needs (no faster than the announcement
        rate: a burst of jobs waits its turn here, Queued, and loses none)."""
        needed = plan.needed()
        if needed <= 0 or plan.state.is_terminal:
            plan.retry_at_ms = None
            return
        if wait := wait_ms(self._announcements, self.node_id, now):
            plan.retry_at_ms = now + wait
            return
        width = max(plan.width * 2, needed + BID_FANOUT)
        candidates = self._candidates(plan, now, exclude=plan.tried_nodes())
        woken_by = plan.woken_by if plan.woken_by in candidates else None
        if woken_by is None and candidates and _takes_a_slot(plan.job):
            crowded = self._crowded_nodes()
            uncrowded = [node for node in candidates if node not in crowded]
            if not uncrowded:
                # Every node it could ask is still to answer our asks: an answer, a freed
                # slot or the timer wakes it.
                plan.busy_wait, plan.woken_by = True, None
                plan.retry_at_ms = now + BUSY_RETRY_FIRST_MS
                return
            if len(uncrowded) >= needed:
                candidates = uncrowded
        if woken_by is not None:
            # Its freed slot is the one known to be there (the heartbeat may not say so yet),
            # and the one it asks for alone: one slot, one ask. The other nodes of its
            # circle are those it found busy; its circle widens only when it asks unwoken.
            candidates.remove(woken_by)
            candidates.insert(0, woken_by)
            width = max(plan.width, needed + BID_FANOUT)
        asked = frozenset(candidates[:width if woken_by is None else needed])
        # Knowing too few nodes (heartbeats take a while after a start), or a circle wider
        # than an announcement can name: ask everyone.
        if len(candidates) < needed or len(asked) > MAX_CANDIDATES:
            asked = frozenset()
        if not asked:
            if wait := wait_ms(self._open_announcements, self.node_id, now):
                plan.retry_at_ms = now + wait
                return
            self._open_announcements.take(self.node_id, now)
        self._announcements.take(self.node_id, now)
        plan.retry_at_ms = None
        plan.width = width
        plan.woken_by = None
        plan.round = _Round(asked, now)
        self._out.append(Announce(JobAnnouncement.of_job(
            plan.job,
            requester=self.node_id,
            bid_deadline_ms=now + BID_WINDOW_MS,
            candidates=tuple(sorted(asked)),
        )))

    def _crowded_nodes(self) -> set[str]:
        """Nodes with ``MAX_OPEN_ASKS_PER_NODE`` of our asks for a slot still unanswered."""
        open_asks: Counter[str] = Counter()
        for plan in self.plans.values():
            if plan.round is not None and _takes_a_slot(plan.job):
                open_asks.update(plan.round.asked.difference(plan.round.bids))
        return {node for node, count in open_asks.items() if count >= MAX_OPEN_ASKS_PER_NODE}

    def _candidates(self, plan: _Plan, now: int, exclude: set[str]) -> list[str]:
        """Live compute nodes that fit the job, best to ask first (see the module
        docstring)."""
        job = plan.job
        needs = job_requirements(job)
        job_key = xor_key(job.id or "")
        ranked = []
        for node_id, view in self.nodes.items():
            info = view.info
            if (node_id in exclude or "compute" not in info.roles
                    or not self.is_alive(node_id, now)):
                continue
            # One lookup for both distrusted() and _blemished(): this runs for every job
            # over every node known (100 on a large network).
            record = self.reputation.get(node_id)
            if record is not None and record.score < self.min_reputation:
                continue
            if not self._fits_node(plan, node_id, view):
                continue
            elsewhere = node_id != self.node_id
            ranked.append((not needs.fits_in(info.free),
                           record is not None and record.blemished, elsewhere,
                           elsewhere and node_id not in self.linked, job_key ^ view.xor_key,
                           node_id))
        ranked.sort()
        return [node_id for *_, node_id in ranked]

    def _next_fit_generation(self) -> int:
        self._fit_generations += 1
        return self._fit_generations

    def _fits_node(self, plan: _Plan, node_id: str, view: _NodeView) -> bool:
        """``_fits`` for the plan's job, worked out again only when the node's heartbeats
        changed what it offers (10 µs a check, and a freed slot checks every waiting job)."""
        table = plan.fits
        if table is None:
            table = plan.fits = self._fit_table(plan.job)
        known = table.get(node_id)
        if known is not None and known[0] == view.fit_generation:
            return known[1]
        fits = self._fits(plan.job, view.info)
        table[node_id] = (view.fit_generation, fits)
        return fits

    def _fit_table(self, job: Job) -> dict[str, tuple[int, bool]]:
        shape = _fit_shape(job)
        table = self._fit_tables.get(shape)
        if table is None:
            if len(self._fit_tables) >= FIT_SHAPES_KEPT:
                del self._fit_tables[next(iter(self._fit_tables))]
            table = self._fit_tables[shape] = {}
        return table

    @staticmethod
    def _fits(job: Job, info: NodeInfo) -> bool:
        """Whether the node could ever run ``job`` (its engines, labels, total capacity)."""
        policy = NodePolicy(engines=info.engines, storages=info.storages,
                            publishers=info.publishers, labels=info.labels,
                            total=info.total, allow_networked_jobs=True,
                            unavailable=info.unavailable)
        return decline_reason(job, policy) is None

    def _bid(self, bid: Bid, now: int) -> None:
        plan = self.plans.get(bid.job_id)
        bid_round = plan.round if plan is not None else None
        if plan is not None and bid.execution_id in plan.executions:
            return  # the same bid again (sent twice, or delivered twice)
        if plan is None or bid_round is None or (
                bid_round.asked and bid.node_id not in bid_round.asked):
            if bid.accept:  # too late, or unasked: free the node's slot
                self._decide(bid, False, "bid arrived after the decision", 0)
                # As for an accepting bid turned down in its round: it had room for this
                # job and may have more, and the slot it held is free again.
                self._wake_one_waiting(bid.node_id, now)
                self._wake_one_waiting(bid.node_id, now)
            return
        bid_round.bids[bid.node_id] = bid
        if bid.accept:
            # It had room for this one and may have more: a job that held back from it
            # (MAX_OPEN_ASKS_PER_NODE) asks now. A "busy" answer ends the chain.
            self._wake_one_waiting(bid.node_id, now)
        self._maybe_close(plan, now)

    def _maybe_close(self, plan: _Plan, now: int) -> None:
        bid_round = plan.round
        assert bid_round is not None
        accepting = sum(bid.accept for bid in bid_round.bids.values())
        everyone = bool(bid_round.asked) and bid_round.asked <= set(bid_round.bids)
        enough = accepting >= plan.needed() and now - bid_round.opened_ms >= DECIDE_AFTER_MS
        if (everyone or enough or now - bid_round.opened_ms >= BID_WINDOW_MS
                or self._outcome_known(plan, bid_round)):
            self._close(plan, now)

    def _outcome_known(self, plan: _Plan, bid_round: _Round) -> bool:
        """Whether the bids in hand settle the round already: each of the ``needed`` best
        ranks before the best bid any node still silent could make
        (``best_possible_rank``: this job its only one, all it has free as its heartbeat
        tells). A requester that asked itself and won the tie-break then decides on its
        own bid, without waiting out the network round trip of the others' (the slower on
        a busy network), and the decision is the one it would have made with every bid
        in. Nodes with a record to weigh (``_close``) are waited for."""
        needed = plan.needed()
        if sum(bid.accept for bid in bid_round.bids.values()) < needed:
            return False
        if any(self._blemished(node) or self.distrusted(node) for node in bid_round.asked):
            return False
        placed = {e.node_id for e in plan.executions.values() if e.state in _PLACED}
        ranked = [bid for bid in rank_bids(bid_round.bids.values())
                  if bid.node_id not in placed]
        if len(ranked) < needed:
            return False
        last_chosen = bid_rank(ranked[needed - 1])
        needs = job_requirements(plan.job)
        for node_id in bid_round.asked - set(bid_round.bids) - placed:
            view = self.nodes.get(node_id)
            if view is None or best_possible_rank(plan.job_id, node_id, view.info.total,
                                                  needs) < last_chosen:
                return False
        return True

    def _close(self, plan: _Plan, now: int) -> None:
        bid_round = plan.round
        assert bid_round is not None
        plan.round = None
        bids = list(bid_round.bids.values())
        needed = plan.needed()
        excluded = {e.node_id for e in plan.executions.values() if e.state in _PLACED}
        excluded |= {bid.node_id for bid in bids if self.distrusted(bid.node_id)}
        # Bids from nodes with a clean record first (the ranking alone would order every
        # bid by its figures, records aside), each group in the usual ranking.
        blemished = {bid.node_id for bid in bids if self._blemished(bid.node_id)}
        chosen = choose_bids(bids, needed, exclude=excluded | blemished)
        if len(chosen) < needed:
            chosen += choose_bids(bids, needed - len(chosen),
                                  exclude=excluded | {bid.node_id for bid in chosen})
        queue_over = now >= plan.waiting_since_ms + plan.job.task.timeouts.queue_timeout * 1000
        # Nodes that are busy now will have room later, and nodes not asked yet or not heard
        # from (a lost message) may take it; nodes that declined never will. A node that
        # stays silent round after round stops counting.
        busy = sum(not bid.accept and bid.busy for bid in bids)
        silent = len(bid_round.asked - set(bid_round.bids))
        plan.silent_rounds = plan.silent_rounds + 1 if silent else 0
        if plan.silent_rounds > MAX_SILENT_ROUNDS:
            silent = 0
        # Counting the nodes not asked yet goes over every node known: only when it matters.
        could_ever = len(chosen) >= needed or len(chosen) + busy + silent + len(
            self._candidates(plan, now, exclude=plan.tried_nodes() | bid_round.asked
                             | set(bid_round.bids))) >= needed
        if len(chosen) < needed and not could_ever:
            chosen = []  # placing part of it would hold nodes for a job that cannot run
        for bid in bids:
            if bid.accept and bid not in chosen:
                self._decide(bid, False, "another node was chosen", 0)
                # Its slot is free again once the node reads this; no news of it would come
                # before the node's next load news (a second away, at most once a second).
                self._wake_one_waiting(bid.node_id, now)
        for bid in chosen:
            self._place(plan, bid, now)
        if len(chosen) >= needed:
            plan.retry_at_ms, plan.retry_delay_ms, plan.width = None, RETRY_FIRST_MS, 0
            return
        if not could_ever and queue_over:
            self._fail(plan, self._no_placement_reason(plan, bids, bid_round, needed))
            return
        # Busy nodes will free a slot and that wakes the job; the timer is the backstop.
        plan.busy_wait = could_ever
        delay = max(plan.retry_delay_ms, BUSY_RETRY_FIRST_MS) if could_ever \
            else plan.retry_delay_ms
        plan.retry_at_ms = now + delay
        plan.retry_delay_ms = min(plan.retry_delay_ms * 2, RETRY_MAX_MS)

    def _no_placement_reason(self, plan: _Plan, bids: list[Bid], bid_round: _Round,
                             needed: int) -> str:
        accepting = sum(bid.accept for bid in bids)
        if accepting and needed > accepting:
            return (f"Count {plan.job.count}: {needed} more execution(s) need as many distinct "
                    f"compute nodes, and only {accepting} can take the job "
                    f"(queued {plan.job.task.timeouts.queue_timeout}s)")
        declines = {bid.node_id: bid.reason for bid in bids if not bid.accept}
        return no_bid_reason(declines, len(bid_round.asked))

    def _place(self, plan: _Plan, bid: Bid, now: int) -> None:
        limit = plan.job.task.timeouts.execution_limit
        execution = _Execution(bid.execution_id, bid.node_id, ExecutionState.BID_ACCEPTED, now,
                               now + limit * 1000 if limit else 0)
        plan.executions[execution.execution_id] = execution
        self._out.append(PersistExecution(
            execution.execution_id, plan.job_id, bid.node_id, ExecutionState.BID_ACCEPTED,
            f"bid accepted from {bid.node_id}", created=True))
        self._decide(bid, True, "bid accepted", execution.deadline_ms)

    def _decide(self, bid: Bid, accepted: bool, reason: str, deadline_ms: int) -> None:
        self._out.append(SendDecision(BidDecision(
            bid.job_id, bid.execution_id, bid.node_id, accepted, reason, deadline_ms)))

    # -- following executions ---------------------------------------------------

    def _update(self, update: ExecutionUpdate, now: int) -> None:
        plan = self.plans.get(update.job_id)
        execution = plan.executions.get(update.execution_id) if plan else None
        if plan is None or execution is None or execution.node_id != update.node_id:
            return  # finished here already, not ours, or not that node's to report
        if execution.state.is_terminal:
            return
        try:
            target = ExecutionState(update.state)
        except ValueError:
            return
        path = _forward_path(execution.state, target)
        if not path:
            return  # a stale or duplicate update
        run_output = None
        # A verified execution reports its output on the way (when it commits), since its
        # end comes from the verdict, not from the node.
        if target.is_terminal or update.stdout or update.stderr:
            run_output = {"stdout": update.stdout, "stderr": update.stderr,
                          "exitCode": update.exit_code}
        for state in path:
            last = state == target
            self._set_execution(plan, execution, state,
                                update.message if last else f"{state.value} (reported late)",
                                exit_code=update.exit_code if last else None,
                                run_output=run_output if last else None)
        if target.is_terminal:
            self._wake_one_waiting(execution.node_id, now, ours_ended=True)
        self._refresh(plan, now)

    def _refresh(self, plan: _Plan, now: int) -> None:
        """Derive the job's state from its executions."""
        if plan.state.is_terminal:
            return
        executions = list(plan.executions.values())
        failed = [e for e in executions if e.state == ExecutionState.FAILED and not e.retryable]
        completed = [e for e in executions if e.state == ExecutionState.COMPLETED]
        running = [e for e in executions
                   if e.state in (ExecutionState.RUNNING, ExecutionState.PUBLISHING)]
        verification = plan.job.verification
        if plan.verdict == NO_CONSENSUS and verification is not None:
            self._fail(plan, f"no consensus: no {verification.confidence} of the "
                             f"{plan.job.count} executions revealed the same result")
        elif failed and plan.verdict != VERIFIED:  # the outvoted fail; the job does not
            self._fail(plan, f"execution {failed[-1].execution_id} failed: "
                             f"{self._last_message.get(failed[-1].execution_id, '')}")
        elif plan.verdict == VERIFIED or (
                verification is None and len(completed) >= plan.job.count):
            if plan.state == JobState.QUEUED:  # every update of its run came at once
                self._set_job(plan, JobState.RUNNING, "running")
            self._set_job(plan, JobState.COMPLETED, "verified" if plan.verdict else
                          "all executions completed")
            self._forget(plan)
        elif running and plan.state == JobState.QUEUED:
            self._set_job(plan, JobState.RUNNING, "running")
        if (not plan.state.is_terminal and plan.needed() > 0 and plan.round is None
                and plan.retry_at_ms is None):
            # An execution ended without completing and without being placed again (its
            # node cancelled it, say): look for another node, within the retry budget.
            if len(plan.tried_nodes()) >= MAX_RETRIES + plan.job.count:
                self._fail(plan, f"executions ended without completing on "
                                 f"{len(plan.tried_nodes())} nodes; gave up after "
                                 f"{MAX_RETRIES} retries")
            else:
                if plan.state == JobState.RUNNING:
                    self._set_job(plan, JobState.QUEUED, "an execution ended early; "
                                                         "retrying elsewhere")
                self._ask(plan, now)

    def _set_execution(self, plan: _Plan, execution: _Execution, state: ExecutionState,
                       message: str, *, retryable: bool = False, exit_code: int | None = None,
                       run_output: dict | None = None) -> None:
        execution.state = state
        execution.retryable = retryable
        self._last_message[execution.execution_id] = message
        self._out.append(PersistExecution(
            execution.execution_id, plan.job_id, execution.node_id, state, message,
            retryable=retryable, exit_code=exit_code, run_output=run_output))

    def _advance(self, plan: _Plan, execution: _Execution, target: ExecutionState,
                 message: str) -> None:
        """Move ``execution`` to ``target`` through the states it has not been seen in."""
        for state in _forward_path(execution.state, target):
            self._set_execution(plan, execution, state, message if state == target
                                else f"{state.value} (reported late)")

    def _set_job(self, plan: _Plan, state: JobState, message: str) -> None:
        if plan.state == state:
            return
        plan.state = state
        self._out.append(PersistJob(plan.job_id, state, message))

    def _fail(self, plan: _Plan, reason: str) -> None:
        self._cancel_active(plan, f"the job failed: {reason}"[:300])
        self._set_job(plan, JobState.FAILED, reason)
        self._forget(plan)

    def _forget(self, plan: _Plan) -> None:
        for execution_id in plan.executions:
            self._last_message.pop(execution_id, None)
        self.plans.pop(plan.job_id, None)

    def _cancel_active(self, plan: _Plan, reason: str) -> None:
        for execution in plan.executions.values():
            if execution.state in _ACTIVE:
                self._out.append(SendDecision(BidDecision(
                    plan.job_id, execution.execution_id, execution.node_id, False, reason)))
                self._set_execution(plan, execution, ExecutionState.CANCELLED, reason)

    def _stop(self, job_id: str, reason: str) -> None:
        plan = self.plans.get(job_id)
        if plan is None:
            return
        plan.round = None
        self._cancel_active(plan, f"stopped: {reason}")
        self._set_job(plan, JobState.STOPPED, reason)
        self._forget(plan)

    def _wake_one_waiting(self, node_id: str, now: int, *, ours_ended: bool = False) -> None:
        """A slot is free on ``node_id``: the longest-waiting job that fits it asks now.

        Only one, and only one that fits and waits for a slot: waking every waiting job
        would announce each again for a single slot, and waking the longest-waiting one
        alone could wake, over and over, a job that only some other (busy) node can run,
        or one that more nodes than there are must take at once."""
        view = self.nodes.get(node_id)
        if view is None:
            return
        waiting = [plan for plan in self.plans.values()
                   if plan.busy_wait and plan.retry_at_ms is not None and plan.retry_at_ms > now
                   and plan.round is None and node_id not in plan.tried_nodes()
                   and self._fits_node(plan, node_id, view)]
        if not waiting:
            return
        first = min(waiting, key=lambda plan: (plan.waiting_since_ms, plan.job_id))
        first.retry_at_ms = now
        if ours_ended:
            view.woke_ms = now
        first.woken_by = node_id
        # The others in this node's queue see it move: they need not ask on their own
        # until it stalls.
        for plan in waiting:
            if plan is not first:
                plan.retry_at_ms = max(plan.retry_at_ms or 0, now + BUSY_RETRY_FIRST_MS)

    # -- nodes, and executions lost --------------------------------------------

    def _heard(self, info: NodeInfo, now: int) -> None:
        view = self.nodes.get(info.node_id)
        if view is not None and info.seq <= view.info.seq:
            return
        if view is None:
            self.nodes[info.node_id] = _NodeView(info, now,
                                                 fit_generation=self._next_fit_generation())
            return
        if info.started_ms != view.info.started_ms:
            view.restart_seen_ms = now
            self._watch(now)
        # Fewer running there: a slot freed, perhaps by another requester's job. Not if
        # one of ours ending there woke a job since the last heartbeat: that was this slot.
        freed = view.info.running_executions - info.running_executions
        woken_since = view.woke_ms >= view.heard_ms
        if _fit_fields(info) != _fit_fields(view.info):
            view.fit_generation = self._next_fit_generation()
        view.info, view.heard_ms = info, now
        if not woken_since:
            for _ in range(min(freed, len(self.plans))):
                self._wake_one_waiting(info.node_id, now)

    def _tick(self, now: int) -> None:
        for plan in list(self.plans.values()):
            if plan.round is not None:
                self._maybe_close(plan, now)
            elif plan.retry_at_ms is not None and now >= plan.retry_at_ms:
                self._ask(plan, now)
        self._watch(now)

    def _watch(self, now: int) -> None:
        for plan in list(self.plans.values()):
            for execution in list(plan.executions.values()):
                if execution.state not in _ACTIVE or plan.state.is_terminal:
                    continue
                node = execution.node_id
                if self.restarted_after(node, execution.created_ms):
                    # Compute nodes never resume executions across a restart (this one too).
                    self._lost(plan, execution, f"node {node} restarted during it", now,
                               fault=FAILURES)
                elif not self.is_alive(node, now):
                    self._lost(plan, execution, f"node {node} stopped responding", now,
                               fault=FAILURES)
                elif (execution.reveal_asked_ms is not None and not execution.digest
                      and now > execution.reveal_asked_ms + REVEAL_WINDOW_MS):
                    self._lost(plan, execution,
                               f"node {node} committed but did not reveal its result within "
                               f"{REVEAL_WINDOW_MS // 1000}s", now, fault=WITHHELD)
                elif (execution.deadline_ms and not execution.seal
                      and now > execution.deadline_ms + DEADLINE_GRACE_MS):
                    limit = plan.job.task.timeouts.execution_limit
                    self._lost(plan, execution,
                               f"no result from node {node} by the job's {limit}s deadline", now,
                               fault=TIMEOUTS)

    def _undelivered(self, execution_id: str, reason: str, now: int) -> None:
        for plan in self.plans.values():
            execution = plan.executions.get(execution_id)
            if execution is not None and execution.state == ExecutionState.BID_ACCEPTED:
                self._lost(plan, execution, f"could not reach the node: {reason}", now)
                return

    def _lost(self, plan: _Plan, execution: _Execution, reason: str, now: int, *,
              fault: str | None = None) -> None:
        """Fail ``execution`` as retryable and place it again; ``fault``: the node's tally
        this counts against (None: nobody's fault, e.g. a decision that could not be sent)."""
        if fault is not None:
            self._count(execution.node_id, fault)
        self._set_execution(plan, execution, ExecutionState.FAILED,
                            f"{reason}; placing it again", retryable=True)
        if len(plan.tried_nodes()) >= MAX_RETRIES + plan.job.count:
            self._fail(plan, f"{reason}; gave up after {MAX_RETRIES} retries")
            return
        if plan.state == JobState.RUNNING:
            self._set_job(plan, JobState.QUEUED, f"{reason}; retrying elsewhere")
        if plan.round is None:
            plan.waiting_since_ms = now
            self._ask(plan, now)

    # -- restart ------------------------------------------------------------------

    def _restarted(self, started_ms: int, jobs: Iterable[StoredJob], now: int) -> None:
        self.started_ms = started_ms
        self.plans.clear()
        self._last_message.clear()
        for stored in jobs:
            if stored.state.is_terminal:
                continue
            plan = _Plan(job=stored.job, state=stored.state,
                         waiting_since_ms=stored.modify_time_ms)
            limit = stored.job.task.timeouts.execution_limit
            for e in stored.executions:
                plan.executions[e.execution_id] = _Execution(
                    e.execution_id, e.node_id, e.state, e.create_time_ms,
                    e.create_time_ms + limit * 1000 if limit else 0, e.retryable,
                    seal=e.seal, digest=e.digest)
            self.plans[plan.job_id] = plan
        for plan in list(self.plans.values()):
            # A job whose scheduling lived in the process that stopped goes on looking for
            # nodes (in _refresh), for what is left of its count; its queue timeout counts
            # from when it started waiting, not from now.
            if plan.state == JobState.PENDING:
                self._set_job(plan, JobState.QUEUED, "looking for compute nodes")
            self._refresh(plan, now)
            if plan.job.verification is not None and not plan.state.is_terminal:
                self._reveal_when_committed(plan, now)  # reveals asked before: ask again
                self._tally_when_revealed(plan, now)

    # -- reputation ------------------------------------------------------------------

    def distrusted(self, node_id: str) -> bool:
        """Whether ``node_id``'s record has fallen below this requester's threshold."""
        record = self.reputation.get(node_id)
        return record is not None and record.score < self.min_reputation

    def _blemished(self, node_id: str) -> bool:
        record = self.reputation.get(node_id)
        return record is not None and record.blemished

    def _count(self, node_id: str, tally_name: str) -> None:
        record = self.reputation.get(node_id, Reputation()).counted(tally_name)
        self.reputation[node_id] = record
        self._out.append(PersistReputation(node_id, record))

    def _tally_verdict(self, verdict: Verdict) -> None:
        """Another requester's verdict, trusted by this node's operator: who agreed, who
        was outvoted (a verdict without consensus tells nothing about anyone)."""
        if verdict.requester == self.node_id or not verdict.accepted:
            return
        for group in verdict.groups:
            for node_id in group.nodes:
                self._count(node_id, AGREEMENTS if group.digest == verdict.accepted
                            else DISAGREEMENTS)

    # -- verified jobs: commit, reveal, verdict ------------------------------------

    def _committed(self, commitment: ResultCommitment, now: int) -> None:
        plan = self.plans.get(commitment.job_id)
        execution = plan.executions.get(commitment.execution_id) if plan else None
        if (plan is None or plan.job.verification is None or execution is None
                or execution.node_id != commitment.node_id or execution.state not in _ACTIVE
                or execution.seal):
            return  # not ours, not that node's, over, or committed already (no second seal)
        execution.seal = commitment.seal
        self._out.append(PersistCommitment(execution.execution_id, commitment.seal))
        self._reveal_when_committed(plan, now)

    def _reveal_when_committed(self, plan: _Plan, now: int) -> None:
        """Once ``count`` executions have committed, ask each that has not revealed (and
        any that commits later, at once: nothing was published before, so it had nothing
        to copy)."""
        sealed = [e for e in plan.executions.values()
                  if e.state in _ACTIVE and e.seal and not e.digest]
        committed = [e for e in plan.executions.values()
                     if e.seal and e.state in (*_ACTIVE, ExecutionState.COMPLETED)]
        if not plan.revealing and len(committed) < plan.job.count:
            return
        plan.revealing = True
        for execution in sealed:
            execution.reveal_asked_ms = now
            self._out.append(SendRevealRequest(RevealRequest(
                plan.job_id, execution.execution_id, execution.node_id, self.node_id)))

    def _revealed(self, plan: _Plan, execution: _Execution, record: ResultRecord,
                  envelope: bytes, now: int) -> None:
        if not execution.seal or execution.digest or execution.state not in _ACTIVE:
            return  # a reveal before committing, a second one, or too late: not counted
        digest = record_digest(record)
        if not opens_seal(execution.seal, execution.node_id, execution.execution_id, digest):
            self._lost(plan, execution, f"node {execution.node_id}'s result does not match "
                                        "what it committed to", now, fault=DISAGREEMENTS)
            return
        execution.digest = digest
        self._out.append(PersistCommitment(execution.execution_id, execution.seal, digest))
        self._out.append(StoreResult(record, envelope))
        self._tally_when_revealed(plan, now)

    def _tally_when_revealed(self, plan: _Plan, now: int) -> None:
        verification = plan.job.verification
        revealed = {e.execution_id: e.digest for e in plan.executions.values()
                    if e.digest and e.state in _ACTIVE}
        if verification is None or plan.verdict or len(revealed) < plan.job.count:
            return
        result = tally(revealed, verification.confidence)
        plan.verdict = result.state
        agreeing = set(result.agreeing())
        for execution_id in revealed:
            execution = plan.executions[execution_id]
            if result.accepted is not None:
                self._count(execution.node_id,
                            AGREEMENTS if execution_id in agreeing else DISAGREEMENTS)
            if execution_id in agreeing:
                self._advance(plan, execution, ExecutionState.COMPLETED,
                              f"verified: {len(agreeing)} of {len(revealed)} executions agree "
                              "on its result")
            elif result.accepted is not None:
                self._advance(plan, execution, ExecutionState.FAILED,
                              f"outvoted: its result differs from the one {len(agreeing)} of "
                              f"{len(revealed)} executions agree on")
            else:
                self._advance(plan, execution, ExecutionState.FAILED,
                              "no consensus on the job's result")
        self._out.append(PublishVerdict(Verdict(
            job_id=plan.job_id, requester=self.node_id, state=result.state,
            confidence=verification.confidence,
            groups=tuple(VerdictGroup(digest, members,
                                      tuple(plan.executions[e].node_id for e in members))
                         for digest, members in result.groups),
            accepted=result.accepted or "", decided_at_ms=now)))
        self._refresh(plan, now)


def _forward_path(current: ExecutionState, target: ExecutionState) -> list[ExecutionState]:
    """The states from ``current`` to ``target`` (excluded, included) by the shortest legal
    way forward; empty when there is none. Updates from one node arrive in order, but a
    restarted requester may have missed some, and the intermediate steps are still its
    history."""
    if target == current:
        return []
    frontier: list[list[ExecutionState]] = [[current]]
    seen = {current}
    while frontier:
        path = frontier.pop(0)
        for following in sorted(EXECUTION_TRANSITIONS[path[-1]]):
            if following in seen:
                continue
            if following == target:
                return path[1:] + [following]
            if not following.is_terminal:
                seen.add(following)
                frontier.append(path + [following])
    return []
