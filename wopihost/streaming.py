"""A file's content as an HTTP response, for every face that serves one (WOPI, Graph, share links)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import BinaryIO

from flask import Request, Response
from werkzeug.exceptions import PreconditionFailed, RequestedRangeNotSatisfiable
from werkzeug.http import parse_if_range_header, quote_etag
from werkzeug.wsgi import wrap_file

from .httpdate import http_date
from .models import File
from .snapshots import FileView
from .storage import PIECE

# environ key: (size, SHA-256 as stored: base64) of the whole content a response sends, so that a recording
# (wopihost/recording/) need not read a large file again to hash what the server sent of it with sendfile; the
# recording, not every download, turns it into hex
CONTENT_SHA256 = "wopihost.content_sha256"
# the request headers (as environ keys) that can make a download partial (206, 416) or conditional (304, 412)
CONDITIONS = (
    "HTTP_RANGE",
    "HTTP_IF_RANGE",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)


def content_response(
    request: Request,
    file: File | FileView,
    content: BinaryIO,
    etag: str,
    response_class: type[Response] = Response,
    before: Callable[[Response], None] | None = None,
    also_matching: Collection[str] = (),
) -> Response:
    """A response streaming `content` (the file's bytes, just opened) in pieces, with Range and conditional
    requests (416 for a range it cannot satisfy); `before` adds a face's own headers or refuses (raising).
    If-Match and If-None-Match take `etag` or any of `also_matching` (Graph's eTag beside its cTag). A failed
    precondition is an error each face answers in its own form, with nothing of the content. Until the response
    exists, closing `content` on failure is ours; after that it is the server's."""
    try:
        environ = request.environ
        if "HTTP_IF_MATCH" in environ:
            # Ours to judge: Werkzeug answers a failed If-Match with a 412 that still carries the content, with
            # a Range it does not look at If-Match at all (RFC 9110 §13.2.2 evaluates it first), and it knows
            # only the one tag. (If-Unmodified-Since it ignores, as RFC 9110 says: there is no Last-Modified.)
            if not any(request.if_match.contains(tag) for tag in (etag, *also_matching)):
                raise PreconditionFailed("If-Match does not match the content's ETag")
            environ = _without(environ, "HTTP_IF_MATCH")
        if "HTTP_IF_NONE_MATCH" in environ and any(
            request.if_none_match.contains_weak(tag) for tag in (etag, *also_matching)
        ):
            # A 304, told to Werkzeug as a match of the one tag it knows, and before any Range (RFC 9110 §13.2.2;
            # Werkzeug answers 206 to a Range whatever If-None-Match says)
            environ = {**_without(environ, "HTTP_RANGE"), "HTTP_IF_NONE_MATCH": quote_etag(etag)}
        if "HTTP_RANGE" in environ:
            environ = _range_as_rfc_9110_reads_it(environ, file.size, etag)
        response = response_class(
            wrap_file(request.environ, content, PIECE), mimetype="application/octet-stream", direct_passthrough=True
        )
        response.content_length = file.size
        response.headers["Date"] = http_date()  # make_conditional would format it anew
        response.set_etag(etag)
        if before is not None:
            before(response)
        if not environ.keys().isdisjoint(CONDITIONS):
            response.make_conditional(environ, accept_ranges=True, complete_length=file.size)  # in place
        elif request.method in ("GET", "HEAD"):
            response.headers["Accept-Ranges"] = "bytes"  # all make_conditional would do: 5% of a download's CPU
        if response.status_code == 200 and file.sha256:
            request.environ[CONTENT_SHA256] = file.size, file.sha256
        return response
    except BaseException:
        content.close()
        raise


def _range_as_rfc_9110_reads_it(environ: dict, size: int, etag: str) -> dict:
    """The request as Werkzeug should see it where it reads a Range otherwise than RFC 9110 §14: a range in a
    unit other than bytes is ignored (Werkzeug: 416); several ranges, which we do not send as
    multipart/byteranges, are ignored unless none can be satisfied (Werkzeug: 416 for any list not in order, which
    would say that none can); empty list elements are skipped (Werkzeug: 416); a suffix longer than the file is
    the whole file (416); and of an empty file only a suffix can be satisfied (§14.1.1), which is then the whole
    (empty) file, every other range not (Werkzeug ignores them: 200, even where If-Range holds)."""
    if environ.get("HTTP_IF_RANGE", "").lstrip().startswith("W/"):
        return _without(environ, "HTTP_RANGE")  # §13.1.5: a weak tag never matches (Werkzeug's does): all of it
    value = environ["HTTP_RANGE"]
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes":
        return _without(environ, "HTTP_RANGE")
    ranges = _byte_ranges(specs)
    if ranges is None:  # malformed: Werkzeug's 416 stands
        return environ
    # RFC 9110 §14.1.1: a range from a byte the file has, or a suffix of more than none, can be satisfied
    if not any(first < size if first is not None else last for first, last in ranges):
        if size == 0:
            if "HTTP_IF_RANGE" in environ and parse_if_range_header(environ["HTTP_IF_RANGE"]).etag != etag:
                return _without(environ, "HTTP_RANGE")  # the range is of another version: the whole file
            raise RequestedRangeNotSatisfiable(length=0)
        # Werkzeug's 416, or its 200 where If-Range says to send the whole file instead
        return {**environ, "HTTP_RANGE": f"bytes={size}-"}
    if len(ranges) > 1 or size == 0:
        return _without(environ, "HTTP_RANGE")
    first, last = ranges[0]
    if first is None:
        return {**environ, "HTTP_RANGE": f"bytes=-{last}" if (last or 0) < size else "bytes=0-"}
    return {**environ, "HTTP_RANGE": f"bytes={first}-{'' if last is None else last}"}


# RFC 9110 §14.1.2: a range of the bytes unit is `first-last`, `first-` or `-suffix` (optional white space around
# each list element)
_BYTE_RANGE = re.compile(r"[ \t]*(?:(\d+)-(\d*)|-(\d+))[ \t]*")


def _byte_ranges(specs: str) -> list[tuple[int | None, int | None]] | None:
    """The ranges of a bytes Range's value: (first, last or None), or (None, suffix); None if one is malformed
    (or ends before it starts) or there is none. Empty list elements are skipped (RFC 9110 §5.6.1.2)."""
    ranges: list[tuple[int | None, int | None]] = []
    for element in specs.split(","):
        if not element.strip(" \t"):
            continue
        match = _BYTE_RANGE.fullmatch(element)
        if match is None:
            return None
        first, last, suffix = match.groups()
        if suffix is not None:
            ranges.append((None, int(suffix)))
        elif last and int(last) < int(first):
            return None
        else:
            ranges.append((int(first), int(last) if last else None))
    return ranges or None


def _without(environ: dict, key: str) -> dict:
    """A copy of `environ` for Werkzeug to read without the header `key`; the request's own stays whole."""
    return {name: value for name, value in environ.items() if name != key}
