"""Reading a Graph request's JSON body: bounded however it is sent, an object, or a clear 400."""

from __future__ import annotations

import json
from typing import Any

from ..body import request_body
from .errors import GraphError

MAX_JSON = 1 << 20


def json_body(optional: bool = False) -> dict:
    raw = request_body().read(MAX_JSON + 1)  # a chunked body declares no length: read no more than allowed
    if len(raw) > MAX_JSON:
        raise GraphError(413, "requestSizeExceeded", f"a JSON body may have at most {MAX_JSON} bytes")
    if not raw.strip():
        if optional:
            return {}
        raise GraphError(400, "invalidRequest", "a JSON body is required")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise GraphError(400, "invalidRequest", "the body is not valid JSON") from None
    return json_object(value, "the body")


def json_object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise GraphError(400, "invalidRequest", f"{what} must be a JSON object")
    return value
