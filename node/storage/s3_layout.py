"""Which objects an ``s3`` source names and where each one goes in the staging directory.

Pure rules, no I/O (see ``node/storage/s3.py`` for the semantics, Bacalhau's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


def is_prefix_key(key: str) -> bool:
    """Whether ``key`` names a prefix (ends in ``/`` or ``*``, or is empty), not one object."""
    return key == "" or key.endswith(("/", "*"))


def key_prefix(key: str) -> str:
    """The listing prefix of a key: the key without one trailing ``*``."""
    return key[:-1] if key.endswith("*") else key


def matches_filter(pattern: re.Pattern[str] | None, prefix: str, key: str) -> bool:
    """Whether ``key`` (listed under ``prefix``) passes ``Filter``: ``re.search`` on the rest.

    Go's ``regexp.MatchString`` (what Bacalhau uses) is unanchored; so is ``search``.
    """
    if pattern is None:
        return True
    rest = key[len(prefix) :] if key.startswith(prefix) else key
    return pattern.search(rest) is not None


def local_path(requested_key: str, object_key: str) -> str:
    """Where ``object_key`` goes, relative to the staging directory, for ``requested_key``.

    The prefix (``requested_key`` minus a trailing ``*``) is split on ``/``; leading
    components of the object key equal to the prefix's, except the prefix's last one,
    are dropped. Raises ``ValueError`` for a key that would escape or is unusable as a
    path (``..``, ``.``, empty components, NUL, nothing left).
    """
    prefix_parts = key_prefix(requested_key).split("/")
    parts = object_key.split("/")
    start = 0
    for index in range(len(prefix_parts) - 1):
        if index < len(parts) - 1 and prefix_parts[index] == parts[index]:
            start += 1
        else:
            break
    rest = parts[start:]
    for part in rest:
        if part in ("", ".", "..") or "\0" in part:
            what = "an empty path component" if part == "" else f"the path component {part!r}"
            raise ValueError(
                f"object key {object_key!r} has {what}, which cannot be staged safely "
                "as a file path"
            )
    return "/".join(rest)


def plan_layout(requested_key: str, object_keys: Iterable[str]) -> list[tuple[str, str]]:
    """``[(object_key, relative_path)]`` for every key, or ``ValueError`` if any cannot be.

    Besides ``local_path``'s checks, refuses two keys for one path and a key whose path
    another key needs as a directory (S3 allows both ``a`` and ``a/b``; a disk does not).
    """
    plan: list[tuple[str, str]] = []
    files: dict[str, str] = {}
    dirs: dict[str, str] = {}
    for key in object_keys:
        rel = local_path(requested_key, key)
        if rel in files:
            raise ValueError(f"object keys {files[rel]!r} and {key!r} both map to {rel!r}")
        if rel in dirs:
            raise ValueError(
                f"object key {key!r} would be the file {rel!r}, but {dirs[rel]!r} needs "
                "that path as a directory"
            )
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise ValueError(
                    f"object key {key!r} needs {parent!r} as a directory, but the key "
                    f"{files[parent]!r} is a file there"
                )
            dirs.setdefault(parent, key)
        files[rel] = key
        plan.append((key, rel))
    return plan


@dataclass(frozen=True)
class S3Object:
    """One object to fetch, as a HEAD or a listing reported it."""

    key: str
    size: int
    etag: str | None = None
    version_id: str | None = None
    #: The full-object ``ChecksumSHA256`` the server reported, if any.
    checksum_sha256: str | None = None


@dataclass(frozen=True)
class S3Plan:
    """A resolved input: the objects to fetch and where each one goes."""

    bucket: str
    requested_key: str
    endpoint: str
    single: bool
    objects: tuple[S3Object, ...]
    paths: tuple[str, ...]

    @property
    def total_size(self) -> int:
        """Bytes staging will write."""
        return sum(obj.size for obj in self.objects)
