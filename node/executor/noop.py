"""An executor that runs nothing: exit 0, empty output, after an optional delay.

For benchmarks and tests of the orchestration (bidding, state changes, publishing),
which then measure bacnode and not Docker. It still leaves a complete results layout
(empty ``outputs/``, empty ``stdout``/``stderr``, ``exitCode`` 0), so publishers and
``get`` work on its results, and it honours timeouts and ``cancel`` during the delay.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from .base import (
    STDERR_FILE,
    STDOUT_FILE,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    prepare_results_dir,
    write_exit_code,
)

__all__ = ["NoopExecutor"]


class NoopExecutor(Executor):
    """Pretends to run every task; ``delay`` seconds stand in for the task's run time."""

    engine_type = "noop"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._running: dict[str, trio.CancelScope] = {}
        self.runs = 0

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        began = time.monotonic()
        if request.execution_id in self._running:
            raise ValueError(f"execution {request.execution_id} is already running here")
        timed_out = cancelled = False
        scope = trio.CancelScope()
        self._running[request.execution_id] = scope
        try:
            with scope:
                with trio.move_on_after(request.timeout_seconds or float("inf")) as deadline:
                    await trio.sleep(self.delay)
                timed_out = deadline.cancelled_caught
            cancelled = scope.cancelled_caught
        finally:
            del self._running[request.execution_id]
        self.runs += 1
        exit_code = 137 if timed_out or cancelled else 0
        # In a worker thread, as every executor's file work: the loop serves the node. One
        # hop for all of it: in a burst of no-op jobs each hop (two GIL hand-overs and a
        # wake-up of the loop) is a measurable share of the node's work.
        await trio.to_thread.run_sync(_write_results, request.results_dir, exit_code)
        if timed_out or cancelled:
            error = (
                f"execution timed out after {request.timeout_seconds}s and was killed"
                if timed_out
                else "execution was cancelled and its task killed"
            )
            return ExecutionResult(
                exit_code=137,
                error=error,
                timed_out=timed_out,
                cancelled=cancelled,
                duration=time.monotonic() - began,
            )
        return ExecutionResult(exit_code=0, duration=time.monotonic() - began)

    async def cancel(self, execution_id: str) -> bool:
        scope = self._running.get(execution_id)
        if scope is None:
            return False
        scope.cancel()
        return True

    async def is_installed(self) -> bool:
        return True

    async def cleanup_orphans(self) -> int:
        return 0


def _write_results(results_dir: Path, exit_code: int) -> None:
    prepare_results_dir(results_dir)
    (results_dir / STDOUT_FILE).write_bytes(b"")
    (results_dir / STDERR_FILE).write_bytes(b"")
    write_exit_code(results_dir, exit_code)
