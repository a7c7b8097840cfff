"""Group commit: the write transactions of a process's threads that come while one commits, committed as one.

On SQLite one writer writes at a time (writers.py) and each commit waits for the write-ahead log to reach the
disk (synchronous=FULL), so under load writers spent their time queueing behind each other's fsyncs and the
hand-overs between them. Here the first thread to come leads: it runs its own work in a transaction and
commits. Threads that come meanwhile queue; when the leader's commit is done, the first of them leads the
next group, which runs the work of every queued thread in one transaction and commits once. Each thread
answers only once the commit that holds its change is on disk, and gets its own outcome: its result, or its
own exception (a lock conflict), whose changes the group undid alone (`Job`). A transaction that fails as a
whole (the commit, a database error) fails every job of its group, none of which took effect. A thread whose
work is still queued after `timeout` seconds (the writer before it is stuck) gives up, as a writer waiting for
its turn does (writers.py), and its work never runs; once its group has begun, it waits for the group's end.

This module knows nothing of databases: `commit(jobs)` (db.py) runs the jobs in one transaction.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Job(Generic[T]):
    """One thread's work (`work(statements)`) in a group, and how it ended."""

    __slots__ = ("work", "queued_at", "leads", "_result", "_error", "_woken")

    def __init__(self, work: Callable[[Any], T]):
        self.work = work
        self.queued_at = time.monotonic()
        self.leads = False  # it is to lead the next group (set under GroupCommit's lock)
        self._result: T | None = None
        self._error: BaseException | None = None
        # Released when its group has committed or it is to lead the next one: a lock held from the start, the
        # cheapest way for one thread to wake another (an Event goes through a Condition and a lock of its own)
        self._woken = threading.Lock()
        self._woken.acquire()

    def succeeded(self, result: T) -> None:
        self._result, self._error = result, None

    def failed(self, error: BaseException) -> None:
        self._result, self._error = None, error

    def outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # settled by succeeded()


class GroupCommit:
    """Groups for one database: `run(work)` from any thread of the process."""

    def __init__(self, commit: Callable[[Sequence[Job]], None], timeout: float, gave_up: Callable[[], BaseException]):
        """`commit(jobs)` runs every job's work in one transaction and commits, settling each job that it ran
        (`succeeded`, or `failed` with what its work raised); it raises if the transaction failed as a whole.
        A thread whose work is still queued after `timeout` seconds raises `gave_up()`."""
        self._commit, self._timeout, self._gave_up = commit, timeout, gave_up
        self._lock = threading.Lock()
        self._queued: list[Job] = []
        self._leading = False  # a thread is running a group
        self._watchdog_pid = 0  # the process whose watchdog runs (a forked child starts its own)

    def run(self, work: Callable[[Any], T]) -> T:
        job: Job[T] = Job(work)
        with self._lock:
            self._queued.append(job)
            leads = not self._leading
            self._leading = True
            if not leads and self._watchdog_pid != os.getpid():
                self._watchdog_pid = os.getpid()
                threading.Thread(target=self._watch, name="wopihost-group-commit", daemon=True).start()
        if not leads:
            job._woken.acquire()  # its group ended, it is to lead the next one, or the watchdog gave it up
        if leads or job.leads:
            self._lead()
        return job.outcome()

    def _lead(self) -> None:
        with self._lock:
            group, self._queued = self._queued, []
        try:
            self._commit(group)
        except BaseException as exc:  # nothing of the group took effect, whatever its jobs' work returned
            for job in group:
                job.failed(exc)
        finally:
            with self._lock:
                following = self._queued[0] if self._queued else None
                self._leading = following is not None
                if following is not None:
                    following.leads = True
            for job in group:
                job._woken.release()
            if following is not None:
                following._woken.release()

    def _watch(self) -> None:
        """Give up the work queued for longer than the timeout, while any is queued. A waiting thread could time
        its own wait, but that cost a Lock 4-6% more CPU under load (a kernel timer for every wait), where this
        thread wakes a few times a second."""
        while True:
            time.sleep(min(1.0, self._timeout / 4))
            now = time.monotonic()
            with self._lock:
                if not self._queued:  # the next thread to queue starts another
                    self._watchdog_pid = 0
                    return
                stale = [job for job in self._queued if not job.leads and now - job.queued_at >= self._timeout]
                for job in stale:
                    self._queued.remove(job)
                    job.failed(self._gave_up())
            for job in stale:
                job._woken.release()
