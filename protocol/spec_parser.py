"""Reading a job spec: every problem recorded with its field path, Bacalhau's spellings
accepted (case-insensitive keys, aliases), the typed ``Job`` built from what is valid."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import FieldError, LocalProtocolError, SpecError
from .jobspec import (
    _MAX_INT,
    _NETWORK_ALIASES,
    _S3_PUBLISHER_PARAMS,
    _S3_SOURCE_PARAMS,
    _SOURCE_PARAMS,
    _SYSTEM_PATHS,
    _SYSTEM_TREES,
    DEFAULT_NAMESPACE,
    DEFAULT_TASK_NAME,
    ENGINE_TYPES,
    INPUT_SOURCE_TYPES,
    JOB_ID_RE,
    JOB_TYPES,
    MAX_COUNT,
    MIN_MEMORY_BYTES,
    NETWORK_TYPES,
    OUTPUTS_PATH,
    PUBLISHER_TYPES,
    VERIFICATION_MODES,
    EngineSpec,
    InputSource,
    Job,
    NetworkSpec,
    PublisherSpec,
    Resources,
    ResultPath,
    Task,
    Timeouts,
    Verification,
)
from .placeholders import check_key_template
from .quantities import parse_bytes, parse_cpu, parse_gpu
from .selectors import Constraint, check_label_key, check_label_value, describe_value
from .spec_values import (
    _DOMAIN_RE,
    _ENV_RE,
    _RESULT_NAME_RE,
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


def parse_job_document(text: str) -> Job:
    """Parse a JSON job document and validate it with ``Job.from_dict``.

    Raises ``SpecError``: for bad JSON (with line and column), duplicate keys, NaN or
    Infinity, a top level that is not an object, and everything ``from_dict`` reports.
    """
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SpecError(
            [FieldError("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
        ) from None
    except _JSONValueError as exc:
        raise SpecError([FieldError("", f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError(
            [FieldError("", f"expected a JSON object at the top level, got {describe_value(data)}")]
        )
    return Job.from_dict(data)


class _JSONValueError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # The JSON module would silently keep the last; a user meant one of them.
            raise _JSONValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _JSONValueError(f"{name} is not allowed; use a number or a string")


# ---------------------------------------------------------------------------
# Validation. Every reader records problems in ``errs`` and returns a usable
# fallback, so that one pass finds every problem; ``raise_if_any`` decides.


class _Errors:
    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _mapping(errs: _Errors, value: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """The mapping at ``path`` (``{}`` if absent or wrong), its keys matched to ``allowed``
    case-insensitively and renamed to them, with unknown and repeated fields reported."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errs.add(path, f"expected a mapping, got {describe_value(value)}")
        return {}
    canonical = {name.lower(): name for name in allowed}
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, item in value.items():
        known = canonical.get(str(name).lower())
        if known is None:
            errs.add(_at(path, str(name)), _unknown_field(str(name), allowed))
            out[name] = item
        elif known in given_as:
            errs.add(_at(path, str(name)), f"given twice (also as {given_as[known]!r})")
        else:
            given_as[known] = str(name)
            out[known] = item
    return out


def _unknown_field(name: str, allowed: Sequence[str]) -> str:
    for candidate in allowed:
        if candidate.lower() == name.lower():
            return f"unknown field (did you mean {candidate!r}?)"
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field; allowed fields: {', '.join(allowed)}"


def _string(
    errs: _Errors,
    data: Mapping[str, Any],
    path: str,
    name: str,
    default: str = "",
    *,
    required: bool = False,
) -> str:
    value = data.get(name)
    if value is None:
        if required:
            errs.add(_at(path, name), "required field is missing")
        return default
    if not isinstance(value, str):
        errs.add(_at(path, name), f"expected a string, got {describe_value(value)}")
        return default
    return value


def _integer(
    errs: _Errors, data: Mapping[str, Any], path: str, name: str, default: int, minimum: int,
    maximum: int = _MAX_INT,
) -> int:
    value = data.get(name)
    if value is None:
        return default
    # bool is an int subclass; True is not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        errs.add(_at(path, name), f"expected an integer, got {describe_value(value)}")
        return default
    if not minimum <= value <= maximum:
        errs.add(_at(path, name), f"must be between {minimum} and {maximum}, got {value}")
        return default
    return value


def _list(errs: _Errors, data: Mapping[str, Any], path: str, name: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        errs.add(_at(path, name), f"expected a list, got {describe_value(value)}")
        return []
    return list(value)


def _string_list(errs: _Errors, data: Mapping[str, Any], path: str, name: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(errs, data, path, name)):
        if isinstance(item, str):
            out.append(item)
        else:
            errs.add(f"{_at(path, name)}[{i}]", f"expected a string, got {describe_value(item)}")
    return tuple(out)


def _string_map(errs: _Errors, data: Mapping[str, Any], path: str, name: str) -> dict[str, str]:
    value = data.get(name)
    if value is None:
        return {}
    where = _at(path, name)
    if not isinstance(value, Mapping):
        errs.add(where, f"expected a mapping of strings to strings, got {describe_value(value)}")
        return {}
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            errs.add(where, f"keys must be non-empty strings, got {describe_value(key)}")
        elif not isinstance(item, str):
            errs.add(f"{where}.{key}", f"expected a string, got {describe_value(item)}")
        else:
            out[key] = item
    return out


def _choice(
    errs: _Errors,
    data: Mapping[str, Any],
    path: str,
    name: str,
    choices: Sequence[str],
    what: str,
    default: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """A type name matched case-insensitively, returned in canonical spelling.

    Without a ``default`` the field is required. ``None`` means a problem was recorded.
    """
    where = _at(path, name)
    value = data.get(name)
    if value is None:
        if default is None:
            errs.add(where, f"required field is missing; expected one of: {', '.join(choices)}")
        return default
    if not isinstance(value, str):
        errs.add(where, f"expected a string, got {describe_value(value)}")
        return None
    by_lower = {choice.lower(): choice for choice in choices}
    lowered = value.lower()
    if lowered in by_lower:
        return by_lower[lowered]
    if aliases and lowered in aliases:
        return aliases[lowered]
    close = difflib.get_close_matches(lowered, list(by_lower), n=1)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    errs.add(where, f"unknown {what} {value!r}{hint}; expected one of: {', '.join(choices)}")
    return None


def _check(errs: _Errors, path: str, problem: str | None) -> bool:
    """Record ``problem`` if there is one; True when the value passed."""
    if problem:
        errs.add(path, problem)
    return problem is None


def _path_field(errs: _Errors, data: Mapping[str, Any], path: str, name: str) -> str:
    """A required absolute path, normalised; ``""`` if missing or invalid."""
    value = _string(errs, data, path, name, required=True)
    if not isinstance(data.get(name), str):
        return ""
    if not _check(errs, _at(path, name), check_absolute_path(value)):
        return ""
    return normalise_path(value)


_JOB_FIELDS = (
    "ID",
    "Name",
    "Namespace",
    "Type",
    "Priority",
    "Count",
    "Meta",
    "Labels",
    "Constraints",
    "Tasks",
    "Verification",
)
_TASK_FIELDS = (
    "Name",
    "Engine",
    "InputSources",
    "Publisher",
    "ResultPaths",
    "Resources",
    "Network",
    "Timeouts",
    "Env",
    "Meta",
)
_ENGINE_PARAMS = ("Image", "Entrypoint", "Parameters", "EnvironmentVariables", "WorkingDirectory")


def _job(errs: _Errors, value: Any) -> Job:
    if not isinstance(value, Mapping):
        errs.add("", f"expected a mapping (the job document), got {describe_value(value)}")
        return Job(tasks=())
    data = _mapping(errs, value, "", _JOB_FIELDS)
    # Fields are read in document order so that errors come out in that order too.
    job_id = None
    if data.get("ID") is not None:
        job_id = _string(errs, data, "", "ID")
        if isinstance(data["ID"], str) and not JOB_ID_RE.fullmatch(job_id):
            errs.add(
                "ID", f"invalid job ID {job_id!r}: expected j- and a lowercase UUID4, or no ID"
            )
    name = _string(errs, data, "", "Name")
    # Empty means the default, as Bacalhau's orchestrator reads it (its CLI sends "").
    namespace = _string(errs, data, "", "Namespace", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE
    job_type = _choice(errs, data, "", "Type", JOB_TYPES, "job type", "batch") or "batch"
    priority = _integer(errs, data, "", "Priority", 0, 0)
    count = _integer(errs, data, "", "Count", 1, 1, MAX_COUNT)
    meta = _string_map(errs, data, "", "Meta")
    labels = _string_map(errs, data, "", "Labels")
    for key, label in labels.items():
        _check(errs, f"Labels.{key}", check_label_key(key) or check_label_value(label))
    constraints = []
    for i, item in enumerate(_list(errs, data, "", "Constraints")):
        try:
            constraints.append(Constraint.from_dict(item, path=f"Constraints[{i}]"))
        except SpecError as exc:
            errs.items.extend(exc.errors)
    if data.get("Tasks") is None:
        errs.add("Tasks", "required field is missing; a job has exactly one task")
    raw_tasks = _list(errs, data, "", "Tasks")
    if isinstance(data.get("Tasks"), (list, tuple)) and len(raw_tasks) != 1:
        errs.add("Tasks", f"expected exactly one task, got {len(raw_tasks)}")
    verification = _verification(errs, data.get("Verification"), count)
    return Job(
        tasks=tuple(_task(errs, item, f"Tasks[{i}]") for i, item in enumerate(raw_tasks)),
        name=name,
        namespace=namespace,
        type=job_type,
        priority=priority,
        count=count,
        meta=meta,
        labels=labels,
        constraints=tuple(constraints),
        id=job_id,
        verification=verification,
    )


def _verification(errs: _Errors, value: Any, count: int) -> Verification | None:
    """``None`` when absent (or ``Mode: None``); the confidence defaults to a strict
    majority of ``count``, and a smaller one is refused: two groups could then both win."""
    if value is None:
        return None
    data = _mapping(errs, value, "Verification", ("Mode", "Confidence"))
    mode = _choice(errs, data, "Verification", "Mode", ("None", *VERIFICATION_MODES),
                   "verification mode", "Deterministic")
    if mode in (None, "None"):
        return None
    majority = count // 2 + 1
    confidence = _integer(errs, data, "Verification", "Confidence", majority, 1, MAX_COUNT)
    if count < 2:
        errs.add("Verification", "verifying a result needs Count 2 or more: the executions "
                                 "check each other (e.g. --count 3 --verify)")
    elif not majority <= confidence <= count:
        errs.add("Verification.Confidence",
                 f"{confidence} of Count {count}: must be a strict majority, "
                 f"{majority} to {count}")
    return Verification(mode=mode, confidence=confidence)


def _task(errs: _Errors, value: Any, path: str) -> Task:
    if not isinstance(value, Mapping):
        errs.add(path, f"expected a mapping (a task), got {describe_value(value)}")
        return Task(engine=EngineSpec(image=""))
    data = _mapping(errs, value, path, _TASK_FIELDS)
    name = _string(errs, data, path, "Name", DEFAULT_TASK_NAME)
    if not name:
        errs.add(_at(path, "Name"), f"must not be empty; leave it out for {DEFAULT_TASK_NAME!r}")
    engine = _engine(errs, data.get("Engine"), _at(path, "Engine"))
    input_sources = _input_sources(errs, data, path)
    publisher = _publisher(errs, data.get("Publisher"), _at(path, "Publisher"))
    result_paths = _result_paths(errs, data, path)
    _check_mounts(errs, input_sources, result_paths, path)
    env = _task_env(errs, data, path, engine)
    return Task(
        engine=engine,
        name=name,
        input_sources=input_sources,
        publisher=publisher,
        result_paths=result_paths,
        resources=_resources(errs, data.get("Resources"), _at(path, "Resources")),
        network=_network(errs, data.get("Network"), _at(path, "Network")),
        timeouts=_timeouts(errs, data.get("Timeouts"), _at(path, "Timeouts")),
        env=env,
        meta=_string_map(errs, data, path, "Meta"),
    )


def _task_env(errs: _Errors, data: Mapping[str, Any], path: str,
              engine: EngineSpec) -> dict[str, str]:
    env = _string_map(errs, data, path, "Env")
    engine_vars = {item.partition("=")[0] for item in engine.environment_variables}
    for name in env:
        if not _ENV_RE.fullmatch(f"{name}="):
            errs.add(f"{_at(path, 'Env')}.{name}",
                     f"invalid environment variable name {name!r}: expected letters, digits "
                     "and '_', not starting with a digit")
        elif name in engine_vars:
            errs.add(f"{_at(path, 'Env')}.{name}",
                     f"{name} is also set by Engine.Params.EnvironmentVariables; set it once")
    return env


def _engine(errs: _Errors, value: Any, path: str) -> EngineSpec:
    fallback = EngineSpec(image="")
    if value is None:
        errs.add(path, "required field is missing; e.g. {Type: docker, Params: {Image: ubuntu}}")
        return fallback
    data = _mapping(errs, value, path, ("Type", "Params"))
    if not isinstance(value, Mapping):
        return fallback
    engine_type = _choice(errs, data, path, "Type", ENGINE_TYPES, "engine type")
    if engine_type is None:
        return fallback  # parameters cannot be checked against an unknown engine
    params_path = _at(path, "Params")
    if engine_type == "noop":  # Bacalhau's no-op engine: runs nothing, takes nothing
        if data.get("Params"):
            errs.add(params_path, "the noop engine takes no parameters; leave Params out")
        return EngineSpec(image="", type="noop")
    if data.get("Params") is None:
        errs.add(params_path, "required field is missing; it gives at least the Image")
        return fallback
    params = _mapping(errs, data["Params"], params_path, _ENGINE_PARAMS)
    if not isinstance(data["Params"], Mapping):
        return fallback
    image = _string(errs, params, params_path, "Image", required=True)
    if isinstance(params.get("Image"), str):
        _check(errs, _at(params_path, "Image"), check_image(image))
    env = _string_list(errs, params, params_path, "EnvironmentVariables")
    first_set: dict[str, int] = {}
    for i, item in enumerate(env):
        item_path = f"{_at(params_path, 'EnvironmentVariables')}[{i}]"
        if not _ENV_RE.fullmatch(item):
            errs.add(
                item_path,
                f"invalid environment variable {item!r}: expected NAME=VALUE, NAME made of "
                "letters, digits and '_' and not starting with a digit, e.g. DEBUG=1",
            )
            continue
        var = item.partition("=")[0]
        if var in first_set:
            errs.add(item_path, f"{var} is already set by EnvironmentVariables[{first_set[var]}]")
        first_set.setdefault(var, i)
    workdir = ""
    if params.get("WorkingDirectory"):  # Bacalhau writes "" for "the image's default"
        workdir = _path_field(errs, params, params_path, "WorkingDirectory")
    elif params.get("WorkingDirectory") is not None:
        _string(errs, params, params_path, "WorkingDirectory")
    return EngineSpec(
        image=image,
        entrypoint=_string_list(errs, params, params_path, "Entrypoint"),
        parameters=_string_list(errs, params, params_path, "Parameters"),
        environment_variables=env,
        working_directory=workdir,
        type=engine_type,
    )


def _result_paths(errs: _Errors, data: Mapping[str, Any], path: str) -> tuple[ResultPath, ...]:
    out = []
    first_name: dict[str, int] = {}
    first_path: dict[str, int] = {}
    for i, item in enumerate(_list(errs, data, path, "ResultPaths")):
        item_path = f"{_at(path, 'ResultPaths')}[{i}]"
        if not isinstance(item, Mapping):
            errs.add(item_path, f"expected a mapping {{Name, Path}}, got {describe_value(item)}")
            continue
        entry = _mapping(errs, item, item_path, ("Name", "Path"))
        name = _string(errs, entry, item_path, "Name", required=True)
        if isinstance(entry.get("Name"), str):
            if not _RESULT_NAME_RE.fullmatch(name):
                errs.add(
                    _at(item_path, "Name"),
                    f"invalid result name {name!r}: expected letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit, e.g. outputs",
                )
            elif name in first_name:
                errs.add(
                    _at(item_path, "Name"),
                    f"{name!r} is already the name of ResultPaths[{first_name[name]}]",
                )
            first_name.setdefault(name, i)
        where = _path_field(errs, entry, item_path, "Path")
        if where in first_path:
            errs.add(
                _at(item_path, "Path"),
                f"{where!r} is already the path of ResultPaths[{first_path[where]}]",
            )
        if where:
            first_path.setdefault(where, i)
        out.append(ResultPath(name, where))
    return tuple(out)


def _input_sources(errs: _Errors, data: Mapping[str, Any], path: str) -> tuple[InputSource, ...]:
    out = []
    first_target: dict[str, int] = {}
    first_alias: dict[str, int] = {}
    for i, item in enumerate(_list(errs, data, path, "InputSources")):
        item_path = f"{_at(path, 'InputSources')}[{i}]"
        source = _input_source(errs, item, item_path)
        out.append(source)
        target = source.target
        if target in first_target:
            errs.add(
                _at(item_path, "Target"),
                f"{target!r} is already the target of InputSources[{first_target[target]}]",
            )
        if target:
            first_target.setdefault(target, i)
        alias = source.alias
        if alias is not None:
            if alias in first_alias:
                errs.add(
                    _at(item_path, "Alias"),
                    f"{alias!r} is already the alias of InputSources[{first_alias[alias]}]",
                )
            first_alias.setdefault(alias, i)
    return tuple(out)


def _check_mounts(
    errs: _Errors,
    input_sources: tuple[InputSource, ...],
    result_paths: tuple[ResultPath, ...],
    path: str,
) -> None:
    # An input mounted where results are collected would be published as a result.
    outputs = {result.path: f"ResultPaths[{i}]" for i, result in enumerate(result_paths)
               if result.path}
    outputs.setdefault(OUTPUTS_PATH, "the results directory")
    for i, source in enumerate(input_sources):
        where = f"{_at(path, 'InputSources')}[{i}].Target"
        target = source.target
        inside = next((name for out, name in outputs.items()
                       if target == out or target.startswith(out.rstrip("/") + "/")), None)
        if inside is not None:
            errs.add(where, f"{target!r} is inside {inside}; inputs and results need separate "
                            "directories, e.g. /inputs and /outputs")
        elif target in _SYSTEM_PATHS or target.startswith(_SYSTEM_TREES):
            errs.add(where, f"{target!r} belongs to the container's system; mount inputs "
                            "elsewhere, e.g. /inputs")


def _input_source(errs: _Errors, value: Any, path: str) -> InputSource:
    if not isinstance(value, Mapping):
        errs.add(path, f"expected a mapping {{Source, Target}}, got {describe_value(value)}")
        return InputSource("", {}, "")
    data = _mapping(errs, value, path, ("Source", "Target", "Alias"))
    source_type, params = _source(errs, data.get("Source"), _at(path, "Source"))
    target = _path_field(errs, data, path, "Target")
    alias = None
    if data.get("Alias") is not None:
        alias = _string(errs, data, path, "Alias")
        if isinstance(data["Alias"], str) and not alias:
            errs.add(_at(path, "Alias"), "must not be empty; leave it out for no alias")
        alias = alias or None
    return InputSource(source_type, params, target, alias)


def _source(errs: _Errors, value: Any, path: str) -> tuple[str, dict[str, Any]]:
    if value is None:
        errs.add(path, "required field is missing; e.g. {Type: s3, Params: {Bucket: my-data}}")
        return "", {}
    data = _mapping(errs, value, path, ("Type", "Params"))
    if not isinstance(value, Mapping):
        return "", {}
    source_type = _choice(errs, data, path, "Type", INPUT_SOURCE_TYPES, "input source type")
    if source_type is None:
        return "", {}  # parameters cannot be checked against an unknown type
    params_path = _at(path, "Params")
    params = _mapping(errs, data.get("Params"), params_path, _SOURCE_PARAMS[source_type])
    if source_type == "s3":
        return source_type, _s3_source_params(errs, params, params_path)
    (name,) = _SOURCE_PARAMS[source_type]
    text = _string(errs, params, params_path, name, required=True)
    if isinstance(params.get(name), str):
        check: dict[str, Callable[[str], str | None]] = {
            "ipfs": check_cid, "urlDownload": check_http_url, "inline": check_data_url}
        _check(errs, _at(params_path, name), check[source_type](text))
    return source_type, {name: text}


def _s3_source_params(errs: _Errors, data: Mapping[str, Any], path: str) -> dict[str, Any]:
    bucket = _string(errs, data, path, "Bucket", required=True)
    if isinstance(data.get("Bucket"), str):
        _check(errs, _at(path, "Bucket"), check_bucket(bucket))
    params: dict[str, Any] = {"Bucket": bucket, "Key": _string(errs, data, path, "Key")}
    # Optional parameters are left out when empty, so "" and absent normalise alike.
    for name in _S3_SOURCE_PARAMS[2:]:
        text = _string(errs, data, path, name)
        if text:
            params[name] = text
    if "Endpoint" in params:
        problem = check_http_url(params["Endpoint"], what="S3 endpoint")
        _check(errs, _at(path, "Endpoint"), problem)
    if "ChecksumSHA256" in params:
        _check(errs, _at(path, "ChecksumSHA256"), check_checksum_sha256(params["ChecksumSHA256"]))
    if "Filter" in params:
        try:
            re.compile(params["Filter"])
        except re.error as exc:
            errs.add(_at(path, "Filter"), f"invalid regular expression {params['Filter']!r}: "
                                          f"{exc}")
    return params


def _publisher(errs: _Errors, value: Any, path: str) -> PublisherSpec:
    data = _mapping(errs, value, path, ("Type", "Params"))
    publisher_type = _choice(errs, data, path, "Type", PUBLISHER_TYPES, "publisher type", "ipfs")
    if publisher_type is None:
        return PublisherSpec()  # parameters cannot be checked against an unknown type
    params_path = _at(path, "Params")
    if publisher_type != "s3":
        params = data.get("Params")
        if params is not None and not isinstance(params, Mapping):
            errs.add(params_path, f"expected a mapping, got {describe_value(params)}")
        for name in params if isinstance(params, Mapping) else ():
            errs.add(
                _at(params_path, str(name)),
                f"unknown field; the {publisher_type} publisher takes no parameters",
            )
        return PublisherSpec(type=publisher_type)
    params = _mapping(errs, data.get("Params"), params_path, _S3_PUBLISHER_PARAMS)
    bucket = _string(errs, params, params_path, "Bucket", required=True)
    if isinstance(params.get("Bucket"), str):
        _check(errs, _at(params_path, "Bucket"), check_bucket(bucket))
    key = _string(errs, params, params_path, "Key", required=True)
    if isinstance(params.get("Key"), str):
        if not key:
            errs.add(_at(params_path, "Key"), "must not be empty; e.g. results/{jobID}.tar.gz")
        else:
            try:
                check_key_template(key)
            except LocalProtocolError as exc:
                errs.add(_at(params_path, "Key"), str(exc))
    compress = False
    if params.get("Compress") is not None:
        try:
            compress = parse_bool(params["Compress"])
        except LocalProtocolError as exc:
            errs.add(_at(params_path, "Compress"), str(exc))
    normal: dict[str, Any] = {"Bucket": bucket, "Key": key, "Compress": compress}
    endpoint = _string(errs, params, params_path, "Endpoint")
    if endpoint:
        problem = check_http_url(endpoint, what="S3 endpoint")
        _check(errs, _at(params_path, "Endpoint"), problem)
        normal["Endpoint"] = endpoint
    region = _string(errs, params, params_path, "Region")
    if region:
        normal["Region"] = region
    return PublisherSpec(type="s3", params=normal)


def _resources(errs: _Errors, value: Any, path: str) -> Resources:
    data = _mapping(errs, value, path, ("CPU", "Memory", "Disk", "GPU"))

    def quantity(name: str, parse: Callable[[str], int], number_types: tuple[type, ...]) -> int:
        raw = data.get(name)
        if raw is None or raw == "":  # Bacalhau writes "" for "not requested"
            return 0
        # YAML turns "CPU: 0.5" and "GPU: 1" into numbers; read them as written.
        if isinstance(raw, number_types) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            expected = "a string or a number" if float in number_types else "a string or an integer"
            errs.add(_at(path, name), f"expected {expected}, got {describe_value(raw)}")
            return 0
        try:
            return parse(raw)
        except LocalProtocolError as exc:
            errs.add(_at(path, name), str(exc))
            return 0

    cpu_milli = quantity("CPU", parse_cpu, (int, float))
    memory = quantity("Memory", lambda text: parse_bytes(text, what="memory"), (int,))
    if 0 < memory < MIN_MEMORY_BYTES:
        errs.add(_at(path, "Memory"),
                 f"{data.get('Memory')!r} is {memory} bytes; a container needs at least 6Mi "
                 "(Docker's minimum), e.g. 64Mi")
    return Resources(
        cpu_milli=cpu_milli,
        memory=memory,
        disk=quantity("Disk", lambda text: parse_bytes(text, what="disk"), (int,)),
        gpu=quantity("GPU", parse_gpu, (int,)),
    )


def _network(errs: _Errors, value: Any, path: str) -> NetworkSpec:
    data = _mapping(errs, value, path, ("Type", "Domains"))
    network_type = _choice(
        errs, data, path, "Type", NETWORK_TYPES, "network type", "None", _NETWORK_ALIASES
    )
    domains = _string_list(errs, data, path, "Domains")
    for i, domain in enumerate(domains):
        if not _DOMAIN_RE.fullmatch(domain):
            errs.add(
                f"{_at(path, 'Domains')}[{i}]",
                f"invalid domain {domain!r}: expected a host name such as example.com, "
                "or .example.com for it and its subdomains",
            )
    if domains and network_type == "None":
        errs.add(
            _at(path, "Domains"),
            "domains need network access; set Network.Type to Full or remove Domains",
        )
    return NetworkSpec(type=network_type or "None", domains=domains)


def _timeouts(errs: _Errors, value: Any, path: str) -> Timeouts:
    data = _mapping(errs, value, path, ("ExecutionTimeout", "QueueTimeout", "TotalTimeout"))
    return Timeouts(
        execution_timeout=_integer(errs, data, path, "ExecutionTimeout", 0, 0),
        queue_timeout=_integer(errs, data, path, "QueueTimeout", 0, 0),
        total_timeout=_integer(errs, data, path, "TotalTimeout", 0, 0),
    )
