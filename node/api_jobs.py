"""Job endpoints of the local API, after Bacalhau's ``/api/v1/orchestrator/jobs``.

Shapes follow Bacalhau's v1 REST API (``Job``, ``Items``/``NextToken``,
``ComputeState``…) so that Bacalhau clients work unchanged; times are Unix
nanoseconds as Bacalhau's are.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse

from protocol.errors import SpecError
from protocol.jobspec import Job
from protocol.messages import ManifestEntry
from protocol.states import ExecutionState

from .mesh import MeshError
from .requester import Requester
from .store import Event, ExecutionRecord, JobRecord, Store

API = "/api/v1/orchestrator"


def _ns(ms: int) -> int:
    return ms * 1_000_000


def job_json(record: JobRecord) -> dict[str, Any]:
    job = record.job.to_dict()
    job.update(
        {
            "ID": record.job.id,
            "State": {"StateType": record.state.value, "Message": record.state_message},
            "Version": 1,
            "Revision": record.revision,
            "CreateTime": _ns(record.create_time_ms),
            "ModifyTime": _ns(record.modify_time_ms),
            "Requester": record.requester,
        }
    )
    return job


def execution_json(execution: ExecutionRecord) -> dict[str, Any]:
    run_output = execution.run_output or {}
    return {
        "ID": execution.execution_id,
        "JobID": execution.job_id,
        "NodeID": execution.node_id,
        "ComputeState": {"StateType": execution.state.value, "Message": execution.message},
        "DesiredState": {"StateType": execution.desired_state.value, "Message": ""},
        "PublishedResult": execution.published or {},
        "RunOutput": {
            "Stdout": run_output.get("stdout", ""),
            "Stderr": run_output.get("stderr", ""),
            "ExitCode": run_output.get("exitCode", execution.exit_code),
        },
        "CreateTime": _ns(execution.create_time_ms),
        "ModifyTime": _ns(execution.modify_time_ms),
    }


def event_json(event: Event) -> dict[str, Any]:
    execution_level = event.execution_id is not None
    states = {"Previous": event.previous_state, "New": event.new_state}
    return {
        "Type": "ExecutionLevel" if execution_level else "JobLevel",
        "JobID": event.job_id,
        "ExecutionID": event.execution_id or "",
        "Time": _ns(event.time_ms),
        "Event": {"Message": event.message, "Type": event.kind, "Details": event.details or {}},
        "ExecutionState" if execution_level else "JobState": states,
    }


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


#: How long a presigned S3 URL handed out by ``/results`` stays valid.
PRESIGN_EXPIRY_SECONDS = 1800


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


def add_job_routes(app: FastAPI, store: Store, get_requester: Callable[[], Requester | None],
                   results_dir: Any) -> None:
    def need_requester() -> Requester:
        requester = get_requester()
        if requester is None:
            raise HTTPException(400, "this node is not an orchestrator (start it without "
                                     "--compute alone to accept jobs)")
        return requester

    @app.put(f"{API}/jobs", tags=["orchestrator"])
    async def submit(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Submit ``{"Job": {...}}``; answers ``{"JobID", "EvaluationID", "Warnings"}``."""
        document = body.get("Job")
        if not isinstance(document, dict):
            raise HTTPException(400, 'the body must be {"Job": {...job spec...}}')
        document = {k: v for k, v in document.items() if k not in ("ID", "State", "Version",
                    "Revision", "CreateTime", "ModifyTime")}
        try:
            job = Job.from_dict(document)
        except SpecError as exc:
            raise HTTPException(400, str(exc)) from None
        job_id = await need_requester().submit(job)
        return {"JobID": job_id, "EvaluationID": f"ev-{job_id[2:]}", "Warnings": []}

    @app.get(f"{API}/jobs", tags=["orchestrator"])
    async def list_jobs(
        limit: int = Query(100, ge=1, le=1000), next_token: str | None = None
    ) -> dict[str, Any]:
        """Jobs newest first, ``limit`` per page; pass ``NextToken`` back as ``next_token``."""
        try:
            records, token = await store.list_jobs(limit, after=next_token or None)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"Items": [job_json(r) for r in records], "NextToken": token or ""}

    @app.get(f"{API}/jobs/{{job_id}}", tags=["orchestrator"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """One job (by ID or unique prefix)."""
        return {"Job": job_json(await resolve_job_id(store, job_id))}

    @app.get(f"{API}/jobs/{{job_id}}/executions", tags=["orchestrator"])
    async def executions(job_id: str) -> dict[str, Any]:
        """The job's executions with their state, run output and published results."""
        record = await resolve_job_id(store, job_id)
        items = await store.list_executions(record.job.id or "")
        return {"Items": [execution_json(e) for e in items], "NextToken": ""}

    @app.get(f"{API}/jobs/{{job_id}}/history", tags=["orchestrator"])
    async def history(job_id: str) -> dict[str, Any]:
        """Every state change of the job and its executions, in order."""
        record = await resolve_job_id(store, job_id)
        events = await store.history(record.job.id or "")
        return {"Items": [event_json(e) for e in events], "NextToken": ""}

    @app.get(f"{API}/jobs/{{job_id}}/results", tags=["orchestrator"])
    async def results(job_id: str) -> dict[str, Any]:
        """Each execution's signed result record (base64 envelope) and where it was published."""
        record = await resolve_job_id(store, job_id)
        items = []
        for result, envelope in await store.list_results(record.job.id or ""):
            published = dict(result.published)
            item: dict[str, Any] = {
                "Type": published.get("StorageSource", "").lower(),
                "Params": published,
            }
            if published.get("StorageSource") == "S3":
                item = {
                    "Type": "s3PreSigned",
                    "Params": await _presigned(published, result.outputs),
                }
            item.update(
                {
                    "ExecutionID": result.execution_id,
                    "NodeID": result.node_id,
                    "ExitCode": result.exit_code,
                    "SignedRecord": base64.b64encode(envelope).decode(),
                }
            )
            items.append(item)
        return {"NextToken": "", "Results": items, "Items": items}

    @app.get(f"{API}/jobs/{{job_id}}/logs", tags=["orchestrator"])
    async def logs(job_id: str) -> dict[str, Any]:
        """The stdout and stderr tails of the job's executions."""
        record = await resolve_job_id(store, job_id)
        items = []
        for execution in await store.list_executions(record.job.id or ""):
            if execution.state == ExecutionState.BID_REJECTED:
                continue
            output = execution.run_output or {}
            items.append({"ExecutionID": execution.execution_id, "NodeID": execution.node_id,
                          "State": execution.state.value,
                          "Stdout": output.get("stdout", ""), "Stderr": output.get("stderr", "")})
        return {"Items": items, "JobState": record.state.value}

    @app.delete(f"{API}/jobs/{{job_id}}", tags=["orchestrator"])
    async def stop(job_id: str, reason: str = "stopped by user") -> dict[str, Any]:
        """Stop the job: its running containers are killed; it ends Stopped."""
        record = await resolve_job_id(store, job_id)
        if record.state.is_terminal:
            raise HTTPException(400, f"job {record.job.id} is already {record.state.value}")
        await need_requester().stop_job(record.job.id or "", reason)
        return {"JobID": record.job.id, "EvaluationID": "", "Warnings": []}

    @app.get(f"{API}/executions/{{execution_id}}/results.tar", tags=["orchestrator"])
    async def download(execution_id: str) -> FileResponse:
        """The results of an execution that ran on this node, as a tar archive."""
        try:
            tar_path = await results_dir(execution_id)
        except MeshError as exc:
            raise HTTPException(502, f"fetching results of {execution_id}: {exc}") from None
        if tar_path is None:
            raise HTTPException(404, f"no results for {execution_id} known to this node")
        return FileResponse(tar_path, media_type="application/x-tar")
