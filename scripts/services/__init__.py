"""Real services for tests, the devnet and benchmarks: dockerd, a local busybox image, SeaweedFS S3,
kubo and Bacalhau's CLI (one module each; ``gobuild`` builds the Go ones).

Used as a library (the pytest fixtures in ``tests/conftest.py`` import it) and as a CLI::

    python -m scripts.services docker                      # make sure dockerd answers
    python -m scripts.services image [--tag busybox:latest] # build the local busybox image
    python -m scripts.services s3 [--dir D] [--port P]     # run SeaweedFS S3 until Ctrl-C
    python -m scripts.services kubo                        # build kubo (IPFS) if not installed
    python -m scripts.services bacalhau                    # build Bacalhau's CLI if not installed

Rules it keeps (see shared/DESIGN.md, "Real components"): dockerd runs without the default
bridge (no traffic to private-range addresses), every SeaweedFS and kubo listener is on 127.0.0.1
with an explicit port, nothing phones home. Only the stdlib, docker-py and boto3 (both imported
lazily).
"""

from __future__ import annotations

from .bacalhau import (
    BACALHAU_ENV,
    BACALHAU_MODULE,
    BACALHAU_OFFLINE_ENV,
    BACALHAU_PATH,
    BACALHAU_VERSION,
    bacalhau_env,
    bacalhau_path,
    bacalhau_version,
    find_bacalhau,
    install_bacalhau,
)
from .cli import main
from .common import LOOPBACK, ServiceError, free_port, free_ports
from .dockerd import (
    BUSYBOX_TAG,
    DOCKER_SOCKET,
    DOCKERD_ARGS,
    DOCKERD_LOG,
    build_busybox_image,
    docker_ping,
    ensure_dockerd,
)
from .kubo import KUBO_ENV, KUBO_PATH, KUBO_VERSION, Kubo, find_kubo, install_kubo, kubo_path
from .seaweedfs import SeaweedS3

__all__ = [
    "BACALHAU_ENV",
    "BACALHAU_MODULE",
    "BACALHAU_OFFLINE_ENV",
    "BACALHAU_PATH",
    "BACALHAU_VERSION",
    "BUSYBOX_TAG",
    "DOCKERD_ARGS",
    "DOCKERD_LOG",
    "DOCKER_SOCKET",
    "KUBO_ENV",
    "KUBO_PATH",
    "KUBO_VERSION",
    "LOOPBACK",
    "Kubo",
    "SeaweedS3",
    "ServiceError",
    "bacalhau_env",
    "bacalhau_path",
    "bacalhau_version",
    "build_busybox_image",
    "docker_ping",
    "ensure_dockerd",
    "find_bacalhau",
    "find_kubo",
    "free_port",
    "free_ports",
    "install_bacalhau",
    "install_kubo",
    "kubo_path",
    "main",
]
