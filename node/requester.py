"""The requester's interpreter: carries out what ``node.core.RequesterCore`` decides.

Events come from the API (a job submitted or stopped), from the mesh (bids,
updates, results, heartbeats) and from the clock (``Tick`` when the core's next
timer is due). Each is handled under one lock, so the core sees one event at a
time, and its instructions are carried out in order: writes to the store
before anything is sent, since a node must never have been told what the store
does not know. Sends run in the background, so a slow peer holds up nobody.

A write the store refuses for want of space (or any other store error) is kept
and tried again every second, in order, so a full disk delays the record of a
transition instead of losing it.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import fields, is_dataclass, replace

import trio

from protocol.errors import IllegalTransition
from protocol.jobspec import Job
from protocol.messages import (
    Bid,
    BidDecision,
    ExecutionUpdate,
    JobAnnouncement,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
    seal_message,
)
from protocol.states import ExecutionState, JobState

from . import metrics
from .core import RequesterCore
from .core.events import (
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
    StoredExecution,
    StoredJob,
    StoreResult,
    Submitted,
    Tick,
    UpdateReceived,
    VerdictHeard,
)
from .core.reputation import DEFAULT_MIN_SCORE, Reputation
from .core.requester import BID_WINDOW_MS
from .logs import log_context
from .mesh import TOPIC_JOBS, TOPIC_RESULTS, Mesh, MeshError, now_ms
from .store import PendingWrite, StateConflict, Store, StoreError

log = logging.getLogger("bacnode.requester")

#: The longest the interpreter sleeps between ticks (the watchdog's resolution).
MAX_TICK_SECONDS = 1.0
#: How often writes the store refused are tried again.
PERSIST_RETRY_SECONDS = 1.0
#: How many of the jobs submitted last are known without the store (a bid's check).
RECENT_JOBS_KEPT = 10_000

_UNFINISHED = {JobState.PENDING, JobState.QUEUED, JobState.RUNNING}
_Persist = PersistJob | PersistExecution | PersistCommitment | PersistReputation


class Requester:
    def __init__(
        self,
        *,
        store: Store,
        mesh: Mesh,
        started_ms: int,
        detection_window_ms: int,
        local_compute: Callable[[BidDecision], Awaitable[None]] | None = None,
        local_announce: Callable[[JobAnnouncement], Awaitable[Bid | None]] | None = None,
        local_reveal: Callable[[RevealRequest], Awaitable[None]] | None = None,
        local_verdict: Callable[[Verdict], Awaitable[None]] | None = None,
        on_reply: Callable[[str, bytes, type[Bid | ExecutionUpdate]],
                           Awaitable[None]] | None = None,
        default_execution_timeout: int = 0,
        min_reputation: int = DEFAULT_MIN_SCORE,
    ) -> None:
        self.store = store
        self.mesh = mesh
        self.peer_id = mesh.peer_id
        self.core = RequesterCore(mesh.peer_id, detection_window_ms=detection_window_ms,
                                  min_reputation=min_reputation)
        self._started_ms = started_ms
        self._local_compute = local_compute
        self._local_announce = local_announce
        self._local_reveal = local_reveal
        self._local_verdict = local_verdict
        #: Opens and takes what a node sent back as its reply: a candidate's bid, or that
        #: the execution just accepted is Running.
        self._on_reply = on_reply
        self._default_execution_timeout = default_execution_timeout
        self._lock = trio.Lock()
        # Set once the core has taken up the stored jobs: every other event waits for it,
        # since ``Restarted`` replaces what the core knows with what the store holds.
        self._ready = trio.Event()
        self._wake = trio.Event()
        self._unpersisted: list[_Persist] = []
        #: Jobs submitted here lately: a bid that comes after its round closed is taken
        #: without a store read (in a burst, most remote bids do).
        self._recent_jobs: OrderedDict[str, None] = OrderedDict()
        #: Jobs whose creation is being written, or failed to be (the last
        #: ``RECENT_JOBS_KEPT``): the core's writes for one that failed are dropped, where
        #: another write that fails is kept to try again.
        self._creations: OrderedDict[str, PendingWrite] = OrderedDict()
        self._write_failed = trio.Event()
        self._nursery: trio.Nursery | None = None
        mesh.link_listeners.append(self._link_changed)
        for peer_id in mesh.connected_peers():
            self._link_changed(peer_id, True)

    def _link_changed(self, peer_id: str, linked: bool) -> None:
        # Straight into the core, in the order they come: nothing comes of it to carry
        # out, and handle() runs to its end before any other event's.
        self.core.handle(LinkChanged(peer_id, linked), now_ms())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            reputations = tuple((node_id, Reputation(**tallies)) for node_id, tallies in
                                (await self.store.list_reputations()).items())
            await self._handle(Restarted(self._started_ms, await self._stored_jobs(),
                                         reputations))
            self._ready.set()
            nursery.start_soon(self._retry_unpersisted)
            task_status.started()
            ticked_ms = now_ms()
            while True:
                wake_at = self.core.wake_at()
                if wake_at is None and not self.core.plans:
                    # Nothing in flight, so no timer and nothing to watch: only an event
                    # that gives the core a job can make a tick worth its wake-up.
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                due_ms = ticked_ms + int(MAX_TICK_SECONDS * 1000)
                if wake_at is not None:
                    due_ms = min(due_ms, wake_at)
                delay = (due_ms - now_ms()) / 1000
                if delay > 0:
                    with trio.move_on_after(delay):
                        await self._wake.wait()
                    if self._wake.is_set():
                        # An event may have moved the core's next timer: work it out again
                        # rather than tick. A tick walks every job in flight, and ticking
                        # after every event made a burst of jobs cost their number squared.
                        self._wake = trio.Event()
                        continue
                self._wake = trio.Event()
                ticked_ms = now_ms()
                await self._handle(Tick())

    async def _stored_jobs(self) -> tuple[StoredJob, ...]:
        jobs = []
        for record in await self.store.jobs_in_states(_UNFINISHED):
            executions = await self.store.list_executions(record.job.id or "")
            jobs.append(StoredJob(record.job, record.state, record.modify_time_ms, tuple(
                StoredExecution(e.execution_id, e.node_id, e.state, e.create_time_ms, e.retryable,
                                seal=e.seal, digest=e.digest)
                for e in executions)))
        return tuple(jobs)

    # -- events in ---------------------------------------------------------------

    async def submit(self, job: Job) -> str:
        """Store ``job`` under a new ID and start placing it; returns the job ID once the
        job is on disk (that is the acknowledgement). Raises ``StoreError`` when it could
        not be stored: nothing of it then goes on.

        Its nodes are asked while the job is written: an ask needs nothing on disk (see
        ``_finish``). This node's own bid is taken first, before the write begins, so
        that when it wins at once (``RequesterCore._outcome_known``) its record commits
        with the job's in one fsync, and the asks to the others, spawned but not yet sent,
        are dropped (``_ask``). A winner is told only once the job is on disk
        (``_stored``).
        """
        await self._ready.wait()
        job = replace(job.with_default_timeout(self._default_execution_timeout),
                      id=f"j-{uuid.uuid4()}")
        job_id = job.id or ""
        creation = self.store.queue_create_job(job, requester=self.peer_id, now_ms=now_ms())
        self._creations[job_id] = creation
        self._recent_jobs[job_id] = None
        if len(self._recent_jobs) > RECENT_JOBS_KEPT:
            self._recent_jobs.popitem(last=False)
        # Shielded from here: once its creation is queued, a job is placed or, if the write
        # fails, forgotten, whether or not the client waits for the answer.
        with trio.CancelScope(shield=True):
            instructions, queued = await self._decide(Submitted(job))
            self._spawn(self._finish_stored, instructions, queued)
            for instruction in instructions:
                if isinstance(instruction, Announce):
                    self._ask_others(instruction.announcement)
                    if self._asks_itself(instruction.announcement):
                        try:
                            await self._ask_self(instruction.announcement, finish_later=True)
                        except Exception:  # its bid is missing: the round goes on without
                            log.exception("this node's compute side did not bid on %s", job_id)
                elif _needs_nothing_stored(instruction):
                    await self._carry_out(instruction)
            self._wake.set()
            try:
                await self.store.committed(creation)
            except StoreError as exc:
                if len(self._creations) > RECENT_JOBS_KEPT:
                    self._creations.popitem(last=False)
                await self._handle(JobNotStored(job_id, str(exc)))
                raise
        del self._creations[job_id]
        return job_id

    async def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id``: its executions are cancelled on their nodes; it ends Stopped."""
        await self._handle(StopRequested(job_id, reason))

    async def on_bid(self, bid: Bid) -> bool:
        """Take a bid; False, and nothing done, when it is for no job this node requested
        (a late bid for one that has ended is taken: the core frees its slot)."""
        if (bid.job_id not in self.core.plans and bid.job_id not in self._recent_jobs
                and await self.store.get_job(bid.job_id) is None):
            return False
        metrics.BIDS_RECEIVED.labels(answer="accept" if bid.accept else "decline").inc()
        await self._handle(BidReceived(bid))
        return True

    async def on_update(self, update: ExecutionUpdate) -> None:
        await self._handle(UpdateReceived(update))

    def may_have_requested(self, job_id: str) -> bool:
        """Whether a gossiped result may be for a job of this node: one it is placing, or
        submitted lately. Every result in the network is gossiped to every node; an older
        job's comes from its node straight too, kept in that node's outbox until acked, so
        the gossiped copies need not cost each node a store transaction to find out."""
        return job_id in self.core.plans or job_id in self._recent_jobs

    async def on_result(self, record: ResultRecord, envelope_bytes: bytes) -> None:
        await self._handle(ResultReceived(record, envelope_bytes))

    async def on_commitment(self, commitment: ResultCommitment) -> None:
        await self._handle(CommitmentReceived(commitment))

    async def on_trusted_verdict(self, verdict: Verdict) -> None:
        """Another requester's verdict, from one this node's operator trusts."""
        await self._handle(VerdictHeard(verdict))

    async def heard(self, info: NodeInfo) -> None:
        event = NodeHeard(info)
        if self.core.plans:
            await self._handle(event)
            return
        # No job of ours in flight: a heartbeat only freshens the core's view of its node,
        # so it goes without the log context and the wake-up. Handling heartbeats is most of
        # what a node does all day (each node every heartbeat: ~2 a second on 100 nodes).
        if self._ready.is_set() and not self._lock.locked():
            # Nothing awaits between here and the core's answer, so no other event can
            # come between: the lock would be taken and given back for nothing.
            instructions, queued = self._decide_now(event)
            if instructions:
                await self._finish(instructions, queued)
            return
        await self._finish(*await self._decide(event))
        if self.core.plans:  # restored from the store while this one waited for the start
            self._wake.set()

    async def _handle(self, event: RequesterEvent) -> None:
        # The core sees one event at a time, and its writes are queued in that order under
        # the lock; waiting for them to commit (and sending) happens outside it, so the
        # next event's writes can share the same commit.
        with log_context(**_event_ids(event)):
            await self._finish(*await self._decide(event))
        if not isinstance(event, Tick) and self.core.plans:
            self._wake.set()  # the core's next timer may have moved

    async def _decide(self, event: RequesterEvent) -> tuple[
            list[RequesterInstruction], list[tuple[_Persist, list[PendingWrite]]]]:
        if not isinstance(event, Restarted) and not self._ready.is_set():
            await self._ready.wait()
        # Every event passes here; the lock is free but while a failed write is retried, and
        # taking a free one this way costs no trip through the scheduler.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            return self._decide_now(event)
        finally:
            self._lock.release()

    def _decide_now(self, event: RequesterEvent) -> tuple[
            list[RequesterInstruction], list[tuple[_Persist, list[PendingWrite]]]]:
        """The core's instructions for ``event``, their writes queued: under the lock, or
        where nothing can run in between (``heard``, with the lock free)."""
        instructions = self.core.handle(event, now_ms())
        queued = [(instruction, self._queue_write(instruction))
                  for instruction in instructions
                  if isinstance(instruction, PersistJob | PersistExecution
                                | PersistCommitment | PersistReputation)]
        return instructions, queued

    async def _finish(self, instructions: list[RequesterInstruction],
                      queued: list[tuple[_Persist, list[PendingWrite]]]) -> None:
        """Carry out what the core decided: what tells a node something the store must
        remember (that it won a bid, a verdict) once the writes queued with it commit; an
        ask, or a bid turned down, at once.

        Neither an ask nor a turn-down needs anything on disk: a requester that goes down
        before its writes commit asks again from its stored jobs, and the nodes it asked or
        turned down hold nothing for it. Held behind the commit, they added an fsync
        (1.5-2.5 ms) to every placement.
        """
        await self._carry_out_early(instructions)
        await self._finish_stored(instructions, queued)

    async def _carry_out_early(self, instructions: list[RequesterInstruction]) -> None:
        for instruction in instructions:
            if _needs_nothing_stored(instruction):
                await self._carry_out(instruction)

    async def _finish_stored(self, instructions: list[RequesterInstruction],
                             queued: list[tuple[_Persist, list[PendingWrite]]]) -> None:
        for instruction, pending in queued:
            await self._committed(instruction, pending)
        for instruction in instructions:
            if _needs_nothing_stored(instruction):
                continue
            if isinstance(instruction, SendDecision) and not await self._stored(
                    instruction.decision.job_id):
                continue  # the core heard (JobNotStored) and turns the node down instead
            await self._carry_out(instruction)

    async def _stored(self, job_id: str) -> bool:
        """Whether the job's creation has committed, waiting for it while it is written. A
        decision's own write follows it in the store's queue, so this is mostly settled."""
        creation = self._creations.get(job_id)
        if creation is None:
            return True
        await creation.done.wait()
        return creation.error is None

    # -- instructions out --------------------------------------------------------

    async def _carry_out(self, instruction: RequesterInstruction) -> None:
        match instruction:
            case StoreResult(record, envelope):
                await self._store_result(record, envelope)
            case Announce(announcement):
                self._ask_others(announcement)
                if self._asks_itself(announcement):
                    self._spawn(self._ask_self, announcement)
            case SendDecision(decision):
                self._spawn(self._send_decision, decision)
            case SendRevealRequest(request):
                self._spawn(self._send_reveal_request, request)
            case PublishVerdict(verdict):
                metrics.VERDICTS.labels(outcome=verdict.state).inc()
                await self._publish_verdict(verdict)

    def _queue_write(self, instruction: _Persist) -> list[PendingWrite]:
        if self._unpersisted:
            self._unpersisted.append(instruction)  # behind what failed, to keep the order
            return []
        return self._queue_now(instruction)

    def _queue_now(self, instruction: _Persist) -> list[PendingWrite]:
        now = now_ms()
        if isinstance(instruction, PersistCommitment):
            return [self.store.queue_commitment(instruction.execution_id, instruction.seal,
                                                instruction.digest)]
        if isinstance(instruction, PersistReputation):
            return [self.store.queue_reputation(instruction.node_id,
                                                instruction.reputation.to_dict(), now)]
        if isinstance(instruction, PersistJob):
            return [self.store.queue_job_state(instruction.job_id, instruction.state,
                                               message=instruction.message, now_ms=now)]
        queued = []
        if instruction.created:
            queued.append(self.store.queue_create_execution(
                instruction.execution_id, instruction.job_id, instruction.node_id,
                now_ms=now, state=ExecutionState.ASK_FOR_BID))
        queued.append(self.store.queue_execution_state(
            instruction.execution_id, instruction.state, message=instruction.message,
            now_ms=now, exit_code=instruction.exit_code, run_output=instruction.run_output,
            retryable=instruction.retryable))
        return queued

    async def _committed(self, instruction: _Persist, pending: list[PendingWrite]) -> None:
        for write in pending:
            try:
                await self.store.committed(write)
            except StateConflict as exc:
                log.warning("store refused %s: %s", instruction, exc)
            except IllegalTransition as exc:
                # The core asked for a transition the state table forbids: a bug, logged
                # loudly, but one refused write must not take the whole daemon down.
                log.error("store refused %s as illegal: %s", instruction, exc)
            except StoreError as exc:
                if self._never_stored(instruction):
                    return  # its job's creation failed too: there is nothing to write to
                log.warning("store write failed (kept to try again): %s", exc)
                self._unpersisted.append(instruction)
                self._write_failed.set()
                return

    def _never_stored(self, instruction: _Persist) -> bool:
        creation = self._creations.get(getattr(instruction, "job_id", ""))
        # Its creation commits with or before this write, so its outcome is known by now.
        return creation is not None and creation.error is not None

    async def _write(self, instruction: _Persist) -> None:
        for write in self._queue_now(instruction):
            await self.store.committed(write)

    async def _retry_unpersisted(self) -> None:
        """Write again what the store refused, in order, every second until it takes it;
        a node whose store never failed does not wake for it."""
        while True:
            if not self._unpersisted:
                await self._write_failed.wait()
            self._write_failed = trio.Event()
            await trio.sleep(PERSIST_RETRY_SECONDS)
            if not self._unpersisted:
                continue
            async with self._lock:
                while self._unpersisted:
                    try:
                        await self._write(self._unpersisted[0])
                    except (StateConflict, IllegalTransition) as exc:
                        log.warning("store refused %s: %s", self._unpersisted[0], exc)
                    except StoreError:
                        if not self._never_stored(self._unpersisted[0]):
                            break
                    self._unpersisted.pop(0)

    async def _store_result(self, record: ResultRecord, envelope: bytes) -> None:
        try:
            await self.store.put_execution_result(record, envelope, now_ms())
        except StoreError as exc:
            log.warning("storing the result of %s: %s", record.execution_id, exc)

    def _ask_others(self, announcement: JobAnnouncement) -> None:
        """Ask the candidates straight, each over its request stream; gossip only an
        announcement open to any node.

        Gossiped, every node of the network reads, checks and relays every announcement,
        at once, while the few asked bid: on 100 daemons sharing 2 cores that burst held
        the bids up for most of a placement's 0.8 s. Asked straight, the cost of a job no
        longer grows with the network. A candidate that cannot be reached is silent, as
        one that lost a gossiped announcement was: the core asks others after the window.
        """
        if not announcement.candidates:
            self._spawn(self.mesh.publish, TOPIC_JOBS, announcement)
        elif others := [c for c in announcement.candidates if c != self.peer_id]:
            sealed = seal_message(self.mesh.key, announcement, now_ms=now_ms())
            for candidate in others:
                self._spawn(self._ask, candidate, sealed, announcement)

    def _asks_itself(self, announcement: JobAnnouncement) -> bool:
        return self._local_announce is not None and (
            not announcement.candidates or self.peer_id in announcement.candidates)

    async def _ask_self(self, announcement: JobAnnouncement, *, finish_later: bool = False,
                        ) -> None:
        """Our own compute side's bid, straight (gossip does not loop back to its sender).
        ``finish_later``: what the core decides on it is carried out in a task of its own,
        not before this returns."""
        assert self._local_announce is not None
        bid = await self._local_announce(announcement)
        if bid is None:  # it bids later, once it has measured the inputs
            return
        if not finish_later:
            await self.on_bid(bid)
            return
        metrics.BIDS_RECEIVED.labels(answer="accept" if bid.accept else "decline").inc()
        self._spawn(self._finish, *await self._decide(BidReceived(bid)))

    async def _ask(self, candidate: str, sealed_announcement: bytes,
                   announcement: JobAnnouncement) -> None:
        if not self.core.still_asking(announcement):
            # This node's own bid, taken before this ask went out, settled the round (see
            # ``submit``). Asked anyway, each other node woke, bid and was turned down: an
            # ask, a bid and a turn-down each, on the cores the job's commit waited for.
            return
        try:
            reply = await self.mesh.request(candidate, sealed_announcement,
                                            timeout=BID_WINDOW_MS / 1000)
        except MeshError as exc:
            log.debug("announcement to %s not delivered: %s", candidate, exc)
            return
        if reply.startswith(b"error: "):
            log.debug("%s refused an announcement: %s", candidate, reply[:200])
        elif reply != b"ok" and self._on_reply is not None:
            await self._on_reply(candidate, reply, Bid)

    async def _send_decision(self, decision: BidDecision) -> None:
        if decision.node_id == self.peer_id and self._local_compute is not None:
            await self._local_compute(decision)
            return
        data = seal_message(self.mesh.key, decision, now_ms=now_ms())
        try:
            reply = await self.mesh.request(decision.node_id, data)
        except MeshError as exc:
            if decision.accepted:
                await self._handle(DecisionUndelivered(decision.execution_id, str(exc)))
            else:
                log.debug("rejection to %s not delivered", decision.node_id)
            return
        if reply != b"ok" and not reply.startswith(b"error: ") and self._on_reply is not None:
            await self._on_reply(decision.node_id, reply, ExecutionUpdate)

    async def _send_reveal_request(self, request: RevealRequest) -> None:
        """Ask a node for the result it committed to; one that cannot be reached is failed by
        the core when the reveal window closes."""
        if request.node_id == self.peer_id and self._local_reveal is not None:
            await self._local_reveal(request)
            return
        try:
            await self.mesh.request(request.node_id,
                                    seal_message(self.mesh.key, request, now_ms=now_ms()))
        except MeshError as exc:
            log.info("reveal request to %s not delivered: %s", request.node_id, exc)

    async def _publish_verdict(self, verdict: Verdict) -> None:
        """Keep the verdict with the job, then gossip it: the nodes whose results it accepts
        gossip their records on seeing it (nothing of them went out before)."""
        sealed = seal_message(self.mesh.key, verdict, now_ms=now_ms())
        try:
            await self.store.set_verdict(verdict.job_id, verdict.to_body(), sealed)
        except StoreError as exc:
            log.warning("keeping the verdict on %s: %s", verdict.job_id, exc)
        self._spawn(self.mesh.pubsub.publish, TOPIC_RESULTS, sealed)
        if self._local_verdict is not None:  # gossip does not loop back to its sender
            self._spawn(self._local_verdict, verdict)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                log.debug("%s failed: %r", getattr(fn, "__name__", fn), exc)

        assert self._nursery is not None
        self._nursery.start_soon(guarded)


def _needs_nothing_stored(instruction: RequesterInstruction) -> bool:
    """Whether ``instruction`` may go out before the writes decided with it commit."""
    return isinstance(instruction, Announce) or (
        isinstance(instruction, SendDecision) and not instruction.decision.accepted)


def _event_ids(event: RequesterEvent) -> dict[str, str]:
    """The job, execution and node an event is about, for the log (see node/logs.py)."""
    ids: dict[str, str] = {}
    parts = [event, *(getattr(event, f.name) for f in fields(event))] if is_dataclass(
        event) else [event]
    for part in parts:
        for key, attribute in (("job_id", "job_id"), ("execution_id", "execution_id"),
                               ("peer_id", "node_id")):
            value = getattr(part, attribute, "")
            if isinstance(value, str) and value and key not in ids:
                ids[key] = value
    return ids
