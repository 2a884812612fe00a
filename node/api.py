"""The daemon's local HTTP API, shaped after Bacalhau's v1 REST API.

Starlette (on anyio, so it runs under hypercorn's trio worker) serves routes declared as
FastAPI declares them (``node/api_routing.py``); FastAPI generates the OpenAPI document at
``/api/v1/openapi.json`` when it is first asked for. Handlers only read state the daemon
keeps; they never block the event loop.
"""

from __future__ import annotations

import base64
import logging
import platform
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

import protocol
from protocol.errors import LocalProtocolError
from protocol.messages import Capacity, NodeInfo
from protocol.selectors import Constraint, parse_selector

from .api_auth import RequireKey
from .api_routing import Api, Query
from .logs import ACCESS_LOGGER

API_PREFIX = "/api/v1"
#: The largest request body the API reads (a job spec is far smaller: see
#: ``protocol.messages.MAX_JOB_BYTES``); bigger ones are refused before they are read.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Routes that take uploads, spooled to disk as they arrive: the disk bounds them
#: (``api_ipfs.MAX_UPLOAD_BYTES``), not ``MAX_REQUEST_BYTES``.
UPLOAD_PATHS = frozenset({f"{API_PREFIX}/ipfs/add"})


class ApiBindError(Exception):
    """The API's address cannot be bound."""


class NodeView(Protocol):
    """What the API needs from the daemon."""

    peer_id: str

    def local_node_info(self) -> NodeInfo: ...

    async def list_nodes(self) -> list[NodeStatus]: ...

    def mesh_stats(self, since_ms: int = 0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class NodeStatus:
    info: NodeInfo
    connected: bool
    last_seen_ms: int
    first_seen_ms: int


def resources_json(capacity: Capacity) -> dict[str, Any]:
    """Bacalhau's ``Resources``: CPU in cores (float64), memory and disk in bytes, GPUs."""
    return {
        "CPU": capacity.cpu_milli / 1000,
        "Memory": capacity.memory,
        "Disk": capacity.disk,
        "GPU": capacity.gpu,
    }


def rfc3339(ms: int) -> str | None:
    """A Unix time in milliseconds as Bacalhau's JSON times (RFC 3339, UTC); None for 0."""
    if not ms:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def node_info_json(info: NodeInfo) -> dict[str, Any]:
    """A node as Bacalhau's ``NodeInfo``.

    Bacalhau knows two node types, ``Requester`` and ``Compute``; a node with both roles is
    a ``Compute`` node that also accepts jobs (``Roles`` says which roles it has).
    """
    compute = "compute" in info.roles
    out: dict[str, Any] = {
        "NodeID": info.node_id,
        "NodeType": "Compute" if compute else "Requester",
        "Labels": dict(info.labels),
        "SupportedProtocols": [protocol.PROTOCOL_NAME],
        # Another node's build is known only by its version.
        "BacalhauVersion": {"Major": "", "Minor": "", "GitVersion": f"v{info.version}",
                            "GitCommit": "", "BuildDate": None, "GOOS": "", "GOARCH": "",
                            "Protocol": None, "Python": None, "Libp2p": None},
        "Addresses": list(info.addresses),
        "Roles": list(info.roles),
    }
    if compute:
        out["ComputeNodeInfo"] = {
            "ExecutionEngines": list(info.engines),
            "StorageSources": list(info.storages),
            "Publishers": list(info.publishers),
            "MaxCapacity": resources_json(info.total),
            "QueueCapacity": {"CPU": 0.0, "Memory": 0, "Disk": 0, "GPU": 0},
            "AvailableCapacity": resources_json(info.free),
            "MaxJobRequirements": resources_json(info.total),
            "RunningExecutions": info.running_executions,
            "EnqueuedExecutions": 0,
            # bacnode's own: installed engines that cannot run anything now, and why
            "UnavailableEngines": dict(info.unavailable),
        }
    else:
        out["ComputeNodeInfo"] = None
    return out


def node_state_json(status: NodeStatus, reputation: Any = None,
                    transport: str | None = None) -> dict[str, Any]:
    """A node as Bacalhau's ``NodeState``: ``Info``, ``Membership``, ``ConnectionState``
    (with how we reach it: ``Transport``); with this node's record of it as a requester
    (``Reputation``), when it has one."""
    connection = "CONNECTED" if status.connected else "DISCONNECTED"
    connection_state = {
        "Status": connection,
        "LastHeartbeat": rfc3339(status.last_seen_ms),
        "ConnectedSince": rfc3339(status.first_seen_ms) if status.connected else None,
        "DisconnectedSince": None if status.connected else rfc3339(status.last_seen_ms),
        "Transport": transport,
    }
    return {
        "Info": node_info_json(status.info),
        "Membership": "APPROVED",
        "Connection": connection,
        "ConnectionState": connection_state,
        # bacnode's own: when this node first and last heard from it
        "FirstSeen": rfc3339(status.first_seen_ms),
        "LastSeen": rfc3339(status.last_seen_ms),
        "Reputation": None if reputation is None else {
            **{k.capitalize(): v for k, v in reputation.to_dict().items()},
            "Score": reputation.score},
    }


def _version_json() -> dict[str, Any]:
    """Bacalhau's flat ``BuildVersionInfo``, plus bacnode's protocol, Python and libp2p."""
    major, minor, *_ = protocol.__version__.split(".")
    try:
        libp2p_version = metadata.version("libp2p")
    except metadata.PackageNotFoundError:
        libp2p_version = "unknown"
    return {
        "Major": major,
        "Minor": minor,
        "GitVersion": f"v{protocol.__version__}",
        "GitCommit": "",
        "BuildDate": None,
        "GOOS": platform.system().lower(),
        "GOARCH": _GOARCH.get(platform.machine(), platform.machine()),
        "Protocol": protocol.PROTOCOL_NAME,
        "Python": platform.python_version(),
        "Libp2p": libp2p_version,
    }


#: platform.machine() -> Go's GOARCH names, which Bacalhau reports.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}

#: Bacalhau's error codes (bacerrors) by HTTP status.
_ERROR_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                405: "BadRequest", 409: "ResourceInUse", 413: "BadRequest", 422: "ValidationError",
                429: "TooManyRequests", 500: "InternalError", 501: "NotImplemented",
                502: "NetworkFailure", 503: "ServiceUnavailable", 504: "TimeOut",
                507: "ResourceExhausted"}


def error_response(status: int, message: str) -> JSONResponse:
    """An error as Bacalhau's ``APIError``, which its CLI prints as ``Error: <Message>``."""
    return JSONResponse(status_code=status, content={
        "Status": status,
        "Message": message,
        "Code": _ERROR_CODES.get(status, "UnknownError"),
        "Component": "bacnode",
        "RequestID": "",
    })


def _too_large_message(method: str, path: str) -> str:
    return (f"the request body is larger than the {MAX_REQUEST_BYTES // 2**20} MiB {method} "
            f"{path} takes; put data in a job's inputs (S3, IPFS or a URL), not in the request")


class _DeclaredSizeLimit:
    """Refuse, as an ``APIError``, a request whose Content-Length is over the limit before a
    byte of its body is read. Bodies without one are counted as they arrive (see
    ``api_routing``); uploads (``ipfs add``) are exempt."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in UPLOAD_PATHS:
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
                response = error_response(413, _too_large_message(scope["method"],
                                                                  scope["path"]))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _config_json(config: Any) -> dict[str, Any]:
    """The node's settings for ``agent config``: where Bacalhau has the same setting, under
    its name (``API``, ``DataDir``, ``Labels``, ``Orchestrator``, ``Compute``), everything
    as bacnode names it under ``Bacnode``. Nothing secret is there: the swarm key is a path,
    and credentials come from the AWS chain, never from the config."""
    if config is None:
        return {}
    settings: dict[str, Any] = {}
    for name, value in vars(config).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        settings[name] = value
    return {
        "API": {"Host": config.api_host, "Port": config.api_port},
        "DataDir": str(config.data_dir),
        "Labels": dict(config.labels),
        "Orchestrator": {"Enabled": bool(config.orchestrator)},
        "Compute": {"Enabled": bool(config.compute),
                    "Heartbeat": {"Interval": f"{config.heartbeat_seconds:g}s"}},
        "Bacnode": settings,
    }


def create_app(node: NodeView) -> Starlette:
    app = Api(
        title="bacnode",
        version=protocol.__version__,
        description="Local API of a bacnode daemon (Bacalhau v1 compatible).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        error_model="ApiError",
        error_statuses=(400, 404, 500, 502, 503, 504),
        max_body_size=MAX_REQUEST_BYTES,
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405 and message == "Method Not Allowed":
            message = f"bacnode does not serve {request.method} {request.url.path}"
        elif exc.status_code == 413:
            message = _too_large_message(request.method, request.url.path)
        return error_response(exc.status_code, message)

    @app.get(f"{API_PREFIX}/auth", tags=["auth"], response_model="ListAuthMethodsResponse")
    async def auth_methods() -> dict[str, Any]:
        """How to authenticate: one ``challenge`` method, as a Bacalhau node without users
        offers. The local API has no users; it listens on loopback unless told otherwise."""
        phrase = base64.b64encode(secrets.token_bytes(32)).decode()
        return {"Methods": {"ClientKey": {"type": "challenge",
                                          "params": {"InputPhrase": phrase}}},
                "NextToken": ""}

    @app.post(f"{API_PREFIX}/auth/{{method}}", tags=["auth"],
               response_model="AuthnResponse")
    async def authenticate(method: str) -> dict[str, Any]:
        """Answers a client's challenge; every client is accepted, as no request needs one."""
        if method != "ClientKey":
            raise HTTPException(404, f"unknown authentication method {method!r}; use ClientKey")
        return {"Authentication": {"success": True, "token": secrets.token_urlsafe(24)}}

    @app.get(f"{API_PREFIX}/agent/alive", tags=["agent"], response_model="AliveResponse")
    async def alive() -> dict[str, str]:
        """Liveness: answers as long as the daemon's event loop runs."""
        return {"Status": "OK"}

    if hasattr(node, "readiness"):
        @app.get("/readyz", tags=["agent"], response_model="ReadyResponse",
                 responses={503: "ReadyResponse"})
        async def ready() -> JSONResponse:
            """Readiness, for supervisors and load balancers: the compute and orchestrator
            sides have started, the store answers, the mesh is joined (a peer is connected,
            when the node has bootstrap peers), and dockerd answers on a compute node that
            runs Docker. 503 with the failing checks
            otherwise; liveness is ``/api/v1/agent/alive``."""
            checks = await node.readiness()
            ready = all(state == "ok" for state in checks.values())
            return JSONResponse(status_code=200 if ready else 503,
                                content={"Ready": ready, "Checks": checks})

    @app.get(f"{API_PREFIX}/agent/version", tags=["agent"],
             response_model="BuildVersionInfoModel")
    async def version() -> dict[str, Any]:
        """bacnode's version as Bacalhau's ``BuildVersionInfo``, with protocol, Python and
        libp2p versions."""
        return _version_json()

    @app.get(f"{API_PREFIX}/agent/node", tags=["agent"], response_model="NodeInfoModel")
    async def this_node() -> dict[str, Any]:
        """This node, as other nodes see it (Bacalhau's ``NodeInfo``)."""
        return node_info_json(node.local_node_info())

    @app.get(f"{API_PREFIX}/agent/config", tags=["agent"],
             response_model="AgentConfigResponse")
    async def config() -> dict[str, Any]:
        """The node's effective settings (flags, config file and environment merged)."""
        return {"config": _config_json(getattr(node, "config", None))}

    @app.get(f"{API_PREFIX}/agent/mesh", tags=["agent"])
    async def mesh(since_ms: int = 0) -> dict[str, Any]:
        """Peers, accepted and dropped gossip messages by reason, and gossip delays.

        ``since_ms`` limits the delay samples to heartbeats received since then.
        """
        return node.mesh_stats(since_ms)

    @app.get(f"{API_PREFIX}/orchestrator/nodes", tags=["orchestrator"],
             response_model="ListNodesResponse")
    async def list_nodes(
        labels: list[str] = Query([]),
        filter_status: str = Query("", alias="filter-status"),
        filter_approval: str = Query("", alias="filter-approval"),
        limit: int = Query(0, ge=0),
        order_by: str = "",
        reverse: bool = False,
    ) -> dict[str, Any]:
        """Every node this node has heard from, this one included.

        ``labels`` (repeatable) are Kubernetes-style selectors, as ``bacalhau node list
        --labels``; ``filter-status`` is connected or disconnected; every node is approved.
        """
        selectors = label_selectors(labels)
        if order_by and order_by not in _NODE_ORDER:
            raise HTTPException(400, f"order_by {order_by!r}: use one of "
                                     f"{', '.join(sorted(_NODE_ORDER))}")
        status_wanted = filter_status.strip().upper()
        if status_wanted not in ("", "CONNECTED", "DISCONNECTED"):
            raise HTTPException(400, f"filter-status {filter_status!r}: use connected or "
                                     "disconnected")
        if filter_approval.strip().upper() not in ("", "APPROVED", "PENDING", "REJECTED"):
            raise HTTPException(400, f"filter-approval {filter_approval!r}: use approved, "
                                     "pending or rejected")
        approved_only = filter_approval.strip().upper() in ("", "APPROVED")
        reputation = getattr(node, "reputation_of", lambda node_id: None)
        transports = getattr(node, "peer_transports", dict)()
        states = [
            node_state_json(s, reputation(s.info.node_id), transports.get(s.info.node_id))
            for s in await node.list_nodes()
            if approved_only
            and all(c.matches(s.info.labels) for c in selectors)
            and (not status_wanted or ("CONNECTED" if s.connected else "DISCONNECTED")
                 == status_wanted)
        ]
        states.sort(key=_NODE_ORDER[order_by or "id"], reverse=reverse)
        listed = states[:limit] if limit else states
        # "Nodes" is what Bacalhau sends and its Go CLI reads; its Python client
        # (bacalhau-apiclient) reads "nodes". Go matches keys case-insensitively, so both
        # clients get the same list.
        return {"Nodes": listed, "nodes": listed, "NextToken": ""}

    @app.put(f"{API_PREFIX}/orchestrator/nodes/{{node_id}}", tags=["orchestrator"],
             responses={501: "ApiError"})
    @app.post(f"{API_PREFIX}/orchestrator/nodes", tags=["orchestrator"],
              responses={501: "ApiError"})
    async def update_node() -> None:
        """Bacalhau's approve, reject and delete: not offered, deliberately."""
        raise HTTPException(501, "bacnode nodes need no approval and cannot be rejected or "
                                 "deleted: every node that joins the mesh with a valid identity "
                                 "is APPROVED, and one that leaves turns DISCONNECTED; keep "
                                 "strangers out with a private network (--swarm-key)")

    @app.get(f"{API_PREFIX}/orchestrator/nodes/{{node_id}}", tags=["orchestrator"],
             response_model="GetNodeResponse")
    async def get_node(node_id: str) -> dict[str, Any]:
        """One node by ID or unique ID prefix."""
        statuses = await node.list_nodes()
        matches = [s for s in statuses if s.info.node_id.startswith(node_id)]
        if len(matches) != 1:
            detail = "no node" if not matches else f"{len(matches)} nodes"
            raise HTTPException(404 if not matches else 400, f"{detail} match {node_id!r}")
        reputation = getattr(node, "reputation_of", lambda node_id: None)
        transports = getattr(node, "peer_transports", dict)()
        state = node_state_json(matches[0], reputation(matches[0].info.node_id),
                                transports.get(matches[0].info.node_id))
        return {"Node": state, "node": state}  # both spellings: see list_nodes

    if hasattr(node, "metrics_snapshot"):
        add_metrics_route(app, lambda: getattr(node, "store", None))
        add_dashboard_routes(app)
    if getattr(node, "store", None) is not None:
        from .api_jobs import add_job_routes

        add_job_routes(app, node.store, node.ready_requester,  # type: ignore[attr-defined]
                       node.fetch_results_tar, node.follow_logs,  # type: ignore[attr-defined]
                       api_key=getattr(node, "api_key", ""))
    if hasattr(node, "ipfs_candidates"):
        from .api_ipfs import add_ipfs_routes

        add_ipfs_routes(app, lambda: node.ipfs, node.ipfs_candidates)  # type: ignore[attr-defined]
        from .api_kubo import add_kubo_rpc_routes

        add_kubo_rpc_routes(app, node.peer_id, lambda: node.ipfs,  # type: ignore[attr-defined]
                            node.ipfs_candidates)  # type: ignore[attr-defined]
    return app.build()


#: The dashboard's files, served as they are: no build step, nothing fetched from elsewhere.
DASHBOARD_DIR = Path(__file__).with_name("dashboard")
#: The page may load and call only this node (its API, its own files).
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_DASHBOARD_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def add_dashboard_routes(app: Api) -> None:
    """The web dashboard at ``/`` (node/dashboard/): static files that read this API."""

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html",
                            headers=_DASHBOARD_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    async def dashboard_file(name: str) -> Response:
        if name not in _DASHBOARD_FILES:
            raise HTTPException(404, f"the dashboard has no file {name!r}")
        return FileResponse(DASHBOARD_DIR / name, media_type=_DASHBOARD_FILES[name],
                            headers=_DASHBOARD_HEADERS)


def add_metrics_route(app: Api, store: Callable[[], Any]) -> None:
    from protocol.states import ExecutionState, JobState

    from . import metrics

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics, in its text format (see node/metrics.py)."""
        current = store()
        if current is not None:
            jobs, executions = await current.count_by_state()
            metrics.set_state_counts(metrics.JOBS, jobs, [state.value for state in JobState])
            metrics.set_state_counts(metrics.EXECUTIONS, executions,
                                     [state.value for state in ExecutionState])
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


def label_selectors(texts: list[str]) -> list[Constraint]:
    """``labels`` query values (one selector each, as Bacalhau's CLI sends them)."""
    try:
        return [c for text in texts for c in parse_selector(text)]
    except LocalProtocolError as exc:
        raise HTTPException(400, f"labels: {exc}") from None


def _free(state: dict[str, Any], name: str) -> float:
    compute = state["Info"].get("ComputeNodeInfo") or {}
    return float((compute.get("AvailableCapacity") or {}).get(name, 0))


#: ``bacalhau node list --order-by`` keys.
_NODE_ORDER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "id": lambda state: state["Info"]["NodeID"],
    "type": lambda state: state["Info"]["NodeType"],
    "status": lambda state: state["Connection"],
    "available_cpu": lambda state: _free(state, "CPU"),
    "available_memory": lambda state: _free(state, "Memory"),
    "available_disk": lambda state: _free(state, "Disk"),
    "available_gpu": lambda state: _free(state, "GPU"),
}


async def serve_api(
    app: Starlette,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    api_key: str = "",
    access_log: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns; reports the bound URLs once ready.
    With an ``api_key``, every request but a liveness probe must carry it; with
    ``access_log``, each request is logged (see node/logs.py)."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = logging.getLogger(ACCESS_LOGGER) if access_log else None
    # Errors (a handler that raised: a 500) go to our log, not nowhere.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    try:
        # Outermost, so that a declared size too large is refused before the body is read.
        guarded: Any = _DeclaredSizeLimit(app)
        if api_key:
            guarded = RequireKey(guarded, api_key, error_response)
        await hypercorn_serve(
            guarded, config, shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )
    except* OSError as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise ApiBindError(
            f"cannot serve the API on {host}:{port}: {getattr(error, 'strerror', None) or error}; "
            "is another bacnode running? choose another port with --api-port"
        ) from None
