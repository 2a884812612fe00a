"""The deterministic simulation: invariants across seeds and faults, determinism, scale.

These run the real decision core for 50 to 1,000 nodes in one process; each run
takes well under two seconds here.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

import node.core.requester as requester_core
from protocol.states import JobState
from tests.sim.__main__ import shrink, summary, trace_lines
from tests.sim.world import FAULT_SETS, World

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_invariant_holds_at_50_nodes_with_every_fault(seed: int) -> None:
    world = World(nodes=50, jobs=100, seed=seed, faults=FAULT_SETS["all"]).run()
    assert world.violation is None, summary(world)
    outcomes = world.outcomes()
    assert set(outcomes) <= {"Completed", "Failed"}
    # The jobs that ask for more nodes than there are fail; of the others, only one whose
    # retry budget the faults used up may (seeds 1-30: 0 or 1 in 100), and saying so.
    unmeetable = sum(plan.job.count > 50 for plan in world.plans)
    gave_up = [world._store_of(plan).messages[plan.job.id or ""] for plan in world.plans
               if plan.job.count <= 50 and world._store_of(plan).jobs[plan.job.id or ""][1]
               == JobState.FAILED]
    assert len(gave_up) <= 1 and all("gave up after 2 retries" in m for m in gave_up), gave_up
    assert outcomes["Failed"] == unmeetable + len(gave_up)
    assert outcomes["Completed"] == 100 - unmeetable - len(gave_up)


def test_the_same_seed_gives_the_same_trace() -> None:
    def run(seed: int) -> World:
        return World(nodes=30, jobs=40, seed=seed, faults=FAULT_SETS["all"], trace=True).run()

    first, again, other = run(7), run(7), run(8)
    assert first.trace == again.trace and len(first.trace) > 500
    assert summary(first) == summary(again)
    assert first.trace != other.trace


def test_the_command_prints_a_summary_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.sim", "--nodes", "50", "--jobs", "100", "--seed", "1",
         "--faults", "all"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "invariants: all held" in result.stdout
    assert "outcomes: Completed" in result.stdout


def test_an_unknown_fault_kind_is_one_clear_line() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.sim", "--faults", "drop,meteor"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown fault kind(s) meteor" in result.stderr


class _RequesterThatForgetsLostExecutions(requester_core.RequesterCore):
    """A planted bug: a lost execution is failed but never placed again."""

    def _lost(self, plan, execution, reason, now, *, fault=None):  # type: ignore[no-untyped-def]
        self._set_execution(plan, execution, requester_core.ExecutionState.FAILED, reason,
                            retryable=True)


def test_a_core_that_loses_jobs_is_caught_with_a_short_trace() -> None:
    make = partial(World, requester_core=_RequesterThatForgetsLostExecutions)
    world = make(nodes=50, jobs=100, seed=1, faults=FAULT_SETS["all"]).run()
    assert world.violation is not None
    assert "past its bound" in str(world.violation)
    small = shrink(50, 100, 1, FAULT_SETS["all"], make=make)
    assert small.violation is not None
    assert len(small.plans) < 100 and len(small.nodes) <= 50
    lines = trace_lines(small)
    assert any("crashes" in line for line in lines)
    assert any(small.violation.job_id[:10] in line for line in lines)


def test_placing_more_than_count_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = requester_core.choose_bids
    # A planted bug: one bid more than the job needs is accepted.
    monkeypatch.setattr(requester_core, "choose_bids",
                        lambda bids, count, exclude=(): real(bids, count + 1, exclude))
    world = World(nodes=20, jobs=20, seed=1, faults=()).run()
    assert world.violation is not None
    assert "more than its Count" in str(world.violation)


def test_per_job_cost_does_not_grow_with_the_network() -> None:
    def run(nodes: int) -> World:
        return World(nodes=nodes, jobs=200, seed=3, faults=(), unmeetable_share=0).run()

    at_100, at_1000 = run(100), run(1000)
    for world in (at_100, at_1000):
        assert world.violation is None
        assert world.outcomes()["Completed"] == 200
    per_job = {n: (w.stats.bids / 200, w.stats.messages / 200)
               for n, w in ((100, at_100), (1000, at_1000))}
    assert per_job[1000][0] <= 1.5 * per_job[100][0], per_job
    assert per_job[1000][1] <= 1.5 * per_job[100][1], per_job
    # Only a handful of nodes are asked per job, not the network.
    assert per_job[1000][0] < 6


def test_load_spreads_over_nodes_of_equal_capacity() -> None:
    world = World(nodes=20, jobs=400, seed=5, faults=(), unmeetable_share=0).run()
    assert world.violation is None
    completions = world.stats.completions
    share = sum(completions.values()) / 20
    assert len(completions) == 20
    assert max(completions.values()) <= 2 * share, completions


def test_liars_among_1000_nodes_are_outvoted_and_never_accepted() -> None:
    """Commit-reveal in the simulation: 10 % of 1,000 nodes lie, 60 % of jobs are verified,
    with network faults. No verdict accepts a lie and no requester places an execution on a
    node it distrusts (both checked at every step); liars are outvoted; a job fails only
    where two liars met in one vote (no consensus), it asked for more nodes than exist, or
    the network faults took all three of its attempts (none at this seed; seeds 2, 4 and 5
    have one to three of 300, so the count is bounded rather than pinned to zero)."""
    world = World(nodes=1000, jobs=300, seed=3, faults=FAULT_SETS["net"],
                  verified_share=0.6, liar_share=0.1).run()
    assert world.violation is None, summary(world)
    stats = world.stats
    assert stats.verdicts["Verified"] >= 150 and stats.liars_outvoted >= 20, summary(world)
    unmeetable = sum(plan.job.count > 1000 for plan in world.plans)
    retries_spent = sum(f"gave up after {requester_core.MAX_RETRIES} retries" in message
                        for node in world.nodes for message in node.store.messages.values())
    assert retries_spent <= 3, summary(world)
    assert world.outcomes()["Failed"] == (unmeetable + stats.verdicts["NoConsensus"]
                                          + retries_spent), summary(world)
    liars = sum(node.liar for node in world.nodes)
    assert 50 <= liars <= 150
    assert f"liars {liars} of 1000 nodes" in summary(world) and "never accepted" in summary(world)
