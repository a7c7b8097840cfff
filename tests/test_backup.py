"""`wopihost backup DEST`: an online copy of the SQLite database, consistent while the server writes."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from wopihost.cli import main

from .conftest import PG_URL

on_sqlite = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def database_path(env: dict) -> Path:
    return Path(sa.make_url(env["WOPIHOST_DATABASE_URL"]).database)


def names_in(copy: Path) -> list[str]:
    """The files in a backup, which must be one whole database file."""
    assert not Path(f"{copy}-wal").exists()
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        return [row[0] for row in conn.execute("SELECT name FROM files ORDER BY name")]
    finally:
        conn.close()


@on_sqlite
def test_a_backup_holds_what_is_still_in_the_wal(run, served, env, tmp_path):
    services = served.app.extensions["wopihost"]
    for name in ("One.docx", "Two.docx"):
        services.add_file("alice", name, io.BytesIO(b"content"))
    assert Path(f"{database_path(env)}-wal").stat().st_size > 0  # the server's connections keep it open
    dest = tmp_path / "backup" / "wopihost.sqlite3"
    dest.parent.mkdir()
    written = json.loads(run("backup", str(dest), "--json").stdout)
    assert written == {
        "database": str(dest),
        "size": dest.stat().st_size,
        "revision": written["revision"],
        "source": str(database_path(env)),
        "blobs": f"{env['WOPIHOST_DATA_DIR']}/blobs",
    }
    assert written["revision"] and names_in(dest) == ["One.docx", "Two.docx"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["wopihost.sqlite3"]  # no partial copy left
    restored = CliRunner().invoke(
        main, ["files", "list", "--json"], env={**env, "WOPIHOST_DATABASE_URL": f"sqlite:///{dest}"}
    )
    assert sorted(f["name"] for f in json.loads(restored.stdout)) == ["One.docx", "Two.docx"]


@on_sqlite
def test_backups_taken_while_the_server_writes_are_consistent(run, served, tmp_path):
    services = served.app.extensions["wopihost"]
    stop, added = threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            added.append(services.add_file("alice", f"F{len(added):05}.docx", io.BytesIO(b"x" * 1000)).name)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not added:  # the server is writing
            time.sleep(0.01)
        copies = []
        for n in range(3):
            dest = tmp_path / f"copy{n}.sqlite3"
            run("backup", str(dest))
            copies.append(names_in(dest))
    finally:
        stop.set()
        writer.join()
    for earlier, later in zip(copies, copies[1:]):
        assert later[: len(earlier)] == earlier  # each copy is a moment of the database, in order
    assert copies[-1] == added[: len(copies[-1])] and len(copies[-1]) > 0


@on_sqlite
def test_a_backup_does_not_overwrite_unless_forced(run, env, tmp_path):
    dest = tmp_path / "existing.sqlite3"
    dest.write_bytes(b"precious")
    refused = run("backup", str(dest), ok=False)
    assert refused.exit_code == 1 and "Traceback" not in refused.stderr
    assert refused.stderr == f"Error: {dest} exists: give another destination, or --force to replace it\n"
    assert dest.read_bytes() == b"precious"
    text = run("backup", str(dest), "--force").stdout
    assert text.startswith(f"wrote {dest}: a consistent copy of {database_path(env)}")
    assert f"now copy {env['WOPIHOST_DATA_DIR']}/blobs alongside" in text
    assert names_in(dest) == [] and sorted(p.name for p in tmp_path.iterdir() if "existing" in p.name) == [
        "existing.sqlite3"
    ]


@pytest.mark.skipif(not PG_URL, reason="set WOPIHOST_TEST_DATABASE_URL to run on PostgreSQL")
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_postgresql_database_is_backed_up_with_pg_dump(run, tmp_path):
    dest = tmp_path / "backup.sqlite3"
    refused = run("backup", str(dest), ok=False)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "this one is postgresql: back it up with pg_dump" in refused.stderr
    assert not dest.exists()


@on_sqlite
@pytest.mark.parametrize("how", ["itself", "a symbolic link", "a hard link"])
def test_a_backup_onto_the_database_itself_is_refused_even_forced(run, served, env, tmp_path, how):
    services = served.app.extensions["wopihost"]
    services.add_file("alice", "Kept.docx", io.BytesIO(b"content"))
    database = database_path(env)
    dest = {"itself": database, "a symbolic link": tmp_path / "link.sqlite3", "a hard link": tmp_path / "hard"}[how]
    if how == "a symbolic link":
        dest.symlink_to(database)
    elif how == "a hard link":
        dest.hardlink_to(database)
    before = database.stat().st_ino
    refused = run("backup", str(dest), "--force", ok=False)
    assert refused.exit_code == 1 and "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
    assert refused.stderr == f"Error: {dest} is the database itself ({database}): give a destination outside it\n"
    assert database.stat().st_ino == before  # not replaced under the server's connections
    assert [f["name"] for f in json.loads(run("files", "list", "--json").stdout)] == ["Kept.docx"]


@on_sqlite
@pytest.mark.parametrize("companion", ["-wal", "-shm"])
def test_a_backup_onto_a_file_of_the_database_is_refused_even_forced(run, served, env, companion):
    """--force replaced the database's WAL under the server, and with it the writes not yet checkpointed."""
    services = served.app.extensions["wopihost"]
    services.add_file("alice", "Kept.docx", io.BytesIO(b"content"))
    database = database_path(env)
    dest = database.with_name(database.name + companion)
    assert dest.exists()  # the server's connections hold it
    before = dest.stat().st_ino
    refused = run("backup", str(dest), "--force", ok=False)
    assert refused.exit_code == 1 and refused.stderr == (
        f"Error: {dest} is a file of the database itself ({dest}): give a destination outside it\n"
    )
    assert dest.stat().st_ino == before
    assert [f["name"] for f in json.loads(run("files", "list", "--json").stdout)] == ["Kept.docx"]


@on_sqlite
def test_a_backup_into_a_missing_directory_says_so(run, tmp_path):
    dest = tmp_path / "no-such-dir" / "backup.sqlite3"
    refused = run("backup", str(dest), ok=False)
    assert refused.exit_code == 1
    assert refused.stderr == f"Error: cannot write {dest}: there is no directory {dest.parent}\n"
