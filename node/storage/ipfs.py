"""``ipfs://CID`` inputs: fetched over bitswap from the mesh (and --ipfs-peer), verified
block by block, then written under the staging dir and mounted read-only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from protocol.cid import Cid, IpfsFormatError
from protocol.jobspec import InputSource
from protocol.quantities import format_bytes

from .base import Storage, StorageError, describe_source, make_readable, staging_time_left

#: How long to look for a CID when the job sets no timeout.
DEFAULT_FETCH_SECONDS = 300.0


class IpfsStorage(Storage):
    source_type: ClassVar[str] = "ipfs"

    def __init__(self, ipfs: Any, candidates: Callable[[], list[Any]]) -> None:
        self.ipfs = ipfs
        self.candidates = candidates

    async def size_hint(self, source: InputSource) -> int | None:
        return None  # unknown until the root block is here: checked before the container starts

    async def stage(self, source: InputSource, staging_dir: Path) -> Path:
        name = describe_source(source)
        try:
            root = Cid.parse(str(source.params.get("CID", "")))
        except IpfsFormatError as exc:
            raise StorageError(f"input {name}: {exc}") from None
        timeout = staging_time_left(DEFAULT_FETCH_SECONDS)
        staging_dir.mkdir(parents=True, exist_ok=True)

        def check_disk(total: int) -> None:
            free = shutil.disk_usage(staging_dir).free
            # Twice: once in the blockstore, once written out for the container.
            if 2 * total > free:
                raise StorageError(
                    f"input {name} is {format_bytes(total)}; this node has "
                    f"{format_bytes(free)} of disk free, not enough to stage it"
                )

        from node.ipfs import FetchError

        try:
            await self.ipfs.fetch(root, self.candidates(), timeout=timeout, on_root=check_disk)
        except FetchError as exc:
            raise StorageError(f"input {name}: {exc}") from None
        except IpfsFormatError as exc:
            raise StorageError(f"input {name}: {exc}") from None
        target = staging_dir / "ipfs"
        try:
            await self.ipfs.export(root, target)
        except (FetchError, IpfsFormatError) as exc:
            raise StorageError(f"input {name}: {exc}") from None
        make_readable(target)
        return target
