"""The interface of an input source backend, and its error.

A backend stages one ``InputSource`` onto the host before the container starts:
``stage(source, staging_dir)`` returns the host path (a file or a directory) that the
executor mounts read-only at ``source.target``. It creates a fresh entry inside
``staging_dir`` (so that several inputs can share one directory) and never writes
outside it; the caller owns ``staging_dir`` and removes it when the execution is over.

Staged files are made readable by everyone (``make_readable``): the task may run
as any user, and even a container's root has no CAP_DAC_OVERRIDE to read past modes.
"""

from __future__ import annotations

import contextvars
import os
import stat
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import trio

from protocol.jobspec import InputSource

__all__ = [
    "Storage",
    "StorageError",
    "UnsupportedStorage",
    "describe_source",
    "make_readable",
    "staging_deadline",
    "staging_time_left",
]

#: When staging must be done (trio clock), for backends that wait on the network.
staging_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "staging_deadline", default=None
)


def staging_time_left(default: float) -> float:
    """Seconds until the staging deadline, or ``default`` when there is none."""
    deadline = staging_deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - trio.current_time())


class StorageError(Exception):
    """An input could not be staged; the message says which input and why."""


class UnsupportedStorage(StorageError):
    """This node has no backend for the input source type."""


class Storage(ABC):
    """A backend for one input source type (``source_type``, the spec's ``Type``)."""

    source_type: ClassVar[str]

    async def is_installed(self) -> bool:
        """Whether this backend works on this node now."""
        return True

    @abstractmethod
    async def size_hint(self, source: InputSource) -> int | None:
        """How many bytes staging will write, if known cheaply; None when unknown.

        A hint for bidding: it never raises for an unreachable source.
        """

    @abstractmethod
    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        """Fetch the input under ``staging_dir``; return the host path to mount.

        Raises ``StorageError`` with a message naming the input when it cannot.
        """


def describe_source(source: InputSource, limit: int = 80) -> str:
    """A short human name for an input: its URL, CID or bucket/key."""
    params = source.params
    if source.source_type == "s3":
        text = f"s3://{params.get('Bucket', '')}/{params.get('Key', '')}"
    elif source.source_type == "ipfs":
        text = f"ipfs://{params.get('CID', '')}"
    elif source.source_type == "inline":
        text = f"inline data for {source.target}"
    else:
        text = str(params.get("URL", source.source_type))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def make_readable(path: Path) -> None:
    """Let every user read ``path`` (a file, or a whole tree) and traverse its directories.

    Adds read (and, for directories and files executable by their owner, execute) bits;
    never follows symbolic links.
    """
    _add_read_bits(str(path))
    if not path.is_dir() or path.is_symlink():
        return
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            _add_read_bits(os.path.join(root, name))


def _add_read_bits(path: str) -> None:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return
    extra = 0o555 if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0o444
    os.chmod(path, stat.S_IMODE(mode) | extra)
