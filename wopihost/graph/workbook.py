"""Graph's workbook API on an item (docs/graph.md §10): sessions, worksheets and ranges.

`workbook-session-id` names the session a call runs in (header names are matched whatever their case);
without it a call reads and writes the file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Response, jsonify, request

from ..errors import WopiError
from ..errors import WopiResponse as NoContent
from ..models import File
from ..xlsx import Call, WorkbookError
from .address import encoded
from .errors import GraphError, not_allowed
from .request import json_body

if TYPE_CHECKING:
    from ..files import Admit

# worksheets/{id|name} or worksheets('{id|name}'); a name may hold "(": Excel names a copied sheet "Sheet1 (2)"
_SHEET = r"(?:/([^/]+)|\('((?:[^']|'')*)'\))"
_ODATA_STRING = re.compile(r"(?:[^']|'')*")  # the inside of an OData string literal: each ' doubled
_ROUTES = [
    ("POST", re.compile(r"^createSession$"), "create_session"),
    ("POST", re.compile(r"^refreshSession$"), "refresh_session"),
    ("POST", re.compile(r"^closeSession$"), "close_session"),
    ("GET", re.compile(r"^operations/([^/]+)$"), "operation"),
    ("GET", re.compile(r"^sessionInfoResource\(key='([^']*)'\)$"), "session_info"),
    ("GET", re.compile(r"^worksheets$"), "worksheets"),
    ("POST", re.compile(r"^worksheets(?:/add)?$"), "add_worksheet"),
    ("GET", re.compile(rf"^worksheets{_SHEET}$"), "worksheet"),
    # the address is all that is left up to the URL's end, as it came (_address reads it)
    ("GET", re.compile(rf"^worksheets{_SHEET}/range\(address='(.*)'\)$"), "get_range"),
    ("PATCH", re.compile(rf"^worksheets{_SHEET}/range\(address='(.*)'\)$"), "patch_range"),
    ("GET", re.compile(rf"^worksheets{_SHEET}/usedRange(?:\(valuesOnly=(true|false)\))?$"), "used_range"),
]


def workbook(call, file: File, rest: str, admit: Admit) -> Response:
    """Route `…/workbook/{rest}` on the workbook `file` for the authenticated `call` (routes.Call); `admit` is
    what a write to the file asks once its bytes are in, as every Graph write (the quota, the caller's reach, the
    token still live), and what a new session asks as it is recorded."""
    method = "GET" if request.method == "HEAD" else request.method
    known = []  # the methods `rest` takes, for a 405's Allow
    for verb, pattern, name in _ROUTES:
        match = pattern.match(rest)
        if match is None:
            continue
        known.append(verb)
        if verb == method:
            try:
                return _HANDLERS[name](_Context(call, file, rest, admit), *match.groups())
            except WorkbookError as exc:
                raise GraphError(exc.status, exc.code, str(exc), exc.inner) from None
    if known:
        raise not_allowed(known, f"{request.method} is not supported on workbook/{rest[:80]}")
    raise GraphError(400, "invalidRequest", f"unsupported workbook request: workbook/{rest[:80]}")


class _Context:
    def __init__(self, call, file: File, rest: str, admit: Admit):
        self.call, self.file, self.rest, self.admit = call, file, rest, admit
        self.workbooks = call.services.workbooks
        self.user = call.grant.user_id
        self.session_id = (request.headers.get("workbook-session-id") or "").strip() or None

    def url(self, suffix: str) -> str:
        """An absolute URL of this item's workbook, as the request addressed the item: its path less what
        follows `workbook/` (a folder on the way may be named "workbook"), encoded again (a name may hold # or %)."""
        base = request.path[: len(request.path) - len(self.rest)]
        return f"{self.call.services.settings.public_url}{encoded(base)}{suffix}"

    def read(self, call: Call) -> Any:
        return self.workbooks.read(self.file.id, self.session_id, self.user, call)

    def write(self, call: Call) -> Any:
        if self.session_id is None or self._persistent():
            self.call.require_write()
        try:
            return self.workbooks.write(self.file.id, self.session_id, self.user, call, self.admit)
        except WopiError as exc:
            if exc.code == "resourceLocked":  # someone else's WOPI or coauth lock: Excel's conflict
                raise GraphError(
                    409, "conflict", "the workbook is locked by another editor; nothing was changed", "accessConflict"
                ) from None
            raise

    def _persistent(self) -> bool:
        return self.workbooks.session_info(self.session_id, self.file.id, self.user).persist


def _session_json(session_id: str, persist: bool) -> dict:
    return {"id": session_id, "persistChanges": persist}


def create_session(context: _Context) -> Response:
    body = _json()
    persist = body.get("persistChanges", False)
    if not isinstance(persist, bool):
        raise GraphError(400, "invalidRequest", "persistChanges must be true or false")
    if persist:
        context.call.require_write()
    if "respond-async" in (request.headers.get("Prefer") or "").lower():
        operation = context.workbooks.start_create(context.file.id, context.user, persist, context.admit)
        response = jsonify({})
        response.status_code = 202
        response.headers["Location"] = context.url(f"operations/{operation}")
        return response
    # the caller's reach and token asked again as the session is recorded, as a write to the file asks them
    session = context.workbooks.create_session(context.file.id, context.user, persist, context.admit)
    response = jsonify(_session_json(session.id, session.persist))
    response.status_code = 201
    return response


def refresh_session(context: _Context) -> Response:
    context.workbooks.refresh(_required_session(context), context.file.id, context.user)
    return NoContent(status=204)


def close_session(context: _Context) -> Response:
    context.workbooks.close(_required_session(context), context.file.id, context.user)
    return NoContent(status=204)


def operation(context: _Context, operation_id: str) -> Response:
    row = context.workbooks.operation(operation_id, context.file.id, context.user)
    body: dict[str, Any] = {"id": row.id, "status": row.status}
    if row.status == "succeeded":
        body["resourceLocation"] = context.url(f"sessionInfoResource(key='{row.session_id}')")
    if row.status == "failed" and row.error:
        body["error"] = json.loads(row.error)
    return jsonify(body)


def session_info(context: _Context, key: str) -> Response:
    session = context.workbooks.session_info(key, context.file.id, context.user)
    return jsonify(_session_json(session.id, session.persist))


def worksheets(context: _Context) -> Response:
    return jsonify({"value": context.read(Call("worksheets"))})


def add_worksheet(context: _Context) -> Response:
    name = _json().get("name")
    if name is not None and not isinstance(name, str):
        raise GraphError(400, "invalidRequest", "name must be a string")
    response = jsonify(context.write(Call("add_worksheet", (name,))))
    response.status_code = 201
    return response


def worksheet(context: _Context, key: str | None, quoted: str | None) -> Response:
    sheet_key = _key(key, quoted)
    return jsonify(context.read(Call("worksheet", (sheet_key,))))


def get_range(context: _Context, key: str | None, quoted: str | None, address: str) -> Response:
    sheet_key, where = _key(key, quoted), _address(address)
    return jsonify(context.read(Call("range", (sheet_key, where))))


def patch_range(context: _Context, key: str | None, quoted: str | None, address: str) -> Response:
    body = _json()
    sheet_key, where = _key(key, quoted), _address(address)
    return jsonify(
        context.write(
            Call(
                "patch",
                (sheet_key, where),
                {
                    "values": body.get("values"),
                    "formulas": body.get("formulas"),
                    "number_format": body.get("numberFormat"),
                },
            )
        )
    )


def used_range(context: _Context, key: str | None, quoted: str | None, values_only: str | None) -> Response:
    sheet_key = _key(key, quoted)
    return jsonify(context.read(Call("used_range", (sheet_key, values_only == "true"))))


_HANDLERS: dict[str, Callable[..., Response]] = {
    "create_session": create_session,
    "refresh_session": refresh_session,
    "close_session": close_session,
    "operation": operation,
    "session_info": session_info,
    "worksheets": worksheets,
    "add_worksheet": add_worksheet,
    "worksheet": worksheet,
    "get_range": get_range,
    "patch_range": patch_range,
    "used_range": used_range,
}


def _key(plain: str | None, quoted: str | None) -> str:
    if plain is not None:
        return plain
    assert quoted is not None  # the pattern matches one or the other
    return quoted.replace("''", "'")


def _address(text: str) -> str:
    """The address in range(address='...'). OData doubles each ' in a string literal ('''My data''!A1' names
    'My data'!A1); msgraph-sdk, and any client that puts the address in the URL as it is given it, does not. Its
    ''My data'!A1' leaves a quote that no other one pairs, which an OData literal never does: such an address is
    taken as it came, for parse_address to read its sheet's quotes as Excel writes them."""
    return text.replace("''", "'") if _ODATA_STRING.fullmatch(text) else text


def _required_session(context: _Context) -> str:
    if context.session_id is None:
        raise GraphError(400, "invalidRequest", "the workbook-session-id header is required")
    return context.session_id


def _json() -> dict:
    """The request's JSON object; none at all (refresh and close send no body, createSession may not) is {}."""
    return json_body(optional=True)
