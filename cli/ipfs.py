"""``bacnode ipfs add|get``, and the CAR download that ``bacnode get`` uses for IPFS results.

The daemon fetches blocks over bitswap and streams them as a CAR; this side checks
every block against the CID it asked for while writing files, so a daemon (or a
peer behind it) cannot hand us different bytes.
"""

from __future__ import annotations

import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from .client import ApiClient, ApiError
from .progress import Progress

if TYPE_CHECKING:
    from protocol.cid import Cid

READ_SIZE = 1 << 20


def download_dag(
    client: ApiClient,
    root: Cid,
    destination: Path,
    *,
    peer: str = "",
    timeout: float = 120.0,
    progress: bool = True,
) -> int:
    """Write the DAG under ``root`` to ``destination``; return the content bytes written.

    Raises ``ApiError`` (daemon) or ``IpfsFormatError`` (a block that does not verify).
    """
    from protocol.car import CarReader
    from protocol.cid import IpfsFormatError

    query = f"?timeout={timeout:g}" + (f"&peer={quote(peer)}" if peer else "")
    response = client.open(f"/api/v1/ipfs/car/{root}{query}", timeout=timeout + 30)
    with response:
        total = int(response.headers.get("X-Dag-Size") or 0)
        reader = CarReader()
        with Progress(f"fetching {root}", total if progress else 0) as bar:

            def next_block(wanted: Cid) -> bytes:
                while (block := reader.next_block()) is None:
                    chunk = response.read(READ_SIZE)
                    if not chunk:
                        reader.finished()
                        raise IpfsFormatError(
                            f"the daemon's stream ended before block {wanted}")
                    reader.feed(chunk)
                    bar.advance(len(chunk))
                if block.cid.multihash != wanted.multihash:
                    raise IpfsFormatError(
                        f"expected block {wanted}, the stream sent {block.cid}")
                return block.data

            return _write_tree(root, next_block, destination)


def _write_tree(root: Cid, get_block: Callable[[Cid], bytes], destination: Path) -> int:
    from protocol.unixfs import DirectoryEntry, walk

    written = 0
    for entry in walk(root, get_block):
        target = destination / entry.path if entry.path else destination
        if isinstance(entry, DirectoryEntry):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            for chunk in entry.chunks:
                handle.write(chunk)
                written += len(chunk)
    return written


def _client(ctx: click.Context) -> ApiClient:
    return ApiClient(ctx.obj["api_host"], ctx.obj["api_port"], timeout=600)


def register(cli: click.Group) -> None:
    @cli.group()
    def ipfs() -> None:
        """Put data on the network and get it back by CID (through the local daemon)."""

    @ipfs.command("add")
    @click.argument("path", type=click.Path(exists=True, path_type=Path))
    @click.option("-q", "--quiet", is_flag=True, help="print only the CID")
    @click.pass_context
    def ipfs_add(ctx: click.Context, path: Path, quiet: bool) -> None:
        """Add a file or directory (recursively); prints its CID, as 'ipfs add -r' does."""
        size = _tree_size(path)
        with Progress(f"adding {path.name}", size) as bar, TarStream(path) as stream:
            try:
                reply = _client(ctx).upload_stream("/api/v1/ipfs/add", stream.chunks(bar),
                                                   "application/x-tar")
            except ApiError as exc:
                stream.raise_read_error()
                raise click.ClickException(str(exc)) from None
            stream.raise_read_error()
        click.echo(reply["CID"] if quiet else f"added {reply['CID']} {path.name}")

    @ipfs.command("get")
    @click.argument("cid")
    @click.option("-o", "--output", "output", type=click.Path(path_type=Path),
                  help="where to write it; an existing directory gets it as DIR/CID "
                       "[default: ./CID]")
    @click.option("--timeout", default=120.0, show_default=True,
                  help="seconds to look for it on the network")
    @click.pass_context
    def ipfs_get(ctx: click.Context, cid: str, output: Path | None, timeout: float) -> None:
        """Fetch a file or directory by CID, verifying every block."""
        from protocol.cid import Cid, IpfsFormatError
        from protocol.jobspec import check_cid

        problem = check_cid(cid)
        if problem:
            raise click.ClickException(problem)
        root = Cid.parse(cid)
        destination = output or Path(str(root))
        if destination.is_dir():  # ".", or a directory (or a link to one): put it inside
            destination = destination / str(root)
        if destination.is_symlink() or destination.exists():
            raise click.ClickException(
                f"{destination} already exists; nothing was written (choose another -o)")
        partial = destination.with_name(f".{destination.name}.partial")
        _remove(partial)
        try:
            size = download_dag(_client(ctx), root, partial, timeout=timeout)
        except (ApiError, IpfsFormatError) as exc:
            _remove(partial)
            raise click.ClickException(f"getting {cid}: {exc}") from None
        partial.replace(destination)
        click.echo(f"Saved {cid} to {destination} ({size} bytes, verified)")


class TarStream:
    """A tar of ``path`` made in a thread as it is sent, never written to disk first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: OSError | None = None
        self._read_fd, write_fd = os.pipe()
        self._writer = threading.Thread(target=self._write, args=(write_fd,), daemon=True)

    def __enter__(self) -> TarStream:
        self._writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._read_fd)  # a writer still at work gets EPIPE and stops
        self._writer.join()

    def _write(self, write_fd: int) -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe, \
                    tarfile.open(fileobj=pipe, mode="w|") as tar:
                tar.add(self.path, arcname=self.path.resolve().name or "root",
                        filter=_regular_only)
        except BrokenPipeError:
            pass  # the upload stopped (refused, or the daemon went away)
        except OSError as exc:
            self.error = exc

    def chunks(self, progress: Progress) -> Iterator[bytes]:
        while chunk := os.read(self._read_fd, READ_SIZE):
            progress.advance(len(chunk))
            yield chunk

    def raise_read_error(self) -> None:
        """A file that could not be read ends the add with this, whatever the daemon said."""
        self._writer.join()
        if self.error is not None:
            raise click.ClickException(
                f"reading {self.path}: {self.error.strerror or self.error}; nothing was added")


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _regular_only(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return info if info.isfile() or info.isdir() else None


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
