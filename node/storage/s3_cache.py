"""Fetched S3 objects kept for reuse, keyed by endpoint, bucket, key, version and ETag.

Entries live under ``directory/objects`` (the object and a JSON sidecar), are read-only,
and are hard-linked (or copied, across file systems) into staging directories; least
recently used ones go beyond ``max_bytes``. Every method blocks: call them in a worker
thread. ``lock`` is held while an entry is read, added or removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

from .s3_layout import S3Object


class ObjectCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._bytes: int | None = None

    def entry(self, endpoint: str, bucket: str, obj: S3Object) -> str | None:
        """The cache key of ``obj``, or None when it cannot be cached (no ETag)."""
        if not obj.etag:
            return None
        identity = json.dumps([endpoint, bucket, obj.key, obj.version_id or "", obj.etag])
        return hashlib.sha256(identity.encode()).hexdigest()

    def _paths(self, entry: str) -> tuple[Path, Path]:
        objects = self.directory / "objects"
        return objects / entry, objects / f"{entry}.json"

    def take(self, entry: str, obj: S3Object, dest: Path) -> str | None:
        """Link (or copy) a cached object to ``dest``; its SHA-256, or None on a miss."""
        data, meta = self._paths(entry)
        with self.lock:  # never while a prune removes it
            try:
                info = json.loads(meta.read_text())
                if info.get("size") != obj.size or data.stat().st_size != obj.size:
                    return None
                digest = str(info["sha256"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(data, dest)
            with contextlib.suppress(OSError):
                os.utime(data)  # recently used
        return digest

    def put(
        self,
        entry: str,
        obj: S3Object,
        bucket: str,
        endpoint: str,
        tmp: Path,
        digest: str,
        dest: Path,
    ) -> None:
        """Move a finished download into the cache, then link it to ``dest``."""
        data, meta = self._paths(entry)
        info = {
            "endpoint": endpoint,
            "bucket": bucket,
            "key": obj.key,
            "version_id": obj.version_id or "",
            "etag": obj.etag,
            "size": obj.size,
            "sha256": digest,
        }
        with self.lock:
            data.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, data)
            meta_tmp = meta.with_name(f"{meta.name}.{uuid.uuid4().hex}.tmp")
            meta_tmp.write_text(json.dumps(info))
            os.replace(meta_tmp, meta)
            _link_or_copy(data, dest)
            if self._bytes is not None:
                self._bytes += obj.size
            self._prune_locked(keep=entry)

    def _prune_locked(self, keep: str) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        if self._bytes is not None and self._bytes <= self.max_bytes:
            return
        entries: list[tuple[float, int, str]] = []
        for path in (self.directory / "objects").glob("*.json"):
            name = path.name[: -len(".json")]
            with contextlib.suppress(OSError):
                stat = (path.parent / name).stat()
                entries.append((stat.st_mtime, stat.st_size, name))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            data, meta = self._paths(name)
            unlink(meta)
            unlink(data)
            total -= size
        self._bytes = total


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` at ``dest``; copy where links cannot be made."""
    try:
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(source, dest)


def unlink(path: Path) -> None:
    """Remove ``path`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
