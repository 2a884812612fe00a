import pytest

from protocol.jobspec import Job
from protocol.messages import Bid, Capacity
from protocol.scheduling import (
    NodePolicy,
    choose_bids,
    decline_reason,
    no_bid_reason,
    rank_bids,
)
from tests.protocol.strategies import PEER_IDS, new_execution_id, new_job_id

GIB = 1 << 30
POLICY = NodePolicy(
    engines=("docker",),
    storages=("inline", "urlDownload"),
    publishers=("local", "noop"),
    labels={"zone": "b", "gpu": "false"},
    total=Capacity(cpu_milli=2000, memory=4 * GIB, disk=100 * GIB, gpu=0),
)


def job(**task: object) -> Job:
    spec: dict = {"Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
                  "Publisher": {"Type": "local"}}
    constraints = task.pop("Constraints", [])
    spec.update(task)
    return Job.from_dict({"Type": "batch", "Constraints": constraints, "Tasks": [spec]})


def test_a_job_that_fits_gets_a_bid():
    assert decline_reason(job(), POLICY) is None


@pytest.mark.parametrize(
    ("spec", "policy_changes", "reason"),
    [
        ({"Publisher": {"Type": "ipfs"}}, {}, "publisher 'ipfs' is not supported here"),
        ({"InputSources": [{"Source": {"Type": "s3", "Params": {"Bucket": "data", "Key": "k"}},
                            "Target": "/inputs"}]}, {},
         "input source type 's3' is not supported here"),
        ({"Constraints": [{"Key": "zone", "Operator": "=", "Values": ["a"]}]}, {},
         "node labels do not match constraint zone=a"),
        ({"Network": {"Type": "Full"}}, {}, "networked jobs are not allowed on this node"),
        ({}, {"image_allowlist": ("alpine*",)}, "image 'busybox' is not on this node's allow-list"),
        ({"Resources": {"Memory": "8Gi"}}, {}, "needs 8Gi memory; node has 4Gi"),
        ({"Resources": {"CPU": "3"}}, {}, "needs 3 CPU; node has 2"),
        ({"Resources": {"GPU": "1"}}, {}, "needs 1 GPU; node has 0"),
    ],
)
def test_declines_say_why(spec, policy_changes, reason):
    from dataclasses import replace

    assert decline_reason(job(**spec), replace(POLICY, **policy_changes)) == reason


def test_allow_list_and_network_opt_in_admit_jobs():
    from dataclasses import replace

    policy = replace(POLICY, image_allowlist=("busy*",), allow_networked_jobs=True)
    assert decline_reason(job(Network={"Type": "Full"}), policy) is None


def bid(node: int, *, running: int = 0, cpu: int = 1000, memory: int = GIB,
        accept: bool = True) -> Bid:
    return Bid(new_job_id(), new_execution_id(), PEER_IDS[node], accept, "",
               Capacity(cpu, memory, 0, 0), running)


def test_ranking_prefers_idle_then_free_cpu_then_memory():
    busy, idle_small, idle_big_cpu, idle_big_memory = (
        bid(0, running=2, cpu=4000), bid(1), bid(2, cpu=2000), bid(3, memory=8 * GIB)
    )
    ranked = rank_bids([busy, idle_small, idle_big_cpu, idle_big_memory])
    assert ranked == [idle_big_cpu, idle_big_memory, idle_small, busy]


def test_choose_skips_declines_and_excluded_nodes_one_per_node():
    bids = [bid(0), bid(1, accept=False), bid(2), bid(3)]
    chosen = choose_bids(bids, 2, exclude=[PEER_IDS[2]])
    assert {b.node_id for b in chosen} == {PEER_IDS[0], PEER_IDS[3]}


def test_equal_bids_are_shared_evenly_and_ranked_alike_by_every_requester():
    """Ties go to each of n equal bidders one job in n, not to the lowest peer ID, nor to
    the nodes nearest the job (by XOR distance two of these four would win an eighth of
    the jobs each)."""
    wins = dict.fromkeys(PEER_IDS[:4], 0)
    jobs = 800
    for _ in range(jobs):
        job_id = new_job_id()
        bids = [Bid(job_id, new_execution_id(), PEER_IDS[n], True, "", Capacity(1000, GIB), 0)
                for n in range(4)]
        (winner,) = choose_bids(bids, 1)
        assert choose_bids(list(reversed(bids)), 1) == [winner]  # the same for every requester
        wins[winner.node_id] += 1
    # 200 each expected, standard deviation 12: a share outside 140-260 is 5 of them away.
    assert all(140 <= won <= 260 for won in wins.values()), wins


def test_no_bid_reason_summarises_declines():
    reason = no_bid_reason({"a": "needs 8Gi memory; node has 4Gi",
                            "b": "needs 8Gi memory; node has 4Gi", "c": "engine"}, 3)
    assert reason == ("no node can run this job — 2 node(s): needs 8Gi memory; node has 4Gi; "
                      "1 node(s): engine")
    assert "is any compute node connected" in no_bid_reason({}, 0)
    assert no_bid_reason({}, 2) == "none of the 2 compute node(s) bid in time"
