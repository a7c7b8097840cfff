"""How many connections each of a server's workers is serving, posted where all of them can read it.

gunicorn's workers all wait on one listening socket, and whichever the kernel wakes first accepts: often one
that is already busy, since it is awake. Left to that, 8 clients connecting at once split 6 and 2 between
two workers as often as 4 and 4, and the busier worker's requests wait for its threads while the other
worker's threads idle. With this board a worker can see whether another one serves fewer connections, and
leave a waiting client to it (`Worker.accept`).

The board is anonymous shared memory, made when gunicorn's master imports the worker module and inherited
by every worker it forks. Each worker writes only its own slot (its count and when it last wrote), so no
lock is needed: a count read while it changes is a moment stale, which costs no more than a client going to
the busier worker, as it did without the board. A worker that dies without clearing its slot is left out
once it has not written for `STALE` seconds.
"""

from __future__ import annotations

import mmap

SLOTS = 64  # worker i writes slot age % SLOTS: two live workers 64 spawns apart share one, and see less
STALE = 3.0  # seconds: every worker writes at least once a second (its event loop's longest wait)


class Board:
    def __init__(self, slots: int = SLOTS) -> None:
        self._slots = slots
        shared = mmap.mmap(-1, slots * 16)  # MAP_SHARED | MAP_ANONYMOUS: one copy for the master and its forks
        self._seen = memoryview(shared).cast("d")  # [2 * slot]: time.monotonic() of the last post, 0: none
        self._count = memoryview(shared).cast("q")  # [2 * slot + 1]: connections being served

    def post(self, worker: int, count: int, now: float) -> None:
        slot = 2 * (worker % self._slots)
        self._count[slot + 1] = count
        self._seen[slot] = now

    def clear(self, worker: int) -> None:
        self._seen[2 * (worker % self._slots)] = 0.0

    def fewest_elsewhere(self, worker: int, now: float) -> int | None:
        """The fewest connections another live worker serves; None when no other worker is posting."""
        mine = 2 * (worker % self._slots)
        counts = [
            self._count[slot + 1]
            for slot in range(0, 2 * self._slots, 2)
            if slot != mine and now - self._seen[slot] < STALE
        ]
        return min(counts, default=None)
