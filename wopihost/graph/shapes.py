"""The JSON Graph clients read: drive, driveItem, uploadSession and a copy's status (docs/graph.md §3).

Times are UTC with a literal Z and milliseconds (rclone parses only that form). A
file's eTag changes with its content, name and place (its sequence number), its cTag
only with its content (its version); a folder's eTag with any change to it, and a
folder has no cTag, as in Graph. Both are opaque quoted strings that contain a comma,
so If-Match compares them whole.
"""

from __future__ import annotations

import base64
import mimetypes
from datetime import datetime
from typing import Any, overload
from urllib.parse import quote

from ..models import Drive, File
from ..tree import Item


def timestamp(moment: datetime, fraction: bool = True) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}Z" if fraction else "Z")


def drive_type(drive: Drive) -> str:
    return "personal" if drive.kind == "personal" else "documentLibrary"


def etag(item: Item) -> str:
    return f'"{{{item.id}}},{item.sequence_number if isinstance(item, File) else item.version}"'


@overload
def ctag(item: File) -> str: ...
@overload
def ctag(item: Item) -> str | None: ...
def ctag(item: Item) -> str | None:
    return f'"c:{{{item.id}}},{item.version}"' if isinstance(item, File) else None


def _modified(item: Item) -> datetime:
    return item.modified_at or item.created_at


def identity(user_id: str, display_name: str) -> dict:
    return {"user": {"id": user_id, "displayName": display_name}}


def drive_json(drive: Drive, owner: dict, quota, free: int | None) -> dict:
    """With no quota set, what the drive can hold is what the storage can (`free` bytes); a storage that cannot
    tell (an object store) leaves total and remaining out, as Graph does for a drive without limits."""
    if quota.total is not None:
        limits = {"total": quota.total, "remaining": quota.remaining}
    elif free is not None:
        limits = {"total": quota.used + free, "remaining": free}
    else:
        limits = {}
    return {
        "id": drive.id,
        "driveType": drive_type(drive),
        "name": drive.name or "OneDrive",
        "createdDateTime": timestamp(drive.created_at),
        "owner": owner,
        "quota": {**limits, "used": quota.used, "deleted": 0, "state": quota.state},
    }


def item_json(
    item: Item,
    drive: Drive,
    parent_path: list[str] | None,
    *,
    names: dict[str, str],
    child_count: int | None = None,
    folder_size: int | None = None,
    download_url: str | None = None,
    with_path: bool = True,
) -> dict:
    """A driveItem. `parent_path` is the names from the root to the item's folder (None for the root);
    `names` maps user ids to display names; a folder's size is `folder_size`, what is below it (Tree.sizes).
    Without `with_path`, parentReference leaves the path out (a share link's holder reaches nothing above the
    item it shares, and learns no name of it either)."""
    creator = (item.owner_id if isinstance(item, File) else item.created_by) or drive.owner_id
    modifier = (item.modified_by if isinstance(item, File) else None) or creator
    created, modified = item.created_at, _modified(item)
    body: dict[str, Any] = {
        "id": item.id,
        "name": item.name if parent_path is not None else "root",
        "eTag": etag(item),
        "createdDateTime": timestamp(created),
        "lastModifiedDateTime": timestamp(modified),
        "size": item.size if isinstance(item, File) else folder_size or 0,
        "fileSystemInfo": {
            "createdDateTime": timestamp(item.fs_created_at or created),
            "lastModifiedDateTime": timestamp(item.fs_modified_at or modified),
        },
    }
    if isinstance(item, File):
        body["cTag"] = ctag(item)
    if creator:  # a shared drive's root was made by no user
        assert modifier is not None  # at worst the creator
        body["createdBy"] = identity(creator, names.get(creator, creator))
        body["lastModifiedBy"] = identity(modifier, names.get(modifier, modifier))
    reference: dict[str, str | None] = {"driveId": drive.id, "driveType": drive_type(drive)}
    if parent_path is not None:
        parent_id = item.folder_id if isinstance(item, File) else item.parent_id
        reference["id"] = parent_id
        if with_path:  # percent-encoded, as Graph's itemReference has it ("/drive/root:/Documents/my%20file.docx")
            reference["path"] = f"/drives/{drive.id}/root:" + "".join(f"/{quote(n, safe='')}" for n in parent_path)
    body["parentReference"] = reference
    if item.description:
        body["description"] = item.description
    if isinstance(item, File):
        file: dict[str, Any] = {"mimeType": mimetypes.guess_type(item.name)[0] or "application/octet-stream"}
        hashes = {}  # each where known: none after a CSPP chunked save, no SHA-256 of an upload session's file
        if item.quickxor:
            hashes["quickXorHash"] = item.quickxor  # base64, as OneDrive's; what rclone checks a transfer by
        if item.sha256:
            hashes["sha256Hash"] = base64.b64decode(item.sha256).hex().upper()
        if hashes:
            file["hashes"] = hashes
        body["file"] = file
        if download_url is not None:
            body["@microsoft.graph.downloadUrl"] = download_url
    else:
        body["folder"] = {"childCount": child_count or 0}
        if parent_path is None:
            body["root"] = {}
    return body


def upload_session_json(upload_url: str | None, expires_at: datetime, received: int, total: int | None) -> dict:
    """One closed range of what is missing: msgraph-core cannot parse an open one (docs/graph.md §4.3).
    Until the size is known (no fileSize, no fragment yet) only the open form can be said."""
    body = {
        "expirationDateTime": timestamp(expires_at),
        "nextExpectedRanges": [f"{received}-{total - 1}" if total is not None else f"{received}-"],
    }
    if total is not None and received >= total:
        body["nextExpectedRanges"] = []
    if upload_url is not None:
        body = {"uploadUrl": upload_url, **body}
    return body


def copy_status_json(file_id: str) -> dict:
    """A copy's asyncJobStatus, as its monitor URL answers it once done: `resourceId` is the new item."""
    return {"operation": "itemCopy", "percentageComplete": 100.0, "resourceId": file_id, "status": "completed"}
