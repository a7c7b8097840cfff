"""Reading WOPI request headers: every malformed value becomes a 400 that names the header."""

from __future__ import annotations

from datetime import datetime

from flask import Request, request

from ..body import JsonTooLarge, RequestBody, json_request_body, request_body
from ..clock import parse_iso
from ..errors import WopiError, bad_request
from ..locks import parse_lock_id
from ..names import InvalidName, decode_name
from ..text import digits


def header(name: str) -> str | None:
    """A header's value as the WSGI server hands it over (its bytes read as Latin-1), less the spaces and tabs
    around it: HTTP's only whitespace there. Not str.strip, which also takes U+0085 and U+00A0, the last byte of
    a raw UTF-8 name ending in 'à' (C3 A0) or 'Å' (C3 85)."""
    value = request.headers.get(name)
    return value if value is None else value.strip(" \t")


def lock_header(name: str) -> str | None:
    """An optional lock id (X-WOPI-Lock or X-WOPI-CoauthLockId where the file may be unlocked), which clients send
    empty when they hold none: empty is absent, anything else is a lock id as Lock takes it (parse_lock_id), 400
    naming the header if not, rather than a lock that merely does not match."""
    value = header(name)
    return parse_lock_id(value, name) if value else None


MAX_INT64 = 2**63 - 1  # WOPI's integer headers are .NET longs


def int_header(name: str, default: int | None = None) -> int | None:
    value = header(name)
    if value is None or value == "":
        return default
    if not digits(value):
        raise bad_request(f"{name} must be a non-negative integer")
    # Bounded before int(): Python refuses to convert more than 4300 digits, and the database a long.
    if len(value.lstrip("0")) > len(str(MAX_INT64)) or int(value) > MAX_INT64:
        raise bad_request(f"{name} must be at most {MAX_INT64}")
    return int(value)


def bool_header(name: str) -> bool:
    """The .NET validator sends True/False; missing means false."""
    value = (header(name) or "false").lower()
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false")
    return value == "true"


def name_header(name: str, invalid_name_header: str | None = None) -> str | None:
    """A name header decoded (names.decode_name: UTF-7, or raw UTF-8); 400 if it is neither, naming the reason
    in `invalid_name_header` too if given."""
    value = header(name)
    if value is None:
        return None
    try:
        return decode_name(value, name)
    except InvalidName as exc:
        headers = {invalid_name_header: str(exc)} if invalid_name_header else None
        raise bad_request(str(exc), headers) from None


def time_header(*names: str) -> datetime | None:
    """The first of `names` present, as an ISO 8601 time."""
    for name in names:
        value = header(name)
        if value:
            moment = parse_iso(value)
            if moment is None:
                raise bad_request(f"{name} is not an ISO 8601 time")
            return moment
    return None


def access_token(req: Request) -> str | None:
    """The access_token query parameter, else an Authorization: Bearer token (docs/wopi.md §1.2)."""
    token = req.args.get("access_token")
    if token:
        return token
    scheme, _, credentials = (req.headers.get("Authorization") or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def check_body_size(limit: int, declared: int | None = None) -> None:
    """413 before reading a body that says it is too large."""
    for size in (request.content_length, declared):
        if size is not None and size > limit:
            raise WopiError(413, f"the content is larger than the limit of {limit} bytes")


def discard_body(limit: int) -> None:
    """Read the request body to its end and drop it, for an operation that has no use for one a client sends
    (Collabora sends the whole document with RenameFile). Answered with its body unread, a client that reads
    the answer only once it has sent everything never sees it: the server closes the connection on the bytes
    still coming. 413 past `limit`, up front for a Content-Length that says so."""
    check_body_size(limit)
    body, view, seen = request_body(), memoryview(bytearray(_DISCARD_PIECE)), 0
    while n := body.readinto(view):
        seen += n
        if seen > limit:
            raise WopiError(413, f"the content is larger than the limit of {limit} bytes")


_DISCARD_PIECE = 64 << 10


class _SizedBody:
    """A body without a Content-Length that must still come to the size a header declared."""

    def __init__(self, body: RequestBody, size: int, name: str):
        self._body, self._size, self._left, self._name = body, size, size, name
        self.length = size  # what the local store checks its free space against, as a Content-Length

    def readinto(self, view: memoryview) -> int:
        # One byte past the declared size is enough to know the body is longer: the rest is never read.
        n = self._body.readinto(view[: self._left + 1])
        if n > self._left:
            raise bad_request(f"the body is longer than its {self._name} of {self._size} bytes")
        if not n and self._left:
            raise bad_request(f"the body ended {self._left} bytes before its {self._name} of {self._size}")
        self._left -= n
        return n


def sized_body(name: str, size: int | None) -> RequestBody | _SizedBody:
    """The request body, which must be `size` bytes long if the header `name` declared one (None: it did not):
    400 at once if its Content-Length says otherwise, or while it streams if it has none. A body that fails
    while a blob is written from it leaves no blob behind (storage.py)."""
    body = request_body()
    if size is None or body.length == size:  # a Content-Length body is read to exactly its length (body.py)
        return body
    if body.length is not None:
        raise bad_request(f"{name} is {size} but the body's Content-Length is {body.length}")
    return _SizedBody(body, size, name)


def json_request() -> object:
    """A JSON request body (AddActivities): 413 past body.MAX_JSON, 400 if it is not JSON. Clients send it with
    no Content-Type, so none is required."""
    try:
        value = json_request_body()
    except JsonTooLarge as exc:
        raise WopiError(413, str(exc)) from None
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    if value == b"":
        raise bad_request("the body is not valid JSON")
    return value
