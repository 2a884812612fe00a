"""Job endpoints of the local API, after Bacalhau's ``/api/v1/orchestrator/jobs``.

Shapes follow Bacalhau v1.9's REST API (``Job``, ``Items``/``NextToken``, integer
execution states, RFC 3339 history times, ``{Type, Params}`` results) so that its CLI and
Python client work unchanged; job and execution create/modify times are Unix nanoseconds,
as Bacalhau's are.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol.errors import SpecError
from protocol.jobspec import Job
from protocol.messages import ManifestEntry, job_too_big, published_spec_config
from protocol.placeholders import key_fits_template
from protocol.states import DESIRED_STATE_CODES, EXECUTION_STATE_CODES, ExecutionState

from .api import label_selectors, rfc3339
from .api_auth import download_signature
from .api_routing import Api, Body, Query
from .mesh import MeshError
from .requester import Requester
from .store import (
    EXECUTION_STATE_UPDATE,
    JOB_STATE_UPDATE,
    Event,
    ExecutionRecord,
    JobRecord,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

API = "/api/v1/orchestrator"


def _ns(ms: int) -> int:
    return ms * 1_000_000


def verification_json(record: JobRecord) -> dict[str, Any] | None:
    """A verified job's verdict as the API shows it; ``Pending`` until there is one."""
    verification = record.job.verification
    if verification is None:
        return None
    verdict = record.verdict or {}
    return {
        "State": verdict.get("state", "Pending"),
        "Confidence": verification.confidence,
        "Accepted": verdict.get("accepted", ""),
        "Groups": [{"Digest": group["digest"], "Executions": list(group["executions"])}
                   for group in verdict.get("groups", [])],
    }


def job_json(record: JobRecord) -> dict[str, Any]:
    job = record.job.to_dict()
    state: dict[str, Any] = {"StateType": record.state.value, "Message": record.state_message}
    if (verification := verification_json(record)) is not None:
        state["Verification"] = verification
    job.update(
        {
            "ID": record.job.id,
            "State": state,
            "Version": 1,
            "Revision": record.revision,
            "CreateTime": _ns(record.create_time_ms),
            "ModifyTime": _ns(record.modify_time_ms),
            "Requester": record.requester,
        }
    )
    return job


class EncodedJobs:
    """Listed jobs' JSON, encoded, by ID and revision, the last ``size`` of them.

    A job changes only with its revision, and a client following a burst lists every job
    again and again (``bacnode list``, a poll each second): building and encoding each one
    anew was the largest part of what node 1 did during a burst of 50 jobs polled every
    0.2 s (43 % of its samples)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def __call__(self, record: JobRecord) -> bytes:
        key = (record.job.id or "", record.revision)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = _encode(job_json(record))
            self._encoded[key] = encoded
            if len(self._encoded) > self.size:
                self._encoded.popitem(last=False)
        else:
            self._encoded.move_to_end(key)
        return encoded


def _encode(content: Any) -> bytes:
    """As ``JSONResponse`` encodes."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def execution_json(execution: ExecutionRecord, namespace: str = "default") -> dict[str, Any]:
    """An execution as Bacalhau's ``models.Execution``: states are its integer enums."""
    run_output = execution.run_output or {}
    return {
        "ID": execution.execution_id,
        "Namespace": namespace,
        "JobID": execution.job_id,
        "JobVersion": 1,
        "NodeID": execution.node_id,
        "ComputeState": {"StateType": EXECUTION_STATE_CODES[execution.state],
                         "Message": execution.message},
        # As Bacalhau's: an execution that has ended is no longer wanted running.
        "DesiredState": {"StateType": DESIRED_STATE_CODES[
            "Stopped" if execution.state.is_terminal else execution.desired_state.value],
                         "Message": ""},
        "PublishedResult": published_spec_config(execution.published)
        if execution.published else None,
        "RunOutput": {
            "Stdout": run_output.get("stdout", ""),
            "StdoutTruncated": bool(run_output.get("stdout_truncated", False)),
            "stderr": run_output.get("stderr", ""),
            "StderrTruncated": bool(run_output.get("stderr_truncated", False)),
            "ExitCode": execution.exit_code if execution.exit_code is not None else 0,
            "ErrorMsg": execution.message if execution.state == ExecutionState.FAILED else "",
        } if execution.run_output is not None or execution.exit_code is not None else None,
        "Revision": execution.revision,
        "CreateTime": _ns(execution.create_time_ms),
        "ModifyTime": _ns(execution.modify_time_ms),
    }


def _topic(event: Event) -> str:
    """Bacalhau's event topic for one of our history entries."""
    if event.kind == JOB_STATE_UPDATE:
        return "Submission" if event.previous_state is None else "State Update"
    if event.kind == EXECUTION_STATE_UPDATE:
        return "Execution"
    return event.kind


def event_json(event: Event) -> dict[str, Any]:
    """A history entry as Bacalhau's ``JobHistory``; execution states are its integers."""
    execution_level = event.execution_id is not None
    details = {str(k): v if isinstance(v, str) else json.dumps(v)
               for k, v in (event.details or {}).items()}
    if event.new_state in ("Failed", "Stopped") and not execution_level:
        details.setdefault("IsError", "true")
    if event.new_state and not execution_level:
        details.setdefault("NewState", event.new_state)
    out: dict[str, Any] = {
        "SeqNum": event.seq,
        "Type": "ExecutionLevel" if execution_level else "JobLevel",
        "JobID": event.job_id,
        "JobVersion": 1,
        "Time": rfc3339(event.time_ms),
        "Event": {"Message": event.message, "Topic": _topic(event),
                  "Timestamp": rfc3339(event.time_ms), "Details": details},
    }
    if execution_level:
        out["ExecutionID"] = event.execution_id
        out["ExecutionState"] = {
            "Previous": _execution_code(event.previous_state),
            "New": _execution_code(event.new_state),
        }
    else:
        out["JobState"] = {"Previous": event.previous_state or "Undefined",
                           "New": event.new_state or "Undefined"}
    return out


def _execution_code(state: str | None) -> int:
    try:
        return EXECUTION_STATE_CODES[ExecutionState(state)] if state else 0
    except ValueError:
        return 0


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise HTTPException(400, f"invalid next_token {token!r}: pass back a NextToken as given")


def history_page(events: list[Event], *, job_terminal: bool, event_type: str = "all",
                 execution_id: str = "", limit: int = 0, next_token: str | None = None,
                 ) -> dict[str, Any]:
    """One page of a job's history, as Bacalhau pages it.

    ``NextToken`` stays non-empty while more events may come: until the job is in a final
    state and every event has been sent. Bacalhau's ``--wait`` polls with it and stops at the
    first empty one, so an empty token before the end would end the wait early.
    """
    if event_type not in ("all", "job", "execution"):
        raise HTTPException(400, f"event_type {event_type!r}: use all, job or execution")
    selected = [
        e for e in events
        if (event_type == "all" or (e.execution_id is None) == (event_type == "job"))
        and (not execution_id or e.execution_id == execution_id)
    ]
    offset = _page_offset(next_token)
    page = selected[offset:offset + limit] if limit else selected[offset:]
    end = offset + len(page)
    more = end < len(selected) or not job_terminal
    return {"Items": [event_json(e) for e in page],
            "NextToken": _page_token(end) if more else ""}


#: The longest a ``GET .../jobs/{id}?wait=`` holds its answer back.
MAX_JOB_WAIT_SECONDS = 30.0


async def resolve_job_id(store: Store, id_or_prefix: str) -> JobRecord:
    """A job by full ID or unique prefix; 404/400 with a helpful message otherwise."""
    record = await store.get_job(id_or_prefix)
    if record is not None:
        return record
    matches = await store.find_job_ids(id_or_prefix, limit=11) if id_or_prefix else []
    if not matches:
        raise HTTPException(404, f"job {id_or_prefix!r} not found")
    if len(matches) > 1:
        shown = ", ".join(matches[:10])
        raise HTTPException(400, f"{id_or_prefix!r} matches several jobs ({shown}); give more")
    record = await store.get_job(matches[0])
    assert record is not None
    return record


#: The longest a followed log stream goes without looking at its job again (it looks at
#: once when the job or one of its executions changes).
LOG_FOLLOW_POLL_SECONDS = 0.5

#: How long a presigned S3 URL handed out by ``/results`` stays valid.
PRESIGN_EXPIRY_SECONDS = 1800


def _outside_publisher_spec(published: dict[str, Any], job: Job, execution_id: str,
                            node_id: str) -> str | None:
    """Why an S3 location a compute node's record names is not one the job's publisher
    spec could have produced; None when it is."""
    spec = job.task.publisher
    s3 = published.get("S3", {})
    if spec.type != "s3":
        return f"the job publishes to {spec.type}, not S3"
    for field in ("Bucket", "Endpoint", "Region"):
        given, allowed = s3.get(field) or "", spec.params.get(field) or ""
        # Endpoint and Region the job leaves to the node are the node's own defaults.
        if (allowed or field == "Bucket") and given != allowed:
            return f"{field} {given!r} is not the job's {allowed!r}"
    compressed = bool(s3.get("Compress", True))
    if compressed != bool(spec.params.get("Compress", False)):
        return "its compression is not the job's"
    if not key_fits_template(s3.get("Key", ""), spec.params.get("Key", ""), job_id=job.id or "",
                             execution_id=execution_id, node_id=node_id, compressed=compressed):
        return f"key {s3.get('Key', '')!r} does not fit the job's {spec.params.get('Key', '')!r}"
    return None


async def _presigned(
    published: dict[str, Any], outputs: tuple[ManifestEntry, ...] = ()
) -> dict[str, Any]:
    """Bacalhau's ``s3PreSigned`` result params, signed with this node's credentials.

    Uncompressed results are one object per file under a prefix: each file of the
    signed manifest gets its own URL in ``Files``, and ``PreSignedURL`` is empty.
    """
    import trio

    from .publisher.s3 import s3_client

    s3 = published.get("S3", {})
    source = {
        "Bucket": s3.get("Bucket", ""),
        "ChecksumSHA256": s3.get("Checksum", ""),
        "Endpoint": s3.get("Endpoint", ""),
        "Filter": "",
        "Key": s3.get("Key", ""),
        "Region": s3.get("Region", ""),
        "VersionID": s3.get("VersionID", ""),
    }

    compressed = s3.get("Compress", True)

    def sign() -> tuple[str, list[dict[str, str]]]:
        client = s3_client(source["Endpoint"] or None, source["Region"] or None)

        def url(params: dict[str, str]) -> str:
            return client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=PRESIGN_EXPIRY_SECONDS
            )

        if not compressed:
            prefix = source["Key"].rstrip("/")
            files = [
                {"Path": entry.path,
                 "PreSignedURL": url({"Bucket": source["Bucket"], "Key": f"{prefix}/{entry.path}"})}
                for entry in outputs
            ]
            return "", files
        params = {"Bucket": source["Bucket"], "Key": source["Key"]}
        if source["VersionID"] and source["VersionID"] != "null":
            params["VersionId"] = source["VersionID"]
        return url(params), []

    try:
        signed, files = await trio.to_thread.run_sync(sign)
    except Exception as exc:  # no credentials, bad endpoint: say so, keep the rest usable
        signed, files = "", []
        source["Error"] = f"cannot presign: {exc}"
    answer: dict[str, Any] = {"PreSignedURL": signed, "SourceSpec": source}
    if not compressed:
        answer["Files"] = files
    return answer


FollowLogs = Callable[[str, str], AsyncIterator[tuple[int, bytes]]]


async def log_frames(store: Store, job_id: str, follow_logs: FollowLogs, *, follow: bool,
                     only: str = "") -> AsyncIterator[tuple[str, int, str]]:
    """A job's output as ``(execution ID, 1 or 2, text)``: stdout is 1, stderr 2.

    Without ``follow``: what the executions that ended printed (the tails they reported).
    With it: each execution's output live from its node while it runs (or what it printed,
    once it has ended), until the job ends; an execution is shown once.
    """
    shown: set[str] = set()
    while True:
        record = await resolve_job_id(store, job_id)
        for execution in await store.list_executions(record.job.id or ""):
            if (execution.execution_id in shown or execution.state == ExecutionState.BID_REJECTED
                    or (only and not execution.execution_id.startswith(only))):
                continue
            live = follow and execution.state in (ExecutionState.RUNNING,
                                                  ExecutionState.PUBLISHING)
            if not (live or execution.state.is_terminal or not follow):
                continue  # not started yet: look again
            shown.add(execution.execution_id)
            if live:
                decoders = {kind: codecs.getincrementaldecoder("utf-8")("replace")
                            for kind in (1, 2)}
                try:
                    async for kind, data in follow_logs(execution.node_id,
                                                        execution.execution_id):
                        yield execution.execution_id, kind, decoders[kind].decode(data)
                    continue
                except MeshError as exc:
                    log.info("live logs of %s: %s; showing what it reported",
                             execution.execution_id, exc)
                    execution = await _when_ended(store, execution)
            output = execution.run_output or {}
            for kind, key in ((1, "stdout"), (2, "stderr")):
                if output.get(key):
                    yield execution.execution_id, kind, str(output[key])
        if not follow or record.state.is_terminal:
            return
        # An execution that starts running is a change to the job: looked at once.
        await store.wait_for_job(record.job.id or "", LOG_FOLLOW_POLL_SECONDS)


async def _when_ended(store: Store, execution: ExecutionRecord) -> ExecutionRecord:
    """``execution`` once it has ended (its reported output is then complete)."""
    while not execution.state.is_terminal:
        await trio.sleep(LOG_FOLLOW_POLL_SECONDS)
        execution = await store.get_execution(execution.execution_id) or execution
    return execution


def add_job_routes(app: Api, store: Store,
                   ready_requester: Callable[[], Awaitable[Requester | None]],
                   results_dir: Any, follow_logs: FollowLogs, api_key: str = "") -> None:
    encoded_job = EncodedJobs()

    async def need_requester() -> Requester:
        requester = await ready_requester()
        if requester is None:
            raise HTTPException(400, "this node is not an orchestrator (start it without "
                                     "--compute alone to accept jobs)")
        return requester

    async def submit(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Submit ``{"Job": {...}}``; answers ``{"JobID", "EvaluationID", "Warnings"}``.

        The rest of Bacalhau's ``PutJobRequest`` (``Credential``, ``Namespace``,
        ``IdempotencyToken``, ``Force``) is accepted and dropped: the credential is never
        stored or sent anywhere.
        """
        document = body.get("Job")
        if not isinstance(document, dict):
            raise HTTPException(400, 'the body must be {"Job": {...job spec...}}')
        # What Bacalhau's CLI sends for a job it has not submitted yet (ID "", State
        # Undefined, zero times) describes nothing: the node sets all of these.
        document = {k: v for k, v in document.items() if k.lower() not in (
            "state", "version", "revision", "createtime", "modifytime")
            and not (k.lower() == "id" and not v)}
        try:
            job = Job.from_dict(document)
        except SpecError as exc:
            raise HTTPException(400, str(exc)) from None
        if (too_big := job_too_big(job.to_dict())) is not None:
            raise HTTPException(400, too_big)
        try:
            job_id = await (await need_requester()).submit(job)
        except StoreError as exc:  # a full disk, say: nothing of the job was kept
            raise HTTPException(503, f"the job was not stored: {exc}") from None
        return {"JobID": job_id, "EvaluationID": f"ev-{job_id[2:]}", "Warnings": []}

    app.put(f"{API}/jobs", tags=["orchestrator"], response_model="PutJobResponse")(submit)
    app.post(f"{API}/jobs", tags=["orchestrator"], include_in_schema=False,
             response_model="PutJobResponse")(submit)

    @app.get(f"{API}/jobs", tags=["orchestrator"], response_model="ListJobsResponse")
    async def list_jobs(
        limit: int = Query(100, ge=1, le=1000),
        next_token: str | None = None,
        labels: list[str] = Query([]),
    ) -> Response:
        """Jobs newest first, ``limit`` per page; pass ``NextToken`` back as ``next_token``.
        ``labels`` (repeatable) are selectors on the jobs' labels, as ``bacalhau job list``
        sends them."""
        selectors = label_selectors(labels)
        items: list[bytes] = []
        token = next_token or None
        try:
            while True:  # a page is ``limit`` matching jobs, however many are filtered out
                records, token = await store.list_jobs(limit - len(items), after=token)
                items += [encoded_job(r) for r in records
                          if all(c.matches(r.job.labels) for c in selectors)]
                if len(items) >= limit or not token:
                    break
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        # Joined from each job's kept encoding: validating and encoding every job anew
        # was a sixth of the daemon's work for a page of 650 jobs.
        return Response(b'{"Items":[' + b",".join(items) + b'],"NextToken":'
                        + _encode(token or "") + b"}", media_type="application/json")

    @app.get(f"{API}/jobs/{{job_id}}", tags=["orchestrator"],
             response_model="GetJobResponse", response_model_exclude_unset=True)
    async def get_job(job_id: str, include: str = "",
                      wait: float = Query(0, ge=0, le=MAX_JOB_WAIT_SECONDS)) -> dict[str, Any]:
        """One job (by ID or unique prefix); ``include=executions,history`` adds them.

        ``wait`` (seconds, a bacnode extension): a job not yet terminal is answered once it
        is, or once it or one of its executions changes, or when the wait is over, so that
        a client following a job learns of each change at once without polling."""
        wanted = {part.strip() for part in include.split(",") if part.strip()}
        unknown = wanted - {"executions", "history"}
        if unknown:
            raise HTTPException(400, f"include: unknown {', '.join(sorted(unknown))}; "
                                     "use executions and/or history")
        record = await resolve_job_id(store, job_id)
        if wait and not record.state.is_terminal:
            record = await store.wait_for_job(record.job.id or "", wait) or record
        answer: dict[str, Any] = {"Job": job_json(record)}
        if "history" in wanted:
            events = await store.history(record.job.id or "")
            answer["History"] = {"Items": [event_json(e) for e in events], "NextToken": ""}
        if "executions" in wanted:
            items = await store.list_executions(record.job.id or "")
            answer["Executions"] = {"Items": [execution_json(e, record.job.namespace)
                                              for e in items], "NextToken": ""}
        return answer

    @app.get(f"{API}/jobs/{{job_id}}/versions", tags=["orchestrator"],
             response_model="ListJobsResponse", response_model_exclude_unset=True)
    async def versions(job_id: str) -> dict[str, Any]:
        """A job's versions: bacnode jobs have one, as submitted."""
        return {"Items": [job_json(await resolve_job_id(store, job_id))], "NextToken": ""}

    @app.put(f"{API}/jobs/{{job_id}}/rerun", tags=["orchestrator"],
             responses={501: "ApiError"})
    async def rerun(job_id: str) -> None:
        """Not offered: a bacnode job runs its one version once."""
        record = await resolve_job_id(store, job_id)
        raise HTTPException(501, f"bacnode does not rerun jobs: a job has one version and runs "
                                 f"once; submit its spec again as a new job (bacnode describe "
                                 f"{record.job.id} shows it)")

    @app.get(f"{API}/jobs/{{job_id}}/executions", tags=["orchestrator"],
             response_model="ListJobExecutionsResponse")
    async def executions(job_id: str) -> dict[str, Any]:
        """The job's executions with their state, run output and published results."""
        record = await resolve_job_id(store, job_id)
        items = await store.list_executions(record.job.id or "")
        return {"Items": [execution_json(e, record.job.namespace) for e in items],
                "NextToken": ""}

    @app.get(f"{API}/jobs/{{job_id}}/history", tags=["orchestrator"],
             response_model="ListJobHistoryResponse", response_model_exclude_unset=True)
    async def history(
        job_id: str,
        event_type: str = "all",
        execution_id: str = "",
        limit: int = Query(0, ge=0),
        next_token: str | None = None,
    ) -> dict[str, Any]:
        """State changes of the job and its executions, in order, ``limit`` at a time."""
        record = await resolve_job_id(store, job_id)
        events = await store.history(record.job.id or "")
        return history_page(events, job_terminal=record.state.is_terminal,
                            event_type=event_type, execution_id=execution_id, limit=limit,
                            next_token=next_token)

    @app.get(f"{API}/jobs/{{job_id}}/results", tags=["orchestrator"],
             response_model="ListJobResultsResponse")
    async def results(job_id: str, request: Request, unverified: bool = False,
                      ) -> dict[str, Any]:
        """Where each execution's results are, as Bacalhau's downloaders take them, with
        the signed result record (base64 envelope) that ``bacnode get`` verifies them by.

        A verified job's are those of the group its verdict accepted; without a ``Verified``
        verdict, none, unless ``unverified`` asks for every result revealed."""
        record = await resolve_job_id(store, job_id)
        accepted: set[str] | None = None
        verification = verification_json(record)
        if verification is not None and not unverified:
            if verification["State"] != "Verified":
                raise HTTPException(409, f"job {record.job.id} is not verified "
                                         f"({verification['State']}): its results are "
                                         "withheld; fetch them with --unverified")
            accepted = {execution for group in verification["Groups"]
                        if group["Digest"] == verification["Accepted"]
                        for execution in group["Executions"]}
        items = []
        for result, envelope in await store.list_results(record.job.id or ""):
            if accepted is not None and result.execution_id not in accepted:
                continue
            published = dict(result.published)
            source = published.get("StorageSource")
            item = published_spec_config(published)
            if source == "S3":
                problem = _outside_publisher_spec(published, record.job, result.execution_id,
                                                  result.node_id)
                if problem is not None:
                    # This node signs with its own credentials: only what the job allowed.
                    log.warning("not presigning the result of %s: %s", result.execution_id,
                                problem)
                    continue
                item = {"Type": "s3PreSigned",
                        "Params": await _presigned(published, result.outputs)}
            elif source == "IPFS":
                item = {"Type": "ipfs", "Params": {"CID": published.get("CID", "")}}
            elif source == "Local":
                base = str(request.base_url).rstrip("/")
                path = f"{API}/executions/{result.execution_id}/results.tar.gz"
                url = base + path
                if api_key:  # a downloader sends no header: the URL carries the permission
                    url += f"?sig={download_signature(api_key, path)}"
                item = {"Type": "urlDownload", "Params": {"URL": url}}
            item.update(
                {
                    "ExecutionID": result.execution_id,
                    "NodeID": result.node_id,
                    "ExitCode": result.exit_code,
                    "SignedRecord": base64.b64encode(envelope).decode(),
                }
            )
            items.append(item)
        return {"Items": items, "NextToken": ""}

    @app.get(f"{API}/jobs/{{job_id}}/logs", tags=["orchestrator"],
             response_model="JobLogsResponse")
    async def logs(job_id: str, follow: bool = False) -> Any:
        """The stdout and stderr tails of the job's executions (Bacalhau's CLI asks for
        the same path as a WebSocket: see ``logs_stream``). With ``follow=true``: one JSON
        object per line, ``{"ExecutionID", "Type": 1|2, "Line"}``, as output is written,
        until the job ends."""
        record = await resolve_job_id(store, job_id)
        if follow:
            async def lines() -> AsyncIterator[bytes]:
                async for execution_id, kind, text in log_frames(
                        store, job_id, follow_logs, follow=True):
                    yield json.dumps({"ExecutionID": execution_id, "Type": kind,
                                      "Line": text}).encode() + b"\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")
        items = []
        for execution in await store.list_executions(record.job.id or ""):
            if execution.state == ExecutionState.BID_REJECTED:
                continue
            output = execution.run_output or {}
            items.append({"ExecutionID": execution.execution_id, "NodeID": execution.node_id,
                          "State": execution.state.value,
                          "Stdout": output.get("stdout", ""), "Stderr": output.get("stderr", "")})
        return {"Items": items, "JobState": record.state.value}

    @app.websocket(f"{API}/jobs/{{job_id}}/logs")
    async def logs_stream(websocket: WebSocket, job_id: str) -> None:
        """Bacalhau's log stream: ``{"value": {"Type": 1|2, "Line": ...}}`` messages of
        stdout (1) and stderr (2), then a normal close. With ``follow=true`` output comes as
        it is written, until the job ends; ``execution_id`` picks one execution."""
        await websocket.accept()
        follow = websocket.query_params.get("follow", "").lower() == "true"
        only = websocket.query_params.get("execution_id", "")
        try:
            async for _, kind, text in log_frames(store, job_id, follow_logs, follow=follow,
                                                  only=only):
                await websocket.send_json({"value": {"Type": kind, "Line": text}})
        except HTTPException as exc:
            await websocket.send_json({"error": str(exc.detail)})
        except WebSocketDisconnect:
            return
        await websocket.close(code=1000)

    @app.delete(f"{API}/jobs/{{job_id}}", tags=["orchestrator"],
                response_model="StopJobResponse")
    async def stop(job_id: str, request: Request, reason: str = "") -> dict[str, Any]:
        """Stop the job: its running containers are killed; it ends Stopped. The reason
        comes from the query or, as Bacalhau's CLI sends it, the JSON body's ``reason``."""
        record = await resolve_job_id(store, job_id)
        if not reason:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("reason"), str):
                reason = body["reason"]
        if record.state.is_terminal:
            raise HTTPException(400, f"job {record.job.id} is already {record.state.value}")
        await (await need_requester()).stop_job(record.job.id or "", reason or "stopped by user")
        return {"JobID": record.job.id, "EvaluationID": f"ev-{(record.job.id or '')[2:]}",
                "Warnings": []}

    async def results_tar(execution_id: str) -> Path:
        try:
            tar_path = await results_dir(execution_id)
        except MeshError as exc:
            raise HTTPException(502, f"fetching results of {execution_id}: {exc}") from None
        if tar_path is None:
            raise HTTPException(404, f"no results for {execution_id} on this node: unknown, or "
                                     "removed after the results retention "
                                     "(--results-retention-hours)")
        return tar_path

    @app.get(f"{API}/executions/{{execution_id}}/results.tar", tags=["orchestrator"])
    async def download(execution_id: str) -> FileResponse:
        """The results of an execution that ran on this node, as a tar archive."""
        return FileResponse(await results_tar(execution_id), media_type="application/x-tar")

    @app.get(f"{API}/executions/{{execution_id}}/results.tar.gz", tags=["orchestrator"])
    async def download_gzip(execution_id: str) -> StreamingResponse:
        """The same tar, gzipped as it is sent: what Bacalhau's URL downloader fetches for
        ``local`` results (it unpacks ``.tar.gz`` files only)."""
        return StreamingResponse(_gzip_chunks(await results_tar(execution_id)),
                                 media_type="application/gzip")


async def _gzip_chunks(path: Path) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    with open(path, "rb") as handle:
        while True:
            chunk = await trio.to_thread.run_sync(handle.read, 1 << 20)
            if not chunk:
                break
            packed = await trio.to_thread.run_sync(compressor.compress, chunk)
            if packed:
                yield packed
    yield compressor.flush()
