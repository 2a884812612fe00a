"""The real services the rest of the suite relies on: dockerd with the busybox image, SeaweedFS S3.

These check what a job would notice: a container's output, exit code and (absent) network; and
S3 puts, listings, checksums, versions and presigned URLs, against real servers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scripts.services import SeaweedS3
from tests.conftest import S3Bucket

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _run(
    docker_client: Any, image: str, command: list[str], **kwargs: Any
) -> tuple[int, bytes, bytes]:
    """Run a container to completion without network; return (exit code, stdout, stderr)."""
    import docker

    container = docker_client.containers.run(
        image, command, network_mode="none", detach=True, **kwargs
    )
    try:
        status = container.wait(timeout=60)["StatusCode"]
        out = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True)
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)
    return status, out, err


# ---------------------------------------------------------------------------------- dockerd

def _stop_started_dockerds(since: int) -> None:
    from scripts.services import dockerd

    for process in dockerd._detached[since:]:
        process.terminate()  # a real dockerd stops its containerd on SIGTERM, not on SIGKILL
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    del dockerd._detached[since:]


@pytest.fixture
def private_dockerd_dir():
    """A directory for a second, real dockerd beside the machine's (short: containerd's
    socket under it must fit a socket path); what ensure_dockerd started is stopped after."""
    import shutil
    import tempfile

    from scripts.services import dockerd

    before = len(dockerd._detached)
    root = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
    yield root
    _stop_started_dockerds(before)
    shutil.rmtree(root, ignore_errors=True)


def _dockerd_elsewhere(root: Path, *log_level: str) -> tuple[Path, tuple[str, ...]]:
    """A real dockerd's arguments for running beside the machine's (its own state
    directories under ``root``), listening on a socket other than the one it is waited on,
    as a misconfigured one does; and that socket."""
    from scripts.services import DOCKERD_ARGS

    elsewhere = root / "elsewhere.sock"
    return elsewhere, (*DOCKERD_ARGS, *log_level, "--data-root", str(root / "data"),
                       "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
                       "-H", f"unix://{elsewhere}")


@contextlib.contextmanager
def _kept_logging(socket: Path) -> Iterator[None]:
    """Ask the dockerd on ``socket`` for ``/_ping`` every 0.2 s while in the block: in
    debug mode it logs each request, so its log grows as a dockerd's does while it removes
    the stale network sandboxes a hard stop left (which takes minutes, but only after a
    hard stop with containers alive, and how long depends on how many)."""
    from scripts.services import docker_ping

    stop = threading.Event()

    def ping() -> None:
        while not stop.wait(0.2):
            docker_ping(str(socket))

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    try:
        yield
    finally:
        stop.set()
        pinger.join(timeout=5)


def test_dockerd_busy_logging_is_waited_for(private_dockerd_dir: Path, capsys):
    """A real dockerd that keeps logging is given longer than ``timeout`` to answer where it
    is waited for. Here it logs every request it serves on another socket, and answers at the
    waited path 6 s after start (a symlink to where it listens appears then)."""
    from scripts.services import ensure_dockerd

    root = private_dockerd_dir
    elsewhere, args = _dockerd_elsewhere(root, "--debug")
    waited = root / "docker.sock"

    def answer_later() -> None:
        time.sleep(6)
        waited.symlink_to(elsewhere)

    later = threading.Thread(target=answer_later, daemon=True)
    with _kept_logging(elsewhere):
        later.start()
        began = time.monotonic()
        ensure_dockerd(timeout=2.0, socket_path=str(waited), log_path=str(root / "dockerd.log"),
                       dockerd_args=args, pid_file=str(root / "dockerd.pid"))
    later.join(timeout=5)
    assert time.monotonic() - began >= 5.5
    assert "Calling GET /_ping" in (root / "dockerd.log").read_text()


def test_dockerd_silent_is_given_up_on_with_its_log(private_dockerd_dir: Path):
    """A real dockerd that neither answers where it is waited for nor logs fails after
    ``timeout``, naming its log. Here it is misconfigured, as a user's can be: it listens
    on another socket and logs fatal errors only (with its own state directories, so that
    it runs beside the machine's dockerd)."""
    from scripts.services import ServiceError, docker_ping, ensure_dockerd

    root = private_dockerd_dir
    elsewhere, args = _dockerd_elsewhere(root, "--log-level=fatal")
    began = time.monotonic()
    with pytest.raises(ServiceError, match=r"^dockerd \(pid \d+, log .*\) on .*docker\.sock "
                                           r"was silent for 2s; last lines of .*dockerd\.log"):
        ensure_dockerd(timeout=2.0, socket_path=str(root / "docker.sock"),
                       log_path=str(root / "dockerd.log"), dockerd_args=args,
                       pid_file=str(root / "dockerd.pid"))
    assert time.monotonic() - began < 10
    # It was a real dockerd, up all along: it answers where it listens.
    deadline = time.monotonic() + 20
    while not docker_ping(str(elsewhere)):
        assert time.monotonic() < deadline, "the silent dockerd never came up at all"
        time.sleep(0.2)


def test_dockerd_logging_forever_is_bounded(private_dockerd_dir: Path):
    """A real dockerd that logs without end but never answers where it is waited for still
    fails, after ``longest_startup``."""
    from scripts.services import ServiceError, ensure_dockerd

    root = private_dockerd_dir
    elsewhere, args = _dockerd_elsewhere(root, "--debug")
    began = time.monotonic()
    with _kept_logging(elsewhere), pytest.raises(
            ServiceError, match="kept logging but did not answer within [45]s"):
        ensure_dockerd(timeout=1.0, longest_startup=4.0, socket_path=str(root / "docker.sock"),
                       log_path=str(root / "dockerd.log"), dockerd_args=args,
                       pid_file=str(root / "dockerd.pid"))
    assert time.monotonic() - began < 10


def test_container_output_and_exit_code(docker_client, busybox_image):
    status, out, err = _run(
        docker_client, busybox_image, ["sh", "-c", "echo hi; id -u; echo oops >&2"]
    )
    assert status == 0
    assert out == b"hi\n0\n"
    assert err == b"oops\n"


def test_container_nonzero_exit_code_is_reported(docker_client, busybox_image):
    status, out, _ = _run(docker_client, busybox_image, ["sh", "-c", "echo partial; exit 3"])
    assert status == 3
    assert out == b"partial\n"


def test_container_as_nobody(docker_client, busybox_image):
    status, out, _ = _run(docker_client, busybox_image, ["id", "-u"], user="nobody")
    assert (status, out) == (0, b"65534\n")


def test_container_has_only_loopback(docker_client, busybox_image):
    status, out, _ = _run(docker_client, busybox_image, ["ls", "/sys/class/net"])
    assert status == 0
    assert out.split() == [b"lo"]


def test_container_reads_inputs_and_writes_outputs(docker_client, busybox_image, tmp_path):
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "words.txt").write_text("b\na\nc\n")
    status, _, err = _run(
        docker_client,
        busybox_image,
        ["sh", "-c", "sort /inputs/words.txt > /outputs/sorted.txt; touch /inputs/x"],
        volumes={
            str(inputs): {"bind": "/inputs", "mode": "ro"},
            str(outputs): {"bind": "/outputs", "mode": "rw"},
        },
    )
    assert (outputs / "sorted.txt").read_text() == "a\nb\nc\n"
    assert status != 0, "the read-only input mount was writable"
    assert b"Read-only file system" in err


def test_busybox_image_is_the_local_build(docker_client, busybox_image):
    image = docker_client.images.get(busybox_image)
    assert image.attrs["Config"]["Cmd"] == ["sh"]
    assert busybox_image in image.tags


# ------------------------------------------------------------------------------------- S3


def test_put_get_roundtrip_large_object(s3_bucket: S3Bucket):
    data = os.urandom(6 * 1024 * 1024 + 123)  # bigger than weed's 4 MiB chunks
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="dir/blob.bin", Body=data)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="dir/blob.bin")
    assert head["ContentLength"] == len(data)
    got = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="dir/blob.bin")["Body"].read()
    assert got == data
    ranged = s3_bucket.client.get_object(
        Bucket=s3_bucket.name, Key="dir/blob.bin", Range="bytes=4194300-4194309"
    )["Body"].read()
    assert ranged == data[4194300:4194310]


def test_missing_bucket_and_key_are_errors(s3_server: SeaweedS3, s3_bucket: S3Bucket):
    client = s3_bucket.client
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=s3_bucket.name, Key="absent")
    # Like AWS (weed's default would create the bucket on the fly).
    with pytest.raises(client.exceptions.NoSuchBucket):
        client.put_object(Bucket=f"{s3_bucket.name}-absent", Key="k", Body=b"x")


def test_list_with_prefix_and_pagination(s3_bucket: S3Bucket):
    client, bucket = s3_bucket.client, s3_bucket.name
    keys = [f"in/part-{i:04d}.txt" for i in range(1100)]
    others = ["input", "out/a.txt", "in-other/b.txt"]

    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, keys + others))

    pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="in/"))
    assert len(pages) == 2  # S3 returns at most 1,000 keys a page
    listed = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert listed == keys  # all of them, in order, none outside the prefix

    first = client.list_objects_v2(Bucket=bucket, Prefix="in/", MaxKeys=7)
    assert [obj["Key"] for obj in first["Contents"]] == keys[:7]
    assert first["IsTruncated"] is True
    second = client.list_objects_v2(
        Bucket=bucket, Prefix="in/", MaxKeys=7, ContinuationToken=first["NextContinuationToken"]
    )
    assert [obj["Key"] for obj in second["Contents"]] == keys[7:14]

    top = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    # As a set: weed lists "in/" before "in-other/", where AWS uses plain byte order.
    assert sorted(p["Prefix"] for p in top["CommonPrefixes"]) == ["in-other/", "in/", "out/"]
    assert [obj["Key"] for obj in top["Contents"]] == ["input"]


def test_checksum_sha256_is_returned_and_enforced(s3_bucket: S3Bucket):
    client, bucket = s3_bucket.client, s3_bucket.name
    data = b"results of job j-1\n" * 100
    put = client.put_object(Bucket=bucket, Key="out.txt", Body=data, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == _sha256_b64(data)
    head = client.head_object(Bucket=bucket, Key="out.txt", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == _sha256_b64(data)
    got = client.get_object(Bucket=bucket, Key="out.txt", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == _sha256_b64(data)
    assert got["Body"].read() == data

    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        client.put_object(
            Bucket=bucket, Key="liar.txt", Body=data, ChecksumSHA256=_sha256_b64(b"other")
        )
    assert info.value.response["Error"]["Code"] in {
        "BadDigest",
        "InvalidRequest",
        "XAmzContentSHA256Mismatch",
    }
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key="liar.txt")


def test_versioning_gives_version_ids(s3_bucket: S3Bucket):
    client, bucket = s3_bucket.client, s3_bucket.name
    s3_bucket.enable_versioning()
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    first = client.put_object(Bucket=bucket, Key="run.tar.gz", Body=b"first")
    second = client.put_object(Bucket=bucket, Key="run.tar.gz", Body=b"second")
    assert first["VersionId"] and second["VersionId"]
    assert first["VersionId"] != second["VersionId"]
    old = client.get_object(Bucket=bucket, Key="run.tar.gz", VersionId=first["VersionId"])
    assert old["Body"].read() == b"first"
    assert old["VersionId"] == first["VersionId"]
    latest = client.get_object(Bucket=bucket, Key="run.tar.gz")
    assert latest["Body"].read() == b"second"
    versions = client.list_object_versions(Bucket=bucket, Prefix="run.tar.gz")["Versions"]
    assert {v["VersionId"] for v in versions} == {first["VersionId"], second["VersionId"]}


def test_presigned_get_url(s3_bucket: S3Bucket):
    client, bucket = s3_bucket.client, s3_bucket.name
    client.put_object(Bucket=bucket, Key="share/report.txt", Body=b"shared bytes")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "share/report.txt"}, ExpiresIn=300
    )
    assert url.startswith(f"http://127.0.0.1:{s3_bucket.server.port}/")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == b"shared bytes"
    forged = url.replace("report.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(forged, timeout=10)
    assert info.value.code == 403


def test_env_alone_configures_an_sdk(s3_server: SeaweedS3, s3_bucket: S3Bucket, monkeypatch):
    import boto3

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    client = boto3.session.Session().client("s3")
    client.put_object(Bucket=s3_bucket.name, Key="via-env", Body=b"ok")
    assert client.get_object(Bucket=s3_bucket.name, Key="via-env")["Body"].read() == b"ok"


# -------------------------------------------------------------------- SeaweedS3 lifecycle


def test_second_server_is_independent_and_cleans_up(s3_server: SeaweedS3):
    with SeaweedS3() as other:
        assert other.endpoint != s3_server.endpoint
        assert set(other.ports.values()).isdisjoint(s3_server.ports.values())
        other.client().create_bucket(Bucket="only-in-other")
        names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
        assert "only-in-other" not in names
        data_dir, pid = other.data_dir, other.pid
        assert data_dir is not None and pid is not None
    assert not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _stuck_report(pids: list[int], data_dir: Path, proc: subprocess.Popen[str]) -> str:
    """What a process that would not stop was doing (seen once in CI under load, never
    alone): each process's state and kernel wait channel, the CLI's stderr, weed's log."""
    lines = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            state, wchan = "gone", ""
        lines.append(f"pid {pid}: state {state} wchan {wchan or '-'}")
    if proc.stderr is not None:
        os.set_blocking(proc.stderr.fileno(), False)
        try:
            written = os.read(proc.stderr.fileno(), 1 << 16).decode(errors="replace")
        except BlockingIOError:
            written = ""
        lines.append("stderr: " + written.strip()[-2000:])
    for log in data_dir.rglob("*.log"):
        lines.append(f"{log.name}: " + log.read_text(errors="replace")[-3000:])
    return "\n".join(lines)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc, no procps needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_cli_s3_prints_env_and_stops_on_sigint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.services", "s3", "--dir", str(tmp_path / "s3")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while "AWS_DEFAULT_REGION" not in env and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                env[key] = value
        assert env["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
        server = SeaweedS3(tmp_path / "s3")  # a kept dir remembers its credentials
        assert (server.access_key, server.secret_key) == (
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
        )
        weed_pids = _children(proc.pid)
        assert weed_pids, "no weed child process"
        proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the s3 CLI did not stop within 30 s of SIGINT: "
                        + _stuck_report([proc.pid, *weed_pids], tmp_path / "s3", proc),
                        pytrace=False)
        assert status == 0
        for pid in weed_pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
