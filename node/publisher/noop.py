"""``noop``: publishes nothing; the record still carries the manifest of what was made."""

from __future__ import annotations

from typing import Any

import trio

from protocol.messages import ManifestEntry

from .base import PublishRequest, manifest_of


class NoopPublisher:
    publisher_type = "noop"

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        manifest = await trio.to_thread.run_sync(manifest_of, request.results_dir)
        return {"StorageSource": "Noop", "Name": ""}, manifest
