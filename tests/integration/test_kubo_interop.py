"""Interoperability with kubo, the reference IPFS node (built by scripts/setup.sh).

A real ``ipfs daemon`` (isolated: own repo, loopback only, no routing, see
``scripts.services.Kubo``) next to real bacnode daemons: both import the same tree to the
same CID, kubo fetches from bacnode over bitswap, and bacnode fetches from kubo through
``--ipfs-peer``, for ``bacnode ipfs get`` and for a job's ``-i ipfs://CID`` input; large
directories are HAMT-sharded the same way on both sides and read by both.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.daemons import Daemon, DaemonPool
from scripts.services import Kubo
from tests.protocol.ipfs_vectors import deep_sharded_tree, nested_sharded_tree, write_tree

pytestmark = pytest.mark.integration

CHUNK = 262_144
#: Seconds kubo or bacnode may take to fetch a few MB over loopback: ample, but a hang fails.
FETCH_TIMEOUT = 30


@pytest.fixture(scope="module")
def bacnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One bacnode daemon on loopback, shared by the tests that need no --ipfs-peer."""
    with DaemonPool(tmp_path_factory.mktemp("kubo-interop")) as pool:
        yield pool.start("bacnode")


def write_random_tree(root: Path, rng: random.Random) -> Path:
    """Nested dirs, an empty dir, an empty file, files at the chunk boundaries, ~3 MB, and
    names whose byte order differs from a naive sort (case, digits, spaces, non-ASCII)."""

    def data(size: int) -> bytes:
        return rng.randbytes(size)

    tree = root / "tree"
    (tree / "empty-dir").mkdir(parents=True)
    (tree / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (tree / "nested" / "also empty").mkdir()
    files = {
        "zero": b"",
        "one": data(1),
        "chunk": data(CHUNK),
        "chunk+1": data(CHUNK + 1),
        "three-mb.bin": data(3_000_000 + rng.randrange(CHUNK)),
        "B upper.txt": data(rng.randrange(1, 5000)),
        "a lower.txt": data(rng.randrange(1, 5000)),
        "10": data(17),
        "9": data(19),
        "ünïcødé ✓.txt": b"non-ASCII name\n",
        "nested/empty-file": b"",
        "nested/deeper/x.bin": data(rng.randrange(CHUNK, 2 * CHUNK)),
        "nested/deeper/deepest/leaf.txt": b"leaf\n",
    }
    for _ in range(20):
        files[f"nested/many/f{rng.randrange(10**6):06d}"] = data(rng.randrange(0, 3000))
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    return tree


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256 of a file | "dir"}`` for everything under ``root``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kubo_ok(kubo: Kubo, *args: str, timeout: float = 60) -> bytes:
    """``ipfs ARGS`` on ``kubo``; on failure, the error and the end of kubo's log."""
    done = kubo.run(*args, timeout=timeout)
    assert done.returncode == 0, (
        f"ipfs {' '.join(args)} failed ({done.returncode}): "
        f"{done.stderr.decode(errors='replace')}\nkubo log:\n{kubo.log_tail()}"
    )
    return done.stdout


def bacnode_ok(node: Daemon, *args: str, timeout: float = 120) -> str:
    """``bacnode ARGS`` against ``node``; on failure, the error and the daemon's stderr."""
    done = node.cli(*args, timeout=timeout)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (
        f"bacnode {' '.join(args)} failed ({done.returncode}): {done.stderr}\n"
        f"daemon stderr:\n{node.stderr[-5000:]}"
    )
    return done.stdout


def test_bacnode_and_kubo_give_a_tree_the_same_cid(
    kubo: Kubo, bacnode: Daemon, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    tree = write_random_tree(tmp_path, random.Random(seed))

    kubo_cid = kubo_ok(kubo, "add", "-r", "-Q", str(tree)).decode().strip()
    bacnode_cid = bacnode_ok(bacnode, "ipfs", "add", "-q", str(tree)).strip()

    assert kubo_cid.startswith("Qm"), kubo_cid
    assert bacnode_cid == kubo_cid, f"random tree seed {seed}"
    # File by file as well, so a mismatch names the culprit rather than only the root.
    for name in ("zero", "one", "chunk", "chunk+1", "three-mb.bin", "ünïcødé ✓.txt"):
        single = kubo_ok(kubo, "add", "-Q", "--only-hash", str(tree / name)).decode().strip()
        assert bacnode_ok(bacnode, "ipfs", "add", "-q", str(tree / name)).strip() == single, name


def test_kubo_fetches_from_bacnode_over_bitswap(
    kubo: Kubo, bacnode: Daemon, tmp_path: Path
) -> None:
    tree = write_random_tree(tmp_path / "src", random.Random())
    cid = bacnode_ok(bacnode, "ipfs", "add", "-q", str(tree)).strip()
    single = tmp_path / "file.bin"
    single.write_bytes(os.urandom(CHUNK * 5 + 77))
    file_cid = bacnode_ok(bacnode, "ipfs", "add", "-q", str(single)).strip()

    kubo_ok(kubo, "swarm", "connect", bacnode.multiaddr)
    timeout = f"--timeout={FETCH_TIMEOUT}s"

    # `ipfs cat` streams one file; `ipfs get` writes the whole tree.
    assert kubo_ok(kubo, timeout, "cat", file_cid) == single.read_bytes()
    out = tmp_path / "from-bacnode"
    kubo_ok(kubo, timeout, "get", "-o", str(out), cid)
    assert snapshot(out) == snapshot(tree)

    # The bytes came over bitswap from bacnode: it counts them as served.
    served = bacnode.api("/api/v1/agent/ipfs")["Bitswap"]
    assert served["BlocksServed"] > 0 and served["BytesServed"] >= len(single.read_bytes()), served
    assert bacnode.peer_id in kubo_ok(kubo, "swarm", "peers").decode()


def test_bacnode_fetches_from_kubo_through_ipfs_peer(
    kubo: Kubo, tmp_path: Path, busybox_image: str
) -> None:
    tree = write_random_tree(tmp_path / "src", random.Random())
    cid = kubo_ok(kubo, "add", "-r", "-Q", str(tree)).decode().strip()

    with DaemonPool(tmp_path / "daemons") as pool:
        node = pool.start("fetcher", args=["--ipfs-peer", kubo.multiaddr])

        out = tmp_path / "from-kubo"
        bacnode_ok(node, "ipfs", "get", cid, "-o", str(out), "--timeout", str(FETCH_TIMEOUT))
        assert snapshot(out) == snapshot(tree)
        # Over bitswap, from kubo: kubo counts the blocks as sent, bacnode as received.
        sent = json.loads(kubo_ok(kubo, "bitswap", "stat", "--enc=json"))
        received = node.api("/api/v1/agent/ipfs")["Bitswap"]
        assert 0 < received["BlocksReceived"] <= sent["BlocksSent"], (sent, received)

        # An inline CID (kubo's --inline) carries its data: nothing is asked of anyone.
        small = tmp_path / "small.txt"
        small.write_bytes(b"tiny\n")
        inline = kubo_ok(kubo, "add", "-Q", "--inline", "--cid-version=1", str(small))
        inline_cid = inline.decode().strip()
        got_inline = tmp_path / "inline.txt"
        bacnode_ok(node, "ipfs", "get", inline_cid, "-o", str(got_inline), "--timeout", "5")
        assert got_inline.read_bytes() == b"tiny\n"

        # A job reads the same bytes through -i ipfs://: the daemon stages them from kubo.
        (tmp_path / "src" / "job").mkdir()
        job_input = tmp_path / "src" / "job" / "input.bin"
        job_input.write_bytes(os.urandom(CHUNK * 3 + 5))
        job_cid = kubo_ok(kubo, "add", "-Q", str(job_input)).decode().strip()
        job_id = bacnode_ok(
            node, "docker", "run", "--id-only", "--wait", "-p", "local",
            "-i", f"ipfs://{job_cid}:/inputs/input.bin", "busybox", "--",
            "sh", "-c", "sha256sum /inputs/input.bin | cut -c1-64",
        ).strip()
        described = json.loads(bacnode_ok(node, "describe", job_id, "--json"))
        (execution,) = described["State"]["Executions"]
        stdout = execution["RunOutput"]["stdout"].strip()
        assert stdout == hashlib.sha256(job_input.read_bytes()).hexdigest(), described


def test_sharded_directories_both_ways(kubo: Kubo, tmp_path: Path) -> None:
    """kubo adds a HAMT-sharded directory (holding a sharded and plain subdirectories)
    and bacnode gets it through --ipfs-peer; bacnode adds another (five levels of
    shards) and kubo gets it from bacnode."""
    from_kubo = tmp_path / "nested"
    write_tree(from_kubo, *nested_sharded_tree())
    from_bacnode = tmp_path / "deep"
    write_tree(from_bacnode, *deep_sharded_tree())
    kubo_cid = kubo_ok(kubo, "add", "-r", "-Q", str(from_kubo)).decode().strip()
    # Only hashed: kubo has to fetch this tree's shards from bacnode (most of its files
    # have the same bytes as files of the other tree, which keeps the test quick).
    deep_cid = kubo_ok(kubo, "add", "-r", "-Q", "--only-hash", str(from_bacnode))

    with DaemonPool(tmp_path / "daemons") as pool:
        node = pool.start("sharded", args=["--ipfs-peer", kubo.multiaddr])

        out = tmp_path / "from-kubo"
        bacnode_ok(node, "ipfs", "get", kubo_cid, "-o", str(out), "--timeout", str(FETCH_TIMEOUT))
        assert snapshot(out) == snapshot(from_kubo)

        bacnode_cid = bacnode_ok(node, "ipfs", "add", "-q", str(from_bacnode)).strip()
        assert bacnode_cid == deep_cid.decode().strip()
        kubo_ok(kubo, "swarm", "connect", node.multiaddr)
        out = tmp_path / "from-bacnode"
        kubo_ok(kubo, f"--timeout={FETCH_TIMEOUT}s", "get", "-o", str(out), bacnode_cid)
        assert snapshot(out) == snapshot(from_bacnode)
