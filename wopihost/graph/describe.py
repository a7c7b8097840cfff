"""driveItem JSON for rows of the tree, with what it needs from the database (names, paths, counts)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, jsonify

from ..models import Drive, File, Folder, User
from ..services import Services
from ..tokens import DOWNLOAD_TTL, Grant
from ..tree import Item
from . import shapes
from .query import selected

DOWNLOADS = "downloads"


def describe(
    services: Services,
    s,
    items: list[Item],
    drive: Drive,
    grant: Grant | None,
    with_paths: bool = True,
    fields: frozenset[str] | None = None,
) -> list[dict]:
    """driveItem JSON for items (of one drive), with as few queries as the page needs; without `with_paths`,
    no folder path (shapes.item_json); with `fields` ($select: query.selection), only those properties, and a
    folder's size, whose query grows with what is below it, is not computed unless asked for."""
    tree = services.tree
    paths: dict[str, list[str]] = {}

    def parent_path(item: Item) -> list[str] | None:
        parent = item.folder_id if isinstance(item, File) else item.parent_id
        if parent is None:
            return None
        if not with_paths:
            return []
        if parent not in paths:
            paths[parent] = tree.path_of(s, s.get(Folder, parent))
        return paths[parent]

    folders = [item.id for item in items if isinstance(item, Folder)]
    counts = tree.child_counts(s, folders)
    sizes = tree.sizes(s, folders) if fields is None or "size" in fields else {}
    users = {
        u
        for item in items
        for u in (
            getattr(item, "owner_id", None),
            getattr(item, "modified_by", None),
            getattr(item, "created_by", None),
        )
        if u
    }
    known = names(s, users | ({drive.owner_id} if drive.owner_id else set()))
    return [
        selected(
            shapes.item_json(
                item,
                drive,
                parent_path(item),
                names=known,
                child_count=counts.get(item.id),
                folder_size=sizes.get(item.id),
                download_url=download_url(services, grant, item),
                with_path=with_paths,
            ),
            fields,
        )
        for item in items
    ]


def download_url(services: Services, grant: Grant | None, item: Item) -> str | None:
    """The host's own download URL (a ticket bound to the grant), or, for content stored as one whole blob in
    a store that clients can reach (WOPIHOST_S3_DOWNLOAD_URL), the store's own presigned URL. Both expire with
    the grant's token, or in DOWNLOAD_TTL if sooner."""
    if grant is None or not isinstance(item, File):
        return None
    ttl = min(DOWNLOAD_TTL, grant.expires_at - services.clock.now()).total_seconds()
    if item.extents is None and ttl >= 1:  # a presigned URL lasts whole seconds
        direct = services.blobs.download_url(item.blob, ttl, item.name)
        if direct is not None:
            return direct
    return f"{services.settings.public_url}/v1.0/{DOWNLOADS}/{services.tokens.ticket(grant, item.id)}"


def names(s, user_ids: set[str]) -> dict[str, str]:
    """Display names by user id (the id itself for a user the host does not know)."""
    found = {u.id: u.display_name for u in s.scalars(sa.select(User).where(User.id.in_(user_ids)))}
    return {user_id: found.get(user_id, user_id) for user_id in user_ids}


def item_response(
    services: Services, item: Item, drive: Drive, grant: Grant | None, status: int = 200, with_paths: bool = True
) -> Response:
    with services.db.read() as s:
        item = s.merge(item, load=True)  # as the write left it; a read writes nothing back (Database.read)
        # A folder deleted since the write (this read comes after its commit): the write is answered as it
        # went, without the path to a folder that is gone.
        parent = item.folder_id if isinstance(item, File) else item.parent_id
        with_paths = with_paths and (parent is None or s.get(Folder, parent) is not None)
        body = describe(services, s, [item], drive, grant, with_paths)[0]
    response = jsonify(body)
    response.status_code = status
    return response
