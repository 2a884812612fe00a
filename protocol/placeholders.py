"""Placeholders in S3 publisher keys, as Bacalhau has them: ``results/{jobID}-{date}.tar.gz``.

Exactly five placeholders exist: ``{jobID}``, ``{executionID}``, ``{nodeID}``,
``{date}`` (UTC, ``YYYYMMDD``) and ``{time}`` (UTC, ``HHMMSS``). Names are
case-sensitive. There is no escape for a literal brace: every ``{`` opens a
placeholder, so a key with stray braces is refused rather than published under a
name the user did not mean.
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime

from .errors import LocalProtocolError

__all__ = [
    "PLACEHOLDERS",
    "check_key_template",
    "find_unknown_placeholders",
    "key_fits_template",
    "render_key",
]

#: The placeholder names, in the order error messages list them.
PLACEHOLDERS: tuple[str, ...] = ("jobID", "executionID", "nodeID", "date", "time")

_KNOWN_TEXT = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)


def _tokens(template: str) -> list[tuple[int, str, bool]]:
    """Split into ``(position, text, is_placeholder)``; raise on unbalanced braces."""
    tokens: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(template):
        opening = template.find("{", i)
        closing = template.find("}", i)
        if closing != -1 and (opening == -1 or closing < opening):
            raise _unbalanced(template, f"'}}' at position {closing} has no matching '{{'")
        if opening == -1:
            tokens.append((i, template[i:], False))
            break
        if opening > i:
            tokens.append((i, template[i:opening], False))
        end = template.find("}", opening + 1)
        nested = template.find("{", opening + 1)
        if end == -1 or (nested != -1 and nested < end):
            raise _unbalanced(template, f"'{{' at position {opening} is not closed")
        tokens.append((opening, template[opening + 1 : end], True))
        i = end + 1
    return tokens


def _unbalanced(template: str, what: str) -> LocalProtocolError:
    return LocalProtocolError(
        f"invalid key template {template!r}: {what}; placeholders are written "
        f"{{name}} and literal braces are not allowed; known placeholders: {_KNOWN_TEXT}"
    )


def find_unknown_placeholders(template: str) -> list[str]:
    """Names inside braces that are not placeholders, in order, each once.

    Raises ``LocalProtocolError`` if the braces are unbalanced.
    """
    unknown: list[str] = []
    for _, text, is_placeholder in _tokens(template):
        if is_placeholder and text not in PLACEHOLDERS and text not in unknown:
            unknown.append(text)
    return unknown


def check_key_template(template: str) -> None:
    """Raise ``LocalProtocolError`` naming any unknown placeholder or unbalanced brace."""
    unknown = find_unknown_placeholders(template)
    if not unknown:
        return
    described = []
    for name in unknown:
        hint = _suggest(name)
        described.append(f"{{{name}}}" + (f" (did you mean {{{hint}}}?)" if hint else ""))
    noun = "placeholder" if len(unknown) == 1 else "placeholders"
    raise LocalProtocolError(
        f"invalid key template {template!r}: unknown {noun} {', '.join(described)}; "
        f"known placeholders: {_KNOWN_TEXT}"
    )


def _suggest(name: str) -> str | None:
    for known in PLACEHOLDERS:
        if known.lower() == name.lower():
            return known
    close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
    return close[0] if close else None


def render_key(
    template: str, *, job_id: str, execution_id: str, node_id: str, now: datetime
) -> str:
    """Fill the placeholders in ``template``.

    ``now`` is converted to UTC; a naive ``now`` is taken to be UTC already. Raises
    ``LocalProtocolError`` as ``check_key_template`` does.
    """
    check_key_template(template)
    utc = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    values = {
        "jobID": job_id,
        "executionID": execution_id,
        "nodeID": node_id,
        # Formatted by hand: strftime("%Y") does not pad years before 1000 on glibc.
        "date": f"{utc.year:04d}{utc.month:02d}{utc.day:02d}",
        "time": f"{utc.hour:02d}{utc.minute:02d}{utc.second:02d}",
    }
    return "".join(values[text] if is_ph else text for _, text, is_ph in _tokens(template))


#: Archive suffixes the S3 publisher adds to a compressed result's key when it has none.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def key_fits_template(
    key: str, template: str, *, job_id: str, execution_id: str, node_id: str, compressed: bool
) -> bool:
    """Whether ``render_key(template, ...)`` could have given ``key`` at some time: what a
    requester checks before it signs anything for a key a compute node names. ``{date}``
    and ``{time}`` match any digits of their length; a compressed result may carry the
    archive suffix the publisher adds."""
    try:
        tokens = _tokens(template)
    except LocalProtocolError:
        return False
    exact = {"jobID": job_id, "executionID": execution_id, "nodeID": node_id}
    digits = {"date": r"\d{8}", "time": r"\d{6}"}
    pattern = "".join(
        (re.escape(exact[text]) if text in exact else digits.get(text, "(?!)"))
        if is_placeholder else re.escape(text)
        for _, text, is_placeholder in tokens)
    if compressed and not template.endswith(ARCHIVE_SUFFIXES):
        pattern += r"(\.tar\.gz)?"
    return re.fullmatch(pattern, key) is not None
