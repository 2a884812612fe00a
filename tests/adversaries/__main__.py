"""``python -m tests.adversaries ROLE serve [flags]``: ``bacnode serve`` as ROLE.

Roles:

- ``liar``: runs each job honestly, then changes one byte of its first non-empty output
  file before anything is hashed, so it commits to, reveals and signs (honestly, with its
  own key) a result that is wrong. Every liar changes the same byte the same way, so two
  liars on one job agree with each other: a colluding minority.
- ``withholder``: runs each job and commits to its result, then never reveals it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _lie_about_outputs() -> None:
    from node import compute

    honest = compute.Compute._stage_and_run

    async def lying(self: Any, execution: Any, staging_dir: Path, results_dir: Path) -> Any:
        result = await honest(self, execution, staging_dir, results_dir)
        for path in sorted((results_dir / "outputs").rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size:
                data = bytearray(path.read_bytes())
                data[0] ^= 0x01
                path.write_bytes(bytes(data))
                break
        return result

    compute.Compute._stage_and_run = lying  # type: ignore[method-assign]


def _never_reveal() -> None:
    from node import compute

    async def withhold(self: Any, request: Any, sender: str) -> None:
        return None

    compute.Compute.on_reveal_request = withhold  # type: ignore[method-assign]


ROLES = {"liar": _lie_about_outputs, "withholder": _never_reveal}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m tests.adversaries {{{','.join(ROLES)}}} serve [flags]")
    ROLES[sys.argv.pop(1)]()
    from node.__main__ import main as node_main

    node_main()


if __name__ == "__main__":
    main()
