"""The /wopi blueprint: one table maps (method, endpoint, X-WOPI-Override) to a handler.

Authentication happens here, once, before any handler runs: the proof signature
(when proof keys are in force), then the access token, which must be one for the
resource in the URL (a file, a container or the ecosystem), so a handler always
gets a call whose token was verified for what it acts on.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, current_app, request

from .. import snapshots
from ..errors import WopiError, bad_request, unauthorized
from ..services import Services
from ..tokens import ECOSYSTEM, container
from . import containers, cspp, files
from .requests import access_token

Handler = Callable[..., Response]

# (HTTP method, endpoint, X-WOPI-Override) -> handler. The endpoints are the routes below; GET requests
# carry no override.
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
    ("POST", "file", "GET_SHARE_URL"): files.get_share_url,
    ("POST", "file", "ADD_ACTIVITIES"): files.add_activities,
    ("GET", "file/ancestry", None): containers.enumerate_file_ancestors,
    ("GET", "file/ecosystem_pointer", None): containers.get_file_ecosystem,
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
    # containers and the ecosystem (501 while WOPIHOST_CONTAINERS is off)
    ("GET", "container", None): containers.check_container_info,
    ("POST", "container", "CREATE_CHILD_CONTAINER"): containers.create_child_container,
    ("POST", "container", "CREATE_CHILD_FILE"): containers.create_child_file,
    ("POST", "container", "DELETE_CONTAINER"): containers.delete_container,
    ("POST", "container", "RENAME_CONTAINER"): containers.rename_container,
    ("POST", "container", "GET_SHARE_URL"): containers.get_container_share_url,
    ("GET", "container/ancestry", None): containers.enumerate_container_ancestors,
    ("GET", "container/children", None): containers.enumerate_children,
    ("GET", "container/ecosystem_pointer", None): containers.get_container_ecosystem,
    ("GET", "ecosystem", None): containers.check_ecosystem,
    ("GET", "ecosystem/root_container_pointer", None): containers.get_root_container,
}

blueprint = Blueprint("wopi", __name__, url_prefix="/wopi")
_METHODS = ["GET", "POST"]


def _endpoint(path: str, endpoint: str, **defaults: str):
    """A WOPI endpoint's route. Methods other than _METHODS get 405, OPTIONS too rather than Flask's automatic 200
    without a token: WOPI has no CORS to preflight, its clients call it from their servers."""
    return blueprint.route(
        path, methods=_METHODS, provide_automatic_options=False, defaults={"endpoint": endpoint, **defaults}
    )


@_endpoint("/files/<item_id>", "file")
@_endpoint("/files/<item_id>/contents", "contents")
@_endpoint("/files/<item_id>/ancestry", "file/ancestry")
@_endpoint("/files/<item_id>/ecosystem_pointer", "file/ecosystem_pointer")
@_endpoint("/containers/<item_id>", "container")
@_endpoint("/containers/<item_id>/ancestry", "container/ancestry")
@_endpoint("/containers/<item_id>/children", "container/children")
@_endpoint("/containers/<item_id>/ecosystem_pointer", "container/ecosystem_pointer")
@_endpoint("/ecosystem", "ecosystem", item_id="")
@_endpoint("/ecosystem/root_container_pointer", "ecosystem/root_container_pointer", item_id="")
def dispatch(item_id: str, endpoint: str) -> Response:
    services: Services = current_app.extensions["wopihost"]
    req = request._get_current_object()  # type: ignore[attr-defined]  # past the proxy once, not at every access
    method, headers = req.method, req.headers
    override = None
    if method == "POST":
        override = (headers.get("X-WOPI-Override") or "").strip().upper()
        if not override:
            raise bad_request("X-WOPI-Override is required on POST")
    editors = override == "PUT_CHUNKED_FILE" and bool((headers.get("X-WOPI-Editors") or "").strip())
    services.proofs.check(req.environ, headers, editors_named=editors)
    family = endpoint.split("/")[0]
    call: files.Call | containers.ContainerCall
    if family in ("file", "contents"):
        if "-" in item_id:  # the resource of a container's or the ecosystem's token ("c-…", "e-…"), no file's id
            raise unauthorized("the access token is not for a file")
        claim = services.tokens.claim(access_token(req), item_id)
        if endpoint == "file" and override == "GET_LOCK":  # its answer comes with the token's row, in one read
            user_id, revoked_at, lock_state = services.locks.read_with_token(claim.jti, item_id)
            call = files.Call(
                services, item_id, services.tokens.grant(claim, user_id, revoked_at), lock_state=lock_state
            )
        else:
            # One read: the token's row, the file and the user (snapshots.py), for whichever handler needs them.
            seen = snapshots.read(services.db, claim.jti, item_id)
            call = files.Call(
                services,
                item_id,
                services.tokens.grant(claim, seen.token_user_id, seen.token_revoked_at),
                seen.file,
                seen.user,
            )
    else:
        resource = container(item_id) if family == "container" else ECOSYSTEM
        with services.db.read() as session:
            call = containers.ContainerCall(
                services, item_id, services.tokens.verify(session, access_token(req), resource)
            )
    # HEAD is GET without the body (RFC 9110 §9.3.2), which the server leaves out and the file it opened closes
    handler = OPERATIONS.get(("GET" if method == "HEAD" else method, endpoint, override))
    if handler is None:
        raise WopiError(501, f"{override or method} is not supported on this endpoint")
    return handler(call)


@blueprint.route("/download/<ticket>", methods=["GET"], provide_automatic_options=False)
def download(ticket: str) -> Response:
    """CheckFileInfo's FileUrl: its own credential, neither proof-signed nor carrying an access token."""
    return files.download(current_app.extensions["wopihost"], ticket)
