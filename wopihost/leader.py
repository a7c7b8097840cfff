"""Which one of a server's workers sweeps (gc.Sweeper) for the whole server.

Were every worker to sweep every WOPIHOST_SWEEP_INTERVAL, a server of N workers would list every blob and read
every reference N times an interval, and each worker, by running the sweep's code (the ORM, SQL compilation),
would write to the master's pages and so copy them for good: some 4 MiB a worker (docs/benchmarks.md). One
worker sweeps: the first to ask takes a lock and keeps it until it exits, however it exits; the next worker to
ask then takes over, within an interval.

The lock is a POSIX record lock (`fcntl.lockf`) on a file the master opens, before it forks, for every worker:
a record lock belongs to the process that takes it, not to the descriptor it is taken through, so each worker
asks through the descriptor it inherited, and the kernel drops the lock when that process ends. The master
never asks: it would keep the lock, and no worker would sweep.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import tempfile

log = logging.getLogger("wopihost.leader")


class Leader:
    def __init__(self) -> None:
        # Nameless (unlinked at once): nothing to clean up, and nothing else can open it, which matters because
        # a process that closes any descriptor of the file loses its record locks on it.
        self._file = tempfile.TemporaryFile()

    def mine(self) -> bool:
        """Whether this process leads: it held the lock already, or has just taken it, free."""
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):  # not held by another: this node sweeps no more
                log.warning("cannot take the sweep's lock, so this worker does not sweep: %s", exc)
            return False
        return True
