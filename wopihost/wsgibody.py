"""A WSGI response body watched on its way out, for the layers that observe whole exchanges (metrics.Observer,
recording.Recorder): each piece as the server takes it, and the moment the server closes the body, which is when
the response has been sent (or abandoned)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator


class Watched:
    """`body` passed through unchanged; `piece` sees each piece before the server does, `closed` is called once
    when the server closes it, after the body's own close."""

    __slots__ = ("_body", "_piece", "_closed")

    def __init__(self, body: Iterable[bytes], piece: Callable[[bytes], object], closed: Callable[[], object]):
        self._body, self._piece, self._closed = body, piece, closed

    def __iter__(self) -> Iterator[bytes]:
        piece = self._piece
        for chunk in self._body:
            piece(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._closed()
