"""The ``bacnode`` command.

It sits on every job's latency path, so it imports nothing heavy at start-up:
never libp2p, docker or boto3, and subcommand modules only when they run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

import protocol

from .client import ApiClient, ApiError
from .render import output_options, render, show


class _Commands(click.Group):
    """The top-level commands; the job and IPFS ones are defined in their own modules and
    imported only when one of them runs (or help lists them), so that ``bacnode version``
    pays for neither, and a job command not for the IPFS one (its tar streaming)."""

    _loaded: frozenset[str] = frozenset()

    def _load(self, *modules: str) -> None:
        for name in modules:
            if name not in self._loaded:
                self._loaded |= {name}
                if name == "ipfs":
                    from . import ipfs

                    ipfs.register(self)
                else:
                    from . import jobs

                    jobs.register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load("ipfs" if cmd_name == "ipfs" else "jobs")
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load("jobs", "ipfs")
        return super().list_commands(ctx)


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-host", envvar="BACNODE_API_HOST", help="daemon API host [default: 127.0.0.1]")
@click.option("--api-port", envvar="BACNODE_API_PORT", type=int,
              help="daemon API port [default: 1234]")
@click.pass_context
def cli(ctx: click.Context, api_host: str | None, api_port: int | None) -> None:
    """bacnode: run Docker jobs on a peer-to-peer network and get verifiable results."""
    ctx.obj = {"api_host": api_host, "api_port": api_port}


def client_from(ctx: click.Context) -> ApiClient:
    return ApiClient(ctx.obj["api_host"], ctx.obj["api_port"])


def call_api(ctx: click.Context, path: str) -> Any:
    """GET ``path``; an unreachable daemon or an error answer ends the command in one line."""
    try:
        return client_from(ctx).get(path)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Run a bacnode daemon (see 'bacnode serve --help')."""
    # The daemon lives in node/, which the CLI must not import; hand over the process.
    os.execv(sys.executable, [sys.executable, "-m", "node", "serve", *args])


@cli.command("id")
@click.pass_context
def id_(ctx: click.Context) -> None:
    """Print the daemon's peer ID and the addresses it listens on."""
    info = call_api(ctx, "/api/v1/agent/node")
    click.echo(info["NodeID"])
    for address in info["Addresses"]:
        click.echo(f"  {address}")


@cli.group()
def node() -> None:
    """Nodes of the network."""


@node.command("list")
@output_options
@click.option("--labels", "selector", help="only nodes whose labels match, e.g. zone=b")
@click.option("--wide", is_flag=True,
              help="also this daemon's record of each compute node: agreed, outvoted, "
                   "withheld, failed, timed out (score)")
@click.pass_context
def node_list(ctx: click.Context, output: str, hide_header: bool, no_style: bool,
              selector: str | None, wide: bool) -> None:
    """Every node this daemon has heard from, CONNECTED or DISCONNECTED."""
    from urllib.parse import urlencode

    from .progress import human_size

    query = f"?{urlencode({'labels': selector})}" if selector else ""
    nodes = call_api(ctx, f"/api/v1/orchestrator/nodes{query}")["Nodes"]
    rows = []
    for state in nodes:
        info = state["Info"]
        compute = info.get("ComputeNodeInfo") or {}
        free = compute.get("AvailableCapacity") or {}
        rows.append([
            info["NodeID"],
            info["NodeType"],
            state["Connection"],
            ",".join(f"{k}={v}" for k, v in sorted(info["Labels"].items())),
            f"{free.get('CPU', 0):g} CPU / {human_size(free.get('Memory', 0))}"
            if free else "-",
            _engines(compute),
        ])
        if wide:
            record = state.get("Reputation")
            rows[-1].append(
                f"{record['Agreements']}/{record['Disagreements']}/{record['Withheld']}/"
                f"{record['Failures']}/{record['Timeouts']} ({record['Score']:+d})"
                if record else "-")
    headers = ["ID", "TYPE", "STATUS", "LABELS", "FREE", "ENGINES"]
    if wide:
        headers.append("REPUTATION (A/D/W/F/T)")
    show(nodes, output, headers, rows, hide_header=hide_header)


def _engines(compute: dict) -> str:
    """The engines, each one that cannot run anything now with why."""
    unavailable = compute.get("UnavailableEngines") or {}
    return ",".join(f"{engine} (unavailable: {unavailable[engine]})" if engine in unavailable
                    else engine for engine in compute.get("ExecutionEngines", [])) or "-"


@node.command("describe")
@click.argument("node_id")
@click.option("--output", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True)
@click.pass_context
def node_describe(ctx: click.Context, node_id: str, output: str) -> None:
    """One node (by ID or unique prefix): its info, capacity and connection."""
    click.echo(render(call_api(ctx, f"/api/v1/orchestrator/nodes/{node_id}")["Node"], output))


@cli.group()
def agent() -> None:
    """The daemon this CLI talks to."""


@agent.command("alive")
@click.pass_context
def agent_alive(ctx: click.Context) -> None:
    """Whether the daemon answers."""
    click.echo(f"Status: {call_api(ctx, '/api/v1/agent/alive')['Status']}")


def _agent_document(name: str, path: str, key: str | None, summary: str) -> None:
    """``bacnode agent NAME``: the daemon's document at ``path`` (its ``key``), as YAML/JSON."""

    @agent.command(name, help=summary)
    @click.option("--output", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True)
    @click.pass_context
    def show_document(ctx: click.Context, output: str) -> None:
        document = call_api(ctx, path)
        click.echo(render(document[key] if key else document, output))


_agent_document("node", "/api/v1/agent/node", None, "The daemon's own node info.")
_agent_document("version", "/api/v1/agent/version", None, "The daemon's version.")
_agent_document("config", "/api/v1/agent/config", "config", "The daemon's effective settings.")


@cli.group("swarm-key")
def swarm_key() -> None:
    """Pre-shared keys for private networks."""


@swarm_key.command("generate")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False), default="swarm.key",
              show_default=True, help="file to write (mode 0600)")
def swarm_key_generate(path: str) -> None:
    """Write a new swarm key; give it to every node with --swarm-key FILE."""
    import secrets

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; remove it or choose another -o") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"/key/swarm/psk/1.0.0/\n/base16/\n{secrets.token_hex(32)}\n")
    click.echo(f"wrote {path}; start every node of the network with --swarm-key {path}")


@cli.command()
@click.option("--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True)
@click.option("--client", "client_only", is_flag=True,
              help="this CLI's version only; do not ask the daemon")
@click.pass_context
def version(ctx: click.Context, output: str, client_only: bool) -> None:
    """bacnode's version, protocol, Python and libp2p, and the daemon's version."""
    info: dict[str, Any] = {
        "Version": protocol.__version__,
        "Protocol": protocol.PROTOCOL_NAME,
        "Python": ".".join(map(str, sys.version_info[:3])),
        "Libp2p": "",
    }
    if not client_only:
        try:
            server = ApiClient(ctx.obj["api_host"], ctx.obj["api_port"], timeout=3)
            answer = server.get("/api/v1/agent/version")
            info["Server"] = answer.get("GitVersion", "?")
            # The libp2p the daemon runs, which is what matters; asking the package
            # metadata here costs a fifth of the command's start-up.
            info["Libp2p"] = answer.get("Libp2p", "")
        except ApiError:
            info["Server"] = "no daemon answers"
    info["Libp2p"] = info["Libp2p"] or _package_version("libp2p")
    if output != "text":
        click.echo(render(info, output))
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
