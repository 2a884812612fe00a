"""A deterministic world for bacnode's decision core: N nodes, one process, a virtual clock.

Every node runs the real ``RequesterCore`` and ``ComputeCore`` (the code the
daemon runs), driven by a small interpreter much like the daemon's: a store that
keeps what was persisted across crashes, an outbox for updates and results, a
simulated container per execution. The network delivers, drops, duplicates,
delays and reorders messages, and partitions; nodes crash, restart and run slow.
All randomness comes from one ``random.Random(seed)``, so a seed gives the same
trace every time.

Invariants are checked at every step that could break them:

- a job never has more than ``Count`` executions active (placed and unfinished);
- no compute node holds more slots than it has, or reserves more than its capacity;
- every persisted transition is one ``protocol/states.py`` allows;
- no job has more completed executions than ``Count`` (no slot completes twice);
- every acknowledged job is terminal within its time bound once the faults stop;
- a verified job's verdict accepts the honest result (liars lie each in their own way, so
  they never agree), and a requester never places an execution on a node it distrusts.

With ``verified_share``, that share of jobs runs ``--count 3 --verify``; ``liar_share`` of
the nodes return a wrong result (one byte off), commit to it and reveal it.

Simplifications, all on the network's side: heartbeats go only to the nodes
that take submissions (the requesters), and an announcement only to the nodes
it names (the others would ignore it), so that 1,000 nodes stay cheap to run.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.core import ComputeCore, RequesterCore
from node.core.events import (
    Announce,
    Announced,
    BidReceived,
    CancelExecution,
    CommitmentReceived,
    DecisionReceived,
    DecisionUndelivered,
    ExecutionEnded,
    InputsMeasured,
    MeasureInputs,
    NodeHeard,
    PersistCommitment,
    PersistExecution,
    PersistJob,
    PersistReputation,
    PublishVerdict,
    Restarted,
    ResultReceived,
    SendBid,
    SendDecision,
    SendRevealRequest,
    StartExecution,
    StoredExecution,
    StoredJob,
    StoreResult,
    Submitted,
    Tick,
    UpdateReceived,
)
from node.core.requester import DEADLINE_GRACE_MS, MAX_RETRIES
from protocol.errors import IllegalTransition
from protocol.jobspec import MAX_COUNT, Job
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    ManifestEntry,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
)
from protocol.scheduling import NodePolicy
from protocol.states import (
    ExecutionState,
    JobState,
    check_execution_transition,
    check_job_transition,
)
from protocol.verification import commitment_seal, record_digest

HEARTBEAT_MS = 15_000  # the daemon's defaults: 15 s heartbeats, two missed
DETECTION_WINDOW_MS = 2 * HEARTBEAT_MS
REQUESTER_TICK_MS = 1000
OUTBOX_RETRY_MS = 2000
REQUEST_TIMEOUT_MS = 1000
#: The longest a job's creation takes to commit (the daemon's fsync, under load).
CREATE_COMMIT_MAX_MS = 5
SLOTS_PER_NODE = 2
EXECUTION_TIMEOUT_S = 60
UNMEETABLE_QUEUE_TIMEOUT_S = 10
SUBMIT_WINDOW_MS = 20_000
#: Faults happen from the start until this long after the last submission.
FAULTS_AFTER_SUBMISSIONS_MS = 30_000

FAULT_KINDS = ("delay", "drop", "duplicate", "reorder", "partition", "crash", "slow")
FAULT_SETS = {"none": (), "all": FAULT_KINDS, "net": ("delay", "drop", "duplicate", "reorder"),
              **{kind: (kind,) for kind in FAULT_KINDS}}


class InvariantViolation(Exception):
    def __init__(self, at_ms: int, message: str, job_id: str = "") -> None:
        super().__init__(f"t={at_ms}ms: {message}")
        self.at_ms = at_ms
        self.job_id = job_id


@dataclass(order=True)
class _Scheduled:
    at: int
    seq: int
    action: Callable[[], None] = field(compare=False)


class _Store:
    """What one node persisted; survives its crashes. Checks every transition."""

    def __init__(self) -> None:
        self.jobs: dict[str, list[Any]] = {}  # job_id: [job, state, modify_ms]
        self.executions: dict[str, dict[str, Any]] = {}
        self.by_job: dict[str, list[str]] = {}
        #: Why each job is in its state (the last PersistJob's message).
        self.messages: dict[str, str] = {}
        self.reputations: dict[str, Any] = {}

    def create_job(self, job: Job, now: int) -> None:
        self.jobs[job.id or ""] = [job, JobState.PENDING, now]
        self.by_job[job.id or ""] = []

    def apply(self, instruction: PersistJob | PersistExecution, now: int) -> None:
        if isinstance(instruction, PersistJob):
            entry = self.jobs[instruction.job_id]
            if entry[1] != instruction.state:
                check_job_transition(entry[1], instruction.state)
            entry[1], entry[2] = instruction.state, now
            self.messages[instruction.job_id] = instruction.message
            return
        if instruction.created:
            self.executions[instruction.execution_id] = {
                "job": instruction.job_id, "node": instruction.node_id,
                "state": ExecutionState.ASK_FOR_BID, "created": now, "retryable": False}
            self.by_job[instruction.job_id].append(instruction.execution_id)
        record = self.executions[instruction.execution_id]
        check_execution_transition(record["state"], instruction.state)
        record["state"], record["retryable"] = instruction.state, instruction.retryable

    def stored_jobs(self) -> tuple[StoredJob, ...]:
        out = []
        for job_id, (job, state, modify_ms) in self.jobs.items():
            if state.is_terminal:
                continue
            out.append(StoredJob(job, state, modify_ms, tuple(
                StoredExecution(e, self.executions[e]["node"], self.executions[e]["state"],
                                self.executions[e]["created"], self.executions[e]["retryable"],
                                seal=self.executions[e].get("seal", ""),
                                digest=self.executions[e].get("digest", ""))
                for e in self.by_job[job_id])))
        return tuple(out)


@dataclass
class _Node:
    index: int
    node_id: str
    requester: RequesterCore
    compute: ComputeCore
    store: _Store = field(default_factory=_Store)
    up: bool = True
    incarnation: int = 0
    started_ms: int = 0
    slow: float = 1.0
    heartbeat_seq: int = 0
    outbox: list[tuple[int, str, Any]] = field(default_factory=list)
    compute_tick_at: int | None = None
    liar: bool = False
    #: Verified jobs: records committed to and not yet asked for (lost in a crash).
    committed: dict[str, ResultRecord] = field(default_factory=dict)
    #: Jobs submitted here whose creation is still being written (the daemon asks the
    #: nodes, and may decide, meanwhile), and the accepting decisions held until it commits.
    creating: dict[str, list[BidDecision]] = field(default_factory=dict)


@dataclass
class Stats:
    bids: int = 0
    messages: int = 0
    announce_deliveries: int = 0
    announcements: int = 0
    placement_ms: list[int] = field(default_factory=list)
    completions: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    #: Executions of liars placed, and those outvoted or caught.
    liar_placements: int = 0
    liars_outvoted: int = 0


@dataclass
class JobPlan:
    at_ms: int
    job: Job
    duration_ms: int
    submitted_ms: int | None = None
    bound_ms: int = 0


class World:
    def __init__(self, *, nodes: int, jobs: int, seed: int, faults: tuple[str, ...],
                 requester_core: type[RequesterCore] = RequesterCore,
                 trace: bool = False, requesters: int = 5,
                 unmeetable_share: float = 0.04, verified_share: float = 0.0,
                 liar_share: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.unmeetable_share = unmeetable_share
        self.verified_share = verified_share
        self.liar_share = liar_share
        self.now = 0
        self.faults = set(faults)
        self.trace_enabled = trace
        self.trace: list[tuple[int, str]] = []
        self.stats = Stats()
        self._queue: list[_Scheduled] = []
        self._seq = 0
        self._partitions: set[frozenset[int]] = set()
        total = Capacity(cpu_milli=SLOTS_PER_NODE * 1000, memory=8 << 30, disk=100 << 30)
        self.policy = NodePolicy(engines=("docker",), storages=("ipfs", "s3", "urlDownload"),
                                 publishers=("ipfs", "local", "noop", "s3"), labels={},
                                 total=total)
        self.nodes = [self._new_node(i, requester_core) for i in range(nodes)]
        self.by_id = {node.node_id: node for node in self.nodes}
        self.requester_nodes = self.nodes[:max(1, min(requesters, nodes))]
        for node in self.nodes[len(self.requester_nodes):]:  # requesters are honest
            node.liar = self.rng.random() < liar_share
        self._requester_core = requester_core
        self.faults_end_ms = SUBMIT_WINDOW_MS + FAULTS_AFTER_SUBMISSIONS_MS
        self.plans = self._plan_jobs(jobs, nodes)
        self.violation: InvariantViolation | None = None

    # -- set-up ---------------------------------------------------------------------

    def _new_node(self, index: int, requester_core: type[RequesterCore]) -> _Node:
        node_id = f"node-{index:04d}"
        node = _Node(index, node_id,
                     requester_core(node_id, detection_window_ms=DETECTION_WINDOW_MS),
                     ComputeCore(node_id, self.policy, max_jobs=SLOTS_PER_NODE,
                                 measure_inputs=False))
        if "slow" in self.faults and self.rng.random() < 0.1:
            node.slow = 3.0
        return node

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"

    def _plan_jobs(self, count: int, nodes: int) -> list[JobPlan]:
        plans = []
        for _ in range(count):
            roll = self.rng.random()
            job_count = 1 if roll < 0.75 else 2 if roll < 0.9 else 3
            queue_timeout = 0
            verification = {}
            if self.rng.random() < self.unmeetable_share and nodes < MAX_COUNT:
                # Asks for more nodes than there are: it queues, then fails.
                job_count, queue_timeout = nodes + 1, UNMEETABLE_QUEUE_TIMEOUT_S
            elif nodes >= 3 and self.rng.random() < self.verified_share:
                job_count, verification = 3, {"Verification": {"Mode": "Deterministic"}}
            job = Job.from_dict({
                **verification,
                "ID": self._new_id("j"), "Type": "batch", "Count": job_count,
                "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {
                    "Image": "busybox:1.36", "Entrypoint": ["true"]}},
                    "Resources": {"CPU": "1", "Memory": "64Mi"},
                    "Timeouts": {"ExecutionTimeout": EXECUTION_TIMEOUT_S,
                                 "QueueTimeout": queue_timeout}}]})
            plans.append(JobPlan(self.rng.randrange(SUBMIT_WINDOW_MS), job,
                                 self.rng.randrange(500, 5000)))
        return plans

    # -- the loop -------------------------------------------------------------------

    def at(self, when: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Scheduled(max(when, self.now), self._seq, action))

    def log(self, text: str) -> None:
        if self.trace_enabled:
            self.trace.append((self.now, text))

    def run(self) -> World:
        for plan in self.plans:
            self.at(plan.at_ms, lambda plan=plan: self._submit(plan))
        for node in self.nodes:
            self.at(node.index * 7 % HEARTBEAT_MS, lambda node=node: self._heartbeat(node))
            node.requester.handle(Restarted(0), 0)
        for node in self.requester_nodes:
            self.at(REQUESTER_TICK_MS, lambda node=node: self._requester_tick(node))
        for node in self.nodes:
            self.at(OUTBOX_RETRY_MS, lambda node=node: self._resend(node))
        if self.faults & {"crash", "partition"}:
            self.at(1000, self._fault_step)
        horizon = self._horizon()
        try:
            while self._queue and not self._all_done():
                item = heapq.heappop(self._queue)
                if item.at > horizon:
                    break
                self.now = item.at
                self.stats.steps += 1
                item.action()
            self._check_liveness()
        except InvariantViolation as violation:
            self.violation = violation
        except IllegalTransition as exc:
            self.violation = InvariantViolation(self.now, f"transition not in protocol/states.py: "
                                                          f"{exc}")
        return self

    def _horizon(self) -> int:
        longest = max((plan.duration_ms for plan in self.plans), default=0)
        per_try = EXECUTION_TIMEOUT_S * 1000 + DEADLINE_GRACE_MS + DETECTION_WINDOW_MS
        backlog = longest * 3 * (len(self.plans) // max(1, len(self.nodes) * SLOTS_PER_NODE) + 1)
        bound = self.faults_end_ms + (MAX_RETRIES + 1) * per_try + backlog + 60_000
        for plan in self.plans:
            plan.bound_ms = bound
        return bound + 1

    def _all_done(self) -> bool:
        if self.now < SUBMIT_WINDOW_MS:
            return False
        for plan in self.plans:
            if plan.submitted_ms is None:
                return False
            store = self._store_of(plan)
            if store is not None and not store.jobs[plan.job.id or ""][1].is_terminal:
                return False
        return True

    def _store_of(self, plan: JobPlan) -> _Store | None:
        for node in self.requester_nodes:
            if (plan.job.id or "") in node.store.jobs:
                return node.store
        return None

    # -- requesters -----------------------------------------------------------------

    def _submit(self, plan: JobPlan) -> None:
        ups = [node for node in self.requester_nodes if node.up]
        if not ups:  # the API does not answer: the user tries again a little later
            self.at(self.now + 1000, lambda: self._submit(plan))
            return
        node = ups[self.rng.randrange(len(ups))]
        # As the daemon: the job's creation is queued, its nodes are asked (and a winner may
        # be chosen) while it commits, and a winner is told only after. A crash in between
        # is taken as one after the commit (the answer lost, the job kept).
        job_id = plan.job.id or ""
        node.store.create_job(plan.job, self.now)
        plan.submitted_ms = self.now
        self.log(f"{node.node_id} ← submit {job_id} count={plan.job.count}")
        node.creating[job_id] = []
        self._requester(node, Submitted(plan.job))
        incarnation = node.incarnation

        def committed() -> None:
            held = node.creating.pop(job_id, [])
            if node.incarnation == incarnation:
                for decision in held:
                    self._send_decision(node, decision)

        self.at(self.now + self.rng.randint(1, CREATE_COMMIT_MAX_MS), committed)

    def _requester(self, node: _Node, event: Any) -> None:
        if self.trace_enabled and not isinstance(event, (Tick, NodeHeard)):
            self.log(f"{node.node_id} ← {_short(event)}")
        instructions = node.requester.handle(event, self.now)
        for instruction in instructions:
            self.log(f"{node.node_id} → {_short(instruction)}")
            match instruction:
                case PersistJob() | PersistExecution():
                    self._persist(node, instruction)
                case StoreResult():
                    pass
                case PersistReputation(node_id, reputation):
                    node.store.reputations[node_id] = reputation
                case PersistCommitment(execution_id, seal, digest):
                    node.store.executions[execution_id].update(seal=seal, digest=digest)
                case SendRevealRequest(request):
                    self._send_reveal_request(node, request)
                case PublishVerdict(verdict):
                    self._verdict(node, verdict)
                case Announce(announcement):
                    self._announce(node, announcement)
                case SendDecision(decision):
                    self._send_decision(node, decision)

    def _persist(self, node: _Node, instruction: PersistJob | PersistExecution) -> None:
        store = node.store
        store.apply(instruction, self.now)
        if isinstance(instruction, PersistExecution):
            job_id = instruction.job_id
            count = store.jobs[job_id][0].count
            states = [store.executions[e]["state"] for e in store.by_job[job_id]]
            active = sum(state.is_active for state in states)
            completed = states.count(ExecutionState.COMPLETED)
            if active > count:
                raise InvariantViolation(self.now, f"job {job_id} has {active} executions "
                                                   f"active, more than its Count {count}", job_id)
            if completed > count:
                raise InvariantViolation(self.now, f"job {job_id} has {completed} completed "
                                                   f"executions, more than its Count {count}",
                                         job_id)
            if instruction.created:
                if node.requester.distrusted(instruction.node_id):
                    raise InvariantViolation(self.now, f"{node.node_id} placed {job_id} on "
                                                       f"{instruction.node_id}, which it "
                                                       "distrusts", job_id)
                if self.by_id[instruction.node_id].liar:
                    self.stats.liar_placements += 1
                plan = next(p for p in self.plans if p.job.id == job_id)
                if plan.submitted_ms is not None:
                    self.stats.placement_ms.append(self.now - plan.submitted_ms)
            if instruction.state == ExecutionState.COMPLETED:
                self.stats.completions[instruction.node_id] += 1
        elif instruction.state == JobState.COMPLETED:
            job_id = instruction.job_id
            completed = sum(store.executions[e]["state"] == ExecutionState.COMPLETED
                            for e in store.by_job[job_id])
            job = store.jobs[job_id][0]
            # A verified job completes with the executions that agreed: K of Count at least.
            needed = job.verification.confidence if job.verification else job.count
            if not needed <= completed <= job.count:
                raise InvariantViolation(self.now, f"job {job_id} Completed with {completed} "
                                                   "completed executions", job_id)

    def _requester_tick(self, node: _Node) -> None:
        if node.up:
            self._requester(node, Tick())
        self.at(self.now + REQUESTER_TICK_MS, lambda: self._requester_tick(node))

    def _announce(self, node: _Node, announcement: JobAnnouncement) -> None:
        self.stats.announcements += 1
        targets = ([self.by_id[c] for c in announcement.candidates] if announcement.candidates
                   else self.nodes)
        job = Job.from_dict(announcement.job)
        for target in targets:
            self.stats.announce_deliveries += 1
            self._deliver(node, target, lambda target=target: self._compute(
                target, Announced(announcement, job, self._new_id("e"))))

    def _send_decision(self, node: _Node, decision: BidDecision) -> None:
        if decision.accepted and decision.job_id in node.creating:
            node.creating[decision.job_id].append(decision)
            return
        target = self.by_id[decision.node_id]
        self.stats.messages += 1

        def failed() -> None:
            if decision.accepted and node.up:
                self._requester(node, DecisionUndelivered(decision.execution_id, "no answer"))

        self._request(node, target, lambda: self._compute(
            target, DecisionReceived(decision, node.node_id)), on_fail=failed)

    # -- compute nodes ---------------------------------------------------------------

    def _compute(self, node: _Node, event: Any) -> None:
        if not node.up:
            return
        instructions = node.compute.handle(event, self.now)
        if len(node.compute.slots) > node.compute.max_jobs or not node.compute.reserved.fits_in(
                node.compute.policy.total):
            raise InvariantViolation(self.now, f"{node.node_id} is over-committed: "
                                               f"{len(node.compute.slots)} slots")
        for instruction in instructions:
            self.log(f"{node.node_id} → {_short(instruction)}")
            match instruction:
                case MeasureInputs(announcement, job, execution_id):
                    self._compute(node, InputsMeasured(announcement, job, execution_id, None))
                case SendBid(requester, bid):
                    self._send_bid(node, self.by_id[requester], bid)
                case StartExecution():
                    self._start(node, instruction)
                case CancelExecution(execution_id, reason):
                    self.at(self.now + 5, lambda incarnation=node.incarnation, execution_id=(
                        execution_id), reason=reason: self._finish(
                        node, incarnation, execution_id, ExecutionState.CANCELLED, reason))
        wake = node.compute.wake_at()
        if wake is not None and (node.compute_tick_at is None or wake < node.compute_tick_at
                                 or node.compute_tick_at <= self.now):
            node.compute_tick_at = wake
            self.at(wake, lambda: self._compute_tick(node, wake))

    def _compute_tick(self, node: _Node, planned: int) -> None:
        if node.compute_tick_at == planned:
            node.compute_tick_at = None
            self._compute(node, Tick())

    def _send_bid(self, node: _Node, requester: _Node, bid: Bid) -> None:
        self.stats.bids += 1
        self.stats.messages += 1

        def failed() -> None:
            if bid.accept:
                self._compute(node, ExecutionEnded(bid.execution_id))

        self._request(node, requester, lambda: requester.up and self._requester(
            requester, BidReceived(bid)), on_fail=failed)

    def _start(self, node: _Node, start: StartExecution) -> None:
        incarnation = node.incarnation
        plan = next(p for p in self.plans if p.job.id == start.job.id)
        runs_ms = int(plan.duration_ms * node.slow)
        self._report(node, start, ExecutionState.RUNNING, "running")
        if start.deadline_ms and self.now + runs_ms > start.deadline_ms:
            self.at(start.deadline_ms, lambda: self._finish(
                node, incarnation, start.execution_id, ExecutionState.FAILED, "timed out"))
            return
        self.at(self.now + runs_ms, lambda: self._published(node, incarnation, start))

    def _published(self, node: _Node, incarnation: int, start: StartExecution) -> None:
        if node.incarnation != incarnation or start.execution_id not in node.compute.slots:
            return
        self._report(node, start, ExecutionState.PUBLISHING, "publishing")
        outputs = ()
        if start.job.verification is not None:
            # Honest nodes agree on the job's one result; each liar is off in its own way.
            truth = honest_content(start.job.id or "")
            content = _sha256_hex(truth + node.node_id) if node.liar else truth
            outputs = (ManifestEntry("outputs/result", 1, content),)
        record = ResultRecord(job_id=start.job.id or "", execution_id=start.execution_id,
                              node_id=node.node_id, exit_code=0, stdout_sha256="0" * 64,
                              stderr_sha256="0" * 64, outputs=outputs,
                              published={"StorageSource": "Noop", "Name": ""},
                              completed_at_ms=self.now)
        if start.job.verification is not None:
            node.committed[start.execution_id] = record
            self._owe(node, start.requester, ResultCommitment(
                start.job.id or "", start.execution_id, node.node_id,
                commitment_seal(node.node_id, start.execution_id, record_digest(record))))
            self._compute(node, ExecutionEnded(start.execution_id))  # the slot is free
            return
        self._owe(node, start.requester, record)
        self._finish(node, incarnation, start.execution_id, ExecutionState.COMPLETED, "completed")

    def _send_reveal_request(self, requester: _Node, request: RevealRequest) -> None:
        self.stats.messages += 1
        target = self.by_id[request.node_id]

        def arrived() -> None:
            record = target.committed.pop(request.execution_id, None)
            if target.up and record is not None:
                self._owe(target, request.requester, record)

        self._request(requester, target, arrived)

    def _verdict(self, requester: _Node, verdict: Verdict) -> None:
        self.stats.verdicts[verdict.state] += 1
        truth = honest_content(verdict.job_id)
        honest_digest = record_digest(ResultRecord(
            verdict.job_id, "e-x", "n", 0, "0" * 64, "0" * 64,
            (ManifestEntry("outputs/result", 1, truth),), {}, 0))
        if verdict.state == "Verified" and verdict.accepted != honest_digest:
            raise InvariantViolation(self.now, f"{requester.node_id} accepted a lie for "
                                               f"{verdict.job_id}", verdict.job_id)
        for group in verdict.groups:
            if group.digest != verdict.accepted and verdict.accepted:
                self.stats.liars_outvoted += len(group.executions)

    def _finish(self, node: _Node, incarnation: int, execution_id: str, state: ExecutionState,
                message: str) -> None:
        slot = node.compute.slots.get(execution_id)
        if node.incarnation != incarnation or slot is None or not slot.started:
            return
        update = ExecutionUpdate(job_id=slot.job.id or "", execution_id=execution_id,
                                 node_id=node.node_id, state=state.value, message=message,
                                 exit_code=0 if state == ExecutionState.COMPLETED else None,
                                 stdout="", stderr="")
        self._owe(node, slot.requester, update)
        self._compute(node, ExecutionEnded(execution_id))

    def _report(self, node: _Node, start: StartExecution, state: ExecutionState,
                message: str) -> None:
        self._owe(node, start.requester, ExecutionUpdate(
            job_id=start.job.id or "", execution_id=start.execution_id, node_id=node.node_id,
            state=state.value, message=message, exit_code=None, stdout="", stderr=""))

    # -- the outbox: what requesters have not acknowledged ------------------------------

    def _owe(self, node: _Node, requester_id: str, message: Any) -> None:
        requester = self.by_id[requester_id]
        if requester is node:  # no outbox to ourselves, as in the daemon
            self._to_requester(requester, message)
            return
        self._seq += 1
        entry = (self._seq, requester_id, message)
        node.outbox.append(entry)
        self._send_owed(node, entry)

    def _send_owed(self, node: _Node, entry: tuple[int, str, Any]) -> None:
        self.stats.messages += 1
        requester = self.by_id[entry[1]]

        def acked() -> None:
            if entry in node.outbox:
                node.outbox.remove(entry)

        self._request(node, requester, lambda: self._to_requester(requester, entry[2]),
                      on_ok=acked)

    def _to_requester(self, requester: _Node, message: Any) -> None:
        if not requester.up:
            return
        if isinstance(message, ResultRecord):
            self._requester(requester, ResultReceived(message, b""))
        elif isinstance(message, ResultCommitment):
            self._requester(requester, CommitmentReceived(message))
        else:
            self._requester(requester, UpdateReceived(message))

    def _resend(self, node: _Node) -> None:
        if node.up:
            unreachable: set[str] = set()
            for entry in list(node.outbox):
                if entry[1] in unreachable:
                    continue
                requester = self.by_id[entry[1]]
                if not requester.up or self._cut(node, requester):
                    unreachable.add(entry[1])
                self._send_owed(node, entry)
        self.at(self.now + OUTBOX_RETRY_MS, lambda: self._resend(node))

    # -- heartbeats ----------------------------------------------------------------------

    def _heartbeat(self, node: _Node) -> None:
        if node.up:
            node.heartbeat_seq += 1
            info = NodeInfo(node_id=node.node_id, version="sim", addresses=(), labels={},
                            roles=("requester", "compute"), engines=self.policy.engines,
                            storages=self.policy.storages, publishers=self.policy.publishers,
                            total=self.policy.total, free=node.compute.free,
                            running_executions=node.compute.running,
                            seq=node.heartbeat_seq, started_ms=node.started_ms)
            for requester in self.requester_nodes:
                if requester is node:
                    self._requester(node, NodeHeard(info))
                else:
                    self._deliver(node, requester, lambda r=requester: r.up and self._requester(
                        r, NodeHeard(info)))
        self.at(self.now + HEARTBEAT_MS, lambda: self._heartbeat(node))

    # -- the network ----------------------------------------------------------------------

    def _cut(self, a: _Node, b: _Node) -> bool:
        return frozenset((a.index, b.index)) in self._partitions

    def _latency(self) -> int:
        latency = 1 + self.rng.randrange(5)
        if "delay" in self.faults and self.rng.random() < 0.1:
            latency += self.rng.randrange(50, 500)
        if "reorder" in self.faults and self.rng.random() < 0.05:
            latency += self.rng.randrange(0, 200)
        return latency

    def _lost(self) -> bool:
        return "drop" in self.faults and self.rng.random() < 0.03

    def _deliver(self, source: _Node, target: _Node, action: Callable[[], Any]) -> None:
        """One-way (gossip): may be lost, delayed, duplicated; nobody learns of a loss."""
        if target is source:
            self.at(self.now, action)
            return
        if not source.up or not target.up or self._cut(source, target) or self._lost():
            return
        incarnation = target.incarnation
        guarded = lambda: target.incarnation == incarnation and target.up and action()  # noqa: E731
        self.at(self.now + self._latency(), guarded)
        if "duplicate" in self.faults and self.rng.random() < 0.02:
            self.at(self.now + self._latency() + 10, guarded)

    def _request(self, source: _Node, target: _Node, action: Callable[[], Any], *,
                 on_ok: Callable[[], None] | None = None,
                 on_fail: Callable[[], None] | None = None) -> None:
        """Point to point with a reply: the sender learns of success, or of a failure after
        a timeout, and a lost reply means the request did arrive but looks failed."""
        source_incarnation = source.incarnation

        def back(callback: Callable[[], None] | None) -> Callable[[], None]:
            def run() -> None:
                if callback is not None and source.incarnation == source_incarnation:
                    callback()
            return run

        if target is source:
            self.at(self.now, action)
            if on_ok is not None:
                self.at(self.now, back(on_ok))
            return
        if not target.up or self._cut(source, target) or self._lost():
            self.at(self.now + REQUEST_TIMEOUT_MS, back(on_fail))
            return
        incarnation = target.incarnation
        arrive = self.now + self._latency()

        def arrived() -> None:
            if target.incarnation != incarnation or not target.up:
                self.at(self.now + REQUEST_TIMEOUT_MS, back(on_fail))
                return
            action()
            if self._lost():
                self.at(self.now + REQUEST_TIMEOUT_MS, back(on_fail))
            else:
                self.at(self.now + self._latency(), back(on_ok))

        self.at(arrive, arrived)
        if "duplicate" in self.faults and self.rng.random() < 0.02:
            self.at(arrive + 10, lambda: target.incarnation == incarnation and target.up
                    and action())

    # -- faults ------------------------------------------------------------------------

    def _fault_step(self) -> None:
        if self.now >= self.faults_end_ms:
            self._partitions.clear()
            for node in self.nodes:
                if not node.up:
                    self._restart(node)
            return
        down = sum(not node.up for node in self.nodes)
        at_most_down = max(1, len(self.nodes) // 5)
        if "crash" in self.faults and self.rng.random() < 0.3 and down < at_most_down:
            node = self.nodes[self.rng.randrange(len(self.nodes))]
            if node.up:
                self._crash(node)
                # Some come back within the detection window, some after it.
                self.at(self.now + self.rng.randrange(1000, 40_000),
                        lambda: not node.up and self._restart(node))
        if "partition" in self.faults and self.rng.random() < 0.2 and len(self.nodes) > 1:
            a, b = self.rng.sample(range(len(self.nodes)), 2)
            pair = frozenset((a, b))
            self._partitions.add(pair)
            self.log(f"partition {self.nodes[a].node_id} | {self.nodes[b].node_id}")
            self.at(self.now + self.rng.randrange(2000, 20_000),
                    lambda: self._partitions.discard(pair))
        self.at(self.now + 1000, self._fault_step)

    def _crash(self, node: _Node) -> None:
        self.log(f"{node.node_id} crashes")
        node.up = False
        node.incarnation += 1
        node.committed.clear()  # a compute node never resumes an execution
        node.creating.clear()  # the job is kept (see _submit); the decisions are not

    def _restart(self, node: _Node) -> None:
        self.log(f"{node.node_id} restarts")
        node.up = True
        node.incarnation += 1
        node.started_ms = self.now
        node.compute = ComputeCore(node.node_id, self.policy, max_jobs=SLOTS_PER_NODE,
                                   measure_inputs=False)
        node.compute_tick_at = None
        node.requester = self._requester_core(node.node_id,
                                              detection_window_ms=DETECTION_WINDOW_MS)
        self._requester(node, Restarted(self.now, node.store.stored_jobs(),
                                        tuple(node.store.reputations.items())))

    # -- the end ------------------------------------------------------------------------

    def _check_liveness(self) -> None:
        for plan in self.plans:
            store = self._store_of(plan)
            if store is None:
                raise InvariantViolation(self.now, f"job {plan.job.id} was never submitted",
                                         plan.job.id or "")
            state = store.jobs[plan.job.id or ""][1]
            if not state.is_terminal:
                raise InvariantViolation(
                    self.now, f"job {plan.job.id} is still {state.value} at "
                              f"{plan.bound_ms} ms, past its bound", plan.job.id or "")

    def outcomes(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for plan in self.plans:
            store = self._store_of(plan)
            counts[store.jobs[plan.job.id or ""][1].value if store else "unsubmitted"] += 1
        return counts


def _sha256_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def honest_content(job_id: str) -> str:
    """The SHA-256 of a verified job's one correct output, in the simulation."""
    return _sha256_hex(f"the result of {job_id}")


def _short(item: Any) -> str:
    """One line per instruction for the trace."""
    match item:
        case PersistJob(job_id, state, message):
            return f"persist {job_id[:10]} {state.value}: {message[:60]}"
        case PersistExecution(execution_id=execution_id, job_id=job_id, node_id=node_id,
                              state=state, message=message):
            return (f"persist {execution_id[:10]} of {job_id[:10]} on {node_id} "
                    f"{state.value}: {message[:60]}")
        case Announce(announcement):
            return (f"announce {announcement.job_id[:10]} to "
                    f"{len(announcement.candidates) or 'all'}")
        case SendDecision(decision):
            verdict = "accept" if decision.accepted else "reject"
            return (f"{verdict} {decision.execution_id[:10]} of {decision.job_id[:10]} "
                    f"on {decision.node_id}")
        case SendBid(requester, bid):
            verdict = "bid" if bid.accept else "busy" if bid.busy else "decline"
            return f"{verdict} {bid.job_id[:10]} to {requester}"
        case StartExecution(execution_id=execution_id, job=job):
            return f"start {execution_id[:10]} of {(job.id or '')[:10]}"
        case CancelExecution(execution_id, reason):
            return f"cancel {execution_id[:10]}: {reason[:40]}"
        case UpdateReceived(update):
            return (f"update {update.execution_id[:10]} of {update.job_id[:10]} "
                    f"{update.state} from {update.node_id}")
        case BidReceived(bid):
            return f"bid for {bid.job_id[:10]} {bid.execution_id[:10]} from {bid.node_id}"
        case DecisionUndelivered(execution_id, reason):
            return f"decision for {execution_id[:10]} undelivered"
        case ResultReceived(record):
            return f"result {record.execution_id[:10]} from {record.node_id}"
    return type(item).__name__
