"""``ipfs``: add the results to this node's IPFS blockstore (kubo's CIDs) and pin them;
one read of each file gives both the CID and the manifest's SHA-256s."""

from __future__ import annotations

from typing import Any

from protocol.messages import ManifestEntry

from .base import PublishRequest


class IpfsPublisher:
    publisher_type = "ipfs"
    manifest_first = False  # it hashes each file as it adds it
    reads_results = True

    def __init__(self, ipfs: Any) -> None:
        self.ipfs = ipfs

    async def publish(self, request: PublishRequest) -> tuple[dict[str, Any],
                                                              list[ManifestEntry]]:
        root, manifest = await self.ipfs.add_path(
            request.results_dir, reason=f"results of {request.execution_id}")
        location = {"StorageSource": "IPFS", "Name": f"ipfs://{root.cid}", "CID": str(root.cid)}
        return location, manifest
