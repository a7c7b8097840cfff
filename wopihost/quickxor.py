"""Microsoft's QuickXorHash: what OneDrive publishes as `file.hashes.quickXorHash`, and what rclone's onedrive
backend compares after a transfer.

The hash is linear. Its 160-bit accumulator is the XOR of every byte of the stream shifted left by 11 * i bits
(rotating round the 160-bit width), i its position; the digest is the accumulator as 20 little-endian bytes with
the stream's length (8 bytes, little-endian) XORed into bytes 12..19. Since 11 * 160 is a multiple of 160, bytes
160 apart land on the same bits: XORing the stream's 160-byte rows into one row first (numpy does this at memory
speed, where shifting byte by byte in Python runs some 25 times slower than SHA-256) leaves only 160 bytes to
shift. And a piece of a stream hashed alone, as if it began at 0, is the whole stream's accumulator for its bytes
once rotated by 11 * its offset: the pieces of an upload session combine into the file's hash without the
content being read again.

numpy is imported at the first hash, not with this module: the server's idle memory does not carry it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

WIDTH = 160  # bits of the accumulator
SHIFT = 11  # bits between the places of two consecutive bytes
ROW = WIDTH  # bytes after which a byte's place comes round again
DIGEST_SIZE = WIDTH // 8
_MASK = (1 << WIDTH) - 1
_LENGTH_AT = DIGEST_SIZE - 8  # the length's 8 bytes are XORed into the digest's last 8


def _numpy() -> Any:
    import numpy

    return numpy


class QuickXor:
    """A streaming QuickXorHash: update() with the stream's bytes in order, in pieces of any size."""

    def __init__(self) -> None:
        self._row: np.ndarray | None = None  # the stream's rows XORed together, as ROW bytes (None: no bytes yet)
        self.length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        np = _numpy()
        view = memoryview(data).cast("B")
        whole = n - n % ROW
        row = np.zeros(ROW, np.uint8)
        if whole:
            # 160 bytes are 20 uint64: XOR the piece's rows together a word at a time
            words = np.frombuffer(view[:whole], np.uint64).reshape(-1, ROW // 8)
            row = np.bitwise_xor.reduce(words, axis=0).view(np.uint8)
        if whole < n:
            row[: n - whole] ^= np.frombuffer(view[whole:], np.uint8)
        # the piece's first byte sits at place `length` of a row of the stream: carry its row round to there
        phase = self.length % ROW
        if phase:
            row = np.roll(row, phase)
        self._row = row if self._row is None else self._row ^ row
        self.length += n

    def accumulator(self) -> int:
        """The 160-bit accumulator of the bytes so far (the digest before their length is mixed in)."""
        if self._row is None:
            return 0
        acc = 0
        for place, byte in enumerate(self._row.tobytes()):
            if byte:
                acc ^= byte << (SHIFT * place % WIDTH)
        return (acc & _MASK) ^ (acc >> WIDTH)  # the bits shifted past the top come round to the bottom

    def digest(self) -> bytes:
        return finish(self.accumulator(), self.length)

    def b64digest(self) -> str:
        """The digest in base64, as Graph's quickXorHash."""
        return base64.b64encode(self.digest()).decode("ascii")


def finish(accumulator: int, length: int) -> bytes:
    """The digest of a stream of `length` bytes whose accumulator is `accumulator`."""
    digest = bytearray(accumulator.to_bytes(DIGEST_SIZE, "little"))
    for i, byte in enumerate(length.to_bytes(8, "little")):
        digest[_LENGTH_AT + i] ^= byte
    return bytes(digest)


def unfinish(digest: bytes, length: int) -> int:
    """The accumulator of a stream of `length` bytes whose digest is `digest`: finish() undone."""
    return int.from_bytes(finish(int.from_bytes(digest, "little"), length), "little")


def rotate(accumulator: int, offset: int) -> int:
    """The accumulator of bytes hashed as if they began at 0, for the same bytes at `offset` of a stream."""
    bits = SHIFT * offset % WIDTH
    return ((accumulator << bits) & _MASK) | (accumulator >> (WIDTH - bits))


def combine(pieces: Iterable[tuple[int, int, str]], length: int) -> str:
    """The base64 digest of a stream of `length` bytes made of `pieces` (offset, length, base64 digest of the piece
    alone), which cover it without overlapping (in any order): O(pieces), no byte read again."""
    acc = 0
    for offset, size, digest in pieces:
        acc ^= rotate(unfinish(base64.b64decode(digest), size), offset)
    return base64.b64encode(finish(acc, length)).decode("ascii")


def b64digest(data: bytes) -> str:
    """The base64 digest of `data`, in one piece."""
    hasher = QuickXor()
    hasher.update(data)
    return hasher.b64digest()
