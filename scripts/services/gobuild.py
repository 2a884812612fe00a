"""Building a Go program from the Go module proxy, and installing it checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .common import ServiceError


def _find_checked(path: Path, name: str, expected: str,
                  version_of: Callable[[Path], str | None], hint: str) -> Path:
    """``path`` if it runs and reports version ``expected``; ServiceError saying why not."""
    if not path.is_file():
        raise ServiceError(f"{name} not found at {path}: {hint}")
    version = version_of(path)
    if version != expected:
        found = "does not run" if version is None else f"is version {version}"
        raise ServiceError(f"{name} at {path} {found}, not {expected}: {hint}")
    return path


def _find_go() -> str | None:
    """Locate the ``go`` tool (the official tarball's ``/usr/local/go/bin`` is not always on
    PATH)."""
    found = shutil.which("go")
    if found:
        return found
    for candidate in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _go_build_module(module: str, version: str, package: str, target: Path, *,
                     env: dict[str, str], ldflags: str = "", goflags: str = "") -> None:
    """``go build`` ``package`` of Go module ``module@version`` into ``target``.

    The source comes from the Go module proxy (``go mod download``); ``go install
    module@version`` is not used since such releases have replace directives that it refuses.
    Workspaces are off: Bacalhau's go.work names directories its module zip lacks. The binary
    is written beside ``target`` and renamed into place by the caller once checked, so an
    interrupted build never leaves a broken one (see :func:`_partial`). ``goflags`` adds to
    ``GOFLAGS`` (``-mod=mod`` for a module whose zip keeps only ``vendor/modules.txt``).
    """
    go = _find_go()
    if go is None:
        raise ServiceError(
            f"go not found: {module} {version} is built from source and needs Go >= 1.26 "
            "(install the go.dev tarball into /usr/local/go)"
        )
    env = {**env, "GOTOOLCHAIN": "local", "GOFLAGS": f"-buildvcs=false {goflags}".strip(),
           "GOWORK": "off"}
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@v{version}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # outside any module: no go.mod may interfere
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    try:
        source = json.loads(download.stdout)["Dir"]
    except (ValueError, KeyError, TypeError):
        source = None
    if download.returncode != 0 or not source:
        raise ServiceError(
            f"go mod download {module}@v{version} failed "
            f"(exit {download.returncode}):\n{download.stdout[-2000:]}{download.stderr[-2000:]}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(_partial(target)), package],
        capture_output=True,
        text=True,
        env=env,
        cwd=source,
        stdin=subprocess.DEVNULL,
        timeout=3600,
    )
    if build.returncode != 0:
        _partial(target).unlink(missing_ok=True)
        raise ServiceError(
            f"building {module} in {source} failed (exit {build.returncode}):\n"
            f"{build.stdout[-2000:]}{build.stderr[-4000:]}"
        )


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def _install_checked(target: Path, name: str, expected: str,
                     version_of: Callable[[Path], str | None]) -> None:
    """Move a just-built binary into place if it reports ``expected``; ServiceError if not."""
    partial = _partial(target)
    version = version_of(partial)
    if version != expected:
        partial.unlink(missing_ok=True)
        raise ServiceError(f"the {name} just built reports version {version!r}, not {expected}")
    partial.replace(target)
