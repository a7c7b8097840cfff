"""gunicorn settings for a production wopihost:  gunicorn -c deploy/gunicorn.conf.py 'wopihost.app:create_app()'

wopihost's worker, threads, hooks and log format are the ones `wopihost serve` uses (wopihost/server.py); what
differs is read here from the environment: WOPIHOST_BIND (127.0.0.1:8080), WEB_CONCURRENCY (workers: 2 per
core), WOPIHOST_FORWARDED_ALLOW_IPS (127.0.0.1) and WOPIHOST_WORKER_TIMEOUT (120 s). Override anything here or
with GUNICORN_CMD_ARGS. Settings of wopihost itself come from WOPIHOST_* variables.
"""

import multiprocessing
import os
import sys

from wopihost.config import ConfigError, gunicorn_forwarded_allow_ips, log_format
from wopihost.server import DEFAULTS, prepare_metrics_dir

globals().update(DEFAULTS)  # with the hooks that look after the workers' metrics
try:
    # The two settings the master reads before the hook that checks the others (server.py, _check_database):
    # a bad one was a traceback, raised here by WOPIHOST_METRICS and by gunicorn's logger (WOPIHOST_LOG_FORMAT).
    log_format()
    prepare_metrics_dir()  # before gunicorn loads the worker class, which imports prometheus_client
    # The proxies gunicorn takes X-Forwarded-Proto from: the one list wopihost takes X-Forwarded-* from too (with
    # WOPIHOST_TRUSTED_PROXIES set), its default the reverse proxy on this machine (see docs/deploy.md).
    forwarded_allow_ips = gunicorn_forwarded_allow_ips()
except ConfigError as exc:
    sys.exit(f"Error: {exc}")


def _whole_number(name: str, default: int, least: int) -> int:
    """A number from the environment; a bad one is refused in one line, as wopihost's own settings are."""
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isascii() or not raw.isdigit() or int(raw) < least:  # isdigit() alone takes '²', int() does not
        sys.exit(f"Error: {name}: not a whole number of at least {least}: {raw!r}")
    return int(raw)


# Empty is unset, as for wopihost's own settings (an env file's `WOPIHOST_BIND=` line): gunicorn reads an empty
# bind as no address at all, and started workers that listened nowhere.
bind = os.environ.get("WOPIHOST_BIND", "").strip() or "127.0.0.1:8080"
workers = _whole_number("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2, 1)  # none would serve nothing
# Large uploads: gthread workers keep heart-beating while a thread streams a body; this is the idle limit.
timeout = _whole_number("WOPIHOST_WORKER_TIMEOUT", 120, 0)  # 0: gunicorn's "never"
