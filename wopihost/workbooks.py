"""Graph workbook sessions (docs/graph.md §10): persistent, non-persistent, and none.

Every call acts on the workbook as it is in storage (wopihost.xlsx, in a child process capped in memory and
time: xlsx/calculator.py) and, if it changed it, stores it back, so any worker or node serves any session. A
child keeps the last workbook it used, under what it was opened from (a file's version, a session copy's blob:
content that never changes under that name), so that the next call on it there skips opening it again.
A persistent session (and a call with no session) writes the file itself, as a WOPI client's save
would: a new version and sequence number, refused while someone else's lock holds the file. A
non-persistent session works on a copy of the file made when it was created, which goes when the
session is closed or expires, or with the file, and never touches the file. A user may have only so many
non-persistent sessions at once: each holds a copy that no quota counts.

A write is read-modify-write: it stores its result only if what it read is still current (the file's
version, or the session's copy), and otherwise starts again from what is there now, so concurrent
writes from any workers are never lost.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import WopiError
from .extents import Extent, Extents
from .faults import InsufficientStorage, Unavailable
from .ids import is_id, new_id
from .models import File, WorkbookOperation, WorkbookSession
from .repository import lock_user, locking
from .storage import Storage, discard
from .xlsx import Call, WorkbookError
from .xlsx.calculator import Calculator, Calculators
from .xlsx.errors import too_large

if TYPE_CHECKING:
    from .files import Admit, Files  # files.py ends a deleted file's sessions with end_with_file, from here

RETRIES = 5
# Workbook calls one worker runs at once, each in a child process of its own; the others wait. A call holds a whole
# workbook in memory (up to some 50 MiB per MiB of the size limit, docs/graph.md §10.3), and a child keeps it.
CALLS_AT_ONCE = 2
# createSession with respond-async runs in a thread of its own, each waiting for one of the CALLS_AT_ONCE: past
# this many under way in a worker, more are refused (503) rather than queued without end, every workbook call of
# the worker waiting behind them.
CREATES_AT_ONCE = 8
OPERATION_TTL = timedelta(hours=1)  # how long a finished operation can still be polled
FINISH_RETRIES = (0, 0.5, 1, 2, 4, 8, 16)  # seconds before each attempt to record an operation's end
# The thread making an async session lives only in its worker, and a worker killed, restarted or recycled takes it
# along. So the thread renews a heartbeat in the operation's row every HEARTBEAT seconds, and a poll that finds none
# for ORPHANED_AFTER (three missed) answers the operation failed, where it said "running" until it expired.
HEARTBEAT = 10.0
ORPHANED_AFTER = timedelta(seconds=30)
UNFINISHED = ("notStarted", "running")
ORPHANED = json.dumps(
    {
        "code": "serviceNotAvailable",
        "message": "the worker making the session stopped (restarted, upgraded or failed) before it was made; "
        "create the session again",
    }
)

log = logging.getLogger(__name__)


class _Changed(Exception):
    """What a write read is no longer current: read again."""


def end_with_file(s: Session, file_id: str) -> list[str]:
    """Delete the workbook sessions of a file deleted in this transaction; returns their copies' blobs, to release
    once committed. Nothing can reach them any more (the file's URL answers 404), and left to expire a
    non-persistent one would hold its copy, and count towards its user's limit, for up to its idle lifetime.
    Row-locked in id order, as the sweep takes them: a write storing a new copy meanwhile either came first (its
    copy is the one read here) or finds no session and discards its own."""
    query = sa.select(WorkbookSession).where(WorkbookSession.file_id == file_id).order_by(WorkbookSession.id)
    rows = list(s.scalars(locking(s, query)))
    for row in rows:
        s.delete(row)
    return [row.blob for row in rows if row.blob]


def session_gone() -> WopiError:
    return WopiError(
        404,
        "the workbook session does not exist, was closed or has expired; create a new one",
        code="itemNotFound/invalidSessionReCreatable",
    )


class _Turns:
    """A lock for each key, kept while a thread holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}  # key -> its lock, and how many hold or wait

    @contextmanager
    def of(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users = self._locks[key][1] - 1
                if users:
                    self._locks[key] = (lock, users)
                else:
                    del self._locks[key]


class Workbooks:
    def __init__(
        self,
        db: Database,
        blobs: Storage,
        clock: Clock,
        files: Files,
        max_size: int,
        persistent_ttl: float,
        temporary_ttl: float,
        max_temporary_per_user: int,
        memory: int,
        seconds: float,
    ):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.files = files
        self.max_size = max_size
        self.ttl = {True: timedelta(seconds=persistent_ttl), False: timedelta(seconds=temporary_ttl)}
        self.max_temporary_per_user = max_temporary_per_user
        self._calls = threading.BoundedSemaphore(CALLS_AT_ONCE)
        self._writes = _Turns()  # one file's writes in this process, one at a time (write)
        self._creates = threading.BoundedSemaphore(CREATES_AT_ONCE)
        self.calculators = Calculators(CALLS_AT_ONCE, max_size, memory, seconds)
        self.heartbeat = HEARTBEAT

    # -- sessions -------------------------------------------------------------------------------

    def create_session(self, file_id: str, user_id: str, persist: bool, admit: Admit | None = None) -> WorkbookSession:
        """A new session; the file must be a workbook this host can open (a non-persistent session's copy
        is made from it now). `admit` (as in Files.replace, adding nothing) is asked in the transaction that
        records it: whoever asked may have lost the drive, or their token, since their request was checked.
        429 while the user has as many non-persistent sessions as allowed (`_room`)."""
        if not persist:  # refused before the workbook is opened and copied; counted again as the session is recorded
            with self.db.read() as s:
                self._room(s, user_id)
        with self._calls, self.calculators.taken(file_id) as calculator:
            data, version = self._file_bytes(file_id)
            calculator.run((file_id, version), data, Call("worksheets"))  # refused now, not at its first call
        blob = None if persist else self.blobs.write(io.BytesIO(data), len(data), sha256=False, quickxor=False)
        now = self.clock.now()
        row = WorkbookSession(
            id=new_id(),
            file_id=file_id,
            user_id=user_id,
            persist=persist,
            blob=blob.name if blob else None,
            base_version=version,
            created_at=now,
            expires_at=now + self.ttl[persist],
        )
        try:
            with self.db.write() as s:
                # Held against change until the commit: a deletion of the file either comes first (404) or waits and
                # ends this session with the file (end_with_file), which it would otherwise miss, uncommitted.
                query = sa.select(File).where(File.id == file_id)
                file = s.scalars(locking(s, query, read=True)).one_or_none()
                if file is None:  # deleted while its copy was made
                    raise WopiError(404, "the file no longer exists", code="itemNotFound")
                if not persist:
                    lock_user(s, user_id)  # one user's sessions are made one at a time, so the count holds
                    self._room(s, user_id)
                if admit is not None:  # after every other row lock: it asks the token last (Tokens.require_live)
                    admit(s, file.folder_id, 0)
                s.add(row)
        except BaseException as exc:
            if blob is not None:
                discard(self.blobs, blob.name, exc)
            raise
        finally:
            if blob is not None:
                blob.release()
        if row.blob:  # the session's first call will want it
            self.calculators.rename((file_id, version), (file_id, row.blob))
        return row

    def _room(self, s: Session, user_id: str) -> None:
        """429, with the seconds until the first of them expires in Retry-After, while `user_id` has as many live
        non-persistent sessions as allowed: each holds a copy of its workbook that no quota counts. Closed and
        expired ones do not count (a closed one is deleted; an expired one waits for the sweep)."""
        now = self.clock.now()
        query = sa.select(WorkbookSession.expires_at).where(
            WorkbookSession.user_id == user_id, WorkbookSession.persist.is_(False), WorkbookSession.expires_at > now
        )
        expiries = list(s.scalars(query))
        if len(expiries) >= self.max_temporary_per_user:
            wait = max(1, math.ceil((min(expiries) - now).total_seconds()))
            raise WopiError(
                429,
                f"this user already has {len(expiries)} non-persistent workbook sessions, the most allowed "
                "(WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER); close one (closeSession) or let one expire",
                {"Retry-After": str(wait)},
                code="activityLimitReached/tooManyRequestsUncategorized",
            )

    def refresh(self, session_id: str, file_id: str, user_id: str) -> None:
        with self.db.write() as s:
            self._session(s, session_id, file_id, user_id)

    def close(self, session_id: str, file_id: str, user_id: str) -> None:
        with self.db.write() as s:
            row = self._session(s, session_id, file_id, user_id)
            s.delete(row)
        if row.blob:
            self.blobs.release(row.blob)

    def sweep(self) -> int:
        """Delete expired sessions (and their copies) and operations; returns how many sessions went."""
        now = self.clock.now()
        with self.db.write() as s:
            # Row-locked, skipping what another transaction holds (as sessions.sweep): a call sliding a session's
            # expiry, or a deletion of its file ending it, decides that row, and the next sweep takes what is left of
            # them. Read without the lock, a slid session was deleted all the same; waited for, the deletion of a
            # folder, which locks its files' sessions file by file, not in id order, deadlocked with the sweep.
            query = sa.select(WorkbookSession).where(WorkbookSession.expires_at <= now).order_by(WorkbookSession.id)
            expired = list(s.scalars(locking(s, query, skip_locked=True)))
            for row in expired:
                s.delete(row)
            s.execute(sa.delete(WorkbookOperation).where(WorkbookOperation.expires_at <= now))
        for row in expired:
            if row.blob:
                self.blobs.release(row.blob)
        return len(expired)

    # -- calls ------------------------------------------------------------------------------------

    def read(self, file_id: str, session_id: str | None, user_id: str, call: Call) -> Any:
        """What `call` answers (JSON-ready) on the workbook the session acts on."""
        with self._calls, self.calculators.taken(file_id) as calculator:
            basis, data = self._current(calculator, file_id, session_id, user_id)
            return calculator.run((file_id, basis), data, call)[0]

    def write(self, file_id: str, session_id: str | None, user_id: str, call: Call, admit: Admit | None = None) -> Any:
        """Make `call` on the workbook and store the result where the session says, read-modify-write. `admit` (as
        in Files.replace) is asked in the transaction that writes the file itself: the drive's quota, the caller's
        reach; a non-persistent session's copy is not the drive's, and is not asked.

        A process's writes to one file's workbooks take turns, before they take a place among the calls: side
        by side, each would calculate from the same version and all but one lose the store's compare-and-set,
        again and again. Writes of other processes still may: a write that loses RETRIES times is a 503."""
        with self._writes.of(file_id), self._calls, self.calculators.taken(file_id) as calculator:
            for _ in range(RETRIES):
                basis, data = self._current(calculator, file_id, session_id, user_id)
                # a session copy is nobody's file: what a save cannot keep of it need not refuse a what-if write
                whole = isinstance(basis, int)
                result, changed = calculator.run((file_id, basis), data, call, write=True, whole=whole)
                assert changed is not None
                if len(changed) > self.max_size:  # stored, it would open nowhere: the session or file would be lost
                    raise too_large(len(changed), self.max_size, "would be")
                try:
                    stored = self._store(file_id, session_id, user_id, basis, changed, admit)
                except _Changed:
                    continue
                calculator.holds = (file_id, stored)
                return result
        raise Unavailable("the workbook is being changed too often; retry", retry_after=1)

    # -- long-running creation ----------------------------------------------------------------------

    def start_create(self, file_id: str, user_id: str, persist: bool, admit: Admit | None = None) -> str:
        """createSession with Prefer: respond-async: an operation id at once; the session is made in a
        thread (`admit` asked as `create_session` asks it), and its status is in the database for any worker to
        answer a poll."""
        if not persist:  # answered at once, as without respond-async; counted again as the session is recorded
            with self.db.read() as s:
                self._room(s, user_id)
        if not self._creates.acquire(blocking=False):
            raise Unavailable(f"{CREATES_AT_ONCE} workbook sessions are being made here already; retry", retry_after=5)
        try:
            operation_id = self._record_operation(file_id, user_id, persist)
            threading.Thread(
                target=self._run, args=(operation_id, admit), name="wopihost-workbook", daemon=True
            ).start()
        except BaseException:
            self._creates.release()
            raise
        return operation_id

    def _record_operation(self, file_id: str, user_id: str, persist: bool) -> str:
        now = self.clock.now()
        operation = WorkbookOperation(
            id=new_id(),
            file_id=file_id,
            user_id=user_id,
            persist=persist,
            status="notStarted",
            created_at=now,
            expires_at=now + OPERATION_TTL,
            heartbeat_at=now,
        )
        with self.db.write() as s:
            s.add(operation)
        return operation.id

    def operation(self, operation_id: str, file_id: str, user_id: str) -> WorkbookOperation:
        row = self._operation(operation_id)
        now = self.clock.now()
        if row is None or row.file_id != file_id or row.user_id != user_id or row.expires_at <= now:
            raise WopiError(404, "no such workbook operation", code="itemNotFound")
        if row.status in UNFINISHED and (row.heartbeat_at or row.created_at) < now - ORPHANED_AFTER:
            self._give_up(operation_id, now - ORPHANED_AFTER)
            row = self._operation(operation_id) or row  # failed, or ended or beat meanwhile; swept: as it was
        return row

    def session_info(self, session_id: str, file_id: str, user_id: str) -> WorkbookSession:
        with self.db.write() as s:
            return self._session(s, session_id, file_id, user_id)

    def _run(self, operation_id: str, admit: Admit | None = None) -> None:
        try:
            self._run_beating(operation_id, admit)
        finally:
            self._creates.release()

    def _run_beating(self, operation_id: str, admit: Admit | None) -> None:
        stop = threading.Event()
        beating = threading.Thread(
            target=self._beat, args=(operation_id, stop), name="wopihost-workbook-heartbeat", daemon=True
        )
        beating.start()
        try:
            session, outcome = self._create(operation_id, admit)
            if not self._finish(operation_id, outcome) and session is not None:
                # Given up for lost meanwhile: nobody will learn of this session, so its copy need not wait to expire.
                try:
                    self.close(session.id, session.file_id, session.user_id)
                except (WopiError, Unavailable) as exc:  # left to expire
                    log.warning("workbook operation %s: its session could not be closed: %s", operation_id, exc)
        finally:
            stop.set()
            beating.join()

    def _create(self, operation_id: str, admit: Admit | None) -> tuple[WorkbookSession | None, dict[str, str]]:
        """The session an operation makes (None if it failed), and the operation's outcome."""
        try:
            self._set(operation_id, status="running")
            with self.db.read() as s:
                operation = s.get_one(WorkbookOperation, operation_id)
            session = self.create_session(operation.file_id, operation.user_id, operation.persist, admit)
        except (WopiError, WorkbookError) as exc:
            # a token revoked since the request (asked by `admit`) names no code of its own: Graph's for a 401
            code = getattr(exc, "code", None) or (
                "unauthenticated" if getattr(exc, "status", None) == 401 else "invalidRequest"
            )
            error = {"code": code.split("/")[0], "message": str(exc)}
        except (Unavailable, InsufficientStorage) as exc:  # what a request would answer 503 or 507
            code = "serviceNotAvailable" if isinstance(exc, Unavailable) else "insufficientStorage"
            error = {"code": code, "message": str(exc)}
        except Exception as exc:  # reported through the operation, and logged by whoever polls
            error = {"code": "internalServerError", "message": f"the session could not be made: {type(exc).__name__}"}
        else:
            return session, {"status": "succeeded", "session_id": session.id}
        return None, {"status": "failed", "error": json.dumps(error)}

    def _beat(self, operation_id: str, stop: threading.Event) -> None:
        """Renew the operation's heartbeat until its thread ends."""
        while not stop.wait(self.heartbeat):
            try:
                self._set(operation_id, heartbeat_at=self.clock.now())
            except Exception as exc:  # a beat missed (the database busy or away a moment); the next may land
                log.warning("workbook operation %s: its heartbeat could not be recorded: %s", operation_id, exc)

    def _finish(self, operation_id: str, outcome: dict[str, str]) -> bool:
        """Record how the operation ended; False if it had been given up for lost (its heartbeat missed), which
        stands. A database that refuses the write for a moment (what a request would answer 503) is tried again:
        with nobody to retry it, the operation would say "running" to every poll until its heartbeat went stale."""
        for delay in FINISH_RETRIES:
            time.sleep(delay)
            try:
                if self._set(operation_id, **outcome):
                    return True
                log.warning("workbook operation %s ended after it was given up for lost", operation_id)
                return False
            except (Unavailable, InsufficientStorage) as exc:
                log.warning("workbook operation %s: its end could not be recorded: %s", operation_id, exc)
        log.error("workbook operation %s: its end could not be recorded; it ends failed, as if lost", operation_id)
        return False

    def _give_up(self, operation_id: str, cutoff: datetime) -> None:
        """Fail an operation whose heartbeat is older than `cutoff`: its worker is gone. One conditional UPDATE,
        so a heartbeat or an end that its runner recorded meanwhile stands."""
        silent = sa.func.coalesce(WorkbookOperation.heartbeat_at, WorkbookOperation.created_at) < cutoff
        if self._set(operation_id, silent, status="failed", error=ORPHANED):
            log.warning(
                "workbook operation %s: no heartbeat since before %s; its worker is gone: failed", operation_id, cutoff
            )

    def _set(self, operation_id: str, *conditions, **values) -> bool:
        """Update the operation if it has not ended (and meets `conditions`); whether it had not."""
        with self.db.write() as s:
            query = sa.update(WorkbookOperation).where(
                WorkbookOperation.id == operation_id, WorkbookOperation.status.in_(UNFINISHED), *conditions
            )
            return bool(cast(sa.CursorResult, s.execute(query.values(**values))).rowcount)

    def _operation(self, operation_id: str) -> WorkbookOperation | None:
        with self.db.read() as s:
            return s.get(WorkbookOperation, operation_id) if is_id(operation_id) else None

    # -- helpers -------------------------------------------------------------------------------------

    def _session(self, s, session_id: str, file_id: str, user_id: str) -> WorkbookSession:
        """The live session, its expiry slid (in a write transaction); 404 if there is none for this file
        and user."""
        # Row-locked (as sessions.get): a closeSession or sweep that deletes the row meanwhile would otherwise
        # leave the expiry's UPDATE matching nothing (StaleDataError, a 500), and a close would release the copy
        # it read while a write stored another. No deadlock: a transaction here locks this one row and nothing
        # else (a persistent session's file is written in a transaction of its own, after this one).
        query = sa.select(WorkbookSession).where(WorkbookSession.id == session_id)
        row = s.scalars(locking(s, query)).one_or_none() if is_id(session_id) else None
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
                raise too_large(file.size, self.max_size)
            return content.read(), file.version

    def _current(
        self, calculator: Calculator, file_id: str, session_id: str | None, user_id: str
    ) -> tuple[int | str, bytes | None]:
        """What the workbook a call acts on is (the file's version, or the session copy's blob), and its bytes (None
        where `calculator` holds it), sliding the session's expiry."""
        for _ in range(RETRIES):
            blob = None
            if session_id is not None:
                with self.db.write() as s:
                    blob = self._session(s, session_id, file_id, user_id).blob
            if blob is None:  # the file itself
                version = self.files.get(file_id).version
                if calculator.holds == (file_id, version):
                    return version, None
                data, version = self._file_bytes(file_id)
                return version, data
            if calculator.holds == (file_id, blob):
                return blob, None
            try:
                with self.blobs.open([blob]) as opened:
                    return blob, b"".join(opened.pieces(Extents([Extent(blob, 0, opened.size(blob))])))
            except FileNotFoundError:  # another call in the session replaced the copy meanwhile
                continue
        raise Unavailable("the workbook session is being changed too often; retry", retry_after=1)

    def _store(
        self, file_id: str, session_id: str | None, user_id: str, basis: int | str, data: bytes, admit: Admit | None
    ) -> int | str:
        """Store a changed workbook where it was read from, if that is still current; returns what it is
        now stored as (the file's new version, the session copy's new blob)."""
        if isinstance(basis, int):  # the file itself, if it is still the version that was read

            def unchanged(file) -> None:
                if file.version != basis:
                    raise _Changed()

            return self.files.replace(file_id, user_id, io.BytesIO(data), unchanged, admit=admit).version
        blob = self.blobs.write(io.BytesIO(data), len(data), sha256=False, quickxor=False)
        with blob:
            try:
                with self.db.write() as s:
                    moved = cast(
                        sa.CursorResult,
                        s.execute(
                            sa.update(WorkbookSession)
                            .where(
                                WorkbookSession.id == session_id,
                                WorkbookSession.blob == basis,
                                WorkbookSession.expires_at > self.clock.now(),
                            )
                            .values(blob=blob.name)
                        ),
                    ).rowcount
                if not moved:
                    raise _Changed()
            except BaseException as exc:
                discard(self.blobs, blob.name, exc)
                raise
        self.blobs.release(basis)
        return blob.name
