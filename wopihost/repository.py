"""Loading rows for the domain layer, with the row locks a write transaction needs."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .errors import not_found
from .models import AlternateStream, File, Folder, User, name_key


def locking(
    session: Session, query: sa.Select, read: bool = False, key_share: bool = False, skip_locked: bool = False
) -> sa.Select:
    # In a write transaction the row is the mutex for every change to it (PostgreSQL); `read`: held against
    # change only (FOR SHARE), so that what the transaction found stays so until it commits, for readers alike;
    # `key_share`: a mutex that lets foreign-key checks of rows naming it through (FOR NO KEY UPDATE);
    # `skip_locked`: the rows another transaction holds are left out rather than waited for (SKIP LOCKED).
    # SQLite ignores FOR UPDATE and is serialised by BEGIN IMMEDIATE instead.
    if not session.info.get("write"):
        return query
    return query.with_for_update(read=read, key_share=key_share, skip_locked=skip_locked)


def load_file(session: Session, file_id: str) -> File:
    found = session.scalars(locking(session, sa.select(File).where(File.id == file_id))).one_or_none()
    if found is None:
        raise not_found()
    return found


def load_file_in_folder(session: Session, file_id: str, hold: Callable[[Session, str], Folder] | None = None) -> File:
    """The file row, locked after its folder's (`hold`: lock_folder, or hold_folder), the order every writer
    takes them in: on PostgreSQL a second update of a file's row in one transaction checks its foreign key
    again, which waits for its folder, and a writer holding the file that then waits for the folder closes a
    circle with one holding the folder that waits for the file."""
    if not session.info.get("write"):
        return load_file(session, file_id)
    while True:
        folder_id = session.scalar(sa.select(File.folder_id).where(File.id == file_id))
        if folder_id is None:
            raise not_found()
        (hold or lock_folder)(session, folder_id)
        file = load_file(session, file_id)
        if file.folder_id == folder_id:  # not moved in between
            return file


def hold_folder(session: Session, folder_id: str) -> Folder:
    """The folder held against name changes and deletion (FOR KEY SHARE, what a foreign-key check of a row
    naming it takes), for a writer of a file in it that changes no name: writers of other files go on."""
    found = session.scalars(locking(session, sa.select(Folder).where(Folder.id == folder_id), True, True)).first()
    if found is None:
        raise not_found("the folder does not exist")
    return found


def lock_folder(session: Session, folder_id: str) -> Folder:
    """Serialise name changes inside one folder (two Save As racing for the same name); 404 if the folder
    is gone (deleted while this request waited for it)."""
    found = session.scalars(locking(session, sa.select(Folder).where(Folder.id == folder_id))).one_or_none()
    if found is None:
        raise not_found("the folder does not exist")
    return found


def dialect_insert(dialect: sa.Dialect, table):
    """An INSERT into `table` in `dialect`'s own spelling, which has ON CONFLICT. The dialect's module is
    imported when first asked for, so that a server on SQLite never loads PostgreSQL's (3 MiB of memory)."""
    return importlib.import_module(f"sqlalchemy.dialects.{dialect.name}").insert(table)


def insert_if_absent(session: Session, model, **values) -> bool:
    """Insert a row unless one with its key exists, in one statement; whether it was inserted."""
    statement = dialect_insert(session.get_bind().dialect, model).values(**values).on_conflict_do_nothing()
    return session.execute(statement.returning(sa.literal(1))).first() is not None


def lock_user(session: Session, user_id: str) -> None:
    """Serialise changes that count a user's rows (open upload sessions and their bytes). On SQLite the
    write transaction itself (BEGIN IMMEDIATE) does, and the statement is not worth running."""
    if session.info.get("write") and session.get_bind().dialect.name != "sqlite":
        session.execute(locking(session, sa.select(User.id).where(User.id == user_id)))


def file_named(session: Session, folder_id: str, name: str) -> File | None:
    query = sa.select(File).where(File.folder_id == folder_id, File.name_key == name_key(name))
    return session.scalars(locking(session, query)).one_or_none()


def folder_named(session: Session, parent_id: str, name: str) -> Folder | None:
    """Not row-locked: the parent's lock (lock_folder) is what keeps a name's meaning, and a folder is
    locked only in id order with the others a change needs (tree.py)."""
    query = sa.select(Folder).where(Folder.parent_id == parent_id, Folder.name_key == name_key(name))
    return session.scalars(query).one_or_none()


def bytewise(session: Session, column):
    """`column` ordered by code point, as Python orders strings: PostgreSQL's default collation may sort
    by language (and keyset paging merged in Python would then skip rows); SQLite already compares bytes."""
    return column.collate("C") if session.get_bind().dialect.name == "postgresql" else column


def name_taken(session: Session, folder_id: str, name: str, ignore_id: str | None = None) -> bool:
    """Whether a file or folder in `folder_id` has the name (one namespace for both, as in every file
    system and in Graph), apart from the item `ignore_id`."""
    key = name_key(name)
    files = sa.select(File.id).where(File.folder_id == folder_id, File.name_key == key)
    folders = sa.select(Folder.id).where(Folder.parent_id == folder_id, Folder.name_key == key)
    if ignore_id is not None:
        files, folders = files.where(File.id != ignore_id), folders.where(Folder.id != ignore_id)
    return session.scalars(sa.union_all(files, folders).limit(1)).first() is not None


def drop_alternate_streams(session: Session, file_id: str, *conditions) -> set[str]:
    """Delete a file's alternate streams (those matching `conditions`, else all); returns the blobs they
    used, for `unreferenced`."""
    where = (AlternateStream.file_id == file_id, *conditions)
    blobs = {
        name for stream in session.scalars(sa.select(AlternateStream).where(*where)) for name in stream.content.blobs
    }
    session.execute(sa.delete(AlternateStream).where(*where))
    return blobs


def unreferenced(session: Session, file_id: str, candidates) -> list[str]:
    """Those of `candidates` that none of the file's streams uses any more (a stream kept as extents can
    share blobs with the file's other streams and earlier versions, never with another file), for the
    caller to delete once the transaction has committed."""
    session.flush()
    used: set[str] = set()
    file = session.get(File, file_id)
    if file is not None:
        used |= file.content.blobs
        used |= {
            name
            for stream in session.scalars(sa.select(AlternateStream).where(AlternateStream.file_id == file_id))
            for name in stream.content.blobs
        }
    return sorted(set(candidates) - used)
