"""The node's secrets in its data dir, created once and kept 0600: its Ed25519 identity, and
the key its API asks for when it can be reached by more than this machine's user."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from protocol.identity import NodeKey

#: DER of an unencrypted PKCS #8 Ed25519 private key (RFC 8410) up to its 32-byte seed: what
#: OpenSSL (and ``cryptography``) write as ``-----BEGIN PRIVATE KEY-----``.
_PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"


class KeyFileError(Exception):
    """The key file cannot be read, written or understood; the message says how to fix it."""


def load_or_create_key(path: Path) -> NodeKey:
    """Load the node key at ``path``, creating it (mode 0600) on first start."""
    if path.exists():
        return _load(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create data dir {path.parent}: {exc.strerror}; "
            "choose a writable one with --data-dir"
        ) from None
    key = NodeKey.generate()
    _write_private(path, pem_of(key), "node key")
    return key


def pem_of(key: NodeKey) -> bytes:
    """The key as PKCS #8 PEM, byte for byte what OpenSSL writes for it."""
    der = base64.b64encode(_PKCS8_ED25519_PREFIX + key.seed)
    return _PEM_BEGIN + b"\n" + der + b"\n" + _PEM_END + b"\n"


def _seed_of(pem: bytes) -> bytes | None:
    """The seed of an unencrypted PKCS #8 Ed25519 PEM key; None for any other content."""
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != _PEM_BEGIN or lines[-1].strip() != _PEM_END:
        return None
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_PKCS8_ED25519_PREFIX) + 32 or not der.startswith(_PKCS8_ED25519_PREFIX):
        return None
    return der[len(_PKCS8_ED25519_PREFIX):]


def _seed_by_openssl(path: Path, data: bytes) -> bytes:
    """The seed of any PEM private key OpenSSL reads, if it is Ed25519 (a key file written
    by hand or by other tools: with the public key in it, say). ``cryptography`` is loaded
    only here, so that a node does not keep it in memory for the key it wrote itself."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"node key {path} is not a PEM private key; move it away") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"node key {path} is not an Ed25519 key")
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def load_or_create_api_key(path: Path) -> str:
    """The API key kept at ``path``, created (mode 0600) if there is none yet."""
    if path.exists():
        try:
            mode = path.stat().st_mode & 0o777
            key = path.read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"cannot read API key {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyFileError(
                f"API key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        if len(key) < 16:
            raise KeyFileError(f"API key {path} is shorter than 16 characters; move it away")
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create data dir {path.parent}: {exc.strerror}") from None
    key = secrets.token_urlsafe(32)
    _write_private(path, key.encode() + b"\n", "API key")
    return key


def _write_private(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path``, readable by its owner only, all or nothing."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise KeyFileError(
            f"cannot write {what} {path}: {exc.strerror}; "
            "the data dir must be writable (choose another with --data-dir)"
        ) from None


def _load(path: Path) -> NodeKey:
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read node key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"node key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    seed = _seed_of(data)
    return NodeKey(seed if seed is not None else _seed_by_openssl(path, data))
