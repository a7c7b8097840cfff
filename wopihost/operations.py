"""What a request asked for, in names from a fixed set: the operation (for metrics and logs) and the file it
names (for logs).

Metric labels must stay few whatever clients send, so an operation is never a path, an id or a header's raw
value: WOPI's are the names of the handlers its dispatch table chose (CheckFileInfo, GetFile, Lock ...), Graph's
its method and the kind of resource, anything else the Flask endpoint, and a request nothing routed is
`unmatched`.
"""

from __future__ import annotations

from flask import Request

from .graph import METHODS as GRAPH_METHODS
from .graph.address import parse_item, split_drive
from .graph.describe import DOWNLOADS
from .graph.errors import GraphError
from .graph.uploads import UPLOADS
from .wopi import OPERATIONS

UNMATCHED = "unmatched"  # no route: 404, or 405 for a method nothing serves
UNSUPPORTED = "unsupported"  # a WOPI endpoint, with an override (or none) it does not serve


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# (method, WOPI endpoint, X-WOPI-Override) -> the operation's name, e.g. ("GET", "file", None) -> CheckFileInfo
_WOPI = {key: _camel(handler.__name__) for key, handler in OPERATIONS.items()}
_WOPI_FILES = ("file", "contents", "file/ancestry", "file/ecosystem_pointer")


def describe(request: Request) -> tuple[str, str | None]:
    """(operation, file id or None) of a request Flask has routed. The id is as the client wrote it: the access
    log redacts it, then cuts it short (wopihost/logs.py)."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED, None
    args, endpoint = request.view_args or {}, rule.endpoint
    if endpoint == "wopi.dispatch":
        return _wopi(request.environ, args["endpoint"]), (args["item_id"] if args["endpoint"] in _WOPI_FILES else None)
    if endpoint.startswith("graph") and "rest" in args:
        return _graph(request.method, args["rest"])
    return endpoint, args.get("file_id") or None


def _wopi(environ: dict, endpoint: str) -> str:
    method, override = environ.get("REQUEST_METHOD", ""), None
    if method == "POST":
        override = (environ.get("HTTP_X_WOPI_OVERRIDE") or "").strip().upper() or None
    name = _WOPI.get((method, endpoint, override), UNSUPPORTED)
    if name == "Lock" and "HTTP_X_WOPI_OLDLOCK" in environ:
        return "UnlockAndRelock"  # the same handler, by WOPI's own rule
    return name


def _graph(method: str, rest: str) -> tuple[str, str | None]:
    """`graph GET content`, `graph PUT uploadSession` ...: the method and what kind of resource the path
    names, read as Graph's dispatch reads it (wopihost/graph/routes.py)."""
    method = method if method in GRAPH_METHODS else "other"
    head = rest.partition("/")[0]
    if head in (UPLOADS, DOWNLOADS):
        return f"graph {method} {'uploadSession' if head == UPLOADS else 'download'}", None
    if head == "shares":
        return f"graph {method} share", None
    if rest in ("me/drives", "drives"):
        return f"graph {method} drives", None
    try:
        _, item = split_drive(rest)
        if not item:
            return f"graph {method} drive", None
        ref = parse_item(item)
    except GraphError:
        return f"graph {method} unknown", None
    return f"graph {method} {ref.action or 'item'}", ref.item_id or None
