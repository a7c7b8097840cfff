"""Byte sequences stored as ranges of blobs: an upload session's pieces, where a chunk's bytes lie, a stream.

A stream saved by PutChunkedFile is kept as the extents its chunks already occupy
in the upload session's pieces and in the file's earlier blobs, so committing a
gigabyte writes a few rows, not the gigabyte again (see chunked.py for when it is
copied instead). Content written whole (PutFile, a new file) is one blob.

Blobs are read through a store's Opened set, opened up front: a blob that a
concurrent commit deletes stays readable through it.
"""

from __future__ import annotations

import io
import json
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from .storage import PIECE, Opened

# The most blobs one stream's content may span: every read of it opens them all at once (storage.OpenBlobs), a
# descriptor each, and a process has 1,024 by default (systemd's soft limit).
MAX_BLOBS = 64


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


class ExtentsReader(io.RawIOBase):
    """A seekable, read-only file over `extents`, owning `opened` (closed with it).

    Lets everything that reads a file (GetFile with its ranges, the chunker) read a stream kept as extents.
    """

    def __init__(self, opened: Opened, extents: Extents):
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
        got = self._opened.readinto(extent.blob, extent.offset + inside, view[:n])
        if not got:
            raise OSError(f"blob {extent.blob} ends before offset {extent.offset + extent.length}")
        self._position += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._opened.close()
        super().close()


def open_extents(opened: Opened, extents: Extents) -> BinaryIO:
    """`extents` as a file to read; the blob itself (so the server can sendfile it) when it is the whole blob. Closes
    `opened` if it fails."""
    try:
        if len(extents) == 1 and extents[0].offset == 0 and opened.size(extents[0].blob) == extents[0].length:
            file = opened.whole_file(extents[0].blob)
            if file is not None:
                opened.close()
                return file
        return io.BufferedReader(ExtentsReader(opened, extents), PIECE)
    except BaseException:
        opened.close()
        raise
