"""A node's identity: one Ed25519 key in the data dir, private, stable across restarts."""

from __future__ import annotations

import stat
import subprocess

import pytest

from node.keys import KeyFileError, load_or_create_key
from scripts.daemons import DaemonPool, run_cli, wait_until


def serve_and_fail(*args: str) -> subprocess.CompletedProcess:
    """Run ``bacnode serve ARGS`` expecting it to refuse to start; returns the finished run."""
    return run_cli("serve", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0",
                   *args)


def test_key_is_private_and_peer_id_survives_restart(daemons: DaemonPool):
    node = daemons.new("keeper")
    node.start()  # the daemon creates its own key on first start
    key_file = node.data_dir / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first_id = node.api("/api/v1/agent/node")["NodeID"]
    assert first_id.startswith("12D3KooW")
    # The start-up banner (printed once the mesh is up) names the node.
    wait_until(lambda: f"node {first_id}" in node.stdout, what="the start-up banner")
    key_bytes = key_file.read_bytes()

    assert node.stop() == 0
    node.start()
    assert node.api("/api/v1/agent/node")["NodeID"] == first_id
    assert key_file.read_bytes() == key_bytes
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_bacnode_id_prints_peer_id_and_addresses(start_daemon):
    node = start_daemon()
    result = node.cli("id")
    assert result.returncode == 0, result.stderr
    peer_id, *addresses = result.stdout.splitlines()
    assert peer_id == node.peer_id
    # The address printed is the one to hand to other nodes' --peer.
    assert [address.strip() for address in addresses] == [node.multiaddr]


def test_key_readable_by_others_is_refused(tmp_path):
    key_file = tmp_path / "node.key"
    load_or_create_key(key_file)
    key_file.chmod(0o644)
    result = serve_and_fail("--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "chmod 600" in result.stderr
    assert str(key_file) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644  # it tells; it does not fix it for you


def test_key_file_that_is_not_a_key_is_refused(tmp_path):
    (tmp_path / "node.key").write_bytes(b"not a key\n")
    (tmp_path / "node.key").chmod(0o600)
    result = serve_and_fail("--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "node.key is not a PEM private key" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "node.key").read_bytes() == b"not a key\n"  # never overwritten


def test_the_key_file_is_the_pem_openssl_writes_and_any_ed25519_pem_loads(tmp_path):
    """The key is written and read without ``cryptography`` (kept out of a node's memory),
    so its file must stay byte for byte OpenSSL's; a key file in another PEM form that
    OpenSSL reads (CRLF line ends, or text before the key) still loads."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key_file = tmp_path / "node.key"
    key = load_or_create_key(key_file)
    assert key_file.read_bytes() == Ed25519PrivateKey.from_private_bytes(key.seed).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    assert load_or_create_key(key_file) == key

    for name, content in [("crlf.key", key_file.read_bytes().replace(b"\n", b"\r\n")),
                          ("text.key", b"node 1's key\n" + key_file.read_bytes())]:
        (tmp_path / name).write_bytes(content)
        (tmp_path / name).chmod(0o600)
        assert load_or_create_key(tmp_path / name) == key

    rsa_file = tmp_path / "rsa.key"
    rsa_file.write_bytes(generate_private_key(65537, 2048).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    rsa_file.chmod(0o600)
    with pytest.raises(KeyFileError, match="rsa.key is not an Ed25519 key"):
        load_or_create_key(rsa_file)
