"""Workbook calls, run in child processes (child.py) capped in memory and in time.

A formula's calculation cannot be bounded by reading it: array arithmetic makes a result far larger than the
ranges it names (`=ROWS(A1:A1048576*TRANSPOSE(A1:A1048576))` asks for a million by a million). In the worker
itself, IronCalc would abort the whole process when an allocation fails (with every request it serves), hold the
GIL while it calculates (every other request of the worker, and gunicorn's heartbeat, would wait), and keep what
it built. In a child, a calculation that needs more than WOPIHOST_WORKBOOK_MEMORY ends that child, one that
takes longer than WOPIHOST_WORKBOOK_SECONDS is stopped, and either is the call's 400; the worker's threads only
wait on a socket. A child is started when a call first needs it (about 0.3 s: a worker that serves no workbook
has none) and holds the last workbook it used, which its caller names (`Calculator.holds`), so that the next
call on it sends no bytes and skips opening it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .errors import WorkbookError, unsupported


@dataclass(frozen=True)
class Call:
    """A call on a workbook: a method of workbook.Workbook and its arguments (sent to the child, so plain data)."""

    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


class Calculator:
    """One child process, used by one call at a time."""

    def __init__(self, limit: int, memory: int, seconds: float):
        self._limit, self._memory, self._seconds = limit, memory, seconds
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        # What the workbook the child holds was opened from, as its caller names it; None: nothing, or a workbook
        # a call changed and its caller has not stored (or failed to)
        self.holds: Any = None

    def run(self, data: bytes | None, call: Call, write: bool = False) -> tuple[Any, bytes | None]:
        """What `call` answers on the workbook in `data` (None: the one the child holds), and with `write` the
        workbook's bytes after it. WorkbookError if the call is refused, or its calculation goes past the
        child's memory or time."""
        if data is None and self.holds is None:
            raise RuntimeError("the child holds no workbook")
        self.holds = None
        conn = self._started()
        try:
            conn.send((data, call.method, call.args, call.kwargs, write))
            if not conn.poll(self._seconds):
                self.stop()
                raise unsupported(
                    f"calculating the workbook took more than {self._seconds:g} s, the most this host gives a call "
                    "(WOPIHOST_WORKBOOK_SECONDS)"
                )
            answer = conn.recv()
        except (EOFError, OSError):  # the child ended: IronCalc aborted as an allocation failed (or it was killed)
            self.stop()
            raise self._out_of_memory() from None
        if answer[0] == "ok":
            return answer[1], answer[2]
        if answer[0] == "refused":
            raise WorkbookError(*answer[1:])
        if answer[1] == "memory":
            raise self._out_of_memory()
        raise RuntimeError(f"the workbook call failed: {answer[1]}")

    def _out_of_memory(self) -> WorkbookError:
        return unsupported(
            f"calculating the workbook needs more than the {self._memory >> 20} MiB this host gives a call "
            "(WOPIHOST_WORKBOOK_MEMORY)"
        )

    def _started(self) -> Connection:
        if self._process is not None and self._process.poll() is None and self._conn is not None:
            return self._conn
        self.stop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wopihost.xlsx.child",
                    str(theirs.fileno()),
                    str(self._limit),
                    str(self._memory),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
            self._conn = Connection(ours.detach())
        weakref.finalize(self, _end, self._process, self._conn)  # a calculator dropped unstopped (an app's services)
        return self._conn

    def stop(self) -> None:
        self.holds = None
        if self._process is not None and self._conn is not None:
            _end(self._process, self._conn)
        self._process = self._conn = None


def _end(process: subprocess.Popen, conn: Connection) -> None:
    conn.close()
    process.kill()
    process.wait()


class Calculators:
    """`size` calculators, each taken by one call at a time (the caller bounds how many calls run at once)."""

    def __init__(self, size: int, limit: int, memory: int, seconds: float):
        self._free = [Calculator(limit, memory, seconds) for _ in range(size)]
        self._lock = threading.Lock()

    @contextmanager
    def taken(self, file_id: str) -> Iterator[Calculator]:
        """A free calculator: one holding a workbook of `file_id` if there is one, else one already started."""
        with self._lock:
            ranked = sorted(
                self._free, key=lambda c: (c.holds is not None and c.holds[0] == file_id, c._process is not None)
            )
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
