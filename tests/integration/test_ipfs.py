"""IPFS end to end on a 3-node devnet: the default publisher, ipfs:// inputs, get, add.

Real daemons, real libp2p (bitswap over Noise/yamux on loopback), real dockerd. CIDs
are checked against kubo's (the vectors of ../shared/reference/ipfs-cid-vectors.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.unixfs import import_bytes
from scripts.daemons import Daemon, child_env
from tests.protocol.ipfs_vectors import chacha_bytes

pytestmark = pytest.mark.integration

TREE_CID = "Qmbhf4Gx8FCco9mmfjdygmqDw5dHkDeZqwBBTW5TempLSu"


def run(node: Daemon, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = node.cli(*args, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def shell(node: Daemon, script: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in bash as a user types it, with ``bacnode`` on PATH pointing at ``node``."""
    bin_dir = Path(sys.executable).parent
    environment = child_env({"BACNODE_API_PORT": str(node.api_port), **env})
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment['PATH']}"
    return subprocess.run(["bash", "-c", script], env=environment, capture_output=True,
                          text=True, timeout=120)


def write_vector_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "empty").mkdir(parents=True)
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.txt").write_text("b\n")
    (tree / "sub" / "deeper" / "zero").write_bytes(b"")
    (tree / "z.bin").write_bytes(chacha_bytes("dir-seed", 300_000))
    return tree


def test_default_publisher_cid_feeds_a_job_elsewhere_and_get_verifies(
    devnet: list[Daemon], tmp_path: Path
) -> None:
    a, b, c = devnet
    # Requested on c, run on a, published to IPFS by default (no -p).
    first = run(c, "docker", "run", "--id-only", "--wait", "-s", "zone=a", "busybox", "--",
                "sh", "-c", "head -c 3000000 /dev/urandom > /outputs/data.bin; "
                "sha256sum /outputs/data.bin | cut -c1-64 > /outputs/data.sha; echo made")
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.strip()

    # The reference page's command, verbatim.
    extracted = shell(c, "bacnode describe ${JOB_ID} --json \\\n"
                         "| jq -r '.State.Executions[].PublishedResults.CID | select (. != null)'",
                      JOB_ID=job_id)
    assert extracted.returncode == 0, extracted.stderr
    cid = extracted.stdout.strip()
    assert cid.startswith("Qm") and len(cid) == 46, extracted.stdout

    described = json.loads(run(c, "describe", job_id, "--json").stdout)
    (execution,) = described["State"]["Executions"]
    assert execution["NodeID"] == a.peer_id
    assert execution["PublishedResults"]["StorageSource"] == "IPFS"

    # A job on b reads the same bytes through ipfs://.
    second = run(b, "docker", "run", "--id-only", "--wait", "-s", "zone=b", "-p", "local",
                 "-i", f"ipfs://{cid}:/inputs", "busybox", "--", "sh", "-c",
                 "sha256sum /inputs/outputs/data.bin | cut -c1-64; cat /inputs/outputs/data.sha;"
                 " cat /inputs/stdout")
    assert second.returncode == 0, second.stderr
    logs = json.loads(run(b, "describe", second.stdout.strip(), "--json").stdout)
    lines = logs["State"]["Executions"][0]["RunOutput"]["stdout"].split()
    assert len(lines) == 3 and lines[0] == lines[1] and lines[2] == "made", lines

    # get from c (the requester) fetches a's blocks over bitswap and verifies them.
    results = tmp_path / "results"
    got = run(c, "get", job_id, "--output-dir", str(results))
    assert got.returncode == 0, got.stderr
    data = (results / "outputs" / "data.bin").read_bytes()
    assert len(data) == 3_000_000
    expected_sha = (results / "outputs" / "data.sha").read_text().strip()
    assert hashlib.sha256(data).hexdigest() == expected_sha
    assert (results / "stdout").read_text() == "made\n"
    assert (results / "exitCode").read_text().strip() == "0"

    # The CID is the one kubo would give the same results directory.
    fetched = tmp_path / "by-cid"
    assert run(a, "ipfs", "get", cid, "-o", str(fetched)).returncode == 0
    added = run(b, "ipfs", "add", "-q", str(fetched))
    assert added.stdout.strip() == cid


def test_ipfs_add_gives_kubos_cids_and_get_round_trips(
    devnet: list[Daemon], tmp_path: Path
) -> None:
    a, b, c = devnet
    tree = write_vector_tree(tmp_path / "src")
    added = run(a, "ipfs", "add", str(tree))
    assert added.returncode == 0, added.stderr
    assert added.stdout.split() == ["added", TREE_CID, "tree"]

    single = tmp_path / "hello.txt"
    single.write_bytes(b"hello world")
    assert run(b, "ipfs", "add", "-q", str(single)).stdout.strip() == (
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD")

    out = tmp_path / "out"
    got = run(c, "ipfs", "get", TREE_CID, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.txt", "empty", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/zero", "z.bin"]
    assert (out / "z.bin").read_bytes() == (tree / "z.bin").read_bytes()
    assert (out / "sub" / "deeper" / "zero").read_bytes() == b""


def test_a_cid_nobody_has_fails_clearly(devnet: list[Daemon], tmp_path: Path) -> None:
    a = devnet[0]
    _, root = import_bytes(b"nobody on this network has these bytes " + os.urandom(16))
    missing = str(root.cid)
    got = run(a, "ipfs", "get", missing, "-o", str(tmp_path / "x"), "--timeout", "4")
    assert got.returncode == 1
    assert missing in got.stderr and "none of the" in got.stderr, got.stderr
    assert not (tmp_path / "x").exists()

    job = run(a, "docker", "run", "--id-only", "--wait", "--timeout", "8", "-p", "local",
              "-i", f"ipfs://{missing}:/inputs", "busybox", "--", "true")
    assert job.returncode == 1
    assert missing in job.stderr and "none of the" in job.stderr, job.stderr

    bad = run(a, "ipfs", "get", "QmNotACid")
    assert bad.returncode == 1 and "CID" in bad.stderr


def test_api_reports_bitswap_counters(devnet: list[Daemon]) -> None:
    stats: dict[str, Any] = devnet[0].api("/api/v1/agent/ipfs")
    assert {"BlocksServed", "BlocksReceived", "BlocksRejected"} <= set(stats["Bitswap"])
    assert stats["Blockstore"]["Blocks"] > 0


def test_get_into_a_directory_a_link_or_an_existing_file(devnet: list[Daemon],
                                                         tmp_path: Path) -> None:
    a = devnet[0]
    single = tmp_path / "hello.txt"
    single.write_bytes(b"hello world")
    cid = run(a, "ipfs", "add", "-q", str(single)).stdout.strip()
    here = tmp_path / "here"
    here.mkdir()
    # "-o ." (run where the user stands) and "-o <link to a directory>": DIR/CID.
    got = subprocess.run(
        [sys.executable, "-m", "cli.main", "--api-port", str(a.api_port), "ipfs", "get", cid,
         "-o", "."], cwd=here, env=child_env(), capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert (here / cid).read_bytes() == b"hello world"
    link = tmp_path / "link"
    link.symlink_to(here)
    again = run(a, "ipfs", "get", cid, "-o", str(link))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"Error: {link / cid} already exists; nothing was written (choose another -o)")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    refused = run(a, "ipfs", "get", cid, "-o", str(dangling))
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_bad_upload_is_refused_with_a_reason(devnet: list[Daemon]) -> None:
    import urllib.error
    import urllib.request

    for body in (b"not a tar at all" * 100, b"\0" * 100):
        request = urllib.request.Request(
            f"http://127.0.0.1:{devnet[0].api_port}/api/v1/ipfs/add", data=body,
            method="POST", headers={"Content-Type": "application/x-tar"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 400
        error = json.loads(info.value.read())
        assert error["Message"].startswith("the upload is not a readable tar"), error
        assert error["Code"] == "BadRequest"


def test_ipfs_add_to_a_node_whose_disk_fills_fails_at_once(
        tmp_path: Path, busybox_image: str) -> None:
    """A real full disk: the node's data dir is a 16 MiB tmpfs (the test runs as root, as CI
    does), and 30 MB are added to it."""
    from scripts.daemons import DaemonPool

    with DaemonPool(tmp_path / "pool") as pool:
        node = pool.new("full")
        node.data_dir.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(node.data_dir)],
                       check=True)
        try:
            node.start()
            big = tmp_path / "big.bin"
            big.write_bytes(os.urandom(30_000_000))
            started = time.monotonic()
            added = run(node, "ipfs", "add", str(big), timeout=60)
            assert time.monotonic() - started < 20
            assert added.returncode == 1
            assert added.stderr.strip() == (
                "Error: the daemon answered 507: cannot import the upload: the node's disk is "
                "full; nothing was added")
            # Nothing of the upload is left behind, and the node still takes what fits.
            small = tmp_path / "small.txt"
            small.write_text("fits\n")
            assert run(node, "ipfs", "add", "-q", str(small)).returncode == 0
        finally:
            node.stop()
            subprocess.run(["umount", str(node.data_dir)], check=False)
