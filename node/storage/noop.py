"""A storage backend that stages nothing: an empty directory, for tests and benchmarks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from protocol.jobspec import InputSource

from .base import Storage

__all__ = ["NoopStorage"]


class NoopStorage(Storage):
    """Stages every input as an empty, readable directory; registered under any type."""

    source_type = "noop"

    async def size_hint(self, source: InputSource) -> int | None:
        return 0

    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        def make() -> Path:
            Path(staging_dir).mkdir(parents=True, exist_ok=True)
            holder = Path(tempfile.mkdtemp(prefix="noop-", dir=staging_dir))
            holder.chmod(0o755)
            return holder

        return await trio.to_thread.run_sync(make)
