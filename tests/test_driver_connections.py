"""The driver connection each thread keeps for the request's read and the lock transitions (Database.first,
Database.transact): replaced when the database server dropped it, its own per thread, all closed by
dispose(); a transaction on it keeps all of its changes or none, however it ends."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading

import pytest
import sqlalchemy as sa

from wopihost.db import Database
from wopihost.faults import Unavailable
from wopihost.models import User
from wopihost.prepared import Prepared, Statements
from wopihost.services import Services

from .helpers import DatabaseProxy

BACKEND = Prepared(sa.select(sa.func.pg_backend_pid().label("pid")))
ONE = Prepared(sa.select(sa.literal_column("1").label("one")))
_USERS = User.__table__
ADD_USER = Prepared(
    sa.insert(_USERS).values(
        id=sa.bindparam("id"), display_name=sa.literal_column("''"), created_at=sa.func.current_timestamp()
    )
)
USERS = Prepared(sa.select(_USERS.c.id).order_by(_USERS.c.id))


@pytest.fixture
def db(database):
    db = Database(database)
    yield db
    db.dispose()


def terminate(db: Database, pid: int) -> None:
    """Drop a connection from the server's side, as a restart or an idle timeout would."""
    admin = sa.create_engine(db.url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})  # once it is gone
    finally:
        admin.dispose()


def terminate_backend(db: Database) -> int:
    """Drop this thread's connection from the server's side; its backend's pid."""
    pid = db.first(BACKEND, {})[0]
    terminate(db, pid)
    return pid


def test_transactions_of_a_worker_are_not_capped_by_a_pool_of_its_own(db):
    """Every db.read() and db.write() took a connection from SQLAlchemy's default pool, of 15: a 16th transaction
    at once in a worker (more threads, or requests waiting on one file's row lock) waited 30 s for one and was a
    503, whatever the worker's threads. A transaction waits only for the database now."""
    if db.is_sqlite:
        pytest.skip("SQLite's connections are files, not a server's sessions")
    together = threading.Barrier(20, timeout=10)
    failures: list[BaseException] = []

    def hold_a_transaction() -> None:
        try:
            with db.read() as s:
                s.execute(sa.text("SELECT 1"))
                together.wait()  # every one of them in a transaction at once
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hold_a_transaction) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []


def test_a_read_on_a_dropped_connection_is_retried_on_a_new_one(db, caplog):
    if db.is_sqlite:
        pytest.skip("SQLite has no server to drop a connection")
    dropped = terminate_backend(db)
    assert db.first(BACKEND, {})[0] != dropped
    assert "Traceback" not in caplog.text  # a dropped connection is let go without a failed rollback logged


def test_a_transaction_on_a_dropped_connection_begins_on_a_new_one(db):
    if db.is_sqlite:
        pytest.skip("SQLite has no server to drop a connection")
    dropped = terminate_backend(db)
    assert db.transact(lambda t: t.first(BACKEND, {})[0]) != dropped


def test_a_transaction_dropped_before_its_first_read_was_answered_runs_again_on_a_new_one(db, caplog):
    """On PostgreSQL a transaction's statements are pipelined (Database._pipelined): a connection dropped after
    the work sent a change shows only at its first read. The change was never committed and the work decided
    nothing yet: it runs again on a new connection, and what it does is done once."""
    if db.is_sqlite:
        pytest.skip("SQLite has no server to drop a connection")
    pid, runs = db.first(BACKEND, {})[0], []

    def work(t: Statements) -> int:
        runs.append(1)
        t.run(ADD_USER, {"id": f"a{len(runs)}"})
        if len(runs) == 1:
            terminate(db, pid)
        return t.first(BACKEND, {})[0]

    assert db.transact(work) != pid
    assert len(runs) == 2
    assert users(db) == ["a2"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # handled: nothing for an admin


def test_a_transaction_on_an_unreachable_postgresql_is_503_and_never_runs_its_work():
    """No connection to begin on (nothing listens on port 1): the work never runs, and the request is a 503."""
    db, runs = Database("postgresql+psycopg://postgres@127.0.0.1:1/test"), []
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            db.transact(lambda t: runs.append(t))
        assert runs == []
    finally:
        db.dispose()


def test_a_postgresql_connection_gives_up_on_a_server_gone_silent(db):
    """With only a connect timeout, a server gone without a word (a partition, a host that died, a failover
    moving its address) held each request on an open connection for as long as the kernel retried, some 15
    minutes, and its thread with it: the connection's socket now probes an idle server and gives up on one that
    acknowledges nothing for 30 s (the request is then a 503, as for a connection the server drops)."""
    if db.is_sqlite:
        pytest.skip("SQLite has no server")
    pooled = db.engine.raw_connection()
    try:
        sock = socket.socket(fileno=os.dup(pooled.dbapi_connection.pgconn.socket))
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
    finally:
        pooled.close()
    own = Database(db.url + ("&" if "?" in db.url else "?") + "keepalives_idle=60")  # an admin's own, kept
    try:
        pooled = own.engine.raw_connection()
        with socket.socket(fileno=os.dup(pooled.dbapi_connection.pgconn.socket)) as sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        pooled.close()
    finally:
        own.dispose()


def test_a_connection_dropped_in_a_transaction_is_503_and_the_next_one_works(db):
    if db.is_sqlite:
        pytest.skip("SQLite has no server to drop a connection")

    def dropped_midway(t: Statements) -> None:
        terminate(db, t.first(BACKEND, {})[0])
        t.first(ONE, {})

    with pytest.raises(Unavailable):
        db.transact(dropped_midway)
    assert db.transact(lambda t: t.first(ONE, {})) == (1,)


def test_a_read_whose_work_raises_closes_its_cursor_and_raises_what_the_work_raised(db):
    """Database.query: a 404 or 409 decided on what was read leaves no cursor open (on SQLite, an open one
    would keep its read transaction, and so the WAL, from moving on), and the connection serves the next."""
    cursors = []

    def work(t: Statements) -> None:
        assert t.first(ONE, {}) == (1,)
        cursors.append(t._cursor)
        raise LookupError("a 404, say")

    with pytest.raises(LookupError):
        db.query(work)
    with pytest.raises(db.engine.dialect.loaded_dbapi.Error):  # closed
        cursors[0].execute("SELECT 1")
    assert db.first(ONE, {}) == (1,)


def users(db: Database) -> list[str]:
    return db.transact(lambda t: [row[0] for row in t.all(USERS, {})])


def test_a_transaction_keeps_every_change_of_its_work(db):
    def work(t: Statements) -> None:
        t.run(ADD_USER, {"id": "a"})
        assert t.all(USERS, {}) == [("a",)]  # a read sees what the work sent before it
        t.run(ADD_USER, {"id": "b"})

    db.transact(work)
    assert users(db) == ["a", "b"]


def test_a_statement_failing_after_the_last_read_fails_the_transaction_and_keeps_nothing(db):
    def work(t: Statements) -> None:
        t.first(ONE, {})
        t.run(ADD_USER, {"id": "a"})
        t.run(ADD_USER, {"id": "a"})  # the same key

    with pytest.raises(sa.exc.IntegrityError):
        db.transact(work)
    assert users(db) == []


def test_a_statement_failing_before_the_first_read_fails_the_transaction_and_keeps_nothing(db):
    def work(t: Statements) -> None:
        t.run(ADD_USER, {"id": "a"})
        t.run(ADD_USER, {"id": "a"})
        t.first(ONE, {})

    with pytest.raises(sa.exc.IntegrityError):
        db.transact(work)
    assert users(db) == []


def test_an_exception_in_the_work_rolls_the_transaction_back(db):
    def work(t: Statements) -> None:
        t.run(ADD_USER, {"id": "a"})
        assert t.first(ONE, {}) == (1,)
        t.run(ADD_USER, {"id": "b"})
        raise LookupError("a 409, say")

    with pytest.raises(LookupError):
        db.transact(work)
    assert users(db) == []


class AnswerCounter(DatabaseProxy):
    """Counts the database's answers: each time the database sends something after the client last did, i.e. each
    time the client waited for it."""

    answers = 0

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        last = None
        with client, server:
            while True:
                for source in select.select([client, server], [], [])[0]:
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    if source is server and last is client:
                        self.answers += 1  # counted before the client can see it
                    last = source
                    (server if source is client else client).sendall(data)


def test_a_transaction_on_postgresql_waits_for_the_database_only_where_its_work_reads_and_at_commit(database):
    """Six statements (BEGIN, three changes, a read, COMMIT) in two round trips: the changes before the read
    go out with it, those after it with COMMIT. One at a time, each statement was a round trip."""
    if database.startswith("sqlite"):
        pytest.skip("SQLite has no server to wait for")
    counter = AnswerCounter(database)
    db = Database(counter.url)
    try:
        assert db.first(ONE, {}) == (1,)  # the connection opened and set up
        before = counter.answers

        def work(t: Statements) -> list[tuple]:
            t.run(ADD_USER, {"id": "a"})
            seen = t.all(USERS, {})
            t.run(ADD_USER, {"id": "b"})
            t.run(ADD_USER, {"id": "c"})
            return seen

        assert db.transact(work) == [("a",)]
        assert counter.answers - before == 2
        assert users(db) == ["a", "b", "c"]
    finally:
        db.dispose()
        counter.close()


def test_each_thread_has_its_own_connection_and_dispose_closes_them_all(db):
    connections = []

    def read() -> None:
        assert db.first(ONE, {}) == (1,)
        connections.append(db._connection())

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in connections}) == 3
    db.dispose()
    for connection in connections:
        with pytest.raises(Exception, match="closed"):
            connection.cursor().execute("SELECT 1")


def test_the_database_is_used_on_new_connections_after_dispose(db):
    """dispose() closes connections, not the database: the tests trace connections opened after it, and a
    thread that had a connection before must not go on with the closed one (an AttributeError, a 500)."""
    db.transact(lambda statements: statements.run(ADD_USER, {"id": "before"}))
    assert db.first(ONE, {}) == (1,)
    before = db._connection()
    db.dispose()
    assert db.first(ONE, {}) == (1,)
    db.transact(lambda statements: statements.run(ADD_USER, {"id": "after"}))
    assert db.query(lambda statements: statements.all(USERS, {})) == [("after",), ("before",)]
    assert db._connection() is not before


def connections_of_threads_that_end(db: Database, count: int) -> list:
    connections = []

    def read() -> None:
        assert db.first(ONE, {}) == (1,)
        connections.append(db._connection())

    for _ in range(count):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    return connections


def test_the_connection_of_a_thread_that_ended_is_closed_when_another_opens(db):
    ended = connections_of_threads_that_end(db, 3)
    assert db.first(ONE, {}) == (1,)  # this thread's first: opens one
    assert len(db._held) == 1
    for connection in ended:
        with pytest.raises(Exception, match="closed"):
            connection.cursor().execute("SELECT 1")


def test_a_connection_another_process_opened_is_never_closed_here(db):
    """After a fork the parent's threads are dead in the child, and their connections are the parent's: closing
    one would end the parent's session (PostgreSQL) or checkpoint its WAL (SQLite)."""
    (inherited,) = connections_of_threads_that_end(db, 1)
    with db._held_lock:
        for thread, (pid, pooled) in list(db._held.items()):
            db._held[thread] = (pid - 1, pooled)  # as the child sees it: opened by its parent
    assert db.first(ONE, {}) == (1,)
    db.dispose()
    assert inherited.cursor().execute("SELECT 1").fetchone()[0] == 1  # still open
    inherited.close()


CACHE_SIZE = Prepared(sa.text("PRAGMA cache_size"))


@pytest.mark.parametrize("configured, kib", [(None, 512), (2 << 20, 2048), (64 << 10, 64)])
def test_every_sqlite_connection_caches_as_much_as_configured(database, configured, kib):
    """The cache bounds each connection's memory, whichever way the connection is used: SQLite's own 2 MiB,
    per connection of each of a worker's threads, is what it replaces (config.SQLITE_CACHE_SIZE)."""
    if not database.startswith("sqlite"):
        pytest.skip("a SQLite setting")
    db = Database(database) if configured is None else Database(database, sqlite_cache_size=configured)
    try:
        assert db.first(CACHE_SIZE, {}) == (-kib,)  # the thread's own connection (requests' reads, transitions)
        assert db.transact(lambda t: t.first(CACHE_SIZE, {})) == (-kib,)
        with db.read() as session:  # the ORM's pooled connections
            assert session.execute(sa.text("PRAGMA cache_size")).one() == (-kib,)
    finally:
        db.dispose()


def test_the_server_caches_what_wopihost_sqlite_cache_size_says(settings, clock):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("a SQLite setting")
    services = Services.create(settings.with_changes(sqlite_cache_size=1 << 20), clock)
    try:
        assert services.db.first(CACHE_SIZE, {}) == (-1024,)
    finally:
        services.db.dispose()
