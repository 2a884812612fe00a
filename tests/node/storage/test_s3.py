"""S3 inputs: the key → path rules (pure), and staging from a real SeaweedFS S3 server.

The layout table is Bacalhau's own (``pkg/storage/s3/storage_test.go``): the eight keys
``set1/00{1,2}.txt set1/10{1,2}.txt set2/20{1,2}.txt set2/nested/30{1,2}.txt``, each holding
its number and a newline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio

from node.storage import S3Storage, StorageError, StorageRegistry, stage_inputs, storage_for
from node.storage.s3 import (
    S3AccessDenied,
    S3BucketNotFound,
    S3ChecksumMismatch,
    S3EndpointUnreachable,
    S3NoMatchingObjects,
    S3Object,
    S3ObjectNotFound,
    S3UnsafeKey,
    S3VersionNotFound,
    is_prefix_key,
    key_prefix,
    local_path,
    matches_filter,
    plan_layout,
)
from protocol.jobspec import InputSource
from protocol.uris import parse_input
from scripts.services import SeaweedS3, free_port
from tests.conftest import S3Bucket, _empty_and_delete

LAYOUT_KEYS = [
    "set1/001.txt",
    "set1/002.txt",
    "set1/101.txt",
    "set1/102.txt",
    "set2/201.txt",
    "set2/202.txt",
    "set2/nested/301.txt",
    "set2/nested/302.txt",
]

# (requested key, filter, expected relative paths) — Bacalhau's table, plus the filter row.
LAYOUT_ROWS = [
    ("set1/001.txt", "", ["001.txt"]),
    ("set1/", "", ["001.txt", "002.txt", "101.txt", "102.txt"]),
    ("set1/*", "", ["001.txt", "002.txt", "101.txt", "102.txt"]),
    ("set2/", "", ["201.txt", "202.txt", "nested/301.txt", "nested/302.txt"]),
    ("set1/00*", "", ["001.txt", "002.txt"]),
    ("set*", "", LAYOUT_KEYS),
    ("set1/*", "[0-1]01.txt", ["001.txt", "101.txt"]),
]


def content_of(key: str) -> bytes:
    """What the layout objects hold: their number and a newline, as in Bacalhau's bucket."""
    return key.rsplit("/", 1)[-1].split(".")[0].encode() + b"\n"


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# =====================================================================================
# Pure rules


def test_the_default_registry_stages_s3():
    assert isinstance(storage_for("s3"), S3Storage)


def test_prefix_keys():
    assert [is_prefix_key(k) for k in ("", "a/", "a*", "a/b*", "a", "a/b.txt")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert key_prefix("set1/*") == "set1/"
    assert key_prefix("set*") == "set"
    assert key_prefix("set1/") == "set1/"
    assert key_prefix("a**") == "a*"  # only one trailing wildcard: not a glob


@pytest.mark.parametrize(("requested", "pattern", "expected"), LAYOUT_ROWS)
def test_layout_table(requested, pattern, expected):
    prefix = key_prefix(requested)
    compiled = re.compile(pattern) if pattern else None
    if is_prefix_key(requested):
        keys = [k for k in LAYOUT_KEYS if k.startswith(prefix)]
        keys = [k for k in keys if matches_filter(compiled, prefix, k)]
    else:
        keys = [requested]
    assert [rel for _, rel in plan_layout(requested, keys)] == expected


def test_layout_edge_cases():
    assert local_path("", "a/b/c.txt") == "a/b/c.txt"  # whole bucket: keys as they are
    assert local_path("data.bin", "data.bin") == "data.bin"  # top-level single object
    assert local_path("a/b/c/", "a/b/c/d/e") == "d/e"
    assert local_path("a/b/c", "a/b/c") == "c"
    assert local_path("a/b/c*", "a/b/cx/y") == "cx/y"


@pytest.mark.parametrize(
    ("requested", "key"),
    [
        ("", "a/../../x"),
        ("a/", "a/../../etc/passwd"),
        ("a/", "a/.."),
        ("", "../x"),
        ("", "/etc/passwd"),  # absolute: a leading empty component
        ("a/", "a//b"),
        ("a/", "a/./b"),
        ("", "a/b\0c"),
        ("x/", "x/b/"),  # a marker left in by mistake: no file name
    ],
)
def test_keys_that_would_escape_are_refused(requested, key):
    with pytest.raises(ValueError, match="cannot be staged safely"):
        local_path(requested, key)


def test_file_and_directory_at_one_path_are_refused():
    with pytest.raises(ValueError, match="needs 'd' as a directory"):
        plan_layout("", ["d", "d/x"])
    with pytest.raises(ValueError, match="needs that path as a directory"):
        plan_layout("", ["d/x", "d"])


def test_filter_is_searched_in_the_rest_of_the_key():
    pattern = re.compile(r"01\.txt")
    assert matches_filter(pattern, "set1/", "set1/001.txt")  # unanchored, like Go's regexp
    assert not matches_filter(pattern, "set1/", "set1/002.txt")
    # The prefix itself is not searched.
    assert not matches_filter(re.compile("set1"), "set1/", "set1/001.txt")
    assert matches_filter(None, "p", "anything")


# =====================================================================================
# Against SeaweedFS

_CLEARED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path) -> None:
    """A node with no AWS configuration at all (and no instance metadata service)."""
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def aws_env(no_aws_env, monkeypatch, s3_server: SeaweedS3) -> SeaweedS3:
    """The node's credentials are the test server's (endpoint left to each test)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return s3_server


def put_many(bucket: S3Bucket, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda item: bucket.client.put_object(
                    Bucket=bucket.name, Key=item[0], Body=item[1]
                ),
                objects.items(),
            )
        )


@pytest.fixture(scope="module")
def layout_bucket(s3_server: SeaweedS3) -> Iterator[S3Bucket]:
    """The eight layout keys in a bucket shared by this module's tests, which only read it."""
    client = s3_server.client()
    bucket = S3Bucket(name=f"test-layout-{uuid.uuid4().hex[:12]}", client=client, server=s3_server)
    client.create_bucket(Bucket=bucket.name)
    put_many(bucket, {key: content_of(key) for key in LAYOUT_KEYS})
    yield bucket
    _empty_and_delete(client, bucket.name)


@pytest.fixture
def own_layout_bucket(s3_bucket: S3Bucket) -> S3Bucket:
    """The eight layout keys in a fresh bucket, for tests that change it."""
    put_many(s3_bucket, {key: content_of(key) for key in LAYOUT_KEYS})
    return s3_bucket


def s3_input(
    bucket: S3Bucket | str, key: str, target: str = "/inputs", **params: str
) -> InputSource:
    name = bucket if isinstance(bucket, str) else bucket.name
    return InputSource("s3", {"Bucket": name, "Key": key, **params}, target)


class Calls:
    """Counts the S3 API calls clients of one boto3 session make (a botocore event hook)."""

    def __init__(self) -> None:
        import boto3

        self.session = boto3.session.Session()
        self.counts: Counter[str] = Counter()
        self.ranges: list[str] = []
        self.authorized: list[bool] = []
        self.session.events.register("before-call.s3", self._on_call)
        self.session.events.register("before-send.s3", self._on_send)

    def _on_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.counts[model.name] += 1
        if model.name == "GetObject":
            headers = params.get("headers", {})
            if "Range" in headers:
                self.ranges.append(headers["Range"])

    def _on_send(self, request: Any, **_: Any) -> None:
        self.authorized.append("Authorization" in request.headers)


def assert_no_secrets(exc: BaseException, server: SeaweedS3) -> None:
    text = str(exc)
    assert server.secret_key not in text
    assert server.access_key not in text


@pytest.mark.integration
@pytest.mark.parametrize(("requested", "pattern", "expected"), LAYOUT_ROWS)
async def test_stage_layout_rows(aws_env, layout_bucket, tmp_path, requested, pattern, expected):
    storage = S3Storage()
    params = {"Endpoint": aws_env.endpoint}
    if pattern:
        params["Filter"] = pattern
    source = s3_input(layout_bucket, requested, **params)
    assert await storage.size_hint(source) == 4 * len(expected)
    holder = await storage.stage(source, tmp_path / "staging")
    assert holder.parent == tmp_path / "staging" and holder.is_dir()
    staged = files_under(holder)
    assert sorted(staged) == sorted(expected)
    for rel, data in staged.items():
        assert data == content_of(rel)
        assert os.stat(holder / rel).st_mode & 0o004, "staged files are readable by all"


@pytest.mark.integration
async def test_endpoint_from_the_node_environment(aws_env, monkeypatch, layout_bucket, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env.endpoint)  # boto3 reads it itself
    holder = await S3Storage().stage(s3_input(layout_bucket, "set2/nested/"), tmp_path)
    assert files_under(holder) == {"301.txt": b"301\n", "302.txt": b"302\n"}


@pytest.mark.integration
async def test_directory_markers_are_skipped(aws_env, s3_bucket, tmp_path):
    # Files first: weed stalls a PUT below a marker it has just made (a weed quirk).
    put_many(s3_bucket, {"d/sub/x.txt": b"x", "d/y.txt": b"y", "d/empty": b""})
    for marker in ("d/", "d/sub/", "e/"):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=marker, Body=b"")
    storage = S3Storage()
    source = s3_input(s3_bucket, "d/", Endpoint=aws_env.endpoint)
    holder = await storage.stage(source, tmp_path)
    assert files_under(holder) == {"empty": b"", "sub/x.txt": b"x", "y.txt": b"y"}
    assert sorted(p.relative_to(holder).as_posix() for p in holder.rglob("*")) == [
        "empty",
        "sub",
        "sub/x.txt",
        "y.txt",
    ]
    assert await storage.size_hint(source) == 2
    with pytest.raises(S3NoMatchingObjects, match="only directory markers start with 'e/'"):
        await storage.stage(s3_input(s3_bucket, "e/", Endpoint=aws_env.endpoint), tmp_path)


@pytest.mark.integration
async def test_checksum_correct_passes_and_wrong_fails_with_both_values(
    aws_env, own_layout_bucket, tmp_path
):
    storage = S3Storage()
    good = sha256_b64(b"001\n")
    bad = sha256_b64(b"something else")
    ok = s3_input(own_layout_bucket, "set1/001.txt", Endpoint=aws_env.endpoint, ChecksumSHA256=good)
    holder = await storage.stage(ok, tmp_path / "a")
    assert files_under(holder) == {"001.txt": b"001\n"}

    # Stored without a SHA-256: computed locally from the downloaded bytes.
    wrong = s3_input(
        own_layout_bucket, "set1/001.txt", Endpoint=aws_env.endpoint, ChecksumSHA256=bad
    )
    with pytest.raises(S3ChecksumMismatch) as info:
        await storage.stage(wrong, tmp_path / "b")
    assert bad in str(info.value) and good in str(info.value)
    assert (info.value.expected, info.value.actual) == (bad, good)
    assert list((tmp_path / "b").iterdir()) == [], "a failed stage leaves nothing behind"

    # Stored with its SHA-256: refused from the HEAD, before any download.
    data = b"checked\n"
    own_layout_bucket.client.put_object(
        Bucket=own_layout_bucket.name,
        Key="cs/checked.txt",
        Body=data,
        ChecksumSHA256=sha256_b64(data),
    )
    calls = Calls()
    storage = S3Storage(session=calls.session)
    source = s3_input(
        own_layout_bucket, "cs/checked.txt", Endpoint=aws_env.endpoint, ChecksumSHA256=bad
    )
    with pytest.raises(S3ChecksumMismatch) as info:
        await storage.stage(source, tmp_path / "c")
    assert bad in str(info.value) and sha256_b64(data) in str(info.value)
    assert calls.counts["GetObject"] == 0
    right = s3_input(
        own_layout_bucket,
        "cs/checked.txt",
        Endpoint=aws_env.endpoint,
        ChecksumSHA256=sha256_b64(data),
    )
    assert files_under(await storage.stage(right, tmp_path / "d")) == {"checked.txt": data}


@pytest.mark.integration
async def test_version_id_fetches_the_old_version(aws_env, s3_bucket, tmp_path):
    s3_bucket.enable_versioning()
    put = s3_bucket.client.put_object
    old = put(Bucket=s3_bucket.name, Key="v/version_file.txt", Body=b"001\n")["VersionId"]
    put(Bucket=s3_bucket.name, Key="v/version_file.txt", Body=b"002\n")
    storage = S3Storage(cache_dir=tmp_path / "cache")
    endpoint = aws_env.endpoint

    current = s3_input(s3_bucket, "v/version_file.txt", Endpoint=endpoint)
    assert files_under(await storage.stage(current, tmp_path / "a")) == {
        "version_file.txt": b"002\n"
    }
    pinned = s3_input(s3_bucket, "v/version_file.txt", Endpoint=endpoint, VersionID=old)
    assert await storage.size_hint(pinned) == 4
    assert files_under(await storage.stage(pinned, tmp_path / "b")) == {
        "version_file.txt": b"001\n"
    }
    with_checksum = s3_input(
        s3_bucket,
        "v/version_file.txt",
        Endpoint=endpoint,
        VersionID=old,
        ChecksumSHA256=sha256_b64(b"001\n"),
    )
    assert files_under(await storage.stage(with_checksum, tmp_path / "c")) == {
        "version_file.txt": b"001\n"
    }
    missing = s3_input(s3_bucket, "v/version_file.txt", Endpoint=endpoint, VersionID="0" * 32)
    with pytest.raises(S3VersionNotFound, match="no version '0{32}'"):
        await storage.stage(missing, tmp_path / "d")
    assert await storage.size_hint(missing) is None


@pytest.mark.integration
async def test_missing_key_is_an_error_with_a_hint(aws_env, layout_bucket, tmp_path):
    storage = S3Storage()
    endpoint = aws_env.endpoint
    with pytest.raises(S3ObjectNotFound) as info:
        await storage.stage(s3_input(layout_bucket, "set1/00", Endpoint=endpoint), tmp_path)
    message = str(info.value)
    assert f"s3://{layout_bucket.name}/set1/00" in message and endpoint in message
    assert "hint" not in message and "end the key" not in message
    with pytest.raises(S3ObjectNotFound, match="end the key with '/' or '\\*'"):
        await storage.stage(s3_input(layout_bucket, "set2/nested", Endpoint=endpoint), tmp_path)
    assert await storage.size_hint(s3_input(layout_bucket, "set1/00", Endpoint=endpoint)) is None
    assert_no_secrets(info.value, aws_env)


@pytest.mark.integration
async def test_missing_bucket_is_an_error(aws_env, tmp_path):
    storage = S3Storage()
    for key in ("a.txt", "prefix/"):
        source = s3_input("no-such-bucket-bacnode", key, Endpoint=aws_env.endpoint)
        with pytest.raises(S3BucketNotFound) as info:
            await storage.stage(source, tmp_path)
        assert "'no-such-bucket-bacnode' does not exist" in str(info.value)
        assert aws_env.endpoint in str(info.value)
        assert_no_secrets(info.value, aws_env)


@pytest.mark.integration
async def test_no_object_matches_the_prefix(aws_env, layout_bucket, tmp_path):
    storage = S3Storage()
    endpoint = aws_env.endpoint
    with pytest.raises(S3NoMatchingObjects, match="no object in the bucket .* starts with 'set3'"):
        await storage.stage(s3_input(layout_bucket, "set3*", Endpoint=endpoint), tmp_path)
    filtered = s3_input(layout_bucket, "set1/", Endpoint=endpoint, Filter=r"\.csv$")
    with pytest.raises(S3NoMatchingObjects, match="none matches the Filter"):
        await storage.stage(filtered, tmp_path)
    with pytest.raises(StorageError, match="invalid Filter regular expression"):
        await storage.stage(
            s3_input(layout_bucket, "set1/", Filter="(", Endpoint=endpoint), tmp_path
        )
    with pytest.raises(StorageError, match="VersionID applies to a single object"):
        await storage.stage(
            s3_input(layout_bucket, "set1/", VersionID="x", Endpoint=endpoint), tmp_path
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
async def test_access_denied_without_credentials_and_with_wrong_ones(
    no_aws_env, monkeypatch, s3_server, layout_bucket, tmp_path
):
    endpoint = s3_server.endpoint
    # No credentials anywhere: anonymous requests, and the bucket is private.
    for key in ("set1/001.txt", "set1/"):
        with pytest.raises(S3AccessDenied, match="no AWS credentials were found") as info:
            await S3Storage().stage(s3_input(layout_bucket, key, Endpoint=endpoint), tmp_path)
        assert layout_bucket.name in str(info.value) and endpoint in str(info.value)
    # Credentials the server does not accept.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + s3_server.secret_key[:8])
    with pytest.raises(S3AccessDenied, match="rejected this node's AWS credentials") as info:
        await S3Storage().stage(s3_input(layout_bucket, "set1/", Endpoint=endpoint), tmp_path)
    assert_no_secrets(info.value, s3_server)
    assert "not-the-secret" not in str(info.value)


@pytest.mark.integration
async def test_unsigned_requests_read_a_public_bucket(
    no_aws_env, s3_server, own_layout_bucket, tmp_path
):
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [
                    f"arn:aws:s3:::{own_layout_bucket.name}",
                    f"arn:aws:s3:::{own_layout_bucket.name}/*",
                ],
            }
        ],
    }
    own_layout_bucket.client.put_bucket_policy(
        Bucket=own_layout_bucket.name, Policy=json.dumps(policy)
    )
    calls = Calls()
    storage = S3Storage(session=calls.session)
    source = s3_input(own_layout_bucket, "set2/", Endpoint=s3_server.endpoint)
    assert await storage.size_hint(source) == 16
    holder = await storage.stage(source, tmp_path)
    assert sorted(files_under(holder)) == ["201.txt", "202.txt", "nested/301.txt", "nested/302.txt"]
    single = s3_input(own_layout_bucket, "set1/001.txt", Endpoint=s3_server.endpoint)
    assert files_under(await storage.stage(single, tmp_path)) == {"001.txt": b"001\n"}
    assert calls.authorized and not any(calls.authorized), "every request went unsigned"


@pytest.mark.integration
async def test_unreachable_endpoint_fails_fast(aws_env, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    with pytest.raises(S3EndpointUnreachable) as info:  # default timeouts and retries
        await S3Storage().stage(s3_input("some-bucket", "a.txt", Endpoint=endpoint), tmp_path)
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert "s3://some-bucket/a.txt" in message and endpoint in message
    assert "connection refused" in message
    assert_no_secrets(info.value, aws_env)
    storage = S3Storage(max_attempts=1)
    with pytest.raises(S3EndpointUnreachable, match="s3://some-bucket/prefix/ .*refused"):
        await storage.stage(s3_input("some-bucket", "prefix/", Endpoint=endpoint), tmp_path)
    assert await storage.size_hint(s3_input("some-bucket", "x", Endpoint=endpoint)) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
async def test_endpoint_user_info_is_not_shown(aws_env, tmp_path):
    port = free_port()
    source = s3_input("some-bucket", "a.txt", Endpoint=f"http://user:hunter2@127.0.0.1:{port}")
    with pytest.raises(S3EndpointUnreachable) as info:
        await S3Storage(max_attempts=1).stage(source, tmp_path)
    assert "hunter2" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.integration
async def test_listing_over_a_thousand_keys_is_paginated(aws_env, s3_bucket, tmp_path):
    objects = {f"many/{i:04d}.txt": f"{i}\n".encode() for i in range(1100)}
    objects["many-not/x.txt"] = b"not me"
    put_many(s3_bucket, objects)
    calls = Calls()
    storage = S3Storage(session=calls.session)
    source = s3_input(s3_bucket, "many/*", Endpoint=aws_env.endpoint)
    expected = {key.split("/")[1]: data for key, data in objects.items() if key.startswith("many/")}
    assert await storage.size_hint(source) == sum(map(len, expected.values()))
    assert calls.counts["ListObjectsV2"] >= 2
    holder = await storage.stage(source, tmp_path)
    assert files_under(holder) == expected
    assert calls.counts["GetObject"] == 1100


@pytest.mark.integration
async def test_cache_serves_repeated_inputs_without_get(aws_env, own_layout_bucket, tmp_path):
    calls = Calls()
    cache = tmp_path / "cache"
    storage = S3Storage(cache_dir=cache, session=calls.session)
    source = s3_input(own_layout_bucket, "set2/", Endpoint=aws_env.endpoint)
    first = await storage.stage(source, tmp_path / "one")
    assert calls.counts["GetObject"] == 4
    second = await storage.stage(source, tmp_path / "two")
    assert calls.counts["GetObject"] == 4, "the second stage fetched nothing"
    assert files_under(first) == files_under(second)
    a, b = first / "nested/301.txt", second / "nested/301.txt"
    assert os.stat(a).st_ino == os.stat(b).st_ino, "hard-linked from the cache"
    assert not os.stat(a).st_mode & 0o222, "cached files are read-only"

    # A new storage over the same cache directory (a restarted node) reuses it too.
    again = S3Storage(cache_dir=cache, session=calls.session)
    single = s3_input(own_layout_bucket, "set2/201.txt", Endpoint=aws_env.endpoint)
    assert files_under(await again.stage(single, tmp_path / "three")) == {"201.txt": b"201\n"}
    assert calls.counts["GetObject"] == 4

    # The object changes: new ETag, so it is fetched again, and the new bytes are staged.
    own_layout_bucket.client.put_object(
        Bucket=own_layout_bucket.name, Key="set2/201.txt", Body=b"new\n"
    )
    assert files_under(await again.stage(single, tmp_path / "four")) == {"201.txt": b"new\n"}
    assert calls.counts["GetObject"] == 5
    assert (first / "201.txt").read_bytes() == b"201\n", "earlier stages are untouched"


@pytest.mark.integration
async def test_same_object_in_two_inputs_is_fetched_once(aws_env, layout_bucket, tmp_path):
    calls = Calls()
    storage = S3Storage(cache_dir=tmp_path / "cache", session=calls.session)
    source = s3_input(layout_bucket, "set1/", Endpoint=aws_env.endpoint)
    other = s3_input(layout_bucket, "set1/", "/more", Endpoint=aws_env.endpoint)
    staged = await stage_inputs(
        [source, other], tmp_path / "staging", registry=StorageRegistry([storage])
    )
    assert [target for _, target in staged] == ["/inputs", "/more"]
    assert files_under(staged[0][0]) == files_under(staged[1][0])
    assert calls.counts["GetObject"] == 4


@pytest.mark.integration
async def test_cache_is_trimmed_to_its_limit(aws_env, s3_bucket, tmp_path):
    put_many(s3_bucket, {f"big/{i}.bin": bytes([i]) * 1000 for i in range(5)})
    cache = tmp_path / "cache"
    storage = S3Storage(cache_dir=cache, cache_max_bytes=2500)
    for i in range(5):
        source = s3_input(s3_bucket, f"big/{i}.bin", Endpoint=aws_env.endpoint)
        holder = await storage.stage(source, tmp_path / str(i))
        assert (holder / f"{i}.bin").read_bytes() == bytes([i]) * 1000
    kept = [p for p in (cache / "objects").iterdir() if not p.name.endswith(".json")]
    assert 1 <= len(kept) <= 2
    assert sum(p.stat().st_size for p in kept) <= 2500
    assert not list((cache / "tmp").iterdir())


@pytest.mark.integration
async def test_large_objects_are_fetched_in_ranges(aws_env, s3_bucket, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 123)
    small = b"small\n"
    put_many(s3_bucket, {"big/blob.bin": data, "big/small.txt": small})
    calls = Calls()
    storage = S3Storage(
        session=calls.session, multipart_threshold=1024 * 1024, part_size=512 * 1024
    )
    source = s3_input(
        s3_bucket, "big/blob.bin", Endpoint=aws_env.endpoint, ChecksumSHA256=sha256_b64(data)
    )
    holder = await storage.stage(source, tmp_path / "a")
    assert (holder / "blob.bin").read_bytes() == data
    assert len(calls.ranges) == 11  # ceil((5 MiB + 123) / 512 KiB)
    assert f"bytes=0-{512 * 1024 - 1}" in calls.ranges
    assert f"bytes={5 * 1024 * 1024}-{len(data) - 1}" in calls.ranges
    wrong = s3_input(
        s3_bucket, "big/blob.bin", Endpoint=aws_env.endpoint, ChecksumSHA256=sha256_b64(small)
    )
    with pytest.raises(S3ChecksumMismatch, match=sha256_b64(data).replace("+", r"\+")):
        await storage.stage(wrong, tmp_path / "b")
    # With a cache, the ranged download lands in the cache and is linked from there.
    cached = S3Storage(
        cache_dir=tmp_path / "cache", multipart_threshold=1024 * 1024, part_size=512 * 1024
    )
    holder = await cached.stage(
        s3_input(s3_bucket, "big/", Endpoint=aws_env.endpoint), tmp_path / "c"
    )
    assert files_under(holder) == {"blob.bin": data, "small.txt": small}


@pytest.mark.integration
async def test_the_tutorial_input_stages_against_seaweedfs(
    aws_env, monkeypatch, s3_bucket, tmp_path
):
    text = (
        "s3://noaa-goes16/ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*:/inputs,"
        "opt=region=us-east-1"
    )
    source = parse_input(text)
    assert source.source_type == "s3" and source.target == "/inputs"
    assert source.params == {
        "Bucket": "noaa-goes16",
        "Key": "ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*",
        "Region": "us-east-1",
    }
    client = s3_bucket.client
    try:
        client.create_bucket(Bucket="noaa-goes16")
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    try:
        base = "ABI-L1b-RadC/2000/001/12/"
        wanted = {
            f"{base}OR_ABI-L1b-RadC-M3C01_G16_s20000011200{i}_e20000011200{i + 1}_c2000.nc": (
                os.urandom(20_000 + i)
            )
            for i in range(3)
        }
        others = {
            f"{base}OR_ABI-L1b-RadC-M3C02_G16_s20000011200_e20000011201_c2000.nc": b"C02",
            "ABI-L1b-RadC/2000/001/13/OR_ABI-L1b-RadC-M3C01_G16_s2000001130.nc": b"hour 13",
        }
        noaa = S3Bucket(name="noaa-goes16", client=client, server=aws_env)
        put_many(noaa, {**wanted, **others})
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env.endpoint)
        storage = S3Storage(cache_dir=tmp_path / "cache")
        [(holder, target)] = await stage_inputs(
            [source], tmp_path / "staging", registry=StorageRegistry([storage])
        )
        assert target == "/inputs"
        expected = {key.rsplit("/", 1)[1]: data for key, data in wanted.items()}
        assert files_under(holder) == expected  # byte-identical, flat under /inputs
        # What `cp -r /inputs/* /outputs/` would copy: the files themselves.
        assert sorted(p.name for p in holder.iterdir()) == sorted(expected)
    finally:
        _empty_and_delete(client, "noaa-goes16")


@pytest.mark.integration
async def test_cancelled_stage_leaves_nothing(aws_env, s3_bucket, tmp_path):
    objects = {f"c/{i}.bin": os.urandom(100_000) for i in range(8)}
    put_many(s3_bucket, objects)
    calls = Calls()
    scope = trio.CancelScope()
    token = trio.lowlevel.current_trio_token()

    async def cancel() -> None:
        scope.cancel()

    first = threading.Lock()

    def cancel_at_first_get(model: Any, **_: Any) -> None:
        if model.name == "GetObject" and first.acquire(blocking=False):
            trio.from_thread.run(cancel, trio_token=token)  # from the worker thread
            time.sleep(0.3)  # still downloading while the stage unwinds

    calls.session.events.register("before-call.s3", cancel_at_first_get)
    storage = S3Storage(session=calls.session, cache_dir=tmp_path / "cache")
    source = s3_input(s3_bucket, "c/", Endpoint=aws_env.endpoint)
    with scope:
        await storage.stage(source, tmp_path / "staging")
    assert scope.cancelled_caught
    await trio.sleep(0.6)  # let the abandoned downloads notice and stop
    assert list((tmp_path / "staging").iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    # An object whose download had finished when the cancellation arrived may be cached;
    # nothing partial ever is.
    cached = tmp_path / "cache" / "objects"
    bodies = set(objects.values())
    for path in cached.glob("*") if cached.exists() else ():
        assert path.name.endswith(".json") or path.read_bytes() in bodies
    # And the backend still works afterwards.
    holder = await storage.stage(source, tmp_path / "again")
    assert len(files_under(holder)) == 8


@pytest.mark.integration
async def test_unsafe_keys_from_a_listing_are_refused(aws_env, s3_bucket, monkeypatch, tmp_path):
    # SeaweedFS itself refuses or normalises such keys (other servers may not): feed the
    # listing's result in, to check the backend refuses them before fetching anything.
    def listing(self, client, params, pattern):
        return [S3Object("in/ok.txt", 1, '"e"'), S3Object("in/../../escape", 1, '"e"')]

    monkeypatch.setattr(S3Storage, "_list", listing)
    source = s3_input(s3_bucket, "in/", Endpoint=aws_env.endpoint)
    with pytest.raises(S3UnsafeKey, match="'in/../../escape'.*cannot be staged safely"):
        await S3Storage().stage(source, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert await S3Storage().size_hint(source) is None


async def test_backend_is_installed_without_credentials(no_aws_env):
    assert await S3Storage().is_installed()
    assert os.environ["AWS_METADATA_SERVICE_TIMEOUT"]
    assert os.environ["AWS_METADATA_SERVICE_NUM_ATTEMPTS"]


@pytest.fixture(autouse=True)
def _restore_metadata_env(monkeypatch) -> Iterator[None]:
    """S3Storage sets these in the process when unset; keep tests from leaking them."""
    for name in ("AWS_METADATA_SERVICE_TIMEOUT", "AWS_METADATA_SERVICE_NUM_ATTEMPTS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    yield
