"""The Flask application. gunicorn serves `wopihost.app:create_app()`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import NullSession, SessionInterface
from werkzeug.exceptions import HTTPException

from . import __version__, graph, hostpage, requesturl, sharepage
from .body import drain
from .clock import Clock
from .config import ConfigError, Settings
from .doctor import instance_fingerprint
from .errors import WopiError, WopiResponse, header_safe, with_headers_of
from .faults import InsufficientStorage, Unavailable
from .gc import Sweeper
from .metrics import Metrics, Observer, name_request, serve_separately
from .recording import Recorder
from .services import Services
from .wopi import blueprint as wopi_blueprint

log = logging.getLogger("wopihost")
SERVER_VERSION = f"wopihost/{__version__}"


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON responses, compact and in the order the handler built them, with one encoder for every
    response: Flask's own makes a new encoder for each."""

    sort_keys = False

    def __init__(self, app: Flask):
        super().__init__(app)
        self._encoder = json.JSONEncoder(separators=(",", ":"), default=self.default)

    def response(self, *args, **kwargs) -> Response:
        body = self._encoder.encode(self._prepare_response_obj(args, kwargs))
        # the app's response_class is Flask's Response (WopiResponse), typed on the provider as Werkzeug's
        return cast(Response, self._app.response_class(body + "\n", mimetype=self.mimetype))


class NoSessions(SessionInterface):
    """wopihost keeps no Flask session (credentials are tokens). Flask would otherwise open one for every
    request, and, having no secret key, make a new empty one: 1% of a download's CPU."""

    null = NullSession()  # raises on any change: shared by every request

    def open_session(self, app, request) -> NullSession:
        return self.null

    def save_session(self, app, session, response) -> None:  # never called: the session is a null one
        pass


class App(Flask):
    json_provider_class = JsonProvider
    session_interface = NoSessions()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}
        self._started_in: int | None = None  # the process that ran start()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Flask asks whether the view and each hook is a coroutine function on every request (three
        # inspections per request); what a function is does not change, so each is asked once.
        known = self._sync.get(func)
        if known is None:
            known = self._sync[func] = super().ensure_sync(func)
        return known

    def start(self, sweeps: Callable[[], bool] = lambda: True) -> App:
        """Start the app's work in the background of this process: the sweep of what dead processes left
        half-written, the periodic garbage collection (each time `sweeps()` says this process is the one to:
        under gunicorn, one worker of the server, wopihost/leader.py), the metrics' own listener
        (WOPIHOST_METRICS_BIND).

        create_app starts nothing, so that gunicorn's master can build the app once, before it forks the
        workers, which then share its memory (wopihost/server.py): a thread, or a connection the workers would
        share, does not belong in the master. Each process that serves the app calls this once, after any
        fork (gunicorn's workers do: wopihost/worker.py); a second call in the same process does nothing."""
        if self._started_in == os.getpid():
            return self
        self._started_in = os.getpid()
        services: Services = self.extensions["wopihost"]
        try:
            services.blobs.sweep_tmp()
        except Exception as exc:
            # Housekeeping, which on S3 asks the database which uploads are held: a database not reachable (or
            # not migrated) yet must not keep the app from serving, to answer 503 and /healthz; later sweeps
            # catch up.
            log.warning("could not sweep the partial writes of dead processes at start: %s", exc)
        metrics: Metrics | None = self.extensions.get("wopihost.metrics")
        settings = services.settings
        if settings.metrics_bind is not None and metrics is not None:
            host, port = settings.metrics_bind
            try:
                self.extensions["wopihost.metrics_server"] = serve_separately(metrics, host, port)
            except OSError as exc:
                raise ConfigError(
                    f"WOPIHOST_METRICS_BIND: cannot listen on {host}:{port}: {exc.strerror or exc}"
                ) from None
        if settings.sweep_interval > 0:
            self.extensions["wopihost.sweeper"] = Sweeper(
                services, settings.sweep_interval, metrics.sweep_done if metrics else None, sweeps
            ).start()
        return self


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> App:
    """The application, built: nothing started, no connection made (see App.start)."""
    services = Services.create(settings or Settings.from_env(), clock)
    app = App("wopihost")
    # Werkzeug would look, on every request, for another rule of the endpoint whose defaults make the URL a
    # redirect; no two of our rules can (their defaults differ), and the search cost 5% of a CheckFileInfo.
    app.url_map.redirect_defaults = False
    # nor answer a path with doubled slashes with its own redirect: a 308 that would repeat a share link's id, a
    # launch ticket or an access token in Location, cacheable and without the pages' headers (each face's 404)
    app.url_map.merge_slashes = False
    metrics = _metrics(app, services)
    app.response_class = WopiResponse
    app.extensions["wopihost"] = services
    app.register_blueprint(wopi_blueprint)
    graph.register(app)
    app.register_blueprint(sharepage.blueprint)
    app.register_blueprint(hostpage.blueprint)
    app.add_url_rule("/healthz", view_func=healthz)
    app.register_error_handler(WopiError, _wopi_error)
    app.register_error_handler(InsufficientStorage, _insufficient_storage)
    app.register_error_handler(Unavailable, _unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_server_headers)
    app.teardown_request(name_request)
    served = app.wsgi_app
    if services.settings.record_dir is not None:  # inside requesturl's layers: it sees the URL the app sees
        served = app.extensions["wopihost.recorder"] = Recorder(served, services.settings)
    app.wsgi_app = requesturl.wrap(  # type: ignore[method-assign]  # Flask's documented way to add middleware
        served, services.settings.public_url, services.settings.trusted_proxies, services.settings.forwarded_allow_ips
    )
    if metrics is not None:
        app.wsgi_app = Observer(app.wsgi_app, metrics)  # type: ignore[method-assign]  # likewise
    return app


def _metrics(app: App, services: Services) -> Metrics | None:
    """The app's metrics, served at /metrics or, with WOPIHOST_METRICS_BIND, on their own address (App.start)."""
    settings = services.settings
    if not settings.metrics:
        return None
    metrics = app.extensions["wopihost.metrics"] = Metrics(services)
    if settings.metrics_bind is None:
        app.add_url_rule("/metrics", "metrics", metrics.response)
    return metrics


def _error_response(
    status: int, reason: str, headers: dict[str, str] | None = None, body: dict | None = None
) -> Response:
    response = WopiResponse(
        json.dumps(body) if body is not None else b"",
        status=status,
        mimetype="application/json" if body is not None else None,
    )
    response.headers.update(headers or {})
    response.headers["X-WOPI-FailureReason"] = header_safe(reason)
    drain(request.environ, request.stream)
    return response


def _wopi_error(error: WopiError) -> Response:
    log.info("%s %s -> %s: %s", request.method, request.path, error.status, error.reason)
    return _error_response(error.status, error.reason, error.headers, error.body)


def _insufficient_storage(error: InsufficientStorage) -> Response:
    log.warning("%s %s -> 507: %s", request.method, request.path, error)
    return _error_response(507, f"{error}: nothing was stored")


def _unavailable(error: Unavailable) -> Response:
    log.warning("%s %s -> 503: %s", request.method, request.path, error)
    return _error_response(503, str(error), {"Retry-After": str(error.retry_after)})


def _http_error(error: HTTPException) -> Response:
    # Routing errors (404, 405), Range errors (416), a client that hung up mid-body (400) ...
    if graph.handles(request.path):  # no Graph route matched: still Graph's answer, in its JSON
        return graph.routing_error(error)
    for pages in (sharepage, hostpage):  # the pages a browser opens: a page that says what went wrong
        if pages.handles(request.path):
            return pages.http_error(error)
    return with_headers_of(_error_response(error.code or 500, error.description or error.name), error)


def _unexpected_error(error: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.path)
    response = _error_response(500, "internal server error")
    response.headers["X-WOPI-ServerError"] = "internal server error"
    return response


def _server_headers(response: Response) -> Response:
    response.headers["X-WOPI-ServerVersion"] = SERVER_VERSION
    return response


def healthz() -> Response:
    """For load balancers and `wopihost doctor`: 200 when the database answers and storage takes writes."""
    services: Services = current_app.extensions["wopihost"]
    checks = {}
    try:
        with services.db.read() as s:
            s.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not crash: this endpoint exists to say what is wrong
        log.warning("health check: database: %s", exc)
        checks["database"] = "unreachable"
    checks["storage"] = services.blobs.health()
    if checks["storage"] != "ok":
        log.warning("health check: storage: %s", checks["storage"])
    healthy = all(value == "ok" for value in checks.values())
    checks["instance"] = instance_fingerprint(services.settings.secret_key)
    return Response(
        json.dumps(checks),
        status=200 if healthy else 503,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )
