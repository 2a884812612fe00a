"""The wraps of py-libp2p in ``node.libp2p_tuning`` keep its behaviour but for what they say."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import multiaddr
import trio
from libp2p.network.config import ConnectionConfig
from libp2p.network.health.ping_probe import ConnectionPingResult
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.libp2p_tuning import (
    PING_FAILURES_TO_CLOSE,
    WINDOW_GRANT_BYTES,
    _tolerate_late_pings,
)
from node.mesh import Mesh
from protocol.identity import NodeKey
from scripts.daemons import REPO_ROOT, child_env, free_ports


class _Connection:
    """Stands for a connection: the wrap only keys its count on it."""


async def test_a_connection_is_given_up_only_after_several_late_pings_in_a_row():
    outcomes: list[bool] = []

    async def ping(monitor: object, conn: object) -> ConnectionPingResult:
        return ConnectionPingResult(success=outcomes.pop(0), rtt_ms=1.0)

    tolerant = _tolerate_late_pings(ping)
    busy, other = _Connection(), _Connection()

    async def probe(conn: _Connection, success: bool) -> ConnectionPingResult:
        outcomes.append(success)
        return await tolerant(None, conn)

    # Late pings before the last of a row are skipped probes: the monitor neither scores
    # nor closes the connection for them.
    for _ in range(PING_FAILURES_TO_CLOSE - 1):
        assert (await probe(busy, False)).skipped
    # One that answers starts the count again ...
    assert (await probe(busy, True)).success
    for _ in range(PING_FAILURES_TO_CLOSE - 1):
        assert (await probe(busy, False)).skipped
    # ... and another connection's failures are its own.
    assert (await probe(other, False)).skipped
    # The last of a row is reported as it was: the monitor closes the connection.
    failed = await probe(busy, False)
    assert not failed.success and not failed.skipped


#: What the scripts below share: two meshes in one process, the second bootstrapped to the
#: first, and a stream from the second to the first's ``reader``. ``node.mesh`` (which
#: applies node.libp2p_tuning) is imported only then, after a script has taken py-libp2p's
#: own functions to compare with.
TWO_MESHES = textwrap.dedent("""
    import json, sys
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID
    from libp2p.stream_muxer.yamux import yamux

    async def ignore(*args):
        pass

    async def stream_between_two_meshes(nursery, protocol, reader):
        from node.mesh import Mesh
        from protocol.identity import NodeKey
        port_a, port_b = (int(p) for p in sys.argv[2:])
        a = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port_a}",), on_message=ignore)
        await nursery.start(a.run)
        a.host.set_stream_handler(protocol, reader)
        b = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port_b}",),
                 bootstrap=(f"/ip4/127.0.0.1/tcp/{port_a}/p2p/{a.key.peer_id}",),
                 on_message=ignore)
        await nursery.start(b.run)
        stream = await b.host.new_stream(ID.from_base58(a.key.peer_id), [protocol])
        return a, b, stream
""")


def _two_meshes(script: str, mode: str) -> dict[str, Any]:
    """Run ``script`` (after ``TWO_MESHES``) in a process of its own: the wrappers are
    installed once per process. Its last line of output, as JSON."""
    done = subprocess.run([sys.executable, "-c", TWO_MESHES + script, mode,
                           *(str(p) for p in free_ports(2))],
                          capture_output=True, text=True, timeout=90, env=child_env(),
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


WINDOW_UPDATES_SCRIPT = textwrap.dedent("""
    py_libp2p_own = yamux.YamuxStream._auto_tune_and_send_window_update
    import node.mesh  # applies node.libp2p_tuning

    MESSAGES, SIZE = 400, 1000
    if sys.argv[1] == "per-read":  # py-libp2p's own behaviour, to compare with
        yamux.YamuxStream._auto_tune_and_send_window_update = py_libp2p_own
    updates = []
    send_update = yamux.YamuxStream.send_window_update

    async def counting(self, increment, skip_lock=False):
        updates.append(increment)
        await send_update(self, increment, skip_lock)

    yamux.YamuxStream.send_window_update = counting

    async def main():
        received = trio.Event()
        got = []

        async def reader(stream):
            while len(got) < MESSAGES * SIZE:
                got.extend(await stream.read(SIZE))
            await stream.write(b"done")
            received.set()

        async with trio.open_nursery() as nursery:
            a, b, stream = await stream_between_two_meshes(
                nursery, TProtocol("/bacnode-test/small-messages/1"), reader)
            before = len(updates)
            for _ in range(MESSAGES):
                await stream.write(b"x" * SIZE)
            with trio.fail_after(30):
                await received.wait()
                assert await stream.read(4) == b"done"
            print(json.dumps({"updates": len(updates) - before}), flush=True)
            a.stop(); b.stop()

    trio.run(main)
""")


def test_a_reader_of_small_messages_grants_window_in_batches_as_go_yamux_does():
    # 400 KB read in 1 KB messages: py-libp2p sends a window update for every read, each
    # an encrypted frame and a syscall on both ends; bacnode one per WINDOW_GRANT_BYTES.
    assert _two_meshes(WINDOW_UPDATES_SCRIPT, "per-read")["updates"] >= 300
    assert _two_meshes(WINDOW_UPDATES_SCRIPT, "batched")["updates"] <= (
        400_000 // WINDOW_GRANT_BYTES + 2)


TIMED_BODIES_SCRIPT = textwrap.dedent("""
    py_libp2p_own = yamux.Yamux._read_data_body
    timed = []

    async def counting(self, length):  # py-libp2p's read of a body, under its timer
        timed.append(length)
        return await py_libp2p_own(self, length)

    yamux.Yamux._read_data_body = counting
    import node.mesh  # applies node.libp2p_tuning, around `counting`

    # 300 small messages, then one larger than a noise frame (its body comes in pieces).
    MESSAGES = [bytes([i % 251]) * 1000 for i in range(300)] + [bytes(range(256)) * 1200]
    if sys.argv[1] == "own":
        yamux.Yamux._read_data_body = counting

    async def main():
        received = trio.Event()
        got = bytearray()
        expected = b"".join(MESSAGES)

        async def reader(stream):
            while len(got) < len(expected):
                got.extend(await stream.read(65536))
            received.set()

        async with trio.open_nursery() as nursery:
            a, b, stream = await stream_between_two_meshes(
                nursery, TProtocol("/bacnode-test/bodies/1"), reader)
            before = len(timed)
            for message in MESSAGES:
                await stream.write(message)
            with trio.fail_after(30):
                await received.wait()
            print(json.dumps({"timed": len(timed) - before, "intact": bytes(got) == expected}),
                  flush=True)
            a.stop(); b.stop()

    trio.run(main)
""")


def test_a_yamux_body_already_decrypted_is_taken_without_a_timer():
    # py-libp2p enters a trio.fail_after for every data frame's body; bacnode only for a
    # body that has not all arrived, and the bytes read are the same either way.
    own = _two_meshes(TIMED_BODIES_SCRIPT, "own")
    assert own["intact"] and own["timed"] >= 300
    tuned = _two_meshes(TIMED_BODIES_SCRIPT, "tuned")
    assert tuned["intact"] and tuned["timed"] <= 10


YAMUX_TUNABLES_SCRIPT = textwrap.dedent("""
    import json, os
    import libp2p.stream_muxer.yamux.yamux as yamux
    from node import libp2p_tuning
    libp2p_tuning.apply()
    os.environ["PY_YAMUX_DATA_READ_TIMEOUT"] = "9"
    os.environ["PY_YAMUX_BATCH_THRESHOLD_DIV"] = "5"
    print(json.dumps({"missing": [name for name in libp2p_tuning.YAMUX_TUNABLES
                                  if not hasattr(yamux, name)],
                      "timeout": yamux._yamux_data_read_timeout(),
                      "divisor": yamux._yamux_batch_threshold_divisor()}))
""")


def test_yamux_reads_its_tunables_once_as_the_daemon_starts_not_at_every_frame():
    # In a process of its own: the wrappers are installed once per process.
    env = {**child_env(), "PY_YAMUX_DATA_READ_TIMEOUT": "7", "PY_YAMUX_BATCH_THRESHOLD_DIV": "3"}
    done = subprocess.run([sys.executable, "-c", YAMUX_TUNABLES_SCRIPT], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    # Every function named is still py-libp2p's (an upgrade that renames one shows here),
    # and each answers what the environment said when the daemon started.
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "missing": [], "timeout": 7.0, "divisor": 3}


#: Peers opening and closing connections to one node at once (one after another is slow:
#: each dial and close takes some 200 ms).
CHURNERS = 10


async def _ignore(*args: object) -> None:
    pass


def _mesh() -> Mesh:
    (port,) = free_ports(1)
    return Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port}",), on_message=_ignore)


async def test_a_node_takes_new_peers_after_more_connections_than_its_inbound_slots_came_and_went():
    # py-libp2p's own handler kept each inbound connection's slot after it closed: a node
    # that had accepted this many, opened and closed, refused every peer after.
    slots = ConnectionConfig().max_connections - ConnectionConfig().min_connections
    churners = [_mesh() for _ in range(CHURNERS)]
    target, newcomer = _mesh(), _mesh()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for mesh in (target, newcomer, *churners):
                await nursery.start(mesh.run)
            target_info = info_from_p2p_addr(multiaddr.Multiaddr(target.addresses()[0]))

            async def churn(churner: Mesh) -> None:
                for _ in range(slots // CHURNERS + 1):
                    await churner.host.connect(target_info)
                    await churner.host.disconnect(target_info.peer_id)

            async with trio.open_nursery() as churning:
                for churner in churners:
                    churning.start_soon(churn, churner)
            with trio.fail_after(10):
                await newcomer.host.connect(target_info)
            assert newcomer.peer_id in {
                peer.to_base58() for peer in target.host.get_network().connections}
            for mesh in (target, newcomer, *churners):
                mesh.stop()


def test_the_validation_cache_keeps_py_libp2ps_ttl_size_and_eviction_order() -> None:
    import random
    import time

    import libp2p.pubsub.pubsub as pubsub_module

    from node.libp2p_tuning import _OrderedValidationCache

    assert pubsub_module.ValidationCache is _OrderedValidationCache  # what Pubsub builds
    (py_libp2ps,) = _OrderedValidationCache.__bases__
    ours, theirs = _OrderedValidationCache(ttl=60, max_size=50), py_libp2ps(ttl=60, max_size=50)
    choose = random.Random(7)
    now = time.time()
    for step in range(5_000):
        msg_id = choose.randrange(120).to_bytes(2, "big")
        if choose.random() < 0.5:
            # Some results are already past their TTL: get() drops them.
            stamp = now - (120 if choose.random() < 0.1 else 0)
            result = pubsub_module.ValidationResult(choose.random() < 0.5, stamp)
            ours.put(msg_id, result)
            theirs.put(msg_id, result)
        else:
            assert ours.get(msg_id) == theirs.get(msg_id), step
        if step % 1000 == 999:
            ours.clear_expired()
            theirs.clear_expired()
        assert list(ours.cache) == theirs.access_order, step
        assert dict(ours.cache) == theirs.cache, step


async def test_a_stream_handler_that_fails_costs_its_stream_not_the_node():
    # py-libp2p let a handler's exception out through the connection and the swarm: the
    # host stopped. The failing handler here is a real one a peer's bytes make raise.
    failing_protocol = "/bacnode-test/fails/1"
    target, peer, newcomer = _mesh(), _mesh(), _mesh()

    async def fail_on_what_arrives(stream: object) -> None:
        data = await stream.read(64)  # type: ignore[attr-defined]
        raise ValueError(f"cannot handle {data!r}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for mesh in (target, peer, newcomer):
                await nursery.start(mesh.run)
            target.host.set_stream_handler(failing_protocol, fail_on_what_arrives)
            target_info = info_from_p2p_addr(multiaddr.Multiaddr(target.addresses()[0]))
            await peer.host.connect(target_info)
            for _ in range(3):
                stream = await peer.host.new_stream(target_info.peer_id, [failing_protocol])
                await stream.write(b"anything")
                with trio.fail_after(10):
                    try:
                        while await stream.read(64):
                            pass
                    except Exception:
                        pass  # reset: what a failed handler's stream gets
            with trio.fail_after(10):
                await newcomer.host.connect(target_info)
            assert {peer.peer_id, newcomer.peer_id} <= {
                each.to_base58() for each in target.host.get_network().connections}
            for mesh in (target, peer, newcomer):
                mesh.stop()


async def test_a_free_lock_is_taken_without_a_scheduler_pass_and_a_held_one_in_turn():
    from node.libp2p_tuning import EagerLock

    for inner in (trio.Lock(), trio.Semaphore(1)):
        lock = EagerLock(inner)
        ran: list[str] = []

        async def take(name: str, lock: EagerLock = lock, ran: list[str] = ran) -> None:
            async with lock:
                ran.append(name)
                await trio.sleep(0.01)

        async def other(ran: list[str] = ran) -> None:
            ran.append("other task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await lock.acquire()
            # trio's own acquire would have let the other task run first.
            assert ran == [], type(inner)
            for name in ("first", "second", "third"):
                nursery.start_soon(take, name)
                await trio.testing.wait_all_tasks_blocked()
            lock.release()
        assert ran == ["other task", "first", "second", "third"], type(inner)


async def test_a_connections_locks_are_eager_and_requests_at_once_each_get_their_reply():
    from node.libp2p_tuning import EagerLock

    async def echo(sender: str, data: bytes) -> bytes:
        await trio.sleep(0)
        return data

    caller = _mesh()
    (port,) = free_ports(1)
    answerer = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                    on_message=_ignore, on_request=echo)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for mesh in (caller, answerer):
                await nursery.start(mesh.run)
            await caller.host.connect(
                info_from_p2p_addr(multiaddr.Multiaddr(answerer.addresses()[0])))
            replies: dict[int, bytes] = {}

            async def ask(i: int) -> None:
                replies[i] = await caller.request(answerer.peer_id, b"%d:" % i + b"x" * 600)

            async with trio.open_nursery() as asking:
                for i in range(64):
                    asking.start_soon(ask, i)
            assert replies == {i: b"%d:" % i + b"x" * 600 for i in range(64)}

            (connection,) = caller.host.get_network().connections[answerer.host.get_id()]
            muxer = connection.muxed_conn
            stream = next(iter(muxer.streams.values()))
            tcp = muxer.secured_conn.conn._raw.stream  # under node.noise's session
            for lock in (muxer._write_lock, stream.window_lock, stream.rw_lock._writer_lock,
                         stream.rw_lock._readers_lock, tcp.read_lock, tcp.write_lock):
                assert isinstance(lock, EagerLock)
            for mesh in (caller, answerer):
                mesh.stop()
