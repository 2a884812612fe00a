"""``Mesh.run`` under outer cancellation: it must stop, whatever stage it is in.

Its libp2p body runs shielded, so a bug here does not fail, it hangs, and no
``trio.fail_after`` in this process could end it. Hence the mesh runs in a child
process with a deadline that kills it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from scripts.daemons import REPO_ROOT, child_env, free_ports

SCRIPT = textwrap.dedent("""
    import sys, time, trio
    from node.mesh import Mesh
    from protocol.identity import NodeKey

    async def ignore(*args):
        pass

    async def cancelled_after(delay, port, started_first):
        mesh = Mesh(NodeKey.generate(), listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                    on_message=ignore)
        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            if started_first:
                await nursery.start(mesh.run)
            else:
                nursery.start_soon(mesh.run)
            await trio.sleep(delay)
            nursery.cancel_scope.cancel()
        print(f"stopped {delay} {started_first} {time.monotonic() - began:.2f}", flush=True)

    ports = iter(int(p) for p in sys.argv[1:])
    for delay, started_first in ((0, False), (0.1, False), (0, True), (1.0, True)):
        trio.run(cancelled_after, delay, next(ports), started_first)
""")


def test_cancelling_a_mesh_stops_it_during_and_after_start_up():
    """What the daemon does on SIGTERM during start-up, or when a sibling task fails."""
    ports = free_ports(4)
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, *map(str, ports)], cwd=REPO_ROOT,
            env=child_env(), capture_output=True, text=True, timeout=45,
        )
    except subprocess.TimeoutExpired as exc:
        done = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        raise AssertionError(f"a cancelled mesh never stopped; finished cases:\n{done}") from None
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    for line in lines:
        _, delay, _, seconds = line.split()
        # Cancellation is a stop request: it takes effect in moments, not STOP_GRACE_SECONDS.
        assert float(seconds) < float(delay) + 4, line
