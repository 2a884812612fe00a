"""Node configuration: flags over the config file over ``BACNODE_*`` variables over defaults.

Every setting has one name, used as the YAML key (``api_port``), the flag
(``--api-port``) and the environment variable (``BACNODE_API_PORT``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from protocol.errors import LocalProtocolError
from protocol.identity import is_peer_id
from protocol.quantities import parse_bytes, parse_cpu
from protocol.selectors import parse_labels

from .addresses import host_of

DEFAULT_DATA_DIR = Path("~/.bacnode")
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/1235",)
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 1234


class ConfigError(Exception):
    """A setting is invalid; the message names the setting, where it came from, and the fix."""


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything


def default_max_jobs(cpus: int) -> int:
    """As many executions as Bacalhau runs at once of a job that asks for no CPU: it offers
    80 % of a node's CPUs and gives such a job 500m, so 3 on 2 CPUs, 12 on 8.

    More than one per CPU pays: a short container spends most of its life being created,
    started and removed by dockerd, so a third one in flight overlaps two that run.
    """
    return max(1, cpus * 8 // 5)


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    listen: tuple[str, ...] = DEFAULT_LISTEN
    peers: tuple[str, ...] = ()
    #: A network by name: its bootstrap peers come from ``networks`` (added to ``peers``).
    network: str = ""
    #: Named networks and their bootstrap peers, for ``network`` (config file only):
    #: ``networks: {lab: [/ip4/10.0.0.2/tcp/1235/p2p/12D3KooW…]}``.
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The addresses heartbeats advertise, instead of where the node listens: what a port
    #: forward or a public IP makes reachable. Empty: the listen addresses (see
    #: node/addresses.py for which of them a public network gets).
    announce_addrs: tuple[str, ...] = ()
    #: Advertise loopback and private addresses on a public network too.
    announce_private: bool = False
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    #: What API requests must carry (``Authorization: Bearer``). Empty: none is needed on
    #: loopback; one is made and kept in the data dir when the API is reachable by more than
    #: this machine's user (see ``api_needs_key``). Set it in the config file or
    #: ``BACNODE_API_KEY``, not on the command line, where ``ps`` shows it.
    api_key: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    orchestrator: bool = True
    compute: bool = True
    limit_cpu: str = ""
    limit_memory: str = ""
    limit_disk: str = ""
    #: Executions that run at once; the rest wait their turn at the requester. 0: no limit.
    max_jobs: int = field(default_factory=lambda: default_max_jobs(os.cpu_count() or 1))
    #: Seconds an execution may run when its job sets no timeout (Bacalhau's JobDefaults);
    #: applied by the orchestrator when the job is submitted. 0: no limit.
    default_execution_timeout: int = 1800
    #: What a job that requests no CPU or memory runs with here (Bacalhau's JobDefaults).
    default_job_cpu: str = "500m"
    default_job_memory: str = "512Mb"
    mdns: bool = True
    swarm_key: Path | None = None
    #: As Bacalhau's. Changes in load are announced when they happen anyway, so this is
    #: liveness; every idle heartbeat is relayed to every node.
    heartbeat_seconds: float = 15.0
    #: A node is DISCONNECTED after this many heartbeats in a row are missed (30 s).
    missed_heartbeats: int = 2
    #: Jobs asking for network access (Network.Type Full) are declined unless this is on.
    allow_networked_jobs: bool = False
    #: Glob patterns of images this node runs (``busybox*,ghcr.io/org/*``); empty: any.
    allowed_images: tuple[str, ...] = ()
    #: Requesters (peer IDs) whose jobs this node takes; empty: any not rejected.
    accept_jobs_from: tuple[str, ...] = ()
    #: Requesters whose jobs this node never takes.
    reject_jobs_from: tuple[str, ...] = ()
    #: Executions one requester may hold here at once; 0: no limit beyond --max-jobs.
    max_jobs_per_requester: int = 0
    #: As a requester: compute nodes whose score (node.core.reputation) falls below this
    #: are not asked again.
    min_reputation: int = -4
    #: Requesters (peer IDs) whose gossiped verdicts count in this node's tallies too.
    trusted_requesters: tuple[str, ...] = ()
    #: Multiaddrs (with /p2p/<id>) of IPFS peers outside the mesh to fetch blocks from.
    ipfs_peers: tuple[str, ...] = ()
    #: How long blocks of published results and ``ipfs add`` stay after their pin, hours.
    ipfs_retention_hours: float = 168.0
    #: How long results kept on this node for the ``local`` publisher (and downloaded
    #: copies) stay, hours; results published elsewhere go once they are published.
    results_retention_hours: float = 168.0
    #: Job announcements a second this node takes from one requester (a burst of 2 s worth
    #: first); beyond, they are dropped, and a requester that sends them itself scores down.
    #: The default is what an honest requester keeps to
    #: (protocol.messages.ANNOUNCEMENTS_PER_SECOND).
    announcements_per_origin: float = 100.0
    #: When none of its bootstrap peers answers, the connections a node keeps by dialling
    #: nodes it learned of from their heartbeats (peer exchange). 0: bootstrap peers only.
    peer_exchange: int = 3
    #: Relay connections (circuit relay v2) for nodes behind NAT: for a public node.
    relay_service: bool = False
    #: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "WARNING"
    #: ``text`` (one line a record) or ``json`` (one object a line, with the job, execution
    #: and peer IDs wherever they apply, and the API's access log).
    log_format: str = "text"

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(
            role
            for role, enabled in (("requester", self.orchestrator), ("compute", self.compute))
            if enabled
        )

    @property
    def key_path(self) -> Path:
        return self.data_dir / "node.key"

    @property
    def api_key_path(self) -> Path:
        return self.data_dir / "api-key"

    @property
    def api_needs_key(self) -> bool:
        """Whether the API must ask for a key: it listens beyond loopback, or networked jobs
        run here, whose containers share the host's network and so reach its loopback."""
        return bool(self.api_key) or self.allow_networked_jobs or not _is_loopback(
            self.api_host)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "state.db"


_FIELDS = {f.name: f for f in fields(NodeConfig)}
_TUPLE_FIELDS = {"listen", "peers", "announce_addrs", "allowed_images", "ipfs_peers",
                 "accept_jobs_from", "reject_jobs_from", "trusted_requesters"}
_BOOL_FIELDS = {"orchestrator", "compute", "mdns", "allow_networked_jobs", "announce_private",
                "relay_service"}
#: Settings that are numbers: (lowest, highest, unit).
_FLOAT_RANGES = {"heartbeat_seconds": (0.05, 600, "s"),
                 "announcements_per_origin": (1, 100_000, "a second"),
                 "ipfs_retention_hours": (0, 24 * 365 * 10, "hours"),
                 "results_retention_hours": (0, 24 * 365 * 10, "hours")}
_CHOICES = {"log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_format": ("text", "json")}
#: The fewest heartbeats in a row a node may miss before it is DISCONNECTED: one may come
#: up to half an interval late while it moves to its turn (``membership.next_heartbeat_ms``).
MIN_MISSED_HEARTBEATS = 2
_INT_FIELDS = {"api_port", "max_jobs", "missed_heartbeats", "default_execution_timeout",
               "max_jobs_per_requester", "peer_exchange"}


def _as_bool(value: Any, name: str, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} from {origin}: {value!r} is not a boolean (use true or false)")


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name in _TUPLE_FIELDS:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        items = [str(item).strip() for item in items if str(item).strip()]
        if name == "peers" and [item.lower() for item in items] == ["none"]:
            return ()
        return tuple(items)
    if name in _BOOL_FIELDS:
        return _as_bool(value, name, origin)
    if name in _INT_FIELDS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} from {origin}: {value!r} is not a whole number") from None
        if number < 0 or (name == "api_port" and number > 65535):
            raise ConfigError(f"{name} from {origin}: {number} is out of range")
        if name == "missed_heartbeats" and number < MIN_MISSED_HEARTBEATS:
            raise ConfigError(f"{name} from {origin}: {number} is too few; at least "
                              f"{MIN_MISSED_HEARTBEATS} (nodes take turns to heartbeat, and "
                              "one may come up to half an interval late)")
        return number
    if name == "min_reputation":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} from {origin}: {value!r} is not a whole number") from None
    if name in _FLOAT_RANGES:
        low, high, unit = _FLOAT_RANGES[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} from {origin}: {value!r} is not a number") from None
        if not low <= number <= high:
            raise ConfigError(f"{name} from {origin}: {number:g} must be within "
                              f"{low:g}–{high:g} {unit}")
        return number
    if name == "networks":
        if not isinstance(value, Mapping):
            raise ConfigError(f"networks from {origin}: give a mapping of network name to its "
                              "bootstrap peers")
        return {str(network): _coerce("peers", peers, f"{origin} (networks.{network})")
                for network, peers in value.items()}
    if name == "labels":
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        try:
            return parse_labels(str(value)) if str(value).strip() else {}
        except LocalProtocolError as exc:
            raise ConfigError(f"labels from {origin}: {exc}") from None
    if name in _CHOICES:
        text = str(value).strip()
        chosen = text.upper() if name == "log_level" else text.lower()
        if chosen not in _CHOICES[name]:
            raise ConfigError(f"{name} from {origin}: {value!r} is not one of "
                              f"{', '.join(_CHOICES[name])}")
        return chosen
    if name in ("data_dir", "swarm_key"):
        return Path(str(value)).expanduser() if value not in (None, "") else None
    return str(value)


def _validate(config: NodeConfig) -> NodeConfig:
    for name, parser in (("limit_cpu", parse_cpu), ("limit_memory", parse_bytes),
                         ("limit_disk", lambda text: parse_bytes(text, what="disk")),
                         ("default_job_cpu", parse_cpu), ("default_job_memory", parse_bytes)):
        text = getattr(config, name)
        if text:
            try:
                parser(text)
            except LocalProtocolError as exc:
                raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
    for name in ("accept_jobs_from", "reject_jobs_from", "trusted_requesters"):
        for peer in getattr(config, name):
            if not is_peer_id(peer):
                raise ConfigError(f"--{name.replace('_', '-')}: {peer!r} is not a peer ID "
                                  "(12D3KooW… or Qm…, as `bacnode node list` shows them)")
    if not config.roles:
        raise ConfigError("a node must be an orchestrator, a compute node, or both")
    if not config.listen:
        raise ConfigError("--listen needs at least one multiaddr")
    for address in config.announce_addrs:
        host = host_of(address)
        if host is None or host[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") \
                or not host[2].startswith("/tcp/"):
            raise ConfigError(f"--announce-addr {address!r} is not a TCP multiaddr, e.g. "
                              "/ip4/203.0.113.7/tcp/1235 or /dns4/node.example.org/tcp/1235")
    return config


def load_config(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> NodeConfig:
    """Merge settings; ``flags`` holds only what the user gave on the command line.

    The config file is ``flags['config']``, else ``BACNODE_CONFIG``, else
    ``<data_dir>/config.yaml`` when it exists; an explicitly named file must exist.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in _FIELDS:
        env_name = f"BACNODE_{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], f"${env_name}")

    explicit = flags.get("config") or environ.get("BACNODE_CONFIG") or config_file
    data_dir = flags.get("data_dir") or values.get("data_dir") or DEFAULT_DATA_DIR
    path = Path(explicit).expanduser() if explicit else Path(data_dir).expanduser() / "config.yaml"
    try:
        found = bool(explicit) or path.exists()
    except OSError as exc:  # e.g. a data dir name too long, or not ours to read
        raise ConfigError(
            f"cannot use data dir {path.parent}: {exc.strerror}; choose another with --data-dir"
        ) from None
    if found:
        for name, value in _read_config_file(path).items():
            values[name] = _coerce(name, value, str(path))

    for name, value in flags.items():
        if name == "config" or value is None:
            continue
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    config = replace(NodeConfig(), **values)
    if config.network:
        if config.network not in config.networks:
            known = ", ".join(sorted(config.networks)) or "none"
            raise ConfigError(f"--network {config.network!r} is not in the config file's "
                              f"networks (known: {known}); add it under networks:")
        preset = tuple(p for p in config.networks[config.network] if p not in config.peers)
        config = replace(config, peers=(*preset, *config.peers))
    return _validate(replace(config, data_dir=Path(config.data_dir).expanduser()))


def _read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        # One line: PyYAML's own message spans several, with a caret drawing.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    normalised = {str(key).replace("-", "_"): value for key, value in document.items()}
    unknown = sorted(set(normalised) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_FIELDS))}"
        )
    return normalised
