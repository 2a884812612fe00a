"""Private networks: nodes sharing a swarm key mesh; a node without it never gets in."""

from __future__ import annotations

import re
import stat
import time

from scripts.daemons import DaemonPool, run_cli

#: How long the outsiders get to try: several bootstrap retries (every 2 s, each dial
#: given up after 5 s), far more than the insiders need to find each other.
OUTSIDER_WINDOW = 8.0
OUTSIDER_DEADLINE = 40.0


def generate_key(path) -> None:
    result = run_cli("swarm-key", "generate", "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout


def test_swarm_key_generate_writes_a_private_go_format_key(tmp_path):
    path = tmp_path / "swarm.key"
    generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[:2] == ["/key/swarm/psk/1.0.0/", "/base16/"]
    assert re.fullmatch(r"[0-9a-f]{64}", lines[2])
    assert len(lines) == 3

    other = tmp_path / "other.key"
    generate_key(other)
    assert other.read_text() != path.read_text()  # random, not a constant

    again = run_cli("swarm-key", "generate", "-o", str(path))
    assert again.returncode != 0
    assert "exists" in again.stderr and "Traceback" not in again.stderr
    assert path.read_text().splitlines() == lines  # never overwritten


def test_only_nodes_with_the_same_swarm_key_see_each_other(daemons: DaemonPool, tmp_path):
    key, wrong_key = tmp_path / "swarm.key", tmp_path / "wrong.key"
    generate_key(key)
    generate_key(wrong_key)
    first = daemons.new("private1", args=["--swarm-key", str(key)])
    second = daemons.new("private2", peers=[first], args=["--swarm-key", str(key)])
    keyless = daemons.new("keyless", peers=[first, second])
    wrong = daemons.new("wrongkey", peers=[first, second], args=["--swarm-key", str(wrong_key)])
    started = time.monotonic()
    daemons.start_all([first, second, keyless, wrong])

    insiders = {first.peer_id, second.peer_id}
    outsiders = {keyless.peer_id, wrong.peer_id}
    for node in (first, second):
        node.wait_connected(insiders)

    def outsider_got_in() -> str:
        for node in (first, second):
            if outsiders & set(node.api_nodes()):
                return f"{node.name} lists an outsider"
        for node in (keyless, wrong):
            if set(node.api_nodes()) != {node.peer_id}:
                return f"{node.name} lists someone"
        return ""

    def outsiders_tried() -> bool:
        # They say which peer they cannot reach, once its dial failed or timed out.
        return all(first.multiaddr in node.stderr for node in (keyless, wrong))

    # Poll all along: an outsider appearing at any moment is a failure. Go on for the
    # whole window, and at least until both outsiders have seen a dial fail.
    while time.monotonic() - started < OUTSIDER_WINDOW or not outsiders_tried():
        assert not outsider_got_in()
        assert time.monotonic() - started < OUTSIDER_DEADLINE, (
            "the outsiders never reported the key holders unreachable:\n"
            + keyless.stderr + wrong.stderr)
        time.sleep(0.2)
    for node in (first, second):  # and through the CLI, at the end
        assert not outsiders & set(node.wait_connected(insiders, via_cli=True)), node.name
    for node in (keyless, wrong):
        assert set(node.node_list()) == {node.peer_id}
        # They are up and keep trying, and say so.
        assert node.api("/api/v1/agent/alive") == {"Status": "OK"}
    # A PSK mismatch leaves libp2p dials hanging for ~40 s: do not wait on a polite
    # shutdown of the outsiders.
    keyless.kill()
    wrong.kill()
