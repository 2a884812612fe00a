"""Job commands: ``docker run``, ``job run``, ``list``, ``describe``, ``logs``, ``get``, ``job …``.

Everything goes through the daemon's HTTP API; specs are checked locally first,
so a typo is reported before anything is sent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from protocol.errors import LocalProtocolError, ProtocolError, SpecError

from .client import ApiClient, ApiError

if TYPE_CHECKING:
    from protocol.jobspec import Job

TERMINAL_STATES = {"Completed", "Failed", "Stopped"}
#: How long one request following a job may be held by the daemon: quiet, only the end
#: matters; printing progress, a change that lands between two requests shows this late.
JOB_WAIT_SECONDS = 10.0
PROGRESS_WAIT_SECONDS = 1.0
#: An answer sooner than this, to a request asked to wait, may come from a daemon that
#: does not hold requests (older than ``?wait=``): pause as much before the next.
MIN_FOLLOW_INTERVAL = 0.02


def execution_state_name(code: int) -> str:
    from protocol.states import execution_state_name as name

    return name(code)


def event_new_state(event: dict[str, Any]) -> str:
    """The state a history event moved to: a job state name, or an execution state's."""
    if event["Type"] == "ExecutionLevel":
        code = (event.get("ExecutionState") or {}).get("New")
        return execution_state_name(code) if isinstance(code, int) and code else ""
    return (event.get("JobState") or {}).get("New") or ""


def event_time(event: dict[str, Any]) -> str:
    """An event's RFC 3339 time as local HH:MM:SS."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(str(event.get("Time")).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    return moment.astimezone().strftime("%H:%M:%S")


def api(ctx: click.Context) -> ApiClient:
    return ApiClient(ctx.obj["api_host"], ctx.obj["api_port"])


def call(ctx: click.Context, method: str, path: str, body: Any = None) -> Any:
    try:
        return api(ctx).request(method, path, body)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


def build_docker_job(
    image: str,
    command: tuple[str, ...],
    *,
    entrypoint: str | None,
    env: tuple[str, ...],
    workdir: str | None,
    cpu: str | None,
    memory: str | None,
    disk: str | None,
    gpu: str | None,
    network: str,
    timeout: int | None,
    labels: str | None,
    selector: str | None,
    count: int,
    inputs: tuple[str, ...],
    publisher: str | None,
    name: str | None = None,
    queue_timeout: int | None = None,
    constraints: str | None = None,
    output_volumes: tuple[str, ...] = (),
    verify: bool = False,
    confidence: int | None = None,
) -> dict[str, Any]:
    """The job document for ``docker run``'s flags; raises ``click.UsageError`` on bad ones."""
    from protocol.selectors import parse_labels, parse_selector
    from protocol.uris import parse_input, parse_publisher

    try:
        input_sources = [parse_input(text).to_dict() for text in inputs]
        publisher_spec = parse_publisher(publisher).to_dict() if publisher else None
        node_constraints = [c.to_dict() for text in (selector, constraints) if text
                            for c in parse_selector(text)]
        job_labels = parse_labels(labels) if labels else {}
    except (LocalProtocolError, SpecError) as exc:
        raise click.UsageError(str(exc)) from None
    result_paths = []
    for volume in output_volumes:
        volume_name, colon, path = volume.partition(":")
        if not colon or not volume_name or not path:
            raise click.UsageError(f"-o {volume!r}: expected NAME:PATH, e.g. outputs:/outputs")
        result_paths.append({"Name": volume_name, "Path": path})
    resources = {
        key: value
        for key, value in (("CPU", cpu), ("Memory", memory), ("Disk", disk), ("GPU", gpu))
        if value
    }
    params: dict[str, Any] = {"Image": image, "Parameters": list(command),
                              "EnvironmentVariables": list(env)}
    if entrypoint:
        params["Entrypoint"] = [entrypoint]
    if workdir:
        params["WorkingDirectory"] = workdir
    task: dict[str, Any] = {
        "Name": "main",
        "Engine": {"Type": "docker", "Params": params},
        "InputSources": input_sources,
        "Resources": resources,
        # Bacalhau's host and bridge both ask for the network; the node decides the wiring.
        "Network": {"Type": "None" if network == "none" else "Full"},
        "Timeouts": {"ExecutionTimeout": timeout or 0, "QueueTimeout": queue_timeout or 0},
    }
    if publisher_spec:
        task["Publisher"] = publisher_spec
    if result_paths:
        task["ResultPaths"] = result_paths
    document: dict[str, Any] = {
        "Type": "batch",
        "Count": count,
        "Labels": job_labels,
        "Constraints": node_constraints,
        "Tasks": [task],
    }
    if name:
        document["Name"] = name
    if verify or confidence:
        document["Verification"] = {"Mode": "Deterministic",
                                    **({"Confidence": confidence} if confidence else {})}
    return document


class WaitFlagCommand(click.Command):
    """A command whose ``--wait`` flag also takes Bacalhau's ``--wait=false`` and
    ``--wait=true`` (a plain ``--wait`` never swallows the next argument, e.g. the image)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        rewritten = []
        for position, arg in enumerate(args):
            name, equals, value = arg.partition("=")
            if position < end and name == "--wait" and equals:
                try:
                    arg = "--wait" if click.BOOL.convert(value, None, ctx) else "--no-wait"
                except click.BadParameter:
                    raise click.BadParameter(f"{value!r} is not true or false",
                                             param_hint="'--wait'") from None
            rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


def wait_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--wait`` (the default) / ``--no-wait`` = ``--wait=false``, and the wait's limit."""
    command = click.option("--wait/--no-wait", default=True, show_default=True,
                           help="wait for the job to end; --wait=false returns at once")(command)
    return click.option("--wait-timeout-secs", default=600, show_default=True,
                        type=float)(command)


def _yaml_problem(exc: Exception) -> str:
    """A YAML parser error in one line: what is wrong, and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def check_spec(document: dict[str, Any]) -> Job:
    from protocol.jobspec import Job

    try:
        return Job.from_dict(document)
    except SpecError as exc:
        raise click.UsageError(str(exc)) from None


def print_logs(ctx: click.Context, job_id: str, *, follow: bool = False) -> None:
    """A job's stdout and stderr, each to its own stream; with ``follow``, as the
    containers write them, until the job ends."""
    if not follow:
        answer = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}/logs")
        for item in answer["Items"]:
            sys.stdout.write(item["Stdout"])
            sys.stderr.write(item["Stderr"])
        return
    import json

    client = ApiClient(ctx.obj["api_host"], ctx.obj["api_port"], timeout=24 * 3600)
    try:
        with client.open(f"/api/v1/orchestrator/jobs/{job_id}/logs?follow=true") as response:
            while line := response.readline():
                frame = json.loads(line)
                stream = sys.stdout if frame["Type"] == 1 else sys.stderr
                stream.write(frame["Line"])
                stream.flush()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None
    except (TimeoutError, ConnectionError, ValueError) as exc:
        raise click.ClickException(f"the log stream of {job_id} broke off: {exc}") from None


def submit_and_follow(
    ctx: click.Context, document: dict[str, Any], *, wait: bool, id_only: bool,
    wait_timeout: float,
) -> str:
    answer = call(ctx, "PUT", "/api/v1/orchestrator/jobs", {"Job": document})
    job_id = answer["JobID"]
    if id_only:
        click.echo(job_id)
    else:
        click.echo(f"Job successfully submitted. Job ID: {job_id}")
    if not wait:
        return job_id
    state = wait_for_job(ctx, job_id, timeout=wait_timeout, quiet=id_only)
    if state["StateType"] != "Completed":
        raise click.ClickException(f"job {job_id} {state['StateType'].lower()}: {state['Message']}")
    if not id_only:
        click.echo(f"\nTo get the results, run:\n  bacnode get {job_id}\n"
                   f"To see details, run:\n  bacnode describe {job_id}")
    return job_id


def wait_for_job(ctx: click.Context, job_id: str, *, timeout: float, quiet: bool) -> dict:
    """Follow the job until it ends; print each new event unless ``quiet``.

    Each request is answered by the daemon as soon as the job changes (``?wait=``), so the
    end is seen at once and a long job costs one request every ``JOB_WAIT_SECONDS``."""
    deadline = time.monotonic() + timeout
    longest = JOB_WAIT_SECONDS if quiet else PROGRESS_WAIT_SECONDS
    shown = 0
    while True:
        asked = time.monotonic()
        wait = max(0.0, min(longest, deadline - asked))
        answer = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}?wait={wait:.3f}"
                                  + ("" if quiet else "&include=history"))
        job = answer["Job"]
        if not quiet:
            events = answer["History"]["Items"]
            for event in events[shown:]:
                who = "execution" if event["Type"] == "ExecutionLevel" else "job"
                click.echo(f"  {who:<9} {event_new_state(event):<12} "
                           f"{event['Event']['Message']}", err=True)
            shown = len(events)
        if job["State"]["StateType"] in TERMINAL_STATES:
            return job["State"]
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"job {job_id} is still {job['State']['StateType']} after {timeout:.0f}s; "
                f"follow it with: bacnode describe {job_id}"
            )
        time.sleep(max(0.0, asked + MIN_FOLLOW_INTERVAL - time.monotonic()))


def _published_location(spec_config: dict[str, Any]) -> dict[str, Any]:
    from protocol.messages import published_location

    return published_location(spec_config)


def describe_document(ctx: click.Context, job_id: str) -> dict[str, Any]:
    job = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}")["Job"]
    full_id = job["ID"]
    executions = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{full_id}/executions")["Items"]
    history = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{full_id}/history")["Items"]
    return {
        "Job": job,
        "State": {
            "State": job["State"]["StateType"],
            "Message": job["State"]["Message"],
            **({"Verification": job["State"]["Verification"]}
               if "Verification" in job["State"] else {}),
            "Executions": [
                {
                    "NodeID": e["NodeID"],
                    "ExecutionID": e["ID"],
                    "State": execution_state_name(e["ComputeState"]["StateType"]),
                    "Message": e["ComputeState"].get("Message", ""),
                    "RunOutput": {
                        "stdout": (e["RunOutput"] or {}).get("Stdout", ""),
                        "stderr": (e["RunOutput"] or {}).get("stderr", ""),
                        "exitCode": (e["RunOutput"] or {}).get("ExitCode"),
                    },
                    "PublishedResults": _published_location(e["PublishedResult"])
                    if e["PublishedResult"] else {},
                }
                for e in executions
            ],
        },
        "History": history,
    }


# -- get -----------------------------------------------------------------------------


def verify_signed_record(encoded: str, job_id: str) -> Any:
    """Check a result record's signature and that it belongs to ``job_id``."""
    import base64

    from protocol import codec
    from protocol.envelope import parse_unverified
    from protocol.identity import verify_signature
    from protocol.messages import ResultRecord, decode_message

    data = base64.b64decode(encoded)
    envelope = parse_unverified(data)
    if not verify_signature(envelope.sender, envelope.sig, codec.encode(envelope.signed_part())):
        raise click.ClickException("a result record's signature does not verify; not trusting it")
    record = decode_message(envelope)
    if not isinstance(record, ResultRecord) or record.job_id != job_id:
        raise click.ClickException("a result record does not belong to this job")
    return record


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


#: What a job's results hold at the top of their directory (Bacalhau's layout).
RESULT_NAMES = ("outputs", "stdout", "stderr", "exitCode")


def default_output_dir(job_id: str) -> Path:
    """Where ``get`` writes when not told: a new ``job-<short id>`` directory, as Bacalhau."""
    return Path(f"job-{job_id[:10]}")


def refuse_to_overwrite(target: Path, names: Any) -> None:
    """Stop before writing if any of ``names`` already exists in ``target``: a user's files
    are never replaced or merged into. An empty directory of that name is fine."""
    taken = []
    for name in names:
        path = target / name
        if path.is_symlink() or path.is_file() or (path.is_dir() and any(path.iterdir())):
            taken.append(name)
        elif path.exists():
            taken.append(name)
    if taken:
        raise click.ClickException(
            f"{target} already holds {', '.join(sorted(taken))}; get never overwrites files: "
            "choose another --output-dir (or leave it out for a new job-<id> directory)"
        )


def _one_accepted(items: list[dict[str, Any]], accepted: str, job_id: str,
                  ) -> list[dict[str, Any]]:
    """Of a verified job's results, one whose signed record has the digest the verdict
    accepted (the others in its group are the same bytes)."""
    from protocol.verification import record_digest

    for item in items:
        if record_digest(verify_signed_record(item["SignedRecord"], job_id)) == accepted:
            return [item]
    raise click.ClickException(f"job {job_id} is verified, yet no result served for it has "
                               "the accepted digest; nothing was written")


def download_results(ctx: click.Context, job_id: str, output_dir: Path | None,
                     unverified: bool = False) -> list[str]:
    import shutil
    import tempfile

    job = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}")["Job"]
    full_id = job["ID"]
    query = "?unverified=true" if unverified else ""
    items = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{full_id}/results{query}")["Items"]
    verification = job["State"].get("Verification")
    if verification and verification["State"] == "Verified" and not unverified:
        items = _one_accepted(items, verification["Accepted"], full_id)
    if not items:
        raise click.ClickException(
            f"job {full_id} has no published results (it is {job['State']['StateType']})"
        )
    output_dir = output_dir or default_output_dir(full_id)
    targets = [output_dir] if len(items) == 1 else [
        output_dir / item["ExecutionID"] for item in items]
    for target in targets:  # before anything is downloaded
        refuse_to_overwrite(target, RESULT_NAMES)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        record = verify_signed_record(item["SignedRecord"], full_id)
        if record.published.get("StorageSource") == "Noop":
            continue
        target = output_dir if len(items) == 1 else output_dir / record.execution_id
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".partial-") as scratch:
            scratch_path = Path(scratch)
            unpacked = scratch_path / "unpacked"
            source = record.published.get("StorageSource")
            if source == "IPFS":
                _download_ipfs(ctx, record, unpacked)
            elif source == "S3" and not record.published.get("S3", {}).get("Compress", True):
                _download_s3_files(item, record, unpacked)
            else:
                archive = scratch_path / "results.tar"
                if record.published.get("StorageSource") == "S3":
                    _download_s3(item, record, archive)
                else:
                    try:
                        api(ctx).download(
                            f"/api/v1/orchestrator/executions/{record.execution_id}/results.tar",
                            archive, label=f"downloading results of {record.execution_id}",
                        )
                    except ApiError as exc:
                        raise click.ClickException(str(exc)) from None
                import tarfile  # here: the other commands never unpack anything

                with tarfile.open(archive) as tar:
                    tar.extractall(unpacked, filter="data")
            _verify_tree(unpacked, record)
            entries = sorted(unpacked.iterdir())
            refuse_to_overwrite(target, [entry.name for entry in entries])
            target.mkdir(parents=True, exist_ok=True)
            for entry in entries:
                destination = target / entry.name
                if destination.is_dir():
                    destination.rmdir()  # empty: refuse_to_overwrite saw to that
                shutil.move(str(entry), destination)
        written.append(str(target))
    return written


def _download_ipfs(ctx: click.Context, record: Any, destination: Path) -> None:
    """Fetch the signed record's CID through the daemon, verifying every block."""
    from protocol.cid import Cid, IpfsFormatError

    from .ipfs import download_dag

    cid = record.published.get("CID", "")
    client = ApiClient(ctx.obj["api_host"], ctx.obj["api_port"], timeout=600)
    try:
        download_dag(client, Cid.parse(cid), destination, peer=record.node_id)
    except ApiError as exc:
        raise click.ClickException(f"fetching {cid}: {exc}") from None
    except IpfsFormatError as exc:
        raise click.ClickException(
            f"{cid} failed verification: {exc}; nothing was written"
        ) from None


def _fetch_url(url: str, destination: Path, name: str) -> bytes:
    """Download ``url`` into ``destination``; return the SHA-256 of what was written."""
    import hashlib
    import urllib.error
    import urllib.request

    from .progress import Progress

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            with Progress(f"downloading {name}", total) as progress:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    progress.advance(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"downloading {name}: {exc}") from None
    return digest.digest()


def _presign_failure(item: dict[str, Any]) -> click.ClickException:
    reason = item.get("Params", {}).get("SourceSpec", {}).get("Error", "no URL")
    return click.ClickException(f"the requester could not presign a URL: {reason}")


def _download_s3_files(item: dict[str, Any], record: Any, destination: Path) -> None:
    """Fetch uncompressed S3 results file by file, each checked against the manifest."""
    urls = {f["Path"]: f["PreSignedURL"] for f in item.get("Params", {}).get("Files", [])}
    if not urls and record.outputs:
        raise _presign_failure(item)
    prefix = record.published.get("Name", "").rstrip("/")
    for entry in record.outputs:
        url = urls.get(entry.path)
        if not url:
            raise _presign_failure(item)
        target = destination / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if _fetch_url(url, target, f"{prefix}/{entry.path}").hex() != entry.sha256:
            raise click.ClickException(
                f"{prefix}/{entry.path} does not match its signed SHA-256; nothing was written"
            )


def _download_s3(item: dict[str, Any], record: Any, destination: Path) -> None:
    """Fetch a compressed S3 result through its presigned URL, checking its signed SHA-256."""
    import base64

    s3 = record.published.get("S3", {})
    url = item.get("Params", {}).get("PreSignedURL")
    if not url:
        raise _presign_failure(item)
    digest = _fetch_url(url, destination, record.published.get("Name", ""))
    actual = base64.b64encode(digest).decode()
    if actual != s3.get("Checksum"):
        raise click.ClickException(
            f"{record.published.get('Name')} has SHA-256 {actual}, but the signed record says "
            f"{s3.get('Checksum')}; nothing was written"
        )


def _verify_tree(root: Path, record: Any) -> None:
    expected = {entry.path: entry for entry in record.outputs}
    found = {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() or path.is_symlink()
    }
    extra = sorted(found - set(expected))
    missing = sorted(set(expected) - found)
    if extra or missing:
        raise click.ClickException(
            f"results of {record.execution_id} do not match the signed record "
            f"(unexpected: {extra[:5]}, missing: {missing[:5]}); nothing was written"
        )
    for path, entry in expected.items():
        actual = root / path
        if actual.stat().st_size != entry.size or _sha256(actual) != entry.sha256:
            raise click.ClickException(
                f"{path} of {record.execution_id} does not match its signed SHA-256; "
                "nothing was written"
            )


def register(cli: click.Group) -> None:
    from .render import output_options, render, show

    @cli.group(cls=click.Group)
    def docker() -> None:
        """Run Docker jobs."""

    @docker.command("run", cls=WaitFlagCommand,
                    context_settings={"allow_interspersed_args": False})
    @click.argument("image")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.option("--id-only", is_flag=True, help="print only the job ID")
    @wait_options
    @click.option("-e", "--env", multiple=True, help="NAME=VALUE, repeatable")
    @click.option("--entrypoint", help="override the image's entrypoint")
    @click.option("-w", "--workdir", help="working directory in the container")
    @click.option("--cpu", help="e.g. 500m or 2")
    @click.option("--memory", help="e.g. 512Mi or 1Gb")
    @click.option("--disk", help="e.g. 10Gi")
    @click.option("--gpu", help="number of GPUs")
    @click.option("--network", type=click.Choice(["none", "full", "host", "bridge", "default"],
                                                  case_sensitive=False),
                  default="none", show_default=True,
                  help="full, host and bridge ask for network access (nodes grant it only "
                       "with --allow-networked-jobs); default and none: no network")
    @click.option("--timeout", type=int, help="execution timeout, seconds")
    @click.option("--queue-timeout", type=int,
                  help="how long the job may wait for compute nodes, seconds")
    @click.option("-l", "--labels", help="job labels k=v,…")
    @click.option("-s", "--selector", help="node label selector, e.g. zone=b")
    @click.option("--constraints", help="node label selector, as --selector")
    @click.option("--name", help="the job's name")
    @click.option("-o", "--output", "output_volumes", multiple=True,
                  help="NAME:PATH, a result path, repeatable [default: outputs:/outputs]")
    @click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100))
    @click.option("--verify", is_flag=True,
                  help="run --count times on distinct nodes and accept only a result a strict "
                       "majority of them agree on (commit-reveal)")
    @click.option("--confidence", type=click.IntRange(1, 100),
                  help="with --verify: how many must agree [default: a strict majority]")
    @click.option("-i", "--input", "inputs", multiple=True,
                  help="s3://b/k*:/inputs,opt=region=… | ipfs://CID:/t | https://…:/t")
    @click.option("-p", "--publisher", help="ipfs | local | noop | s3://bucket/key,opt=…")
    @click.option("--dry-run", is_flag=True, help="print the job spec as YAML, submit nothing")
    @click.option("-f", "--follow", is_flag=True,
                  help="print the job's output as it is written, until it ends")
    @click.pass_context
    def docker_run(ctx: click.Context, image: str, command: tuple[str, ...], id_only: bool,
                   wait: bool, wait_timeout_secs: float, dry_run: bool, follow: bool,
                   **flags: Any) -> None:
        """Run IMAGE [-- COMMAND ARGS…] somewhere on the network."""
        if command[:1] == ("--",):
            command = command[1:]
        flags["network"] = flags["network"].lower()
        document = build_docker_job(image, command, **flags)
        job = check_spec(document)
        if dry_run:
            click.echo(render(job.to_dict(), "yaml"))
            return
        if follow:
            job_id = submit_and_follow(ctx, job.to_dict(), wait=False, id_only=True,
                                       wait_timeout=wait_timeout_secs)
            print_logs(ctx, job_id, follow=True)
            return
        submit_and_follow(ctx, job.to_dict(), wait=wait, id_only=id_only,
                          wait_timeout=wait_timeout_secs)

    @cli.group()
    def job() -> None:
        """Jobs: run a spec file, stop, executions, history."""

    @job.command("run", cls=WaitFlagCommand)
    @click.argument("spec", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
    @wait_options
    @click.option("--id-only", is_flag=True)
    @click.pass_context
    def job_run(ctx: click.Context, spec: str, wait: bool, id_only: bool,
                wait_timeout_secs: float) -> None:
        """Submit a job spec file (YAML or JSON)."""
        import yaml

        raw = sys.stdin.buffer.read() if spec == "-" else Path(spec).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.UsageError(
                f"{spec} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                "save the spec as UTF-8") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.UsageError(f"{spec} is not valid YAML or JSON: {_yaml_problem(exc)}"
                                   ) from None
        if not isinstance(document, dict):
            raise click.UsageError(f"{spec} must hold a job spec mapping")
        document = document.get("Job", document) if "Job" in document else document
        job = check_spec(document)
        submit_and_follow(ctx, job.to_dict(), wait=wait, id_only=id_only,
                          wait_timeout=wait_timeout_secs)

    @job.command("stop")
    @click.argument("job_id")
    @click.option("--reason", default="stopped by user", show_default=True)
    @click.pass_context
    def job_stop(ctx: click.Context, job_id: str, reason: str) -> None:
        """Stop a job; its running containers are killed."""
        from urllib.parse import quote

        call(ctx, "DELETE", f"/api/v1/orchestrator/jobs/{job_id}?reason={quote(reason)}")
        click.echo(f"Job {job_id} stopped.")

    @job.command("executions")
    @click.argument("job_id")
    @output_options
    @click.pass_context
    def job_executions(ctx: click.Context, job_id: str, output: str, hide_header: bool,
                       no_style: bool) -> None:
        """A job's executions."""
        items = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]
        rows = [[e["ID"], e["NodeID"], execution_state_name(e["ComputeState"]["StateType"]),
                 e["ComputeState"].get("Message", "")[:60]] for e in items]
        show(items, output, ["EXECUTION", "NODE", "STATE", "MESSAGE"], rows,
             hide_header=hide_header)

    @job.command("results")
    @click.argument("job_id")
    @click.pass_context
    def job_results(ctx: click.Context, job_id: str) -> None:
        """Where a job's results were published, as JSON (presigned URLs for S3)."""
        answer = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}/results")
        shown = {
            "NextToken": answer.get("NextToken", ""),
            "Results": [
                {"Type": item["Type"], "Params": item["Params"]} for item in answer["Items"]
            ],
        }
        click.echo(render(shown, "json"))

    @job.command("history")
    @click.argument("job_id")
    @output_options
    @click.pass_context
    def job_history(ctx: click.Context, job_id: str, output: str, hide_header: bool,
                    no_style: bool) -> None:
        """Every state change of a job and its executions."""
        items = call(ctx, "GET", f"/api/v1/orchestrator/jobs/{job_id}/history")["Items"]
        rows = [[event_time(event), event["Type"], event.get("ExecutionID", "")[:12],
                 event_new_state(event), event["Event"]["Message"][:70]] for event in items]
        show(items, output, ["TIME", "LEVEL", "EXECUTION", "STATE", "MESSAGE"], rows,
             hide_header=hide_header)

    @cli.command("list")
    @click.option("--id-filter", help="only this job (ID or prefix)")
    @click.option("--wide", is_flag=True, help="full IDs and more columns")
    @click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--labels", "selector", help="only jobs whose labels match, e.g. team=a")
    @output_options
    @click.pass_context
    def list_jobs(ctx: click.Context, id_filter: str | None, wide: bool, limit: int,
                  selector: str | None, output: str, hide_header: bool, no_style: bool) -> None:
        """Jobs, newest first."""
        from urllib.parse import urlencode

        if id_filter:
            items = [call(ctx, "GET", f"/api/v1/orchestrator/jobs/{id_filter}")["Job"]]
        else:
            query = urlencode({"limit": limit, **({"labels": selector} if selector else {})})
            items = call(ctx, "GET", f"/api/v1/orchestrator/jobs?{query}")["Items"]
        rows = []
        for job in items:
            verification = job["State"].get("Verification")
            verified = verification["State"] if verification else "-"
            created = time.strftime("%H:%M:%S", time.localtime(job["CreateTime"] / 1e9))
            task = job["Tasks"][0]
            params = task["Engine"].get("Params") or {}
            # A job of an engine without an image (noop, say) is shown by its engine.
            command = " ".join([params.get("Image") or task["Engine"]["Type"],
                                *params.get("Parameters", [])])
            row = [created, job["ID"] if wide else job["ID"][:10], job["Type"],
                   job["State"]["StateType"], verified, command if wide else command[:30]]
            if wide:
                row.append(job["State"]["Message"][:60])
            rows.append(row)
        headers = (["CREATED", "ID", "TYPE", "STATE", "VERIFIED", "COMMAND"]
                   + (["MESSAGE"] if wide else []))
        show(items, output, headers, rows, hide_header=hide_header)

    @cli.command()
    @click.argument("job_id")
    @click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML")
    @click.option("--output", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True)
    @click.pass_context
    def describe(ctx: click.Context, job_id: str, as_json: bool, output: str) -> None:
        """A job with its state, executions, outputs and history."""
        document = describe_document(ctx, job_id)
        click.echo(render(document, "json" if as_json else output))

    @cli.command()
    @click.argument("job_id")
    @click.option("-f", "--follow", is_flag=True,
                  help="print output as it is written, until the job ends")
    @click.pass_context
    def logs(ctx: click.Context, job_id: str, follow: bool) -> None:
        """A job's stdout and stderr."""
        print_logs(ctx, job_id, follow=follow)

    @cli.command()
    @click.argument("job_id")
    @click.option("--output-dir", type=click.Path(file_okay=False),
                  help="where to write them [default: a new job-<short id> directory]; "
                       "files already there are never overwritten")
    @click.option("--unverified", is_flag=True,
                  help="a job run with --verify: fetch its results even without a Verified "
                       "verdict (every result revealed)")
    @click.pass_context
    def get(ctx: click.Context, job_id: str, output_dir: str | None, unverified: bool) -> None:
        """Download a job's results, verified against its signed records."""
        import tarfile

        try:
            written = download_results(ctx, job_id, Path(output_dir) if output_dir else None,
                                       unverified=unverified)
        except (ProtocolError, OSError, tarfile.TarError) as exc:
            raise click.ClickException(f"getting results of {job_id}: {exc}") from None
        for path in written:
            click.echo(f"Results for job {job_id} written to {path} (verified)")


    # Bacalhau v1's spelling of the same commands: bacnode job list|describe|logs|get.
    for command in (list_jobs, describe, logs, get):
        job.add_command(command)
