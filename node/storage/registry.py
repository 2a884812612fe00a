"""Which input source types this node can stage, and staging all of an execution's inputs.

Backends are looked up by the spec's source ``Type`` (``inline``, ``urlDownload``, ``s3``,
and ``ipfs`` on a daemon, whose backend needs its bitswap). Lookups of
a type without a backend raise ``UnsupportedStorage`` saying what is available.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import trio

from protocol.jobspec import INPUT_SOURCE_TYPES, InputSource

from .. import metrics
from .base import Storage, StorageError, UnsupportedStorage, describe_source, staging_deadline
from .inline import InlineStorage
from .s3 import S3Storage
from .url import UrlDownloadStorage

__all__ = ["StorageRegistry", "default_registry", "stage_inputs", "storage_for"]


class StorageRegistry:
    """Backends keyed by source type; look one up with ``get``."""

    def __init__(self, backends: Iterable[Storage] = ()) -> None:
        self._backends: dict[str, Storage] = {}
        for backend in backends:
            self.register(backend)

    def register(self, backend: Storage, source_type: str | None = None) -> None:
        """Serve ``source_type`` (default: the backend's own) with ``backend``."""
        self._backends[source_type or backend.source_type] = backend

    @property
    def types(self) -> tuple[str, ...]:
        """The source types this registry can stage, in registration order."""
        return tuple(self._backends)

    def get(self, source_type: str) -> Storage:
        """The backend for ``source_type``; raises ``UnsupportedStorage`` if there is none."""
        backend = self._backends.get(source_type)
        if backend is not None:
            return backend
        available = ", ".join(self.types) or "none"
        if source_type in INPUT_SOURCE_TYPES:
            raise UnsupportedStorage(
                f"input source type {source_type!r} is not available on this node yet "
                f"(available: {available}); use another input type, or a node that offers it"
            )
        raise UnsupportedStorage(
            f"unknown input source type {source_type!r}; this node can stage: {available}"
        )

    def as_mapping(self) -> Mapping[str, Storage]:
        return dict(self._backends)


def default_registry() -> StorageRegistry:
    """A registry of every backend this node has: ``inline`` and ``urlDownload``."""
    return StorageRegistry([InlineStorage(), UrlDownloadStorage(), S3Storage()])


_default: StorageRegistry | None = None


def storage_for(source_type: str) -> Storage:
    """The default backend for ``source_type``; raises ``UnsupportedStorage``."""
    global _default
    if _default is None:
        _default = default_registry()
    return _default.get(source_type)


async def stage_inputs(
    sources: Sequence[InputSource],
    staging_dir: Path,
    *,
    registry: StorageRegistry | None = None,
    timeout: float | None = None,
) -> list[tuple[Path, str]]:
    """Stage every input concurrently; return ``(host_path, target)`` pairs in order.

    Each input gets its own subdirectory ``staging_dir/<index>``. The first failure
    cancels the others and is raised as a ``StorageError`` naming its input (the
    caller removes ``staging_dir`` either way). Unsupported types fail before anything
    is fetched.
    """
    backends = [(registry.get if registry else storage_for)(s.source_type) for s in sources]
    if timeout:
        staging_deadline.set(trio.current_time() + timeout)
    staged: list[tuple[Path, str] | None] = [None] * len(sources)
    failure: list[StorageError] = []

    async def one(index: int, cancel_scope: trio.CancelScope) -> None:
        source = sources[index]
        started = trio.current_time()
        try:
            path = await backends[index].stage(source, Path(staging_dir) / str(index))
        except StorageError as exc:
            if not failure:
                failure.append(exc)
            cancel_scope.cancel()
            return
        except OSError as exc:
            if not failure:
                failure.append(StorageError(f"staging input {describe_source(source)}: {exc}"))
            cancel_scope.cancel()
            return
        staged[index] = (path, source.target)
        metrics.STAGING_SECONDS.labels(backend=source.source_type).observe(
            trio.current_time() - started)
        metrics.STAGED_BYTES.labels(backend=source.source_type).inc(
            await trio.to_thread.run_sync(_tree_bytes, path))

    async with trio.open_nursery() as nursery:
        for index in range(len(sources)):
            nursery.start_soon(one, index, nursery.cancel_scope)
    if failure:
        raise failure[0]
    return [pair for pair in staged if pair is not None]


def _tree_bytes(path: Path) -> int:
    """The size of a staged file, or of every file under a staged directory."""
    if not path.is_dir():
        return path.stat().st_size if path.exists() else 0
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file()
               and not entry.is_symlink())
