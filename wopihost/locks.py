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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import bad_request, conflict, not_found
from .extents import Extents
from .models import LOCK_ID_LENGTH, AccessToken, CoauthLock, File, Lock
from .names import encode_utf7
from .prepared import Prepared, Statements
from .repository import dialect_insert
from .text import text_problem
from .tokens import revoked_on

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


def held_by(row) -> dict[str, str]:
    """The headers a 409 caused by the WOPI lock `row` carries besides X-WOPI-Lock: who holds it, if they
    may be shown (UTF-7, as WOPI's other name headers, so that any name fits in a header)."""
    return {"X-WOPI-ConflictingLockUsername": encode_utf7(row.user_name)} if row.user_name else {}


def live_coauth_locks(session: Session, file_id: str, now: datetime) -> list[CoauthLock]:
    query = (
        sa.select(CoauthLock)
        .where(CoauthLock.file_id == file_id, CoauthLock.expires_at > now)
        .order_by(CoauthLock.acquired_at, CoauthLock.lock_id)
    )
    return list(session.scalars(query))


def require_write_access(
    session: Session,
    file: File,
    now: datetime,
    lock_id: str | None,
    coauth_lock_id: str | None = None,
    unlocked_ok: bool = False,
) -> None:
    """409 unless the request shows the lock that holds the file (docs/cspp-plus.md §1.3 lock table).

    `unlocked_ok`: whether an unlocked file may be changed without a lock (PutFile on
    an empty file, RenameFile); otherwise an unlocked file conflicts too.
    """
    if lock_id and coauth_lock_id:
        raise bad_request("send X-WOPI-Lock or X-WOPI-CoauthLockId, not both")
    wopi_lock = live_lock(session, file.id, now)
    coauth = live_coauth_locks(session, file.id, now) if wopi_lock is None else []
    check_lock_state(wopi_lock, coauth, lock_id, coauth_lock_id, unlocked_ok)


def check_lock_state(
    wopi_lock,
    coauth: Sequence[CoauthLock | _CoauthState],
    lock_id: str | None,
    coauth_lock_id: str | None,
    unlocked_ok: bool,
) -> None:
    """The lock table itself: `wopi_lock` is the live WOPI lock (with `lock_id` and `user_name`) or None,
    `coauth` the live coauth locks; 409 unless the request's `lock_id` or `coauth_lock_id` may act."""
    if wopi_lock is not None:
        if lock_id != wopi_lock.lock_id:
            raise conflict(
                "the file is locked with another lock id", wopi_lock.lock_id, "WOPI-Lock", held_by(wopi_lock)
            )
        return
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
    """The lock transitions, each all or nothing: the file's row lock (PostgreSQL), one read of everything
    the state table needs (the file, its WOPI lock, whether coauth locks live) and one write. They run as
    prepared statements on the driver (Database.transact, which on SQLite commits the transitions of
    concurrent threads together): the lock path is the hottest writer, and an ORM session cost more than the
    statements themselves."""

    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def lock(self, file_id: str, lock_id: str, how: LockRequest = LockRequest()) -> int:
        """Lock (or, with the same id, refresh); the file's version."""
        return self._transition(
            file_id, lock_id, unlocked_ok=True, change=lambda t, now: self._set(t, file_id, lock_id, now, how)
        )

    def unlock_and_relock(
        self, file_id: str, new_lock_id: str, old_lock_id: str, how: LockRequest = LockRequest()
    ) -> int:
        return self._transition(
            file_id, old_lock_id, unlocked_ok=False, change=lambda t, now: self._set(t, file_id, new_lock_id, now, how)
        )

    def refresh(self, file_id: str, lock_id: str, how: LockRequest = LockRequest()) -> int:
        return self.unlock_and_relock(file_id, lock_id, lock_id, how)  # a refresh is a relock with the same id

    def unlock(self, file_id: str, lock_id: str) -> int:
        return self._transition(
            file_id, lock_id, unlocked_ok=False, change=lambda t, now: t.run(_DELETE, {"file_id": file_id})
        )

    def read_with_token(self, jti: str, file_id: str) -> tuple[str | None, datetime | None, LockView | None]:
        """GetLock's request read: the row of its token `jti` (user id and revocation time; both None if there
        is no row) and the file's lock state (None: no such file), in one statement: the request's only round
        trip, as CheckFileInfo's is, and the token, the lock and the version it answers all of one moment."""
        now = self.clock.now()
        row = self.db.first(_TOKEN_AND_LOCK, {"jti": jti, "file_id": file_id, "now": now})
        if row is None:
            return None, None, None
        user_id, revoked_at, version, lock_id, expires_at, coauth_count = row
        if version is None:
            return user_id, revoked_at, None
        live = lock_id if lock_id is not None and expires_at > now else ""
        return user_id, revoked_at, LockView(version, live, coauth_count)

    def live(self) -> list[LiveLock]:
        """Every live lock, WOPI and coauth, with its file's name (for admins), by file then expiry."""
        now = self.clock.now()
        kinds = [
            sa.select(Lock.file_id, File.name, Lock.lock_id, sa.literal("WOPI").label("type"), Lock.expires_at)
            .join(File, File.id == Lock.file_id)
            .where(Lock.expires_at > now),
            sa.select(CoauthLock.file_id, File.name, CoauthLock.lock_id, CoauthLock.lock_type, CoauthLock.expires_at)
            .join(File, File.id == CoauthLock.file_id)
            .where(CoauthLock.expires_at > now),
        ]
        query = sa.union_all(*kinds).order_by("file_id", "expires_at", "lock_id")
        with self.db.read() as s:
            return [LiveLock(*row) for row in s.execute(query)]

    def _transition(
        self, file_id: str, lock_id: str, unlocked_ok: bool, change: Callable[[Statements, datetime], object]
    ) -> int:
        """Apply `change` if the lock state allows `lock_id` (docs/wopi.md §2.2); 409 otherwise."""

        def work(t: Statements) -> int:
            now = self.clock.now()
            state = file_state(t, file_id, now)
            state.require(lock_id, unlocked_ok=unlocked_ok)
            change(t, now)
            return state.version

        return self.db.transact(work)

    @staticmethod
    def _set(t: Statements, file_id: str, lock_id: str, now: datetime, how: LockRequest) -> None:
        t.run(
            _UPSERT, {"file_id": file_id, "lock_id": lock_id, "expires_at": now + how.ttl, "user_name": how.visible_as}
        )


class LiveLock(NamedTuple):
    file_id: str
    name: str
    lock_id: str
    type: str  # WOPI, Coauth or CoauthExclusive
    expires_at: datetime


class LockView(NamedTuple):
    """What GetLock answers from: the file's version, its live WOPI lock id ("" if none) and how many coauth
    locks live."""

    version: int
    lock_id: str
    coauth_count: int

    def answer(self) -> tuple[int, str]:
        """The version and X-WOPI-Lock; 409 while coauth locks hold the file, which no WOPI lock id expresses
        (docs/wopi.md §3.5)."""
        if self.coauth_count:
            raise conflict("the file is locked for coauthoring", None)
        return self.version, self.lock_id


class _LockState(NamedTuple):
    lock_id: str
    user_name: str | None


class _CoauthState(NamedTuple):
    lock_id: str
    lock_type: str


class FileState(NamedTuple):
    """What a change of a file decides on (`file_state`): the file's version, content and locks."""

    version: int
    modified_at: datetime
    content: Extents
    wopi_lock: _LockState | None  # the live WOPI lock
    coauth_count: int  # live coauth locks
    coauth: list[_CoauthState]  # those, read only when no WOPI lock lives (then the table looks at them)

    @property
    def lock_id(self) -> str:
        """The live WOPI lock's id, or "" (X-WOPI-Lock of a GetLock or a 409)."""
        return self.wopi_lock.lock_id if self.wopi_lock is not None else ""

    def require(self, lock_id: str | None, coauth_lock_id: str | None = None, unlocked_ok: bool = False) -> None:
        """409 unless the request's locks may change the file (the state table; see require_write_access)."""
        check_lock_state(self.wopi_lock, self.coauth, lock_id, coauth_lock_id, unlocked_ok)


def file_state(t: Statements, file_id: str, now: datetime) -> FileState:
    """The file's state in one statement (two if coauth locks live and no WOPI lock does); 404 if there is no
    such file. In a write transaction on PostgreSQL the file's row is locked first, in a statement of its own:
    under READ COMMITTED a statement that waited for a row lock sees that row anew but the others (the file's
    WOPI lock) as they were when it began, so the state is read after the wait. On SQLite, BEGIN IMMEDIATE
    serialises."""
    if t.writing and not t.is_sqlite:
        t.run(_LOCK_FILE_ROW, {"file_id": file_id})
    row = t.first(_STATE, {"file_id": file_id, "now": now})
    if row is None:
        raise not_found()
    version, modified_at, blob, size, extents, current_id, expires_at, user_name, coauth_count = row
    wopi_lock = _LockState(current_id, user_name) if current_id is not None and expires_at > now else None
    coauth = (
        [_CoauthState(*row) for row in t.all(_LIVE_COAUTH_LOCKS, {"file_id": file_id, "now": now})]
        if wopi_lock is None and coauth_count
        else []
    )
    return FileState(version, modified_at, Extents.stored(blob, size, extents), wopi_lock, coauth_count, coauth)


# typed as a FromClause on the mapped class; a Table
_FILES, _LOCKS, _COAUTH, _TOKENS = (
    cast(sa.Table, File.__table__),
    cast(sa.Table, Lock.__table__),
    cast(sa.Table, CoauthLock.__table__),
    cast(sa.Table, AccessToken.__table__),
)


def _upsert(dialect: sa.Dialect) -> sa.Insert:
    insert = dialect_insert(dialect, _LOCKS)
    return insert.on_conflict_do_update(
        index_elements=[_LOCKS.c.file_id],
        set_={name: insert.excluded[name] for name in ("lock_id", "expires_at", "user_name")},
    )


# Compiled once (prepared.Prepared): SQLAlchemy's execution of a statement costs more than the statement.
_UPSERT = Prepared(_upsert)
_DELETE = Prepared(sa.delete(_LOCKS).where(_LOCKS.c.file_id == sa.bindparam("file_id")))
_LOCK_FILE_ROW = Prepared(sa.select(_FILES.c.id).where(_FILES.c.id == sa.bindparam("file_id")).with_for_update())

_LIVE = sa.and_(_COAUTH.c.file_id == sa.bindparam("file_id"), _COAUTH.c.expires_at > sa.bindparam("now"))
_LIVE_COAUTH_COUNT = (
    sa.select(sa.func.count())
    .where(_COAUTH.c.file_id == _FILES.c.id, _COAUTH.c.expires_at > sa.bindparam("now"))
    .scalar_subquery()
)
_LIVE_COAUTH_LOCKS = Prepared(
    sa.select(_COAUTH.c.lock_id, _COAUTH.c.lock_type).where(_LIVE).order_by(_COAUTH.c.acquired_at, _COAUTH.c.lock_id)
)

# What a change decides on, in one statement (the coauth locks themselves only when there are any).
_STATE = Prepared(
    sa.select(
        _FILES.c.version,
        _FILES.c.modified_at,
        _FILES.c.blob,
        _FILES.c.size,
        _FILES.c.extents,
        _LOCKS.c.lock_id,
        _LOCKS.c.expires_at,
        _LOCKS.c.user_name,
        _LIVE_COAUTH_COUNT.label("coauth"),
    )
    .select_from(_FILES.outerjoin(_LOCKS, _LOCKS.c.file_id == _FILES.c.id))
    .where(_FILES.c.id == sa.bindparam("file_id"))
)

# GetLock's only read (Locks.read_with_token): its token's row, then the file's version and lock, if it exists.
_TOKEN_AND_LOCK = Prepared(
    sa.select(
        _TOKENS.c.user_id,
        revoked_on(_TOKENS, sa.bindparam("file_id")),
        _FILES.c.version,
        _LOCKS.c.lock_id,
        _LOCKS.c.expires_at,
        _LIVE_COAUTH_COUNT.label("coauth"),
    )
    .select_from(
        _TOKENS.outerjoin(_FILES, _FILES.c.id == sa.bindparam("file_id")).outerjoin(
            _LOCKS, _LOCKS.c.file_id == _FILES.c.id
        )
    )
    .where(_TOKENS.c.jti == sa.bindparam("jti"))
)
