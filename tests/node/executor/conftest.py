"""Fixtures for the executor and storage tests: a Docker executor per test, a local HTTP server."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.executor.base import ExecutionRequest
from protocol.jobspec import EngineSpec


@dataclass
class HttpServer:
    """A threading HTTP server on 127.0.0.1 serving ``root``; ``hits`` lists request paths.

    Besides files it serves ``/redirect/PATH`` (302 to /PATH), ``/stall`` (5 s before
    answering) and ``/nolength/N`` (N zero bytes without a Content-Length).
    """

    root: Path
    port: int
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()
    state = HttpServer(root=root, port=0)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # http.server names it so
            state.hits.append(self.path)
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + self.path[len("/redirect/") :])
                self.end_headers()
                return
            if self.path.startswith("/stall"):
                threading.Event().wait(5)
            if self.path.startswith("/nolength/"):  # a body of N bytes, length not declared
                self.send_response(200)
                self.end_headers()
                self.wfile.write(bytes(int(self.path.rsplit("/", 1)[1])))
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # clients that hang up early (size caps, cancels) are part of the tests

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def node_id() -> str:
    return f"test-node-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["engine-socket", "docker-py"])
def executor(request: pytest.FixtureRequest, docker_client: Any, busybox_image: str,
             node_id: str) -> Iterator[Any]:
    """A DockerExecutor with a node ID of its own, speaking to dockerd's socket itself (as
    a node does on a plain socket) or through docker-py (as behind TLS or ssh); checks no
    container of it is left."""
    from node.executor.docker import LABEL_NODE, DockerExecutor

    if request.param == "docker-py":
        yield DockerExecutor(node_id, client=docker_client)
    else:
        yield DockerExecutor(node_id)
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_NODE}={node_id}"})
    for container in left:
        container.remove(force=True)
    assert not left, f"containers left behind: {[c.id[:12] for c in left]}"


def make_request(
    tmp_path: Path,
    *,
    command: list[str] | None = None,
    entrypoint: list[str] | None = None,
    image: str = "busybox:latest",
    **kwargs: Any,
) -> ExecutionRequest:
    """A request for busybox running ``sh -c COMMAND...`` (or the given entrypoint)."""
    if entrypoint is None:
        entrypoint = ["sh", "-c"]
    execution_id = f"e-{uuid.uuid4()}"
    engine_fields = {
        key: kwargs.pop(key)
        for key in ("environment_variables", "working_directory")
        if key in kwargs
    }
    return ExecutionRequest(
        execution_id=execution_id,
        job_id=f"j-{uuid.uuid4()}",
        engine=EngineSpec(
            image=image,
            entrypoint=tuple(entrypoint),
            parameters=tuple(command or ()),
            **engine_fields,
        ),
        results_dir=tmp_path / execution_id,
        **kwargs,
    )
