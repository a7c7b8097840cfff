"""Byte sequences stored as ranges of blobs: an upload session's pieces, where a chunk's bytes lie, a stream.

A stream saved by PutChunkedFile is kept as the extents its chunks already occupy
in the upload session's pieces and in the file's earlier blobs, so committing a
gigabyte writes a few rows, not the gigabyte again (see chunked.py for when it is
copied instead). Content written whole (PutFile, a new file) is one blob.

Reads use os.pread on file descriptors opened up front: a blob that a concurrent
commit unlinks stays readable through an open descriptor, and no seek position
is shared between readers.
"""

from __future__ import annotations

import io
import json
import logging
import os
import weakref
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from .storage import PIECE, BlobStore

log = logging.getLogger("wopihost.extents")


@dataclass(frozen=True)
class Extent:
    blob: str
    offset: int
    length: int


class Extents(tuple):
    """An immutable, ordered tuple of Extents: the bytes they cover, concatenated."""

    @classmethod
    def joined(cls, extents: Iterable[Extent]) -> Extents:
        """`extents`, with neighbours that continue each other in the same blob merged into one."""
        out: list[Extent] = []
        for extent in extents:
            last = out[-1] if out else None
            if last is not None and last.blob == extent.blob and last.offset + last.length == extent.offset:
                out[-1] = Extent(last.blob, last.offset, last.length + extent.length)
            elif extent.length:
                out.append(extent)
        return cls(out)

    @classmethod
    def stored(cls, blob: str, size: int, text: str | None) -> Extents:
        """A stream as a row keeps it: `text` (from to_db) if set, else the whole of `blob`."""
        if text is None:
            return cls([Extent(blob, 0, size)])  # even when empty: the blob is still the stream's
        return cls(Extent(name, offset, length) for name, offset, length in json.loads(text))

    def to_db(self) -> str:
        return json.dumps([[e.blob, e.offset, e.length] for e in self], separators=(",", ":"))

    @cached_property
    def length(self) -> int:
        return sum(extent.length for extent in self)

    @property
    def blobs(self) -> set[str]:
        return {extent.blob for extent in self}

    @cached_property
    def _starts(self) -> list[int]:
        starts, position = [], 0
        for extent in self:
            starts.append(position)
            position += extent.length
        return starts

    def slice(self, start: int, length: int) -> Extents:
        """The sub-sequence [start, start + length)."""
        end = start + length
        if start < 0 or length < 0 or end > self.length:
            raise ValueError(f"[{start}, {end}) is outside a sequence of {self.length} bytes")
        out = []
        index = max(0, bisect_right(self._starts, start) - 1)
        for extent, position in zip(self[index:], self._starts[index:]):
            if position >= end:
                break
            lo, hi = max(start, position), min(end, position + extent.length)
            if lo < hi:
                out.append(Extent(extent.blob, extent.offset + lo - position, hi - lo))
        return Extents(out)


class OpenBlobs:
    """File descriptors for a set of blobs, opened together so a concurrent delete cannot take them away.

    Whoever opens them closes them (`close`, or a `with` block); should an owner be dropped unclosed on some
    path nobody foresaw, its descriptors are closed when it is collected, with a warning, rather than kept
    for good.
    """

    def __init__(self, blobs: BlobStore | None = None, names=()):
        self._fds: dict[str, int] = {}
        weakref.finalize(self, _close_leaked, self._fds)
        try:
            for name in dict.fromkeys(names):
                assert blobs is not None  # only an empty set is opened without a store
                self._fds[name] = os.open(blobs.path(name), os.O_RDONLY)
        except BaseException:
            self.close()
            raise

    def add(self, blobs: BlobStore, name: str) -> None:
        if name not in self._fds:
            self._fds[name] = os.open(blobs.path(name), os.O_RDONLY)

    def adopt(self, other: OpenBlobs) -> None:
        """Take over `other`'s descriptors (closing any it shares with us); `other` is left empty."""
        for name, fd in other._fds.items():
            if name in self._fds:
                os.close(fd)
            else:
                self._fds[name] = fd
        other._fds.clear()

    def subset(self, names) -> OpenBlobs:
        """Duplicate descriptors of `names` (already open here), to close independently of these."""
        other = OpenBlobs()
        try:
            for name in names:
                other._fds[name] = os.dup(self._fds[name])
        except BaseException:
            other.close()
            raise
        return other

    def size(self, name: str) -> int:
        return os.fstat(self._fds[name]).st_size

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
        _close_all(self._fds)

    def __enter__(self) -> OpenBlobs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_leaked(fds: dict[str, int]) -> None:
    if fds:
        log.warning("closing %d blob descriptors whose owner never closed them: a leak to fix", len(fds))
        _close_all(fds)


def _close_all(fds: dict[str, int]) -> None:
    while fds:  # each one out of the dict before it is closed: never closed twice, even if one close fails
        os.close(fds.popitem()[1])


class ExtentsReader(io.RawIOBase):
    """A seekable, read-only file over `extents`, owning `opened` (closed with it).

    Lets everything that reads a file (GetFile with its ranges, the chunker) read a stream kept as extents.
    """

    def __init__(self, opened: OpenBlobs, extents: Extents):
        super().__init__()
        self._opened, self._extents = opened, extents
        self._length, self._position = extents.length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self._length or not len(view):
            return 0
        index = bisect_right(self._extents._starts, self._position) - 1
        extent, inside = self._extents[index], self._position - self._extents._starts[index]
        n = min(len(view), extent.length - inside)
        got = os.preadv(self._opened._fds[extent.blob], [view[:n]], extent.offset + inside)
        if not got:
            raise OSError(f"blob {extent.blob} ends before offset {extent.offset + extent.length}")
        self._position += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._opened.close()
        super().close()


def open_extents(opened: OpenBlobs, extents: Extents) -> BinaryIO:
    """`extents` as a file to read; the blob itself (so the server can sendfile it) when it is the whole blob."""
    if len(extents) == 1 and extents[0].offset == 0 and opened.size(extents[0].blob) == extents[0].length:
        file = os.fdopen(os.dup(opened._fds[extents[0].blob]), "rb")
        opened.close()
        return file
    return io.BufferedReader(ExtentsReader(opened, extents), PIECE)
