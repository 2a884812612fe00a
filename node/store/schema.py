"""The schema as migrations, and opening (creating, checking, migrating) the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from .errors import StoreError

T = TypeVar("T")

#: How long a write waits for another process holding the write lock.
DEFAULT_BUSY_TIMEOUT_MS = 5000


# The schema, as an ordered list of migrations: migration i (0-based) takes the database
# from schema version i to i + 1. Append only; never edit one that has shipped. Each runs
# in one transaction together with the version bump, so a failed migration leaves the
# database as it was.
MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE nodes (
        node_id       TEXT PRIMARY KEY,
        seq           INTEGER NOT NULL,
        info          BLOB NOT NULL,      -- NodeInfo body, canonical msgpack
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE jobs (
        job_id         TEXT PRIMARY KEY,
        spec           TEXT NOT NULL CHECK (json_valid(spec)),  -- Job.to_dict()
        state          TEXT NOT NULL,
        state_message  TEXT NOT NULL,
        requester      TEXT NOT NULL,
        create_time_ms INTEGER NOT NULL,
        modify_time_ms INTEGER NOT NULL,
        revision       INTEGER NOT NULL
    );
    -- list_jobs pages newest first by (create_time_ms, job_id).
    CREATE INDEX jobs_by_create_time ON jobs (create_time_ms, job_id);

    CREATE TABLE executions (
        execution_id   TEXT PRIMARY KEY,
        job_id         TEXT NOT NULL REFERENCES jobs (job_id),
        node_id        TEXT NOT NULL,
        state          TEXT NOT NULL,
        desired_state  TEXT NOT NULL CHECK (desired_state IN ('Running', 'Stopped')),
        message        TEXT NOT NULL,
        exit_code      INTEGER,
        run_output     TEXT CHECK (run_output IS NULL OR json_valid(run_output)),
        published      TEXT CHECK (published IS NULL OR json_valid(published)),
        create_time_ms INTEGER NOT NULL,
        modify_time_ms INTEGER NOT NULL,
        revision       INTEGER NOT NULL
    );
    CREATE INDEX executions_by_job ON executions (job_id, create_time_ms);
    CREATE INDEX executions_by_node ON executions (node_id, state);

    CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        job_id         TEXT NOT NULL REFERENCES jobs (job_id),
        execution_id   TEXT REFERENCES executions (execution_id),
        time_ms        INTEGER NOT NULL,
        kind           TEXT NOT NULL,
        previous_state TEXT,
        new_state      TEXT,
        message        TEXT NOT NULL,
        details        TEXT CHECK (details IS NULL OR json_valid(details))
    );
    CREATE INDEX events_by_job ON events (job_id, seq);

    -- Results arrive by gossip and are kept whether or not this node holds the job.
    CREATE TABLE results (
        execution_id TEXT PRIMARY KEY,
        job_id       TEXT NOT NULL,
        node_id      TEXT NOT NULL,
        record       TEXT NOT NULL CHECK (json_valid(record)),  -- ResultRecord.to_body()
        envelope     BLOB NOT NULL,                            -- the signed wire bytes
        received_ms  INTEGER NOT NULL
    );
    CREATE INDEX results_by_job ON results (job_id, received_ms);

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: IPFS roots whose blocks garbage collection keeps.
    """
    CREATE TABLE pins (
        cid        TEXT PRIMARY KEY,
        reason     TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER            -- NULL: kept until unpinned
    ) WITHOUT ROWID;
    """,
    # 3: messages a compute node owes a requester (updates, results) until it acknowledges
    # them; kept across restarts, sent again in order.
    """
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        peer       TEXT NOT NULL,
        message    BLOB NOT NULL,     -- protocol.messages.pack_message, sealed anew per try
        created_ms INTEGER NOT NULL
    );
    """,
    # 4: whether a failed execution is to be placed again: a field, not a phrase in the message.
    """
    ALTER TABLE executions ADD COLUMN retryable INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: verified jobs: an execution's commitment and the digest its reveal opened it
    # with, and the job's signed verdict (protocol.messages.Verdict body and envelope).
    """
    ALTER TABLE executions ADD COLUMN seal TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN digest TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN verdict TEXT CHECK (verdict IS NULL OR json_valid(verdict));
    ALTER TABLE jobs ADD COLUMN verdict_envelope BLOB;
    """,
    # 6: what this node, as a requester, remembers of each compute node (node.core.reputation).
    """
    CREATE TABLE reputation (
        node_id       TEXT PRIMARY KEY,
        agreements    INTEGER NOT NULL,
        disagreements INTEGER NOT NULL,
        withheld      INTEGER NOT NULL,
        failures      INTEGER NOT NULL,
        timeouts      INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
]


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open the database file, check it is ours, set it up and migrate it."""
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # worker threads take turns, under the limiter
            timeout=busy_timeout_ms / 1000,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"opening {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        # Read-only checks first: a file that is not ours is refused before anything
        # (even the journal mode, which is stored in the file) is changed in it.
        try:
            _schema_version(conn, path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"opening {path}: not a bacnode state database (not SQLite, or corrupt): {exc}"
            ) from exc
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"opening {path}: could not switch to WAL mode (got {mode!r})")
        # FULL: fsync the WAL at every commit, so acknowledged writes survive power loss
        # (NORMAL survives a crashed process but may lose the last commits on power loss).
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA fullfsync=ON")  # macOS: fsync alone does not flush the disk
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _transaction(conn, lambda conn: _migrate(conn, path))
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"opening {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The database's schema version (0 if empty); raises ``StoreError`` if it is not ours.

    Refuses a database with tables but no ``meta`` table (another program's), and one
    newer than the migrations this code knows.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables:
            raise StoreError(
                f"opening {path}: an SQLite database, but not a bacnode state database "
                f"(it has tables {', '.join(sorted(tables))} and no meta table)"
            )
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"opening {path}: meta table has no valid schema_version") from None
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}; this bacnode understands up to "
            f"{len(MIGRATIONS)} — upgrade bacnode"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the database lacks; run inside one transaction."""
    # Checked again under the write lock: another process may have migrated meanwhile.
    version = _schema_version(conn, path)
    if version == len(MIGRATIONS):
        return
    if version == 0:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '0')")
    for script in MIGRATIONS[version:]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(len(MIGRATIONS)),))


def _statements(script: str) -> Iterable[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    start = 0
    for end, char in enumerate(script, 1):
        # A ';' ends a statement unless it is inside a string, comment or trigger body.
        if char == ";" and sqlite3.complete_statement(script[start:end]):
            yield script[start:end]
            start = end
    if script[start:].strip():
        yield script[start:]  # an unterminated last statement: let SQLite report it


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled back; the original error matters
        raise
    return result


