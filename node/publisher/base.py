"""What every publisher offers, and the manifest they all sign."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocol.jobspec import Job
from protocol.messages import ManifestEntry


class PublishError(Exception):
    """Results could not be published; the message says where and why."""


@dataclass(frozen=True)
class PublishRequest:
    job: Job
    execution_id: str
    node_id: str
    results_dir: Path


class Publisher(Protocol):
    """One way to publish a results directory (``publisher_type``, e.g. ``s3``)."""

    publisher_type: str

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        """Publish; return the ``published`` location for the result record and the
        manifest (path, size, SHA-256) of every regular file published."""
        ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_of(results_dir: Path) -> list[ManifestEntry]:
    """Every regular file under ``results_dir``: path, size, SHA-256 (blocking: run it in
    a worker thread)."""
    entries = []
    for path in sorted(results_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        relative = path.relative_to(results_dir).as_posix()
        entries.append(ManifestEntry(relative, path.stat().st_size, sha256_file(path)))
    return entries
