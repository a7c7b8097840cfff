"""The upload URL of a Graph upload session (docs/graph.md §4): PUT a fragment, GET the status,
DELETE to cancel, POST to finish a deferCommit session. The URL is the credential: no token is
asked for, and an Authorization header (rclone and the SDKs send one in some cases) is ignored."""

from __future__ import annotations

import re

from flask import Response, jsonify, request

from ..body import drain, request_body
from ..errors import WopiResponse as NoContent  # a response with no body claims no type
from ..models import Drive
from ..services import Services
from ..uploads import Progress
from . import shapes
from .describe import item_response
from .errors import GraphError, not_allowed

UPLOADS = "uploadSessions"
# RFC 9110 §14.4; a range unit is case-insensitive (§14.1), so `Bytes 0-9/10` is the same range
_CONTENT_RANGE = re.compile(r"^(?i:bytes) (\d{1,19})-(\d{1,19})/(\d{1,19})$")


def upload_session(services: Services, token: str) -> Response:
    if "/" in token:
        raise GraphError(404, "itemNotFound", "no such upload session")
    uploads = services.uploads
    if request.method == "PUT":
        first, last, total = parse_content_range(request.headers.get("Content-Range"))
        progress = uploads.put(token, first, last, total, request_body(), request.content_length)
        drain(request.environ, request.stream)  # a repeated final fragment is answered, not stored
        return _answer(services, progress)
    if request.method in ("GET", "HEAD"):
        status = uploads.status(token)
        return jsonify(shapes.upload_session_json(None, status.expires_at, status.received, status.total))
    if request.method == "DELETE":
        uploads.cancel(token)
        return NoContent(status=204)
    if request.method == "POST":  # finishes a deferCommit session
        return _answer(services, uploads.commit(token))
    raise not_allowed(("PUT", "GET", "DELETE", "POST"), f"{request.method} is not supported on an upload URL")


def _answer(services: Services, progress: Progress) -> Response:
    if progress.file is None:
        status = progress.status
        response = jsonify(shapes.upload_session_json(None, status.expires_at, status.received, status.total))
        response.status_code = 202
        return response
    file = progress.file
    with services.db.read() as s:  # the session's: its file's folder may be gone since it was made
        drive = s.get_one(Drive, progress.status.drive_id)
    # through a share link, as every answer through one: no path of the folders above what it shares
    return item_response(
        services, file, drive, None, 201 if progress.created else 200, not progress.status.through_link
    )


def parse_content_range(value: str | None) -> tuple[int, int, int]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if match is None:
        raise GraphError(
            400,
            "invalidRequest",
            "the Content-Range header is missing or malformed; send bytes {first}-{last}/{total}",
            "invalidRange",
        )
    first, last, total = map(int, match.groups())
    if not first <= last < total:
        raise GraphError(
            400, "invalidRequest", f"Content-Range {first}-{last}/{total} is not a range of the file", "invalidRange"
        )
    return first, last, total
