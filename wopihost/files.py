"""File operations: create, read, replace content, save as, rename, delete.

Content writes follow one pattern (`_store`): check the preconditions (fail
fast, before a possibly huge body is read), stream the body into a new blob,
then check the preconditions again and switch the file to the blob in one
transaction. A failure anywhere leaves the old content and no stray blob.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import BinaryIO, NamedTuple, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .contents import replace_content
from .db import Database
from .errors import WopiError, checked_name
from .errors import name_taken as name_taken_error
from .extents import Extents, open_extents
from .faults import changing_too_often
from .ids import new_id
from .locks import FileState, file_state, live_coauth_locks, live_lock, require_write_access
from .models import Activity, CoauthLock, ContentProperty, File, Folder, Lock, name_key
from .names import InvalidName, check, counted, encode_utf7, numbered, sanitize, split_extension
from .prepared import Statements
from .repository import (
    drop_alternate_streams,
    file_named,
    folder_named,
    load_file,
    load_file_in_folder,
    lock_folder,
    name_taken,
)
from .sessions import end_with_file
from .snapshots import FileView
from .storage import Blob, Opened, Readable, Storage, TooLarge, discard
from .workbooks import end_with_file as end_workbook_sessions

T = TypeVar("T")
C = TypeVar("C")
MAX_NUMBERED_NAMES = 1000
COOL_DOCUMENT_CHANGED = 1010  # Collabora's "document changed in storage" status code
CONFLICT_BEHAVIOURS = ("fail", "replace", "rename")  # what a new item does when its name is taken (Graph)
# what a write asks in its transaction once its bytes are in: (transaction, folder id, bytes it adds), raising
# to refuse it (the caller's reach, a quota)
Admit = Callable[[Session, str, int], None]
# What finds the item a change is of, in the change's own transaction. Graph addresses an item by a path, which
# names what is there when the change runs: the item found as the request came may have been renamed or moved
# since, and another put in its place. A change asks it again once it holds the folders the answer depends on,
# until it names what is locked (`lock_folder_at`, Tree's `_lock_with_folders`); an id is asked as
# `lambda s: tree.item(s, drive, id)`.
Locate = Callable[[Session], File | Folder]
# What finds the folder a new file goes in and makes what is missing of it, in the write transaction that lands the
# file (Graph's upload to a path: Tree.folder_for_new); None in a read transaction (the check before a body is
# read) while a folder of it is still to be made, where no name is taken yet.
Place = Callable[[Session], Folder | None]
UNLOCKED = {"X-WOPI-Lock": ""}  # a 409's X-WOPI-Lock when no WOPI lock is involved


class Saved(NamedTuple):
    """What PutFile made: the file's new version, and when."""

    version: int
    modified_at: datetime


class Renamed(NamedTuple):
    """What RenameFile made: the file, and its new name less the extension it kept (RenameFile's `Name`)."""

    file: File
    base: str


@dataclass(frozen=True)
class Target:
    """Where PutRelativeFile puts its file: `suggested` names may be adjusted, specific ones may not."""

    name: str
    suggested: bool
    overwrite: bool = False
    problem: str | None = None  # why a specific name is unusable before it is even a name (not valid UTF-7)


class Files:
    def __init__(self, db: Database, blobs: Storage, clock: Clock, max_size: int):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.max_size = max_size

    # -- reading ------------------------------------------------------------------

    def get(self, file_id: str) -> File:
        with self.db.read() as s:
            return load_file(s, file_id)

    @overload
    def open_content(self, file_id: str, seen: None = None) -> tuple[File, BinaryIO]: ...
    @overload
    def open_content(self, file_id: str, seen: File | FileView) -> tuple[File | FileView, BinaryIO]: ...

    def open_content(self, file_id: str, seen: File | FileView | None = None) -> tuple[File | FileView, BinaryIO]:
        """The file row (or `seen`, the file as the caller already read it) and its content, opened."""
        file, opened = self._open_blobs(file_id, seen)
        return file, open_extents(opened, file.content)

    def _open_blobs(self, file_id: str, seen: File | FileView | None = None) -> tuple[File | FileView, Opened]:
        """The file row (or `seen`) and the blobs of its content, opened together; read again if a writer
        replaced a blob in between."""
        for attempt in range(5):
            file = seen if seen is not None and attempt == 0 else self.get(file_id)
            try:
                return file, self.blobs.open(file.content.blobs)
            except FileNotFoundError:
                continue
        raise changing_too_often()

    def list(self) -> list[File]:
        with self.db.read() as s:
            return list(s.scalars(sa.select(File).order_by(File.created_at, File.id)))

    # -- writing ------------------------------------------------------------------

    def create(self, owner_id: str, folder: str | Callable[[Session], str], name: str, source: Readable) -> File:
        """A new file in the folder `folder` is the id of, or that it makes (and returns the id of) in the write
        transaction, once the content is written: a source that fails to be read leaves no folder behind. The
        name gets a ' (n)' suffix if it is taken."""
        name = check(name)

        def check_folder() -> None:
            if isinstance(folder, str):
                with self.db.read() as s:
                    lock_folder(s, folder)

        def change(blob: Blob) -> tuple[File, list[str]]:
            with self.db.write() as s:
                folder_id = folder if isinstance(folder, str) else folder(s)
                lock_folder(s, folder_id)
                name_here = self.free_name(s, folder_id, name)
                return self.insert(
                    s, folder_id, name_here, owner_id, blob.name, blob.size, blob.sha256, blob.quickxor
                ), []

        return self._store(lambda: self._written(source), check_folder, change)

    def put(
        self,
        file_id: str,
        source: Readable,
        lock_id: str | None,
        loaded_at: datetime | None = None,
        admit: Callable[[Statements], None] | None = None,
    ) -> Saved:
        """PutFile. `loaded_at` is Collabora's X-COOL-WOPI-Timestamp: refuse if the file changed since.
        `admit(t)` whether the save may still land, asked in its transaction once the body is in and the file's
        row is locked (the token may have been revoked while the body came).

        The hottest writer after the locks: its checks and its change are prepared statements (contents.py)."""

        def check(t: Statements) -> FileState:
            state = file_state(t, file_id, self.clock.now())
            # An unlocked file may be written only while it is empty (the "create new" flow).
            state.require(lock_id, unlocked_ok=state.content.length == 0)
            if loaded_at is not None and loaded_at != state.modified_at:
                reason = "the file was changed in storage since the editor loaded it"
                raise WopiError(
                    409,
                    reason,
                    {"X-WOPI-Lock": state.lock_id, "X-WOPI-LockFailureReason": reason},  # as every PutFile 409
                    # LibreOffice Online, which sends X-LOOL-WOPI-Timestamp, reads only the older key
                    body={"COOLStatusCode": COOL_DOCUMENT_CHANGED, "LOOLStatusCode": COOL_DOCUMENT_CHANGED},
                )
            return state

        def change(t: Statements, blob: Blob) -> tuple[Saved, list[str]]:
            state, now = check(t), self.clock.now()
            if admit is not None:  # once the file's row is locked: see Tokens.require_live
                admit(t)
            unused = replace_content(
                t, file_id, state.content, None, blob.name, blob.size, blob.sha256, blob.quickxor, None, now
            )
            return Saved(state.version + 1, now), unused

        return self._store(
            lambda: self._written(source),
            lambda: self.db.query(check),
            lambda blob: self.db.transact(lambda t: change(t, blob)),
        )

    def put_relative(
        self,
        source_id: str,
        owner_id: str,
        target: Target,
        source: Readable,
        may_overwrite: Callable[[Session, File], bool],
        admit: Admit | None = None,
    ) -> File:
        """PutRelativeFile: a new file beside `source_id`, or (specific name + overwrite) a replaced one, if
        `may_overwrite(s, file)` it; `admit` as in put_named."""
        folder_id = self.get(source_id).folder_id
        return self.create_relative(folder_id, owner_id, target, source, source_id, may_overwrite, admit)

    def create_relative(
        self,
        folder_id: str,
        owner_id: str,
        target: Target,
        source: Readable,
        source_id: str | None = None,
        may_overwrite: Callable[[Session, File], bool] = lambda s, file: True,
        admit: Admit | None = None,
    ) -> File:
        """A file in `folder_id` named as `target` says (PutRelativeFile beside `source_id`, CreateChildFile):
        a new one, or (specific name + overwrite) a replaced one; a file the caller may not overwrite is a
        taken name (409, with a free one to retry with). `admit` as in put_named."""
        if not target.suggested:
            try:
                if target.problem is not None:
                    raise InvalidName(target.problem)
                target = replace(target, name=check(target.name))  # composed, as every stored name is
            except InvalidName as exc:
                raise self._target_error(400, str(exc), folder_id, target.name) from None

        def validate(s: Session) -> File | None:
            """The file to overwrite, or None for a new one. The folder is locked first: what the name
            means cannot change until the transaction ends (two saves racing for one name)."""
            nonlocal folder_id
            if source_id is not None:  # beside the source where it is now: it may have moved as the body came
                folder_id = load_file_in_folder(s, source_id).folder_id
            else:
                lock_folder(s, folder_id)
            if target.suggested:
                return None
            if folder_named(s, folder_id, target.name) is not None:
                raise self._target_error(409, "a folder with that name exists", folder_id, target.name, UNLOCKED)
            existing = file_named(s, folder_id, target.name)
            if existing is None:
                return None
            if not may_overwrite(s, existing):  # nor is its lock this token's to learn
                reason = ", which this token may not overwrite" if target.overwrite else ""
                raise self._target_error(409, f"a file with that name exists{reason}", folder_id, target.name, UNLOCKED)
            if not target.overwrite:
                held = self._lock_headers(s, existing)
                raise self._target_error(409, "a file with that name exists", folder_id, target.name, held)
            require_write_access(s, existing, self.clock.now(), None, unlocked_ok=True)
            return existing

        def apply(s: Session, blob: Blob, existing: File | None) -> tuple[File, list[str]]:
            if admit is not None:
                admit(s, folder_id, blob.size - (existing.size if existing is not None else 0))
            if existing is None:
                name = self.free_name(s, folder_id, target.name) if target.suggested else target.name
                return self.insert(s, folder_id, name, owner_id, blob.name, blob.size, blob.sha256, blob.quickxor), []
            return existing, self.set_content(s, existing, None, blob.name, blob.size, blob.sha256, blob.quickxor)

        return self._write_blob(source, validate, apply)

    def put_named(
        self,
        folder_id: str | Locate | Place,
        name: str,
        user_id: str,
        source: Readable,
        conflict: str = "replace",
        if_match: Callable[[File | None], None] | None = None,
        limit: int | None = None,
        admit: Admit | None = None,
    ) -> tuple[File, bool]:
        """A file named `name` in `folder_id` (a folder's id, or what finds it: Locate, asked again in the
        transaction that lands the bytes; or what makes it there: Place) with the content of `source` (Graph's
        simple upload); whether it is new. A taken name fails, is replaced or gets a free name (`conflict`,
        CONFLICT_BEHAVIOURS); a folder's name is never replaced. `if_match` checks the file that has the name
        (claim_name); `admit(s, folder_id, growth)` whether the change may land in that folder and add that many
        bytes (the caller's reach, a quota), asked in its transaction once the bytes are in, after its row locks."""
        name = check(name)

        def validate(s: Session) -> tuple[str, File | None] | None:
            if not isinstance(folder_id, str) and folder_id(s) is None:  # a Place still to make: no name to claim
                if if_match is not None:
                    if_match(None)
                return None
            folder = lock_folder_at(s, folder_id)
            return folder.id, self.claim_name(s, folder.id, name, conflict, user_id, if_match)

        def apply(
            s: Session, blob: Blob, claimed: tuple[str, File | None] | None
        ) -> tuple[tuple[File, bool], list[str]]:
            assert claimed is not None  # a Place makes its folder in the write transaction
            folder_id, existing = claimed
            if admit is not None:
                admit(s, folder_id, blob.size - (existing.size if existing is not None else 0))
            if existing is None:
                return (
                    self.insert(
                        s,
                        folder_id,
                        self.free_name(s, folder_id, name, style=counted),
                        user_id,
                        blob.name,
                        blob.size,
                        blob.sha256,
                        blob.quickxor,
                    ),
                    True,
                ), []
            return (existing, False), self.set_content(
                s, existing, user_id, blob.name, blob.size, blob.sha256, blob.quickxor
            )

        return self._write_blob(source, validate, apply, limit)

    def replace(
        self,
        file_id: str,
        user_id: str,
        source: Readable,
        if_match: Callable[[File], None] | None = None,
        limit: int | None = None,
        admit: Admit | None = None,
    ) -> File:
        """New content for an existing file, from outside WOPI (409 while a lock holds it); `if_match` and
        `admit` as in put_named."""

        def validate(s: Session) -> File:
            file = load_file_in_folder(s, file_id)
            if if_match is not None:
                if_match(file)
            self.check_writable(s, file)
            return file

        def apply(s: Session, blob: Blob, file: File) -> tuple[File, list[str]]:
            if admit is not None:
                admit(s, file.folder_id, blob.size - file.size)
            return file, self.set_content(s, file, user_id, blob.name, blob.size, blob.sha256, blob.quickxor)

        return self._write_blob(source, validate, apply, limit)

    def copy(
        self,
        file_id: str,
        folder_id: str | Locate,
        name: str,
        user_id: str,
        conflict: str = "fail",
        admit: Admit | None = None,
    ) -> File:
        """A new file, owned by `user_id`, named `name` in `folder_id`, with the content `file_id` has now, in a
        blob of its own: every blob belongs to one file, whose deletion releases it. A taken name fails, gets a
        free name, or (`replace`) the file that has it is deleted and the copy takes its place (a new item, as
        Graph's copy makes); a file is never replaced by a copy of itself, nor a folder. `folder_id` and `admit`
        as in put_named."""
        name = checked_name(name)

        def validate(s: Session) -> tuple[str, File | None]:
            folder = lock_folder_at(s, folder_id)
            existing = self.claim_name(s, folder.id, name, conflict, user_id)
            if existing is not None and existing.id == file_id:
                raise name_taken_error(name)
            return folder.id, existing

        def apply(s: Session, blob: Blob, claimed: tuple[str, File | None]) -> tuple[File, builtins.list[str]]:
            folder_id, existing = claimed
            if admit is not None:
                admit(s, folder_id, blob.size - (existing.size if existing is not None else 0))
            unused: builtins.list[str] = []
            if existing is not None:
                unused += self.delete_in(s, existing)
                s.flush()  # the row goes before the copy takes its name: (folder, name) is unique
            name_here = self.free_name(s, folder_id, name, style=counted)
            return self.insert(
                s, folder_id, name_here, user_id, blob.name, blob.size, blob.sha256, blob.quickxor
            ), unused

        return self._in_blob(lambda: self.copy_content(file_id), validate, apply)

    def claim_name(
        self,
        s: Session,
        folder_id: str,
        name: str,
        conflict: str,
        user_id: str,
        if_match: Callable[[File | None], None] | None = None,
    ) -> File | None:
        """What a new file named `name` in `folder_id` means: None (create it, under a free name if
        `conflict` is "rename") or the file it replaces; 409 nameAlreadyExists where it may do neither.
        `if_match` checks the file that has the name now, or None (whatever the conflict behaviour: an
        If-Match holds for no file). Locks the folder first: what the name means cannot change until the
        transaction ends."""
        lock_folder(s, folder_id)
        existing = file_named(s, folder_id, name)
        if if_match is not None:
            if_match(existing)
        if conflict == "rename":
            return None
        if folder_named(s, folder_id, name) is not None or (existing is not None and conflict == "fail"):
            raise name_taken_error(name)
        if existing is not None:
            self.check_writable(s, existing)
        return existing

    def rename(
        self,
        file_id: str,
        requested_base: str,
        lock_id: str | None,
        coauth_lock_id: str | None = None,
        admit: Admit | None = None,
    ) -> Renamed:
        """RenameFile: the extension is kept, a taken name gets a ' (n)' suffix. `admit` as in put_named: the
        request may have carried a whole document (Collabora's), which took long enough for its token to go.
        The extension kept is the one the file has in this transaction, whatever the request saw before."""
        with self.db.write() as s:
            file = load_file_in_folder(s, file_id)
            if admit is not None:
                admit(s, file.folder_id, 0)
            require_write_access(s, file, self.clock.now(), lock_id, coauth_lock_id, unlocked_ok=True)
            kept = split_extension(file.name)[1]  # "" for a name without one
            name = check(requested_base + kept)
            file.name = self.free_name(s, file.folder_id, name, ignore_id=file.id)
            file.name_key = name_key(file.name)
            file.sequence_number += 1
            return Renamed(file, file.name[: len(file.name) - len(kept)])  # not split_extension: "notes.txt" has none

    def delete(self, file_id: str, force: bool = False, admit: Admit | None = None) -> builtins.list[str]:
        """Delete a file; 409 while it is locked, unless `force` (an admin's `files rm --force`) removes its
        WOPI and coauth locks first, in the same transaction. `admit(s, folder_id, 0)` whether the caller may
        still (its token, revoked while the deletion waited for the file), asked once the file's row is held.
        Returns the ids of the live locks removed."""
        with self.db.write() as s:
            file = load_file(s, file_id)
            if admit is not None:
                admit(s, file.folder_id, 0)
            removed = []
            if force:
                now = self.clock.now()
                held = [live_lock(s, file_id, now), *live_coauth_locks(s, file_id, now)]
                removed = [lock.lock_id for lock in held if lock is not None]
                for table in (Lock, CoauthLock):
                    s.execute(sa.delete(table).where(table.file_id == file_id))
            unused = self.delete_in(s, file)
        for blob in unused:
            self.blobs.release(blob)
        return removed

    def check_writable(self, s: Session, file: File) -> None:
        """409 while a WOPI or coauth lock holds the file: it may be changed only by its lock holder."""
        require_write_access(s, file, self.clock.now(), None, unlocked_ok=True)

    def delete_in(self, s: Session, file: File) -> set[str]:
        """Delete a file inside a transaction (409 while it is locked), and its unfinished upload sessions and its
        workbook sessions with it; returns its blobs and theirs, to delete once committed."""
        self.check_writable(s, file)
        sessions = [*end_with_file(s, file.id), *end_workbook_sessions(s, file.id)]
        unused = {*file.content.blobs, *drop_alternate_streams(s, file.id), *sessions}
        for table in (Lock, ContentProperty, Activity):  # rows the cascade would remove, expired ones too
            s.execute(sa.delete(table).where(table.file_id == file.id))
        s.delete(file)
        return unused

    # -- helpers ------------------------------------------------------------------

    def _write_blob(
        self,
        source: Readable,
        validate: Callable[[Session], C],
        apply: Callable[[Session, Blob, C], tuple[T, builtins.list[str]]],
        limit: int | None = None,
    ) -> T:
        """`_in_blob` with `source` written to the blob."""
        return self._in_blob(lambda: self._written(source, limit), validate, apply)

    def _in_blob(
        self,
        make: Callable[[], Blob],
        validate: Callable[[Session], C],
        apply: Callable[[Session, Blob, C], tuple[T, builtins.list[str]]],
    ) -> T:
        """`_store` in ORM sessions: `validate` in a read transaction, then in the write transaction before
        `apply`.

        `validate` takes the row locks the change needs, folder before file (every transaction takes them
        in that order, so none waits for another in a circle), checks, and returns what `apply` acts on.
        `apply` returns its result and the blobs that the change made unused.
        """

        def check() -> None:
            with self.db.read() as s:
                validate(s)

        def change(blob: Blob) -> tuple[T, builtins.list[str]]:
            with self.db.write() as s:
                return apply(s, blob, validate(s))

        return self._store(make, check, change)

    def _store(
        self,
        make: Callable[[], Blob],
        check: Callable[[], object],
        change: Callable[[Blob], tuple[T, builtins.list[str]]],
    ) -> T:
        """Check, `make` a new blob (a body streamed to it, a copy), then `change` (a transaction that checks
        again and applies); its result. `change` also returns the blobs it made unused, deleted once it has
        committed; if it raises, the new blob is deleted instead."""
        check()  # fail fast, before a possibly huge body is read
        blob = make()
        with blob:
            try:
                result, unused = change(blob)
            except BaseException as exc:
                discard(self.blobs, blob.name, exc)
                raise
        for name in unused:
            self.blobs.release(name)
        return result

    def _written(self, source: Readable, limit: int | None = None) -> Blob:
        """A new blob with what `source` holds: at most `limit` bytes, and never more than max_size (413)."""
        try:
            return self.blobs.write(source, min(limit or self.max_size, self.max_size))
        except TooLarge as exc:
            raise WopiError(413, str(exc)) from None

    def copy_content(self, file_id: str, seen: File | None = None) -> Blob:
        """A new blob with the content the file has now (or had as `seen`, while its blobs are still there)."""
        file, opened = self._open_blobs(file_id, seen)
        with opened:
            copy = self.blobs.concat(opened, file.content)
        # the same bytes: a hash the source has holds for the copy (concat makes none)
        copy.sha256, copy.quickxor = file.sha256, file.quickxor
        return copy

    def insert(
        self,
        s: Session,
        folder_id: str,
        name: str,
        owner_id: str,
        blob: str,
        size: int,
        sha256: str,
        quickxor: str,
        extents: Extents | None = None,
    ) -> File:
        """A new file row whose content is the whole of `blob`, or `extents` (then `blob` is unused);
        `sha256` and `quickxor` (base64) are "" where unknown."""
        now = self.clock.now()
        file = File(
            id=new_id(),
            folder_id=folder_id,
            name=name,
            name_key=name_key(name),
            owner_id=owner_id,
            size=size,
            version=1,
            sequence_number=1,
            blob=blob,
            sha256=sha256,
            quickxor=quickxor,
            created_at=now,
            modified_at=now,
        )
        if extents is not None:
            file.keep_extents(extents)
        s.add(file)
        s.flush()
        return file

    def set_content(
        self,
        s: Session,
        file: File,
        user_id: str | None,
        blob: str,
        size: int,
        sha256: str,
        quickxor: str,
        extents: Extents | None = None,
    ) -> builtins.list[str]:
        """New MainContent from outside PutChunkedFile (contents.py), in `s`'s transaction, as in `insert`;
        returns the blobs it made unused."""
        with Statements.in_session(s) as t:
            now = self.clock.now()
            unused = replace_content(t, file.id, file.content, user_id, blob, size, sha256, quickxor, extents, now)
        s.refresh(file)
        return unused

    @staticmethod
    def free_name(
        s: Session, folder_id: str, name: str, ignore_id: str | None = None, style: Callable[[str, int], str] = numbered
    ) -> str:
        """`name`, or the first free one of its numbered forms (`style`), in `folder_id`."""
        for n in range(1, MAX_NUMBERED_NAMES):
            candidate = name if n == 1 else style(name, n)
            if not name_taken(s, folder_id, candidate, ignore_id):
                return candidate
        base, ext = split_extension(name)
        return f"{base} ({new_id(8)}){ext}"

    def _lock_headers(self, s: Session, file: File) -> dict[str, str]:
        """X-WOPI-Lock of a 409 about `file` as a target: its live WOPI lock, "" when it has none; left out while
        coauth locks hold it, as every 409 then does (locks.py)."""
        now = self.clock.now()
        lock = live_lock(s, file.id, now)
        if lock is not None:
            return {"X-WOPI-Lock": lock.lock_id}
        return {} if live_coauth_locks(s, file.id, now) else UNLOCKED

    def _target_error(
        self, status: int, reason: str, folder_id: str, requested: str, lock: dict[str, str] | None = None
    ) -> WopiError:
        """400/409 for a specific PutRelativeFile or CreateChildFile target, naming a name the client may
        retry with; a 409 also names the target's lock (`lock`: its X-WOPI-Lock), as WOPI asks of every 409."""
        with self.db.read() as s:
            valid = self.free_name(s, folder_id, sanitize(requested))
        headers = {"X-WOPI-ValidRelativeTarget": encode_utf7(valid), **(lock or {})}
        if status == 400:
            headers["X-WOPI-InvalidFileNameError"] = reason
        return WopiError(status, reason, headers)


def lock_folder_at(s: Session, folder: str | Locate | Place) -> Folder:
    """The folder `folder` is the id of, or that it finds (Locate), locked; found again once locked, until it
    still finds it: a folder's row is held by any change that would rename or move it. 400 if it finds a file."""
    if isinstance(folder, str):
        return lock_folder(s, folder)
    while True:
        found = folder(s)
        if not isinstance(found, Folder):
            raise WopiError(400, "a file has no children", code="invalidRequest")
        locked = lock_folder(s, found.id)
        again = folder(s)
        if again is not None and again.id == locked.id:
            return locked
