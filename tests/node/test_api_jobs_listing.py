"""What ``GET /api/v1/orchestrator/jobs`` sends for each job (``node.api_jobs``): built once
per revision, and never stale."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from node.api_jobs import EncodedJobs, job_json
from node.store import JobRecord
from protocol.jobspec import Job
from protocol.states import JobState


def record(revision: int = 1, state: JobState = JobState.PENDING) -> JobRecord:
    job = Job.from_dict({"ID": "j-5b0b4e6e-1c3c-4bdf-9b3c-6f0e0c3f7a11", "Type": "batch",
                         "Count": 1, "Tasks": [{"Name": "main", "Engine": {
                             "Type": "docker", "Params": {"Image": "busybox:latest"}}}]})
    return JobRecord(job=job, state=state, state_message="why: ünïcode",
                     requester="12D3KooWSPNkM8BzFVwzwhzaKv3Tsr26hd7DHkntrhhdTfHSAvvp",
                     create_time_ms=1_000, modify_time_ms=1_000 + revision,
                     revision=revision)


def test_a_listed_job_is_encoded_as_the_api_answers_a_single_one() -> None:
    encoded = EncodedJobs()
    first = record()
    assert encoded(first) == JSONResponse(job_json(first)).body
    assert encoded(first) is encoded(first)  # built once


def test_a_job_that_changed_is_listed_as_it_is_now() -> None:
    encoded = EncodedJobs()
    encoded(record(1, JobState.PENDING))
    now = json.loads(encoded(record(2, JobState.RUNNING)))
    assert now["State"]["StateType"] == "Running" and now["Revision"] == 2


def test_only_the_last_jobs_listed_are_kept() -> None:
    encoded = EncodedJobs(size=3)
    for revision in range(1, 6):
        encoded(record(revision))
    assert encoded(record(5)) is encoded(record(5))
    assert len(encoded._encoded) == 3
