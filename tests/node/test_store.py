"""The daemon's store: durability, compare-and-set, paging, migrations, and no blocking."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import node.store._rows as store_rows
import node.store.schema as store_module
from node.store import (
    EXECUTION_STATE_UPDATE,
    JOB_STATE_UPDATE,
    AlreadyExists,
    DesiredState,
    NotFound,
    ResultConflict,
    StateConflict,
    StoreError,
    open_store,
)
from protocol import codec
from protocol.errors import IllegalTransition
from protocol.identity import NodeKey
from protocol.jobspec import Job
from protocol.messages import Capacity, ManifestEntry, NodeInfo, ResultRecord, seal_message
from protocol.states import JOB_TRANSITIONS, ExecutionState, JobState

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = 1_780_000_000_000
#: kubo's CID of an empty directory
EMPTY_DIR_CID = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
KEYS = [NodeKey(bytes([i]) * 32) for i in range(1, 4)]
REQUESTER = KEYS[0].peer_id
COMPUTE = KEYS[1].peer_id

TEMPLATE = Job.from_dict(
    {
        "Name": "hello",
        "Type": "batch",
        "Tasks": [
            {
                "Name": "main",
                "Engine": {"Type": "docker", "Params": {"Image": "busybox", "Entrypoint": ["ls"]}},
            }
        ],
    }
)


def new_job(job_id: str | None = None) -> Job:
    return dataclasses.replace(TEMPLATE, id=job_id or f"j-{uuid.uuid4()}")


def new_execution_id() -> str:
    return f"e-{uuid.uuid4()}"


def node_info(key: NodeKey, seq: int, version: str = "0.1.0") -> NodeInfo:
    capacity = Capacity(cpu_milli=2000, memory=4 << 30, disk=100 << 30, gpu=0)
    return NodeInfo(
        node_id=key.peer_id,
        version=version,
        addresses=("/ip4/127.0.0.1/tcp/4001",),
        labels={"zone": "a"},
        roles=("compute",),
        engines=("docker",),
        storages=("s3", "inline"),
        publishers=("ipfs",),
        total=capacity,
        free=capacity,
        running_executions=0,
        seq=seq,
        started_ms=1_780_000_000_000,
    )


def result_record(job_id: str, execution_id: str, exit_code: int = 0) -> ResultRecord:
    return ResultRecord(
        job_id=job_id,
        execution_id=execution_id,
        node_id=COMPUTE,
        exit_code=exit_code,
        stdout_sha256="ab" * 32,
        stderr_sha256="cd" * 32,
        outputs=(ManifestEntry("outputs/a.txt", 3, "ef" * 32),),
        published={"StorageSource": "Local", "Name": "/var/lib/bacnode/results/x"},
        completed_at_ms=NOW,
    )


@pytest.fixture
async def store(tmp_path):
    async with open_store(tmp_path / "state.db") as opened:
        yield opened


# --- persistence and schema ----------------------------------------------------------


async def test_everything_survives_close_and_reopen(tmp_path):
    path = tmp_path / "state.db"
    job = new_job()
    execution_id = new_execution_id()
    record = result_record(job.id, execution_id)
    envelope = seal_message(KEYS[1], record, now_ms=NOW)
    async with open_store(path) as store:
        await store.upsert_node(node_info(KEYS[1], seq=3), seen_ms=NOW)
        await store.create_job(job, requester=REQUESTER, now_ms=NOW)
        await store.update_job_state(job.id, JobState.QUEUED, message="waiting", now_ms=NOW + 1)
        await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW + 2)
        await store.update_execution(
            execution_id, ExecutionState.ASK_FOR_BID, message="asked", now_ms=NOW + 3
        )
        await store.add_event(
            job.id, now_ms=NOW + 4, kind="Note", message="hi", details={"peers": 3}
        )
        await store.put_result(record, envelope, now_ms=NOW + 5)
        await store.increment_counter("dropped.bad_signature", by=2)
        before = (
            await store.get_job(job.id),
            await store.get_execution(execution_id),
            await store.history(job.id),
            await store.list_nodes(),
            await store.get_result(execution_id),
            await store.counters(),
        )

    async with open_store(path) as store:
        after = (
            await store.get_job(job.id),
            await store.get_execution(execution_id),
            await store.history(job.id),
            await store.list_nodes(),
            await store.get_result(execution_id),
            await store.counters(),
        )
    assert after == before
    job_record, execution, history, nodes, (stored_record, stored_envelope), counters = after
    assert job_record.job == job
    assert job_record.state == JobState.QUEUED
    assert job_record.state_message == "waiting"
    assert job_record.requester == REQUESTER
    assert job_record.revision == 2
    assert execution.state == ExecutionState.ASK_FOR_BID
    assert [node.info for node in nodes] == [node_info(KEYS[1], seq=3)]
    assert (stored_record, stored_envelope) == (record, envelope)
    assert counters == {"dropped.bad_signature": 2}
    assert history[-1].details == {"peers": 3}


async def test_schema_version_is_recorded_and_wal_is_on(tmp_path):
    path = tmp_path / "state.db"
    async with open_store(path):
        pass
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    assert version == (str(len(store_module.MIGRATIONS)),)
    assert mode == ("wal",)


async def test_a_database_from_a_newer_bacnode_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "state.db"
    async with open_store(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()

    with pytest.raises(StoreError) as info:
        async with open_store(path):
            pass
    known = len(store_module.MIGRATIONS)
    message = str(info.value)
    assert "state.db has schema version 99" in message
    assert f"understands up to {known}" in message
    assert "upgrade bacnode" in message
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchall() == [("99",)]
    conn.close()


async def test_a_garbage_file_is_refused_naming_the_path(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreError, match="not a bacnode state database") as info:
        async with open_store(path):
            pass
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"this is not a database\n" * 200


async def test_another_programs_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="not a bacnode state database") as info:
        async with open_store(path):
            pass
    assert "photos" in str(info.value)
    with sqlite3.connect(path) as conn:  # refused before anything was changed in it
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["photos"]
    conn.close()


async def test_a_missing_directory_is_reported_with_the_path(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "state.db"
    with pytest.raises(StoreError) as info:
        async with open_store(path):
            pass
    assert str(path) in str(info.value)


async def test_new_migrations_are_applied_in_order_on_open(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    job = new_job()
    async with open_store(path) as store:
        await store.create_job(job, requester=REQUESTER, now_ms=NOW)

    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        [
            *store_module.MIGRATIONS,
            "CREATE TABLE extra (x INTEGER);",
            "ALTER TABLE extra ADD COLUMN y TEXT; INSERT INTO extra (x, y) VALUES (1, 'two');",
        ],
    )
    async with open_store(path) as store:
        assert (await store.get_job(job.id)).job == job
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x, y FROM extra").fetchall() == [(1, "two")]
        version = conn.execute("SELECT value FROM meta").fetchone()[0]
    conn.close()
    assert version == str(len(store_module.MIGRATIONS))


async def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    async with open_store(path):
        pass
    original = len(store_module.MIGRATIONS)
    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        [*store_module.MIGRATIONS, "CREATE TABLE extra (x INTEGER);\nTHIS IS NOT SQL;"],
    )
    with pytest.raises(StoreError, match="syntax error"):
        async with open_store(path):
            pass
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT value FROM meta").fetchone()[0]
    conn.close()
    assert "extra" not in tables
    assert version == str(original)


async def test_a_closed_store_refuses_calls(tmp_path):
    async with open_store(tmp_path / "state.db") as store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await store.get_job("j-0")


# --- compare-and-set and the state machines ------------------------------------------


async def test_two_racing_updates_with_the_same_expectation_cannot_both_win(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    # Both moves are legal from Pending, and Queued -> Running is legal too: without the
    # compare-and-set, both would succeed one after the other.
    outcomes: dict[JobState, object] = {}

    async def attempt(target: JobState) -> None:
        try:
            outcomes[target] = await store.update_job_state(
                job.id, target, message=f"to {target}", now_ms=NOW + 1, expected={JobState.PENDING}
            )
        except StateConflict as exc:
            outcomes[target] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, JobState.QUEUED)
        nursery.start_soon(attempt, JobState.RUNNING)

    winners = [o for o in outcomes.values() if not isinstance(o, StateConflict)]
    losers = [o for o in outcomes.values() if isinstance(o, StateConflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].current == winners[0].state
    stored = await store.get_job(job.id)
    assert stored.state == winners[0].state
    assert stored.revision == 2
    assert len(await store.history(job.id)) == 2  # created + the one winner


async def test_two_processes_racing_on_one_job_cannot_both_win(tmp_path):
    # Two connections (as two processes would have) really run at the same time, each
    # in its own thread; BEGIN IMMEDIATE is what keeps their read-check-write atomic.
    path = tmp_path / "state.db"
    jobs = [new_job() for _ in range(30)]
    async with open_store(path) as first, open_store(path) as second:
        for job in jobs:
            await first.create_job(job, requester=REQUESTER, now_ms=NOW)
        results: list[tuple[str, str]] = []

        async def attempt(store, job_id: str, target: JobState) -> None:
            try:
                await store.update_job_state(
                    job_id, target, message="", now_ms=NOW + 1, expected={JobState.PENDING}
                )
                results.append((job_id, "won"))
            except StateConflict:
                results.append((job_id, "lost"))

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(attempt, first, job.id, JobState.QUEUED)
                nursery.start_soon(attempt, second, job.id, JobState.RUNNING)

    for job in jobs:
        assert sorted(outcome for job_id, outcome in results if job_id == job.id) == [
            "lost",
            "won",
        ]


async def test_illegal_transitions_raise_and_change_nothing(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    with pytest.raises(IllegalTransition, match=f"updating job {job.id}.*Pending to Completed"):
        await store.update_job_state(job.id, JobState.COMPLETED, message="", now_ms=NOW)
    await store.update_job_state(job.id, JobState.STOPPED, message="user stop", now_ms=NOW + 1)
    with pytest.raises(IllegalTransition, match="final state"):
        await store.update_job_state(job.id, JobState.RUNNING, message="", now_ms=NOW + 2)

    stored = await store.get_job(job.id)
    assert (stored.state, stored.state_message, stored.revision) == (
        JobState.STOPPED,
        "user stop",
        2,
    )
    assert len(await store.history(job.id)) == 2

    execution_id = new_execution_id()
    await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW)
    with pytest.raises(IllegalTransition, match=f"updating execution {execution_id}"):
        await store.update_execution(
            execution_id, ExecutionState.COMPLETED, message="", now_ms=NOW, exit_code=0
        )
    assert (await store.get_execution(execution_id)).exit_code is None


async def test_updating_what_does_not_exist_says_what_was_missing(store):
    missing = f"j-{uuid.uuid4()}"
    with pytest.raises(NotFound, match=f"updating job {missing} to Queued: no such job"):
        await store.update_job_state(missing, JobState.QUEUED, message="", now_ms=NOW)
    with pytest.raises(NotFound, match=f"job {missing}: no such job"):
        await store.create_execution(new_execution_id(), missing, COMPUTE, now_ms=NOW)
    with pytest.raises(NotFound, match="no such execution"):
        await store.update_execution(
            new_execution_id(), ExecutionState.ASK_FOR_BID, message="", now_ms=NOW
        )


async def test_creating_a_job_twice_is_refused(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    with pytest.raises(AlreadyExists, match=f"creating job {job.id}"):
        await store.create_job(job, requester=REQUESTER, now_ms=NOW + 1)
    assert (await store.get_job(job.id)).create_time_ms == NOW


async def test_history_lists_job_and_execution_transitions_in_order(store):
    job = new_job()
    execution_id = new_execution_id()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    await store.update_job_state(job.id, JobState.QUEUED, message="asking", now_ms=NOW + 1)
    await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW + 2)
    for i, state in enumerate(
        [
            ExecutionState.ASK_FOR_BID,
            ExecutionState.BID_ACCEPTED,
            ExecutionState.RUNNING,
        ]
    ):
        await store.update_execution(execution_id, state, message=str(state), now_ms=NOW + 3 + i)
    await store.update_job_state(job.id, JobState.RUNNING, message="running", now_ms=NOW + 6)
    await store.update_execution(
        execution_id,
        ExecutionState.PUBLISHING,
        message="publishing",
        now_ms=NOW + 7,
        expected={ExecutionState.RUNNING},
        exit_code=0,
        run_output={"stdout": "hi\n", "stdout_truncated": False},
    )
    await store.update_execution(
        execution_id,
        ExecutionState.COMPLETED,
        message="done",
        now_ms=NOW + 8,
        published={"StorageSource": "IPFS", "CID": EMPTY_DIR_CID},
    )
    await store.update_job_state(job.id, JobState.COMPLETED, message="done", now_ms=NOW + 9)

    history = await store.history(job.id)
    assert [(e.kind, e.execution_id, e.previous_state, e.new_state) for e in history] == [
        (JOB_STATE_UPDATE, None, None, "Pending"),
        (JOB_STATE_UPDATE, None, "Pending", "Queued"),
        (EXECUTION_STATE_UPDATE, execution_id, None, "New"),
        (EXECUTION_STATE_UPDATE, execution_id, "New", "AskForBid"),
        (EXECUTION_STATE_UPDATE, execution_id, "AskForBid", "BidAccepted"),
        (EXECUTION_STATE_UPDATE, execution_id, "BidAccepted", "Running"),
        (JOB_STATE_UPDATE, None, "Queued", "Running"),
        (EXECUTION_STATE_UPDATE, execution_id, "Running", "Publishing"),
        (EXECUTION_STATE_UPDATE, execution_id, "Publishing", "Completed"),
        (JOB_STATE_UPDATE, None, "Running", "Completed"),
    ]
    assert [e.time_ms for e in history] == sorted(e.time_ms for e in history)
    assert [e.seq for e in history] == sorted({e.seq for e in history})
    assert history[-1].message == "done"

    execution = await store.get_execution(execution_id)
    # exit_code and run_output were set at Publishing and kept when Completed came.
    assert execution.exit_code == 0
    assert execution.run_output == {"stdout": "hi\n", "stdout_truncated": False}
    assert execution.published == {"StorageSource": "IPFS", "CID": EMPTY_DIR_CID}
    assert execution.revision == 6


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(list(JobState)),
            st.none() | st.sets(st.sampled_from(list(JobState)), min_size=1),
        ),
        max_size=8,
    )
)
async def test_job_state_and_history_follow_the_state_machine(steps):
    with tempfile.TemporaryDirectory() as directory:
        async with open_store(Path(directory) / "state.db") as store:
            job = new_job()
            await store.create_job(job, requester=REQUESTER, now_ms=NOW)
            state, transitions = JobState.PENDING, [(None, "Pending")]
            for i, (target, expected) in enumerate(steps):
                if expected is not None and state not in expected:
                    with pytest.raises(StateConflict):
                        await store.update_job_state(
                            job.id, target, message="", now_ms=NOW + i, expected=expected
                        )
                elif target not in JOB_TRANSITIONS[state]:
                    with pytest.raises(IllegalTransition):
                        await store.update_job_state(
                            job.id, target, message="", now_ms=NOW + i, expected=expected
                        )
                else:
                    await store.update_job_state(
                        job.id, target, message="", now_ms=NOW + i, expected=expected
                    )
                    transitions.append((state.value, target.value))
                    state = target
            stored = await store.get_job(job.id)
            history = await store.history(job.id)
    assert stored.state == state
    assert stored.revision == len(transitions)
    assert [(e.previous_state, e.new_state) for e in history] == transitions


async def test_executions_by_job_and_by_node(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    first, second, elsewhere = new_execution_id(), new_execution_id(), new_execution_id()
    await store.create_execution(first, job.id, COMPUTE, now_ms=NOW)
    await store.create_execution(second, job.id, COMPUTE, now_ms=NOW + 1)
    await store.create_execution(elsewhere, job.id, KEYS[2].peer_id, now_ms=NOW + 2)
    await store.update_execution(first, ExecutionState.FAILED, message="no bid", now_ms=NOW + 3)

    assert [e.execution_id for e in await store.list_executions(job.id)] == [
        first,
        second,
        elsewhere,
    ]
    on_node = await store.list_executions_on_node(COMPUTE)
    assert [e.execution_id for e in on_node] == [first, second]
    live = await store.list_executions_on_node(COMPUTE, {ExecutionState.NEW})
    assert [e.execution_id for e in live] == [second]

    stopped = await store.set_execution_desired_state(second, DesiredState.STOPPED, now_ms=NOW + 4)
    assert stopped.desired_state == "Stopped"
    assert (await store.get_execution(second)) == stopped
    with pytest.raises(AlreadyExists):
        await store.create_execution(second, job.id, COMPUTE, now_ms=NOW + 5)
    with pytest.raises(ValueError):
        await store.set_execution_desired_state(second, "Paused", now_ms=NOW + 6)


# --- listing and lookup ---------------------------------------------------------------


async def test_paging_over_25_jobs_gives_10_10_5_newest_first(store):
    jobs = []
    for i in range(25):
        job = new_job()
        # Several jobs share a create time, so the ID must break ties.
        await store.create_job(job, requester=REQUESTER, now_ms=NOW + i // 3)
        jobs.append((NOW + i // 3, job.id))
    newest_first = [job_id for _, job_id in sorted(jobs, reverse=True)]

    pages, token = [], None
    while True:
        page, token = await store.list_jobs(10, after=token)
        pages.append([record.job.id for record in page])
        if token is None:
            break
        # A job created between pages is newer than the cursor: it must not show up
        # in later pages, nor shift them.
        await store.create_job(new_job(), requester=REQUESTER, now_ms=NOW + 1000 + len(pages))

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [job_id for page in pages for job_id in page] == newest_first


async def test_a_listed_job_is_the_stored_job_whether_kept_parsed_or_read_from_its_row(
        tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    job = dataclasses.replace(
        Job.from_dict({
            "Name": "kept", "Type": "batch", "Count": 2, "Labels": {"team": "a"},
            "Constraints": [{"Key": "zone", "Operator": "=", "Values": ["a"]}],
            "Tasks": [{
                "Name": "main",
                "Engine": {"Type": "docker", "Params": {"Image": "busybox",
                                                        "Parameters": ["echo", "hi"]}},
                "InputSources": [{"Target": "/inputs", "Source": {
                    "Type": "s3", "Params": {"Bucket": "my-bucket", "Key": "k/"}}}],
                "Publisher": {"Type": "local"},
                "Timeouts": {"ExecutionTimeout": 60},
            }],
        }),
        id=f"j-{uuid.uuid4()}")
    parses = []
    real_from_dict = Job.from_dict.__func__
    monkeypatch.setattr(Job, "from_dict",
                        classmethod(lambda cls, data: parses.append(1) or
                                    real_from_dict(cls, data)))
    async with open_store(path) as store:
        await store.create_job(job, requester=REQUESTER, now_ms=NOW)
        # The job a requester just stored is listed as it is: no second parse of its spec.
        (listed,), _ = await store.list_jobs(10)
        assert listed.job == job and parses == []
    store_rows._PARSED_SPECS.clear()  # as after a restart
    async with open_store(path) as store:
        (listed,), _ = await store.list_jobs(10)
    assert listed.job == job and parses == [1]


async def test_a_bad_page_token_is_refused(store):
    with pytest.raises(ValueError, match="not a page token"):
        await store.list_jobs(10, after="garbage")


async def test_prefix_lookup_finds_jobs_by_the_start_of_their_id(store):
    ids = [
        "j-aaaa1111-0000-4000-8000-000000000000",
        "j-aaaa2222-0000-4000-8000-000000000000",
        "j-abbb0000-0000-4000-8000-000000000000",
    ]
    for job_id in ids:
        await store.create_job(new_job(job_id), requester=REQUESTER, now_ms=NOW)

    assert await store.find_job_ids("j-aaaa") == ids[:2]
    assert await store.find_job_ids("j-aaaa2") == [ids[1]]
    assert await store.find_job_ids(ids[2]) == [ids[2]]
    assert await store.find_job_ids("j-a", limit=2) == ids[:2]
    assert await store.find_job_ids("j-b") == []
    # LIKE/GLOB wildcards in what a user typed mean nothing.
    assert await store.find_job_ids("j-%") == []
    assert await store.find_job_ids("j-_aaa") == []


# --- nodes, results, counters ---------------------------------------------------------


async def test_a_stale_heartbeat_is_ignored_and_first_seen_is_kept(store):
    key = KEYS[1]
    assert await store.upsert_node(node_info(key, seq=5, version="v5"), seen_ms=NOW)
    assert not await store.upsert_node(node_info(key, seq=4, version="v4"), seen_ms=NOW + 10)
    record = await store.get_node(key.peer_id)
    assert (record.info.version, record.first_seen_ms, record.last_seen_ms) == ("v5", NOW, NOW)

    assert await store.upsert_node(node_info(key, seq=6, version="v6"), seen_ms=NOW + 20)
    record = await store.get_node(key.peer_id)
    assert (record.info.version, record.first_seen_ms, record.last_seen_ms) == (
        "v6",
        NOW,
        NOW + 20,
    )
    assert await store.get_node(KEYS[2].peer_id) is None


async def test_an_executions_result_is_kept_only_from_its_node_and_records_where_it_went(store):
    job = new_job()
    execution_id = new_execution_id()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW + 1)
    record = result_record(job.id, execution_id)

    # Another node's record for it, and a record for an execution not stored: nothing kept.
    stranger = replace(record, node_id=KEYS[2].peer_id)
    assert not await store.put_execution_result(
        stranger, seal_message(KEYS[2], stranger, now_ms=NOW), now_ms=NOW + 2)
    unknown = result_record(job.id, new_execution_id())
    assert not await store.put_execution_result(
        unknown, seal_message(KEYS[1], unknown, now_ms=NOW), now_ms=NOW + 2)
    assert await store.get_result(execution_id) is None
    assert (await store.get_execution(execution_id)).published is None

    envelope = seal_message(KEYS[1], record, now_ms=NOW)
    assert await store.put_execution_result(record, envelope, now_ms=NOW + 3)
    assert not await store.put_execution_result(record, envelope, now_ms=NOW + 4)
    assert await store.get_result(execution_id) == (record, envelope)
    assert (await store.get_execution(execution_id)).published == dict(record.published)


async def test_a_result_is_stored_once_and_a_different_one_is_a_conflict(store):
    job_id, execution_id = f"j-{uuid.uuid4()}", new_execution_id()
    record = result_record(job_id, execution_id)
    envelope = seal_message(KEYS[1], record, now_ms=NOW)

    assert await store.put_result(record, envelope, now_ms=NOW)
    assert not await store.put_result(record, envelope, now_ms=NOW + 1)  # gossip echo
    # The same record sealed again (a new nonce) is not news either; the first is kept.
    resealed = seal_message(KEYS[1], record, now_ms=NOW + 2)
    assert resealed != envelope
    assert not await store.put_result(record, resealed, now_ms=NOW + 2)

    other = result_record(job_id, execution_id, exit_code=1)
    with pytest.raises(ResultConflict, match=f"result of execution {execution_id}"):
        await store.put_result(other, seal_message(KEYS[1], other, now_ms=NOW), now_ms=NOW + 3)

    assert await store.get_result(execution_id) == (record, envelope)
    assert await store.list_results(job_id) == [(record, envelope)]
    assert await store.get_result(new_execution_id()) is None


async def test_counters_add_up_and_persist(tmp_path):
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        assert await store.increment_counter("dropped.replay") == 1
        assert await store.increment_counter("dropped.replay", by=4) == 5
        await store.increment_counter("dropped.skew")
    async with open_store(path) as store:
        assert await store.counters() == {"dropped.replay": 5, "dropped.skew": 1}


# --- durability and concurrency -------------------------------------------------------

WRITER = """
import dataclasses, sys, uuid
import trio
from node.store import open_store
from protocol.jobspec import Job

TEMPLATE = Job.from_dict(
    {"Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}}}]}
)

async def main(path):
    async with open_store(path) as store:
        print("ready", flush=True)
        for i in range(1_000_000):
            job = dataclasses.replace(TEMPLATE, id=f"j-{uuid.uuid4()}")
            await store.create_job(job, requester="requester", now_ms=i)
            print(job.id, flush=True)  # only after the write was acknowledged

trio.run(main, sys.argv[1])
"""


# Not a round number, so that a store committing in batches of 10, 50 or 100 is caught.
KILL_AFTER = 337


async def test_acknowledged_writes_survive_kill_9(tmp_path):
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    acknowledged: list[str] = []
    with trio.fail_after(10):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            buffer = b""
            killed = False
            while True:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")  # a partial last line is not an ack
                acknowledged += [line.decode() for line in lines if line.startswith(b"j-")]
                if not killed and len(acknowledged) >= KILL_AFTER:
                    process.send_signal(9)  # SIGKILL, mid-stream
                    killed = True
            assert await process.wait() == -9
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async with open_store(path) as store:
        stored = set(await store.find_job_ids("j-"))
    assert len(acknowledged) >= KILL_AFTER
    missing = [job_id for job_id in acknowledged if job_id not in stored]
    assert missing == []


async def test_a_write_waiting_on_the_database_does_not_block_the_event_loop(tmp_path):
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        await store.create_job(new_job(), requester=REQUESTER, now_ms=NOW)
        # Another connection holds the write lock, so the store's next write must wait
        # (SQLite's busy handler sleeps). The lock is released only once the ticker has
        # ticked 20 times: if the store blocked the event loop, the ticker could not
        # tick, the lock would never be released and the write would fail.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await trio.sleep(0.01)
                ticks += 1

        async def release_after_20_ticks() -> None:
            while ticks < 20:
                await trio.sleep(0.01)
            blocker.execute("COMMIT")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                nursery.start_soon(release_after_20_ticks)
                before = ticks
                batch = [new_job() for _ in range(20)]
                for job in batch:
                    await store.create_job(job, requester=REQUESTER, now_ms=NOW + 1)
                during = ticks - before
                nursery.cancel_scope.cancel()
        blocker.close()
        assert during >= 20
        assert len(await store.find_job_ids("j-")) == 21


async def test_the_outbox_keeps_owed_messages_in_order_across_a_reopen(tmp_path):
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        first = await store.outbox_add(REQUESTER, b"one", NOW)
        second = await store.outbox_add(COMPUTE, b"two", NOW + 1)
        third = await store.outbox_add(REQUESTER, b"three", NOW + 2)
        await store.outbox_remove(second)
    async with open_store(path) as store:
        assert await store.outbox_pending() == [
            (first, REQUESTER, b"one", NOW), (third, REQUESTER, b"three", NOW + 2)]
        await store.outbox_remove(first)
        assert [seq for seq, *_ in await store.outbox_pending()] == [third]


async def test_heartbeats_stored_before_started_ms_existed_still_read(tmp_path):
    path = tmp_path / "state.db"
    key = KEYS[1]
    async with open_store(path) as store:
        await store.upsert_node(node_info(key, seq=3), NOW)
    old_body = node_info(key, seq=3).to_body()
    del old_body["started_ms"]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE nodes SET info = ?", (codec.encode(old_body),))
    async with open_store(path) as store:
        record = await store.get_node(key.peer_id)
    assert record is not None and record.info.started_ms == 0 and record.info.seq == 3


async def test_jobs_are_found_by_state_oldest_first(store):
    jobs = [new_job() for _ in range(3)]
    for offset, job in enumerate(jobs):
        await store.create_job(job, requester=REQUESTER, now_ms=NOW + offset)
    await store.update_job_state(jobs[1].id, JobState.QUEUED, message="waiting", now_ms=NOW + 5)
    found = await store.jobs_in_states({JobState.PENDING, JobState.QUEUED})
    assert [r.job.id for r in found] == [j.id for j in jobs]
    assert [r.job.id for r in await store.jobs_in_states({JobState.QUEUED})] == [jobs[1].id]


async def test_retryable_is_a_field_kept_with_the_execution(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    execution_id = new_execution_id()
    await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW,
                                 state=ExecutionState.ASK_FOR_BID)
    await store.update_execution(execution_id, ExecutionState.BID_ACCEPTED, message="ok",
                                 now_ms=NOW + 1)
    assert (await store.get_execution(execution_id)).retryable is False
    await store.update_execution(execution_id, ExecutionState.FAILED, message="node lost",
                                 now_ms=NOW + 2, retryable=True)
    assert (await store.get_execution(execution_id)).retryable is True


# --- following a job ------------------------------------------------------------------


async def test_a_follower_of_a_job_learns_of_each_change_as_it_commits(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    execution_id = new_execution_id()
    seen: list[tuple[str, float]] = []

    async def follow(after: float) -> None:
        record = await store.wait_for_job(job.id, timeout=30)
        seen.append((record.state.name, trio.current_time() - after))

    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(follow, started)
        await trio.sleep(0.3)
        assert seen == []  # nothing changed yet: the follower is still waiting
        await store.create_execution(execution_id, job.id, COMPUTE, now_ms=NOW + 1)
    # A new execution wakes the follower, though the job's own state did not change.
    assert seen[0][0] == "PENDING" and 0.3 <= seen[0][1] < 5

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, trio.current_time())
        await trio.sleep(0.2)
        await store.update_job_state(job.id, JobState.RUNNING, message="go", now_ms=NOW + 2)
    assert seen[1][0] == "RUNNING" and 0.2 <= seen[1][1] < 5
    assert not store._job_changes and not store._job_waiters  # nothing kept for nobody


async def test_following_an_ended_or_quiet_or_unknown_job_returns_without_waiting_long(store):
    job = new_job()
    await store.create_job(job, requester=REQUESTER, now_ms=NOW)
    started = trio.current_time()
    record = await store.wait_for_job(job.id, timeout=0.5)
    waited = trio.current_time() - started
    assert record.state == JobState.PENDING and 0.5 <= waited < 3  # the timeout, as it was

    await store.update_job_state(job.id, JobState.FAILED, message="no", now_ms=NOW + 1)
    with trio.fail_after(1):  # an ended job is answered at once, not after 30 s
        assert (await store.wait_for_job(job.id, timeout=30)).state == JobState.FAILED
        assert await store.wait_for_job("j-nobody", timeout=30) is None
