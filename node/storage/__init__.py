"""Input sources: stage a job's inputs on the host before its container starts.

One interface (``Storage``), one module per backend: ``inline`` (data carried in the
spec), ``url`` (``urlDownload``), ``s3``, ``noop``; ``ipfs`` has no backend here yet.
``storage_for(type)`` finds the backend for a source type, ``stage_inputs`` stages all
of an execution's inputs and returns what the executor mounts.
"""

from .base import Storage, StorageError, UnsupportedStorage, describe_source
from .inline import InlineStorage
from .noop import NoopStorage
from .registry import StorageRegistry, default_registry, stage_inputs, storage_for
from .s3 import S3Storage
from .url import UrlDownloadStorage

__all__ = [
    "InlineStorage",
    "NoopStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageRegistry",
    "UnsupportedStorage",
    "UrlDownloadStorage",
    "default_registry",
    "describe_source",
    "stage_inputs",
    "storage_for",
]
