"""The bacnode/1 message types, as small frozen dataclasses named as nouns.

Each has a wire ``TYPE``, ``to_body()`` (a plain map for the envelope) and
``from_body()``, which checks every field's type and meaning and raises only
``MalformedMessage``. ``decode_message`` maps a verified envelope to its message.
"""

from __future__ import annotations

import base64
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import codec
from .cid import Cid, IpfsFormatError
from .envelope import MAX_BODY_BYTES, Envelope, EnvelopeVerifier, seal
from .errors import MalformedMessage, SenderMismatch, SpecError, UnknownMessageType
from .identity import NodeKey, is_peer_id

if TYPE_CHECKING:
    from .jobspec import Job

JOB_ID_RE = re.compile(r"^j-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EXECUTION_ID_RE = re.compile(
    r"^e-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
STORAGE_SOURCES = ("IPFS", "S3", "Local", "Noop")
#: Characters of stdout/stderr carried in an execution update.
MAX_OUTPUT_TAIL = 64 * 1024

M = TypeVar("M", bound="Message")


#: Checks one field's value and returns it in the dataclass's form; ``path`` names the
#: field in errors.
Check = Callable[[Any, str], Any]


def _keep(value: Any, path: str) -> Any:
    return value


def _exact(kind: type) -> Check:
    def check(value: Any, path: str) -> Any:
        # bool is an int subclass; an exact type check keeps True from passing as 1.
        if type(value) is not kind:
            raise MalformedMessage(f"{path} must be {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _tuple_of(item_type: Any) -> Check:
    check_item = _checker(item_type)
    plain = item_type if item_type in _PLAIN_TYPES else None

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise MalformedMessage(f"{path} must be a list, got {type(value).__name__}")
        if plain is not None and all(type(item) is plain for item in value):
            return tuple(value)
        return tuple(check_item(item, f"{path}[{i}]") for i, item in enumerate(value))

    return check


def _map_of(key_type: Any, value_type: Any) -> Check:
    check_key = _checker(key_type)
    check_value = _checker(value_type)
    plain_keys = key_type is str
    plain_values = value_type is Any or value_type is str

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise MalformedMessage(f"{path} must be a map, got {type(value).__name__}")
        if plain_keys and plain_values and all(
                type(k) is str and (value_type is Any or type(v) is str)
                for k, v in value.items()):
            return dict(value)
        return {
            check_key(k, f"{path} key"): check_value(v, f"{path}.{k}") for k, v in value.items()
        }

    return check


def _optional(check_inner: Check) -> Check:
    def check(value: Any, path: str) -> Any:
        return None if value is None else check_inner(value, path)

    return check


def _record(record_type: type[Record]) -> Check:
    def check(value: Any, path: str) -> Any:
        return record_type._from_map(value, path)

    return check


_PLAIN_TYPES = (str, int, bool, bytes)


def _checker(annotation: Any) -> Check:
    """The check for a field annotation, worked out once per field rather than per value:
    every gossiped message goes through these, and reading the annotation again for each
    value was the larger part of decoding one."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        (inner,) = [option for option in options if option is not type(None)]
        return _optional(_checker(inner)) if type(None) in options else _checker(inner)
    if annotation is Any:
        return _keep
    if annotation in _PLAIN_TYPES:
        return _exact(annotation)
    if origin is tuple:
        return _tuple_of(typing.get_args(annotation)[0])
    if origin in (dict, Mapping, typing.Mapping):
        return _map_of(*typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return _record(annotation)
    raise TypeError(f"unsupported annotation {annotation!r}")  # programming error


def _to_wire(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_body()
    if isinstance(value, tuple):
        return [_to_wire(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _to_wire(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class _Layout:
    """What decoding and encoding a record needs to know of its class, worked out once."""

    names: tuple[str, ...]
    checks: tuple[tuple[str, Check], ...]
    declared: frozenset[str]
    #: The fields it cannot do without (a field with a default was added later, and older
    #: nodes do not send it).
    required: frozenset[str]


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type) -> _Layout:
    known = _LAYOUTS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        names = tuple(f.name for f in fields(cls))
        known = _Layout(
            names=names,
            checks=tuple((name, _checker(hints[name])) for name in names),
            declared=frozenset(names),
            required=frozenset(f.name for f in fields(cls)
                               if f.default is MISSING and f.default_factory is MISSING),
        )
        _LAYOUTS[cls] = known
    return known


class Record:
    """Shared machinery for messages and the records nested in them."""

    def to_body(self) -> dict[str, Any]:
        return {name: _to_wire(getattr(self, name)) for name in _layout(type(self)).names}

    @classmethod
    def _from_map(cls, data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            raise MalformedMessage(f"{path} must be a map, got {type(data).__name__}")
        layout = _layout(cls)
        keys = data.keys()
        if not layout.declared.issuperset(keys):
            unknown = sorted(set(keys) - layout.declared)
            raise MalformedMessage(f"{path}: unexpected field(s) {', '.join(map(str, unknown))}")
        if not layout.required.issubset(keys):
            missing = sorted(layout.required - set(keys))
            raise MalformedMessage(f"{path}: missing field(s) {', '.join(missing)}")
        values = {
            name: check(data[name], f"{path}.{name}")
            for name, check in layout.checks if name in data
        }
        record = cls(**values)
        record._validate(path)
        return record

    def _validate(self, path: str) -> None:
        """Checks beyond types; raise ``MalformedMessage``."""


class Message(Record):
    TYPE: ClassVar[str]

    @classmethod
    def from_body(cls: type[M], body: Mapping[str, Any]) -> M:
        return cls._from_map(body, cls.TYPE)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MalformedMessage(message)


def _check_job_id(value: str, path: str) -> None:
    _require(bool(JOB_ID_RE.match(value)), f"{path}.job_id {value!r:.80} is not a j-<uuid4> ID")


def _check_execution_id(value: str, path: str) -> None:
    _require(
        bool(EXECUTION_ID_RE.match(value)),
        f"{path}.execution_id {value!r:.80} is not an e-<uuid4> ID",
    )


def _check_peer(value: str, path: str) -> None:
    _require(is_peer_id(value), f"{path} {value!r:.80} is not an Ed25519 peer ID")


@dataclass(frozen=True)
class Capacity(Record):
    """Resources in integer units: millicores, bytes, bytes, GPUs."""

    cpu_milli: int = 0
    memory: int = 0
    disk: int = 0
    gpu: int = 0

    def _validate(self, path: str) -> None:
        for name in _layout(Capacity).names:
            _require(getattr(self, name) >= 0, f"{path}.{name} must not be negative")

    def fits_in(self, other: Capacity) -> bool:
        # Spelled out: a requester checks every node it knows for each job it places.
        return (self.cpu_milli <= other.cpu_milli and self.memory <= other.memory
                and self.disk <= other.disk and self.gpu <= other.gpu)


#: How many job announcements a requester may send, straight or gossiped: this many a
#: second, after a first burst of ANNOUNCEMENT_BURST. A requester keeps to it (its core
#: opens no faster); peers refuse, and score down, an origin that goes well beyond it
#: (node.mesh). As many jobs a second as one requester is to place (20 a second cut no-op
#: throughput to 20). The burst is one second's worth: a batch of 500 submitted at once is
#: announced over 4 s, none lost, and a spammer gets little before peers cut it off (they
#: take what it sends within twice the burst: 500 let a flood of 10,000 hand a node 1,500
#: jobs to consider first).
ANNOUNCEMENTS_PER_SECOND = 100
ANNOUNCEMENT_BURST = 100
#: Of those, how many may be open to any node: this many a second, after a burst of
#: OPEN_ANNOUNCEMENT_BURST. A requester asks the candidates it picked straight, which costs
#: only them; it gossips an announcement to the whole network only while it knows too few
#: nodes (just after a start) or a circle wider than MAX_CANDIDATES, and every node then
#: reads, checks, considers and relays it. So gossip takes far fewer from one origin: a
#: spammer flooding the jobs topic got 300-500 announcements into each node it reached
#: under the shared allowance, all to be checked and bid on while honest jobs waited.
OPEN_ANNOUNCEMENTS_PER_SECOND = 10
OPEN_ANNOUNCEMENT_BURST = 10

#: Most nodes an announcement names; a wider circle is an open announcement.
MAX_CANDIDATES = 256
#: The largest job spec, encoded, that an announcement carries: a message body's limit less
#: room for the announcement's other fields and ``MAX_CANDIDATES`` peer IDs.
MAX_JOB_BYTES = MAX_BODY_BYTES - 32 * 1024


def job_too_big(job: Mapping[str, Any]) -> str | None:
    """Why the job spec ``job`` cannot be announced, or None when it can."""
    size = len(codec.encode(job))
    if size <= MAX_JOB_BYTES:
        return None
    return (f"the job spec is {size // 1024} KiB encoded and a job announcement carries at "
            f"most {MAX_JOB_BYTES // 1024} KiB: put data in inputs (S3, IPFS or a URL), not "
            "in the spec")


@dataclass(frozen=True)
class JobAnnouncement(Message):
    """A requester offers a job to the mesh; ``job`` is the validated spec map."""

    TYPE: ClassVar[str] = "job.announce"
    job_id: str
    requester: str
    job: Mapping[str, Any]
    bid_deadline_ms: int
    #: The nodes asked to bid (the nearest to the job by XOR distance that fit); others
    #: stay quiet. Empty: every node that fits may bid.
    candidates: tuple[str, ...] = ()

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_peer(self.requester, f"{path}.requester")
        if len(self.candidates) > MAX_CANDIDATES:
            raise MalformedMessage(f"{path}.candidates: {len(self.candidates)} nodes named, "
                                   f"at most {MAX_CANDIDATES}")
        for i, candidate in enumerate(self.candidates):
            _check_peer(candidate, f"{path}.candidates[{i}]")
        from .jobspec import Job

        try:
            job = Job.from_dict(self.job)
        except SpecError as exc:
            raise MalformedMessage(f"{path}.job: {exc}") from None
        # Parsed once, here, where every received announcement is checked; the compute
        # side takes the typed job from ``spec``.
        object.__setattr__(self, "_spec", job)

    @classmethod
    def of_job(cls, job: Job, *, requester: str, bid_deadline_ms: int,
               candidates: tuple[str, ...] = ()) -> JobAnnouncement:
        """An announcement of ``job`` that carries it typed as well: the requester's own
        compute side takes it as it is, without parsing the map back (90 µs a job)."""
        announcement = cls(job_id=job.id or "", requester=requester, job=job.to_dict(),
                           bid_deadline_ms=bid_deadline_ms, candidates=candidates)
        object.__setattr__(announcement, "_spec", job)
        return announcement

    @property
    def spec(self) -> Job:
        """The announced job, typed (parsed when the message was checked, else now)."""
        from .jobspec import Job as JobSpec

        spec: JobSpec | None = getattr(self, "_spec", None)
        if spec is None:
            spec = JobSpec.from_dict(self.job)
            object.__setattr__(self, "_spec", spec)
        return spec


@dataclass(frozen=True)
class Bid(Message):
    """A compute node's answer to an announcement; ``accept`` False is a decline."""

    TYPE: ClassVar[str] = "bid"
    job_id: str
    execution_id: str
    node_id: str
    accept: bool
    reason: str
    #: What the node has free, and the executions holding a slot there; an accepting bid
    #: counts the slot it takes for this job (a requester relies on it to decide before
    #: every bid is in: ``protocol.scheduling.best_possible_rank``).
    free: Capacity
    running_executions: int
    #: A decline for now, not for good: every slot is taken. Ask again later.
    busy: bool = False

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        _require(self.running_executions >= 0, f"{path}.running_executions must not be negative")


@dataclass(frozen=True)
class BidDecision(Message):
    """The requester's answer to a bid."""

    TYPE: ClassVar[str] = "bid.decision"
    job_id: str
    execution_id: str
    node_id: str
    accepted: bool
    reason: str
    #: When the execution must have ended (the requester's Unix ms, fixed when it accepted
    #: the bid; 0: no limit). Staging, the container and the requester's watchdog all
    #: count to this one deadline.
    deadline_ms: int = 0

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        _require(self.deadline_ms >= 0, f"{path}.deadline_ms must not be negative")


@dataclass(frozen=True)
class ExecutionUpdate(Message):
    """A compute node reports an execution's new state."""

    TYPE: ClassVar[str] = "execution.update"
    job_id: str
    execution_id: str
    node_id: str
    state: str
    message: str
    exit_code: int | None = None
    #: Tails of the container's output (whole files stay with the results).
    stdout: str = ""
    stderr: str = ""

    def _validate(self, path: str) -> None:
        from .states import ExecutionState

        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        allowed = [s.value for s in ExecutionState]
        _require(self.state in allowed, f"{path}.state {self.state!r:.40} is not one of {allowed}")
        for name in ("stdout", "stderr"):
            _require(len(getattr(self, name)) <= MAX_OUTPUT_TAIL, f"{path}.{name} is too long")


@dataclass(frozen=True)
class NodeInfo(Message):
    """A node's heartbeat: who it is, where to reach it, what it can run."""

    TYPE: ClassVar[str] = "node.info"
    node_id: str
    version: str
    addresses: tuple[str, ...]
    labels: Mapping[str, str]
    roles: tuple[str, ...]
    engines: tuple[str, ...]
    storages: tuple[str, ...]
    publishers: tuple[str, ...]
    total: Capacity
    free: Capacity
    running_executions: int
    seq: int
    #: When this run of the node started (Unix ms). A compute node never resumes executions
    #: after a restart, so one placed before this is lost.
    started_ms: int
    #: Engines in ``engines`` that cannot run anything now, and why (dockerd went away).
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def _validate(self, path: str) -> None:
        _check_peer(self.node_id, f"{path}.node_id")
        for role in self.roles:
            _require(role in ("requester", "compute"), f"{path}.roles: unknown role {role!r:.40}")
        for address in self.addresses:
            _require(address.startswith("/"), f"{path}.addresses: {address!r:.80} is no multiaddr")
        _require(self.free.fits_in(self.total), f"{path}.free exceeds {path}.total")
        _require(self.seq >= 0 and self.running_executions >= 0 and self.started_ms >= 0,
                 f"{path}: negative counter")


@dataclass(frozen=True)
class ManifestEntry(Record):
    """One published file: its path in the results layout, size and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str

    def _validate(self, path: str) -> None:
        _require(is_safe_relative_path(self.path), f"{path}.path {self.path!r:.80} is not safe")
        _require(self.size >= 0, f"{path}.size must not be negative")
        _require(bool(SHA256_HEX_RE.match(self.sha256)), f"{path}.sha256 is not 64 hex digits")


def is_safe_relative_path(path: str) -> bool:
    """A relative POSIX path that cannot leave the directory it is joined to."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _is_cid_v0(text: str) -> bool:
    try:
        return Cid.parse(text).version == 0
    except IpfsFormatError:
        return False


def check_published_location(location: Mapping[str, Any], path: str) -> None:
    """Validate the ``PublishedResults`` map, e.g. ``{"StorageSource": "IPFS", "CID": …}``."""
    source = location.get("StorageSource")
    _require(source in STORAGE_SOURCES, f"{path}.StorageSource must be one of {STORAGE_SOURCES}")
    if source == "IPFS":
        cid = location.get("CID")
        _require(isinstance(cid, str) and _is_cid_v0(cid), f"{path}.CID is not a CIDv0")
    elif source == "S3":
        s3 = location.get("S3")
        if not isinstance(s3, Mapping):
            raise MalformedMessage(f"{path}.S3 must be a map")
        for key in ("Bucket", "Key", "Checksum", "VersionID", "Region", "Endpoint"):
            _require(isinstance(s3.get(key, ""), str), f"{path}.S3.{key} must be a string")
        _require(bool(s3.get("Bucket")), f"{path}.S3.Bucket is required")
        checksum = s3.get("Checksum", "")
        if checksum:
            try:
                raw = base64.b64decode(checksum, validate=True)
            except ValueError:
                raw = b""
            _require(len(raw) == 32, f"{path}.S3.Checksum is not a base64 SHA-256")
    _require(isinstance(location.get("Name", ""), str), f"{path}.Name must be a string")


def published_spec_config(location: Mapping[str, Any]) -> dict[str, Any]:
    """A ``PublishedResults`` map as Bacalhau v1's ``PublishedResult`` (a ``SpecConfig``):
    ``{"Type": "ipfs", "Params": {"CID": …, "Name": …}}``; S3 details become the params,
    with the checksum under Bacalhau's name, ``ChecksumSHA256``."""
    source = str(location.get("StorageSource", ""))
    params = {k: v for k, v in location.items() if k not in ("StorageSource", "S3")}
    s3 = location.get("S3")
    if isinstance(s3, Mapping):
        params.update({("ChecksumSHA256" if k == "Checksum" else k): v for k, v in s3.items()})
    return {"Type": source.lower(), "Params": params}


def published_location(spec_config: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`published_spec_config`."""
    names = {name.lower(): name for name in STORAGE_SOURCES}
    source = names.get(str(spec_config.get("Type", "")).lower(), str(spec_config.get("Type")))
    params = dict(spec_config.get("Params") or {})
    location: dict[str, Any] = {"StorageSource": source}
    if source == "S3":
        name = params.pop("Name", None)
        location["S3"] = {("Checksum" if k == "ChecksumSHA256" else k): v
                          for k, v in params.items()}
        if name is not None:
            location["Name"] = name
    else:
        location.update(params)
    return location


@dataclass(frozen=True)
class ResultRecord(Message):
    """What a compute node published for an execution, signed by that node."""

    TYPE: ClassVar[str] = "result"
    job_id: str
    execution_id: str
    node_id: str
    exit_code: int
    stdout_sha256: str
    stderr_sha256: str
    outputs: tuple[ManifestEntry, ...]
    published: Mapping[str, Any]
    completed_at_ms: int

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        for name in ("stdout_sha256", "stderr_sha256"):
            _require(bool(SHA256_HEX_RE.match(getattr(self, name))), f"{path}.{name} is not hex")
        seen: set[str] = set()
        for entry in self.outputs:
            _require(entry.path not in seen, f"{path}.outputs lists {entry.path!r:.80} twice")
            seen.add(entry.path)
        check_published_location(self.published, f"{path}.published")


@dataclass(frozen=True)
class ResultCommitment(Message):
    """A compute node commits to its result of a verified job without showing it:
    ``seal`` is ``protocol.verification.commitment_seal`` of its node, the execution and
    the result's digest. Point to point, to the job's requester."""

    TYPE: ClassVar[str] = "result.commit"
    job_id: str
    execution_id: str
    node_id: str
    seal: str

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        _require(bool(SHA256_HEX_RE.match(self.seal)), f"{path}.seal is not 64 hex digits")


@dataclass(frozen=True)
class RevealRequest(Message):
    """The requester asks a node that committed for its result record: every execution
    the job needs has committed. Point to point."""

    TYPE: ClassVar[str] = "result.reveal"
    job_id: str
    execution_id: str
    node_id: str
    requester: str

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_execution_id(self.execution_id, path)
        _check_peer(self.node_id, f"{path}.node_id")
        _check_peer(self.requester, f"{path}.requester")


@dataclass(frozen=True)
class VerdictGroup(Record):
    """The executions that revealed one digest, and their nodes (in the same order), so
    that whoever trusts the verdict can tell who agreed."""

    digest: str
    executions: tuple[str, ...]
    nodes: tuple[str, ...] = ()

    def _validate(self, path: str) -> None:
        _require(bool(SHA256_HEX_RE.match(self.digest)), f"{path}.digest is not 64 hex digits")
        for i, execution_id in enumerate(self.executions):
            _check_execution_id(execution_id, f"{path}.executions[{i}]")
        _require(not self.nodes or len(self.nodes) == len(self.executions),
                 f"{path}.nodes must name one node per execution")
        for i, node in enumerate(self.nodes):
            _check_peer(node, f"{path}.nodes[{i}]")


@dataclass(frozen=True)
class Verdict(Message):
    """A requester's signed verdict on a verified job, gossiped on the results topic:
    ``Verified`` when a group of at least ``confidence`` executions agreed (``accepted``
    is its digest), else ``NoConsensus``; every group is listed."""

    TYPE: ClassVar[str] = "verdict"
    job_id: str
    requester: str
    state: str
    confidence: int
    groups: tuple[VerdictGroup, ...]
    accepted: str = ""
    decided_at_ms: int = 0

    def _validate(self, path: str) -> None:
        _check_job_id(self.job_id, path)
        _check_peer(self.requester, f"{path}.requester")
        _require(self.state in ("Verified", "NoConsensus"),
                 f"{path}.state {self.state!r:.40} is not Verified or NoConsensus")
        digests = {group.digest for group in self.groups}
        _require((self.state == "Verified") == bool(self.accepted) and (
            not self.accepted or self.accepted in digests),
            f"{path}: a Verified verdict names its accepted digest among its groups, "
            "and only it")


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (JobAnnouncement, Bid, BidDecision, ExecutionUpdate, NodeInfo, ResultRecord,
                ResultCommitment, RevealRequest, Verdict)
}


#: The field naming the node a message speaks for; it must be the envelope's signer.
_AUTHOR_FIELD = {
    JobAnnouncement: "requester",
    Bid: "node_id",
    ExecutionUpdate: "node_id",
    NodeInfo: "node_id",
    ResultRecord: "node_id",
    ResultCommitment: "node_id",
    RevealRequest: "requester",
    Verdict: "requester",
}


def decode_message(envelope: Envelope) -> Message:
    """The message inside a verified envelope; raises a ``RemoteProtocolError``.

    A message that speaks for a node (a bid, a heartbeat, a result…) must be signed
    by that node: a record relayed under another key is a ``SenderMismatch``.
    """
    try:
        cls = MESSAGE_TYPES[envelope.type]
    except KeyError:
        raise UnknownMessageType(f"unknown message type {envelope.type!r:.60}") from None
    message = cls.from_body(envelope.body)
    author_field = _AUTHOR_FIELD.get(cls)
    if author_field is not None and getattr(message, author_field) != envelope.sender:
        raise SenderMismatch(
            f"{cls.TYPE} for {getattr(message, author_field)} was signed by {envelope.sender}"
        )
    return message


def message_author(message: Message) -> str | None:
    """The node ``message`` speaks for, which must be its signer (None: anyone may sign)."""
    author_field = _AUTHOR_FIELD.get(type(message))
    return getattr(message, author_field) if author_field else None


def pack_message(message: Message) -> bytes:
    """``message`` without an envelope, to keep (e.g. until a peer acknowledges it) and
    seal afresh later: a sealed envelope goes stale after the timestamp window."""
    return codec.encode({"type": message.TYPE, "body": message.to_body()})


def unpack_message(data: bytes) -> Message:
    """The inverse of :func:`pack_message`; raises ``MalformedMessage``."""
    packed = codec.decode(data)
    if not isinstance(packed, Mapping) or packed.get("type") not in MESSAGE_TYPES:
        raise MalformedMessage("not a packed message")
    body = packed.get("body")
    if not isinstance(body, Mapping):
        raise MalformedMessage("a packed message without a body")
    return MESSAGE_TYPES[packed["type"]].from_body(body)


def seal_message(key: NodeKey, message: Message, *, now_ms: int) -> bytes:
    """Sign ``message`` with ``key``; the wire bytes for gossip or a stream."""
    return seal(key, message.TYPE, message.to_body(), now_ms=now_ms)


def open_message(
    verifier: EnvelopeVerifier,
    data: bytes,
    *,
    now_ms: int,
    expected_sender: str | None = None,
) -> tuple[Envelope, Message]:
    """Verify wire bytes and decode the message in them; raises ``RemoteProtocolError``."""
    envelope = verifier.verify(data, now_ms=now_ms, expected_sender=expected_sender)
    return envelope, decode_message(envelope)
