"""Each thread's upload buffer (wopihost/scratch.py): reused, never shared, and its memory given back on demand."""

from __future__ import annotations

import ctypes
import gc
import mmap
import threading
import weakref

from wopihost.scratch import release_idle, scratch

SIZE = 64 << 10


def _in_thread(work):
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def _resident_pages(view: memoryview) -> int:
    """How many of the pages under `view` are in memory (mincore(2))."""
    start = ctypes.c_char.from_buffer(view)
    pages = (len(view) + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(len(view)), vector) == 0
    del start  # its export of the buffer
    return sum(flag & 1 for flag in vector)


def test_a_thread_copies_every_upload_through_its_one_buffer_and_threads_never_share_one():
    def two_uses():
        with scratch(SIZE) as first:
            first[:5] = b"hello"
            mapping = first.obj
        with scratch(SIZE) as second:
            return mapping, second.obj, bytes(second[:5]), len(second)

    first, second, kept, size = _in_thread(two_uses)
    assert first is second and kept == b"hello" and size == SIZE
    other, _, _, _ = _in_thread(two_uses)
    assert other is not first


def test_the_buffer_grows_to_the_largest_size_asked_and_serves_smaller_ones():
    def uses():
        with scratch(SIZE) as small, scratch(0) as empty:
            assert len(empty) == 0
        with scratch(4 * SIZE) as large:
            assert len(large) == 4 * SIZE
        with scratch(SIZE) as again:
            return small.obj, large.obj, again.obj, len(again)

    small, large, again, size = _in_thread(uses)
    assert large is not small and again is large and size == SIZE


def test_a_copy_within_a_copy_gets_a_buffer_of_its_own():
    with scratch(SIZE) as outer, scratch(SIZE) as inner:
        assert inner.obj is not outer.obj
        outer[:3], inner[:3] = b"out", b"inn"
        assert bytes(outer[:3]) == b"out"
    with scratch(SIZE) as again:
        assert again.obj is outer.obj  # the thread's own, free again


def test_idle_release_gives_back_the_pages_of_buffers_not_in_use_and_leaves_those_in_use():
    with scratch(SIZE) as idle:
        idle[:] = b"\xff" * SIZE
    in_use, release = threading.Event(), threading.Event()
    busy_map = []

    def copying():
        with scratch(SIZE) as busy:
            busy[:] = b"\xee" * SIZE
            busy_map.append(busy)
            in_use.set()
            release.wait(10)

    thread = threading.Thread(target=copying)
    thread.start()
    try:
        assert in_use.wait(10)
        assert _resident_pages(idle) == SIZE // mmap.PAGESIZE
        release_idle()
        assert _resident_pages(idle) == 0
        assert bytes(idle) == bytes(SIZE)  # dropped pages read as zeros
        assert _resident_pages(busy_map[0]) == SIZE // mmap.PAGESIZE
        assert bytes(busy_map[0]) == b"\xee" * SIZE  # a copy running through it is left alone
    finally:
        release.set()
        thread.join()


def test_a_threads_buffer_is_unmapped_when_the_thread_ends():
    def use():
        with scratch(SIZE) as view:
            return weakref.ref(view.obj)

    gone = _in_thread(use)
    gc.collect()
    assert gone() is None
