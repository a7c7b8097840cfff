"""The spool: where the workers write their exchanges while the server runs, one file per worker process.

`DIR/.spool/<pid>-<random>.jsonl`, one JSON object a line, written whole with one write(2) each, so that a
killed worker leaves at most its last line torn. The file is created when the worker records its first
exchange (after gunicorn forks it) and locked (flock) for as long as the worker lives: assembly takes only
files it can lock, never one a live worker still writes (assembly.py).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("wopihost.recording")
SPOOL = ".spool"
SUFFIX = ".jsonl"
_MODE = 0o600  # bodies are documents: readable by the server's user only


class SpoolWriter:
    """Appends lines to this process's spool file; thread-safe, and safe across fork (a new process opens its own)."""

    def __init__(self, directory: Path):
        self.directory = directory / SPOOL
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._torn = False  # the last write failed partway: the next line starts on a line of its own

    def write(self, pieces: list[bytes]) -> None:
        """Write one line (its pieces, the last ending in a newline) at the end of the spool, with one writev;
        OSError if it cannot."""
        with self._lock:
            if self._pid != os.getpid():
                self._open()
            assert self._fd is not None
            if self._torn:
                pieces = [b"\n", *pieces]
            self._torn = True
            written, total = os.writev(self._fd, pieces), sum(map(len, pieces))
            if written < total:  # (a regular file takes all of it unless the disk is full)
                with memoryview(b"".join(pieces)) as rest:
                    rest = rest[written:]
                    while rest:
                        rest = rest[os.write(self._fd, rest) :]
            self._torn = False

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, _MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the process ends, however it ends
        self._fd, self._pid, self._torn = fd, os.getpid(), False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd, self._pid = None, 0


class SpoolFile:
    """A spool file left by a worker that is gone, locked against any other assembly while it is read."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd
        self._file = os.fdopen(os.dup(fd), "rb")

    @classmethod
    def take(cls, path: Path) -> SpoolFile | None:
        """The file, locked; None if a live worker (or another assembly) holds it, or it is gone."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # assembled and deleted by another process meanwhile
            os.close(fd)
            return None
        return cls(path, fd)

    def lines(self) -> Iterator[tuple[int, bytes, dict]]:
        """(offset, bytes, object) of each whole line; a torn or unreadable line is skipped."""
        self._file.seek(0)
        offset = 0
        for raw in self._file:
            length = len(raw)
            if raw.endswith(b"\n"):
                try:
                    value = json.loads(raw)
                except ValueError:
                    log.warning("recording: skipped a torn line at byte %d of %s", offset, self.path)
                else:
                    if isinstance(value, dict):
                        yield offset, raw, value
            elif raw.strip():
                log.warning("recording: skipped a torn last line at byte %d of %s", offset, self.path)
            offset += length

    def read(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()
        os.close(self._fd)  # releases the lock


def spool_files(directory: Path) -> list[Path]:
    spool = directory / SPOOL
    return sorted(spool.glob(f"*{SUFFIX}")) if spool.is_dir() else []
