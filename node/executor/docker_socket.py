"""Docker Engine API calls over dockerd's socket, with the standard library.

The executor's every call goes here when dockerd is on a plain socket: ``DOCKER_HOST``
unset or ``unix://PATH``, or ``tcp://HOST:PORT`` without ``DOCKER_TLS_VERIFY``.
:meth:`EngineSocket.from_env` returns None for anything else (TLS, ``ssh://``), and the
executor then speaks through docker-py, which also pulls images (rarely needed, and a
stream of progress this module need not parse).

Why not docker-py for everything: with requests and urllib3 it is about 6 MiB of a
daemon's memory and 100 ms of import, and it spent 6.8 ms of CPU on each container's
create, attach, start, wait and remove where these plain calls spend 1.6-1.9 ms (20 runs
of ``busybox true`` each, 2026-12-05). For a node running a burst of short jobs that was a
third of its CPU, and the executor's threads hold the GIL the trio loop needs.

Why not ``http.client`` either: it parses every answer's headers with the ``email``
package. A ping cost 186-252 µs of CPU through it and 35-51 µs as a plain exchange here,
an image inspect 344-362 against 122 µs (300 calls each, 2026-12-06). Each call is one
connection that dockerd closes after its answer (``Connection: close``), so an answer is
what arrives until then: a head, and a body sized by ``Content-Length`` or chunked.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_UNIX_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """dockerd answered with an error status, or could not be reached (``status`` None)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def _unix_socket(path: str, timeout: float | None) -> socket.socket:
    """A stream socket connected to ``path`` (closed again if that fails)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


#: What ``timeout`` means when it is not given: the socket's own timeout.
_DEFAULT: Any = object()
#: The most an attach answer's head may hold before its stream begins.
_MAX_HEAD_BYTES = 64 * 1024
#: Attached output's frame header: stream (1 stdout, 2 stderr), 3 zero bytes, size.
_FRAME_HEADER = struct.Struct(">BxxxI")
STDOUT, STDERR = 1, 2


class EngineSocket:
    """Blocking calls to dockerd, one connection each; run them in a worker thread."""

    def __init__(self, *, unix_path: str | None = None, tcp: tuple[str, int] | None = None,
                 timeout: float = 60.0) -> None:
        if (unix_path is None) == (tcp is None):
            raise ValueError("give either a unix socket path or a TCP address")
        self.unix_path = unix_path
        self.tcp = tcp
        self.timeout = timeout

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ,
                 timeout: float = 60.0) -> EngineSocket | None:
        """The socket docker-py's ``from_env`` would use, or None if it is not a plain one."""
        host = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_UNIX_SOCKET}"
        url = urlsplit(host)
        if url.scheme == "unix" and url.path:
            return cls(unix_path=url.path, timeout=timeout)
        if url.scheme == "tcp" and url.hostname and not environ.get("DOCKER_TLS_VERIFY"):
            return cls(tcp=(url.hostname, url.port or 2375), timeout=timeout)
        return None

    def __repr__(self) -> str:
        return f"EngineSocket({self.address})"

    def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                body: Any = None, timeout: float | None = _DEFAULT, *,
                decode: bool = True) -> Any:
        """Send one request (``body`` as JSON); return the decoded JSON answer (None if
        empty, or not ``decode``), or raise :class:`EngineError` with dockerd's own
        message. ``timeout`` None: wait as long as dockerd takes."""
        target = path + (f"?{urlencode(query)}" if query else "")
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                f"Content-Length: {len(data)}\r\n"
                + ("Content-Type: application/json\r\n" if body is not None else "") + "\r\n")
        sock = self._raw_socket(self.timeout if timeout is _DEFAULT else timeout)
        try:
            sock.sendall(head.encode("latin-1") + data)
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            raise EngineError(None, f"dockerd at {self.address}: {exc or repr(exc)}") from exc
        finally:
            sock.close()
        try:
            status, reason, headers, answer = _parse_answer(bytes(received))
        except ValueError as exc:  # cut off, or not HTTP
            raise EngineError(None, f"dockerd at {self.address}: {exc}") from None
        if status >= 400:
            raise EngineError(status, _message(answer) or reason)
        if not (decode and answer
                and headers.get("content-type", "").startswith("application/json")):
            return None
        return json.loads(answer)

    @property
    def address(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        assert self.tcp is not None
        return f"tcp://{self.tcp[0]}:{self.tcp[1]}"

    def ping(self) -> None:
        self.request("GET", "/_ping")

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) that carries ``label`` (``key=value``)."""
        filters = json.dumps({"label": [label]})
        return self.request("GET", "/containers/json", {"all": "1", "filters": filters})

    def remove(self, container_id: str) -> None:
        """Force-remove a container and its anonymous volumes (as docker-py's
        ``remove_container(force=True, v=True)``)."""
        self.request("DELETE", _container(container_id), {"force": "1", "v": "1"})

    def image_present(self, image: str) -> bool:
        return found(functools.partial(self.request, "GET",
                                       f"/images/{quote(image, safe='')}/json", decode=False))

    def create(self, config: Mapping[str, Any], name: str) -> str:
        """Create (not start) a container from the Engine API's own ``config``; its ID."""
        created = self.request("POST", "/containers/create", {"name": name}, body=config)
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        self.request("POST", f"{_container(container_id)}/start")

    def kill(self, container_id: str) -> None:
        """SIGKILL; dockerd answers 409 for a container that is not running."""
        self.request("POST", f"{_container(container_id)}/kill")

    def wait(self, container_id: str) -> int:
        """Wait, with no timeout, for the container to exit; its exit code."""
        status = self.request("POST", f"{_container(container_id)}/wait", timeout=None)
        return int(status["StatusCode"])

    def attach(self, container_id: str) -> AttachedOutput:
        """Attach to a created container's stdout and stderr, to be read from its start to
        its end (attach before starting it, or output is missed)."""
        sock = self._raw_socket()
        try:
            sock.sendall(
                f"POST {_container(container_id)}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1"
                "\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                "Content-Length: 0\r\n\r\n".encode("ascii"))
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk or len(received) > _MAX_HEAD_BYTES:
                    raise EngineError(None, f"dockerd at {self.address} ended the attach "
                                            "before its answer")
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status not in (101, 200):
                raise EngineError(status or None, _message(rest) or status_line)
            sock.settimeout(None)  # output comes for as long as the container runs
        except OSError as exc:
            sock.close()
            raise EngineError(None, f"dockerd at {self.address}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        return AttachedOutput(sock, rest)

    def _raw_socket(self, timeout: float | None = _DEFAULT) -> socket.socket:
        timeout = self.timeout if timeout is _DEFAULT else timeout
        try:
            if self.tcp is not None:
                return socket.create_connection(self.tcp, timeout)
            assert self.unix_path is not None
            return _unix_socket(self.unix_path, timeout)
        except OSError as exc:
            raise EngineError(None, f"dockerd at {self.address}: {exc}") from exc


class AttachedOutput:
    """A container's output as dockerd multiplexes it (no TTY): ``(STDOUT or STDERR,
    bytes)`` frames until the container's stdio closes."""

    def __init__(self, sock: socket.socket, received: bytes = b"") -> None:
        self._sock = sock
        self._buffer = bytearray(received)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while True:
            header = self._take(_FRAME_HEADER.size)
            if header is None:
                return
            stream, size = _FRAME_HEADER.unpack(header)
            payload = self._take(size)
            if payload is None:
                return  # cut off mid-frame: the connection went away
            yield stream, payload

    def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def close(self) -> None:
        self._sock.close()


def found(look_up: Callable[[], object]) -> bool:
    """Whether ``look_up`` finds what it asks dockerd for: False when dockerd answers 404."""
    try:
        look_up()
    except EngineError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _parse_answer(received: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """``(status, reason, headers, body)`` of a whole HTTP/1.1 answer (header names in
    lower case); ``ValueError`` if it is not one, or was cut off."""
    head, found_end, rest = received.partition(b"\r\n\r\n")
    if not found_end:
        raise ValueError("no answer" if not received else "answer cut off or not HTTP")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, status_and_reason = status_line.partition(" ")
    status, _, reason = status_and_reason.partition(" ")
    if not version.startswith("HTTP/") or not status.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(rest) < length:
            raise ValueError(f"answer cut off after {len(rest)} of {length} bytes")
        body = rest[:length]
    else:
        body = rest
    return int(status), reason, headers, body


def _dechunk(data: bytes) -> bytes:
    body = bytearray()
    at = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            raise ValueError("chunked answer cut off")
        size = int(data[at:line_end].split(b";", 1)[0], 16)
        if size == 0:
            return bytes(body)
        start = line_end + 2
        if len(data) < start + size + 2:
            raise ValueError("chunked answer cut off")
        body += data[start:start + size]
        at = start + size + 2


def _container(container_id: str) -> str:
    return f"/containers/{quote(container_id, safe='')}"


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", "")).strip()
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()
