"""The whole checkout is ruff clean (ruff.toml), so style drift fails CI like any other bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import under ``package``."""
    import ast

    found = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path.name, node.module))
    return found


def test_the_layers_import_only_what_the_design_allows() -> None:
    """DESIGN.md's layout: protocol/ imports no other layer, cli/ never the daemon, and
    nothing but tests/ imports tests/."""
    def offending(package: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(name, module) for name, module in _imports(package)
                if module.partition(".")[0] in forbidden]

    assert offending("protocol", ("node", "cli", "tests", "scripts", "bench")) == []
    assert offending("cli", ("node", "tests", "bench")) == []
    assert offending("node", ("cli", "tests", "bench")) == []
    assert offending("bench", ("tests",)) == []
    assert offending("scripts", ("tests",)) == []
