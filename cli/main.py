"""The ``bacnode`` command.

It sits on every job's latency path, so it imports nothing heavy at start-up:
never libp2p, docker or boto3, and subcommand modules only when they run.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import click

import protocol


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """bacnode: run Docker jobs on a peer-to-peer network and get verifiable results."""


@cli.command()
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def version(output: str) -> None:
    """Print bacnode's version, its protocol version, and the Python and libp2p versions."""
    info = {
        "Version": protocol.__version__,
        "Protocol": protocol.PROTOCOL_NAME,
        "Python": platform.python_version(),
        "Libp2p": _package_version("libp2p"),
    }
    if output == "json":
        import json

        click.echo(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        click.echo(f"{key + ':':<{width + 1}} {value}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
