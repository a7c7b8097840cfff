"""The board on which a server's workers post how many connections each serves (wopihost.workerboard)."""

from __future__ import annotations

import os
import time

from wopihost.workerboard import SLOTS, STALE, Board


def test_a_worker_reads_the_fewest_connections_of_the_others_never_its_own():
    board, now = Board(), time.monotonic()
    assert board.fewest_elsewhere(1, now) is None  # alone
    board.post(1, 0, now)
    board.post(2, 5, now)
    board.post(3, 3, now)
    assert board.fewest_elsewhere(1, now) == 3
    assert board.fewest_elsewhere(3, now) == 0
    assert board.fewest_elsewhere(2, now) == 0


def test_a_worker_that_left_or_stopped_posting_is_left_out():
    board, now = Board(), time.monotonic()
    board.post(1, 4, now)
    board.post(2, 1, now - STALE)  # silent for STALE seconds: gone without clearing its slot (killed)
    board.post(3, 2, now)
    assert board.fewest_elsewhere(1, now) == 2
    board.clear(3)
    assert board.fewest_elsewhere(1, now) is None


def test_a_worker_spawned_a_board_s_width_later_takes_the_same_slot():
    board, now = Board(), time.monotonic()
    board.post(1, 4, now)
    board.post(1 + SLOTS, 2, now)
    assert board.fewest_elsewhere(5, now) == 2


def test_workers_forked_from_one_master_read_one_another():
    board = Board()  # made before the fork, as gunicorn's master makes it
    child = os.fork()
    if child == 0:  # pragma: no cover  # the forked worker
        board.post(7, 3, time.monotonic())
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    assert board.fewest_elsewhere(1, time.monotonic()) == 3
