"""WOPI locks (docs/wopi.md §2): every transition is one transaction holding the file row.

The state table, with L the lock id in the request and C the current lock:

    operation         unlocked            L == C            L != C
    Lock              set, 200            refresh, 200      409 C
    UnlockAndRelock   409 ""              (Old == C) set L  409 C
    RefreshLock       409 ""              refresh, 200      409 C
    Unlock            409 ""              remove, 200       409 C
    GetLock           200 ""              200 C             200 C

A lock whose time has passed (30 minutes, or what the client asked with CSPP Plus's
X-WOPI-LockExpirationTimeout) is no lock at all. While coauth locks (coauth.py) hold a
file, every WOPI lock operation conflicts, and its 409 leaves X-WOPI-Lock out.

A lock taken, refreshed or relocked with X-WOPI-LockUserVisible: true remembers the
display name of its taker until its next change; every 409 it causes names that user in
X-WOPI-ConflictingLockUsername (docs/wopi.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import bad_request, conflict
from .models import LOCK_ID_LENGTH, CoauthLock, File, Lock
from .names import encode_utf7
from .repository import load_file
from .text import text_problem

LOCK_TTL = timedelta(minutes=30)
LOCK_TTL_RANGE = (60, 3600)  # seconds a client may ask for (X-WOPI-LockExpirationTimeout)


@dataclass(frozen=True)
class LockRequest:
    """What a Lock, RefreshLock or UnlockAndRelock asks for besides the lock id."""
    ttl: timedelta = LOCK_TTL
    visible_as: str | None = None  # the taker's display name, when they may be shown


def parse_lock_id(value: str | None, header: str = "X-WOPI-Lock") -> str:
    """A lock id from a request header: required, at most 1024 ASCII characters, kept verbatim."""
    if not value:
        raise bad_request(f"{header} is missing or empty")
    if len(value) > LOCK_ID_LENGTH:
        raise bad_request(f"{header} is longer than {LOCK_ID_LENGTH} characters")
    if not value.isascii():
        raise bad_request(f"{header} contains non-ASCII characters")
    problem = text_problem(value)
    if problem is not None:
        raise bad_request(f"{header} {problem}")
    return value


def live_lock(session: Session, file_id: str, now: datetime) -> Lock | None:
    row = session.get(Lock, file_id)
    return row if row is not None and row.expires_at > now else None


def current_lock(session: Session, file_id: str, now: datetime) -> str | None:
    row = live_lock(session, file_id, now)
    return row.lock_id if row is not None else None


def held_by(row: Lock) -> dict[str, str]:
    """The headers a 409 caused by the WOPI lock `row` carries besides X-WOPI-Lock: who holds it, if they
    may be shown (UTF-7, as WOPI's other name headers, so that any name fits in a header)."""
    return {"X-WOPI-ConflictingLockUsername": encode_utf7(row.user_name)} if row.user_name else {}


def live_coauth_locks(session: Session, file_id: str, now: datetime) -> list[CoauthLock]:
    query = (sa.select(CoauthLock).where(CoauthLock.file_id == file_id, CoauthLock.expires_at > now)
             .order_by(CoauthLock.acquired_at, CoauthLock.lock_id))
    return list(session.scalars(query))


def require_write_access(session: Session, file: File, now: datetime, lock_id: str | None,
                         coauth_lock_id: str | None = None, unlocked_ok: bool = False) -> None:
    """409 unless the request shows the lock that holds the file (docs/cspp-plus.md §1.3 lock table).

    `unlocked_ok`: whether an unlocked file may be changed without a lock (PutFile on
    an empty file, RenameFile); otherwise an unlocked file conflicts too.
    """
    if lock_id and coauth_lock_id:
        raise bad_request("send X-WOPI-Lock or X-WOPI-CoauthLockId, not both")
    wopi_lock = live_lock(session, file.id, now)
    if wopi_lock is not None:
        if lock_id != wopi_lock.lock_id:
            raise conflict("the file is locked with another lock id", wopi_lock.lock_id, "WOPI-Lock",
                           held_by(wopi_lock))
        return
    coauth = live_coauth_locks(session, file.id, now)
    if not coauth:
        if not unlocked_ok:
            raise conflict("the file is not locked", "")
        return
    exclusive = [lock.lock_id for lock in coauth if lock.lock_type == "CoauthExclusive"]
    if exclusive:
        if coauth_lock_id != exclusive[0]:
            raise conflict("another client holds the CoauthExclusive lock", None, "WOPI-CoauthExclusiveLock")
    elif coauth_lock_id not in {lock.lock_id for lock in coauth}:
        raise conflict("the file is locked for coauthoring and X-WOPI-CoauthLockId is not a live coauth lock", None)


class Locks:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def lock(self, file_id: str, lock_id: str, how: LockRequest = LockRequest()) -> File:
        with self.db.write() as s:
            file, now = load_file(s, file_id), self.clock.now()
            require_write_access(s, file, now, lock_id, unlocked_ok=True)
            self._set(s, file_id, lock_id, now, how)
            return file

    def unlock_and_relock(self, file_id: str, new_lock_id: str, old_lock_id: str,
                          how: LockRequest = LockRequest()) -> File:
        return self._change_matching(file_id, old_lock_id,
                                     lambda s, now: self._set(s, file_id, new_lock_id, now, how))

    def refresh(self, file_id: str, lock_id: str, how: LockRequest = LockRequest()) -> File:
        return self.unlock_and_relock(file_id, lock_id, lock_id, how)  # a refresh is a relock with the same id

    def unlock(self, file_id: str, lock_id: str) -> File:
        return self._change_matching(file_id, lock_id, lambda s, now: s.delete(s.get(Lock, file_id)))

    def get(self, file_id: str) -> tuple[File, str]:
        with self.db.read() as s:
            file, now = load_file(s, file_id), self.clock.now()
            if live_coauth_locks(s, file_id, now):  # not expressible as a WOPI lock (docs/wopi.md §3.5)
                raise conflict("the file is locked for coauthoring", None)
            return file, current_lock(s, file_id, now) or ""

    def break_lock(self, file_id: str) -> str | None:
        """Remove whatever lock the file has (admin command); returns the lock id that was removed."""
        with self.db.write() as s:
            load_file(s, file_id)
            current = current_lock(s, file_id, self.clock.now())
            row = s.get(Lock, file_id)
            if row is not None:
                s.delete(row)
            return current

    def _change_matching(self, file_id: str, lock_id: str,
                         change: Callable[[Session, datetime], None]) -> File:
        """Apply `change` if the file is locked with `lock_id`; 409 otherwise (also when unlocked)."""
        with self.db.write() as s:
            file, now = load_file(s, file_id), self.clock.now()
            require_write_access(s, file, now, lock_id)
            change(s, now)
            return file

    @staticmethod
    def _set(session: Session, file_id: str, lock_id: str, now: datetime, how: LockRequest) -> None:
        row = session.get(Lock, file_id)
        if row is None:
            session.add(Lock(file_id=file_id, lock_id=lock_id, expires_at=now + how.ttl, user_name=how.visible_as))
        else:
            row.lock_id, row.expires_at, row.user_name = lock_id, now + how.ttl, how.visible_as
