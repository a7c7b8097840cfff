"""Garbage collection: expired upload sessions, blobs nothing refers to, partial writes of dead processes.

Safe to run at any time, from any number of processes: a blob is only deleted once
nothing in the database refers to it *and* it is older than the grace period, so a
blob that a commit has written but not yet recorded is never taken.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .extents import Extents
from .models import AlternateStream, File, UploadPiece
from .services import Services

log = logging.getLogger("wopihost.gc")


@dataclass(frozen=True)
class Collected:
    sessions: int
    blobs: int
    partial_writes: int


def collect(services: Services, grace: float = 3600) -> Collected:
    sessions = services.sessions.sweep()
    referenced = referenced_blobs(services)
    cutoff = time.time() - grace
    blobs = 0
    for shard in os.scandir(services.blobs.root):
        if not shard.is_dir():
            continue
        for entry in os.scandir(shard.path):
            try:
                if entry.name not in referenced and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    blobs += 1
            except FileNotFoundError:
                pass
    return Collected(sessions, blobs, services.blobs.sweep_tmp(grace))


def referenced_blobs(services: Services) -> set[str]:
    """Every blob a file's stream or an upload session uses.

    One statement, so one snapshot even under PostgreSQL's READ COMMITTED: a commit that hands a
    session's pieces to a file, or a blob from one of a file's streams to another, cannot fall
    between two reads and leave the blob in neither.
    """
    no_extents = sa.cast(sa.null(), sa.Text)
    query = sa.union_all(sa.select(UploadPiece.blob, no_extents),
                         sa.select(File.blob, File.extents),
                         sa.select(AlternateStream.blob, AlternateStream.extents))
    referenced = set()
    with services.db.read() as s:
        for blob, extents in s.execute(query):
            referenced.add(blob)
            if extents is not None:
                referenced |= Extents.stored(blob, 0, extents).blobs
    return referenced


class Sweeper:
    """Runs `collect` every `interval` seconds in a daemon thread of each worker process."""

    def __init__(self, services: Services, interval: float):
        self._services, self._interval = services, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wopihost-sweeper", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                done = collect(self._services)
                if done.sessions or done.blobs or done.partial_writes:
                    log.info("swept %s expired upload sessions, %s orphaned blobs, %s partial writes",
                             done.sessions, done.blobs, done.partial_writes)
            except Exception:  # a failed sweep must not end the thread; the next one retries
                log.exception("garbage collection failed")
