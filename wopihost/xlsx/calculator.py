"""Workbook calls, run in child processes (child.py) capped in memory and in CPU time.

A formula's calculation cannot be bounded by reading it: array arithmetic makes a result far larger than the
ranges it names (`=ROWS(A1:A1048576*TRANSPOSE(A1:A1048576))` asks for a million by a million). In the worker
itself, IronCalc would abort the whole process when an allocation fails (with every request it serves), hold the
GIL while it calculates (every other request of the worker, and gunicorn's heartbeat, would wait), and keep what
it built. In a child, a calculation that needs more than WOPIHOST_WORKBOOK_MEMORY or more CPU time than
WOPIHOST_WORKBOOK_SECONDS ends that child, and is the call's 400; the worker's threads only wait on a socket. (CPU
time, not time: calls that wait for the CPU on a busy machine are not refused for it. A call still unanswered after
BACKSTOP times as long (a minute at least) is stopped all the same, a 503 to retry.) A child is started when a call first needs it
(about 0.3 s: a worker that serves no workbook has none) and holds the last workbook it used, which its caller names
(`Calculator.holds`), so that the next call on it sends no bytes and skips opening it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..faults import Unavailable
from .errors import WorkbookError, unsupported

BACKSTOP = 4  # times WOPIHOST_WORKBOOK_SECONDS a call may wait for its answer, however busy the machine
MIN_BACKSTOP = 60.0  # seconds, at least: a small CPU cap on a loaded machine is still reached before this
_SOURCE = str(Path(__file__).resolve().parents[2])  # where this wopihost is imported from: the child imports it too
_OUT_OF_MEMORY = (-signal.SIGABRT, -signal.SIGKILL)  # IronCalc's allocation failure, the kernel's OOM killer
# Children are started from one thread that lives as long as the worker: a child asks to be killed when what
# started it ends (child.py), and Linux takes that to be the thread, not the process (a request's thread may end)
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="wopihost-xlsx")


@dataclass(frozen=True)
class Call:
    """A call on a workbook: a method of workbook.Workbook and its arguments (sent to the child, so plain data)."""

    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


class _Child:
    """A child process and the connection to it, ended when its calculator is (or is dropped unstopped)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def end(self, wait: float = 0) -> int | None:
        """End the child, after `wait` seconds for it to end on its own; its exit status if it did."""
        status = None
        if self.conn is not None:
            self.conn.close()
        if self.process is not None:
            try:
                status = self.process.wait(wait) if wait else self.process.poll()
            except subprocess.TimeoutExpired:
                pass
            self.process.kill()
            self.process.wait()
        self.process = self.conn = None
        return status


class Calculator:
    """One child process, used by one call at a time."""

    def __init__(self, limit: int, memory: int, seconds: float):
        self._limit, self._memory, self._seconds = limit, memory, seconds
        self._child = _Child()
        weakref.finalize(self, self._child.end)  # a calculator dropped unstopped (an app's services, in a test)
        self._holds: Any = None

    @property
    def holds(self) -> Any:
        """What the workbook the child holds was opened from, as its caller named it: None if nothing (a child
        that died idle holds nothing either), or a workbook a write changed, until its caller stores it."""
        return self._holds if self._child.alive() else None

    @holds.setter
    def holds(self, key: Any) -> None:
        self._holds = key

    def run(
        self, key: Any, data: bytes | None, call: Call, write: bool = False, whole: bool = True
    ) -> tuple[Any, bytes | None]:
        """What `call` answers on the workbook `key` in `data` (None: the one the child holds), and with `write`
        the workbook's bytes after it: refused if they would lose a part of the file, unless not `whole` (a
        session's copy). WorkbookError if the call is refused, or its calculation goes past the child's memory
        or CPU time; Unavailable (503) if no answer came within BACKSTOP times that time."""
        if data is None and self.holds != key:
            raise RuntimeError("the child does not hold that workbook")
        self._holds = None
        conn = self._started()
        try:
            conn.send((data, call.method, call.args, call.kwargs, write, whole, self._seconds))
            if not conn.poll(max(self._seconds * BACKSTOP, MIN_BACKSTOP)):
                self.stop()
                raise Unavailable("the workbook's calculation is waiting too long for the host's CPU; retry", 5)
            answer = conn.recv()
        except (EOFError, OSError):  # the child ended
            raise self._ended() from None
        except BaseException:  # the child's answer would be left for the next call to read
            self.stop()
            raise
        if answer[0] == "ok":
            self._holds = None if write else key
            return answer[1], answer[2]
        if answer[0] == "refused":
            self._holds = key if answer[5] else None
            raise WorkbookError(*answer[1:5])
        if answer[1] == "memory":
            raise self._out_of_memory()
        raise RuntimeError(f"the workbook call failed: {answer[1]}")

    def _ended(self) -> Exception:
        """What a call whose child ended under it answers: the child's own end says why."""
        status = self._child.end(wait=5)  # (its connection ends a moment before it does)
        if status in _OUT_OF_MEMORY:
            return self._out_of_memory()
        if status == -signal.SIGXCPU:
            return unsupported(
                f"calculating the workbook took more than the {self._seconds:g} s of CPU time this host gives a "
                "call (WOPIHOST_WORKBOOK_SECONDS)"
            )
        return RuntimeError(f"the workbook call's process ended with status {status}")

    def _out_of_memory(self) -> WorkbookError:
        return unsupported(
            f"calculating the workbook needs more than the {self._memory >> 20} MiB this host gives a call "
            "(WOPIHOST_WORKBOOK_MEMORY)"
        )

    def _started(self) -> Connection:
        child = self._child
        if child.alive() and child.conn is not None:
            return child.conn
        child.end()
        try:
            ours, theirs = socket.socketpair()
            with ours, theirs:
                child.process = _SPAWNER.submit(
                    subprocess.Popen,
                    # -P, and this wopihost first on the path: the child runs the worker's code, whatever the
                    # worker's directory holds
                    [sys.executable, "-P", "-m", "wopihost.xlsx.child"]
                    + [str(theirs.fileno()), str(self._limit), str(self._memory), str(os.getpid())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    env={
                        **os.environ,
                        "PYTHONPATH": os.pathsep.join(filter(None, [_SOURCE, os.environ.get("PYTHONPATH")])),
                    },
                ).result()
                child.conn = Connection(ours.detach())
        except OSError as exc:  # out of descriptors or processes: others end theirs
            child.end()
            raise Unavailable(f"cannot start a workbook call's process: {exc.strerror or exc}") from None
        return child.conn

    def stop(self) -> None:
        self._holds = None
        self._child.end()


class Calculators:
    """`size` calculators, each taken by one call at a time (the caller bounds how many calls run at once)."""

    def __init__(self, size: int, limit: int, memory: int, seconds: float):
        self._free = [Calculator(limit, memory, seconds) for _ in range(size)]
        self._lock = threading.Lock()

    @contextmanager
    def taken(self, file_id: str) -> Iterator[Calculator]:
        """A free calculator: one holding a workbook of `file_id` if there is one, else one already started."""
        with self._lock:
            ranked = sorted(self._free, key=lambda c: (c.holds is not None and c.holds[0] == file_id, c._child.alive()))
            calculator = ranked[-1]
            self._free.remove(calculator)
        try:
            yield calculator
        finally:
            with self._lock:
                self._free.append(calculator)

    def rename(self, old: Any, new: Any) -> None:
        """What a free calculator holds as `old` is `new` now (a session's copy, made of that content)."""
        with self._lock:
            for calculator in self._free:
                if calculator.holds == old:
                    calculator.holds = new

    def stop(self) -> None:
        with self._lock:
            for calculator in self._free:
                calculator.stop()
