"""Request bodies, read in pieces, that fail rather than end early.

gunicorn marks its input as terminated, so Werkzeug hands us the raw stream, and a
client that hangs up mid-body looks like a clean end of file. A body shorter than its
Content-Length must never be stored as if it were complete.

Under gunicorn, a body with a Content-Length is read straight from the client's
socket into the caller's buffer (`readinto`). gunicorn's own wsgi.input passes every
byte through four BytesIO copies (its unreader's, then its Body's), which costs more
CPU than writing the bytes to disk; for uploads of gigabytes that is the difference
that matters. gunicorn's bookkeeping stays exact: what it had already buffered is
taken first, the rest of the buffer is put back, and its count of unread body bytes
goes down with every read, so keep-alive and its discarding of unread bodies work as
before. Any other server, or a gunicorn whose input looks different, gets wsgi.input.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

from flask import request

from .errors import WopiError, bad_request
from .storage import PIECE
from .text import digits

try:
    from gunicorn.http.body import Body as _GunicornBody
    from gunicorn.http.body import LengthReader as _GunicornLengthReader
    from gunicorn.http.errors import ParseException as _GunicornParseError
except ImportError:  # not serving under gunicorn's package at all
    _GunicornBody = _GunicornLengthReader = None  # type: ignore[assignment, misc]  # checked before use
    _GunicornParseError = ()  # type: ignore[assignment, misc]  # catches nothing

BODY_FAILED = "wopihost.body_failed"  # environ key: the body broke off, nothing more can be read from it
# environ key: a callable given every piece of the request body as it is read, however it is read (a recording,
# wopihost/recording/, sees the body this way: wrapping wsgi.input would lose the socket reads above)
BODY_TAP = "wopihost.body_tap"
DRAIN_LIMIT = 32 << 20  # larger than any sensible UpdateUploadSession piece
DRAIN_SECONDS = 5.0  # a client trickling a refused body must not hold a thread for long
DRAIN_PIECE = 64 << 10


class Source(Protocol):
    def readinto(self, view: memoryview) -> int: ...


class StreamSource:
    """Any file-like wsgi.input."""

    def __init__(self, stream):
        self._stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


class GunicornSocketSource:
    """The unread part of a Content-Length body, from gunicorn's read-ahead buffer first, then its socket."""

    def __init__(self, sock, reader):
        self._sock = sock
        self._reader = reader  # gunicorn's LengthReader: .length is what gunicorn believes is unread
        self._unreader = reader.unreader

    @classmethod
    def of(cls, environ: dict) -> GunicornSocketSource | None:
        stream, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
        if _GunicornBody is None or sock is None or type(stream) is not _GunicornBody:
            return None
        reader = getattr(stream, "reader", None)
        buffered = getattr(stream, "buf", None)
        if (
            type(reader) is not _GunicornLengthReader
            or not hasattr(reader.unreader, "take_buffered")
            or buffered is None
            or buffered.getvalue()
        ):
            return None  # chunked, or part of the body already read through wsgi.input
        return cls(sock, reader)

    @property
    def unread(self) -> int:
        return self._reader.length

    def readinto(self, view: memoryview) -> int:
        size = min(len(view), self._reader.length)
        if size <= 0:
            return 0
        buffered = self._unreader.take_buffered()
        if buffered:
            n = min(size, len(buffered))
            view[:n] = buffered[:n]
            if n < len(buffered):  # the rest of the body, or the next pipelined request: gunicorn's again
                self._unreader.unread(buffered[n:])
        else:
            n = self._sock.recv_into(view, size)
        self._reader.length -= n
        return n


class RequestBody:
    def __init__(self, source: Source, length: int | None, environ: dict | None = None):
        self._source = source
        self.length = length  # as declared: the blob store refuses up front what would not fit
        self._left = length
        self._environ = environ if environ is not None else {}
        self._tap = self._environ.get(BODY_TAP)

    def readinto(self, view: memoryview) -> int:
        """Fill the start of `view`; 0 at the end of the body.

        A body that breaks off is a client error, whatever the cause: 400 if it ends before its
        Content-Length or its chunked framing is malformed, 408 if the client stops sending.
        """
        if self._left is not None:
            if self._left == 0:
                return 0
            view = view[: self._left]
        try:
            n = self._source.readinto(view)
        except TimeoutError:
            raise self._broken(WopiError(408, "the client stopped sending the request body")) from None
        except (OSError, _GunicornParseError) as exc:  # a reset connection, bad chunk framing ...
            raise self._broken(bad_request(f"the request body cannot be read: {exc}")) from None
        if self._left is not None:
            if not n:
                raise self._broken(bad_request(f"the request body ended {self._left} bytes before its Content-Length"))
            self._left -= n
        if n and self._tap is not None:
            self._tap(view[:n])
        return n

    def _broken(self, error: WopiError) -> WopiError:
        _abandon(self._environ)
        return error

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at the end of the body."""
        if self._left is not None:
            size = min(size, self._left)
        pieces = []
        while size > 0:
            view = memoryview(bytearray(min(size, PIECE)))
            n = self.readinto(view)
            if not n:
                break
            pieces.append(view[:n])
            size -= n
        return b"".join(pieces)


def _abandon(environ: dict) -> None:
    """Give up on the rest of a body: nobody waits for more of it, and the connection is not reused."""
    environ[BODY_FAILED] = True
    stream = environ.get("wsgi.input")
    if _GunicornBody is not None and type(stream) is _GunicornBody:
        stream.failed = True  # type: ignore[attr-defined]  # gunicorn 27's; the stubs are 26's. gunicorn then closes the connection instead of draining the body


def drain(environ: dict, stream) -> None:
    """Read what is left of a refused request's body, so the connection can carry the next request.

    Errors are often decided before the body is read (a wrong offset, a lock conflict). gunicorn then
    discards 64 KiB and drops the connection, and a client still sending may never see our answer (the
    offset a resuming upload needs). Up to DRAIN_LIMIT bytes in DRAIN_SECONDS are read and thrown away;
    past either, or if the body broke off, the connection is closed after the answer (at once, without reading,
    when more than DRAIN_LIMIT is left). Under gunicorn only a
    Content-Length body is drained, read straight from the socket, so that the time limit holds however
    slowly the client sends (gunicorn's own readers wait for as many bytes as they are asked for).
    """
    length = _content_length(environ)
    if environ.get(BODY_FAILED) or (length is None and "HTTP_TRANSFER_ENCODING" not in environ):
        return  # broken off, or no body at all
    sock = environ.get("gunicorn.socket")
    source = GunicornSocketSource.of(environ) if length is not None else None
    if (sock is not None and source is None) or (source is not None and source.unread > DRAIN_LIMIT):
        # chunked, or another gunicorn than the one body.py knows; or more left than a drain would ever read, so
        # that waiting DRAIN_SECONDS for it would only hold the thread and delay the answer
        _abandon(environ)
        return
    rest = source or StreamSource(stream)  # what the request has not read yet, however much that is
    deadline, left, view = time.monotonic() + DRAIN_SECONDS, DRAIN_LIMIT, memoryview(bytearray(DRAIN_PIECE))
    prior = sock.gettimeout() if sock is not None else None
    tap = environ.get(BODY_TAP)
    try:
        while left > 0 and (remaining := deadline - time.monotonic()) > 0:
            if sock is not None:
                sock.settimeout(min(remaining, prior or remaining))
            n = rest.readinto(view[: min(len(view), left)])
            if not n:
                if source is not None and source.unread:  # the client ended the body early: gone, or it broke off
                    break
                return  # all read: the connection can carry the next request
            if tap is not None:
                tap(view[:n])
            left -= n
    except Exception:  # the client went away or stalled, or the stream is unusable
        pass
    finally:
        if sock is not None:
            sock.settimeout(prior)
    _abandon(environ)


def _content_length(environ: dict) -> int | None:
    value = environ.get("CONTENT_LENGTH", "")
    return int(value) if digits(value) else None


def request_body() -> RequestBody:
    coding = request.environ.get("HTTP_TRANSFER_ENCODING")
    if coding and [c.strip().lower() for c in coding.split(",")] != ["chunked"]:
        # gunicorn takes gzip, deflate and compress but never decodes them: the coded bytes would be stored
        # as the content (RFC 9112 §6.1: a coding the server does not understand is 501)
        raise WopiError(501, f"Transfer-Encoding {coding[:40]!r}: only chunked is understood")
    raw = request.environ.get("CONTENT_LENGTH")
    if raw and not digits(raw.strip(" \t")):  # Werkzeug reads "+11", "-3" or "11, 11" as 0: an empty body
        raise bad_request(f"Content-Length {raw[:40]!r} is not a number of bytes")
    length = request.content_length
    source = (GunicornSocketSource.of(request.environ) if length is not None else None) or StreamSource(request.stream)
    return RequestBody(source, length, request.environ)


MAX_JSON = 1 << 20


class JsonTooLarge(ValueError):
    """The JSON body is longer than MAX_JSON."""


def json_request_body() -> object:
    """The request body parsed as JSON, read to at most MAX_JSON bytes (a chunked body declares no length);
    JsonTooLarge past that, ValueError if it is not JSON. b"" for an empty body, for the caller to judge.
    Each face turns these into its own errors."""
    raw = request_body().read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise JsonTooLarge(f"a JSON body may have at most {MAX_JSON} bytes")
    if not raw.strip():
        return b""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
