"""The compute side's interpreter: carries out what ``node.core.ComputeCore`` decides.

The core decides whether to bid (a slot and the job's resources are reserved
when it does), starts an accepted execution, and cancels one when its
requester says so or its deadline has long passed. Here is the I/O: measuring
inputs, sending bids, and for each execution staging its inputs, running the
container, publishing, signing the result record and reporting, all within the
one deadline the requester fixed at acceptance. What the requester does not
acknowledge waits in the store's outbox and is sent again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from protocol.errors import ProtocolError
from protocol.jobspec import Job
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    ManifestEntry,
    Message,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
    is_safe_relative_path,
    pack_message,
    seal_message,
    unpack_message,
)
from protocol.scheduling import NodePolicy
from protocol.states import ExecutionState
from protocol.verification import commitment_seal, record_digest, result_digest

from . import metrics
from .config import default_max_jobs
from .core import ComputeCore
from .core.events import (
    Announced,
    CancelExecution,
    ComputeEvent,
    DecisionReceived,
    ExecutionEnded,
    InputsMeasured,
    MeasureInputs,
    SendBid,
    StartExecution,
    Tick,
)
from .executor import ExecutorRegistry
from .executor.base import empty_results_manifest, write_empty_results
from .logs import set_log_context
from .mesh import TOPIC_RESULTS, Mesh, MeshError, now_ms
from .publisher import PublisherRegistry, PublishRequest
from .publisher.base import scan_results

log = logging.getLogger("bacnode.compute")

OUTPUT_TAIL_CHARS = 16 * 1024
#: What an execution's Running update says.
STARTING = "staging inputs and starting"
#: How long a bid may wait to learn its inputs' size (the requester waits 3 s for bids).
INPUT_SIZE_TIMEOUT_SECONDS = 1.5
#: How often a followed execution's output files are read for what is new, and how much
#: at most goes in one chunk.
LOG_POLL_SECONDS = 0.25
#: How long an ended execution's output files are kept for those still reading their end.
LOG_FOLLOWERS_GRACE_SECONDS = 2.0
#: How often what requesters have not acknowledged is sent again, and for how long.
OUTBOX_RETRY_SECONDS = 2.0
#: Results past their retention are looked for at least this often (more often when the
#: retention is short).
RESULTS_GC_MAX_PERIOD_SECONDS = 3600.0
#: How long a verified job's committed result waits to be asked for, and then for the
#: verdict, before it is forgotten.
COMMITTED_HOLD_SECONDS = 3600.0
OUTBOX_MAX_AGE_MS = 24 * 3600 * 1000
LOG_READ_BYTES = 64 * 1024
#: How long past an execution's deadline its staging or a hung executor is cut off.
DEADLINE_BACKSTOP_SECONDS = 2.0
#: How often the engines are asked whether they can run anything (dockerd may go away),
#: and how long one answer may take before the engine counts as unavailable.
ENGINE_CHECK_SECONDS = 5.0
ENGINE_CHECK_TIMEOUT_SECONDS = 15.0


@dataclass
class _Running:
    """What the interpreter holds for an execution it runs (the core holds the slot)."""

    execution_id: str
    job: Job
    requester: str
    deadline_ms: int
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    cancelled_reason: str | None = None
    #: Its requester heard it is Running in the reply to its decision.
    reported_running: bool = False
    #: Its results directory may exist (removed once it ended, unless published locally).
    results_on_disk: bool = False


@dataclass
class _Committed:
    """A verified job's execution that ran and committed: its result waits here, published
    nowhere, until the requester asks for it (then until its verdict)."""

    execution: _Running
    digest: str
    exit_code: int
    result: Any
    committed_ms: int
    envelope: bytes | None = None  # the record, once revealed


class Compute:
    def __init__(
        self,
        *,
        mesh: Mesh,
        policy: NodePolicy,
        executors: ExecutorRegistry,
        publishers: PublisherRegistry,
        results_root: Path,
        storages: Any = None,
        max_jobs: int | None = None,
        send_local: Callable[[Message, bytes | None], Awaitable[None]] | None = None,
        outbox: Any = None,
        results_retention_seconds: float = 168 * 3600,
        on_load_change: Callable[[], None] | None = None,
    ) -> None:
        self.mesh = mesh
        self.peer_id = mesh.peer_id
        self.policy = policy
        self.executors = executors
        self.publishers = publishers
        self.storages = storages
        self.results_root = results_root
        if max_jobs is None:
            max_jobs = default_max_jobs(os.cpu_count() or 1)
        self.core = ComputeCore(mesh.peer_id, policy, max_jobs=max_jobs,
                                measure_inputs=storages is not None)
        self._running: dict[str, _Running] = {}
        #: Readers of each execution's output (``follow_output``), by execution ID.
        self._followers: dict[str, int] = {}
        self._committed: dict[str, _Committed] = {}
        self._send_local = send_local
        #: The store's outbox: updates and results wait there until their requester acks.
        self._outbox = outbox
        #: Whether the outbox may hold something not yet delivered: true at start (a
        #: previous run may have left some) and once anything is added; it is read only then.
        self._may_owe = True
        self._owing = trio.Event()
        self.results_retention_seconds = results_retention_seconds
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        #: Results directories of ended executions, to be removed (``_remove_ended_results``).
        self._to_remove: list[Path] = []
        self._removal_due = trio.Event()
        self._removing = False
        #: Called when free capacity, the slots held or an engine's availability may have
        #: changed (the daemon heartbeats the change, without polling for it).
        self._on_load_change = on_load_change or (lambda: None)
        #: Requesters this node bid to (accepting or busy) since its last heartbeat to all.
        self._bid_to: set[str] = set()

    @property
    def free(self) -> Capacity:
        return self.core.free

    @property
    def running(self) -> int:
        """Executions holding a slot here: running, or bid on and not yet decided.

        Open bids count too, so that a burst of jobs spreads over the nodes instead of
        every node bidding the same and the lowest peer ID winning them all.
        """
        return self.core.running

    def load_watchers(self) -> set[str]:
        """The requesters that care how this node's load changes now: those holding a slot
        here, and those it bid to since ``forget_load_watchers`` (a requester turned away as
        busy waits for room; one whose execution ended here may place its next job)."""
        return {slot.requester for slot in self.core.slots.values()} | self._bid_to

    def forget_load_watchers(self) -> None:
        """Everyone just heard the load (a heartbeat to all)."""
        self._bid_to.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._outbox is not None:
                nursery.start_soon(self._resend_owed)
            nursery.start_soon(self._collect_old_results)
            nursery.start_soon(self._remove_ended_results)
            nursery.start_soon(self._forget_unrevealed)
            nursery.start_soon(self._watch_engines)
            task_status.started()
            while True:
                wake_at = self.core.wake_at()
                delay = 60.0 if wake_at is None else max(0.0, (wake_at - now_ms()) / 1000)
                with trio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._handle(Tick())

    async def _handle(self, event: ComputeEvent, *,
                      reply_to: str = "") -> Bid | ExecutionUpdate | None:
        """Carry out what the core decides on ``event``. For ``reply_to`` (the peer whose
        request this event is), the news it would be sent next is returned instead, to go
        back as the reply: a bid, or that the execution it accepted is Running."""
        load = (self.core.running, self.core.free)
        answer: Bid | ExecutionUpdate | None = None
        for instruction in self.core.handle(event, now_ms()):
            match instruction:
                case MeasureInputs(announcement, job, execution_id):
                    self._spawn(self._measure_inputs, announcement, job, execution_id)
                case SendBid(requester, bid, decline):
                    self._bid_to.add(requester)
                    metrics.BIDS_SENT.labels(answer="accept" if bid.accept else "decline").inc()
                    if not bid.accept:
                        metrics.BID_DECLINES.labels(reason=decline or "other").inc()
                    if reply_to and requester == reply_to and answer is None:
                        answer = bid
                    else:
                        self._spawn(self._send_bid, requester, bid)
                case StartExecution(execution_id, job, requester, deadline_ms):
                    running = _Running(execution_id, job, requester, deadline_ms)
                    if reply_to and requester == reply_to and answer is None:
                        running.reported_running = True
                        answer = self._update_of(running, ExecutionState.RUNNING, STARTING)
                    self._running[execution_id] = running
                    self._spawn(self._run_execution, running)
                case CancelExecution(execution_id, reason):
                    await self._cancel(execution_id, reason)
        if not isinstance(event, Tick):
            self._wake.set()
        if (self.core.running, self.core.free) != load:
            self._on_load_change()
        return answer

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    @property
    def unavailable(self) -> Mapping[str, str]:
        """Installed engines that cannot run anything now, and why."""
        return self.policy.unavailable

    def set_policy(self, policy: NodePolicy, *, max_jobs: int | None = None) -> None:
        """New labels and limits (SIGHUP); what is reserved stays reserved, and engines
        found unavailable stay so until they answer."""
        self._use_policy(replace(policy, unavailable=self.policy.unavailable))
        if max_jobs is not None:
            self.core.set_max_jobs(max_jobs)

    def _use_policy(self, policy: NodePolicy) -> None:
        self.policy = self.core.policy = policy
        self._wake.set()
        self._on_load_change()

    async def _watch_engines(self) -> None:
        """Stop bidding for an engine while it cannot run anything, and say why (in
        NodeInfo, hence ``node list``); bid again once it is back."""
        while True:
            unavailable: dict[str, str] = {}
            for engine in self.policy.engines:
                with trio.move_on_after(ENGINE_CHECK_TIMEOUT_SECONDS) as waited:
                    reason = await self.executors.get(engine).unavailable_reason()
                if waited.cancelled_caught:
                    reason = f"no answer within {ENGINE_CHECK_TIMEOUT_SECONDS:g}s"
                if reason:
                    unavailable[engine] = reason
            if unavailable != dict(self.policy.unavailable):
                for engine, reason in unavailable.items():
                    if engine not in self.policy.unavailable:
                        log.warning("not bidding on %s jobs: %s", engine, reason)
                for engine in set(self.policy.unavailable) - set(unavailable):
                    log.warning("bidding on %s jobs again: it answers", engine)
                self._use_policy(replace(self.policy, unavailable=unavailable))
            await trio.sleep(ENGINE_CHECK_SECONDS)

    # -- bidding -----------------------------------------------------------

    async def on_announcement(self, announcement: JobAnnouncement) -> None:
        await self._handle(Announced(announcement, announcement.spec,
                                     f"e-{uuid.uuid4()}"))

    async def answer_announcement(self, announcement: JobAnnouncement, sender: str) -> Bid | None:
        """Take an announcement ``sender`` asked this node straight; the bid, when it is
        made at once and is for ``sender``, is returned to go back as the reply. None: it
        goes on its own later (the inputs are measured first), or to another requester."""
        answer = await self._handle(Announced(announcement, announcement.spec,
                                              f"e-{uuid.uuid4()}"), reply_to=sender)
        return answer if isinstance(answer, Bid) else None

    async def _measure_inputs(self, announcement: JobAnnouncement, job: Job,
                              execution_id: str) -> None:
        """The inputs' known total size, within ``INPUT_SIZE_TIMEOUT_SECONDS`` (the
        requester waits a few seconds for bids)."""
        total: int | None = 0
        with trio.move_on_after(INPUT_SIZE_TIMEOUT_SECONDS):
            for source in job.task.input_sources:
                try:
                    size = await self.storages.get(source.source_type).size_hint(source)
                except Exception:
                    size = None
                total = (total or 0) + (size or 0)
        await self._handle(InputsMeasured(announcement, job, execution_id, total))

    async def _send_bid(self, requester: str, bid: Bid) -> None:
        try:
            if requester == self.peer_id and self._send_local is not None:
                await self._send_local(bid, None)
            else:
                await self.mesh.request(requester, seal_message(self.mesh.key, bid,
                                                                now_ms=now_ms()))
        except MeshError as exc:
            log.info("bid for %s not delivered: %s", bid.job_id, exc)
            if bid.accept:  # nobody will decide on it: free the slot now
                await self._handle(ExecutionEnded(bid.execution_id))

    async def on_decision(self, decision: BidDecision, sender: str) -> None:
        await self._handle(DecisionReceived(decision, sender))

    async def answer_decision(self, decision: BidDecision,
                              sender: str) -> ExecutionUpdate | None:
        """Take ``sender``'s decision on a bid; when it accepted one and the execution
        starts, the update that says it is Running is returned to go back as the reply
        (it is not sent again): the requester's own stream carries it at once, where the
        node's stream to the requester may still have to open."""
        answer = await self._handle(DecisionReceived(decision, sender), reply_to=sender)
        return answer if isinstance(answer, ExecutionUpdate) else None

    async def _cancel(self, execution_id: str, reason: str) -> None:
        running = self._running.get(execution_id)
        if running is None:
            return
        running.cancelled_reason = reason
        running.cancel_scope.cancel()
        try:
            await self.executors.cancel(execution_id)
        except Exception as exc:
            log.debug("cancel %s: %r", execution_id, exc)

    # -- running -----------------------------------------------------------

    async def _run_execution(self, execution: _Running) -> None:
        set_log_context(job_id=execution.job.id or "", execution_id=execution.execution_id,
                        peer_id=execution.requester)
        log.info("execution %s of job %s starts (%s engine)", execution.execution_id,
                 execution.job.id, execution.job.task.engine.type)
        try:
            await self._execute(execution)
        except Exception:  # one execution's failure must never take the node down
            log.exception("execution %s failed unexpectedly", execution.execution_id)
        finally:
            self._running.pop(execution.execution_id, None)
            await self._handle(ExecutionEnded(execution.execution_id))
            if (execution.results_on_disk and execution.job.task.publisher.type != "local"
                    and execution.execution_id not in self._committed):
                # Published elsewhere (or nowhere): nothing here is served any more, once
                # those following its output have read its end (they read once more after
                # it leaves ``_running``).
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(LOG_FOLLOWERS_GRACE_SECONDS):
                        while self._followers.get(execution.execution_id):
                            await trio.sleep(LOG_POLL_SECONDS / 5)
                    results_dir = self.results_root / execution.execution_id
                    if self._removing:
                        self._to_remove.append(results_dir)
                        self._removal_due.set()
                    else:  # stopping: nobody will take it from the queue
                        await trio.to_thread.run_sync(_remove_trees, [results_dir])

    async def _remove_ended_results(self) -> None:
        """Remove what ended executions left, all that queued up meanwhile in one worker-
        thread hop: in a burst of short jobs a hop each was a measurable part of the node's
        CPU."""
        self._removing = True
        try:
            while True:
                await self._removal_due.wait()
                self._removal_due = trio.Event()
                paths, self._to_remove = self._to_remove, []
                await trio.to_thread.run_sync(_remove_trees, paths)
        finally:
            self._removing = False
            with trio.CancelScope(shield=True):
                paths, self._to_remove = self._to_remove, []
                await trio.to_thread.run_sync(_remove_trees, paths)

    async def _collect_old_results(self) -> None:
        """Remove results kept for the local publisher once older than the retention, and
        what a crash left behind, now and then; never those of a running execution."""
        period = min(RESULTS_GC_MAX_PERIOD_SECONDS,
                     max(1.0, self.results_retention_seconds / 4))
        while True:
            keep = set(self._running)
            removed = await trio.to_thread.run_sync(
                remove_stale_results, self.results_root, self.results_retention_seconds, keep)
            if removed:
                log.info("removed the results of %d execution(s) past their retention", removed)
            await trio.sleep(period)

    def _seconds_left(self, execution: _Running) -> int:
        """Whole seconds to the execution's deadline (0: none; at least 1 while any is left)."""
        if not execution.deadline_ms:
            return 0
        return max(1, -(-(execution.deadline_ms - now_ms()) // 1000))

    async def _execute(self, execution: _Running) -> None:
        results_dir = self.results_root / execution.execution_id
        staging_dir = self.results_root / f"{execution.execution_id}.inputs"
        # The executor kills the container at the deadline itself and says so; this scope
        # is for what it does not bound (staging, a hung Docker call), a moment later.
        deadline = (trio.current_time() + (execution.deadline_ms - now_ms()) / 1000
                    + DEADLINE_BACKSTOP_SECONDS if execution.deadline_ms else math.inf)
        with execution.cancel_scope:
            if not execution.reported_running:
                await self._update(execution, ExecutionState.RUNNING, STARTING)
            timed_out = False
            try:
                with trio.move_on_at(deadline) as in_time:
                    result = await self._stage_and_run(execution, staging_dir, results_dir)
                timed_out = in_time.cancelled_caught
            except Exception as exc:
                await self._update(execution, ExecutionState.FAILED, f"{exc}")
                return
            finally:
                if execution.job.task.input_sources:
                    await trio.to_thread.run_sync(shutil.rmtree, staging_dir, True)
            if timed_out:
                limit = execution.job.task.timeouts.execution_limit
                await self._update(execution, ExecutionState.FAILED,
                                   f"execution timed out after {limit}s and was stopped")
                return
            if result.error:
                await self._update(execution, ExecutionState.FAILED, result.error,
                                   exit_code=result.exit_code, stdout=result.stdout_tail,
                                   stderr=result.stderr_tail)
                return
            if execution.job.verification is not None and result.exit_code == 0:
                await self._commit(execution, results_dir, result)
                return
            await self._update(execution, ExecutionState.PUBLISHING, "publishing results")
            try:
                record = await self._publish(execution, results_dir, result.exit_code)
            except Exception as exc:
                await self._update(execution, ExecutionState.FAILED, f"publishing failed: {exc}")
                return
            await self._report(execution, record, result)
        if execution.cancel_scope.cancelled_caught:
            await self._update(
                execution, ExecutionState.CANCELLED, execution.cancelled_reason or "cancelled")

    async def _stage_and_run(self, execution: _Running, staging_dir: Path,
                             results_dir: Path) -> Any:
        from .executor.base import ExecutionRequest
        from .storage import stage_inputs

        job, task = execution.job, execution.job.task
        executor = self.executors.get(task.engine.type)
        # Each directory only when something goes in it: a job without inputs stages
        # nothing, and an executor that writes nothing (noop) gets no results directory
        # unless its results are read (below). Each is a worker-thread hop and a few
        # metadata writes that every fsync of the store then waits for: in a burst of
        # no-op jobs, a measurable share of the node's work.
        if executor.writes_results or task.input_sources:
            execution.results_on_disk = executor.writes_results
            await trio.to_thread.run_sync(functools.partial(
                _fresh_dirs, results_dir, staging_dir, make_results=executor.writes_results,
                make_staging=bool(task.input_sources)))
        inputs = await stage_inputs(task.input_sources, staging_dir, registry=self.storages,
                                    timeout=self._seconds_left(execution) or None)
        request = ExecutionRequest(
            execution_id=execution.execution_id,
            job_id=job.id or "",
            engine=task.engine,
            resources=task.resources.or_defaults(self.policy.job_defaults),
            network=task.network.type,
            # What is left of the one deadline, after staging (and the executor's pull).
            timeout_seconds=self._seconds_left(execution),
            task_env=tuple(f"{name}={value}" for name, value in sorted(task.env.items())),
            inputs=tuple(inputs),
            results_dir=results_dir,
        )
        started = time.monotonic()
        outcome = "error"
        try:
            result = await executor.run(request)
            outcome = "error" if result.error else "ok" if result.exit_code == 0 else "exit_code"
        finally:
            metrics.CONTAINER_RUN_SECONDS.labels(engine=task.engine.type, outcome=outcome
                                                 ).observe(time.monotonic() - started)
        if (not execution.results_on_disk and not result.error
                and (job.verification is not None
                     or self.publishers.get(task.publisher.type).reads_results)):
            execution.results_on_disk = True
            await trio.to_thread.run_sync(functools.partial(
                _fresh_dirs, results_dir, staging_dir, make_results=True, make_staging=False,
                empty_run_exit_code=result.exit_code))
        return result

    # -- verified jobs: commit, reveal when asked, gossip after the verdict ----------

    async def _commit(self, execution: _Running, results_dir: Path, result: Any) -> None:
        """Hash the result and send only the seal; publish nothing yet."""
        # The output goes to the requester alone (not gossiped), so that `logs` shows it;
        # the outputs themselves stay here until the reveal.
        await self._update(execution, ExecutionState.PUBLISHING, "committing to its result",
                           exit_code=result.exit_code, stdout=result.stdout_tail,
                           stderr=result.stderr_tail)
        try:
            links, manifest = await trio.to_thread.run_sync(
                functools.partial(scan_results, results_dir, hash_files=True))
            if links:
                raise ValueError(f"the outputs hold symbolic links ({', '.join(links[:5])})")
        except Exception as exc:
            await self._update(execution, ExecutionState.FAILED, f"hashing the result: {exc}")
            return
        stdout_sha, stderr_sha = _std_hashes(manifest)
        digest = result_digest(result.exit_code, stdout_sha, stderr_sha,
                               ((e.path, e.size, e.sha256) for e in manifest))
        self._committed[execution.execution_id] = _Committed(
            execution, digest, result.exit_code, result, now_ms())
        commitment = ResultCommitment(execution.job.id or "", execution.execution_id,
                                      self.peer_id,
                                      commitment_seal(self.peer_id, execution.execution_id,
                                                      digest))
        await self._deliver(execution.requester, commitment)

    async def on_reveal_request(self, request: RevealRequest, sender: str) -> None:
        """Publish the committed result and send its record to the requester alone."""
        held = self._committed.get(request.execution_id)
        if (held is None or sender != held.execution.requester or held.envelope is not None
                or request.node_id != self.peer_id):
            return
        execution = held.execution
        results_dir = self.results_root / execution.execution_id
        try:
            record = await self._publish(execution, results_dir, held.exit_code)
        except Exception as exc:
            self._committed.pop(execution.execution_id, None)
            await self._update(execution, ExecutionState.FAILED, f"publishing failed: {exc}")
            return
        if record_digest(record) != held.digest:
            log.error("the published result of %s is not the one committed to",
                      execution.execution_id)
        held.envelope = seal_message(self.mesh.key, record, now_ms=now_ms())
        await self._deliver(execution.requester, record, held.envelope)

    async def on_verdict(self, verdict: Verdict, sender: str) -> None:
        """Gossip our records the verdict accepted (now there is nothing left to copy)."""
        for execution_id, held in list(self._committed.items()):
            if held.execution.job.id != verdict.job_id or held.execution.requester != sender:
                continue
            self._committed.pop(execution_id, None)
            if held.envelope is not None and held.digest == verdict.accepted:
                try:
                    await self.mesh.pubsub.publish(TOPIC_RESULTS, held.envelope)
                except Exception as exc:
                    log.debug("result gossip failed: %r", exc)
            if held.execution.job.task.publisher.type != "local":
                await trio.to_thread.run_sync(
                    shutil.rmtree, self.results_root / execution_id, True)

    async def _forget_unrevealed(self) -> None:
        """A commitment never asked about (the requester went away) is dropped in time."""
        while True:
            await trio.sleep(COMMITTED_HOLD_SECONDS / 4)
            cutoff = now_ms() - COMMITTED_HOLD_SECONDS * 1000
            for execution_id, held in list(self._committed.items()):
                if held.committed_ms < cutoff:
                    self._committed.pop(execution_id, None)

    async def _report(self, execution: _Running, record: ResultRecord, result: Any) -> None:
        """Deliver the signed result to the requester, send the final state, then gossip the
        result.

        The gossip goes last: every node of the network reads it at once, and on 100
        daemons sharing 2 cores, sent before the final state it held that state up by
        ~15 ms (and the requester's answer to a waiting client by 30-75 ms more). The
        requester has the record already; the others need it no sooner.
        """
        envelope = seal_message(self.mesh.key, record, now_ms=now_ms())
        await self._deliver(execution.requester, record, envelope)
        if result.exit_code == 0:
            state, message = ExecutionState.COMPLETED, "completed"
        else:
            tail = result.stderr_tail.strip().splitlines()[-1:] or [""]
            state = ExecutionState.FAILED
            message = f"exit code {result.exit_code}: {tail[0][:300]}".rstrip(": ")
        await self._update(execution, state, message, exit_code=result.exit_code,
                           stdout=result.stdout_tail, stderr=result.stderr_tail)
        try:
            await self.mesh.pubsub.publish(TOPIC_RESULTS, envelope)
        except Exception as exc:
            log.debug("result gossip failed: %r", exc)

    async def _publish(
        self, execution: _Running, results_dir: Path, exit_code: int
    ) -> ResultRecord:
        publisher_type = execution.job.task.publisher.type
        publisher = self.publishers.get(publisher_type)
        if not execution.results_on_disk:
            # An executor that wrote nothing, for a publisher that reads no files: the
            # manifest of an empty run is known without one.
            links, manifest = [], empty_results_manifest(exit_code)
        else:
            # The check for links and, for a publisher that wants it first, the manifest:
            # one walk of the results in one worker-thread hop.
            links, manifest = await trio.to_thread.run_sync(functools.partial(
                scan_results, results_dir, hash_files=publisher.manifest_first))
        if links:
            # Refused the same way for every publisher: a link is no content to verify, and
            # one pointing out of the results could leak the node's files.
            shown = ", ".join(links[:5]) + (f" and {len(links) - 5} more" if len(links) > 5 else "")
            raise ValueError(f"the outputs hold symbolic links ({shown}); results are regular "
                             "files and directories only: copy what a link points to instead "
                             "(cp -L)")
        request = PublishRequest(execution.job, execution.execution_id, self.peer_id,
                                 results_dir, tuple(manifest) if publisher.manifest_first else None)
        started = time.monotonic()
        location, manifest = await publisher.publish(request)
        metrics.PUBLISHING_SECONDS.labels(backend=publisher_type).observe(
            time.monotonic() - started)
        metrics.PUBLISHED_BYTES.labels(backend=publisher_type).inc(sum(e.size for e in manifest))
        stdout_sha, stderr_sha = _std_hashes(manifest)
        return ResultRecord(
            job_id=execution.job.id or "",
            execution_id=execution.execution_id,
            node_id=self.peer_id,
            exit_code=exit_code,
            stdout_sha256=stdout_sha,
            stderr_sha256=stderr_sha,
            outputs=tuple(manifest),
            published=location,
            completed_at_ms=now_ms(),
        )

    async def _update(
        self,
        execution: _Running,
        state: ExecutionState,
        message: str,
        *,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        update = self._update_of(execution, state, message, exit_code=exit_code,
                                 stdout=stdout, stderr=stderr)
        if state.is_terminal:
            log.info("execution %s %s: %s", execution.execution_id, state.value, message[:300])
        with trio.CancelScope(shield=True):
            if state.is_terminal:
                # The slot is free before the requester hears the execution ended, so the
                # job it places next on hearing it finds the room.
                await self._handle(ExecutionEnded(execution.execution_id))
            # A state on the way (Running, Publishing) is news, not a promise: if it is
            # lost, the final state stands for it (the requester fills in the steps) and a
            # restarted node never resumes the execution anyway. Only the end is kept.
            await self._deliver(execution.requester, update, durable=state.is_terminal)

    def _update_of(self, execution: _Running, state: ExecutionState, message: str, *,
                   exit_code: int | None = None, stdout: str = "",
                   stderr: str = "") -> ExecutionUpdate:
        return ExecutionUpdate(
            job_id=execution.job.id or "",
            execution_id=execution.execution_id,
            node_id=self.peer_id,
            state=state.value,
            message=message[:2000],
            exit_code=exit_code,
            stdout=stdout[-OUTPUT_TAIL_CHARS:],
            stderr=stderr[-OUTPUT_TAIL_CHARS:],
        )

    async def _deliver(self, peer: str, message: Message, sealed: bytes | None = None, *,
                       durable: bool = True) -> None:
        """Send ``message`` to ``peer``; when ``durable``, what it does not acknowledge is
        kept in the outbox and sent again (sealed afresh) until it does, across restarts
        too."""
        if peer == self.peer_id and self._send_local is not None:
            # Our own requester: no outbox, and no signature to make and check again (a
            # result record keeps the one it has, which is what gets stored and verified).
            await self._send_local(message, sealed)
            return
        if sealed is None:
            sealed = seal_message(self.mesh.key, message, now_ms=now_ms())
        if self._outbox is None or not durable:
            try:
                await self.mesh.request(peer, sealed)
            except MeshError as exc:
                log.info("%s for %s not delivered: %s", message.TYPE, peer, exc)
            return
        seq = await self._outbox.outbox_add(peer, pack_message(message), now_ms())
        # Before the send: one cancelled half-way (its execution stopped) leaves it owed.
        self._note_owed()
        if await self._try_send(peer, sealed):
            await self._outbox.outbox_remove(seq)

    async def _try_send(self, peer: str, sealed: bytes) -> bool:
        """Whether ``peer`` answered (an ack, or a refusal that sending again won't change)."""
        try:
            reply = await self.mesh.request(peer, sealed)
        except MeshError as exc:
            log.info("message to %s not delivered (kept to send again): %s", peer, exc)
            return False
        if reply != b"ok":
            log.warning("%s refused a message: %s", peer, reply[:200].decode(errors="replace"))
        return True

    def _note_owed(self) -> None:
        self._may_owe = True
        self._owing.set()

    async def _resend_owed(self) -> None:
        """Every few seconds while anything may be owed, send again what requesters have
        not acknowledged, oldest first; a requester that does not answer is skipped until
        the next round, so its messages stay in order. An idle node does not wake for it."""
        while True:
            if not self._may_owe:
                await self._owing.wait()
            self._owing = trio.Event()
            await trio.sleep(OUTBOX_RETRY_SECONDS)
            if not self._may_owe:
                continue
            # Cleared before the read, so that an entry added meanwhile sets it again.
            self._may_owe = False
            try:
                owed = await self._outbox.outbox_pending()
            except Exception as exc:  # the store is unreadable: try again next round
                self._note_owed()
                log.warning("reading the outbox: %s", exc)
                continue
            # Read again next round until a read finds it empty.
            if owed:
                self._note_owed()
            unreachable: set[str] = set()
            for seq, peer, packed, created_ms in owed:
                if peer in unreachable:
                    continue
                if now_ms() - created_ms > OUTBOX_MAX_AGE_MS:
                    log.warning("giving up on a message owed to %s since %d", peer, created_ms)
                    await self._outbox.outbox_remove(seq)
                    continue
                try:
                    message = unpack_message(packed)
                except ProtocolError as exc:
                    log.warning("dropping an unreadable outbox entry %d: %s", seq, exc)
                    await self._outbox.outbox_remove(seq)
                    continue
                sealed = seal_message(self.mesh.key, message, now_ms=now_ms())
                if await self._try_send(peer, sealed):
                    await self._outbox.outbox_remove(seq)
                else:
                    unreachable.add(peer)

    def follow_output(self, execution_id: str, asker: str,
                      ) -> AsyncIterator[tuple[int, bytes]] | None:
        """The output of an execution here as the container writes it, for the requester
        that owns it: ``(1, stdout bytes)`` and ``(2, stderr bytes)``, until it ends."""
        execution = self._running.get(execution_id)
        if execution is None or execution.requester != asker:
            return None
        return self._tail_output(execution_id)

    async def _tail_output(self, execution_id: str) -> AsyncIterator[tuple[int, bytes]]:
        results_dir = self.results_root / execution_id
        offsets = {1: 0, 2: 0}
        self._followers[execution_id] = self._followers.get(execution_id, 0) + 1
        try:
            while True:
                running = execution_id in self._running  # forgotten once reported
                for kind, name in ((1, "stdout"), (2, "stderr")):
                    while chunk := await trio.to_thread.run_sync(
                            _read_from, results_dir / name, offsets[kind], LOG_READ_BYTES):
                        offsets[kind] += len(chunk)
                        yield kind, chunk
                if not running:
                    return
                await trio.sleep(LOG_POLL_SECONDS)
        finally:
            self._followers[execution_id] -= 1
            if not self._followers[execution_id]:
                del self._followers[execution_id]

    def results_dir(self, execution_id: str) -> Path | None:
        """Where a finished execution's results live on this node, if they do."""
        if not execution_id.startswith("e-") or not is_safe_relative_path(execution_id):
            return None
        path = self.results_root / execution_id
        return path if path.is_dir() else None


def remove_stale_results(root: Path, older_than_seconds: float, keep: set[str]) -> int:
    """Remove what ``root`` holds for an execution (its directory, ``.tar``, ``.inputs``)
    last changed more than ``older_than_seconds`` ago, except executions in ``keep``;
    return how many executions went."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    gone: set[str] = set()
    for entry in root.iterdir():
        execution_id = entry.name.split(".", 1)[0]
        if execution_id in keep or not execution_id.startswith("e-"):
            continue
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:
            continue
        gone.add(execution_id)
    return len(gone)


def _read_from(path: Path, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except FileNotFoundError:  # not started yet
        return b""


def _fresh_dirs(results_dir: Path, staging_dir: Path, *, make_results: bool,
                make_staging: bool, empty_run_exit_code: int | None = None) -> None:
    """Make ``results_dir`` and ``staging_dir`` anew, as asked, removing what an earlier run
    left in them; with ``empty_run_exit_code``, the results of an empty run go in."""
    for path, make in ((results_dir, make_results), (staging_dir, make_staging)):
        if make:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
    if empty_run_exit_code is not None:
        write_empty_results(results_dir, empty_run_exit_code)


def _remove_trees(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _std_hashes(entries: list[ManifestEntry]) -> tuple[str, str]:
    by_path = {entry.path: entry.sha256 for entry in entries}
    empty = hashlib.sha256(b"").hexdigest()
    return by_path.get("stdout", empty), by_path.get("stderr", empty)
