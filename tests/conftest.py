"""Shared fixtures: the real services (dockerd, a local busybox image, SeaweedFS S3).

Heavy modules (docker, boto3, scripts.services) are imported inside the fixtures, so collecting
and running the pure protocol tests stays fast. A missing component FAILS the tests that need it,
with the reason; it never skips them (CI counts a skip as a failure).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

# In-process boto3 clients too: never ask the cloud metadata address for credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Every daemon a test starts checks each answer against its response model, as FastAPI did
# at run time (node/api_routing.py): a shape that drifts from the documented one fails.
os.environ["BACNODE_API_CHECK_RESPONSES"] = "1"

if TYPE_CHECKING:
    from scripts.services import Kubo, SeaweedS3


def _unavailable(what: str, problem: str) -> NoReturn:
    """Fail (not skip) the requesting test, saying which component is missing and why."""
    pytest.fail(f"{what} is unavailable: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A docker-py client for a running dockerd (started with --bridge=none if needed)."""
    from scripts.services import ensure_dockerd

    problem = ""
    try:
        ensure_dockerd()
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # ServiceError, ImportError, docker.errors.DockerException, ...
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        _unavailable("Docker engine", problem)
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any) -> str:
    """The tag of the locally built busybox image, ``busybox:latest``."""
    from scripts.services import BUSYBOX_TAG, ServiceError, build_busybox_image

    try:
        return build_busybox_image(BUSYBOX_TAG, client=docker_client)
    except (ServiceError, OSError) as exc:
        problem = str(exc)
    _unavailable("busybox image", problem)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server on free loopback ports, fresh data dir, stopped after the session."""
    from scripts.services import SeaweedS3, ServiceError

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    problem = ""
    try:
        server.start()
    except (ServiceError, OSError) as exc:
        problem = str(exc)
    if problem:
        _unavailable("SeaweedFS S3", problem)
    yield server
    server.stop(grace=0.5)


@dataclass
class S3Bucket:
    """A fresh bucket on the test S3 server, with a client that can reach it."""

    name: str
    client: Any
    server: SeaweedS3

    def enable_versioning(self) -> None:
        """Turn versioning on, as ``aws s3api put-bucket-versioning`` would."""
        self.client.put_bucket_versioning(
            Bucket=self.name, VersioningConfiguration={"Status": "Enabled"}
        )

    def uri(self, key: str = "") -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.name}/{key}"


def _empty_and_delete(client: Any, bucket: str) -> None:
    """Delete every object version and delete marker, then the bucket itself.

    Lists only first pages, again and again: weed's ListObjectVersions paging (KeyMarker) skips
    keys such as "in-other/x" after "in/..." (it lists directory-first, compares bytewise).
    """
    for _ in range(10_000):
        page = client.list_object_versions(Bucket=bucket)
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if not doomed:
            break
        resp = client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        if resp.get("Errors"):
            raise AssertionError(f"could not empty bucket {bucket}: {resp['Errors'][:3]}")
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> Iterator[S3Bucket]:
    """A new, uniquely named, empty bucket; emptied and removed after the test."""
    client = s3_server.client()
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    yield S3Bucket(name=name, client=client, server=s3_server)
    _empty_and_delete(client, name)


@pytest.fixture
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubo]:
    """A kubo daemon (the reference IPFS node) for one test: fresh repo, loopback only.

    Swarm and API on free 127.0.0.1 ports, no gateway, bootstrap, mDNS, routing, relay or
    telemetry (see ``scripts.services.Kubo``); online, so it speaks bitswap with the peers it
    is connected to. The binary is the one ``scripts/setup.sh`` builds (``$BACNODE_KUBO``
    overrides its path). Stopped (SIGTERM, then SIGKILL) after the test.
    """
    from scripts.daemons import free_ports
    from scripts.services import Kubo, ServiceError

    swarm_port, api_port = free_ports(2)
    node = Kubo(tmp_path_factory.mktemp("kubo"), swarm_port=swarm_port, api_port=api_port)
    problem = ""
    try:
        node.start()
    except (ServiceError, OSError) as exc:
        problem = str(exc)
    if problem:
        _unavailable("kubo", problem)
    yield node
    node.stop(grace=5)


@dataclass
class BacalhauCli:
    """Bacalhau v1.9.3's own CLI (the binary ``scripts/setup.sh`` builds), offline, with its
    repo in a directory of its own."""

    binary: Path
    home: Path

    def run(self, *args: str, api_port: int, timeout: float = 120,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess:
        from scripts.services import bacalhau_env

        environment = bacalhau_env(self.home, {
            "BACALHAU_API_HOST": "127.0.0.1", "BACALHAU_API_PORT": str(api_port),
            "NO_COLOR": "1", **(env or {})})
        return subprocess.run([str(self.binary), *args], env=environment, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def bacalhau_cli(tmp_path_factory: pytest.TempPathFactory) -> BacalhauCli:
    from scripts.services import ServiceError, find_bacalhau

    try:
        binary = find_bacalhau()
    except ServiceError as exc:
        _unavailable("the Bacalhau CLI", str(exc))
    cli = BacalhauCli(binary, tmp_path_factory.mktemp("bacalhau-home"))
    # Its first run creates its repo, the second migrates it, and both say so on stdout:
    # get that done before the tests read what it prints.
    for _ in range(2):
        cli.run("version", "--client", api_port=9)
    return cli
