"""What the store's reads return."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.jobspec import Job
from protocol.messages import NodeInfo
from protocol.states import (
    ExecutionState,
    JobState,
)

JOB_STATE_UPDATE = "JobStateUpdate"
EXECUTION_STATE_UPDATE = "ExecutionStateUpdate"


class DesiredState(StrEnum):
    """What the node wants an execution to be, apart from what it observes it is."""

    RUNNING = "Running"
    STOPPED = "Stopped"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    info: NodeInfo
    first_seen_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class JobRecord:
    job: Job
    state: JobState
    state_message: str
    requester: str
    create_time_ms: int
    modify_time_ms: int
    #: 1 when created, incremented on every change.
    revision: int
    #: Verified jobs: the signed verdict's body (``protocol.messages.Verdict``), once given.
    verdict: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    execution_id: str
    job_id: str
    node_id: str
    state: ExecutionState
    desired_state: DesiredState
    message: str
    exit_code: int | None
    run_output: dict[str, Any] | None
    published: dict[str, Any] | None
    create_time_ms: int
    modify_time_ms: int
    #: 1 when created, incremented on every change.
    revision: int
    #: Failed through no fault of the job (its node died or restarted): placed again.
    retryable: bool = False
    #: Verified jobs: the node's commitment, and the digest its reveal opened it with.
    seal: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's history; state updates carry the previous and new state."""

    seq: int
    time_ms: int
    job_id: str
    execution_id: str | None
    kind: str
    previous_state: str | None
    new_state: str | None
    message: str
    details: dict[str, Any] | None


