"""Where a recording leads on the host a replay is against: what the command line gives, as first bindings.

The recording's WOPI address (its public URL and the first file it names, `/wopi/files/<id>`) becomes
`--wopisrc`; its Graph address (public URL and version prefix) becomes `--graph-base`, or the WOPISrc's public
URL when the recording served both from one address; the session's own credential becomes `--token` (a WOPI
access token) or `--api-token` (a Graph Bearer token). `--map OLD=NEW` adds what the session never learns
from an answer: a placeholder's value, an id (a drive id used before any answer names it), a URL prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from .. import logs
from ..graph import PREFIXES as GRAPH_PREFIXES
from ..har import PLACEHOLDER
from .archive import Recording
from .bindings import URL_SHAPE, Bindings

WOPI_FILE = re.compile(r"/wopi/(?P<kind>files|containers)/(?P<id>[^/?#]+)")
SESSION_OPTIONS = {
    "access_token": ("--token", "a WOPI access token"),
    "api_token": ("--api-token", "a Graph API token"),
}


class UsageProblem(ValueError):
    """The command line does not fit the recording; the message is one line."""


@dataclass(frozen=True)
class Targets:
    wopisrc: str | None = None
    token: str | None = None
    graph_base: str | None = None
    api_token: str | None = None
    maps: tuple[tuple[str, str], ...] = ()


def parse_map(text: str) -> tuple[str, str]:
    old, equals, new = text.partition("=")
    if not equals or not old or not new:
        raise UsageProblem(f"--map takes OLD=NEW, not {text!r}")
    return old, new


def bindings_for(recording: Recording, targets: Targets) -> Bindings:
    """The first bindings of a replay of `recording`; UsageProblem if the command line does not fit it."""
    bindings = Bindings()
    for old, new in targets.maps:
        if PLACEHOLDER.fullmatch(old):
            bindings.fix(old, new)
        elif URL_SHAPE.match(old):
            bindings.add_prefix(old, new)
        else:
            bindings.add_value(old, new)
    _session(recording, targets, bindings)
    wopi_root, wopi_file = _recorded_wopi(recording)
    graph_root, graph_prefix = _recorded_graph(recording)
    actual_wopi_root = None
    if wopi_root is None:
        if targets.wopisrc:
            raise UsageProblem("--wopisrc: the recording has no WOPI request")
    elif not targets.wopisrc:
        raise UsageProblem("the recording is of WOPI requests: give --wopisrc (the WOPISrc of the file to replay on)")
    else:
        actual_wopi_root = _wopisrc(targets.wopisrc, wopi_file, bindings)
        _add_root(bindings, wopi_root, actual_wopi_root)
    if graph_root is None:
        if targets.graph_base:
            raise UsageProblem("--graph-base: the recording has no Graph request")
        return bindings
    assert graph_prefix is not None
    if targets.graph_base:
        actual_root, actual_prefix = _graph_base(targets.graph_base)
    elif actual_wopi_root is not None and graph_root == wopi_root:
        actual_root, actual_prefix = actual_wopi_root, graph_prefix
    else:
        raise UsageProblem(
            "the recording is of Graph requests: give --graph-base (the host's Graph URL, such as "
            "http://127.0.0.1:8080/v1.0)"
        )
    bindings.add_prefix(graph_root + graph_prefix, actual_root + actual_prefix)
    _add_root(bindings, graph_root, actual_root)
    return bindings


def _session(recording: Recording, targets: Targets, bindings: Bindings) -> None:
    match = PLACEHOLDER.fullmatch(recording.session)
    assert match is not None  # archive.py checks it
    kind = match.group("kind")
    given = {"access_token": targets.token, "api_token": targets.api_token}
    for other, (option, what) in SESSION_OPTIONS.items():
        if other != kind and given[other] is not None:
            raise UsageProblem(f"{option}: the recording's session is {recording.session}, not {what}")
    credential = given.get(kind)
    if credential is not None:
        bindings.fix(recording.session, credential)
    elif recording.session not in bindings.secrets:
        option = SESSION_OPTIONS[kind][0] if kind in SESSION_OPTIONS else f"--map '{recording.session}=VALUE'"
        raise UsageProblem(f"the recording's session is {recording.session}: give its credential with {option}")


def _recorded_wopi(recording: Recording) -> tuple[str | None, tuple[str, str] | None]:
    """The recording's WOPI root (its public URL) and the first file (or container) it names."""
    root = None
    for exchange in recording.exchanges:
        parts = urlsplit(exchange.url)
        at = parts.path.find("/wopi/")
        if at < 0:
            continue
        if root is None:
            root = f"{parts.scheme}://{parts.netloc}{parts.path[:at]}"
        found = WOPI_FILE.match(parts.path, at)
        if found:
            return root, (found.group("kind"), found.group("id"))
    return root, None


def _recorded_graph(recording: Recording) -> tuple[str | None, str | None]:
    """The recording's Graph root (its public URL) and version prefix (/v1.0 ...), from its first Graph URL."""
    for exchange in recording.exchanges:
        parts = urlsplit(exchange.url)
        for prefix in sorted(GRAPH_PREFIXES, key=len, reverse=True):
            at = _segments_at(parts.path, prefix)
            if at is not None and "/wopi/" not in parts.path[:at]:
                return f"{parts.scheme}://{parts.netloc}{parts.path[:at]}", prefix
    return None, None


def _segments_at(path: str, prefix: str) -> int | None:
    start = 0
    while (at := path.find(prefix, start)) >= 0:
        end = at + len(prefix)
        if end == len(path) or path[end] == "/":
            return at
        start = at + 1
    return None


def _wopisrc(wopisrc: str, recorded_file: tuple[str, str] | None, bindings: Bindings) -> str:
    problem = f"--wopisrc must be a WOPISrc such as http://host/wopi/files/FILE_ID, not {logs.redact(wopisrc)!r}"
    parts = _split(wopisrc, problem)
    found = WOPI_FILE.search(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or not found or found.end() != len(parts.path):
        raise UsageProblem(problem)
    if recorded_file is not None:
        kind, recorded_id = recorded_file
        if found.group("kind") != kind:
            raise UsageProblem(f"--wopisrc names {found.group('kind')}, the recording's first WOPISrc {kind}")
        bindings.values.setdefault(recorded_id, found.group("id"))
    return f"{parts.scheme}://{parts.netloc}{parts.path[: found.start()]}"


def _graph_base(base: str) -> tuple[str, str]:
    problem = f"--graph-base must be a Graph URL such as http://host/v1.0, not {logs.redact(base)!r}"
    parts = _split(base, problem)
    path = parts.path.rstrip("/")
    for prefix in sorted(GRAPH_PREFIXES, key=len, reverse=True):
        if path.endswith(prefix) and parts.scheme in ("http", "https") and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}{path[: -len(prefix)]}", prefix
    raise UsageProblem(problem)


def _split(url: str, problem: str) -> SplitResult:
    """`url` split, or UsageProblem(problem) for a URL no request can go to: every request would fail."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a port that is no number, or out of range: ValueError
    except ValueError:  # that, or "Invalid IPv6 URL"
        raise UsageProblem(problem) from None
    if any(ch.isspace() for ch in parts.netloc):
        raise UsageProblem(problem)
    return parts


def _add_root(bindings: Bindings, recorded: str, actual: str) -> None:
    bindings.add_prefix(recorded, actual)
    bindings.add_origin(_origin(recorded), _origin(actual))  # PostMessageOrigin and the like


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
