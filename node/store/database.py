"""The open store: group commit, and every read and write the daemon makes."""

from __future__ import annotations

import collections
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from protocol.errors import IllegalTransition
from protocol.jobspec import Job
from protocol.messages import NodeInfo, ResultRecord
from protocol.states import (
    ExecutionState,
    JobState,
    check_execution_transition,
    check_job_transition,
)

from ..metrics import STORE_COMMIT_SECONDS
from ._rows import (
    _EXECUTION_COLUMNS,
    _JOB_COLUMNS,
    _NODE_COLUMNS,
    _UPSERT_NODE,
    _execution_record,
    _get_execution,
    _get_job,
    _insert_event,
    _job_record,
    _json,
    _load_json,
    _names,
    _node_record,
    _node_row,
    _parse_page_token,
    _prefix_upper_bound,
    _remember_parsed,
    _result,
)
from .errors import AlreadyExists, NotFound, ResultConflict, StateConflict, StoreError
from .records import (
    EXECUTION_STATE_UPDATE,
    JOB_STATE_UPDATE,
    DesiredState,
    Event,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
)
from .schema import DEFAULT_BUSY_TIMEOUT_MS, connect

T = TypeVar("T")


@dataclass(slots=True)
class PendingWrite:
    """A write queued for the next group commit."""

    what: str
    fn: Callable[[sqlite3.Connection], Any]
    done: trio.Event
    result: Any = None
    error: BaseException | None = None



class Store:
    """The open store. Get one from ``open_store``; every method may raise ``StoreError``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._limiter = trio.CapacityLimiter(1)
        self.path = path
        self._queue: list[PendingWrite] = []
        self._flushing = False
        #: Set, and forgotten, when a write to the job (or one of its executions) commits;
        #: kept while anyone waits on it (``wait_for_job``).
        self._job_changes: dict[str, trio.Event] = {}
        self._job_waiters: collections.Counter[str] = collections.Counter()

    async def aclose(self) -> None:
        """Close the connection; later calls raise ``StoreError``. Idempotent."""

        def run() -> None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

        await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def _call(self, what: str, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        if write:
            return await self._write(what, fn)

        def run() -> T:
            conn = self._conn
            if conn is None:
                raise StoreError(f"{what}: the store is closed")
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"{what}: {exc}") from exc

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    # Group commit: writes that arrive while a commit is under way wait and go together in
    # the next transaction, each in its own savepoint, so one fsync (1.3-2.9 ms here) serves
    # them all and a failing write undoes only itself. The first writer to find no commit
    # under way does the committing for everyone.

    def _enqueue(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> PendingWrite:
        pending = PendingWrite(what, fn, trio.Event())
        self._queue.append(pending)
        return pending

    async def committed(self, pending: PendingWrite) -> Any:
        """Wait until a queued write has committed; its result, or what it raised."""
        return await self._complete(pending)

    async def _complete(self, pending: PendingWrite) -> Any:
        if not pending.done.is_set():
            if self._flushing:
                # Shielded: a cancel arrives once the write has committed (or failed), so
                # a caller never takes a committed write for a cancelled one.
                with trio.CancelScope(shield=True):
                    await pending.done.wait()
            else:
                await self._flush()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def _flush(self) -> None:
        self._flushing = True
        try:
            # Shielded: the writers waiting on this batch must learn how it went.
            with trio.CancelScope(shield=True):
                while self._queue:
                    batch, self._queue = self._queue, []
                    await trio.to_thread.run_sync(self._commit, batch, limiter=self._limiter)
                    for pending in batch:
                        pending.done.set()
                        if pending.error is None:
                            self._job_changed(pending.result)
        finally:
            self._flushing = False

    def _commit(self, batch: list[PendingWrite]) -> None:
        conn = self._conn
        if conn is None:
            for pending in batch:
                pending.error = StoreError(f"{pending.what}: the store is closed")
            return
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                conn.execute("SAVEPOINT write")
                try:
                    pending.result = pending.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    pending.error = (StoreError(f"{pending.what}: {exc}")
                                     if isinstance(exc, sqlite3.Error) else exc)
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
            STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        except sqlite3.Error as exc:  # the transaction itself failed (a full disk, say)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            for pending in batch:
                if pending.error is None:
                    pending.result = None
                    pending.error = StoreError(f"{pending.what}: {exc}")

    def _job_changed(self, result: Any) -> None:
        if isinstance(result, JobRecord):
            job_id = result.job.id
        elif isinstance(result, ExecutionRecord | Event):
            job_id = result.job_id
        else:
            return
        changed = self._job_changes.pop(job_id or "", None)
        if changed is not None:
            changed.set()

    async def wait_for_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once it is terminal, or once it or one of its executions changes after
        this call began, or as it is when ``timeout`` seconds pass; None if there is no
        such job. A client that waits this way learns of a change at once, where polling
        would learn of it a poll later and cost a read each time."""
        changed = self._job_changes.setdefault(job_id, trio.Event())
        self._job_waiters[job_id] += 1
        try:
            # Read after the wait is registered, so that no change can fall in between.
            record = await self.get_job(job_id)
            if record is None or record.state.is_terminal:
                return record
            with trio.move_on_after(timeout):
                await changed.wait()
            return await self.get_job(job_id)
        finally:
            self._job_waiters[job_id] -= 1
            if not self._job_waiters[job_id]:
                del self._job_waiters[job_id]
                self._job_changes.pop(job_id, None)  # nobody waits on it any more

    async def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(what, fn, write=False)

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._complete(self._enqueue(what, fn))  # type: ignore[no-any-return]

    # --- nodes ----------------------------------------------------------------------

    async def upsert_node(self, info: NodeInfo, seen_ms: int) -> bool:
        """Record a heartbeat; False (and nothing changed) if its ``seq`` is stale.

        A heartbeat with a lower ``seq`` than the stored one for the same node is an
        old message arriving late; an equal ``seq`` is accepted (a re-delivery, or a
        node that does not bump it). ``first_seen_ms`` is kept from the first one.
        """
        row = _node_row(info, seen_ms)

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(_UPSERT_NODE, row).rowcount == 1

        return await self._write(f"storing node info for {info.node_id}", run)

    async def upsert_nodes(self, heartbeats: list[tuple[NodeInfo, int]]) -> None:
        """``upsert_node`` for each (heartbeat, seen_ms), in one transaction."""
        rows = [_node_row(info, seen_ms) for info, seen_ms in heartbeats]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_NODE, rows)

        await self._write(f"storing {len(rows)} nodes' info", run)

    async def get_node(self, node_id: str) -> NodeRecord | None:
        """The last heartbeat stored for ``node_id``, or None."""

        def run(conn: sqlite3.Connection) -> NodeRecord | None:
            row = conn.execute(f"SELECT {_NODE_COLUMNS} WHERE node_id = ?", (node_id,)).fetchone()
            return None if row is None else _node_record(row)

        return await self._read(f"reading node {node_id}", run)

    async def list_nodes(self) -> list[NodeRecord]:
        """Every node ever heard from, by node ID."""

        def run(conn: sqlite3.Connection) -> list[NodeRecord]:
            rows = conn.execute(f"SELECT {_NODE_COLUMNS} ORDER BY node_id").fetchall()
            return [_node_record(row) for row in rows]

        return await self._read("listing nodes", run)

    # --- jobs -----------------------------------------------------------------------

    async def create_job(
        self,
        job: Job,
        *,
        requester: str,
        now_ms: int,
        state: JobState = JobState.PENDING,
    ) -> JobRecord:
        """Store a new job (``job.id`` must be set) and its first history event.

        Raises ``AlreadyExists`` if a job with that ID is stored.
        """
        return await self.committed(self.queue_create_job(
            job, requester=requester, now_ms=now_ms, state=state))

    def queue_create_job(
        self,
        job: Job,
        *,
        requester: str,
        now_ms: int,
        state: JobState = JobState.PENDING,
    ) -> PendingWrite:
        """Queue ``create_job``; writes queued after it commit with it or after it."""
        if job.id is None:
            raise ValueError("creating a job: job.id must be set")
        job_id = job.id
        state = JobState(state)
        spec = _json(job.to_dict())
        what = f"creating job {job_id}"

        def run(conn: sqlite3.Connection) -> JobRecord:
            try:
                conn.execute(
                    "INSERT INTO jobs (job_id, spec, state, state_message, requester,"
                    " create_time_ms, modify_time_ms, revision) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (job_id, spec, state.value, "", requester, now_ms, now_ms),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"{what}: a job with this ID already exists") from None
            _insert_event(conn, job_id, None, now_ms, JOB_STATE_UPDATE, None, state, "created")
            _remember_parsed(job)
            return JobRecord(job, state, "", requester, now_ms, now_ms, 1)

        return self._enqueue(what, run)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job with exactly this ID, or None."""

        def run(conn: sqlite3.Connection) -> JobRecord | None:
            return _get_job(conn, job_id)

        return await self._read(f"reading job {job_id}", run)

    async def find_job_ids(self, prefix: str, *, limit: int | None = None) -> list[str]:
        """IDs of stored jobs that start with ``prefix``, sorted; at most ``limit``.

        For resolving a short ID a user typed: one result is a match, several an
        ambiguity (``limit=2`` is enough to tell).
        """
        upper = _prefix_upper_bound(prefix)

        def run(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT job_id FROM jobs WHERE job_id >= ?"
            params: list[Any] = [prefix]
            if upper is not None:
                sql += " AND job_id < ?"
                params.append(upper)
            sql += " ORDER BY job_id"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            return [row[0] for row in conn.execute(sql, params)]

        return await self._read(f"looking up jobs by prefix {prefix!r}", run)

    async def list_jobs(
        self, limit: int, after: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """One page of jobs, newest first (by create time, then ID), and the next token.

        Pass the returned token as ``after`` for the next page; it is None on the last
        page. Jobs created while paging appear before the cursor, so pages never repeat
        or skip a job. Raises ``ValueError`` for a token this store did not issue.
        """
        if limit < 1:
            raise ValueError(f"listing jobs: limit must be at least 1, got {limit}")
        cursor = None if after is None else _parse_page_token(after)

        def run(conn: sqlite3.Connection) -> tuple[list[JobRecord], str | None]:
            sql = f"SELECT {_JOB_COLUMNS}"
            params: list[Any] = []
            if cursor is not None:
                sql += " WHERE (create_time_ms, job_id) < (?, ?)"
                params += cursor
            sql += " ORDER BY create_time_ms DESC, job_id DESC LIMIT ?"
            params.append(limit + 1)
            rows = conn.execute(sql, params).fetchall()
            records = [_job_record(row) for row in rows[:limit]]
            token = None
            if len(rows) > limit:
                last = records[-1]
                token = f"{last.create_time_ms}.{last.job.id}"
            return records, token

        return await self._read("listing jobs", run)

    async def update_job_state(
        self,
        job_id: str,
        new_state: JobState,
        *,
        message: str,
        now_ms: int,
        expected: set[JobState] | None = None,
    ) -> JobRecord:
        """Move a job to ``new_state`` and append the event, atomically (see
        ``queue_job_state``)."""
        return await self.committed(self.queue_job_state(
            job_id, new_state, message=message, now_ms=now_ms, expected=expected))

    def queue_job_state(
        self,
        job_id: str,
        new_state: JobState,
        *,
        message: str,
        now_ms: int,
        expected: set[JobState] | None = None,
    ) -> PendingWrite:
        """Queue moving a job to ``new_state`` and appending the event, atomically; writes
        queued one after another commit in that order. ``committed`` waits for it.

        Raises ``NotFound``; ``StateConflict`` if ``expected`` is given and the job's
        current state is not in it; ``protocol.errors.IllegalTransition`` if the job
        state machine forbids the move. Nothing changes when it raises.
        """
        new_state = JobState(new_state)
        what = f"updating job {job_id} to {new_state}"

        def run(conn: sqlite3.Connection) -> JobRecord:
            record = _get_job(conn, job_id)
            if record is None:
                raise NotFound(f"{what}: no such job")
            current = record.state
            if expected is not None and current not in expected:
                raise StateConflict(
                    f"{what}: job is {current}, expected {_names(expected)}", current=current
                )
            try:
                check_job_transition(current, new_state)
            except IllegalTransition as exc:
                raise IllegalTransition(f"{what}: {exc}") from None
            conn.execute(
                "UPDATE jobs SET state = ?, state_message = ?, modify_time_ms = ?,"
                " revision = revision + 1 WHERE job_id = ?",
                (new_state.value, message, now_ms, job_id),
            )
            _insert_event(conn, job_id, None, now_ms, JOB_STATE_UPDATE, current, new_state, message)
            return replace(
                record,
                state=new_state,
                state_message=message,
                modify_time_ms=now_ms,
                revision=record.revision + 1,
            )

        return self._enqueue(what, run)

    # --- executions -----------------------------------------------------------------

    async def create_execution(
        self,
        execution_id: str,
        job_id: str,
        node_id: str,
        *,
        now_ms: int,
        state: ExecutionState = ExecutionState.NEW,
    ) -> ExecutionRecord:
        """Store a new execution of a stored job on ``node_id``, and its first event.

        Raises ``NotFound`` if the job is not stored, ``AlreadyExists`` for a known ID.
        """
        return await self.committed(self.queue_create_execution(
            execution_id, job_id, node_id, now_ms=now_ms, state=state))

    def queue_create_execution(
        self,
        execution_id: str,
        job_id: str,
        node_id: str,
        *,
        now_ms: int,
        state: ExecutionState = ExecutionState.NEW,
    ) -> PendingWrite:
        """``create_execution``, queued (see ``queue_job_state``)."""
        state = ExecutionState(state)
        what = f"creating execution {execution_id} of job {job_id}"

        def run(conn: sqlite3.Connection) -> ExecutionRecord:
            if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is None:
                raise NotFound(f"{what}: no such job")
            try:
                conn.execute(
                    "INSERT INTO executions (execution_id, job_id, node_id, state, desired_state,"
                    " message, create_time_ms, modify_time_ms, revision)"
                    " VALUES (?, ?, ?, ?, ?, '', ?, ?, 1)",
                    (
                        execution_id,
                        job_id,
                        node_id,
                        state.value,
                        DesiredState.RUNNING.value,
                        now_ms,
                        now_ms,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"{what}: an execution with this ID already exists") from None
            _insert_event(
                conn, job_id, execution_id, now_ms, EXECUTION_STATE_UPDATE, None, state, "created"
            )
            return ExecutionRecord(
                execution_id,
                job_id,
                node_id,
                state,
                DesiredState.RUNNING,
                "",
                None,
                None,
                None,
                now_ms,
                now_ms,
                1,
            )

        return self._enqueue(what, run)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this ID, or None."""

        def run(conn: sqlite3.Connection) -> ExecutionRecord | None:
            return _get_execution(conn, execution_id)

        return await self._read(f"reading execution {execution_id}", run)

    async def list_executions(self, job_id: str) -> list[ExecutionRecord]:
        """A job's executions, oldest first."""

        def run(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            rows = conn.execute(
                f"SELECT {_EXECUTION_COLUMNS} WHERE job_id = ?"
                " ORDER BY create_time_ms, execution_id",
                (job_id,),
            ).fetchall()
            return [_execution_record(row) for row in rows]

        return await self._read(f"listing executions of job {job_id}", run)

    async def list_executions_on_node(
        self, node_id: str, states: set[ExecutionState] | None = None
    ) -> list[ExecutionRecord]:
        """Executions placed on ``node_id`` (only those in ``states``, if given), oldest first."""

        def run(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            sql = f"SELECT {_EXECUTION_COLUMNS} WHERE node_id = ?"
            params: list[Any] = [node_id]
            if states is not None:
                sql += f" AND state IN ({', '.join('?' * len(states))})"
                params += [ExecutionState(state).value for state in states]
            sql += " ORDER BY create_time_ms, execution_id"
            return [_execution_record(row) for row in conn.execute(sql, params)]

        return await self._read(f"listing executions on node {node_id}", run)

    async def jobs_in_states(self, states: set[JobState]) -> list[JobRecord]:
        """Jobs in any of ``states``, oldest first (e.g. those to resume after a restart)."""

        def run(conn: sqlite3.Connection) -> list[JobRecord]:
            sql = (f"SELECT {_JOB_COLUMNS} WHERE state IN ({', '.join('?' * len(states))})"
                   " ORDER BY create_time_ms, job_id")
            return [_job_record(row) for row in conn.execute(sql, [s.value for s in states])]

        return await self._read("listing jobs by state", run)

    async def check(self) -> None:
        """Raise ``StoreError`` unless the database answers a read."""
        await self._read("checking the store", lambda conn: conn.execute("SELECT 1").fetchone())

    async def count_by_state(self) -> tuple[dict[str, int], dict[str, int]]:
        """How many jobs, and how many executions, are in each state."""

        def run(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
            jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
            executions = dict(conn.execute(
                "SELECT state, COUNT(*) FROM executions GROUP BY state"))
            return jobs, executions

        return await self._read("counting jobs and executions", run)

    def queue_commitment(self, execution_id: str, seal: str, digest: str = "") -> PendingWrite:
        """Queue keeping a verified job's execution's seal (and, once revealed, its digest);
        its state is unchanged. Raises ``NotFound``."""
        what = f"recording the commitment of execution {execution_id}"

        def run(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE executions SET seal = ?, digest = ?, revision = revision + 1"
                " WHERE execution_id = ?", (seal, digest, execution_id))
            if cursor.rowcount != 1:
                raise NotFound(f"{what}: no such execution")

        return self._enqueue(what, run)

    _REPUTATION_FIELDS = ("agreements", "disagreements", "withheld", "failures", "timeouts")

    def queue_reputation(self, node_id: str, tallies: Mapping[str, int],
                         now_ms: int) -> PendingWrite:
        """Queue keeping a compute node's tallies (``node.core.reputation.Reputation``)."""
        values = [int(tallies.get(name, 0)) for name in self._REPUTATION_FIELDS]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO reputation (node_id, agreements, disagreements, withheld, failures,"
                " timeouts, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO"
                " UPDATE SET agreements = excluded.agreements, disagreements ="
                " excluded.disagreements, withheld = excluded.withheld, failures ="
                " excluded.failures, timeouts = excluded.timeouts, updated_ms ="
                " excluded.updated_ms", (node_id, *values, now_ms))

        return self._enqueue(f"recording the reputation of {node_id}", run)

    async def list_reputations(self) -> dict[str, dict[str, int]]:
        """Every compute node's tallies, by node ID."""
        def run(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            rows = conn.execute(
                f"SELECT node_id, {', '.join(self._REPUTATION_FIELDS)} FROM reputation")
            return {row["node_id"]: {name: row[name] for name in self._REPUTATION_FIELDS}
                    for row in rows}

        return await self._read("reading reputations", run)

    async def set_verdict(self, job_id: str, verdict: Mapping[str, Any],
                          envelope: bytes) -> None:
        """Keep a verified job's signed verdict (its body and wire bytes). Raises
        ``NotFound``."""
        what = f"recording the verdict on job {job_id}"

        def run(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE jobs SET verdict = ?, verdict_envelope = ?, revision = revision + 1"
                " WHERE job_id = ?", (_json(verdict), envelope, job_id))
            if cursor.rowcount != 1:
                raise NotFound(f"{what}: no such job")

        await self._write(what, run)

    async def update_execution(
        self,
        execution_id: str,
        new_state: ExecutionState,
        *,
        message: str,
        now_ms: int,
        expected: set[ExecutionState] | None = None,
        exit_code: int | None = None,
        run_output: Mapping[str, Any] | None = None,
        published: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> ExecutionRecord:
        """Move an execution to ``new_state`` and append the event, atomically (see
        ``queue_execution_state``)."""
        return await self.committed(self.queue_execution_state(
            execution_id, new_state, message=message, now_ms=now_ms, expected=expected,
            exit_code=exit_code, run_output=run_output, published=published,
            retryable=retryable))

    def queue_execution_state(
        self,
        execution_id: str,
        new_state: ExecutionState,
        *,
        message: str,
        now_ms: int,
        expected: set[ExecutionState] | None = None,
        exit_code: int | None = None,
        run_output: Mapping[str, Any] | None = None,
        published: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> PendingWrite:
        """Queue moving an execution to ``new_state`` and appending the event.

        ``exit_code``, ``run_output``, ``published`` and ``retryable`` are set when given
        and kept otherwise. Raises ``NotFound``, ``StateConflict`` (not in ``expected``) or
        ``IllegalTransition``, as ``update_job_state`` does.
        """
        new_state = ExecutionState(new_state)
        output_json = None if run_output is None else _json(run_output)
        published_json = None if published is None else _json(published)
        what = f"updating execution {execution_id} to {new_state}"

        def run(conn: sqlite3.Connection) -> ExecutionRecord:
            record = _get_execution(conn, execution_id)
            if record is None:
                raise NotFound(f"{what}: no such execution")
            current = record.state
            if expected is not None and current not in expected:
                raise StateConflict(
                    f"{what}: execution is {current}, expected {_names(expected)}",
                    current=current,
                )
            try:
                check_execution_transition(current, new_state)
            except IllegalTransition as exc:
                raise IllegalTransition(f"{what}: {exc}") from None
            conn.execute(
                "UPDATE executions SET state = ?, message = ?, modify_time_ms = ?,"
                " exit_code = coalesce(?, exit_code), run_output = coalesce(?, run_output),"
                " published = coalesce(?, published), retryable = coalesce(?, retryable),"
                " revision = revision + 1 WHERE execution_id = ?",
                (
                    new_state.value,
                    message,
                    now_ms,
                    exit_code,
                    output_json,
                    published_json,
                    None if retryable is None else int(retryable),
                    execution_id,
                ),
            )
            _insert_event(
                conn,
                record.job_id,
                execution_id,
                now_ms,
                EXECUTION_STATE_UPDATE,
                current,
                new_state,
                message,
            )
            return _get_execution(conn, execution_id)  # type: ignore[return-value]

        return self._enqueue(what, run)

    async def set_execution_desired_state(
        self, execution_id: str, desired: DesiredState, *, now_ms: int
    ) -> ExecutionRecord:
        """Record what should become of an execution ("Running" or "Stopped").

        Raises ``NotFound``; ``ValueError`` for any other desired state.
        """
        desired = DesiredState(desired)
        what = f"setting desired state of execution {execution_id} to {desired}"

        def run(conn: sqlite3.Connection) -> ExecutionRecord:
            record = _get_execution(conn, execution_id)
            if record is None:
                raise NotFound(f"{what}: no such execution")
            if record.desired_state == desired:
                return record
            conn.execute(
                "UPDATE executions SET desired_state = ?, modify_time_ms = ?,"
                " revision = revision + 1 WHERE execution_id = ?",
                (desired.value, now_ms, execution_id),
            )
            return replace(
                record, desired_state=desired, modify_time_ms=now_ms, revision=record.revision + 1
            )

        return await self._write(what, run)

    # --- events ---------------------------------------------------------------------

    async def add_event(
        self,
        job_id: str,
        *,
        now_ms: int,
        kind: str,
        message: str,
        execution_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an event that is not a state change to a stored job's history."""
        details_json = None if details is None else _json(details)

        def run(conn: sqlite3.Connection) -> Event:
            if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is None:
                raise NotFound(f"adding a {kind} event to job {job_id}: no such job")
            seq = _insert_event(
                conn, job_id, execution_id, now_ms, kind, None, None, message, details_json
            )
            return Event(
                seq,
                now_ms,
                job_id,
                execution_id,
                kind,
                None,
                None,
                message,
                _load_json(details_json),
            )

        return await self._write(f"adding a {kind} event to job {job_id}", run)

    async def history(self, job_id: str) -> list[Event]:
        """A job's events (its executions' included) in the order they happened."""

        def run(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, time_ms, job_id, execution_id, kind, previous_state, new_state,"
                " message, details FROM events WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
            return [
                Event(
                    row["seq"],
                    row["time_ms"],
                    row["job_id"],
                    row["execution_id"],
                    row["kind"],
                    row["previous_state"],
                    row["new_state"],
                    row["message"],
                    _load_json(row["details"]),
                )
                for row in rows
            ]

        return await self._read(f"reading the history of job {job_id}", run)

    # --- results --------------------------------------------------------------------

    async def put_result(self, record: ResultRecord, envelope_bytes: bytes, now_ms: int) -> bool:
        """Keep a verified result record with the envelope bytes it came in.

        Idempotent: the same bytes again change nothing and return False, and so does
        the same record sealed again (a new nonce); the first envelope is kept. A
        different record for an execution that has one raises ``ResultConflict``.
        The caller has verified the envelope and decoded ``record`` from it.
        """
        what = f"storing the result of execution {record.execution_id}"
        return await self._write(what, self._result_writer(what, record, envelope_bytes, now_ms))

    async def put_execution_result(self, record: ResultRecord, envelope_bytes: bytes,
                                   now_ms: int) -> bool:
        """``put_result`` for one of this requester's executions, in one transaction: kept
        only if the execution is stored and ran on the record's node (False otherwise),
        and the first one also records where the execution's results were published."""
        what = f"storing the result of execution {record.execution_id}"
        put = self._result_writer(what, record, envelope_bytes, now_ms)

        def run(conn: sqlite3.Connection) -> bool:
            execution = conn.execute(
                "SELECT node_id, published FROM executions WHERE execution_id = ?",
                (record.execution_id,)).fetchone()
            if execution is None or execution["node_id"] != record.node_id:
                return False
            if not put(conn):
                return False
            if execution["published"] is None:
                # Where results went is data, not a state change.
                conn.execute(
                    "UPDATE executions SET published = ?, revision = revision + 1"
                    " WHERE execution_id = ?", (_json(dict(record.published)), record.execution_id))
            return True

        return await self._write(what, run)

    @staticmethod
    def _result_writer(what: str, record: ResultRecord, envelope_bytes: bytes,
                       now_ms: int) -> Callable[[sqlite3.Connection], bool]:
        envelope_bytes = bytes(envelope_bytes)
        body = _json(record.to_body())

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT record, envelope FROM results WHERE execution_id = ?",
                (record.execution_id,),
            ).fetchone()
            if row is not None:
                if bytes(row["envelope"]) == envelope_bytes or row["record"] == body:
                    return False
                raise ResultConflict(f"{what}: a different result is already stored")
            conn.execute(
                "INSERT INTO results (execution_id, job_id, node_id, record, envelope,"
                " received_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (record.execution_id, record.job_id, record.node_id, body, envelope_bytes, now_ms),
            )
            return True

        return run

    async def get_result(self, execution_id: str) -> tuple[ResultRecord, bytes] | None:
        """The result record of an execution and its envelope bytes, or None."""

        def run(conn: sqlite3.Connection) -> tuple[ResultRecord, bytes] | None:
            row = conn.execute(
                "SELECT execution_id, record, envelope FROM results WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
            return None if row is None else _result(row)

        return await self._read(f"reading the result of execution {execution_id}", run)

    async def list_results(self, job_id: str) -> list[tuple[ResultRecord, bytes]]:
        """A job's result records and their envelope bytes, in the order received."""

        def run(conn: sqlite3.Connection) -> list[tuple[ResultRecord, bytes]]:
            rows = conn.execute(
                "SELECT execution_id, record, envelope FROM results WHERE job_id = ?"
                " ORDER BY received_ms, execution_id",
                (job_id,),
            ).fetchall()
            return [_result(row) for row in rows]

        return await self._read(f"listing the results of job {job_id}", run)

    # --- counters -------------------------------------------------------------------

    async def increment_counter(self, name: str, by: int = 1) -> int:
        """Add ``by`` to a persistent counter (created at 0); return its new value.

        Each call is one durable commit: count in memory and flush now and then.
        """

        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
                " RETURNING value",
                (name, by),
            ).fetchone()
            return int(row[0])

        return await self._write(f"incrementing counter {name}", run)

    async def counters(self) -> dict[str, int]:
        """Every counter's value, by name."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return {row[0]: row[1] for row in conn.execute("SELECT name, value FROM counters")}

        return await self._read("reading counters", run)

    # --- IPFS pins ------------------------------------------------------------------

    async def pin(self, cid: str, reason: str, now_ms: int, expires_ms: int | None) -> None:
        """Keep the DAG under ``cid`` until ``expires_ms`` (None: until unpinned).

        Pinning again keeps the later expiry, so a shorter retention never cuts one short.
        """

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO pins (cid, reason, created_ms, expires_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (cid) DO UPDATE SET expires_ms = CASE"
                "   WHEN pins.expires_ms IS NULL OR excluded.expires_ms IS NULL THEN NULL"
                "   ELSE max(pins.expires_ms, excluded.expires_ms) END",
                (cid, reason, now_ms, expires_ms),
            )

        await self._write(f"pinning {cid}", run)

    async def live_pins(self, now_ms: int) -> list[str]:
        """CIDs pinned and not expired at ``now_ms``; expired pins are deleted."""

        def run(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "DELETE FROM pins WHERE expires_ms IS NOT NULL AND expires_ms <= ?", (now_ms,)
            )
            return [row[0] for row in conn.execute("SELECT cid FROM pins ORDER BY cid")]

        return await self._write("listing pins", run)

    # --- outbox -----------------------------------------------------------------------

    async def outbox_add(self, peer: str, message: bytes, now_ms: int) -> int:
        """Owe ``message`` to ``peer`` until it acknowledges it; returns its place."""

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO outbox (peer, message, created_ms) VALUES (?, ?, ?)",
                (peer, message, now_ms))
            return int(cursor.lastrowid or 0)

        return await self._write("queueing a message", run)

    async def outbox_pending(self, limit: int = 1000) -> list[tuple[int, str, bytes, int]]:
        """What is still owed, oldest first: ``(seq, peer, message, created_ms)``."""

        def run(conn: sqlite3.Connection) -> list[tuple[int, str, bytes, int]]:
            rows = conn.execute(
                "SELECT seq, peer, message, created_ms FROM outbox ORDER BY seq LIMIT ?",
                (limit,)).fetchall()
            return [(row["seq"], row["peer"], bytes(row["message"]), row["created_ms"])
                    for row in rows]

        return await self._read("reading the outbox", run)

    async def outbox_remove(self, seq: int) -> None:
        await self._write("clearing a delivered message",
                          lambda conn: conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,)))


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str], *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> AsyncIterator[Store]:
    """Open (creating and migrating if needed) the store at ``path``; close it on exit.

    Raises ``StoreError`` if ``path`` is not a bacnode SQLite database, or has a
    schema newer than this code understands (nothing is written to it then).
    """
    conn = await trio.to_thread.run_sync(connect, Path(path), busy_timeout_ms)
    store = Store(conn, Path(path))
    try:
        yield store
    finally:
        # Shielded: a daemon shutting down under cancellation must still close cleanly.
        with trio.CancelScope(shield=True):
            await store.aclose()
