"""Where IronCalc runs: a thread of its own with a stack far deeper than its formulas can reach.

IronCalc parses, calculates and prints a formula by recursion in native code, so a formula's depth is the
stack it needs, and running out of it is a SIGSEGV that kills the worker and every request in it. The formulas
this host takes (Excel's limits: workbook.py) reach 6.2 MiB of an 8 MiB thread (gunicorn's threads and the
main thread have 8 MiB): 8,192 characters of `1^1^1...` took 6,336 KiB, of `-`, `%`, `&` or comparisons 5.4 to
6.1 MiB, of `+` 1.9 MiB; nesting to Excel's 64 levels took under 256 KiB, and chains of cells nothing more
(IronCalc does not recurse along references: 300 cells, each 4,000 levels deep over the next, took what one
took), a margin of 1.3. Nested past 64 levels, 8,192 characters reach 15 MiB (`{{{...`). STACK is 40 times
the first, 17 times the second: an IronCalc whose frames grow, or the caller's own, stay far from its end.

A new thread for each call, joined before it returns: the pages a deep formula touched go back when it ends (a
pooled thread would keep its deepest call resident for good), calls run as concurrently as their callers (the
domain bounds how many), and nothing outlives a call. It costs about 0.3 ms of a call that opens or calculates
a workbook. The stack is address space: only what is touched is memory.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .errors import CalculationFailed

STACK = 256 << 20

P = ParamSpec("P")
T = TypeVar("T")
_setting = threading.Lock()  # threading.stack_size is the process's: set, start, put back, one call at a time


class _Deep(threading.Thread):
    pass


def deep() -> bool:
    """Whether this thread is one of ours, where IronCalc may be called."""
    return isinstance(threading.current_thread(), _Deep)


def on_deep_stack(call: Callable[P, T]) -> Callable[P, T]:
    """`call`, run on a thread with a STACK-sized stack; what it returns or raises is the caller's, but for a
    Rust panic in IronCalc: a BaseException, which every handler lets through, so the request would end without
    an answer. It becomes CalculationFailed, a 400: the panic is met by what the file or the request holds (a
    formula, EDATE(1,1e10)), again at every try. A call made there already runs in place."""

    @functools.wraps(call)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if deep():
            return call(*args, **kwargs)
        outcome: list = []

        def body() -> None:
            try:
                outcome.append((True, call(*args, **kwargs)))
            except BaseException as exc:
                outcome.append((False, exc))

        thread = _Deep(target=body, name="wopihost-xlsx", daemon=True)
        with _setting:
            previous = threading.stack_size(STACK)
            try:
                thread.start()
            finally:
                threading.stack_size(previous)
        thread.join()
        returned, value = outcome.pop()
        if returned:
            return value
        try:
            if type(value).__name__ == "PanicException":  # pyo3's, which IronCalc's binding does not export
                raise CalculationFailed(f"the workbook cannot be calculated (IronCalc: {str(value)[:200]})") from value
            raise value
        finally:
            del value  # the exception's traceback holds this frame

    return run
