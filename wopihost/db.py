"""Engine, transactions and migrations.

Every state change runs in `Database.write()`: on SQLite that transaction starts
with BEGIN IMMEDIATE (it holds the write lock from the first statement, so two
workers never both read-then-write and one of them fails with "database is
locked"); on PostgreSQL the domain code takes row locks with SELECT ... FOR UPDATE.

SQLite writers queue before BEGIN IMMEDIATE (WriterQueue): left to SQLite, a writer that
finds the database locked sleeps in its busy handler, up to 100 ms at a time, however soon
the lock frees; queued, it starts as soon as the writer before it commits.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager, nullcontext
from importlib import resources
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from .faults import InsufficientStorage, Unavailable


def make_engine(url: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine whose writers wait at most `busy_timeout` seconds for another writer's locks.

    SQL parameters never appear in error messages: they can hold upload session tokens.
    """
    if not url.startswith("sqlite"):
        engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True,
                                  connect_args={"connect_timeout": CONNECT_TIMEOUT})

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_connection, _record):
            # A row lock held past this is a stuck writer: fail (503) instead of queueing forever.
            dbapi_connection.execute(f"SET lock_timeout = {int(busy_timeout * 1000)}")
            dbapi_connection.commit()

        return engine

    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from pysqlite so that BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = "IMMEDIATE" if conn.get_execution_options().get("wopihost_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


CONNECT_TIMEOUT = 10  # seconds: an unreachable PostgreSQL is a 503 soon, not a hung request


class WriterQueue:
    """Turns for the SQLite writers of every thread and process on one database file.

    Threads of a process wait on a lock, which wakes the next one the moment it is released. The thread
    whose turn it is then needs the process's exclusive flock on `<database>-writers` (which the kernel
    gives back even if its holder dies). A blocking flock is woken by the kernel the moment the other
    process lets go, where polling would sleep and let the releasing process take the lock again and
    again; but a blocking flock cannot time out, and a writer must give up after `timeout` with 503, as
    SQLite's own busy timeout did. So a gatekeeper thread of each process makes the blocking call and the
    writer waits for it with a timeout; a flock that comes after its writer gave up is let go at once.
    BEGIN IMMEDIATE then finds the database free, unless a writer outside wopihost holds it, and
    SQLite's busy handler still covers that.
    """

    def __init__(self, path: str, timeout: float):
        self.path = path + "-writers"
        self.timeout = timeout
        self._threads = threading.Lock()
        self._gate: _Gate | None = None  # each process (a forked child too) starts its own

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._threads.acquire(timeout=self.timeout):
            raise Unavailable("the database stayed locked by other writers past the busy timeout")
        try:
            gate = self._process_gate()
            if not gate.enter(self.timeout):
                raise Unavailable("the database stayed locked by other writers past the busy timeout")
            try:
                yield
            finally:
                gate.leave()
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._gate is not None and self._gate.pid == os.getpid():
                self._gate.close()
            self._gate = None

    def _process_gate(self) -> "_Gate":
        # Called with the thread lock held. flock belongs to an open file: a descriptor inherited across a
        # fork would be shared with the parent, so each process opens the file itself.
        if self._gate is None or self._gate.pid != os.getpid():
            self._gate = _Gate(self.path)
        return self._gate


class _Gate:
    """One process's flock on the writers' file, waited for by a gatekeeper thread (see WriterQueue). The
    writers of a process take turns before they come here: one at a time."""

    def __init__(self, path: str):
        self.pid = os.getpid()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Held shared by every gatekeeper while it waits: a process that finds it held does not take the turn
        # straight away but waits as well, and the kernel then wakes both waiters when the turn frees, so a
        # process whose writers come back to back cannot keep the turn from the others.
        self.waiting_fd = os.open(path + "-waiting", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._state = threading.Condition()
        self._wanted = False  # a writer waits for the gatekeeper
        self._granted = False  # the gatekeeper took the flock for that writer
        self._inside = False  # a writer holds the flock
        self._closed = False
        self._keeper: threading.Thread | None = None  # started the first time a writer has to wait

    def enter(self, timeout: float) -> bool:
        """Whether the flock is this process's within `timeout` seconds (the caller then calls `leave`)."""
        with self._state:
            if not self._others_wait():
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the usual case: nobody else writes
                    self._inside = True
                    return True
                except BlockingIOError:
                    pass
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="wopihost-writers-gate", daemon=True)
                self._keeper.start()
            self._wanted = True
            self._state.notify_all()
            granted = self._state.wait_for(lambda: self._granted, timeout)
            # Taken, or given up (then the gatekeeper lets go of a flock that comes later); either way the
            # gatekeeper may wait for the next writer.
            self._wanted = self._granted = False
            self._inside = granted
            self._state.notify_all()
            return granted

    def _others_wait(self) -> bool:
        try:
            fcntl.flock(self.waiting_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.waiting_fd, fcntl.LOCK_UN)
        return False

    def leave(self) -> None:
        with self._state:
            self._inside = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify_all()
            if self._keeper is None:
                self._close_files()  # else the gatekeeper closes them on its way out

    def _close_files(self) -> None:
        os.close(self.fd)
        os.close(self.waiting_fd)

    def _keep(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._wanted or self._closed)
                if self._closed:
                    self._close_files()
                    return
            fcntl.flock(self.waiting_fd, fcntl.LOCK_SH)
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks, without the GIL, until the other process lets go
            fcntl.flock(self.waiting_fd, fcntl.LOCK_UN)
            with self._state:
                if self._wanted:
                    self._granted = True
                    self._state.notify_all()
                elif not self._inside:  # its writer gave up (a writer inside shares this descriptor's lock)
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                self._state.wait_for(lambda: not self._granted or self._closed)


class Prepared:
    """A SELECT compiled once per dialect and run straight on the driver (`Database.first`).

    For the reads every request makes (its token, file and user; a lock's state), SQLAlchemy's execution
    machinery (connection, autobegin, events, result objects) cost several times the query itself. The
    types' own bind and result processors still convert the values, so a row reads as it would through
    SQLAlchemy.
    """

    def __init__(self, statement: sa.Executable | dict[str, sa.Executable]):
        """`statement`, or one per dialect name (an upsert is spelled differently on each)."""
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def on(self, dialect: sa.Dialect) -> "_Compiled":
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self.statement[dialect.name] if isinstance(self.statement, dict) else self.statement
            compiled = self._compiled[dialect.name] = _Compiled(statement, dialect)
        return compiled


class _Compiled:
    def __init__(self, statement: sa.Executable, dialect: sa.Dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql, self._positions = compiled.string, compiled.positiontup  # positions: None if named
        self._binds = {name: param.type.dialect_impl(dialect).bind_processor(dialect)
                       for name, param in compiled.binds.items()}
        self._results = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                         for column in getattr(statement, "selected_columns", ())]

    def args(self, params: dict) -> object:
        values = {name: value if value is None or self._binds.get(name) is None else self._binds[name](value)
                  for name, value in params.items()}
        return [values[name] for name in self._positions] if self._positions is not None else values

    def row(self, values: tuple) -> tuple:
        return tuple(value if convert is None or value is None else convert(value)
                     for convert, value in zip(self._results, values))


class Statements:
    """Prepared statements run in one transaction on one driver connection (`Database.transaction`)."""

    def __init__(self, cursor, dialect: sa.Dialect):
        self._cursor, self.dialect = cursor, dialect

    @property
    def is_sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    def run(self, query: Prepared, params: dict) -> None:
        compiled = query.on(self.dialect)
        self._cursor.execute(compiled.sql, compiled.args(params))

    def first(self, query: Prepared, params: dict) -> tuple | None:
        self.run(query, params)
        row = self._cursor.fetchone()
        return query.on(self.dialect).row(row) if row is not None else None

    def all(self, query: Prepared, params: dict) -> list[tuple]:
        self.run(query, params)
        compiled = query.on(self.dialect)
        return [compiled.row(row) for row in self._cursor.fetchall()]


class Database:
    def __init__(self, url: str, busy_timeout: float = 30.0):
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(wopihost_write=True), expire_on_commit=False)
        path = self.engine.url.database if self.is_sqlite else None
        self._writers = WriterQueue(path, busy_timeout) if path and path != ":memory:" else None
        # Each thread keeps one driver connection, in autocommit, for `first` (every request's read) and
        # `transaction` (the lock transitions).
        self._readers = threading.local()
        self._readers_lock = threading.Lock()
        self._held: set = set()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with _faults(), self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        turn = self._writers.turn() if self._writers is not None else nullcontext()
        with _faults(), turn, self._writer() as session, session.begin():
            session.info["write"] = True  # repository.py takes row locks only in write transactions
            yield session

    def first(self, query: Prepared, params: dict) -> tuple | None:
        """The first row of one SELECT, on this thread's reading connection, in autocommit: one statement reads
        one consistent state on SQLite and under READ COMMITTED alike, with no BEGIN, no ROLLBACK and no
        pool checkout around it. A connection found broken is replaced and the read tried once more."""
        compiled = query.on(self.engine.dialect)
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with _faults():
            for attempt in (1, 2):
                connection = None
                try:
                    connection = self._connection()
                    cursor = connection.cursor()
                    try:
                        cursor.execute(compiled.sql, compiled.args(params))
                        row = cursor.fetchone()
                    finally:
                        cursor.close()  # on SQLite, ends the statement's read transaction
                    return compiled.row(row) if row is not None else None
                except dbapi_error as exc:
                    disconnected = self.engine.dialect.is_disconnect(exc, connection, None)
                    self._drop_connection()
                    if not (disconnected and attempt == 1):
                        raise sa.exc.DBAPIError.instance(compiled.sql, None, exc, dbapi_error,
                                                         hide_parameters=True) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[Statements]:
        """A write transaction of prepared statements straight on the driver, on this thread's connection: for
        the hottest writers (the lock transitions), whose statements cost less than an ORM session. Same
        guarantees as `write`: SQLite writers queue and BEGIN IMMEDIATE; committed when the block ends,
        rolled back if it raises."""
        turn = self._writers.turn() if self._writers is not None else nullcontext()
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        with _faults(), turn:
            try:
                cursor = self._connection().cursor()
            except dbapi_error as exc:
                self._drop_connection()
                raise sa.exc.DBAPIError.instance("connect", None, exc, dbapi_error) from exc
            began = False
            try:
                cursor.execute("BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN")
                began = True
                yield Statements(cursor, self.engine.dialect)
                cursor.execute("COMMIT")
            except dbapi_error as exc:
                if began:
                    self._abandon(cursor)
                if self.engine.dialect.is_disconnect(exc, None, None):
                    self._drop_connection()
                raise sa.exc.DBAPIError.instance("transaction", None, exc, dbapi_error,
                                                 hide_parameters=True) from exc
            except BaseException:
                if began:
                    self._abandon(cursor)
                raise
            finally:
                _close_quietly(cursor)  # its connection may be gone already (dropped above)

    def _abandon(self, cursor) -> None:
        """Roll back; a connection that cannot is dropped, never left mid-transaction for the next request."""
        try:
            cursor.execute("ROLLBACK")
        except Exception:
            self._drop_connection()

    def _connection(self):
        held = getattr(self._readers, "held", None)
        if held is not None and held[0] == os.getpid():  # a connection inherited across fork is the parent's
            return held[1].dbapi_connection
        pooled = self.engine.raw_connection()  # opened as the pool opens them (the connect events' settings)
        pooled.detach()  # this thread's from now on; closing it closes the connection
        dbapi_connection = pooled.dbapi_connection
        if not self.is_sqlite:
            dbapi_connection.rollback()
            dbapi_connection.autocommit = True
        self._readers.held = (os.getpid(), pooled)
        with self._readers_lock:
            self._held.add(pooled)
        return dbapi_connection

    def _drop_connection(self) -> None:
        held, self._readers.held = getattr(self._readers, "held", None), None
        if held is not None and held[0] == os.getpid():
            with self._readers_lock:
                self._held.discard(held[1])
            _close_quietly(held[1])

    def dispose(self) -> None:
        if self._writers is not None:
            self._writers.close()
        with self._readers_lock:
            held, self._held = self._held, set()
        for pooled in held:
            _close_quietly(pooled)
        self.engine.dispose()


def _close_quietly(closeable) -> None:
    try:
        closeable.close()
    except Exception:  # already broken or closed: nothing is left to release
        pass


@contextmanager
def _faults() -> Iterator[None]:
    """A database that is full, locked past the busy timeout or unreachable, as the faults the faces
    answer (507, 503); any other database error is a bug and stays what it is."""
    try:
        yield
    except sa.exc.TimeoutError as exc:  # no pooled connection came free in time
        raise Unavailable("every database connection is busy; retry") from exc
    except sa.exc.DBAPIError as exc:
        fault = _fault(exc)
        if fault is None:
            raise
        raise fault from exc


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
    if sqlstate in ("40P01", "40001"):  # deadlock_detected, serialization_failure: the retry succeeds
        return Unavailable("the change met another one in the database; retry")
    if sqlstate[:2] in ("08", "53", "57") or (not sqlstate and isinstance(exc, sa.exc.OperationalError)):
        # connection exceptions, insufficient resources, operator intervention; no SQLSTATE: no server
        return Unavailable("the database is unreachable or overloaded")
    return None


# -- migrations ---------------------------------------------------------------
# Alembic is imported where it is used: a serving worker never needs it, and it weighs several MiB.

def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig
    config = AlembicConfig()
    config.set_main_option("script_location", str(resources.files("wopihost.migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command
    command.upgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
