"""What a replay knows about the host it replays against, and how it fills in a recorded request with it.

A recording names its secrets by placeholders (`{{kind:N}}`, wopihost/har.py) and its other values as its
host gave them: file, drive and item ids, times, eTags, sequence numbers, URLs on its public address. A
replay learns what each stands for on the host it replays against by reading that host's answers with the
recording's answers as templates (compare.py), and keeps it here:

* `secrets`: placeholder -> the value it stands for here; the session's own credential and `--map`ped ones
  are fixed, the rest follow the latest answer that handed them out (a new upload session, a new ticket).
* `values`: a recorded value -> the value that took its place here (ids, times, tags). Once learned, a
  recorded value must keep meaning the same value: an answer that says otherwise is a divergence.
* `sequences`: a recorded CSPP Plus sequence number -> the host's; learned pairs must keep their order.
* `table_versions`: for each file (the recorded URL's path), a recorded CSPP Plus coauth table version -> the
  host's, the latest answered last; opaque strings, so only where they changed between answers must agree.
* `prefixes`: where the recording's URLs lead here (its WOPI and Graph addresses, `--map`ped URLs), and
  `origins`, the recording's origins and theirs here.

Requests are filled in piece by piece, never by replacing text at large: a path segment, a query value, a
header the protocol gives a learned value in (If-Match, X-WOPI-SequenceNumber ...), a JSON string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .. import logs
from ..har import PLACEHOLDER, SHORTEST_KNOWN_SECRET
from ..ids import is_id
from ..text import digits

# A URL segment (or a `:`- or `.`-separated part of one: Graph's `items/{id}:`, a `$skiptoken` of `{id}.{name}`)
PARTS = re.compile(r"([:.])")
URL_SHAPE = re.compile(r"https?://[^\s/?#]+", re.IGNORECASE)
SEGMENT_SAFE = "!$&'()*+,;=:@~"
# Request headers whose whole value a client took from an earlier answer: an eTag, a LastModifiedTime.
VALUE_HEADERS = frozenset({"if-match", "if-none-match", "if-range", "x-cool-wopi-timestamp", "x-lool-wopi-timestamp"})
SEQUENCE_HEADER = "x-wopi-sequencenumber"
TABLE_VERSION_HEADER = "x-wopi-coauthtableversion"


class Unbound(Exception):
    """A request needs a placeholder that no answer handed out and no option gave."""

    def __init__(self, placeholder: str):
        super().__init__(placeholder)
        self.placeholder = placeholder


def has_placeholder(text: str) -> bool:
    return PLACEHOLDER.search(text) is not None


def template(text: str, given: Mapping[str, str]) -> tuple[re.Pattern[str], list[str]]:
    """A pattern matching what `text` stands for, and the placeholders it captures, in order. A placeholder
    `given` a value (on the command line) stands for that value; any other captures a secret, which holds no
    whitespace (the same placeholder twice must capture the same value); the rest is literal."""
    parts: list[str] = []
    names: list[str] = []
    seen: dict[str, str] = {}
    position = 0
    for match in PLACEHOLDER.finditer(text):
        parts.append(re.escape(text[position : match.start()]))
        placeholder = match.group(0)
        if placeholder in given:
            parts.append(re.escape(given[placeholder]))
        elif placeholder in seen:
            parts.append(f"(?P={seen[placeholder]})")
        else:
            seen[placeholder] = f"p{len(names)}"
            names.append(placeholder)
            parts.append(rf"(?P<{seen[placeholder]}>\S+?)")
        position = match.end()
    parts.append(re.escape(text[position:]))
    return re.compile("".join(parts), re.DOTALL), names


def match_template(text: str, actual: str, given: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """What each placeholder of `text` not `given` stands for in `actual`, or None if `actual` does not fit
    it."""
    pattern, names = template(text, given or {})
    found = pattern.fullmatch(actual)
    if found is None:
        return None
    return {placeholder: found.group(f"p{n}") for n, placeholder in enumerate(names)}


class Bindings:
    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.fixed: set[str] = set()
        self.values: dict[str, str] = {}
        self.sequences: dict[int, int] = {}
        self.table_versions: dict[str, dict[str, str]] = {}  # each file's: hosts number each file's table
        self.prefixes: list[tuple[str, str]] = []
        self.origins: dict[str, str] = {}

    # -- what the command line says ------------------------------------------------------------------

    def fix(self, placeholder: str, value: str) -> None:
        self.secrets[placeholder] = value
        self.fixed.add(placeholder)

    def add_prefix(self, recorded: str, actual: str) -> None:
        """URLs starting with `recorded` (up to a `/`, `?` or `#`) lead to `actual`; the longest prefix wins."""
        recorded, actual = recorded.rstrip("/"), actual.rstrip("/")
        if all(r != recorded for r, _ in self.prefixes):
            self.prefixes.append((recorded, actual))
            self.prefixes.sort(key=lambda pair: -len(pair[0]))

    def add_origin(self, recorded: str, actual: str) -> None:
        """The recording's origin is this one: a bare origin (PostMessageOrigin) may stand for either this
        origin or the public URL under it, which are the same in a recording of a host without a path prefix."""
        self.origins.setdefault(recorded, actual)
        self.add_prefix(recorded, actual)

    def add_value(self, recorded: str, actual: str) -> None:
        self.values[recorded] = actual

    # -- filling in a request --------------------------------------------------------------------------

    def fill(self, text: str) -> str:
        """`text` with every placeholder replaced by what it stands for; Unbound if one is not known."""

        def secret(match: re.Match[str]) -> str:
            placeholder = match.group(0)
            if placeholder not in self.secrets:
                raise Unbound(placeholder)
            return self.secrets[placeholder]

        return PLACEHOLDER.sub(secret, text)

    def piece(self, recorded: str) -> str:
        """A path segment or a query value: the value learned for it, or for each of its parts that is one of the
        recording host's ids."""
        if recorded in self.values:
            return self.values[recorded]
        return "".join(self.values.get(part, part) if is_id(part) else part for part in PARTS.split(recorded))

    def prefix(self, url: str) -> str:
        for recorded, actual in self.prefixes:
            if url == recorded or (url.startswith(recorded) and url[len(recorded)] in "/?#"):
                return actual + url[len(recorded) :]
        return url

    def url(self, recorded: str) -> str:
        try:
            parts = urlsplit(self.prefix(recorded))
        except ValueError:  # "Invalid IPv6 URL": what the recorded client sent, which goes as it was sent
            return self.prefix(recorded)
        path = "/".join(_requote(segment, self._fill_piece, SEGMENT_SAFE) for segment in parts.path.split("/"))
        query = "&".join(self._query_item(item) for item in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))

    def _fill_piece(self, decoded: str) -> str:
        return self.fill(decoded) if has_placeholder(decoded) else self.piece(decoded)

    def _query_item(self, item: str) -> str:
        name, equals, value = item.partition("=")
        if not equals:
            return item
        return f"{name}={_requote(value, self._fill_piece, '')}"

    def string(self, recorded: str) -> str:
        """A string of a JSON request body."""
        if URL_SHAPE.match(recorded):
            return self.url(recorded)
        if has_placeholder(recorded):
            return self.fill(recorded)
        if recorded.startswith("/"):
            return "/".join(self.piece(segment) for segment in recorded.split("/"))
        return self.values.get(recorded, recorded)

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {key: self.json(item) for key, item in value.items()}
        return value

    def header(self, name: str, value: str, file: str = "") -> str:
        """A recorded request header filled in; `file`: the path of the recorded URL, whose table versions count."""
        lower = name.lower()
        if has_placeholder(value):
            return self.fill(value)
        if lower == SEQUENCE_HEADER and digits(value.strip()):
            return str(self.sequences.get(int(value), int(value)))
        if lower in VALUE_HEADERS:
            return self.values.get(value, value)
        if lower == TABLE_VERSION_HEADER:  # GetCoauthTable: the version of the client's copy, from an answer
            return self.table_versions.get(file, {}).get(value, value)
        return value

    # -- learning from answers, and judging them -------------------------------------------------------

    def match(self, text: str, actual: str) -> dict[str, str] | None:
        """match_template, where a placeholder the command line gave a value (--token) stands for it: a body
        holding another value in its place is not what the recording stands for."""
        return match_template(text, actual, {placeholder: self.secrets[placeholder] for placeholder in self.fixed})

    def bind(self, captures: dict[str, str]) -> None:
        for placeholder, value in captures.items():
            if placeholder not in self.fixed:
                self.secrets[placeholder] = value

    def learn(self, recorded: str, actual: str) -> None:
        """`actual` took the place of `recorded`, unless something else already did."""
        if recorded != actual:
            self.values.setdefault(recorded, actual)

    def learn_sequence(self, recorded: int, actual: int) -> str | None:
        """Learn a sequence number; what is wrong if the host's numbers do not keep the recording's order."""
        known = self.sequences.get(recorded)
        if known is not None:
            return None if known == actual else f"recorded {recorded} stood for {known} here before, now {actual}"
        for r, a in self.sequences.items():
            if (r < recorded) != (a < actual) or (r > recorded) != (a > actual):
                return f"the recording went from {r} to {recorded}, this host from {a} to {actual}"
        self.sequences[recorded] = actual
        return None

    def learn_table_version(self, file: str, recorded: str, actual: str) -> str | None:
        """Learn a coauth table version of `file`; what is wrong if, since the last answer that gave one for that
        file, the host's changed where the recorded one stayed or stayed where it changed (a client asks for the
        table again on a change)."""
        versions = self.table_versions.setdefault(file, {})
        last = next(reversed(versions.items()), None)
        versions.pop(recorded, None)  # the latest answered last
        versions[recorded] = actual
        if last is None or (recorded == last[0]) == (actual == last[1]):
            return None
        if recorded == last[0]:
            return f"the recording's stayed {recorded}, this host's went from {last[1]} to {actual}"
        return f"the recording's went from {last[0]} to {recorded}, this host's stayed {actual}"

    def piece_matches(self, recorded: str, actual: str, learn: bool, id_like: bool = False) -> bool:
        """Whether `actual` is what `recorded` (a segment, a query value, a JSON string) stands for here.
        Learning binds its placeholders, or takes `actual` as what stands for `recorded` (or for each of its
        parts) when that is one of the recording host's ids, or when the caller knows it is an id (`id_like`):
        names, versions and the API's own segments must be as recorded."""
        if has_placeholder(recorded):
            captures = self.match(recorded, actual)
            if captures is not None and learn:
                self.bind(captures)
            return captures is not None
        if self.piece(recorded) == actual:
            return True
        if not learn:
            return False
        if recorded not in self.values and (id_like or is_id(recorded)):
            self.values[recorded] = actual
            return True
        parts, actual_parts = PARTS.split(recorded), PARTS.split(actual)
        if len(parts) > 1 and len(parts) == len(actual_parts):
            return all(self.piece_matches(r, a, learn) for r, a in zip(parts, actual_parts))
        return False

    def url_problem(self, recorded: str, actual: str, learn: bool) -> str | None:
        """None if `actual` is the URL `recorded` stands for here, else what differs; learning binds the
        placeholders of `recorded` and learns the ids in its segments and query values (piece_matches)."""
        if self.origins.get(recorded.rstrip("/")) == actual.rstrip("/"):
            return None
        try:
            expected, got = urlsplit(self.prefix(recorded)), urlsplit(actual)
        except ValueError as error:  # "Invalid IPv6 URL": what the host answered is no URL
            return None if recorded == actual else f"does not parse ({error})"
        if (expected.scheme.lower(), expected.netloc.lower()) != (got.scheme.lower(), got.netloc.lower()):
            return f"leads to {got.scheme}://{got.netloc}, not {expected.scheme}://{expected.netloc}"
        segments, got_segments = expected.path.split("/"), got.path.split("/")
        if len(segments) != len(got_segments):
            return f"has {len(got_segments) - 1} path segments, not {len(segments) - 1}"
        for r, a in zip(segments, got_segments):
            if not self.piece_matches(unquote(r), unquote(a), learn):
                return f"has the path segment {unquote(a)!r} in place of {unquote(r)!r}"
        items, got_items = _query(expected.query), _query(got.query)
        if [name for name, _ in items] != [name for name, _ in got_items]:
            return f"has the query parameters {[n for n, _ in got_items]}, not {[n for n, _ in items]}"
        for (name, r), (_, a) in zip(items, got_items):
            if not self.piece_matches(r, a, learn):
                return f"has {name}={a!r} in place of {name}={r!r}"
        if expected.fragment != got.fragment:
            return "differs in its fragment"
        return None

    # -- showing what was sent and answered --------------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` (something a host answered) with what has a credential's shape redacted as the logs redact
        it, and every other secret known here shown as its placeholder: what a replay prints and writes holds
        no secret."""
        text = logs.redact(text)
        for placeholder, value in sorted(self.secrets.items(), key=lambda item: -len(item[1])):
            if len(value) >= SHORTEST_KNOWN_SECRET:  # a shorter one (--token x) would garble the text
                text = text.replace(value, placeholder)
                encoded = quote(value, safe="")
                if encoded != value:
                    text = text.replace(encoded, placeholder)
        return text


def _requote(raw: str, fill: Callable[[str], str], safe: str) -> str:
    decoded = unquote(raw)
    filled = fill(decoded)
    return raw if filled == decoded else quote(filled, safe=safe)


def _query(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs
