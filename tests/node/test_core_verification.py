"""Commit-reveal in the requester's core, one event at a time: the honest case and each
adversary of issue 12 as a rule (liar, copier, withholder, colluding minority,
equivocator), and a requester restart in the middle."""

from __future__ import annotations

import uuid

from node.core import RequesterCore
from node.core.events import (
    BidReceived,
    CommitmentReceived,
    NodeHeard,
    PersistExecution,
    PersistJob,
    PublishVerdict,
    Restarted,
    ResultReceived,
    SendRevealRequest,
    StoredExecution,
    StoredJob,
    StoreResult,
    Submitted,
    Tick,
    UpdateReceived,
)
from node.core.requester import REVEAL_WINDOW_MS, _Plan
from protocol.jobspec import Job
from protocol.messages import ManifestEntry, ResultCommitment, ResultRecord
from protocol.states import ExecutionState, JobState
from protocol.verification import commitment_seal, record_digest
from tests.node.test_core import bid, info, of, requester_with, update

NODES = ("n1", "n2", "n3", "n4", "n5", "n6", "n7")


def verified_job(count: int = 3) -> Job:
    return Job.from_dict({
        "ID": f"j-{uuid.uuid4()}", "Type": "batch", "Count": count,
        "Verification": {"Mode": "Deterministic"},
        "Tasks": [{"Name": "t", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
                   "Timeouts": {"ExecutionTimeout": 60}}]})


def result(job: Job, execution_id: str, node: str, content: str = "5" * 64) -> ResultRecord:
    return ResultRecord(job.id or "", execution_id, node, 0, "1" * 64, "2" * 64,
                        (ManifestEntry("outputs/a.txt", 5, content),),
                        {"StorageSource": "IPFS", "CID": f"cid-of-{node}"}, 0)


class Network:
    """A requester core and the executions it placed, driven like the daemon drives it."""

    def __init__(self, job: Job, nodes: tuple[str, ...]) -> None:
        self.job = job
        self.core = requester_with(*nodes)
        self.now = 0
        self.out = self.core.handle(Submitted(job), 0)
        self.placed: dict[str, str] = {}  # execution -> node
        self.place(nodes)

    def handle(self, event: object, step: int = 10) -> list:
        self.now += step
        out = self.core.handle(event, self.now)  # type: ignore[arg-type]
        self.out += out
        return out

    def place(self, nodes: tuple[str, ...]) -> None:
        asked = [a.announcement for a in self.out if hasattr(a, "announcement")][-1]
        for node in asked.candidates or nodes:
            the_bid = bid(self.job.id or "", node)
            for decision in self.handle(BidReceived(the_bid)):
                if getattr(decision, "decision", None) and decision.decision.accepted:
                    self.placed[decision.decision.execution_id] = decision.decision.node_id

    def heartbeats(self, nodes: tuple[str, ...]) -> None:
        """Every node is heard from again (else it would be lost after the window)."""
        self.seq = getattr(self, "seq", 1) + 1
        for node in nodes:
            self.handle(NodeHeard(info(node, seq=self.seq)), 0)

    def run(self, execution_id: str) -> None:
        node = self.placed[execution_id]
        for state in (ExecutionState.RUNNING, ExecutionState.PUBLISHING):
            self.handle(UpdateReceived(update(execution_id, self.job.id or "", node, state)))

    def commit(self, execution_id: str, record: ResultRecord, seal: str | None = None) -> list:
        node = self.placed[execution_id]
        seal = seal or commitment_seal(node, execution_id, record_digest(record))
        return self.handle(CommitmentReceived(ResultCommitment(
            self.job.id or "", execution_id, node, seal)))

    def reveal(self, record: ResultRecord) -> list:
        return self.handle(ResultReceived(record, b"sealed"))

    def execution_states(self) -> dict[str, ExecutionState]:
        states = {}
        for instruction in of(PersistExecution, self.out):
            states[instruction.execution_id] = instruction.state
        return states

    def job_state(self) -> JobState | None:
        states = [i.state for i in of(PersistJob, self.out)]
        return states[-1] if states else None


def honest_run(net: Network, executions: list[str], contents: dict[str, str] | None = None,
               ) -> dict[str, ResultRecord]:
    records = {}
    for execution_id in executions:
        net.run(execution_id)
        content = (contents or {}).get(execution_id, "5" * 64)
        records[execution_id] = result(net.job, execution_id, net.placed[execution_id], content)
    return records


def test_honest_nodes_commit_then_reveal_and_the_job_is_verified() -> None:
    net = Network(verified_job(3), NODES[:3])
    executions = list(net.placed)
    assert len(executions) == 3
    records = honest_run(net, executions)
    for execution_id in executions[:2]:
        assert not of(SendRevealRequest, net.commit(execution_id, records[execution_id]))
    asked = of(SendRevealRequest, net.commit(executions[2], records[executions[2]]))
    assert {a.request.execution_id for a in asked} == set(executions)  # all at once, at last
    for execution_id in executions:
        net.reveal(records[execution_id])
    assert len(of(StoreResult, net.out)) == 3
    (verdict,) = [p.verdict for p in of(PublishVerdict, net.out)]
    assert verdict.state == "Verified" and verdict.accepted == record_digest(records[
        executions[0]])
    assert set(net.execution_states().values()) == {ExecutionState.COMPLETED}
    assert net.job_state() == JobState.COMPLETED


def test_a_liar_is_outvoted_and_the_job_still_completes() -> None:
    net = Network(verified_job(3), NODES[:3])
    executions = list(net.placed)
    liar = executions[1]
    records = honest_run(net, executions, {liar: "6" * 64})  # one output byte changed
    for execution_id in executions:
        net.commit(execution_id, records[execution_id])
    for execution_id in executions:
        net.reveal(records[execution_id])
    (verdict,) = [p.verdict for p in of(PublishVerdict, net.out)]
    assert verdict.state == "Verified"
    assert [g.executions for g in verdict.groups][1] == (liar,)
    states = net.execution_states()
    assert states.pop(liar) == ExecutionState.FAILED
    assert set(states.values()) == {ExecutionState.COMPLETED}
    assert net.job_state() == JobState.COMPLETED


def test_a_colluding_minority_of_two_in_five_loses() -> None:
    net = Network(verified_job(5), NODES[:5])
    executions = list(net.placed)
    liars = executions[:2]
    records = honest_run(net, executions, {liar: "6" * 64 for liar in liars})
    for execution_id in executions:
        net.commit(execution_id, records[execution_id])
    for execution_id in executions:
        net.reveal(records[execution_id])
    (verdict,) = [p.verdict for p in of(PublishVerdict, net.out)]
    assert verdict.state == "Verified" and verdict.groups[0].executions == tuple(
        sorted(executions[2:]))
    assert {net.execution_states()[liar] for liar in liars} == {ExecutionState.FAILED}
    assert net.job_state() == JobState.COMPLETED


def test_a_copied_seal_or_an_equivocating_reveal_fails_and_the_slot_is_placed_again() -> None:
    net = Network(verified_job(3), NODES[:5])
    executions = list(net.placed)
    honest, copier, equivocator = executions
    records = honest_run(net, executions, {equivocator: "7" * 64})
    # The copier commits the honest node's seal; the equivocator commits to one result.
    honest_seal = commitment_seal(net.placed[honest], honest, record_digest(records[honest]))
    net.commit(honest, records[honest])
    net.commit(copier, records[copier], seal=honest_seal)
    net.commit(equivocator, records[equivocator])
    net.reveal(records[honest])
    net.reveal(records[copier])  # the honest bytes, but the seal was not its own
    net.reveal(result(net.job, equivocator, net.placed[equivocator], "5" * 64))  # another one
    states = net.execution_states()
    assert states[copier] == states[equivocator] == ExecutionState.FAILED
    assert not of(PublishVerdict, net.out)  # two of three revealed nothing that counts
    assert len(net.placed) == 3 and net.job_state() != JobState.FAILED
    net.place(NODES)  # asked again, of nodes not tried yet
    replacements = [e for e in net.placed if e not in executions]
    assert len(replacements) == 2
    assert not {net.placed[e] for e in replacements} & {net.placed[e] for e in executions}


def test_a_withholder_is_failed_after_the_reveal_window_and_replaced() -> None:
    net = Network(verified_job(3), NODES[:5])
    executions = list(net.placed)
    withholder = executions[0]
    records = honest_run(net, executions)
    for execution_id in executions:
        net.commit(execution_id, records[execution_id])
    for execution_id in executions[1:]:
        net.reveal(records[execution_id])
    net.now += REVEAL_WINDOW_MS - 100
    net.heartbeats(NODES[:5])
    net.handle(Tick(), 0)
    assert net.execution_states()[withholder] == ExecutionState.PUBLISHING
    net.handle(Tick(), 200)
    assert net.execution_states()[withholder] == ExecutionState.FAILED
    net.place(NODES)
    (replacement,) = [e for e in net.placed if e not in executions]
    net.run(replacement)
    record = result(net.job, replacement, net.placed[replacement])
    asked = of(SendRevealRequest, net.commit(replacement, record))
    assert [a.request.execution_id for a in asked] == [replacement]  # asked at once
    net.reveal(record)
    (verdict,) = [p.verdict for p in of(PublishVerdict, net.out)]
    assert verdict.state == "Verified" and replacement in verdict.groups[0].executions
    assert net.job_state() == JobState.COMPLETED


def test_no_group_large_enough_is_no_consensus_and_the_job_fails() -> None:
    net = Network(verified_job(3), NODES[:3])
    executions = list(net.placed)
    contents = {e: c * 64 for e, c in zip(executions, "567", strict=True)}
    records = honest_run(net, executions, contents)
    for execution_id in executions:
        net.commit(execution_id, records[execution_id])
    for execution_id in executions:
        net.reveal(records[execution_id])
    (verdict,) = [p.verdict for p in of(PublishVerdict, net.out)]
    assert verdict.state == "NoConsensus" and len(verdict.groups) == 3
    assert net.job_state() == JobState.FAILED
    (failed,) = [i for i in of(PersistJob, net.out) if i.state == JobState.FAILED]
    assert failed.message.startswith("no consensus: no 2 of the 3 executions")


def test_a_restarted_requester_asks_again_for_reveals_it_was_owed() -> None:
    job = verified_job(3)
    nodes = NODES[:3]
    executions = [f"e-{uuid.uuid4()}" for _ in nodes]
    records = {e: result(job, e, n) for e, n in zip(executions, nodes, strict=True)}
    seals = {e: commitment_seal(n, e, record_digest(records[e]))
             for e, n in zip(executions, nodes, strict=True)}
    stored = StoredJob(job, JobState.RUNNING, 0, tuple(
        StoredExecution(e, n, ExecutionState.PUBLISHING, 0, seal=seals[e],
                        digest=record_digest(records[e]) if i == 0 else "")
        for i, (e, n) in enumerate(zip(executions, nodes, strict=True))))
    core = RequesterCore("me", detection_window_ms=30_000)
    out = core.handle(Restarted(1000, (stored,)), 1000)
    for node in nodes:
        core.handle(NodeHeard(info(node)), 1000)
    asked = {a.request.execution_id for a in of(SendRevealRequest, out)}
    assert asked == set(executions[1:])  # the first had revealed before the restart
    for execution_id in executions[1:]:
        out += core.handle(ResultReceived(records[execution_id], b"sealed"), 2000)
    (verdict,) = [p.verdict for p in of(PublishVerdict, out)]
    assert verdict.state == "Verified" and len(verdict.groups[0].executions) == 3


def test_a_liar_is_flagged_and_never_chosen_again_once_below_the_threshold() -> None:
    from node.core.events import Announce, PersistReputation

    net = Network(verified_job(3), NODES[:5])
    executions = list(net.placed)
    liar = executions[1]
    liar_node = net.placed[liar]
    records = honest_run(net, executions, {liar: "6" * 64})
    for execution_id in executions:
        net.commit(execution_id, records[execution_id])
    for execution_id in executions:
        net.reveal(records[execution_id])
    tallies = {p.node_id: p.reputation for p in of(PersistReputation, net.out)}
    assert tallies[liar_node].disagreements == 1 and tallies[liar_node].score < -4 + 1
    assert {tallies[net.placed[e]].agreements for e in executions if e != liar} == {1}
    assert net.core.distrusted(liar_node)
    # The next job: the liar is neither asked nor, if it bids anyway, chosen.
    for _ in range(5):
        again = verified_job(3)
        announce = of(Announce, net.handle(Submitted(again)))[0].announcement
        assert liar_node not in announce.candidates
        out = net.handle(BidReceived(bid(again.id or "", liar_node)))
        assert not [d for d in out if getattr(d, "decision", None) and d.decision.accepted
                    and d.decision.node_id == liar_node]
        for node_id in announce.candidates:  # answered: no asks left open to crowd a node
            net.handle(BidReceived(bid(again.id or "", node_id, accept=False)))


def test_failures_rank_a_node_later_but_never_exclude_it() -> None:
    from node.core.reputation import Reputation

    core = requester_with("clean", "flaky")
    core.reputation["flaky"] = Reputation(failures=9, timeouts=9)
    assert not core.distrusted("flaky")
    ranked = core._candidates(_Plan(verified_job(2), JobState.PENDING, 0), 0, exclude=set())
    assert ranked == ["clean", "flaky"]


def test_verdicts_of_trusted_requesters_count_too() -> None:
    from node.core.events import VerdictHeard
    from protocol.messages import Verdict, VerdictGroup

    core = requester_with("n1", "n2", "n3")
    e = [f"e-{uuid.uuid4()}" for _ in range(3)]
    verdict = Verdict(f"j-{uuid.uuid4()}", "12D3KooWOther", "Verified", 2, (
        VerdictGroup("a" * 64, (e[0], e[1]), ("n1", "n2")),
        VerdictGroup("b" * 64, (e[2],), ("n3",))), accepted="a" * 64)
    core.handle(VerdictHeard(verdict), 0)
    assert core.reputation["n1"].agreements == core.reputation["n2"].agreements == 1
    assert core.reputation["n3"].disagreements == 1 and core.distrusted("n3")
