"""``urlDownload`` inputs: one file fetched over http(s) before the task starts.

As Bacalhau's URL storage does, the target is a *directory* holding the file, named
after the last segment of the URL's path (after redirects; a ``Content-Disposition``
filename wins after a redirect, since the final URL of a redirect is often opaque):
``-i https://example.com/data/table.csv`` gives ``/inputs/table.csv``. A URL without
a usable last segment gives a file named ``file``.

The download streams to disk in a worker thread (stdlib ``urllib``: redirects and the
usual proxy variables are honoured; redirects to anything but http/https are refused),
under a size cap (``max_bytes``) and a time limit for the whole download
(``timeout``), with a socket timeout per read (``socket_timeout``). A partly
downloaded file is removed. Errors name the URL and say what the server or the network
answered.

Note: the node fetches whatever URL a job names, loopback and private addresses
included, as Bacalhau does; an operator who minds runs the node where that is harmless.
"""

from __future__ import annotations

import http.client
import posixpath
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

import protocol
from protocol.jobspec import InputSource, check_http_url

from .base import Storage, StorageError, make_readable

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "UrlDownloadStorage",
]

#: Largest download accepted by default (the node's disk is shared by all its jobs).
DEFAULT_MAX_BYTES = 10 * 1024**3
#: Seconds one whole download may take by default.
DEFAULT_TIMEOUT = 600.0
#: Seconds one connect or read may stall.
DEFAULT_SOCKET_TIMEOUT = 30.0
_HEAD_TIMEOUT = 10.0
_CHUNK = 1024 * 1024
_FALLBACK_NAME = "file"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib would also follow ftp://)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a non-HTTP URL refused: {newurl[:100]}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class UrlDownloadStorage(Storage):
    """Downloads ``urlDownload`` inputs into the execution's staging directory."""

    source_type = "urlDownload"

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.socket_timeout = socket_timeout
        self._opener = urllib.request.build_opener(_HttpOnlyRedirects)
        self._opener.addheaders = [("User-Agent", f"bacnode/{protocol.__version__}")]

    async def size_hint(self, source: InputSource) -> int | None:
        """The ``Content-Length`` a HEAD request reports, or None (no answer, no length)."""
        url = str(source.params.get("URL", ""))
        if check_http_url(url):
            return None
        return await trio.to_thread.run_sync(self._head, url, abandon_on_cancel=True)

    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        """Download into a new directory under ``staging_dir``; return that directory.

        Raises ``StorageError`` for a bad URL, an HTTP error status, an unreachable
        host, a download over ``max_bytes`` or one slower than ``timeout``.
        """
        url = str(source.params.get("URL", ""))
        problem = check_http_url(url)
        if problem:
            raise StorageError(f"staging input {url[:100]!r}: {problem}")
        stop = threading.Event()
        try:
            return await trio.to_thread.run_sync(
                self._download, url, Path(staging_dir), stop, abandon_on_cancel=True
            )
        except trio.Cancelled:
            stop.set()  # the abandoned thread stops at its next read and cleans up
            raise

    # -- in worker threads ---------------------------------------------------------------

    def _head(self, url: str) -> int | None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with self._opener.open(request, timeout=_HEAD_TIMEOUT) as response:
                length = response.headers.get("Content-Length")
                return int(length) if length is not None and length.isdigit() else None
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def _download(self, url: str, staging_dir: Path, stop: threading.Event) -> Path:
        where = f"staging input {url}"
        deadline = time.monotonic() + self.timeout
        staging_dir.mkdir(parents=True, exist_ok=True)
        holder = Path(tempfile.mkdtemp(prefix="url-", dir=staging_dir))
        try:
            self._fetch(url, holder, stop, deadline, where)
        except BaseException:
            shutil.rmtree(holder, ignore_errors=True)
            raise
        make_readable(holder)
        return holder

    def _fetch(
        self, url: str, holder: Path, stop: threading.Event, deadline: float, where: str
    ) -> None:
        host = urlsplit(url).hostname or "?"
        try:
            response = self._opener.open(url, timeout=self.socket_timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise StorageError(
                f"{where}: the server answered HTTP {exc.code} {exc.reason}"
            ) from None
        except urllib.error.URLError as exc:
            raise StorageError(f"{where}: could not reach {host}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise StorageError(f"{where}: could not reach {host}: {_reason(exc)}") from None
        with response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise StorageError(self._too_big(where, f"the server declares {declared} bytes"))
            path = holder / _file_name(url, response)
            received = 0
            try:
                with open(path, "wb") as out:
                    while chunk := response.read(_CHUNK):
                        if stop.is_set():
                            raise StorageError(f"{where}: cancelled")
                        if time.monotonic() > deadline:
                            raise StorageError(
                                f"{where}: timed out after {self.timeout:g}s "
                                f"({received} bytes received)"
                            )
                        received += len(chunk)
                        if received > self.max_bytes:
                            raise StorageError(self._too_big(where, "the download is"))
                        out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise StorageError(
                    f"{where}: the download broke off after {received} bytes: {_reason(exc)}"
                ) from None

    def _too_big(self, where: str, what: str) -> str:
        return (
            f"{where}: {what} larger than this node's limit of {self.max_bytes} bytes "
            "for URL downloads"
        )


def _file_name(url: str, response: Any) -> str:
    """The downloaded file's name: Content-Disposition after a redirect, else the URL's."""
    final = response.geturl() or url
    candidates = []
    if final != url:
        candidates.append(response.headers.get_filename())
    candidates.append(unquote(posixpath.basename(urlsplit(final).path)))
    for name in candidates:
        if name:
            name = posixpath.basename(name.replace("\\", "/")).strip()
            if name not in ("", ".", "..") and "\0" not in name:
                return name
    return _FALLBACK_NAME


def _reason(exc: object) -> str:
    """A short reason for a network error: 'Connection refused', 'timed out', ..."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
