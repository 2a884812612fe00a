"""Commit-reveal: digests, seals and the tally, as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import SpecError
from protocol.jobspec import Job
from protocol.messages import ManifestEntry, ResultRecord
from protocol.verification import (
    commitment_seal,
    opens_seal,
    record_digest,
    result_digest,
    tally,
)

NODE_A, NODE_B = "12D3KooWAlice", "12D3KooWBob"
OUT = ("outputs/a.txt", 5, "5" * 64)


def record(node: str, execution: str, outputs=(OUT,), exit_code=0, published=None):
    return ResultRecord(
        job_id="j-3f1c2a4e-8b9d-4c7e-9a1b-2c3d4e5f6a7b", execution_id=execution, node_id=node,
        exit_code=exit_code, stdout_sha256="1" * 64, stderr_sha256="2" * 64,
        outputs=tuple(ManifestEntry(*entry) for entry in outputs),
        published=published or {"StorageSource": "IPFS", "Name": "ipfs://x", "CID": "x"},
        completed_at_ms=0)


def test_the_digest_is_of_the_bytes_not_of_where_they_were_published_or_by_whom() -> None:
    a = record(NODE_A, "e-1", published={"StorageSource": "IPFS", "CID": "Qm1"})
    b = record(NODE_B, "e-2", published={"StorageSource": "S3", "Name": "s3://b/k"})
    assert record_digest(a) == record_digest(b)
    changed = ("outputs/a.txt", 5, "6" * 64)
    assert record_digest(record(NODE_A, "e-1", outputs=(changed,))) != record_digest(a)
    assert record_digest(record(NODE_A, "e-1", exit_code=1)) != record_digest(a)
    assert result_digest(0, "1" * 64, "2" * 64, [OUT, ("b", 1, "3" * 64)]) == result_digest(
        0, "1" * 64, "2" * 64, [("b", 1, "3" * 64), OUT])  # order of the manifest


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_a_seal_opens_only_for_its_node_execution_and_digest(node, execution, digest) -> None:
    seal = commitment_seal(node, execution, digest)
    assert opens_seal(seal, node, execution, digest)
    assert not opens_seal(seal, node + "x", execution, digest)  # a copier's own seal differs
    assert not opens_seal(seal, node, execution + "x", digest)
    assert not opens_seal(seal, node, execution, digest + "x")  # an equivocator's other reveal


def test_a_strict_majority_wins_and_a_colluding_minority_loses() -> None:
    honest, liar = "a" * 64, "b" * 64
    result = tally({"e-1": honest, "e-2": liar, "e-3": honest, "e-4": liar, "e-5": honest}, 3)
    assert result.state == "Verified" and result.accepted == honest
    assert result.agreeing() == ("e-1", "e-3", "e-5")
    assert result.groups[1] == (liar, ("e-2", "e-4"))
    split = tally({"e-1": honest, "e-2": liar, "e-3": "c" * 64}, 2)
    assert split.state == "NoConsensus" and split.accepted is None and split.agreeing() == ()


def test_verification_is_part_of_the_job_spec() -> None:
    task = [{"Name": "t", "Engine": {"Type": "noop"}}]
    job = Job.from_dict({"Count": 5, "Verification": {"Mode": "Deterministic"}, "Tasks": task})
    assert job.verification is not None and job.verification.confidence == 3
    assert Job.from_dict(job.to_dict()) == job
    assert Job.from_dict({"Count": 3, "Verification": {"Mode": "None"}, "Tasks": task}
                         ).verification is None
    with pytest.raises(SpecError, match="verifying a result needs Count 2 or more"):
        Job.from_dict({"Verification": {}, "Tasks": task})
    with pytest.raises(SpecError, match="must be a strict majority, 3 to 5"):
        Job.from_dict({"Count": 5, "Verification": {"Confidence": 2}, "Tasks": task})
