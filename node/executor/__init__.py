"""Executors: run one execution's task and leave Bacalhau's results layout behind.

One interface (``Executor``), one module per backend: ``docker`` (the real one) and
``noop`` (Bacalhau's no-op engine, for benchmarks and orchestration tests), and a
registry (``ExecutorRegistry``) that finds the one for a job's engine type.
``docker`` is imported lazily by its users, since docker-py is heavy; this package's
own import stays light.
"""

from .base import (
    DEFAULT_TAIL_BYTES,
    EXIT_CODE_FILE,
    OUTPUTS_DIR,
    OUTPUTS_TARGET,
    STDERR_FILE,
    STDOUT_FILE,
    ExecutionRequest,
    ExecutionResult,
    Executor,
)
from .noop import NoopExecutor
from .registry import ExecutorRegistry, UnsupportedEngine

__all__ = [
    "DEFAULT_TAIL_BYTES",
    "EXIT_CODE_FILE",
    "OUTPUTS_DIR",
    "OUTPUTS_TARGET",
    "STDERR_FILE",
    "STDOUT_FILE",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ExecutorRegistry",
    "NoopExecutor",
    "UnsupportedEngine",
]
