"""Reading Graph's resource paths (docs/graph.md §2).

A request path is a drive, an item of it and an action:

    me/drive | drives/{id} | users/{id}/drive | sites/{id}/drive | groups/{id}/drive
    root | items/{id}              optionally followed by  :/{path}[:]
    /children | /content | /copy | /createUploadSession | /workbook/...       or nothing

Werkzeug has already percent-decoded the path, so `items/root%3A%2Fa%2Fb.bin%3A` (msgraph-sdk)
reads as `items/root:/a/b.bin:`. A path form without its closing colon takes the rest of
the URL as the path. Names cannot contain ":", so the first colon after a path closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ..text import text_problem
from .errors import GraphError

ACTIONS = ("children", "content", "copy", "createUploadSession", "workbook")
DRIVE_KINDS = {"users": "personal", "sites": "site", "groups": "group"}


def encoded(path: str) -> str:
    """A decoded request path as a URL's path again: what a name may hold (#, %, ?, a space) encoded."""
    return quote(path, safe="/:!$@")


@dataclass(frozen=True)
class DriveRef:
    """`me`: the token's user's drive; else the drive `drive_id` (users: the drive of user `drive_id`)."""

    via: str  # "me", "drives", "users", "sites", "groups"
    key: str | None = None


@dataclass(frozen=True)
class ItemRef:
    item_id: str | None  # None: the drive's root
    path: tuple[str, ...] | None  # names below the item, when addressed by path
    action: str | None
    rest: str = ""  # what follows the action: workbook/{rest}


def not_found(what: str) -> GraphError:
    return GraphError(404, "itemNotFound", what)


def require_utf8(path_info: str) -> None:
    """400 unless the request path's bytes (WSGI's PATH_INFO, one character a byte) are UTF-8: Werkzeug reads
    what is not as U+FFFD, and a name made of that would be stored other than the client spelled it."""
    try:
        path_info.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise GraphError(400, "invalidRequest", "the path is not valid UTF-8", "invalidPath") from None


def split_drive(rest: str) -> tuple[DriveRef, str]:
    """The drive a path starts with and what follows it (no leading slash)."""
    parts = rest.split("/", 3)
    if parts[:2] == ["me", "drive"]:
        return DriveRef("me"), "/".join(parts[2:])
    if parts[0] == "drives" and len(parts) > 1 and parts[1]:
        return DriveRef("drives", parts[1]), "/".join(parts[2:])
    if parts[0] in DRIVE_KINDS and len(parts) > 2 and parts[1] and parts[2] == "drive":
        return DriveRef(parts[0], parts[1]), "/".join(parts[3:])
    raise not_found(f"no resource at /{rest[:200]}")


def parse_item(rest: str) -> ItemRef:
    if rest == "root" or rest.startswith(("root:", "root/")):
        item_id, tail = None, rest[4:]
    elif rest.startswith("items/"):
        body = rest[len("items/") :]
        end = min((i for i in (body.find(":"), body.find("/")) if i >= 0), default=len(body))
        item_id, tail = body[:end], body[end:]
        if not item_id:
            raise GraphError(400, "invalidRequest", "items/ needs an item id")
        if item_id == "root":
            item_id = None
    else:
        raise not_found(f"no resource at {rest[:200]}")
    path = None
    if tail.startswith(":"):
        inner, colon, after = tail[1:].partition(":")
        path = tuple(name for name in inner.split("/") if name)
        if any(name in (".", "..") for name in path):
            raise GraphError(400, "invalidRequest", "a path may not contain . or ..", "invalidPath")
        problem = text_problem(inner)
        if problem is not None:
            raise GraphError(400, "invalidRequest", f"the path {problem}", "invalidPath")
        tail = after if colon else ""
    if tail in ("", "/"):  # a trailing slash, as after a drive (me/drive/) or an action (root/children/)
        return ItemRef(item_id, path, None)
    action, _, rest = tail[1:].partition("/") if tail.startswith("/") else (None, "", "")
    if action not in ACTIONS or (rest and action != "workbook"):
        raise GraphError(400, "invalidRequest", f"unsupported segment {tail[:100]!r} after the item")
    return ItemRef(item_id, path, action, rest)
