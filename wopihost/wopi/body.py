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

from typing import Protocol

from flask import request

from ..errors import bad_request
from ..storage import PIECE

try:
    from gunicorn.http.body import Body as _GunicornBody, LengthReader as _GunicornLengthReader
except ImportError:  # not serving under gunicorn's package at all
    _GunicornBody = _GunicornLengthReader = None


class Source(Protocol):
    def readinto(self, view: memoryview) -> int: ...


class StreamSource:
    """Any file-like wsgi.input."""

    def __init__(self, stream):
        self._stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self._stream.read(len(view))
        view[:len(data)] = data
        return len(data)


class GunicornSocketSource:
    """The unread part of a Content-Length body, from gunicorn's read-ahead buffer first, then its socket."""

    def __init__(self, sock, reader):
        self._sock = sock
        self._reader = reader  # gunicorn's LengthReader: .length is what gunicorn believes is unread
        self._unreader = reader.unreader

    @classmethod
    def of(cls, environ: dict) -> "GunicornSocketSource | None":
        stream, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
        if _GunicornBody is None or sock is None or type(stream) is not _GunicornBody:
            return None
        reader = getattr(stream, "reader", None)
        buffered = getattr(stream, "buf", None)
        if (type(reader) is not _GunicornLengthReader or not hasattr(reader.unreader, "take_buffered")
                or buffered is None or buffered.getvalue()):
            return None  # chunked, or part of the body already read through wsgi.input
        return cls(sock, reader)

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
    def __init__(self, source: Source, length: int | None):
        self._source = source
        self._left = length

    def readinto(self, view: memoryview) -> int:
        """Fill the start of `view`; 0 at the end of the body; 400 if it ends before its Content-Length."""
        if self._left is not None:
            if self._left == 0:
                return 0
            view = view[:self._left]
        n = self._source.readinto(view)
        if self._left is not None:
            if not n:
                raise bad_request(f"the request body ended {self._left} bytes before its Content-Length")
            self._left -= n
        return n

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


def request_body() -> RequestBody:
    length = request.content_length
    source = (GunicornSocketSource.of(request.environ) if length is not None else None) \
        or StreamSource(request.stream)
    return RequestBody(source, length)
