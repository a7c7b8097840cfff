"""`wopihost backup`: an online copy of the SQLite database.

SQLite's backup API copies the database as one read transaction sees it, committed WAL frames included, while
the server goes on writing: the copy is consistent without stopping anything. It is written beside its
destination and renamed into place once complete and on disk, so a destination is a whole backup or absent.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # the files SQLite keeps beside a database, part of it


class BackupError(Exception):
    """The backup cannot be made; str() says why and what to do instead."""


def sqlite_path(database_url: str) -> Path:
    url = sa.make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            f"wopihost backup copies SQLite databases; this one is {url.get_backend_name()}: "
            "back it up with pg_dump (e.g. pg_dump -Fc -f wopihost.dump DATABASE)"
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is in memory: there is nothing to back up")
    return Path(url.database)


class Copied(NamedTuple):
    size: int  # bytes
    revision: str | None  # the copy's migration


def backup_sqlite(source: Path, dest: Path, overwrite: bool = False, busy_timeout: float = 30.0) -> Copied:
    """Copy the database at `source` to `dest`."""
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    # replacing the live database under the server's open connections would lose every later write, and
    # replacing its WAL the writes not yet checkpointed
    if dest.exists() and os.path.samefile(source, dest):
        raise BackupError(f"{dest} is the database itself ({source}): give a destination outside it")
    for own in (source.with_name(source.name + suffix) for suffix in SQLITE_COMPANIONS):
        if dest.absolute() == own.absolute() or (dest.exists() and own.exists() and os.path.samefile(own, dest)):
            raise BackupError(f"{dest} is a file of the database itself ({own}): give a destination outside it")
    if not dest.parent.is_dir():  # rather than a "no such file" naming the partial copy made beside it
        raise BackupError(f"cannot write {dest}: there is no directory {dest.parent}")
    if dest.exists() and not overwrite:
        raise _exists(dest)
    fd, partial = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    try:
        revision = _copy(source, Path(partial), busy_timeout)
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        if overwrite:
            os.replace(partial, dest)
        else:
            os.link(partial, dest)  # fails, rather than replaces, if DEST appeared meanwhile
            os.unlink(partial)
        _fsync_dir(dest.parent)
    except FileExistsError:
        raise _exists(dest) from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return Copied(dest.stat().st_size, revision)


def _copy(source: Path, partial: Path, busy_timeout: float) -> str | None:
    """Copy with the backup API; returns the copy's migration."""
    try:
        # mode=rw: never create an empty database where the real one was expected
        reader = sqlite3.connect(f"{source.absolute().as_uri()}?mode=rw", uri=True, timeout=busy_timeout)
        try:
            copy = sqlite3.connect(partial)
            try:
                # One step (pages=-1): one read transaction, so writers committing meanwhile never restart it.
                reader.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the server sets WAL again
                has_version = copy.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
                row = copy.execute("SELECT version_num FROM alembic_version").fetchone() if has_version else None
            finally:
                copy.close()
        finally:
            reader.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database {source}: {exc}") from None
    return row[0] if row else None


def _exists(dest: Path) -> BackupError:
    return BackupError(f"{dest} exists: give another destination, or --force to replace it")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
