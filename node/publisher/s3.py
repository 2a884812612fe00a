"""The S3 publisher: upload a results directory, hashing it in the same pass.

``Compress: true`` streams a ``.tar.gz`` of the directory straight into a multipart
upload (parts of ``PART_SIZE``); the SHA-256 of the archive is computed on the bytes
as they are uploaded, never by reading them back. ``Compress: false`` uploads each
file under ``Key/`` + its path, each with its own ``ChecksumSHA256`` that S3 checks.
A failed upload is aborted, so nothing partial is left looking complete.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from protocol.messages import ManifestEntry
from protocol.placeholders import ARCHIVE_SUFFIXES, render_key

from .base import PublishError, PublishRequest, manifest_for

PART_SIZE = 8 * 1024 * 1024
_limiter = trio.CapacityLimiter(8)


def s3_client(endpoint: str | None, region: str | None) -> Any:
    """A boto3 client from the node's standard credential chain; unsigned when it has none."""
    import boto3
    import botocore.config
    from botocore import UNSIGNED

    os.environ.setdefault("AWS_METADATA_SERVICE_TIMEOUT", "1")
    os.environ.setdefault("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
    session = boto3.session.Session()
    config = botocore.config.Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint or _env_endpoint() else {},
        signature_version=UNSIGNED if session.get_credentials() is None else "s3v4",
    )
    return session.client(
        "s3", endpoint_url=endpoint or None, region_name=region or None, config=config
    )


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class _HashingMultipartWriter(io.RawIOBase):
    """A write-only file that hashes what it is given and uploads it in parts."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.digest = hashlib.sha256()
        self.size = 0
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= PART_SIZE:
            self._upload_part(bytes(self._buffer[:PART_SIZE]))
            del self._buffer[:PART_SIZE]
        return len(data)

    def _upload_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType="application/gzip"
            )
            self._upload_id = answer["UploadId"]
        number = len(self._parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number,
            Body=chunk,
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self) -> dict[str, Any]:
        """Upload what is left; returns S3's answer (with ``VersionId`` on versioned buckets)."""
        if self._upload_id is None:
            # Small enough for one request: let S3 check the checksum too.
            return self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                ContentType="application/gzip",
                ChecksumSHA256=base64.b64encode(self.digest.digest()).decode(),
            )
        if self._buffer:
            self._upload_part(bytes(self._buffer))
        return self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            try:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            except Exception:
                pass


def _upload_archive(client: Any, bucket: str, key: str, results_dir: Path) -> tuple[str, str]:
    writer = _HashingMultipartWriter(client, bucket, key)
    try:
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for path in sorted(results_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(results_dir).as_posix(), recursive=False)
        answer = writer.finish()
    except BaseException:
        writer.abort()
        raise
    checksum = base64.b64encode(writer.digest.digest()).decode()
    return checksum, answer.get("VersionId") or ""


def _upload_files(
    client: Any, bucket: str, prefix: str, results_dir: Path, manifest: Sequence[ManifestEntry]
) -> str:
    """Upload each file of the manifest; S3 checks each against the manifest's SHA-256."""
    version = ""
    for entry in manifest:
        with (results_dir / entry.path).open("rb") as handle:
            answer = client.put_object(
                Bucket=bucket, Key=f"{prefix.rstrip('/')}/{entry.path}", Body=handle,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(entry.sha256)).decode(),
            )
        version = answer.get("VersionId") or version
    return version


def _explain(exc: Exception, bucket: str, key: str, endpoint: str | None) -> str:
    where = f"s3://{bucket}/{key}" + (f" at {endpoint}" if endpoint else "")
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(
        exc, "response") else None
    if code == "NoSuchBucket":
        return f"publishing to {where}: bucket {bucket!r} does not exist; create it first"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"publishing to {where}: access denied ({code}); check the node's AWS credentials"
    if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
        return f"publishing to {where}: cannot reach the S3 endpoint ({exc})"
    return f"publishing to {where}: {exc}"


async def publish_s3(
    params: Mapping[str, Any],
    results_dir: Path,
    *,
    job_id: str,
    execution_id: str,
    node_id: str,
    now: datetime,
    manifest: Sequence[ManifestEntry] = (),
) -> dict[str, Any]:
    """Upload ``results_dir``; returns the record's ``published`` location.

    ``manifest`` lists the files (with their SHA-256) to upload when not compressing.
    """
    bucket = params["Bucket"]
    key = render_key(params.get("Key", ""), job_id=job_id, execution_id=execution_id,
                     node_id=node_id, now=now)
    compress = bool(params.get("Compress", False))
    endpoint = params.get("Endpoint") or None
    region = params.get("Region") or None
    if compress and not key.endswith(ARCHIVE_SUFFIXES):
        key += ".tar.gz"

    def upload() -> dict[str, Any]:
        client = s3_client(endpoint, region)
        try:
            if compress:
                checksum, version = _upload_archive(client, bucket, key, results_dir)
            else:
                checksum = ""
                version = _upload_files(client, bucket, key, results_dir, manifest)
        except Exception as exc:
            raise PublishError(_explain(exc, bucket, key, endpoint)) from None
        return {
            "StorageSource": "S3",
            "Name": f"s3://{bucket}/{key}",
            "S3": {
                "Bucket": bucket,
                "Key": key,
                "Checksum": checksum,
                "VersionID": version,
                "Region": region or client.meta.region_name or "",
                "Endpoint": endpoint or _env_endpoint() or "",
                "Compress": compress,
            },
        }

    return await trio.to_thread.run_sync(upload, limiter=_limiter)


class S3Publisher:
    publisher_type = "s3"
    manifest_first = True
    reads_results = True

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        from datetime import UTC

        manifest = await manifest_for(request)
        location = await publish_s3(
            request.job.task.publisher.params, request.results_dir, job_id=request.job.id or "",
            execution_id=request.execution_id, node_id=request.node_id, now=datetime.now(UTC),
            manifest=manifest)
        return location, manifest
