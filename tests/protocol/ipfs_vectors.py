"""Known CIDs from kubo (see /work/shared/reference/ipfs-cid-vectors.md) and their contents."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

CHUNK = 262_144


def _encryptor(seed: str) -> CipherContext:
    key = hashlib.sha256(seed.encode("utf-8")).digest()
    # 16 zero bytes: a zero 32-bit block counter followed by a zero 96-bit nonce.
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()


def chacha_bytes(seed: str, size: int) -> bytes:
    """kubo's deterministic test content: the ChaCha20 keystream for ``seed``."""
    return _encryptor(seed).update(bytes(size))


def chacha_pieces(seed: str, size: int, piece: int) -> Iterator[bytes]:
    """The same bytes as ``chacha_bytes``, generated ``piece`` bytes at a time."""
    encryptor = _encryptor(seed)
    zeros = bytes(piece)
    done = 0
    while done < size:
        n = min(piece, size - done)
        yield encryptor.update(zeros if n == piece else zeros[:n])
        done += n


EMPTY_FILE = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
EMPTY_DIRECTORY = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"

#: (description, content factory, CID)
FILES: list[tuple[str, tuple[str, int] | bytes, str]] = [
    ("empty", b"", EMPTY_FILE),
    ("hello world", b"hello world", "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"),
    ("1234", b"1234", "QmTPqcLhVnCtjoYuCZwPzfXcFrUviiPComTepHfEEaGf7g"),
    ("one chunk", ("chunk-v0-seed", CHUNK), "QmWmRj3dFDZdb6ABvbmKhEL6TmPbAfBZ1t5BxsEyJrcZhE"),
    ("two chunks", ("chunk-v0-seed", CHUNK + 1), "QmYyLxtzZyW22zpoVAtKANLRHpDjZtNeDjQdJrcQNWoRkJ"),
    ("one full level", ("v0-seed", 174 * CHUNK), "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2"),
    ("two levels", ("v0-seed", 174 * CHUNK + 1), "QmV81WL765sC8DXsRhE5fJv2rwhS4icHRaf3J9Zk5FdRnW"),
    ("dir-seed", ("dir-seed", 300_000), "QmT5yPmeRyzG6zAaJR9Q78TSqK2w6devXxGVTb86c2g2LK"),
]

TREE = "Qmbhf4Gx8FCco9mmfjdygmqDw5dHkDeZqwBBTW5TempLSu"
TREE_SUB = "QmRMSFUQAhbeycNnz8HNhqueHHSMgDAHxYxGfTHRM6btmw"


def content(spec: tuple[str, int] | bytes) -> bytes:
    return spec if isinstance(spec, bytes) else chacha_bytes(*spec)


def tree_files() -> dict[str, bytes]:
    """The files of the reference ``tree/`` directory (paths relative to it)."""
    return {
        "a.txt": b"a\n",
        "sub/b.txt": b"b\n",
        "sub/deeper/zero": b"",
        "z.bin": chacha_bytes("dir-seed", 300_000),
    }


TREE_EMPTY_DIRECTORIES = ["empty"]
