"""The transfer progress line: what it says, and when it is shown at all."""

from __future__ import annotations

import io

from cli.progress import MIN_BYTES, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_says_bytes_rate_and_time_left_on_a_terminal() -> None:
    screen = Terminal()
    with Progress("fetching x", 40_000_000, stream=screen) as progress:
        progress.advance(10_000_000)
        line = progress.line()
    assert line.startswith("fetching x: 10.0 MB / 40.0 MB (25%)  ")
    assert "B/s  ETA " in line
    assert screen.getvalue().endswith("\n")
    assert "40.0 MB / 40.0 MB" not in screen.getvalue()  # it reports what was done, no more


def test_progress_is_hidden_off_a_terminal_and_for_small_transfers() -> None:
    piped = io.StringIO()
    with Progress("big", 10 * MIN_BYTES, stream=piped) as progress:
        progress.advance(10 * MIN_BYTES)
    assert piped.getvalue() == ""
    screen = Terminal()
    with Progress("small", MIN_BYTES - 1, stream=screen) as progress:
        progress.advance(MIN_BYTES - 1)
    assert screen.getvalue() == ""
