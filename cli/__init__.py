"""The ``bacnode`` command (see cli/main.py).

The console script enters here, with only the standard library imported, so that a dependency
missing from the installation is reported in one line (see protocol.dependencies).
"""

from __future__ import annotations

import sys


def main() -> None:
    from protocol.dependencies import missing_dependency_message

    try:
        from .main import main as run

        run()
    except ModuleNotFoundError as exc:
        message = missing_dependency_message(exc, "bacnode")
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(1)
