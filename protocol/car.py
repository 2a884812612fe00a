"""CARv1 framing, for streaming a DAG between the daemon and the CLI.

A CAR is a header section then one section per block; each section is a uvarint
length followed by its bytes. The header is the dag-cbor map
``{"roots": [CID, ...], "version": 1}``; a block section is the block's binary CID
followed by the block. The reader is incremental (feed bytes, pull blocks), caps
section sizes and verifies every block against its CID.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cid import Buffer, Cid, IpfsFormatError, decode_uvarint, encode_uvarint
from .unixfs import Block

#: Largest section accepted: room for a 256 KiB chunk or a big directory block.
MAX_FRAME = 4 * 1024 * 1024
_MAX_HEADER = 64 * 1024
_CID_TAG = 42  # dag-cbor's tag for a link; the bytes are 0x00 + binary CID


def _cbor_head(major: int, n: int) -> bytes:
    """A CBOR item head in its shortest form, as dag-cbor requires."""
    if n < 24:
        return bytes((major << 5 | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes((major << 5 | info,)) + n.to_bytes(width, "big")
    raise ValueError(f"{n} does not fit a CBOR head")


def encode_header(roots: Sequence[Cid]) -> bytes:
    """The CARv1 header section naming ``roots``."""
    parts = [b"\xa2", b"\x65roots", _cbor_head(4, len(roots))]
    for root in roots:
        link = b"\x00" + bytes(root)
        parts += [_cbor_head(6, _CID_TAG), _cbor_head(2, len(link)), link]
    # dag-cbor orders map keys shortest first, so "roots" precedes "version".
    parts += [b"\x67version", b"\x01"]
    body = b"".join(parts)
    return encode_uvarint(len(body)) + body


def encode_block(cid: Cid, data: bytes) -> bytes:
    """One CAR block section."""
    raw = bytes(cid)
    return encode_uvarint(len(raw) + len(data)) + raw + data


class _Cbor:
    """Just enough of a strict dag-cbor decoder for a CAR header."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise IpfsFormatError("CAR header is truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def _head(self) -> tuple[int, int]:
        first = self._take(1)[0]
        major, info = first >> 5, first & 31
        if info < 24:
            return major, info
        if major == 7 or info > 27:
            # Floats, simple values and indefinite lengths never appear in a CAR header.
            raise IpfsFormatError(f"CAR header has an unsupported CBOR item (0x{first:02x})")
        n = int.from_bytes(self._take(1 << (info - 24)), "big")
        if n < (24 if info == 24 else 1 << (8 << (info - 25))):
            raise IpfsFormatError("CAR header is not canonical dag-cbor (over-long integer)")
        return major, n

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise IpfsFormatError("CAR header is nested too deeply")
        major, n = self._head()
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self._take(n)
        if major == 3:
            try:
                return self._take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise IpfsFormatError("CAR header has a string that is not UTF-8") from None
        if major == 4:
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            out: dict[str, object] = {}
            for _ in range(n):
                key = self.item(depth + 1)
                if not isinstance(key, str) or key in out:
                    raise IpfsFormatError("CAR header map has a non-string or repeated key")
                out[key] = self.item(depth + 1)
            return out
        if major == 6 and n == _CID_TAG:
            raw = self.item(depth + 1)
            if not isinstance(raw, bytes) or raw[:1] != b"\x00":
                raise IpfsFormatError("CAR header has a malformed CID link")
            return Cid.from_bytes(raw[1:])
        raise IpfsFormatError(f"CAR header has an unsupported CBOR item (major type {major})")


def _decode_header(body: bytes) -> tuple[Cid, ...]:
    reader = _Cbor(body)
    header = reader.item()
    if reader.pos != len(body):
        raise IpfsFormatError("CAR header has trailing bytes")
    if not isinstance(header, dict):
        raise IpfsFormatError("CAR header is not a map")
    version = header.get("version")
    if version != 1:
        raise IpfsFormatError(f"CAR version {version!r} is not supported (only CARv1)")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(root, Cid) for root in roots):
        raise IpfsFormatError("CAR header roots must be a list of CIDs")
    return tuple(roots)


class CarReader:
    """Incremental CARv1 decoder: ``feed`` bytes as they arrive, then call
    ``next_block`` until it returns None; call ``finished`` at end of input."""

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._roots: tuple[Cid, ...] | None = None
        self._max_frame = max_frame
        self._blocks = 0

    @property
    def roots(self) -> tuple[Cid, ...] | None:
        """The header's roots, or None until the header has arrived."""
        return self._roots

    def feed(self, data: Buffer) -> None:
        self._buf += data
        if self._roots is None:
            # Parse the header as soon as it is complete, so a bad stream fails early.
            bounds = self._section(_MAX_HEADER, "CAR header")
            if bounds is not None:
                start, end = bounds
                self._roots = _decode_header(bytes(self._buf[start:end]))
                del self._buf[:end]

    def next_block(self) -> Block | None:
        """The next verified block, or None when more data is needed."""
        if self._roots is None:
            return None
        where = f"CAR block section {self._blocks + 1}"
        bounds = self._section(self._max_frame, where)
        if bounds is None:
            return None
        start, end = bounds
        with memoryview(self._buf) as view:
            try:
                cid, data_start = Cid.decode_from(view[:end], start)
            except IpfsFormatError as exc:
                raise IpfsFormatError(f"{where}: {exc}") from None
            data = bytes(view[data_start:end])
        del self._buf[:end]  # cheap: a bytearray drops its head without moving the rest
        cid.verify(data)
        self._blocks += 1
        return Block(cid, data)

    def finished(self) -> None:
        """Declare the input over; raises if it stopped part-way through a section."""
        if self._roots is None:
            raise IpfsFormatError(
                "CAR stream ended before its header" if not self._buf
                else f"CAR stream ended inside its header ({len(self._buf)} bytes of it arrived)"
            )  # fmt: skip
        if not self._buf:
            return
        if self._section(self._max_frame, "CAR block section") is not None:
            raise ValueError("finished() called with unread blocks; drain next_block() first")
        raise IpfsFormatError(
            f"CAR stream ended in the middle of block section {self._blocks + 1} "
            f"({len(self._buf)} bytes of it arrived)"
        )

    def _section(self, limit: int, where: str) -> tuple[int, int] | None:
        """Where the next whole section's body lies in the buffer, or None if incomplete."""
        buf = self._buf
        for i in range(min(len(buf), 9)):
            if buf[i] < 0x80:
                break
        else:
            if len(buf) >= 9:
                raise IpfsFormatError(f"{where} has a length varint over 9 bytes")
            return None
        length, start = decode_uvarint(buf)
        if length == 0:
            raise IpfsFormatError(f"{where} is empty")
        if length > limit:
            # Refused on sight, before buffering any of it.
            raise IpfsFormatError(f"{where} is {length} bytes, over the {limit}-byte limit")
        end = start + length
        return (start, end) if len(buf) >= end else None
