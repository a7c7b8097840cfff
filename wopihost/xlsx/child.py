"""The process a worker's workbook calls run in (calculator.py): `python -m wopihost.xlsx.child FD LIMIT MEMORY PARENT`.

It serves calls on a connection, one at a time, until the connection closes (its worker went away), holding at
most one workbook between them. Its address space is capped at MEMORY bytes, and each call's CPU time at what the
call says: IronCalc aborts the process when an allocation fails (a Rust allocation failure is no exception), and
the kernel ends it past its CPU time (SIGXCPU), which ends this process and nothing else. It dies with its worker
(a worker SIGKILLed would otherwise leave it calculating), and writes no core file.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from .errors import CalculationFailed, WorkbookError
from .workbook import Sheet, Workbook, open_workbook

_PR_SET_PDEATHSIG = 1


def serve(conn: Connection, limit: int) -> None:
    """Each message is (data, method, args, kwargs, write, whole, seconds): the workbook's bytes (None: the one
    held), the Workbook method and its arguments, whether the workbook's new bytes are wanted and must keep every
    part of the file (Workbook.to_bytes), and the CPU seconds the call may take. Each answer is ("ok", result, bytes or None), ("refused", status, code, message, inner, held) or
    ("failed", message). A workbook that failed a change, half made maybe, is not held; one a read was refused on
    is (`held`)."""
    book: Workbook | None = None
    answer: tuple
    while True:
        try:
            data, method, args, kwargs, write, whole, seconds = conn.recv()
        except (EOFError, OSError):
            return
        _cpu_for(seconds)
        try:
            if data is not None:
                book = None  # (its memory back before the next one is opened)
                book = open_workbook(data, limit)
            if book is None:
                raise RuntimeError("no workbook is held")
            result = _plain(getattr(book, method)(*args, **kwargs))
            answer = ("ok", result, book.to_bytes(whole) if write else None)
        except WorkbookError as exc:
            if write or isinstance(exc, CalculationFailed):
                book = None
            answer = ("refused", exc.status, exc.code, str(exc), exc.inner, book is not None)
        except MemoryError:
            book, answer = None, ("failed", "memory")
        except Exception as exc:
            book, answer = None, ("failed", f"{type(exc).__name__}: {exc}"[:500])
        conn.send(answer)


def _cpu_for(seconds: float) -> None:
    """The kernel ends this process (SIGXCPU) once the call has used `seconds` of CPU: counted from now, as the
    limit is on the process's whole time (in whole seconds)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + seconds)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _plain(result: Any) -> Any:
    """A method's answer as JSON-ready values (a worksheet as its JSON): the worker need not load this package's
    classes, nor openpyxl and IronCalc with them, to read it."""
    if isinstance(result, list):
        return [_plain(item) for item in result]
    return result.to_json() if isinstance(result, Sheet) else result


def _bound(memory: int, parent: int) -> None:
    with_hard = resource.getrlimit(resource.RLIMIT_AS)[1]  # (a hard limit of the worker's own is kept)
    cap = memory if with_hard == resource.RLIM_INFINITY else min(memory, with_hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, with_hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort past the cap is expected: no core file each time
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the connection's end still ends it, once a call is over
        pass
    if os.getppid() != parent:  # the worker died before the signal was asked for
        sys.exit(0)


if __name__ == "__main__":
    fd, workbook_limit, address_space, worker = (int(arg) for arg in sys.argv[1:5])
    _bound(address_space, worker)
    serve(Connection(fd), workbook_limit)
