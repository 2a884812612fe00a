"""The API key: who may use a node's API when more than this machine's user can reach it.

A request must carry ``Authorization: Bearer <key>`` (what Bacalhau's CLI sends from
``BACALHAU_API_KEY``), except a liveness probe, and a results download whose URL the node
signed (the ``urlDownload`` results it hands out are fetched by downloaders that send no
header, as presigned S3 URLs are).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

#: What answers without the key: liveness and readiness, for supervisors and load
#: balancers, and the dashboard's static page (its data comes from the API, with the key).
OPEN_PATHS = frozenset({"/api/v1/agent/alive", "/readyz", "/"})
#: The dashboard's static files.
OPEN_PREFIXES = ("/ui/",)
#: What a signed URL may fetch: one execution's results.
_SIGNABLE = re.compile(r"/api/v1/orchestrator/executions/[^/]+/results\.tar(\.gz)?")


def download_signature(key: str, path: str) -> str:
    """The ``sig`` query parameter that lets a GET of ``path`` through without the key."""
    return hmac.new(key.encode(), path.encode(), hashlib.sha256).hexdigest()


class RequireKey:
    """ASGI middleware: refuse, with ``error(401, message)``, what carries neither the key
    nor a valid signature."""

    def __init__(self, app: Any, key: str, error: Callable[[int, str], Any]) -> None:
        self.app = app
        self.key = key
        self.expected = f"Bearer {key}".encode()
        self.error = error

    def _allowed(self, scope: Any) -> bool:
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return True
        if scope.get("method") == "GET" and _SIGNABLE.fullmatch(path):
            signature = parse_qs(scope.get("query_string", b"").decode()).get("sig", [""])[0]
            return hmac.compare_digest(signature, download_signature(self.key, path))
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        given = dict(scope["headers"]).get(b"authorization")
        message = ("the API key given is not this node's" if given else
                   "this API needs its key: send it as 'Authorization: Bearer <key>' (the "
                   "CLIs read BACNODE_API_KEY or BACALHAU_API_KEY); the node keeps it in "
                   "<data dir>/api-key")
        await self.error(401, message)(scope, receive, send)
