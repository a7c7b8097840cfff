"""Check-then-act under real concurrency: threads on one app, each request in its own transaction, on SQLite
and on PostgreSQL's READ COMMITTED. (Races between gunicorn workers are in tests/e2e/test_hardening_e2e.py.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from wopihost.models import Drive, User

from .cspp_helpers import create_session, update_session


def test_first_sightings_of_a_user_racing_make_one_user_and_one_drive(services, make_file):
    file = make_file()
    start = threading.Barrier(8)

    def issue(_):
        start.wait()
        return services.issue_token(file.id, "newcomer", True)

    with ThreadPoolExecutor(8) as pool:
        issued = list(pool.map(issue, range(8)))
    assert len({i.token for i in issued}) == 8
    with services.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User).where(User.id == "newcomer")) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(Drive).where(Drive.owner_id == "newcomer")) == 1


def test_sweeping_never_takes_the_pieces_of_a_session_being_committed(wopi, services, clock, settings):
    token = create_session(wopi)
    assert update_session(wopi, token, 0, b"piece").status_int == 200
    with services.db.read() as s:
        (piece,) = services.sessions.stream(s, token).blobs
    with services.db.write() as s:  # what a commit does: hold the live session, hand its pieces on, delete it
        services.sessions.get(s, token, wopi.file_id)
        clock.advance(minutes=31)  # meanwhile the session's time runs out and a sweep starts
        sweeper = threading.Thread(target=services.sessions.sweep)
        sweeper.start()
        time.sleep(0.5)  # the sweep waits for the committing transaction
        services.sessions.delete_in(s, token)  # the pieces now belong to the file
    sweeper.join()
    assert services.blobs.path(piece).exists()
