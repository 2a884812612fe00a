"""What goes into the cores (events) and what comes out (instructions).

Events are facts the interpreter observed; instructions are what it must do, in
order. Both are frozen dataclasses, so a trace of them can be printed, compared
and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.jobspec import Job
from protocol.messages import (
    Bid,
    BidDecision,
    ExecutionUpdate,
    JobAnnouncement,
    NodeInfo,
    ResultCommitment,
    ResultRecord,
    RevealRequest,
    Verdict,
)
from protocol.states import ExecutionState, JobState

from .reputation import Reputation

# -- events, both cores ------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """Time passed; timers due by now fire (bid windows, queue and execution deadlines,
    silent nodes, reservations never decided)."""


# -- events, requester --------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """A new job (Pending). The daemon takes it here while its creation is still being
    written, and tells a winner only once that has committed (``JobNotStored`` if not)."""

    job: Job


@dataclass(frozen=True)
class JobNotStored:
    """The creation of a job ``Submitted`` failed: the API answered with the error, so
    nothing of the job may go on (not even its record: there is none), and no node it
    chose was told so."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class BidReceived:
    bid: Bid


@dataclass(frozen=True)
class UpdateReceived:
    update: ExecutionUpdate


@dataclass(frozen=True)
class ResultReceived:
    record: ResultRecord
    envelope: bytes


@dataclass(frozen=True)
class CommitmentReceived:
    """A node committed to its result of a verified job (its seal, not the result)."""

    commitment: ResultCommitment


@dataclass(frozen=True)
class VerdictHeard:
    """A verdict another requester this node trusts gossiped: its tallies count here too."""

    verdict: Verdict


@dataclass(frozen=True)
class NodeHeard:
    """A node's heartbeat (this node's own included)."""

    info: NodeInfo


@dataclass(frozen=True)
class LinkChanged:
    """This node now has (``linked``), or no longer has, a connection to ``node_id``: a
    node it can ask without dialling it first."""

    node_id: str
    linked: bool


@dataclass(frozen=True)
class DecisionUndelivered:
    """An accepting decision did not reach its node."""

    execution_id: str
    reason: str


@dataclass(frozen=True)
class StopRequested:
    job_id: str
    reason: str


@dataclass(frozen=True)
class StoredExecution:
    execution_id: str
    node_id: str
    state: ExecutionState
    create_time_ms: int
    retryable: bool = False
    #: A verified job's commitment, and the digest its reveal opened it with.
    seal: str = ""
    digest: str = ""


@dataclass(frozen=True)
class StoredJob:
    job: Job
    state: JobState
    modify_time_ms: int
    executions: tuple[StoredExecution, ...] = ()


@dataclass(frozen=True)
class Restarted:
    """The node (re)started at ``started_ms``; ``jobs`` are its unfinished jobs as stored."""

    started_ms: int
    jobs: tuple[StoredJob, ...] = ()
    #: What this node remembers of each compute node (``node.core.reputation``).
    reputations: tuple[tuple[str, Reputation], ...] = ()


# -- instructions, requester --------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """Offer a job: gossip ``announcement``; only its ``candidates`` (all, when empty) bid."""

    announcement: JobAnnouncement


@dataclass(frozen=True)
class SendDecision:
    """Tell a node whether its bid won; an accepting one that cannot be delivered comes
    back as ``DecisionUndelivered``."""

    decision: BidDecision


@dataclass(frozen=True)
class PersistJob:
    """Write the job's new state and why (a history event)."""

    job_id: str
    state: JobState
    message: str


@dataclass(frozen=True)
class PersistExecution:
    """Create (``created``) or move an execution, with what its node reported."""

    execution_id: str
    job_id: str
    node_id: str
    state: ExecutionState
    message: str
    created: bool = False
    retryable: bool = False
    exit_code: int | None = None
    run_output: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PersistCommitment:
    """Keep an execution's seal, and once revealed the digest that opened it."""

    execution_id: str
    seal: str
    digest: str = ""


@dataclass(frozen=True)
class SendRevealRequest:
    """Ask a node that committed for its result record."""

    request: RevealRequest


@dataclass(frozen=True)
class PublishVerdict:
    """Keep the verdict with the job, gossip it, then gossip the accepted result records
    (nothing of a verified job's results went out before)."""

    verdict: Verdict


@dataclass(frozen=True)
class PersistReputation:
    """Keep a compute node's new tallies."""

    node_id: str
    reputation: Reputation


@dataclass(frozen=True)
class StoreResult:
    """Keep a compute node's signed result record for one of our executions."""

    record: ResultRecord
    envelope: bytes = field(repr=False)


# -- events, compute -----------------------------------------------------------


@dataclass(frozen=True)
class Announced:
    """A job announcement arrived; ``execution_id`` is fresh, for the bid if there is one."""

    announcement: JobAnnouncement
    job: Job
    execution_id: str


@dataclass(frozen=True)
class InputsMeasured:
    """What ``MeasureInputs`` found: the inputs' total known size (None: unknown)."""

    announcement: JobAnnouncement
    job: Job
    execution_id: str
    total_bytes: int | None


@dataclass(frozen=True)
class DecisionReceived:
    decision: BidDecision
    sender: str


@dataclass(frozen=True)
class ExecutionEnded:
    """The interpreter finished an execution (whatever the outcome) and sent its last update."""

    execution_id: str


# -- instructions, compute ------------------------------------------------------


@dataclass(frozen=True)
class MeasureInputs:
    """Find how big the job's inputs are, then report ``InputsMeasured``."""

    announcement: JobAnnouncement
    job: Job
    execution_id: str


@dataclass(frozen=True)
class SendBid:
    requester: str
    bid: Bid
    #: For a decline, one of ``protocol.scheduling.DECLINE_KINDS``; not sent.
    decline: str = ""


@dataclass(frozen=True)
class StartExecution:
    """Stage, run and publish; stop at ``deadline_ms`` (0: no limit)."""

    execution_id: str
    job: Job
    requester: str
    deadline_ms: int


@dataclass(frozen=True)
class CancelExecution:
    execution_id: str
    reason: str


RequesterEvent = (Submitted | JobNotStored | BidReceived | UpdateReceived | ResultReceived
                  | CommitmentReceived | VerdictHeard | NodeHeard | LinkChanged
                  | DecisionUndelivered | StopRequested | Restarted | Tick)
RequesterInstruction = (Announce | SendDecision | PersistJob | PersistExecution
                        | PersistCommitment | PersistReputation | SendRevealRequest
                        | PublishVerdict | StoreResult)
ComputeEvent = Announced | InputsMeasured | DecisionReceived | ExecutionEnded | Tick
ComputeInstruction = MeasureInputs | SendBid | StartExecution | CancelExecution
