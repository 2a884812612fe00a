"""What staging an ``s3`` input raises: one ``S3Error`` kind per thing a user can fix."""

from __future__ import annotations

from .base import StorageError


class S3Error(StorageError):
    """An S3 input could not be staged; the message names bucket, key and endpoint."""


class S3NotFound(S3Error):
    """Something the input names does not exist."""


class S3BucketNotFound(S3NotFound):
    """The bucket does not exist at that endpoint."""


class S3ObjectNotFound(S3NotFound):
    """A single-object key does not exist."""


class S3VersionNotFound(S3NotFound):
    """The object exists but not in the requested ``VersionID``."""


class S3NoMatchingObjects(S3NotFound):
    """A prefix (with its filter) matches no object."""


class S3AccessDenied(S3Error):
    """The server refused the request (no, wrong or insufficient credentials)."""


class S3EndpointUnreachable(S3Error):
    """No connection to the endpoint (refused, timed out, name not resolved)."""


class S3ChecksumMismatch(S3Error):
    """The object's SHA-256 is not the ``ChecksumSHA256`` the input asks for."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class S3UnsafeKey(S3Error):
    """An object key cannot be laid out safely under the staging directory."""
