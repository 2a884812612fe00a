"""A small client for a daemon's HTTP API (stdlib only: the CLI must start fast)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import http.client

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234


def config_file_path() -> Path:
    """The daemon's config file, found as ``bacnode serve`` finds it: ``$BACNODE_CONFIG``,
    else ``$BACNODE_DATA_DIR/config.yaml``, else ``~/.bacnode/config.yaml``."""
    explicit = os.environ.get("BACNODE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    data_dir = os.environ.get("BACNODE_DATA_DIR") or "~/.bacnode"
    return Path(data_dir).expanduser() / "config.yaml"


def _api_key(host: str) -> str:
    """The key the daemon's API asks for, when it asks: ``$BACNODE_API_KEY``, else
    ``$BACALHAU_API_KEY`` (as Bacalhau's CLI), else, for an API on this machine only, the key
    file of the daemon this user runs (``<data dir>/api-key``: never sent to another host);
    empty when there is none."""
    given = os.environ.get("BACNODE_API_KEY") or os.environ.get("BACALHAU_API_KEY")
    if given:
        return given.strip()
    if host not in ("127.0.0.1", "::1", "localhost"):
        return ""
    data_dir = os.environ.get("BACNODE_DATA_DIR") or "~/.bacnode"
    try:
        return (Path(data_dir).expanduser() / "api-key").read_text().strip()
    except OSError:  # none, or not ours to read
        return ""


def _config_file_api() -> dict[str, Any]:
    """``api_host``/``api_port`` from the daemon's config file, if there is one: the CLI
    then reaches the daemon configured on this machine without flags. Flags and
    ``BACNODE_API_*`` come first."""
    path = config_file_path()
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise ApiError(f"cannot read {path}: {exc.strerror}") from None
    import yaml

    try:
        settings = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ApiError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(settings, dict):
        raise ApiError(f"{path} must hold a mapping of settings")
    return {k: v for k, v in settings.items() if k in ("api_host", "api_port")}


class ApiError(Exception):
    """The daemon could not be reached or refused the request; the message is for users."""


class ApiClient:
    def __init__(
        self, host: str | None = None, port: int | None = None, timeout: float = 30
    ) -> None:
        configured = _config_file_api()
        self.host = (host or os.environ.get("BACNODE_API_HOST") or configured.get("api_host")
                     or DEFAULT_HOST)
        given_port = port or os.environ.get("BACNODE_API_PORT") or configured.get("api_port")
        try:
            self.port = int(given_port or DEFAULT_PORT)
        except ValueError:
            raise ApiError(f"API port {given_port!r} is not a port number") from None
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {key}"} if (key := _api_key(self.host)) else {}

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request and its JSON answer.

        Spoken over a plain socket, one request per connection: every command makes at
        least one, and ``http.client`` (its email parser, ssl) would cost the CLI's start-up
        ~20 ms for what a daemon's JSON API needs. Streams (logs, downloads, uploads) go
        through ``http.client`` (``open``, ``upload_stream``)."""
        import socket

        data = b"" if body is None else json.dumps(body).encode()
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}",
                 "Accept: application/json", "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers.items())]
        if body is not None or method in ("PUT", "POST"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        try:
            connection = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise self._unreachable(exc) from None
        with connection, connection.makefile("rb") as reader:
            try:
                connection.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + data)
                status, reason, payload = _read_response(reader)
            except NotHttp as exc:
                raise ApiError(
                    f"what answers at {self.base_url} does not speak HTTP ({exc}); is that "
                    "the daemon's API port (--api-port, BACNODE_API_PORT)?") from None
            except (OSError, ValueError) as exc:
                raise ApiError(
                    f"the daemon at {self.base_url} stopped answering: {exc}") from None
        if status >= 400:
            raise ApiError(_error_message(status, reason, payload))
        try:
            return json.loads(payload or b"null")
        except ValueError:
            raise ApiError(f"the daemon at {self.base_url} answered {status} with no JSON: "
                           f"{payload[:80]!r}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def upload_stream(self, path: str, chunks: Iterator[bytes], content_type: str) -> Any:
        """POST ``chunks`` as a chunked request body; return the JSON reply."""
        headers = {**self.headers, "Content-Type": content_type,
                   "Transfer-Encoding": "chunked"}
        return self._json(self._open("POST", path, chunks, headers, chunked=True))

    def _json(self, response: http.client.HTTPResponse) -> Any:
        import http.client

        with response:
            try:
                return json.loads(response.read() or b"null")
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                raise ApiError(f"the daemon at {self.base_url} stopped answering: {exc}") from None

    def _unreachable(self, exc: BaseException) -> ApiError:
        return ApiError(
            f"no bacnode daemon answers at {self.base_url} ({exc}); start one with "
            "'bacnode serve', or point to one with --api-host/--api-port or "
            "BACNODE_API_HOST/BACNODE_API_PORT")

    def open(self, path: str, timeout: float | None = None) -> http.client.HTTPResponse:
        """The response to GET ``path``; the caller closes it."""
        return self._open("GET", path, None, self.headers, timeout=timeout)

    def _open(self, method: str, path: str, body: Any, headers: dict[str, str],
              timeout: float | None = None, chunked: bool = False) -> http.client.HTTPResponse:
        # http.client rather than urllib.request: urllib costs the CLI ~12 ms more to import
        # (hashlib, tempfile, its handlers), and a daemon's API needs none of it.
        import http.client

        # The port is given apart, so that an IPv6 host is not read as host:port.
        connection = http.client.HTTPConnection(self.host, self.port,
                                                timeout=timeout or self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers,
                               encode_chunked=chunked)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise self._unreachable(exc) from None
        # The response reads on until it is closed itself (closing the connection would
        # close it too): the socket, released here, stays open for it, as urllib does.
        if connection.sock is not None:
            connection.sock.close()
            connection.sock = None
        if response.status >= 400:
            with response:
                raise ApiError(_error_detail(response))
        return response

    def download(self, path: str, destination: Any, label: str = "downloading") -> None:
        """Stream ``path`` into the file ``destination``, with progress on a terminal."""
        from .progress import Progress

        with self.open(path) as response, open(destination, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0)
            try:
                with Progress(label, total) as progress:
                    while chunk := response.read(1 << 20):
                        handle.write(chunk)
                        progress.advance(len(chunk))
            except (TimeoutError, ConnectionError) as exc:
                raise ApiError(f"downloading from {self.base_url}: {exc}") from None


def _error_detail(response: http.client.HTTPResponse) -> str:
    import http.client

    try:
        payload = response.read()
    except (OSError, http.client.HTTPException):
        payload = b""
    return _error_message(response.status, response.reason, payload)


def _error_message(status: int, reason: str, payload: bytes) -> str:
    try:
        answer = json.loads(payload)
        # Bacalhau's APIError ({Status, Message, Code}); a plain {detail} as a fallback.
        detail = answer.get("Message") or answer.get("detail") or answer
    except (ValueError, AttributeError):
        detail = reason
    return f"the daemon answered {status}: {detail}"


class NotHttp(ValueError):
    """What answered is no HTTP server (another service on that port)."""


#: Bounds on what the daemon may send back: a header line, and the header lines.
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


def _read_response(reader: BinaryIO) -> tuple[int, str, bytes]:
    """Status, reason and body of one HTTP/1.1 response read from ``reader`` (the request
    asked to close the connection, so a body without a length ends with it). Raises
    ``ValueError`` for what is not such a response."""
    version, _, rest = _line(reader).partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise NotHttp(f"it said {version} {rest}"[:120].rstrip())
    length: int | None = None
    chunked = False
    for _ in range(MAX_HEADERS):
        line = _line(reader)
        if not line:
            break
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = value.lower().endswith("chunked")
    else:
        raise ValueError("more header lines than an answer of the API has")
    if chunked:
        parts = []
        while size := int(_line(reader).split(";")[0], 16):
            parts.append(_exactly(reader, size))
            _line(reader)
        while _line(reader):  # trailers, up to the blank line
            pass
        return int(code), reason, b"".join(parts)
    return int(code), reason, reader.read() if length is None else _exactly(reader, length)


def _line(reader: BinaryIO) -> str:
    line = reader.readline(MAX_HEADER_LINE + 1)
    if not line.endswith(b"\n"):
        raise ValueError("the answer broke off" if len(line) <= MAX_HEADER_LINE
                         else "a header line longer than an answer of the API has")
    return line.rstrip(b"\r\n").decode("latin-1")


def _exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ValueError(f"the answer broke off after {len(data)} of {size} bytes")
    return data
