"""Graph handlers: authenticate, read the path (address.py) and the request, call the domain, answer JSON."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import PreconditionFailed

from ..body import request_body
from ..clock import parse_iso
from ..drives import SHARED_KINDS
from ..errors import WopiError, checked_name  # a response with no body claims no type
from ..errors import WopiResponse as NoContent
from ..files import CONFLICT_BEHAVIOURS
from ..models import Drive, File, Folder
from ..prepared import Statements
from ..services import Services
from ..shares import link_id_of
from ..streaming import content_response
from ..text import digits, text_problem
from ..tokens import API, COPY_MONITOR, Grant, bearer
from ..tree import Item
from ..uploads import Held, Redirect, Target, require_reach
from . import shapes
from .address import DRIVE_KINDS, DriveRef, ItemRef, encoded, not_found, parse_item, require_utf8, split_drive
from .conditions import condition, conditions
from .describe import DOWNLOADS, describe, item_response, names
from .errors import GraphError
from .errors import not_allowed as _not_allowed
from .query import expansions, option, selected, selection
from .request import json_body, json_object
from .uploads import UPLOADS, upload_session
from .workbook import workbook

SIMPLE_UPLOAD_LIMIT = 4 << 20  # larger files go through an upload session (docs/graph.md §3.6)
DEFAULT_PAGE, MAX_PAGE = 200, 1000
_SKIPTOKEN = re.compile(r"^([A-Za-z0-9]{22})\.(.*)$", re.S)


@dataclass(frozen=True)
class Call:
    """One authenticated request on one drive, or (`share`, a link id) on an item shared with a link."""

    services: Services
    grant: Grant
    drive: Drive
    share: str | None = None

    def require_write(self) -> None:
        if not self.grant.can_write:
            raise GraphError(
                403,
                "accessDenied",
                "the share link is read-only" if self.share and self.grant.rights == "r" else "the token is read-only",
            )

    @property
    def download_grant(self) -> Grant | None:
        """The grant downloadUrls are made under; none through a link, whose user need not be a member of
        the drive that a download URL checks."""
        return None if self.share else self.grant


def dispatch(rest: str) -> Response:
    require_utf8(request.environ.get("PATH_INFO", ""))
    services: Services = current_app.extensions["wopihost"]
    head, _, tail = rest.partition("/")
    if head == UPLOADS:  # the upload URL is its own credential; an Authorization header is ignored
        return upload_session(services, tail)
    if head == DOWNLOADS:
        return _download(services, tail)
    if head == MONITORS:  # as an upload URL, the monitor URL is the credential
        return _monitor(services, tail)
    grant = _authenticate(services)
    if rest.startswith("shares/"):
        return _shared(services, grant, rest[len("shares/") :])
    if rest in ("me/drives", "drives"):
        _allow("GET", "HEAD")
        return _drives_answer(services, grant)
    parts = rest.split("/")
    if len(parts) == 3 and parts[0] in DRIVE_KINDS and parts[1] and parts[2] == "drives":
        _allow("GET", "HEAD")
        return _drives_of(services, grant, DriveRef(parts[0], parts[1]))
    drive_ref, rest = split_drive(rest)
    with services.db.read() as s:
        drive = _drive(services, s, grant, drive_ref)
    call = Call(services, grant, drive)
    if not rest:
        _allow("GET", "HEAD")
        return _drive_answer(call)
    ref = parse_item(rest)
    if ref.action == "workbook":
        return _workbook(call, ref)
    handler = _HANDLERS.get((request.method if request.method != "HEAD" else "GET", ref.action))
    if handler is None:
        raise _not_allowed(method for method, action in _HANDLERS if action == ref.action)
    return handler(call, ref)


def _shared(services: Services, grant: Grant, rest: str) -> Response:
    """shares/{shareId}/driveItem[...]: the item a share link opens, with the rights it names (and the token
    has), reached by whoever holds the link and an API token, member of its drive or not (docs/graph.md §11)."""
    share_id, _, tail = rest.partition("/")
    if not tail.startswith(SHARED_ITEM):
        raise not_found("a share is reached as shares/{shareId}/driveItem")
    shared = services.shares.resolve(link_id_of(share_id, services.settings.public_url))
    with services.db.read() as s:
        drive = s.get_one(Drive, shared.drive_id)
    rights = "w" if shared.can_write and grant.can_write else "r"
    call = Call(services, replace(grant, rights=rights), drive, share=shared.link.id)
    ref = parse_item(f"items/{shared.item.id}{tail[len(SHARED_ITEM) :]}")
    key = (request.method if request.method != "HEAD" else "GET", ref.action)
    if key not in _SHARED_OPERATIONS:
        raise _not_allowed(
            (method for method, action in _SHARED_OPERATIONS if action == ref.action),
            "through a share link an item is read, listed, downloaded, and (read-write links) uploaded to",
        )
    return _HANDLERS[key](call, ref)


# -- authentication and drives ------------------------------------------------------------


def _authenticate(services: Services) -> Grant:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise GraphError(401, "unauthenticated", "an API token is required (Authorization: Bearer)")
    with services.db.read() as s:
        return services.tokens.verify(s, token, API)


def _drive(services: Services, s, grant: Grant, ref: DriveRef) -> Drive:
    if ref.via == "me" or (ref.via == "users" and ref.key in ("me", grant.user_id)):
        drive = s.scalars(sa.select(Drive).where(Drive.owner_id == grant.user_id)).one_or_none()
        return drive or services.drives.personal(grant.user_id)
    if ref.via == "users":
        raise GraphError(403, "accessDenied", "a token reaches only its own user's drive")
    kind = DRIVE_KINDS.get(ref.via)
    if kind in SHARED_KINDS or ref.via == "drives":
        assert ref.key is not None  # only "me" comes without one
        return services.drives.reachable(s, grant.user_id, ref.key, kind)
    raise not_found("no such drive")


def _allow(*methods: str) -> None:
    if request.method not in methods:
        raise _not_allowed(methods)


def _drive_answer(call: Call) -> Response:
    with call.services.db.read() as s:
        return jsonify(selected(_drive_json(call.services, s, call.drive), selection()))


def _drives_answer(services: Services, grant: Grant) -> Response:
    """The drives the token's user reaches: their own, then the shared drives they are a member of."""
    services.drives.personal(grant.user_id)
    with services.db.read() as s:
        drives = services.drives.of_user(s, grant.user_id)
        fields = selection()
        return jsonify({"value": [selected(_drive_json(services, s, drive), fields) for drive in drives]})


def _drives_of(services: Services, grant: Grant, ref: DriveRef) -> Response:
    """users/{id}/drives: the token's own user's drives, as me/drives; sites/{id}/drives and groups/{id}/drives:
    the site's or group's one drive, the shared drive of that id (as SDKs and rclone list a site's libraries)."""
    if ref.via == "users" and ref.key in ("me", grant.user_id):
        return _drives_answer(services, grant)
    with services.db.read() as s:
        drive = _drive(services, s, grant, ref)  # another user's: 403; a drive not reached: 403 or 404
        return jsonify({"value": [selected(_drive_json(services, s, drive), selection())]})


def _drive_json(services: Services, s, drive: Drive) -> dict:
    quota = services.drives.quota(s, drive.id)
    if drive.owner_id:
        owner = shapes.identity(drive.owner_id, names(s, {drive.owner_id})[drive.owner_id])
    else:
        owner = {"group": {"id": drive.id, "displayName": drive.name}}
    free = services.blobs.free_space()
    if free is not None:
        free = max(free - services.settings.min_free_space, 0)
    return shapes.drive_json(drive, owner, quota, free)


# -- items ------------------------------------------------------------------------------------


def _start(call: Call, s, ref: ItemRef) -> Item:
    """The item a reference starts from (its path, if any, is below it)."""
    tree = call.services.tree
    return tree.root(s, call.drive.id) if ref.item_id is None else tree.item(s, call.drive.id, ref.item_id)


def _locate(call: Call, s, ref: ItemRef) -> Item:
    return call.services.tree.resolve(s, _start(call, s, ref), list(ref.path or ()))


def _folder_of_new(call: Call, s, ref: ItemRef) -> Folder | None:
    """The folder an upload to the path `ref` puts its file in, its missing folders made in a write transaction,
    as OneDrive makes them (Tree.folder_for_new: None in a read one while a folder is still to make)."""
    assert ref.path  # an upload by path names its file
    return call.services.tree.folder_for_new(s, _start(call, s, ref), list(ref.path[:-1]), call.grant.user_id)


def get_item(call: Call, ref: ItemRef) -> Response:
    """The item, with the properties $select names; with $expand=children (as the SDKs ask for it), a folder's
    first page of children too (with the $select and $top given to the expansion: `children($select=id,name;
    $top=5)`), and the link to the rest, as Graph answers it. Other expansions are of nothing the host has."""
    with call.services.db.read() as s:
        item = _locate(call, s, ref)
        if _current_copy(item):
            return NoContent(status=304)
        body = describe(call.services, s, [item], call.drive, call.download_grant, call.share is None, selection())[0]
        expanded = expansions().get("children")
        if isinstance(item, Folder) and expanded is not None:
            _require_listed_order(expanded)
            args = {"$select": select} if (select := option(expanded, "select")) else {}
            top = _whole_number(option(expanded, "top"), "$top in children(...)", DEFAULT_PAGE, 1, MAX_PAGE)
            children, next_link = _children_page(call, s, item, top, None, _children_path(ref), args)
            body["children"] = children
            if next_link is not None:
                body["children@odata.nextLink"] = next_link
    return jsonify(body)


def _children_path(ref: ItemRef) -> str:
    """The path of this request's item's children: the path as it was sent, its own path (`root:/a`, `root:`)
    closed first. No name holds a colon: a path form is closed if it has two."""
    path = request.path.rstrip("/")  # `root/` and `root:/a:/` name the same items as `root` and `root:/a:`
    if ref.path is not None and path.count(":") < 2:
        path += ":"
    return path + "/children"


def update_item(call: Call, ref: ItemRef) -> Response:
    call.require_write()
    body = json_body()
    reference = body.get("parentReference")
    with call.services.db.read() as s:
        item = _locate(call, s, ref)
        moving = _new_parent(call, s, reference) is not None
    described = _described(body)
    conflict = _conflict_of(body, "fail")
    # The item, and the folder it moves to, are found again in the transaction that saves the change: a path
    # names what is there then (Tree.update, Locate)
    updated = call.services.tree.update(
        call.drive.id,
        lambda s: _locate(call, s, ref),
        call.grant.user_id,
        name=_text(body, "name"),
        parent_id=_named_folder(call, call.drive.id, json_object(reference, "parentReference")) if moving else None,
        **described,
        if_match=_if_match(),
        conflict=conflict,
        admit=_admit(call, call.drive.id, item.id if isinstance(item, File) else None),
    )
    return item_response(call.services, updated, call.drive, call.download_grant)


def _new_parent(call: Call, s, reference: Any) -> Folder | None:
    if reference is None:
        return None
    reference = json_object(reference, "parentReference")
    if reference.get("driveId") not in (None, call.drive.id):
        raise GraphError(400, "invalidRequest", "items can only be moved within their drive")
    return _referenced_folder(call, s, call.drive.id, reference)


def _named_folder(call: Call, drive_id: str, reference: dict) -> Callable[[Any], Folder]:
    """What finds the folder of the drive `drive_id` that a parentReference names (it named one as the request
    came: by an id, or by a path, which names what is there when it is asked), in a transaction (Locate)."""

    def find(s) -> Folder:
        folder = _referenced_folder(call, s, drive_id, reference)
        assert folder is not None  # an id or a path, which it has still
        return folder

    return find


def _referenced_folder(call: Call, s, drive_id: str, reference: dict) -> Folder | None:
    """The folder of the drive `drive_id` a parentReference names by `id` or `path`; None if it names none."""
    for key in ("id", "path"):
        if reference.get(key) is not None and not isinstance(reference[key], str):
            raise GraphError(400, "invalidRequest", f"parentReference.{key} is a string")
    folder: Item
    if reference.get("id") == "root":  # the alias a URL takes (items/root) is no item's id: ids are 22 characters
        folder = call.services.tree.root(s, drive_id)
    elif isinstance(reference.get("id"), str):
        folder = call.services.tree.item(s, drive_id, reference["id"])
    elif isinstance(reference.get("path"), str):
        drive, colon, path = reference["path"].partition("/root:")
        if not colon or drive not in ("/drive", f"/drives/{drive_id}"):
            raise GraphError(
                400,
                "invalidRequest",
                "parentReference.path must be /drive/root:/{path} or /drives/{this drive's id}/root:/{path}",
            )
        names = [unquote(name) for name in path.split("/") if name]  # percent-encoded, as Graph answers it
        for name in names:
            if (problem := text_problem(name)) is not None:  # "\ud800", "%00": no name, and no database takes it
                raise GraphError(400, "invalidRequest", f"parentReference.path {problem}")
        folder = call.services.tree.resolve(s, call.services.tree.root(s, drive_id), names)
    else:
        return None
    if not isinstance(folder, Folder):
        raise GraphError(400, "invalidRequest", "parentReference does not name a folder")
    return folder


def copy_item(call: Call, ref: ItemRef) -> Response:
    """POST {item}/copy: a copy of a file, or of a folder with everything in it (or, childrenOnly, of what is in
    it), made before the answer (202, a monitor URL that reports it done)."""
    call.require_write()
    body = json_body()
    reference = json_object(body.get("parentReference", {}), "parentReference")
    name = _text(body, "name")
    children_only = body.get("childrenOnly", False)
    if not isinstance(children_only, bool):
        raise GraphError(400, "invalidRequest", "childrenOnly must be true or false")
    if children_only and name is not None:
        raise GraphError(400, "invalidRequest", "with childrenOnly the children keep their names: give no name")
    conflict = _conflict_of(body, "fail")
    services = call.services
    with services.db.read() as s:
        source = _locate(call, s, ref)
        if children_only and not isinstance(source, Folder):
            raise GraphError(400, "invalidRequest", "childrenOnly is for folders")
        drive = call.drive
        if reference.get("driveId") not in (None, drive.id):
            if not isinstance(reference["driveId"], str):
                raise GraphError(400, "invalidRequest", "parentReference.driveId is a string")
            drive = services.drives.reachable(s, call.grant.user_id, reference["driveId"])
        folder = _referenced_folder(call, s, drive.id, reference)
        named = folder is not None
        if folder is None and drive.id != call.drive.id:  # beside the source would be in the source's drive
            raise GraphError(400, "invalidRequest", "parentReference names another drive: give a folder of it")
        if folder is None:  # beside the source; a drive's root has nothing beside it, and goes into itself (400)
            folder = s.get_one(Folder, source.folder_id if isinstance(source, File) else source.parent_id or source.id)
        name = None if children_only else source.name if name is None else name
        if isinstance(source, File):
            assert name is not None  # childrenOnly is refused above
            replaced = services.tree.child(s, folder.id, name) if conflict == "replace" else None
            services.drives.check_room(s, drive.id, source.size - getattr(replaced, "size", 0))
    user, admit_here = call.grant.user_id, _admit(call, drive.id)
    # a folder the parentReference names is found again where the copy lands: what its path names then (Locate)
    destination = _named_folder(call, drive.id, reference) if named else folder.id

    def admit(s, folder_id: str, growth: int) -> None:
        # a copy into another drive reads this one: the user may have left it while its bytes were copied
        if drive.id != call.drive.id:
            services.drives.reachable(s, user, call.drive.id)
        admit_here(s, folder_id, growth)

    if isinstance(source, File):
        assert name is not None
        copy: Item = services.files.copy(source.id, destination, name, user, conflict, admit)
    else:
        copy = services.tree.copy_folder(
            source.id,
            destination,
            name,
            user,
            conflict,
            services.settings.max_copy_items,
            lambda s, growth: services.drives.check_room(s, drive.id, growth),
            admit,
        )
    monitor = services.tokens.ticket(call.grant, copy.id, kind=COPY_MONITOR)
    return NoContent(status=202, headers={"Location": f"{services.settings.public_url}/v1.0/{MONITORS}/{monitor}"})


def delete_item(call: Call, ref: ItemRef) -> Response:
    call.require_write()
    with call.services.db.read() as s:
        item = _locate(call, s, ref)
    admit = _admit(call, call.drive.id, item.id if isinstance(item, File) else None)
    # found again where it is deleted: what the path names then (Tree.delete, Locate)
    call.services.tree.delete(call.drive.id, lambda s: _locate(call, s, ref), _if_match(), admit)
    return NoContent(status=204)


def list_children(call: Call, ref: ItemRef) -> Response:
    _require_listed_order()
    top = _int_query("$top", DEFAULT_PAGE, 1, MAX_PAGE)
    after = None
    skiptoken = request.args.get("$skiptoken")
    if skiptoken is not None:
        match = _SKIPTOKEN.match(skiptoken)
        if match is None or text_problem(skiptoken) is not None:
            raise GraphError(400, "invalidRequest", "$skiptoken is not one this host gave")
        after = (match.group(2), match.group(1))
    with call.services.db.read() as s:
        folder = _locate(call, s, ref)
        if not isinstance(folder, Folder):
            raise GraphError(400, "invalidRequest", "only a folder has children")
        value, next_link = _children_page(call, s, folder, top, after, request.path, request.args.to_dict())
    body: dict[str, Any] = {"value": value}
    if next_link is not None:
        body["@odata.nextLink"] = next_link
    return jsonify(body)


def _require_listed_order(options: Mapping[str, str] | None = None) -> None:
    """400 for a $filter, $search, $skip or $count=true, or an $orderby other than the name order children are
    listed in, in the query or in `options` (of `$expand=children(...)`): an answer of other items, or in another
    order, than asked for would be taken for the one asked for (a client paging with $skip would get the first
    page again)."""
    args = request.args if options is None else options
    for name in ("filter", "search", "skip"):
        if option(args, name) is not None:
            raise GraphError(400, "invalidRequest", f"${name} is not supported on children: page with @odata.nextLink")
    count = option(args, "count")
    if count is not None and count.strip().lower() != "false":
        raise GraphError(400, "invalidRequest", "$count is not supported on children: count what is listed")
    order = option(args, "orderby")
    if order is not None and " ".join(order.lower().split()) not in ("name", "name asc"):
        raise GraphError(400, "invalidRequest", "children are listed by name only: $orderby=name, or no $orderby")


def _children_page(
    call: Call, s, folder: Folder, top: int, after: tuple[str, str] | None, path: str, args: dict[str, str]
) -> tuple[list[dict], str | None]:
    """Up to `top` children of the folder after `after`, with the properties the $select of `args` names, and, if
    there are more, the link to the next page: `path` (decoded, as Flask reads it) with the query `args` and the
    page's $top and $skiptoken."""
    page = call.services.tree.children(s, folder, top + 1, after)
    more, page = len(page) > top, page[:top]
    value = describe(call.services, s, page, call.drive, call.download_grant, call.share is None, selection(args))
    if not more:
        return value, None
    last = page[-1]
    args = {**args, "$top": str(top), "$skiptoken": f"{last.id}.{last.name_key}"}
    url = call.services.settings.public_url + encoded(path)  # the path as it was sent
    return value, url + "?" + _query(args)


def create_child(call: Call, ref: ItemRef) -> Response:
    call.require_write()
    body = json_body()
    name = body.get("name")
    if not isinstance(name, str):
        raise GraphError(400, "invalidRequest", "name is required, a string")
    if "folder" not in body:
        raise GraphError(
            400,
            "invalidRequest",
            "only folders are created this way (give a folder facet); upload a file's content to make a file",
        )
    conflict = _conflict_of(body, "fail")
    described = _described(body)
    with call.services.db.read() as s:
        _parent_folder(call, s, ref)
    # found again where the folder is made: what the path names then (Tree.create_folder, Locate)
    folder, created = call.services.tree.create_folder(
        lambda s: _parent_folder(call, s, ref),
        name,
        conflict,
        call.grant.user_id,
        **described,
        admit=_admit(call, call.drive.id),
    )
    return item_response(call.services, folder, call.drive, call.download_grant, 201 if created else 200)


def _parent_folder(call: Call, s, ref: ItemRef) -> Folder:
    parent = _locate(call, s, ref)
    if not isinstance(parent, Folder):
        raise GraphError(400, "invalidRequest", "a file has no children")
    return parent


def _workbook(call: Call, ref: ItemRef) -> Response:
    with call.services.db.read() as s:
        item = _locate(call, s, ref)
    if not isinstance(item, File):
        raise GraphError(400, "invalidRequest", "a folder is not a workbook", "unsupportedWorkbook")
    return workbook(call, item, ref.rest, _admit(call, call.drive.id, item.id))


def get_content(call: Call, ref: ItemRef) -> Response:
    with call.services.db.read() as s:
        item = _locate(call, s, ref)
    if not isinstance(item, File):
        raise GraphError(400, "invalidRequest", "a folder has no content")
    return _content(call.services, item.id)


def _download(services: Services, ticket: str) -> Response:
    _allow("GET", "HEAD")
    with services.db.read() as s:
        file_id, row, _ = services.tokens.open_ticket(s, ticket)
        file = s.get(File, file_id)
        if file is None:
            raise not_found("the file no longer exists")
        services.drives.reachable(s, row.user_id, s.get_one(Folder, file.folder_id).drive_id)  # still a member?
    return _content(services, file_id)


def _monitor(services: Services, ticket: str) -> Response:
    """The status of a copy: done, as copies are made before their 202 (docs/graph.md §3.7)."""
    _allow("GET", "HEAD")
    with services.db.read() as s:
        file_id, _, _ = services.tokens.open_ticket(s, ticket, COPY_MONITOR)
    return jsonify(shapes.copy_status_json(file_id))


def _content(services: Services, file_id: str) -> Response:
    conditions()  # read by Werkzeug, which takes what is malformed for a tag: 400 here, as on every other route
    file, content = services.files.open_content(file_id)
    tag, item_tag = shapes.ctag(file).strip('"'), shapes.etag(file).strip('"')
    try:
        return content_response(request, file, content, tag, also_matching=(item_tag,))
    except PreconditionFailed:  # the content closed; in the form of every other 412 here, its inner code with it
        raise _precondition_failed("If-Match does not match the item's eTag") from None


def put_content(call: Call, ref: ItemRef) -> Response:
    """Simple upload: a new file at a path, or new content for an item."""
    call.require_write()
    length = request.content_length
    if length is not None and length > SIMPLE_UPLOAD_LIMIT:
        raise GraphError(
            413,
            "requestSizeExceeded",
            f"a simple upload carries at most {SIMPLE_UPLOAD_LIMIT} bytes; use createUploadSession",
        )
    services, user = call.services, call.grant.user_id
    conflict = _conflict(request.args, "replace")
    with services.db.read() as s:
        if ref.path:
            folder, name = _folder_of_new(call, s, ref), checked_name(ref.path[-1])
            existing = services.tree.child(s, folder.id, name) if folder is not None else None
        else:
            existing = _locate(call, s, ref)
            if not isinstance(existing, File):
                raise GraphError(400, "invalidRequest", "a folder has no content")
        # only a file the upload replaces frees its bytes: rename and fail leave the one of that name
        replaced = existing if isinstance(existing, File) and (not ref.path or conflict == "replace") else None
        services.drives.check_room(s, call.drive.id, (length or 0) - getattr(replaced, "size", 0))

    admit = _admit(call, call.drive.id, None if ref.path else getattr(existing, "id", None))
    if ref.path:
        file, created = services.files.put_named(
            # found again where the bytes land, once they are in: what the path names then, made where missing
            lambda s: _folder_of_new(call, s, ref),
            name,
            user,
            request_body(),
            conflict,
            _if_match(),
            SIMPLE_UPLOAD_LIMIT,
            admit,
        )
    else:
        assert isinstance(existing, File)  # checked above
        file, created = (
            services.files.replace(existing.id, user, request_body(), _if_match(), SIMPLE_UPLOAD_LIMIT, admit),
            False,
        )
    return item_response(
        call.services, file, call.drive, call.download_grant, 201 if created else 200, call.share is None
    )


def _admit(call: Call, drive_id: str, file_id: str | None = None) -> Callable[[Any, str, int], None]:
    """What a write asks once its bytes are in, in the transaction that lands them (or a new folder, a PATCH or a
    DELETE, in the one that makes it): the caller still reaches the folder of the drive `drive_id` (a link revoked,
    a member removed, the folder moved out of the shared one while they came?) or the file `file_id` in it, they
    fit (a chunked body declared no length), and the API token is still live (revoked meanwhile?)."""

    def admit(s, folder_id: str, growth: int) -> None:
        require_reach(s, call.services.drives, call.grant.user_id, call.share, drive_id, folder_id, file_id)
        call.services.drives.check_room(s, drive_id, growth)
        with Statements.in_session(s) as t:  # the last lock taken: see Tokens.require_live
            call.services.tokens.require_live(t, call.grant)

    return admit


def create_upload_session(call: Call, ref: ItemRef) -> Response:
    call.require_write()
    body = json_body(optional=True)
    item = json_object(body.get("item", {}), "item")
    defer = body.get("deferCommit", False)
    if not isinstance(defer, bool):
        raise GraphError(400, "invalidRequest", "deferCommit must be true or false")
    size = item.get("fileSize")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise GraphError(400, "invalidRequest", "item.fileSize must be a whole number of bytes")
    info = json_object(item.get("fileSystemInfo", {}), "item.fileSystemInfo")
    times = [_time(info, field) for field in ("createdDateTime", "lastModifiedDateTime")]
    described = dict(
        defer=defer,
        description=_text(item, "description"),
        share_link=call.share,
        fs_created=times[0] and times[0].isoformat(),
        fs_modified=times[1] and times[1].isoformat(),
    )
    services = call.services
    with services.db.read() as s:
        if ref.path:  # a new file at a path (or the file there, by its conflict behaviour)
            # missing folders are made when the file lands, at completion: none stays behind a session that fails
            folder, missing = services.tree.existing_part(s, _start(call, s, ref), list(ref.path[:-1]))
            name = checked_name(ref.path[-1])
            if _differs(item.get("name"), name):
                raise GraphError(400, "invalidRequest", "item.name differs from the name in the path")
            target = Target(
                call.drive.id,
                folder_id=folder.id,
                name=name,
                path=missing or None,
                conflict=_conflict_of(item, "replace"),
                **described,
            )
        else:
            existing = _locate(call, s, ref)
            if not isinstance(existing, File):
                raise GraphError(
                    400, "invalidRequest", "name the new file: items/{parent-id}:/{name}:/createUploadSession"
                )
            target = Target(call.drive.id, file_id=existing.id, **described)
    token, status = services.uploads.create(call.grant.user_id, target, size, _held_by_if_match())
    url = f"{services.settings.public_url}/v1.0/{UPLOADS}/{token}"
    return jsonify(shapes.upload_session_json(url, status.expires_at, status.received, size))


def _held_by_if_match() -> Callable[[File | None], Held | None] | None:
    """If-Match / If-None-Match at createUploadSession, checked as everywhere, and what an If-Match holds
    the file to until completion: what its tag names (the eTag the item, the cTag the content). An
    If-None-Match holds nothing past creation: a tag the file has moved on from never comes back, and a
    file that must not exist yet is what conflictBehavior fail checks at completion (docs/graph.md §4.1)."""
    check = _if_match()
    if check is None:
        return None
    match = condition("If-Match")

    def held(file: File | None) -> Held | None:
        check(file)  # If-Match fails where no file is
        if match is None or file is None:
            return None
        if shapes.etag(file) in match.strong:  # a list may name both: the eTag holds the file closer
            return Held(sequence=file.sequence_number)
        if shapes.ctag(file) in match.strong:
            return Held(version=file.version)
        return Held()  # *

    return held


def _differs(given: object, name: str) -> bool:
    """Whether a body's `name`, if given, is not the path's `name` (checked, so composed): compared in NFC, as
    macOS sends its names decomposed."""
    return given is not None and (not isinstance(given, str) or unicodedata.normalize("NFC", given) != name)


def commit_from_source(call: Call, ref: ItemRef) -> Response:
    """PUT {path} with @microsoft.graph.sourceUrl: an upload session's bytes become the file at `path`
    (or, if `path` is a folder, the file `name` in it), as a deferred or failed completion asks."""
    call.require_write()
    body = json_body()
    source = body.get("@microsoft.graph.sourceUrl", body.get("@content.sourceUrl"))
    if not isinstance(source, str):
        raise GraphError(400, "invalidRequest", "@microsoft.graph.sourceUrl is required")
    token = source.rstrip("/").rsplit("/", 1)[-1]
    if f"/{UPLOADS}/" not in source:
        raise GraphError(400, "invalidRequest", "@microsoft.graph.sourceUrl is not an upload URL of this host")
    if ref.path is None:
        raise GraphError(400, "invalidRequest", "name the file by path: root:/{path}")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise GraphError(400, "invalidRequest", "name must be a string")
    with call.services.db.read() as s:
        _committed_to(call, s, ref, name)
    # found again where the session becomes the file: what the path names then (Locate)
    redirect = Redirect(
        call.drive.id, lambda s: _committed_to(call, s, ref, name), _conflict_of(body, "replace"), call.share
    )
    admit = _admit(call, call.drive.id)  # the token may have been revoked while the session's pieces were joined
    file, created = call.services.uploads.complete(token, call.grant.user_id, redirect, _if_match(), admit)
    return item_response(call.services, file, call.drive, call.download_grant, 201 if created else 200)


def _committed_to(call: Call, s, ref: ItemRef, name: str | None) -> tuple[Folder, str]:
    """The folder and the name a sourceUrl commit to the path `ref` puts its file at: the path's, or, if the
    path is a folder and the body gives a `name`, that name in it."""
    assert ref.path is not None  # commit_from_source refuses a reference without one
    tree = call.services.tree
    start = _start(call, s, ref)
    there = tree.find(s, start, list(ref.path))
    if isinstance(there, Folder) and name:
        return tree.parent_of_new(s, there, [name])
    folder, name_in_path = tree.parent_of_new(s, start, list(ref.path))
    if _differs(name, name_in_path):
        raise GraphError(400, "invalidRequest", "name differs from the name in the path")
    return folder, name_in_path


_HANDLERS: dict[tuple[str, str | None], Callable[[Call, ItemRef], Response]] = {
    ("GET", None): get_item,
    ("PATCH", None): update_item,
    ("DELETE", None): delete_item,
    ("PUT", None): commit_from_source,
    ("GET", "children"): list_children,
    ("POST", "children"): create_child,
    ("GET", "content"): get_content,
    ("PUT", "content"): put_content,
    ("POST", "createUploadSession"): create_upload_session,
    ("POST", "copy"): copy_item,
}


# -- request parsing ----------------------------------------------------------------------------

SHARED_ITEM = "driveItem"
MONITORS = "monitor"
_SHARED_OPERATIONS = {
    ("GET", None),
    ("GET", "children"),
    ("GET", "content"),
    ("PUT", "content"),
    ("POST", "createUploadSession"),
}


def _described(body: dict) -> dict[str, Any]:
    """What a client says of a folder or an item beside its name (description, fileSystemInfo's times), as
    Tree.create_folder and Tree.update take it; 400 for a malformed value."""
    info = json_object(body.get("fileSystemInfo", {}), "fileSystemInfo")
    return dict(
        description=_text(body, "description"),
        fs_created=_time(info, "createdDateTime"),
        fs_modified=_time(info, "lastModifiedDateTime"),
    )


def _time(info: dict, field: str):
    value = info.get(field)
    if value is None:
        return None
    try:
        moment = parse_iso(value) if isinstance(value, str) else None
    except OverflowError:  # an offset that moves the time out of the calendar
        moment = None
    if moment is None or not 1601 <= moment.year <= 9999:  # Windows' file times start in 1601
        raise GraphError(400, "invalidRequest", f"fileSystemInfo.{field} is not an ISO 8601 time from 1601 to 9999")
    return moment


def _text(body: dict, field: str) -> str | None:
    """A string field the database will store as given; 400 for anything else."""
    value = body.get(field)
    if value is None:
        return None
    problem = "is not a string" if not isinstance(value, str) else text_problem(value)
    if problem is not None:
        raise GraphError(400, "invalidRequest", f"{field} {problem}")
    return value


def _conflict_of(body: dict, default: str) -> str:
    """The conflict behaviour of a request with a JSON body that makes an item (PATCH, a new folder, a copy,
    createUploadSession's item, a sourceUrl commit): Graph's documents put it in the query, its SDKs (whose
    requests take no such parameter) in the body; the query's wins."""
    return _conflict(request.args, _conflict(body, default))


def _conflict(source, default: str) -> str:
    value = source.get("@microsoft.graph.conflictBehavior", source.get("@name.conflictBehavior", default))
    if value not in CONFLICT_BEHAVIOURS:
        raise GraphError(400, "invalidRequest", f"conflictBehavior is one of {', '.join(CONFLICT_BEHAVIOURS)}")
    return value


def _if_match() -> Callable[[Item | None], None] | None:
    """If-Match / If-None-Match against an item's eTag or cTag; against None, where no item is, If-Match fails
    (even `*`) and If-None-Match holds (RFC 9110 §13.1.1, §13.1.2). A malformed header is 400 here, before
    anything is done."""
    match, none_match = conditions()
    if match is None and none_match is None:
        return None

    def check(item: Item | None) -> None:  # runs inside the domain's transaction, so it raises the domain's error
        tags = _tags(item) if item is not None else []
        if match is not None and (item is None or not match.holds_for(tags)):
            raise _precondition_failed("If-Match does not match the item's eTag")
        if none_match is not None and item is not None and none_match.holds_for(tags, weak=True):
            raise _precondition_failed("If-None-Match matches the item's eTag")

    return check


def _tags(item: Item) -> list[str]:
    return [tag for tag in (shapes.etag(item), shapes.ctag(item)) if tag is not None]


def _current_copy(item: Item) -> bool:
    """A GET's conditions, read as the item's content reads them (streaming.py): If-Match failing is 412, as on
    a write; If-None-Match matching says the client's copy is current, which Graph answers 304 Not Modified."""
    match, none_match = conditions()
    if match is not None and not match.holds_for(_tags(item)):
        raise _precondition_failed("If-Match does not match the item's eTag")
    return none_match is not None and none_match.holds_for(_tags(item), weak=True)


def _precondition_failed(reason: str) -> WopiError:
    """The domain's error (checks run inside its transactions raise it), so one form for every 412 here."""
    return WopiError(412, reason, code="preconditionFailed/entityTagDoesNotMatch")


def _int_query(name: str, default: int, low: int, high: int) -> int:
    return _whole_number(request.args.get(name), name, default, low, high)


def _whole_number(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """The option `name`'s value `raw` (`default` if not given), at least `low` (400 otherwise), and at most `high`
    (a larger one is read as `high`)."""
    if raw is None:
        return default
    if not digits(raw):
        raise GraphError(400, "invalidRequest", f"{name} must be a whole number of at least {low}")
    significant = raw.lstrip("0") or "0"  # int() refuses more than 4300 digits, leading zeros included
    if len(significant) > len(str(high)):  # above `high` whatever it is
        return high
    value = int(significant)
    if not low <= value:
        raise GraphError(400, "invalidRequest", f"{name} must be a whole number of at least {low}")
    return min(value, high)


def _query(args: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in args.items())
