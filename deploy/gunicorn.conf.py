"""gunicorn settings for a production wopihost:  gunicorn -c deploy/gunicorn.conf.py 'wopihost.app:create_app()'

The defaults are the ones `wopihost serve` uses (wopihost/server.py); override here or
with GUNICORN_CMD_ARGS. Settings of wopihost itself come from WOPIHOST_* variables.
"""

import multiprocessing
import os

from wopihost.server import DEFAULTS, prepare_metrics_dir

globals().update(DEFAULTS)  # with the hooks that look after the workers' metrics
prepare_metrics_dir()  # before gunicorn loads the worker class, which imports prometheus_client

bind = os.environ.get("WOPIHOST_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
# gunicorn itself trusts X-Forwarded-* only from the reverse proxy on this machine; wopihost reads them
# only when WOPIHOST_TRUSTED_PROXIES is set (see docs/deploy.md).
forwarded_allow_ips = os.environ.get("WOPIHOST_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Large uploads: gthread workers keep heart-beating while a thread streams a body; this is the idle limit.
timeout = int(os.environ.get("WOPIHOST_WORKER_TIMEOUT", "120"))
