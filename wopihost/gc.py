"""Garbage collection: expired upload and workbook sessions, blobs nothing refers to, partial writes of dead
processes, expired and revoked access-token rows.

Safe to run at any time, from any number of processes, with any grace period: a blob
or partial write is only deleted once nothing in the database refers to it, no live
writer holds it (storage.Blob), and it is older than the grace period. Where a deleted
blob is gone for its readers too (an object store: Storage.deleted_stays_readable),
it must also have stayed unreferenced, its writer gone, for the grace period, as two passes find it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

import sqlalchemy as sa

from .extents import Extents
from .models import AlternateStream, File, UnreferencedBlob, UploadPiece, WorkbookSession
from .repository import insert_if_absent
from .services import Services

log = logging.getLogger("wopihost.gc")
Track = Callable[[list], Iterable]


@dataclass(frozen=True)
class Collected:
    sessions: int = 0
    blobs: int = 0
    partial_writes: int = 0
    tokens: int = 0

    def __str__(self) -> str:
        return (
            f"{self.sessions} expired upload and workbook sessions, {self.blobs} orphaned blobs, "
            f"{self.partial_writes} partial writes, {self.tokens} expired or revoked tokens"
        )


class Interrupted(Exception):
    """A sweep that a failure ended partway (the store refusing a delete, say): `done` is what it had deleted by
    then, the failure its __cause__. It stops at the failure; what is left goes in the next sweep."""

    def __init__(self, done: Collected):
        super().__init__(f"garbage collection failed after deleting {done}")
        self.done = done


def collect(services: Services, grace: float = 3600, track: Track = iter) -> Collected:
    """`track` wraps the list of batches of unreferenced blobs as they are checked (the command's progress bar).
    A failure raises Interrupted, which says what was deleted before it."""
    done = Collected()
    try:
        done = replace(done, sessions=services.sessions.sweep())
        done = replace(done, sessions=done.sessions + services.workbooks.sweep())
        with services.db.write() as s:
            done = replace(done, tokens=services.tokens.purge(s))
        done = replace(done, blobs=orphaned_blobs(services, grace, track))
        return replace(done, partial_writes=services.blobs.sweep_tmp(grace))
    except Interrupted as exc:  # orphaned_blobs', counting its own
        raise Interrupted(replace(done, blobs=exc.done.blobs)) from exc.__cause__
    except Exception as exc:
        raise Interrupted(done) from exc


def orphaned_blobs(services: Services, grace: float, track: Track = iter) -> int:
    """Delete blobs older than `grace` that nothing refers to and no live writer holds; returns how many. The
    first that cannot be deleted (the store refuses) ends the pass: Interrupted says how many went before it.

    A writer holds its new blob until the transaction that records it is over (storage.Blob). One that let
    go after `referenced` was read has recorded its blob by then, so the references are read again once the
    candidates are held by us, and only what is still unreferenced goes.
    """
    referenced = referenced_blobs(services)
    candidates = [name for name in services.blobs.listing(time.time() - grace) if name not in referenced]
    if not services.blobs.deleted_stays_readable:
        candidates = _unreferenced_since(services, _unheld_unreferenced(services, candidates), grace)
    deleted = 0
    try:
        for start in track(list(range(0, len(candidates), HOLD_AT_ONCE))):
            with services.blobs.unheld(candidates[start : start + HOLD_AT_ONCE]) as unheld:
                if not unheld:
                    continue
                referenced = referenced_blobs(services)
                for name in unheld:
                    if name not in referenced:
                        services.blobs.delete(name)
                        deleted += 1
    except Exception as exc:  # a store that refused one will likely refuse the next: leave them for another sweep
        raise Interrupted(Collected(blobs=deleted)) from exc
    return deleted


def _unheld_unreferenced(services: Services, candidates: list[str]) -> list[str]:
    """Those of `candidates` that no live writer holds and nothing refers to yet. A held blob may still be
    recorded by its writer's transaction: its grace period starts once that is over. A writer that let go
    since `candidates` were found had recorded its blob by then, so the references are read again."""
    unheld: list[str] = []
    for start in range(0, len(candidates), HOLD_AT_ONCE):
        with services.blobs.unheld(candidates[start : start + HOLD_AT_ONCE]) as found:
            unheld += found
    referenced = referenced_blobs(services) if unheld else set()
    return [name for name in unheld if name not in referenced]


def _unreferenced_since(services: Services, candidates: list[str], grace: float) -> list[str]:
    """Those of `candidates` (blobs unreferenced and unheld now) that an earlier pass found so at least `grace`
    ago. The rest are remembered as found now, and what is no longer a candidate (referenced, held, or gone) is
    forgotten. Passes on several nodes at once can only forget too early, which delays a deletion."""
    now = services.clock.now()
    with services.db.write() as s:
        seen = {name: at for name, at in s.execute(sa.select(UnreferencedBlob.name, UnreferencedBlob.seen_at))}
        for name in candidates:
            if name not in seen:
                insert_if_absent(s, UnreferencedBlob, name=name, seen_at=now)
        gone = list(seen.keys() - set(candidates))
        for start in range(0, len(gone), HOLD_AT_ONCE):
            s.execute(sa.delete(UnreferencedBlob).where(UnreferencedBlob.name.in_(gone[start : start + HOLD_AT_ONCE])))
    due = now - timedelta(seconds=grace)
    return [name for name in candidates if name in seen and seen[name] <= due]


HOLD_AT_ONCE = 256  # blobs gc holds at a time (local storage: a descriptor each)


def referenced_blobs(services: Services) -> set[str]:
    """Every blob a file's stream, an upload session or a workbook session's copy uses.

    One statement, so one snapshot even under PostgreSQL's READ COMMITTED: a commit that hands a
    session's pieces to a file, or a blob from one of a file's streams to another, cannot fall
    between two reads and leave the blob in neither.
    """
    no_extents = sa.cast(sa.null(), sa.Text)
    query: sa.CompoundSelect = sa.union_all(
        sa.select(UploadPiece.blob, no_extents),
        sa.select(File.blob, File.extents),
        sa.select(AlternateStream.blob, AlternateStream.extents),
        sa.select(WorkbookSession.blob, no_extents).where(WorkbookSession.blob.is_not(None)),
    )
    referenced = set()
    with services.db.read() as s:
        for blob, extents in s.execute(query):
            referenced.add(blob)
            if extents is not None:
                referenced |= Extents.stored(blob, 0, extents).blobs
    return referenced


class Sweeper:
    """Runs `collect` every `interval` seconds in a daemon thread, each time `leads()` says this process is the
    one to (a server's workers: leader.Leader); `report` (metrics) hears how each sweep ended: what it deleted
    (Collected), or the Interrupted that ended it partway, which says what it had deleted by then."""

    def __init__(
        self,
        services: Services,
        interval: float,
        report: Callable[[Collected | Interrupted], None] | None = None,
        leads: Callable[[], bool] = lambda: True,
    ):
        self._services, self._interval, self._report, self._leads = services, interval, report, leads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wopihost-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread, once a sweep under way has finished: none of its transactions outlives the call."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._leads():
                continue
            outcome: Collected | Interrupted
            try:
                outcome = collect(self._services)
                if any(vars(outcome).values()):
                    log.info("swept %s", outcome)
            except Interrupted as exc:  # collect's every failure: it must not end the thread; the next sweep goes on
                outcome = exc
                log.error("%s; the next sweep takes the rest", exc, exc_info=exc)
            if self._report is not None:
                self._report(outcome)
