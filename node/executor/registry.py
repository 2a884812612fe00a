"""Which engines this node runs, by the spec's ``Engine.Type``."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Executor


class UnsupportedEngine(Exception):
    """The job's engine is not one this node runs."""


class ExecutorRegistry:
    def __init__(self, executors: Iterable[Executor] = ()) -> None:
        self._executors: dict[str, Executor] = {}
        for executor in executors:
            self._executors[executor.engine_type] = executor

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self._executors)

    def get(self, engine_type: str) -> Executor:
        executor = self._executors.get(engine_type)
        if executor is None:
            raise UnsupportedEngine(f"engine {engine_type!r} is not available on this node "
                                    f"(available: {', '.join(self.types) or 'none'})")
        return executor

    async def cancel(self, execution_id: str) -> bool:
        """Stop ``execution_id`` wherever it runs; whether some executor had it."""
        found = False
        for executor in self._executors.values():
            found = await executor.cancel(execution_id) or found
        return found
