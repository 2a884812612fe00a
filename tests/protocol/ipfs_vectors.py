"""Known CIDs from kubo (see /work/shared/reference/ipfs-cid-vectors.md) and their contents."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

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


# --- HAMT-sharded directories -----------------------------------------------------
#
# kubo shards a directory once the sum of len(name in UTF-8) + len(CID bytes) (34 for a
# CIDv0) over its entries exceeds 262,144 bytes. The trees below are written to disk by
# ``write_tree`` and their CIDs taken from kubo v0.42.0, default config:
#
#   IPFS_PATH=$(mktemp -d) ipfs init --profile test
#   python3 -c 'from pathlib import Path; from tests.protocol.ipfs_vectors import *;
#               write_tree(Path("/tmp/t"), *deep_sharded_tree())'
#   ipfs add -r -Q --only-hash /tmp/t
#
# (likewise for the other trees; sub-directory CIDs from ``ipfs add -r --only-hash``
# without -Q, which lists every directory).

Tree = tuple[dict[str, bytes], list[str]]  # files (path -> content), empty directories


def _long(prefix: str, fill: str) -> str:
    """A 255-byte name (the longest Linux allows): few entries reach the threshold."""
    return prefix.ljust(255, fill)


def threshold_tree(pad: str) -> Tree:
    """5,460 entries of 14 + 34 bytes, plus one named ``pad``: exactly at the threshold
    when ``pad`` is 30 bytes long (15 two-byte characters, so counting characters
    instead of bytes gets it wrong), one byte over at 31."""
    files = {f"file-{i:05d}.txt": f"{i}\n".encode() for i in range(5460)}
    files[pad] = b"pad\n"
    return files, []


PAD_AT_THRESHOLD = "é" * 15
PAD_OVER_THRESHOLD = "é" * 15 + "z"


def nested_sharded_tree() -> Tree:
    """A sharded root holding files, plain subdirectories (nested, with empty ones), an
    empty directory and a subdirectory that is sharded itself."""
    files: dict[str, bytes] = {}
    empty = ["empty"]
    for i in range(910):
        name = _long(f"entry-{i:04d}-", "x")
        if i % 100 == 7:
            files[f"{name}/inner.txt"] = f"{i} inner\n".encode()
            files[f"{name}/deeper/leaf.txt"] = f"{i} leaf\n".encode()
            empty.append(f"{name}/deeper/empty")
        else:
            files[name] = f"{i}\n".encode()
    files["plain-sub/a.txt"] = b"a\n"
    files["plain-sub/ünï ✓.txt"] = b"u\n"
    for j in range(910):
        files[f"sharded-sub/{_long(f'inner-{j:04d}-', 'z')}"] = f"{j}\n".encode()
    return files, empty


#: Names whose murmur3 hashes share their first 32 bits (14890, 44041) and first 24 bits
#: (8679, 8779), found by hashing the names of ``deep_sharded_tree``: five and four
#: levels of shards.
DEEP_COLLISIONS = (14890, 44041, 8679, 8779)


def deep_sharded_tree() -> Tree:
    names = [*range(910), *DEEP_COLLISIONS]
    return {_long(f"deep-{n:07d}-", "y"): f"{n}\n".encode() for n in names}, []


def write_tree(root: Path, files: dict[str, bytes], empty_directories: list[str]) -> None:
    """Lay a tree out on disk (for kubo, or for ``bacnode ipfs add``)."""
    root.mkdir(parents=True, exist_ok=True)
    for path in empty_directories:
        (root / path).mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
