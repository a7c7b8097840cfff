"""Each request kind of the test definitions as an HTTP call: method, URL, headers and body.

The URL is the WOPISrc with a path suffix (`/contents`, `/children` ...) and
`access_token=...&access_token_ttl=...` appended, or, with OverrideUrl, a URL saved from an earlier response
(PutRelativeFile's `Url`, a container's `Url`), which brings its own access token. An AccessToken mutator
replaces the token in the URL; the token actually in the URL is the one the proof is computed over and the
one sent again as `Authorization: Bearer`. DeleteFile and DeleteContainer never fall back to the WOPISrc:
without an override there is nothing to delete, so that the test file itself is never deleted.

Names travel UTF-7 encoded as .NET encodes them (`_` is `+AF8-`); header values the validator leaves null are
sent empty, as .NET's header collection does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import dotnet
from .chunks import get_chunked_file_body, put_chunked_file_body
from .definitions import AccessTokenMutator, ProofKeyMutator, Request
from .resources import Resources
from .state import ORIGINAL_WOPI_SRC, State
from .transport import HttpCall

OFFICE_NATIVE_CLIENT_USER_AGENT = "Microsoft Office WOPI Validator/1.0"


class RequestError(ValueError):
    """The request cannot be built (the validator throws here; we fail the request instead)."""


@dataclass(frozen=True)
class Kind:
    method: str = "POST"
    override: str | None = None  # X-WOPI-Override
    path: str = ""  # appended to the file or container URL
    text: bool = True  # is the response read as text (for JSON checks and JSON state)?


KINDS = {
    "CheckFileInfo": Kind("GET"),
    "GetFile": Kind("GET", path="/contents", text=False),
    "PutFile": Kind(override="PUT", path="/contents"),
    "PutRelativeFile": Kind(override="PUT_RELATIVE"),
    "Lock": Kind(override="LOCK"),
    "Unlock": Kind(override="UNLOCK"),
    "UnlockAndRelock": Kind(override="LOCK"),
    "RefreshLock": Kind(override="REFRESH_LOCK"),
    "GetLock": Kind(override="GET_LOCK"),
    "CheckEcosystem": Kind("GET"),
    "GetNewAccessToken": Kind(override="GET_NEW_ACCESS_TOKEN"),
    "GetRootContainer": Kind("GET", path="/root_container_pointer"),
    "CheckContainerInfo": Kind("GET"),
    "EnumerateChildren": Kind("GET", path="/children"),
    "EnumerateAncestors": Kind("GET", path="/ancestry"),
    "GetEcosystem": Kind("GET", path="/ecosystem_pointer"),
    "CreateChildContainer": Kind(override="CREATE_CHILD_CONTAINER"),
    "CreateChildFile": Kind(override="CREATE_CHILD_FILE"),
    "DeleteFile": Kind(override="DELETE"),
    "DeleteContainer": Kind(override="DELETE_CONTAINER"),
    "RenameContainer": Kind(override="RENAME_CONTAINER"),
    "RenameFile": Kind(override="RENAME_FILE"),
    "GetFromFileUrl": Kind("GET"),
    "GetShareUrl": Kind(override="GET_SHARE_URL"),
    "AddActivities": Kind(override="ADD_ACTIVITIES"),
    "PutUserInfo": Kind(override="PUT_USER_INFO"),
    "GetCoauthLock": Kind(override="GET_COAUTH_LOCK"),
    "GetCoauthTable": Kind(override="GET_COAUTH_TABLE"),
    "RefreshCoauthLock": Kind(override="REFRESH_COAUTH_LOCK"),
    "UnlockCoauthLock": Kind(override="UNLOCK_COAUTH_LOCK"),
    "GetChunkedFile": Kind(override="GET_CHUNKED_FILE", text=False),
    "PutChunkedFile": Kind(override="PUT_CHUNKED_FILE", path="/contents", text=False),
    "GetSequenceNumber": Kind(override="GET_SEQUENCE_NUMBER", text=False),
}


@dataclass(frozen=True)
class Target:
    """The document under test: its WOPISrc and the access token (with its TTL) issued for it."""

    wopi_src: str
    token: str
    token_ttl: int = 0


Signer = Callable[[str, str, ProofKeyMutator | None], dict[str, str]]


def text_expected(request: Request) -> bool:
    kind = KINDS.get(request.kind)
    return kind.text if kind is not None else True


def build(
    request: Request,
    target: Target,
    state: State,
    resources: Resources,
    signer: Signer | None = None,
    user_agent: str | None = None,
) -> HttpCall:
    """The HTTP call for `request`. `signer(token, url, mutator)` makes the proof headers; without one the
    request goes unsigned. RequestError (or StateError) when the call cannot be made."""
    kind = KINDS[request.kind]
    if request.kind == "GetFromFileUrl":
        url = state.override(request.override_url)
        if not url:
            raise RequestError("GetFromFileUrl has no URL (its OverrideUrl state is empty)")
        return HttpCall("GET", _uri(url), {}, None, kind.text)

    url, token = _url(request, kind, target, state)
    mutator = next((m for m in request.mutators if isinstance(m, AccessTokenMutator)), None)
    if mutator is not None:
        mutated = mutator.mutation if mutator.mutation is not None else str(uuid.uuid4())
        if mutated != token:
            if url is None:
                raise RequestError(f"{request.kind} has no URL to put the mutated access token in")
            url = dotnet.replace_query_value(url, "access_token", mutated)
            token = mutated
    if url is None:
        raise RequestError(f"{request.kind} needs an OverrideUrl: it never goes to the document under test")

    headers = _headers(request, state, resources)
    if kind.override:
        headers["X-WOPI-Override"] = kind.override
    headers["Authorization"] = f"Bearer {token or ''}"
    body = _body(request, resources)

    proof_mutator = next((m for m in request.mutators if isinstance(m, ProofKeyMutator)), None)

    def sign(final_url: str) -> dict[str, str]:
        assert signer is not None  # handed out only with one
        if token is None:  # an override URL without an access token: the validator cannot sign it
            raise ValueError("Value cannot be null. (Parameter 'AccessToken')")
        return signer(token, final_url, proof_mutator)

    return HttpCall(kind.method, url, headers, body, kind.text, sign if signer is not None else None, user_agent)


def _url(request: Request, kind: Kind, target: Target, state: State) -> tuple[str | None, str | None]:
    """The URL and the access token in it."""
    override = state.override(request.override_url)
    if override:
        url = _uri(override, kind.path)
        return url, dotnet.query_value(url, "access_token")
    if request.kind in ("DeleteFile", "DeleteContainer"):
        return None, target.token
    base = target.wopi_src
    joiner = "?" if "?" not in base else ("" if base.endswith("&") else "&")
    url = (
        f"{base}{kind.path}{joiner}access_token={dotnet.url_key_value_encode(target.token) or ''}"
        f"&access_token_ttl={target.token_ttl}"
    )
    return _uri(url), target.token


def _uri(url: str, path: str = "") -> str:
    """`url`, with `path` added to its path, as .NET's Uri writes it; RequestError where .NET's Uri throws
    UriFormatException and urllib cannot split it (an IPv6 host without its closing bracket), whether the
    WOPISrc or a URL the host answered."""
    try:
        return dotnet.absolute_uri(dotnet.append_path(url, path) if path else url)
    except ValueError as error:
        raise RequestError(f"the URL {url!r} is not a valid URI ({error})") from None  # (redacted as reported)


def _text(value: str | None) -> str:
    return value if value is not None else ""


def _target_headers(mode: str | None, name: str | None, overwrite: bool | None) -> dict[str, str]:
    encoded = _text(dotnet.utf7_unescaped(name))
    if mode == "Suggested":
        return {"X-WOPI-SuggestedTarget": encoded}
    if mode == "ExactName":
        headers = {"X-WOPI-RelativeTarget": encoded}
        if overwrite is not None:
            headers["X-WOPI-OverwriteRelativeTarget"] = dotnet.bool_text(overwrite)
        return headers
    if mode == "Conflicting":
        return {"X-WOPI-SuggestedTarget": encoded, "X-WOPI-RelativeTarget": encoded}
    raise RequestError(f"Unknown PutRelativeFileMode specified: {mode or 'Unknown'}")


def _utf7_name(name: str | None) -> str:
    if name is None:
        raise RequestError("no Name to send as X-WOPI-RequestedName")
    return dotnet.utf7(name)


def _headers(request: Request, state: State, resources: Resources) -> dict[str, str]:
    r, kind = request, request.kind
    if kind == "GetFile":
        return {"X-WOPI-Lock": r.new_lock} if r.new_lock else {}
    if kind == "PutFile":
        return {"X-WOPI-Lock": r.lock} if r.lock else {}
    if kind == "PutRelativeFile":
        return {
            "X-WOPI-Size": str(len(resources.content(r.resource_id))),
            **_target_headers(r.mode, r.name, r.overwrite_relative),
        }
    if kind == "Lock":
        headers = {"X-WOPI-Lock": _text(r.lock)}
        if r.lock_user_visible is not None:
            headers["X-WOPI-LockUserVisible"] = dotnet.bool_text(r.lock_user_visible)
        return headers
    if kind in ("Unlock", "RefreshLock"):
        return {"X-WOPI-Lock": _text(r.lock)}
    if kind == "UnlockAndRelock":
        return {"X-WOPI-Lock": _text(r.new_lock), "X-WOPI-OldLock": _text(r.old_lock)}
    if kind == "GetNewAccessToken":
        return {"X-WOPI-WopiSrc": _text(state.get(ORIGINAL_WOPI_SRC))}
    if kind == "EnumerateChildren":
        extensions = r.file_extension_filter_list
        return {"X-WOPI-FileExtensionFilterList": extensions} if extensions else {}
    if kind == "CreateChildContainer":
        return _target_headers(r.mode, r.folder_name, None)
    if kind == "CreateChildFile":
        return _target_headers(r.mode, r.name, r.overwrite_relative)
    if kind == "RenameContainer":
        return {"X-WOPI-RequestedName": _utf7_name(r.name)}
    if kind == "RenameFile":
        return {
            "X-WOPI-RequestedName": _utf7_name(r.name),
            "X-WOPI-Lock": _text(r.lock),
            "X-WOPI-CoauthLockId": _text(r.coauth_lock_id),
        }
    if kind == "GetShareUrl":
        return {"X-WOPI-UrlType": _text(r.url_type)}
    if kind in ("GetCoauthLock", "RefreshCoauthLock"):
        headers = {}
        if kind == "GetCoauthLock" and r.coauth_lock_type is not None:
            headers["X-WOPI-CoauthLockType"] = r.coauth_lock_type
        if r.coauth_lock_metadata_as_body is None and r.coauth_lock_metadata is not None:
            headers["X-WOPI-CoauthLockMetadata"] = r.coauth_lock_metadata
        if r.coauth_lock_id is not None:
            headers["X-WOPI-CoauthLockId"] = r.coauth_lock_id
        if r.coauth_lock_expiration_timeout is not None:
            headers["X-WOPI-CoauthLockExpirationTimeout"] = str(r.coauth_lock_expiration_timeout)
        return headers
    if kind == "UnlockCoauthLock":
        return {"X-WOPI-CoauthLockId": r.coauth_lock_id} if r.coauth_lock_id is not None else {}
    if kind == "GetCoauthTable":
        return {"X-WOPI-CoauthTableVersion": _coauth_table_version(r, state)}
    if kind == "PutChunkedFile":
        return {
            "X-WOPI-SequenceNumber": str(_sequence_number(r, state)),
            "X-WOPI-Lock": _blank_as_empty(r.lock),
            "X-WOPI-CoauthLockId": _blank_as_empty(r.coauth_lock_id),
            "X-WOPI-Editors": _blank_as_empty(r.editors),
        }
    return {}


def _blank_as_empty(value: str | None) -> str:
    return value if value and value.strip() else ""


def _coauth_table_version(r: Request, state: State) -> str:
    key, literal = r.coauth_table_version_state_key, r.coauth_table_version
    if key and key.strip() and literal and literal.strip():
        raise RequestError("GetCoauthTable takes CoauthTableVersionStateKey or CoauthTableVersion, not both")
    value = None
    if key and key.strip() and key in state:
        value = state[key]
    elif literal and literal.strip():
        value = literal
    return value if value and value.strip() else ""


def _sequence_number(r: Request, state: State) -> int:
    """From the saved state when it holds an int, else the literal SequenceNumber; a signed 32-bit integer,
    as the validator parses it."""
    key = r.sequence_number_state_key
    if key and key.strip():
        saved = dotnet.try_parse_integer(state.get(key))
        if saved is not None:
            return saved
    literal = dotnet.try_parse_integer(r.sequence_number)
    if literal is None:
        raise RequestError("PutChunkedFile has no SequenceNumber it can parse (neither in state nor literal)")
    return literal


def _body(request: Request, resources: Resources) -> bytes | None:
    kind = request.kind
    if kind in ("PutFile", "PutRelativeFile"):
        return resources.content(request.resource_id)
    if kind in ("PutUserInfo", "AddActivities"):
        return (request.request_body or "").encode("utf-8")
    if kind in ("GetCoauthLock", "RefreshCoauthLock") and request.coauth_lock_metadata_as_body is not None:
        return json.dumps(
            {"CoauthLockMetadata": request.coauth_lock_metadata_as_body}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
    if kind == "GetChunkedFile":
        return get_chunked_file_body(request, resources)
    if kind == "PutChunkedFile":
        return put_chunked_file_body(request, resources)
    return None
