"""The job spec, shaped like Bacalhau's v1 job, with validation that reports every problem.

``Job.from_dict`` takes the decoded document (JSON here via ``parse_job_document``;
YAML is decoded by callers outside ``protocol/``) and either returns a normalised,
frozen ``Job`` or raises one ``SpecError`` listing every problem with its field path,
e.g. ``Tasks[0].Engine.Params.Image``. ``Job.to_dict`` gives the normalised,
Bacalhau-capitalised document, so that ``Job.from_dict(job.to_dict()) == job``.

Invariant: ``to_dict`` output holds only ``str``, ``int``, ``bool``, lists and maps
with string keys (no floats, no ``None``), so it encodes canonically with
``protocol.codec``. Quantities are therefore written as strings (``"500m"``,
``"512Mi"``) and timeouts as whole seconds.

Decisions where Bacalhau leaves room (see each constant's comment):

- Field names match case-insensitively, as Go's JSON decoder matches them for Bacalhau
  (``tasks``, ``engine``, ``resultPaths`` are read as ``Tasks``, ``Engine``,
  ``ResultPaths``); the same field given twice in different cases is an error. *Type names*
  are case-insensitive too (``S3``, ``Docker``, ``urldownload``) and are normalised.
- ``null`` means "absent", as Go's decoder treats it.
- ``inline`` inputs carry their bytes in ``Params.URL`` as a ``data:`` URL (as
  Bacalhau's inline storage does), at most ``MAX_INLINE_URL`` characters.
- ``Network.Type`` is ``None`` or ``Full``; Bacalhau's ``Host`` and ``Bridge`` are read as
  ``Full`` because how a networked container is wired (Docker host networking, here) is the
  node's choice, not the job's, and its ``Default`` as ``None``: no network unless asked.
  ``Domains`` is recorded but not enforced, and is refused with ``None``.
- Resources left at 0 mean "not requested" and are left out of ``to_dict``.

This module holds the spec's types and constants; ``spec_parser`` reads a document into
them and ``spec_values`` checks single values (both re-exported here where public).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .quantities import format_bytes, format_cpu
from .selectors import Constraint

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_TASK_NAME",
    "ENGINE_TYPES",
    "INPUT_SOURCE_TYPES",
    "JOB_ID_RE",
    "JOB_TYPES",
    "MAX_INLINE_URL",
    "NETWORK_TYPES",
    "PUBLISHER_TYPES",
    "EngineSpec",
    "InputSource",
    "Job",
    "NetworkSpec",
    "PublisherSpec",
    "Resources",
    "ResultPath",
    "Task",
    "Timeouts",
    "check_absolute_path",
    "check_bucket",
    "check_checksum_sha256",
    "check_cid",
    "check_data_url",
    "check_http_url",
    "check_image",
    "normalise_path",
    "parse_bool",
    "parse_job_document",
]

JOB_TYPES: tuple[str, ...] = ("batch",)
ENGINE_TYPES: tuple[str, ...] = ("docker", "noop")
INPUT_SOURCE_TYPES: tuple[str, ...] = ("s3", "ipfs", "urlDownload", "inline")
PUBLISHER_TYPES: tuple[str, ...] = ("ipfs", "s3", "local", "noop")
NETWORK_TYPES: tuple[str, ...] = ("None", "Full")
# Bacalhau's "Host" asks for host networking; here that wiring is a node setting.
_NETWORK_ALIASES = {"host": "Full", "bridge": "Full", "default": "None"}
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_NAME = "main"
#: A job's stored ID: ``j-`` and a lowercase UUID4, Bacalhau's form.
JOB_ID_RE = re.compile(r"j-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# msgpack integers are at most 64-bit.
_MAX_INT = 2**63 - 1

#: Most executions one job may ask for: each needs its own compute node.
MAX_COUNT = 100
#: Where a task's results are collected unless its ResultPaths say otherwise.
OUTPUTS_PATH = "/outputs"
#: Docker refuses a memory limit below this.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
#: Input targets that would hide or clash with what the container's system needs.
_SYSTEM_PATHS = frozenset({"/", "/etc", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib",
                           "/usr"})
_SYSTEM_TREES = ("/proc/", "/sys/", "/dev/")
# Parameters per type, in the order they are documented; the first are required.
_S3_SOURCE_PARAMS = ("Bucket", "Key", "Region", "Endpoint", "VersionID", "ChecksumSHA256", "Filter")
_SOURCE_PARAMS: dict[str, tuple[str, ...]] = {
    "s3": _S3_SOURCE_PARAMS,
    "ipfs": ("CID",),
    "urlDownload": ("URL",),
    "inline": ("URL",),
}
_S3_PUBLISHER_PARAMS = ("Bucket", "Key", "Compress", "Endpoint", "Region")


from .spec_values import (  # noqa: E402  (re-exported: the spec's value checks)
    MAX_INLINE_URL,
    check_absolute_path,
    check_bucket,
    check_checksum_sha256,
    check_cid,
    check_data_url,
    check_http_url,
    check_image,
    normalise_path,
    parse_bool,
)

# ---------------------------------------------------------------------------
# The spec's dataclasses. Build untrusted ones with ``from_dict``, which validates
# and normalises; direct construction trusts the caller.


@dataclass(frozen=True)
class EngineSpec:
    """How to run the task: a Docker image, its entrypoint, arguments and environment."""

    image: str
    entrypoint: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    environment_variables: tuple[str, ...] = ()
    working_directory: str = ""
    type: str = "docker"

    def to_dict(self) -> dict[str, Any]:
        """``{"Type": "docker", "Params": {"Image", "Entrypoint", ...}}``."""
        if self.type == "noop":
            return {"Type": "noop", "Params": {}}
        params: dict[str, Any] = {
            "Image": self.image,
            "Entrypoint": list(self.entrypoint),
            "Parameters": list(self.parameters),
            "EnvironmentVariables": list(self.environment_variables),
        }
        if self.working_directory:
            params["WorkingDirectory"] = self.working_directory
        return {"Type": self.type, "Params": params}


@dataclass(frozen=True)
class InputSource:
    """Data staged into the container before it runs, mounted at ``target``.

    ``params`` is in normalised form: Bacalhau's capitalised names, optional
    parameters left out when empty.
    """

    source_type: str
    params: dict[str, Any]
    target: str
    alias: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"Source": {"Type", "Params"}, "Target", "Alias"?}``."""
        out: dict[str, Any] = {
            "Source": {"Type": self.source_type, "Params": dict(self.params)},
            "Target": self.target,
        }
        if self.alias is not None:
            out["Alias"] = self.alias
        return out

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> InputSource:
        """Validate one ``InputSources`` entry; raises ``SpecError`` with paths under ``path``."""
        from .spec_parser import _Errors, _input_source

        errs = _Errors()
        source = _input_source(errs, data, path)
        errs.raise_if_any()
        return source


@dataclass(frozen=True)
class PublisherSpec:
    """Where results go: ``ipfs`` (default), ``s3``, ``local`` or ``noop``."""

    type: str = "ipfs"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"Type": "s3", "Params": {"Bucket", "Key", "Compress", ...}}``."""
        return {"Type": self.type, "Params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> PublisherSpec:
        """Validate a ``Publisher``; raises ``SpecError`` with paths under ``path``."""
        from .spec_parser import _Errors, _publisher

        errs = _Errors()
        publisher = _publisher(errs, data, path)
        errs.raise_if_any()
        return publisher


@dataclass(frozen=True)
class ResultPath:
    """A directory of the container published as results under ``name``."""

    name: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"Name": self.name, "Path": self.path}


@dataclass(frozen=True)
class Resources:
    """Requested resources in integer units; 0 means not requested."""

    cpu_milli: int = 0
    memory: int = 0
    disk: int = 0
    gpu: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Quantities as strings (``"500m"``, ``"512Mi"``), requested ones only."""
        out: dict[str, Any] = {}
        if self.cpu_milli:
            out["CPU"] = format_cpu(self.cpu_milli)
        if self.memory:
            out["Memory"] = format_bytes(self.memory)
        if self.disk:
            out["Disk"] = format_bytes(self.disk)
        if self.gpu:
            out["GPU"] = str(self.gpu)
        return out

    def or_defaults(self, defaults: Resources) -> Resources:
        """These resources, with a node's ``defaults`` for the CPU and memory not requested
        (Bacalhau's ``JobDefaults``): no container runs without limits."""
        return replace(self, cpu_milli=self.cpu_milli or defaults.cpu_milli,
                       memory=self.memory or defaults.memory)


@dataclass(frozen=True)
class NetworkSpec:
    """``None`` (no network) or ``Full``; ``domains`` is informational."""

    type: str = "None"
    domains: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"Type": self.type, "Domains": list(self.domains)}


@dataclass(frozen=True)
class Timeouts:
    """Seconds; 0 leaves the limit to the node. ``total_timeout`` is Bacalhau's
    ``TotalTimeout`` (what ``bacalhau docker run --timeout`` sets)."""

    execution_timeout: int = 0
    queue_timeout: int = 0
    total_timeout: int = 0

    @property
    def execution_limit(self) -> int:
        """How long one execution may take, seconds (0: no limit): the shorter of the
        execution and the total timeout, since an execution cannot outlast its job."""
        limits = [t for t in (self.execution_timeout, self.total_timeout) if t]
        return min(limits, default=0)

    def to_dict(self) -> dict[str, Any]:
        out = {"ExecutionTimeout": self.execution_timeout, "QueueTimeout": self.queue_timeout}
        if self.total_timeout:
            out["TotalTimeout"] = self.total_timeout
        return out


@dataclass(frozen=True)
class Task:
    """The one unit of work in a job."""

    engine: EngineSpec
    name: str = DEFAULT_TASK_NAME
    input_sources: tuple[InputSource, ...] = ()
    publisher: PublisherSpec = field(default_factory=PublisherSpec)
    result_paths: tuple[ResultPath, ...] = ()
    resources: Resources = field(default_factory=Resources)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Bacalhau's task ``Env``: variables set in the container, beside the engine's own.
    env: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "Name": self.name,
            "Engine": self.engine.to_dict(),
            "InputSources": [source.to_dict() for source in self.input_sources],
            "Publisher": self.publisher.to_dict(),
            "ResultPaths": [result.to_dict() for result in self.result_paths],
            "Resources": self.resources.to_dict(),
            "Network": self.network.to_dict(),
            "Timeouts": self.timeouts.to_dict(),
        }
        if self.env:
            out["Env"] = dict(self.env)
        if self.meta:
            out["Meta"] = dict(self.meta)
        return out


VERIFICATION_MODES = ("Deterministic",)


@dataclass(frozen=True)
class Verification:
    """``Verification: {Mode: Deterministic, Confidence: K}``: the job's ``Count``
    executions must agree, K of them at least (a strict majority), on one result."""

    mode: str = "Deterministic"
    confidence: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"Mode": self.mode, "Confidence": self.confidence}


@dataclass(frozen=True)
class Job:
    """A validated, normalised job spec; ``tasks`` holds exactly one task."""

    tasks: tuple[Task, ...]
    name: str = ""
    namespace: str = DEFAULT_NAMESPACE
    type: str = "batch"
    priority: int = 0
    count: int = 1
    meta: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    id: str | None = None
    #: Run ``count`` times on distinct nodes and accept only a result enough of them agree
    #: on (``protocol.verification``); None: every execution's result is taken as it is.
    verification: Verification | None = None

    @property
    def task(self) -> Task:
        """The job's only task."""
        return self.tasks[0]

    def with_default_timeout(self, seconds: int) -> Job:
        """This job, its execution limited to ``seconds`` if it sets no timeout of its own
        (neither ``ExecutionTimeout`` nor ``TotalTimeout``)."""
        timeouts = self.task.timeouts
        if not seconds or timeouts.execution_timeout or timeouts.total_timeout:
            return self
        task = replace(self.task, timeouts=replace(timeouts, execution_timeout=seconds))
        return replace(self, tasks=(task, *self.tasks[1:]))

    def to_dict(self) -> dict[str, Any]:
        """The normalised Bacalhau-shaped document; ``ID`` only when set."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["ID"] = self.id
        out.update(
            {
                "Name": self.name,
                "Namespace": self.namespace,
                "Type": self.type,
                "Priority": self.priority,
                "Count": self.count,
                "Meta": dict(self.meta),
                "Labels": dict(self.labels),
                "Constraints": [constraint.to_dict() for constraint in self.constraints],
                "Tasks": [task.to_dict() for task in self.tasks],
            }
        )
        if self.verification is not None:
            out["Verification"] = self.verification.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Validate and normalise a job document.

        Raises one ``SpecError`` listing every problem (unknown fields, wrong types,
        bad values), each with its field path; raises nothing else, whatever ``data`` is.
        """
        from .spec_parser import _Errors, _job

        errs = _Errors()
        job = _job(errs, data)
        errs.raise_if_any()
        return job


def parse_job_document(text: str) -> Job:
    """Parse a JSON job document and validate it with ``Job.from_dict``.

    Raises ``SpecError``: for bad JSON (with line and column), duplicate keys, NaN or
    Infinity, a top level that is not an object, and everything ``from_dict`` reports.
    """
    from .spec_parser import parse_job_document as parse

    return parse(text)
