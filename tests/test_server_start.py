"""How a server starts: gunicorn's master checks the database, then builds the application once, starting
nothing and keeping nothing open; each worker forked from it starts the application's background work."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import psutil
import pytest
from gunicorn.arbiter import Arbiter

from wopihost.app import App, create_app
from wopihost.config import Settings
from wopihost.server import DEFAULTS, WopiHostServer

from .helpers import abandoned_partial_write


def environment(database: str, data_dir: Path) -> dict[str, str]:
    return {
        "WOPIHOST_DATA_DIR": str(data_dir),
        "WOPIHOST_DATABASE_URL": database,
        "WOPIHOST_SECRET_KEY": "start-secret" * 3,
        "WOPIHOST_SWEEP_INTERVAL": "3600",  # a sweeper to start, which must start only in a serving process
        "WOPIHOST_METRICS": "off",  # prometheus_client's mode is the process's, chosen once: not this test's to set
    }


def held_open(under: Path) -> list[str]:
    """What this process holds open under `under`."""
    return [f.path for f in psutil.Process().open_files() if Path(f.path).is_relative_to(under)]


def new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before]


def test_create_app_starts_nothing_and_start_starts_it_once_per_process(database, tmp_path):
    before = set(threading.enumerate())
    app = create_app(Settings.from_env(environment(database, tmp_path / "data")))
    try:
        partial = abandoned_partial_write(app.extensions["wopihost"].blobs.tmp)
        assert new_threads(before) == [] and held_open(tmp_path) == []
        assert partial.exists()  # swept by the process that serves, not by the one that builds
        assert app.start() is app
        assert not partial.exists()
        assert new_threads(before) == ["wopihost-sweeper"]
        sweeper = app.extensions["wopihost.sweeper"]
        app.start()  # again in the same process: nothing more
        assert new_threads(before) == ["wopihost-sweeper"] and app.extensions["wopihost.sweeper"] is sweeper
    finally:
        if "wopihost.sweeper" in app.extensions:
            app.extensions["wopihost.sweeper"].stop()
        app.extensions["wopihost"].db.dispose()


@pytest.fixture
def master(database, tmp_path, monkeypatch):
    """gunicorn's arbiter as `wopihost serve` configures it, set up in this process and not run: no listener,
    no fork."""
    for name, value in environment(database, tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    arbiter = Arbiter(WopiHostServer({**DEFAULTS, "bind": "127.0.0.1:0", "workers": 2}))
    yield arbiter
    built = arbiter.app.callable
    if built is not None:
        built.extensions["wopihost"].db.dispose()


def test_the_master_builds_the_application_once_its_checks_have_passed(master, tmp_path):
    # gunicorn's own preload_app would build it while setting up, before the on_starting checks
    assert master.app.callable is None
    before = set(threading.enumerate())
    master.cfg.on_starting(master)
    app = master.app.callable
    assert isinstance(app, App) and master.app.wsgi() is app  # what each worker takes (Worker.load_wsgi)
    # a thread or a connection of the master's would be lost, or shared, in the workers it forks
    assert new_threads(before) == [] and held_open(tmp_path) == []
    try:
        master.cfg.pre_fork(master, None)
        assert gc.get_freeze_count() > 0  # the workers' collections leave the master's objects alone
    finally:
        gc.unfreeze()


def test_a_master_whose_checks_fail_builds_nothing(master, tmp_path, monkeypatch):
    monkeypatch.setenv("WOPIHOST_DATABASE_URL", "postgres://wopi@127.0.0.1/wopihost")
    with pytest.raises(RuntimeError, match="WOPIHOST_DATABASE_URL: postgres:// is not a scheme"):
        master.cfg.on_starting(master)
    assert master.app.callable is None


def test_a_request_is_not_logged_before_it_is_served():
    """gunicorn's default pre_request hook logs each request's method and path at debug level, a line the access
    log writes anyway; ours leaves the worker's log alone."""
    from gunicorn.config import PreRequest

    class Worker:
        @property
        def log(self):
            raise AssertionError("the pre_request hook logged")

    class Request:
        method, path = "GET", "/wopi/files/x"

    with pytest.raises(AssertionError):
        PreRequest.default(Worker(), Request())  # the test can tell
    DEFAULTS["pre_request"](Worker(), Request())
