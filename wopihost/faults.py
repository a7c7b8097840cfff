"""Failures of what the host stands on, not of the request. Each face answers them the same way:
507 for `InsufficientStorage`, 503 with Retry-After for `Unavailable`. Nothing was changed, unless the failure
came at the commit itself (`outcome_unknown`)."""

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


_AT_COMMIT = "wopihost_at_commit"


def at_commit(failure: BaseException) -> BaseException:
    """`failure`, raised by a transaction's COMMIT, marked as such (and returned)."""
    setattr(failure, _AT_COMMIT, True)
    return failure


def outcome_unknown(failure: BaseException) -> bool:
    """Whether a transaction that ended in `failure` may have committed all the same: the failure came at its
    COMMIT without saying that it did not (a connection to PostgreSQL lost before the answer came, which the
    database may have committed before it could send; SQLite failing to write its file), or it stops the process
    (SystemExit, KeyboardInterrupt), which may come between the commit and what follows it. What such a
    transaction would have named (a new blob) must then stay for the next reader, or for gc, which deletes only
    what nothing names; the client's retry, as after any 503, finds out which."""
    return getattr(failure, _AT_COMMIT, False) or not isinstance(failure, Exception)
