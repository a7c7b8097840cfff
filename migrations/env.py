"""Alembic environment: the URL comes from wopihost.db.alembic_config (so from WOPIHOST_DATABASE_URL).

A whole upgrade is one transaction that first takes a database-wide lock, so that nodes started at once
migrate one after the other: the second waits, then reads the version the first committed and has nothing
to do. PostgreSQL: an advisory lock, held until that transaction ends. SQLite: its write lock, taken by
BEGIN IMMEDIATE (pysqlite's own transaction handling is switched off so that BEGIN is ours, and so that DDL
stays inside the transaction). Either is waited for up to MIGRATION_WAIT.
"""

import sqlalchemy as sa
from alembic import context
from sqlalchemy import event, pool

from wopihost.db import CONNECT_TIMEOUT, MIGRATION_LOCK_KEY, MIGRATION_WAIT
from wopihost.models import metadata

config = context.config


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def migration_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    engine = sa.create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": MIGRATION_WAIT})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def run_online() -> None:
    applied = config.attributes.get("wopihost.applied", [])
    engine = migration_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            # A lock_timeout or statement_timeout the database or its role sets for every session (a guard for
            # the application's queries) would end a node's wait for the one migrating, and a long migration:
            # the wait is MIGRATION_WAIT, as SQLite's, and our statements run to their end.
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(MIGRATION_WAIT * 1000)}")
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        # The transaction is ours (begun above), so Alembic runs every migration inside it and commits nothing.
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            on_version_apply=lambda step, **_: applied.append(step.up_revision_id),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
