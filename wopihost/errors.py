"""The one error type that the domain layer raises and the HTTP layer turns into a response."""

from __future__ import annotations

from flask import Response
from werkzeug.exceptions import HTTPException

from .names import InvalidName, check


class WopiResponse(Response):
    """Most WOPI responses have no body; they should not claim to be text/html."""

    default_mimetype = None


class WopiError(Exception):
    """A failed operation: HTTP status, a reason for X-WOPI-FailureReason, extra headers.

    The domain raises it for every face; its name is from when WOPI was the only one. `code` is a
    machine-readable kind of failure (Graph's error codes: "nameAlreadyExists", "fragmentOverlap" ...)
    for faces that have such codes; the Graph face derives one from the status where it is None.
    `reason` goes into a response header, so it must be one line of printable ASCII;
    the constructor enforces that rather than trusting every caller.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
        code: str | None = None,
    ):
        super().__init__(reason)
        self.status = status
        self.reason = header_safe(reason)
        self.headers = dict(headers or {})
        self.body = body
        self.code = code

    def __repr__(self) -> str:
        return f"WopiError({self.status}, {self.reason!r})"


def header_safe(text: str, limit: int = 300) -> str:
    """Printable ASCII on one line, so a reason that quotes client input cannot break a header."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return cleaned[:limit]


def bad_request(reason: str, headers: dict[str, str] | None = None) -> WopiError:
    return WopiError(400, reason, headers)


def conflict(
    reason: str, current_lock: str | None, mechanism: str | None = None, extra: dict[str, str] | None = None
) -> WopiError:
    """A lock conflict. It names the current WOPI lock ("" when unlocked), which clients recover with;
    `current_lock=None` leaves X-WOPI-Lock out, as WOPI asks while coauth locks hold the file.
    `mechanism` is X-WOPI-ConflictingMechanism: WOPI-Lock, WOPI-CoauthExclusiveLock or Other."""
    headers = {"X-WOPI-LockFailureReason": reason}
    if current_lock is not None:
        headers["X-WOPI-Lock"] = current_lock
    if mechanism is not None:
        headers["X-WOPI-ConflictingMechanism"] = mechanism
    headers.update(extra or {})
    return WopiError(409, reason, headers, code="resourceLocked")


def not_found(reason: str = "file not found") -> WopiError:
    return WopiError(404, reason, code="itemNotFound")


def checked_name(name: str) -> str:
    """names.check's valid, composed form of `name`; 400 for a name the host's rules refuse, as Graph answers it."""
    try:
        return check(name)
    except InvalidName as exc:
        raise WopiError(400, str(exc), code="invalidRequest") from None


def name_taken(name: str) -> WopiError:
    return WopiError(409, f"an item named {name} already exists in that folder", code="nameAlreadyExists")


def unauthorized(reason: str) -> WopiError:
    return WopiError(401, reason)


def with_headers_of(response: Response, error: HTTPException) -> Response:
    """`response`, standing in for Werkzeug's `error`, with the headers the error carries (Allow for a 405,
    Content-Range for a 416) but its Content-Type, and none the response has already."""
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers.setdefault(name, value)
    return response
