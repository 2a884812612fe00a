"""Value checks of the job spec, shared with ``uris``: each returns why a value is bad, or
None (images, buckets, CIDs, URLs, checksums, paths), and ``parse_bool``."""

from __future__ import annotations

import base64
import posixpath
import re
from urllib.parse import urlsplit

from .cid import Cid, IpfsFormatError
from .errors import LocalProtocolError

#: Inline inputs travel inside every announcement, well under the 1 MiB message limit.
MAX_INLINE_URL = 64 * 1024

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_IMAGE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)
_IMAGE_EXPECTED = (
    "expected [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST], e.g. ubuntu:22.04 or ghcr.io/org/app:1.2"
)


def check_image(ref: str) -> str | None:
    """Why ``ref`` is not a Docker image reference (distribution's grammar), or None."""
    match = _IMAGE_RE.fullmatch(ref)
    if match is not None and len(match["name"]) <= 255:
        return None
    if not ref:
        reason = "empty; "
    elif match is not None:
        reason = "the name is longer than 255 characters; "
    elif _IMAGE_RE.fullmatch(ref.lower()) is not None:
        reason = "repository names must be lowercase; "
    else:
        reason = ""
    return f"invalid image reference {ref!r}: {reason}{_IMAGE_EXPECTED}"


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket(name: str) -> str | None:
    """Why ``name`` is not an S3 bucket name (AWS's rules), or None."""
    if _BUCKET_RE.fullmatch(name) and ".." not in name:
        return None
    return (
        f"invalid S3 bucket name {name!r}: expected 3 to 63 lowercase letters, digits, '.' "
        "or '-', starting and ending with a letter or digit, e.g. my-results"
    )


def check_cid(cid: str) -> str | None:
    """Why ``cid`` is not an IPFS CID (v0, or v1 in base32/base58btc/base16), or None."""
    try:
        Cid.parse(cid)
    except IpfsFormatError:
        return (
            f"invalid CID {cid!r}: expected a CIDv0 (Qm and 44 base58 characters) or a CIDv1 "
            "(e.g. base32, starting with b), e.g. QmYFhG668yJZmtk84SMMdbrz5Uvuh78Q8nLxTgLDWShkhR"
        )
    return None


def check_http_url(url: str, *, what: str = "URL") -> str | None:
    """Why ``url`` is not an absolute http(s) URL with a host, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if (
        parts is not None
        and parts.scheme.lower() in ("http", "https")
        and parts.hostname
        and not any(char.isspace() for char in url)
    ):
        return None
    return (
        f"invalid {what} {url!r}: expected an http:// or https:// URL with a host, "
        "e.g. https://example.com/data.csv"
    )


def check_data_url(url: str) -> str | None:
    """Why ``url`` is not a ``data:`` URL of at most ``MAX_INLINE_URL`` characters, or None."""
    expected = "expected a data: URL, e.g. data:text/plain;base64,aGVsbG8= or data:,hello"
    if len(url) > MAX_INLINE_URL:
        return (
            f"inline data URL is {len(url)} characters, more than the {MAX_INLINE_URL} "
            "allowed; put larger inputs in S3, IPFS or behind a URL"
        )
    header, comma, payload = url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        return f"invalid inline data URL {url[:60]!r}: {expected}"
    if header.lower().endswith(";base64"):
        try:
            base64.b64decode(payload, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            return (
                f"invalid inline data URL {url[:60]!r}: the payload is not valid base64; {expected}"
            )
    return None


def check_checksum_sha256(value: str) -> str | None:
    """Why ``value`` is not a base64 SHA-256 digest, as S3 reports ``ChecksumSHA256``."""
    try:
        if len(base64.b64decode(value, validate=True)) == 32:
            return None
    except ValueError:  # binascii.Error, or non-ASCII text
        pass
    return (
        f"invalid ChecksumSHA256 {value!r}: expected a base64 SHA-256 digest (44 characters "
        "ending in '='), e.g. e0uDqmflfT9b+rMfoCnO5G+cy+8WVTOPUtAqDMnXWbw="
    )


def check_absolute_path(path: str) -> str | None:
    """Why ``path`` is not an absolute container path without ``..``, or None.

    The root directory itself is refused: nothing may be mounted over it.
    """
    if not path.startswith("/") or ".." in path.split("/") or "\0" in path:
        return (
            f"invalid path {path!r}: expected an absolute path without '..' segments, "
            "e.g. /inputs/data"
        )
    if normalise_path(path) == "/":
        return f"invalid path {path!r}: cannot be the root directory; use e.g. /inputs"
    return None


def normalise_path(path: str) -> str:
    """``/inputs//a/./b/`` → ``/inputs/a/b``; only meaningful for paths that pass the check."""
    normal = posixpath.normpath(path)
    # normpath keeps a leading "//" (POSIX allows it a special meaning); containers don't.
    return "/" + normal.lstrip("/")


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(value: object) -> bool:
    """A boolean from ``True``/``False`` or true/false/1/0/yes/no (any case).

    Raises ``LocalProtocolError`` otherwise.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise LocalProtocolError(
        f"invalid boolean {value!r}: expected true or false (also accepted: 1/0, yes/no)"
    )


_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
_DOMAIN_RE = re.compile(rf"\.?{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*")
_RESULT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

