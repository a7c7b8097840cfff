"""JSON as Newtonsoft.Json shows it to the validator: the object a response body parses to, the token a
path selects (`AncestorsWithRootFirst[-1:].Url`), and the conversions `JToken.Value<T>()` applies.

Values are plain Python JSON values (dict, list, str, int, float, bool, None); an absent token is MISSING,
which is not the same as a JSON null: several checks tell the two apart.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import dotnet


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class JsonReadError(ValueError):
    """Newtonsoft's JsonReaderException: the text is not a JSON object."""


class PathError(ValueError):
    """Newtonsoft's JsonException from SelectToken, e.g. "Path returned multiple tokens."."""


class CastError(TypeError):
    """InvalidCastException: `Value<T>()` on an object or array, or a null where a value type is needed."""


def parse_object(text: str) -> dict:
    """`JObject.Load` with dates left as strings: the first JSON value of the text, which must be an object
    (anything after it is ignored, as JObject.Load does)."""
    start = len(text) - len(text.lstrip(" \t\r\n\ufeff"))
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError) as error:
        raise JsonReadError(str(error)) from None
    if not isinstance(value, dict):
        raise JsonReadError("the JSON value is not an object")
    return value


def token_type(value: Any) -> str:
    """Newtonsoft's JTokenType name of a value."""
    if value is MISSING:
        return "None"
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def null_or_empty(value: Any) -> bool:
    """The validator's IsActualValueNullOrEmpty: absent, null, "", [] or {}."""
    return value is MISSING or value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


# ---------------------------------------------------------------------------------------- paths

_STEP = re.compile(
    r"""
    \.?(?P<name>[^.\[\]]+)                                   # .Name or a leading Name
  | \[\s*(?P<index>-?\d+)\s*\]                               # [3]
  | \[\s*(?P<start>-?\d*)\s*:\s*(?P<end>-?\d*)\s*(?::\s*(?P<step>-?\d*)\s*)?\]   # [1:] [-1:] [::2]
  | \[\s*'(?P<quoted>(?:[^'\\]|\\.)*)'\s*\]                 # ['Name']
  | \[\s*\*\s*\]                                             # [*]
""",
    re.VERBOSE,
)


def _steps(path: str) -> list[tuple]:
    steps: list[tuple] = []
    pos = 0
    if path.startswith("$"):
        pos = 1
    while pos < len(path):
        match = _STEP.match(path, pos)
        if not match or match.end() == pos:
            raise PathError(f"Unexpected character while parsing path: {path[pos : pos + 10]!r}")
        if match.group("name") is not None:
            steps.append(("name", match.group("name").strip()))
        elif match.group("quoted") is not None:
            steps.append(("name", re.sub(r"\\(.)", r"\1", match.group("quoted"))))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        elif match.group("start") is not None:

            def num(text: str | None) -> int | None:
                return int(text) if text not in (None, "") else None

            steps.append(("slice", num(match.group("start")), num(match.group("end")), num(match.group("step"))))
        else:
            steps.append(("all",))
        pos = match.end()
    return steps


def select_token(root: Any, path: str) -> Any:
    """`JToken.SelectToken(path)`: the single token at `path`, MISSING when nothing matches, PathError when
    several do. Supports names, `[n]`, slices `[a:b:c]`, `['name']` and `[*]`."""
    current = [root]
    for step in _steps(path):
        found = []
        for token in current:
            if step[0] == "name":
                if isinstance(token, dict) and step[1] in token:
                    found.append(token[step[1]])
            elif step[0] == "index":
                if isinstance(token, list) and 0 <= step[1] < len(token):
                    found.append(token[step[1]])
            elif step[0] == "slice":
                if isinstance(token, list):
                    if step[3] == 0:
                        raise PathError("Step cannot be zero.")
                    found.extend(token[step[1] : step[2] : step[3]])
            elif isinstance(token, list):
                found.extend(token)
            elif isinstance(token, dict):
                found.extend(token.values())
        current = found
    if len(current) > 1:
        raise PathError("Path returned multiple tokens.")
    return current[0] if current else MISSING


# ----------------------------------------------------------------------------------- conversions


def as_string(value: Any) -> str | None:
    """`Value<string>()`: scalars in their .NET string form, null as None."""
    if value is MISSING:
        return None
    if isinstance(value, (dict, list)):
        raise CastError(f"Cannot cast {token_type(value)} to a string")
    return dotnet.scalar_text(value)


def as_bool(value: Any) -> bool:
    """`Value<bool>()`: a boolean, a number (non-zero is true) or "true"/"false" text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return dotnet.parse_bool(value)
    raise CastError(f"Cannot convert {token_type(value)} to a boolean")


def as_integer(value: Any, bounds: tuple[int, int]) -> int:
    """`Value<int>()` or `Value<long>()`: an integer in range, a float rounded to even, numeric text, or a
    boolean as 1/0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise dotnet.Overflow(f"{value} is out of range")
        number = round(value)  # Python rounds halves to even, as Convert.ToInt32(double) does
    elif isinstance(value, str):
        return dotnet.parse_integer(value, bounds)
    else:
        raise CastError(f"Cannot convert {token_type(value)} to an integer")
    if not bounds[0] <= number <= bounds[1]:
        raise dotnet.Overflow(f"{value} is out of range")
    return number


def strict_equal(a: Any, b: Any) -> bool:
    """`JToken.DeepEquals`: like ==, except that a boolean never equals a number (Python's True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def to_text(value: Any) -> str:
    """A compact JSON rendering for messages."""
    if value is MISSING:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
