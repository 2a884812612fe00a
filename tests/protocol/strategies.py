"""Hypothesis strategies for protocol messages, shared by the property and fuzz tests."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from protocol.cid import Cid
from protocol.identity import NodeKey
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    ManifestEntry,
    NodeInfo,
    ResultRecord,
)
from protocol.states import ExecutionState

# Deriving keys is slow-ish; a small fixed pool keeps hypothesis fast and deterministic.
KEYS = [NodeKey(bytes([i]) * 32) for i in range(1, 6)]
PEER_IDS = [key.peer_id for key in KEYS]

keys = st.sampled_from(KEYS)
peer_ids = st.sampled_from(PEER_IDS)
job_ids = st.uuids(version=4).map(lambda u: f"j-{u}")
execution_ids = st.uuids(version=4).map(lambda u: f"e-{u}")
texts = st.text(max_size=40)
small_ints = st.integers(min_value=0, max_value=2**40)
sha256_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)


@st.composite
def capacities(draw: st.DrawFn, ceiling: Capacity | None = None) -> Capacity:
    def field(name: str) -> int:
        top = getattr(ceiling, name) if ceiling else 2**40
        return draw(st.integers(min_value=0, max_value=top))

    return Capacity(field("cpu_milli"), field("memory"), field("disk"), field("gpu"))


def _job(name: str, image: str) -> dict:
    from protocol.jobspec import Job

    return Job.from_dict(
        {
            "Name": name,
            "Type": "batch",
            "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {"Image": image}}}],
        }
    ).to_dict()


job_documents = st.builds(
    _job,
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    st.sampled_from(["busybox", "busybox:latest", "alpine:3.19", "ghcr.io/org/tool:1.2"]),
)

safe_paths = st.lists(
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True), min_size=1, max_size=4
).map("/".join)


@st.composite
def node_infos(draw: st.DrawFn) -> NodeInfo:
    total = draw(capacities())
    return NodeInfo(
        node_id=draw(peer_ids),
        version=draw(texts),
        addresses=tuple(draw(st.lists(st.just("/ip4/127.0.0.1/tcp/4001"), max_size=3))),
        labels=draw(st.dictionaries(texts, texts, max_size=4)),
        roles=tuple(draw(st.lists(st.sampled_from(["requester", "compute"]), max_size=2))),
        engines=tuple(draw(st.lists(st.sampled_from(["docker", "noop"]), max_size=2))),
        storages=tuple(draw(st.lists(st.sampled_from(["s3", "ipfs", "inline"]), max_size=3))),
        publishers=tuple(draw(st.lists(st.sampled_from(["ipfs", "s3", "local"]), max_size=3))),
        total=total,
        free=draw(capacities(total)),
        running_executions=draw(small_ints),
        seq=draw(small_ints),
        started_ms=draw(small_ints),
    )


locations = st.one_of(
    st.builds(
        lambda cid: {"StorageSource": "IPFS", "CID": cid},
        st.binary(max_size=64).map(lambda block: str(Cid.for_block(block))),
    ),
    st.builds(
        lambda bucket, key, digest, version: {
            "StorageSource": "S3",
            "Name": f"s3://{bucket}/{key}",
            "S3": {"Bucket": bucket, "Key": key, "Checksum": digest, "VersionID": version},
        },
        st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True),
        safe_paths,
        st.binary(min_size=32, max_size=32).map(
            lambda b: __import__("base64").b64encode(b).decode()
        ),
        texts,
    ),
    st.just({"StorageSource": "Local", "Name": "local"}),
)


@st.composite
def result_records(draw: st.DrawFn) -> ResultRecord:
    paths = draw(st.lists(safe_paths, unique=True, max_size=5))
    return ResultRecord(
        job_id=draw(job_ids),
        execution_id=draw(execution_ids),
        node_id=draw(peer_ids),
        exit_code=draw(st.integers(min_value=-255, max_value=255)),
        stdout_sha256=draw(sha256_hex),
        stderr_sha256=draw(sha256_hex),
        outputs=tuple(
            ManifestEntry(path, draw(small_ints), draw(sha256_hex)) for path in paths
        ),
        published=draw(locations),
        completed_at_ms=draw(small_ints),
    )


messages = st.one_of(
    st.builds(
        JobAnnouncement,
        job_id=job_ids,
        requester=peer_ids,
        job=job_documents,
        bid_deadline_ms=small_ints,
    ),
    st.builds(
        Bid,
        job_id=job_ids,
        execution_id=execution_ids,
        node_id=peer_ids,
        accept=st.booleans(),
        reason=texts,
        free=capacities(),
        running_executions=small_ints,
    ),
    st.builds(
        BidDecision,
        job_id=job_ids,
        execution_id=execution_ids,
        node_id=peer_ids,
        accepted=st.booleans(),
        reason=texts,
    ),
    st.builds(
        ExecutionUpdate,
        job_id=job_ids,
        execution_id=execution_ids,
        node_id=peer_ids,
        state=st.sampled_from([s.value for s in ExecutionState]),
        message=texts,
        exit_code=st.none() | st.integers(min_value=-255, max_value=255),
    ),
    node_infos(),
    result_records(),
)


def author_key(message: object) -> NodeKey:
    """The key that may sign ``message`` (its node_id or requester)."""
    author = getattr(message, "node_id", None) or message.requester  # type: ignore[attr-defined]
    if isinstance(message, BidDecision):
        return KEYS[0]
    return KEYS[PEER_IDS.index(author)]


def new_job_id() -> str:
    return f"j-{uuid.uuid4()}"


def new_execution_id() -> str:
    return f"e-{uuid.uuid4()}"


def example_messages() -> list:
    """One concrete, valid message of every type (deterministic, for seeds and vectors)."""
    job_id = "j-3f1c2a4e-8b9d-4c7e-9a1b-2c3d4e5f6a7b"
    execution_id = "e-0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
    node = PEER_IDS[1]
    capacity = Capacity(cpu_milli=2000, memory=4 << 30, disk=100 << 30, gpu=0)
    return [
        JobAnnouncement(job_id, PEER_IDS[0], _job("hello", "busybox"), 1_780_000_005_000),
        Bid(job_id, execution_id, node, True, "", capacity, 1),
        BidDecision(job_id, execution_id, node, True, "best free capacity"),
        ExecutionUpdate(job_id, execution_id, node, "Running", "container started"),
        NodeInfo(
            node_id=node,
            version="0.1.0",
            addresses=("/ip4/127.0.0.1/tcp/4001",),
            labels={"zone": "b"},
            roles=("requester", "compute"),
            engines=("docker",),
            storages=("inline", "urlDownload"),
            publishers=("local", "noop"),
            total=capacity,
            free=Capacity(1000, 1 << 30, 50 << 30, 0),
            running_executions=1,
            seq=7,
            started_ms=1_780_000_000_000,
        ),
        ResultRecord(
            job_id=job_id,
            execution_id=execution_id,
            node_id=node,
            exit_code=0,
            stdout_sha256="98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4",
            stderr_sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            outputs=(ManifestEntry("outputs/a.txt", 5, "5" * 64),),
            published={
                "StorageSource": "S3",
                "Name": "s3://bucket/run3.tar.gz",
                "S3": {
                    "Bucket": "bucket",
                    "Key": "run3.tar.gz",
                    "Checksum": "e0uDqmflfT9b+rMfoCnO5G+cy+8WVTOPUtAqDMnXWbw=",
                    "VersionID": "hZoNdqJsZxE_bFm3UGJuJ0RqkITe9dQ1",
                },
            },
            completed_at_ms=1_780_000_009_000,
        ),
    ]
