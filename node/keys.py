"""The node's secrets in its data dir, created once and kept 0600: its Ed25519 identity, and
the key its API asks for when it can be reached by more than this machine's user."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from protocol.identity import NodeKey


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
    pem = Ed25519PrivateKey.from_private_bytes(key.seed).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    _write_private(path, pem, "node key")
    return key


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
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"node key {path} is not a PEM private key; move it away") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"node key {path} is not an Ed25519 key")
    return NodeKey(private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
