"""Byte sequences stored as ranges of blobs: an upload session's pieces, where a chunk's bytes lie, a stream.

Reads use os.pread on file descriptors opened up front: a blob that a concurrent
commit unlinks stays readable through an open descriptor, and no seek position
is shared between readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from .storage import PIECE, BlobStore


@dataclass(frozen=True)
class Extent:
    blob: str
    offset: int
    length: int


class Extents(tuple):
    """An immutable, ordered tuple of Extents: the bytes they cover, concatenated."""

    @property
    def length(self) -> int:
        return sum(extent.length for extent in self)

    def slice(self, start: int, length: int) -> "Extents":
        """The sub-sequence [start, start + length)."""
        out, position, end = [], 0, start + length
        for extent in self:
            lo, hi = max(start, position), min(end, position + extent.length)
            if lo < hi:
                out.append(Extent(extent.blob, extent.offset + lo - position, hi - lo))
            position += extent.length
            if position >= end:
                break
        if sum(e.length for e in out) != length:
            raise ValueError(f"[{start}, {end}) is outside a sequence of {self.length} bytes")
        return Extents(out)


class OpenBlobs:
    """File descriptors for a set of blobs, opened together so a concurrent delete cannot take them away."""

    def __init__(self, blobs: BlobStore, names):
        self._fds: dict[str, int] = {}
        try:
            for name in dict.fromkeys(names):
                self._fds[name] = os.open(blobs.path(name), os.O_RDONLY)
        except BaseException:
            self.close()
            raise

    def add(self, blobs: BlobStore, name: str) -> None:
        if name not in self._fds:
            self._fds[name] = os.open(blobs.path(name), os.O_RDONLY)

    def adopt(self, other: "OpenBlobs") -> None:
        """Take over `other`'s descriptors (closing any it shares with us); `other` is left empty."""
        for name, fd in other._fds.items():
            if name in self._fds:
                os.close(fd)
            else:
                self._fds[name] = fd
        other._fds = {}

    def ranges(self, extents: Extents) -> Iterator[tuple[int, int, int]]:
        """(fd, offset, length) of each extent, for BlobStore.copy_ranges."""
        return ((self._fds[e.blob], e.offset, e.length) for e in extents)

    def pieces(self, extents: Extents, piece: int = PIECE) -> Iterator[bytes]:
        """The bytes of `extents`, in pieces of at most `piece` bytes."""
        for extent in extents:
            fd, position, left = self._fds[extent.blob], extent.offset, extent.length
            while left:
                data = os.pread(fd, min(piece, left), position)
                if not data:
                    raise OSError(f"blob {extent.blob} ends before offset {position + left}")
                position += len(data)
                left -= len(data)
                yield data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "OpenBlobs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

