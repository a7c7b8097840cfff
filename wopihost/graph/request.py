"""Reading a Graph request's JSON body: bounded however it is sent, an object, or a clear 400."""

from __future__ import annotations

from typing import Any

from ..body import JsonTooLarge, json_request_body
from .errors import GraphError


def json_body(optional: bool = False) -> dict:
    try:
        value = json_request_body()
    except JsonTooLarge as exc:
        raise GraphError(413, "requestSizeExceeded", str(exc)) from None
    except ValueError:
        raise GraphError(400, "invalidRequest", "the body is not valid JSON") from None
    if value == b"":
        if optional:
            return {}
        raise GraphError(400, "invalidRequest", "a JSON body is required")
    return json_object(value, "the body")


def json_object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise GraphError(400, "invalidRequest", f"{what} must be a JSON object")
    return value
