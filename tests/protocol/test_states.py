import itertools

import pytest

from protocol.errors import IllegalTransition
from protocol.states import (
    EXECUTION_TRANSITIONS,
    JOB_TRANSITIONS,
    ExecutionState,
    JobState,
    check_execution_transition,
    check_job_transition,
)


def test_happy_paths_are_legal():
    path = [JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]
    for old, new in itertools.pairwise(path):
        assert check_job_transition(old, new) is new
    path = [
        ExecutionState.NEW,
        ExecutionState.ASK_FOR_BID,
        ExecutionState.BID_ACCEPTED,
        ExecutionState.RUNNING,
        ExecutionState.PUBLISHING,
        ExecutionState.COMPLETED,
    ]
    for old, new in itertools.pairwise(path):
        assert check_execution_transition(old, new) is new


@pytest.mark.parametrize("state", list(JobState))
def test_terminal_job_states_have_no_way_out(state):
    assert state.is_terminal == (not JOB_TRANSITIONS[state])
    if state.is_terminal:
        with pytest.raises(IllegalTransition, match="a final state"):
            check_job_transition(state, JobState.RUNNING)


@pytest.mark.parametrize("state", list(ExecutionState))
def test_terminal_execution_states_have_no_way_out(state):
    assert state.is_terminal == (not EXECUTION_TRANSITIONS[state])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (JobState.PENDING, JobState.COMPLETED, "cannot go from Pending to Completed"),
        (JobState.COMPLETED, JobState.FAILED, "job is Completed, a final state"),
        (JobState.QUEUED, JobState.PENDING, "allowed: Failed, Running, Stopped"),
    ],
)
def test_illegal_job_transitions_explain(old, new, message):
    with pytest.raises(IllegalTransition, match=message):
        check_job_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (ExecutionState.NEW, ExecutionState.RUNNING),
        (ExecutionState.ASK_FOR_BID, ExecutionState.COMPLETED),
        (ExecutionState.RUNNING, ExecutionState.BID_ACCEPTED),
        (ExecutionState.BID_REJECTED, ExecutionState.BID_ACCEPTED),
        (ExecutionState.COMPLETED, ExecutionState.FAILED),
    ],
)
def test_illegal_execution_transitions_raise(old, new):
    with pytest.raises(IllegalTransition):
        check_execution_transition(old, new)


def test_every_non_terminal_state_can_fail():
    for state, allowed in EXECUTION_TRANSITIONS.items():
        if not state.is_terminal:
            assert ExecutionState.FAILED in allowed and ExecutionState.CANCELLED in allowed
    for state, allowed in JOB_TRANSITIONS.items():
        if not state.is_terminal:
            assert JobState.FAILED in allowed and JobState.STOPPED in allowed


def test_bacalhau_execution_state_numbers_are_its_models_values():
    from protocol.states import EXECUTION_STATE_CODES, execution_state_name

    # models.ExecutionStateType of Bacalhau v1.9.3 (iota order, Undefined = 0)
    bacalhau = ["Undefined", "New", "AskForBid", "AskForBidAccepted", "AskForBidRejected",
                "BidAccepted", "Running", "Publishing", "BidRejected", "Completed", "Failed",
                "Cancelled"]
    for state, code in EXECUTION_STATE_CODES.items():
        assert bacalhau[code] == state.value
    assert [execution_state_name(code) for code in range(len(bacalhau))] == bacalhau
    assert set(EXECUTION_STATE_CODES) == set(ExecutionState)
