"""The ``python -m scripts.services`` command."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .bacalhau import (
    BACALHAU_ENV,
    BACALHAU_PATH,
    BACALHAU_VERSION,
    bacalhau_path,
    install_bacalhau,
)
from .common import ServiceError, _log_tail
from .dockerd import BUSYBOX_TAG, DOCKER_SOCKET, _split_tag, build_busybox_image, ensure_dockerd
from .kubo import KUBO_ENV, KUBO_PATH, KUBO_VERSION, install_kubo, kubo_path
from .seaweedfs import SeaweedS3

# --------------------------------------------------------------------------------------------
# CLI


def _cmd_docker(args: argparse.Namespace) -> int:
    """``docker``: make sure dockerd answers."""
    began = time.monotonic()
    ensure_dockerd(timeout=args.timeout)
    print(f"dockerd ready on unix://{DOCKER_SOCKET} ({time.monotonic() - began:.1f}s)")
    return 0


def _cmd_image(args: argparse.Namespace) -> int:
    """``image``: build the busybox image under the first tag, add the other tags."""
    import docker

    began = time.monotonic()
    tags: list[str] = args.tag or [BUSYBOX_TAG]
    client = docker.from_env()
    first = build_busybox_image(tags[0], client=client)
    image = client.images.get(first)
    for extra in tags[1:]:
        repo, name = _split_tag(extra)
        image.tag(repo, name)
    print(f"image {', '.join(tags)} = {image.id} ({time.monotonic() - began:.1f}s)")
    return 0


def _cmd_s3(args: argparse.Namespace) -> int:
    """``s3``: run SeaweedFS S3 in the foreground until SIGINT/SIGTERM."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored, as a shell starts a background job (`cmd &`):
    # Python then leaves it ignored, and Ctrl-C or `kill -INT` would not stop weed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = SeaweedS3(
        args.dir, port=args.port, access_key=args.access_key, secret_key=args.secret_key
    )
    try:
        server.start()
        for key, value in server.env().items():
            print(f"export {key}={value}")
        print(
            f"# SeaweedFS S3 on {server.endpoint}, data in {server.data_dir}, log "
            f"{server.log_path}; started in {server.start_seconds:.1f}s; Ctrl-C stops it",
            flush=True,
        )
        while server.running():
            time.sleep(0.5)
        print(
            f"error: weed exited unexpectedly:\n{_log_tail(server.log_path or '')}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("# stopping SeaweedFS", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()


def _cmd_kubo(args: argparse.Namespace) -> int:
    """``kubo``: build and install kubo unless the right version is already there."""
    began = time.monotonic()
    target = Path(args.path) if args.path else kubo_path()
    if install_kubo(target):
        print(f"kubo {KUBO_VERSION} built into {target} ({time.monotonic() - began:.1f}s)")
    else:
        print(f"kubo {KUBO_VERSION} already at {target}")
    return 0


def _cmd_bacalhau(args: argparse.Namespace) -> int:
    """``bacalhau``: build and install Bacalhau's CLI unless the right version is there."""
    began = time.monotonic()
    target = Path(args.path) if args.path else bacalhau_path()
    if install_bacalhau(target):
        print(f"bacalhau {BACALHAU_VERSION} built into {target} "
              f"({time.monotonic() - began:.1f}s)")
    else:
        print(f"bacalhau {BACALHAU_VERSION} already at {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scripts.services``."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.services", description="Start bacnode's real test services."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_docker = sub.add_parser("docker", help="make sure dockerd answers (start it if needed)")
    p_docker.add_argument("--timeout", type=float, default=60.0)
    p_docker.set_defaults(func=_cmd_docker)
    p_image = sub.add_parser("image", help="build the local busybox image")
    p_image.add_argument(
        "--tag", action="append", help=f"image tag (repeatable; default {BUSYBOX_TAG})"
    )
    p_image.set_defaults(func=_cmd_image)
    p_s3 = sub.add_parser("s3", help="run SeaweedFS S3 on 127.0.0.1 until Ctrl-C")
    p_s3.add_argument("--dir", help="data dir, kept (default: a temporary one, removed)")
    p_s3.add_argument("--port", type=int, help="S3 port (default: a free one)")
    p_s3.add_argument("--access-key", help="access key (default: random, or the dir's saved one)")
    p_s3.add_argument("--secret-key", help="secret key (default: random, or the dir's saved one)")
    p_s3.set_defaults(func=_cmd_s3)
    p_kubo = sub.add_parser(
        "kubo", help=f"build kubo {KUBO_VERSION} (the IPFS reference node) unless installed"
    )
    p_kubo.add_argument("--path", help=f"install here (default: ${KUBO_ENV} or {KUBO_PATH})")
    p_kubo.set_defaults(func=_cmd_kubo)
    p_bacalhau = sub.add_parser(
        "bacalhau", help=f"build Bacalhau {BACALHAU_VERSION}'s CLI (the reference client) "
        "unless installed")
    p_bacalhau.add_argument("--path", help=f"install here (default: ${BACALHAU_ENV} or "
                            f"{BACALHAU_PATH})")
    p_bacalhau.set_defaults(func=_cmd_bacalhau)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

