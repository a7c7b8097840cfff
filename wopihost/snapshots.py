"""What a request needs to know before it acts, read in one statement: its token's row, the file it names and
the token's user. For the hot read-only operations (CheckFileInfo, GetFile) that one read is the request's
only round trip to the database; a change still reads the rows again inside its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa

from .db import Database
from .extents import Extents
from .models import AccessToken, File, User
from .prepared import Prepared
from .tokens import revoked_on


@dataclass(frozen=True)
class FileView:
    """A file as one read saw it (the columns a read-only operation uses)."""

    id: str
    folder_id: str
    name: str
    owner_id: str
    size: int
    version: int
    sequence_number: int
    sha256: str
    quickxor: str
    modified_at: datetime
    blob: str
    extents: str | None

    @property
    def content(self) -> Extents:
        return Extents.stored(self.blob, self.size, self.extents)


@dataclass(frozen=True)
class UserView:
    id: str
    display_name: str
    user_info: str | None


@dataclass(frozen=True)
class Snapshot:
    token_user_id: str | None  # None: the token has no row (never issued here, or purged)
    token_revoked_at: datetime | None  # for use on the file (tokens.revoked_on)
    file: FileView | None  # None: no such file (deleted)
    user: UserView | None


_T, _F, _U = cast(sa.Table, AccessToken.__table__), File.__table__, User.__table__
_FILE_COLUMNS = [_F.c[name] for name in FileView.__dataclass_fields__]
_USER_COLUMNS = [_U.c.id, _U.c.display_name, _U.c.user_info]
_STATEMENT = Prepared(
    sa.select(_T.c.user_id, revoked_on(_T, sa.bindparam("file_id")), *_FILE_COLUMNS, *_USER_COLUMNS)
    .select_from(_T.outerjoin(_F, _F.c.id == sa.bindparam("file_id")).outerjoin(_U, _U.c.id == _T.c.user_id))
    .where(_T.c.jti == sa.bindparam("jti"))
)


def read(db: Database, jti: str, file_id: str) -> Snapshot:
    values = db.first(_STATEMENT, {"jti": jti, "file_id": file_id})
    if values is None:
        return Snapshot(None, None, None, None)
    file_values = values[2 : 2 + len(_FILE_COLUMNS)]
    user_values = values[2 + len(_FILE_COLUMNS) :]
    return Snapshot(
        values[0],
        values[1],
        FileView(*file_values) if file_values[0] is not None else None,
        UserView(*user_values) if user_values[0] is not None else None,
    )
