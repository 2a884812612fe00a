"""Verified execution on real daemons: --count 3 --verify runs on three nodes, which commit,
reveal when asked, and are tallied; get fetches the accepted result only.

Real daemons on loopback, real dockerd, real libp2p. The liar, a colluding minority of two
liars and the withholder here are real peers (the daemon with one behaviour changed,
tests/adversaries), and so are the copier and the equivocator. A copied seal (another
node's bytes) is checked one event at a time in tests/node/test_core_verification.py: no
real peer ever sees another node's seal, which goes to the requester alone.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration


def _network(pool: DaemonPool, honest: int, **adversaries: int
             ) -> tuple[Daemon, list[Daemon], dict[str, list[Daemon]]]:
    """An orchestrator, ``honest`` compute nodes and, per adversary role, that many of them
    (tests/adversaries), all meshed: (requester, honest nodes, adversaries by role)."""
    requester = pool.new("req", args=["--orchestrator"])
    good = [pool.new(f"honest{i}", peers=[requester], args=["--compute"])
            for i in range(honest)]
    bad = {role: [pool.new(f"{role}{i}", peers=[requester], args=["--compute"],
                           module=("tests.adversaries", role)) for i in range(count)]
           for role, count in adversaries.items()}
    everyone = [*good, *(d for group in bad.values() for d in group)]
    pool.start_all([requester, *everyone])
    ids = {d.peer_id for d in everyone}
    wait_until(lambda: requester.connected() >= ids, timeout=30, what="the mesh")
    return requester, good, bad


def test_three_honest_nodes_agree_and_the_job_is_verified(devnet: list[Daemon],
                                                          tmp_path: Path) -> None:
    node = devnet[0]
    run = node.cli("docker", "run", "--wait", "--id-only", "--count", "3", "--verify", "-p",
                   "ipfs", "busybox", "--", "sh", "-c", "echo same > /outputs/a.txt; echo hi",
                   timeout=120)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    document = json.loads(node.cli("describe", job_id, "--json").stdout)
    assert document["State"]["State"] == "Completed", document["State"]
    verification = document["State"]["Verification"]
    assert verification["State"] == "Verified" and verification["Confidence"] == 2
    (group,) = verification["Groups"]
    executions = document["State"]["Executions"]
    assert sorted(group["Executions"]) == sorted(e["ExecutionID"] for e in executions)
    assert {e["NodeID"] for e in executions} == {d.peer_id for d in devnet}  # distinct nodes
    assert {e["State"] for e in executions} == {"Completed"}
    listed = node.cli("list", "--wide").stdout
    assert job_id in listed and "Verified" in listed
    # Each node's record, as the requester keeps it: one agreement (A/D/W/F/T).
    nodes = node.cli("node", "list", "--wide").stdout
    assert nodes.count("1/0/0/0/0 (+1)") == 3, nodes
    got = node.cli("get", job_id, "--output-dir", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "outputs" / "a.txt").read_text() == "same\n"
    assert (tmp_path / "out" / "stdout").read_text() == "hi\n"
    # Each execution told its requester what it printed when it committed.
    assert node.cli("logs", job_id).stdout.count("hi") == 3
    with urllib.request.urlopen(f"{node.api_url}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    assert 'bacnode_verification_verdicts_total{outcome="Verified"} 1.0' in metrics


def test_a_result_nobody_agrees_on_is_no_consensus_and_get_refuses_it(
        devnet: list[Daemon], tmp_path: Path) -> None:
    """Each node writes its own peer ID: three results, no two alike."""
    node = devnet[0]
    run = node.cli("docker", "run", "--wait", "--id-only", "--count", "3", "--verify", "-p",
                   "ipfs", "busybox", "--", "sh", "-c", "cat /proc/sys/kernel/random/uuid "
                   "> /outputs/a.txt", timeout=120)
    job_id = run.stdout.strip().splitlines()[0]
    document = json.loads(node.cli("describe", job_id, "--json").stdout)
    assert document["State"]["State"] == "Failed"
    assert document["State"]["Message"].startswith("no consensus: no 2 of the 3 executions")
    assert document["State"]["Verification"]["State"] == "NoConsensus"
    assert len(document["State"]["Verification"]["Groups"]) == 3
    refused = node.cli("get", job_id, "--output-dir", str(tmp_path / "no"))
    assert refused.returncode == 1
    assert "is not verified (NoConsensus): its results are withheld" in refused.stderr
    anyway = node.cli("get", job_id, "--unverified", "--output-dir", str(tmp_path / "all"))
    assert anyway.returncode == 0, anyway.stderr
    assert len(list((tmp_path / "all").iterdir())) == 3


def test_a_liar_is_outvoted_flagged_and_never_chosen_again(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    """Four compute nodes, one of them a liar (tests/adversaries: the real daemon, which
    changes one output byte and signs honestly). A --count 4 job puts it to the vote: the
    three honest nodes win, it is outvoted and flagged. Every later job runs on the honest
    three only, and is verified."""
    with DaemonPool(tmp_path_factory.mktemp("liar")) as pool:
        requester, honest, bad = _network(pool, 3, liar=1)
        (liar,) = bad["liar"]

        def run(count: int) -> dict:
            result = requester.cli(
                "docker", "run", "--wait", "--id-only", "--count", str(count), "--verify",
                "-p", "ipfs", "busybox", "--", "sh", "-c", "echo 42 > /outputs/answer",
                timeout=120)
            job_id = result.stdout.strip().splitlines()[0]
            return json.loads(requester.cli("describe", job_id, "--json").stdout)

        vote = run(4)
        assert vote["State"]["State"] == "Completed"
        verification = vote["State"]["Verification"]
        assert verification["State"] == "Verified"
        by_node = {e["NodeID"]: e for e in vote["State"]["Executions"]}
        assert by_node[liar.peer_id]["State"] == "Failed"
        assert by_node[liar.peer_id]["Message"].startswith("outvoted: its result differs")
        (lie,) = [g for g in verification["Groups"] if g["Digest"] != verification["Accepted"]]
        assert lie["Executions"] == [by_node[liar.peer_id]["ExecutionID"]]
        nodes = {row.split()[0]: row for row in
                 requester.cli("node", "list", "--wide").stdout.splitlines()[1:]}
        assert nodes[liar.peer_id].endswith("0/1/0/0/0 (-5)")
        for _ in range(3):
            later = run(3)
            assert later["State"]["Verification"]["State"] == "Verified"
            used = {e["NodeID"] for e in later["State"]["Executions"]}
            assert used == {d.peer_id for d in honest}


def test_a_colluding_minority_of_two_liars_in_five_loses(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    """Two liars that tell the same lie (they agree with each other) and three honest nodes,
    --count 5: the honest three are the majority; both liars are outvoted and flagged."""
    with DaemonPool(tmp_path_factory.mktemp("collusion")) as pool:
        requester, honest, bad = _network(pool, 3, liar=2)
        liars = bad["liar"]
        result = requester.cli(
            "docker", "run", "--wait", "--id-only", "--count", "5", "--verify", "-p", "ipfs",
            "busybox", "--", "sh", "-c", "echo 42 > /outputs/answer", timeout=120)
        job_id = result.stdout.strip().splitlines()[0]
        document = json.loads(requester.cli("describe", job_id, "--json").stdout)
        verification = document["State"]["Verification"]
        assert document["State"]["State"] == "Completed" and verification["Confidence"] == 3
        by_node = {e["NodeID"]: e for e in document["State"]["Executions"]}
        winners, losers = verification["Groups"]
        assert sorted(winners["Executions"]) == sorted(
            by_node[d.peer_id]["ExecutionID"] for d in honest)
        assert sorted(losers["Executions"]) == sorted(  # the two liars agreed, and lost
            by_node[d.peer_id]["ExecutionID"] for d in liars)
        nodes = requester.cli("node", "list", "--wide").stdout
        assert nodes.count("0/1/0/0/0 (-5)") == 2 and nodes.count("1/0/0/0/0 (+1)") == 3


def test_a_withholder_is_replaced_and_the_job_completes_within_its_deadline(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    """A node that commits and never reveals: after the reveal window (30 s) its execution
    fails, is placed on a node that joined meanwhile, and the job is verified well within
    its 120 s deadline."""
    with DaemonPool(tmp_path_factory.mktemp("withholder")) as pool:
        requester, honest, bad = _network(pool, 3, withholder=1)
        (withholder,) = bad["withholder"]
        began = time.monotonic()
        submitted = requester.cli(
            "docker", "run", "--id-only", "--no-wait", "--count", "4", "--verify",
            "--timeout", "120", "-p", "ipfs", "busybox", "--", "sh", "-c",
            "echo 42 > /outputs/answer")
        job_id = submitted.stdout.strip()

        def executions() -> list[dict]:
            document = json.loads(requester.cli("describe", job_id, "--json").stdout)
            return document["State"]["Executions"]

        wait_until(lambda: len(executions()) == 4, timeout=30, what="four executions placed")
        late = pool.start("late", peers=[requester], args=["--compute"])
        wait_until(lambda: late.peer_id in requester.connected(), timeout=30, what="late")
        wait_until(lambda: json.loads(requester.cli("describe", job_id, "--json").stdout)[
            "State"]["State"] in ("Completed", "Failed"), timeout=90, interval=1,
            what="the job to end")
        took = time.monotonic() - began
        document = json.loads(requester.cli("describe", job_id, "--json").stdout)
        assert document["State"]["Verification"]["State"] == "Verified", document["State"]
        by_node = {e["NodeID"]: e for e in document["State"]["Executions"]}
        assert by_node[withholder.peer_id]["State"] == "Failed"
        assert "did not reveal its result within 30s" in by_node[withholder.peer_id]["Message"]
        assert by_node[late.peer_id]["State"] == "Completed"
        assert 30 <= took < 120
        nodes = requester.cli("node", "list", "--wide").stdout
        assert [row for row in nodes.splitlines() if row.startswith(withholder.peer_id)][
            0].endswith("0/0/1/0/0 (-2)")


def test_a_copier_finds_nothing_to_copy_before_the_verdict_and_is_outvoted(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    """A node that runs nothing and waits to copy another node's result off the results
    topic: a verified job's records are gossiped only after its verdict, so there is
    nothing to copy before it must commit. Its guess is outvoted and flagged; it sees the
    records only once the verdict is out."""
    with DaemonPool(tmp_path_factory.mktemp("copier")) as pool:
        requester, honest, bad = _network(pool, 3, copier=1)
        (copier,) = bad["copier"]
        result = requester.cli(
            "docker", "run", "--wait", "--id-only", "--count", "4", "--verify", "-p", "ipfs",
            "busybox", "--", "sh", "-c", "echo 42 > /outputs/answer", timeout=120)
        job_id = result.stdout.strip().splitlines()[0]
        document = json.loads(requester.cli("describe", job_id, "--json").stdout)
        assert document["State"]["Verification"]["State"] == "Verified", document["State"]
        by_node = {e["NodeID"]: e for e in document["State"]["Executions"]}
        assert by_node[copier.peer_id]["Message"].startswith("outvoted: its result differs")
        assert all(by_node[d.peer_id]["State"] == "Completed" for d in honest)
        assert f"copier: no record of job {job_id} to copy" in copier.stderr
        assert f"of job {job_id} before committing" not in copier.stderr
        wait_until(lambda: f"copier: saw a record of job {job_id} after committing"
                   in copier.stderr, timeout=20, what="the records, gossiped after the verdict")
        nodes = requester.cli("node", "list", "--wide").stdout
        assert [row for row in nodes.splitlines() if row.startswith(copier.peer_id)][
            0].endswith("0/1/0/0/0 (-5)")


def test_an_equivocator_whose_reveal_does_not_open_its_seal_is_caught_and_replaced(
        tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> None:
    """A node that commits to one result and, asked, reveals another: the reveal does not
    open its seal, so its execution fails and is placed on a node that joined meanwhile;
    the job is verified without it."""
    with DaemonPool(tmp_path_factory.mktemp("equivocator")) as pool:
        requester, honest, bad = _network(pool, 3, equivocator=1)
        (equivocator,) = bad["equivocator"]
        submitted = requester.cli(
            "docker", "run", "--id-only", "--no-wait", "--count", "4", "--verify",
            "--timeout", "120", "-p", "ipfs", "busybox", "--", "sh", "-c",
            "echo 42 > /outputs/answer")
        job_id = submitted.stdout.strip()

        def document() -> dict:
            return json.loads(requester.cli("describe", job_id, "--json").stdout)

        wait_until(lambda: len(document()["State"]["Executions"]) == 4, timeout=30,
                   what="four executions placed")
        # The equivocator commits 8 s after its container ends: time for a fifth node.
        late = pool.start("late", peers=[requester], args=["--compute"])
        wait_until(lambda: late.peer_id in requester.connected(), timeout=30, what="late")
        wait_until(lambda: document()["State"]["State"] in ("Completed", "Failed"),
                   timeout=90, interval=1, what="the job to end")
        final = document()
        assert final["State"]["Verification"]["State"] == "Verified", final["State"]
        by_node = {e["NodeID"]: e for e in final["State"]["Executions"]}
        assert by_node[equivocator.peer_id]["State"] == "Failed"
        assert "does not match" in by_node[equivocator.peer_id]["Message"], by_node
        assert by_node[late.peer_id]["State"] == "Completed"
        assert all(by_node[d.peer_id]["State"] == "Completed" for d in honest)

