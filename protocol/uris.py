"""The input and publisher forms Bacalhau users type: ``-i`` and ``-p``.

``-i SOURCE[:TARGET][,opt=KEY=VALUE...]`` where SOURCE is ``s3://BUCKET/KEY``
(a trailing ``*`` makes KEY a prefix), ``ipfs://CID`` or an ``http(s)://`` URL.
The target is the text after the last ``:`` that is followed by ``/`` and is not the
``://`` of the scheme, so ``s3://b/k:/inputs`` and ``https://h:8080/f:/in/f`` split
as meant; it defaults to ``/inputs``.

``-p ipfs|local|noop|s3://BUCKET/KEY[,opt=KEY=VALUE...]``.

Both return the same normalised values that ``Job.from_dict`` would build from the
equivalent spec, because they are validated by the same checks in ``jobspec``.
Errors are ``LocalProtocolError`` quoting the whole flag value.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .errors import LocalProtocolError, SpecError
from .jobspec import InputSource, PublisherSpec

__all__ = [
    "DEFAULT_INPUT_TARGET",
    "INPUT_OPTIONS",
    "PUBLISHER_OPTIONS",
    "InputSource",
    "PublisherSpec",
    "parse_input",
    "parse_publisher",
]

DEFAULT_INPUT_TARGET = "/inputs"
#: ``opt=`` keys for S3 inputs (matched case-insensitively) and the Params they set.
INPUT_OPTIONS: dict[str, str] = {
    "region": "Region",
    "endpoint": "Endpoint",
    "versionID": "VersionID",
    "checksum-256": "ChecksumSHA256",
    "filter": "Filter",
}
#: ``opt=`` keys for the S3 publisher and the Params they set.
PUBLISHER_OPTIONS: dict[str, str] = {
    "endpoint": "Endpoint",
    "region": "Region",
    "compress": "Compress",
}

_Fail = Callable[[str], LocalProtocolError]

_INPUT_FORMS = (
    "expected SOURCE[:TARGET][,opt=KEY=VALUE...] with SOURCE one of s3://BUCKET/KEY, "
    "ipfs://CID, https://HOST/PATH or http://HOST/PATH, "
    "e.g. s3://bucket/prefix*:/inputs,opt=region=us-east-1"
)
_PUBLISHER_FORMS = (
    "expected ipfs, local, noop or s3://BUCKET/KEY[,opt=KEY=VALUE...], "
    "e.g. s3://results/{jobID}.tar.gz,opt=compress=true"
)


def parse_input(text: str) -> InputSource:
    """Parse one ``-i`` value into an ``InputSource``; raises ``LocalProtocolError``."""

    def fail(reason: str) -> LocalProtocolError:
        return LocalProtocolError(f"invalid input {text!r}: {reason}")

    location, options = _split_options(_from_src_dst(text, fail), fail)
    if not location:
        raise fail(f"no source; {_INPUT_FORMS}")
    source, target = _split_target(location)
    scheme, sep, rest = source.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("s3", "ipfs", "http", "https"):
        raise fail(f"unsupported source {source!r}; {_INPUT_FORMS}")
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        source_type = "s3"
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        for name, value in options:
            param = _option_param(name, INPUT_OPTIONS, "S3 inputs", fail)
            params[param] = value
    else:
        if options:
            raise fail(f"{scheme}:// inputs take no opt= options, got opt={options[0][0]}")
        if scheme == "ipfs":
            if "/" in rest:
                raise fail(f"expected ipfs://CID with no path after the CID, got {source!r}")
            if ":" in rest:
                cid, _, after = rest.partition(":")
                example = f"ipfs://{cid}:/inputs" + (f"/{after}" if after else "")
                raise fail(f"the target after the CID must be an absolute path in the "
                           f"container, got {after!r}; e.g. {example}")
            source_type, params = "ipfs", {"CID": rest}
        else:
            source_type, params = "urlDownload", {"URL": source}
    document = {"Source": {"Type": source_type, "Params": params}, "Target": target}
    try:
        return InputSource.from_dict(document)
    except SpecError as exc:
        raise fail("; ".join(error.message for error in exc.errors)) from None


def parse_publisher(text: str) -> PublisherSpec:
    """Parse one ``-p`` value into a ``PublisherSpec``; raises ``LocalProtocolError``.

    ``compress`` accepts true/false/1/0/yes/no; S3 key placeholders are checked.
    """

    def fail(reason: str) -> LocalProtocolError:
        return LocalProtocolError(f"invalid publisher {text!r}: {reason}")

    location, options = _split_options(text, fail)
    if location.lower() in ("ipfs", "local", "noop"):
        if options:
            raise fail(f"the {location.lower()} publisher takes no opt= options")
        return PublisherSpec(type=location.lower())
    scheme, sep, rest = location.partition("://")
    if not sep or scheme.lower() != "s3":
        raise fail(f"unsupported publisher {location!r}; {_PUBLISHER_FORMS}")
    bucket, _, key = rest.partition("/")
    if not key:
        raise fail(
            "no object key after the bucket; expected s3://BUCKET/KEY, "
            "e.g. s3://results/{jobID}.tar.gz"
        )
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    for name, value in options:
        params[_option_param(name, PUBLISHER_OPTIONS, "the S3 publisher", fail)] = value
    try:
        return PublisherSpec.from_dict({"Type": "s3", "Params": params})
    except SpecError as exc:
        raise fail("; ".join(error.message for error in exc.errors)) from None


def _from_src_dst(text: str, fail: _Fail) -> str:
    """Bacalhau's long form ``src=URI,dst=/path[,opt=…]`` as ``URI:/path[,opt=…]``."""
    if not isinstance(text, str) or not text.strip().startswith("src="):
        return text
    source, target, rest = "", "", []
    for part in text.strip().split(","):
        name, _, value = part.strip().partition("=")
        if name == "src":
            source = value
        elif name == "dst":
            target = value
        else:
            rest.append(part)
    if not source:
        raise fail("src= names no source")
    return ",".join([f"{source}:{target}" if target else source, *rest])


def _split_options(text: str, fail: _Fail) -> tuple[str, list[tuple[str, str]]]:
    """``LOCATION,opt=k=v,opt=k2=v2`` → ``(LOCATION, [(k, v), (k2, v2)])``."""
    if not isinstance(text, str):
        raise fail(f"expected a string, got {type(text).__name__}")
    location, *parts = text.strip().split(",")
    options: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in parts:
        part = part.strip()
        prefix, _, assignment = part.partition("=")
        name, equals, value = assignment.partition("=")
        if prefix != "opt" or not name or not equals:
            # A comma can only start an option; anything else is a typo we must not swallow.
            raise fail(f"{part!r} is not an option; options are written opt=KEY=VALUE")
        if not value:
            raise fail(f"option {name!r} has no value; write opt={name}=VALUE")
        if name.lower() in seen:
            raise fail(f"option {name!r} is given twice")
        seen.add(name.lower())
        options.append((name, value))
    return location.strip(), options


def _split_target(location: str) -> tuple[str, str]:
    """Split ``SOURCE:TARGET`` at the last ``:/`` that is not a scheme's ``://``."""
    scheme_end = location.find("://")
    search_from = scheme_end + 3 if scheme_end != -1 else 0
    index = location.rfind(":/", search_from)
    while index != -1 and location.startswith("//", index + 1):
        index = location.rfind(":/", search_from, index)
    if index == -1:
        return location, DEFAULT_INPUT_TARGET
    return location[:index], location[index + 1 :]


def _option_param(name: str, allowed: dict[str, str], what: str, fail: _Fail) -> str:
    for option, param in allowed.items():
        if option.lower() == name.lower():
            return param
    close = difflib.get_close_matches(name.lower(), [option.lower() for option in allowed], n=1)
    hint = ""
    if close:
        hint = f" (did you mean {next(o for o in allowed if o.lower() == close[0])!r}?)"
    raise fail(f"unknown option {name!r}{hint} for {what}; allowed options: {', '.join(allowed)}")
