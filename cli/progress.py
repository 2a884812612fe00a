"""A one-line progress report on stderr for transfers: bytes done, rate and time left.

Shown only on a terminal and only for transfers of at least ``MIN_BYTES`` (a small one is
over before it could be read); redrawn at most ten times a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_BYTES = 4 * 1024 * 1024
_REDRAW_SECONDS = 0.1


def human_size(n: float) -> str:
    """A byte count as people read it: ``23.5 GB``, ``812.0 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``with Progress("fetching X", total) as progress: progress.advance(n)``."""

    def __init__(self, label: str, total: int | None, *, stream: TextIO | None = None,
                 force: bool = False) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = force or (self.stream.isatty() and (total or 0) >= MIN_BYTES)
        self._started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._draw(final=True)
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._drawn >= _REDRAW_SECONDS:
            self._draw()

    def line(self) -> str:
        """What the report says now."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate else 0.0
            return (f"{self.label}: {human_size(self.done)} / {human_size(self.total)} "
                    f"({100 * self.done / self.total:.0f}%)  {human_size(rate)}/s  "
                    f"ETA {_duration(max(left, 0))}")
        return f"{self.label}: {human_size(self.done)}  {human_size(rate)}/s"

    def _draw(self, *, final: bool = False) -> None:
        self._drawn = time.monotonic()
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()
