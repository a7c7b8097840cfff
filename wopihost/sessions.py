"""CSPP Plus upload sessions (docs/cspp-plus.md §1.5-1.7, §4.4).

A session is a database row (file, user, bytes received, sliding expiry) and the
pieces its UpdateUploadSession calls delivered, each an fsynced blob. A piece is
written in full before the row's `received` moves, and it moves by one
compare-and-set (`received = offset`), so of two updates at the same offset,
in any workers, exactly one is kept and the stream is never interleaved or torn.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import WopiError, bad_request
from .extents import Extent, Extents
from .ids import is_id, new_id
from .models import UploadPiece, UploadSession
from .repository import load_file, lock_user, locking
from .storage import BlobStore, TooLarge


def gone(reason: str = "the upload session does not exist or has expired") -> WopiError:
    return WopiError(410, reason)


def _well_formed(token: str) -> str:
    """A token as we issue them; anything else names no session (and never reaches a query)."""
    if not is_id(token):
        raise gone("the upload session token is not one this host issued")
    return token


class UploadSessions:
    def __init__(self, db: Database, blobs: BlobStore, clock: Clock, ttl: float, max_size: int,
                 max_per_user: int, max_bytes_per_user: int):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.ttl = timedelta(seconds=ttl)
        self.max_size = max_size
        self.max_per_user = max_per_user
        self.max_bytes_per_user = max_bytes_per_user

    def create(self, file_id: str, user_id: str) -> str:
        """A new session; 429 while the user already has as many open as allowed."""
        token = new_id()
        with self.db.write() as s:
            now = self.clock.now()
            lock_user(s, user_id)  # one user's sessions change one at a time, so the count holds
            expiries = list(s.scalars(sa.select(UploadSession.expires_at).where(
                UploadSession.user_id == user_id, UploadSession.expires_at > now)))
            if len(expiries) >= self.max_per_user:
                wait = math.ceil((min(expiries) - now).total_seconds())
                raise WopiError(429, f"this user already has {len(expiries)} open upload sessions, the most "
                                     "allowed; commit them or let them expire", {"Retry-After": str(wait)})
            s.add(UploadSession(token=token, file_id=file_id, user_id=user_id, received=0, created_at=now,
                                expires_at=now + self.ttl))
        return token

    def get(self, session: Session, token: str, file_id: str) -> UploadSession:
        """The live session `token` of `file_id` (row-locked in a write transaction); 410 if it is unknown,
        expired or another file's."""
        query = sa.select(UploadSession).where(UploadSession.token == _well_formed(token))
        row = session.scalars(locking(session, query)).one_or_none()
        if row is None or row.file_id != file_id or row.expires_at <= self.clock.now():
            raise gone()
        return row

    def append(self, token: str, file_id: str, offset: int, length: int, body: BinaryIO) -> int:
        """UpdateUploadSession: store `length` bytes at `offset`; returns the new end of the stream.

        Nothing is written for an update that cannot succeed (an unknown session, a wrong offset, a
        limit). The piece is then written in full, and one transaction moves the session's end by a
        compare-and-set and checks the user's limit again, so two updates racing in any workers keep
        exactly one piece and the limits hold.
        """
        with self.db.read() as s:
            load_file(s, file_id)  # 404 once the file is deleted, as for every operation
            row = self.get(s, token, file_id)
            self._check_append(s, row, offset, length)
        user_id = row.user_id
        blob = None
        if length:
            try:
                blob = self.blobs.write(body, length, sha256=False)
            except TooLarge:
                raise bad_request(f"the body is longer than X-WOPI-ContentRangeLength ({length})") from None
        with blob or nullcontext():
            try:
                if blob is not None and blob.size != length:
                    raise bad_request(f"the body is {blob.size} bytes, X-WOPI-ContentRangeLength says {length}")
                with self.db.write() as s:
                    now = self.clock.now()
                    lock_user(s, user_id)
                    moved = s.execute(
                        sa.update(UploadSession)
                        .where(UploadSession.token == token, UploadSession.file_id == file_id,
                               UploadSession.received == offset, UploadSession.expires_at > now)
                        .values(received=offset + length, expires_at=now + self.ttl)).rowcount
                    if not moved:  # someone else got there first, or the session expired meanwhile
                        self._check_append(s, self.get(s, token, file_id), offset, length)
                        raise WopiError(409, "the upload session changed during this update")  # not reached
                    self._check_user_bytes(s, user_id, now, offset, 0)
                    if blob is not None:
                        s.add(UploadPiece(token=token, offset=offset, length=length, blob=blob.name))
            except BaseException:
                if blob is not None:
                    self.blobs.delete(blob.name)
                raise
        return offset + length

    def _check_append(self, s: Session, row: UploadSession, offset: int, length: int) -> None:
        if offset != row.received:
            raise bad_request(f"X-WOPI-ContentRangeOffset is {offset}, the session has {row.received} bytes",
                              {"X-WOPI-UploadSessionCurrentOffset": str(row.received)})
        if row.received + length > self.max_size:
            raise WopiError(413, f"the upload session would exceed the limit of {self.max_size} bytes",
                            {"X-WOPI-UploadSessionCurrentOffset": str(row.received)})
        self._check_user_bytes(s, row.user_id, self.clock.now(), row.received, length)

    def _check_user_bytes(self, s: Session, user_id: str, now: datetime, offset: int, length: int) -> None:
        """413 if the user's live sessions, grown by `length`, would hold more than allowed."""
        held = s.scalar(sa.select(sa.func.coalesce(sa.func.sum(UploadSession.received), 0)).where(
            UploadSession.user_id == user_id, UploadSession.expires_at > now))
        if held + length > self.max_bytes_per_user:
            raise WopiError(413, f"this user's open upload sessions would hold more than "
                                 f"{self.max_bytes_per_user} bytes; commit them or let them expire",
                            {"X-WOPI-UploadSessionCurrentOffset": str(offset)})

    def stream(self, session: Session, token: str) -> Extents:
        """Where the session's bytes are, in stream order."""
        pieces = session.scalars(sa.select(UploadPiece).where(UploadPiece.token == token)
                                 .order_by(UploadPiece.offset))
        return Extents(Extent(piece.blob, 0, piece.length) for piece in pieces)

    def touch(self, token: str, file_id: str) -> None:
        """Slide the expiry of a live session (a failed commit keeps the session for the retry)."""
        if not is_id(token):
            return  # names no session: nothing to slide, and the caller's own error stands
        with self.db.write() as s:
            now = self.clock.now()
            s.execute(sa.update(UploadSession)
                      .where(UploadSession.token == token, UploadSession.file_id == file_id,
                             UploadSession.expires_at > now)
                      .values(expires_at=now + self.ttl))

    def delete_in(self, session: Session, token: str) -> list[str]:
        """Delete the session inside a transaction; returns its piece blobs, to delete once committed."""
        blobs = list(session.scalars(sa.select(UploadPiece.blob).where(UploadPiece.token == token)))
        session.execute(sa.delete(UploadPiece).where(UploadPiece.token == token))
        session.execute(sa.delete(UploadSession).where(UploadSession.token == token))
        return blobs

    def sweep(self, now: datetime | None = None) -> int:
        """Delete expired sessions and their pieces; returns how many sessions went."""
        now = now or self.clock.now()
        with self.db.write() as s:
            # Row-locked: a commit that holds a session (and hands its pieces to a file) finishes first,
            # and the session it deleted is no longer found, so its pieces are not taken from the file.
            expired = sa.select(UploadSession.token).where(UploadSession.expires_at <= now)
            tokens = list(s.scalars(locking(s, expired)))
            blobs = [blob for token in tokens for blob in self.delete_in(s, token)]
        for blob in blobs:
            self.blobs.delete(blob)
        return len(tokens)

    def list(self) -> list[UploadSession]:
        with self.db.read() as s:
            return list(s.scalars(sa.select(UploadSession).order_by(UploadSession.created_at)))
