"""What every service helper shares: its error, its process handling, log tails, free
loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A real component is missing, or did not start."""


def _log_tail(path: Path | str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


class ServiceProcess:
    """One long-running child process with its log file, used as a context manager.

    Subclasses set ``_proc`` and ``_log`` when they spawn, and define ``start``, ``stop``
    and ``log_path``."""

    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    log_path: Any

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process ID while it runs."""
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return _log_tail(self.log_path, lines)

    def __enter__(self) -> Self:
        """Start (see ``start``)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop (see ``stop``)."""
        self.stop()

    def _launch(self, cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> int:
        """Start ``cmd`` in its own session, output appended to ``log`` under a header line;
        on the main thread it also dies when this process does (``setpriv --pdeathsig``).
        Returns where in ``log`` this run's output begins."""
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        if self._log is not None:
            self._log.close()
        self._log = open(log, "ab")  # closed by _terminate
        self._log.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        start = self._log.tell()
        self._proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        return start

    def _terminate(self, grace: float) -> subprocess.Popen[bytes] | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; close the log. Returns the process
        that was running, if any."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc


# --------------------------------------------------------------------------------------------
# Ports


_reserved_ports: set[int] = set()
_reserved_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port free on ``host`` now, never the same one twice in this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        with _reserved_lock:
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise ServiceError(f"could not find a free TCP port on {host}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host``."""
    return [free_port(host) for _ in range(count)]


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be bound on ``host`` right now (as a Go server would bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
