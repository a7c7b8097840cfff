"""Failures of what the host stands on, not of the request. Each face answers them the same way:
507 for `InsufficientStorage`, 503 with Retry-After for `Unavailable`. Nothing was changed."""

from __future__ import annotations


class InsufficientStorage(Exception):
    """The disk (or the database on it) is full, or the object store or its quota is: the write was not stored."""


RETRY_AFTER = 5  # seconds: what a 503 says in Retry-After where nothing better is known


class Unavailable(Exception):
    """The database or the data directory cannot serve now: locked past the busy timeout, unreachable,
    read-only. `retry_after` is a guess, in seconds, of when trying again makes sense."""

    def __init__(self, reason: str, retry_after: int = RETRY_AFTER):
        super().__init__(reason)
        self.retry_after = retry_after


def changing_too_often() -> Unavailable:
    """A reader that lost the race with the file's writers at every try (each replaced a blob it was about to
    open): 503, and the next try most likely wins, sooner than after any other 503."""
    return Unavailable("the file is being changed too often to read it; retry", retry_after=1)
