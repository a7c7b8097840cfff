"""Running the app under gunicorn: the options `wopihost serve` uses and deploy/gunicorn.conf.py shares."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from .logs import ACCESS_LOG_FORMAT

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
    "accesslog": "-",
    "access_log_format": ACCESS_LOG_FORMAT,
    "errorlog": "-",
    "logger_class": "wopihost.logs.GunicornLogger",  # redacts tokens from every line, whatever quotes them
    "control_socket_disable": True,  # gunicorn 27 otherwise opens ~/.gunicorn/gunicorn.ctl
}


class WopiHostServer(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app()
