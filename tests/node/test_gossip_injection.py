"""A hostile peer on the mesh: what it publishes is dropped, counted, and changes nothing.

The injector is a real libp2p peer in the test process (``node.mesh.Mesh``: Noise,
GossipSub with a 1 s heartbeat, pubsub messages unsigned, their data signed envelopes),
dialling a daemon over loopback. Its own topic validators are replaced by "accept
everything", and its messages are known by origin and sequence number rather than
content, so that it sends what an attacker would (the same bytes again, too) rather
than what our validators and duplicate filter let out. Every bad message is sent on
every topic.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.pubsub import get_peer_and_seqno_msg_id

from node.mesh import GRAYLIST_THRESHOLD, TOPIC_JOBS, TOPIC_NODES, TOPIC_RESULTS, Mesh, MeshError
from protocol import codec
from protocol.envelope import EnvelopeVerifier, parse_unverified
from protocol.examples import example_job
from protocol.identity import NodeKey
from protocol.messages import (
    Bid,
    Capacity,
    ExecutionUpdate,
    JobAnnouncement,
    NodeInfo,
    decode_message,
    open_message,
    seal_message,
)
from scripts.daemons import Daemon, DaemonPool, await_until, free_ports

TOPICS = (TOPIC_JOBS, TOPIC_RESULTS, TOPIC_NODES)
TEST_TIMEOUT = 60
#: A seq far above the control's: if any bad heartbeat were accepted, it would win.
HIGH_SEQ = 2**62


#: A requester's answer to a bid for no job of its own (what these probes send).
UNKNOWN_JOB_REPLY = b"error: no job of this node has that ID"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def node_info(key: NodeKey, *, label: str, seq: int, node_id: str | None = None) -> NodeInfo:
    return NodeInfo(
        node_id=node_id or key.peer_id, version="0.1.0",
        addresses=("/ip4/127.0.0.1/tcp/9/p2p/" + key.peer_id,), labels={"injected": label},
        roles=("compute",), engines=("docker",), storages=(), publishers=(),
        total=Capacity(1000, 1 << 30, 1 << 30), free=Capacity(1000, 1 << 30, 1 << 30),
        running_executions=0, seq=seq, started_ms=1_780_000_000_000,
    )


def envelope_bytes(*, signer: NodeKey, sender: str, msg_type: str, body: dict[str, Any],
                   ts: int | None = None, v: int = 1, sig: bytes | None = None) -> bytes:
    """An envelope with any field wrong on purpose; signed by ``signer`` unless ``sig``."""
    unsigned = {"v": v, "type": msg_type, "from": sender, "ts": now_ms() if ts is None else ts,
                "nonce": secrets.token_bytes(16), "body": body}
    signature = signer.sign(codec.encode(unsigned)) if sig is None else sig
    return codec.encode({**unsigned, "sig": signature})


def bad_messages(injector: NodeKey, victim: NodeKey, other: NodeKey, topic: str
                 ) -> list[tuple[str, str, bytes, int]]:
    """``(what, expected drop reason, bytes, how many copies)`` to send on ``topic``."""
    me = injector.peer_id
    info = node_info(injector, label="bad", seq=HIGH_SEQ).to_body()
    bid = Bid(job_id="j-12345678-1234-4123-8123-123456789abc",
              execution_id="e-12345678-1234-4123-8123-123456789abc", node_id=me, accept=True,
              reason="", free=Capacity(), running_executions=0)
    replayed_info = node_info(injector, label="replayed", seq=1)
    return [
        ("garbage bytes", "MalformedMessage", b"\xc1 this is not msgpack", 1),
        ("no signature field", "MalformedMessage", codec.encode(
            {"v": 1, "type": "node.info", "from": me, "ts": now_ms(),
             "nonce": secrets.token_bytes(16), "body": info}), 1),
        ("body that is no NodeInfo", "MalformedMessage", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body={"node_id": me}), 1),
        ("unsigned (zero signature)", "BadSignature", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body=info, sig=bytes(64)), 1),
        ("forged: from the victim, signed by the injector", "BadSignature", envelope_bytes(
            signer=injector, sender=victim.peer_id, msg_type="node.info",
            body=node_info(victim, label="forged", seq=HIGH_SEQ).to_body()), 1),
        ("an announcement forged from the victim", "BadSignature", envelope_bytes(
            signer=injector, sender=victim.peer_id, msg_type="job.announce",
            body=JobAnnouncement(f"j-{uuid.uuid4()}", victim.peer_id,
                                 example_job("forged", "busybox"), now_ms() + 3000).to_body()),
         1),
        ("validly signed by another node, published by the injector", "SenderMismatch",
         seal_message(other, node_info(other, label="relayed", seq=HIGH_SEQ), now_ms=now_ms()),
         1),
        ("heartbeat for another node, signed by the injector", "SenderMismatch", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info",
            body=node_info(injector, label="impostor", seq=HIGH_SEQ,
                           node_id=other.peer_id).to_body()), 1),
        ("stale timestamp", "ClockSkew", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body=info,
            ts=now_ms() - 10 * 60_000), 1),
        ("timestamp from the future", "ClockSkew", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body=info,
            ts=now_ms() + 10 * 60_000), 1),
        ("unknown protocol version", "UnknownVersion", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body=info, v=2), 1),
        ("unknown message type", "UnknownMessageType", envelope_bytes(
            signer=injector, sender=me, msg_type="evil.type", body={"x": 1}), 1),
        ("a bid, which belongs on no topic", "WrongTopic",
         seal_message(injector, bid, now_ms=now_ms()), 1),
        ("body over the size limit", "OversizeMessage", envelope_bytes(
            signer=injector, sender=me, msg_type="node.info", body={"pad": b"x" * 600_000}), 1),
        # The same signed bytes twice: the first copy is valid (accepted on the nodes
        # topic, WrongTopic elsewhere); the second has the first's content, so its message
        # ID: gossipsub drops it as a duplicate (validated before, on a wrong topic) unread.
        ("the same heartbeat twice", "Duplicate",
         seal_message(injector, replayed_info, now_ms=now_ms()), 2),
    ]


def expected_drops(messages: dict[str, list[tuple[str, str, bytes, int]]]) -> Counter[str]:
    expected: Counter[str] = Counter()
    for topic, batch in messages.items():
        for _, reason, _, _ in batch:
            if reason == "Duplicate":  # not counted: py-libp2p drops it before any validator
                if topic != TOPIC_NODES:
                    expected["WrongTopic"] += 1  # its first copy: a heartbeat off its topic
            else:
                expected[reason] += 1
    return expected


def dropped(daemon: Daemon) -> Counter[str]:
    return Counter(daemon.mesh_stats()["Dropped"])


async def noop_handler(topic: str, envelope: Any, message: Any) -> None:
    pass


def hostile_peer(key: NodeKey, target: Daemon) -> Mesh:
    """A real libp2p peer with ``key`` that will dial ``target`` (start it with ``run``)."""
    (port,) = free_ports(1)
    mesh = Mesh(key, listen=(f"/ip4/127.0.0.1/tcp/{port}",), bootstrap=(target.multiaddr,),
                on_message=noop_handler)
    mesh.pubsub._msg_id_constructor = get_peer_and_seqno_msg_id
    return mesh


@contextlib.asynccontextmanager
async def running(mesh: Mesh) -> AsyncIterator[trio.Nursery]:
    """``mesh`` running, within the test's time limit, and stopped on the way out."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            try:
                yield nursery
            finally:
                mesh.stop()


async def run_honest_jobs(target: Daemon, done: list[str], count: int = 3) -> None:
    """The target's user runs ``count`` no-op-published jobs, one after another."""
    for _ in range(count):
        result = await trio.to_thread.run_sync(lambda: target.cli(
            "docker", "run", "--wait", "--id-only", "-p", "noop", "busybox", "--", "true",
            timeout=120))
        assert result.returncode == 0, result.stderr
        done.append(result.stdout.strip())


async def settled_announcement_counts(target: Daemon, *reasons: str) -> Counter[str]:
    """The target's accepted announcements and drops by ``reasons``, once they stop moving
    (everything sent has then been read)."""

    def counts() -> Counter[str]:
        stats = target.mesh_stats()
        return Counter({"accepted": stats["Accepted"].get("job.announce", 0),
                        **{reason: stats["Dropped"].get(reason, 0) for reason in reasons}})

    last: Counter[str] = Counter()
    while (now := await trio.to_thread.run_sync(counts)) != last:
        last = now
        await trio.sleep(1.0)
    return last


def bid_in(reply: bytes, target: Daemon, announcement: JobAnnouncement) -> bytes:
    """``b"bid"`` when ``reply`` is what a candidate asked straight answers with: its bid
    on the job, signed by it (else the reply as it came)."""
    try:
        _, bid = open_message(EnvelopeVerifier(), reply, now_ms=now_ms(),
                              expected_sender=target.peer_id)
    except Exception:
        return reply
    is_its_bid = (isinstance(bid, Bid) and bid.job_id == announcement.job_id
                  and bid.node_id == target.peer_id)
    return b"bid" if is_its_bid else reply


async def answers_requests(target: Daemon, mesh: Mesh, caller: NodeKey) -> None:
    """``target`` answers a request from ``caller`` (a bid for no job of its own) at once."""
    bid = Bid(job_id="j-12345678-1234-4123-8123-123456789abc",
              execution_id="e-12345678-1234-4123-8123-123456789abc",
              node_id=caller.peer_id, accept=False, reason="",
              free=Capacity(), running_executions=0)
    with trio.fail_after(10):
        reply = await mesh.request(target.peer_id, seal_message(caller, bid, now_ms=now_ms()))
    assert reply == UNKNOWN_JOB_REPLY


async def ready_target(daemons: DaemonPool, *args: str) -> Daemon:
    """A daemon to attack, started and ready: its API answers before the requester and
    compute sides that take requests are up (a request then is refused)."""
    target = daemons.new("target", args=list(args))
    target.start()
    await await_until(lambda: target.api("/readyz")["Ready"], timeout=30, what="ready")
    return target


async def sending_anything_on(mesh: Mesh, topic: str, target: Daemon) -> ID:
    """Let ``mesh`` send whatever it likes on ``topic`` (its own validator accepts all, as
    an attacker's would) and wait until ``target`` is in its mesh there; its peer ID."""
    mesh.pubsub.set_topic_validator(topic, lambda forwarder, msg: True, False)
    target_peer = ID.from_base58(target.peer_id)
    with trio.fail_after(20):
        while target_peer not in mesh.gossipsub.mesh.get(topic, ()):
            await trio.sleep(0.05)
    return target_peer


async def publish_one_at_a_time(mesh: Mesh, topic: str, data: bytes, target_peer: ID) -> None:
    """Publish, then wait until the message has left for ``target_peer``: py-libp2p queues
    at most 32 RPCs per peer and silently drops the rest."""
    await mesh.pubsub.publish(topic, data)
    while len(mesh.pubsub.peer_queues.get(target_peer, ())) > 0:
        await trio.sleep(0.002)


async def in_jobs_mesh(mesh: Mesh, target: Daemon) -> ID:
    """Wait until ``target`` is in ``mesh``'s jobs-topic mesh; its peer ID."""
    target_peer = ID.from_base58(target.peer_id)
    while target_peer not in mesh.gossipsub.mesh.get(TOPIC_JOBS, ()):
        await trio.sleep(0.05)
    return target_peer


async def _target_and_peer(daemons: DaemonPool) -> tuple[Daemon, Daemon]:
    """Two real daemons connected to each other: the one attacked, and its honest peer."""
    target = daemons.new("target")
    peer = daemons.new("peer", peers=[target])
    for daemon in (target, peer):
        daemon.peer_id  # noqa: B018 - the key exists before the peer is told the address
        daemon.launch()  # from the main thread: see scripts/daemons.py on cleanup
    for daemon in (target, peer):
        await trio.to_thread.run_sync(daemon.wait_ready)
    for node in (target, peer):
        await trio.to_thread.run_sync(node.wait_connected, {target.peer_id, peer.peer_id})
    return target, peer


async def test_bad_gossip_is_dropped_counted_and_harmless(daemons: DaemonPool):
    target, peer = await _target_and_peer(daemons)

    injector, victim, other = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    mesh = hostile_peer(injector, target)

    async with running(mesh):
        await inject_and_check(mesh, target, peer, injector, victim, other)


async def inject_and_check(mesh: Mesh, target: Daemon, peer: Daemon, injector: NodeKey,
                           victim: NodeKey, other: NodeKey) -> None:
    for topic in TOPICS:  # an attacker does not check what it sends
        mesh.pubsub.set_topic_validator(topic, lambda forwarder, msg: True, False)
    target_peer = ID.from_base58(target.peer_id)
    with trio.fail_after(20):  # until gossipsub grafts the target into our mesh on every topic
        while not all(target_peer in mesh.gossipsub.mesh.get(topic, ()) for topic in TOPICS):
            await trio.sleep(0.05)

    target_before, peer_before = (
        await trio.to_thread.run_sync(dropped, target),
        await trio.to_thread.run_sync(dropped, peer),
    )

    async def publish(topic: str, data: bytes) -> None:
        await publish_one_at_a_time(mesh, topic, data, target_peer)

    messages = {topic: bad_messages(injector, victim, other, topic) for topic in TOPICS}
    for topic, batch in messages.items():
        for _, _, data, copies in batch:
            for _ in range(copies):
                await publish(topic, data)
    # The control: one valid heartbeat of the injector's own (fake) node.
    control = node_info(injector, label="control", seq=now_ms())
    await publish(TOPIC_NODES, seal_message(injector, control, now_ms=now_ms()))

    expected = expected_drops(messages)

    counted: list[Counter[str]] = []

    def drops_counted() -> bool:
        counted.append(dropped(target) - target_before)
        return all(counted[-1][reason] >= count for reason, count in expected.items())

    try:
        await await_until(drops_counted, timeout=20)
    except AssertionError:
        raise AssertionError(f"expected drops {dict(expected)} on the target, "
                             f"counted {dict(counted[-1]) if counted else None}") from None

    def control_listed(daemon: Daemon) -> dict[str, Any] | None:
        state = daemon.api_nodes().get(injector.peer_id)
        ok = state and state["Info"]["Labels"] == {"injected": "control"}
        return state if ok else None

    # The valid control took effect on the target, and was gossiped on to its peer.
    await await_until(lambda: control_listed(target), timeout=20, what="the control on target")
    await await_until(lambda: control_listed(peer), timeout=20, what="the control on the peer")

    target_after = await trio.to_thread.run_sync(dropped, target)
    delta = target_after - target_before
    assert dict(delta) == dict(expected), "every bad message dropped once, for its reason"
    # Dropped before gossipsub forwards: none of it ever reached the target's peer.
    assert await trio.to_thread.run_sync(dropped, peer) == peer_before

    # No effect: through the real CLI, no forged or relayed node, and the injector's
    # entry is the control, not any of the higher-seq bad heartbeats.
    listed = await trio.to_thread.run_sync(target.node_list)
    assert victim.peer_id not in listed
    assert other.peer_id not in listed
    assert listed[injector.peer_id]["Info"]["Labels"] == {"injected": "control"}

    # The daemon is healthy: alive, still CONNECTED to its real peer, both ways.
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}
    stats = await trio.to_thread.run_sync(target.mesh_stats)
    assert peer.peer_id in stats["Peers"]
    assert "Invalid" not in stats["Dropped"], "a bad message escaped the typed checks"
    for node in (target, peer):
        await trio.to_thread.run_sync(node.wait_connected, {target.peer_id, peer.peer_id})


async def test_bad_requests_on_the_point_to_point_channel_are_refused_one_by_one(
        daemons: DaemonPool):
    """The same injector on ``/bacnode/requests/1``, where bids, decisions, updates and
    results travel: each bad request gets its own refusal, counted, and the channel
    goes on answering; a frame too short to carry a request number ends only that stream.
    Each costs the injector a point (see the next test)."""
    target = await ready_target(daemons)
    injector, victim = NodeKey.generate(), NodeKey.generate()
    mesh = hostile_peer(injector, target)
    me = injector.peer_id
    bid = Bid(job_id="j-12345678-1234-4123-8123-123456789abc",
              execution_id="e-12345678-1234-4123-8123-123456789abc", node_id=me, accept=True,
              reason="", free=Capacity(), running_executions=0)
    bad = [
        ("garbage bytes", b"\xc1 not msgpack", "MalformedMessage"),
        ("forged: from the victim, signed by the injector",
         envelope_bytes(signer=injector, sender=victim.peer_id, msg_type="bid",
                        body={**bid.to_body(), "node_id": victim.peer_id}), "BadSignature"),
        ("validly signed by another node, sent by the injector",
         seal_message(victim, replace(bid, node_id=victim.peer_id), now_ms=now_ms()),
         "SenderMismatch"),
    ]
    async with running(mesh):
        before = await trio.to_thread.run_sync(dropped, target)
        for what, data, _ in bad:
            reply = await mesh.request(target.peer_id, data)
            assert reply.startswith(b"error: "), (what, reply)
        # A frame shorter than a request number: that stream is reset...
        channel = await mesh._channel_to(target.peer_id)
        await channel.stream.write(b"\x03abc")
        # ...and the next request opens a fresh one and is answered.
        reply = b""
        for _ in range(50):
            try:
                reply = await mesh.request(
                    target.peer_id, seal_message(injector, bid, now_ms=now_ms()))
                break
            except Exception:
                await trio.sleep(0.1)
        # A stranger's bid, for no job of the target's: refused, but answered.
        assert reply == UNKNOWN_JOB_REPLY, reply
        counted = await trio.to_thread.run_sync(dropped, target) - before
        assert counted == Counter(reason for _, _, reason in bad) + Counter(
            ["MalformedMessage", "UnknownJob"]), counted
        assert await trio.to_thread.run_sync(
            target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_peer_sending_forged_requests_straight_is_graylisted_and_cut_off(
        daemons: DaemonPool):
    """A request whose signature does not check costs its sender a point, as a refused
    gossip message does: one that keeps on is graylisted, disconnected and banned, where
    each was opened, checked and refused for ever."""
    target = await ready_target(daemons)
    injector, victim = NodeKey.generate(), NodeKey.generate()
    mesh = hostile_peer(injector, target)
    bid = Bid(job_id="j-12345678-1234-4123-8123-123456789abc",
              execution_id="e-12345678-1234-4123-8123-123456789abc",
              node_id=victim.peer_id, accept=True, reason="", free=Capacity(),
              running_executions=0)
    replies: list[bytes] = []
    cut_off = False
    async with running(mesh):
        with trio.move_on_after(30):  # in time, not count: as the straight announcer below
            while not cut_off:
                forged = envelope_bytes(signer=injector, sender=victim.peer_id,
                                        msg_type="bid", body=bid.to_body())
                try:
                    replies.append(await mesh.request(target.peer_id, forged))
                except MeshError:
                    cut_off = True
    stats = await trio.to_thread.run_sync(target.mesh_stats)
    assert cut_off and len(replies) > -GRAYLIST_THRESHOLD, len(replies)
    assert all(reply.startswith(b"error: ") for reply in replies), set(replies)
    assert injector.peer_id in stats["Banned"], stats
    # Each answered one was counted; the one in flight when the peer was cut off may be too.
    assert stats["Dropped"]["BadSignature"] - len(replies) in (0, 1), stats["Dropped"]


async def test_announcements_sent_straight_are_held_to_their_requesters_rate(
        daemons: DaemonPool):
    """A requester asks its candidates straight, on the request channel, and each answers
    with its signed bid; a peer doing so beyond its rate (here 5 a second, after a burst of
    10) gets each extra one refused with the reason, counted as on gossip, and the node goes
    on answering."""
    target = await ready_target(daemons, "--announcements-per-origin", "5")
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    async with running(mesh):
        before = await trio.to_thread.run_sync(dropped, target)
        replies = []
        for i in range(20):
            announcement = JobAnnouncement(
                f"j-{uuid.uuid4()}", injector.peer_id, example_job(f"straight-{i}",
                                                                   "busybox"),
                now_ms() + 3000, candidates=(target.peer_id,))
            reply = await mesh.request(
                target.peer_id, seal_message(injector, announcement, now_ms=now_ms()))
            replies.append(reply if reply.startswith(b"error: ")
                           else bid_in(reply, target, announcement))
        taken = replies.count(b"bid")
        refused = replies.count(b"error: too many announcements")
        assert taken + refused == len(replies), replies
        assert 10 <= taken <= 13, replies  # the burst, and what refilled meanwhile
        counted = await trio.to_thread.run_sync(dropped, target) - before
        assert counted == Counter({"RateLimited": refused}), counted
        assert await trio.to_thread.run_sync(
            target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_peer_asking_straight_far_beyond_its_rate_is_graylisted_and_cut_off(
        daemons: DaemonPool):
    """Each announcement refused over its requester's rate on the request channel costs
    that peer a point, as on gossip: one that keeps on is graylisted, disconnected and
    banned, instead of having every announcement it sends opened and refused for ever."""
    target = await ready_target(daemons, "--announcements-per-origin", "5")
    spammer = NodeKey.generate()
    mesh = hostile_peer(spammer, target)
    spec = example_job("straight-spam", "busybox")
    replies: list[bytes] = []
    cut_off = False
    async with running(mesh):
        # Bounded in time, not count: graylisted peers are looked for at most every
        # GRAYLIST_CHECK_SECONDS, and a fast machine sends hundreds meanwhile.
        with trio.move_on_after(30):
            while not cut_off:
                announcement = JobAnnouncement(f"j-{uuid.uuid4()}", spammer.peer_id, spec,
                                               now_ms() + 3000, candidates=(target.peer_id,))
                try:
                    replies.append(await mesh.request(
                        target.peer_id, seal_message(spammer, announcement, now_ms=now_ms())))
                except MeshError:
                    cut_off = True
    stats = await trio.to_thread.run_sync(target.mesh_stats)
    refused = replies.count(b"error: too many announcements")
    assert cut_off and refused > -GRAYLIST_THRESHOLD, (len(replies), refused)
    assert spammer.peer_id in stats["Banned"], stats


async def test_announcements_gossiped_to_everyone_are_held_to_a_lower_rate(
        daemons: DaemonPool):
    """Every node reads, checks and considers a gossiped announcement, so a node takes far
    fewer of them from one origin (by default a burst of 20, then 10 a second) than of
    those a requester asks it straight (200, then 100 a second): a peer gossiping 40 of its
    own at once gets the burst taken and the rest refused unread; asked straight, 20 more
    are all taken."""
    from node.mesh import ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND, ORIGIN_OPEN_BURST_SECONDS

    open_burst = ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND * ORIGIN_OPEN_BURST_SECONDS
    target = await ready_target(daemons)
    requester = NodeKey.generate()
    mesh = hostile_peer(requester, target)
    spec = example_job("open", "busybox")
    async with running(mesh):
        target_peer = await in_jobs_mesh(mesh, target)
        started = time.monotonic()
        for _ in range(40):
            announcement = JobAnnouncement(f"j-{uuid.uuid4()}", requester.peer_id, spec,
                                           now_ms() + 3000)
            await publish_one_at_a_time(
                mesh, TOPIC_JOBS, seal_message(requester, announcement, now_ms=now_ms()),
                target_peer)
        sending = time.monotonic() - started
        gossiped = await settled_announcement_counts(target, "RateLimited")
        replies = []
        for _ in range(20):
            announcement = JobAnnouncement(f"j-{uuid.uuid4()}", requester.peer_id, spec,
                                           now_ms() + 3000, candidates=(target.peer_id,))
            replies.append(bid_in(await mesh.request(
                target.peer_id, seal_message(requester, announcement, now_ms=now_ms())),
                target, announcement))
    assert open_burst <= gossiped["accepted"] <= (
        open_burst + ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND * sending + 1), (gossiped, sending)
    assert gossiped["RateLimited"] == 40 - gossiped["accepted"], gossiped
    assert replies == [b"bid"] * 20, replies


async def test_a_garbage_sender_is_graylisted_and_pruned_from_the_mesh(daemons: DaemonPool):
    """Gossipsub peer scoring: a peer that keeps forwarding invalid messages falls below the
    graylist threshold; the daemon prunes it from its mesh, disconnects it, refuses its
    connections for a while (BAN_SECONDS) and takes nothing more from it, not even a valid
    message, while its honest peer stays in the mesh."""
    from node.mesh import GRAYLIST_THRESHOLD

    target, peer = await _target_and_peer(daemons)

    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    async with running(mesh):
        target_peer = await sending_anything_on(mesh, TOPIC_JOBS, target)

        def stats() -> dict[str, Any]:
            return target.mesh_stats()

        before = await trio.to_thread.run_sync(stats)
        assert injector.peer_id in before["MeshPeers"][TOPIC_JOBS]
        for i in range(int(-GRAYLIST_THRESHOLD) + 20):
            await publish_one_at_a_time(mesh, TOPIC_JOBS, b"\xc1 garbage %d" % i,
                                        target_peer)

        def graylisted_and_cut_off() -> bool:
            now = stats()
            return (injector.peer_id in now["Banned"]
                    and injector.peer_id not in now["Peers"]
                    and injector.peer_id not in now["MeshPeers"][TOPIC_JOBS])

        await await_until(graylisted_and_cut_off, timeout=20,
                          what="the garbage sender graylisted, pruned and disconnected")
        drops = Counter(stats()["Dropped"]) - Counter(before["Dropped"])
        # Decoded and refused until graylisted (past the sender's allowance of gossiped
        # announcements, which garbage on the jobs topic spends too, refused unread), then
        # dropped unread, until the connection closed (what was still under way then was
        # never read).
        refused = drops["MalformedMessage"] + drops["RateLimited"]
        assert drops["MalformedMessage"] > 0 and refused >= -GRAYLIST_THRESHOLD, drops
        assert refused + drops["Graylisted"] <= int(-GRAYLIST_THRESHOLD) + 20, drops
        # It redials (we are its bootstrap peer): each connection is closed at once.
        await await_until(lambda: stats()["RefusedConnections"] > 0, timeout=20,
                          what="the banned peer's new connection refused")
        # Nothing more is taken from it: a valid heartbeat of its own is not seen.
        await mesh.pubsub.publish(TOPIC_NODES, seal_message(
            injector, node_info(injector, label="after", seq=now_ms()),
            now_ms=now_ms()))
        await trio.sleep(3)  # pruned, it may not even reach the target now
        listed = await trio.to_thread.run_sync(target.api_nodes)
        assert injector.peer_id not in listed or listed[injector.peer_id][
            "Info"]["Labels"] != {"injected": "after"}
        final = stats()
        assert final["Scores"][peer.peer_id] == 0
        assert peer.peer_id in final["MeshPeers"][TOPIC_JOBS]



async def test_stale_and_replayed_gossip_is_dropped_without_blaming_the_peer(
        daemons: DaemonPool):
    """A message that waited out the skew window in queues (a loaded network) or came back
    again says nothing about the peer that sent it: each is dropped and not forwarded
    (a stale one counted as ClockSkew; a copy, known by its content, as a duplicate before
    any check), but the peer keeps its score, its place in the mesh and its connection
    however many arrive, so an honest relay is never graylisted for them."""
    from node.mesh import GRAYLIST_THRESHOLD

    target, peer = await _target_and_peer(daemons)
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    async with running(mesh):
        target_peer = await sending_anything_on(mesh, TOPIC_NODES, target)
        before = await trio.to_thread.run_sync(target.mesh_stats)
        peer_before = await trio.to_thread.run_sync(dropped, peer)

        async def publish(data: bytes) -> None:
            await publish_one_at_a_time(mesh, TOPIC_NODES, data, target_peer)

        # Enough of each to graylist it twice over, were they blamed.
        many = int(-GRAYLIST_THRESHOLD) + 20
        for i in range(many):
            await publish(envelope_bytes(
                signer=injector, sender=injector.peer_id, msg_type="node.info",
                body=node_info(injector, label="late", seq=i + 1).to_body(),
                ts=now_ms() - 2 * 60_000))
        again = seal_message(injector, node_info(injector, label="once", seq=many + 1),
                             now_ms=now_ms())
        for _ in range(many + 1):  # the first is taken, the rest are copies
            await publish(again)
        # Sent after the copies on the same stream: once it is listed, they were all read.
        last = seal_message(injector, node_info(injector, label="last", seq=many + 2),
                            now_ms=now_ms())
        await publish(last)

        def counted() -> Counter[str]:
            return Counter(target.mesh_stats()["Dropped"]) - Counter(before["Dropped"])

        await await_until(
            lambda: counted()["ClockSkew"] == many
            and target.api_nodes().get(injector.peer_id, {}).get("Info", {}).get(
                "Labels") == {"injected": "last"}, timeout=20,
            what=f"{many} stale heartbeats dropped and the last one listed")
        # The copies were duplicates, dropped before the envelope's replay check.
        assert counted()["ReplayedMessage"] == 0, counted()
        after = await trio.to_thread.run_sync(target.mesh_stats)
        assert after["Scores"][injector.peer_id] >= 0, after["Scores"]
        assert injector.peer_id in after["Peers"]
        assert injector.peer_id not in after["Banned"]
        assert injector.peer_id in after["MeshPeers"][TOPIC_NODES]
        assert "Graylisted" not in counted()
        # None of it was forwarded to the target's honest peer.
        assert await trio.to_thread.run_sync(dropped, peer) == peer_before
        # What the injector sends in time still takes effect, and travels on.
        await await_until(
            lambda: peer.api_nodes().get(injector.peer_id, {}).get(
                "Info", {}).get("Labels") == {"injected": "last"},
            timeout=20, what="the timely heartbeats on the honest peer")


async def test_a_spammer_flooding_announcements_is_cut_off_and_honest_jobs_complete(
        daemons: DaemonPool, busybox_image: str):
    """A real peer floods 10,000 validly signed job announcements of its own while the
    target's user runs jobs. The target takes 20 a second from one requester
    (``--announcements-per-origin``, well below what it can read even on a loaded machine,
    so the flood outruns it whatever the machine's pace): it never takes more of the
    spammer's than that bucket allows since the flood began, drops the rest as RateLimited,
    scores the spammer down to the graylist, then disconnects and bans it, and the honest
    jobs all complete."""
    from node.mesh import ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND, ORIGIN_OPEN_BURST_SECONDS

    rate = 20.0
    # Gossiped, the spammer's announcements are held to the lower of that and the rate
    # for announcements open to everyone.
    open_rate = min(rate, ORIGIN_OPEN_ANNOUNCEMENTS_PER_SECOND)
    target = await ready_target(daemons, "--announcements-per-origin", str(rate))
    spammer = NodeKey.generate()
    mesh = hostile_peer(spammer, target)
    spec = example_job("spam", "busybox")
    honest: list[str] = []
    flood = 10_000

    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            try:
                target_peer = await in_jobs_mesh(mesh, target)
                nursery.start_soon(run_honest_jobs, target, honest)
                started = time.monotonic()
                sending_until = started + 120
                sent = 0
                while sent < flood:
                    sent += 1
                    announcement = JobAnnouncement(
                        f"j-{uuid.uuid4()}", spammer.peer_id, spec, now_ms() + 3000)
                    await mesh.pubsub.publish(
                        TOPIC_JOBS, seal_message(spammer, announcement, now_ms=now_ms()))
                    # py-libp2p drops what overflows its 32-message queue to a peer: send
                    # as fast as the target takes them, no faster.
                    while len(mesh.pubsub.peer_queues.get(target_peer, ())) > 16:
                        await trio.sleep(0.001)
                    if time.monotonic() > sending_until:
                        break  # however slowly the target reads, the test ends
                last = await settled_announcement_counts(
                    target, "RateLimited", "Graylisted", "QueueFull")
                elapsed = time.monotonic() - started
                while len(honest) < 3:
                    await trio.sleep(0.2)
            finally:
                mesh.stop()
    stats = await trio.to_thread.run_sync(target.mesh_stats)
    # The bucket: a burst, then the rate, over the flood's whole length.
    assert last["accepted"] <= open_rate * (ORIGIN_OPEN_BURST_SECONDS + elapsed), (last, elapsed)
    assert last["RateLimited"] > 0, last
    assert sum(last.values()) <= sent
    print(f"sent {sent} in {elapsed:.1f}s; the target took {last['accepted']}, refused "
          f"{last['RateLimited']} as RateLimited, {last['Graylisted']} as Graylisted")
    # Graylisted, then disconnected and banned (its redials are closed as they open).
    assert spammer.peer_id in stats["Banned"], stats
    for job_id in honest:
        document = await trio.to_thread.run_sync(
            lambda job_id=job_id: target.cli("describe", job_id, "--json"))
        assert '"State": "Completed"' in document.stdout
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_spammer_flooding_bids_is_cut_off_and_honest_jobs_complete(
        daemons: DaemonPool, busybox_image: str):
    """A real peer sends up to 10,000 validly signed bids, for jobs nobody asked it about,
    straight to a requester (``/bacnode/requests/1``, eight at a time) while the
    requester's user runs jobs. A bid for a job the requester never requested is refused
    and costs the sender a point, so the spammer is graylisted, disconnected and banned;
    the honest jobs complete on the requester's own node, the flood places nothing on the
    spammer, and the node keeps answering."""
    target = await ready_target(daemons)
    spammer = NodeKey.generate()
    mesh = hostile_peer(spammer, target)
    honest: list[str] = []
    flood, sent, refused, cut_off = 10_000, 0, 0, False

    def bogus_bid() -> bytes:
        return seal_message(spammer, Bid(
            job_id=f"j-{uuid.uuid4()}", execution_id=f"e-{uuid.uuid4()}",
            node_id=spammer.peer_id, accept=True, reason="", free=Capacity(),
            running_executions=0), now_ms=now_ms())

    async def send_bids(deadline: float) -> None:
        nonlocal sent, refused, cut_off
        while sent < flood and time.monotonic() < deadline and not cut_off:
            sent += 1
            try:
                reply = await mesh.request(target.peer_id, bogus_bid())
            except MeshError:
                cut_off = True
                return
            assert reply == UNKNOWN_JOB_REPLY, reply
            refused += 1

    async with running(mesh):
        started = time.monotonic()
        async with trio.open_nursery() as flooders:
            flooders.start_soon(run_honest_jobs, target, honest)
            for _ in range(8):
                flooders.start_soon(send_bids, started + 60)
    stats = await trio.to_thread.run_sync(target.mesh_stats)
    print(f"sent {sent} bids in {time.monotonic() - started:.1f}s; {refused} refused")
    assert cut_off and refused > -GRAYLIST_THRESHOLD, (sent, refused)
    assert spammer.peer_id in stats["Banned"], stats
    assert stats["Dropped"]["UnknownJob"] >= refused, stats
    assert len(honest) == 3
    for job_id in honest:
        document = await trio.to_thread.run_sync(
            lambda job_id=job_id: target.cli("describe", job_id, "--json"))
        assert '"State": "Completed"' in document.stdout
        assert spammer.peer_id not in document.stdout
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_late_bid_for_a_job_the_requester_did_announce_costs_nothing(
        daemons: DaemonPool, busybox_image: str):
    """A bid that comes after its job has ended (a slow candidate) is taken as before: the
    requester refuses it so that the bidder frees its slot, and does not score it down."""
    target = await ready_target(daemons)
    honest: list[str] = []
    await run_honest_jobs(target, honest, count=1)
    bidder = NodeKey.generate()
    mesh = hostile_peer(bidder, target)
    async with running(mesh):
        reply = await mesh.request(target.peer_id, seal_message(bidder, Bid(
            job_id=honest[0], execution_id=f"e-{uuid.uuid4()}", node_id=bidder.peer_id,
            accept=True, reason="", free=Capacity(), running_executions=0),
            now_ms=now_ms()))
        stats = await trio.to_thread.run_sync(target.mesh_stats)
    assert reply == b"ok"
    assert stats["Dropped"].get("UnknownJob", 0) == 0, stats
    assert stats["Scores"].get(bidder.peer_id, 0) == 0, stats


async def test_a_peer_opening_too_many_streams_gets_the_extra_ones_reset(daemons: DaemonPool):
    """A real peer opens 40 results streams at once and sends nothing on them (each would
    hold a task of the target's for 30 s): the target serves 8 of one peer's at a time,
    resets the rest unread, counts them (also in /metrics), and its request channel still
    answers."""
    from node.mesh import RESULTS_PROTOCOL, STREAMS_PER_PEER

    target = await ready_target(daemons)
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    opened: list[Any] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            try:
                target_peer = ID.from_base58(target.peer_id)
                for _ in range(40):
                    try:
                        opened.append(await mesh.host.new_stream(target_peer,
                                                                 [RESULTS_PROTOCOL]))
                    except Exception:  # reset before our side finished negotiating it
                        pass
                limit = STREAMS_PER_PEER[RESULTS_PROTOCOL]

                def refused() -> int:
                    return target.mesh_stats()["RefusedStreams"].get(RESULTS_PROTOCOL, 0)

                await await_until(lambda: refused() >= 40 - limit, timeout=20,
                                  what="the streams over the limit to be reset")
                assert refused() == 40 - limit
                with urllib.request.urlopen(f"{target.api_url}/metrics", timeout=10) as answer:
                    assert (f'bacnode_streams_refused_total{{protocol="{RESULTS_PROTOCOL}"}} '
                            f"{40 - limit}.0") in answer.read().decode()
                await answers_requests(target, mesh, injector)
            finally:
                for stream in opened:
                    with trio.move_on_after(1):
                        await stream.reset()
                mesh.stop()
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_one_identity_holds_at_most_two_connections(daemons: DaemonPool):
    """Six real peers with one key (one identity) dial a daemon, and keep redialling it as
    their bootstrap peer: it never holds more than two connections from that identity
    (py-libp2p's resource manager, node.mesh.CONNECTIONS_PER_PEER) and denies the rest,
    and only those: a new peer connects at once."""
    from node.mesh import CONNECTIONS_PER_PEER

    target = await ready_target(daemons)
    key = NodeKey.generate()
    clones = [hostile_peer(key, target) for _ in range(6)]
    held: list[int] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            try:
                for clone in clones:
                    await nursery.start(clone.run)
                for _ in range(20):  # 10 s of redialling, every 2 s by each of the six
                    stats = await trio.to_thread.run_sync(target.mesh_stats)
                    held.append(stats["Connections"].get(key.peer_id, 0))
                    await trio.sleep(0.5)
            finally:
                for clone in clones:
                    clone.stop()
    assert max(held) == CONNECTIONS_PER_PEER, held
    newcomer = NodeKey.generate()
    async with running(hostile_peer(newcomer, target)):
        await await_until(
            lambda: newcomer.peer_id in target.mesh_stats()["Connections"], timeout=10,
            what="a new peer connected after the denials")
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_message_naming_the_target_as_its_origin_is_checked_as_any_other(
        daemons: DaemonPool):
    """Pubsub messages are unsigned, so a peer may name any node as a message's origin,
    the node it sends to included (gossipsub itself never sends a message to its origin:
    the injector writes the RPC on the stream). A node skips its validator only for what
    it publishes itself: a heartbeat about it, under its own ID, in an envelope the
    injector signed, is refused for its signature, counted, and neither listed nor passed
    on to its peer."""
    from libp2p.pubsub.pb import rpc_pb2

    target, peer = await _target_and_peer(daemons)
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    async with running(mesh):
        target_peer = await sending_anything_on(mesh, TOPIC_NODES, target)
        before = await trio.to_thread.run_sync(dropped, target)
        peer_before = await trio.to_thread.run_sync(dropped, peer)
        forged = envelope_bytes(
            signer=injector, sender=target.peer_id, msg_type="node.info",
            body=node_info(injector, label="forged", seq=HIGH_SEQ,
                           node_id=target.peer_id).to_body())
        rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(
            data=forged, topicIDs=[TOPIC_NODES], from_id=target_peer.to_bytes(),
            seqno=(1).to_bytes(8, "big"))])
        assert await mesh.pubsub.write_msg(mesh.pubsub.peers[target_peer], rpc)
        await await_until(
            lambda: dropped(target) - before == Counter(BadSignature=1), timeout=20,
            what="the heartbeat naming the target dropped for its signature")
    listed = await trio.to_thread.run_sync(target.node_list)
    assert listed[target.peer_id]["Info"]["Labels"] != {"injected": "forged"}
    peer_listed = await trio.to_thread.run_sync(peer.node_list)
    assert peer_listed[target.peer_id]["Info"]["Labels"] != {"injected": "forged"}
    assert await trio.to_thread.run_sync(dropped, peer) == peer_before


async def test_a_peer_writing_garbage_on_its_pubsub_stream_is_dropped_and_gossip_goes_on(
        daemons: DaemonPool):
    """A real peer writes a frame on its pubsub stream that is no protobuf RPC: the target
    resets that stream and takes the peer out of its gossip mesh, and it keeps taking the
    heartbeats of its honest peer."""
    from libp2p.utils.varint import encode_varint_prefixed

    target, peer = await _target_and_peer(daemons)
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)

    def in_target_mesh() -> bool:
        return injector.peer_id in target.mesh_stats()["MeshPeers"][TOPIC_NODES]

    def heartbeats_taken() -> int:
        return target.mesh_stats()["Accepted"].get("node.info", 0)

    async with running(mesh):
        target_peer = await sending_anything_on(mesh, TOPIC_NODES, target)
        await await_until(in_target_mesh, timeout=20, what="the injector in the target's mesh")
        stream = mesh.pubsub.peers[target_peer]
        await stream.write(encode_varint_prefixed(b"\xff" * 40))
        await await_until(lambda: not in_target_mesh(), timeout=20,
                          what="the injector out of the target's mesh")
        with trio.fail_after(20):
            while True:  # the reset reaches our end of the stream
                try:
                    await stream.write(encode_varint_prefixed(b""))
                except Exception:
                    break
                await trio.sleep(0.1)
    before = await trio.to_thread.run_sync(heartbeats_taken)
    await await_until(lambda: heartbeats_taken() > before, timeout=30,
                      what="a heartbeat of the honest peer taken after the garbage")
    assert peer.peer_id in await trio.to_thread.run_sync(
        target.wait_connected, {peer.peer_id})


def junk_frames(seed: int, count: int) -> list[bytes]:
    """Bytes a broken or hostile peer might write on any protocol's stream: unframed noise,
    frames that are no message, lengths that are no varint or claim 2^63 bytes, and
    varint-prefixed protobuf-shaped messages with random fields, types and nesting."""
    from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

    rng = random.Random(seed)

    def protobuf_shaped(depth: int = 0) -> bytes:
        out = bytearray()
        for _ in range(rng.randint(1, 6)):
            wire_type = rng.choice((0, 1, 2, 2, 5))
            out += encode_uvarint(rng.randint(1, 12) << 3 | wire_type)
            if wire_type == 0:
                out += encode_uvarint(rng.choice((0, 1, 3, 255, 2**31, 2**64 - 1)))
            elif wire_type == 2:
                inner = (protobuf_shaped(depth + 1) if depth < 3 and rng.random() < 0.6
                         else rng.randbytes(rng.randint(0, 40)))
                out += encode_uvarint(len(inner)) + inner
            else:
                out += rng.randbytes(4 if wire_type == 5 else 8)
        return bytes(out)

    return [rng.randbytes(64), encode_varint_prefixed(b"\xff" * 40), b"\x00", b"\x10abc",
            b"\xff" * 9 + b"\x7f", encode_uvarint(2**63) + b"x",
            *(encode_varint_prefixed(protobuf_shaped()) for _ in range(count))]


async def test_junk_on_every_protocol_a_daemon_offers_costs_it_nothing(daemons: DaemonPool):
    """A real peer opens a stream on each protocol the target offers (as identify lists
    them) and writes junk on it, 16 kinds each. py-libp2p let one handler's exception stop
    the whole host: a frame of garbage on a pubsub stream took the daemon down. The target
    must still be up, answer its API and take the peer's requests."""
    target = await ready_target(daemons)
    injector = NodeKey.generate()
    mesh = hostile_peer(injector, target)
    async with running(mesh):
        target_peer = ID.from_base58(target.peer_id)

        def offered() -> list[str]:
            try:
                return list(mesh.host.get_peerstore().get_protocols(target_peer))
            except PeerStoreError:
                return []  # not identified yet

        with trio.fail_after(20):
            while not offered():
                await trio.sleep(0.1)
        # pubsub last: junk there drops the peer from the target's gossip peers
        protocols = sorted(offered(), key=lambda protocol: ("meshsub" in protocol, protocol))
        assert {"/meshsub/1.1.0", "/ipfs/id/1.0.0", "/ipfs/bitswap/1.2.0"} <= set(protocols)
        for protocol in protocols:
            for data in junk_frames(seed=len(protocol), count=10):
                try:
                    with trio.fail_after(5):
                        stream = await mesh.host.new_stream(target_peer, [protocol])
                        await stream.write(data)
                        await stream.close()
                except Exception:
                    pass  # refused or reset: what junk may get
        await trio.sleep(2)  # what is still in flight gets read
        assert target.running, target.stderr[-2000:]
        await answers_requests(target, mesh, injector)
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_peer_forwarding_many_invented_requesters_is_rate_limited_as_a_peer(
        daemons: DaemonPool, busybox_image: str):
    """A real peer invents 100 requesters (100 keys) and forwards 20 validly signed
    announcements of each: no one origin goes over its own budget, yet the target takes
    no more from that one peer than the per-peer bucket allows (PEER_ANNOUNCEMENT_FACTOR
    times the per-origin one; here 5 a second per origin, so 50 per peer) and drops the
    rest as PeerRateLimited."""
    from libp2p.pubsub.pb import rpc_pb2

    from node.mesh import ORIGIN_BURST_SECONDS, PEER_ANNOUNCEMENT_FACTOR

    rate = 5.0
    target = await ready_target(daemons, "--announcements-per-origin", str(rate))
    forwarder = NodeKey.generate()
    mesh = hostile_peer(forwarder, target)
    invented = [NodeKey.generate() for _ in range(100)]
    spec = example_job("spam", "busybox")

    def relayed(origin: NodeKey, seqno: int) -> Any:
        """A pubsub message as ``origin`` would publish it, to be forwarded by ``mesh``."""
        announcement = JobAnnouncement(f"j-{uuid.uuid4()}", origin.peer_id, spec,
                                       now_ms() + 3000)
        return rpc_pb2.Message(
            data=seal_message(origin, announcement, now_ms=now_ms()), topicIDs=[TOPIC_JOBS],
            from_id=ID.from_base58(origin.peer_id).to_bytes(), seqno=seqno.to_bytes(8, "big"))

    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            try:
                mesh.pubsub.set_topic_validator(TOPIC_JOBS, lambda *_: True, False)
                target_peer = await in_jobs_mesh(mesh, target)
                started = time.monotonic()
                for seqno in range(20):
                    for origin in invented:
                        await mesh.pubsub.push_msg(mesh.pubsub.my_id, relayed(origin, seqno))
                        while len(mesh.pubsub.peer_queues.get(target_peer, ())) > 16:
                            await trio.sleep(0.001)
                last = await settled_announcement_counts(
                    target, "RateLimited", "PeerRateLimited", "Graylisted")
                elapsed = time.monotonic() - started
            finally:
                mesh.stop()
    per_peer = rate * PEER_ANNOUNCEMENT_FACTOR
    print(f"forwarded 2,000 from 100 origins in {elapsed:.1f}s; the target took "
          f"{last['accepted']}, refused {last['PeerRateLimited']} as PeerRateLimited, "
          f"{last['Graylisted']} as Graylisted")
    assert last["accepted"] <= per_peer * (ORIGIN_BURST_SECONDS + elapsed), (last, elapsed)
    assert last["PeerRateLimited"] > 0, last
    assert last["RateLimited"] == 0, last  # no single invented requester went over its own
    assert await trio.to_thread.run_sync(target.api, "/api/v1/agent/alive") == {"Status": "OK"}


async def test_a_relay_is_not_scored_for_an_origin_over_its_rate_nor_spends_its_tokens(
        daemons: DaemonPool, busybox_image: str):
    """A real peer relays announcements it did not sign. First 50 that claim an honest
    requester as origin but are signed by the relay: dropped by their signature check,
    they take none of the requester's tokens, so its own burst (10 here) that follows is
    taken whole; they cost the relay a point each, since an honest relay checks a
    signature before it forwards. Then 40 validly signed by a busy requester, beyond its
    burst: the target takes what its bucket allows and drops the rest unread as
    RateLimited, yet the relay, which only passed them on, loses nothing for them, where
    an origin sending its own would lose a point each (the spammer test above): were it
    blamed, 40 more points would have it graylisted and banned."""
    from libp2p.pubsub.pb import rpc_pb2

    from node.mesh import ORIGIN_BURST_SECONDS

    rate = 5.0
    burst = int(rate * ORIGIN_BURST_SECONDS)
    target = await ready_target(daemons, "--announcements-per-origin", str(rate))
    relay = NodeKey.generate()
    mesh = hostile_peer(relay, target)
    honest, busy = NodeKey.generate(), NodeKey.generate()
    spec = example_job("spam", "busybox")
    seqnos = iter(range(1, 1_000))

    def relayed(origin: NodeKey, signer: NodeKey) -> Any:
        """A pubsub message naming ``origin``: an announcement by ``origin`` in an
        envelope ``signer`` signed as ``origin`` (as the relay would forge one)."""
        announcement = JobAnnouncement(f"j-{uuid.uuid4()}", origin.peer_id, spec,
                                       now_ms() + 3000)
        data = (seal_message(origin, announcement, now_ms=now_ms()) if signer is origin
                else envelope_bytes(signer=signer, sender=origin.peer_id,
                                    msg_type=JobAnnouncement.TYPE,
                                    body=announcement.to_body()))
        return rpc_pb2.Message(
            data=data, topicIDs=[TOPIC_JOBS], from_id=ID.from_base58(origin.peer_id).to_bytes(),
            seqno=next(seqnos).to_bytes(8, "big"))

    async def relay_all(messages: list[Any], target_peer: ID) -> None:
        for msg in messages:
            await mesh.pubsub.push_msg(mesh.pubsub.my_id, msg)
            while len(mesh.pubsub.peer_queues.get(target_peer, ())) > 16:
                await trio.sleep(0.001)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh.run)
            try:
                # The relay sends what an attacker would: no checks of its own.
                mesh.pubsub.set_topic_validator(TOPIC_JOBS, lambda *_: True, False)
                target_peer = await in_jobs_mesh(mesh, target)
                forged = [relayed(honest, relay) for _ in range(50)]
                await relay_all(forged + [relayed(honest, honest) for _ in range(burst)],
                                target_peer)
                # Counts that have not started moving look settled: wait for the first.
                await await_until(
                    lambda: target.mesh_stats()["Accepted"].get("job.announce"), timeout=30,
                    what="the first announcement taken")
                after_honest = await settled_announcement_counts(target, "RateLimited")
                forged_cost = (await trio.to_thread.run_sync(target.mesh_stats))[
                    "Scores"].get(relay.peer_id, 0)
                started = time.monotonic()
                await relay_all([relayed(busy, busy) for _ in range(40)], target_peer)
                await await_until(
                    lambda: target.mesh_stats()["Accepted"].get("job.announce", 0) > burst,
                    timeout=30, what="the busy requester's announcements read")
                last = await settled_announcement_counts(target, "RateLimited")
                elapsed = time.monotonic() - started
                stats = await trio.to_thread.run_sync(target.mesh_stats)
            finally:
                mesh.stop()
    assert after_honest == Counter(accepted=burst, RateLimited=0), after_honest
    busy_taken = last["accepted"] - burst
    assert burst <= busy_taken <= burst + rate * elapsed + 1, (last, elapsed)
    assert last["RateLimited"] == 40 - busy_taken > 0, last
    assert GRAYLIST_THRESHOLD < forged_cost <= -40, forged_cost  # 50 points, decaying
    assert stats["Scores"].get(relay.peer_id) >= forged_cost, (stats["Scores"], forged_cost)
    assert relay.peer_id not in stats["Banned"]


async def test_what_one_relay_had_refused_is_taken_from_the_next_without_blame(
        daemons: DaemonPool, busybox_image: str):
    """Relay A forwards 40 announcements (40 invented requesters, one each: no origin over
    its rate), more than A's own per-peer bucket allows, so the target refuses some as
    PeerRateLimited and scores A down. Relay B then forwards the very same 40 messages: the
    ones taken from A are duplicates, and the ones refused were not remembered as invalid,
    so they are taken from B, whose score stays 0 (py-libp2p caches a validator's refusal
    by message ID and would refuse them again, blaming B)."""
    from libp2p.pubsub.pb import rpc_pb2

    from node.mesh import ORIGIN_BURST_SECONDS, PEER_ANNOUNCEMENT_FACTOR

    rate = 1.0
    per_peer_burst = rate * ORIGIN_BURST_SECONDS * PEER_ANNOUNCEMENT_FACTOR
    target = await ready_target(daemons, "--announcements-per-origin", str(rate))
    relay_a, relay_b = NodeKey.generate(), NodeKey.generate()
    mesh_a, mesh_b = hostile_peer(relay_a, target), hostile_peer(relay_b, target)
    spec = example_job("spam", "busybox")

    def signed(origin: NodeKey) -> Any:
        announcement = JobAnnouncement(f"j-{uuid.uuid4()}", origin.peer_id, spec,
                                       now_ms() + 30_000)
        return rpc_pb2.Message(
            data=seal_message(origin, announcement, now_ms=now_ms()), topicIDs=[TOPIC_JOBS],
            from_id=ID.from_base58(origin.peer_id).to_bytes(), seqno=(1).to_bytes(8, "big"))

    messages = [signed(NodeKey.generate()) for _ in range(40)]

    async def relay_all(mesh: Mesh) -> None:
        target_peer = await in_jobs_mesh(mesh, target)
        for msg in messages:
            copy = rpc_pb2.Message()
            copy.CopyFrom(msg)
            await mesh.pubsub.push_msg(mesh.pubsub.my_id, copy)
            while len(mesh.pubsub.peer_queues.get(target_peer, ())) > 16:
                await trio.sleep(0.001)

    def taken() -> int:
        return target.mesh_stats()["Accepted"].get("job.announce", 0)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for mesh in (mesh_a, mesh_b):
                await nursery.start(mesh.run)
                mesh.pubsub.set_topic_validator(TOPIC_JOBS, lambda *_: True, False)
            try:
                await relay_all(mesh_a)
                await await_until(taken, timeout=30, what="A's first announcement taken")
                from_a = await settled_announcement_counts(target, "PeerRateLimited")
                await relay_all(mesh_b)
                await await_until(lambda: taken() > from_a["accepted"], timeout=30,
                                  what="B's announcements taken")
                last = await settled_announcement_counts(target, "PeerRateLimited")
                stats = await trio.to_thread.run_sync(target.mesh_stats)
            finally:
                mesh_a.stop()
                mesh_b.stop()
    assert per_peer_burst <= from_a["accepted"] < 40 and from_a["PeerRateLimited"] > 0, from_a
    assert last == Counter(accepted=40, PeerRateLimited=from_a["PeerRateLimited"]), last
    assert stats["Scores"].get(relay_b.peer_id) == 0, stats["Scores"]
    assert stats["Scores"].get(relay_a.peer_id, 0) < 0, stats["Scores"]


async def test_a_peer_known_only_by_an_announced_dns_name_is_dialled(daemons: DaemonPool):
    """A node that announces ``/dns4/localhost/tcp/PORT`` (``--announce-addr``): its
    heartbeat carries that address, and a peer that knows it only from there (never
    connected, no bootstrap to it) resolves the name and reaches it point to point."""
    target = daemons.new("target")
    target.args += ["--announce-addr", f"/dns4/localhost/tcp/{target.port}"]
    target.start()
    await await_until(lambda: target.api("/readyz")["Ready"], timeout=30, what="ready")
    announced = f"/dns4/localhost/tcp/{target.port}/p2p/{target.peer_id}"
    assert target.api("/api/v1/agent/node")["Addresses"] == [announced]
    caller = NodeKey.generate()
    (port,) = free_ports(1)
    mesh = Mesh(caller, listen=(f"/ip4/127.0.0.1/tcp/{port}",), on_message=noop_handler)
    bid = Bid(job_id="j-12345678-1234-4123-8123-123456789abc",
              execution_id="e-12345678-1234-4123-8123-123456789abc", node_id=caller.peer_id,
              accept=False, reason="", free=Capacity(), running_executions=0)
    async with running(mesh):
        mesh.remember_addresses(target.peer_id, (announced,))
        reply = await mesh.request(target.peer_id,
                                   seal_message(caller, bid, now_ms=now_ms()))
        assert reply == UNKNOWN_JOB_REPLY  # answered: the connection works


async def test_a_candidate_whose_reply_is_not_its_own_bid_is_scored_down_and_skipped(
        daemons: DaemonPool):
    """A requester takes what a candidate sends back to being asked as that candidate's bid
    only if it is one, signed by it and naming it. A peer that heartbeats as a compute
    node and answers each ask with a bid in another node's name is refused (a point off,
    counted as ``UnexpectedReply``), and the job runs on the honest node all the same."""
    target = await ready_target(daemons)
    impostor, other = NodeKey.generate(), NodeKey.generate()
    asked: list[str] = []

    async def lie(sender: str, data: bytes) -> bytes:
        announcement = decode_message(parse_unverified(data))
        assert isinstance(announcement, JobAnnouncement), announcement
        asked.append(announcement.job_id)
        execution_id = f"e-{uuid.uuid4()}"
        if len(asked) % 2:  # a bid in another node's name
            return seal_message(impostor, Bid(
                job_id=announcement.job_id, execution_id=execution_id, node_id=other.peer_id,
                accept=True, reason="", free=Capacity(1000, 1 << 30, 1 << 30),
                running_executions=0), now_ms=now_ms())
        # its own message, but no bid: news that an execution nobody gave it ran
        return seal_message(impostor, ExecutionUpdate(
            job_id=announcement.job_id, execution_id=execution_id, node_id=impostor.peer_id,
            state="Completed", message="done", exit_code=0, stdout="", stderr=""),
            now_ms=now_ms())

    (port,) = free_ports(1)
    mesh = Mesh(impostor, listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                bootstrap=(target.multiaddr,), on_message=noop_handler, on_request=lie)
    # Bigger than the target, so that its bid could always beat the target's own: the
    # target, which bids first, cannot settle a job without it, and asks it every time.
    big = Capacity(64_000, 1 << 40, 1 << 40)
    info = replace(node_info(impostor, label="impostor", seq=1), engines=("noop",),
                   publishers=("noop",), total=big, free=big,
                   addresses=(f"/ip4/127.0.0.1/tcp/{port}/p2p/" + impostor.peer_id,))
    async with running(mesh):
        while impostor.peer_id not in await trio.to_thread.run_sync(known_nodes, target):
            await mesh.publish(TOPIC_NODES, info)
            await trio.sleep(0.5)
        jobs = [await trio.to_thread.run_sync(put_noop_job, target) for _ in range(3)]
        for job_id in jobs:
            await await_until(lambda job_id=job_id: target.api(
                f"/api/v1/orchestrator/jobs/{job_id}")["Job"]["State"]["StateType"]
                == "Completed", timeout=30, what=f"job {job_id} to complete")
        stats = await trio.to_thread.run_sync(target.mesh_stats)
    assert set(jobs) <= set(asked), (jobs, asked)  # the impostor was asked each time
    refused = Counter({reason: stats["Dropped"].get(reason, 0)
                       for reason in ("SenderMismatch", "UnexpectedReply")})
    assert refused["SenderMismatch"] >= 2 and refused["UnexpectedReply"] >= 1, stats
    assert stats["Scores"].get(impostor.peer_id, 0) < 0, stats
    for job_id in jobs:
        executions = await trio.to_thread.run_sync(
            target.api, f"/api/v1/orchestrator/jobs/{job_id}/executions")
        assert {e["NodeID"] for e in executions["Items"]} == {target.peer_id}, executions


def known_nodes(target: Daemon) -> set[str]:
    listed = target.api("/api/v1/orchestrator/nodes")
    return {node["Info"]["NodeID"] for node in listed.get("Nodes") or []}


def put_noop_job(target: Daemon) -> str:
    """PUT a job with the noop engine and publisher to ``target``; its ID."""
    body = json.dumps({"Job": {"Type": "batch", "Count": 1, "Tasks": [
        {"Name": "main", "Engine": {"Type": "noop"}, "Publisher": {"Type": "noop"}}]}})
    request = urllib.request.Request(f"{target.api_url}/api/v1/orchestrator/jobs",
                                     data=body.encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.loads(answer.read())["JobID"])


async def test_load_news_sent_straight_more_than_twice_a_second_is_refused_and_scored_down(
        daemons: DaemonPool):
    """A node's load news comes straight, at most once a second (``Daemon._tell_load``).
    A real peer that sends its own, validly signed node info straight 20 times in a row
    is listed from the first, refused (counted as ``LoadNewsTooOften``) for those that
    come too soon, and scored down."""
    target = await ready_target(daemons)
    chatty = NodeKey.generate()
    (port,) = free_ports(1)
    mesh = Mesh(chatty, listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                bootstrap=(target.multiaddr,), on_message=noop_handler)
    replies = []
    async with running(mesh):
        for seq in range(1, 21):
            info = node_info(chatty, label="chatty", seq=seq)
            replies.append(await mesh.request(target.peer_id,
                                              seal_message(chatty, info, now_ms=now_ms())))
        stats = await trio.to_thread.run_sync(target.mesh_stats)
        listed = await trio.to_thread.run_sync(known_nodes, target)
    assert replies[0] == b"ok", replies[0]
    assert replies.count(b"error: load news comes at most once a second") >= 15, replies
    assert chatty.peer_id in listed
    assert stats["Dropped"].get("LoadNewsTooOften", 0) >= 15, stats
    assert stats["Scores"].get(chatty.peer_id, 0) < 0, stats
