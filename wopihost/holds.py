"""Writers' holds on the new objects of an object store, as rows of the database with a lease (issue 16).

A writer holds the new name its object will have before the object can become visible, in a transaction of
its own, committed at once: gc on any node lists objects before it asks which are held, so it finds the hold
of any object it listed. The writer deletes the row once its own transaction has recorded the blob. One that
was killed leaves its row behind, live until its lease ends; `sweep` then deletes it. The database is already
the one authority that every node shares (locks, sessions, tokens); marker objects in the store did the same
for two more requests per write, where an empty PUT costs ~48 ms on Ceph RGW.

The lease is judged by the app's Clock, as upload sessions' expiry is, so by each node's own clock. An hour,
moved on whenever past half of it, tolerates skew between nodes of up to half an hour, far beyond what NTP
leaves (milliseconds): a gc node whose clock runs ahead still finds a live writer's hold live.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa

from .clock import Clock
from .db import Database
from .models import BlobHold

log = logging.getLogger("wopihost.holds")

LEASE = 3600.0
NAMES_AT_ONCE = 500  # names in one IN list: well within every database's limit on bound parameters


class Holds:
    def __init__(self, db: Database, clock: Clock, lease: float = LEASE):
        self.db, self.clock, self.lease = db, clock, timedelta(seconds=lease)

    def hold(self, name: str) -> Hold:
        """Hold `name`, a new name no other writer holds (committed when this returns)."""
        until = self.clock.now() + self.lease
        with self.db.write() as s:
            s.execute(sa.insert(BlobHold).values(name=name, held_until=until))
        return Hold(self, name, until)

    def live(self, names: Iterable[str]) -> set[str]:
        """The names among `names` whose hold is live."""
        names, now, found = list(dict.fromkeys(names)), self.clock.now(), set[str]()
        with self.db.read() as s:
            for start in range(0, len(names), NAMES_AT_ONCE):
                chunk = names[start : start + NAMES_AT_ONCE]
                query = sa.select(BlobHold.name).where(BlobHold.name.in_(chunk), BlobHold.held_until > now)
                found.update(s.scalars(query))
        return found

    def sweep(self) -> int:
        """Delete the holds whose lease has ended (their writers died); returns how many."""
        with self.db.write() as s:
            dead = s.execute(sa.delete(BlobHold).where(BlobHold.held_until <= self.clock.now()))
            return cast(sa.CursorResult, dead).rowcount


class Hold:
    """One writer's hold, until close()."""

    def __init__(self, holds: Holds, name: str, until: datetime):
        self.holds, self.name, self.until = holds, name, until
        self._closed = False

    def refresh(self, force: bool = False) -> None:
        """Move the lease on when past half of it (or `force`): a long write stays held."""
        now = self.holds.clock.now()
        if not force and self.until - now > self.holds.lease / 2:
            return
        until = now + self.holds.lease
        with self.holds.db.write() as s:
            moved = s.execute(sa.update(BlobHold).where(BlobHold.name == self.name).values(held_until=until))
            # swept after this writer stalled past its lease: its object is not visible yet, so hold it again
            if not cast(sa.CursorResult, moved).rowcount:
                s.execute(sa.insert(BlobHold).values(name=self.name, held_until=until))
        self.until = until

    def close(self) -> None:
        """Release. Never raises: a row the database cannot delete now dies with its lease, and the error of
        the write being abandoned, if any, is the one to report."""
        if self._closed:
            return
        self._closed = True
        try:
            with self.holds.db.write() as s:
                s.execute(sa.delete(BlobHold).where(BlobHold.name == self.name))
        except Exception as exc:
            log.warning("could not release the hold on %s (%s): it ends with its lease", self.name, exc)
