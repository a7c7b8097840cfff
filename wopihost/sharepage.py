"""The pages a share link opens in a browser (docs/wopi.md §3.13): the shared file, or the shared folder's
contents, each file downloadable. The link is the credential; what it shares stays within the item it names.
Writing through a read-write link is Graph's (`/v1.0/shares/{shareId}/driveItem`, docs/graph.md §11).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from .errorpage import error_page, fault_page, http_error_page
from .errors import WopiError
from .faults import InsufficientStorage, Unavailable
from .ids import is_id
from .models import File, Folder
from .services import Services
from .shares import PATH, READ_WRITE, Shared, require_link_reach
from .streaming import content_response

log = logging.getLogger("wopihost.sharepage")
blueprint = Blueprint("shares", __name__, url_prefix=PATH.rstrip("/"))
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # frame-ancestors: no other site may frame a page whose links download what it shares (clickjacking)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


def _services() -> Services:
    return current_app.extensions["wopihost"]


# The share URL with a slash after it (as a chat or mail client may pass it on) is the same link, as Graph and
# `wopihost shares revoke` read it (shares.link_id_of). No automatic OPTIONS on any page (as Graph's): its 200
# came with none of the pages' headers, and the pages have no CORS to preflight; OPTIONS is a method they do not
# take, 405 with Allow, in their headers.
@blueprint.route("/<link_id>", defaults={"folder_id": None}, strict_slashes=False, provide_automatic_options=False)
@blueprint.route("/<link_id>/folders/<folder_id>", provide_automatic_options=False)
def page(link_id: str, folder_id: str | None) -> Response:
    services = _services()
    shared = services.shares.resolve(link_id)
    base = f"{services.settings.public_url}{PATH}{link_id}"
    rights = "view and edit" if shared.link.url_type == READ_WRITE else "view"
    if isinstance(shared.item, File):
        if folder_id is not None:  # a file link has no folders: not its file's page under any folder id
            raise WopiError(404, "no such folder here")
        file = shared.item
        body = (
            f"<h1>{escape(file.name)}</h1><p>{file.size} bytes. This link lets you {rights} it.</p>"
            f'<p><a href="{base}/content" download>Download</a></p>'
        )
        return _html(file.name, body)
    with services.db.read() as s:
        folder = _folder_in(s, shared, folder_id or shared.item.id)
        folders = list(s.scalars(sa.select(Folder).where(Folder.parent_id == folder.id).order_by(Folder.name_key)))
        files = list(s.scalars(sa.select(File).where(File.folder_id == folder.id).order_by(File.name_key)))
    name = folder.name or "Shared folder"
    rows = [f'<li><a href="{base}/folders/{f.id}">{escape(f.name)}/</a></li>' for f in folders]
    rows += [
        f'<li><a href="{base}/files/{f.id}/content" download>{escape(f.name)}</a> ({f.size} bytes)</li>' for f in files
    ]
    body = (
        f"<h1>{escape(name)}</h1><p>This link lets you {rights} what is in this folder.</p>"
        f"<ul>{''.join(rows) or '<li>(empty)</li>'}</ul>"
    )
    return _html(name, body)


@blueprint.route("/<link_id>/content", defaults={"file_id": None}, provide_automatic_options=False)
@blueprint.route("/<link_id>/files/<file_id>/content", provide_automatic_options=False)
def content(link_id: str, file_id: str | None) -> Response:
    services = _services()
    shared = services.shares.resolve(link_id)
    if file_id is None:
        if not isinstance(shared.item, File):
            raise WopiError(404, "a shared folder has no content of its own")
        file_id = shared.item.id
    else:
        with services.db.read() as s:
            file = s.get(File, file_id) if is_id(file_id) else None
            if file is None:
                raise WopiError(404, "no such file here")
            _reaches(s, shared, file.folder_id)
    file, stream = services.files.open_content(file_id)

    def attachment(response: Response) -> None:
        response.headers.update(_HEADERS)
        response.headers["Content-Disposition"] = _attachment(file.name)

    return content_response(request, file, stream, f"{file.id}.{file.version}", before=attachment)


def _folder_in(s, shared: Shared, folder_id: str) -> Folder:
    folder = s.get(Folder, folder_id) if is_id(folder_id) else None
    if folder is None:
        raise WopiError(404, "no such folder here")
    _reaches(s, shared, folder.id)
    return folder


def _reaches(s, shared: Shared, folder_id: str) -> None:
    try:
        require_link_reach(s, shared.link.id, folder_id, writing=False)
    except WopiError:
        raise WopiError(404, "no such item here") from None  # say nothing of items outside the share


@blueprint.errorhandler(WopiError)
def _refused(error: WopiError) -> Response:
    log.info("%s %s -> %s: %s", request.method, request.path, error.status, error.reason)
    return error_page(error.status, "This link cannot be opened", error.reason, _HEADERS)


@blueprint.errorhandler(Unavailable)
@blueprint.errorhandler(InsufficientStorage)
def _fault(error: Unavailable | InsufficientStorage) -> Response:
    log.warning("%s %s: %s", request.method, request.path, error)
    return fault_page(error, _HEADERS)


def handles(path: str) -> bool:
    """Whether a path is the share pages', for errors raised before any blueprint is chosen (an unknown method,
    a path of no page)."""
    return path.startswith(PATH) or path == PATH.rstrip("/")


def http_error(error: HTTPException) -> Response:
    """Werkzeug's errors below the share path (a link cut short, a POST, a range beyond the file)."""
    return http_error_page(error, _HEADERS)


def _attachment(name: str) -> str:
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _html(title: str, body: str) -> Response:
    html = f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>{body}"
    return Response(html, mimetype="text/html", headers=_HEADERS)
