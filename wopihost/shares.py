"""Share links: a URL that opens one file or folder, read-only or read-write, for whoever holds it.

WOPI hands them out (GetShareUrl); the browser opens them (the share page) and Graph resolves them
(`/shares/{shareId}/driveItem`, where the share id is the link's id or `u!` + the unpadded base64url
of its URL). A link lasts until it is revoked (`wopihost shares revoke`) or its item is deleted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa

from .clock import Clock
from .db import Database
from .errors import WopiError, not_found
from .ids import is_id, new_id
from .models import File, Folder, ShareLink
from .repository import lock_user, locking

READ_ONLY, READ_WRITE = "ReadOnly", "ReadWrite"
URL_TYPES = (READ_ONLY, READ_WRITE)
PATH = "/s/"  # below the public URL: {public_url}/s/{link id}


@dataclass(frozen=True)
class Shared:
    """A live link and what it opens."""

    link: ShareLink
    item: File | Folder
    drive_id: str

    @property
    def can_write(self) -> bool:
        return self.link.url_type == READ_WRITE


def share_url(public_url: str, link_id: str) -> str:
    return f"{public_url}{PATH}{link_id}"


def link_id_of(share_id: str, public_url: str) -> str | None:
    """The link id that `share_id` names: the id itself, a share URL of this host, or (Graph's form)
    `u!` + the unpadded base64url of such a URL; None if it names no link of ours."""
    if share_id.startswith("u!"):
        encoded = share_id[2:]
        try:
            share_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    prefix = public_url + PATH
    if share_id.startswith(prefix):
        share_id = share_id[len(prefix) :].split("?", 1)[0].rstrip("/")
    return share_id if is_id(share_id) else None


def require_link_reach(s, link_id: str, folder_id: str, writing: bool, file_id: str | None = None) -> None:
    """403 unless the link `link_id` is live (and, `writing`, read-write) and reaches the file `file_id`, or
    (no `file_id`) into the folder `folder_id`: a file link reaches its file only, a folder link everything
    below it. Checked again in the transaction that lands an upload made through a link, after the folder's
    lock: the link may have been revoked, or the folder moved out of the shared one, meanwhile."""
    # In a write transaction the link's row is held (FOR SHARE on PostgreSQL) until the commit: revoke's UPDATE
    # waits for the upload to land, or the upload waits for the revocation and then reads the link revoked, so
    # no upload lands through a link after revoke() has returned. SQLite's writers take turns anyway. No
    # deadlock, whatever else this transaction holds (its folder's and file's rows, taken before): the only
    # writer of a link's row is revoke, one UPDATE that locks nothing but links, and no transaction holding a
    # link waits for another link.
    link = s.scalars(locking(s, sa.select(ShareLink).where(ShareLink.id == link_id), read=True)).one_or_none()
    if link is None or link.revoked_at is not None or (writing and link.url_type != READ_WRITE):
        raise WopiError(403, "the share link has been revoked or does not allow this", code="accessDenied")
    if file_id is not None and file_id == link.item_id:
        return
    folder = s.get(Folder, folder_id)
    while folder is not None:
        if folder.id == link.item_id:
            return
        folder = s.get(Folder, folder.parent_id) if folder.parent_id else None
    raise WopiError(403, "the share link does not reach that item", code="accessDenied")


class ShareLinks:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def link(self, item_id: str, url_type: str, user_id: str) -> ShareLink:
        """The user's live link of that type to the item, made on first use: asking twice gives one link."""
        if url_type not in URL_TYPES:
            raise ValueError(f"a share link is {' or '.join(URL_TYPES)}")
        with self.db.write() as s:
            lock_user(s, user_id)  # two askers at once still make one link
            existing = s.scalars(
                sa.select(ShareLink)
                .where(
                    ShareLink.item_id == item_id,
                    ShareLink.url_type == url_type,
                    ShareLink.created_by == user_id,
                    ShareLink.revoked_at.is_(None),
                )
                .order_by(ShareLink.created_at)
                .limit(1)
            ).first()
            if existing is not None:
                return existing
            link = ShareLink(
                id=new_id(), item_id=item_id, url_type=url_type, created_by=user_id, created_at=self.clock.now()
            )
            s.add(link)
            return link

    def resolve(self, link_id: str | None) -> Shared:
        """The live link `link_id` and its item; 404 for an unknown or revoked link or a deleted item."""
        with self.db.read() as s:
            link = s.get(ShareLink, link_id) if link_id and is_id(link_id) else None
            if link is None or link.revoked_at is not None:
                raise not_found("no such share link, or it has been revoked")
            folder = s.get(Folder, link.item_id)
            if folder is not None:
                return Shared(link, folder, folder.drive_id)
            file = s.get(File, link.item_id)
            if file is None:
                raise not_found("the shared item no longer exists")
            return Shared(link, file, s.get_one(Folder, file.folder_id).drive_id)

    def revoke(self, link_id: str | None = None, item_id: str | None = None, url_type: str | None = None) -> int:
        """Revoke one link, or an item's (those of one type): how many were live."""
        if link_id is None and item_id is None:
            raise ValueError("say which links to revoke")
        query = sa.update(ShareLink).where(ShareLink.revoked_at.is_(None))
        if link_id is not None:
            query = query.where(ShareLink.id == link_id)
        if item_id is not None:
            query = query.where(ShareLink.item_id == item_id)
        if url_type is not None:
            query = query.where(ShareLink.url_type == url_type)
        with self.db.write() as s:
            return cast(sa.CursorResult, s.execute(query.values(revoked_at=self.clock.now()))).rowcount

    def list(self, item_id: str | None = None) -> list[ShareLink]:
        query = sa.select(ShareLink).order_by(ShareLink.created_at, ShareLink.id)
        if item_id is not None:
            query = query.where(ShareLink.item_id == item_id)
        with self.db.read() as s:
            return list(s.scalars(query))
