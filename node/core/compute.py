"""The compute node's decisions: whether to bid, when to start, when to give up.

A node has ``max_jobs`` slots, one per container it may run at once. A bid
takes one (and reserves the job's resources) until the requester decides; an
accepted bid starts at once in its slot, so no execution ever waits here and
its deadline, fixed by the requester at acceptance, is all time for work. A
node with no slot free declines as *busy*, which tells the requester to ask
again later: jobs queue at the requester, as Bacalhau's do at its orchestrator,
and a node never runs more containers than it has slots.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from protocol.jobspec import Job, Resources
from protocol.messages import Bid, Capacity, JobAnnouncement
from protocol.quantities import format_bytes
from protocol.scheduling import (
    NodePolicy,
    decline,
    job_requirements,
    requester_refusal,
)

from .events import (
    Announced,
    CancelExecution,
    ComputeEvent,
    ComputeInstruction,
    DecisionReceived,
    ExecutionEnded,
    InputsMeasured,
    MeasureInputs,
    SendBid,
    StartExecution,
    Tick,
)

#: A bid whose decision never came frees its slot after this long.
RESERVATION_TTL_MS = 15_000
#: Engines that start no container, so take no slot (they still reserve what they ask for).
CONTAINERLESS_ENGINES = frozenset({"noop"})
#: After its deadline, how long an execution may take to stop before it is cancelled.
OVERRUN_GRACE_MS = 5_000


@dataclass
class Slot:
    execution_id: str
    job: Job
    requester: str
    needs: Capacity
    bid_ms: int
    started: bool = False
    deadline_ms: int = 0
    cancelling: bool = False

    @property
    def runs_container(self) -> bool:
        return self.job.task.engine.type not in CONTAINERLESS_ENGINES


def _plus(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(a.cpu_milli + b.cpu_milli, a.memory + b.memory, a.disk + b.disk, a.gpu + b.gpu)


def _minus(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(*(max(0, x - y) for x, y in ((a.cpu_milli, b.cpu_milli), (a.memory, b.memory),
                                                 (a.disk, b.disk), (a.gpu, b.gpu))))


def _count_down(counts: Counter[str], key: str) -> None:
    # A requester with nothing left here leaves no key behind: strangers come and go.
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


class ComputeCore:
    def __init__(self, node_id: str, policy: NodePolicy, *, max_jobs: int,
                 measure_inputs: bool = True) -> None:
        self.node_id = node_id
        self.policy = policy
        self.set_max_jobs(max_jobs)
        self.measure_inputs = measure_inputs
        self.slots: dict[str, Slot] = {}
        self.reserved = Capacity()
        # Counted as slots come and go, not by scanning them at each bid: in a burst of
        # no-op jobs a node holds dozens of undecided bids, and every bid read all three.
        self._containers = 0
        #: Per requester: its slots, and those of them that run a container, undecided.
        self._held: Counter[str] = Counter()
        self._undecided: Counter[str] = Counter()

    def set_max_jobs(self, max_jobs: int) -> None:
        """Executions at once (0: no limit); those running over a lowered limit finish."""
        self.max_jobs = max(0, max_jobs)
        #: Slots one requester's undecided bids may hold: at most half (and 2 at least).
        self._max_undecided = max(2, self.max_jobs // 2) if self.max_jobs else 1 << 30

    @property
    def free(self) -> Capacity:
        return _minus(self.policy.total, self.reserved)

    @property
    def containers(self) -> int:
        """Slots taken by executions that run a container (or will, once decided)."""
        return self._containers

    @property
    def running(self) -> int:
        """Executions holding a slot: running, or bid on and not yet decided."""
        return len(self.slots)

    def handle(self, event: ComputeEvent, now: int) -> list[ComputeInstruction]:
        match event:
            case Announced(announcement, job, execution_id):
                return self._announced(announcement, job, execution_id, now)
            case InputsMeasured(announcement, job, execution_id, total_bytes):
                return self._bid(announcement, job, execution_id, now, total_bytes)
            case DecisionReceived(decision, sender):
                slot = self.slots.get(decision.execution_id)
                if slot is None or slot.requester != sender or slot.job.id != decision.job_id:
                    return []  # unknown, or not from the node that asked us
                if decision.accepted:
                    if slot.started:
                        return []
                    slot.started, slot.deadline_ms = True, decision.deadline_ms
                    if slot.runs_container:
                        _count_down(self._undecided, slot.requester)
                    return [StartExecution(slot.execution_id, slot.job, slot.requester,
                                           decision.deadline_ms)]
                if slot.started:
                    slot.cancelling = True
                    return [CancelExecution(slot.execution_id, decision.reason)]
                self._release(slot.execution_id)
                return []
            case ExecutionEnded(execution_id):
                self._release(execution_id)
                return []
            case Tick():
                return self._tick(now)
        return []

    def wake_at(self) -> int | None:
        times = [slot.deadline_ms + OVERRUN_GRACE_MS if slot.started else
                 slot.bid_ms + RESERVATION_TTL_MS for slot in self.slots.values()
                 if not slot.cancelling and (slot.deadline_ms or not slot.started)]
        return min(times, default=None)

    def _announced(self, announcement: JobAnnouncement, job: Job, execution_id: str,
                   now: int) -> list[ComputeInstruction]:
        if announcement.candidates and self.node_id not in announcement.candidates:
            return []
        if (self.measure_inputs and job.task.input_sources
                and self._refusal(job, announcement.requester) is None):
            return [MeasureInputs(announcement, job, execution_id)]
        return self._bid(announcement, job, execution_id, now, None)

    def _refusal(self, job: Job, requester: str) -> tuple[str, str] | None:
        refused = requester_refusal(requester, self.policy)
        return decline(job, self.policy) or (("requester", refused) if refused else None)

    def _bid(self, announcement: JobAnnouncement, job: Job, execution_id: str, now: int,
             inputs_bytes: int | None) -> list[ComputeInstruction]:
        needs_slot = job.task.engine.type not in CONTAINERLESS_ENGINES
        # The defaults are a container's limits: a job that runs none reserves what it asks.
        needs = job_requirements(job, self.policy.job_defaults if needs_slot else Resources())
        refusal = self._refusal(job, announcement.requester)
        kind, reason = refusal if refusal else ("", None)
        busy = False
        if reason is None and inputs_bytes and inputs_bytes > self.policy.total.disk - needs.disk:
            kind = "capacity"
            reason = (f"inputs need {format_bytes(inputs_bytes)}; node has "
                      f"{format_bytes(max(0, self.policy.total.disk - needs.disk))} disk")
        in_use = self.containers
        if reason is None and ((needs_slot and self.max_jobs and in_use >= self.max_jobs)
                               or not needs.fits_in(self.free)):
            busy = True
            reason = f"busy: {in_use} of {self.max_jobs} slot(s) in use"
        undecided = self._undecided[announcement.requester]
        if reason is None and needs_slot and undecided >= self._max_undecided:
            # A requester that never decides (a spammer) holds at most this many slots, until
            # its bids expire; the others stay free for everyone else.
            busy = True
            reason = f"busy: {undecided} bid(s) of this requester not decided yet"
        limit = self.policy.max_per_requester
        if reason is None and limit and self._held[announcement.requester] >= limit:
            busy = True
            reason = f"busy: this requester holds {limit} execution(s) here, its limit"
        if busy:
            kind = "busy"
        if reason is None:
            self._take(Slot(execution_id, job, announcement.requester, needs, now))
        bid = Bid(job_id=announcement.job_id, execution_id=execution_id, node_id=self.node_id,
                  accept=reason is None, reason=reason or "", free=self.free,
                  running_executions=self.running, busy=busy)
        return [SendBid(announcement.requester, bid, kind)]

    def _take(self, slot: Slot) -> None:
        self.slots[slot.execution_id] = slot
        self.reserved = _plus(self.reserved, slot.needs)
        self._held[slot.requester] += 1
        if slot.runs_container:
            self._containers += 1
            self._undecided[slot.requester] += 1

    def _release(self, execution_id: str) -> None:
        slot = self.slots.pop(execution_id, None)
        if slot is None:
            return
        self.reserved = _minus(self.reserved, slot.needs)
        _count_down(self._held, slot.requester)
        if slot.runs_container:
            self._containers -= 1
            if not slot.started:
                _count_down(self._undecided, slot.requester)

    def _tick(self, now: int) -> list[ComputeInstruction]:
        out: list[ComputeInstruction] = []
        for slot in list(self.slots.values()):
            if not slot.started and now - slot.bid_ms >= RESERVATION_TTL_MS:
                self._release(slot.execution_id)
            elif (slot.started and slot.deadline_ms and not slot.cancelling
                  and now >= slot.deadline_ms + OVERRUN_GRACE_MS):
                # The executor stops at the deadline itself; this catches what it missed.
                slot.cancelling = True
                out.append(CancelExecution(slot.execution_id, "the execution's deadline passed"))
        return out
