"""The Graph face: Microsoft Graph's drive and driveItem API over the host's folder tree (docs/graph.md).

One blueprint, served under /v1.0 (Graph), /v2.0 and /_api/v2.0 (the OneDrive for Business
paths). A path is read by hand (address.py) rather than routed: item ids and paths share
URL segments and arrive percent-encoded in ways Flask's converters cannot tell apart.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response
from flask import request as current_request  # `request` is this package's module request.py
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import PathConverter

from . import errors, routes

PREFIXES = ("/v1.0", "/v2.0", "/_api/v2.0")
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
# Another version of the API (/beta, /v3.0, /_api/v1.0 ...): a Graph client configured for it is told, in
# Graph's JSON, which ones this host serves, rather than getting the bare 404 of a path that is nobody's.
_OTHER_VERSION = re.compile(r"/(?:_api/)?(?:beta|v\d+(?:\.\d+)*)(?:/|$)")


class _AnyPath(PathConverter):
    """Werkzeug's `path`, newlines included: its `.` stops at one, so a name with %0A in it missed the route
    and got a routing 404 instead of the answer address.py and the domain give any other name. Slashes after the
    version are one (`/v1.0//me/drive`: msgraph-sdk's adapter given a base URL that ends in a slash sends that),
    merged here: the app answers doubled slashes elsewhere 404, not with a redirect."""

    regex = "/*[^/](?s:.)*?"

    def to_python(self, value: str) -> str:
        return value.lstrip("/")


blueprint = Blueprint("graph", __name__)
# no automatic OPTIONS: Graph has no CORS preflight here; a method a resource does not take is a Graph 405 (of
# routes.dispatch, with the resource's Allow), one none takes a Graph 501 (routing_error)
blueprint.add_url_rule("/<graphpath:rest>", view_func=routes.dispatch, methods=METHODS, provide_automatic_options=False)
errors.register(blueprint)


def register(app: Flask) -> None:
    app.url_map.converters["graphpath"] = _AnyPath
    for prefix in PREFIXES:
        app.register_blueprint(blueprint, url_prefix=prefix, name="graph" + prefix.replace("/", "_").replace(".", ""))


def handles(path: str) -> bool:
    """Whether a path is Graph's, for errors raised before any blueprint is chosen (an unknown method ...)."""
    return _served(path) or _OTHER_VERSION.match(path) is not None


def routing_error(error: HTTPException) -> Response:
    if isinstance(error, MethodNotAllowed) and current_request.method not in METHODS:
        # RFC 9110 §15.6.2: a method no resource here takes (OPTIONS, PROPFIND, ...). A 405 must list the target's
        # own methods in Allow, and Werkzeug's lists every method of the blueprint, contradicting the 405 of one
        # of them on the same resource.
        message = f"{current_request.method} is not a method this API takes"
        return errors.response(errors.GraphError(501, "notSupported", message))
    version = _OTHER_VERSION.match(current_request.path)
    if isinstance(error, NotFound) and version is not None and not _served(current_request.path):
        message = f"this host serves the API under {', '.join(PREFIXES)}, not {version.group(0).rstrip('/')}"
        return errors.response(errors.GraphError(404, "itemNotFound", message))
    return errors.http_error(error)


def _served(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)
