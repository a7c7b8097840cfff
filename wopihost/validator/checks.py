"""The validator's checks ("validators") of one response, each giving the messages of what is wrong.

Every response is first checked for a Content-Length that matches its body. A request whose definition lists
no checks must answer 200; one that lists them gets the NoException check in front (the request must have
got a response at all). The messages follow the validator's own wording, so that a failure reads the same
as in Microsoft's tool.

Where the validator would throw instead of reporting (a JSON value of the wrong shape, a stream missing from
a response), the check reports the problem as a failure of that request: the run goes on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..cspp.chunkid import chunk_id
from ..cspp.frames import FrameError
from . import dotnet
from .chunks import read_body, stream_chunks
from .definitions import (
    AllOf,
    AnyOf,
    Check,
    Frames,
    JsonContent,
    JsonProperty,
    JsonSchema,
    LockMismatch,
    NoException,
    ResponseCode,
    ResponseContent,
    ResponseHeader,
)
from .jsonvalues import (
    MISSING,
    CastError,
    JsonReadError,
    PathError,
    as_bool,
    as_integer,
    as_string,
    null_or_empty,
    parse_object,
    select_token,
    strict_equal,
    to_text,
    token_type,
)
from .resources import ResourceError, Resources, Schemas
from .state import State
from .transport import Response

GET_CHUNKED_FILE_RESPONSE_SCHEMA = "GetChunkedFileResponseSchema"
UNIX_TIMESTAMP_KEYS = frozenset({"AccessTokenExpiry", "ServerTime", "AccessTokenValidFrom"})


@dataclass
class Context:
    resources: Resources
    schemas: Schemas
    state: State = field(default_factory=State)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def evaluate(checks: tuple[Check, ...] | None, response: Response, ctx: Context) -> list[str]:
    """All failure messages for `response`, in check order; empty when it passes."""
    errors = content_length(response)
    for check in checks if checks is not None else (ResponseCode(200),):
        errors.extend(run(check, response, ctx))
    return errors


def run(check: Check, response: Response, ctx: Context) -> list[str]:
    try:
        return _RUNNERS[type(check)](check, response, ctx)
    except (ResourceError, FrameError) as error:
        return [f"{type(check).__name__}: {error}"]
    except (CastError, ValueError, TypeError, KeyError) as error:  # where the validator itself would throw
        return [f"{type(check).__name__}: the response cannot be checked: {error}"]


def content_length(response: Response) -> list[str]:
    declared = response.headers.get("Content-Length")
    if declared is None:
        return []
    try:
        expected = dotnet.parse_integer(declared)
    except ValueError:
        return [f"Content-Length '{declared}' is not a number"]
    if response.size == expected:
        return []
    return [
        f"Actual content length '{response.size}' of response does not match value in header "
        f"content-length '{expected}'"
    ]


def _no_exception(check: NoException, response: Response, ctx: Context) -> list[str]:
    if response.error is not None:
        return [f"ExceptionValidator: Exception thrown while executing: {response.error}"]
    return []


def _response_code(check: ResponseCode, response: Response, ctx: Context) -> list[str]:
    if response.status == check.expected:
        return []
    return [f"Incorrect StatusCode. Expected: {check.expected}, Actual: {response.status}"]


def _response_header(check: ResponseHeader, response: Response, ctx: Context) -> list[str]:
    value = response.headers.get(check.header)
    if value is None:
        return [f"'{check.header}' header is not present on the response"] if check.is_required else []
    expected = ctx.state.expected(check.expected_state_key)
    if expected is None:
        expected = check.expected_value
    if check.comparator == "=":
        if expected is None:
            return []
        if not check.should_match and not value and expected == "":
            return [f"'{check.header}' header value should be any non empty string."]
        matches = value.lower() == expected.lower()
        if check.should_match and not matches:
            return [
                f"'{check.header}' header value is different than expected. Expected: '{expected}', Actual: '{value}'"
            ]
        if not check.should_match and matches:
            return [f"'{check.header}' header value should not be : '{expected}'"]
        return []
    if check.comparator in (">", "<", ">=", "<="):
        actual_number = dotnet.try_parse_integer(value)
        if actual_number is None:
            return [f"'{check.header}' header is present, but its value '{value}' can not be parsed to integer"]
        expected_number = dotnet.try_parse_integer(expected)
        if expected_number is None:
            return [f"expected value '{expected}' can not be parsed to integer"]
        holds = {
            ">": actual_number > expected_number,
            "<": actual_number < expected_number,
            ">=": actual_number >= expected_number,
            "<=": actual_number <= expected_number,
        }
        if holds[check.comparator]:
            return []
        return [f"headerVal:{actual_number} {check.comparator} comparedValue:{expected_number} comparison failed"]
    return [f"Comparator '{check.comparator}' is not valid"]


def _lock_mismatch(check: LockMismatch, response: Response, ctx: Context) -> list[str]:
    header = ResponseHeader("X-WOPI-Lock", check.expected_lock, None, "=", bool(check.expected_lock), True)
    return _response_code(ResponseCode(409), response, ctx) + _response_header(header, response, ctx)


def _all_of(check: AllOf, response: Response, ctx: Context) -> list[str]:
    return [error for child in check.checks for error in run(child, response, ctx)]


def _any_of(check: AnyOf, response: Response, ctx: Context) -> list[str]:
    results = [run(child, response, ctx) for child in check.checks]
    if any(not errors for errors in results):
        return []
    return [error for errors in results for error in errors]


def _response_content(check: ResponseContent, response: Response, ctx: Context) -> list[str]:
    if check.expected_body:
        expected = check.expected_body.encode("utf-8")
    else:
        expected = ctx.resources.content(check.resource_id)
    if response.size == len(expected) and response.sha256 == hashlib.sha256(expected).hexdigest():
        return []
    return [
        f"Response body does not match expected content. Expected stream length: {len(expected)}, "
        f"actual stream length: {response.size}"
    ]


def _json_schema(check: JsonSchema, response: Response, ctx: Context) -> list[str]:
    if not response.text_expected:
        return ["The JsonSchemaValidator can only be used on requests that have a JSON response."]
    text = response.text
    if not text:
        return ["Couldn't read response content."]
    try:
        value = json.loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError):  # (nested deeper than Python reads, as a host may answer)
        return ["JsonSchemaValidator: the response is not JSON"]
    return ctx.schemas.errors(check.schema_id, value)


# ------------------------------------------------------------------------------------ JSON content


def _json_content(check: JsonContent, response: Response, ctx: Context) -> list[str]:
    text = response.text
    if not response.text_expected or not text:
        if check.should_exist:
            return ["Response body should exist, but couldn't read resource content."]
        return []
    if not check.should_exist:
        return ["Response body shouldn't exist."]
    try:
        document = parse_object(text)
    except JsonReadError:
        return [
            "JsonContentValidator: JsonReaderException thrown while parsing JSON. Are you sure the response is JSON?"
        ]
    errors = []
    for prop in check.properties:
        try:
            value = select_token(document, prop.name)
        except PathError as error:
            return [f"JsonContentValidator: JsonException thrown while parsing JSON content: '{error}'"]
        problem = _property(prop, value, ctx)
        if problem is not None:
            errors.append(f"Incorrect value for '{prop.name}' property. {problem}")
    return errors


@dataclass(frozen=True)
class _Typed:
    """How one typed property kind reads the expected value, the saved state and the response value."""

    type_name: str
    from_xml: Callable[[str], Any]
    from_state: Callable[[str], Any]
    from_json: Callable[[Any], Any]
    text: Callable[[Any], str]
    default: Any


def _identity(value: Any) -> Any:
    return value


_TYPED = {
    "BooleanProperty": _Typed("System.Boolean", dotnet.xml_bool, dotnet.parse_bool, as_bool, dotnet.bool_text, False),
    "IntegerProperty": _Typed(
        "System.Int32",
        lambda t: dotnet.parse_integer(t, dotnet.INT32),
        lambda t: dotnet.parse_integer(t, dotnet.INT32),
        lambda v: as_integer(v, dotnet.INT32),
        str,
        0,
    ),
    "LongProperty": _Typed(
        "System.Int64",
        lambda t: dotnet.parse_integer(t, dotnet.INT64),
        lambda t: dotnet.parse_integer(t, dotnet.INT64),
        lambda v: as_integer(v, dotnet.INT64),
        str,
        0,
    ),
    "StringProperty": _Typed("System.String", _identity, _identity, as_string, lambda v: v or "", None),
    "ArrayProperty": _Typed("System.String", _identity, _identity, as_string, lambda v: v or "", None),
}


def _property(prop: JsonProperty, value: Any, ctx: Context) -> str | None:
    """None when the property passes, else why not."""
    if prop.kind in _TYPED:
        return _typed_property(prop, value, ctx)
    if prop.kind == "StringRegexProperty":
        return _regex_property(prop, value)
    if prop.kind == "AbsoluteUrlProperty":
        return _url_property(prop, value)
    if prop.kind == "ResponseBodyProperty":
        return _body_property(prop, value)
    if prop.kind == "ArrayLengthProperty":
        return _array_length_property(prop, value)
    return f"unknown property check {prop.kind}"


def _typed_property(prop: JsonProperty, value: Any, ctx: Context) -> str | None:
    typed = _TYPED[prop.kind]
    raw_expected = prop.contains_value if prop.kind == "ArrayProperty" else prop.expected_value
    has_expected = raw_expected is not None
    default = typed.from_xml(raw_expected) if raw_expected is not None else typed.default
    if null_or_empty(value):
        return "Required property missing" if prop.is_required else _ends_with(prop, value)
    expected, has_state = default, False
    saved = ctx.state.expected(prop.expected_state_key)
    if saved is not None:
        try:
            expected, has_state = typed.from_state(saved), True
        except ValueError:
            if not has_expected:
                return f"ExpectedStateValue should be of type : {typed.type_name}"
    if not has_expected and not has_state:
        if prop.name in UNIX_TIMESTAMP_KEYS:
            return _timestamp_problem(prop.name, value, ctx.now())
        return _ends_with(prop, value)
    if prop.kind == "ArrayProperty":
        return _array_contains(value, expected, typed.text(default))
    if prop.kind == "StringProperty" and prop.ignore_case:
        actual = as_string(value)
        if actual is None or expected is None or actual.casefold() != expected.casefold():
            return f"Expected: '{expected} (case-insensitive)', Actual: '{actual}'"
        return _ends_with(prop, value)
    shown: str | None
    try:
        actual = typed.from_json(value)
        shown, ok = typed.text(actual), actual == expected and type(actual) is type(expected)
    except dotnet.FormatError:
        shown, ok = as_string(value), False
    if not ok:
        return f"Expected: '{typed.text(default)}', Actual: '{shown}'"
    return _ends_with(prop, value)


def _ends_with(prop: JsonProperty, value: Any) -> str | None:
    if prop.kind != "StringProperty" or not (prop.ends_with or "").strip():
        return None
    actual = as_string(value) if value is not MISSING else None
    suffix = prop.ends_with or ""  # not empty: checked above
    if actual is None or not (
        actual.casefold().endswith(suffix.casefold()) if prop.ignore_case else actual.endswith(suffix)
    ):
        return f"Expected to end with: '{suffix}', Actual: '{actual or ''}'"
    return None


def _array_contains(value: Any, expected: str | None, shown_expected: str) -> str | None:
    if not isinstance(value, list):
        raise TypeError(f"the value is a {token_type(value)}, not an array of strings")
    items = [as_string(item) for item in value]
    wanted = None if expected is None else expected.upper()
    if any((item.upper() if item is not None else None) == wanted for item in items):
        return None
    return f"Expected: '{shown_expected}', Actual: '{to_text(items)}'"


def _timestamp_problem(name: str, value: Any, now: datetime) -> str | None:
    """AccessTokenExpiry and ServerTime must be milliseconds since 1970 within ten years of now."""
    stamp = as_integer(value, dotnet.INT64)
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    low, high = _add_years(now, -10), _add_years(now, 10)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    if (low - epoch).total_seconds() * 1000 <= stamp <= (high - epoch).total_seconds() * 1000:
        return None
    return f"{name} value isn't reasonable, it's out of [currentTime-10 years, currentTime+10 years] boundary"


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _regex_property(prop: JsonProperty, value: Any) -> str | None:
    if value is MISSING and not prop.is_required:
        return None
    pattern = prop.expected_value or ""
    actual = as_string(value) if value is not MISSING else None
    if not actual:
        return f"Value null doesn't match the expected regular expression '{pattern}'"
    matched = re.search(pattern, actual, re.IGNORECASE if prop.ignore_case else 0) is not None
    if prop.should_match and not matched:
        return f"Value '{actual}' doesn't match the expected regular expression '{pattern}'"
    if not prop.should_match and matched:
        return f"Value '{actual}' matched the regular expression, but should not '{pattern}'"
    return None


def _url_property(prop: JsonProperty, value: Any) -> str | None:
    if null_or_empty(value):
        return "Value is required but not provided." if prop.is_required else None
    url = as_string(value) or ""
    if not dotnet.is_absolute_uri(url):
        return f"Cannot parse {url} as absolute URL"
    if prop.must_include_access_token and dotnet.query_value(url, "access_token") is None:
        return f"URL '{url}' does not include the 'access_token' query parameter"
    return None


def _body_property(prop: JsonProperty, value: Any) -> str | None:
    """The value must equal ExpectedValue (relaxed JSON), where a property given as '*' may have any value
    and arrays are compared in CoauthLockId order."""
    if value is MISSING:
        return "Value is required but not provided." if prop.is_required else None
    expected = dotnet.relaxed_json(prop.expected_value or "")
    actual = copy.deepcopy(value)
    wildcards: set[str] = set()
    _wildcards(expected, wildcards, replace=False)
    _wildcards(actual, wildcards, replace=True)
    expected, actual = _by_lock_id(expected), _by_lock_id(actual)
    if strict_equal(expected, actual):
        return None
    return f"Expected: '{to_text(expected)}', Actual: '{to_text(actual)}'"


def _wildcards(node: Any, names: set[str], replace: bool) -> None:
    """Collect the names of properties whose value is "*" (replace=False), or set every property of such a
    name to "*" (replace=True). Objects nested in arrays are visited, arrays nested in arrays are not."""
    if isinstance(node, dict):
        objects = [node]
    elif isinstance(node, list):
        objects = [child for child in node if isinstance(child, dict)]
    else:
        objects = []
    for obj in objects:
        for name in list(obj):
            if replace and name in names:
                obj[name] = "*"
            elif _token_text(obj[name]) == "*":
                names.add(name)
            _wildcards(obj[name], names, replace)


def _token_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return dotnet.scalar_text(value) or ""


def _by_lock_id(node: Any) -> Any:
    if not isinstance(node, list) or not node:
        return node
    if not all(isinstance(item, dict) for item in node):
        raise TypeError("the array holds values that are not objects")

    def key(item: dict) -> tuple:
        # Enumerable.OrderBy with the culture-aware string comparer: null first, then case-insensitively.
        lock_id = as_string(item.get("CoauthLockId", MISSING))
        return lock_id is not None, (lock_id or "").casefold(), lock_id or ""

    return sorted(node, key=key)


def _array_length_property(prop: JsonProperty, value: Any) -> str | None:
    if value is MISSING:
        return "Value is required but not provided." if prop.is_required else None
    if not isinstance(value, list):
        if prop.is_required:
            return f"Value is of '{token_type(value)}' type and is not an array type"
        return None
    expected = dotnet.parse_integer(prop.expected_value) if prop.expected_value is not None else 0
    if len(value) == expected:
        return None
    return f"Expected array to be of length '{expected}', Actual: '{len(value)}'"


# --------------------------------------------------------------------------------------- frames


def _frames(check: Frames, response: Response, ctx: Context) -> list[str]:
    """A GetChunkedFile response: well framed, its MessageJSON valid under the schema, each chunk hashing to
    its ChunkId; then each expected stream rebuilt from its signature (chunks from the response, or from the
    content the request said the client already had) and compared, and the content properties."""
    if check.schema_id != GET_CHUNKED_FILE_RESPONSE_SCHEMA:
        return [f"Unknown Schema: '{check.schema_id}'"]
    if not response.size:
        return ["ResponseData.ResponseStream is null or empty"]
    if not response.kept:
        return [f"the response's {response.size} bytes are more than the validator reads frames from"]
    parsed = read_body(response.body)
    schemes: dict[str, str] = {}
    chunk_ids: dict[str, list[str]] = {}
    properties: dict[str, dict] = {}
    for message in parsed.messages:
        if ctx.schemas.errors(check.schema_id, message):
            return [f"MessageJson payload Json validation failed: {to_text(message)}"]
        for signature in message.get("Signatures") or ():
            stream_id = signature.get("StreamId")
            schemes[stream_id] = signature.get("ChunkingScheme")
            if stream_id not in chunk_ids:
                chunk_ids[stream_id] = [c.get("ChunkId") for c in signature.get("ChunkSignatures") or ()]
        for prop in message.get("ContentProperties") or ():
            properties[prop.get("Name")] = prop
    blobs: dict[str, bytes] = {}
    for frame in parsed.chunks:
        actual = chunk_id(frame.payload)
        if actual != frame.chunk_id:
            return [
                f"ChunkId calculated from extendedHeader:'{frame.chunk_id}' is different from chunkId "
                f"calculated from payload:{actual}"
            ]
        blobs.setdefault(frame.chunk_id, frame.payload)
    if check.expected_host_blobs_count is not None and check.expected_host_blobs_count != len(blobs):
        return [
            f"ExpectedHostBlobsCount: '{check.expected_host_blobs_count}' not equal to HostBlobs.Count: '{len(blobs)}'"
        ]
    for stream in check.streams:
        problem = _stream_problem(stream, schemes, chunk_ids, blobs, ctx.resources)
        if problem is not None:
            return [problem]
    for expectation in check.properties:
        found = properties.get(expectation.name)
        if not expectation.should_be_returned:
            if found is not None:
                return [f"ContentProperty:{expectation.name} should not be returned"]
            continue
        if found is None:
            return [f"ContentProperty:{expectation.name} does not exist"]
        value, retention = found.get("Value"), found.get("Retention")
        if value != expectation.expected_value or retention != expectation.expected_retention:
            return [
                f"ContentProperty mismatch. Expected Value: {expectation.expected_value}, Actual Value: "
                f"{value}, Expected Retention: {expectation.expected_retention}, Actual Retention: {retention}"
            ]
    return []


def _stream_problem(stream, schemes: dict, chunk_ids: dict, blobs: dict, resources: Resources) -> str | None:
    if stream.stream_id not in schemes:
        return f"StreamId '{stream.stream_id}' is not among the response's signatures"
    scheme = schemes[stream.stream_id]
    if scheme != stream.scheme:
        return (
            f"For StreamId '{stream.stream_id}', ResponseChunkingScheme '{scheme}' not equal to "
            f"ExpectedChunkingScheme: {stream.scheme}"
        )
    if scheme == "Zip":
        if stream.existing_resource_id is None and stream.expected_resource_id is None:
            return None
        known = stream_chunks(resources, "Zip", None, stream.existing_resource_id)
    else:
        if stream.existing_content is None and stream.expected_content is None:
            return None
        known = stream_chunks(resources, "FullFile", stream.existing_content, None)
    known_by_id: dict[str, Any] = {}
    for chunk in known:
        known_by_id.setdefault(chunk_id(chunk), chunk)
    pieces = []
    for cid in chunk_ids[stream.stream_id]:
        piece = blobs.get(cid, known_by_id.get(cid))
        if piece is None:
            return f"Missing blob: {cid} in blob dictionary."
        pieces.append(piece)
    rebuilt = b"".join(pieces)
    if scheme == "Zip":
        if rebuilt != resources.zip_stream(stream.expected_resource_id):
            return "Reconstructed stream and expected stream are not equal."
        return None
    text = rebuilt.decode("utf-8", "replace")
    if text != stream.expected_content:
        return f"Reconstructed payload '{text}' and expected value '{stream.expected_content}' are not equal"
    return None


_RUNNERS: dict[type, Callable[[Any, Response, Context], list[str]]] = {
    NoException: _no_exception,
    ResponseCode: _response_code,
    ResponseHeader: _response_header,
    LockMismatch: _lock_mismatch,
    AllOf: _all_of,
    AnyOf: _any_of,
    ResponseContent: _response_content,
    JsonSchema: _json_schema,
    JsonContent: _json_content,
    Frames: _frames,
}
