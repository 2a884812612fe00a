"""The daemon's log: text for people, or one JSON object a line for log collectors.

JSON records carry the job, execution and peer IDs wherever they apply. Code that works
on one of them sets it once with ``log_context(...)``; trio tasks started from there
inherit it (each task runs in a copy of its parent's context), so every record a task
logs is tagged without passing IDs to each call. ``extra={"job_id": ...}`` on one call
works too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The IDs a record may carry, by their JSON key.
CONTEXT_KEYS = ("job_id", "execution_id", "peer_id")
_CONTEXT: dict[str, ContextVar[str]] = {key: ContextVar(key, default="")
                                        for key in CONTEXT_KEYS}
#: The API's access log (JSON mode only): one INFO record a request.
ACCESS_LOGGER = "bacnode.access"
#: Libraries whose INFO chatter drowns the daemon's own.
_NOISY = ("libp2p", "multiaddr", "hypercorn")


@contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Tag the records logged inside (and by tasks started inside) with these IDs."""
    tokens = [(_CONTEXT[key], _CONTEXT[key].set(value)) for key, value in ids.items() if value]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_log_context(**ids: str) -> None:
    """Tag the rest of the current task (a task's own copy of the context)."""
    for key, value in ids.items():
        if value:
            _CONTEXT[key].set(value)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "job_id"?, "execution_id"?, "peer_id"?,
    "exception"?}``; access records also carry the request's method, path, status,
    duration and client."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, "") or _CONTEXT[key].get()
            if value:
                entry[key] = value
        if record.name == ACCESS_LOGGER and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """What hypercorn's access-log atoms say about one request."""
    fields: dict[str, Any] = {"method": atoms.get("m"), "path": atoms.get("U"),
                              "client": atoms.get("h")}
    for key, atom, scale in (("status", "s", 1), ("duration_ms", "D", 1000)):
        value = str(atoms.get(atom, ""))
        if value.isdigit():  # "-" when there is none (a WebSocket's status)
            fields[key] = int(value) if scale == 1 else round(int(value) / scale, 3)
    return fields


def configure_logging(level: str, log_format: str) -> None:
    """The root handler on stderr in ``log_format``; libraries at WARNING or above."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    if not os.environ.get("LIBP2P_DEBUG"):
        # Importing py-libp2p cuts its loggers off from the root (no handler, no
        # propagation) unless LIBP2P_DEBUG asks for its own handlers: its warnings and
        # errors then went to Python's last resort, bare lines on stderr that broke a JSON
        # log. Imported here, before it can do that later, and joined back to the root.
        import libp2p  # noqa: F401

        libp2p_logger = logging.getLogger("libp2p")
        libp2p_logger.handlers.clear()
        libp2p_logger.propagate = True
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # What Python would print to stderr itself goes through the handler too, so that
    # every line of a JSON log stays one JSON object.
    logging.captureWarnings(True)
    sys.unraisablehook = _log_unraisable


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An exception Python could not raise (in a finaliser, say), logged, not printed."""
    exc_info = ((unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
                if unraisable.exc_value is not None else None)
    logging.getLogger("bacnode").warning(
        "%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object,
        exc_info=exc_info)
