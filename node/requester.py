"""The requester: the node whose API received a job sees it through.

It announces the job, collects bids over the point-to-point bid protocol,
accepts the best ``Count`` (``protocol.scheduling``), tracks each execution
through the compute node's updates, and retries an execution whose node went
silent on another node, up to ``MAX_RETRIES`` times. Every state change goes
through the store, which checks it against the state machines.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from protocol.jobspec import Job
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    ResultRecord,
    seal_message,
)
from protocol.scheduling import choose_bids, no_bid_reason
from protocol.states import ExecutionState, JobState

from .mesh import TOPIC_JOBS, Mesh, MeshError, now_ms
from .store import StateConflict, Store, StoreError

log = logging.getLogger("bacnode.requester")

#: How long bids are collected when not every compute node has answered.
BID_WINDOW_SECONDS = 3.0
#: Times an execution is moved to another node after its node went silent.
MAX_RETRIES = 2
#: How often running executions are checked for silent nodes and overdue timeouts.
WATCH_INTERVAL_SECONDS = 1.0
#: Extra time beyond the job's timeout before the requester gives up on a node.
TIMEOUT_GRACE_SECONDS = 30

FINAL_EXECUTION_STATES = {ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED}


@dataclass
class _BidRound:
    """Bids for one announcement of one job."""

    expected: set[str]
    bids: dict[str, Bid] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)

    def add(self, bid: Bid) -> None:
        self.bids[bid.node_id] = bid
        if self.expected <= set(self.bids):
            self.done.set()


class Requester:
    def __init__(
        self,
        *,
        store: Store,
        mesh: Mesh,
        compute_peers: Callable[[], set[str]],
        is_alive: Callable[[str], bool],
        node_restarted_after: Callable[[str, int], bool] = lambda node_id, ms: False,
        local_compute: Callable[[BidDecision], Awaitable[None]] | None = None,
        default_execution_timeout: int = 0,
    ) -> None:
        self.store = store
        self.mesh = mesh
        self.peer_id = mesh.peer_id
        self._compute_peers = compute_peers
        self._is_alive = is_alive
        self._node_restarted_after = node_restarted_after
        self._local_compute = local_compute
        self._default_execution_timeout = default_execution_timeout
        self._rounds: dict[str, _BidRound] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch)
            await self._resume_waiting_jobs()
            task_status.started()
            await trio.sleep_forever()

    async def _resume_waiting_jobs(self) -> None:
        """After a restart: jobs still Pending or Queued go on looking for nodes (their
        scheduling lived in the process that stopped), for what is left of their count."""
        assert self._nursery is not None
        for record in await self.store.jobs_in_states({JobState.PENDING, JobState.QUEUED}):
            executions = await self.store.list_executions(record.job.id or "")
            placed = [e for e in executions if e.state in _PLACED_STATES]
            tried = {e.node_id for e in executions if e.state == ExecutionState.FAILED}
            needed = record.job.count - len(placed)
            if needed > 0:
                log.info("resuming %s: %d execution(s) to place", record.job.id, needed)
                # Its queue timeout counts from when it started waiting, not from now.
                self._nursery.start_soon(self._schedule, record.job, tried, needed,
                                         record.modify_time_ms)

    # -- submission --------------------------------------------------------

    async def submit(self, job: Job) -> str:
        """Store ``job`` under a new ID and start scheduling it; returns the job ID."""
        from dataclasses import replace

        job_id = f"j-{uuid.uuid4()}"
        job = replace(job.with_default_timeout(self._default_execution_timeout), id=job_id)
        await self.store.create_job(job, requester=self.peer_id, now_ms=now_ms())
        assert self._nursery is not None
        self._nursery.start_soon(self._schedule, job, set())
        return job_id

    async def _schedule(self, job: Job, exclude: set[str], needed: int | None = None,
                        waiting_since_ms: int | None = None) -> None:
        """Place ``needed`` executions of ``job`` on nodes not in ``exclude``, looking again
        until its queue timeout, counted from ``waiting_since_ms`` (default: now), passes."""
        job_id = job.id
        assert job_id is not None
        needed = job.count if needed is None else needed
        try:
            record = await self.store.get_job(job_id)
            if record is None or record.state.is_terminal:
                return
            if record.state != JobState.QUEUED:
                await self.store.update_job_state(
                    job_id, JobState.QUEUED, message="looking for compute nodes", now_ms=now_ms()
                )
            waited = (now_ms() - waiting_since_ms) / 1000 if waiting_since_ms else 0.0
            deadline = trio.current_time() + max(job.task.timeouts.queue_timeout - waited, 0)
            while True:
                chosen, declines, asked = await self._collect_bids(job, exclude, needed)
                if len(chosen) >= needed or trio.current_time() >= deadline:
                    break
                await trio.sleep(1)
            if not chosen:
                await self._fail_job(job_id, no_bid_reason(declines, asked))
                return
            if len(chosen) < needed:
                # Placing part of a job would leave it Running for ever: fail it whole.
                for bid in chosen:
                    self._spawn(self._send_decision, bid, False, "the job's count cannot be met")
                await self._fail_job(
                    job_id, f"Count {job.count}: {needed} more execution(s) need as many "
                            f"distinct compute nodes, and only {len(chosen)} can take the job "
                            f"(queued {job.task.timeouts.queue_timeout}s)")
                return
            await self._decide(job, chosen, needed)
        except (StoreError, MeshError) as exc:
            log.warning("scheduling %s: %s", job_id, exc)

    async def _collect_bids(
        self, job: Job, exclude: set[str], needed: int
    ) -> tuple[list[Bid], dict[str, str], int]:
        assert job.id is not None
        expected = self._compute_peers() - exclude
        bid_round = _BidRound(expected=expected)
        self._rounds[job.id] = bid_round
        try:
            announcement = JobAnnouncement(
                job_id=job.id,
                requester=self.peer_id,
                job=job.to_dict(),
                bid_deadline_ms=now_ms() + int(BID_WINDOW_SECONDS * 1000),
            )
            await self.mesh.publish(TOPIC_JOBS, announcement)
            if expected:
                with trio.move_on_after(BID_WINDOW_SECONDS):
                    await bid_round.done.wait()
        finally:
            self._rounds.pop(job.id, None)
        bids = [bid for node, bid in bid_round.bids.items() if node not in exclude]
        declines = {bid.node_id: bid.reason for bid in bids if not bid.accept}
        chosen = choose_bids(bids, needed, exclude)
        # Tell the nodes that bid and lost, so they free what they reserved.
        for bid in bids:
            if bid.accept and bid not in chosen:
                self._spawn(self._send_decision, bid, False, "another node was chosen")
        return chosen, declines, len(expected)

    async def on_bid(self, bid: Bid) -> None:
        bid_round = self._rounds.get(bid.job_id)
        if bid_round is None:
            if bid.accept:  # too late: free the node's reservation
                self._spawn(self._send_decision, bid, False, "bid arrived after the decision")
            return
        bid_round.add(bid)

    async def _decide(self, job: Job, chosen: list[Bid], needed: int) -> None:
        assert job.id is not None
        for bid in chosen:
            now = now_ms()
            await self.store.create_execution(
                bid.execution_id, job.id, bid.node_id, now_ms=now, state=ExecutionState.ASK_FOR_BID
            )
            await self.store.update_execution(
                bid.execution_id,
                ExecutionState.BID_ACCEPTED,
                message=f"bid accepted from {bid.node_id}",
                now_ms=now,
            )
            try:
                await self._send_decision(bid, True, "bid accepted")
            except MeshError as exc:
                await self._execution_lost(bid.execution_id, f"could not reach the node: {exc}")

    async def _send_decision(self, bid: Bid, accepted: bool, reason: str) -> None:
        decision = BidDecision(bid.job_id, bid.execution_id, bid.node_id, accepted, reason)
        if bid.node_id == self.peer_id and self._local_compute is not None:
            await self._local_compute(decision)
            return
        data = seal_message(self.mesh.key, decision, now_ms=now_ms())
        try:
            await self.mesh.request(bid.node_id, data)
        except MeshError:
            if accepted:
                raise
            log.debug("rejection to %s not delivered", bid.node_id)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                log.debug("%s failed: %r", getattr(fn, "__name__", fn), exc)

        assert self._nursery is not None
        self._nursery.start_soon(guarded)

    # -- progress from compute nodes ---------------------------------------

    async def on_update(self, update: ExecutionUpdate) -> None:
        execution = await self.store.get_execution(update.execution_id)
        if execution is None or execution.node_id != update.node_id:
            return  # not ours, or not that node's to report
        if execution.state in FINAL_EXECUTION_STATES:
            return
        state = ExecutionState(update.state)
        run_output = None
        if state in FINAL_EXECUTION_STATES:
            run_output = {
                "stdout": update.stdout,
                "stderr": update.stderr,
                "exitCode": update.exit_code,
            }
        try:
            await self.store.update_execution(
                update.execution_id,
                state,
                message=update.message,
                now_ms=now_ms(),
                exit_code=update.exit_code,
                run_output=run_output,
            )
        except StateConflict:
            return
        await self._refresh_job(update.job_id)

    async def on_result(self, record: ResultRecord, envelope_bytes: bytes) -> None:
        execution = await self.store.get_execution(record.execution_id)
        if execution is None or execution.node_id != record.node_id:
            return
        await self.store.put_result(record, envelope_bytes, now_ms())
        if execution.published is None:
            # Where results went is data, not a state change.
            await self.store.set_published(record.execution_id, dict(record.published))

    async def _refresh_job(self, job_id: str) -> None:
        """Derive the job's state from its executions."""
        record = await self.store.get_job(job_id)
        if record is None or record.state.is_terminal:
            return
        executions = await self.store.list_executions(job_id)
        live = [e for e in executions if e.state not in (ExecutionState.BID_REJECTED,)]
        failed = [e for e in live if e.state == ExecutionState.FAILED]
        completed = [e for e in live if e.state == ExecutionState.COMPLETED]
        busy = (ExecutionState.RUNNING, ExecutionState.PUBLISHING)
        running = [e for e in live if e.state in busy]
        try:
            if failed and not failed[-1].retryable:
                await self._fail_job(
                    job_id, f"execution {failed[-1].execution_id} failed: {failed[-1].message}"
                )
            elif len(completed) >= record.job.count:
                await self.store.update_job_state(
                    job_id,
                    JobState.COMPLETED,
                    message="all executions completed",
                    now_ms=now_ms(),
                    expected={JobState.RUNNING, JobState.QUEUED},
                )
            elif running and record.state == JobState.QUEUED:
                await self.store.update_job_state(
                    job_id,
                    JobState.RUNNING,
                    message="running",
                    now_ms=now_ms(),
                    expected={JobState.QUEUED},
                )
        except StateConflict:
            pass

    async def _fail_job(self, job_id: str, reason: str) -> None:
        try:
            await self.store.update_job_state(
                job_id, JobState.FAILED, message=reason, now_ms=now_ms()
            )
        except StoreError as exc:
            log.debug("failing %s: %s", job_id, exc)

    # -- stopping ----------------------------------------------------------

    async def stop_job(self, job_id: str, reason: str) -> None:
        """Stop ``job_id``: cancel its executions on their nodes, then mark it Stopped."""
        executions = await self.store.list_executions(job_id)
        for execution in executions:
            if execution.state in FINAL_EXECUTION_STATES or (
                execution.state == ExecutionState.BID_REJECTED
            ):
                continue
            bid_like = Bid(
                job_id, execution.execution_id, execution.node_id, True, "", Capacity(), 0
            )
            try:
                await self._send_decision(bid_like, False, f"stopped: {reason}")
            except MeshError:
                pass
            try:
                await self.store.update_execution(
                    execution.execution_id,
                    ExecutionState.CANCELLED,
                    message=f"stopped: {reason}",
                    now_ms=now_ms(),
                )
            except StoreError:
                pass
        await self.store.update_job_state(job_id, JobState.STOPPED, message=reason, now_ms=now_ms())

    # -- failure detection -------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await trio.sleep(WATCH_INTERVAL_SECONDS)
            try:
                await self._check_executions()
            except StoreError as exc:
                log.warning("checking executions: %s", exc)

    async def _check_executions(self) -> None:
        active = {ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING, ExecutionState.PUBLISHING}
        for execution in await self.store.list_active_executions(active):
            if self._node_restarted_after(execution.node_id, execution.create_time_ms):
                # Compute nodes never resume executions across a restart (this one included).
                await self._execution_lost(
                    execution.execution_id, f"node {execution.node_id} restarted during it"
                )
                continue
            if not self._is_alive(execution.node_id):
                await self._execution_lost(
                    execution.execution_id, f"node {execution.node_id} stopped responding"
                )
                continue
            job = await self.store.get_job(execution.job_id)
            if job is None:
                continue
            timeout = job.job.task.timeouts.execution_limit
            if (
                timeout
                and now_ms() - execution.create_time_ms > (timeout + TIMEOUT_GRACE_SECONDS) * 1000
            ):
                await self._execution_lost(
                    execution.execution_id, f"no result {timeout}s after the job's timeout"
                )

    async def _execution_lost(self, execution_id: str, reason: str) -> None:
        try:
            execution = await self.store.update_execution(
                execution_id,
                ExecutionState.FAILED,
                message=f"{reason}; placing it again",
                now_ms=now_ms(),
                retryable=True,
            )
        except (StateConflict, StoreError):
            return
        job_record = await self.store.get_job(execution.job_id)
        if job_record is None or job_record.state.is_terminal:
            return
        # The retry budget is read from the store, so a restart neither resets nor loses it.
        tried = {e.node_id for e in await self.store.list_executions(execution.job_id)
                 if e.state != ExecutionState.BID_REJECTED}
        if len(tried) > MAX_RETRIES + job_record.job.count:
            await self._fail_job(execution.job_id, f"{reason}; gave up after {MAX_RETRIES} retries")
            return
        if job_record.state == JobState.RUNNING:
            try:
                await self.store.update_job_state(
                    execution.job_id,
                    JobState.QUEUED,
                    message=f"{reason}; retrying elsewhere",
                    now_ms=now_ms(),
                    expected={JobState.RUNNING},
                )
            except StateConflict:
                pass
        assert self._nursery is not None
        self._nursery.start_soon(self._schedule, job_record.job, set(tried), 1)


#: Executions that hold (or held) a slot of the job's count.
_PLACED_STATES = frozenset({ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING,
                            ExecutionState.PUBLISHING, ExecutionState.COMPLETED})


