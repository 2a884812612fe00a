"""The reference page's flow (s3-job-tutorial.md), verbatim with bacnode for bacalhau."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.daemons import Daemon, child_env

pytestmark = pytest.mark.integration

PREFIX = "ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01"
TUTORIAL_INPUT = f"s3://noaa-goes16/{PREFIX}*:/inputs,opt=region=us-east-1"


@pytest.fixture
def noaa_bucket(s3_server):
    """A local stand-in for the public noaa-goes16 bucket, with matching and other keys."""
    client = s3_server.client()
    client.create_bucket(Bucket="noaa-goes16")
    objects = {
        f"{PREFIX}_G16_s20000011200000_e1.nc": b"radiance channel 1, scan 1\n" * 1000,
        f"{PREFIX}_G16_s20000011215000_e2.nc": bytes(range(256)) * 4096,
        f"{PREFIX}_G16_s20000011230000_e3.nc": b"",
        "ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C02_G16_other.nc": b"other channel",
        "ABI-L1b-RadC/2000/001/13/OR_ABI-L1b-RadC-M3C01_G16_next_hour.nc": b"next hour",
    }
    for key, body in objects.items():
        client.put_object(Bucket="noaa-goes16", Key=key, Body=body)
    yield {key.rsplit("/", 1)[1]: body for key, body in objects.items() if key.startswith(PREFIX)}
    for key in objects:
        client.delete_object(Bucket="noaa-goes16", Key=key)
    client.delete_bucket(Bucket="noaa-goes16")


def test_tutorial_commands_work_as_written(
    s3_devnet: list[Daemon], noaa_bucket: dict[str, bytes], tmp_path: Path
) -> None:
    node = s3_devnet[0]
    # As written: no -p, so the results go to IPFS, the default publisher.
    run = node.cli(
        "docker", "run", "-i", TUTORIAL_INPUT, "--id-only", "--wait",
        "busybox", "--", "sh", "-c", "cp -r /inputs/* /outputs/", timeout=120,
    )
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()

    listed = node.cli("list", "--id-filter", job_id, "--wide")
    assert listed.returncode == 0 and "Completed" in listed.stdout
    assert node.cli("describe", job_id).returncode == 0

    results = tmp_path / "results"
    results.mkdir()
    got = node.cli("get", job_id, "--output-dir", str(results))
    assert got.returncode == 0, got.stderr
    ls = subprocess.run(["ls", "-1", str(results / "outputs")], capture_output=True, text=True)
    assert ls.stdout.split() == sorted(noaa_bucket)
    for name, body in noaa_bucket.items():
        assert (results / "outputs" / name).read_bytes() == body

    bin_dir = Path(sys.executable).parent
    env = child_env({"BACNODE_API_PORT": str(node.api_port), "JOB_ID": job_id})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    extracted = subprocess.run(
        ["bash", "-c", "bacnode describe ${JOB_ID} --json \\\n"
                       "| jq -r '.State.Executions[].PublishedResults.CID | select (. != null)'"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert extracted.returncode == 0, extracted.stderr
    assert re.fullmatch(r"Qm[1-9A-HJ-NP-Za-km-z]{44}\n", extracted.stdout), extracted.stdout


def test_missing_object_fails_the_execution_with_the_reason(
    s3_devnet: list[Daemon], noaa_bucket: dict[str, bytes]
) -> None:
    run = s3_devnet[1].cli(
        "docker", "run", "-i", "s3://noaa-goes16/no/such/key.nc:/inputs", "--id-only",
        "--wait", "-p", "local", "busybox", "--", "true", timeout=120,
    )
    assert run.returncode == 1
    assert "s3://noaa-goes16/no/such/key.nc" in run.stderr
    assert "Traceback" not in run.stderr


def test_credentials_never_reach_the_container_or_the_records(
    s3_devnet: list[Daemon], noaa_bucket: dict[str, bytes], s3_server
) -> None:
    node = s3_devnet[2]
    run = node.cli(
        "docker", "run", "-i", TUTORIAL_INPUT, "--id-only", "--wait", "-p", "local",
        "busybox", "--", "sh", "-c", "env; ls /inputs", timeout=120,
    )
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    described = node.cli("describe", job_id, "--json").stdout
    container_env = json.loads(described)["State"]["Executions"][0]["RunOutput"]["stdout"]
    assert "AWS_" not in container_env
    assert sorted(noaa_bucket)[0] in container_env  # the inputs were there
    history = node.cli("job", "history", job_id, "--output", "json").stdout
    for text in (described, history, *(d.stderr for d in s3_devnet)):
        assert s3_server.secret_key not in text
        assert s3_server.access_key not in text
