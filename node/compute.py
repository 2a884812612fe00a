"""The compute side: bid on announced jobs, run accepted executions, publish, sign.

Capacity is reserved when a node bids and released when the bid is rejected or
the execution ends, so concurrent announcements cannot overcommit the node.
At most ``max_jobs`` executions run at once; accepted ones beyond that wait.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
    ResultRecord,
    is_safe_relative_path,
    pack_message,
    seal_message,
    unpack_message,
)
from protocol.quantities import format_bytes
from protocol.scheduling import NodePolicy, decline_reason, job_requirements
from protocol.states import ExecutionState

from .mesh import TOPIC_RESULTS, Mesh, MeshError, now_ms

log = logging.getLogger("bacnode.compute")

OUTPUT_TAIL_CHARS = 16 * 1024
#: An accepted bid whose decision never came is released after this long.
RESERVATION_TTL_SECONDS = 60
#: How long a bid may wait to learn its inputs' size (the requester waits 3 s for bids).
INPUT_SIZE_TIMEOUT_SECONDS = 1.5
#: How often a followed execution's output files are read for what is new, and how much
#: at most goes in one chunk.
LOG_POLL_SECONDS = 0.25
#: How often what requesters have not acknowledged is sent again, and for how long.
OUTBOX_RETRY_SECONDS = 2.0
OUTBOX_MAX_AGE_MS = 24 * 3600 * 1000
LOG_READ_BYTES = 64 * 1024


@dataclass
class _Execution:
    execution_id: str
    job: Job
    requester: str
    needs: Capacity
    accepted: trio.Event
    cancel_scope: trio.CancelScope | None = None
    cancelled_reason: str | None = None


def _subtract(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(a.cpu_milli - b.cpu_milli, a.memory - b.memory, a.disk - b.disk, a.gpu - b.gpu)


def _add(a: Capacity, b: Capacity) -> Capacity:
    return Capacity(a.cpu_milli + b.cpu_milli, a.memory + b.memory, a.disk + b.disk, a.gpu + b.gpu)


class Compute:
    def __init__(
        self,
        *,
        mesh: Mesh,
        policy: NodePolicy,
        executor: object,
        results_root: Path,
        storages: Any = None,
        max_jobs: int = 0,
        ipfs: Any = None,
        send_local: Callable[[bytes], Awaitable[None]] | None = None,
        outbox: Any = None,
    ) -> None:
        self.mesh = mesh
        self.peer_id = mesh.peer_id
        self.policy = policy
        self.executor = executor
        self.storages = storages
        self.results_root = results_root
        self.ipfs = ipfs
        self._reserved = Capacity()
        self._executions: dict[str, _Execution] = {}
        self._slots = trio.Semaphore(max_jobs) if max_jobs > 0 else None
        self._send_local = send_local
        #: The store's outbox: updates and results wait there until their requester acks.
        self._outbox = outbox
        self._nursery: trio.Nursery | None = None
        self._capacity_changed = trio.Event()

    @property
    def free(self) -> Capacity:
        free = _subtract(self.policy.total, self._reserved)
        return Capacity(*(max(0, v) for v in (free.cpu_milli, free.memory, free.disk, free.gpu)))

    @property
    def running(self) -> int:
        """Executions holding resources here: running, queued, or bid on and not yet decided.

        Open bids count too, so that a burst of jobs spreads over the nodes instead of
        every node bidding the same and the lowest peer ID winning them all.
        """
        return len(self._executions)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._outbox is not None:
                nursery.start_soon(self._resend_owed)
            task_status.started()
            await trio.sleep_forever()

    # -- bidding -----------------------------------------------------------

    async def on_announcement(self, announcement: JobAnnouncement) -> None:
        job = Job.from_dict(announcement.job)
        reason = decline_reason(job, self.policy)
        if reason is None and job.task.input_sources:
            reason = await self._inputs_too_big(job)
        execution_id = f"e-{uuid.uuid4()}"
        if reason is None:
            needs = job_requirements(job)
            self._reserved = _add(self._reserved, needs)
            self._executions[execution_id] = _Execution(
                execution_id, job, announcement.requester, needs, trio.Event()
            )
            assert self._nursery is not None
            self._nursery.start_soon(self._expire_reservation, execution_id)
        bid = Bid(
            job_id=announcement.job_id,
            execution_id=execution_id,
            node_id=self.peer_id,
            accept=reason is None,
            reason=reason or "",
            free=self.free,
            running_executions=self.running,
        )
        try:
            await self._send(
                announcement.requester, seal_message(self.mesh.key, bid, now_ms=now_ms())
            )
        except MeshError as exc:
            log.info("bid for %s not delivered: %s", announcement.job_id, exc)
            self._release(execution_id)

    async def _inputs_too_big(self, job: Job) -> str | None:
        """Decline when the inputs' known size does not fit this node's free disk."""
        if self.storages is None:
            return None
        total = 0
        with trio.move_on_after(INPUT_SIZE_TIMEOUT_SECONDS):
            for source in job.task.input_sources:
                try:
                    size = await self.storages.get(source.source_type).size_hint(source)
                except Exception:
                    size = None
                total += size or 0
        free_disk = self.free.disk - job_requirements(job).disk
        if total > free_disk:
            have = format_bytes(free_disk)
            return f"inputs need {format_bytes(total)}; node has {have} free disk"
        return None

    async def _expire_reservation(self, execution_id: str) -> None:
        await trio.sleep(RESERVATION_TTL_SECONDS)
        execution = self._executions.get(execution_id)
        if execution is not None and not execution.accepted.is_set():
            self._release(execution_id)

    def _release(self, execution_id: str) -> None:
        execution = self._executions.pop(execution_id, None)
        if execution is not None:
            self._reserved = _subtract(self._reserved, execution.needs)
            self._capacity_changed.set()
            self._capacity_changed = trio.Event()

    async def on_decision(self, decision: BidDecision, sender: str) -> None:
        execution = self._executions.get(decision.execution_id)
        if execution is None or execution.requester != sender:
            return  # unknown, or not from the node that asked us
        if decision.accepted:
            if not execution.accepted.is_set():
                execution.accepted.set()
                assert self._nursery is not None
                self._nursery.start_soon(self._run_execution, execution)
            return
        if execution.accepted.is_set():
            execution.cancelled_reason = decision.reason
            if execution.cancel_scope is not None:
                execution.cancel_scope.cancel()
            await self._cancel_container(execution.execution_id)
        else:
            self._release(decision.execution_id)

    async def _cancel_container(self, execution_id: str) -> None:
        cancel = getattr(self.executor, "cancel", None)
        if cancel is not None:
            try:
                await cancel(execution_id)
            except Exception as exc:
                log.debug("cancel %s: %r", execution_id, exc)

    # -- running -----------------------------------------------------------

    async def _run_execution(self, execution: _Execution) -> None:
        try:
            if self._slots is not None:
                async with self._slots:
                    await self._execute(execution)
            else:
                await self._execute(execution)
        except Exception:  # one execution's failure must never take the node down
            log.exception("execution %s failed unexpectedly", execution.execution_id)
        finally:
            self._release(execution.execution_id)

    async def _execute(self, execution: _Execution) -> None:
        from .executor.base import ExecutionRequest
        from .storage import stage_inputs

        job = execution.job
        task = job.task
        results_dir = self.results_root / execution.execution_id
        staging_dir = self.results_root / f"{execution.execution_id}.inputs"
        with trio.CancelScope() as scope:
            execution.cancel_scope = scope
            await self._update(execution, ExecutionState.RUNNING, "staging inputs and starting")
            try:
                await trio.to_thread.run_sync(_fresh_dirs, results_dir, staging_dir)
                inputs = await stage_inputs(
                    task.input_sources,
                    staging_dir,
                    registry=self.storages,
                    timeout=task.timeouts.execution_limit or None,
                )
                request = ExecutionRequest(
                    execution_id=execution.execution_id,
                    job_id=job.id or "",
                    engine=task.engine,
                    resources=task.resources,
                    network=task.network.type,
                    timeout_seconds=task.timeouts.execution_limit,
                    task_env=tuple(f"{name}={value}" for name, value in sorted(task.env.items())),
                    inputs=tuple(inputs),
                    results_dir=results_dir,
                )
                result = await self.executor.run(request)  # type: ignore[attr-defined]
            except Exception as exc:
                await self._update(execution, ExecutionState.FAILED, f"{exc}")
                return
            finally:
                await trio.to_thread.run_sync(shutil.rmtree, staging_dir, True)
            if result.error:
                await self._update(
                    execution,
                    ExecutionState.FAILED,
                    result.error,
                    exit_code=result.exit_code,
                    stdout=result.stdout_tail,
                    stderr=result.stderr_tail,
                )
                return
            await self._update(execution, ExecutionState.PUBLISHING, "publishing results")
            try:
                record = await self._publish(execution, results_dir, result.exit_code)
            except Exception as exc:
                await self._update(execution, ExecutionState.FAILED, f"publishing failed: {exc}")
                return
            envelope = seal_message(self.mesh.key, record, now_ms=now_ms())
            await self._deliver(execution.requester, record, envelope)
            try:
                await self.mesh.pubsub.publish(TOPIC_RESULTS, envelope)
            except Exception as exc:
                log.debug("result gossip failed: %r", exc)
            if result.exit_code == 0:
                state, message = ExecutionState.COMPLETED, "completed"
            else:
                tail = result.stderr_tail.strip().splitlines()[-1:] or [""]
                state = ExecutionState.FAILED
                message = f"exit code {result.exit_code}: {tail[0][:300]}".rstrip(": ")
            await self._update(
                execution,
                state,
                message,
                exit_code=result.exit_code,
                stdout=result.stdout_tail,
                stderr=result.stderr_tail,
            )
        if scope.cancelled_caught:
            await self._update(
                execution, ExecutionState.CANCELLED, execution.cancelled_reason or "cancelled"
            )

    async def _publish(
        self, execution: _Execution, results_dir: Path, exit_code: int
    ) -> ResultRecord:
        publisher = execution.job.task.publisher.type
        links = await trio.to_thread.run_sync(_symbolic_links, results_dir)
        if links:
            # Refused the same way for every publisher: a link is no content to verify, and
            # one pointing out of the results could leak the node's files.
            shown = ", ".join(links[:5]) + (f" and {len(links) - 5} more" if len(links) > 5 else "")
            raise ValueError(f"the outputs hold symbolic links ({shown}); results are regular "
                             "files and directories only: copy what a link points to instead "
                             "(cp -L)")
        location: dict[str, Any]
        if publisher == "ipfs":
            if self.ipfs is None:
                raise RuntimeError("IPFS is not running on this node")
            # One read of each file gives both the CID and the manifest's SHA-256s.
            root, manifest = await self.ipfs.add_path(
                results_dir, reason=f"results of {execution.execution_id}"
            )
            location = {"StorageSource": "IPFS", "Name": f"ipfs://{root.cid}", "CID": str(root.cid)}
        else:
            manifest = await trio.to_thread.run_sync(_manifest, results_dir)
            location = await self._publish_elsewhere(publisher, execution, results_dir, manifest)
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

    async def _publish_elsewhere(
        self,
        publisher: str,
        execution: _Execution,
        results_dir: Path,
        manifest: list[ManifestEntry],
    ) -> dict[str, Any]:
        if publisher == "local":
            return {
                "StorageSource": "Local",
                "Name": f"local://{self.peer_id}/{execution.execution_id}",
            }
        if publisher == "noop":
            return {"StorageSource": "Noop", "Name": ""}
        if publisher == "s3":
            from datetime import UTC, datetime

            from .publisher.s3 import publish_s3

            return await publish_s3(
                execution.job.task.publisher.params,
                results_dir,
                job_id=execution.job.id or "",
                execution_id=execution.execution_id,
                node_id=self.peer_id,
                now=datetime.now(UTC),
                manifest=manifest,
            )
        raise RuntimeError(f"publisher {publisher!r} is not available on this node")

    async def _update(
        self,
        execution: _Execution,
        state: ExecutionState,
        message: str,
        *,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        update = ExecutionUpdate(
            job_id=execution.job.id or "",
            execution_id=execution.execution_id,
            node_id=self.peer_id,
            state=state.value,
            message=message[:2000],
            exit_code=exit_code,
            stdout=stdout[-OUTPUT_TAIL_CHARS:],
            stderr=stderr[-OUTPUT_TAIL_CHARS:],
        )
        with trio.CancelScope(shield=True):
            await self._deliver(execution.requester, update)

    async def _deliver(self, peer: str, message: Message, sealed: bytes | None = None) -> None:
        """Send ``message`` to ``peer``; what it does not acknowledge is kept in the outbox
        and sent again (sealed afresh) until it does, across restarts too."""
        if sealed is None:
            sealed = seal_message(self.mesh.key, message, now_ms=now_ms())
        if peer == self.peer_id or self._outbox is None:
            try:
                await self._send(peer, sealed)
            except MeshError as exc:
                log.info("%s for %s not delivered: %s", message.TYPE, peer, exc)
            return
        seq = await self._outbox.outbox_add(peer, pack_message(message), now_ms())
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

    async def _resend_owed(self) -> None:
        """Every few seconds, send again what requesters have not acknowledged, oldest
        first; a requester that does not answer is skipped until the next round, so its
        messages stay in order."""
        while True:
            await trio.sleep(OUTBOX_RETRY_SECONDS)
            try:
                owed = await self._outbox.outbox_pending()
            except Exception as exc:  # the store is unreadable: try again next round
                log.warning("reading the outbox: %s", exc)
                continue
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

    async def _send(self, peer: str, data: bytes) -> None:
        if peer == self.peer_id and self._send_local is not None:
            await self._send_local(data)
        else:
            await self.mesh.request(peer, data)

    def follow_output(self, execution_id: str, asker: str,
                      ) -> AsyncIterator[tuple[int, bytes]] | None:
        """The output of an execution here as the container writes it, for the requester
        that owns it: ``(1, stdout bytes)`` and ``(2, stderr bytes)``, until it ends."""
        execution = self._executions.get(execution_id)
        if execution is None or execution.requester != asker:
            return None
        return self._tail_output(execution_id)

    async def _tail_output(self, execution_id: str) -> AsyncIterator[tuple[int, bytes]]:
        results_dir = self.results_root / execution_id
        offsets = {1: 0, 2: 0}
        while True:
            running = execution_id in self._executions  # released once published
            for kind, name in ((1, "stdout"), (2, "stderr")):
                while chunk := await trio.to_thread.run_sync(
                        _read_from, results_dir / name, offsets[kind], LOG_READ_BYTES):
                    offsets[kind] += len(chunk)
                    yield kind, chunk
            if not running:
                return
            await trio.sleep(LOG_POLL_SECONDS)

    def results_dir(self, execution_id: str) -> Path | None:
        """Where a finished execution's results live on this node, if they do."""
        if not execution_id.startswith("e-") or not is_safe_relative_path(execution_id):
            return None
        path = self.results_root / execution_id
        return path if path.is_dir() else None


def _read_from(path: Path, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except FileNotFoundError:  # not started yet
        return b""


def _fresh_dirs(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _symbolic_links(results_dir: Path) -> list[str]:
    return [path.relative_to(results_dir).as_posix()
            for path in sorted(results_dir.rglob("*")) if path.is_symlink()]


def _manifest(results_dir: Path) -> list[ManifestEntry]:
    """Every regular file under ``results_dir``: path, size, SHA-256."""
    entries = []
    for path in sorted(results_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        relative = path.relative_to(results_dir).as_posix()
        entries.append(ManifestEntry(relative, path.stat().st_size, _sha256_file(path)))
    return entries


def _std_hashes(entries: list[ManifestEntry]) -> tuple[str, str]:
    by_path = {entry.path: entry.sha256 for entry in entries}
    empty = hashlib.sha256(b"").hexdigest()
    return by_path.get("stdout", empty), by_path.get("stderr", empty)
