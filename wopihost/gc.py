"""Garbage collection: expired upload and workbook sessions, blobs nothing refers to, partial writes of dead
processes, expired and revoked access-token rows.

Safe to run at any time, from any number of processes, with any grace period: a blob
or partial write is only deleted once nothing in the database refers to it, no live
writer holds it (storage.Blob), and it is older than the grace period.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .extents import Extents
from .models import AlternateStream, File, UploadPiece, WorkbookSession
from .services import Services

log = logging.getLogger("wopihost.gc")
Track = Callable[[list], Iterable]


@dataclass(frozen=True)
class Collected:
    sessions: int
    blobs: int
    partial_writes: int
    tokens: int


def collect(services: Services, grace: float = 3600, track: Track = iter) -> Collected:
    """`track` wraps the list of blob directories as they are scanned (the command's progress bar)."""
    sessions = services.sessions.sweep() + services.workbooks.sweep()
    with services.db.write() as s:
        tokens = services.tokens.purge(s)
    return Collected(sessions, _orphaned_blobs(services, grace, track), services.blobs.sweep_tmp(grace), tokens)


def _orphaned_blobs(services: Services, grace: float, track: Track = iter) -> int:
    """Delete blobs older than `grace` that nothing refers to and no live writer holds; returns how many.

    A writer holds its new blob until the transaction that records it is over (storage.Blob). One that let
    go after `referenced` was read has recorded its blob by then, so the references are read again once the
    candidates are held by us, and only what is still unreferenced goes.
    """
    referenced, cutoff = referenced_blobs(services), time.time() - grace
    candidates = []
    for shard in track([entry for entry in os.scandir(services.blobs.root) if entry.is_dir()]):
        for entry in os.scandir(shard.path):
            try:
                if entry.name not in referenced and entry.stat().st_mtime < cutoff:
                    candidates.append(Path(entry.path))
            except FileNotFoundError:
                pass
    deleted = 0
    for start in range(0, len(candidates), HOLD_AT_ONCE):
        with ExitStack() as held:
            unheld = [
                path
                for path in candidates[start : start + HOLD_AT_ONCE]
                if held.enter_context(services.blobs.unheld(path))
            ]
            if not unheld:
                continue
            referenced = referenced_blobs(services)
            for path in unheld:
                if path.name not in referenced:
                    path.unlink(missing_ok=True)
                    deleted += 1
    return deleted


HOLD_AT_ONCE = 256  # descriptors gc holds at a time


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
    """Runs `collect` every `interval` seconds in a daemon thread of each worker process; `report` (metrics)
    hears what each sweep deleted, or None when one failed."""

    def __init__(self, services: Services, interval: float, report: Callable[[Collected | None], None] | None = None):
        self._services, self._interval, self._report = services, interval, report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wopihost-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            done = None
            try:
                done = collect(self._services)
                if any(vars(done).values()):
                    log.info(
                        "swept %s expired upload and workbook sessions, %s orphaned blobs, %s partial writes, "
                        "%s expired or revoked tokens",
                        done.sessions,
                        done.blobs,
                        done.partial_writes,
                        done.tokens,
                    )
            except Exception:  # a failed sweep must not end the thread; the next one retries
                log.exception("garbage collection failed")
            if self._report is not None:
                self._report(done)
