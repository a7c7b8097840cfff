"""Group commit (wopihost/groupcommit.py) on a real SQLite file with real threads: the lock transitions that
come while another commits are committed together, and each thread still gets its own outcome, only once its
change is on disk."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from wopihost.db import Database
from wopihost.faults import Unavailable
from wopihost.models import Lock, User
from wopihost.prepared import Prepared, Statements

_USERS = User.__table__
ADD_USER = Prepared(
    sa.insert(_USERS).values(
        id=sa.bindparam("id"), display_name=sa.literal_column("''"), created_at=sa.func.current_timestamp()
    )
)
# A lock on a file that does not exist, its foreign key checked only at the commit: a commit that fails
DEFER_FOREIGN_KEYS = Prepared(sa.text("PRAGMA defer_foreign_keys = ON"))
ORPHAN_LOCK = Prepared(
    sa.insert(Lock.__table__).values(
        file_id=sa.literal_column("'no-such-file'"),
        lock_id=sa.literal_column("'x'"),
        expires_at=sa.func.current_timestamp(),
    )
)


def sqlite_database(url: str, busy_timeout: float = 30.0):
    db = Database(url, busy_timeout)
    if not db.is_sqlite:
        db.dispose()
        pytest.skip("PostgreSQL commits in parallel: each transaction on its own")
    return db


@pytest.fixture
def db(database):
    db = sqlite_database(database)
    yield db
    db.dispose()


@pytest.fixture
def impatient_db(database):
    db = sqlite_database(database, busy_timeout=0.3)
    yield db
    db.dispose()


def committed_users(db: Database) -> list[str]:
    """What another connection sees: only what has been committed."""
    with sqlite3.connect(db.engine.url.database) as other:
        return [row[0] for row in other.execute("SELECT id FROM users ORDER BY id")]


class Group:
    """A transaction held open by its work while other threads' work queues behind it."""

    def __init__(self, db: Database):
        self.db, self.started, self.release = db, threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []
        self.outcomes: dict[str, object] = {}
        self.ran_on: dict[str, int] = {}
        self.seen_after: dict[str, list[str]] = {}

    def __enter__(self) -> Group:
        def hold(t: Statements) -> str:
            t.run(ADD_USER, {"id": "holder"})
            self.started.set()
            self.release.wait(10)
            return "holder"

        self._start("holder", hold)
        assert self.started.wait(10)
        return self

    def queue(self, name: str, work: Callable[[Statements], object]) -> None:
        """`work` from a thread of its own, queued behind the held transaction before this returns."""
        before = len(self.db._group._queued)

        def recorded(t: Statements) -> object:
            self.ran_on[name] = threading.get_ident()
            return work(t)

        self._start(name, recorded)
        deadline = time.monotonic() + 10
        while len(self.db._group._queued) == before:
            assert time.monotonic() < deadline, f"{name} did not queue"
            time.sleep(0.001)

    def _start(self, name: str, work: Callable[[Statements], object]) -> None:
        def run() -> None:
            try:
                self.outcomes[name] = self.db.transact(work)
            except Exception as exc:
                self.outcomes[name] = exc
            self.seen_after[name] = committed_users(self.db)

        thread = threading.Thread(target=run, name=name)
        self.threads.append(thread)
        thread.start()

    def __exit__(self, *exc) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def adds(user_id: str, then: Callable[[Statements], object] | None = None) -> Callable[[Statements], object]:
    def work(t: Statements) -> object:
        t.run(ADD_USER, {"id": user_id})
        return then(t) if then is not None else user_id

    return work


def test_work_that_comes_while_a_transaction_commits_is_committed_together_each_thread_its_own_result(db):
    with Group(db) as group:
        for name in ("a", "b", "c"):
            group.queue(name, adds(name))
    assert group.outcomes == {"holder": "holder", "a": "a", "b": "b", "c": "c"}
    # one group, led by the first to queue: the others' work ran on its thread
    assert {group.ran_on[name] for name in "abc"} == {group.ran_on["a"]}
    assert committed_users(db) == ["a", "b", "c", "holder"]
    for name in "abc":  # no thread returned before the commit that holds its change
        assert name in group.seen_after[name]


def test_work_that_raises_is_undone_alone_and_the_rest_of_its_group_commits(db):
    def conflict(t: Statements) -> object:
        raise LookupError("a 409, say")

    with Group(db) as group:
        group.queue("a", adds("a"))
        group.queue("b", adds("b", then=conflict))
        group.queue("c", adds("c"))
    assert group.outcomes["a"] == "a" and group.outcomes["c"] == "c"
    assert isinstance(group.outcomes["b"], LookupError)
    assert committed_users(db) == ["a", "c", "holder"]


def test_a_group_whose_commit_fails_fails_every_job_in_it_and_keeps_none_of_their_changes(db):
    def orphan(t: Statements) -> object:
        t.run(DEFER_FOREIGN_KEYS, {})
        return t.run(ORPHAN_LOCK, {})

    with Group(db) as group:
        group.queue("a", adds("a"))
        group.queue("b", adds("b", then=orphan))
        group.queue("c", adds("c"))
    assert group.outcomes["holder"] == "holder"
    for name in "abc":
        assert isinstance(group.outcomes[name], sa.exc.IntegrityError)
    assert committed_users(db) == ["holder"]
    assert db.transact(adds("d")) == "d"  # the next group is not affected
    assert committed_users(db) == ["d", "holder"]


def test_a_database_error_in_one_job_fails_its_whole_group(db):
    with Group(db) as group:
        group.queue("a", adds("a"))
        group.queue("b", adds("holder"))  # taken: the statement fails, and with it the transaction
        group.queue("c", adds("c"))
    for name in "abc":
        assert isinstance(group.outcomes[name], sa.exc.IntegrityError)
    assert committed_users(db) == ["holder"]


def test_a_thread_alone_commits_at_once_on_its_own_thread(db):
    ran_on = []

    def work(t: Statements) -> str:
        ran_on.append(threading.get_ident())
        return adds("a")(t)

    assert db.transact(work) == "a"
    assert ran_on == [threading.get_ident()]
    assert committed_users(db) == ["a"]


def test_work_still_queued_behind_a_stuck_writer_gives_up_after_the_busy_timeout_and_never_runs(impatient_db):
    ran = []

    def work(t: Statements) -> str:
        ran.append("a")
        return adds("a")(t)

    with Group(impatient_db) as group:
        group.queue("a", work)
        group.threads[-1].join(60)  # gives up while the holder still holds its transaction open
        assert isinstance(group.outcomes["a"], Unavailable)
        assert "past the busy timeout" in str(group.outcomes["a"])
    assert ran == []
    assert group.outcomes["holder"] == "holder"
    assert committed_users(impatient_db) == ["holder"]
    assert impatient_db.transact(adds("b")) == "b"  # the next writer is not affected
    deadline = time.monotonic() + 30
    while impatient_db._group._watchdog_pid:  # the thread that gave it up ends once nothing is queued
        assert time.monotonic() < deadline
        time.sleep(0.01)
