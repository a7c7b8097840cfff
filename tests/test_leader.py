"""One worker of a server sweeps for all of them (wopihost.leader), in real processes forked as gunicorn forks."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from wopihost.gc import Sweeper
from wopihost.leader import Leader


def asks(leader: Leader) -> bool:
    """Whether a process forked now, which asks once and exits, would lead."""
    child = os.fork()
    if child == 0:  # pragma: no cover  # the forked worker
        os._exit(0 if leader.mine() else 1)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


def leading(leader: Leader) -> int:
    """A forked process that has taken the lead and keeps it until it is killed."""
    told_r, told_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  # the forked worker
        os.close(told_r)
        os.write(told_w, b"1" if leader.mine() and leader.mine() else b"0")  # asking again keeps it
        while True:
            time.sleep(60)
    os.close(told_w)
    try:
        assert os.read(told_r, 1) == b"1"
    finally:
        os.close(told_r)
    return child


def test_the_first_worker_to_ask_leads_until_it_ends_then_the_next_to_ask():
    leader = Leader()  # made before the forks, as gunicorn's master makes it
    assert asks(leader)  # free: taken, and released as that process exits
    first = leading(leader)
    try:
        assert not asks(leader)
        assert not asks(leader)
    finally:
        os.kill(first, signal.SIGKILL)  # killed, not stopped: the kernel still releases the lock
        os.waitpid(first, 0)
    second = leading(leader)
    try:
        assert not asks(leader)
    finally:
        os.kill(second, signal.SIGKILL)
        os.waitpid(second, 0)


def test_leaders_of_two_servers_do_not_exclude_each_other():
    one, other = Leader(), Leader()
    holder = leading(one)
    try:
        assert not asks(one)
        assert asks(other)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)


@pytest.mark.parametrize("leads", [False, True])
def test_a_sweeper_sweeps_only_while_its_process_leads(services, leads):
    asked, swept = threading.Semaphore(0), []

    def leading() -> bool:
        asked.release()
        return leads

    sweeper = Sweeper(services, 0.01, swept.append, leading).start()
    try:
        # Counted, not timed: a sweep over S3 and PostgreSQL in a busy CI can take longer than any fixed pause.
        # By the third time it asks, a sweeper that leads has swept and reported twice.
        for _ in range(3):
            assert asked.acquire(timeout=60)
    finally:
        sweeper.stop()
    assert len(swept) >= 2 if leads else swept == []


def test_a_lock_that_cannot_be_taken_for_another_reason_than_a_leader_says_so(caplog):
    """Another process's lock is the normal answer; any other failure would stop every sweep without a word."""
    leader = Leader()
    leader._file.close()
    leader._file = open(os.devnull, "rb")  # an exclusive lock needs a file open for writing: EBADF
    try:
        assert not leader.mine()
        assert "does not sweep" in caplog.text
    finally:
        leader._file.close()


def test_another_processs_lock_is_not_a_warning(caplog):
    leader = Leader()
    child = leading(leader)
    try:
        assert not leader.mine()
        assert "does not sweep" not in caplog.text
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
