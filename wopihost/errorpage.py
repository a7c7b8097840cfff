"""The page a person's browser gets where a page of the host cannot be shown (a share link's, the host page): a
title and a sentence saying what went wrong. A browser shows an error with an empty body as a blank page, which
tells the person nothing; each face that a browser opens answers its errors with this one page, in its own
words and with its own security headers.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from .body import drain
from .errors import with_headers_of
from .faults import InsufficientStorage, Unavailable


def error_page(status: int, title: str, message: str, headers: Mapping[str, str]) -> Response:
    """`status` with a small HTML page of `title` and `message` (a sentence of the domain's or Werkzeug's, never a
    token: escaped here all the same, since a reason may quote what the client sent) and `headers`, those of the
    page it stands in for (its Content-Security-Policy, Cache-Control ...)."""
    drain(request.environ, request.stream)  # as every error of the app: the connection carries the next request
    message = message[:1].upper() + message[1:]
    if not message.endswith((".", "?", "!", ")")):
        message += "."
    html = (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{escape(title)}</title></head>\n'
        f"<body><h1>{escape(title)}</h1><p>{escape(message)}</p></body></html>\n"
    )
    return Response(html, status=status, mimetype="text/html", headers=dict(headers))


def http_error_page(error: HTTPException, headers: Mapping[str, str]) -> Response:
    """Werkzeug's error (a path of no page, a method the page does not take, a range beyond the file ...) as that
    page, with the headers the error carries (Allow, Content-Range)."""
    return with_headers_of(error_page(error.code or 500, error.name, error.description or error.name, headers), error)


def fault_page(error: Unavailable | InsufficientStorage, headers: Mapping[str, str]) -> Response:
    """What the host stands on failing (the database, the disk, the store) as that page: 503 with Unavailable's
    Retry-After, as every other 503 of the app, or 507 for a store that is full."""
    if isinstance(error, Unavailable):
        return error_page(503, "Try again later", str(error), {**headers, "Retry-After": str(error.retry_after)})
    return error_page(507, "Try again later", str(error), headers)
