"""The limit on a user's non-persistent workbook sessions (docs/graph.md §10.1): each holds a copy of its workbook
that no quota counts, so one more past WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER gets 429 with Retry-After. It is
counted in the transaction that records a session, so that requests at once, on any workers, cannot pass it
together."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa
import webtest

from wopihost.app import create_app
from wopihost.config import ConfigError, Settings
from wopihost.models import WorkbookSession

from .helpers import (
    GraphClient,
    graph_error,
    postgres_lock_waiters,
    stored_blobs,
    wait_until,
    waits_for_its_turn_to_write,
)
from .test_graph_workbook import WB, HeldClock, create, gone, h, poll, read, upload

LIMIT = 3


@pytest.fixture
def limited_settings(settings_env) -> Settings:
    """The suite's settings, with the limit set as an administrator sets it."""
    return Settings.from_env({**settings_env, "WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER": str(LIMIT)})


@pytest.fixture
def limited(limited_settings, clock):
    """The services of an app with the limit, and a Graph client for a user of it."""
    app = create_app(limited_settings, clock)
    services = app.extensions["wopihost"]
    testapp = webtest.TestApp(app)

    def graph_for(user: str) -> GraphClient:
        issued, drive_id = services.issue_api_token(user, True)
        return GraphClient(testapp, issued.token, drive_id)

    yield services, graph_for
    services.db.dispose()


def too_many(response, retry_after: int) -> None:
    assert response.status_int == 429, response
    assert graph_error(response) == ("activityLimitReached", "tooManyRequestsUncategorized")
    assert "WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER" in response.json["error"]["message"]
    assert response.headers["Retry-After"] == str(retry_after)


def rows(services) -> list[WorkbookSession]:
    with services.db.read() as s:
        return list(s.scalars(sa.select(WorkbookSession)))


def test_the_setting_has_a_default_and_refuses_zero(tmp_path):
    assert Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path)}).max_workbook_sessions_per_user == 16
    with pytest.raises(ConfigError, match="WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER"):
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_MAX_WORKBOOK_SESSIONS_PER_USER": "0"})


def test_one_non_persistent_session_past_the_limit_is_429_and_leaves_nothing(limited, clock):
    services, graph_for = limited
    alice = graph_for("alice")
    upload(alice)
    made = [create(alice, False)]
    clock.advance(seconds=60)
    made += [create(alice, False) for _ in range(LIMIT - 1)]
    held = stored_blobs(services)
    too_many(alice.post_json(f"{WB}/createSession", {"persistChanges": False}), 6 * 60)  # the first expires first
    too_many(alice.post(f"{WB}/createSession"), 6 * 60)  # no body: non-persistent
    assert stored_blobs(services) == held  # no copy made, or none kept
    assert {row.id for row in rows(services)} == set(made)
    # persistent sessions hold no copy and are not limited; another user has a limit of their own
    create(alice, True)
    bob = graph_for("bob")
    upload(bob)
    create(bob, False)


def test_closed_and_expired_sessions_do_not_count(limited, clock):
    services, graph_for = limited
    alice = graph_for("alice")
    upload(alice)
    first, *others = [create(alice, False) for _ in range(LIMIT)]
    assert alice.post(f"{WB}/closeSession", headers=h(first)).status_int == 204
    others.append(create(alice, False))
    too_many(alice.post(f"{WB}/createSession"), 7 * 60)
    clock.advance(minutes=7, seconds=1)  # all expired, not yet swept
    gone(read(alice, "A1", others[0]))
    assert len(rows(services)) == LIMIT
    for _ in range(LIMIT):
        create(alice, False)
    too_many(alice.post(f"{WB}/createSession"), 7 * 60)


def test_the_long_running_creation_is_limited_too(limited):
    services, graph_for = limited
    alice = graph_for("alice")
    upload(alice)
    for _ in range(LIMIT):
        accepted = alice.post_json(f"{WB}/createSession", {"persistChanges": False}, {"Prefer": "respond-async"})
        assert poll(alice, accepted.headers["Location"])["status"] == "succeeded"
    too_many(alice.post_json(f"{WB}/createSession", {"persistChanges": False}, {"Prefer": "respond-async"}), 7 * 60)
    assert len(rows(services)) == LIMIT


class HeldOperation:
    """The app's clock, which holds the thread making an async session at its n-th reading of it until let go."""

    def __init__(self, clock, at: int):
        self.clock, self.at = clock, at
        self.reached, self.go = threading.Event(), threading.Event()

    def now(self):
        if threading.current_thread().name == "wopihost-workbook":
            self.at -= 1
            if self.at == 0:
                self.reached.set()
                assert self.go.wait(30)
        return self.clock.now()

    def __getattr__(self, name):
        return getattr(self.clock, name)


def test_an_operation_accepted_under_the_limit_fails_if_it_is_reached_before_its_session_is_made(limited):
    """The limit is counted again as the session is recorded: sessions made meanwhile (by other requests, on any
    worker) fill it while the operation's thread opens the workbook, and the operation ends failed, its copy
    discarded."""
    services, graph_for = limited
    alice = graph_for("alice")
    file_id = upload(alice)
    blobs = stored_blobs(services)
    held = services.workbooks.clock = HeldOperation(services.workbooks.clock, at=2)  # counted, its copy made
    accepted = alice.post_json(f"{WB}/createSession", {"persistChanges": False}, {"Prefer": "respond-async"})
    assert accepted.status_int == 202
    assert held.reached.wait(30)
    for _ in range(LIMIT):
        services.workbooks.create_session(file_id, "alice", False)
    held.go.set()
    body = poll(alice, accepted.headers["Location"])
    assert body["status"] == "failed" and body["error"]["code"] == "activityLimitReached", body
    assert len(rows(services)) == LIMIT
    assert len(stored_blobs(services) - blobs) == LIMIT


def waits_or_holds(database: str, held: HeldClock, threads: list[threading.Thread]) -> bool:
    """Whether each thread has come to its hold, or waits for another's turn to write (SQLite) or for a row lock
    another holds (PostgreSQL)."""
    waiting = [thread for thread in threads if not held.holds[thread][1].is_set()]
    if database.startswith("sqlite"):
        return all(waits_for_its_turn_to_write(thread) for thread in waiting)
    return postgres_lock_waiters(database, [os.getpid()]) == len(waiting)


def test_requests_at_once_never_pass_the_limit_together(limited, database):
    """Each request is held in the transaction that records its session, as it is about to count the user's
    sessions; every other waits there for it, so each counts what those before it recorded. Counted without
    holding the user (a check, then an insert, under PostgreSQL's READ COMMITTED), each request would count the
    others' uncommitted sessions as none, and all would be made."""
    services, graph_for = limited
    alice = graph_for("alice")
    upload(alice)
    held = services.workbooks.clock = HeldClock(services.workbooks.clock)
    answers: list = []

    def make() -> None:
        answers.append(alice.post_json(f"{WB}/createSession", {"persistChanges": False}))

    threads = [threading.Thread(target=make) for _ in range(2 * LIMIT)]
    for thread in threads:
        held.hold(thread, at=3)  # the pre-check's reading, the session's times, then the count's
        thread.start()
    assert wait_until(lambda: any(held.holds[t][1].is_set() for t in threads), timeout=30)
    assert wait_until(lambda: waits_or_holds(database, held, threads), timeout=30)
    for thread in threads:
        held.let_go(thread)
    for thread in threads:
        thread.join(60)
    assert sorted(answer.status_int for answer in answers) == [201] * LIMIT + [429] * LIMIT, answers
    assert len(rows(services)) == LIMIT
