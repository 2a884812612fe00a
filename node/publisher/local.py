"""``local``: results stay on the compute node; peers fetch them over
``/bacnode/results/1`` and users over the daemon's ``results.tar.gz`` URL."""

from __future__ import annotations

from typing import Any

from protocol.messages import ManifestEntry

from .base import PublishRequest, manifest_for


class LocalPublisher:
    publisher_type = "local"
    manifest_first = True
    reads_results = True

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        manifest = await manifest_for(request)
        location = {"StorageSource": "Local",
                    "Name": f"local://{request.node_id}/{request.execution_id}"}
        return location, manifest
