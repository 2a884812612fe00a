"""Routes declared as FastAPI declares them, served by Starlette; FastAPI only for the schema.

FastAPI and pydantic were a sixth of an idle daemon's memory (about 16 MiB of 90: their
modules, pydantic-core, and the validators built for each route), for what a handler of
this API needs from them: path and query parameters converted and range-checked, a JSON
body, errors as JSON. :class:`Api` does that with Starlette (FastAPI's own base) and the
standard library, reading each handler's signature once.

What FastAPI is kept for is the OpenAPI document: the first request for it replays the
route table into a FastAPI app (``Query`` and ``Body`` become FastAPI's, response models
are looked up by name in ``node.api_models``) and keeps what it generates, so a node that
is never asked never loads either library.

Response models no longer check each answer at run time. With ``BACNODE_API_CHECK_RESPONSES``
set (the tests set it), every dict a handler returns is validated against its model and must
come out unchanged, which is what FastAPI would have sent.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

#: Set (to anything but "" or "0") to check every answer against its response model.
CHECK_RESPONSES_ENV = "BACNODE_API_CHECK_RESPONSES"

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class QueryParam:
    """``Query(...)``: where a query parameter's value must lie, and the name it goes by."""

    default: Any = ...
    alias: str | None = None
    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class BodyParam:
    """``Body(...)``: the parameter is the request's JSON body."""

    default: Any = ...


# Named and called as FastAPI's, so that a handler reads as it would there.
def Query(default: Any = ..., *, alias: str | None = None,
          ge: float | None = None, le: float | None = None) -> Any:
    return QueryParam(default, alias, ge, le)


def Body(default: Any = ...) -> Any:
    return BodyParam(default)


class InvalidRequest(HTTPException):
    """A parameter that cannot be read: a 400 naming it, in pydantic's words."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(400, f"invalid request: {where}: {problem}")


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # "path", "query", "body", "request" or "websocket"
    annotation: Any = str
    query: QueryParam = QueryParam()

    @property
    def key(self) -> str:
        return self.query.alias or self.name


@dataclass
class RouteSpec:
    path: str
    methods: tuple[str, ...]
    handler: Handler
    parameters: tuple[Parameter, ...]
    #: A class name in ``node.api_models``.
    response_model: str | None = None
    response_model_exclude_unset: bool = False
    #: status -> a class name in ``node.api_models``
    responses: dict[int, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    include_in_schema: bool = True
    max_body_size: int | None = None


def _parameters(handler: Handler, path: str) -> tuple[Parameter, ...]:
    hints = typing.get_type_hints(handler)
    out = []
    for name, declared in inspect.signature(handler).parameters.items():
        annotation = hints.get(name, str)
        default = declared.default
        if annotation is Request:
            out.append(Parameter(name, "request", annotation))
        elif annotation is WebSocket:
            out.append(Parameter(name, "websocket", annotation))
        elif f"{{{name}}}" in path:
            out.append(Parameter(name, "path", annotation))
        elif isinstance(default, BodyParam):
            out.append(Parameter(name, "body", annotation))
        else:
            query = default if isinstance(default, QueryParam) else QueryParam(
                ... if default is inspect.Parameter.empty else default)
            out.append(Parameter(name, "query", annotation, query))
    return tuple(out)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _convert(text: str, annotation: Any, where: str) -> Any:
    """One query or path value as ``annotation`` (str, int, float, bool, or optional)."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not NoneType]
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise InvalidRequest(where, "Input should be a valid integer, unable to parse "
                                        "string as an integer") from None
    if annotation is float:
        try:
            number = float(text)
        except ValueError:
            raise InvalidRequest(where, "Input should be a valid number, unable to parse "
                                        "string as a number") from None
        if not math.isfinite(number):
            raise InvalidRequest(where, "Input should be a finite number")
        return number
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidRequest(where, "Input should be a valid boolean, unable to interpret "
                                    "input")
    return text


def _query_value(request: Request, parameter: Parameter) -> Any:
    where = f"query.{parameter.key}"
    if typing.get_origin(parameter.annotation) is list:
        (item,) = typing.get_args(parameter.annotation)
        values = [_convert(text, item, where)
                  for text in request.query_params.getlist(parameter.key)]
        if not values and parameter.query.default is not ...:
            return list(parameter.query.default)
        return values
    text = request.query_params.get(parameter.key)
    if text is None:
        if parameter.query.default is ...:
            raise InvalidRequest(where, "Field required")
        return parameter.query.default
    value = _convert(text, parameter.annotation, where)
    if parameter.query.ge is not None and value < parameter.query.ge:
        raise InvalidRequest(where, "Input should be greater than or equal to "
                                    + _number(parameter.query.ge))
    if parameter.query.le is not None and value > parameter.query.le:
        raise InvalidRequest(where, "Input should be less than or equal to "
                                    + _number(parameter.query.le))
    return value


class _BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, "Request Entity Too Large")


def _counting(receive: Any, limit: int) -> Any:
    """``receive`` that refuses a body once it grows past ``limit`` bytes (a body without a
    Content-Length is counted as it arrives)."""
    received = 0

    async def counted() -> Any:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge()
        return message

    return counted


def _check_response(route: RouteSpec, content: Any) -> None:
    """What FastAPI sent for ``content``, through the route's response model, must be it."""
    from . import api_models

    model = getattr(api_models, route.response_model or "")
    through = model.model_validate(content).model_dump(
        mode="json", by_alias=True, exclude_unset=route.response_model_exclude_unset)
    sent = json.loads(json.dumps(content))
    if through != sent:
        raise AssertionError(f"{' '.join(route.methods)} {route.path} answered what its "
                             f"response model {route.response_model} changes: "
                             + "; ".join(_differences(sent, through)[:5]))


def _differences(sent: Any, through: Any, where: str = "") -> list[str]:
    """Where two JSON values differ, as ``path: sent -> model`` (``-`` for absent)."""
    if isinstance(sent, dict) and isinstance(through, dict):
        return [difference for key in sorted({*sent, *through}, key=str)
                for difference in _differences(sent.get(key, "-"), through.get(key, "-"),
                                               f"{where}.{key}")]
    if isinstance(sent, list) and isinstance(through, list) and len(sent) == len(through):
        return [difference for index, (a, b) in enumerate(zip(sent, through, strict=True))
                for difference in _differences(a, b, f"{where}[{index}]")]
    return [] if sent == through else [f"{where or '.'}: {sent!r} -> {through!r}"]


def _http_endpoint(route: RouteSpec, body_limit: int, check: bool) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        limit = route.max_body_size or body_limit
        request = Request(request.scope, _counting(request.receive, limit))
        arguments: dict[str, Any] = {}
        for parameter in route.parameters:
            if parameter.kind == "request":
                arguments[parameter.name] = request
            elif parameter.kind == "path":
                arguments[parameter.name] = _convert(request.path_params[parameter.name],
                                                     parameter.annotation,
                                                     f"path.{parameter.name}")
            elif parameter.kind == "body":
                try:
                    body = await request.json()
                except ValueError:
                    raise InvalidRequest("body", "JSON decode error") from None
                if typing.get_origin(parameter.annotation) is dict and not isinstance(
                        body, dict):
                    raise InvalidRequest("body", "Input should be a valid dictionary")
                arguments[parameter.name] = body
            else:
                arguments[parameter.name] = _query_value(request, parameter)
        content = await route.handler(**arguments)
        if isinstance(content, Response):
            return content
        if check and route.response_model:
            _check_response(route, content)
        return JSONResponse(content)

    return endpoint


def _websocket_endpoint(route: RouteSpec) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        arguments = {parameter.name: websocket if parameter.kind == "websocket"
                     else websocket.path_params[parameter.name]
                     for parameter in route.parameters}
        await route.handler(**arguments)

    return endpoint


class Api:
    """Collects routes (``@api.get(path, response_model="Name")``) and builds the app."""

    def __init__(self, *, title: str, version: str, description: str, openapi_url: str,
                 error_model: str, error_statuses: tuple[int, ...],
                 max_body_size: int) -> None:
        self.title = title
        self.version = version
        self.description = description
        self.openapi_url = openapi_url
        self.error_model = error_model
        self.error_statuses = error_statuses
        self.max_body_size = max_body_size
        self.routes: list[RouteSpec] = []
        self.websockets: list[RouteSpec] = []
        self.exception_handlers: dict[type[Exception], Callable[..., Any]] = {}
        self._openapi: bytes | None = None

    def route(self, method: str, path: str, *, response_model: str | None = None,
              response_model_exclude_unset: bool = False,
              responses: dict[int, str] | None = None, tags: list[str] | None = None,
              include_in_schema: bool = True,
              max_body_size: int | None = None) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self.routes.append(RouteSpec(
                path, (method,), handler, _parameters(handler, path), response_model,
                response_model_exclude_unset, dict(responses or {}), tuple(tags or ()),
                include_in_schema, max_body_size))
            return handler

        return declare

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **options)

    def websocket(self, path: str) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            parameters = _parameters(handler, path)
            others = [p.name for p in parameters if p.kind not in ("websocket", "path")]
            if others:  # a WebSocket handler reads its query itself: nothing converts it
                raise TypeError(f"WebSocket route {path} takes only the socket and path "
                                f"parameters, not {', '.join(others)}")
            self.websockets.append(RouteSpec(path, (), handler, parameters))
            return handler

        return declare

    def exception_handler(self, kind: type[Exception]
                          ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def declare(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.exception_handlers[kind] = handler
            return handler

        return declare

    def build(self) -> Starlette:
        """The ASGI app serving every route declared so far, and the OpenAPI document."""
        check = os.environ.get(CHECK_RESPONSES_ENV, "") not in ("", "0")
        routes: list[BaseRoute] = [
            Route(self.openapi_url, self._serve_openapi, methods=["GET"])]
        routes += [Route(route.path, _http_endpoint(route, self.max_body_size, check),
                         methods=list(route.methods)) for route in self.routes]
        routes += [WebSocketRoute(route.path, _websocket_endpoint(route))
                   for route in self.websockets]
        return Starlette(routes=routes, exception_handlers=dict(self.exception_handlers))

    async def _serve_openapi(self, request: Request) -> Response:
        if self._openapi is None:
            import trio

            from protocol.dependencies import missing_dependency_message

            try:
                self._openapi = await trio.to_thread.run_sync(self.openapi_document)
            except ModuleNotFoundError as exc:
                message = missing_dependency_message(exc, "bacnode serve")
                if message is None:
                    raise
                raise HTTPException(500, message.removeprefix("bacnode serve: error: ")
                                    ) from None
        return Response(self._openapi, media_type="application/json")

    def openapi_document(self) -> bytes:
        """The OpenAPI document FastAPI generates for these routes (loads FastAPI)."""
        import fastapi

        from . import api_models

        app = fastapi.FastAPI(
            title=self.title, version=self.version, description=self.description,
            responses={status: {"model": getattr(api_models, self.error_model)}
                       for status in self.error_statuses})
        for route in self.routes:
            if not route.include_in_schema:
                continue
            app.add_api_route(
                route.path, _described(route), methods=list(route.methods),
                response_model=(getattr(api_models, route.response_model)
                                if route.response_model else None),
                responses={status: {"model": getattr(api_models, name)}
                           for status, name in route.responses.items()},
                tags=list(route.tags))
        return json.dumps(app.openapi(), separators=(",", ":")).encode()


def _described(route: RouteSpec) -> Callable[..., Any]:
    """A stand-in for ``route.handler`` whose signature FastAPI reads: our ``Query`` and
    ``Body`` as FastAPI's own. It is never called."""
    import fastapi

    parameters = []
    for parameter in route.parameters:
        if parameter.kind == "request":
            default: Any = inspect.Parameter.empty
            annotation: Any = fastapi.Request
        elif parameter.kind == "body":
            default, annotation = fastapi.Body(...), parameter.annotation
        elif parameter.kind == "query":
            query = parameter.query
            default = fastapi.Query(query.default, alias=query.alias, ge=query.ge, le=query.le)
            annotation = parameter.annotation
        else:
            default, annotation = inspect.Parameter.empty, parameter.annotation
        parameters.append(inspect.Parameter(parameter.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=default, annotation=annotation))

    async def described(**_: Any) -> None:
        raise NotImplementedError  # pragma: no cover

    described.__name__ = route.handler.__name__
    described.__doc__ = route.handler.__doc__
    described.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return described
