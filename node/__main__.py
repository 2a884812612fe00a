"""``python -m node serve [flags]``: what ``bacnode serve`` runs.

Only the standard library is imported before the guard, so that a dependency missing from the
installation is reported in one line (see protocol.dependencies), not as a traceback.
"""

from __future__ import annotations

import sys

from protocol.dependencies import missing_dependency_message


def main() -> None:
    try:
        from .serve import main as serve_main

        serve_main(prog_name="bacnode")
    except (ModuleNotFoundError, BaseExceptionGroup) as exc:
        message = missing_dependency_message(exc, "bacnode serve")
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
