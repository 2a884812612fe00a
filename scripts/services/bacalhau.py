"""Bacalhau's own CLI, the reference client the compatibility tests drive bacnode with."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from .gobuild import _find_checked, _go_build_module, _install_checked

# --------------------------------------------------------------------------------------------
# Bacalhau's own CLI, the reference client the compatibility tests drive bacnode with

BACALHAU_VERSION = "1.9.3"
BACALHAU_MODULE = "github.com/bacalhau-project/bacalhau"
#: Where ``scripts/setup.sh`` installs the ``bacalhau`` binary; ``$BACNODE_BACALHAU`` overrides.
BACALHAU_PATH = f"/usr/local/lib/bacnode/bacalhau-v{BACALHAU_VERSION}/bacalhau"
BACALHAU_ENV = "BACNODE_BACALHAU"
#: Without these the CLI checks for updates and sends analytics over the internet.
BACALHAU_OFFLINE_ENV = {
    "BACALHAU_UPDATE_CHECKER_ENDPOINT": "http://127.0.0.1:9/",
    "BACALHAU_UPDATECONFIG_INTERVAL": "0",
    "BACALHAU_DISABLEANALYTICS": "true",
}


def bacalhau_path() -> Path:
    """Where the ``bacalhau`` binary is expected: ``$BACNODE_BACALHAU``, else the default."""
    return Path(os.environ.get(BACALHAU_ENV) or BACALHAU_PATH)


def bacalhau_env(home: Path | str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for any ``bacalhau`` command: offline, its repo and config in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACALHAU_")}
    env.update(BACALHAU_OFFLINE_ENV)
    env["HOME"] = str(home)
    env["BACALHAU_DIR"] = str(Path(home) / ".bacalhau")
    env.update(extra or {})
    return env


def bacalhau_version(binary: Path | str) -> str | None:
    """The client version ``binary`` reports (without the leading v), or None."""
    with tempfile.TemporaryDirectory(prefix="bacalhau-home-") as home:
        try:
            done = subprocess.run(
                [str(binary), "version", "--client", "--output", "json"],
                capture_output=True, text=True, timeout=60, env=bacalhau_env(home),
                stdin=subprocess.DEVNULL,
            )
            # The first run of a new repo prints migration notes before the JSON.
            last_line = done.stdout.strip().splitlines()[-1]
            reported = json.loads(last_line)["clientVersion"]["GitVersion"]
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError,
                IndexError):
            return None
    return str(reported).removeprefix("v")


def find_bacalhau() -> Path:
    """The Bacalhau CLI, checked to be :data:`BACALHAU_VERSION`; ServiceError if not."""
    hint = "run `bash scripts/setup.sh` (its bacalhau step builds it from the Go module proxy)"
    return _find_checked(bacalhau_path(), "bacalhau", BACALHAU_VERSION, bacalhau_version, hint)


def install_bacalhau(path: Path | str | None = None) -> bool:
    """Build Bacalhau :data:`BACALHAU_VERSION` into ``path`` unless it is already there
    (about 7 minutes on 2 cores); returns whether it built."""
    target = Path(path) if path is not None else bacalhau_path()
    if target.is_file() and bacalhau_version(target) == BACALHAU_VERSION:
        return False
    # As Bacalhau's Makefile stamps its releases: without it the binary says v0.0.0-xxxxxxx.
    ldflags = f"-X {BACALHAU_MODULE}/pkg/version.GITVERSION=v{BACALHAU_VERSION}"
    _go_build_module(BACALHAU_MODULE, BACALHAU_VERSION, ".", target,
                     env=dict(os.environ), ldflags=ldflags)
    _install_checked(target, "bacalhau", BACALHAU_VERSION, bacalhau_version)
    return True
