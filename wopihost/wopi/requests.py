"""Reading WOPI request headers: every malformed value becomes a 400 that names the header."""

from __future__ import annotations

from datetime import datetime

from flask import Request, request

from ..body import JsonTooLarge, json_request_body
from ..clock import parse_iso
from ..errors import WopiError, bad_request
from ..names import InvalidName, decode_utf7


def header(name: str) -> str | None:
    value = request.headers.get(name)
    return value if value is None else value.strip()


MAX_INT64 = 2**63 - 1  # WOPI's integer headers are .NET longs


def int_header(name: str, default: int | None = None) -> int | None:
    value = header(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()):
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


def utf7_header(name: str, invalid_name_header: str | None = None) -> str | None:
    value = header(name)
    if value is None:
        return None
    try:
        return decode_utf7(value, name)
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
