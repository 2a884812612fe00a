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


def _plus(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(a.cpu_milli + b.cpu_milli, a.memory + b.memory, a.disk + b.disk, a.gpu + b.gpu)


def _minus(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(*(max(0, x - y) for x, y in ((a.cpu_milli, b.cpu_milli), (a.memory, b.memory),
                                                 (a.disk, b.disk), (a.gpu, b.gpu))))


class ComputeCore:
    def __init__(self, node_id: str, policy: NodePolicy, *, max_jobs: int,
                 measure_inputs: bool = True) -> None:
        self.node_id = node_id
        self.policy = policy
        self.set_max_jobs(max_jobs)
        self.measure_inputs = measure_inputs
        self.slots: dict[str, Slot] = {}
        self.reserved = Capacity()

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
        return sum(slot.job.task.engine.type not in CONTAINERLESS_ENGINES
                   for slot in self.slots.values())

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
        undecided = sum(slot.requester == announcement.requester and not slot.started
                        and slot.job.task.engine.type not in CONTAINERLESS_ENGINES
                        for slot in self.slots.values())
        if reason is None and needs_slot and undecided >= self._max_undecided:
            # A requester that never decides (a spammer) holds at most this many slots, until
            # its bids expire; the others stay free for everyone else.
            busy = True
            reason = f"busy: {undecided} bid(s) of this requester not decided yet"
        limit = self.policy.max_per_requester
        if reason is None and limit and sum(
                slot.requester == announcement.requester for slot in self.slots.values()
        ) >= limit:
            busy = True
            reason = f"busy: this requester holds {limit} execution(s) here, its limit"
        if busy:
            kind = "busy"
        if reason is None:
            self.slots[execution_id] = Slot(execution_id, job, announcement.requester, needs, now)
            self.reserved = _plus(self.reserved, needs)
        bid = Bid(job_id=announcement.job_id, execution_id=execution_id, node_id=self.node_id,
                  accept=reason is None, reason=reason or "", free=self.free,
                  running_executions=self.running, busy=busy)
        return [SendBid(announcement.requester, bid, kind)]

    def _release(self, execution_id: str) -> None:
        slot = self.slots.pop(execution_id, None)
        if slot is not None:
            self.reserved = _minus(self.reserved, slot.needs)

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
