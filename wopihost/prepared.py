"""Statements compiled once and run straight on the database driver, for the few that every request runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler


class Prepared:
    """A statement compiled once per dialect and run straight on the driver (`Database.first`,
    `Database.transact`).

    For the statements every request runs (its token, file and user; a lock transition), SQLAlchemy's execution
    machinery (connection, autobegin, events, result objects) cost several times the query itself. The
    types' own bind and result processors still convert the values, so a row reads as it would through
    SQLAlchemy.
    """

    def __init__(self, statement: sa.ClauseElement | Callable[[sa.Dialect], sa.ClauseElement]):
        """`statement`, or a function making it for a dialect (an upsert is spelled differently on each)."""
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}
        _MADE.append(self)

    def on(self, dialect: sa.Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self.statement if isinstance(self.statement, sa.ClauseElement) else self.statement(dialect)
            compiled = self._compiled[dialect.name] = _Compiled(statement, dialect)
        return compiled


_MADE: list[Prepared] = []  # every statement, made once as its module is imported


def compile_all(dialect: sa.Dialect) -> None:
    """Compile every statement made so far for `dialect`: in gunicorn's master, before it forks the workers, so
    that they share the compiled statements instead of each compiling its own at its first requests. Compiling
    runs through much of SQLAlchemy, and each worker would copy every memory page it writes on the way (4 MiB of
    the server's PSS)."""
    for statement in _MADE:
        statement.on(dialect)


class _Compiled:
    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect):
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))  # a statement's, not DDL's
        self.sql, self._positions = compiled.string, compiled.positiontup  # positions: None if named
        self._binds = {
            name: param.type.dialect_impl(dialect).bind_processor(dialect) for name, param in compiled.binds.items()
        }
        # The statement's own values (a literal 1, a None), converted once; the caller's are named bindparams.
        self._fixed = self._bind(
            {}, {name: param.effective_value for param, name in compiled.bind_names.items() if not param.required}
        )
        results = (
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "exported_columns", ())  # a SELECT's, or what DML RETURNs
        )
        # only the columns whose type converts what the driver returns (a time stored as text on SQLite, say)
        self._converting = [(index, convert) for index, convert in enumerate(results) if convert is not None]

    # args and row run for every statement of every request: written as plain loops, without a comprehension's
    # or a generator's frame, or a call, per value.

    def _bind(self, values: dict, params: dict) -> dict:
        """`values` with each of `params` added as the driver takes it (its type's bind processor)."""
        binds = self._binds
        for name, value in params.items():
            convert = binds.get(name)
            values[name] = value if value is None or convert is None else convert(value)
        return values

    def args(self, params: dict) -> object:
        values = self._bind(dict(self._fixed), params)
        return list(map(values.__getitem__, self._positions)) if self._positions is not None else values

    def row(self, values: tuple) -> tuple:
        if not self._converting:
            return tuple(values)
        row = list(values)
        for index, convert in self._converting:
            if row[index] is not None:
                row[index] = convert(row[index])
        return tuple(row)


class Statements:
    """Prepared statements run on one driver connection: in one write transaction (`Database.transact`, or
    `in_session` for an ORM session's), or each on its own in autocommit (`Database.query`).

    `quiet`: the cursor for the statements whose results nobody reads (`run`), if not `cursor`. In psycopg's
    pipeline mode (`Database.transact` on PostgreSQL) each result goes to the cursor that sent its statement as
    it arrives, so a read must have a cursor of its own, or it could be handed an earlier statement's result."""

    def __init__(self, cursor, dialect: sa.Dialect, writing: bool, quiet=None):
        self._cursor, self.dialect = cursor, dialect
        self._quiet = quiet if quiet is not None else cursor
        self.writing = writing  # in a write transaction: a row lock taken lasts until it ends
        self.answered = False  # whether a read has had its answer from the database

    @classmethod
    @contextmanager
    def in_session(cls, session: Session) -> Iterator[Statements]:
        """Statements in `session`'s transaction, for a change that runs both ways (contents.py). What the
        session holds unwritten is flushed first, and its objects do not see what the statements change:
        refresh those the caller reads again."""
        session.flush()
        connection = session.connection()
        cursor = connection.connection.cursor()
        try:
            yield cls(cursor, connection.dialect, bool(session.info.get("write")))
        finally:
            cursor.close()

    @classmethod
    def ask(cls, session: Session, admit: Callable[[Statements], None] | None) -> None:
        """`admit(t)`, if given, in `session`'s transaction: what a change asks once its rows are locked, such as
        whether its token is still live (Tokens.require_live), which a body that took its time may have outlived."""
        if admit is not None:
            with cls.in_session(session) as t:
                admit(t)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    def run(self, query: Prepared, params: dict) -> None:
        """A statement whose result is not read: in a pipeline, sent without waiting for its answer."""
        compiled = query.on(self.dialect)
        self._quiet.execute(compiled.sql, compiled.args(params))

    def first(self, query: Prepared, params: dict) -> tuple | None:
        compiled = self._read(query, params)
        row = self._cursor.fetchone()
        self.answered = True
        return compiled.row(row) if row is not None else None

    def all(self, query: Prepared, params: dict) -> list[tuple]:
        compiled = self._read(query, params)
        rows = self._cursor.fetchall()
        self.answered = True
        return [compiled.row(row) for row in rows]

    def _read(self, query: Prepared, params: dict) -> _Compiled:
        compiled = query.on(self.dialect)
        self._cursor.execute(compiled.sql, compiled.args(params))
        return compiled
