"""Graph's error answers: JSON `{"error": {"code", "message", "innerError": {...}}}` on every failure,
never HTML and never the WOPI face's headers (docs/graph.md §6)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable

from flask import Response, request
from werkzeug.exceptions import HTTPException

from ..body import drain
from ..clock import Clock
from ..errors import WopiError, with_headers_of
from ..faults import InsufficientStorage, Unavailable
from .shapes import timestamp

log = logging.getLogger("wopihost.graph")

# The code Graph uses for a status, where the domain names none.
_CODES = {
    400: "invalidRequest",
    401: "unauthenticated",
    403: "accessDenied",
    404: "itemNotFound",
    405: "notSupported",
    406: "notSupported",
    408: "timeout",
    409: "conflict",
    410: "itemNotFound",
    411: "invalidRequest",
    412: "preconditionFailed",
    413: "requestSizeExceeded",
    415: "notSupported",
    416: "invalidRange",
    423: "resourceLocked",
    429: "activityLimitReached",
    500: "generalException",
    501: "notSupported",
    503: "serviceNotAvailable",
    507: "insufficientStorage",
}
MESSAGE_LIMIT = 500  # characters of a domain error's text in `message`: it may quote a client's (long) name
# The domain's CSPP "gone" is 410; in Graph a session or item that is not there is 404.
_STATUS_OF_CODE = {"itemNotFound": 404, "resourceLocked": 423}


class GraphError(Exception):
    def __init__(
        self, status: int, code: str, message: str, inner: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = headers or {}


def not_allowed(methods: Iterable[str], message: str | None = None) -> GraphError:
    """405, with the methods the resource takes (HEAD wherever GET) in Allow, as RFC 9110 §15.5.6 asks."""
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    message = message or f"{request.method} is not supported here"
    return GraphError(405, "notSupported", message, headers={"Allow": ", ".join(sorted(allowed))})


def response(error: GraphError) -> Response:
    inner = {"date": timestamp(Clock().now(), fraction=False), "request-id": str(uuid.uuid4())}
    client_id = request.headers.get("client-request-id")
    if client_id and len(client_id) <= 100 and client_id.isascii() and client_id.isprintable():
        inner["client-request-id"] = client_id
    if error.inner:
        inner["code"] = error.inner
    body = {"error": {"code": error.code, "message": error.message, "innerError": inner}}
    answer = Response(
        json.dumps(body),
        status=error.status,
        mimetype="application/json",
        headers={"request-id": inner["request-id"], **error.headers},
    )
    if error.status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="wopihost"'
    drain(request.environ, request.stream)
    return answer


def from_domain(error: WopiError) -> GraphError:
    code, _, inner = (error.code or _CODES.get(error.status, "generalException")).partition("/")
    status = _STATUS_OF_CODE.get(code, error.status)
    keep = {name: value for name, value in error.headers.items() if name == "Retry-After"}
    # the reason as the domain wrote it: `error.reason` is made fit for a WOPI header (ASCII, "?" for the
    # rest), which would spell a name in Cyrillic or Japanese as "???"; JSON carries any text
    message = str(error.args[0])[:MESSAGE_LIMIT] if error.args else error.reason
    return GraphError(status, code, message, inner or None, keep)


def register(blueprint) -> None:
    blueprint.register_error_handler(GraphError, response)
    blueprint.register_error_handler(WopiError, _domain)
    blueprint.register_error_handler(InsufficientStorage, _insufficient_storage)
    blueprint.register_error_handler(Unavailable, _unavailable)
    blueprint.register_error_handler(HTTPException, http_error)
    blueprint.register_error_handler(Exception, _unexpected)


def _domain(error: WopiError) -> Response:
    log.info("%s %s -> %s: %s", request.method, request.path, error.status, error.reason)
    return response(from_domain(error))


def _insufficient_storage(error: InsufficientStorage) -> Response:
    log.warning("%s %s -> 507: %s", request.method, request.path, error)
    return response(GraphError(507, "insufficientStorage", f"{error}: nothing was stored"))


def _unavailable(error: Unavailable) -> Response:
    log.warning("%s %s -> 503: %s", request.method, request.path, error)
    return response(GraphError(503, "serviceNotAvailable", str(error), headers={"Retry-After": str(error.retry_after)}))


def http_error(error: HTTPException) -> Response:
    status = error.code or 500
    answer = response(GraphError(status, _CODES.get(status, "generalException"), error.description or error.name))
    return with_headers_of(answer, error)


def _unexpected(error: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.path)
    return response(GraphError(500, "generalException", "internal server error"))
