"""What every executor takes and gives back, and the results layout it leaves on disk.

An executor runs one execution's task and leaves Bacalhau's results layout in the
request's ``results_dir``::

    results_dir/
        outputs/    the container's /outputs (mounted read-write)
        stdout      everything the task wrote to stdout, byte for byte
        stderr      everything it wrote to stderr
        exitCode    the exit code in decimal, no newline (written once the task ran)

Contract of ``Executor.run``:

- It *returns* an ``ExecutionResult`` for everything that can go wrong with the job
  (the image cannot be had, the task timed out or was cancelled, Docker refused the
  container); ``result.error`` then says why in words a user can act on. It *raises*
  only for bugs and for trio cancellation of the calling task.
- Whatever it created (containers) is gone when it returns or raises; the files in
  ``results_dir`` stay, owned by the caller.
- ``cancel(execution_id)`` may be called from any task; the ``run`` of that execution
  then returns promptly with ``cancelled=True``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

from protocol.jobspec import (
    NETWORK_TYPES,
    OUTPUTS_PATH,
    EngineSpec,
    Resources,
    check_absolute_path,
)
from protocol.messages import ManifestEntry

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
    "StreamCapture",
    "empty_results_manifest",
    "prepare_results_dir",
    "write_empty_results",
    "write_exit_code",
]

#: How much of stdout/stderr a result carries inline (the files keep everything).
DEFAULT_TAIL_BYTES = 64 * 1024
OUTPUTS_DIR = "outputs"
OUTPUTS_TARGET = OUTPUTS_PATH  # the spec's, which refuses inputs there at submit
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
EXIT_CODE_FILE = "exitCode"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class ExecutionRequest:
    """One execution to run: what, with which limits, which inputs, and where results go.

    ``inputs`` are ``(host_path, container_target)`` pairs, mounted read-only; a host
    path may be a file or a directory. ``timeout_seconds`` 0 means no limit, as do
    resources left at 0 (the compute node fills in its defaults before calling).
    ``network`` is ``"None"`` (no interfaces but loopback) or ``"Full"``.
    ``stdout_tail_bytes``/``stderr_tail_bytes`` cap what the result carries inline.
    ``results_dir`` should be new (or empty): the executor creates it and overwrites
    the files of the layout, but leaves whatever else is in ``outputs/``.
    Raises ``ValueError`` on a malformed request (a bug in the caller, not the job).
    """

    execution_id: str
    job_id: str
    engine: EngineSpec
    results_dir: Path
    resources: Resources = field(default_factory=Resources)
    network: str = "None"
    timeout_seconds: int = 0
    inputs: tuple[tuple[Path, str], ...] = ()
    #: The task's ``Env`` as ``NAME=VALUE``, set after the engine's own variables.
    task_env: tuple[str, ...] = ()
    stdout_tail_bytes: int = DEFAULT_TAIL_BYTES
    stderr_tail_bytes: int = DEFAULT_TAIL_BYTES

    def __post_init__(self) -> None:
        # Accept any path-likes and lists; store Paths and tuples so the request is hashable.
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        inputs = tuple((Path(host), str(target)) for host, target in self.inputs)
        object.__setattr__(self, "inputs", inputs)
        if not self.execution_id or not self.job_id:
            raise ValueError("an execution request needs an execution_id and a job_id")
        if self.network not in NETWORK_TYPES:
            raise ValueError(f"network must be one of {NETWORK_TYPES}, got {self.network!r}")
        if self.timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must not be negative, got {self.timeout_seconds}")
        if self.stdout_tail_bytes < 0 or self.stderr_tail_bytes < 0:
            raise ValueError("tail caps must not be negative")
        targets: set[str] = set()
        for host, target in inputs:
            problem = check_absolute_path(target)
            if problem:
                raise ValueError(f"input {host}: {problem}")
            if target in targets:
                raise ValueError(f"input {host}: target {target!r} is already mounted")
            if target == OUTPUTS_TARGET or target.startswith(OUTPUTS_TARGET + "/"):
                # Docker would make the mount point inside the host's outputs directory.
                raise ValueError(f"input {host}: target {target!r} is inside {OUTPUTS_TARGET}")
            targets.add(target)

    @property
    def outputs_dir(self) -> Path:
        return self.results_dir / OUTPUTS_DIR


@dataclass(frozen=True)
class ExecutionResult:
    """How an execution ended.

    ``exit_code`` is None when the task never ran (``error`` then says why). A task
    killed at its timeout or by ``cancel`` has the exit code Docker reported (137 for
    SIGKILL) and ``timed_out``/``cancelled`` set, with ``error`` saying so. The tails
    are the last ``*_tail_bytes`` of each stream, decoded as UTF-8 with replacement;
    ``*_truncated`` says the stream was longer; ``*_bytes`` and ``*_sha256`` (hex)
    describe the whole stream, as written to the results directory.
    ``duration`` is the wall time of ``run`` in seconds, image pull included.
    """

    exit_code: int | None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_sha256: str = _EMPTY_SHA256
    stderr_sha256: str = _EMPTY_SHA256
    error: str | None = None
    timed_out: bool = False
    cancelled: bool = False
    duration: float = 0.0

    @property
    def succeeded(self) -> bool:
        """The task ran to completion and exited 0."""
        return self.error is None and self.exit_code == 0


class Executor(ABC):
    """One backend that runs tasks of one engine type (``engine_type``)."""

    engine_type: ClassVar[str]
    #: Whether ``run`` writes the results directory. One that does not (noop) leaves it
    #: to the compute side to write the layout of an empty run where anything reads the
    #: files (``write_empty_results``); a job published nowhere then touches no disk.
    writes_results: ClassVar[bool] = True

    @abstractmethod
    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run the task to the end; see the module docstring for the contract."""

    @abstractmethod
    async def cancel(self, execution_id: str) -> bool:
        """Stop that execution's task if it is running here; False if it is not."""

    @abstractmethod
    async def is_installed(self) -> bool:
        """Whether this backend can run tasks on this machine now."""

    async def unavailable_reason(self) -> str | None:
        """Why this backend cannot run tasks now, for operators and bidders; None if it can."""
        return None if await self.is_installed() else f"{self.engine_type} is not installed"

    @abstractmethod
    async def cleanup_orphans(self) -> int:
        """Remove what a crashed daemon of this node left behind; return how many."""


# ---------------------------------------------------------------------------------------
# Helpers shared by the backends. They do blocking file I/O: call them in worker threads
# (or, for the tiny ones, where a few syscalls on a local disk are acceptable).


def prepare_results_dir(results_dir: Path) -> Path:
    """Create ``results_dir/outputs`` (world-writable) and return it.

    World-writable because the task may run as any user, and even a container's root
    has no CAP_DAC_OVERRIDE here: it can only write where the mode bits allow.
    """
    outputs = results_dir / OUTPUTS_DIR
    outputs.mkdir(parents=True, exist_ok=True)
    outputs.chmod(0o777)
    return outputs


def write_exit_code(results_dir: Path, exit_code: int) -> None:
    """Write the ``exitCode`` file: the code in decimal, no newline (as Bacalhau writes it)."""
    (results_dir / EXIT_CODE_FILE).write_text(str(exit_code))


def write_empty_results(results_dir: Path, exit_code: int) -> None:
    """The results of a run that printed and made nothing: empty ``outputs/``, empty
    ``stdout`` and ``stderr``, and ``exitCode``."""
    prepare_results_dir(results_dir)
    (results_dir / STDOUT_FILE).write_bytes(b"")
    (results_dir / STDERR_FILE).write_bytes(b"")
    write_exit_code(results_dir, exit_code)


def empty_results_manifest(exit_code: int) -> list[ManifestEntry]:
    """The manifest of ``write_empty_results``' files, without writing them: in the order
    a walk of the directory lists them (by path)."""
    code = str(exit_code).encode()
    return [ManifestEntry(EXIT_CODE_FILE, len(code), hashlib.sha256(code).hexdigest()),
            ManifestEntry(STDERR_FILE, 0, _EMPTY_SHA256),
            ManifestEntry(STDOUT_FILE, 0, _EMPTY_SHA256)]


class StreamCapture:
    """One output stream: written whole to a file, hashed, and its tail kept in memory.

    Memory use is bounded by about twice ``tail_bytes`` whatever the stream's size.
    Use as a context manager; ``write`` is called from one thread at a time.
    """

    def __init__(self, path: Path, tail_bytes: int) -> None:
        self.path = path
        self.tail_bytes = tail_bytes
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._tail = bytearray()
        # Unbuffered: a followed execution's output is read from this file as it comes.
        self._file: BinaryIO = open(path, "wb", buffering=0)  # closed in close()

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:  # an unbuffered write may take only part of it
            view = view[self._file.write(view) or 0:]
        self._sha256.update(chunk)
        self.size += len(chunk)
        if self.tail_bytes:
            self._tail += chunk[-self.tail_bytes :]
            if len(self._tail) > 2 * self.tail_bytes:
                del self._tail[: -self.tail_bytes]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StreamCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def truncated(self) -> bool:
        return self.size > self.tail_bytes

    def tail(self) -> str:
        """The last ``tail_bytes`` as text; a character cut in two at the start is dropped."""
        data = bytes(self._tail[-self.tail_bytes :]) if self.tail_bytes else b""
        if self.truncated:
            # Skip UTF-8 continuation bytes left over from a character cut by the cap.
            start = 0
            while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
                start += 1
            data = data[start:]
        return data.decode("utf-8", "replace")
