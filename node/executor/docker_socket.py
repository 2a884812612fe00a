"""The few Docker Engine API calls an idle node makes, over dockerd's socket, with the
standard library.

Until its first container, a node only asks dockerd whether it answers (at start and every
``ENGINE_CHECK_SECONDS``) and removes the containers a crashed run left behind. docker-py,
with requests and urllib3, is about 6 MiB of an idle daemon's memory and 100 ms of import,
so it loads when the first container is made (``DockerExecutor._docker``), and these calls
go straight to the socket docker-py would use.

Only a plain socket is spoken here: ``DOCKER_HOST`` unset or ``unix://PATH``, or
``tcp://HOST:PORT`` without ``DOCKER_TLS_VERIFY``. :meth:`EngineSocket.from_env` returns
None for anything else (TLS, ``ssh://``), and the executor then uses docker-py for these
calls too.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_UNIX_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """dockerd answered with an error status, or could not be reached (``status`` None)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EngineSocket:
    """Blocking calls to dockerd, one connection each (they are rare); run them in a worker
    thread."""

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
        if self.unix_path is not None:
            return f"EngineSocket(unix://{self.unix_path})"
        assert self.tcp is not None
        return f"EngineSocket(tcp://{self.tcp[0]}:{self.tcp[1]})"

    def request(self, method: str, path: str, query: Mapping[str, str] | None = None) -> Any:
        """Send one request; return the decoded JSON body (None if empty), or raise
        :class:`EngineError` with dockerd's own message."""
        if self.unix_path is not None:
            connection: http.client.HTTPConnection = _UnixConnection(self.unix_path,
                                                                     self.timeout)
        else:
            assert self.tcp is not None
            connection = http.client.HTTPConnection(*self.tcp, timeout=self.timeout)
        target = path + (f"?{urlencode(query)}" if query else "")
        try:
            connection.request(method, target)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:  # no answer, or not HTTP
            raise EngineError(None, f"{self!r}: {exc or repr(exc)}") from exc
        finally:
            connection.close()
        if response.status >= 400:
            raise EngineError(response.status, _message(body) or response.reason)
        if not body or not response.getheader("Content-Type", "").startswith(
                "application/json"):
            return None
        return json.loads(body)

    def ping(self) -> None:
        self.request("GET", "/_ping")

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) that carries ``label`` (``key=value``)."""
        filters = json.dumps({"label": [label]})
        return self.request("GET", "/containers/json", {"all": "1", "filters": filters})

    def remove(self, container_id: str) -> None:
        """Force-remove a container and its anonymous volumes (as docker-py's
        ``remove_container(force=True, v=True)``)."""
        self.request("DELETE", f"/containers/{quote(container_id, safe='')}",
                     {"force": "1", "v": "1"})


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", "")).strip()
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()
