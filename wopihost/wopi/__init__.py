"""The /wopi blueprint: one table maps (method, endpoint, X-WOPI-Override) to a handler.

Authentication happens here, once, before any handler runs: the proof signature
(when proof keys are in force), then the access token, so a handler always gets a
`Call` whose token was verified for the file in the URL.
"""

from __future__ import annotations

from typing import Callable

from flask import Blueprint, Response, current_app, request

from ..errors import WopiError, bad_request
from ..services import Services
from . import cspp, files
from .requests import access_token

Handler = Callable[[files.Call], Response]

# (HTTP method, endpoint, X-WOPI-Override) -> handler; endpoint "file" is /files/<id>,
# "contents" is /files/<id>/contents. GET requests carry no override.
OPERATIONS: dict[tuple[str, str, str | None], Handler] = {
    ("GET", "file", None): files.check_file_info,
    ("GET", "contents", None): files.get_file,
    ("POST", "contents", "PUT"): files.put_file,
    ("POST", "file", "LOCK"): files.lock,  # and UnlockAndRelock, when X-WOPI-OldLock is present
    ("POST", "file", "GET_LOCK"): files.get_lock,
    ("POST", "file", "REFRESH_LOCK"): files.refresh_lock,
    ("POST", "file", "UNLOCK"): files.unlock,
    ("POST", "file", "PUT_RELATIVE"): files.put_relative_file,
    ("POST", "file", "RENAME_FILE"): files.rename_file,
    ("POST", "file", "DELETE"): files.delete_file,
    ("POST", "file", "PUT_USER_INFO"): files.put_user_info,
    # CSPP Plus (501 unless WOPIHOST_CSPP_PLUS is on)
    ("POST", "file", "GET_SEQUENCE_NUMBER"): cspp.get_sequence_number,
    ("POST", "file", "GET_CHUNKED_FILE"): cspp.get_chunked_file,
    ("POST", "file", "GET_CHUNKS"): cspp.get_chunks,
    ("POST", "contents", "PUT_CHUNKED_FILE"): cspp.put_chunked_file,
    ("POST", "file", "CREATE_UPLOAD_SESSION"): cspp.create_upload_session,
    ("POST", "file", "UPDATE_UPLOAD_SESSION"): cspp.update_upload_session,
    ("POST", "file", "GET_COAUTH_LOCK"): cspp.get_coauth_lock,
    ("POST", "file", "REFRESH_COAUTH_LOCK"): cspp.refresh_coauth_lock,
    ("POST", "file", "UNLOCK_COAUTH_LOCK"): cspp.unlock_coauth_lock,
    ("POST", "file", "GET_COAUTH_TABLE"): cspp.get_coauth_table,
}

blueprint = Blueprint("wopi", __name__, url_prefix="/wopi")


@blueprint.route("/files/<file_id>", methods=["GET", "POST"], defaults={"endpoint": "file"})
@blueprint.route("/files/<file_id>/contents", methods=["GET", "POST"], defaults={"endpoint": "contents"})
def dispatch(file_id: str, endpoint: str) -> Response:
    services: Services = current_app.extensions["wopihost"]
    override = None
    if request.method == "POST":
        override = (request.headers.get("X-WOPI-Override") or "").strip().upper()
        if not override:
            raise bad_request("X-WOPI-Override is required on POST")
    editors = override == "PUT_CHUNKED_FILE" and bool((request.headers.get("X-WOPI-Editors") or "").strip())
    services.proofs.check(request.environ, request.headers, editors_named=editors)
    with services.db.read() as session:
        grant = services.tokens.verify(session, access_token(), file_id)
    handler = OPERATIONS.get((request.method, endpoint, override))
    if handler is None:
        raise WopiError(501, f"{override} is not supported on this endpoint")
    return handler(files.Call(services, file_id, grant))
