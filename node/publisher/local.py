"""``local``: results stay on the compute node; peers fetch them over
``/bacnode/results/1`` and users over the daemon's ``results.tar.gz`` URL."""

from __future__ import annotations

from typing import Any

import trio

from protocol.messages import ManifestEntry

from .base import PublishRequest, manifest_of


class LocalPublisher:
    publisher_type = "local"

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        manifest = await trio.to_thread.run_sync(manifest_of, request.results_dir)
        location = {"StorageSource": "Local",
                    "Name": f"local://{request.node_id}/{request.execution_id}"}
        return location, manifest
