"""Handlers for the CSPP Plus operations (docs/cspp-plus.md §1, coauth locks)."""

from __future__ import annotations

from functools import wraps

from flask import Response, jsonify, request

from ..body import request_body
from ..chunked import MAX_MESSAGE_BODY, Framed, read_message
from ..coauth import COAUTH, EXCLUSIVE, METADATA_LIMIT, TIMEOUT_RANGE, CoauthTable
from ..cspp.frames import FrameError, parse_json
from ..errors import WopiError, WopiResponse, bad_request
from ..locks import parse_lock_id
from ..models import File
from ..snapshots import FileView
from ..text import text_problem
from .files import Call
from .requests import header, int_header, lock_header

_LOCK_TYPES = {COAUTH.lower(): COAUTH, EXCLUSIVE.lower(): EXCLUSIVE}


def cspp_plus(handler):
    """Only while CSPP Plus is switched on (WOPIHOST_CSPP_PLUS); otherwise the operation does not exist."""

    @wraps(handler)
    def guarded(call: Call) -> Response:
        if not call.services.settings.cspp_plus:
            raise WopiError(501, "CSPP Plus is not enabled on this host")
        return handler(call)

    return guarded


def _sequenced(file: File | FileView, response: Response | None = None) -> Response:
    response = response or WopiResponse(status=200)
    response.headers["X-WOPI-SequenceNumber"] = str(file.sequence_number)
    response.headers["X-WOPI-ItemVersion"] = str(file.version)
    return response


def _message() -> object:
    body = request_body().read(MAX_MESSAGE_BODY + 1)
    if len(body) > MAX_MESSAGE_BODY:
        raise bad_request(f"the request body is larger than {MAX_MESSAGE_BODY} bytes")
    return read_message(body)


# -- sequence numbers and chunked reads -------------------------------------------


@cspp_plus
def get_sequence_number(call: Call) -> Response:
    return _sequenced(call.file())  # as the request's one read saw it


@cspp_plus
def get_chunked_file(call: Call) -> Response:
    call.file()  # 404 for a deleted file, before its message is read
    return _framed(call.services.chunked.get_chunked_file(call.file_id, _message()))


@cspp_plus
def get_chunks(call: Call) -> Response:
    call.file()
    return _framed(call.services.chunked.get_chunks(call.file_id, _message()))


def _framed(body: Framed) -> Response:
    """The response streams `body`, and the server closes it (direct passthrough: Werkzeug's own close
    hooks never run for such a body); until the response exists, closing it on failure is ours."""
    try:
        response = WopiResponse(body, mimetype="application/octet-stream", direct_passthrough=True)
        response.content_length = body.length
        return _sequenced(body.file, response)
    except BaseException:
        body.close()
        raise


# -- chunked save and upload sessions ---------------------------------------------


@cspp_plus
def put_chunked_file(call: Call) -> Response:
    call.file()
    call.require_write()
    lock_id, coauth_lock_id = lock_header("X-WOPI-Lock"), lock_header("X-WOPI-CoauthLockId")
    if lock_id and coauth_lock_id:
        raise bad_request("send X-WOPI-Lock or X-WOPI-CoauthLockId, not both")
    sequence_number = int_header("X-WOPI-SequenceNumber")
    if sequence_number is None:
        raise bad_request("X-WOPI-SequenceNumber is required")
    # X-WOPI-Editors: the dispatcher has checked the proof (a bad one is 400 here, docs/cspp-plus.md §1.3).
    file = call.services.chunked.put_chunked_file(
        call.file_id, request_body(), lock_id, coauth_lock_id, sequence_number, call.admit, call.grant.user_id
    )
    return _sequenced(file)


@cspp_plus
def create_upload_session(call: Call) -> Response:
    call.file()
    call.require_write()
    token = call.services.sessions.create(call.file_id, call.grant.user_id)
    return jsonify({"UploadSessionToken": token})


@cspp_plus
def update_upload_session(call: Call) -> Response:
    call.file()
    call.require_write()
    token = header("X-WOPI-UploadSessionToken")
    if not token:
        raise bad_request("X-WOPI-UploadSessionToken is required")
    try:
        offset, length = int_header("X-WOPI-ContentRangeOffset"), int_header("X-WOPI-ContentRangeLength")
        if offset is None or length is None:
            raise bad_request("X-WOPI-ContentRangeOffset and X-WOPI-ContentRangeLength are required")
        if request.content_length is not None and request.content_length != length:
            raise bad_request(f"the body is {request.content_length} bytes, X-WOPI-ContentRangeLength says {length}")
        body = request_body()
        end = call.services.chunked.update_upload_session(token, call.file_id, offset, length, body, call.admit)
    except WopiError as error:  # where the session stands, so that the client can resynchronise
        if error.status in (400, 413) and "X-WOPI-UploadSessionCurrentOffset" not in error.headers:
            received = call.services.sessions.received(token, call.file_id)
            if received is not None:
                error.headers["X-WOPI-UploadSessionCurrentOffset"] = str(received)
        raise
    response = WopiResponse(status=200)
    response.headers["X-WOPI-UploadSessionCurrentOffset"] = str(end)
    return response


# -- coauth locks -----------------------------------------------------------------


def _coauth_lock_id() -> str:
    return parse_lock_id(header("X-WOPI-CoauthLockId"), "X-WOPI-CoauthLockId")


def _timeout() -> int:
    low, high = TIMEOUT_RANGE
    value = int_header("X-WOPI-CoauthLockExpirationTimeout")
    if value is None or not low <= value <= high:
        raise bad_request(f"X-WOPI-CoauthLockExpirationTimeout must be {low} to {high} seconds")
    return value


# The longest body that can carry metadata within the limit: JSON may escape each of its characters as \uXXXX
_METADATA_BODY_LIMIT = METADATA_LIMIT * 6 + 1024


def _metadata() -> str:
    """X-WOPI-CoauthLockMetadata, or (newer clients) {"CoauthLockMetadata": ...} in the body; "" if neither."""
    value = header("X-WOPI-CoauthLockMetadata") or ""
    if not value:
        body = request_body().read(_METADATA_BODY_LIMIT + 1)
        if len(body) > _METADATA_BODY_LIMIT:
            raise bad_request(f"the coauth lock metadata is larger than {METADATA_LIMIT} bytes")
        try:
            found = parse_json(body).get("CoauthLockMetadata") if body.strip() else None
        except (FrameError, AttributeError):  # not JSON, or not an object: no metadata
            found = None
        value = found if isinstance(found, str) else ""
    problem = text_problem(value)
    if problem is not None:
        raise bad_request(f"the coauth lock metadata {problem}")
    if len(value.encode("utf-8")) > METADATA_LIMIT:
        raise bad_request(f"the coauth lock metadata is larger than {METADATA_LIMIT} bytes")
    return value


def _table(table: CoauthTable, with_body: bool = True) -> Response:
    response = jsonify({"CoauthTable": table.rows}) if with_body else WopiResponse(status=200)
    response.headers["X-WOPI-CoauthTableVersion"] = table.version
    return response


@cspp_plus
def get_coauth_lock(call: Call) -> Response:
    call.file()
    call.require_write()
    lock_id = _coauth_lock_id()
    lock_type = _LOCK_TYPES.get((header("X-WOPI-CoauthLockType") or "").lower())
    if lock_type is None:
        raise bad_request("X-WOPI-CoauthLockType must be Coauth or CoauthExclusive")
    timeout, metadata = _timeout(), _metadata()
    user = call.services.user(call.grant.user_id)
    name = user.display_name or user.id
    return _table(call.services.coauth.get_lock(call.file_id, lock_id, lock_type, timeout, metadata, name, call.admit))


@cspp_plus
def refresh_coauth_lock(call: Call) -> Response:
    call.file()
    call.require_write()
    lock_id, timeout, metadata = _coauth_lock_id(), _timeout(), _metadata()
    return _table(call.services.coauth.refresh(call.file_id, lock_id, timeout, metadata or None, call.admit))


@cspp_plus
def unlock_coauth_lock(call: Call) -> Response:
    call.file()
    call.require_write()
    return _table(call.services.coauth.unlock(call.file_id, _coauth_lock_id()), with_body=False)


@cspp_plus
def get_coauth_table(call: Call) -> Response:
    call.file()
    table = call.services.coauth.table(call.file_id)
    return _table(table, with_body=header("X-WOPI-CoauthTableVersion") != table.version)
