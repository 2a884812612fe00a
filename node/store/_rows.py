"""Reading rows into records, and small helpers (all run in the worker thread)."""

from __future__ import annotations

import collections
import json
import sqlite3
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from protocol import codec
from protocol.errors import ProtocolError
from protocol.jobspec import Job
from protocol.messages import NodeInfo, ResultRecord
from protocol.states import (
    ExecutionState,
    JobState,
)

from .errors import StoreError
from .records import (
    DesiredState,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
)

_NODE_COLUMNS = "info, first_seen_ms, last_seen_ms FROM nodes"
_JOB_COLUMNS = (
    "job_id, spec, state, state_message, requester, create_time_ms, modify_time_ms, revision,"
    " verdict FROM jobs"
)
_EXECUTION_COLUMNS = (
    "execution_id, job_id, node_id, state, desired_state, message, exit_code, run_output,"
    " published, create_time_ms, modify_time_ms, revision, retryable, seal, digest"
    " FROM executions"
)


#: A heartbeat's row: a stale ``seq`` (an old message arriving late) changes nothing, an
#: equal one is taken (a re-delivery), and ``first_seen_ms`` stays the first one's.
_UPSERT_NODE = """
    INSERT INTO nodes (node_id, seq, info, first_seen_ms, last_seen_ms)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (node_id) DO UPDATE SET
        seq = excluded.seq,
        info = excluded.info,
        last_seen_ms = max(nodes.last_seen_ms, excluded.last_seen_ms)
    WHERE excluded.seq >= nodes.seq
"""


def _node_row(info: NodeInfo, seen_ms: int) -> tuple[str, int, bytes, int, int]:
    """``_UPSERT_NODE``'s parameters (encoded here, on the caller's side of the thread)."""
    return (info.node_id, info.seq, codec.encode(info.to_body()), seen_ms, seen_ms)


def _node_record(row: sqlite3.Row) -> NodeRecord:
    try:
        body = codec.decode(bytes(row["info"]))
        if isinstance(body, dict):
            body.setdefault("started_ms", 0)  # heartbeats stored before nodes sent it
        info = NodeInfo.from_body(body)
    except ProtocolError as exc:
        raise StoreError(f"reading a stored node: it no longer decodes: {exc}") from None
    return NodeRecord(info, row["first_seen_ms"], row["last_seen_ms"])


def _get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else _job_record(row)


#: Parsed specs by job ID: a job's spec never changes once stored, and listing jobs would
#: otherwise validate every spec again on every read.
_PARSED_SPECS: collections.OrderedDict[str, Job] = collections.OrderedDict()
_PARSED_SPECS_MAX = 4096


def _remember_parsed(job: Job) -> None:
    """Keep ``job`` as the parsed spec of its ID: the job a requester just stored is the one
    the next listing would otherwise parse again from its row (85-95 µs a job, on a worker
    thread holding the GIL the event loop needs; a burst of jobs is listed as it runs)."""
    assert job.id is not None
    _PARSED_SPECS[job.id] = job
    if len(_PARSED_SPECS) > _PARSED_SPECS_MAX:
        _PARSED_SPECS.popitem(last=False)


def _job_record(row: sqlite3.Row) -> JobRecord:
    job_id = row["job_id"]
    job = _PARSED_SPECS.get(job_id)
    if job is None:
        try:
            job = Job.from_dict(json.loads(row["spec"]))
        except ProtocolError as exc:
            raise StoreError(
                f"reading job {job_id}: its stored spec no longer validates: {exc}"
            ) from None
        _remember_parsed(job)
    return JobRecord(
        job=job,
        state=JobState(row["state"]),
        state_message=row["state_message"],
        requester=row["requester"],
        create_time_ms=row["create_time_ms"],
        modify_time_ms=row["modify_time_ms"],
        revision=row["revision"],
        verdict=_load_json(row["verdict"]),
    )


def _get_execution(conn: sqlite3.Connection, execution_id: str) -> ExecutionRecord | None:
    row = conn.execute(
        f"SELECT {_EXECUTION_COLUMNS} WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else _execution_record(row)


def _execution_record(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=row["execution_id"],
        job_id=row["job_id"],
        node_id=row["node_id"],
        state=ExecutionState(row["state"]),
        desired_state=DesiredState(row["desired_state"]),
        message=row["message"],
        exit_code=row["exit_code"],
        run_output=_load_json(row["run_output"]),
        published=_load_json(row["published"]),
        create_time_ms=row["create_time_ms"],
        modify_time_ms=row["modify_time_ms"],
        revision=row["revision"],
        retryable=bool(row["retryable"]),
        seal=row["seal"],
        digest=row["digest"],
    )


def _result(row: sqlite3.Row) -> tuple[ResultRecord, bytes]:
    try:
        record = ResultRecord.from_body(json.loads(row["record"]))
    except ProtocolError as exc:
        raise StoreError(
            f"reading the result of execution {row['execution_id']}: it no longer validates: {exc}"
        ) from None
    return record, bytes(row["envelope"])


def _insert_event(
    conn: sqlite3.Connection,
    job_id: str,
    execution_id: str | None,
    now_ms: int,
    kind: str,
    previous_state: str | None,
    new_state: str | None,
    message: str,
    details_json: str | None = None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO events (job_id, execution_id, time_ms, kind, previous_state, new_state,"
        " message, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            execution_id,
            now_ms,
            kind,
            None if previous_state is None else str(previous_state),
            None if new_state is None else str(new_state),
            message,
            details_json,
        ),
    )
    return int(cursor.lastrowid or 0)


# --- small helpers ------------------------------------------------------------------


def _json(value: Mapping[str, Any]) -> str:
    """JSON text for a column; raises ``ValueError``/``TypeError`` before any I/O."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _names(states: Iterable[StrEnum]) -> str:
    return " or ".join(sorted(state.value for state in states)) or "(nothing)"


def _parse_page_token(token: str) -> tuple[int, str]:
    create_time, _, job_id = token.partition(".")
    if create_time.lstrip("-").isdigit() and job_id:
        return int(create_time), job_id
    raise ValueError(f"listing jobs: {token!r:.80} is not a page token")


def _prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``, if any.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so the bound
    is ``prefix`` with its last character incremented. A range keeps the index in use,
    and, unlike LIKE or GLOB, gives ``%``, ``_``, ``*`` in a prefix no special meaning.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates cannot be stored as UTF-8
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
