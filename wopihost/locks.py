"""WOPI locks (spec wopi-core §2): every transition is one transaction holding the file row.

The state table, with L the lock id in the request and C the current lock:

    operation         unlocked            L == C            L != C
    Lock              set, 200            refresh, 200      409 C
    UnlockAndRelock   409 ""              (Old == C) set L  409 C
    RefreshLock       409 ""              refresh, 200      409 C
    Unlock            409 ""              remove, 200       409 C
    GetLock           200 ""              200 C             200 C

A lock whose 30 minutes have passed is no lock at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import bad_request, conflict
from .models import LOCK_ID_LENGTH, File, Lock
from .repository import load_file

LOCK_TTL = timedelta(minutes=30)


def parse_lock_id(value: str | None, header: str = "X-WOPI-Lock") -> str:
    """A lock id from a request header: required, at most 1024 ASCII characters, kept verbatim."""
    if not value:
        raise bad_request(f"{header} is missing or empty")
    if len(value) > LOCK_ID_LENGTH:
        raise bad_request(f"{header} is longer than {LOCK_ID_LENGTH} characters")
    if not value.isascii():
        raise bad_request(f"{header} contains non-ASCII characters")
    return value


def current_lock(session: Session, file_id: str, now: datetime) -> str | None:
    row = session.get(Lock, file_id)
    return row.lock_id if row is not None and row.expires_at > now else None


def require_lock_match(session: Session, file: File, lock_id: str | None, now: datetime,
                       unlocked_ok: bool) -> None:
    """409 unless the file is unlocked (and that is acceptable here) or locked with `lock_id`."""
    current = current_lock(session, file.id, now)
    if current is None:
        if not unlocked_ok:
            raise conflict("the file is not locked", "")
    elif current != lock_id:
        raise conflict("the file is locked with another lock id", current)


class Locks:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def lock(self, file_id: str, lock_id: str) -> File:
        with self.db.write() as s:
            file, now = load_file(s, file_id), self.clock.now()
            current = current_lock(s, file_id, now)
            if current is not None and current != lock_id:
                raise conflict("the file is locked with another lock id", current)
            self._set(s, file_id, lock_id, now)
            return file

    def unlock_and_relock(self, file_id: str, new_lock_id: str, old_lock_id: str) -> File:
        return self._change_matching(file_id, old_lock_id, lambda s, now: self._set(s, file_id, new_lock_id, now))

    def refresh(self, file_id: str, lock_id: str) -> File:
        return self.unlock_and_relock(file_id, lock_id, lock_id)  # a refresh is a relock with the same id

    def unlock(self, file_id: str, lock_id: str) -> File:
        return self._change_matching(file_id, lock_id, lambda s, now: s.delete(s.get(Lock, file_id)))

    def get(self, file_id: str) -> tuple[File, str]:
        with self.db.read() as s:
            file = load_file(s, file_id)
            return file, current_lock(s, file_id, self.clock.now()) or ""

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
            require_lock_match(s, file, lock_id, now, unlocked_ok=False)
            change(s, now)
            return file

    @staticmethod
    def _set(session: Session, file_id: str, lock_id: str, now: datetime) -> None:
        row = session.get(Lock, file_id)
        if row is None:
            session.add(Lock(file_id=file_id, lock_id=lock_id, expires_at=now + LOCK_TTL))
        else:
            row.lock_id, row.expires_at = lock_id, now + LOCK_TTL
