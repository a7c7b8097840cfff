"""Engine, transactions and migrations.

Every state change runs in `Database.write()`: on SQLite that transaction starts
with BEGIN IMMEDIATE (it holds the write lock from the first statement, so two
workers never both read-then-write and one of them fails with "database is
locked"); on PostgreSQL the domain code takes row locks with SELECT ... FOR UPDATE.

SQLite writers queue before BEGIN IMMEDIATE (writers.WriterQueue): left to SQLite, a writer that
finds the database locked sleeps in its busy handler, up to 100 ms at a time, however soon
the lock frees; queued, it starts as soon as the writer before it commits. The lock transitions that
come while one commits are committed together, one fsync for the group (`transact`, groupcommit.py).

The statements every request runs (its first read, the lock transitions, PutFile's change) skip SQLAlchemy's
execution and the ORM: prepared once (prepared.py), run on a driver connection each thread keeps (`query`,
`transact`). On PostgreSQL a transaction's statements are pipelined: the thread waits for the database only
where it reads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.orm import Session, sessionmaker

from .config import SQLITE_CACHE_SIZE
from .faults import InsufficientStorage, Unavailable, at_commit, outcome_unknown
from .groupcommit import GroupCommit, Job
from .prepared import Prepared, Statements
from .writers import BUSY, WriterQueue

T = TypeVar("T")


def make_engine(url: str, busy_timeout: float = 30.0, sqlite_cache_size: int = SQLITE_CACHE_SIZE) -> sa.Engine:
    """An engine whose writers wait at most `busy_timeout` seconds for another writer's locks.

    SQL parameters never appear in error messages: they can hold upload session tokens.

    Each SQLite connection caches up to `sqlite_cache_size` bytes of the database's pages (see config.SQLITE_CACHE_SIZE).
    """
    if not url.startswith("sqlite"):
        # No cap on the pool's connections (SQLAlchemy's default is 15, each past it waiting 30 s, then a 503):
        # a worker's transactions are bounded by its threads, and each should wait only for the database.
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            max_overflow=-1,
            hide_parameters=True,
            # the URL's own settings (?keepalives_idle=...) win over these
            connect_args={key: value for key, value in _PG_CONNECT.items() if key not in sa.make_url(url).query},
        )

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_connection, _record):
            # A row lock held past this is a stuck writer: fail (503) instead of queueing forever.
            dbapi_connection.execute(f"SET lock_timeout = {int(busy_timeout * 1000)}")
            dbapi_connection.commit()

        return engine

    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout}, hide_parameters=True)
    cache_kib = sqlite_cache_size // 1024  # a negative cache_size is in KiB

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from pysqlite so that BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", f"cache_size=-{cache_kib}"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = "IMMEDIATE" if conn.get_execution_options().get("wopihost_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


CONNECT_TIMEOUT = 10  # seconds: an unreachable PostgreSQL is a 503 soon, not a hung request
# A server gone without a word (a partition, a host that died, a failover moving its address) held each request
# on an open connection for as long as the kernel retried, some 15 minutes, and its thread with it. A connection
# probes a server idle for 30 s, and gives up after 30 s with nothing acknowledged: the request is a 503.
_PG_CONNECT = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}


class Database:
    def __init__(self, url: str, busy_timeout: float = 30.0, sqlite_cache_size: int = SQLITE_CACHE_SIZE):
        self.url = url
        self.engine = make_engine(url, busy_timeout, sqlite_cache_size)
        # A read that takes several statements (an item, then its folder, then the path above it) must see one
        # state of the database: SQLite's read transaction is one snapshot; PostgreSQL's READ COMMITTED would let
        # a change that commits meanwhile show half-way (a file whose folder is gone), so its reads are
        # REPEATABLE READ, which costs nothing more in PostgreSQL (the snapshot is taken at the first statement).
        # A read never writes (`read`): on PostgreSQL its transaction is READ ONLY too, so that code which
        # writes in one fails at once rather than seldom.
        readers = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        )
        self._reader = sessionmaker(readers, autoflush=False, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(wopihost_write=True), expire_on_commit=False)
        path = self.engine.url.database if self.is_sqlite else None
        self._writers = WriterQueue(path, busy_timeout) if path and path != ":memory:" else None
        self._group = (
            GroupCommit(self._commit_together, busy_timeout, lambda: Unavailable(BUSY))
            if self._writers is not None
            else None
        )
        # Each thread keeps one driver connection, in autocommit, for `query` (every request's read) and
        # `transact` (the lock transitions).
        self._own = threading.local()
        self._held_lock = threading.Lock()
        # Every thread's (pid, connection), by thread: to close them all in dispose(), and an ended thread's.
        # Never one opened by another process (inherited across fork): closing it would end the parent's session.
        self._held: dict = {}

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One transaction that only reads, and never writes: it ends in a rollback, and nothing is flushed
        before. An object merged into it (a write's answer describes its item so) or changed in it is not
        written back over what other requests have committed since. The objects read keep their state: closing
        the session detaches them before it rolls back."""
        with FAULTS, self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        turn = self._writers.turn() if self._writers is not None else nullcontext()
        with FAULTS, turn, self._writer() as session:
            committing = False
            try:
                with session.begin():
                    session.info["write"] = True  # repository.py takes row locks only in write transactions
                    yield session
                    session.flush()  # the block's own statements: what fails of them fails before the COMMIT
                    committing = True
            except BaseException as exc:
                if committing and (self.is_sqlite or getattr(exc, "connection_invalidated", False)):
                    at_commit(exc)
                raise

    def first(self, query: Prepared, params: dict) -> tuple | None:
        """The first row of one SELECT (see `query`)."""
        return self.query(lambda statements: statements.first(query, params))

    def query(self, work: Callable[[Statements], T]) -> T:
        """`work(statements)` on this thread's connection, in autocommit: each statement reads one consistent
        state, on SQLite and under READ COMMITTED alike, with no BEGIN, no ROLLBACK and no pool checkout
        around it. `work` only reads: on a connection found dropped, it runs again on a new one."""
        dialect = self.engine.dialect

        def attempt(cursor) -> tuple[T | None, Exception | None]:
            try:
                return work(Statements(cursor, dialect, writing=False)), None
            except dialect.loaded_dbapi.Error:
                raise  # for _on_live_connection: a dropped connection is opened anew
            except Exception as exc:  # the work's own (a 404): raised once the cursor is closed
                return None, exc

        with FAULTS:
            cursor, (result, failure) = self._on_live_connection(attempt)
            cursor.close()  # on SQLite, ends the last statement's read transaction
        if failure is not None:
            raise failure
        return result  # type: ignore[return-value]  # the work returned it: no failure

    def transact(self, work: Callable[[Statements], T]) -> T:
        """`work(statements)` in a write transaction of prepared statements straight on the driver: for the
        hottest writers (the lock transitions, PutFile's change), whose statements cost less than an ORM
        session. Same guarantees as `write`: SQLite writers queue and BEGIN IMMEDIATE; committed if `work`
        returns, rolled back if it raises, which `transact` then raises. On SQLite, the work of this process's
        threads that comes while another transaction commits is committed together (groupcommit.py);
        PostgreSQL commits in parallel, and a group there would hold row locks that other groups wait for, so
        each runs on its own, pipelined (`_pipelined`). `work` may run twice: again on a new connection if the
        one it began on turns out dropped before its first read is answered."""
        if self._group is not None:
            return self._group.run(work)
        if not self.is_sqlite:
            return self._pipelined(work)
        job: Job[T] = Job(work)  # an in-memory database, which has no queue to group by
        self._commit_together([job])
        return job.outcome()

    def _pipelined(self, work: Callable[[Statements], T]) -> T:
        """PostgreSQL's `transact`, in psycopg's pipeline mode: statements go out without waiting for one
        another's answers, and the thread waits only where the work reads. A lock transition is two round trips
        to the database (BEGIN, the row lock and the read of the state; then the change and COMMIT) where it
        was five, each a wait for the thread and a wake-up for the database's process.

        A connection the server dropped (a restart, an idle timeout) shows only at the first answer awaited.
        If that is the work's first read, nothing was committed (COMMIT was not sent) and the work decided
        nothing on what it read: it runs again on a new connection, once."""
        dialect = self.engine.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        with FAULTS:
            for attempt in (1, 2):
                connection = cursor = quiet = statements = None
                committing = False
                try:
                    connection = self._connection()
                    cursor, quiet = connection.cursor(), connection.cursor()
                    statements = Statements(cursor, dialect, writing=True, quiet=quiet)
                    pipeline = connection.pipeline()
                    pipeline.__enter__()
                    try:
                        quiet.execute("BEGIN")
                        result = work(statements)
                        committing = True
                        quiet.execute("COMMIT")
                    except BaseException:
                        # What the block raised is the failure; ending the pipeline then fails too if the
                        # connection is gone, which psycopg's `with` would log as a warning.
                        with suppress(dbapi_error):
                            pipeline.__exit__(None, None, None)
                        raise
                    pipeline.__exit__(None, None, None)  # sends what is left (COMMIT) and waits for it
                    return result
                except dbapi_error as exc:
                    unanswered = statements is None or not (committing or statements.answered)
                    disconnected = dialect.is_disconnect(exc, connection, cursor)
                    if attempt == 1 and unanswered and disconnected:
                        self._drop_connection()
                        continue
                    self._abandon(cursor)
                    error = _driver_error(exc, dbapi_error, "transaction")
                    # An error the database answered (a statement's, pipelined before the COMMIT) says that
                    # nothing was committed; a connection lost once the COMMIT was sent says nothing.
                    raise (at_commit(error) if committing and disconnected else error) from exc
                except BaseException:
                    self._abandon(cursor)
                    raise
                finally:
                    for opened in (cursor, quiet):
                        if opened is not None:
                            _close_quietly(opened)
        raise AssertionError("unreachable")

    def _commit_together(self, jobs: Sequence[Job]) -> None:
        """One SQLite transaction for `jobs`, on this thread's connection. With several, each job's work runs
        under a savepoint of its own, so that one that raises is undone alone; a database error fails them all."""
        turn = self._writers.turn() if self._writers is not None else nullcontext()
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with FAULTS, turn:
            cursor, _ = self._on_live_connection(lambda cursor: cursor.execute("BEGIN IMMEDIATE"))
            committing = False
            try:
                statements = Statements(cursor, self.engine.dialect, writing=True)
                if len(jobs) == 1:
                    jobs[0].succeeded(jobs[0].work(statements))  # what it raises rolls the transaction back
                else:
                    for job in jobs:
                        cursor.execute("SAVEPOINT job")
                        try:
                            job.succeeded(job.work(statements))
                        except dbapi_error:
                            raise
                        except Exception as exc:
                            cursor.execute("ROLLBACK TO job")
                            job.failed(exc)
                        cursor.execute("RELEASE job")
                committing = True
                cursor.execute("COMMIT")
            except dbapi_error as exc:
                self._abandon(cursor)
                error = _driver_error(exc, dbapi_error, "transaction")
                raise (at_commit(error) if committing else error) from exc
            except BaseException:
                self._abandon(cursor)
                raise
            finally:
                _close_quietly(cursor)  # its connection may be gone already (dropped by _abandon)

    def _on_live_connection(self, act: Callable[[DBAPICursor], T]) -> tuple[DBAPICursor, T]:
        """A cursor on this thread's connection and what `act(cursor)` returned. A connection the server
        dropped (a restart, an idle timeout) shows only when used: then a new one is opened and `act` runs
        again, once, as nothing was done on the dropped one."""
        dialect = self.engine.dialect
        for attempt in (1, 2):
            connection = cursor = None
            try:
                connection = self._connection()
                cursor = connection.cursor()
                return cursor, act(cursor)
            except dialect.loaded_dbapi.Error as exc:
                if cursor is not None:
                    _close_quietly(cursor)
                disconnected = dialect.is_disconnect(exc, connection, cursor)
                self._drop_connection()
                if not (disconnected and attempt == 1):
                    raise _driver_error(exc, dialect.loaded_dbapi.Error) from exc
        raise AssertionError("unreachable")

    def _abandon(self, cursor) -> None:
        """Roll back; a connection that cannot (or failed before it had a cursor) is dropped, never left
        mid-transaction for the next request."""
        if cursor is None:
            self._drop_connection()
            return
        try:
            cursor.execute("ROLLBACK")
        except Exception:
            self._drop_connection()

    def _connection(self):
        held = getattr(self._own, "held", None)
        if held is not None and held[0] == os.getpid():  # a connection inherited across fork is the parent's
            return held[1].dbapi_connection
        pooled = self.engine.raw_connection()  # opened as the pool opens them (the connect events' settings)
        pooled.detach()  # this thread's from now on; closing it closes the connection
        dbapi_connection = pooled.dbapi_connection
        if not self.is_sqlite:
            dbapi_connection.rollback()
            dbapi_connection.autocommit = True
        self._own.held = held = (os.getpid(), pooled)
        with self._held_lock:
            ended = [thread for thread in self._held if not thread.is_alive()]
            gone = [self._held.pop(thread) for thread in ended]
            self._held[threading.current_thread()] = held
        self._close_own(gone)  # a thread that ended took its thread-local with it, but not its connection
        return dbapi_connection

    def _close_own(self, held: Iterable[tuple[int, Any]]) -> None:
        pid = os.getpid()
        for opened_by, pooled in held:
            if opened_by == pid:
                _close_quietly(pooled)

    def _drop_connection(self) -> None:
        held, self._own.held = getattr(self._own, "held", None), None
        if held is not None and held[0] == os.getpid():
            with self._held_lock:
                self._held.pop(threading.current_thread(), None)
            held[1].invalidate()  # closed without the rollback a broken connection would fail (and log)

    def dispose(self) -> None:
        """Close every connection; the database stays usable, on new ones, as SQLAlchemy's engine does."""
        if self._writers is not None:
            self._writers.close()
        with self._held_lock:
            held, self._held = self._held, {}
            self._own = threading.local()  # no thread may go on with the connection closed below
        self._close_own(held.values())
        self.engine.dispose()


def _driver_error(exc: Exception, dbapi_error: type[Exception], statement: str | None = None) -> sa.exc.StatementError:
    """The driver's `exc` as SQLAlchemy's error (what FAULTS maps to 503 or 507), without the statement's
    parameters: they can hold upload session tokens."""
    return sa.exc.DBAPIError.instance(statement, None, exc, dbapi_error, hide_parameters=True)


def _close_quietly(closeable) -> None:
    try:
        closeable.close()
    except Exception:  # already broken or closed: nothing is left to release
        pass


class _Faults:
    """A database that is full, locked past the busy timeout or unreachable, as the faults the faces
    answer (507, 503); any other database error is a bug and stays what it is. `with FAULTS:` around every
    read and write: a class, not a generator-based context manager, which would cost five calls each time."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> None:
        if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
            raise Unavailable("every database connection is busy; retry") from exc
        if isinstance(exc, sa.exc.DBAPIError) and (fault := _fault(exc)) is not None:
            if outcome_unknown(exc):
                at_commit(fault)
            raise fault from exc


FAULTS = _Faults()


def _fault(exc: sa.exc.DBAPIError) -> Exception | None:
    sqlite_error = getattr(exc.orig, "sqlite_errorname", None)
    if sqlite_error is not None:
        if sqlite_error.startswith("SQLITE_FULL"):
            return InsufficientStorage("the database is full")
        if sqlite_error.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return Unavailable("the database stayed locked by another writer past the busy timeout")
        if sqlite_error.startswith(("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM")):
            return Unavailable(f"the database cannot be written ({sqlite_error})")
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if sqlstate == "53100":  # disk_full
        return InsufficientStorage("the database is full")
    if sqlstate == "55P03":  # lock_not_available: lock_timeout passed
        return Unavailable("the database stayed locked by another writer past the busy timeout")
    if sqlstate == "25006":  # read_only_sql_transaction: a standby, or default_transaction_read_only
        return Unavailable("the database cannot be written (it is read-only)")
    if sqlstate in ("40P01", "40001"):  # deadlock_detected, serialization_failure: the retry succeeds
        return Unavailable("the change met another one in the database; retry")
    if sqlstate[:2] in ("08", "53", "57") or (not sqlstate and isinstance(exc, sa.exc.OperationalError)):
        # connection exceptions, insufficient resources, operator intervention; no SQLSTATE: no server
        return Unavailable("the database is unreachable or overloaded")
    return None


# -- migrations ---------------------------------------------------------------
# Alembic is imported where it is used: a serving worker never needs it, and it weighs several MiB.

# Held (pg_advisory_xact_lock) by the transaction that runs a whole upgrade, so that nodes starting at once
# migrate one after the other. One key for the database, whatever the schema: migrations are rare and short.
MIGRATION_LOCK_KEY = 0x776F7069686F7374  # "wopihost"
# How long a second `db upgrade` waits for the first one: for its SQLite write lock, or its PostgreSQL advisory
# lock (and how long a migration waits for any lock it takes there), whatever lock_timeout the database sets.
MIGRATION_WAIT = 3600.0


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(resources.files("wopihost.migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Apply the migrations up to `revision` in one transaction that holds a database-wide lock (see
    migrations/env.py); returns the revisions applied. A process that finds another migrating waits for it,
    then finds the database at `revision` and applies nothing."""
    from alembic import command

    config = alembic_config(url)
    applied: list[str] = []
    config.attributes["wopihost.applied"] = applied
    command.upgrade(config, revision)
    return applied


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True)
class SchemaState:
    """The database's migration beside the code's."""

    current: str | None  # None: no migration applied (no tables)
    head: str
    known: bool  # whether this code has the database's migration (not: a newer wopihost migrated it)

    @property
    def state(self) -> str:
        if self.current == self.head:
            return "current"
        if self.current is None:
            return "empty"
        return "behind" if self.known else "ahead"

    def problem(self) -> str | None:
        """Why this code cannot use the database, and what to do; None if it can."""
        state = self.state
        if state == "empty":
            return (
                f"the database has no tables (no migration applied; this wopihost needs {self.head}): "
                "run `wopihost db upgrade`"
            )
        if state == "behind":
            return (
                f"the database is at migration {self.current}, this wopihost needs {self.head}: "
                "run `wopihost db upgrade`"
            )
        if state == "ahead":
            return (
                f"the database is at migration {self.current}, which this wopihost (at {self.head}) does not "
                "know: this database was migrated by a newer wopihost; run that version or a newer one"
            )
        return None


class SchemaMismatch(Exception):
    """The database's schema is not the one this code was written for; str() says which and what to do."""


# The newest migration in migrations/versions (tests/test_migrations.py checks it is alembic's head). A server
# that finds its database there, as nearly every start does, never imports alembic: its ~10 MiB would stay in
# gunicorn's master and every worker for the life of the server.
SCHEMA_HEAD = "0015"


def _stored_revision(engine: sa.Engine) -> str | None:
    """The revision alembic recorded, read without alembic; None when there is none or it cannot be read here
    (no table yet: alembic's own reading, which knows every case, then decides)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sa.exc.DBAPIError:
        return None
    return rows[0] if len(rows) == 1 else None


def schema_state(engine: sa.Engine, url: str) -> SchemaState:
    if _stored_revision(engine) == SCHEMA_HEAD:
        return SchemaState(SCHEMA_HEAD, SCHEMA_HEAD, True)
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(url))
    current = current_revision(engine)
    known = current is None or current in {script.revision for script in scripts.walk_revisions()}
    head = scripts.get_current_head()
    assert head is not None  # the package ships its migrations
    return SchemaState(current, head, known)


def require_current_schema(engine: sa.Engine, url: str) -> SchemaState:
    state = schema_state(engine, url)
    problem = state.problem()
    if problem:
        raise SchemaMismatch(problem)
    return state
