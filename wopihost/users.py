"""Users, their drives and root folders, and the UserInfo string that PutUserInfo stores."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .ids import new_id
from .models import USER_ID_LENGTH, USER_INFO_LENGTH, Drive, Folder, User
from .repository import insert_if_absent
from .text import text_problem

# WOPI asks that user ids avoid <>"#{}^[]`\/ ; we allow a conservative set that fits e-mail addresses.
_USER_ID = re.compile(rf"^[A-Za-z0-9@._+-]{{1,{USER_ID_LENGTH}}}$")


def check_user_id(user_id: str) -> str:
    if not _USER_ID.match(user_id):
        raise ValueError(f"user ids are 1 to {USER_ID_LENGTH} characters of A-Z a-z 0-9 @ . _ + -: {user_id!r}")
    return user_id


def ensure_user(session: Session, user_id: str, now: datetime, display_name: str | None = None) -> User:
    """The user, created with a drive and an empty root folder on first sight.

    Two first sightings may race (several workers, READ COMMITTED): the user row is inserted only if
    absent, in one statement, and only the transaction whose insert took creates the drive.
    """
    if insert_if_absent(session, User, id=check_user_id(user_id), display_name=display_name or user_id, created_at=now):
        drive = Drive(id=new_id(), owner_id=user_id, created_at=now)
        root = Folder(id=new_id(), drive_id=drive.id, parent_id=None, name="", name_key="", created_at=now)
        for row in (drive, root):  # no ORM relationships, so flush in foreign-key order
            session.add(row)
            session.flush()
    user = session.get_one(User, user_id)
    if display_name and user.display_name != display_name:
        user.display_name = display_name
    return user


def root_folder_id(session: Session, user_id: str) -> str:
    query = (
        sa.select(Folder.id)
        .join(Drive, Folder.drive_id == Drive.id)
        .where(Drive.owner_id == user_id, Folder.parent_id.is_(None))
    )
    return session.scalars(query).one()


def check_user_info(text: str) -> str:
    if len(text) > USER_INFO_LENGTH:
        raise ValueError(f"UserInfo is longer than {USER_INFO_LENGTH} characters")
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(f"UserInfo {problem}")
    return text
