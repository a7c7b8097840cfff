"""Each thread's buffer for copying a body into storage (a piece of a local blob, a part of an S3 object): reused
from one upload to the next, and given back to the system while the worker idles.

A buffer allocated for every upload is zeroed every time, and once freed it stays in the thread's malloc arena
anyway: glibc serves blocks of a megabyte from the arena as soon as one such block has been freed, and keeps an
arena's free top while it is under 2 MiB, which its malloc_trim does not touch. Every thread that had taken an
upload held some 1.4 MiB for good. Here a thread maps one buffer of its own (anonymous memory, which the kernel
zero-fills as it is first touched), copies every upload through it, and the worker drops its pages when its
threads have been idle a moment (`release_idle`, from worker.py): the next upload touches fresh pages again.
"""

from __future__ import annotations

import mmap
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager


class _Buffer:
    def __init__(self, size: int):
        self.map = _private(size)
        self.in_use = threading.Lock()  # held while a copy runs through it, or while its pages are dropped


_own = threading.local()
_every: weakref.WeakSet[_Buffer] = weakref.WeakSet()  # a thread's goes (and is unmapped) with the thread
_every_lock = threading.Lock()


@contextmanager
def scratch(size: int) -> Iterator[memoryview]:
    """`size` bytes of this thread's buffer for the block (it grows to the largest size asked: only the pages
    touched take memory); a fresh buffer if the thread's is in use (a copy within a copy, or `release_idle`
    dropping its pages at that moment). It holds what the thread's last copy left there: read only what this
    copy has written."""
    buffer = getattr(_own, "buffer", None)
    if buffer is None or len(buffer.map) < size:
        buffer = _own.buffer = _Buffer(size)
        with _every_lock:
            _every.add(buffer)
    if not buffer.in_use.acquire(blocking=False):
        yield memoryview(_private(size))[:size]  # unmapped when the last view of it goes
        return
    try:
        yield memoryview(buffer.map)[:size]
    finally:
        buffer.in_use.release()


def release_idle() -> None:
    """Give the pages of every buffer not in use back to the system; their contents read as zeros after."""
    with _every_lock:
        buffers = list(_every)
    for buffer in buffers:
        if buffer.in_use.acquire(blocking=False):
            try:
                buffer.map.madvise(mmap.MADV_DONTNEED)
            finally:
                buffer.in_use.release()


def _private(size: int) -> mmap.mmap:
    # private: its dropped pages are freed (a shared mapping's would stay in memory), and a fork copies it
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # mmap maps no empty area
