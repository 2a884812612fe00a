"""Prometheus metrics: what ``GET /metrics`` on the API port serves.

Names follow the Prometheus conventions: a ``bacnode_`` prefix, the unit in the name
(``_seconds``, ``_bytes``), ``_total`` on counters (prometheus_client adds it).

Two kinds of numbers live here:

- **Events**, counted where they happen (a bid sent, a container run, a store commit), with
  the module's metric objects. A daemon is one process, so they are process-wide, as the
  ``process_*`` metrics that prometheus_client adds are.
- **State and counts other code already keeps** (gossip accepted and dropped, bitswap
  traffic, peers, jobs and executions by state), read when scraped: ``DaemonCollector``
  reads the mesh and bitswap counters, and the API handler refreshes the store's counts
  just before it renders, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "render"]

# The ``_created`` series (when each counter was made) double the output and tell an
# operator nothing that ``process_start_time_seconds`` does not.
disable_created_metrics()

#: Seconds; from a no-op container (~0.3 s here) to long batch jobs.
_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)
#: Seconds; a group commit takes 1-3 ms on a virtual disk, a full one much longer.
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
_TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 120, 600)

BIDS_SENT = Counter(
    "bacnode_bids_sent", "Bids this compute node sent, by answer (accept or decline)",
    ["answer"])
BID_DECLINES = Counter(
    "bacnode_bid_declines", "Jobs this compute node declined, by reason", ["reason"])
BIDS_RECEIVED = Counter(
    "bacnode_bids_received", "Bids this requester received, by answer", ["answer"])
CONTAINER_RUN_SECONDS = Histogram(
    "bacnode_container_run_seconds",
    "Wall time of one execution's container, create to removal, by engine and outcome",
    ["engine", "outcome"], buckets=_RUN_BUCKETS)
STAGED_BYTES = Counter(
    "bacnode_staged_bytes", "Input bytes staged for executions, by storage backend",
    ["backend"])
STAGING_SECONDS = Histogram(
    "bacnode_staging_seconds", "Time to stage one input, by storage backend", ["backend"],
    buckets=_TRANSFER_BUCKETS)
PUBLISHED_BYTES = Counter(
    "bacnode_published_bytes", "Result bytes published, by publisher", ["backend"])
PUBLISHING_SECONDS = Histogram(
    "bacnode_publishing_seconds", "Time to publish one execution's results, by publisher",
    ["backend"], buckets=_TRANSFER_BUCKETS)
STORE_COMMIT_SECONDS = Histogram(
    "bacnode_store_commit_seconds",
    "Time of one store transaction (a group commit of one or more writes, fsync included)",
    buckets=_STORE_BUCKETS)
VERDICTS = Counter(
    "bacnode_verification_verdicts", "Verdicts this requester reached on verified jobs, "
    "by outcome", ["outcome"])
JOBS = Gauge("bacnode_jobs", "Jobs in this node's store, by state", ["state"])
EXECUTIONS = Gauge("bacnode_executions", "Executions in this node's store, by state",
                   ["state"])


def set_state_counts(gauge: Gauge, counts: Mapping[str, int], states: list[str]) -> None:
    """Every known state gets a sample, zero included, so that a query never finds a gap."""
    for state in states:
        gauge.labels(state=state).set(counts.get(state, 0))


class DaemonCollector(Collector):
    """The counts a running daemon keeps anyway, read when scraped."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        validated = CounterMetricFamily(
            "bacnode_gossip_messages_validated", "Gossip messages that passed validation, "
            "by message type", labels=["type"])
        for kind, count in sorted(state["accepted"].items()):
            validated.add_metric([kind], count)
        yield validated
        dropped = CounterMetricFamily(
            "bacnode_gossip_messages_dropped", "Gossip messages dropped, by reason",
            labels=["reason"])
        for reason, count in sorted(state["dropped"].items()):
            dropped.add_metric([reason], count)
        yield dropped
        refused = CounterMetricFamily(
            "bacnode_streams_refused", "Inbound streams reset unread because their peer held "
            "as many of that protocol open as it may, by protocol", labels=["protocol"])
        for protocol_id, count in sorted(state.get("refused_streams", {}).items()):
            refused.add_metric([protocol_id], count)
        yield refused
        peers = GaugeMetricFamily(
            "bacnode_peers_connected", "libp2p peers connected now, by connection kind",
            labels=["kind"])
        for kind in ("direct", "relayed"):
            peers.add_metric([kind], state["peers"].get(kind, 0))
        yield peers
        bitswap = state["bitswap"]
        moved = CounterMetricFamily("bacnode_bitswap_bytes", "Block bytes moved by bitswap, "
                                    "by direction", labels=["direction"])
        moved.add_metric(["in"], bitswap.get("BytesReceived", 0))
        moved.add_metric(["out"], bitswap.get("BytesServed", 0))
        yield moved
        rejected = CounterMetricFamily(
            "bacnode_bitswap_blocks_rejected", "Blocks received that did not match their CID "
            "or were not asked for")
        rejected.add_metric([], bitswap.get("BlocksRejected", 0))
        yield rejected


def register_daemon(read: Callable[[], Mapping[str, Any]]) -> Callable[[], None]:
    """Register a daemon's collector; returns what unregisters it."""
    collector = DaemonCollector(read)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


def render() -> bytes:
    """The text exposition format of everything registered."""
    return generate_latest(REGISTRY)
