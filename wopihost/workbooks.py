"""Graph workbook sessions (docs/graph.md §10): persistent, non-persistent, and none.

Every call opens the workbook from storage, acts on it (wopihost.xlsx) and, if it changed it, stores it
back; nothing of a workbook lives in a worker between calls, so any worker or node serves any session.
A persistent session (and a call with no session) writes the file itself, as a WOPI client's save
would: a new version and sequence number, refused while someone else's lock holds the file. A
non-persistent session works on a copy of the file made when it was created, which goes when the
session is closed or expires and never touches the file.

A write is read-modify-write: it stores its result only if what it read is still current (the file's
version, or the session's copy), and otherwise starts again from what is there now, so concurrent
writes from any workers are never lost.
"""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from typing import Callable, TypeVar

import sqlalchemy as sa

from .clock import Clock
from .db import Database
from .errors import WopiError
from .files import Files
from .ids import is_id, new_id
from .models import WorkbookOperation, WorkbookSession
from .storage import BlobStore
from .xlsx import Workbook, WorkbookError, open_workbook

T = TypeVar("T")
RETRIES = 5
OPERATION_TTL = timedelta(hours=1)  # how long a finished operation can still be polled


class _Changed(Exception):
    """What a write read is no longer current: read again."""


def session_gone() -> WopiError:
    return WopiError(404, "the workbook session does not exist, was closed or has expired; create a new one",
                     code="itemNotFound/invalidSessionReCreatable")


class Workbooks:
    def __init__(self, db: Database, blobs: BlobStore, clock: Clock, files: Files, max_size: int,
                 persistent_ttl: float, temporary_ttl: float):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.files = files
        self.max_size = max_size
        self.ttl = {True: timedelta(seconds=persistent_ttl), False: timedelta(seconds=temporary_ttl)}

    # -- sessions -------------------------------------------------------------------------------

    def create_session(self, file_id: str, user_id: str, persist: bool) -> WorkbookSession:
        """A new session; the file must be a workbook this host can open (a non-persistent session's copy
        is made from it now)."""
        data, version = self._file_bytes(file_id)
        open_workbook(data, self.max_size)  # refused now, not at the first call in the session
        blob = None if persist else self.blobs.write(io.BytesIO(data), len(data), sha256=False)
        now = self.clock.now()
        row = WorkbookSession(id=new_id(), file_id=file_id, user_id=user_id, persist=persist,
                              blob=blob.name if blob else None, base_version=version, created_at=now,
                              expires_at=now + self.ttl[persist])
        try:
            with self.db.write() as s:
                s.add(row)
        except BaseException:
            if blob is not None:
                self.blobs.delete(blob.name)
            raise
        finally:
            if blob is not None:
                blob.release()
        return row

    def refresh(self, session_id: str, file_id: str, user_id: str) -> None:
        with self.db.write() as s:
            self._session(s, session_id, file_id, user_id)

    def close(self, session_id: str, file_id: str, user_id: str) -> None:
        with self.db.write() as s:
            row = self._session(s, session_id, file_id, user_id)
            s.delete(row)
        if row.blob:
            self.blobs.delete(row.blob)

    def sweep(self) -> int:
        """Delete expired sessions (and their copies) and operations; returns how many sessions went."""
        now = self.clock.now()
        with self.db.write() as s:
            expired = list(s.scalars(sa.select(WorkbookSession).where(WorkbookSession.expires_at <= now)))
            for row in expired:
                s.delete(row)
            s.execute(sa.delete(WorkbookOperation).where(WorkbookOperation.expires_at <= now))
        for row in expired:
            if row.blob:
                self.blobs.delete(row.blob)
        return len(expired)

    # -- calls ------------------------------------------------------------------------------------

    def read(self, file_id: str, session_id: str | None, user_id: str, action: Callable[[Workbook], T]) -> T:
        data, _ = self._current(file_id, session_id, user_id)
        return action(open_workbook(data, self.max_size))

    def write(self, file_id: str, session_id: str | None, user_id: str, action: Callable[[Workbook], T]) -> T:
        """Act on the workbook and store the result where the session says, read-modify-write."""
        for _ in range(RETRIES):
            data, basis = self._current(file_id, session_id, user_id)
            book = open_workbook(data, self.max_size)
            result = action(book)
            try:
                self._store(file_id, session_id, user_id, basis, book.to_bytes())
            except _Changed:
                continue
            return result
        raise WopiError(409, "the workbook is being changed too often; retry", code="conflict")

    # -- long-running creation ----------------------------------------------------------------------

    def start_create(self, file_id: str, user_id: str, persist: bool) -> str:
        """createSession with Prefer: respond-async: an operation id at once; the session is made in a
        thread, and its status is in the database for any worker to answer a poll."""
        now = self.clock.now()
        operation = WorkbookOperation(id=new_id(), file_id=file_id, user_id=user_id, persist=persist,
                                      status="notStarted", created_at=now, expires_at=now + OPERATION_TTL)
        with self.db.write() as s:
            s.add(operation)
        threading.Thread(target=self._run, args=(operation.id,), name="wopihost-workbook", daemon=True).start()
        return operation.id

    def operation(self, operation_id: str, file_id: str, user_id: str) -> WorkbookOperation:
        with self.db.read() as s:
            row = s.get(WorkbookOperation, operation_id) if is_id(operation_id) else None
        if row is None or row.file_id != file_id or row.user_id != user_id or row.expires_at <= self.clock.now():
            raise WopiError(404, "no such workbook operation", code="itemNotFound")
        return row

    def session_info(self, session_id: str, file_id: str, user_id: str) -> WorkbookSession:
        with self.db.write() as s:
            return self._session(s, session_id, file_id, user_id)

    def _run(self, operation_id: str) -> None:
        self._set(operation_id, status="running")
        with self.db.read() as s:
            operation = s.get(WorkbookOperation, operation_id)
        try:
            session = self.create_session(operation.file_id, operation.user_id, operation.persist)
        except (WopiError, WorkbookError) as exc:
            code = getattr(exc, "code", None) or "invalidRequest"
            self._set(operation_id, status="failed", error=json.dumps({"code": code.split("/")[0],
                                                                        "message": str(exc)}))
        except Exception as exc:  # reported through the operation, and logged by whoever polls
            self._set(operation_id, status="failed", error=json.dumps({
                "code": "internalServerError", "message": f"the session could not be made: {type(exc).__name__}"}))
        else:
            self._set(operation_id, status="succeeded", session_id=session.id)

    def _set(self, operation_id: str, **values) -> None:
        with self.db.write() as s:
            s.execute(sa.update(WorkbookOperation).where(WorkbookOperation.id == operation_id).values(**values))

    # -- helpers -------------------------------------------------------------------------------------

    def _session(self, s, session_id: str, file_id: str, user_id: str) -> WorkbookSession:
        """The live session, its expiry slid (in a write transaction); 404 if there is none for this file
        and user."""
        row = s.get(WorkbookSession, session_id) if is_id(session_id) else None
        now = self.clock.now()
        if row is None or row.file_id != file_id or row.user_id != user_id or row.expires_at <= now:
            raise session_gone()
        if s.info.get("write"):
            row.expires_at = now + self.ttl[row.persist]
        return row

    def _file_bytes(self, file_id: str) -> tuple[bytes, int]:
        file, content = self.files.open_content(file_id)
        with content:
            if file.size > self.max_size:
                raise WorkbookError(413, "requestSizeExceeded", f"the workbook is {file.size} bytes; workbooks "
                                    f"of up to {self.max_size} bytes can be opened (WOPIHOST_MAX_WORKBOOK_SIZE)")
            return content.read(), file.version

    def _current(self, file_id: str, session_id: str | None, user_id: str) -> tuple[bytes, int | str]:
        """The bytes a call acts on and what they were read as (the file's version, or the session copy's
        blob), sliding the session's expiry."""
        if session_id is None:
            return self._file_bytes(file_id)
        for _ in range(RETRIES):
            with self.db.write() as s:
                row = self._session(s, session_id, file_id, user_id)
                blob = row.blob
            if blob is None:
                return self._file_bytes(file_id)
            try:
                with open(self.blobs.path(blob), "rb") as copy:
                    return copy.read(), blob
            except FileNotFoundError:  # another call in the session replaced the copy meanwhile
                continue
        raise WopiError(409, "the workbook session is being changed too often; retry", code="conflict")

    def _store(self, file_id: str, session_id: str | None, user_id: str, basis: int | str, data: bytes) -> None:
        if isinstance(basis, int):  # the file itself, if it is still the version that was read
            def unchanged(file) -> None:
                if file.version != basis:
                    raise _Changed()
            self.files.replace(file_id, user_id, io.BytesIO(data), unchanged)
            return
        blob = self.blobs.write(io.BytesIO(data), len(data), sha256=False)
        with blob:
            try:
                with self.db.write() as s:
                    moved = s.execute(sa.update(WorkbookSession).where(
                        WorkbookSession.id == session_id, WorkbookSession.blob == basis,
                        WorkbookSession.expires_at > self.clock.now()).values(blob=blob.name)).rowcount
                if not moved:
                    raise _Changed()
            except BaseException:
                self.blobs.delete(blob.name)
                raise
        self.blobs.delete(basis)
