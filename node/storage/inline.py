"""``inline`` inputs: bytes carried in the job spec itself as an RFC 2397 ``data:`` URL.

As Bacalhau's inline storage does:

- ``data:[MEDIATYPE][;base64],DATA`` is decoded (base64, or percent-encoded text) and
  written to one file, which is mounted *as* the target: ``Target: /inputs/run.sh``
  makes the file ``/inputs/run.sh``. The host file is named after the target's last
  component, for whoever looks in the staging directory.
- With media type ``application/gzip`` the data is a gzip-compressed tar archive
  (what ``bacalhau`` makes of a directory, or of a file over 512 bytes): it is
  unpacked into a directory, which is mounted as the target. Unpacking uses tarfile's
  ``data`` filter (no absolute paths, no links out of the tree, no devices, no setuid
  bits) and a cap on the unpacked size, so a compressed bomb cannot fill the disk.

The spec already limits inline URLs to ``protocol.jobspec.MAX_INLINE_URL`` characters.
"""

from __future__ import annotations

import base64
import binascii
import io
import posixpath
import tarfile
import tempfile
import zlib
from pathlib import Path
from urllib.parse import unquote_to_bytes

import trio

from protocol.jobspec import InputSource, check_data_url

from .base import Storage, StorageError, make_readable

__all__ = ["DEFAULT_MAX_UNPACKED_BYTES", "GZIP_MEDIA_TYPES", "InlineStorage", "decode_data_url"]

GZIP_MEDIA_TYPES = frozenset({"application/gzip", "application/x-gzip"})
#: At most this many bytes are unpacked from a compressed inline archive.
DEFAULT_MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def decode_data_url(url: str) -> tuple[str, bytes]:
    """Split a ``data:`` URL into its media type (lowercase, no parameters) and bytes.

    The media type defaults to ``text/plain`` (RFC 2397). Raises ``ValueError`` with
    the reason when ``url`` is not a valid data URL.
    """
    problem = check_data_url(url)
    if problem:
        raise ValueError(problem)
    header, _, payload = url.partition(",")
    params = header[len("data:") :].split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    media_type = params[0].strip().lower() or "text/plain"
    if not is_base64:
        return media_type, unquote_to_bytes(payload)
    try:
        return media_type, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:  # already checked; kept for safety
        raise ValueError(f"the payload is not valid base64: {exc}") from None


class InlineStorage(Storage):
    """Writes the data of ``inline`` inputs to files (or unpacks their archives)."""

    source_type = "inline"

    def __init__(self, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
        self.max_unpacked_bytes = max_unpacked_bytes

    async def size_hint(self, source: InputSource) -> int | None:
        """The decoded size (for an archive: the unpacked size); None if undecodable."""
        return await trio.to_thread.run_sync(self._size, source)

    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        return await trio.to_thread.run_sync(self._stage, source, Path(staging_dir))

    def _size(self, source: InputSource) -> int | None:
        try:
            media_type, data = decode_data_url(str(source.params.get("URL", "")))
            if media_type in GZIP_MEDIA_TYPES:
                return self._unpacked_size(data, source)
        except (ValueError, StorageError):
            return None
        return len(data)

    def _stage(self, source: InputSource, staging_dir: Path) -> Path:
        where = f"staging inline input for {source.target}"
        try:
            media_type, data = decode_data_url(str(source.params.get("URL", "")))
        except ValueError as exc:
            raise StorageError(f"{where}: {exc}") from None
        staging_dir.mkdir(parents=True, exist_ok=True)
        holder = Path(tempfile.mkdtemp(prefix="inline-", dir=staging_dir))
        holder.chmod(0o755)
        if media_type in GZIP_MEDIA_TYPES:
            self._unpacked_size(data, source)  # refuse a bomb before writing anything
            target_dir = holder / "data"
            target_dir.mkdir()
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                    archive.extractall(target_dir, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise StorageError(
                    f"{where}: could not unpack the gzip tar archive: {exc}"
                ) from exc
            make_readable(target_dir)
            return target_dir
        name = posixpath.basename(source.target.rstrip("/")) or "inline"
        path = holder / name
        path.write_bytes(data)
        make_readable(path)
        return path

    def _unpacked_size(self, data: bytes, source: InputSource) -> int:
        """Sum of the archive's member sizes; StorageError if unreadable or over the cap."""
        total = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                for member in archive:
                    total += member.size
                    if total > self.max_unpacked_bytes:
                        raise StorageError(
                            f"staging inline input for {source.target}: the archive unpacks "
                            f"to more than {self.max_unpacked_bytes} bytes, this node's limit; "
                            "put large inputs in S3, IPFS or behind a URL"
                        )
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise StorageError(
                f"staging inline input for {source.target}: media type application/gzip "
                f"but not a readable gzip tar archive: {exc}"
            ) from exc
        return total
