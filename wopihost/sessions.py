"""Upload sessions, of both kinds: CSPP Plus (docs/cspp-plus.md §1.5-1.7, §4.4) and Graph
createUploadSession (docs/graph.md §4).

A session is a database row (user, bytes received, sliding expiry, what it is for)
and the pieces its requests delivered, each an fsynced blob. A piece is written in
full before the row's `received` moves, and it moves by one compare-and-set
(`received = offset`), so of two requests at the same offset, in any workers,
exactly one is kept and the stream is never interleaved or torn. Both kinds count
towards the same per-user limits and expire and are swept alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from datetime import datetime, timedelta
from typing import Protocol, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import quickxor
from .clock import Clock
from .db import Database
from .errors import WopiError, bad_request, not_found
from .extents import MAX_BLOBS, Extent, Extents
from .faults import InsufficientStorage, Unavailable
from .ids import is_id, new_id
from .models import File, SessionChunk, UploadPiece, UploadSession
from .prepared import Statements
from .repository import load_file, lock_user, locking
from .storage import Blob, Readable, Storage, TooLarge, discard

# How long after it expired a session is kept before the sweep deletes it: a piece begun while it was live may still
# be coming (a 60 MiB Graph fragment on a slow link), and is kept when it lands (Sessions._move)
PIECE_GRACE = timedelta(hours=1)


def gone(reason: str = "the upload session does not exist or has expired") -> WopiError:
    return WopiError(410, reason, code="itemNotFound")


class OffsetMismatch(WopiError):
    """A piece that does not start where the session ends; `received` is where it does."""

    def __init__(self, offset: int, received: int):
        super().__init__(
            400,
            f"X-WOPI-ContentRangeOffset is {offset}, the session has {received} bytes",
            {"X-WOPI-UploadSessionCurrentOffset": str(received)},
        )
        self.offset, self.received = offset, received


class PieceObserver(Protocol):
    """Sees a piece's bytes as they are stored, and records what it made of them in the transaction that keeps
    the piece (a CSPP session's chunk index: chunkindex.PieceIndexer)."""

    def start(self) -> None: ...  # before the body is read; FileNotFoundError if the pieces it read are gone
    def watch(self, body: Readable) -> Readable: ...
    def record(self, s: Session) -> None: ...


# makes the observer of a piece from the session's state row, in the read transaction that checked it (or None)
Observe = Callable[[Session, sa.Row], PieceObserver | None]


def _bytes_of(user_id, now: datetime | sa.BindParameter[datetime], also: str | None = None) -> sa.ScalarSelect:
    """What a user's live, unfinished upload sessions hold, as a subquery (`user_id` a value or a column), with
    the session `also` whatever its expiry."""
    live = UploadSession.expires_at > now
    return (
        sa.select(sa.func.coalesce(sa.func.sum(UploadSession.received), 0))
        .where(
            UploadSession.user_id == user_id,
            live if also is None else sa.or_(live, UploadSession.token == also),
            UploadSession.result.is_(None),
        )
        .scalar_subquery()
    )


class _Changed(Exception):
    """A session changed while its pieces were being merged: the merge is dropped."""


def _pieces(session: Session, token: str) -> tuple[Extents, dict[str, str]]:
    """Where a session's bytes are, in stream order, and the QuickXorHash of each piece's blob."""
    rows = session.execute(
        sa.select(UploadPiece.blob, UploadPiece.length, UploadPiece.quickxor)
        .where(UploadPiece.token == token)
        .order_by(UploadPiece.offset)
    ).all()
    return Extents(Extent(blob, 0, length) for blob, length, _ in rows), {blob: digest for blob, _, digest in rows}


def _combined(pieces: list[tuple[int, int, str]]) -> str:
    """The QuickXorHash of what `pieces` (offset, length, their own QuickXorHash) make together; "" if one has
    none."""
    if any(not digest for _, _, digest in pieces):
        return ""
    return quickxor.combine(pieces, sum(length for _, length, _ in pieces))


def _at_offsets(run: Extents, hashes: dict[str, str]) -> list[tuple[int, int, str]]:
    """The whole blobs of `run`, one after another, as _combined takes them."""
    pieces, offset = [], 0
    for extent in run:
        pieces.append((offset, extent.length, hashes[extent.blob]))
        offset += extent.length
    return pieces


def total_mismatch(total: int, expected: int) -> WopiError:
    return WopiError(
        400,
        f"the declared total size {total} differs from the upload session's {expected}",
        code="invalidRequest/fragmentLengthMismatch",
    )


def _no_graph_session() -> WopiError:
    return WopiError(404, "the upload session does not exist, has expired or was cancelled", code="itemNotFound")


def _well_formed(token: str) -> str:
    """A token as we issue them; anything else names no session (and never reaches a query)."""
    if not is_id(token):
        raise gone("the upload session token is not one this host issued")
    return token


def _state_query(of_file: bool) -> sa.Select:
    """See UploadSessions.state. Built once: it runs before every piece of every upload.

    A CSPP session belongs to a file, and the answer says whether the file is still there; a Graph
    session is the whole of its address.
    """
    now = sa.bindparam("now", type_=sa.DateTime())
    live = sa.select(UploadSession).where(UploadSession.token == sa.bindparam("token"), UploadSession.expires_at > now)
    if not of_file:
        rows = live.where(UploadSession.kind == "graph").subquery()
        return sa.select(rows, _bytes_of(rows.c.user_id, now).label("user_bytes"))
    rows = live.where(UploadSession.file_id == sa.bindparam("file_id"), UploadSession.kind == "cspp").subquery()
    return (
        sa.select(rows, _bytes_of(rows.c.user_id, now).label("user_bytes"))
        .select_from(File)
        .outerjoin(rows, sa.true())
        .where(File.id == sa.bindparam("file_id"))
    )


_STATES = {True: _state_query(True), False: _state_query(False)}


def delete_session(session: Session, token: str) -> list[str]:
    """Delete the session `token` inside a transaction; returns its piece blobs, to release once committed."""
    blobs = list(session.scalars(sa.select(UploadPiece.blob).where(UploadPiece.token == token)))
    session.execute(sa.delete(SessionChunk).where(SessionChunk.token == token))
    session.execute(sa.delete(UploadPiece).where(UploadPiece.token == token))
    session.execute(sa.delete(UploadSession).where(UploadSession.token == token))
    return blobs


def end_with_file(session: Session, file_id: str) -> list[str]:
    """Delete the unfinished upload sessions of a file deleted in this transaction: a CSPP session, and a Graph
    session made for that file by its id; returns their piece blobs, to release once committed, as the sweep
    releases an expired session's. Nothing could complete them into the file any more, and left to expire they
    would count towards their users' limits (and hold their bytes) for up to 30 minutes. A Graph session that
    has become the file is left to expire: it holds no piece, counts towards no limit, and answers a repeated
    final fragment with what became of the file (404 once it is gone).

    Row-locked, in token order as the sweep takes them: a piece being kept meanwhile is either in the rows read
    here (its compare-and-set came first) or is refused (404) and its blob discarded by its own request."""
    query = sa.select(UploadSession.token).where(UploadSession.file_id == file_id, UploadSession.result.is_(None))
    tokens = list(session.scalars(locking(session, query.order_by(UploadSession.token))))
    return [blob for token in tokens for blob in delete_session(session, token)]


class UploadSessions:
    def __init__(
        self,
        db: Database,
        blobs: Storage,
        clock: Clock,
        ttl: float,
        max_size: int,
        max_per_user: int,
        max_bytes_per_user: int,
    ):
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.ttl = timedelta(seconds=ttl)
        self.max_size = max_size
        self.max_per_user = max_per_user
        self.max_bytes_per_user = max_bytes_per_user

    def create(
        self, file_id: str | None, user_id: str, kind: str = "cspp", target: str | None = None, total: int | None = None
    ) -> str:
        """A new session; 429 while the user already has as many open as allowed, 404 if the file `file_id` is
        gone. The file's row is locked as the session is recorded: a deletion either comes first, or waits and
        ends the session with the file (end_with_file); a check in an earlier transaction would leave a session
        that nothing ends but expiry, counting towards the user's limits meanwhile."""
        token = new_id()
        with self.db.write() as s:
            if file_id is not None:
                load_file(s, file_id)
            now = self.clock.now()
            lock_user(s, user_id)  # one user's sessions change one at a time, so the count holds
            expiries = list(
                s.scalars(
                    sa.select(UploadSession.expires_at).where(
                        UploadSession.user_id == user_id, UploadSession.expires_at > now, UploadSession.result.is_(None)
                    )
                )
            )
            if len(expiries) >= self.max_per_user:
                wait = math.ceil((min(expiries) - now).total_seconds())
                raise WopiError(
                    429,
                    f"this user already has {len(expiries)} open upload sessions, the most "
                    "allowed; commit them or let them expire",
                    {"Retry-After": str(wait)},
                    code="activityLimitReached",
                )
            s.add(
                UploadSession(
                    token=token,
                    file_id=file_id,
                    user_id=user_id,
                    received=0,
                    created_at=now,
                    expires_at=now + self.ttl,
                    kind=kind,
                    target=target,
                    total=total,
                )
            )
        return token

    def get(self, session: Session, token: str, file_id: str) -> UploadSession:
        """The live session `token` of `file_id` (row-locked in a write transaction); 410 if it is unknown,
        expired or another file's."""
        query = sa.select(UploadSession).where(UploadSession.token == _well_formed(token))
        row = session.scalars(locking(session, query)).one_or_none()
        if row is None or row.file_id != file_id or row.kind != "cspp" or row.expires_at <= self.clock.now():
            raise gone()
        return row

    def get_graph(self, session: Session, token: str) -> UploadSession:
        """The live Graph session `token`, row-locked in a write transaction; 404 if there is none."""
        if not is_id(token):
            raise _no_graph_session()
        query = sa.select(UploadSession).where(UploadSession.token == token)
        row = session.scalars(locking(session, query)).one_or_none()
        if row is None or row.kind != "graph" or row.expires_at <= self.clock.now():
            raise _no_graph_session()
        return row

    def append(
        self,
        token: str,
        file_id: str | None,
        offset: int,
        length: int,
        body: Readable,
        total: int | None = None,
        length_from: str = "X-WOPI-ContentRangeLength",
        observe: Observe | None = None,
        admit: Callable[[Statements], None] | None = None,
    ) -> int:
        """Store `length` bytes at `offset` (UpdateUploadSession; a Graph fragment, `file_id` None, of a
        stream of `total` bytes); returns the new end of the stream. `length_from` names what declared the
        length, for the error if the body disagrees.

        Nothing is written for a piece that cannot succeed (an unknown session, a wrong offset, a
        limit): one look-up says so first. The piece is then written in full, and one compare-and-set,
        conditional on the offset and on the user's limit, moves the session's end, so two pieces racing
        in any workers keep exactly one and the limits hold. What `observe` makes of the piece is recorded
        with it, or not at all. `admit(t)` whether the piece may still be kept, asked in that transaction once
        the session's row is locked (as Files.put asks it): the token may have been revoked while the body came.
        """
        started = self.clock.now()
        state, observer = self._started(token, file_id, offset, length, observe)
        if observer is not None:
            body = observer.watch(body)
        blob = None
        if length:
            try:
                # a Graph session's file hash is combined from its pieces' (a CSPP session's stream is frames)
                blob = self.blobs.write(body, length, sha256=False, quickxor=file_id is None)
            except TooLarge:
                raise bad_request(f"the body is longer than {length_from} says ({length} bytes)") from None
        elif body.readinto(memoryview(bytearray(1))):  # a chunked body, which no Content-Length said was empty
            raise bad_request(f"the body is longer than {length_from} says (0 bytes)")
        with blob or nullcontext():
            try:
                if blob is not None and blob.size != length:
                    raise bad_request(f"the body is {blob.size} bytes, {length_from} says {length}")
                with self.db.write() as s:
                    self._move(s, token, file_id, state.user_id, offset, length, total, started)
                    Statements.ask(s, admit)
                    if blob is not None:
                        s.add(
                            UploadPiece(
                                token=token, offset=offset, length=length, blob=blob.name, quickxor=blob.quickxor
                            )
                        )
                    if observer is not None:
                        observer.record(s)
            except BaseException as exc:
                if blob is not None:
                    discard(self.blobs, blob.name, exc)
                raise
        return offset + length

    def _started(
        self, token: str, file_id: str | None, offset: int, length: int, observe: Observe | None
    ) -> tuple[sa.Row, PieceObserver | None]:
        """The session's state, checked for a piece at `offset`, and the piece's observer, started. The pieces
        an observer reads back may be merged meanwhile (merge_pieces, by a commit that is then refused): it
        starts again from the rows as they are then, and the state read again finds a session committed or
        swept meanwhile (410)."""
        for _ in range(3):  # a session is merged again only once it has MAX_BLOBS more pieces
            with self.db.read() as s:
                state = self.state(s, token, file_id)
                self._check_append(state, offset, length)
                observer = observe(s, state) if observe is not None and length else None
            try:
                if observer is not None:
                    observer.start()
                return state, observer
            except FileNotFoundError:
                continue
        raise gone()

    def _move(
        self,
        s: Session,
        token: str,
        file_id: str | None,
        user_id: str,
        offset: int,
        length: int,
        total: int | None,
        started: datetime,
    ) -> None:
        """The compare-and-set: the session's end moves from `offset` by `length` if it is still there, the
        session live when the piece `started` (a slow piece keeps the session it began in: its client was not
        idle) and unfinished (and of `total` bytes), and the user's sessions within their limits, this one
        counted even if it expired meanwhile (a slow piece brings it back); else the error that says why (410
        for a session that expired meanwhile, which the user's limits leave no room to bring back)."""
        now = self.clock.now()
        lock_user(s, user_id)  # so that the sum below counts every other update of this user's sessions
        live = sa.select(sa.func.count()).where(
            UploadSession.user_id == user_id, UploadSession.expires_at > now, UploadSession.result.is_(None)
        )
        where = [
            UploadSession.token == token,
            UploadSession.received == offset,
            UploadSession.expires_at > started,
            UploadSession.result.is_(None),
            _bytes_of(user_id, now, also=token) + length <= self.max_bytes_per_user,
            sa.or_(UploadSession.expires_at > now, live.scalar_subquery() < self.max_per_user),
        ]
        values = {"received": offset + length, "expires_at": now + self.ttl}
        if file_id is not None:
            where.append(UploadSession.file_id == file_id)
        if total is not None:
            where.append(sa.or_(UploadSession.total.is_(None), UploadSession.total == total))
            values["total"] = total
        moved = cast(sa.CursorResult, s.execute(sa.update(UploadSession).where(*where).values(**values))).rowcount
        if not moved:  # someone else got there first, the session expired, or the user's limit was reached
            state = self.state(s, token, file_id)
            if state.result is not None:  # finished meanwhile: everything is received
                raise OffsetMismatch(offset, state.received)
            if total is not None and state.total not in (None, total):
                raise total_mismatch(total, state.total)
            self._check_append(state, offset, length)
            raise WopiError(409, "the upload session changed during this request")  # not reached

    def state(self, s: Session, token: str, file_id: str | None) -> sa.Row:
        """The live session `token` (of `file_id`; a Graph session if None) and what its user's live
        sessions hold, in one statement: the session's columns and user_bytes. For a CSPP session 404
        if the file is gone, 410 if the session is; 404 if a Graph session is gone."""
        if file_id is None and not is_id(token):
            raise _no_graph_session()
        row = s.execute(
            _STATES[file_id is not None], {"token": _well_formed(token), "file_id": file_id, "now": self.clock.now()}
        ).one_or_none()
        if file_id is None:
            if row is None:
                raise _no_graph_session()
            return row
        if row is None:
            raise not_found()
        if row.user_id is None:
            raise gone()
        return row

    def received(self, token: str, file_id: str) -> int | None:
        """How many bytes the live session `token` of `file_id` holds; None if there is no such session."""
        try:
            with self.db.read() as s:
                return self.state(s, token, file_id).received
        except WopiError:
            return None

    def check_total(self, total: int) -> None:
        """413 for a session that would have to hold `total` bytes where one may hold fewer: refused when its size
        is declared, before any byte is sent, instead of at the fragment that would pass the limit."""
        if total > self.max_size:
            raise WopiError(413, f"an upload session holds at most {self.max_size} bytes, not {total}")
        if total > self.max_bytes_per_user:
            raise WopiError(
                413, f"a user's open upload sessions hold at most {self.max_bytes_per_user} bytes, not {total}"
            )

    def _check_append(self, state: sa.Row, offset: int, length: int) -> None:
        if offset != state.received:
            raise OffsetMismatch(offset, state.received)
        if state.received + length > self.max_size:
            raise WopiError(
                413,
                f"the upload session would exceed the limit of {self.max_size} bytes",
                {"X-WOPI-UploadSessionCurrentOffset": str(state.received)},
            )
        if state.user_bytes + length > self.max_bytes_per_user:
            raise WopiError(
                413,
                f"this user's open upload sessions would hold more than "
                f"{self.max_bytes_per_user} bytes; commit them or let them expire",
                {"X-WOPI-UploadSessionCurrentOffset": str(state.received)},
            )

    def finish_in(self, session: Session, row: UploadSession, file_id: str) -> None:
        """Mark a Graph session as having become the file `file_id` (its pieces are the file's now): a
        repeated final request is then answered with that file until the session expires."""
        session.execute(sa.delete(UploadPiece).where(UploadPiece.token == row.token))
        row.result = row.file_id = file_id
        row.expires_at = self.clock.now() + self.ttl

    def stream(self, session: Session, token: str) -> Extents:
        """Where the session's bytes are, in stream order."""
        return _pieces(session, token)[0]

    def content(self, session: Session, token: str) -> tuple[Extents, str]:
        """Where the session's bytes are, in stream order, and their QuickXorHash (base64), combined from the
        pieces' without reading a byte: "" if a piece has none (a CSPP session's, or one kept before 0015)."""
        stream, hashes = _pieces(session, token)
        return stream, _combined(_at_offsets(stream, hashes))

    def merge_pieces(self, token: str) -> None:
        """Copy a whole session's pieces into at most MAX_BLOBS blobs, if it has more: before a Graph session
        becomes its file, and before a CSPP commit opens them. Thousands of pieces (both kinds take any size
        from 1 byte) would otherwise need a descriptor each, on every read of the file or at the commit, past
        the process's limit: those requests failing, and every other request of the worker with them.

        Runs of MAX_BLOBS pieces become one blob each (so no more are open at a time), again until few enough:
        each byte is copied once for every MAX_BLOBS-fold. The copies cover the stream's bytes where the pieces
        did, so whatever counts from the start of the stream (a CSPP session's `received`, its chunk index and
        where its decoding stopped) holds for them as it did for the pieces. The rows then name the copies,
        unless the session changed meanwhile (a piece added, completed or committed, cancelled, swept, or merged
        by another request, whose pieces may then be gone before they are read), when the copies are dropped."""
        with self.db.read() as s:
            pieces, hashes = _pieces(s, token)
        if len(pieces) <= MAX_BLOBS:
            return
        made: list[Blob] = []
        kept: set[str] = set()
        failure: BaseException | None = None
        try:
            with suppress(_Changed):
                merged = pieces
                while len(merged) > MAX_BLOBS:
                    runs = [Extents(merged[i : i + MAX_BLOBS]) for i in range(0, len(merged), MAX_BLOBS)]
                    for run in runs:
                        try:
                            with self.blobs.open(run.blobs) as opened:
                                made.append(self.blobs.concat(opened, run))
                        except FileNotFoundError:  # merged (or swept) meanwhile: the rows say the rest
                            raise _Changed from None
                        hashes[made[-1].name] = _combined(_at_offsets(run, hashes))
                        if len(runs) > MAX_BLOBS:
                            # A copy no row will name (the next level copies it) need not be held, and held
                            # to the end (a descriptor each in the local store) a level of thousands would
                            # pass the limit itself.
                            made[-1].release()
                        for blob in made:  # a merge of many pieces may take longer than a hold's lease
                            blob.keep()
                    merged = Extents(Extent(blob.name, 0, blob.size) for blob in made[-len(runs) :])
                with self.db.write() as s:
                    row = s.scalars(
                        locking(s, sa.select(UploadSession).where(UploadSession.token == token))
                    ).one_or_none()
                    # The same pieces, not only as many: another merge may have taken them and new ones come since.
                    current = s.scalars(sa.select(UploadPiece.blob).where(UploadPiece.token == token))
                    if row is None or row.result is not None or sorted(current) != sorted(p.blob for p in pieces):
                        raise _Changed
                    s.execute(sa.delete(UploadPiece).where(UploadPiece.token == token))
                    offset = 0  # where the first piece lies: the first of either kind is at 0 (_check_append)
                    for extent in merged:
                        length, digest = extent.length, hashes[extent.blob]
                        s.add(UploadPiece(token=token, offset=offset, length=length, blob=extent.blob, quickxor=digest))
                        offset += extent.length
                kept = merged.blobs  # committed
        except BaseException as exc:
            failure = exc
            raise
        finally:
            for blob in made:
                blob.release()
                if blob.name not in kept:
                    discard(self.blobs, blob.name, failure)
        for extent in pieces if kept else ():
            self.blobs.release(extent.blob)

    @contextmanager
    def used(self, token: str | None, file_id: str) -> Iterator[None]:
        """A request that uses the CSPP session `token` (an UpdateUploadSession, a commit): the session's expiry
        slides whatever the request answers, as the client has just shown that it is at work with it. A piece
        kept slides it in its compare-and-set and a commit deletes it; a request refused by the domain (a wrong
        offset, a limit, a lock or sequence number that changed, before or during the commit's transaction)
        slides it here, in a transaction of its own, as its own was rolled back. Not for a session that is not
        live (410) or whose file is gone (404), nor for a token revoked or expired while the body came (401: not
        the client at work), nor after a failure of the host (5xx), where the slide's own write would most
        likely fail too."""
        try:
            yield
        except WopiError as error:
            if token and error.status not in (401, 404, 410) and error.status < 500:
                with suppress(InsufficientStorage, Unavailable):  # the request's own answer stands
                    self.touch(token, file_id)
            raise

    def touch(self, token: str, file_id: str | None) -> None:
        """Slide the expiry of a live session (one a refused request used, see `used`; a failed Graph completion
        keeps the session for the retry)."""
        if not is_id(token):
            return  # names no session: nothing to slide, and the caller's own error stands
        with self.db.write() as s:
            now = self.clock.now()
            where = [UploadSession.token == token, UploadSession.expires_at > now]
            if file_id is not None:
                where.append(UploadSession.file_id == file_id)
            s.execute(sa.update(UploadSession).where(*where).values(expires_at=now + self.ttl))

    def sweep(self, now: datetime | None = None) -> int:
        """Delete expired sessions and their pieces; returns how many sessions went."""
        now = now or self.clock.now()
        with self.db.write() as s:
            # Row-locked, skipping what another transaction holds: a commit that holds a session (and hands its
            # pieces to a file), or a deletion of its file ending it, decides that row; the next sweep takes it if
            # it is still there, and no piece is taken from a file. Waited for, a folder's deletion, which locks
            # its files' sessions file by file, not in token order, deadlocked with the sweep.
            # (past a grace: a piece begun before its session expired may still be coming, and is kept: _move)
            expired = (
                sa.select(UploadSession.token)
                .where(UploadSession.expires_at <= now - PIECE_GRACE)
                .order_by(UploadSession.token)
            )
            tokens = list(s.scalars(locking(s, expired, skip_locked=True)))
            blobs = [blob for token in tokens for blob in delete_session(s, token)]
        for blob in blobs:
            self.blobs.release(blob)
        return len(tokens)

    def list(self) -> list[UploadSession]:
        with self.db.read() as s:
            return list(s.scalars(sa.select(UploadSession).order_by(UploadSession.created_at)))
