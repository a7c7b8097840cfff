"""Running the app under gunicorn: the options `wopihost serve` uses and deploy/gunicorn.conf.py shares."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import cast

from gunicorn.app.base import BaseApplication

from .config import ConfigError, parse_flag, record_dir, setting
from .logs import ACCESS_LOG_FORMAT

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's setting (wopihost/metrics.py)
_metrics_dir: dict[str, object] = {}  # the directory this server start prepared, and whether it made it


def prepare_metrics_dir() -> None:
    """Give the workers one directory for their metrics (prometheus_client's multiprocess mode).

    prometheus_client chooses the mode when it is imported, and gunicorn's master imports the application's
    modules, prometheus_client among them, when it loads the worker class (wopihost/worker.py): so this runs
    first, from `wopihost serve` and from deploy/gunicorn.conf.py as they load their settings. Each start
    gets a new directory (counts start at 0 with the server), removed when the server stops; one given in
    PROMETHEUS_MULTIPROC_DIR is emptied of the last start's files instead. A reload (HUP) keeps it.
    """
    if _metrics_dir or not setting("METRICS", "on", parse_flag):
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was set: metrics would "
            "count each worker on its own"
        )
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ[MULTIPROCESS_DIR] = path = given or tempfile.mkdtemp(prefix="wopihost-metrics-")
    _metrics_dir.update(path=path, made=not given)


def _worker_exited(server, worker) -> None:
    """gunicorn's child_exit hook: a dead worker's counts stay (they are totals), its live gauges go."""
    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client import multiprocess  # not at the top: see prepare_metrics_dir

        multiprocess.mark_process_dead(worker.pid)


def _check_database(server) -> None:
    """gunicorn's on_starting hook: the master refuses to start on a database this code cannot use (named by an
    unusable URL, unreachable, older or newer), once, before any worker is forked, with the line the `wopihost`
    command would give. `wopihost serve` has checked already; this is for gunicorn started with
    deploy/gunicorn.conf.py."""
    import sqlalchemy as sa

    from . import db
    from .clierrors import database_url_problem, explain
    from .config import Settings

    settings = None
    try:
        settings = Settings.from_env()
        problem = database_url_problem(settings.database_url)
        if problem:
            raise RuntimeError(problem)
        engine = sa.create_engine(settings.database_url)
        try:
            db.require_current_schema(engine, settings.database_url)
        finally:
            engine.dispose()
    except RuntimeError:
        raise  # gunicorn prints "Error: <message>" and exits 1
    except Exception as exc:
        message = explain(exc, settings)
        if message is None:
            raise
        raise RuntimeError(message) from None


def _starting(server) -> None:
    """gunicorn's on_starting hook. Once the checks have passed, the master builds the application, and every
    worker it forks serves that one (gunicorn's workers take `server.app.wsgi()`, built once): a worker that
    built its own wrote to, and so copied, some 4 MiB of the master's memory pages. This is gunicorn's
    preload_app, which would build the application before this hook, ahead of the checks. So a reload (HUP)
    starts new workers with the same application, as it already did with the same code: restart to apply
    new settings."""
    _check_database(server)
    _check_metrics_bind()
    _assemble_recording(server, start=True)
    try:
        server.app.wsgi()
    except ConfigError as exc:  # as the checks above: gunicorn's one line, not a traceback
        raise RuntimeError(str(exc)) from None


def _check_metrics_bind() -> None:
    """Each worker listens on WOPIHOST_METRICS_BIND as it starts (SO_REUSEPORT, as all of them do): a port
    another program holds made every worker fail to boot, each with a traceback. Tried once here instead."""
    from .config import Settings

    bind = Settings.from_env().metrics_bind
    if bind is None or not setting("METRICS", "on", parse_flag):
        return
    host, port = bind
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(
                f"WOPIHOST_METRICS_BIND: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None


def _assemble_recording(server, start: bool = False) -> None:
    """With WOPIHOST_RECORD_DIR: the workers' spool into HAR files (wopihost/recording/), when the server stops
    and, for a spool a killed server left behind, when it starts. A recording that cannot be assembled keeps
    its spool for the next start; the server starts and stops anyway."""
    directory = record_dir()
    if directory is None:
        return
    if start:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"WOPIHOST_RECORD_DIR: cannot create {directory}: {exc.strerror or exc}") from None
    from .recording import assemble

    try:
        written = assemble(directory)
    except Exception as exc:
        server.log.error("recording: cannot assemble the recording in %s: %s; its spool is kept", directory, exc)
        return
    if written:
        what = "a recording left behind" if start else "the recording"
        server.log.info("recording: %s written to %s as %d HAR files", what, directory, len(written))


def _before_fork(server, worker) -> None:
    """gunicorn's pre_fork hook, in the master. Every object the master holds by now (the modules it imported
    and the application it built) is frozen: left out of the workers' garbage collections, which would
    otherwise write to, and so copy, every memory page they scan."""
    gc.freeze()


def _before_request(worker, req) -> None:
    """gunicorn's pre_request hook, before each request. gunicorn's own logs every request's method and path at
    debug level: two calls into logging for a line the access log already writes, some 1% of a small
    request's CPU."""


def _server_stopped(server) -> None:
    """gunicorn's on_exit hook."""
    if _metrics_dir.get("made"):
        shutil.rmtree(cast(str, _metrics_dir["path"]), ignore_errors=True)
    _assemble_recording(server)


DEFAULTS = {
    # gunicorn's gthread worker, hardened against slow clients (see wopihost/worker.py): the main loop
    # keeps heart-beating while a thread streams a multi-gigabyte upload, so a long request is not
    # mistaken for a hung worker. A slow client holds a thread only while it sends a body or is sent a
    # response, so threads are many: each costs little while it waits.
    "worker_class": "wopihost.worker.Worker",
    "threads": 64,
    "timeout": 120,
    "graceful_timeout": 30,
    "keepalive": 5,
    # gunicorn's most (its default, 4094, is half nginx's 8k): a Graph path of the 400 characters OneDrive allows,
    # in 4-byte UTF-8 percent-encoded, is some 4,800 bytes, which was a 414 the app never saw
    "limit_request_line": 8190,
    "accesslog": "-",
    "access_log_format": ACCESS_LOG_FORMAT,
    "errorlog": "-",
    "logger_class": "wopihost.logs.GunicornLogger",  # redacts tokens from every line, whatever quotes them
    "control_socket_disable": True,  # gunicorn 27 otherwise opens ~/.gunicorn/gunicorn.ctl
    "on_starting": _starting,
    "pre_fork": _before_fork,
    "pre_request": _before_request,
    "child_exit": _worker_exited,
    "on_exit": _server_stopped,
}


class WopiHostServer(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        prepare_metrics_dir()
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app()
