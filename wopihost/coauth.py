"""CSPP Plus coauthoring locks: GetCoauthLock, RefreshCoauthLock, UnlockCoauthLock, GetCoauthTable.

A file holds either one WOPI lock or any number of coauth locks, never both. Coauth
locks are `Coauth` (shared) or `CoauthExclusive` (at most one holder), belong to
their lock id (not to a user) and each has its own 60-3600 s expiry; an expired
one does not exist. The table version changes whenever a row the table shows
changes (not when only an expiry moves): it is the stored counter, bumped on every
such write, plus the number of live rows, which tells apart the tables between
writes because expiry only ever removes rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock, to_epoch_ms
from .db import Database
from .errors import WopiError
from .locks import held_by, live_coauth_locks, live_lock
from .models import CoauthLock, File, Lock
from .prepared import Statements
from .repository import load_file

COAUTH, EXCLUSIVE = "Coauth", "CoauthExclusive"
TIMEOUT_RANGE = (60, 3600)
METADATA_LIMIT = 4096


@dataclass(frozen=True)
class CoauthTable:
    version: str
    rows: list[dict]


def table_of(file: File, locks: list[CoauthLock]) -> CoauthTable:
    rows = [
        {
            "CoauthLockId": lock.lock_id,
            "CoauthLockMetadata": lock.lock_metadata,
            "CoauthLockType": lock.lock_type,
            "UserFriendlyName": lock.user_friendly_name,
            "CoauthLockTime": to_epoch_ms(lock.acquired_at),
        }
        for lock in locks
    ]
    return CoauthTable(f"{file.coauth_table_version}.{len(locks)}", rows)


@dataclass(frozen=True)
class Broken:
    """What `CoauthLocks.break_all` removed: the live WOPI lock's id (or None) and the live coauth locks."""

    lock_id: str | None
    coauth: list[CoauthLock]


class CoauthLocks:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def get_lock(
        self,
        file_id: str,
        lock_id: str,
        lock_type: str,
        timeout: int,
        metadata: str,
        user_name: str,
        admit: Callable[[Statements], None] | None = None,
    ) -> CoauthTable:
        """GetCoauthLock. `admit(t)` whether the lock may still be taken, asked in its transaction once the file's
        row is locked (as Files.put asks it): the token may have been revoked while a metadata body came."""
        with self.db.write() as s:
            file, now, locks = self._live(s, file_id, admit)
            _no_wopi_lock(s, file_id, now)
            mine = next((lock for lock in locks if lock.lock_id == lock_id), None)
            if lock_type == EXCLUSIVE and any(lock.lock_type == EXCLUSIVE for lock in locks if lock is not mine):
                raise WopiError(
                    409,
                    "another client holds the CoauthExclusive lock",
                    {"X-WOPI-ConflictingMechanism": "WOPI-CoauthExclusiveLock"},
                )
            expires_at = now + timedelta(seconds=timeout)
            if mine is None:
                mine = CoauthLock(
                    file_id=file_id,
                    lock_id=lock_id,
                    lock_type=lock_type,
                    lock_metadata=metadata,
                    user_friendly_name=user_name,
                    acquired_at=now,
                    expires_at=expires_at,
                )
                s.add(mine)
                locks.append(mine)
                file.coauth_table_version += 1
            else:
                if (mine.lock_type, mine.lock_metadata) != (lock_type, metadata):
                    file.coauth_table_version += 1
                mine.lock_type, mine.lock_metadata, mine.expires_at = lock_type, metadata, expires_at
            return table_of(file, locks)

    def refresh(
        self,
        file_id: str,
        lock_id: str,
        timeout: int,
        metadata: str | None,
        admit: Callable[[Statements], None] | None = None,
    ) -> CoauthTable:
        """Restart the lock's expiry; a non-empty `metadata` replaces the stored one. `admit` as in get_lock."""
        with self.db.write() as s:
            file, now, locks = self._live(s, file_id, admit)
            mine = self._find(locks, lock_id)
            mine.expires_at = now + timedelta(seconds=timeout)
            if metadata and metadata != mine.lock_metadata:
                mine.lock_metadata = metadata
                file.coauth_table_version += 1
            return table_of(file, locks)

    def unlock(self, file_id: str, lock_id: str) -> CoauthTable:
        with self.db.write() as s:
            file, _, locks = self._live(s, file_id)
            mine = self._find(locks, lock_id)
            s.delete(mine)
            locks.remove(mine)
            file.coauth_table_version += 1
            return table_of(file, locks)

    def break_all(self, file_id: str) -> Broken:
        """Remove every lock of the file, its WOPI lock and its coauth locks, in one transaction (the admin's
        `lock break`: a crashed client's coauth lock would otherwise hold the file until it expires)."""
        with self.db.write() as s:
            file, now, locks = self._live(s, file_id)
            wopi = live_lock(s, file_id, now)
            lock_id = wopi.lock_id if wopi is not None else None
            s.execute(sa.delete(Lock).where(Lock.file_id == file_id))  # an expired one too: it is no lock
            s.execute(sa.delete(CoauthLock).where(CoauthLock.file_id == file_id))
            if locks:  # rows the table showed went, as with UnlockCoauthLock: its version moves on
                file.coauth_table_version += 1
            return Broken(lock_id, locks)

    def table(self, file_id: str) -> CoauthTable:
        with self.db.read() as s:
            file, now = load_file(s, file_id), self.clock.now()
            _no_wopi_lock(s, file_id, now)
            return table_of(file, live_coauth_locks(s, file_id, now))

    def _live(
        self, s: Session, file_id: str, admit: Callable[[Statements], None] | None = None
    ) -> tuple[File, datetime, list[CoauthLock]]:
        """The file (row-locked) and its live coauth locks; expired rows are cleared away. `admit(t)`, if given,
        is asked once the file's row is locked (see Tokens.require_live).

        Clearing them does not bump the counter: they had already left the visible table.
        """
        file = load_file(s, file_id)
        Statements.ask(s, admit)
        now = self.clock.now()
        s.execute(sa.delete(CoauthLock).where(CoauthLock.file_id == file_id, CoauthLock.expires_at <= now))
        return file, now, live_coauth_locks(s, file_id, now)

    @staticmethod
    def _find(locks: list[CoauthLock], lock_id: str) -> CoauthLock:
        for lock in locks:
            if lock.lock_id == lock_id:
                return lock
        raise WopiError(409, "the coauth lock does not exist or has expired")


def _no_wopi_lock(s: Session, file_id: str, now: datetime) -> None:
    row = live_lock(s, file_id, now)
    if row is not None:
        raise WopiError(409, "the file has a WOPI lock", {"X-WOPI-ConflictingMechanism": "WOPI-Lock", **held_by(row)})
