"""Migrations that nodes share: concurrent `wopihost db upgrade`s migrate once, `db current` says where the
database stands, and the server refuses a database older or newer than its code. Real processes, on a fresh
SQLite file and (with WOPIHOST_TEST_DATABASE_URL) a fresh PostgreSQL schema."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy.orm import Session

from wopihost import db
from wopihost.cli import main
from wopihost.ids import new_id
from wopihost.localserver import WOPIHOST, free_port
from wopihost.models import File, Folder, fit_key, metadata, name_key
from wopihost.users import ensure_user, root_folder_id

from .conftest import PG_URL
from .helpers import postgres_lock_waiters, wait_until

HEAD = db.head_revision("sqlite://")
PREVIOUS = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_revision(HEAD).down_revision
EVERY_REVISION = [
    s.revision for s in reversed(list(ScriptDirectory.from_config(db.alembic_config("sqlite://")).walk_revisions()))
]
DEPLOY = Path(__file__).parent.parent / "deploy"
NEWER = "f0f0f0f0f0f0"  # a migration some later wopihost made


@pytest.fixture(params=["sqlite", "postgresql"] if PG_URL else ["sqlite"])
def fresh(request, tmp_path) -> Iterator[str]:
    """The URL of a database with nothing in it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    schema = f"wopihost_migrations_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def env(fresh, tmp_path) -> dict:
    (tmp_path / "data").mkdir()  # as a host's is: only `db upgrade` and `serve` make it
    return {
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_DATABASE_URL": fresh,
        "WOPIHOST_SECRET_KEY": "s" * 32,
        "WOPIHOST_PUBLIC_URL": "http://127.0.0.1:1",
    }


def versions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        engine.dispose()


def set_version(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    engine.dispose()


@contextmanager
def migration_lock_held(url: str) -> Iterator[None]:
    """The lock an upgrade takes, held by someone else (as by a node in the middle of migrating)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        held = sqlite3.connect(parsed.database, isolation_level=None)
        held.execute("PRAGMA journal_mode=WAL")  # as the first node's own connection left it
        held.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            held.execute("COMMIT")
            held.close()
        return
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({db.MIGRATION_LOCK_KEY})")
        conn.commit()
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({db.MIGRATION_LOCK_KEY})")
            conn.commit()
    engine.dispose()


def upgrades(env: dict, count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [*WOPIHOST, "db", "upgrade", "--json"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def applied_by(processes: list[subprocess.Popen]) -> list[list[str]]:
    applied = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        applied.append(json.loads(stdout)["applied"])
    return sorted(applied)


def at_the_lock(url: str, processes: list[subprocess.Popen]) -> bool:
    """Whether every one of these upgrades has come to the lock held: waits for it on PostgreSQL, or has the
    SQLite file open, its next step being the BEGIN IMMEDIATE that waits."""
    parsed = sa.make_url(url)
    try:
        if parsed.get_backend_name() != "sqlite":
            return postgres_lock_waiters(url, [p.pid for p in processes]) == len(processes)
        database = os.path.realpath(parsed.database)
        return all(any(f.path == database for f in psutil.Process(p.pid).open_files()) for p in processes)
    except psutil.NoSuchProcess:  # one ended (a zombie too): it did not wait, as the caller then finds
        return True


def test_an_upgrade_waits_for_the_one_migrating_then_has_nothing_to_do(fresh, env):
    with migration_lock_held(fresh):
        processes = upgrades(env, 2)
        assert wait_until(lambda: at_the_lock(fresh, processes))
        assert [p.poll() for p in processes] == [None, None]  # both waiting
    assert applied_by(processes) == [[], EVERY_REVISION]  # one migrated, the other found it done
    assert versions(fresh) == [HEAD]


def test_nodes_starting_at_once_migrate_once(fresh, env):
    assert applied_by(upgrades(env, 3)) == [[], [], EVERY_REVISION]
    assert versions(fresh) == [HEAD]
    assert json.loads(CliRunner().invoke(main, ["files", "list", "--json"], env=env).stdout) == []


def test_an_upgrade_waits_for_the_one_migrating_past_the_timeouts_the_database_sets(fresh, env):
    """A database (or its role) may set a lock_timeout or statement_timeout for every session, as a guard for the
    application's queries; a node starting while another migrates waits for it all the same."""
    if not fresh.startswith("postgresql"):
        pytest.skip("SQLite's wait is the migration engine's own busy timeout")
    url = sa.make_url(fresh)
    guarded = url.update_query_dict(
        {"options": f"{url.query['options']} -c lock_timeout=300 -c statement_timeout=300"}
    ).render_as_string(False)
    with migration_lock_held(fresh):
        processes = upgrades({**env, "WOPIHOST_DATABASE_URL": guarded}, 1)
        assert wait_until(lambda: at_the_lock(fresh, processes))
        time.sleep(1.5)  # five times either timeout
        assert processes[0].poll() is None  # still waiting
    assert applied_by(processes) == [EVERY_REVISION]
    assert versions(fresh) == [HEAD]


def current(env: dict) -> tuple[dict, str]:
    """What `db current` says, with and without --json; it exits 0 at the head, 1 anywhere else (it exited 0
    whatever the state: a script could not tell)."""
    as_json = CliRunner().invoke(main, ["db", "current", "--json"], env=env)
    text = CliRunner().invoke(main, ["db", "current"], env=env)
    state = json.loads(as_json.stdout)
    assert as_json.exit_code == text.exit_code == (0 if state["at_head"] else 1)
    assert as_json.stderr == text.stderr == ""
    return state, text.stdout


def test_db_current_says_where_the_database_stands(fresh, env):
    assert current(env) == (
        {"revision": None, "head": HEAD, "state": "empty", "at_head": False},
        f"the database has no tables (no migration applied; this wopihost needs {HEAD}): run `wopihost db upgrade`\n",
    )
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert current(env) == (
        {"revision": HEAD, "head": HEAD, "state": "current", "at_head": True},
        f"{HEAD}: at this wopihost's head\n",
    )
    command.downgrade(db.alembic_config(fresh), PREVIOUS)
    state, text = current(env)
    assert state == {"revision": PREVIOUS, "head": HEAD, "state": "behind", "at_head": False}
    assert text == f"the database is at migration {PREVIOUS}, this wopihost needs {HEAD}: run `wopihost db upgrade`\n"
    set_version(fresh, NEWER)
    state, text = current(env)
    assert state == {"revision": NEWER, "head": HEAD, "state": "ahead", "at_head": False}
    assert "this database was migrated by a newer wopihost" in text


def refused(env: dict, *args: str) -> str:
    result = subprocess.run([*WOPIHOST, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_the_server_refuses_an_older_database_until_it_is_upgraded(fresh, env):
    db.upgrade(fresh)
    command.downgrade(db.alembic_config(fresh), PREVIOUS)
    expected = (
        f"Error: the database is at migration {PREVIOUS}, this wopihost needs {HEAD}: run `wopihost db upgrade`\n"
    )
    assert refused(env, "serve", "--port", "1") == expected
    assert refused(env, "files", "list") == expected
    upgraded = CliRunner().invoke(main, ["db", "upgrade", "--json"], env=env)
    assert json.loads(upgraded.stdout) == {"revision": HEAD, "head": HEAD, "applied": [HEAD]}
    assert CliRunner().invoke(main, ["files", "list"], env=env).stdout == "no files\n"


def deployed(env: dict) -> subprocess.CompletedProcess:
    """gunicorn started as docs/deploy.md starts it, with `env`."""
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), "wopihost.app:create_app()"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "WOPIHOST_BIND": f"127.0.0.1:{free_port()}", "WEB_CONCURRENCY": "1"},
    )


def test_gunicorn_with_the_deployed_configuration_refuses_an_older_or_newer_database(fresh, env, tmp_path):
    db.upgrade(fresh)
    command.downgrade(db.alembic_config(fresh), PREVIOUS)
    result = deployed(env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (
        f"Error: the database is at migration {PREVIOUS}, this wopihost needs {HEAD}: run `wopihost db "
        "upgrade`" in result.stderr
    )
    db.upgrade(fresh)
    set_version(fresh, NEWER)
    result = deployed(env)
    assert result.returncode == 1 and "this database was migrated by a newer wopihost" in result.stderr


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgres://wopi@127.0.0.1/wopihost", "Error: WOPIHOST_DATABASE_URL: postgres:// is not a scheme"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/test", "Error: cannot use the database postgresql+psycopg://"),
    ],
)
def test_gunicorn_with_the_deployed_configuration_says_in_one_line_why_a_database_cannot_be_used(
    tmp_path, url, message
):
    result = deployed({"WOPIHOST_DATA_DIR": str(tmp_path / "data"), "WOPIHOST_DATABASE_URL": url})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr


def test_the_server_refuses_a_database_a_newer_wopihost_migrated(fresh, env):
    db.upgrade(fresh)
    set_version(fresh, NEWER)
    expected = (
        f"Error: the database is at migration {NEWER}, which this wopihost (at {HEAD}) does not know: "
        "this database was migrated by a newer wopihost; run that version or a newer one\n"
    )
    assert refused(env, "serve", "--port", "1") == expected
    assert refused(env, "files", "list") == expected
    assert refused(env, "db", "upgrade") == expected  # nothing to upgrade to: it is not downgraded either
    assert versions(fresh) == [NEWER]


def test_doctor_names_a_database_a_newer_wopihost_migrated(fresh, env):
    db.upgrade(fresh)
    set_version(fresh, NEWER)
    report = json.loads(CliRunner().invoke(main, ["doctor", "--timeout", "1", "--json"], env=env).stdout)
    database = report["checks"][0]
    assert database == {
        "ok": False,
        "what": f"database at migration {NEWER}, which this version (at {HEAD}) does not know",
        "fix": "run the newer wopihost that migrated it",
    }


def test_the_code_names_its_newest_migration():
    # db.SCHEMA_HEAD lets a server starting on a current database skip alembic: it must be alembic's head.
    assert db.SCHEMA_HEAD == HEAD


def test_a_server_starting_on_a_current_database_does_not_import_alembic(fresh, env):
    """gunicorn's master keeps what it imported for the life of the server, and so does every worker forked
    from it: the start-up check reads the revision itself when it is the head."""
    db.upgrade(fresh)
    check = (
        "import sys\n"
        "import sqlalchemy as sa\n"
        "from wopihost import db\n"
        "url = sys.argv[1]\n"
        "try:\n"
        "    state = db.require_current_schema(sa.create_engine(url), url).state\n"
        "except db.SchemaMismatch:\n"
        "    state = 'refused'\n"
        "print(state, 'alembic' in sys.modules)\n"
    )

    def started(url: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", check, url], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        ).stdout.strip()

    assert started(fresh) == "current False"
    set_version(fresh, NEWER)  # anything but the head is alembic's to judge
    assert started(fresh) == "refused True"


# -- 0013: name keys by simple case folding --------------------------------------------------------------


def full_key(name: str) -> str:
    """name_key before 0013: full case folding, which made "Maße" and "Masse" one name."""
    return fit_key(unicodedata.normalize("NFC", name).casefold())


def keys(url: str) -> dict[str, tuple[str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {
            row.id: (row.name, row.name_key)
            for table in ("folders", "files")
            for row in conn.execute(sa.text(f"SELECT id, name, name_key FROM {table}"))
        }
    engine.dispose()
    return found


def add_rows(url: str, names: dict[str, list[str]], key) -> None:
    """Alice's folders, each named by its key in `names` and holding files of the names it maps to."""
    now = datetime(2026, 12, 1)
    engine = sa.create_engine(url)
    with Session(engine) as s, s.begin():
        ensure_user(s, "alice", now)
        root = root_folder_id(s, "alice")
        drive = s.get_one(Folder, root).drive_id
        for folder_name, file_names in names.items():
            folder = Folder(
                id=new_id(), drive_id=drive, parent_id=root, name=folder_name, name_key=key(folder_name), created_at=now
            )
            s.add(folder)
            s.flush()
            s.execute(
                sa.insert(File),
                [
                    dict(id=new_id(), folder_id=folder.id, name=name, name_key=key(name), owner_id="alice", size=0)
                    | dict(version=1, sequence_number=1, blob="", sha256="", created_at=now, modified_at=now)
                    for name in file_names
                ],
            )
    engine.dispose()


def test_upgrading_to_0013_keys_names_by_simple_case_folding_and_downgrading_refuses_to_join_two(fresh):
    """Rows keyed by full folding, more than one batch of them, get the keys that keep "Maße" and "Masse"
    apart; a downgrade that would make two names of a folder one is refused, and undoes nothing until then."""
    db.upgrade(fresh, "0012")
    long = "D" + "ﬃ" * 249 + ".txt"  # full folding made its key too long for the column: cut short
    add_rows(
        fresh,
        {
            "Straße": ["Maße.txt", "ﬁle.txt", "İstanbul.docx", long, "Report.DOCX"],
            "ẞ many": [f"Fuß {n}.txt" for n in range(2500)],
        },
        full_key,
    )
    before = keys(fresh)
    assert full_key(long) != long.casefold() and "masse.txt" in {key for _, key in before.values()}

    assert db.upgrade(fresh, "0013") == ["0013"]
    after = keys(fresh)
    assert after.keys() == before.keys()
    assert all(key == name_key(name) for name, key in after.values())
    assert {key for _, key in after.values()} >= {"straße", "ß many", "maße.txt", "ﬁle.txt", "report.docx"}
    add_rows(fresh, {"Strasse": ["Masse.txt", "file.txt"]}, name_key)  # a folder beside Straße, now another name

    with pytest.raises(RuntimeError, match="folders has names in one folder that differ only in what full case"):
        command.downgrade(db.alembic_config(fresh), "0012")
    assert versions(fresh) == ["0013"] and all(key == name_key(name) for name, key in keys(fresh).values())

    engine = sa.create_engine(fresh)
    with engine.begin() as conn:
        strasse = "(SELECT id FROM folders WHERE name = 'Strasse')"
        conn.execute(sa.text(f"DELETE FROM files WHERE folder_id IN {strasse}"))
        conn.execute(sa.text(f"DELETE FROM folders WHERE id IN {strasse}"))
    engine.dispose()
    command.downgrade(db.alembic_config(fresh), "0012")
    assert versions(fresh) == ["0012"] and keys(fresh) == {
        id_: (name, full_key(name)) for id_, (name, _) in keys(fresh).items()
    }
    assert keys(fresh).items() >= before.items()


def test_downgrading_from_0013_refuses_to_make_a_file_and_a_folder_one_name(fresh):
    """A name is a file's or a folder's in one folder (repository.name_taken asks both tables): a folder "Masse.txt"
    beside a file "Maße.txt" is two names at 0013 and would be one before it."""
    db.upgrade(fresh, "0013")
    add_rows(fresh, {"Top": ["Maße.txt"]}, name_key)
    engine = sa.create_engine(fresh)
    with Session(engine) as s, s.begin():
        top = s.scalars(sa.select(Folder).where(Folder.name == "Top")).one()
        beside = dict(drive_id=top.drive_id, parent_id=top.id, created_at=top.created_at)
        s.add(Folder(id=new_id(), name="Masse.txt", name_key="masse.txt", **beside))
    engine.dispose()
    with pytest.raises(RuntimeError, match="a file and a folder"):
        command.downgrade(db.alembic_config(fresh), "0012")
    assert versions(fresh) == ["0013"] and all(key == name_key(name) for name, key in keys(fresh).values())


# -- the schema and the data an upgrade keeps ------------------------------------------------------------


@contextmanager
def beside(url: str) -> Iterator[str]:
    """An empty database beside `url`: another SQLite file, another PostgreSQL schema."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        yield f"sqlite:///{parsed.database}.beside"
        return
    schema = f"wopihost_beside_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def schema_of(url: str) -> dict:
    """Every table's columns, keys, indexes and constraints as the database itself describes them."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    tables = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        tables[table] = {
            "columns": {
                c["name"]: (str(c["type"]), c["nullable"], c.get("default")) for c in inspector.get_columns(table)
            },
            "primary key": inspector.get_pk_constraint(table),
            "foreign keys": sorted(
                (f["name"], f["constrained_columns"], f["referred_table"], f["referred_columns"], f["options"])
                for f in inspector.get_foreign_keys(table)
            ),
            "unique": sorted((u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes(table)),
            "checks": sorted((c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)),
        }
    engine.dispose()
    return tables


def test_the_migrated_schema_is_the_one_the_models_declare(fresh):
    """What the code reads and writes (models.py) is what `db upgrade` made: every table, column (type,
    nullability, server default), index, unique and foreign key (its ON DELETE too), compared by Alembic's
    autogenerate and with the tables the models would create themselves, as the database describes both."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db.upgrade(fresh)
    engine = sa.create_engine(fresh)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    if fresh.startswith("sqlite"):
        # Alembic's SQLite comparison reads a default of '' back as "''" and reports it changed, on the models'
        # own create_all too: the comparison with the declared tables below holds that one
        differences = [d for d in differences if not (d[0][0] == "modify_default" and d[0][-1].arg == "")]
    assert differences == []
    with beside(fresh) as other:
        engine = sa.create_engine(other)
        metadata.create_all(engine)
        engine.dispose()
        assert schema_of(fresh) == schema_of(other)


def _value(column: sa.Column, row: int):
    """A value of `column`'s type for the row-th row of every table: ids and keys of one row are one string, so
    a row's foreign keys find the row of that number in the table they refer to."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return row % 2 == 0
    if isinstance(kind, sa.Integer):
        return 1000 + row
    if isinstance(kind, sa.DateTime):
        return datetime(2026, 1, 1 + row, 12, 30, 15)
    if isinstance(kind, sa.String) and kind.length is not None and kind.length < 22:
        return f"r{row}"
    return f"row{row}"


def fill(url: str, rows: range) -> dict[str, list[dict]]:
    """These rows in every table the database has at its migration; what each table then holds."""
    engine = sa.create_engine(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    tables.remove(tables.tables["alembic_version"])
    with engine.begin() as conn:
        for table in tables.sorted_tables:
            conn.execute(table.insert(), [{c.name: _value(c, row) for c in table.columns} for row in rows])
    found = {name: _rows(engine, table) for name, table in tables.tables.items()}
    engine.dispose()
    return found


def _rows(engine: sa.Engine, table: sa.Table) -> list[dict]:
    with engine.connect() as conn:
        return sorted(
            (dict(row._mapping) for row in conn.execute(sa.select(table))), key=lambda row: sorted(row.items())
        )


@pytest.mark.parametrize("start", EVERY_REVISION[:-1])
def test_an_upgrade_from_any_earlier_release_keeps_every_row(fresh, start):
    """A database of any earlier release, with rows in every table, upgraded to the head at once as `db upgrade`
    does: every row is there with every value it had; the columns added since take their defaults."""
    db.upgrade(fresh, start)
    before = fill(fresh, range(1, 4))
    assert db.upgrade(fresh) == EVERY_REVISION[EVERY_REVISION.index(start) + 1 :]
    engine = sa.create_engine(fresh)
    for name, rows in before.items():
        table = metadata.tables[name]
        after = _rows(engine, table)
        assert [{column: row[column] for column in rows[0]} for row in after] == rows, name
        added = [column for column in table.columns if column.name not in rows[0]]
        defaults = {c.name: None if c.server_default is None else c.server_default.arg for c in added}
        assert [{c.name: None if row[c.name] is None else str(row[c.name]) for c in added} for row in after] == [
            defaults
        ] * len(rows), name
    engine.dispose()


def test_nodes_starting_at_once_on_an_older_database_migrate_it_once_and_keep_its_rows(fresh, env):
    """The upgrade of a release with a migration: every node stopped, then started together on the database the
    last release left, rows in every table; one migrates, the others wait and find it done."""
    start = "0012"  # before 0013 rekeyed every name and 0014 made a table
    db.upgrade(fresh, start)
    before = fill(fresh, range(1, 3))
    assert applied_by(upgrades(env, 3)) == [[], [], EVERY_REVISION[EVERY_REVISION.index(start) + 1 :]]
    assert versions(fresh) == [HEAD]
    engine = sa.create_engine(fresh)
    for name, rows in before.items():
        assert [{column: row[column] for column in rows[0]} for row in _rows(engine, metadata.tables[name])] == rows
    engine.dispose()
