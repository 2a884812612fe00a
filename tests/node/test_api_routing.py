"""The API's routing (``node.api_routing``): parameters read as FastAPI read them, errors as
Bacalhau's ``APIError``, answers checked against their models, and FastAPI and pydantic
loaded only for the OpenAPI document. Requests go to the ASGI app in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from node.api import error_response
from node.api_routing import CHECK_RESPONSES_ENV, Api, Body, Query


def make_app(check: bool = False, monkeypatch: pytest.MonkeyPatch | None = None) -> Starlette:
    api = Api(title="t", version="1", description="d", openapi_url="/openapi.json",
              error_model="ApiError", error_statuses=(400,), max_body_size=64)

    @api.exception_handler(HTTPException)
    async def as_api_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @api.get("/items/{item_id}", response_model="AliveResponse")
    async def item(item_id: str, limit: int = Query(10, ge=1, le=30),
                   wait: float = 0, verbose: bool = False,
                   labels: list[str] = Query([]), state: str = Query("", alias="filter-state"),
                   token: str | None = None) -> dict[str, Any]:
        return {"Status": json.dumps([item_id, limit, wait, verbose, labels, state, token])}

    @api.post("/required")
    async def required(arg: str) -> dict[str, Any]:
        return {"arg": arg}

    @api.put("/jobs", response_model="PutJobResponse")
    async def submit(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return {"JobID": str(body.get("Job")), "EvaluationID": "e", "Warnings": []}

    @api.get("/drifted", response_model="AliveResponse")
    async def drifted() -> dict[str, Any]:
        return {"Status": "OK", "Extra": "not in the model"}

    if monkeypatch is not None:
        monkeypatch.setenv(CHECK_RESPONSES_ENV, "1" if check else "")
    return api.build()


async def call(app: Starlette, method: str, path: str, query: str = "",
               chunks: tuple[bytes, ...] = (b"",),
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[int, Any]:
    pending = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
               for i, chunk in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "headers": list(headers),
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


async def test_parameters_are_read_converted_and_defaulted() -> None:
    app = make_app()
    status, answer = await call(app, "GET", "/items/a1", "limit=30&wait=1.5&verbose=true"
                                "&labels=x%3Dy&labels=z&filter-state=on&token=t")
    assert status == 200
    assert json.loads(answer["Status"]) == ["a1", 30, 1.5, True, ["x=y", "z"], "on", "t"]
    status, answer = await call(app, "GET", "/items/b")
    assert json.loads(answer["Status"]) == ["b", 10, 0, False, [], "", None]


@pytest.mark.parametrize(("query", "message"), [
    ("limit=0", "invalid request: query.limit: Input should be greater than or equal to 1"),
    ("limit=31", "invalid request: query.limit: Input should be less than or equal to 30"),
    ("limit=ten", "invalid request: query.limit: Input should be a valid integer, unable to "
                  "parse string as an integer"),
    ("wait=soon", "invalid request: query.wait: Input should be a valid number, unable to "
                  "parse string as a number"),
    ("wait=inf", "invalid request: query.wait: Input should be a finite number"),
    ("verbose=maybe", "invalid request: query.verbose: Input should be a valid boolean, "
                      "unable to interpret input"),
])
async def test_a_bad_parameter_is_a_400_naming_it(query: str, message: str) -> None:
    status, answer = await call(make_app(), "GET", "/items/a", query)
    assert (status, answer["Message"], answer["Code"]) == (400, message, "BadRequest")


async def test_a_missing_required_parameter_is_named() -> None:
    status, answer = await call(make_app(), "POST", "/required")
    assert (status, answer["Message"]) == (400, "invalid request: query.arg: Field required")
    assert await call(make_app(), "POST", "/required", "arg=x") == (200, {"arg": "x"})


async def test_a_json_body_is_read_and_must_be_an_object() -> None:
    app = make_app()
    status, answer = await call(app, "PUT", "/jobs", chunks=(b'{"Job": ', b'"j"}'))
    assert (status, answer["JobID"]) == (200, "j")
    status, answer = await call(app, "PUT", "/jobs", chunks=(b"[1]",))
    assert (status, answer["Message"]) == (
        400, "invalid request: body: Input should be a valid dictionary")
    status, answer = await call(app, "PUT", "/jobs", chunks=(b"{nope",))
    assert (status, answer["Message"]) == (400, "invalid request: body: JSON decode error")


async def test_a_body_growing_past_the_limit_is_refused_as_it_arrives() -> None:
    # No Content-Length: the body is counted as its chunks come (the limit here is 64).
    status, answer = await call(make_app(), "PUT", "/jobs",
                                chunks=(b'{"Job": "' + b"x" * 40, b"y" * 40 + b'"}'))
    assert (status, answer["Code"]) == (413, "BadRequest")


async def test_unknown_paths_and_methods_are_api_errors() -> None:
    app = make_app()
    assert (await call(app, "GET", "/nowhere"))[0] == 404
    status, answer = await call(app, "DELETE", "/jobs")
    assert (status, answer["Code"]) == (405, "BadRequest")


async def test_checked_answers_must_be_what_the_model_would_send(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unchecked = make_app(check=False, monkeypatch=monkeypatch)
    assert await call(unchecked, "GET", "/drifted") == (
        200, {"Status": "OK", "Extra": "not in the model"})
    checked = make_app(check=True, monkeypatch=monkeypatch)
    with pytest.raises(AssertionError, match="response model AliveResponse changes"):
        await call(checked, "GET", "/drifted")
    assert (await call(checked, "GET", "/items/a"))[0] == 200


async def test_the_openapi_document_describes_parameters_bounds_and_models() -> None:
    status, document = await call(make_app(), "GET", "/openapi.json")
    assert status == 200
    operation = document["paths"]["/items/{item_id}"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["item_id"]["in"] == "path"
    assert parameters["limit"]["schema"]["minimum"] == 1
    assert parameters["limit"]["schema"]["maximum"] == 30
    assert "filter-state" in parameters
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/AliveResponse"
    assert operation["responses"]["400"]["content"]["application/json"]["schema"][
        "$ref"] == "#/components/schemas/ApiError"
    assert "requestBody" in document["paths"]["/jobs"]["put"]


def test_a_websocket_route_with_query_parameters_is_refused_when_declared() -> None:
    api = Api(title="t", version="1", description="d", openapi_url="/openapi.json",
              error_model="ApiError", error_statuses=(), max_body_size=64)

    async def stream(websocket: WebSocket, job_id: str, follow: bool = False) -> None:
        raise AssertionError  # pragma: no cover

    with pytest.raises(TypeError, match="not follow"):
        api.websocket("/jobs/{job_id}/logs")(stream)


def test_serving_the_api_loads_neither_fastapi_nor_pydantic() -> None:
    program = (
        "import sys, trio\n"
        "from tests.node.test_api_routing import call, make_app\n"
        "app = make_app()\n"
        "trio.run(call, app, 'GET', '/items/a')\n"
        "print('before', 'fastapi' in sys.modules, 'pydantic' in sys.modules)\n"
        "trio.run(call, app, 'GET', '/openapi.json')\n"
        "print('after', 'fastapi' in sys.modules, 'pydantic' in sys.modules)\n"
    )
    unchecked = {k: v for k, v in os.environ.items() if k != CHECK_RESPONSES_ENV}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=True, env=unchecked)
    assert result.stdout.split("\n")[:2] == ["before False False", "after True True"]
