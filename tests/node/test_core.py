"""The decision core, one event at a time: each defect the daemon once had, as a rule.

No network, no store, no clock: events in, instructions out, in microseconds.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace

from node.core import ComputeCore, RequesterCore
from node.core.compute import RESERVATION_TTL_MS
from node.core.events import (
    Announce,
    Announced,
    BidReceived,
    CancelExecution,
    DecisionReceived,
    ExecutionEnded,
    JobNotStored,
    LinkChanged,
    NodeHeard,
    PersistExecution,
    PersistJob,
    Restarted,
    SendBid,
    SendDecision,
    StartExecution,
    StopRequested,
    StoredExecution,
    StoredJob,
    Submitted,
    Tick,
    UpdateReceived,
)
from node.core.reputation import Reputation
from node.core.requester import (
    BID_WINDOW_MS,
    BUSY_RETRY_FIRST_MS,
    DEADLINE_GRACE_MS,
    DECIDE_AFTER_MS,
    MAX_RETRIES,
)
from protocol.jobspec import Job, Resources
from protocol.messages import (
    MAX_CANDIDATES,
    Bid,
    BidDecision,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    NodeInfo,
)
from protocol.scheduling import (
    NodePolicy,
    best_possible_rank,
    bid_rank,
    job_requirements,
    tie_breaker,
    xor_distance,
)
from protocol.states import ExecutionState, JobState

WINDOW = 30_000
TOTAL = Capacity(cpu_milli=2000, memory=4 << 30, disk=10 << 30)
POLICY = NodePolicy(engines=("docker",), storages=("ipfs",), publishers=("ipfs", "local"),
                    labels={}, total=TOTAL)


def job(count: int = 1, queue_timeout: int = 0, timeout: int = 60) -> Job:
    return Job.from_dict({
        "ID": f"j-{uuid.uuid4()}", "Type": "batch", "Count": count,
        "Tasks": [{"Name": "t", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
                   "Timeouts": {"ExecutionTimeout": timeout, "QueueTimeout": queue_timeout}}]})


def info(node_id: str, seq: int = 1, started_ms: int = 0, free: Capacity = TOTAL) -> NodeInfo:
    return NodeInfo(node_id=node_id, version="t", addresses=(), labels={},
                    roles=("compute",), engines=("docker",), storages=("ipfs",),
                    publishers=("ipfs", "local"), total=TOTAL, free=free,
                    running_executions=0, seq=seq, started_ms=started_ms)


def bid(job_id: str, node_id: str, accept: bool = True, busy: bool = False) -> Bid:
    # An accepting bid counts the slot it takes, as a compute node's does.
    return Bid(job_id, f"e-{uuid.uuid4()}", node_id, accept, "" if accept else "no", TOTAL,
               int(accept), busy)


def update(execution_id: str, job_id: str, node_id: str, state: ExecutionState) -> ExecutionUpdate:
    return ExecutionUpdate(job_id=job_id, execution_id=execution_id, node_id=node_id,
                           state=state.value, message=state.value, exit_code=None,
                           stdout="", stderr="")


def requester_with(*nodes: str, now: int = 0) -> RequesterCore:
    core = RequesterCore("me", detection_window_ms=WINDOW)
    core.handle(Restarted(now), now)
    for node_id in nodes:
        core.handle(NodeHeard(info(node_id)), now)
    return core


def of(kind: type, instructions: list) -> list:
    return [i for i in instructions if isinstance(i, kind)]


def job_states(instructions: list) -> list[JobState]:
    return [i.state for i in of(PersistJob, instructions)]


def place(core: RequesterCore, the_job: Job, nodes: list[str], now: int = 0) -> list[Bid]:
    core.handle(Submitted(the_job), now)
    bids = [bid(the_job.id or "", node) for node in nodes]
    for one in bids:
        core.handle(BidReceived(one), now + 1)
    return bids


# -- requester -------------------------------------------------------------------


def test_only_the_nearest_nodes_are_asked_and_the_decision_waits_for_no_one_else() -> None:
    nodes = [f"n{i:03d}" for i in range(100)]
    core = requester_with(*nodes)
    the_job = job()
    (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
    candidates = announce.announcement.candidates
    assert len(candidates) == 3  # one needed, two spare
    out = []
    for node in candidates:
        out += core.handle(BidReceived(bid(the_job.id or "", node)), 5)
    accepted = [d.decision for d in of(SendDecision, out) if d.decision.accepted]
    assert len(accepted) == 1
    assert accepted[0].deadline_ms == 5 + 60_000  # fixed at acceptance
    assert len(of(SendDecision, out)) == 3  # the two others are told, to free their slots


def test_nodes_this_one_is_connected_to_are_asked_before_those_it_would_dial() -> None:
    """Among nodes alike (room, record), a requester asks those it has a connection to, and
    those nearest the job among them; the rest only as they come next, or once the
    connections close."""
    nodes = [f"n{i:03d}" for i in range(100)]
    linked = {"n017", "n042", "n063", "n088"}

    def asked(core: RequesterCore, the_job: Job) -> set[str]:
        (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
        return set(announce.announcement.candidates)

    def connected_requester(*also: str) -> RequesterCore:
        core = requester_with(*nodes, *also)
        for node in linked:
            core.handle(LinkChanged(node, True), 0)
        return core

    for _ in range(20):  # each job on a requester of its own: no asks of others pending
        the_job = job()
        assert asked(connected_requester(), the_job) == set(
            sorted(linked, key=lambda node: xor_distance(the_job.id or "", node))[:3])
    the_job = job()
    core = connected_requester()
    for node in linked:
        core.handle(LinkChanged(node, False), 0)
    assert asked(core, the_job) == asked(requester_with(*nodes), the_job)
    assert not asked(core, the_job) <= linked
    # The node a requester runs on is asked first: its answer crosses no network. The
    # rest of the circle is as before.
    for _ in range(5):
        the_job = job()
        assert asked(connected_requester("me"), the_job) == {"me", *sorted(
            linked, key=lambda node: xor_distance(the_job.id or "", node))[:2]}


def test_a_requester_asks_itself_but_wins_only_as_often_as_its_bid_earns() -> None:
    """Asked first among nodes alike, the requester's own node is one bidder of three: equal
    bids share the jobs, and a busier own node loses to the others."""
    nodes = [f"n{i:03d}" for i in range(100)]
    wins = {"equal": 0, "busier": 0}
    jobs = 600
    for case in wins:
        for _ in range(jobs):
            core = requester_with("me", *nodes)
            the_job = job()
            (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
            assert "me" in announce.announcement.candidates
            out = []
            for node in announce.announcement.candidates:
                offer = bid(the_job.id or "", node)
                if node == "me" and case == "busier":
                    offer = replace(offer, running_executions=2)
                out += core.handle(BidReceived(offer), 1)
            (winner,) = [d.decision.node_id for d in of(SendDecision, out) if d.decision.accepted]
            wins[case] += winner == "me"
    # 200 expected, standard deviation 11.5: a count outside 140-260 is 5 of them away.
    assert 140 <= wins["equal"] <= 260, wins
    assert wins["busier"] == 0


def test_a_round_its_own_bid_settles_asks_no_one_else_and_one_it_cannot_still_asks() -> None:
    """The daemon takes its own bid before asking the others, and asks them only while
    ``still_asking``: when its bid ranks before the best any of them could make, the job is
    placed at once and the others, asked, would only bid to be turned down."""
    nodes = ["a", "b"]
    settled = open_rounds = 0
    for _ in range(60):
        core = requester_with("me", *nodes)
        the_job = job()
        job_id = the_job.id or ""
        (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
        announcement = announce.announcement
        assert core.still_asking(announcement)
        out = core.handle(BidReceived(bid(job_id, "me")), 1)
        own_rank_first = all(tie_breaker(job_id, "me") < tie_breaker(job_id, node)
                             for node in nodes)
        placed = [d.decision.node_id for d in of(SendDecision, out) if d.decision.accepted]
        if own_rank_first:
            settled += 1
            assert placed == ["me"] and not core.still_asking(announcement)
        else:
            open_rounds += 1
            assert placed == [] and core.still_asking(announcement)
            for node in nodes:
                core.handle(BidReceived(bid(job_id, node)), 2)
            assert not core.still_asking(announcement)  # decided with every bid in
    assert settled and open_rounds  # a third of the jobs settle at once: 20 of 60 expected
    # A node too busy for the job: it is asked again in a round of its own, and only that
    # round is the one still asking.
    core = requester_with("a")
    the_job = job()
    (first,) = of(Announce, core.handle(Submitted(the_job), 0))
    core.handle(BidReceived(bid(the_job.id or "", "a", accept=False, busy=True)), 1)
    (again,) = of(Announce, core.handle(Tick(), BUSY_RETRY_FIRST_MS + 1))
    assert not core.still_asking(first.announcement)
    assert core.still_asking(again.announcement)


def test_a_node_with_a_clean_record_wins_over_a_better_bid_from_a_blemished_one() -> None:
    """Among accepting bids, a node whose record is blemished (more failures than
    agreements) is chosen only when no node with a clean record bid."""
    core = requester_with("a", "b")
    core.reputation["a"] = Reputation(failures=1)
    the_job = job()
    core.handle(Submitted(the_job), 0)
    better = replace(bid(the_job.id or "", "a"), free=replace(TOTAL, cpu_milli=4000))
    worse = replace(bid(the_job.id or "", "b"), running_executions=2)
    out = core.handle(BidReceived(better), 1) + core.handle(BidReceived(worse), 2)
    (winner,) = [d.decision.node_id for d in of(SendDecision, out) if d.decision.accepted]
    assert winner == "b"
    # With no clean bid, the blemished one still runs the job.
    core = requester_with("a")
    core.reputation["a"] = Reputation(failures=1)
    the_job = job()
    core.handle(Submitted(the_job), 0)
    out = core.handle(BidReceived(bid(the_job.id or "", "a")), 1)
    assert [d.decision.node_id for d in of(SendDecision, out) if d.decision.accepted] == ["a"]


def test_enough_early_bids_bring_the_decision_forward_while_a_candidate_is_silent() -> None:
    """The interpreter ticks when ``wake_at`` says: a round with enough accepting bids must
    say when it closes (DECIDE_AFTER_MS after it opened), not the whole bid window later."""
    core = requester_with("a", "b", "c")
    the_job = job()
    (announce,) = of(Announce, core.handle(Submitted(the_job), 1_000))
    assert core.wake_at() == 1_000 + BID_WINDOW_MS
    # The other two stay silent, and either could still outbid this one (its tie-break
    # comes last).
    first = max(announce.announcement.candidates,
                key=lambda node: tie_breaker(the_job.id or "", node))
    out = core.handle(BidReceived(bid(the_job.id or "", first)), 1_010)
    assert of(SendDecision, out) == []  # too soon: a better bid may still come
    assert core.wake_at() == 1_000 + DECIDE_AFTER_MS
    out = core.handle(Tick(), core.wake_at())
    (decision,) = [d.decision for d in of(SendDecision, out) if d.decision.accepted]
    assert decision.node_id == first


def test_a_job_that_could_not_be_stored_is_forgotten_and_its_bidders_turned_down() -> None:
    """The daemon asks, and may decide, while the job's creation is written; the winner is
    told only once it has committed. When it fails (a full disk), the client is told so and
    nothing of the job goes on: no write, no placement; every node that bid, the one chosen
    (never told) included, and those whose bids come later, are turned down and so free
    the slot they held for it."""
    core = requester_with("a", "b", "c")
    the_job = job()
    job_id = the_job.id or ""
    (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
    first, *later = announce.announcement.candidates
    core.handle(BidReceived(bid(job_id, first)), 1)
    out = core.handle(JobNotStored(job_id, "database or disk is full"), 2)
    assert [(d.decision.node_id, d.decision.accepted) for d in of(SendDecision, out)] == [
        (first, False)]
    assert "could not be stored: database or disk is full" in out[0].decision.reason
    assert not of(PersistJob, out) and not of(PersistExecution, out)
    assert job_id not in core.plans and core.wake_at() is None
    for node in later:
        out = core.handle(BidReceived(bid(job_id, node)), 3)
        assert [(d.decision.node_id, d.decision.accepted) for d in of(SendDecision, out)] == [
            (node, False)]
    assert not of(Announce, core.handle(Tick(), 60_000))
    # Decided before its creation failed: the winner is turned down too.
    the_job = job()
    job_id = the_job.id or ""
    (announce,) = of(Announce, core.handle(Submitted(the_job), 10))
    out = []
    for node in announce.announcement.candidates:
        out += core.handle(BidReceived(bid(job_id, node)), 11)
    (winner,) = [d.decision for d in of(SendDecision, out) if d.decision.accepted]
    out = core.handle(JobNotStored(job_id, "database or disk is full"), 12)
    assert [(d.decision.execution_id, d.decision.accepted) for d in of(SendDecision, out)] == [
        (winner.execution_id, False)]
    assert not of(PersistJob, out) and not of(PersistExecution, out)
    assert job_id not in core.plans


def test_a_bid_no_silent_node_could_beat_is_decided_on_at_once() -> None:
    """A requester that asked itself and two others decides as soon as it holds a bid that
    none of the others could beat (nothing running there, all they have free, as their
    heartbeats tell, and the tie-break): the winner does not wait for the slower bids, the
    decision is the one all three bids would have made, and the late ones are turned down
    (their slots freed). A silent node that could still win, or one with a record to weigh,
    is waited for."""
    for _ in range(20):
        core = requester_with("me", "a", "b")
        the_job = job()
        job_id = the_job.id or ""
        (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
        ranked = sorted(announce.announcement.candidates,
                        key=lambda node: tie_breaker(job_id, node))
        out = core.handle(BidReceived(bid(job_id, ranked[0])), 1)
        assert [(d.decision.node_id, d.decision.accepted) for d in of(SendDecision, out)] \
            == [(ranked[0], True)]
        for node in ranked[1:]:
            (late,) = of(SendDecision, core.handle(BidReceived(bid(job_id, node)), 2))
            assert (late.decision.node_id, late.decision.accepted) == (node, False)
        # Given every bid at once, the same node wins.
        core = requester_with("me", "a", "b")
        core.handle(Submitted(the_job), 0)
        out = [i for node in ranked for i in core.handle(BidReceived(bid(job_id, node)), 1)]
        assert [d.decision.node_id for d in of(SendDecision, out) if d.decision.accepted] \
            == [ranked[0]]

    def first_of_the_tie_break(the_job: Job) -> str:
        return min(("me", "a", "b"), key=lambda node: tie_breaker(the_job.id or "", node))

    def first_bid_decides(core: RequesterCore, the_job: Job) -> bool:
        (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
        assert set(announce.announcement.candidates) == {"me", "a", "b"}
        first = bid(the_job.id or "", first_of_the_tie_break(the_job))
        return bool(of(SendDecision, core.handle(BidReceived(first), 1)))

    # b has more to offer than the bid in hand (another node's), so could still beat it.
    core = requester_with("me", "a", "b")
    bigger = replace(TOTAL, cpu_milli=4000)
    core.handle(NodeHeard(replace(info("b", seq=2), total=bigger, free=bigger)), 0)
    not_b = next(one for one in iter(job, None) if first_of_the_tie_break(one) != "b")
    assert not first_bid_decides(core, not_b)
    # Nor with a node whose record counts against it among those asked.
    core = requester_with("me", "a", "b")
    core.reputation["a"] = Reputation(failures=1)
    assert not first_bid_decides(core, job())


def test_a_widening_circle_never_names_more_nodes_than_an_announcement_holds() -> None:
    """Every node busy, round after round: the circle doubles until it would name more than
    ``MAX_CANDIDATES``, and then the announcement is open to all instead."""
    nodes = [f"n{i:04d}" for i in range(1000)]
    core = requester_with(*nodes)
    the_job = job(queue_timeout=600)
    out, now, sizes = core.handle(Submitted(the_job), 0), 0, []
    while now < 120_000 and (not sizes or sizes[-1]):
        for announce in of(Announce, out):
            named = announce.announcement.candidates
            sizes.append(len(named))
            for node in named:
                core.handle(BidReceived(bid(the_job.id or "", node, accept=False, busy=True)),
                            now)
        now += 1000
        out = core.handle(Tick(), now)
    assert sizes[:4] == [3, 6, 12, 24] and sizes[-1] == 0
    assert max(sizes) <= MAX_CANDIDATES


def test_count_4_on_3_nodes_queues_until_its_queue_timeout_then_fails_with_the_reason() -> None:
    core = requester_with("a", "b", "c")
    the_job = job(count=4, queue_timeout=5)
    out = core.handle(Submitted(the_job), 0)
    for node in "abc":
        out += core.handle(BidReceived(bid(the_job.id or "", node)), 10)
    assert JobState.FAILED not in job_states(out)
    assert not of(PersistExecution, out)  # nothing placed for a job that cannot run yet
    now, out = 10, []
    while JobState.FAILED not in job_states(out) and now < 20_000:
        now += 250
        out = core.handle(Tick(), now)
        for announce in of(Announce, out):
            for node in announce.announcement.candidates or ("a", "b", "c"):
                out += core.handle(BidReceived(bid(the_job.id or "", node)), now)
    assert 5000 <= now < 7000
    (failed,) = [i for i in of(PersistJob, out) if i.state == JobState.FAILED]
    assert "Count 4" in failed.message and "only 3 can take the job" in failed.message


def test_busy_nodes_keep_a_job_queued_and_it_is_placed_when_a_slot_frees() -> None:
    core = requester_with("a")
    the_job = job()
    core.handle(Submitted(the_job), 0)
    out = core.handle(BidReceived(bid(the_job.id or "", "a", accept=False, busy=True)), 5)
    assert JobState.FAILED not in job_states(out)
    out = core.handle(Tick(), 5000)
    (announce,) = of(Announce, out)
    out = core.handle(BidReceived(bid(the_job.id or "", "a")), 5005)
    assert [d.decision.accepted for d in of(SendDecision, out)] == [True]


def wait_busy(core: RequesterCore, node: str, now: int) -> Job:
    """A job submitted at ``now`` that ``node``, busy, declines: it waits."""
    the_job = job()
    core.handle(Submitted(the_job), now)
    core.handle(BidReceived(bid(the_job.id or "", node, accept=False, busy=True)), now)
    assert core.plans[the_job.id or ""].retry_at_ms == now + BUSY_RETRY_FIRST_MS
    return the_job


def announced(instructions: list) -> list[str]:
    return [i.announcement.job_id for i in of(Announce, instructions)]


def test_a_slot_freed_on_a_node_wakes_the_longest_waiting_job_alone() -> None:
    core = requester_with("a")
    running = job()
    (won,) = place(core, running, ["a"])
    first, second = wait_busy(core, "a", 10), wait_busy(core, "a", 20)
    freed = BUSY_RETRY_FIRST_MS // 2
    assert not announced(core.handle(Tick(), freed))  # busy: no asking on a short timer
    out = core.handle(UpdateReceived(update(won.execution_id, running.id or "", "a",
                                            ExecutionState.COMPLETED)), freed)
    out += core.handle(Tick(), freed)
    assert announced(out) == [first.id]  # one slot, one announcement
    # The queue moved, so the next in it waits for the next freed slot...
    assert not announced(core.handle(Tick(), 20 + BUSY_RETRY_FIRST_MS))
    # ...or, if none is heard of, asks once the queue has stalled that long.
    assert announced(core.handle(Tick(), freed + BUSY_RETRY_FIRST_MS)) == [second.id]


def test_a_heartbeat_with_fewer_running_wakes_a_waiting_job_that_fits_that_node() -> None:
    core = requester_with("a")
    core.handle(NodeHeard(replace(info("a", seq=2), running_executions=2)), 5)
    waiting = wait_busy(core, "a", 10)
    # Another requester's execution ended there: only the node's heartbeat says so.
    out = core.handle(NodeHeard(replace(info("a", seq=3), running_executions=1)), 300)
    out += core.handle(Tick(), 300)
    assert announced(out) == [waiting.id]


def test_each_heartbeat_with_fewer_running_wakes_a_waiting_job() -> None:
    """A job woken by one load news must not make the next news look already used: only a
    job woken by one of our own executions ending there is (that slot is in the news)."""
    core = requester_with("a")
    core.handle(NodeHeard(replace(info("a", seq=2), running_executions=3)), 5)
    first, _second = wait_busy(core, "a", 10), wait_busy(core, "a", 20)
    out = core.handle(NodeHeard(replace(info("a", seq=3), running_executions=2)), 300)
    out += core.handle(Tick(), 300)
    assert announced(out) == [first.id]
    # Taken by someone else meanwhile: it waits again, the longest-waiting still.
    core.handle(BidReceived(bid(first.id or "", "a", accept=False, busy=True)), 310)
    out = core.handle(NodeHeard(replace(info("a", seq=4), running_executions=1)), 600)
    out += core.handle(Tick(), 600)
    assert announced(out) == [first.id]


def test_a_slot_freed_on_a_node_the_job_does_not_fit_wakes_nothing() -> None:
    core = requester_with("a")
    core.handle(NodeHeard(replace(info("w", seq=1), engines=("wasm",), running_executions=1)),
                0)
    waiting = wait_busy(core, "a", 10)
    out = core.handle(NodeHeard(replace(info("w", seq=2), engines=("wasm",))), 300)
    out += core.handle(Tick(), 300)
    assert not announced(out)
    assert announced(core.handle(Tick(), 10 + BUSY_RETRY_FIRST_MS)) == [waiting.id]


def test_a_node_that_comes_to_fit_a_waiting_job_wakes_it_when_a_slot_frees() -> None:
    """Whether a waiting job fits a node is remembered between freed slots, but not past a
    heartbeat that changes what the node offers."""
    core = requester_with("a")
    core.handle(NodeHeard(replace(info("w", seq=1), engines=("wasm",), running_executions=3)),
                0)
    waiting = wait_busy(core, "a", 10)
    out = core.handle(NodeHeard(replace(info("w", seq=2), engines=("wasm",),
                                        running_executions=2)), 300)
    out += core.handle(Tick(), 300)
    assert not announced(out)  # checked against "w", and it does not fit
    out = core.handle(NodeHeard(replace(info("w", seq=3), engines=("wasm", "docker"),
                                        running_executions=1)), 600)
    out += core.handle(Tick(), 600)
    assert announced(out) == [waiting.id]
    # And the other way: once "w" no longer offers docker, it is no candidate for the job.
    plan = core.plans[waiting.id or ""]
    assert "w" in core._candidates(plan, 700, exclude=set())
    core.handle(NodeHeard(replace(info("w", seq=4), engines=("wasm",))), 900)
    assert "w" not in core._candidates(plan, 900, exclude=set())


def test_jobs_alike_share_what_fits_and_a_job_that_differs_in_anything_a_node_checks_does_not(
) -> None:
    """What fits which node is worked out once for jobs of one shape (a requester placing
    on 100 nodes spent 1 ms a job on it); a job that differs in engine, input storage,
    publisher, constraints or resources is checked on its own."""
    everything = replace(info("all", seq=1), engines=("docker", "noop"),
                         storages=("ipfs", "s3"), publishers=("ipfs", "local", "s3"),
                         labels={"region": "eu"},
                         total=Capacity(cpu_milli=8000, memory=64 << 30, disk=10 << 30))
    core = requester_with("plain")  # docker, ipfs, local publisher, 2 CPUs, 4 GiB, no labels
    core.handle(NodeHeard(everything), 0)

    def asked(spec: dict) -> set[str]:
        the_job = Job.from_dict({"ID": f"j-{uuid.uuid4()}", "Type": "batch", "Count": 1,
                                 **spec})
        (announce,) = of(Announce, core.handle(Submitted(the_job), 0))
        for node in announce.announcement.candidates:  # answered: no ask left open
            core.handle(BidReceived(bid(the_job.id or "", node, accept=False)), 1)
        return set(announce.announcement.candidates)

    def task(**fields: object) -> dict:
        return {"Tasks": [{"Name": "t", "Engine": {"Type": "docker",
                                                   "Params": {"Image": "busybox"}},
                           **fields}]}

    both = {"plain", "all"}
    assert asked(task()) == both
    assert asked(task()) == both  # alike: from the shared table
    assert asked({"Tasks": [{"Name": "t", "Engine": {"Type": "noop"}}]}) == {"all"}
    assert asked(task(InputSources=[{"Target": "/in", "Source": {
        "Type": "s3", "Params": {"Bucket": "inputs", "Key": "k"}}}])) == {"all"}
    assert asked(task(Publisher={"Type": "s3", "Params": {"Bucket": "results", "Key": "k"}})) == {
        "all"}
    assert asked({**task(), "Constraints": [
        {"Key": "region", "Operator": "=", "Values": ["eu"]}]}) == {"all"}
    assert asked(task(Resources={"CPU": "4"})) == {"all"}
    assert asked(task(Resources={"Memory": "8gb"})) == {"all"}
    assert asked(task()) == both

def test_a_burst_asks_a_node_twice_at_most_at_once_and_each_accept_lets_one_more_ask() -> None:
    """50 jobs at once on one node: 2 ask (MAX_OPEN_ASKS_PER_NODE), the others wait without
    drawing "busy" declines. A node that accepts may have room for more: one more job asks
    it, alone; a busy answer ends that chain."""
    core = requester_with("a")
    jobs = [job() for _ in range(50)]
    out: list = []
    for submitted_ms, the_job in enumerate(jobs):
        out += core.handle(Submitted(the_job), submitted_ms)
    assert announced(out) == [jobs[0].id, jobs[1].id]
    assert all(core.plans[j.id or ""].busy_wait for j in jobs[2:])
    out = core.handle(BidReceived(bid(jobs[0].id or "", "a")), 60)
    out += core.handle(Tick(), 60)
    (third,) = of(Announce, out)
    assert third.announcement.job_id == jobs[2].id  # the longest waiting
    assert third.announcement.candidates == ("a",)
    out = core.handle(BidReceived(bid(jobs[2].id or "", "a", accept=False, busy=True)), 61)
    assert not announced(out + core.handle(Tick(), 61))


def test_jobs_that_take_no_slot_are_all_asked_for_at_once() -> None:
    """A noop job runs no container, so a compute node takes any number of them undecided:
    a burst of them is not held to MAX_OPEN_ASKS_PER_NODE."""
    core = requester_with("a")
    core.nodes["a"].info = replace(core.nodes["a"].info, engines=("docker", "noop"))
    noop_jobs = [Job.from_dict({"ID": f"j-{uuid.uuid4()}", "Type": "batch", "Count": 1,
                                "Tasks": [{"Name": "t", "Engine": {"Type": "noop"}}]})
                 for _ in range(20)]
    out: list = []
    for the_job in noop_jobs:
        out += core.handle(Submitted(the_job), 0)
    assert announced(out) == [the_job.id for the_job in noop_jobs]


def test_a_bid_turned_down_wakes_a_job_waiting_for_that_node_at_once() -> None:
    """The requester frees the slot of a bid it did not choose: a job waiting for that node
    asks for it there and then, not at the node's next load news a second later."""
    core = requester_with("a", "b")
    for waited_ms in range(4):  # four jobs both nodes turned away as busy
        waiting = job()
        core.handle(Submitted(waiting), waited_ms)
        for node in "ab":
            core.handle(BidReceived(bid(waiting.id or "", node, accept=False, busy=True)),
                        waited_ms)
    first = job()
    core.handle(Submitted(first), 10)
    out = []
    for node in "ab":  # each accept lets one waiting job ask that node
        out += core.handle(BidReceived(bid(first.id or "", node)), 20)
    out += core.handle(Tick(), 20)
    (turned_down,) = [d.decision.node_id for d in of(SendDecision, out)
                      if not d.decision.accepted]
    asks = Counter(a.announcement.candidates for a in of(Announce, out))
    assert asks[(turned_down,)] == 2  # one for its accept, one for the slot freed again


def test_a_freed_slot_wakes_no_job_that_needs_more_nodes_than_there_are() -> None:
    core = requester_with("a")
    running = job()
    (won,) = place(core, running, ["a"])
    too_big = job(count=2, queue_timeout=60)
    core.handle(Submitted(too_big), 10)  # asks everyone: one known node is too few
    core.handle(BidReceived(bid(too_big.id or "", "a", accept=False, busy=True)), 10)
    core.handle(Tick(), 3100)  # its bid window closes; it waits, on its own timer
    behind = wait_busy(core, "a", 3200)
    out = core.handle(UpdateReceived(update(won.execution_id, running.id or "", "a",
                                            ExecutionState.COMPLETED)), 3300)
    assert announced(out + core.handle(Tick(), 3300)) == [behind.id]


def test_a_bid_delivered_twice_does_not_cancel_the_execution_it_won() -> None:
    core = requester_with("a", "b", "c")
    the_job = job()
    bids = place(core, the_job, ["a", "b", "c"])
    winner = next(b for b in bids if b.execution_id in core.plans[the_job.id or ""].executions)
    out = core.handle(BidReceived(winner), 50)
    assert not out


def test_an_update_that_skips_states_records_every_one_and_completes_the_job() -> None:
    core = requester_with("a")
    the_job = job()
    (won,) = place(core, the_job, ["a"])
    out = core.handle(UpdateReceived(update(won.execution_id, the_job.id or "", "a",
                                            ExecutionState.COMPLETED)), 100)
    assert [i.state for i in of(PersistExecution, out)] == [
        ExecutionState.RUNNING, ExecutionState.PUBLISHING, ExecutionState.COMPLETED]
    assert job_states(out) == [JobState.RUNNING, JobState.COMPLETED]


def test_a_silent_node_loses_its_execution_which_is_placed_again_elsewhere() -> None:
    core = requester_with("a", "b")
    the_job = job()
    core.handle(Submitted(the_job), 0)
    for node in "ab":
        core.handle(BidReceived(bid(the_job.id or "", node)), 1)
    (execution,) = core.plans[the_job.id or ""].executions.values()
    survivor = "b" if execution.node_id == "a" else "a"
    core.handle(NodeHeard(info(survivor, seq=2)), WINDOW)
    out = core.handle(Tick(), WINDOW + 1)
    (lost,) = of(PersistExecution, out)
    assert lost.state == ExecutionState.FAILED and lost.retryable
    assert "stopped responding" in lost.message
    (announce,) = of(Announce, out)
    assert announce.announcement.candidates == (survivor,)


def test_a_node_that_restarted_within_the_detection_window_loses_its_execution() -> None:
    core = requester_with("a")
    the_job = job()
    place(core, the_job, ["a"], now=1000)
    out = core.handle(NodeHeard(info("a", seq=2, started_ms=5000)), 13_000)
    (lost,) = of(PersistExecution, out)
    assert "restarted" in lost.message and lost.retryable


def test_executions_on_this_node_before_its_restart_are_lost() -> None:
    the_job = job()
    stored = StoredJob(the_job, JobState.RUNNING, 1000, (
        StoredExecution("e-1", "me", ExecutionState.RUNNING, 1000),))
    core = RequesterCore("me", detection_window_ms=WINDOW)
    out = core.handle(Restarted(9000, (stored,)), 9000)
    out += core.handle(Tick(), 9100)
    assert any(i.state == ExecutionState.FAILED and "restarted" in i.message
               for i in of(PersistExecution, out))


def test_a_restarted_requester_does_not_fail_healthy_nodes_before_hearing_them() -> None:
    the_job = job()
    stored = StoredJob(the_job, JobState.RUNNING, 1000, (
        StoredExecution("e-1", "a", ExecutionState.RUNNING, 1000),))
    core = RequesterCore("me", detection_window_ms=WINDOW)
    core.handle(Restarted(10_000, (stored,)), 10_000)
    assert not of(PersistExecution, core.handle(Tick(), 15_000))
    # The node's own word still counts once it comes.
    out = core.handle(UpdateReceived(update("e-1", the_job.id or "", "a",
                                            ExecutionState.COMPLETED)), 16_000)
    assert job_states(out) == [JobState.COMPLETED]


def test_a_restarted_requester_resumes_its_waiting_jobs() -> None:
    the_job = job()
    core = RequesterCore("me", detection_window_ms=WINDOW)
    core.handle(NodeHeard(info("a")), 0)
    out = core.handle(Restarted(5000, (StoredJob(the_job, JobState.PENDING, 4000),)), 5000)
    assert job_states(out) == [JobState.QUEUED]
    assert len(of(Announce, out)) == 1


def test_an_execution_past_its_deadline_is_failed_and_placed_again() -> None:
    core = requester_with("a", "b")
    the_job = job(timeout=10)
    place(core, the_job, ["a", "b"])
    for now in (5_000, 15_000, 20_000, 25_000):
        core.handle(NodeHeard(info("a", seq=now)), now)
        core.handle(NodeHeard(info("b", seq=now)), now)
    quiet = core.handle(Tick(), 1 + 10_000 + DEADLINE_GRACE_MS)
    assert not of(PersistExecution, quiet)
    out = core.handle(Tick(), 2 + 10_000 + DEADLINE_GRACE_MS)
    (lost,) = of(PersistExecution, out)
    assert "by the job's 10s deadline" in lost.message and lost.retryable


def test_the_retry_budget_runs_out_and_the_job_fails() -> None:
    nodes = [f"n{i}" for i in range(MAX_RETRIES + 3)]
    core = requester_with(*nodes)
    the_job = job()
    core.handle(Submitted(the_job), 0)
    failed_job = []
    for attempt in range(MAX_RETRIES + 1):
        plan = core.plans[the_job.id or ""]
        candidates = plan.round.asked
        out = []
        for node in sorted(candidates):
            out += core.handle(BidReceived(bid(the_job.id or "", node)), attempt * 100 + 1)
        (execution,) = [e for e in plan.executions.values() if e.state.is_active]
        out = core.handle(NodeHeard(info(execution.node_id, seq=2, started_ms=10**9)),
                          attempt * 100 + 2)
        failed_job = job_states(out)
    assert failed_job == [JobState.FAILED]


def test_stop_cancels_running_executions_and_the_job_ends_stopped() -> None:
    core = requester_with("a")
    the_job = job()
    place(core, the_job, ["a"])
    out = core.handle(StopRequested(the_job.id or "", "by user"), 50)
    assert [d.decision.accepted for d in of(SendDecision, out)] == [False]
    assert [i.state for i in of(PersistExecution, out)] == [ExecutionState.CANCELLED]
    assert job_states(out) == [JobState.STOPPED]
    assert the_job.id not in core.plans


# -- compute ---------------------------------------------------------------------


def announce(the_job: Job, candidates: tuple[str, ...] = ()) -> Announced:
    from protocol.messages import JobAnnouncement

    return Announced(JobAnnouncement(the_job.id or "", "req", the_job.to_dict(), 0, candidates),
                     the_job, f"e-{uuid.uuid4()}")


def test_a_node_with_every_slot_taken_declines_as_busy() -> None:
    core = ComputeCore("me", POLICY, max_jobs=2)
    bids = [of(SendBid, core.handle(announce(job()), 0))[0].bid for _ in range(3)]
    assert [b.accept for b in bids] == [True, True, False]
    assert bids[2].busy and "2 of 2 slot(s)" in bids[2].reason
    assert core.running == 2


def test_no_accepting_bid_ranks_before_the_best_a_requester_expects_of_the_node() -> None:
    """What a requester that decides before every bid is in relies on: whatever a compute
    node runs already, and whatever the job asks for or leaves to the node's defaults, its
    accepting bid ranks no better than ``best_possible_rank`` of its total capacity."""
    def asking(resources: dict[str, str]) -> Job:
        spec = job().to_dict()
        spec["Tasks"][0]["Resources"] = resources
        return Job.from_dict(spec)

    roomy = replace(POLICY, total=Capacity(cpu_milli=16_000, memory=64 << 30, disk=100 << 30))
    with_defaults = replace(roomy, job_defaults=Resources(cpu_milli=500, memory=1 << 30))
    for policy in (roomy, with_defaults):
        core = ComputeCore("me", policy, max_jobs=0)
        for resources in ({}, {"CPU": "250m"}, {"CPU": "1", "Memory": "512Mi"}, {}):
            the_job = asking(resources)
            (sent,) = of(SendBid, core.handle(announce(the_job), 0))
            assert sent.bid.accept
            assert bid_rank(sent.bid) >= best_possible_rank(
                the_job.id or "", "me", policy.total, job_requirements(the_job))
    # The bound is met exactly by an idle node and a job that says what it takes.
    the_job = asking({"CPU": "1", "Memory": "512Mi"})
    (sent,) = of(SendBid, ComputeCore("me", POLICY, max_jobs=0).handle(announce(the_job), 0))
    assert bid_rank(sent.bid) == best_possible_rank(the_job.id or "", "me", TOTAL,
                                                    job_requirements(the_job))


def test_max_jobs_zero_means_no_limit() -> None:
    core = ComputeCore("me", POLICY, max_jobs=0)
    bids = [of(SendBid, core.handle(announce(job()), 0))[0].bid for _ in range(20)]
    assert all(b.accept for b in bids) and core.running == 20


def test_a_node_takes_jobs_only_from_the_requesters_it_accepts() -> None:
    from dataclasses import replace

    def first_bid(core: ComputeCore, requester: str) -> Bid:
        the_job = job()
        event = Announced(JobAnnouncement(the_job.id or "", requester, the_job.to_dict(), 0),
                          the_job, f"e-{uuid.uuid4()}")
        return of(SendBid, core.handle(event, 0))[0].bid

    only_friend = ComputeCore("me", replace(POLICY, accept_requesters=frozenset({"friend"})),
                              max_jobs=4)
    assert first_bid(only_friend, "friend").accept
    stranger = first_bid(only_friend, "stranger")
    assert not stranger.accept and not stranger.busy
    assert stranger.reason == "this node takes jobs only from the requesters it lists"
    no_pest = ComputeCore("me", replace(POLICY, reject_requesters=frozenset({"pest"})),
                          max_jobs=4)
    assert first_bid(no_pest, "req").accept
    assert first_bid(no_pest, "pest").reason == "this node does not take jobs from this requester"


def test_one_requester_cannot_hold_more_than_its_share_of_a_node() -> None:
    from dataclasses import replace

    core = ComputeCore("me", replace(POLICY, max_per_requester=2), max_jobs=8)
    bids = [of(SendBid, core.handle(announce(job()), 0))[0].bid for _ in range(3)]
    assert [b.accept for b in bids] == [True, True, False]
    assert bids[2].busy and "this requester holds 2 execution(s) here" in bids[2].reason
    the_job = job()
    other = Announced(JobAnnouncement(the_job.id or "", "other", the_job.to_dict(), 0),
                      the_job, f"e-{uuid.uuid4()}")
    assert of(SendBid, core.handle(other, 0))[0].bid.accept  # another requester still fits


def test_a_requester_that_never_decides_holds_at_most_half_the_slots() -> None:
    """A spammer's announcements each take a slot until its bids expire: at most half."""
    core = ComputeCore("me", POLICY, max_jobs=6)
    spam = [of(SendBid, core.handle(announce(job()), 0))[0].bid for _ in range(5)]
    assert [b.accept for b in spam] == [True, True, True, False, False]
    assert spam[3].busy and "3 bid(s) of this requester not decided yet" in spam[3].reason
    the_job = job()
    other = Announced(JobAnnouncement(the_job.id or "", "other", the_job.to_dict(), 0),
                      the_job, f"e-{uuid.uuid4()}")
    assert of(SendBid, core.handle(other, 0))[0].bid.accept


def test_slots_a_requester_held_count_again_once_decided_ended_or_expired() -> None:
    """Every way a slot ends gives it back to the limits that count a requester's slots: a
    requester at its limit bids again after a rejection, after an end, after a TTL."""
    from dataclasses import replace

    core = ComputeCore("me", replace(POLICY, max_per_requester=2), max_jobs=6)

    def bid(at: int = 0) -> Bid:
        return of(SendBid, core.handle(announce(job()), at))[0].bid

    def decide(sent: Bid, accepted: bool) -> None:
        decision = BidDecision(sent.job_id, sent.execution_id, "me", accepted, "ok", 99_000)
        core.handle(DecisionReceived(decision, "req"), 1)

    first, second = bid(), bid()
    assert not bid().accept
    decide(first, False)  # a loser's slot is free again
    third = bid()
    assert third.accept and not bid().accept
    decide(second, True)
    core.handle(ExecutionEnded(second.execution_id), 2)  # so is a finished one's
    assert bid(3).accept and not bid(3).accept
    core.handle(Tick(), 3 + RESERVATION_TTL_MS)  # and an undecided one's, when it expires
    assert core.running == 0 and core.containers == 0 and core.free == TOTAL
    assert [bid(4).accept for _ in range(3)] == [True, True, False]

    spammed = ComputeCore("me", POLICY, max_jobs=6)  # undecided bids: at most half the slots
    held = [of(SendBid, spammed.handle(announce(job()), 0))[0].bid for _ in range(3)]
    for sent in held:  # decided and started, they no longer count as undecided
        decision = BidDecision(sent.job_id, sent.execution_id, "me", True, "ok", 99_000)
        spammed.handle(DecisionReceived(decision, "req"), 1)
    more = [of(SendBid, spammed.handle(announce(job()), 1))[0].bid for _ in range(4)]
    assert [b.accept for b in more] == [True, True, True, False]
    assert spammed.containers == 6 and "6 of 6 slot(s)" in more[3].reason


def test_a_node_not_named_in_the_announcement_stays_quiet() -> None:
    core = ComputeCore("me", POLICY, max_jobs=2)
    assert core.handle(announce(job(), candidates=("someone-else",)), 0) == []
    assert of(SendBid, core.handle(announce(job(), candidates=("me",)), 0))


def test_an_accepted_bid_starts_with_the_requesters_deadline_and_a_rejected_one_frees_its_slot(
) -> None:
    core = ComputeCore("me", POLICY, max_jobs=1)
    the_job = job()
    sent = of(SendBid, core.handle(announce(the_job), 0))[0].bid
    decision = BidDecision(the_job.id or "", sent.execution_id, "me", True, "ok", 99_000)
    assert core.handle(DecisionReceived(decision, "someone-else"), 1) == []  # not its requester
    (start,) = core.handle(DecisionReceived(decision, "req"), 1)
    assert isinstance(start, StartExecution) and start.deadline_ms == 99_000
    reject = BidDecision(the_job.id or "", sent.execution_id, "me", False, "stopped")
    (cancel,) = core.handle(DecisionReceived(reject, "req"), 2)
    assert isinstance(cancel, CancelExecution)
    core.handle(ExecutionEnded(sent.execution_id), 3)
    assert core.running == 0


def test_a_bid_never_decided_frees_its_slot_after_the_reservation_ttl() -> None:
    core = ComputeCore("me", POLICY, max_jobs=1)
    core.handle(announce(job()), 0)
    core.handle(Tick(), RESERVATION_TTL_MS - 1)
    assert core.running == 1
    core.handle(Tick(), RESERVATION_TTL_MS)
    assert core.running == 0 and core.free == TOTAL


def test_a_burst_of_jobs_is_announced_no_faster_than_the_rate_and_loses_none() -> None:
    from protocol.messages import ANNOUNCEMENT_BURST, ANNOUNCEMENTS_PER_SECOND

    core = requester_with("a", "b", "c")
    total = ANNOUNCEMENT_BURST + 4 * ANNOUNCEMENTS_PER_SECOND
    jobs = [job(queue_timeout=600) for _ in range(total)]
    announced: dict[str, int] = {}
    now = 0

    def answer(instructions: list) -> None:
        """Every node asked bids at once; the job is placed and asks no more."""
        for instruction in of(Announce, instructions):
            announcement = instruction.announcement
            announced.setdefault(announcement.job_id, now)
            for node in announcement.candidates or ("a", "b", "c"):
                core.handle(BidReceived(bid(announcement.job_id, node)), now)

    for the_job in jobs:
        answer(core.handle(Submitted(the_job), now))
    assert len(announced) == ANNOUNCEMENT_BURST
    while len(announced) < total and now < 60_000:
        now += 100
        answer(core.handle(Tick(), now))
    assert len(announced) == total
    # The rest after the burst at the rate: 4 s, never more than the rate in any second.
    assert 3_500 <= max(announced.values()) <= 4_500
    per_second = Counter(t // 1000 for t in announced.values() if t > 0)
    assert max(per_second.values()) <= ANNOUNCEMENTS_PER_SECOND + 1
    assert not [i for i in core.handle(Tick(), now) if isinstance(i, PersistJob)
                and i.state == JobState.FAILED]


def test_announcements_open_to_all_go_out_at_their_own_lower_rate() -> None:
    """A requester that knows no compute node yet gossips a burst of jobs to everyone:
    OPEN_ANNOUNCEMENT_BURST at once, then OPEN_ANNOUNCEMENTS_PER_SECOND (every node reads
    those). Once it hears of nodes, the jobs still waiting are asked straight, at the full
    rate."""
    from protocol.messages import OPEN_ANNOUNCEMENT_BURST, OPEN_ANNOUNCEMENTS_PER_SECOND

    core = requester_with()
    announced: dict[str, tuple[int, tuple[str, ...]]] = {}

    def note(instructions: list, now: int) -> None:
        for instruction in of(Announce, instructions):
            announcement = instruction.announcement
            announced.setdefault(announcement.job_id, (now, announcement.candidates))

    for _ in range(60):
        note(core.handle(Submitted(job(queue_timeout=600)), 0), 0)
    assert len(announced) == OPEN_ANNOUNCEMENT_BURST
    for now in range(100, 2_001, 100):
        note(core.handle(Tick(), now), now)
    open_ones = [t for t, candidates in announced.values() if not candidates]
    assert len(open_ones) == len(announced)
    assert len(announced) == OPEN_ANNOUNCEMENT_BURST + 2 * OPEN_ANNOUNCEMENTS_PER_SECOND
    per_second = Counter(t // 1000 for t in open_ones if t > 0)
    assert max(per_second.values()) <= OPEN_ANNOUNCEMENTS_PER_SECOND + 1

    # Enough nodes for every waiting job's asks (at most MAX_OPEN_ASKS_PER_NODE each).
    for node in range(60):
        note(core.handle(NodeHeard(info(f"n{node}")), 2_050), 2_050)
    note(core.handle(Tick(), 2_100), 2_100)
    asked_straight = [t for t, candidates in announced.values() if candidates]
    assert len(announced) == 60 and len(asked_straight) == 60 - len(open_ones)
    assert max(asked_straight) <= 2_100


def test_the_job_defaults_are_a_containers_and_a_noop_job_reserves_none() -> None:
    """500m by default for a container made 2 cores take 4 jobs at once: no-op jobs too,
    which halved their throughput."""
    from dataclasses import replace

    from protocol.jobspec import Resources

    policy = replace(POLICY, engines=("docker", "noop"),
                     job_defaults=Resources(cpu_milli=1000, memory=1 << 30))
    core = ComputeCore("me", policy, max_jobs=8)
    noop = Job.from_dict({"Type": "batch", "Tasks": [{"Name": "t", "Engine": {"Type": "noop"}}]})
    bids = [of(SendBid, core.handle(announce(replace(noop, id=f"j-{uuid.uuid4()}")), 0))[0].bid
            for _ in range(10)]
    assert all(b.accept for b in bids)
    docker = [of(SendBid, core.handle(announce(job()), 0))[0].bid for _ in range(3)]
    assert [b.accept for b in docker] == [True, True, False]  # 2 of 2000m at 1000m each
