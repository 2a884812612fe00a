"""The requester presigns, with its own S3 credentials, only what a job's publisher spec
allows: a compute node's record cannot point it at another bucket, endpoint or key."""

from __future__ import annotations

from node.api_jobs import _outside_publisher_spec
from protocol.jobspec import Job

NODE = "12D3KooWExampleNode"


def s3_job(**params: object) -> Job:
    return Job.from_dict({
        "ID": "j-11111111-2222-4333-8444-555555555555", "Type": "batch",
        "Tasks": [{"Name": "t", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
                   "Publisher": {"Type": "s3", "Params": {"Bucket": "results",
                                                          "Key": "out/{jobID}-{date}",
                                                          **params}}}]})


def record(**s3: object) -> dict:
    location = {"Bucket": "results", "Key": "out/j-11111111-2222-4333-8444-555555555555"
                "-20261202", "Endpoint": "http://127.0.0.1:8333", "Region": "us-east-1",
                "Compress": False, **s3}
    return {"StorageSource": "S3", "S3": location}


def test_what_the_job_allows_is_presigned() -> None:
    assert _outside_publisher_spec(record(), s3_job(), "e-1", NODE) is None
    compressed = record(Compress=True, Key=record()["S3"]["Key"] + ".tar.gz")
    assert _outside_publisher_spec(compressed, s3_job(Compress=True), "e-1", NODE) is None


def test_another_bucket_key_endpoint_or_region_is_refused() -> None:
    job = s3_job(Endpoint="http://127.0.0.1:8333")
    assert "Bucket 'payroll'" in _outside_publisher_spec(record(Bucket="payroll"), job, "e-1",
                                                          NODE)
    assert "key 'secrets.csv'" in _outside_publisher_spec(record(Key="secrets.csv"), job,
                                                           "e-1", NODE)
    assert "Endpoint" in _outside_publisher_spec(record(Endpoint="http://evil.example"), job,
                                                 "e-1", NODE)
    assert "Region 'eu-west-1'" in _outside_publisher_spec(
        record(Region="eu-west-1"), s3_job(Region="us-east-1"), "e-1", NODE)
    assert "compression" in _outside_publisher_spec(record(Compress=True), job, "e-1", NODE)
