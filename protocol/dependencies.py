"""The one line a user sees when a dependency of bacnode is not installed.

Both entry points (the ``bacnode`` CLI and the daemon, ``bacnode serve``) start with only the
standard library imported and turn a ``ModuleNotFoundError`` for a third-party module into this
line instead of a traceback. It lives here because ``protocol`` is the one package both may
import; it only formats text.
"""

from __future__ import annotations

import sys

#: Import names whose PyPI distribution is named differently.
_DISTRIBUTIONS = {"yaml": "PyYAML", "google": "protobuf"}
#: bacnode's own top-level packages: a missing one of these is a bug, never an install problem.
_OWN_PACKAGES = frozenset({"protocol", "node", "cli"})


def missing_dependency_message(exc: BaseException, program: str) -> str | None:
    """The one-line error when ``exc`` (or any exception of an exception group) is a missing
    third-party module; None otherwise."""
    for leaf in _leaves(exc):
        if not isinstance(leaf, ModuleNotFoundError) or not leaf.name:
            continue
        top = leaf.name.partition(".")[0]
        if top in _OWN_PACKAGES or top in sys.stdlib_module_names:
            continue
        distribution = _DISTRIBUTIONS.get(top, top)
        return (
            f"{program}: error: the Python module '{top}' (package {distribution}) is not "
            f"installed for {sys.executable}; install bacnode with its dependencies: "
            f"'bash scripts/setup.sh' in the checkout, then run .venv/bin/bacnode"
        )
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
