"""protocol/ and the decision core type-check (mypy.ini), as the style guide asks of the pure
layers: a wrong type there is a wrong message or a wrong decision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_nothing_in_protocol_and_the_core() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success" in result.stdout
