"""Publishing results to a real S3 server (SeaweedFS) and getting them back, verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scripts.daemons import Daemon

pytestmark = pytest.mark.integration


def test_compressed_results_with_placeholders_to_a_versioned_bucket(
    s3_devnet: list[Daemon], s3_bucket, tmp_path: Path
) -> None:
    s3_bucket.enable_versioning()
    client = s3_devnet[0]
    result = client.cli(
        "docker", "run", "--id-only", "--wait",
        "-p", f"s3://{s3_bucket.name}/out/{{jobID}}-{{date}},opt=compress=true",
        "busybox", "--", "sh", "-c", "echo hi; echo s3 > /outputs/r.txt", timeout=90,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()

    answer = client.api(f"/api/v1/orchestrator/jobs/{job_id}/results")
    assert answer["NextToken"] == ""
    (item,) = answer["Items"]
    assert item["Type"] == "s3PreSigned"
    spec = item["Params"]["SourceSpec"]
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert spec["Bucket"] == s3_bucket.name
    assert spec["Key"] == f"out/{job_id}-{today}.tar.gz"
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=spec["Key"])
    assert spec["VersionID"] == head["VersionId"]
    import base64
    import hashlib

    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=spec["Key"])["Body"].read()
    assert spec["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert item["Params"]["PreSignedURL"].startswith(s3_bucket.server.endpoint)

    printed = json.loads(client.cli("job", "results", job_id).stdout)
    (shown,) = printed["Results"]
    assert printed["NextToken"] == "" and shown["Type"] == "s3PreSigned"
    assert shown["Params"]["SourceSpec"] == spec  # the URL itself is signed anew each time
    assert shown["Params"]["PreSignedURL"].startswith(s3_bucket.server.endpoint)

    described = json.loads(client.cli("describe", job_id, "--json").stdout)
    published = described["State"]["Executions"][0]["PublishedResults"]
    assert published["StorageSource"] == "S3"
    assert published["S3"]["Checksum"] == spec["ChecksumSHA256"]

    got = client.cli("get", job_id, "--output-dir", str(tmp_path / "ok"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "ok" / "outputs" / "r.txt").read_text() == "s3\n"
    assert (tmp_path / "ok" / "stdout").read_text() == "hi\n"

    # A newer object under the same key does not change what the record pins: its version.
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=spec["Key"], Body=b"newer")
    again = client.cli("get", job_id, "--output-dir", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "outputs" / "r.txt").read_text() == "s3\n"


def test_tampered_object_makes_get_fail(s3_devnet: list[Daemon], s3_bucket,
                                        tmp_path: Path) -> None:
    client = s3_devnet[1]
    result = client.cli(
        "docker", "run", "--id-only", "--wait",
        "-p", f"s3://{s3_bucket.name}/plain/{{jobID}},opt=compress=true",
        "busybox", "--", "sh", "-c", "echo real > /outputs/r.txt", timeout=90,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    key = f"plain/{job_id}.tar.gz"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"tampered bytes")
    bad = client.cli("get", job_id, "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 1
    assert "but the signed record says" in bad.stderr and "nothing was written" in bad.stderr
    assert not (tmp_path / "bad" / "outputs").exists()


def test_uncompressed_results_are_one_object_per_file_and_get_verifies_each(
    s3_devnet: list[Daemon], s3_bucket, tmp_path: Path
) -> None:
    client = s3_devnet[2]
    result = client.cli(
        "docker", "run", "--id-only", "--wait",
        "-p", f"s3://{s3_bucket.name}/files/{{jobID}}",
        "busybox", "--", "sh", "-c",
        "echo hi; mkdir -p /outputs/d; echo one > /outputs/d/1.txt; echo two > /outputs/2.txt",
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix=f"files/{job_id}/")
    assert sorted(o["Key"].split("/", 2)[2] for o in listed["Contents"]) == [
        "exitCode", "outputs/2.txt", "outputs/d/1.txt", "stderr", "stdout"]

    (item,) = client.api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"]
    assert item["Type"] == "s3PreSigned" and item["Params"]["PreSignedURL"] == ""
    assert {f["Path"] for f in item["Params"]["Files"]} >= {"outputs/2.txt", "outputs/d/1.txt"}

    got = client.cli("get", job_id, "--output-dir", str(tmp_path / "ok"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "ok" / "outputs" / "d" / "1.txt").read_text() == "one\n"
    assert (tmp_path / "ok" / "stdout").read_text() == "hi\n"

    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"files/{job_id}/outputs/2.txt",
                                Body=b"swapped\n")
    bad = client.cli("get", job_id, "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 1
    assert "outputs/2.txt does not match its signed SHA-256" in bad.stderr
    assert "nothing was written" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "outputs").exists()


def test_missing_bucket_fails_the_execution_with_the_reason(s3_devnet: list[Daemon]) -> None:
    result = s3_devnet[1].cli(
        "docker", "run", "--id-only", "--wait", "-p", "s3://no-such-bucket-here/x",
        "busybox", "--", "true", timeout=90,
    )
    assert result.returncode == 1
    assert "bucket 'no-such-bucket-here' does not exist" in result.stderr


def test_unreachable_endpoint_fails_the_upload_and_publishes_nothing(
    s3_devnet: list[Daemon], s3_bucket
) -> None:
    from scripts.services import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    client = s3_devnet[2]
    result = client.cli(
        "docker", "run", "--id-only", "--wait",
        "-p", f"s3://{s3_bucket.name}/never,opt=endpoint={closed},opt=compress=true",
        "busybox", "--", "true", timeout=120,
    )
    assert result.returncode == 1
    assert "cannot reach the S3 endpoint" in result.stderr
    job_id = result.stdout.strip()
    assert client.api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"] == []
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)
    assert listed.get("KeyCount", 0) == 0
