"""The noop executor and the shared helpers of ``node.executor.base`` (no Docker needed)."""

from __future__ import annotations

import hashlib

import pytest
import trio

from node.executor import ExecutionResult, NoopExecutor
from node.executor.base import StreamCapture, empty_results_manifest, write_empty_results
from node.publisher.base import scan_results

from .conftest import make_request


async def test_noop_runs_nothing_and_writes_nothing(tmp_path):
    executor = NoopExecutor()
    request = make_request(tmp_path, command=["ignored"])
    result = await executor.run(request)
    assert result.succeeded and result.exit_code == 0 and result.error is None
    assert result.stdout_sha256 == hashlib.sha256(b"").hexdigest()
    assert not request.results_dir.exists()
    assert not executor.writes_results
    assert await executor.is_installed() and await executor.cleanup_orphans() == 0
    assert executor.runs == 1


@pytest.mark.parametrize("exit_code", [0, 137])
def test_the_manifest_of_an_empty_run_is_that_of_its_files(tmp_path, exit_code):
    results = tmp_path / "results"
    write_empty_results(results, exit_code)
    assert (results / "stdout").read_bytes() == b"" == (results / "stderr").read_bytes()
    assert (results / "exitCode").read_text() == str(exit_code)
    assert list((results / "outputs").iterdir()) == []
    links, manifest = scan_results(results, hash_files=True)
    assert links == [] and manifest == empty_results_manifest(exit_code)


async def test_noop_timeout(tmp_path, autojump_clock):
    result = await NoopExecutor(delay=60).run(
        make_request(tmp_path, command=["x"], timeout_seconds=5)
    )
    assert result.timed_out and result.exit_code == 137
    assert result.error == "execution timed out after 5s and was killed"


async def test_noop_cancel(tmp_path, autojump_clock):
    executor = NoopExecutor(delay=60)
    request = make_request(tmp_path, command=["x"])
    results: list[ExecutionResult] = []

    async def run() -> None:
        results.append(await executor.run(request))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(1)
        assert await executor.cancel(request.execution_id)
    assert results[0].cancelled and not results[0].timed_out
    assert await executor.cancel(request.execution_id) is False


def test_stream_capture_keeps_a_bounded_tail(tmp_path):
    path = tmp_path / "out"
    data = ("é" * 10_000).encode()  # two bytes a character: the cap cuts one in half
    with StreamCapture(path, tail_bytes=101) as capture:
        for start in range(0, len(data), 777):
            capture.write(data[start : start + 777])
            assert len(capture._tail) <= 2 * 101 + 777
    assert path.read_bytes() == data
    assert capture.size == len(data) and capture.truncated
    assert capture.sha256 == hashlib.sha256(data).hexdigest()
    assert capture.tail() == "é" * 50  # the half character at the start is dropped


def test_stream_capture_small_stream(tmp_path):
    with StreamCapture(tmp_path / "out", tail_bytes=100) as capture:
        capture.write(b"short\n")
    assert not capture.truncated and capture.tail() == "short\n"
    with StreamCapture(tmp_path / "none", tail_bytes=0) as capture:
        capture.write(b"x")
    assert capture.tail() == "" and capture.truncated
