"""Input staging: inline data URLs and URL downloads, alone and mounted into a real container.

(These live beside the executor tests because staging feeds the executor's mounts.)
"""

from __future__ import annotations

import base64
import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest
import trio

from node.storage import (
    InlineStorage,
    NoopStorage,
    StorageError,
    StorageRegistry,
    UnsupportedStorage,
    UrlDownloadStorage,
    stage_inputs,
    storage_for,
)
from node.storage.inline import decode_data_url
from protocol.jobspec import InputSource

from .conftest import HttpServer, make_request


def inline(url: str, target: str = "/inputs/data.txt") -> InputSource:
    return InputSource("inline", {"URL": url}, target)


def url_input(url: str, target: str = "/inputs") -> InputSource:
    return InputSource("urlDownload", {"URL": url}, target)


def tar_gz(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def data_url(data: bytes, media_type: str = "text/plain") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def other_readable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)


# ------------------------------------------------------------------------- the registry


def test_registry_knows_inline_and_url_and_explains_the_rest():
    assert isinstance(storage_for("inline"), InlineStorage)
    assert isinstance(storage_for("urlDownload"), UrlDownloadStorage)
    with pytest.raises(UnsupportedStorage, match="not available on this node yet") as info:
        storage_for("ipfs")
    assert "inline, urlDownload, s3" in str(info.value)
    with pytest.raises(UnsupportedStorage, match="unknown input source type 'ftp'"):
        storage_for("ftp")


async def test_noop_backend_can_serve_any_type(tmp_path):
    registry = StorageRegistry()
    registry.register(NoopStorage(), "s3")
    source = InputSource("s3", {"Bucket": "b", "Key": "k"}, "/inputs")
    [(path, target)] = await stage_inputs([source], tmp_path, registry=registry)
    assert path.is_dir() and list(path.iterdir()) == [] and target == "/inputs"
    assert await registry.get("s3").size_hint(source) == 0


# ------------------------------------------------------------------------------ inline


def test_decode_data_url_forms():
    assert decode_data_url("data:,hello%20world") == ("text/plain", b"hello world")
    assert decode_data_url("data:text/x-sh;charset=utf-8;base64,ZWNobyBoaQ==") == (
        "text/x-sh",
        b"echo hi",
    )
    with pytest.raises(ValueError, match="base64"):
        decode_data_url("data:;base64,@@@")
    with pytest.raises(ValueError, match="data: URL"):
        decode_data_url("http://example.com")


async def test_inline_text_is_a_file_named_after_the_target(tmp_path):
    storage = InlineStorage()
    source = inline("data:,hello%20world%0A", target="/inputs/greeting.txt")
    assert await storage.size_hint(source) == 12
    path = await storage.stage(source, tmp_path / "staging")
    assert path.name == "greeting.txt" and path.read_bytes() == b"hello world\n"
    assert path.is_relative_to(tmp_path / "staging")
    assert other_readable(path) and other_readable(path.parent)


async def test_inline_base64_binary(tmp_path):
    blob = bytes(range(256)) * 4
    path = await InlineStorage().stage(inline(data_url(blob, "application/octet-stream")), tmp_path)
    assert path.read_bytes() == blob


async def test_inline_gzip_tar_is_unpacked_into_a_directory(tmp_path):
    archive = tar_gz({"dir/a.txt": b"alpha", "dir/run.sh": b"echo run"})
    source = inline(data_url(archive, "application/gzip"), target="/inputs")
    storage = InlineStorage()
    assert await storage.size_hint(source) == len("alpha") + len("echo run")
    path = await storage.stage(source, tmp_path)
    assert path.is_dir()
    assert (path / "dir" / "a.txt").read_bytes() == b"alpha"
    assert other_readable(path / "dir" / "run.sh")


async def test_inline_archive_escaping_its_directory_is_refused(tmp_path):
    archive = tar_gz({"../escape.txt": b"nope"})
    with pytest.raises(StorageError, match="could not unpack"):
        await InlineStorage().stage(inline(data_url(archive, "application/gzip")), tmp_path)
    assert not (tmp_path.parent / "escape.txt").exists()


async def test_inline_archive_bomb_is_refused(tmp_path):
    archive = tar_gz({"zeros": bytes(1_000_000)})
    storage = InlineStorage(max_unpacked_bytes=100_000)
    with pytest.raises(StorageError, match="more than 100000 bytes"):
        await storage.stage(inline(data_url(archive, "application/gzip")), tmp_path)


async def test_inline_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="staging inline input for /inputs/data.txt"):
        await InlineStorage().stage(inline("data:;base64,%%%"), tmp_path)
    not_tar = data_url(b"plain text", "application/gzip")
    with pytest.raises(StorageError, match="not a readable gzip tar archive"):
        await InlineStorage().stage(inline(not_tar), tmp_path)
    assert await InlineStorage().size_hint(inline(not_tar)) is None


# ------------------------------------------------------------------------- urlDownload


async def test_url_download_streams_into_a_directory(http_server: HttpServer, tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 17)
    (http_server.root / "table.csv").write_bytes(body)
    storage = UrlDownloadStorage()
    source = url_input(http_server.url("table.csv"))
    assert await storage.size_hint(source) == len(body)
    with trio.fail_after(30):
        path = await storage.stage(source, tmp_path / "staging")
    assert path.is_dir() and path.is_relative_to(tmp_path / "staging")
    assert [p.name for p in path.iterdir()] == ["table.csv"]
    assert (path / "table.csv").read_bytes() == body
    assert other_readable(path) and other_readable(path / "table.csv")


async def test_url_download_follows_redirects(http_server: HttpServer, tmp_path):
    (http_server.root / "real.txt").write_text("moved\n")
    path = await UrlDownloadStorage().stage(
        url_input(http_server.url("redirect/real.txt")), tmp_path
    )
    assert (path / "real.txt").read_text() == "moved\n"
    assert http_server.hits == ["/redirect/real.txt", "/real.txt"]


async def test_url_download_404_is_a_clear_error(http_server: HttpServer, tmp_path):
    url = http_server.url("missing.csv")
    staging = tmp_path / "staging"
    with pytest.raises(StorageError) as info:
        await UrlDownloadStorage().stage(url_input(url), staging)
    assert str(info.value) == f"staging input {url}: the server answered HTTP 404 File not found"
    assert list(staging.iterdir()) == []  # nothing half-made is left
    assert await UrlDownloadStorage().size_hint(url_input(url)) is None


async def test_url_download_unreachable_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}/data.csv"
        with trio.fail_after(30), pytest.raises(StorageError) as info:
            await UrlDownloadStorage().stage(url_input(url), tmp_path)
    assert str(info.value) == (
        f"staging input {url}: could not reach 127.0.0.1: Connection refused"
    )


async def test_url_download_size_cap(http_server: HttpServer, tmp_path):
    (http_server.root / "big.bin").write_bytes(bytes(100_000))
    storage = UrlDownloadStorage(max_bytes=10_000)
    staging = tmp_path / "staging"
    with pytest.raises(StorageError, match="larger than this node's limit of 10000 bytes"):
        await storage.stage(url_input(http_server.url("big.bin")), staging)
    # Without a declared length the cap applies while streaming.
    assert await storage.size_hint(url_input(http_server.url("nolength/100000"))) is None
    with pytest.raises(StorageError, match="larger than this node's limit of 10000 bytes"):
        await storage.stage(url_input(http_server.url("nolength/100000")), staging)
    assert list(staging.iterdir()) == []
    path = await storage.stage(url_input(http_server.url("nolength/10000")), staging)
    assert (path / "10000").stat().st_size == 10000


async def test_url_download_stall_times_out(http_server: HttpServer, tmp_path):
    storage = UrlDownloadStorage(socket_timeout=0.5)
    with trio.fail_after(10), pytest.raises(StorageError, match="timed out"):
        await storage.stage(url_input(http_server.url("stall")), tmp_path)


async def test_url_download_can_be_cancelled(http_server: HttpServer, tmp_path):
    storage = UrlDownloadStorage()
    with trio.move_on_after(0.3) as scope:
        await storage.stage(url_input(http_server.url("stall")), tmp_path)
    assert scope.cancelled_caught


async def test_stage_inputs_stages_all_and_reports_the_first_failure(
    http_server: HttpServer, tmp_path
):
    (http_server.root / "a.txt").write_text("A")
    sources = [url_input(http_server.url("a.txt")), inline("data:,B", "/inputs/b.txt")]
    staged = await stage_inputs(sources, tmp_path / "ok")
    assert [target for _, target in staged] == ["/inputs", "/inputs/b.txt"]
    assert (staged[0][0] / "a.txt").read_text() == "A" and staged[1][0].read_text() == "B"
    with pytest.raises(StorageError, match="HTTP 404"):
        await stage_inputs([*sources, url_input(http_server.url("nope"), "/x")], tmp_path / "bad")
    with pytest.raises(UnsupportedStorage):
        await stage_inputs([InputSource("ipfs", {"CID": "Qm"}, "/ipfs")], tmp_path / "ipfs")


# ------------------------------------------------------------------ mounted in a container


@pytest.mark.integration
async def test_staged_inputs_mounted_into_a_container(executor, http_server: HttpServer, tmp_path):
    (http_server.root / "numbers.txt").write_text("1\n2\n3\n")
    script = base64.b64encode(b"wc -l < /inputs/numbers.txt\ncat /config/settings.txt\n")
    sources = [
        url_input(http_server.url("numbers.txt"), "/inputs"),
        inline(f"data:text/x-sh;base64,{script.decode()}", "/scripts/count.sh"),
        inline("data:,verbose%3Dtrue%0A", "/config/settings.txt"),
        inline(data_url(tar_gz({"lib/x.txt": b"from archive\n"}), "application/gzip"), "/archive"),
    ]
    staged = await stage_inputs(sources, tmp_path / "staging")
    request = make_request(
        tmp_path,
        command=["sh /scripts/count.sh; cat /archive/lib/x.txt; ls /inputs"],
        inputs=staged,
    )
    with trio.fail_after(30):
        result = await executor.run(request)
    assert result.exit_code == 0, result.stderr_tail
    assert result.stdout_tail.splitlines() == ["3", "verbose=true", "from archive", "numbers.txt"]
