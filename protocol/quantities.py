"""Resource quantities as users type them: CPU (``500m``, ``2``), bytes (``512Mi``, ``1Gb``), GPUs.

Every parser returns an exact integer (millicores, bytes, GPUs) or raises
``LocalProtocolError`` with a message that quotes the input and shows accepted forms.
Arithmetic is exact (``Fraction``) so that ``1.5Gi`` is exact; a value that does not
come to a whole number of millicores or bytes is refused rather than rounded, since a
silent rounding would make the scheduler see a different job than the user wrote.
Results are capped at ``MAX_QUANTITY`` so that they fit msgpack's 64-bit integers.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .errors import LocalProtocolError

__all__ = [
    "BINARY_UNITS",
    "DECIMAL_UNITS",
    "MAX_QUANTITY",
    "format_bytes",
    "format_cpu",
    "parse_bytes",
    "parse_cpu",
    "parse_gpu",
]

#: 1024-based units; case-sensitive (``Ki``, not ``ki``), as in Kubernetes.
BINARY_UNITS: dict[str, int] = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}
#: 1000-based units; matched case-insensitively (``10k``, ``1Gb``, ``1GB``), as Bacalhau does.
DECIMAL_UNITS: dict[str, int] = {
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
}

#: The largest value any parser returns: msgpack integers are at most 64-bit.
MAX_QUANTITY = 2**63 - 1

# Plain decimal notation only: exponents (1e3) and signs are refused on purpose.
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_CPU_RE = re.compile(rf"(?P<number>{_NUMBER})(?P<milli>m?)")
_BYTES_RE = re.compile(rf"(?P<number>{_NUMBER})\s*(?P<unit>[A-Za-z]*)")
_GPU_RE = re.compile(r"\d+")

_CPU_EXPECTED = (
    "expected a non-negative number of cores, or of millicores with an 'm' suffix, "
    "e.g. 0.5, 2 or 500m"
)
_BYTES_EXPECTED = (
    "expected a non-negative number with an optional unit (Ki, Mi, Gi, Ti, Pi or "
    "K, M, G, T, P, optionally followed by B), e.g. 512Mi or 1Gb"
)
_GPU_EXPECTED = "expected a non-negative whole number, e.g. 0, 1 or 2"


def parse_cpu(text: str) -> int:
    """Parse a CPU quantity into millicores: ``500m`` → 500, ``2`` → 2000, ``0.5`` → 500.

    Raises ``LocalProtocolError`` for empty, negative or malformed input and for
    anything finer than one millicore (``0.0005``, ``1.5m``).
    """
    match = _match(_CPU_RE, text, "invalid CPU quantity", _CPU_EXPECTED)
    number = Fraction(match["number"])
    millis = number if match["milli"] else number * 1000
    if millis.denominator != 1:
        raise LocalProtocolError(
            f"invalid CPU quantity {text!r}: finer than one millicore; use at most three "
            "decimal places of a core (e.g. 0.125) or whole millicores (e.g. 125m)"
        )
    return _bounded(int(millis), text, "invalid CPU quantity")


def parse_bytes(text: str, *, what: str = "memory") -> int:
    """Parse a byte quantity: ``512Mi``, ``1.5Gi``, ``1Gb``, ``1GB``, ``10k``, ``100``.

    ``what`` names the quantity in error messages ("memory", "disk"). Raises
    ``LocalProtocolError`` for empty, negative or malformed input, unknown units and
    values that are not a whole number of bytes (``0.5``).
    """
    prefix = f"invalid {what} quantity"
    match = _match(_BYTES_RE, text, prefix, _BYTES_EXPECTED)
    multiplier = _unit_multiplier(match["unit"])
    if multiplier is None:
        raise LocalProtocolError(
            f"{prefix} {text!r}: unknown unit {match['unit']!r}; {_BYTES_EXPECTED}"
        )
    value = Fraction(match["number"]) * multiplier
    if value.denominator != 1:
        raise LocalProtocolError(
            f"{prefix} {text!r}: not a whole number of bytes; write whole bytes or use a "
            "smaller unit, e.g. 1536 rather than 1.5001Ki"
        )
    return _bounded(int(value), text, prefix)


def parse_gpu(text: str) -> int:
    """Parse a GPU count, a non-negative whole number; raises ``LocalProtocolError``."""
    match = _match(_GPU_RE, text, "invalid GPU count", _GPU_EXPECTED)
    return _bounded(int(match[0]), text, "invalid GPU count")


def _match(pattern: re.Pattern[str], text: str, prefix: str, expected: str) -> re.Match[str]:
    if not isinstance(text, str):
        raise LocalProtocolError(f"{prefix} {text!r}: not a string; {expected}")
    stripped = text.strip()
    if not stripped:
        raise LocalProtocolError(f"{prefix} {text!r}: empty; {expected}")
    if stripped.startswith("-"):
        raise LocalProtocolError(f"{prefix} {text!r}: must not be negative; {expected}")
    match = pattern.fullmatch(stripped)
    if match is None:
        raise LocalProtocolError(f"{prefix} {text!r}: {expected}")
    return match


def _bounded(value: int, text: str, prefix: str) -> int:
    if value > MAX_QUANTITY:
        raise LocalProtocolError(f"{prefix} {text!r}: too large; the limit is {MAX_QUANTITY}")
    return value


def _unit_multiplier(unit: str) -> int | None:
    if unit in ("", "B", "b"):
        return 1
    # A trailing B/b ("KiB", "Gb") means bytes and changes nothing.
    core = unit[:-1] if len(unit) > 1 and unit[-1] in "Bb" else unit
    if core in BINARY_UNITS:
        return BINARY_UNITS[core]
    return DECIMAL_UNITS.get(core.upper()) if len(core) == 1 else None


def format_bytes(n: int) -> str:
    """Show a byte count exactly, in the unit that gives the smallest number (``512Mi``, ``10G``).

    The result always parses back to ``n`` with ``parse_bytes``; on a tie the binary
    unit wins. Raises ``ValueError`` for negative counts.
    """
    if n < 0:
        raise ValueError(f"byte count must not be negative, got {n}")
    if n == 0:
        return "0"
    # The exact form with the smallest number reads best: 10G rather than 9765625Ki.
    exact = [
        (n // size, suffix)
        for units in (BINARY_UNITS, DECIMAL_UNITS)
        for suffix, size in units.items()
        if n % size == 0
    ]
    if not exact:
        return str(n)
    number, suffix = min(exact, key=lambda pair: pair[0])
    return f"{number}{suffix}"


def format_cpu(millicores: int) -> str:
    """Show millicores as whole cores when exact (``2``), else in millicores (``1250m``).

    The result always parses back with ``parse_cpu``; raises ``ValueError`` if negative.
    """
    if millicores < 0:
        raise ValueError(f"millicores must not be negative, got {millicores}")
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"
