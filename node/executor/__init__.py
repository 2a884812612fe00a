"""Executors: run one execution's task and leave Bacalhau's results layout behind.

One interface (``Executor``), one module per backend: ``docker`` (the real one) and
``noop`` (for benchmarks and orchestration tests). ``docker`` is imported lazily by
its users, since docker-py is heavy; this package's own import stays light.
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
    "NoopExecutor",
]
