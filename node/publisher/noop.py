"""``noop``: publishes nothing; the record still carries the manifest of what was made."""

from __future__ import annotations

from typing import Any

from protocol.messages import ManifestEntry

from .base import PublishRequest, manifest_for


class NoopPublisher:
    publisher_type = "noop"
    manifest_first = True
    reads_results = False  # the manifest is all it needs

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        manifest = await manifest_for(request)
        return {"StorageSource": "Noop", "Name": ""}, manifest
