"""Hypothesis strategies for protocol messages, shared by the property and fuzz tests."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from protocol.cid import Cid
from protocol.examples import KEYS, PEER_IDS, example_job
from protocol.messages import (
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    ManifestEntry,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
    VerdictGroup,
)
from protocol.states import ExecutionState

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


job_documents = st.builds(
    example_job,
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


@st.composite
def verdicts(draw: st.DrawFn) -> Verdict:
    digests = draw(st.lists(sha256_hex, unique=True, min_size=1, max_size=3))
    groups = []
    for digest in digests:
        executions = tuple(draw(st.lists(execution_ids, min_size=1, max_size=3)))
        nodes = tuple(draw(peer_ids) for _ in executions)
        groups.append(VerdictGroup(digest, executions, nodes))
    verified = draw(st.booleans())
    return Verdict(job_id=draw(job_ids), requester=draw(peer_ids),
                   state="Verified" if verified else "NoConsensus",
                   confidence=draw(st.integers(min_value=1, max_value=100)),
                   groups=tuple(groups),
                   accepted=digests[0] if verified else "", decided_at_ms=draw(small_ints))


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
    st.builds(ResultCommitment, job_id=job_ids, execution_id=execution_ids, node_id=peer_ids,
              seal=sha256_hex),
    st.builds(RevealRequest, job_id=job_ids, execution_id=execution_ids, node_id=peer_ids,
              requester=peer_ids),
    verdicts(),
)


def new_job_id() -> str:
    return f"j-{uuid.uuid4()}"


def new_execution_id() -> str:
    return f"e-{uuid.uuid4()}"
