"""The ``serve`` command: flags and config in, a running daemon out (see node/__main__.py)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .config import ConfigError, load_config
from .logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """bacnode daemon."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="YAML config file "
              "[default: DATA_DIR/config.yaml]")
@click.option("--data-dir", help="where the key, state and results live [default: ~/.bacnode]")
@click.option("--listen", multiple=True, help="libp2p multiaddr to listen on, repeatable "
              "[default: /ip4/0.0.0.0/tcp/1235]")
@click.option("--peer", "peers", multiple=True, help="bootstrap peer multiaddr with /p2p/<id> "
              "(/ip4, /ip6, or /dns4, /dns6 names resolved at each dial), "
              "repeatable; 'none' for a first node")
@click.option("--network", help="join a network named in the config file's networks: its "
              "bootstrap peers are added to --peer")
@click.option("--announce-addr", "announce_addrs", multiple=True,
              help="multiaddr to advertise instead of the listen addresses (a public IP, a "
                   "port forward, a DNS name), repeatable")
@click.option("--announce-private/--no-announce-private", default=None,
              help="advertise loopback and private addresses on a public network too "
                   "[default: no]")
@click.option("--api-host", help="local API host [default: 127.0.0.1]")
@click.option("--api-port", type=int, help="local API port [default: 1234]")
@click.option("--labels", help="node labels, k=v,k2=v2")
@click.option("--orchestrator", is_flag=True, default=None, help="accept jobs from users")
@click.option("--compute", is_flag=True, default=None, help="run jobs")
@click.option("--limit-cpu", help="CPU this node offers, e.g. 2 or 1500m")
@click.option("--limit-memory", help="memory this node offers, e.g. 4Gi")
@click.option("--limit-disk", help="disk this node offers, e.g. 100Gi")
@click.option("--max-jobs", type=int,
              help="executions at once, the rest wait (0: no limit) "
                   "[default: 1.6 per CPU, as Bacalhau]")
@click.option("--default-job-cpu",
              help="CPU a job that asks for none runs with, e.g. 1 or 500m [default: 500m]")
@click.option("--default-job-memory",
              help="memory a job that asks for none runs with, e.g. 1Gi [default: 512Mb]")
@click.option("--default-execution-timeout", type=int,
              help="seconds a job that sets no timeout may run, 0 for no limit [default: 1800]")
@click.option("--mdns/--no-mdns", default=None, help="find peers on the LAN by mDNS [default: on]")
@click.option("--swarm-key", type=click.Path(dir_okay=False),
              help="pre-shared key file of a private network")
@click.option("--heartbeat-seconds", type=float,
              help="node info interval, seconds (longer past 30 nodes: N / 30 times this, N "
                   "rounded up to a multiple of 10)"
                   " [default: 15]")
@click.option("--missed-heartbeats", type=int,
              help="a node is DISCONNECTED after this many missed heartbeats, 2 or more "
              "[default: 2]")
@click.option("--allow-networked-jobs/--deny-networked-jobs", default=None,
              help="run jobs that ask for network access [default: deny]")
@click.option("--allowed-images", help="only run these images, glob patterns, comma-separated")
@click.option("--accept-jobs-from",
              help="take jobs only from these requesters, peer IDs, comma-separated")
@click.option("--reject-jobs-from",
              help="never take jobs from these requesters, peer IDs, comma-separated")
@click.option("--min-reputation", type=int,
              help="do not ask compute nodes scoring below this (a lie costs 5) [default: -4]")
@click.option("--trusted-requesters",
              help="requesters whose verdicts count in this node's tallies, peer IDs, "
                   "comma-separated")
@click.option("--max-jobs-per-requester", type=int,
              help="executions one requester may hold here at once (0: no limit) [default: 0]")
@click.option("--announcements-per-origin", type=float,
              help="job announcements a second taken from one requester, after a burst "
                   "of 2 s worth (of those gossiped to every node, at most 10 a second "
                   "after 20, or this when lower); beyond, they are dropped, and a "
                   "requester that sends them itself loses score [default: 100]")
@click.option("--relay-service/--no-relay-service", default=None,
              help="relay connections for nodes behind NAT (circuit relay v2, limited): "
                   "for a node others can dial [default: off]")
@click.option("--peer-exchange", type=int,
              help="while no bootstrap peer answers, connections to keep by dialling nodes "
                   "learned from their heartbeats (0: bootstrap peers only) [default: 3]")
@click.option("--ipfs-peer", "ipfs_peers", multiple=True,
              help="IPFS peer multiaddr with /p2p/<id> to fetch blocks from, repeatable")
@click.option("--ipfs-retention-hours", type=float,
              help="keep published IPFS results this long, hours [default: 168]")
@click.option("--results-retention-hours", type=float,
              help="keep results published with the local publisher this long, hours "
                   "[default: 168]")
@click.option("--log-level",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="[default: WARNING]")
@click.option("--log-format", type=click.Choice(["text", "json"], case_sensitive=False),
              help="json: one object a line on stderr, with job, execution and peer IDs, "
                   "and the API's access log [default: text]")
def serve(orchestrator: bool | None, compute: bool | None, **flags: Any) -> None:
    """Run a bacnode daemon: join the mesh and serve the local API.

    SIGHUP reloads labels and limits from the config file."""
    given = {name: value for name, value in flags.items() if value not in (None, ())}
    # Naming one role means "only this"; naming neither keeps the default (both).
    if orchestrator or compute:
        given["orchestrator"] = bool(orchestrator)
        given["compute"] = bool(compute)
    try:
        config = load_config(given)
        configure_logging(config.log_level, config.log_format)
        _run(config, given)
    except ConfigError as exc:
        _fail(str(exc))


def _run(config: Any, flags: dict[str, Any]) -> None:
    import trio

    from .api import ApiBindError
    from .daemon import DataDirError, run_daemon
    from .keys import KeyFileError
    from .mesh import MeshError
    from .store import StoreError

    try:
        trio.run(run_daemon, config, lambda: load_config(flags))
    except (KeyFileError, MeshError, StoreError, ApiBindError, DataDirError) as exc:
        _fail(str(exc))
    except BaseExceptionGroup as group:
        known = group.subgroup(
            (KeyFileError, MeshError, StoreError, ApiBindError, DataDirError, OSError)
        )
        if known is None:
            raise
        first = _leaf(known)
        if isinstance(first, OSError) and "address already in use" in str(first).lower():
            _fail(f"{first}; is another bacnode running? choose a free --api-port / --listen")
        _fail(str(first))
    except OSError as exc:
        if "address already in use" in str(exc).lower():
            _fail(f"{exc}; is another bacnode running? choose a free --api-port / --listen")
        _fail(f"{exc}")


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _fail(message: str) -> None:
    click.echo(f"bacnode serve: error: {message}", err=True)
    sys.exit(1)

