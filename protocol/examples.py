"""Concrete, valid examples of every bacnode/1 message, and the fixed keys that sign them.

Deterministic, for fuzz seeds, test vectors and benchmarks; not used by the daemon.
"""

from __future__ import annotations

from .identity import NodeKey
from .jobspec import Job
from .messages import (
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
    message_author,
)

# Deriving keys is slow-ish; a small fixed pool keeps property tests fast and deterministic.
KEYS = [NodeKey(bytes([i]) * 32) for i in range(1, 6)]
PEER_IDS = [key.peer_id for key in KEYS]


def example_job(name: str, image: str) -> dict:
    """A minimal valid job document, normalised."""
    return Job.from_dict(
        {
            "Name": name,
            "Type": "batch",
            "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {"Image": image}}}],
        }
    ).to_dict()


def author_key(message: object) -> NodeKey:
    """The key that may sign ``message`` (its node_id or requester)."""
    author = message_author(message)  # type: ignore[arg-type]
    if author is None:  # a decision is about the bidder, signed by the requester
        return KEYS[0]
    return KEYS[PEER_IDS.index(author)]


def example_messages() -> list:
    """One concrete, valid message of every type (deterministic, for seeds and vectors)."""
    job_id = "j-3f1c2a4e-8b9d-4c7e-9a1b-2c3d4e5f6a7b"
    execution_id = "e-0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
    node = PEER_IDS[1]
    capacity = Capacity(cpu_milli=2000, memory=4 << 30, disk=100 << 30, gpu=0)
    return [
        JobAnnouncement(job_id, PEER_IDS[0], example_job("hello", "busybox"), 1_780_000_005_000),
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
        ResultCommitment(job_id, execution_id, node, "c" * 64),
        RevealRequest(job_id, execution_id, node, PEER_IDS[0]),
        Verdict(job_id, PEER_IDS[0], "Verified", 2,
                (VerdictGroup("d" * 64, (execution_id,), (node,)),), accepted="d" * 64,
                decided_at_ms=1_780_000_010_000),
    ]
