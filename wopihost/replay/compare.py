"""Judging a host's answer against the recorded one, after learning from it.

Each answer is read twice. First the recorded answer serves as a template for the actual one, and the replay
learns from it (bindings.py): what the placeholders stand for here (an upload session's token, a new file's
access token), which ids, times and tags took the place of the recorded ones, how the host numbers its
sequence. Then the answer is judged, seen through everything learned, by these rules:

* the status code must be the recorded one;
* headers (the ones docs/wopi.md, docs/cspp-plus.md and docs/graph.md give a meaning): some by value
  (X-WOPI-Lock, X-WOPI-ValidRelativeTarget, X-WOPI-UploadSessionCurrentOffset, Content-Range ...), URLs
  (Location) as URLs, Content-Type by media type, and those whose value always differs or is prose for
  people (X-WOPI-ItemVersion, X-WOPI-SequenceNumber, ETag, X-WOPI-FailureReason ...) by presence;
  X-WOPI-CoauthTableVersion, an opaque string of each host's own, by presence and by whether it changed from one
  answer to the next where the recorded one did;
* JSON bodies by structure and value, except values that always differ: times (ISO 8601, or the epoch
  milliseconds of ServerTime, AccessTokenExpiry and CoauthLockTime) may be any time, versions and tags
  (Version, eTag, cTag) any value of the same type, Graph's request ids and error messages any string, a
  drive's quota any number;
  ids and URLs must be equal once what was learned is applied (a CoauthLockId, the client's, as recorded),
  sequence numbers must keep their order;
* a text body holding placeholders must fit it as a template; any other body must have the recorded SHA-256;
  a body recorded only in part (the answer broke off) is not compared, nor is JSON or text recorded as a digest
  only (over the recording's limit): the result says so in a note.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..text import digits
from .archive import Exchange
from .bindings import URL_SHAPE, Bindings, has_placeholder

ABSENT = "absent"

VALUE_HEADERS = (
    "X-WOPI-Lock",
    "X-WOPI-ValidRelativeTarget",
    "X-WOPI-ConflictingMechanism",
    "X-WOPI-ConflictingLockUsername",
    "X-WOPI-UploadSessionCurrentOffset",
    "Content-Range",
    "Accept-Ranges",
    "client-request-id",
)
TABLE_VERSION = "X-WOPI-CoauthTableVersion"
PRESENCE_HEADERS = (
    "X-WOPI-ItemVersion",
    "X-WOPI-SequenceNumber",
    TABLE_VERSION,
    "X-WOPI-LockFailureReason",
    "X-WOPI-InvalidFileNameError",
    "X-WOPI-InvalidContainerNameError",
    "X-WOPI-FailureReason",
    "X-WOPI-ServerError",
    "ETag",
    "Retry-After",
    "request-id",
)
URL_HEADERS = ("Location", "Content-Location")
MEDIA_TYPE_HEADERS = ("Content-Type",)

TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)
EPOCH_MS_KEYS = frozenset({"ServerTime", "AccessTokenExpiry", "CoauthLockTime"})
VERSION_KEYS = frozenset({"Version", "eTag", "cTag"})
ANY_STRING_KEYS = frozenset({"request-id", "client-request-id", "message"})
SEQUENCE_KEYS = frozenset({"SequenceNumber"})
# content hashes and names a client chose (a coauth lock's, sent as X-WOPI-CoauthLockId), compared by value
NOT_ID_KEYS = frozenset({"ChunkId", "StreamId", "CoauthLockId"})


@dataclass(frozen=True)
class Difference:
    where: str  # "status", "header X-WOPI-Lock", "body $.SupportsContainers", "body"
    recorded: str
    actual: str


@dataclass
class Answer:
    """What the host answered. `data` is the body when it was kept for comparing as text or JSON (None when it
    was not kept, or was too large to keep)."""

    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    size: int
    sha256: str
    data: bytes | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Verdict:
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judge(exchange: Exchange, answer: Answer, bindings: Bindings) -> Verdict:
    """Learn from `answer`, then compare it with the recorded one."""
    verdict = Verdict()
    kind, recorded, actual, problem = _bodies(exchange, answer, verdict.notes)
    learning, judging = _Walk(bindings, learn=True), _Walk(bindings, learn=False)
    for walk in (learning, judging):
        walk.headers(exchange, answer)
        if kind == "json":
            walk.json(recorded, actual, "$")
        elif kind == "template":
            walk.template_body(exchange, answer)
    if exchange.status != answer.status:
        verdict.differences.append(Difference("status", str(exchange.status), str(answer.status)))
    verdict.differences.extend(learning.problems + judging.differences)
    if problem is not None:
        verdict.differences.append(problem)
    if kind == "digest":
        _compare_digest(exchange, answer, verdict)
    return verdict


def _bodies(exchange: Exchange, answer: Answer, notes: list[str]) -> tuple[str, Any, Any, Difference | None]:
    """How the body is compared ("json", "template", "digest" or "none"), the two JSON values, and what is
    wrong with the answer's body before any comparing."""
    content = exchange.content
    if content.incomplete:
        notes.append(f"body not compared: the recorded answer broke off after {content.size} bytes")
        return "none", None, None, None
    if content.data is None:
        if _is_json(content.media_type) or content.media_type.startswith("text/") or content.text:
            # JSON or text, whose times and ids differ from host to host: its digest would never match
            notes.append(
                f"body not compared: the recording kept only the digest of its {content.size} bytes "
                "(over WOPIHOST_RECORD_MAX_BODY)"
            )
            return "none", None, None, None
        return "digest", None, None, None
    if content.text and _is_json(content.media_type) and content.data:
        try:
            recorded = json.loads(content.data)
        except (ValueError, RecursionError):  # (a client's JSON may nest deeper than Python parses)
            return "digest", None, None, None
        actual, problem = _actual_json(answer)
        if problem:
            return "none", None, None, Difference("body", f"JSON ({content.size} bytes)", problem)
        return "json", recorded, actual, None
    if content.text and has_placeholder(content.data.decode("utf-8", "replace")):
        return "template", None, None, None
    return "digest", None, None, None


def _actual_json(answer: Answer) -> tuple[Any, str | None]:
    if answer.data is None:
        return None, f"{answer.size} bytes, too large to read as JSON"
    try:
        return json.loads(answer.data.decode("utf-8-sig")), None
    except (ValueError, RecursionError):
        kind = answer.header("Content-Type") or "no Content-Type"
        return None, f"not JSON ({kind}, {answer.size} bytes)"


def _compare_digest(exchange: Exchange, answer: Answer, verdict: Verdict) -> None:
    content = exchange.content
    assert content.data is not None or content.sha256 is not None  # archive.py refuses a body with neither
    recorded = content.sha256 or hashlib.sha256(content.data or b"").hexdigest()
    if recorded.lower() != answer.sha256:
        verdict.differences.append(
            Difference(
                "body",
                f"{content.size} bytes, SHA-256 {recorded[:16]}...",
                f"{answer.size} bytes, SHA-256 {answer.sha256[:16]}...",
            )
        )


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _media_type(value: str | None) -> str | None:
    return None if value is None else value.split(";")[0].strip().lower()


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def show(value: Any, redact: Callable[[str], str] = lambda text: text) -> str:
    """`value` as JSON, at most 200 characters of it; `redact`ed before it is cut short, which would leave the start
    of a secret that runs past the cut, no longer the whole that redacting finds."""
    # readable non-ASCII, but an unpaired surrogate a host answered as "\ud800" stays escaped: nothing prints it
    text = redact(json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8"))
    return text if len(text) <= 200 else text[:197] + "..."


class _Walk:
    """One reading of an answer: learning (binding placeholders, taking new ids, numbering sequences, noting
    `problems` where the host contradicts what it said before) or judging (noting `differences`)."""

    def __init__(self, bindings: Bindings, learn: bool):
        self.bindings, self.learn = bindings, learn
        self.differences: list[Difference] = []
        self.problems: list[Difference] = []

    def differ(self, where: str, recorded: str, actual: str) -> None:
        if not self.learn:
            self.differences.append(Difference(where, recorded, actual))

    def differ_json(self, where: str, recorded: Any, actual: Any) -> None:
        self.differ(where, show(recorded), self.show(actual))

    def show(self, actual: Any) -> str:
        """Something the host answered, as shown: without the secrets it holds (Bindings.redact)."""
        return show(actual, self.bindings.redact)

    # -- headers

    def headers(self, exchange: Exchange, answer: Answer) -> None:
        if self.learn:
            self._learn_headers(exchange, answer)
        for name in VALUE_HEADERS:
            recorded, actual = exchange.response_header(name), answer.header(name)
            if recorded != actual:
                self.differ(f"header {name}", _shown(recorded), _shown(actual, self.bindings.redact))
        for name in PRESENCE_HEADERS:
            recorded, actual = exchange.response_header(name), answer.header(name)
            if (recorded is None) != (actual is None):
                self.differ(f"header {name}", _presence(recorded), _presence(actual))
        for name in MEDIA_TYPE_HEADERS:
            recorded, actual = _media_type(exchange.response_header(name)), _media_type(answer.header(name))
            if recorded != actual:
                self.differ(f"header {name}", recorded or ABSENT, actual or ABSENT)
        for name in URL_HEADERS:
            recorded, actual = exchange.response_header(name), answer.header(name)
            if recorded is None or actual is None:
                if (recorded is None) != (actual is None):
                    self.differ(f"header {name}", _shown(recorded), _shown(actual, self.bindings.redact))
                continue
            problem = self.bindings.url_problem(recorded, actual, self.learn)
            if problem:
                self.differ(f"header {name}", show(recorded), f"a URL that {problem}")

    def _learn_headers(self, exchange: Exchange, answer: Answer) -> None:
        for name, template in exchange.response_headers:
            value = answer.header(name)
            if value is not None and has_placeholder(template):
                captures = self.bindings.match(template, value)
                if captures is not None:
                    self.bindings.bind(captures)
        recorded, actual = exchange.response_header("X-WOPI-SequenceNumber"), answer.header("X-WOPI-SequenceNumber")
        if recorded and actual and digits(recorded.strip()) and digits(actual.strip()):
            self._sequence("header X-WOPI-SequenceNumber", int(recorded), int(actual))
        recorded, actual = exchange.response_header(TABLE_VERSION), answer.header(TABLE_VERSION)
        if recorded and actual:
            problem = self.bindings.learn_table_version(exchange.path, recorded, actual)
            if problem:
                self.problems.append(
                    Difference(f"header {TABLE_VERSION}", f"version {recorded}", f"{actual}: {problem}")
                )
        etag, actual_etag = exchange.response_header("ETag"), answer.header("ETag")
        if etag and actual_etag:
            self.bindings.learn(etag, actual_etag)  # what a client sends back in If-Match

    def _sequence(self, where: str, recorded: int, actual: int) -> None:
        problem = self.bindings.learn_sequence(recorded, actual)
        if problem:
            self.problems.append(Difference(where, f"sequence number {recorded}", f"{actual}: {problem}"))

    # -- bodies

    def template_body(self, exchange: Exchange, answer: Answer) -> None:
        assert exchange.content.data is not None
        text = exchange.content.data.decode("utf-8", "replace")
        actual = (answer.data or b"").decode("utf-8", "replace")
        captures = self.bindings.match(text, actual)
        if captures is None:
            self.differ("body", f"text of {exchange.content.size} bytes", "text that does not fit it")
        elif self.learn:
            self.bindings.bind(captures)

    def json(self, recorded: Any, actual: Any, path: str, key: str | None = None, quota: bool = False) -> None:
        if _type(recorded) != _type(actual):
            self.differ_json(path, recorded, actual)
        elif isinstance(recorded, dict):
            for name, value in recorded.items():
                where = _path(path, name)
                if name not in actual:
                    self.differ(where, show(value), ABSENT)
                else:
                    self.json(value, actual[name], where, name, quota or name == "quota")
            for name in actual:
                if name not in recorded:
                    self.differ(_path(path, name), ABSENT, self.show(actual[name]))
        elif isinstance(recorded, list):
            if len(recorded) != len(actual):
                self.differ(path, f"{len(recorded)} items", f"{len(actual)} items")
            for n, (r, a) in enumerate(zip(recorded, actual)):
                self.json(r, a, f"{path}[{n}]", key, quota)
        elif isinstance(recorded, str):
            self.string(recorded, actual, path, key)
        elif isinstance(recorded, int | float) and not isinstance(recorded, bool):
            self.number(recorded, actual, path, key, quota)
        elif recorded != actual:
            self.differ_json(path, recorded, actual)

    def number(self, recorded: float, actual: float, path: str, key: str | None, quota: bool) -> None:
        if key in EPOCH_MS_KEYS or quota:
            return
        if key in SEQUENCE_KEYS and isinstance(recorded, int) and isinstance(actual, int):
            if self.learn:  # learning is judging here: a number that breaks the order is a problem it notes
                self._sequence(path, recorded, actual)
            return
        if recorded != actual:
            self.differ_json(path, recorded, actual)

    def string(self, recorded: str, actual: str, path: str, key: str | None) -> None:
        bindings = self.bindings
        if URL_SHAPE.match(recorded):
            problem = bindings.url_problem(recorded, actual, self.learn)
            if problem:
                self.differ(path, show(recorded), f"a URL that {problem}")
        elif has_placeholder(recorded):
            if not bindings.piece_matches(recorded, actual, self.learn):
                self.differ(path, show(recorded), "a value that does not fit it")
        elif TIME.fullmatch(recorded):
            if not TIME.fullmatch(actual):
                self.differ_json(path, recorded, actual)
            elif self.learn:
                bindings.learn(recorded, actual)  # what a client sends back (X-COOL-WOPI-Timestamp)
        elif key in VERSION_KEYS:
            if self.learn:
                bindings.learn(recorded, actual)  # what a client sends back (If-Match)
        elif key in ANY_STRING_KEYS:
            pass
        elif _is_id_key(key):
            if not bindings.piece_matches(recorded, actual, self.learn, id_like=True):
                self.differ_json(path, recorded, actual)
        elif recorded.startswith("/"):
            segments, got = recorded.split("/"), actual.split("/")
            if len(segments) != len(got) or not all(
                bindings.piece_matches(r, a, self.learn) for r, a in zip(segments, got)
            ):
                self.differ_json(path, recorded, actual)
        elif bindings.values.get(recorded, recorded) != actual:
            self.differ_json(path, recorded, actual)


def _shown(header: str | None, redact: Callable[[str], str] = lambda text: text) -> str:
    return ABSENT if header is None else show(header, redact)


def _presence(header: str | None) -> str:
    return ABSENT if header is None else "present"


def _is_id_key(key: str | None) -> bool:
    return key is not None and key not in NOT_ID_KEYS and (key == "id" or key.endswith("Id"))


def _path(path: str, name: str) -> str:
    return (
        f"{path}.{name}" if re.fullmatch(r"[A-Za-z_@][\w@.-]*", name) and "." not in name else f"{path}[{show(name)}]"
    )
