"""Canonical msgpack: one byte string per value, so that signatures are reproducible.

Rules: maps have string keys and are written in sorted key order; tuples and lists
are arrays; only ``None``, ``bool``, ``int``, ``str``, ``bytes``, lists and maps are
allowed. Floats are refused outright: two encoders can disagree on them, and every
quantity in the protocol has an integer form (millicores, bytes, milliseconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from .errors import LocalProtocolError, MalformedMessage

#: Nesting deeper than this is refused on both sides; no message needs more.
MAX_DEPTH = 32


#: Types a canonical encoding carries as they are (exact types: subclasses take the long way).
_AS_THEY_ARE = frozenset({str, bytes, bool, type(None)})


def _canonical(value: Any, depth: int = 0) -> Any:
    # The exact built-in types first, without a call per string: every message sent is
    # made canonical, and the general checks below were most of sealing one.
    if depth > MAX_DEPTH:
        raise LocalProtocolError(f"value nests deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind in _AS_THEY_ARE:
        return value
    inner = depth + 1
    if kind is dict and all(type(key) is str for key in value):
        if inner > MAX_DEPTH:
            return {key: _canonical(value[key], inner) for key in sorted(value)}
        return {key: item if type(item) in _AS_THEY_ARE else _canonical(item, inner)
                for key in sorted(value) for item in (value[key],)}
    if kind is list or kind is tuple:
        if inner > MAX_DEPTH:
            return [_canonical(item, inner) for item in value]
        return [item if type(item) in _AS_THEY_ARE else _canonical(item, inner)
                for item in value]
    return _canonical_in_general(value, depth)


def _canonical_in_general(value: Any, depth: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            raise LocalProtocolError(f"integer {value} does not fit in 64 bits")
        return value
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"map key {key!r} is not a string")
            items.append((key, _canonical(item, depth + 1)))
        items.sort(key=lambda pair: pair[0])
        return dict(items)
    if isinstance(value, (list, tuple)):
        return [_canonical(item, depth + 1) for item in value]
    raise LocalProtocolError(
        f"cannot encode {type(value).__name__} canonically; use int, str, bytes, bool, "
        "None, list or map"
    )


def canonical(value: Any) -> Any:
    """``value`` with every map in canonical (sorted) key order, tuples as lists, and every
    type checked: :func:`encode_in_order` of it is :func:`encode` of ``value``. Raises
    ``LocalProtocolError`` for what cannot be encoded canonically."""
    return _canonical(value)


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically; raises ``LocalProtocolError`` for unencodable values."""
    return msgpack.packb(_canonical(value), use_bin_type=True)


def encode_in_order(value: Any) -> bytes:
    """``value`` encoded with its maps in the order they are in, in one C call.

    For a value whose maps :func:`decode_noting_order` found in canonical order (and maps
    built around it in that order), this is its canonical encoding; it checks nothing, as
    decoding did that already.
    """
    return msgpack.packb(value, use_bin_type=True)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack extension type {code} is not allowed")


def decode_noting_order(data: bytes, *, max_size: int = 1 << 20) -> tuple[Any, bool]:
    """Decode one msgpack value, and say whether its maps came in canonical (sorted) key
    order, in which case ``encode_in_order`` gives back its canonical encoding; raises only
    ``MalformedMessage`` on bad bytes.

    Floats and extension types are refused, as are map keys that are not strings
    and anything after the first value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise MalformedMessage(f"{len(data)} bytes is more than the {max_size}-byte limit")
    try:
        value = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
        )
    except MalformedMessage:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage; one out
        raise MalformedMessage(f"not valid msgpack: {type(exc).__name__}: {exc}") from None
    in_order = _check_decoded(value, 0)
    return value, in_order


def decode(data: bytes, *, max_size: int = 1 << 20) -> Any:
    """Decode one msgpack value, as :func:`decode_noting_order` does."""
    return decode_noting_order(data, max_size=max_size)[0]


def _check_decoded(value: Any, depth: int) -> bool:
    """Refuse what a canonical encoding cannot hold; return whether every map is in
    canonical key order."""
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        raise MalformedMessage("floats are not allowed in bacnode messages")
    in_order = True
    if isinstance(value, dict):
        previous = None
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedMessage(f"map key {key!r} is not a string")
            if previous is not None and key < previous:
                in_order = False
            previous = key
            in_order = _check_decoded(item, depth + 1) and in_order
    elif isinstance(value, list):
        for item in value:
            in_order = _check_decoded(item, depth + 1) and in_order
    return in_order
