"""``python -m tests.adversaries ROLE serve [flags]``: ``bacnode serve`` as ROLE.

Roles:

- ``liar``: runs each job honestly, then changes one byte of its first non-empty output
  file before anything is hashed, so it commits to, reveals and signs (honestly, with its
  own key) a result that is wrong. Every liar changes the same byte the same way, so two
  liars on one job agree with each other: a colluding minority.
- ``withholder``: runs each job and commits to its result, then never reveals it.
- ``copier``: runs nothing. It waits ``COPIER_WAIT_SECONDS`` for another node's record
  of the job on the results topic, to copy; as records of a verified job are gossiped only
  after the verdict, it finds none, and commits to a guess (an empty result). It says on
  stderr what it saw before and after it committed.
- ``member_forger``: hands a joining peer a membership table whose first rows are forged:
  each other node's heartbeat rewritten to list the forger's own addresses, newer than the
  real one, and signed with the forger's key (it has no other); then a row of garbage;
  then the honest rows. Accepted, the forged rows would point the joiner's dials at the
  forger instead of those nodes.
- ``equivocator``: runs each job and commits to its result after ``EQUIVOCATOR_DELAY_SECONDS``
  (slow, so that a test can add a node meanwhile); when asked, reveals a different result
  (one output byte changed), as a node telling different peers different things would.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _lie_about_outputs() -> None:
    from node import compute

    honest = compute.Compute._stage_and_run

    async def lying(self: Any, execution: Any, staging_dir: Path, results_dir: Path) -> Any:
        result = await honest(self, execution, staging_dir, results_dir)
        for path in sorted((results_dir / "outputs").rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size:
                data = bytearray(path.read_bytes())
                data[0] ^= 0x01
                path.write_bytes(bytes(data))
                break
        return result

    compute.Compute._stage_and_run = lying  # type: ignore[method-assign]


def _never_reveal() -> None:
    from node import compute

    async def withhold(self: Any, request: Any, sender: str) -> None:
        return None

    compute.Compute.on_reveal_request = withhold  # type: ignore[method-assign]


COPIER_WAIT_SECONDS = 8.0
EQUIVOCATOR_DELAY_SECONDS = 8.0


def _copy_instead_of_running() -> None:
    import trio

    from node import compute, daemon
    from node.executor.base import ExecutionResult
    from protocol.messages import ResultRecord

    seen: dict[str, int] = {}
    committed: set[str] = set()
    honest_on_message = daemon.Daemon.on_message

    async def watching(self: Any, topic: str, envelope: Any, message: Any) -> None:
        if isinstance(message, ResultRecord) and message.node_id != self.peer_id:
            seen[message.job_id] = seen.get(message.job_id, 0) + 1
            when = "after" if message.job_id in committed else "before"
            print(f"copier: saw a record of job {message.job_id} {when} committing",
                  file=sys.stderr, flush=True)
        await honest_on_message(self, topic, envelope, message)

    async def copy(self: Any, execution: Any, staging_dir: Path, results_dir: Path) -> Any:
        job_id = execution.job.id
        with trio.move_on_after(COPIER_WAIT_SECONDS):
            while not seen.get(job_id):
                await trio.sleep(0.1)
        if not seen.get(job_id):
            print(f"copier: no record of job {job_id} to copy; guessing", file=sys.stderr,
                  flush=True)
        committed.add(job_id)
        (results_dir / "outputs").mkdir(parents=True, exist_ok=True)
        (results_dir / "stdout").write_bytes(b"")
        (results_dir / "stderr").write_bytes(b"")
        return ExecutionResult(exit_code=0)

    daemon.Daemon.on_message = watching  # type: ignore[method-assign]
    compute.Compute._stage_and_run = copy  # type: ignore[method-assign]


def _equivocate() -> None:
    import trio

    from node import compute

    honest_run = compute.Compute._stage_and_run
    honest_reveal = compute.Compute.on_reveal_request

    async def slow(self: Any, execution: Any, staging_dir: Path, results_dir: Path) -> Any:
        result = await honest_run(self, execution, staging_dir, results_dir)
        await trio.sleep(EQUIVOCATOR_DELAY_SECONDS)
        return result

    async def other_story(self: Any, request: Any, sender: str) -> None:
        for path in sorted((self.results_root / request.execution_id / "outputs").rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size:
                data = bytearray(path.read_bytes())
                data[-1] ^= 0x01
                path.write_bytes(bytes(data))
                break
        await honest_reveal(self, request, sender)

    compute.Compute._stage_and_run = slow  # type: ignore[method-assign]
    compute.Compute.on_reveal_request = other_story  # type: ignore[method-assign]


def _forge_member_rows() -> None:
    import dataclasses

    from node import daemon
    from protocol.envelope import parse_unverified
    from protocol.messages import decode_message, seal_message

    honest = daemon.Daemon._membership_rows

    def forged(self: Any) -> list[tuple[int, bytes]]:
        rows = honest(self)
        me = self.local_node_info()
        lies = []
        for _, data in rows[1:]:
            real = decode_message(parse_unverified(data))
            claim = dataclasses.replace(real, addresses=me.addresses, seq=me.seq + 1)
            lies.append((0, seal_message(self.key, claim, now_ms=me.seq)))
        return [*lies, (0, b"\x00garbage"), *rows]

    daemon.Daemon._membership_rows = forged  # type: ignore[method-assign]


ROLES = {"liar": _lie_about_outputs, "withholder": _never_reveal,
         "copier": _copy_instead_of_running, "equivocator": _equivocate,
         "member_forger": _forge_member_rows}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m tests.adversaries {{{','.join(ROLES)}}} serve [flags]")
    ROLES[sys.argv.pop(1)]()
    from node.__main__ import main as node_main

    node_main()


if __name__ == "__main__":
    main()
