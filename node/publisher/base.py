"""What every publisher offers, and the manifest they all sign."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

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
    #: The results' manifest, made while they were checked for links, for a publisher that
    #: signs what is there before it publishes (``manifest_first``); None: make it.
    manifest: tuple[ManifestEntry, ...] | None = None


class Publisher(Protocol):
    """One way to publish a results directory (``publisher_type``, e.g. ``s3``).
    ``manifest_first``: whether it wants the manifest made before it publishes (in the same
    walk of the results as their check); one that hashes while it publishes (IPFS) does not.
    ``reads_results``: whether it reads the files themselves, not only their manifest."""

    publisher_type: str
    manifest_first: bool
    reads_results: bool

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
    return scan_results(results_dir, hash_files=True)[1]


def scan_results(results_dir: Path, *, hash_files: bool) -> tuple[list[str],
                                                                   list[ManifestEntry]]:
    """One walk of ``results_dir`` (blocking): the symbolic links in it, by relative path,
    and with ``hash_files`` the manifest of its regular files (empty without)."""
    links: list[str] = []
    entries: list[ManifestEntry] = []
    for path in sorted(results_dir.rglob("*")):
        if path.is_symlink():
            links.append(path.relative_to(results_dir).as_posix())
        elif hash_files and path.is_file():
            relative = path.relative_to(results_dir).as_posix()
            entries.append(ManifestEntry(relative, path.stat().st_size, sha256_file(path)))
    return links, entries


async def manifest_for(request: PublishRequest) -> list[ManifestEntry]:
    """The request's manifest, made now (in a worker thread) if it came without one."""
    if request.manifest is not None:
        return list(request.manifest)
    return await trio.to_thread.run_sync(manifest_of, request.results_dir)
