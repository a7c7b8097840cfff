"""Turns for SQLite's writers: one writer at a time across the threads and processes of one database file,
each woken as soon as the writer before it is done (db.py: why)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .faults import InsufficientStorage, Unavailable

BUSY = "the database stayed locked by other writers past the busy timeout"


class WriterQueue:
    """Turns for the SQLite writers of every thread and process on one database file.

    Threads of a process wait on a lock, which wakes the next one the moment it is released. The thread
    whose turn it is then needs the process's exclusive flock on `<database>-writers` (which the kernel
    gives back even if its holder dies). A blocking flock is woken by the kernel the moment the other
    process lets go, where polling would sleep and let the releasing process take the lock again and
    again; but a blocking flock cannot time out, and a writer must give up after `timeout` with 503, as
    SQLite's own busy timeout did. So a gatekeeper thread of each process makes the blocking call and the
    writer waits for it with a timeout; a flock that comes after its writer gave up is let go at once.
    BEGIN IMMEDIATE then finds the database free, unless a writer outside wopihost holds it, and
    SQLite's busy handler still covers that.
    """

    def __init__(self, path: str, timeout: float):
        self.path = path + "-writers"
        self.timeout = timeout
        self._threads = threading.Lock()
        self._gate: _Gate | None = None  # each process (a forked child too) starts its own

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._threads.acquire(timeout=self.timeout):
            raise Unavailable(BUSY)
        try:
            gate = self._process_gate()
            if not gate.enter(self.timeout):
                raise Unavailable(BUSY)
            try:
                yield
            finally:
                gate.leave()
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._gate is not None and self._gate.pid == os.getpid():
                self._gate.close()
            self._gate = None

    def _process_gate(self) -> _Gate:
        # Called with the thread lock held. flock belongs to an open file: a descriptor inherited across a
        # fork would be shared with the parent, so each process opens the file itself.
        if self._gate is None or self._gate.pid != os.getpid():
            try:
                self._gate = _Gate(self.path)
            except OSError as exc:  # beside the database: a read-only or full file system, say
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage("the database's directory is full") from exc
                raise Unavailable(f"the database cannot be written ({exc.strerror})") from exc
        return self._gate


class _Gate:
    """One process's flock on the writers' file, waited for by a gatekeeper thread (see WriterQueue). The
    writers of a process take turns before they come here: one at a time."""

    def __init__(self, path: str):
        self.pid = os.getpid()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Held shared by every gatekeeper while it waits: a process that finds it held does not take the turn
        # straight away but waits as well, and the kernel then wakes both waiters when the turn frees, so a
        # process whose writers come back to back cannot keep the turn from the others.
        try:
            self.waiting_fd = os.open(path + "-waiting", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except BaseException:
            os.close(self.fd)
            raise
        self._state = threading.Condition()
        self._wanted = False  # a writer waits for the gatekeeper
        self._granted = False  # the gatekeeper took the flock for that writer
        self._inside = False  # a writer holds the flock
        # The gatekeeper is taking the flock. What it takes is this descriptor's, so a writer that tried the
        # descriptor now would find it its own, go in, and let go on leaving of what the gatekeeper then grants
        # to the next writer; and the gatekeeper's shared lock on the waiting file is the descriptor's too.
        self._acquiring = False
        self._closed = False
        self._keeper: threading.Thread | None = None  # started the first time a writer has to wait

    def enter(self, timeout: float) -> bool:
        """Whether the flock is this process's within `timeout` seconds (the caller then calls `leave`)."""
        with self._state:
            if not self._acquiring and not self._others_wait():
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the usual case: nobody else writes
                    self._inside = True
                    return True
                except BlockingIOError:
                    pass
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="wopihost-writers-gate", daemon=True)
                self._keeper.start()
            self._wanted = True
            self._state.notify_all()
            granted = self._state.wait_for(lambda: self._granted, timeout)
            # Taken, or given up (then the gatekeeper lets go of a flock that comes later); either way the
            # gatekeeper may wait for the next writer.
            self._wanted = self._granted = False
            self._inside = granted
            self._state.notify_all()
            return granted

    def _others_wait(self) -> bool:
        try:
            fcntl.flock(self.waiting_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.waiting_fd, fcntl.LOCK_UN)
        return False

    def leave(self) -> None:
        with self._state:
            self._inside = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify_all()
            if self._keeper is None:
                self._close_files()  # else the gatekeeper closes them on its way out

    def _close_files(self) -> None:
        os.close(self.fd)
        os.close(self.waiting_fd)

    def _keep(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._wanted or self._closed)
                if self._closed:
                    self._close_files()
                    return
                self._acquiring = True
            fcntl.flock(self.waiting_fd, fcntl.LOCK_SH)
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks, without the GIL, until the other process lets go
            fcntl.flock(self.waiting_fd, fcntl.LOCK_UN)
            with self._state:
                self._acquiring = False
                if self._wanted:
                    self._granted = True
                    self._state.notify_all()
                elif not self._inside:  # its writer gave up (a writer inside shares this descriptor's lock)
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                self._state.wait_for(lambda: not self._granted or self._closed)
