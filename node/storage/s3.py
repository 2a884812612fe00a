"""``s3`` inputs: objects from S3 or any S3-compatible server, staged before the task starts.

Semantics follow Bacalhau's S3 input storage (``pkg/storage/s3``):

- Params: ``Bucket``, ``Key``, ``Filter``, ``Region``, ``Endpoint``, ``VersionID``,
  ``ChecksumSHA256``. Without ``Endpoint`` the node's own configuration decides: boto3
  reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (and the config file) itself when
  no endpoint is passed. Without ``Region``: the node's default region, else us-east-1.
- A key that does not end in ``/`` or ``*`` names **one object**. It is HEADed first
  (404 → a missing-key, missing-bucket or missing-version error); ``VersionID`` and
  ``ChecksumSHA256`` apply to it. The SHA-256 is computed locally from the downloaded
  bytes and compared in base64, as S3 reports ``ChecksumSHA256``; when the server
  stores a full-object SHA-256 that already differs, staging fails before downloading.
  A mismatch names both values. As in Bacalhau, a key whose HEAD answers with content
  type ``application/x-directory`` is listed as a prefix instead.
- A key ending in ``/`` or ``*``, or an empty key, is a **prefix**: the key minus one
  trailing ``*`` (a trailing wildcard, not a glob). The listing is fully paginated;
  directory markers (keys ending in ``/``) are skipped; ``Filter`` is a regular
  expression *searched* (Go's ``regexp.MatchString``, which Bacalhau uses, is
  unanchored: Python's ``re.search``) in the part of each key after the prefix. Python's
  ``re`` syntax applies, which for ordinary patterns is RE2's. A prefix that matches no
  object is an error (Bacalhau would stage an empty directory). ``VersionID`` and
  ``ChecksumSHA256`` with a prefix are refused rather than silently ignored; ``Filter``
  with a single object is ignored, as in Bacalhau.
- **Layout** (``local_path``): the prefix is split on ``/`` and the key's leading
  components equal to the prefix's components, except the prefix's last one, are removed.
  ``set1/001.txt`` → ``001.txt``; ``set1/`` → ``001.txt …``; ``set*`` → ``set1/001.txt
  …``. Keys that would leave the staging directory or name it oddly (``..``, ``.``,
  empty components, NUL) are refused, as are listings where one key is a file and
  another needs the same path as a directory.
- ``stage`` returns a fresh directory holding the files; it is mounted at the target,
  so a single object ``s3://b/set1/001.txt`` appears as ``/inputs/001.txt`` and the
  tutorial's ``cp -r /inputs/* /outputs/`` copies the files themselves.

Downloads run in worker threads bounded by one ``trio.CapacityLimiter`` per backend
(boto3 blocks). Objects are fetched concurrently; objects of ``multipart_threshold``
bytes or more are fetched in ``part_size`` ranges, several at once, written in place
and then hashed from the file; smaller ones are hashed while they stream. Every GET
carries ``If-Match`` with the ETag seen when listing, so an object that changes
meanwhile fails the stage instead of mixing versions.

**Cache** (``cache_dir``): finished objects are kept under ``cache_dir/objects``, keyed by
endpoint, bucket, key, requested ``VersionID`` and ETag, and hard-linked (or copied,
across file systems) into the staging directory; a repeated input costs a HEAD or a
listing and no GET. Cache files are read-only and the staged inputs are mounted
read-only, so a job cannot alter them. Least recently used entries are removed beyond
``cache_max_bytes``.

**Credentials**: the standard AWS chain of the node (environment, shared files, SSO,
instance metadata). When it finds none, requests go unsigned (``botocore.UNSIGNED``) so
that public buckets work. Instance-metadata lookups are made to give up fast:
``AWS_METADATA_SERVICE_TIMEOUT=1`` and ``AWS_METADATA_SERVICE_NUM_ATTEMPTS=1`` are set
in this process when unset. Credentials never appear in errors: messages carry the
bucket, key, endpoint (without any user info) and what S3 answered, with any known key
material masked.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from protocol.jobspec import InputSource

from .base import Storage, StorageError, make_readable
from .s3_cache import ObjectCache, unlink
from .s3_errors import (
    S3AccessDenied,
    S3BucketNotFound,
    S3ChecksumMismatch,
    S3EndpointUnreachable,
    S3Error,
    S3NoMatchingObjects,
    S3NotFound,
    S3ObjectNotFound,
    S3UnsafeKey,
    S3VersionNotFound,
)
from .s3_layout import (
    S3Object,
    S3Plan,
    is_prefix_key,
    key_prefix,
    local_path,
    matches_filter,
    plan_layout,
)

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_THREADS",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "DEFAULT_READ_TIMEOUT",
    "S3AccessDenied",
    "S3BucketNotFound",
    "S3ChecksumMismatch",
    "S3EndpointUnreachable",
    "S3Error",
    "S3NoMatchingObjects",
    "S3NotFound",
    "S3Object",
    "S3ObjectNotFound",
    "S3Plan",
    "S3Storage",
    "S3UnsafeKey",
    "S3VersionNotFound",
    "is_prefix_key",
    "key_prefix",
    "local_path",
    "matches_filter",
    "plan_layout",
]

#: Worker threads (boto3 calls) one backend runs at once, over all its stages.
DEFAULT_MAX_THREADS = 16
#: Objects of at least this many bytes are fetched in ranges.
DEFAULT_MULTIPART_THRESHOLD = 32 * 1024 * 1024
#: Size of one ranged GET.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
#: Ranged GETs of one object in flight at once.
DEFAULT_PARTS_IN_FLIGHT = 8
#: Seconds to wait for a TCP connection to the endpoint.
DEFAULT_CONNECT_TIMEOUT = 3.0
#: Seconds one read may stall.
DEFAULT_READ_TIMEOUT = 60.0
#: Attempts per request (botocore's "standard" retry mode: 1 try + 2 retries).
DEFAULT_MAX_ATTEMPTS = 3
#: The object cache is trimmed to this many bytes (least recently used first).
DEFAULT_CACHE_MAX_BYTES = 20 * 1024**3

_CHUNK = 1024 * 1024
_STREAM_ATTEMPTS = 3
_DIRECTORY_CONTENT_TYPE = "application/x-directory"


# ---------------------------------------------------------------------------------------
# Clients and parameters


@dataclass
class _Client:
    """A boto3 client and what errors may say about it."""

    client: Any
    endpoint: str  # display form, without user info
    signed: bool
    secrets: tuple[str, ...]  # masked in every message

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class _Params:
    bucket: str
    key: str
    filter: str
    region: str
    endpoint: str
    version_id: str
    checksum: str

    @classmethod
    def of(cls, source: InputSource) -> _Params:
        params = source.params

        def text(name: str) -> str:
            value = params.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            bucket=text("Bucket"),
            key=text("Key"),
            filter=text("Filter"),
            region=text("Region"),
            endpoint=text("Endpoint"),
            version_id=text("VersionID"),
            checksum=text("ChecksumSHA256"),
        )


class _Stopped(Exception):
    """A download thread saw its stage cancelled."""


# ---------------------------------------------------------------------------------------
# The backend


class S3Storage(Storage):
    """Stages ``s3`` inputs: one object or everything under a prefix, optionally cached.

    ``cache_dir``: where fetched objects are kept for reuse (None: no cache).
    ``session``: a ``boto3.session.Session`` to build clients from (default: a fresh
    one per endpoint/region, so the node's current environment applies).
    """

    source_type = "s3"

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        max_threads: int = DEFAULT_MAX_THREADS,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        parts_in_flight: int = DEFAULT_PARTS_IN_FLIGHT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        session: Any = None,
    ) -> None:
        if part_size < 1 or multipart_threshold < 1:
            raise ValueError("part_size and multipart_threshold must be positive")
        # Instance metadata (the last link of the credential chain) must give up fast
        # where there is none; an operator's explicit settings win.
        os.environ.setdefault("AWS_METADATA_SERVICE_TIMEOUT", "1")
        os.environ.setdefault("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
        self.cache = (ObjectCache(Path(cache_dir), cache_max_bytes)
                      if cache_dir is not None else None)
        self.max_threads = max_threads
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self._session = session
        self._limiter = trio.CapacityLimiter(max_threads)
        self._clients: dict[tuple[str, ...], _Client] = {}
        self._client_lock = threading.Lock()
        self._inflight_lock = threading.Lock()
        self._inflight: dict[str, trio.Event] = {}
        self._inflight_sync: dict[str, threading.Event] = {}

    # -- the Storage interface -------------------------------------------------------------

    async def size_hint(self, source: InputSource) -> int | None:
        """Total bytes of the objects the input names (HEAD or listing); None on any error."""
        try:
            plan = await self.resolve(source)
        except (StorageError, OSError, ValueError):
            return None
        return plan.total_size

    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        """Fetch the objects into a new directory under ``staging_dir``; return it.

        Raises an ``S3Error`` subclass saying which bucket/key/endpoint and why.
        """
        params = _Params.of(source)
        plan = await self.resolve(source)
        client = await self._client(params)
        staging_dir = Path(staging_dir)
        holder = Path(
            await trio.to_thread.run_sync(_make_holder, staging_dir, abandon_on_cancel=False)
        )
        try:
            digests: dict[str, str] = {}

            def fetcher(obj: S3Object, rel: str) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    digests[obj.key] = await self._fetch(client, plan.bucket, obj, holder / rel)

                return run

            pairs = list(zip(plan.objects, plan.paths, strict=True))
            large = [(o, r) for o, r in pairs if o.size >= self.multipart_threshold]
            small = [(o, holder / r) for o, r in pairs if o.size < self.multipart_threshold]
            thunks = [fetcher(o, r) for o, r in large]
            if small:
                thunks.append(lambda: self._fetch_small(client, plan.bucket, small, digests))
            await _all(thunks)
            if plan.single and params.checksum:
                actual = digests[plan.objects[0].key]
                if actual != params.checksum:
                    raise S3ChecksumMismatch(
                        f"{self._where(client, plan.bucket, plan.requested_key)}: checksum "
                        f"mismatch: expected ChecksumSHA256 {params.checksum}, got {actual} "
                        f"(SHA-256 of the {plan.objects[0].size} bytes downloaded)",
                        expected=params.checksum,
                        actual=actual,
                    )
            await trio.to_thread.run_sync(make_readable, holder)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, holder, True)
            raise
        return holder

    # -- resolving a source into objects --------------------------------------------------

    async def resolve(self, source: InputSource) -> S3Plan:
        """Which objects the input names and where each goes; raises ``S3Error``."""
        params = _Params.of(source)
        if not params.bucket:
            raise S3Error("staging S3 input: no Bucket given")
        client = await self._client(params)
        single = not is_prefix_key(params.key)
        objects: list[S3Object] | None = None
        if single:
            head = await self._run(self._head, client, params)
            if head is not None:
                objects = [head]
        if objects is None:  # a prefix, or a "directory" object listed as one (Bacalhau)
            where = self._where(client, params.bucket, params.key)
            for name, value in (
                ("VersionID", params.version_id),
                ("ChecksumSHA256", params.checksum),
            ):
                if value:
                    raise S3Error(
                        f"{where}: {name} applies to a single object, but the key names a "
                        "prefix (it ends in '/' or '*', is empty, or is a directory); name one "
                        "object, or "
                        f"leave {name} out"
                    )
            single = False
            objects = await self._run(self._list, client, params, self._pattern(params))
        try:
            layout = plan_layout(params.key, [obj.key for obj in objects])
        except ValueError as exc:
            raise S3UnsafeKey(f"{self._where(client, params.bucket, params.key)}: {exc}") from None
        return S3Plan(
            bucket=params.bucket,
            requested_key=params.key,
            endpoint=client.endpoint,
            single=single,
            objects=tuple(objects),
            paths=tuple(rel for _, rel in layout),
        )

    @staticmethod
    def _pattern(params: _Params) -> re.Pattern[str] | None:
        """The compiled ``Filter`` (used for listings only, as in Bacalhau)."""
        if not params.filter:
            return None
        try:
            return re.compile(params.filter)
        except re.error as exc:
            raise S3Error(
                f"staging input s3://{params.bucket}/{params.key}: invalid Filter regular "
                f"expression {params.filter!r}: {exc}"
            ) from None

    # -- clients ------------------------------------------------------------------------

    async def _client(self, params: _Params) -> _Client:
        env = tuple(
            os.environ.get(name, "") for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        )
        cache_key = (params.endpoint, params.region, *env)
        client = self._clients.get(cache_key)
        if client is None:
            client = await self._run(self._make_client, params, cache_key)
        return client

    def _make_client(self, params: _Params, cache_key: tuple[str, ...]) -> _Client:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        with self._client_lock:
            if cache_key in self._clients:
                return self._clients[cache_key]
            session = self._session or boto3.session.Session()
            try:
                credentials = session.get_credentials()
                frozen = credentials.get_frozen_credentials() if credentials else None
            except BotoCoreError as exc:  # e.g. a broken profile, or an unreachable SSO
                raise S3Error(
                    f"staging input s3://{params.bucket}/{params.key}: could not load the "
                    f"node's AWS credentials: {type(exc).__name__}"
                ) from None
            signed = frozen is not None and bool(frozen.access_key)
            secrets = (
                (frozen.access_key, frozen.secret_key, frozen.token or "")
                if signed and frozen is not None
                else ()
            )
            settings: dict[str, Any] = {
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
                "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
                "max_pool_connections": max(10, self.max_threads),
            }
            if not signed:
                settings["signature_version"] = UNSIGNED
            region = params.region or session.region_name or "us-east-1"

            def build(**extra: Any) -> Any:
                return session.client(
                    "s3",
                    region_name=region,
                    endpoint_url=params.endpoint or None,  # None: boto3 reads AWS_ENDPOINT_URL*
                    config=Config(**settings, **extra),
                )

            # MinIO, SeaweedFS, Ceph...: path-style, as Bacalhau's HostnameImmutable does.
            path_style = {"s3": {"addressing_style": "path"}}
            configured = params.endpoint or next((e for e in cache_key[2:] if e), "")
            try:
                if configured:
                    client = build(**(path_style if _is_custom_endpoint(configured) else {}))
                else:  # the endpoint may still come from the config file
                    client = build()
                    if _is_custom_endpoint(client.meta.endpoint_url):
                        client = build(**path_style)
            except (BotoCoreError, ValueError) as exc:
                raise S3Error(
                    f"staging input s3://{params.bucket}/{params.key}: cannot use the S3 "
                    f"endpoint {_display_endpoint(configured) or '(default)'}: "
                    f"{type(exc).__name__}"
                ) from None
            made = _Client(client, _display_endpoint(client.meta.endpoint_url), signed, secrets)
            self._clients[cache_key] = made
            return made

    # -- in worker threads: HEAD and LIST ---------------------------------------------------

    def _head(self, client: _Client, params: _Params) -> S3Object | None:
        """The object a single key names; None if it is a directory object (list it)."""
        request: dict[str, Any] = {"Bucket": params.bucket, "Key": params.key}
        if params.version_id:
            request["VersionId"] = params.version_id
        if params.checksum:
            request["ChecksumMode"] = "ENABLED"
        try:
            head = client.client.head_object(**request)
        except Exception as exc:
            status = _status(exc)
            if status == 404 or (status == 400 and params.version_id):  # HEAD has no body
                raise self._missing(client, params) from None
            raise self._error(exc, client, params.bucket, params.key, params.version_id) from None
        if str(head.get("ContentType") or "").startswith(_DIRECTORY_CONTENT_TYPE):
            return None
        reported = head.get("ChecksumSHA256")
        if reported and "-" in reported:
            reported = None  # a checksum of part checksums, not of the object
        if params.checksum and reported and reported != params.checksum:
            raise S3ChecksumMismatch(
                f"{self._where(client, params.bucket, params.key)}: checksum mismatch: expected "
                f"ChecksumSHA256 {params.checksum}, got {reported} (as S3 reports it)",
                expected=params.checksum,
                actual=reported,
            )
        return S3Object(
            key=params.key,
            size=int(head.get("ContentLength") or 0),
            etag=head.get("ETag") or None,
            version_id=params.version_id or None,
            checksum_sha256=reported,
        )

    def _missing(self, client: _Client, params: _Params) -> S3Error:
        """Why a HEAD answered 404 (HEAD has no body): ask with a one-byte GET."""
        where = self._where(client, params.bucket, params.key, params.version_id)
        request: dict[str, Any] = {"Bucket": params.bucket, "Key": params.key, "Range": "bytes=0-0"}
        if params.version_id:
            request["VersionId"] = params.version_id
        code = ""
        try:
            client.client.get_object(**request)["Body"].close()
        except Exception as exc:
            code = _code(exc)
            if code not in ("NoSuchBucket", "NoSuchKey", "NoSuchVersion", "404"):
                return self._error(exc, client, params.bucket, params.key, params.version_id)
        if code == "NoSuchBucket":
            return S3BucketNotFound(
                f"{where}: the bucket {params.bucket!r} does not exist at {client.endpoint}"
            )
        if params.version_id and code != "NoSuchKey":
            return S3VersionNotFound(
                f"{where}: no version {params.version_id!r} of the object {params.key!r} "
                f"(check the VersionID, and that the bucket is versioned)"
            )
        hint = ""
        try:
            listing = client.client.list_objects_v2(
                Bucket=params.bucket, Prefix=params.key + "/", MaxKeys=1
            )
            if listing.get("Contents"):
                hint = (
                    f"; objects exist under {params.key + '/'!r}: to fetch them all, end the "
                    "key with '/' or '*'"
                )
        except Exception:  # only a hint
            pass
        return S3ObjectNotFound(
            f"{where}: no object with the key {params.key!r} in the bucket {params.bucket!r}{hint}"
        )

    def _list(
        self, client: _Client, params: _Params, pattern: re.Pattern[str] | None
    ) -> list[S3Object]:
        """Every object under the prefix that passes the filter, markers skipped."""
        prefix = key_prefix(params.key)
        objects: list[S3Object] = []
        token: str | None = None
        seen_any = False
        while True:
            request: dict[str, Any] = {"Bucket": params.bucket, "Prefix": prefix}
            if token:
                request["ContinuationToken"] = token
            try:
                page = client.client.list_objects_v2(**request)
            except Exception as exc:
                raise self._error(exc, client, params.bucket, params.key) from None
            for item in page.get("Contents") or ():
                key = item["Key"]
                seen_any = True
                if key.endswith("/") or not matches_filter(pattern, prefix, key):
                    continue
                objects.append(
                    S3Object(key=key, size=int(item.get("Size") or 0), etag=item.get("ETag"))
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        if not objects:
            where = self._where(client, params.bucket, params.key)
            if pattern is not None and seen_any:
                why = (
                    f"objects start with {prefix!r}, but none matches the Filter {params.filter!r}"
                )
            elif seen_any:
                why = f"only directory markers start with {prefix!r}"
            else:
                why = f"no object in the bucket {params.bucket!r} starts with {prefix!r}"
            raise S3NoMatchingObjects(f"{where}: nothing to stage: {why}")
        return objects

    # -- fetching one object -------------------------------------------------------------

    async def _fetch(self, client: _Client, bucket: str, obj: S3Object, dest: Path) -> str:
        """Put ``obj`` at ``dest`` (from the cache, or downloaded); return its SHA-256 (b64)."""
        cache = self.cache
        entry = cache.entry(client.endpoint, bucket, obj) if cache is not None else None
        if cache is None or entry is None:
            await self._run(_make_parent, dest, abandon=False)
            return await self._download(client, bucket, obj, dest)
        while True:
            digest = await self._run(cache.take, entry, obj, dest, abandon=False)
            if digest is not None:
                return digest
            busy = self._inflight.get(entry)
            if busy is None:
                break
            await busy.wait()  # the same object is being fetched for another input
        done = self._inflight[entry] = trio.Event()
        try:
            # Another input's fetch may have cached it while we looked (in a thread).
            cached = await self._run(cache.take, entry, obj, dest, abandon=False)
            if cached is not None:
                return cached
            tmp_dir = cache.directory / "tmp"
            tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
            await self._run(_make_dirs, tmp_dir, dest.parent, abandon=False)
            try:
                digest = await self._download(client, bucket, obj, tmp)
                await self._run(
                    cache.put, entry, obj, bucket, client.endpoint, tmp, digest, dest,
                    abandon=False)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(unlink, tmp)
            return digest
        finally:
            del self._inflight[entry]
            done.set()

    async def _fetch_small(
        self,
        client: _Client,
        bucket: str,
        items: list[tuple[S3Object, Path]],
        digests: dict[str, str],
    ) -> None:
        """Objects under the multipart threshold, by a pool of worker threads.

        Each worker takes objects off one queue until it is empty, as a thread pool of
        ``get_object`` would: one thread hop per worker, not two per object, which is
        what bounded the throughput on thousands of small objects.
        """
        queue = collections.deque(items)
        stop = threading.Event()
        # Directories first, waited for: an abandoned worker must never re-create one
        # after a cancelled stage removed its holder (a file open there then just fails).
        parents = {dest.parent for _, dest in items}
        if self.cache is not None:
            parents.add(self.cache.directory / "tmp")
        await self._run(_make_dirs, *sorted(parents), abandon=False)

        def work() -> None:
            while not stop.is_set():
                trio.from_thread.check_cancelled()  # the stage may be cancelled already
                try:
                    obj, dest = queue.popleft()
                except IndexError:
                    return
                digests[obj.key] = self._fetch_sync(client, bucket, obj, dest, stop)

        async def worker() -> None:
            await trio.to_thread.run_sync(work, limiter=self._limiter, abandon_on_cancel=True)

        try:
            await _all([worker] * min(self.max_threads, len(items)))
        except BaseException:
            stop.set()  # abandoned workers stop before their next object or chunk
            raise

    def _fetch_sync(
        self, client: _Client, bucket: str, obj: S3Object, dest: Path, stop: threading.Event
    ) -> str:
        """``_fetch`` for one small object, in a worker thread."""
        cache = self.cache
        entry = cache.entry(client.endpoint, bucket, obj) if cache is not None else None
        if cache is None or entry is None:
            return self._get_whole(client, bucket, obj, dest, stop)
        while True:
            digest = cache.take(entry, obj, dest)
            if digest is not None:
                return digest
            with self._inflight_lock:
                busy = self._inflight_sync.get(entry)
                if busy is None:
                    done = self._inflight_sync[entry] = threading.Event()
                    break
            while not busy.wait(0.5):  # the same object, fetched for another input
                if stop.is_set():
                    raise _Stopped()
        tmp = cache.directory / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            # Another input's fetch may have cached it between our look and our claim.
            cached = cache.take(entry, obj, dest)
            if cached is not None:
                return cached
            digest = self._get_whole(client, bucket, obj, tmp, stop)
            # A cancelled stage keeps nothing, not even in the cache: cancellation reaches
            # this thread at once, before ``stop`` is set on the way out of the stage.
            trio.from_thread.check_cancelled()
            cache.put(entry, obj, bucket, client.endpoint, tmp, digest, dest)
        finally:
            unlink(tmp)
            with self._inflight_lock:
                del self._inflight_sync[entry]
            done.set()
        return digest

    async def _download(self, client: _Client, bucket: str, obj: S3Object, dest: Path) -> str:
        stop = threading.Event()
        try:
            if obj.size < self.multipart_threshold:
                return await self._run(self._get_whole, client, bucket, obj, dest, stop)
            return await self._get_ranged(client, bucket, obj, dest, stop)
        except BaseException:
            stop.set()  # abandoned threads stop at their next chunk
            raise

    def _get_request(self, bucket: str, obj: S3Object) -> dict[str, Any]:
        request: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
        if obj.version_id:
            request["VersionId"] = obj.version_id
        if obj.etag:
            request["IfMatch"] = obj.etag  # the object must not change under us
        return request

    def _get_whole(
        self, client: _Client, bucket: str, obj: S3Object, dest: Path, stop: threading.Event
    ) -> str:
        """One GET, streamed to ``dest`` and hashed in the same pass.

        A failed or stopped download removes what it wrote (this thread may have been
        abandoned, so nobody else would).
        """
        for attempt in range(1, _STREAM_ATTEMPTS + 1):
            if stop.is_set():
                raise _Stopped()
            response = self._call_get(client, bucket, obj, self._get_request(bucket, obj))
            digest = hashlib.sha256()
            received = 0
            try:
                with contextlib.closing(response["Body"]) as body:
                    if stop.is_set():
                        raise _Stopped()
                    with open(dest, "wb") as out:
                        for chunk in body.iter_chunks(_CHUNK):
                            if stop.is_set():
                                raise _Stopped()
                            digest.update(chunk)
                            out.write(chunk)
                            received += len(chunk)
            except Exception as exc:
                unlink(dest)
                if not _is_stream_error(exc) or attempt == _STREAM_ATTEMPTS:
                    raise self._stream_failed(exc, client, bucket, obj, received) from None
                continue
            self._check_size(client, bucket, obj, received)
            return _b64(digest.digest())
        raise AssertionError("unreachable")

    async def _get_ranged(
        self, client: _Client, bucket: str, obj: S3Object, dest: Path, stop: threading.Event
    ) -> str:
        """Ranged GETs, several at once, written in place.

        The file is hashed part by part as soon as each part and all before it have
        arrived, so hashing overlaps the download instead of following it.
        """
        await self._run(_make_sized, dest, obj.size, abandon=False)
        parts_limiter = trio.CapacityLimiter(self.parts_in_flight)
        starts = list(range(0, obj.size, self.part_size))
        arrived = [trio.Event() for _ in starts]
        digest = hashlib.sha256()

        def part(index: int) -> Callable[[], Awaitable[None]]:
            start = starts[index]
            end = min(start + self.part_size, obj.size) - 1

            async def run() -> None:
                async with parts_limiter:
                    await self._run(self._get_range, client, bucket, obj, dest, start, end, stop)
                arrived[index].set()

            return run

        async def hash_in_order() -> None:
            for index, start in enumerate(starts):
                await arrived[index].wait()
                length = min(self.part_size, obj.size - start)
                await self._run(_hash_range, dest, start, length, digest, stop)

        await _all([part(index) for index in range(len(starts))] + [hash_in_order])
        return _b64(digest.digest())

    def _get_range(
        self,
        client: _Client,
        bucket: str,
        obj: S3Object,
        dest: Path,
        start: int,
        end: int,
        stop: threading.Event,
    ) -> None:
        """One ranged GET written at its offset (each thread has its own descriptor)."""
        request = self._get_request(bucket, obj)
        request["Range"] = f"bytes={start}-{end}"
        for attempt in range(1, _STREAM_ATTEMPTS + 1):
            if stop.is_set():
                raise _Stopped()
            response = self._call_get(client, bucket, obj, request)
            position = start
            try:
                fd = os.open(dest, os.O_WRONLY)
                try:
                    with contextlib.closing(response["Body"]) as body:
                        for chunk in body.iter_chunks(_CHUNK):
                            if stop.is_set():
                                raise _Stopped()
                            if position + len(chunk) > end + 1:
                                raise S3Error(
                                    f"{self._where(client, bucket, obj.key)}: the server sent "
                                    f"more than the {end - start + 1} bytes asked for at "
                                    f"offset {start}"
                                )
                            os.pwrite(fd, chunk, position)
                            position += len(chunk)
                finally:
                    os.close(fd)
            except Exception as exc:
                if not _is_stream_error(exc) or attempt == _STREAM_ATTEMPTS:
                    raise self._stream_failed(exc, client, bucket, obj, position - start) from None
                continue
            if position != end + 1:
                raise S3Error(
                    f"{self._where(client, bucket, obj.key)}: the download of bytes "
                    f"{start}-{end} ended after {position - start} bytes"
                )
            return

    def _call_get(
        self, client: _Client, bucket: str, obj: S3Object, request: dict[str, Any]
    ) -> Any:
        try:
            return client.client.get_object(**request)
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "412"):
                raise S3Error(
                    f"{self._where(client, bucket, obj.key)}: the object changed while it was "
                    f"being staged (its ETag is no longer {obj.etag}); try again"
                ) from None
            raise self._error(exc, client, bucket, obj.key, obj.version_id or "") from None

    def _check_size(self, client: _Client, bucket: str, obj: S3Object, received: int) -> None:
        if received != obj.size:
            raise S3Error(
                f"{self._where(client, bucket, obj.key)}: received {received} bytes, but the "
                f"object has {obj.size}"
            )

    def _stream_failed(
        self, exc: BaseException, client: _Client, bucket: str, obj: S3Object, received: int
    ) -> BaseException:
        if isinstance(exc, StorageError | _Stopped):
            return exc
        if isinstance(exc, OSError) and not _is_stream_error(exc):
            return S3Error(
                f"{self._where(client, bucket, obj.key)}: could not write the object on this "
                f"node: {exc.strerror or exc}"
            )
        return S3Error(
            f"{self._where(client, bucket, obj.key)}: the download broke off after {received} "
            f"bytes: {client.scrub(_reason(exc))}"
        )

    # -- helpers -------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, abandon: bool = True) -> Any:
        """Run a blocking call in a worker thread, within this backend's thread budget.

        Network calls are abandoned on cancellation (``abandon``; they notice a stop flag
        at their next chunk); file-system work is waited for, so that it cannot race the
        removal of the staging directory.
        """
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=abandon
        )

    @staticmethod
    def _where(client: _Client, bucket: str, key: str, version_id: str = "") -> str:
        version = f" (version {version_id})" if version_id else ""
        return f"staging input s3://{bucket}/{key}{version} from {client.endpoint}"

    def _error(
        self, exc: BaseException, client: _Client, bucket: str, key: str, version_id: str = ""
    ) -> S3Error:
        """Turn a botocore exception into an ``S3Error`` a user understands."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        where = self._where(client, bucket, key, version_id)
        if isinstance(exc, S3Error):
            return exc
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return S3EndpointUnreachable(
                f"{where}: could not reach the S3 endpoint {client.endpoint}: "
                f"{client.scrub(_reason(exc))} (check the Endpoint, or the node's "
                "AWS_ENDPOINT_URL_S3, and that the server is up)"
            )
        if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
            return S3EndpointUnreachable(
                f"{where}: the S3 endpoint {client.endpoint} stopped answering: "
                f"{client.scrub(_reason(exc))}"
            )
        if not isinstance(exc, ClientError):
            return S3Error(f"{where}: {type(exc).__name__}: {client.scrub(str(exc))}")
        code = _code(exc)
        status = _status(exc)
        message = client.scrub(str(exc.response.get("Error", {}).get("Message") or ""))
        if code == "NoSuchBucket":
            return S3BucketNotFound(
                f"{where}: the bucket {bucket!r} does not exist at {client.endpoint}"
            )
        if code == "NoSuchKey":
            return S3ObjectNotFound(f"{where}: no object with the key {key!r} in {bucket!r}")
        if code == "NoSuchVersion" or (version_id and code == "InvalidArgument"):
            return S3VersionNotFound(
                f"{where}: no version {version_id!r} of the object {key!r} ({message or code})"
            )
        if status == 403 or code in ("AccessDenied", "AllAccessDisabled"):
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
                why = f"the server rejected this node's AWS credentials ({code})"
            elif client.signed:
                why = (
                    f"access denied ({code or status}): this node's AWS credentials may not "
                    "read it (or, on AWS, the key may not exist and listing is not allowed)"
                )
            else:
                why = (
                    f"access denied ({code or status}): no AWS credentials were found on this "
                    "node, so the request was anonymous and only public buckets can be read"
                )
            return S3AccessDenied(f"{where}: {why}")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
            return S3Error(
                f"{where}: the bucket is in another region than the one asked for "
                f"({message or code}); set the Region (opt=region=...)"
            )
        detail = f"{code} {message}".strip() if code != str(status) else message or code
        return S3Error(f"{where}: S3 answered HTTP {status}: {detail}")


# ---------------------------------------------------------------------------------------
# Small helpers


async def _all(thunks: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run all concurrently; the first failure cancels the others and is raised as is."""
    failure: list[BaseException] = []
    async with trio.open_nursery() as nursery:

        async def run(thunk: Callable[[], Awaitable[None]]) -> None:
            try:
                await thunk()
            except Exception as exc:
                if not failure:
                    failure.append(exc)
                nursery.cancel_scope.cancel()

        for thunk in thunks:
            nursery.start_soon(run, thunk)
    if failure:
        raise failure[0]


def _make_holder(staging_dir: Path) -> str:
    staging_dir.mkdir(parents=True, exist_ok=True)
    holder = tempfile.mkdtemp(prefix="s3-", dir=staging_dir)
    os.chmod(holder, 0o755)
    return holder


def _make_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def _make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


def _make_sized(path: Path, size: int) -> None:
    """Create ``path`` (and its directory) as a file of ``size`` bytes, to fill in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


def _hash_range(
    path: Path, start: int, length: int, digest: Any, stop: threading.Event
) -> None:
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(_CHUNK, length))
            if not chunk:
                raise OSError(f"{path} ended {length} bytes early")
            if stop.is_set():
                raise _Stopped()
            digest.update(chunk)
            length -= len(chunk)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "")
    return ""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _is_stream_error(exc: BaseException) -> bool:
    """A connection that broke while a body streamed (worth one more GET)."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    return isinstance(
        exc,
        ResponseStreamingError
        | IncompleteReadError
        | ReadTimeoutError
        | ConnectionClosedError
        | ConnectionError
        | TimeoutError,
    )


def _reason(exc: BaseException) -> str:
    """A short reason for a network error, without botocore's long URL-bearing text."""
    inner: BaseException | None = exc
    for _ in range(5):  # botocore wraps urllib3, which wraps the socket error
        if inner is None:
            break
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, TimeoutError):
            return "timed out"
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        inner = getattr(inner, "error", None) or inner.__cause__ or inner.__context__
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return f"{type(exc).__name__}: {text}"


def _is_custom_endpoint(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return not (host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn")))


def _display_endpoint(url: str) -> str:
    """The endpoint URL without user info (never print credentials)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
