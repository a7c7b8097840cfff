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
    with services.db.read() as s:
        referenced = set(s.scalars(sa.select(File.blob)))
        referenced.update(s.scalars(sa.select(AlternateStream.blob)))
        referenced.update(s.scalars(sa.select(UploadPiece.blob)))
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
