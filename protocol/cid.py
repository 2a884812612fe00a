"""Content identifiers (CIDs) as IPFS uses them, and the unsigned varints inside them.

Only what bacnode needs: CIDv0 and CIDv1, any codec number (dag-pb and raw are the
ones the rest of the package understands) and sha2-256 for verification. Parsing
accepts the forms kubo prints: ``Qm…`` (v0) and multibase base32 ``b…``, base58btc
``z…`` and base16 ``f…`` (v1). Every CID is held in its one canonical binary form, so
equal CIDs compare and hash equal however they were written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from .base58 import b58decode, b58encode
from .errors import RemoteProtocolError

DAG_PB = 0x70
IDENTITY = 0x00
RAW = 0x55
SHA2_256 = 0x12

CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw", 0x71: "dag-cbor", 0x0129: "dag-json", 0x51: "cbor"}
HASH_NAMES = {
    0x00: "identity",
    0x11: "sha1",
    SHA2_256: "sha2-256",
    0x13: "sha2-512",
    0x16: "sha3-256",
    0x1E: "blake3",
    0xB220: "blake2b-256",
}

# The multiformats unsigned-varint spec caps varints at 9 bytes (63 bits).
_MAX_VARINT_BYTES = 9
# Hostile-input cap; a sha2-256 CIDv1 is 36 bytes, kubo's largest inline CID ~135.
_MAX_CID_BYTES = 256
_V0_PREFIX = b"\x12\x20"  # sha2-256, 32-byte digest
_BASE32_RE = re.compile(r"[a-z2-7]*")
_BASE16_RE = re.compile(r"(?:[0-9a-f]{2})*")


class IpfsFormatError(RemoteProtocolError):
    """A CID, block, UnixFS node or CAR stream is malformed or fails verification."""


Buffer = bytes | bytearray | memoryview


def encode_uvarint(n: int) -> bytes:
    """``n`` as an unsigned LEB128 varint (at most 9 bytes, so ``n < 2**63``)."""
    if n < 0x80:
        if n < 0:
            raise ValueError(f"cannot encode negative number {n} as an unsigned varint")
        return bytes((n,))
    if n >= 1 << 63:
        raise ValueError(f"{n} is too large for a 9-byte varint")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_uvarint(buf: Buffer, offset: int = 0) -> tuple[int, int]:
    """Read an unsigned varint at ``offset``; return (value, offset just after it)."""
    value = 0
    shift = 0
    pos = offset
    end = len(buf)
    while True:
        if pos - offset >= _MAX_VARINT_BYTES:
            raise IpfsFormatError(f"varint at byte {offset} is longer than 9 bytes")
        if pos >= end:
            raise IpfsFormatError(f"data ends in the middle of a varint (at byte {offset})")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def codec_name(codec: int) -> str:
    return CODEC_NAMES.get(codec, f"0x{codec:x}")


def hash_name(code: int) -> str:
    return HASH_NAMES.get(code, f"0x{code:x}")


def _short(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _split_multihash(multihash: bytes) -> tuple[int, int]:
    """(hash function code, offset of the digest); checks the declared digest length."""
    code, pos = decode_uvarint(multihash, 0)
    length, pos = decode_uvarint(multihash, pos)
    if len(multihash) - pos != length:
        raise IpfsFormatError(
            f"multihash declares a {length}-byte digest but carries {len(multihash) - pos} bytes"
        )
    return code, pos


@dataclass(frozen=True, slots=True, repr=False)
class Cid:
    """A CID: version (0 or 1), codec (multicodec number) and full multihash bytes."""

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        if self.version == 0:
            if (
                self.codec != DAG_PB
                or len(self.multihash) != 34
                or self.multihash[:2] != _V0_PREFIX
            ):
                raise IpfsFormatError("a CIDv0 must be a dag-pb block's 32-byte sha2-256 hash")
        elif self.version == 1:
            if not 0 <= self.codec < 1 << 63:
                raise IpfsFormatError(f"codec {self.codec} is out of range")
            if len(self.multihash) > _MAX_CID_BYTES:
                raise IpfsFormatError(f"multihash of {len(self.multihash)} bytes is too long")
            _split_multihash(self.multihash)
        else:
            raise IpfsFormatError(f"CID version {self.version} is not supported (only 0 and 1)")

    # --- constructors -------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Cid:
        """A CID from its text form: ``Qm…``, or a CIDv1 as ``b…``, ``z…`` or ``f…``."""
        if not isinstance(text, str) or not text:
            raise IpfsFormatError(f"{text!r} is not a CID")
        if len(text) > 2 * _MAX_CID_BYTES:
            raise IpfsFormatError(f"{_short(text)} is too long to be a CID")
        if len(text) == 46 and text.startswith("Qm"):
            try:
                raw = b58decode(text)
            except ValueError as exc:
                raise IpfsFormatError(f"{_short(text)} is not a valid CIDv0: {exc}") from None
            cid = cls.from_bytes(raw)
            if cid.version != 0:
                raise IpfsFormatError(f"{_short(text)} is not a valid CIDv0")
            return cid
        base, body = text[0], text[1:]
        if base == "b":
            raw = _base32_decode(body, text)
        elif base == "z":
            try:
                raw = b58decode(body)
            except ValueError as exc:
                raise IpfsFormatError(f"{_short(text)} is not valid base58btc: {exc}") from None
        elif base == "f":
            if not _BASE16_RE.fullmatch(body):
                raise IpfsFormatError(f"{_short(text)} is not valid lowercase base16")
            raw = bytes.fromhex(body)
        else:
            raise IpfsFormatError(
                f"{_short(text)} is not a CID: expected 'Qm…' (CIDv0) or a CIDv1 in "
                "base32 ('b…'), base58btc ('z…') or base16 ('f…')"
            )
        try:
            cid = cls.from_bytes(raw)
        except IpfsFormatError as exc:
            raise IpfsFormatError(f"{_short(text)} is not a valid CID: {exc}") from None
        if cid.version == 0:
            # The CID spec forbids it: a v0 CID is only ever written as bare base58btc.
            raise IpfsFormatError(f"{_short(text)}: a CIDv0 cannot be multibase-encoded")
        return cid

    @classmethod
    def decode_from(cls, buf: Buffer, offset: int = 0) -> tuple[Cid, int]:
        """Read a binary CID that starts at ``offset`` (and may be followed by other
        data, as in a CAR section); return it and the offset just after it."""
        if bytes(buf[offset : offset + 2]) == _V0_PREFIX:
            end = offset + 34
            if end > len(buf):
                raise IpfsFormatError("data ends in the middle of a CID")
            return cls(0, DAG_PB, bytes(buf[offset:end])), end
        version, pos = decode_uvarint(buf, offset)
        if version != 1:
            raise IpfsFormatError(f"CID version {version} is not supported (only 0 and 1)")
        codec, pos = decode_uvarint(buf, pos)
        multihash_start = pos
        _, pos = decode_uvarint(buf, pos)
        length, pos = decode_uvarint(buf, pos)
        end = pos + length
        if length > _MAX_CID_BYTES:
            raise IpfsFormatError(f"CID declares a {length}-byte digest, more than is plausible")
        if end > len(buf):
            raise IpfsFormatError("data ends in the middle of a CID")
        cid = cls(1, codec, bytes(buf[multihash_start:end]))
        # Varints must be minimal, otherwise one CID would have several binary forms.
        if bytes(cid) != bytes(buf[offset:end]):
            raise IpfsFormatError("CID uses a non-minimal varint encoding")
        return cid, end

    @classmethod
    def from_bytes(cls, raw: bytes) -> Cid:
        """A CID from its binary form (v0: the bare 34-byte multihash)."""
        if len(raw) > _MAX_CID_BYTES:
            raise IpfsFormatError(f"a binary CID of {len(raw)} bytes is too long")
        cid, end = cls.decode_from(raw)
        if end != len(raw):
            raise IpfsFormatError(f"{len(raw) - end} unexpected bytes after the CID {cid}")
        return cid

    @classmethod
    def for_block(cls, block: Buffer, *, version: int = 0, codec: int = DAG_PB) -> Cid:
        """The sha2-256 CID of ``block``."""
        if version == 0 and codec != DAG_PB:
            raise ValueError("a CIDv0 is always dag-pb; use version=1 for other codecs")
        return cls(version, codec, _V0_PREFIX + hashlib.sha256(block).digest())

    @classmethod
    def from_prefix(cls, prefix: bytes, block: Buffer) -> Cid:
        """The CID of a block received over bitswap 1.1, from the prefix sent with it."""
        version, pos = decode_uvarint(prefix, 0)
        codec, pos = decode_uvarint(prefix, pos)
        hash_code, pos = decode_uvarint(prefix, pos)
        hash_length, pos = decode_uvarint(prefix, pos)
        if pos != len(prefix):
            raise IpfsFormatError(f"bitswap block prefix has {len(prefix) - pos} extra bytes")
        if hash_code != SHA2_256 or hash_length != 32:
            raise IpfsFormatError(
                f"bitswap block is hashed with {hash_name(hash_code)} ({hash_length} bytes); "
                "only sha2-256 (32 bytes) is supported"
            )
        if version == 0 and codec != DAG_PB:
            raise IpfsFormatError(f"bitswap block prefix: CIDv0 with codec {codec_name(codec)}")
        return cls(version, codec, _V0_PREFIX + hashlib.sha256(block).digest())

    # --- views --------------------------------------------------------------------

    @property
    def hash_code(self) -> int:
        """The multihash function code (0x12 for sha2-256)."""
        return decode_uvarint(self.multihash)[0]

    @property
    def digest(self) -> bytes:
        return self.multihash[_split_multihash(self.multihash)[1] :]

    @property
    def prefix(self) -> bytes:
        """The bitswap 1.1 prefix: varints version, codec, hash code, digest length."""
        _, digest_at = _split_multihash(self.multihash)
        # The multihash header is already those two varints, minimally encoded.
        return (
            encode_uvarint(self.version) + encode_uvarint(self.codec) + self.multihash[:digest_at]
        )

    def __bytes__(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_uvarint(1) + encode_uvarint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(bytes(self)).decode("ascii").lower().rstrip("=")

    def __repr__(self) -> str:
        return f"Cid({str(self)!r})"

    @property
    def inline_data(self) -> bytes | None:
        """The block itself for an identity-hashed ("inline") CID, else None."""
        return self.digest if self.hash_code == IDENTITY else None

    def verify(self, block: Buffer) -> None:
        """Raise ``IpfsFormatError`` unless ``block`` hashes to this CID."""
        code, digest_at = _split_multihash(self.multihash)
        if code == IDENTITY:
            if bytes(block) != self.multihash[digest_at:]:
                raise IpfsFormatError(f"block {self} differs from the data inlined in its CID")
            return
        if code != SHA2_256 or len(self.multihash) - digest_at != 32:
            raise IpfsFormatError(
                f"cannot verify block {self}: it is hashed with {hash_name(code)}, "
                "and only sha2-256 is supported"
            )
        if hashlib.sha256(block).digest() != self.multihash[digest_at:]:
            raise IpfsFormatError(f"block {self} does not match its CID (sha2-256 differs)")


def _base32_decode(body: str, text: str) -> bytes:
    if not _BASE32_RE.fullmatch(body):
        raise IpfsFormatError(f"{_short(text)} is not valid lowercase base32")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:
        raise IpfsFormatError(f"{_short(text)} is not valid base32 (bad length)") from None
    # Stray bits in the last character would give one CID several spellings.
    if base64.b32encode(raw).decode("ascii").lower().rstrip("=") != body:
        raise IpfsFormatError(f"{_short(text)} is not canonical base32")
    return raw
