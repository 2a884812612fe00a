"""The Docker engine (started without the default bridge) and the local busybox image."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from .common import ServiceError, _log_tail

DOCKER_SOCKET = "/var/run/docker.sock"
# Never the default bridge: without it no container can reach a private-range address.
DOCKERD_ARGS: tuple[str, ...] = ("--bridge=none", "--iptables=false")
DOCKERD_LOG = "/tmp/bacnode-dockerd.log"
DOCKERD_PID_FILE = "/var/run/docker.pid"
BUSYBOX_TAG = "busybox:latest"


# --------------------------------------------------------------------------------------------
# Docker engine


def docker_ping(socket_path: str = DOCKER_SOCKET, timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers ``GET /_ping`` on ``socket_path``."""
    from node.executor.docker_socket import EngineError, EngineSocket

    try:
        EngineSocket(unix_path=socket_path, timeout=timeout).ping()
    except EngineError:
        return False
    return True


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


def _dockerd_already_running(pid_file: str = DOCKERD_PID_FILE) -> bool:
    """Whether a dockerd process is alive per its pid file (it may still be starting)."""
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:
        return "dockerd" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def _log_size(path: str) -> int:
    """The size of ``path`` in bytes, or -1 if it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def ensure_dockerd(
    timeout: float = 60.0,
    *,
    socket_path: str = DOCKER_SOCKET,
    log_path: str = DOCKERD_LOG,
    longest_startup: float = 900.0,
    dockerd_args: tuple[str, ...] = DOCKERD_ARGS,
    pid_file: str = DOCKERD_PID_FILE,
) -> None:
    """Make sure a Docker engine answers on ``socket_path``, starting one if needed.

    A started dockerd runs detached (own session, outlives this process) with
    ``dockerd_args`` (``--bridge=none --iptables=false``) and logs to ``log_path``; one
    alive per ``pid_file`` is waited for instead.

    ``timeout`` bounds how long a dockerd we started may stay silent: a dockerd that was
    killed with containers alive removes their stale network sandboxes on its next start,
    one every ~0.1 s and each logged, before it answers, so a start after a hard stop can
    take minutes while its log keeps growing. It is given up to ``longest_startup`` then.
    """
    if docker_ping(socket_path):
        return
    started: subprocess.Popen[bytes] | None = None
    if _dockerd_already_running(pid_file):
        how = f"an already-running dockerd (pid file {pid_file})"
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
                f"start it yourself: sudo {dockerd} {' '.join(dockerd_args)}"
            )
        with open(log_path, "ab") as log:
            started = subprocess.Popen(
                [dockerd, *dockerd_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _detached.append(started)
        how = f"dockerd (pid {started.pid}, log {log_path})"
    began = time.monotonic()
    last_progress, log_size = began, _log_size(log_path)
    said_busy = False
    while True:
        if docker_ping(socket_path):
            return
        if started is not None and started.poll() is not None:
            raise ServiceError(
                f"dockerd exited with code {started.returncode} before answering on "
                f"{socket_path}; last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        now = time.monotonic()
        if started is not None and (size := _log_size(log_path)) != log_size:
            log_size, last_progress = size, now
            if not said_busy and now - began > 10:
                said_busy = True
                print(
                    f"dockerd is still starting after {now - began:.0f}s and still logging "
                    f"(see {log_path}); waiting",
                    file=sys.stderr,
                    flush=True,
                )
        if now - last_progress > timeout or now - began > max(timeout, longest_startup):
            break
        time.sleep(0.1)
    if started is not None:
        waited = (
            f"was silent for {timeout:.0f}s"
            if now - last_progress > timeout
            else (f"kept logging but did not answer within {now - began:.0f}s")
        )
        where = f"last lines of {log_path}:\n{_log_tail(log_path)}"
    else:
        waited = f"did not answer within {timeout:.0f}s"
        where = "it was not started here, so see its own log (journalctl -u docker, or its stderr)"
    raise ServiceError(f"{how} on {socket_path} {waited}; {where}")


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
