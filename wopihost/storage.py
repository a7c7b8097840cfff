"""File content on disk.

Each version of a file's content is one immutable *blob* under DATA_DIR/blobs,
named by a random id. A write streams into DATA_DIR/tmp, is fsynced, and is
renamed into place; only then does a database transaction point the file at it.
So a reader (or a crash) sees the old content or the new, never a torn file, and
the name of a file never appears in a path.

Until that transaction is over, its writer holds a lock on the new file (see Blob),
so garbage collection never takes a write in progress, whatever its age.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Protocol

from .faults import InsufficientStorage, Unavailable
from .ids import new_id

PIECE = 1 << 20  # bytes read and written at a time: memory use does not grow with file size


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the content is larger than the limit of {limit} bytes")
        self.limit = limit


class Readable(Protocol):
    """What a blob is written from: an open file, a request body, anything with readinto."""

    def readinto(self, buffer: memoryview, /) -> int: ...


class Blob:
    """A blob just written, held until its `with` block ends (or `release()`).

    While held, an exclusive flock on the blob tells garbage collection, in any process, that its
    writer is alive and has not yet recorded it in the database: hold it until that transaction is
    over. A killed writer's hold ends with its process.
    """

    def __init__(self, name: str, size: int, sha256: str, hold: BinaryIO):
        self.name, self.size, self.sha256 = name, size, sha256  # sha256: base64, "" if not computed
        self._hold: BinaryIO | None = hold

    def release(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def __enter__(self) -> Blob:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self.size})"


class BlobStore:
    def __init__(self, root: Path, tmp: Path, min_free: int = 0):
        self.root = root
        self.tmp = tmp
        self.min_free = min_free
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def open(self, name: str) -> BinaryIO:
        return open(self.path(name), "rb")

    def write(self, source: Readable, limit: int, sha256: bool = True) -> Blob:
        """Stream `source` (anything with .readinto(buffer)) into a new, held blob; at most `limit` bytes.

        One buffer is reused for every piece, so nothing is copied in Python.
        `sha256=False` skips the content hash (Blob.sha256 is then "") where nobody needs it.
        A source with a `length` (a request body's Content-Length) that would leave less than
        `min_free` bytes on the disk is refused before anything is read.
        """
        self._check_room(getattr(source, "length", None) or 0)
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
        return Blob(name, size, base64.b64encode(digest.digest()).decode("ascii") if digest else "", out)

    def copy_ranges(self, ranges: Iterable[tuple[int, int, int]]) -> Blob:
        """A new, held blob made of (fd, offset, length) ranges of open files, copied by the kernel.

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
        return Blob(name, size, "", out)

    @contextmanager
    def _new_blob(self) -> Iterator[tuple[str, BinaryIO]]:
        """A blob written through the yielded file in DATA_DIR/tmp, renamed into place, then made durable.

        The file stays open (and locked, see Blob) when the block ends: the caller wraps it in a Blob.
        The rename comes before the fsync: nothing refers to a blob until a database transaction does,
        after this returns, so a crash in between leaves only an orphan for gc (never a blob the database
        knows with bytes missing). In return, on a journaling file system the journal commit that the file's
        fsync forces carries the new name too, and the directory fsync that POSIX asks for has nothing left
        to do: one journal commit per blob, not two. If the block fails, no blob appears.
        """
        name = new_id(32)
        tmp_path, final = self.tmp / f"{name}.part", self.path(name)
        path, out = tmp_path, None
        try:
            with _write_faults():
                out = _create_locked(tmp_path)
                yield name, out
                out.flush()
                final.parent.mkdir(exist_ok=True)
                os.rename(tmp_path, final)
                path = final
                os.fsync(out.fileno())
                _fsync_dir(final.parent)
        except BaseException:
            if out is not None:
                out.close()
                with suppress(OSError):  # the write's own error is the one to report
                    path.unlink(missing_ok=True)
            raise

    def _check_room(self, size: int) -> None:
        if self.min_free and self.free_space() - size < self.min_free:
            raise InsufficientStorage(
                f"storing {size} more bytes would leave less than {self.min_free} bytes free in the data directory"
            )

    def free_space(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def health(self) -> str:
        """ "ok", "full" (less than min_free left) or "not writable" (a probe blob cannot be written)."""
        try:
            with self.write(io.BytesIO(b"health"), 16, sha256=False) as probe:
                self.delete(probe.name)
        except InsufficientStorage:
            return "full"
        except (OSError, Unavailable):
            return "not writable"
        return "full" if self.min_free and self.free_space() < self.min_free else "ok"

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    @contextmanager
    def unheld(self, path: Path) -> Iterator[bool]:
        """Whether no live writer holds the blob or partial write at `path`; held by us for the block if so."""
        try:
            fd = os.open(path, os.O_RDWR)  # read-write: NFS emulates flock with write locks
        except FileNotFoundError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def sweep_tmp(self, older_than: float = 3600) -> int:
        """Remove partial writes of dead processes; a live writer's is never removed, however old."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            with self.unheld(Path(entry.path)) as unheld:
                if unheld:
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _create_locked(path: Path) -> BinaryIO:
    """A new file at `path`, opened for writing and flocked. If a sweeper took the name away between
    the create and the lock (it saw an unlocked file), the file we hold is unlinked: try the next name."""
    while True:
        out = open(path, "xb")
        fcntl.flock(out.fileno(), fcntl.LOCK_EX)
        if os.fstat(out.fileno()).st_nlink:
            return out
        out.close()


_FULL = (errno.ENOSPC, errno.EDQUOT)
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


@contextmanager
def _write_faults() -> Iterator[None]:
    """The data directory's faults as the faults the faces answer (507, 503)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise InsufficientStorage("the data directory is full") from exc
        if exc.errno in _UNWRITABLE:
            raise Unavailable(f"the data directory is not writable ({os.strerror(exc.errno)})") from exc
        raise


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
    _sync_file_range = None  # type: ignore[assignment]  # checked before each use
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Let the disk start on bytes just written while the next ones arrive, so the closing fsync waits less."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
