"""The process a worker's workbook calls run in (calculator.py): `python -m wopihost.xlsx.child FD LIMIT MEMORY`.

It serves calls on a connection, one at a time, until the connection closes (its worker went away), holding at
most one workbook between them. Its address space is capped at MEMORY bytes: IronCalc aborts the process when an
allocation fails (a Rust allocation failure is no exception), which ends this process and nothing else.
"""

from __future__ import annotations

import resource
import sys
from multiprocessing.connection import Connection
from typing import Any

from .errors import WorkbookError
from .workbook import Sheet, Workbook, open_workbook


def serve(conn: Connection, limit: int) -> None:
    """Each message is (data, method, args, kwargs, write): the workbook's bytes (None: the one held), the
    Workbook method and its arguments, and whether the workbook's new bytes are wanted. Each answer is ("ok",
    result, bytes or None), ("refused", status, code, message, inner) or ("failed", message); a workbook that
    failed a call, half changed maybe, is not held."""
    book: Workbook | None = None
    answer: tuple
    while True:
        try:
            data, method, args, kwargs, write = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if data is not None:
                book = None  # (its memory back before the next one is opened)
                book = open_workbook(data, limit)
            if book is None:
                raise RuntimeError("no workbook is held")
            result = _plain(getattr(book, method)(*args, **kwargs))
            answer = ("ok", result, book.to_bytes() if write else None)
        except WorkbookError as exc:
            book, answer = None, ("refused", exc.status, exc.code, str(exc), exc.inner)
        except MemoryError:
            book, answer = None, ("failed", "memory")
        except Exception as exc:
            book, answer = None, ("failed", f"{type(exc).__name__}: {exc}"[:500])
        conn.send(answer)


def _plain(result: Any) -> Any:
    """A method's answer as JSON-ready values (a worksheet as its JSON): the worker need not load this package's
    classes, nor openpyxl and IronCalc with them, to read it."""
    if isinstance(result, list):
        return [_plain(item) for item in result]
    return result.to_json() if isinstance(result, Sheet) else result


if __name__ == "__main__":
    fd, workbook_limit, memory = (int(arg) for arg in sys.argv[1:4])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    serve(Connection(fd), workbook_limit)
