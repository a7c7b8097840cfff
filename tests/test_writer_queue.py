"""SQLite writers take turns in a queue (writers.WriterQueue) before BEGIN IMMEDIATE: within a process, across
processes, with the busy timeout still giving 503, and with a dead process's turn given back."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from wopihost.db import Database
from wopihost.faults import Unavailable
from wopihost.models import User
from wopihost.writers import WriterQueue, _Gate

from .helpers import descriptors_under

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # hold until told (or killed)
"""


TRY_FOR_30S = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("got it")
        break
    except BlockingIOError:
        time.sleep(0.01)
"""


@pytest.fixture
def sqlite_db(database):
    if not database.startswith("sqlite"):
        pytest.skip("the writer queue is SQLite's")
    db = Database(database, busy_timeout=0.3)
    yield db
    db.dispose()


def add_user(db: Database, user_id: str) -> None:
    with db.write() as s:
        s.add(User(id=user_id, display_name=user_id, created_at=sa.func.now()))


def users(db: Database) -> set[str]:
    with db.read() as s:
        return set(s.scalars(sa.select(User.id)))


def test_writers_of_many_threads_all_land(sqlite_db):
    errors = []
    patient = Database(sqlite_db.url, busy_timeout=10)  # what is tested is that all land, not how soon

    def write(i: int) -> None:
        try:
            for j in range(10):
                add_user(patient, f"t{i}-{j}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        patient.dispose()
    assert errors == []
    assert len(users(sqlite_db)) == 80


def test_a_writer_of_this_process_holding_its_turn_past_the_timeout_is_503(sqlite_db):
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_db.write():
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(5)
        with pytest.raises(Unavailable, match="busy timeout"):
            add_user(sqlite_db, "late")
    finally:
        release.set()
        thread.join()
    add_user(sqlite_db, "after")
    assert users(sqlite_db) == {"after"}


@pytest.fixture
def other_process(sqlite_db):
    """Another process that holds the writers' turn until told to let go (or killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, sqlite_db._writers.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_writer_waits_for_another_process_and_times_out_with_503(sqlite_db, other_process):
    with pytest.raises(Unavailable, match="busy timeout"):
        add_user(sqlite_db, "blocked")
    assert users(sqlite_db) == set()


def test_a_writer_goes_once_the_other_process_lets_go(sqlite_db, other_process):
    landed = threading.Event()
    slow = Database(sqlite_db.url, busy_timeout=10)
    try:
        thread = threading.Thread(target=lambda: (add_user(slow, "queued"), landed.set()))
        thread.start()
        assert not landed.wait(0.2)  # still waiting for its turn
        other_process.stdin.write("go\n")
        other_process.stdin.flush()
        thread.join(10)
        assert landed.is_set() and users(slow) == {"queued"}
    finally:
        slow.dispose()


def test_a_dead_process_gives_its_turn_back(sqlite_db, other_process):
    other_process.kill()
    other_process.wait()
    add_user(sqlite_db, "after-death")
    assert users(sqlite_db) == {"after-death"}


def test_each_process_has_its_own_turn_file_descriptor(tmp_path):
    queue = WriterQueue(str(tmp_path / "db.sqlite3"), timeout=1)
    with queue.turn():
        pass
    parents = queue._gate
    parents.pid -= 1  # as a forked child sees it: its parent's
    try:
        with queue.turn():
            assert queue._gate is not parents and queue._gate.fd != parents.fd
    finally:
        parents.close()
        queue.close()


def holder(path: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_the_gatekeeper_never_grants_a_turn_it_no_longer_holds(tmp_path):
    """The gatekeeper took the flock for a writer that had given up, and has not yet said so. A writer that
    came then used to go straight in on the same descriptor, and on leaving let go of the flock the gatekeeper
    then granted to the next writer: two processes' writers at once. The schedule is forced by holding the
    gate's state (a reentrant lock) while the gatekeeper comes back from its flock."""
    path = str(tmp_path / "db.sqlite3-writers")
    first, gate, second = holder(path), _Gate(path), None
    try:
        assert not gate.enter(0.2)  # gives up; the gatekeeper goes on waiting for the flock
        with gate._state:
            first.communicate("go\n", timeout=10)
            probe = os.open(path, os.O_RDWR)
            try:
                while True:  # until the gatekeeper has the flock
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(probe, fcntl.LOCK_UN)
                    time.sleep(0.01)
            except BlockingIOError:
                pass
            finally:
                os.close(probe)
            assert gate.enter(1)  # a writer comes: granted by the gatekeeper
            gate.leave()
            second = holder(path)  # another process's writer takes the turn
            assert not gate.enter(1), "granted the turn while another process holds it"
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait()
        gate.close()


def test_writers_files_that_cannot_be_opened_are_503_and_leave_no_descriptor(tmp_path):
    """Beside the database on a file system that refuses them (here a directory in the way of the second file,
    which the first open has to give back)."""
    (tmp_path / "db.sqlite3-writers-waiting").mkdir()
    queue = WriterQueue(str(tmp_path / "db.sqlite3"), timeout=1)
    with pytest.raises(Unavailable, match="cannot be written"):
        with queue.turn():
            pass
    assert descriptors_under(tmp_path) == []
    queue.close()


def test_a_turn_that_comes_after_its_writer_gave_up_is_let_go(sqlite_db, other_process):
    with pytest.raises(Unavailable, match="busy timeout"):
        add_user(sqlite_db, "gave-up")
    other_process.stdin.write("go\n")  # the other process lets go (and ends); our gatekeeper gets the turn
    other_process.stdin.flush()
    other_process.wait(30)
    third = subprocess.run(
        [sys.executable, "-c", TRY_FOR_30S, sqlite_db._writers.path], capture_output=True, text=True, timeout=60
    )
    assert third.stdout.strip() == "got it", "the gatekeeper kept the turn nobody wanted"
    add_user(sqlite_db, "later")  # and this process still takes turns
    assert users(sqlite_db) == {"later"}
