"""The blockstore: verified reads, crash-safe writes, pins and garbage collection."""

from __future__ import annotations

import os
import time
from pathlib import Path

from node.ipfs.blockstore import Blockstore
from node.ipfs.files import export_to, import_path
from node.store import open_store
from protocol.unixfs import import_bytes


def test_a_block_damaged_on_disk_is_never_served(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    blocks, root = import_bytes(b"x" * 300_000)
    store.put_many(blocks)
    leaf = blocks[0]
    path = next(p for p in (tmp_path / "blocks").rglob("*") if p.name == leaf.cid.multihash.hex())
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.get(leaf.cid) is None
    assert not path.exists(), "a damaged block is deleted so that it is fetched again"
    assert store.get(root.cid) is not None


def test_leftovers_of_an_interrupted_write_are_removed(tmp_path: Path) -> None:
    Blockstore(tmp_path / "blocks")
    leftover = tmp_path / "blocks" / "tmp" / "1220abcd.123.456"
    leftover.write_bytes(b"half a block")
    store = Blockstore(tmp_path / "blocks")
    assert not leftover.exists()
    assert store.usage() == (0, 0)


def test_gc_keeps_pinned_dags_and_young_blocks(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    kept_blocks, kept = import_bytes(os.urandom(600_000))
    old_blocks, old = import_bytes(os.urandom(600_000))
    young_blocks, young = import_bytes(os.urandom(1000))
    store.put_many(kept_blocks + old_blocks)
    an_hour_ago = time.time() - 3600
    for path in (tmp_path / "blocks").rglob("*"):
        if path.is_file():
            os.utime(path, (an_hour_ago, an_hour_ago))
    store.put_many(young_blocks)

    deleted, freed = store.collect_garbage([kept.cid], grace_seconds=600)

    assert deleted == len(old_blocks) and freed == sum(len(b.data) for b in old_blocks)
    assert all(store.has(b.cid) for b in kept_blocks + young_blocks)
    assert not any(store.has(b.cid) for b in old_blocks)


def test_directory_round_trip_with_manifest(tmp_path: Path) -> None:
    source = tmp_path / "results"
    (source / "outputs" / "empty").mkdir(parents=True)
    (source / "outputs" / "big.bin").write_bytes(os.urandom(700_000))
    (source / "stdout").write_text("hi\n")
    (source / "exitCode").write_text("0")
    (source / "outputs" / "link").symlink_to("/etc/passwd")
    store = Blockstore(tmp_path / "blocks")

    root, manifest = import_path(source, store.put_many)

    assert [entry.path for entry in manifest] == ["exitCode", "outputs/big.bin", "stdout"]
    out = tmp_path / "out"
    export_to(root.cid, lambda cid: store.get(cid) or b"", out)
    big = "outputs/big.bin"
    assert (out / big).read_bytes() == (source / big).read_bytes()
    assert (out / "outputs" / "empty").is_dir()
    assert not (out / "outputs" / "link").exists(), "symbolic links are not published"


async def test_pins_expire_and_a_later_expiry_wins(tmp_path: Path) -> None:
    async with open_store(tmp_path / "state.db") as store:
        await store.pin("QmA", "results", 1000, 2000)
        await store.pin("QmA", "again", 1500, 5000)
        await store.pin("QmB", "results", 1000, 3000)
        await store.pin("QmC", "forever", 1000, None)
        assert await store.live_pins(2500) == ["QmA", "QmB", "QmC"]
        assert await store.live_pins(4000) == ["QmA", "QmC"]
        assert await store.live_pins(9000) == ["QmC"]
