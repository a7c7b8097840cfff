"""Drives: who may reach which, shared drives and their members, and how full a drive is.

Every user has a personal drive (users.ensure_user makes it). A shared drive ("site" or
"group", as Graph calls the SharePoint sites and Microsoft 365 groups whose document
libraries they are) has no owner: an admin makes it and names its members.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .clock import Clock
from .db import Database
from .errors import WopiError
from .ids import is_id, new_id
from .models import Drive, DriveMember, File, Folder, User
from .repository import locking
from .tokens import Tokens
from .users import check_user_id, ensure_user

SHARED_KINDS = ("site", "group")


@dataclass(frozen=True)
class Quota:
    total: int | None  # None: no limit
    used: int

    @property
    def remaining(self) -> int | None:
        return None if self.total is None else max(self.total - self.used, 0)

    @property
    def state(self) -> str:
        """Graph's quota.state: normal, nearing (90%), critical (99%), exceeded."""
        if self.total is None or self.used < self.total * 0.9:
            return "normal"
        if self.used >= self.total:
            return "exceeded"
        return "critical" if self.used >= self.total * 0.99 else "nearing"

    def check(self, more: int) -> None:
        """507 quotaLimitReached if `more` bytes would not fit."""
        if self.total is not None and more > 0 and self.used + more > self.total:
            raise WopiError(
                507,
                f"the drive has {self.remaining} of its {self.total} bytes free, {more} are needed",
                code="quotaLimitReached",
            )


class Drives:
    def __init__(self, db: Database, clock: Clock, quota: int, tokens: Tokens):
        self.db = db
        self.clock = clock
        self.tokens = tokens
        self.quota_bytes = quota or None

    def personal(self, user_id: str) -> Drive:
        """The user's own drive, made (with the user) on first use."""
        with self.db.read() as s:
            drive = _personal(s, user_id)
        if drive is not None:
            return drive
        with self.db.write() as s:
            ensure_user(s, user_id, self.clock.now())
            drive = _personal(s, user_id)
            assert drive is not None  # ensure_user makes every user's drive with the user
            return drive

    def reachable(self, s: Session, user_id: str, drive_id: str, kind: str | None = None) -> Drive:
        """The drive `drive_id` if `user_id` may reach it (their own, or a shared drive they are a member
        of); 404 if there is no such drive (of that `kind`), 403 if it is someone else's."""
        drive = s.get(Drive, drive_id) if is_id(drive_id) else None
        if drive is None or (kind is not None and drive.kind != kind):
            raise WopiError(404, "no such drive", code="itemNotFound")
        # In a write transaction the membership is held (FOR SHARE on PostgreSQL) until the commit, so that what
        # the transaction does with it (a launch link's token, an upload) comes before a removal or not at all:
        # see remove_member. SQLite's writers take turns anyway.
        member = sa.select(DriveMember).where(DriveMember.drive_id == drive.id, DriveMember.user_id == user_id)
        if drive.owner_id != user_id and s.scalars(locking(s, member, read=True)).one_or_none() is None:
            raise WopiError(403, "this drive is not shared with the token's user", code="accessDenied")
        return drive

    @staticmethod
    def of_user(s: Session, user_id: str) -> list[Drive]:
        """The drives a user reaches: their own first, then the shared ones they are a member of."""
        shared = sa.select(DriveMember.drive_id).where(DriveMember.user_id == user_id)
        query = sa.select(Drive).where(sa.or_(Drive.owner_id == user_id, Drive.id.in_(shared)))
        return sorted(s.scalars(query), key=lambda d: (d.owner_id != user_id, d.created_at, d.id))

    def quota(self, s: Session, drive_id: str) -> Quota:
        """What the drive holds and may hold. In a write transaction with a quota set, writers into one
        drive take turns from here to their commit (an advisory lock on PostgreSQL; SQLite's writers take
        turns anyway), so two uploads cannot both fit in the room for one. Call it after taking every row
        lock the transaction needs: it is the last lock taken."""
        if self.quota_bytes and s.info.get("write") and s.get_bind().dialect.name == "postgresql":
            s.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"wopihost.drive:{drive_id}"))))
        used = s.execute(
            sa.select(sa.func.coalesce(sa.func.sum(File.size), 0))
            .join(Folder, File.folder_id == Folder.id)
            .where(Folder.drive_id == drive_id)
        ).scalar_one()
        return Quota(self.quota_bytes, int(used))

    def check_room(self, s: Session, drive_id: str, more: int) -> None:
        """507 quotaLimitReached unless `more` bytes fit in the drive; asked as `quota` is, after every other row
        lock. Where nothing could refuse (no quota set, a write that adds no bytes) it reads nothing and takes no
        turn: summing a large drive's files for every write costs more than the write."""
        if self.quota_bytes is not None and more > 0:
            self.quota(s, drive_id).check(more)

    # -- administration (the CLI) ----------------------------------------------------

    def create_shared(self, kind: str, name: str, members: Iterable[str] = ()) -> Drive:
        """A shared drive with its `members` (made if new), in one transaction: all of it, or nothing."""
        if kind not in SHARED_KINDS:
            raise ValueError(f"a shared drive is one of {', '.join(SHARED_KINDS)}")
        now = self.clock.now()
        drive = Drive(id=new_id(), owner_id=None, kind=kind, name=name, created_at=now)
        with self.db.write() as s:
            s.add(drive)
            s.flush()
            s.add(Folder(id=new_id(), drive_id=drive.id, parent_id=None, name="", name_key="", created_at=now))
            for user_id in dict.fromkeys(members):  # a user named twice is one member
                self._add_member(s, drive.id, user_id)
        return drive

    def add_member(self, drive_id: str, user_id: str) -> None:
        with self.db.write() as s:
            drive = s.get(Drive, drive_id)
            if drive is None or drive.kind not in SHARED_KINDS:
                raise ValueError(f"no shared drive {drive_id}")
            self._add_member(s, drive_id, user_id)

    def _add_member(self, s: Session, drive_id: str, user_id: str) -> None:
        ensure_user(s, check_user_id(user_id), self.clock.now())
        if s.get(DriveMember, (drive_id, user_id)) is None:
            s.add(DriveMember(drive_id=drive_id, user_id=user_id))
            s.flush()

    def remove_member(self, drive_id: str, user_id: str) -> int | None:
        """Take a user's access to a shared drive away, and with it the WOPI tokens they hold for its files and
        containers, the launch API's among them (and so the tokens derived from those). Their API tokens stay:
        they reach other drives, and Graph checks membership on every request. How many tokens were revoked
        (maybe 0); None if the user was not a member."""
        with self.db.write() as s:
            deleted = s.execute(
                sa.delete(DriveMember).where(DriveMember.drive_id == drive_id, DriveMember.user_id == user_id)
            )
            if cast(sa.CursorResult, deleted).rowcount == 0:
                return None
            # Two statements, in this order. On PostgreSQL (READ COMMITTED) the DELETE waits for every transaction
            # that found the membership in a write (reachable) to commit, and the UPDATE, a later statement, reads
            # a later snapshot: it sees the tokens they issued. A transaction that looks for the membership after
            # the DELETE waits for this one to commit and finds none (403). Tokens an admin issues meanwhile
            # (`wopihost token issue`, `open`: no membership is asked for) are the admin's to order.
            return self.tokens.revoke(s, user_id=user_id, drive_id=drive_id)

    def list(self) -> list[tuple[Drive, list[str]]]:
        """Every drive with its members (a personal drive's member is its owner)."""
        with self.db.read() as s:
            members: dict[str, list[str]] = {}
            for row in s.scalars(sa.select(DriveMember).order_by(DriveMember.user_id)):
                members.setdefault(row.drive_id, []).append(row.user_id)
            drives = list(s.scalars(sa.select(Drive).order_by(Drive.created_at, Drive.id)))
        return [(d, [d.owner_id] if d.owner_id else members.get(d.id, [])) for d in drives]


def _personal(s: Session, user_id: str) -> Drive | None:
    return s.scalars(sa.select(Drive).where(Drive.owner_id == user_id)).one_or_none()


def owner_name(s: Session, user_id: str | None) -> str:
    user = s.get(User, user_id) if user_id else None
    return user.display_name if user is not None else (user_id or "")
