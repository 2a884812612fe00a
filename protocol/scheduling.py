"""Who runs a job: the compute node's bid policy and the requester's bid ranking.

Pure functions, so both sides of the decision can be tested without a network.

Bid policy (compute side), in order, first failure wins and becomes the
decline reason the user sees in ``describe``:
1. the engine is one this node runs;
2. every input source type and the publisher are supported here;
3. the job's constraints match this node's labels;
4. a networked job only on a node that allows networked jobs;
5. the image is on the node's allow-list, when it has one;
6. the requested resources fit in the node's *total* capacity (a job that can
   never fit is declined; one that fits later waits in the node's queue);
7. the requester is one this node takes jobs from (``requester_refusal``).

Ranking (requester side): accepting bids first; then nodes running fewer
executions, then more free CPU, then more free memory; ties go to the lowest
SHA-256 of the job's and the node's IDs together (rendezvous hashing), so that
every requester ranks the same bids the same way and each of n equal bidders wins
one job in n, however they were picked to be asked. (XOR distance, which picks
who is asked, would break ties for the nodes picked for being near the job: a
requester's own node, asked for being itself, would lose nearly every tie, and of
four equal nodes two would win an eighth of the jobs each.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .jobspec import Job, Resources
from .messages import Bid, Capacity
from .quantities import format_bytes, format_cpu


@dataclass(frozen=True)
class NodePolicy:
    """What a compute node offers and allows."""

    engines: tuple[str, ...]
    storages: tuple[str, ...]
    publishers: tuple[str, ...]
    labels: Mapping[str, str]
    total: Capacity
    allow_networked_jobs: bool = False
    #: Glob patterns (``busybox*``, ``ghcr.io/org/*``); empty means any image.
    image_allowlist: tuple[str, ...] = ()
    #: What a job that requests no CPU or memory runs with, and reserves.
    job_defaults: Resources = Resources()
    #: Requesters (peer IDs) whose jobs this node takes; empty: any not rejected.
    accept_requesters: frozenset[str] = frozenset()
    #: Requesters whose jobs this node never takes.
    reject_requesters: frozenset[str] = frozenset()
    #: Executions one requester may hold here at once (0: no limit beyond the node's), so
    #: that one requester cannot take every slot of a shared node.
    max_per_requester: int = 0
    #: Installed engines that cannot run anything now, and why (dockerd went away, say).
    unavailable: Mapping[str, str] = field(default_factory=dict)


def job_requirements(job: Job, defaults: Resources = Resources()) -> Capacity:
    """The capacity one execution of ``job`` reserves on a node with these ``defaults``."""
    resources = job.task.resources.or_defaults(defaults)
    return Capacity(
        cpu_milli=resources.cpu_milli,
        memory=resources.memory,
        disk=resources.disk,
        gpu=resources.gpu,
    )


#: Why a node declines, in few words: what ``bacnode_bid_declines_total`` counts by.
DECLINE_KINDS = ("unsupported", "unavailable", "constraints", "policy", "capacity",
                 "requester", "busy")


def decline(job: Job, policy: NodePolicy) -> tuple[str, str] | None:
    """``None`` when this node may bid on ``job``; otherwise ``(kind, why)``, one of
    ``DECLINE_KINDS`` and a message for users."""
    task = job.task
    if task.engine.type not in policy.engines:
        return "unsupported", f"engine {task.engine.type!r} is not supported here"
    if task.engine.type in policy.unavailable:
        return ("unavailable", f"engine {task.engine.type!r} is unavailable here: "
                               f"{policy.unavailable[task.engine.type]}")
    for source in task.input_sources:
        if source.source_type not in policy.storages:
            return ("unsupported",
                    f"input source type {source.source_type!r} is not supported here")
    if task.publisher.type not in policy.publishers:
        return "unsupported", f"publisher {task.publisher.type!r} is not supported here"
    for constraint in job.constraints:
        if not constraint.matches(policy.labels):
            return "constraints", f"node labels do not match constraint {constraint}"
    if task.network.type != "None" and not policy.allow_networked_jobs:
        return "policy", "networked jobs are not allowed on this node"
    if policy.image_allowlist and task.engine.type == "docker" and not any(
        fnmatchcase(task.engine.image, pattern) for pattern in policy.image_allowlist
    ):
        return "policy", f"image {task.engine.image!r} is not on this node's allow-list"
    shortfall = _capacity_shortfall(job_requirements(job, policy.job_defaults), policy.total)
    return ("capacity", shortfall) if shortfall else None


def decline_reason(job: Job, policy: NodePolicy) -> str | None:
    """``None`` when this node may bid on ``job``; otherwise why not, for users."""
    found = decline(job, policy)
    return found[1] if found else None


def requester_refusal(requester: str, policy: NodePolicy) -> str | None:
    """``None`` when this node takes jobs from ``requester``; otherwise why not."""
    if requester in policy.reject_requesters:
        return "this node does not take jobs from this requester"
    if policy.accept_requesters and requester not in policy.accept_requesters:
        return "this node takes jobs only from the requesters it lists"
    return None


def _capacity_shortfall(needed: Capacity, total: Capacity) -> str | None:
    if needed.cpu_milli > total.cpu_milli:
        return f"needs {format_cpu(needed.cpu_milli)} CPU; node has {format_cpu(total.cpu_milli)}"
    if needed.memory > total.memory:
        return (
            f"needs {format_bytes(needed.memory)} memory; node has {format_bytes(total.memory)}"
        )
    if needed.disk > total.disk:
        return f"needs {format_bytes(needed.disk)} disk; node has {format_bytes(total.disk)}"
    if needed.gpu > total.gpu:
        return f"needs {needed.gpu} GPU; node has {total.gpu}"
    return None


def xor_key(identifier: str) -> int:
    """An ID's place in Kademlia's XOR space: its SHA-256, as an integer."""
    return int.from_bytes(hashlib.sha256(identifier.encode()).digest())


def xor_distance(job_id: str, node_id: str) -> int:
    """Kademlia's distance between a job and a node, on the SHA-256 of their IDs."""
    return xor_key(job_id) ^ xor_key(node_id)


def tie_breaker(job_id: str, node_id: str) -> bytes:
    """Where ``node_id`` stands among equal bids for ``job_id``: lowest first."""
    return hashlib.sha256(f"{job_id}\0{node_id}".encode()).digest()


BidRank = tuple[int, int, int, bytes]


def bid_rank(bid: Bid) -> BidRank:
    """Where an accepting bid stands among the others for its job: lowest first."""
    return (bid.running_executions, -bid.free.cpu_milli, -bid.free.memory,
            tie_breaker(bid.job_id, bid.node_id))


def best_possible_rank(job_id: str, node_id: str, total: Capacity, needs: Capacity) -> BidRank:
    """The best rank ``node_id`` could accept ``job_id`` with: running nothing but this job
    (an accepting bid counts the slot it takes for it), and all it has (``total``) free but
    the ``needs`` the job asks for itself (a node's defaults for what it leaves unsaid can
    only take more). A bid in hand ranked before it beats whatever that node says."""
    return (1, needs.cpu_milli - total.cpu_milli, needs.memory - total.memory,
            tie_breaker(job_id, node_id))


def rank_bids(bids: Iterable[Bid]) -> list[Bid]:
    """Accepting bids, best first (see the module docstring for the order)."""
    return sorted((bid for bid in bids if bid.accept), key=bid_rank)


def choose_bids(bids: Sequence[Bid], count: int, exclude: Iterable[str] = ()) -> list[Bid]:
    """The best ``count`` accepting bids, one per node, skipping ``exclude``d nodes."""
    excluded = set(exclude)
    chosen: list[Bid] = []
    for bid in rank_bids(bids):
        if bid.node_id in excluded:
            continue
        excluded.add(bid.node_id)
        chosen.append(bid)
        if len(chosen) == count:
            break
    return chosen


def no_bid_reason(declines: Mapping[str, str], nodes_asked: int) -> str:
    """Why a job got no (or too few) bids, summarised for ``describe``."""
    if not nodes_asked and not declines:
        return "no compute node answered; is any compute node connected to this one?"
    if not declines:
        return f"none of the {nodes_asked} compute node(s) bid in time"
    counts: dict[str, int] = {}
    for reason in declines.values():
        counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{n} node(s): {reason}" for reason, n in sorted(counts.items(), key=lambda i: -i[1])]
    return "no node can run this job — " + "; ".join(parts)
