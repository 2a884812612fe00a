"""The daemon's local HTTP API, shaped after Bacalhau's v1 REST API.

FastAPI (on anyio, so it runs under hypercorn's trio worker) gives us request
validation and the OpenAPI document at ``/api/v1/openapi.json`` for free.
Handlers only read state the daemon keeps; they never block the event loop.
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import trio
from fastapi import FastAPI, HTTPException
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

import protocol
from protocol.messages import Capacity, NodeInfo
from protocol.quantities import format_bytes, format_cpu

API_PREFIX = "/api/v1"


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


def _capacity_json(capacity: Capacity) -> dict[str, Any]:
    return {
        "CPU": format_cpu(capacity.cpu_milli),
        "Memory": format_bytes(capacity.memory),
        "Disk": format_bytes(capacity.disk),
        "GPU": capacity.gpu,
    }


def _node_type(roles: tuple[str, ...]) -> str:
    if set(roles) == {"requester", "compute"}:
        return "Hybrid"
    return "Requester" if "requester" in roles else "Compute"


def node_state_json(status: NodeStatus) -> dict[str, Any]:
    """A node as Bacalhau's ``NodeState``: ``Info``, ``Membership``, ``Connection``."""
    info = status.info
    return {
        "Info": {
            "NodeID": info.node_id,
            "NodeType": _node_type(info.roles),
            "Labels": dict(info.labels),
            "Addresses": list(info.addresses),
            "BacalhauVersion": {"GitVersion": f"v{info.version}"},
            "ComputeNodeInfo": {
                "ExecutionEngines": list(info.engines),
                "StorageSources": list(info.storages),
                "Publishers": list(info.publishers),
                "MaxCapacity": _capacity_json(info.total),
                "AvailableCapacity": _capacity_json(info.free),
                "RunningExecutions": info.running_executions,
            }
            if "compute" in info.roles
            else None,
        },
        "Membership": "APPROVED",
        "Connection": "CONNECTED" if status.connected else "DISCONNECTED",
        "LastSeen": status.last_seen_ms,
        "FirstSeen": status.first_seen_ms,
    }


def _version_json() -> dict[str, Any]:
    major, minor, *_ = protocol.__version__.split(".")
    try:
        libp2p_version = metadata.version("libp2p")
    except metadata.PackageNotFoundError:
        libp2p_version = "unknown"
    return {
        "BuildVersionInfo": {
            "Major": major,
            "Minor": minor,
            "GitVersion": f"v{protocol.__version__}",
            "Protocol": protocol.PROTOCOL_NAME,
            "Python": platform.python_version(),
            "Libp2p": libp2p_version,
            "GOOS": platform.system().lower(),
            "GOARCH": platform.machine(),
        }
    }


def create_app(node: NodeView) -> FastAPI:
    app = FastAPI(
        title="bacnode",
        version=protocol.__version__,
        description="Local API of a bacnode daemon (Bacalhau v1 compatible).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.get(f"{API_PREFIX}/agent/alive", tags=["agent"])
    async def alive() -> dict[str, str]:
        """Liveness: answers as long as the daemon's event loop runs."""
        return {"Status": "OK"}

    @app.get(f"{API_PREFIX}/agent/version", tags=["agent"])
    async def version() -> dict[str, Any]:
        """bacnode, protocol, Python and libp2p versions."""
        return _version_json()

    @app.get(f"{API_PREFIX}/agent/node", tags=["agent"])
    async def this_node() -> dict[str, Any]:
        """This node, as other nodes see it."""
        info = node.local_node_info()
        return node_state_json(NodeStatus(info, True, 0, 0))

    @app.get(f"{API_PREFIX}/agent/mesh", tags=["agent"])
    async def mesh(since_ms: int = 0) -> dict[str, Any]:
        """Peers, accepted and dropped gossip messages by reason, and gossip delays.

        ``since_ms`` limits the delay samples to heartbeats received since then.
        """
        return node.mesh_stats(since_ms)

    @app.get(f"{API_PREFIX}/orchestrator/nodes", tags=["orchestrator"])
    async def list_nodes() -> dict[str, Any]:
        """Every node this node has heard from, this one included."""
        statuses = await node.list_nodes()
        return {"Nodes": [node_state_json(s) for s in statuses], "NextToken": ""}

    @app.get(f"{API_PREFIX}/orchestrator/nodes/{{node_id}}", tags=["orchestrator"])
    async def get_node(node_id: str) -> dict[str, Any]:
        """One node by ID or unique ID prefix."""
        statuses = await node.list_nodes()
        matches = [s for s in statuses if s.info.node_id.startswith(node_id)]
        if len(matches) != 1:
            detail = "no node" if not matches else f"{len(matches)} nodes"
            raise HTTPException(404 if not matches else 400, f"{detail} match {node_id!r}")
        return {"Node": node_state_json(matches[0])}

    if getattr(node, "store", None) is not None:
        from .api_jobs import add_job_routes

        add_job_routes(app, node.store, lambda: node.requester, node.fetch_results_tar)  # type: ignore[attr-defined]
    if hasattr(node, "ipfs_candidates"):
        from .api_ipfs import add_ipfs_routes

        add_ipfs_routes(app, lambda: node.ipfs, node.ipfs_candidates)  # type: ignore[attr-defined]
    return app


async def serve_api(
    app: FastAPI,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns; reports the bound URLs once ready."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    try:
        await hypercorn_serve(
            app, config, shutdown_trigger=shutdown_trigger, task_status=task_status
        )
    except* OSError as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise ApiBindError(
            f"cannot serve the API on {host}:{port}: {getattr(error, 'strerror', None) or error}; "
            "is another bacnode running? choose another port with --api-port"
        ) from None
