"""Job and execution state machines: the legal transitions, as tables.

Every state change in the node goes through ``check_job_transition`` or
``check_execution_transition``; anything not in the table is an
``IllegalTransition``. Terminal states have no way out.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from .errors import IllegalTransition


class JobState(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_JOB_STATES


class ExecutionState(StrEnum):
    NEW = "New"
    ASK_FOR_BID = "AskForBid"
    BID_ACCEPTED = "BidAccepted"
    BID_REJECTED = "BidRejected"
    RUNNING = "Running"
    PUBLISHING = "Publishing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_EXECUTION_STATES

    @property
    def is_active(self) -> bool:
        """Holds (or may soon hold) resources on its compute node."""
        return self in (
            ExecutionState.BID_ACCEPTED,
            ExecutionState.RUNNING,
            ExecutionState.PUBLISHING,
        )


_TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.STOPPED})
_TERMINAL_EXECUTION_STATES = frozenset(
    {
        ExecutionState.BID_REJECTED,
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
    }
)

_ENDINGS = {JobState.FAILED, JobState.STOPPED}
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.QUEUED, JobState.RUNNING, *_ENDINGS}),
    JobState.QUEUED: frozenset({JobState.RUNNING, *_ENDINGS}),
    # Back to Queued when an execution failed and the job waits for a new bid.
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.COMPLETED, *_ENDINGS}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.STOPPED: frozenset(),
}

_EXEC_ENDINGS = {ExecutionState.FAILED, ExecutionState.CANCELLED}
EXECUTION_TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    ExecutionState.NEW: frozenset({ExecutionState.ASK_FOR_BID, *_EXEC_ENDINGS}),
    ExecutionState.ASK_FOR_BID: frozenset(
        {ExecutionState.BID_ACCEPTED, ExecutionState.BID_REJECTED, *_EXEC_ENDINGS}
    ),
    ExecutionState.BID_ACCEPTED: frozenset({ExecutionState.RUNNING, *_EXEC_ENDINGS}),
    ExecutionState.RUNNING: frozenset({ExecutionState.PUBLISHING, *_EXEC_ENDINGS}),
    ExecutionState.PUBLISHING: frozenset({ExecutionState.COMPLETED, *_EXEC_ENDINGS}),
    ExecutionState.BID_REJECTED: frozenset(),
    ExecutionState.COMPLETED: frozenset(),
    ExecutionState.FAILED: frozenset(),
    ExecutionState.CANCELLED: frozenset(),
}


def check_job_transition(current: JobState, new: JobState) -> JobState:
    """Return ``new`` if a job may move there from ``current``; else raise."""
    if new not in JOB_TRANSITIONS[current]:
        raise IllegalTransition(_explain("job", current, new, JOB_TRANSITIONS[current]))
    return new


def check_execution_transition(current: ExecutionState, new: ExecutionState) -> ExecutionState:
    """Return ``new`` if an execution may move there from ``current``; else raise."""
    if new not in EXECUTION_TRANSITIONS[current]:
        raise IllegalTransition(_explain("execution", current, new, EXECUTION_TRANSITIONS[current]))
    return new


def _explain(what: str, current: Enum, new: Enum, allowed: frozenset) -> str:
    if not allowed:
        return f"{what} is {current.value}, a final state; it cannot become {new.value}"
    options = ", ".join(sorted(state.value for state in allowed))
    return f"{what} cannot go from {current.value} to {new.value} (allowed: {options})"


# Bacalhau's wire numbers for execution states (models.ExecutionStateType, sent as JSON
# integers); its AskForBidAccepted (3) and AskForBidRejected (4) have no counterpart here.
EXECUTION_STATE_CODES: dict[ExecutionState, int] = {
    ExecutionState.NEW: 1,
    ExecutionState.ASK_FOR_BID: 2,
    ExecutionState.BID_ACCEPTED: 5,
    ExecutionState.RUNNING: 6,
    ExecutionState.PUBLISHING: 7,
    ExecutionState.BID_REJECTED: 8,
    ExecutionState.COMPLETED: 9,
    ExecutionState.FAILED: 10,
    ExecutionState.CANCELLED: 11,
}
#: Bacalhau's models.ExecutionDesiredStateType, by name.
DESIRED_STATE_CODES: dict[str, int] = {"Pending": 0, "Running": 1, "Stopped": 2}
_EXECUTION_STATES_BY_CODE = {code: state for state, code in EXECUTION_STATE_CODES.items()}
_EXTRA_EXECUTION_STATE_NAMES = {0: "Undefined", 3: "AskForBidAccepted", 4: "AskForBidRejected"}


def execution_state_name(code: int) -> str:
    """The name of Bacalhau's execution state number ``code`` (``"Unknown(N)"`` if none)."""
    state = _EXECUTION_STATES_BY_CODE.get(code)
    if state is not None:
        return state.value
    return _EXTRA_EXECUTION_STATE_NAMES.get(code, f"Unknown({code})")
