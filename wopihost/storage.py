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
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self

from .faults import InsufficientStorage, Unavailable, outcome_unknown
from .ids import new_id
from .quickxor import QuickXor
from .scratch import scratch

if TYPE_CHECKING:
    from .clock import Clock
    from .config import Settings
    from .db import Database
    from .extents import Extents

log = logging.getLogger("wopihost.storage")

PIECE = 1 << 20  # bytes read and written at a time: memory use does not grow with file size
COPY_STEP = 64 << 20  # bytes the kernel copies at a time (_copy_range) between two looks at the free space


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the content is larger than the limit of {limit} bytes")
        self.limit = limit


class Readable(Protocol):
    """What a blob is written from: an open file, a request body, anything with readinto."""

    def readinto(self, buffer: memoryview, /) -> int: ...


def open_storage(settings: Settings, db: Database, clock: Clock) -> Storage:
    """The store WOPIHOST_STORAGE_URL names: the local blob directory by default, or an S3 bucket, whose writers
    hold their new objects in `db` (holds.py) with leases judged by `clock`."""
    if not settings.storage_url:
        return BlobStore(settings.blob_dir, settings.tmp_dir, settings.min_free_space)
    from .config import ConfigError
    from .holds import Holds
    from .s3store import S3Store  # only here: boto3 is an extra, and the local default does not load it

    try:
        import boto3  # type: ignore[import-untyped]  # noqa: F401  # installed?
    except ImportError:
        raise ConfigError(
            "WOPIHOST_STORAGE_URL names an S3 bucket, which needs boto3: pip install 'wopihost[s3]'"
        ) from None
    return S3Store(
        settings.storage_url,
        Holds(db, clock),
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region or None,
        addressing_style=settings.s3_addressing_style or None,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_attempts=settings.s3_max_attempts,
        part_size=settings.s3_part_size,
        download_endpoint_url=settings.s3_download_url or None,
    )


class Closable(Protocol):
    def close(self) -> None: ...


class Opened(Protocol):
    """Blobs opened together for reading (a store's `open`), closed by whoever opened them. A blob released
    after it was opened (Storage.release) stays readable through them."""

    # `size`, when the caller knows the blob's (an upload piece's row), spares a store that would ask for it
    def add(self, name: str, size: int | None = None) -> None: ...
    def adopt(self, other: Self, /) -> None: ...  # take over other's blobs; other is left empty
    def subset(self, names: Iterable[str], /) -> Self: ...  # of blobs open here, to close independently
    def size(self, name: str) -> int: ...
    def pieces(self, extents: Extents, piece: int = ...) -> Iterator[bytes]: ...
    def readinto(self, name: str, offset: int, buffer: memoryview, /) -> int: ...
    def whole_file(self, name: str) -> BinaryIO | None: ...  # a real file the server can sendfile, if any
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc) -> None: ...


class Storage(Protocol):
    """Where file content lives: immutable blobs, named by the store, each written once and read by ranges.
    The domain knows only this; BlobStore (a local directory) is one implementation."""

    def write(self, source: Readable, limit: int, sha256: bool = True, quickxor: bool = True) -> Blob: ...
    def open(self, names: Iterable[str] = ...) -> Opened: ...
    def concat(self, opened: Opened, extents: Extents) -> Blob: ...

    # Whether a blob deleted while a reader has it open stays readable to that reader (an open file does;
    # an object in a store does not). If not, gc deletes a blob only once it has stayed unreferenced for its
    # grace period (gc.py), and release() leaves it to gc.
    deleted_stays_readable: bool

    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...  # at once: for a blob that no reader can have open
    def release(self, name: str) -> None: ...  # a transaction just stopped referring to it
    def listing(self, older_than: float) -> Iterator[str]: ...
    def unheld(self, names: Iterable[str]) -> AbstractContextManager[list[str]]: ...
    def sweep_tmp(self, older_than: float = ...) -> int: ...
    def partial_writes(self) -> list[str]: ...  # writes begun and not finished: live, or left by dead writers
    def health(self) -> str: ...
    def free_space(self) -> int | None: ...
    # a URL from which clients can fetch blob `name` themselves for `ttl` seconds, as `filename`; None if none
    def download_url(self, name: str, ttl: float, filename: str) -> str | None: ...


class Hashes:
    """The content hashes a write computes in the pass that stores the bytes (either may be skipped)."""

    def __init__(self, sha256: bool, quickxor: bool):
        self._sha256 = hashlib.sha256() if sha256 else None
        self._quickxor = QuickXor() if quickxor else None

    def update(self, piece: memoryview) -> None:
        if self._sha256 is not None:
            self._sha256.update(piece)
        if self._quickxor is not None:
            self._quickxor.update(piece)

    def sha256(self) -> str:
        """base64, "" if skipped."""
        return base64.b64encode(self._sha256.digest()).decode("ascii") if self._sha256 is not None else ""

    def quickxor(self) -> str:
        """base64, "" if skipped."""
        return self._quickxor.b64digest() if self._quickxor is not None else ""


def discard(storage: Storage, name: str, failure: BaseException | None = None) -> None:
    """Delete a blob made for a change that failed (with `failure`, if it raised), whose own error is the one to
    answer: a store failing here too (unreachable, refusing) is logged, not raised over it, and gc deletes the
    blob once unreferenced and unheld. A loop of these goes on to its other blobs' holds. A change that may have
    committed all the same (faults.outcome_unknown) may name the blob: it is left to gc, which deletes it only if
    nothing does."""
    if failure is not None and outcome_unknown(failure):
        log.info("left blob %s to gc: the change that failed may have committed", name)
        return
    try:
        storage.delete(name)
    except Exception:
        log.warning("could not delete blob %s after a failed change; gc will", name, exc_info=True)


class Blob:
    """A blob just written, held until its `with` block ends (or `release()`).

    While held, the store tells garbage collection, in any process or node, that its writer is alive
    and has not yet recorded it in the database: hold it until that transaction is over. In the local
    store the hold is an exclusive flock on the blob, which a killed writer's process takes with it
    (the S3 store's is a row of the database with a lease, which a killed writer leaves until it ends:
    holds.py).
    """

    def __init__(self, name: str, size: int, sha256: str, hold: Closable, quickxor: str = ""):
        self.name, self.size, self.sha256 = name, size, sha256  # sha256: base64, "" if not computed
        self.quickxor = quickxor  # QuickXorHash (quickxor.py) of the blob alone: base64, "" if not computed
        self._hold: Closable | None = hold

    def release(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def keep(self) -> None:
        """Keep holding it while the change it is for goes on making others (a folder's copies, a merge's levels),
        which may take longer than a lease: the S3 store's hold is moved on once past half of it (holds.py); the
        local store's, an flock, lasts as long as the blob is held."""
        refresh = getattr(self._hold, "refresh", None)
        if refresh is not None:
            refresh()

    def __enter__(self) -> Blob:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self.size})"


class BlobStore:
    """Blobs as files in a local (or shared POSIX) directory."""

    deleted_stays_readable = True  # through the reader's open descriptor

    def __init__(self, root: Path, tmp: Path, min_free: int = 0):
        self.root = root
        self.tmp = tmp
        self.min_free = min_free
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return Path(self.location(name))

    def location(self, name: str) -> str:
        """`path` as a string: what opening a blob for a download needs, without pathlib's parsing."""
        return f"{self.root}/{name[:2]}/{name}"  # a Path keeps its string once made

    def write(self, source: Readable, limit: int, sha256: bool = True, quickxor: bool = True) -> Blob:
        """Stream `source` (anything with .readinto(buffer)) into a new, held blob; at most `limit` bytes.

        The thread's buffer (scratch.py) is reused for every piece, so nothing is copied in Python.
        `sha256=False` skips the SHA-256 (Blob.sha256 is then "") and `quickxor=False` the QuickXorHash
        (Blob.quickxor "") where nobody needs them; both are computed in the pass that writes the bytes.
        A source with a `length` (a request body's Content-Length) that would leave less than
        `min_free` bytes on the disk is refused before anything is read; any write is stopped once the disk
        has less left (a chunked body has no length, and writes side by side each passed the first check).
        """
        self._check_room(getattr(source, "length", None) or 0)
        hashes = Hashes(sha256, quickxor)
        size = 0
        with scratch(PIECE) as buffer, self._new_blob() as (name, out):
            while n := source.readinto(buffer):
                size += n
                if size > limit:
                    raise TooLarge(limit)
                self._check_room(0)  # a statvfs, a microsecond a mebibyte
                piece = buffer[:n]
                hashes.update(piece)
                out.write(piece)
                _start_writeback(out.fileno(), size - n, n)
        return Blob(name, size, hashes.sha256(), out, hashes.quickxor())

    def open(self, names: Iterable[str] = ()) -> OpenBlobs:
        """`names` opened together for reading (FileNotFoundError if one is gone)."""
        return OpenBlobs(self, names)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def concat(self, opened: Opened, extents: Extents) -> Blob:
        """A new, held blob made of `extents` of blobs in `opened`, copied by the kernel.

        copy_file_range keeps the bytes out of Python (and may share extents on file
        systems that can); where the kernel cannot, pread/write does the same work.
        The blob has no SHA-256: hashing would cost more than the copy itself. A copy that would leave less
        than `min_free` bytes on the disk is refused before anything is copied, as a write is, and stopped once the
        disk has less left (copies side by side each passed the first check).
        """
        assert isinstance(opened, OpenBlobs)  # opened by this store
        self._check_room(sum(extent.length for extent in extents))
        size = 0
        with self._new_blob() as (name, out):
            out.flush()
            for extent in extents:
                _copy_range(opened._fds[extent.blob], out.fileno(), extent.offset, extent.length, self._check_room)
                size += extent.length
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
                with suppress(OSError):  # the write's own error is the one to report
                    out.close()  # flushes what is buffered, which on a full disk fails again (but closes)
                with suppress(OSError):
                    path.unlink(missing_ok=True)
            raise

    def _check_room(self, size: int) -> None:
        """InsufficientStorage unless storing `size` more bytes (0: as a write goes on) leaves `min_free`."""
        if self.min_free and self.free_space() - size < self.min_free:
            raise InsufficientStorage(
                f"storing {size} more bytes would leave less than {self.min_free} bytes free in the data directory"
                if size
                else f"the data directory has less than {self.min_free} bytes free"
            )

    def free_space(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def health(self) -> str:
        """ "ok", "full" (less than min_free left) or "not writable" (a probe blob cannot be written)."""
        try:
            with self.write(io.BytesIO(b"health"), 16, sha256=False, quickxor=False) as probe:
                self.delete(probe.name)
        except InsufficientStorage:
            return "full"
        except (OSError, Unavailable):
            return "not writable"
        return "full" if self.min_free and self.free_space() < self.min_free else "ok"

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def release(self, name: str) -> None:
        self.delete(name)  # readers keep their descriptors: the space comes back when the last one closes

    def download_url(self, name: str, ttl: float, filename: str) -> None:
        return None  # clients reach the blob directory only through the host

    def listing(self, older_than: float) -> Iterator[str]:
        """The names of the blobs last written before `older_than` (a time.time()), for gc."""
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                with suppress(FileNotFoundError):
                    if entry.stat().st_mtime < older_than:
                        yield entry.name

    @contextmanager
    def unheld(self, names: Iterable[str]) -> Iterator[list[str]]:
        """Those of `names` that no live writer holds (see Blob), held by us for the block so that none
        can be taken meanwhile."""
        with ExitStack() as held:
            yield [name for name in names if held.enter_context(_unheld(self.path(name)))]

    def partial_writes(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.tmp))

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
            with _unheld(Path(entry.path)) as unheld:
                if unheld:
                    os.unlink(entry.path)
                    removed += 1
        return removed


class OpenBlobs:
    """File descriptors for a set of blobs, opened together so a concurrent delete cannot take them away
    (BlobStore.open). Reads use os.pread: no seek position is shared between readers.

    Whoever opens them closes them (`close`, or a `with` block); should an owner be dropped unclosed on some
    path nobody foresaw, its descriptors are closed when it is collected, with a warning, rather than kept
    for good.
    """

    def __init__(self, blobs: BlobStore, names: Iterable[str] = ()):
        self._blobs = blobs
        self._fds: dict[str, int] = {}
        weakref.finalize(self, _close_leaked, self._fds)
        try:
            for name in dict.fromkeys(names):
                self.add(name)
        except BaseException:
            self.close()
            raise

    def add(self, name: str, size: int | None = None) -> None:
        if name not in self._fds:
            try:
                self._fds[name] = os.open(self._blobs.location(name), os.O_RDONLY)
            except OSError as exc:
                _raise_if_out_of_descriptors(exc)
                raise

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
        other = OpenBlobs(self._blobs)
        try:
            for name in names:
                other._fds[name] = os.dup(self._fds[name])
        except BaseException:
            other.close()
            raise
        return other

    def size(self, name: str) -> int:
        return os.fstat(self._fds[name]).st_size

    def readinto(self, name: str, offset: int, buffer: memoryview) -> int:
        """Read what fits in `buffer` of blob `name` from `offset` (less at its end)."""
        return os.preadv(self._fds[name], [buffer], offset)

    def whole_file(self, name: str) -> BinaryIO:
        """Blob `name` as a file of its own, which the server can sendfile: closed independently of these.
        Unbuffered: the server sends it with sendfile or reads it in large pieces, and a buffered reader would
        cost two more system calls per download (a terminal check and a seek) for nothing."""
        try:
            return os.fdopen(os.dup(self._fds[name]), "rb", buffering=0)
        except OSError as exc:
            _raise_if_out_of_descriptors(exc)
            raise

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


@contextmanager
def _unheld(path: Path) -> Iterator[bool]:
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
_TOO_MANY_OPEN = (errno.EMFILE, errno.ENFILE)


@contextmanager
def _write_faults() -> Iterator[None]:
    """The data directory's faults as the faults the faces answer (507, 503)."""
    try:
        yield
    except OSError as exc:
        _raise_if_out_of_descriptors(exc)
        if exc.errno in _FULL:
            raise InsufficientStorage("the data directory is full") from exc
        if exc.errno in _UNWRITABLE:
            raise Unavailable(f"the data directory is not writable ({os.strerror(exc.errno)})") from exc
        raise


def _raise_if_out_of_descriptors(exc: OSError) -> None:
    """503 for `exc` if it says no descriptor was left to open, the process's or the system's: requests under way
    close theirs. A plain try/except where it is asked, not a context manager: a download asks twice, and a
    context manager's way in and out costs a microsecond each time."""
    if exc.errno in _TOO_MANY_OPEN:
        raise Unavailable(f"the host has too many files open ({os.strerror(exc.errno)})") from exc


def _copy_range(src: int, dst: int, offset: int, length: int, room: Callable[[int], None]) -> None:
    """Append src[offset:offset + length] to dst (at dst's position), asking `room(0)` (507 once the disk has
    less than it keeps free) every COPY_STEP bytes."""
    end = offset + length
    try:
        while offset < end:
            copied = os.copy_file_range(src, dst, min(end - offset, COPY_STEP), offset)
            if copied == 0:
                raise OSError(f"the source ends at byte {offset}, before {end}")
            offset += copied
            room(0)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while offset < end:  # no copy_file_range between these files: copy through a buffer
        data = memoryview(os.pread(src, min(PIECE, end - offset), offset))
        if not data:
            raise OSError(f"the source ends at byte {offset}, before {end}")
        offset += len(data)
        while data:  # a disk that fills mid-write writes part and says so by the count alone (ENOSPC comes next)
            data = data[os.write(dst, data) :]
        room(0)


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
