"""ChunkId: SpookyHash V2 128-bit of the chunk bytes, seeds 0/0, as standard Base64 (docs/cspp-plus.md §3.4).

The 16 raw bytes are ``struct.pack('<QQ', h1, h2)``. ``spookyhash``'s ``.digest()`` is avoided on purpose:
it is in native byte order, which is the wire order only on little-endian machines.
"""

from __future__ import annotations

import base64
import re
import struct

import spookyhash

Buffer = bytes | bytearray | memoryview

_RAW = struct.Struct("<QQ")

# 16 bytes are 128 bits; 22 Base64 characters carry 132, so the last one must have its low 4 bits zero
# (A, Q, g or w). Anything else is not the canonical encoding of 16 bytes.
_CHUNK_ID_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")

EMPTY_CHUNK_ID = "GQn1a/wGJyPHUei0Ze5yiw=="


class ChunkIdError(ValueError):
    """A ChunkId string or raw value that is not well formed."""


def encode_chunk_id(raw: bytes) -> str:
    """The Base64 string of 16 raw ChunkId bytes."""
    if len(raw) != 16:
        raise ChunkIdError(f"a raw ChunkId is 16 bytes, not {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def decode_chunk_id(text: str) -> bytes:
    """The 16 raw bytes of a ChunkId string; ChunkIdError unless it is 24-char standard Base64 of 16 bytes."""
    if not isinstance(text, str):
        raise ChunkIdError(f"a ChunkId is a string, not {type(text).__name__}")
    if not _CHUNK_ID_RE.fullmatch(text):
        raise ChunkIdError(f"not a ChunkId (24-char standard Base64 of 16 bytes): {text[:40]!r}")
    return base64.b64decode(text)


def chunk_id_raw(data: Buffer) -> bytes:
    """The 16 raw ChunkId bytes of ``data`` in one call."""
    return _RAW.pack(*spookyhash.hash128_pair(data, 0, 0))


def chunk_id(data: Buffer) -> str:
    """The ChunkId string of ``data`` in one call."""
    return encode_chunk_id(chunk_id_raw(data))


class ChunkHasher:
    """Incremental ChunkId, for a chunk that is hashed as its pieces arrive or are read."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = spookyhash.Hash128(None, 0, 0)

    def update(self, data: Buffer) -> None:
        self._hash.update(data)

    def raw(self) -> bytes:
        """The 16 raw bytes of the ChunkId of everything passed to ``update`` so far."""
        return _RAW.pack(*self._hash.final_pair())

    def chunk_id(self) -> str:
        return encode_chunk_id(self.raw())
