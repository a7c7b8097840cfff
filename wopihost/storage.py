"""File content on disk.

Each version of a file's content is one immutable *blob* under DATA_DIR/blobs,
named by a random id. A write streams into DATA_DIR/tmp, is fsynced, and is
renamed into place; only then does a database transaction point the file at it.
So a reader (or a crash) sees the old content or the new, never a torn file, and
the name of a file never appears in a path.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import BinaryIO, Iterable, Iterator

from .ids import new_id

PIECE = 1 << 20  # bytes read and written at a time: memory use does not grow with file size


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the content is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Blob:
    name: str
    size: int
    sha256: str  # base64


class BlobStore:
    def __init__(self, root: Path, tmp: Path):
        self.root = root
        self.tmp = tmp
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def open(self, name: str) -> BinaryIO:
        return open(self.path(name), "rb")

    def write(self, source: BinaryIO, limit: int, sha256: bool = True) -> Blob:
        """Stream `source` (anything with .readinto(buffer)) into a new blob; at most `limit` bytes.

        One buffer is reused for every piece, so nothing is copied in Python.
        `sha256=False` skips the content hash (Blob.sha256 is then "") where nobody needs it.
        """
        digest = hashlib.sha256() if sha256 else None
        size = 0
        buffer = memoryview(bytearray(PIECE))
        with self._new_blob() as (name, out):
            while n := source.readinto(buffer):
                size += n
                if size > limit:
                    raise TooLarge(limit)
                piece = buffer[:n]
                if digest is not None:
                    digest.update(piece)
                out.write(piece)
                _start_writeback(out.fileno(), size - n, n)
        return Blob(name, size, base64.b64encode(digest.digest()).decode("ascii") if digest else "")

    def copy_ranges(self, ranges: Iterable[tuple[int, int, int]]) -> Blob:
        """A new blob made of (fd, offset, length) ranges of open files, copied by the kernel.

        copy_file_range keeps the bytes out of Python (and may share extents on file
        systems that can); where the kernel cannot, pread/write does the same work.
        The blob has no SHA-256: hashing would cost more than the copy itself.
        """
        size = 0
        with self._new_blob() as (name, out):
            out.flush()
            for fd, offset, length in ranges:
                _copy_range(fd, out.fileno(), offset, length)
                size += length
        return Blob(name, size, "")

    @contextmanager
    def _new_blob(self) -> Iterator[tuple[str, BinaryIO]]:
        """A blob written through the yielded file in DATA_DIR/tmp, renamed into place, then made durable.

        The rename comes before the fsync: nothing refers to a blob until a database transaction does,
        after this returns, so a crash in between leaves only an orphan for gc (never a blob the database
        knows with bytes missing). In return, on a journaling file system the journal commit that the file's
        fsync forces carries the new name too, and the directory fsync that POSIX asks for has nothing left
        to do: one journal commit per blob, not two. If the block fails, no blob appears.
        """
        name = new_id(32)
        tmp_path, final = self.tmp / f"{name}.part", self.path(name)
        path = tmp_path
        try:
            with open(tmp_path, "xb") as out:
                yield name, out
                out.flush()
                final.parent.mkdir(exist_ok=True)
                os.rename(tmp_path, final)
                path = final
                os.fsync(out.fileno())
            _fsync_dir(final.parent)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def sweep_tmp(self, older_than: float = 3600) -> int:
        """Remove partial writes left by a killed process; a live upload keeps touching its file."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Append src[offset:offset + length] to dst (at dst's position)."""
    end = offset + length
    try:
        while offset < end:
            copied = os.copy_file_range(src, dst, end - offset, offset)
            if copied == 0:
                raise OSError(f"the source ends at byte {offset}, before {end}")
            offset += copied
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while offset < end:  # no copy_file_range between these files: copy through a buffer
        data = os.pread(src, min(PIECE, end - offset), offset)
        if not data:
            raise OSError(f"the source ends at byte {offset}, before {end}")
        os.write(dst, data)
        offset += len(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
except (OSError, AttributeError):  # not Linux
    _sync_file_range = None
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Let the disk start on bytes just written while the next ones arrive, so the closing fsync waits less."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
