"""The membership table: how often and when nodes heartbeat as a network grows, and the
rows a joining node copies."""

from __future__ import annotations

import random
from pathlib import Path

from node.membership import (
    LATE_TURNS,
    NODES_AT_CONFIGURED_INTERVAL,
    TURN_STEP,
    HeartbeatTurn,
    Membership,
    heartbeat_interval_ms,
    heartbeat_turn,
    next_heartbeat_ms,
)
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


def _node_ids(count: int, seed: int) -> list[str]:
    chooser = random.Random(seed)
    return [f"12D3KooW{chooser.getrandbits(128):032x}" for _ in range(count)]


def test_nodes_that_list_the_same_members_take_evenly_spaced_turns():
    members = _node_ids(100, seed=1)
    interval_ms = heartbeat_interval_ms(FIFTEEN_SECONDS, len(members))
    # Each works out its own turn from its own list, in its own order.
    turns = [heartbeat_turn(node, random.Random(i).sample(members, len(members)), interval_ms)
             for i, node in enumerate(members)]
    offsets = sorted(turn.offset_ms for turn in turns)
    assert offsets == [i * interval_ms // 100 for i in range(100)]
    assert {turn.width_ms for turn in turns} == {interval_ms // 100} == {500}
    # A node's own ID need not be in its list.
    node = members[7]
    assert heartbeat_turn(node, [m for m in members if m != node], interval_ms) == \
        heartbeat_turn(node, members, interval_ms)


def test_a_node_that_joins_moves_the_others_turns_by_one_turn_at_most():
    """Were an interval cut into exactly as many turns as there are nodes, each node that
    joined would move every turn (they are counted from the epoch, modulo the interval)."""
    members = _node_ids(100, seed=2)
    for count in range(81, 100):
        before, after = members[:count], members[:count + 1]
        interval_ms = heartbeat_interval_ms(FIFTEEN_SECONDS, count)
        if heartbeat_interval_ms(FIFTEEN_SECONDS, count + 1) != interval_ms:
            assert count % TURN_STEP == 0  # a step: the interval grows by a tenth or less
            continue
        for node in before:
            old = heartbeat_turn(node, before, interval_ms)
            new = heartbeat_turn(node, after, interval_ms)
            assert new.offset_ms - old.offset_ms in (0, old.width_ms)


def test_a_node_in_turn_heartbeats_every_interval():
    interval_ms, turn = 50_000, HeartbeatTurn(offset_ms=12_500, width_ms=500)
    sent = 34_000_000 * interval_ms + turn.offset_ms  # in turn
    for _ in range(5):
        following = next_heartbeat_ms(sent, sent + interval_ms, interval_ms, turn)
        assert following - sent == interval_ms
        sent = following


def test_a_node_out_of_turn_is_in_turn_at_its_next_heartbeat_and_never_missed():
    chooser = random.Random(3)
    for _ in range(2_000):
        interval_ms = chooser.choice([500, 15_000, 50_000])
        slots = chooser.randint(1, 100)
        width_ms = interval_ms // slots
        turn = HeartbeatTurn(chooser.randrange(slots) * width_ms, width_ms)
        sent = chooser.randrange(10**12)
        due = next_heartbeat_ms(sent, sent, interval_ms, turn)
        assert due % interval_ms == turn.offset_ms
        assert interval_ms / 2 <= due - sent <= 1.5 * interval_ms
        # Woken by the timer a little late, it still goes (at once).
        assert next_heartbeat_ms(sent, due + width_ms // 5, interval_ms, turn) == due


def test_a_turn_that_moved_back_past_now_goes_between_turns_soon():
    """A node before it left while this one waited: its turn is now earlier, and already
    past. It heartbeats within a few turns' widths, in no node's turn."""
    interval_ms, width_ms = 50_000, 500
    sent = 10 * interval_ms + 20 * width_ms  # in its old turn, the 20th
    turn = HeartbeatTurn(19 * width_ms, width_ms)  # now the 19th
    now = sent + interval_ms  # its old turn, another node's now
    due = next_heartbeat_ms(sent, now, interval_ms, turn)
    assert now < due < now + (LATE_TURNS + 1) * width_ms
    assert due % width_ms in (width_ms // 4, width_ms // 2, 3 * width_ms // 4)


def test_nodes_late_together_do_not_heartbeat_together():
    """Nodes started together (a devnet starts four at once) planned their next heartbeat
    under the same smaller network, and learn their reach at the same moment: all late at
    once. Whatever their ranks, each goes at a spot of its own, a quarter of a turn or more
    from any other's and from every turn: so do three such batches started a second
    apart."""
    members = _node_ids(100, seed=3)
    started_ms = {node: 1_000 * (i // 4) + i % 4 for i, node in enumerate(members)}
    interval_ms = heartbeat_interval_ms(FIFTEEN_SECONDS, len(members))
    width_ms = interval_ms // 100
    now = 10 * interval_ms + 7 * width_ms + 120
    last_sent = now - 2 * interval_ms  # every turn has passed since: all are late
    turns = {node: heartbeat_turn(node, members, interval_ms, started_ms) for node in members}
    spots = {node: next_heartbeat_ms(last_sent, now, interval_ms, turn)
             for node, turn in turns.items()}
    assert all(now < spot < now + (LATE_TURNS + 1) * width_ms for spot in spots.values())
    assert all(spot % width_ms for spot in spots.values())  # no turn's start
    batches = LATE_TURNS * 3 // 4
    for first in range(0, len(members) - 4 * batches + 1, 4):
        together = sorted(spots[node] for node in members[first:first + 4 * batches])
        assert all(b - a >= width_ms // 4 for a, b in zip(together, together[1:], strict=False))
    # Woken at its spot, or a little after, it goes then: its spot does not move on.
    for node, spot in spots.items():
        for woken in (spot - 300, spot, spot + 20):
            assert next_heartbeat_ms(last_sent, woken, interval_ms, turns[node]) == spot


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
