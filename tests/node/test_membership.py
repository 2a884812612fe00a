"""The membership table: how often nodes heartbeat as a network grows, and the rows a
joining node copies."""

from __future__ import annotations

from pathlib import Path

from node.membership import NODES_AT_CONFIGURED_INTERVAL, Membership, heartbeat_interval_ms
from node.store import open_store
from protocol.envelope import EnvelopeVerifier
from protocol.identity import NodeKey
from protocol.messages import Capacity, NodeInfo, open_message, seal_message

FIFTEEN_SECONDS = 15_000


def test_a_network_of_up_to_30_nodes_heartbeats_at_the_configured_interval():
    for configured_ms in (500, FIFTEEN_SECONDS):
        for nodes in (1, 3, 20, NODES_AT_CONFIGURED_INTERVAL):
            assert heartbeat_interval_ms(configured_ms, nodes) == configured_ms


def test_past_30_nodes_a_node_handles_no_more_heartbeats_an_interval():
    for nodes in (31, 100, 1_000):
        interval_ms = heartbeat_interval_ms(FIFTEEN_SECONDS, nodes)
        assert interval_ms > FIFTEEN_SECONDS
        # Heartbeats a node handles in one configured interval: N of them every interval_ms.
        assert nodes * FIFTEEN_SECONDS / interval_ms <= NODES_AT_CONFIGURED_INTERVAL + 1e-9
    assert heartbeat_interval_ms(FIFTEEN_SECONDS, 100) == 50_000


def _heartbeat(key: NodeKey, seq: int) -> tuple[NodeInfo, bytes]:
    capacity = Capacity(cpu_milli=1000, memory=1 << 30)
    info = NodeInfo(node_id=key.peer_id, version="test", addresses=(), labels={},
                    roles=("compute",), engines=("noop",), storages=(), publishers=(),
                    total=capacity, free=capacity, running_executions=0, seq=seq,
                    started_ms=seq)
    return info, seal_message(key, info, now_ms=seq)


async def test_the_copied_table_holds_live_rows_as_their_origins_signed_them(tmp_path: Path):
    own, alive, gone = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    now = 1_000_000
    async with open_store(tmp_path / "state.db") as store:
        membership = Membership(store, own.peer_id, detection_window_ms=30_000,
                                remember_addresses=lambda *_: None)
        verifier = EnvelopeVerifier()
        for key, heard in ((alive, now - 5_000), (gone, now - 40_000)):
            info, data = _heartbeat(key, heard)
            envelope, _ = open_message(verifier, data, now_ms=heard)
            assert await membership.saw(info, heard, envelope=envelope)
        rows = list(membership.snapshot(now))
        assert [(age, envelope.sender) for age, envelope in rows] == [(5_000, alive.peer_id)]
        # A row copied from a peer counts as heard when that peer heard it, not now.
        late, data = _heartbeat(NodeKey.generate(), now - 1_000)
        envelope, _ = open_message(verifier, data, now_ms=now)
        assert await membership.saw(late, now, envelope=envelope, heard_ms=now - 25_000)
        assert membership.connected_count(now) == 3  # own, alive, late
        assert membership.connected_count(now + 6_000) == 2  # late's copied row ran out


async def test_a_new_node_is_stored_at_once_and_its_later_heartbeats_together(
        tmp_path: Path):
    """What ``node list`` shows after a restart: a node first heard is written at once; its
    later heartbeats (same addresses and labels) wait for ``save``, which writes them all in
    one go, the latest of each node."""
    own, first, second = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    async with open_store(tmp_path / "state.db") as store:
        membership = Membership(store, own.peer_id, detection_window_ms=30_000,
                                remember_addresses=lambda *_: None)

        async def stored_seqs() -> dict[str, int]:
            return {record.info.node_id: record.info.seq for record in await store.list_nodes()}

        for key in (first, second):
            assert await membership.saw(_heartbeat(key, 1_000)[0], 1_000)
        assert await stored_seqs() == {first.peer_id: 1_000, second.peer_id: 1_000}
        for seq in (2_000, 3_000):
            for key in (first, second):
                assert await membership.saw(_heartbeat(key, seq)[0], seq)
        assert await stored_seqs() == {first.peer_id: 1_000, second.peer_id: 1_000}
        await membership.save()
        assert await stored_seqs() == {first.peer_id: 3_000, second.peer_id: 3_000}
        records = {record.info.node_id: record for record in await store.list_nodes()}
        assert records[first.peer_id].first_seen_ms == 1_000
        assert records[first.peer_id].last_seen_ms == 3_000
