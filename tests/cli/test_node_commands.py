"""``bacnode serve`` / ``node list`` / ``id`` when things go wrong: one line, no traceback.

The start-up failures all run at once (each start imports libp2p, about a second of
CPU), then every test checks its own; the daemons that do start are real ones.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.daemons import DaemonPool, free_port, popen, run_cli, wait_until

FAILURE_TIMEOUT = 60  # generous: every case starts at once on a 2-core machine


def assert_one_line_error(stderr: str, *phrases: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"


# -- no daemon -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("node", "list"), ("node", "list", "--output", "json"),
                                     ("id",)])
def test_no_daemon_is_one_line_that_says_how_to_start_one(command):
    port = free_port()  # nothing listens there
    result = run_cli(*command, api_port=port)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "bacnode serve", f"127.0.0.1:{port}")


def test_no_daemon_at_the_port_from_the_environment():
    port = free_port()
    result = run_cli("node", "list", env={"BACNODE_API_PORT": str(port)})
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "bacnode serve", f":{port}")


# -- daemons that refuse to start ------------------------------------------------------


@dataclass
class Failure:
    args: list[str]
    phrases: tuple[str, ...]
    process: subprocess.Popen | None = None


def _serve_args(data_dir: Path | str, *extra: str, port: int | None = None,
                api_port: int | None = None) -> list[str]:
    return ["--data-dir", str(data_dir), "--no-mdns",
            "--listen", f"/ip4/127.0.0.1/tcp/{port or free_port()}",
            "--api-port", str(api_port or free_port()), *extra]


def _listening_socket(*, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Failure]]:
    """Start every doomed ``bacnode serve`` at once; kill any still running at teardown."""
    root = tmp_path_factory.mktemp("failing")
    p2p_holder = _listening_socket(reuse_port=True)
    api_holder = _listening_socket(reuse_port=False)
    a_file = root / "a-file"
    a_file.write_text("not a directory\n")
    bad_config = root / "bad.yaml"
    bad_config.write_text("listen: [\n")
    peer = "12D3KooWKfn7W5LEVDvkRc7EwnJury7NYFomr9nevr5dDkbFo4KD"
    cases = {
        "bad --peer multiaddr": Failure(
            _serve_args(root / "d1", "--peer", "/ip4/1.2.3/tcp/1"),
            ("--peer '/ip4/1.2.3/tcp/1'", "is not a multiaddr")),
        "--peer without /p2p": Failure(
            _serve_args(root / "d2", "--peer", "/ip4/127.0.0.1/tcp/1235"),
            ("--peer '/ip4/127.0.0.1/tcp/1235'", "/p2p/")),
        "--peer with a bad peer ID": Failure(
            _serve_args(root / "d3", "--peer", f"/ip4/127.0.0.1/tcp/1235/p2p/{peer[:-5]}"),
            ("--peer",)),
        # Held with SO_REUSEPORT, as libp2p's own listener is: a second node would bind it
        # too, and silently share connections, unless it checks first.
        "libp2p port taken": Failure(
            _serve_args(root / "d4", port=p2p_holder.getsockname()[1]),
            (f"/tcp/{p2p_holder.getsockname()[1]}", "--listen")),
        "API port taken": Failure(
            _serve_args(root / "d5", api_port=api_holder.getsockname()[1]),
            (f"127.0.0.1:{api_holder.getsockname()[1]}", "--api-port")),
        "data dir under /proc": Failure(
            _serve_args("/proc/bacnode-test-data"), ("/proc/bacnode-test-data", "--data-dir")),
        "data dir in a read-only file system": Failure(
            _serve_args("/sys/bacnode-test-data"), ("/sys/bacnode-test-data", "--data-dir")),
        "data dir that cannot hold files": Failure(
            _serve_args("/proc/self"), ("/proc/self", "--data-dir")),
        "data dir under a file": Failure(
            _serve_args(a_file / "data"), (str(a_file), "--data-dir")),
        "data dir name too long": Failure(
            _serve_args(root / ("d" * 300)), ("--data-dir",)),
        "bad --limit-memory": Failure(
            _serve_args(root / "d6", "--limit-memory", "lots"), ("--limit-memory", "'lots'")),
        "bad config file": Failure(
            _serve_args(root / "d7", "--config", str(bad_config)), (str(bad_config), "YAML")),
        "--ipfs-peer without /p2p": Failure(
            _serve_args(root / "d8", "--ipfs-peer", "/ip4/127.0.0.1/tcp/4001"),
            ("--ipfs-peer '/ip4/127.0.0.1/tcp/4001'", "/p2p/")),
    }
    for case in cases.values():
        case.process = popen([sys.executable, "-m", "cli.main", "serve", *case.args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield cases
    finally:
        for case in cases.values():
            assert case.process is not None
            if case.process.poll() is None:
                case.process.kill()
            case.process.communicate()
        p2p_holder.close()
        api_holder.close()


@pytest.mark.parametrize("name", [
    "bad --peer multiaddr", "--peer without /p2p", "--peer with a bad peer ID",
    "libp2p port taken", "API port taken", "data dir under /proc",
    "data dir in a read-only file system", "data dir that cannot hold files",
    "data dir under a file", "data dir name too long", "bad --limit-memory", "bad config file",
    "--ipfs-peer without /p2p",
])
def test_serve_refuses_to_start_with_one_line(failed_starts, name):
    case = failed_starts[name]
    assert case.process is not None
    try:
        stdout, stderr = case.process.communicate(timeout=FAILURE_TIMEOUT)
    except subprocess.TimeoutExpired:
        case.process.kill()
        stdout, stderr = case.process.communicate()
        pytest.fail(f"bacnode serve kept running ({name}); it said:\n{stderr.decode()}")
    assert case.process.returncode == 1, stderr.decode()
    assert stdout.decode() == ""  # no start-up banner: it never started
    assert_one_line_error(stderr.decode(), "bacnode serve: error:", *case.phrases)


# -- a bootstrap peer that is not there yet --------------------------------------------


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonPool]:
    with DaemonPool(tmp_path) as pool:
        yield pool


def test_unreachable_bootstrap_peer_is_retried_until_it_comes_up(daemons: DaemonPool):
    late = daemons.new("late")
    late.ensure_key()  # its address is known before it ever runs
    early = daemons.start("early", peers=[late])

    warning = wait_until(
        lambda: [line for line in early.stderr.splitlines() if late.multiaddr in line],
        timeout=15, what="a warning naming the unreachable peer")
    assert "WARNING" in warning[0] and "retrying" in warning[0]
    assert "Traceback" not in early.stderr
    # It is up meanwhile, knowing only itself.
    assert early.api("/api/v1/agent/alive") == {"Status": "OK"}
    assert set(early.node_list()) == {early.peer_id}

    late.start()
    both = {early.peer_id, late.peer_id}
    for node in (early, late):
        node.wait_connected(both)
        assert set(node.wait_connected(both, via_cli=True)) == both
    # One warning, not one per retry.
    assert len([line for line in early.stderr.splitlines() if late.multiaddr in line]) == 1


def test_cli_serve_hands_over_to_the_daemon():
    """``bacnode serve --help`` is the daemon's own help (the CLI never imports node/)."""
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--peer", "--listen", "--api-port", "--swarm-key", "--no-mdns", "--data-dir"):
        assert flag in result.stdout
