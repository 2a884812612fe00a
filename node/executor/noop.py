"""An executor that runs nothing: exit 0, empty output, after an optional delay.

For benchmarks and tests of the orchestration (bidding, state changes, publishing),
which then measure bacnode and not Docker (nor the disk). It writes nothing: where a
publisher reads the files or a verified job hashes them, the compute side writes the
layout of an empty run (``write_empty_results``), so publishers and ``get`` work on its
results. It honours timeouts and ``cancel`` during the delay.
"""

from __future__ import annotations

import time

import trio

from .base import ExecutionRequest, ExecutionResult, Executor

__all__ = ["NoopExecutor"]


class NoopExecutor(Executor):
    """Pretends to run every task; ``delay`` seconds stand in for the task's run time."""

    engine_type = "noop"
    writes_results = False

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

