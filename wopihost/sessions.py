"""CSPP Plus upload sessions (spec cspp-incremental-transfer §1.5-1.7, §4.4).

A session is a database row (file, user, bytes received, sliding expiry) and the
pieces its UpdateUploadSession calls delivered, each an fsynced blob. A piece is
written in full before the row's `received` moves, and it moves by one
compare-and-set (`received = offset`), so of two updates at the same offset,
in any workers, exactly one is kept and the stream is never interleaved or torn.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import WopiError, bad_request
from .extents import Extent, Extents
from .ids import new_id
from .models import UploadPiece, UploadSession
from .storage import BlobStore, TooLarge


def gone(reason: str = "the upload session does not exist or has expired") -> WopiError:
    return WopiError(410, reason)


class UploadSessions:
    def __init__(self, db: Database, blobs: BlobStore, clock: Clock, ttl: float, max_size: int):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.ttl = timedelta(seconds=ttl)
        self.max_size = max_size

    def create(self, file_id: str, user_id: str) -> str:
        now = self.clock.now()
        token = new_id()
        with self.db.write() as s:
            s.add(UploadSession(token=token, file_id=file_id, user_id=user_id, received=0, created_at=now,
                                expires_at=now + self.ttl))
        return token

    def get(self, session: Session, token: str, file_id: str) -> UploadSession:
        """The live session `token` of `file_id`; 410 if it is unknown, expired or another file's."""
        row = session.get(UploadSession, token) if token else None
        if row is None or row.file_id != file_id or row.expires_at <= self.clock.now():
            raise gone()
        return row

    def append(self, token: str, file_id: str, offset: int, length: int, body: BinaryIO) -> int:
        """UpdateUploadSession: store `length` bytes at `offset`; returns the new end of the stream.

        The piece is written first and the compare-and-set decides: a refused body has to be read
        anyway (to keep the connection), and skipping a look-up first saves a transaction per piece.
        """
        if offset + length > self.max_size:  # could never fit, whatever the session holds
            with self.db.read() as s:
                self._check_append(self.get(s, token, file_id), offset, length)
        blob = None
        if length:
            try:
                blob = self.blobs.write(body, length, sha256=False)
            except TooLarge:
                raise bad_request(f"the body is longer than X-WOPI-ContentRangeLength ({length})") from None
            if blob.size != length:
                self.blobs.delete(blob.name)
                raise bad_request(f"the body is {blob.size} bytes, X-WOPI-ContentRangeLength says {length}")
        try:
            with self.db.write() as s:
                now = self.clock.now()
                moved = s.execute(
                    sa.update(UploadSession)
                    .where(UploadSession.token == token, UploadSession.file_id == file_id,
                           UploadSession.received == offset, UploadSession.expires_at > now)
                    .values(received=offset + length, expires_at=now + self.ttl)).rowcount
                if not moved:  # someone else got there first, or the session expired meanwhile
                    self._check_append(self.get(s, token, file_id), offset, length)
                    raise WopiError(409, "the upload session changed during this update")  # not reached
                if blob is not None:
                    s.add(UploadPiece(token=token, offset=offset, length=length, blob=blob.name))
        except BaseException:
            if blob is not None:
                self.blobs.delete(blob.name)
            raise
        return offset + length

    def _check_append(self, row: UploadSession, offset: int, length: int) -> None:
        if offset != row.received:
            raise bad_request(f"X-WOPI-ContentRangeOffset is {offset}, the session has {row.received} bytes",
                              {"X-WOPI-UploadSessionCurrentOffset": str(row.received)})
        if row.received + length > self.max_size:
            raise WopiError(413, f"the upload session would exceed the limit of {self.max_size} bytes",
                            {"X-WOPI-UploadSessionCurrentOffset": str(row.received)})

    def stream(self, session: Session, token: str) -> Extents:
        """Where the session's bytes are, in stream order."""
        pieces = session.scalars(sa.select(UploadPiece).where(UploadPiece.token == token)
                                 .order_by(UploadPiece.offset))
        return Extents(Extent(piece.blob, 0, piece.length) for piece in pieces)

    def touch(self, token: str, file_id: str) -> None:
        """Slide the expiry of a live session (a failed commit keeps the session for the retry)."""
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
            tokens = list(s.scalars(sa.select(UploadSession.token).where(UploadSession.expires_at <= now)))
            blobs = [blob for token in tokens for blob in self.delete_in(s, token)]
        for blob in blobs:
            self.blobs.delete(blob)
        return len(tokens)

    def list(self) -> list[UploadSession]:
        with self.db.read() as s:
            return list(s.scalars(sa.select(UploadSession).order_by(UploadSession.created_at)))
