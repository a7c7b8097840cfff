"""Handlers for the files endpoint (docs/wopi.md §3). Each parses headers, calls the domain, maps the result."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import BinaryIO

from flask import Response, jsonify, request
from sqlalchemy.orm import Session

from ..activities import MAX_ACTIVITIES
from ..body import request_body
from ..clock import iso_round_trip, to_epoch_ms
from ..errors import WopiError, WopiResponse, bad_request, not_found
from ..files import Target
from ..locks import LOCK_TTL_RANGE, LockRequest, LockView, parse_lock_id
from ..models import File
from ..names import MAX_BASE_LENGTH, InvalidName, decode_name, sanitize, split_extension
from ..prepared import Statements
from ..services import Services
from ..shares import READ_ONLY, READ_WRITE
from ..snapshots import FileView, UserView
from ..streaming import content_response
from ..tokens import FILE_URL, Grant
from . import pointers
from .requests import (
    bool_header,
    check_body_size,
    discard_body,
    header,
    int_header,
    json_request,
    lock_header,
    name_header,
    sized_body,
    time_header,
)

MAX_EXPECTED_SIZE_DEFAULT = 2**31 - 1  # docs/wopi.md §3.2: assume a signed 32-bit maximum when absent
USER_INFO_BYTES = 4 * 1024  # 1024 characters of UTF-8
_EXTENSION_ONLY = re.compile(r"\.[^./\\]+")  # ".pdf": keep the source's name, change the extension


class Admits:
    """What a WOPI request that changes something asks in the transaction of its change: whether its token is
    still live (asked again: the request's body may have come, or its change waited for a row another writer
    held, for long enough for the token to be revoked, or to expire), and still opens a file it reaches beside
    its own."""

    services: Services
    grant: Grant

    def admit(self, t: Statements) -> None:
        """In the transaction that lands a body (PutFile, PutRelativeFile, PutChunkedFile, UpdateUploadSession, and
        the small ones of PutUserInfo, AddActivities, GetCoauthLock, RefreshCoauthLock): 401 unless the token is
        still live."""
        self.services.tokens.require_live(t, self.grant)

    def admit_in(self, s: Session, folder_id: str, growth: int) -> None:
        """`admit` as the ORM writers of files and folders ask it (PutRelativeFile, RenameFile, DeleteFile, the
        container operations; WOPI has no quota)."""
        Statements.ask(s, self.admit)

    def opens(self, s: Session, file: File) -> bool:
        """Whether the token may still be used on `file`, which a change reaches beside the token's own resource
        (a file PutRelativeFile or CreateChildFile overwrites): not if the file was revoked for its user since."""
        return self.services.tokens.opens(s, self.grant.jti, file.id)


@dataclass(frozen=True)
class Call(Admits):
    """One authenticated WOPI request on one file: the file and the user as the request's first read saw them
    (None: the file does not exist), for the operations that only read; GetLock's read sees the file's lock
    state instead (`lock_state`, None: no such file)."""

    services: Services
    file_id: str
    grant: Grant
    seen: FileView | None = None
    user: UserView | None = None
    lock_state: LockView | None = None

    def require_write(self) -> None:
        if not self.grant.can_write:
            raise not_found("the access token does not allow changes to this file")

    def file(self) -> FileView:
        """The file, 404 if there is none: asked before an operation reads its headers or body, so that an unknown
        file is 404 whatever they hold, as WOPI lists its answers (docs/wopi.md §1.2, order of checks)."""
        if self.seen is None:
            raise not_found()
        return self.seen


def check_file_info(call: Call) -> Response:
    services, grant = call.services, call.grant
    file = call.file()
    user = call.user or services.user(grant.user_id)
    extension = split_extension(file.name)[1]
    info = {
        "BaseFileName": file.name,
        "OwnerId": file.owner_id,
        "Size": file.size,
        "UserId": grant.user_id,
        "Version": str(file.version),
        "UserFriendlyName": user.display_name,
        "IsAnonymousUser": False,
        "LastModifiedTime": iso_round_trip(file.modified_at),
        "FileNameMaxLength": MAX_BASE_LENGTH,
        "ReadOnly": not grant.can_write,
        "UserCanWrite": grant.can_write,
        "UserCanRename": grant.can_write,
        "UserCanNotWriteRelative": not grant.can_write,
        "SupportsLocks": True,
        "SupportsGetLock": True,
        "SupportsExtendedLockLength": True,
        "SupportsUpdate": True,
        "SupportsRename": True,
        "SupportsDeleteFile": True,
        "SupportsUserInfo": True,
        "SupportsAddActivities": True,
        "SupportedShareUrlTypes": _share_types(grant),
        "HostViewUrl": services.host_page_url("view", file.id, grant),
        "PostMessageOrigin": services.post_message_origin,
        "FileUrl": services.file_url(grant, file.id),
        "IsEduUser": False,
        "LicenseCheckForEditIsEnabled": False,
    }
    if services.settings.containers:
        info.update({"SupportsContainers": True, "SupportsEcosystem": True})
    if grant.can_write:  # a reader's would be a link the page refuses (docs/wopi.md §5.5)
        info["HostEditUrl"] = services.host_page_url("edit", file.id, grant)
    if extension:
        info["FileExtension"] = extension
    if file.sha256:  # unknown after a chunked save: hashing there would cost more than the save
        info["SHA256"] = file.sha256
    settings = services.settings
    if settings.cspp_plus:  # the CSPP Plus schema requires all of these, the plain one forbids them
        info.update(
            {
                "SupportsCoauth": True,
                "SupportsResumableFileTransfer": True,
                "SequenceNumber": file.sequence_number,
                "OfficeCollaborationServiceEndpointUrl": settings.office_collaboration_url,
                "RealTimeChannelEndpointUrl": settings.real_time_channel_url,
                "AccessTokenExpiry": to_epoch_ms(grant.expires_at),
                "ServerTime": to_epoch_ms(services.clock.now()),
                "SharingStatus": "Private",
                "FileGeoLocationCode": settings.file_geo_location_code,
            }
        )
    if user.user_info is not None:  # never null: omit until PutUserInfo stored one
        info["UserInfo"] = user.user_info
    return jsonify(info)


def get_file(call: Call) -> Response:
    seen = call.file()
    max_expected = int_header("X-WOPI-MaxExpectedSize", MAX_EXPECTED_SIZE_DEFAULT)
    file, content = call.services.files.open_content(call.file_id, seen)
    return _content_response(file, content, max_expected)


def download(services: Services, ticket: str) -> Response:
    """CheckFileInfo's FileUrl: the current content for whoever has the URL, until it expires (or the
    token it was made under is revoked)."""
    with services.db.read() as s:
        file_id, _, _ = services.tokens.open_ticket(s, ticket, FILE_URL)
    return _content_response(*services.files.open_content(file_id))


def _content_response(file: File | FileView, content: BinaryIO, max_expected: int | None = None) -> Response:
    def versioned(response: Response) -> None:
        if max_expected is not None and file.size > max_expected:
            raise WopiError(412, f"the file is {file.size} bytes, more than X-WOPI-MaxExpectedSize")
        response.headers["X-WOPI-ItemVersion"] = str(file.version)

    return content_response(request, file, content, f"{file.id}.{file.version}", WopiResponse, versioned)


def put_file(call: Call) -> Response:
    call.file()
    call.require_write()
    services = call.services
    lock_id = lock_header("X-WOPI-Lock")  # absent when filling a new empty file
    loaded_at = time_header("X-COOL-WOPI-Timestamp", "X-LOOL-WOPI-Timestamp")
    check_body_size(services.settings.max_file_size)
    file = services.files.put(call.file_id, request_body(), lock_id, loaded_at, call.admit)
    response = jsonify({"LastModifiedTime": iso_round_trip(file.modified_at)})
    response.headers["X-WOPI-ItemVersion"] = str(file.version)
    return response


def lock(call: Call) -> Response:
    call.file()
    call.require_write()
    lock_id = parse_lock_id(header("X-WOPI-Lock"))
    old_lock = header("X-WOPI-OldLock")
    locks, how = call.services.locks, _lock_request(call)
    if old_lock is None:
        version = locks.lock(call.file_id, lock_id, how)
    else:  # the presence of X-WOPI-OldLock makes this UnlockAndRelock
        version = locks.unlock_and_relock(call.file_id, lock_id, parse_lock_id(old_lock, "X-WOPI-OldLock"), how)
    return _versioned(version)


def _lock_request(call: Call) -> LockRequest:
    """CSPP Plus's extensions of Lock, RefreshLock and UnlockAndRelock (docs/wopi.md §2): a lock time the
    client chooses, and whether a conflict may name the user who holds the lock."""
    seconds = int_header("X-WOPI-LockExpirationTimeout")
    low, high = LOCK_TTL_RANGE
    if seconds is not None and not low <= seconds <= high:
        raise bad_request(f"X-WOPI-LockExpirationTimeout must be {low} to {high} seconds")
    how = LockRequest() if seconds is None else LockRequest(ttl=timedelta(seconds=seconds))
    if bool_header("X-WOPI-LockUserVisible"):
        user = call.services.user(call.grant.user_id)
        how = replace(how, visible_as=user.display_name or user.id)
    return how


def get_lock(call: Call) -> Response:
    if call.lock_state is None:
        raise not_found()
    version, current = call.lock_state.answer()
    response = _versioned(version)
    response.headers["X-WOPI-Lock"] = current
    return response


def refresh_lock(call: Call) -> Response:
    call.file()
    call.require_write()
    lock_id = parse_lock_id(header("X-WOPI-Lock"))
    return _versioned(call.services.locks.refresh(call.file_id, lock_id, _lock_request(call)))


def unlock(call: Call) -> Response:
    call.file()
    call.require_write()
    return _versioned(call.services.locks.unlock(call.file_id, parse_lock_id(header("X-WOPI-Lock"))))


def put_relative_file(call: Call) -> Response:
    services, grant, seen = call.services, call.grant, call.file()
    if not grant.can_write:  # as CheckFileInfo's UserCanNotWriteRelative promised
        raise WopiError(501, "this user may not create files")
    target = target_headers(lambda: seen.name)
    size = int_header("X-WOPI-Size")
    check_body_size(services.settings.max_file_size, size)
    file = services.files.put_relative(
        call.file_id,
        grant.user_id,
        target,
        sized_body("X-WOPI-Size", size),
        lambda s, existing: _may_write(call, s, existing),
        call.admit_in,
    )
    # LastModifiedTime beyond the spec's answer, and the time of the file the client has open, not of the new one:
    # Collabora keeps it as that document's (as after a rename) and sends it with its next PutFile there. Without
    # it Collabora sends an empty timestamp and its check that nobody changed the file is off; with the new file's,
    # that save would be refused as a conflict.
    source = file if file.id == call.file_id else seen  # overwritten in place (OverwriteRelativeTarget)
    return jsonify(
        {
            "Name": file.name,
            "Url": pointers.sibling_file(services, grant, file.id),
            "HostViewUrl": services.host_page_url("view", file.id, grant),
            "HostEditUrl": services.host_page_url("edit", file.id, grant),
            "LastModifiedTime": iso_round_trip(source.modified_at),
        }
    )


def _may_write(call: Call, s: Session, file: File) -> bool:
    """Whether the caller may write `file` beside its token's own: a file token reaches no other file (docs/wopi.md
    §4.2) but those its holder created, or, with its folders' `w`, those its folder lists; and none it may no
    longer open (revoked for its user)."""
    if file.id == call.file_id:
        return True
    return (file.owner_id == call.grant.user_id or "w" in call.grant.reach) and call.opens(s, file)


def target_headers(source_name: Callable[[], str]) -> Target:
    """Where PutRelativeFile or CreateChildFile puts its file: X-WOPI-SuggestedTarget (a name, or an
    extension for the base of `source_name()`) or X-WOPI-RelativeTarget with X-WOPI-OverwriteRelativeTarget (docs/wopi.md
    §3.9); 501 for both, 400 for neither."""
    has_suggested = header("X-WOPI-SuggestedTarget") is not None
    has_relative = header("X-WOPI-RelativeTarget") is not None
    if has_suggested and has_relative:
        raise WopiError(501, "send X-WOPI-SuggestedTarget or X-WOPI-RelativeTarget, not both")
    if not (has_suggested or has_relative):
        raise bad_request("X-WOPI-SuggestedTarget or X-WOPI-RelativeTarget is required")
    if has_suggested:  # which never fails (400 or 409): the overwrite flag, used only by a specific name, is not read
        return Target(_suggested_name(source_name), suggested=True)
    overwrite = bool_header("X-WOPI-OverwriteRelativeTarget")
    raw = header("X-WOPI-RelativeTarget") or ""
    try:  # one that is neither UTF-7 nor UTF-8 still names what the 400 suggests instead
        return Target(decode_name(raw, "X-WOPI-RelativeTarget"), suggested=False, overwrite=overwrite)
    except InvalidName as exc:
        return Target(raw, suggested=False, overwrite=overwrite, problem=str(exc))


def _suggested_name(source_name: Callable[[], str]) -> str:
    """Suggested mode never fails: an extension alone means "that name, this extension"; nothing (blank, or
    dots) the source's name, extension kept, as the spec asks; any name is sanitised."""
    raw = header("X-WOPI-SuggestedTarget") or ""
    try:
        suggestion = name_header("X-WOPI-SuggestedTarget") or ""
    except WopiError:
        suggestion = raw  # docs/wopi.md §1.5: be tolerant, use the raw value
    if _EXTENSION_ONLY.fullmatch(suggestion):
        suggestion = split_extension(source_name())[0] + suggestion
    elif not suggestion.replace(".", " ").strip():
        suggestion = source_name()
    return sanitize(suggestion)


def rename_file(call: Call) -> Response:
    call.file()  # 404 for a deleted file, before its headers and body are read
    call.require_write()
    requested = name_header("X-WOPI-RequestedName", invalid_name_header="X-WOPI-InvalidFileNameError")
    if requested is None:
        raise bad_request("X-WOPI-RequestedName is required")
    if not requested:  # else refused as the name it makes with the extension kept, ".docx": "starts with a dot"
        reason = "X-WOPI-RequestedName is empty"
        raise bad_request(reason, {"X-WOPI-InvalidFileNameError": reason})
    lock_id = lock_header("X-WOPI-Lock")  # may arrive empty on an unlocked file
    coauth_lock_id = lock_header("X-WOPI-CoauthLockId")
    discard_body(call.services.settings.max_file_size)  # Collabora sends the document along
    try:
        renamed = call.services.files.rename(call.file_id, requested, lock_id, coauth_lock_id, call.admit_in)
    except InvalidName as exc:
        raise bad_request(str(exc), {"X-WOPI-InvalidFileNameError": str(exc)}) from None
    # Beyond the spec's Name: LastModifiedTime, which Collabora takes from every 200 JSON answer as the time it next
    # sends in X-COOL-WOPI-Timestamp (without it, none, its check that the file did not change gone); and Url, the
    # file's own WOPISrc with a token, as PutRelativeFile's, without which Collabora's editor takes the rename for
    # one that did not happen (no new name shown, no File_Rename to the host page)
    return jsonify(
        {
            "Name": renamed.base,
            "Url": pointers.same_file(call.services, call.grant),
            "LastModifiedTime": iso_round_trip(renamed.file.modified_at),
        }
    )


def delete_file(call: Call) -> Response:
    call.require_write()
    call.services.files.delete(call.file_id, admit=call.admit_in)
    return WopiResponse(status=200)


def put_user_info(call: Call) -> Response:
    call.file()  # 404 for a deleted file
    body = request_body().read(USER_INFO_BYTES + 1)
    try:
        if len(body) > USER_INFO_BYTES:
            raise ValueError("the UserInfo body is too long")
        call.services.put_user_info(call.grant.user_id, body.decode("utf-8"), call.admit)
    except UnicodeDecodeError:
        raise bad_request("the UserInfo body is not UTF-8 text") from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return WopiResponse(status=200)


def _share_types(grant: Grant) -> list[str]:
    return [READ_ONLY, READ_WRITE] if grant.can_write else [READ_ONLY]


def share_url_type(supported: list[str]) -> str:
    """X-WOPI-UrlType, one of `supported` (what the token may share); 501 otherwise, as WOPI asks."""
    url_type = header("X-WOPI-UrlType")
    if not url_type:
        raise WopiError(501, "X-WOPI-UrlType is required")
    if url_type not in supported:
        raise WopiError(
            501,
            f"share URLs of type {url_type} are not supported"
            + (" for this access token" if url_type in (READ_ONLY, READ_WRITE) else ""),
        )
    return url_type


def get_share_url(call: Call) -> Response:
    call.file()
    url_type = share_url_type(_share_types(call.grant))
    services = call.services
    link = services.shares.link(call.file_id, url_type, call.grant.user_id)
    return jsonify({"ShareUrl": services.share_url(link.id)})


def add_activities(call: Call) -> Response:
    """AddActivities (docs/wopi.md §3.16): each activity is answered on its own, in the order sent."""
    call.file()
    body = json_request()
    activities = body.get("Activities") if isinstance(body, dict) else None
    if not isinstance(activities, list) or not activities:
        raise bad_request("the body must be a JSON object with a non-empty Activities list")
    if len(activities) > MAX_ACTIVITIES:
        raise bad_request(f"at most {MAX_ACTIVITIES} activities at once")
    outcomes = call.services.activities.add(call.file_id, call.grant.user_id, activities, call.admit)
    return jsonify(
        {
            "ActivityResponses": [
                {"Id": o.id, "Status": o.status, **({"Message": o.message} if o.message else {})} for o in outcomes
            ]
        }
    )


def _versioned(file: File | int) -> Response:
    """An empty 200 with X-WOPI-ItemVersion: the file's version (or the version itself)."""
    response = WopiResponse(status=200)
    response.headers["X-WOPI-ItemVersion"] = str(file if isinstance(file, int) else file.version)
    return response
