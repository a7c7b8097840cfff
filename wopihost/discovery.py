"""WOPI discovery (docs/wopi.md §6.1, §6.3): parsing the client's discovery XML, building action URLs,
and a per-process cache that fetches it.

Parsing and URL building are pure. `DiscoveryCache` does the fetching (urllib, or a callable the
caller passes), keeps the last good copy when a fetch fails, and is safe to share between threads.
Every worker process keeps its own cache.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from .clock import Clock
from .proof import ProofKeyError, ProofKeys, public_key_from_blob, public_key_from_modulus_exponent, same_public_key
from .shownurl import shown_source

log = logging.getLogger("wopihost.discovery")

NET_ZONE_PREFERENCE = ("external-https", "internal-https", "external-http", "internal-http")
DEFAULT_TTL_SECONDS = 12 * 3600
DEFAULT_RETRY_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 10
MAX_DISCOVERY_BYTES = 16 << 20  # Office's discovery is well under 1 MiB

# <name=PLACEHOLDER&> or <name=PLACEHOLDER>, docs/wopi.md §6.1
_PLACEHOLDER = re.compile(r"<([^<>=]*)=([A-Za-z0-9_]+)(&?)>")
_LEFTOVER = re.compile(r"<[^<>]*>")


class DiscoveryError(Exception):
    """Discovery could not be fetched or parsed, or holds something unusable."""


class ActionNotFound(DiscoveryError, LookupError):
    """Discovery has no action of that name for that extension (or progid)."""


@dataclass(frozen=True)
class Action:
    net_zone: str
    app: str
    name: str
    ext: str  # lower case, no dot; "" when the action is matched by progid or mime type
    urlsrc: str
    progid: str = ""
    requires: tuple[str, ...] = ()
    default: bool = False
    favicon: str = ""  # the app's favIconUrl: a host page shows it for the documents this action opens


@dataclass(frozen=True)
class Discovery:
    actions: tuple[Action, ...]
    proof_keys: ProofKeys | None  # None when the client publishes no proof key

    def find(
        self, *, ext: str | None = None, name: str | None = None, progid: str | None = None, net_zone: str | None = None
    ) -> list[Action]:
        """Actions matching every criterion given (ext without dot, case-insensitive)."""
        ext = _norm_ext(ext) if ext is not None else None
        found = []
        for action in self.actions:
            if ext is not None and action.ext != ext:
                continue
            if progid is not None and action.progid.lower() != progid.lower():
                continue
            if name is not None and action.name != name:
                continue
            if net_zone is not None and action.net_zone != net_zone:
                continue
            found.append(action)
        return found

    def action(
        self, ext: str | None, name: str, *, progid: str | None = None, net_zones: Sequence[str] = NET_ZONE_PREFERENCE
    ) -> Action:
        """The action `name` for an extension (or a progid), from the first net zone in `net_zones`
        that has it, else from any zone; ActionNotFound if there is none."""
        if progid:
            candidates = self.find(progid=progid, name=name)
        elif ext and _norm_ext(ext):
            candidates = self.find(ext=ext, name=name)
        else:  # a file without an extension: clients offer actions by extension only
            raise ActionNotFound(f"discovery has no {name!r} action for a file without an extension")
        if not candidates:
            raise ActionNotFound(
                f"discovery has no {name!r} action for " + (f"progid {progid!r}" if progid else f"extension {ext!r}")
            )
        for zone in net_zones:
            for action in candidates:
                if action.net_zone == zone:
                    return action
        return candidates[0]

    @property
    def extensions(self) -> frozenset[str]:
        return frozenset(action.ext for action in self.actions if action.ext)


# ------------------------------------------------------------------------------------------ parsing


def _norm_ext(ext: str) -> str:
    return ext.strip().lstrip(".").lower()


def _parse_xml(xml_bytes: bytes) -> ET.Element:
    """Parse with every DOCTYPE and entity declaration refused (entity expansion attacks, external
    entities) as soon as the parser meets it, before anything is expanded."""
    try:
        return defused_fromstring(xml_bytes, forbid_dtd=True)
    except DefusedXmlException:
        raise DiscoveryError("discovery XML must not contain a DOCTYPE or entity declarations") from None
    except ET.ParseError as exc:
        raise DiscoveryError(f"discovery is not well-formed XML: {exc}") from None


def _local(tag: str) -> str:
    """Tag name without its namespace ({uri}name, as ElementTree writes a namespaced tag)."""
    return tag.rpartition("}")[2]


def _attr(element: ET.Element, name: str) -> str:
    return (element.get(name) or "").strip()


def _parse_key(element: ET.Element, value_attr: str, modulus_attr: str, exponent_attr: str, what: str):
    value, modulus, exponent = (_attr(element, a) for a in (value_attr, modulus_attr, exponent_attr))
    try:
        from_numbers = None
        if modulus or exponent:
            if not (modulus and exponent):
                raise DiscoveryError(f"{what}: {modulus_attr} and {exponent_attr} must come together")
            from_numbers = public_key_from_modulus_exponent(modulus, exponent, what)
        from_blob = public_key_from_blob(value, what) if value else None
    except ProofKeyError as exc:
        raise DiscoveryError(f"discovery {exc}") from None
    if from_numbers is not None and from_blob is not None and not same_public_key(from_numbers, from_blob):
        raise DiscoveryError(f"discovery {what}: {modulus_attr}/{exponent_attr} and {value_attr} disagree")
    return from_numbers or from_blob


def _parse_proof_keys(root: ET.Element) -> ProofKeys | None:
    elements = [el for el in root.iter() if _local(el.tag) == "proof-key"]
    if not elements:
        return None
    if len(elements) > 1:
        raise DiscoveryError("discovery has more than one proof-key element")
    element = elements[0]
    current = _parse_key(element, "value", "modulus", "exponent", "proof key")
    old = _parse_key(element, "oldvalue", "oldmodulus", "oldexponent", "old proof key")
    if current is None:
        if old is not None:
            raise DiscoveryError("discovery proof-key has an old key but no current key")
        return None
    return ProofKeys(current, old)


def parse_discovery(xml_bytes: bytes) -> Discovery:
    """Parse a WOPI discovery document; DiscoveryError if it is malformed, declares a DOCTYPE or
    entities, or its proof keys are malformed or inconsistent."""
    if not isinstance(xml_bytes, (bytes, bytearray)):
        raise TypeError("parse_discovery expects bytes")
    root = _parse_xml(bytes(xml_bytes))
    if _local(root.tag) != "wopi-discovery":
        raise DiscoveryError(f"discovery root element is <{root.tag}>, not <wopi-discovery>")
    actions = []
    for zone in root:
        if _local(zone.tag) != "net-zone":
            continue
        zone_name = _attr(zone, "name")
        for app in zone:
            if _local(app.tag) != "app":
                continue
            app_name, favicon = _attr(app, "name"), _attr(app, "favIconUrl")
            for element in app:
                if _local(element.tag) != "action":
                    continue
                name, urlsrc = _attr(element, "name"), _attr(element, "urlsrc")
                if not name or not urlsrc:
                    log.debug("discovery: skipping an action without name or urlsrc in app %r", app_name)
                    continue
                requires = tuple(part.strip().lower() for part in _attr(element, "requires").split(",") if part.strip())
                actions.append(
                    Action(
                        net_zone=zone_name,
                        app=app_name,
                        name=name,
                        ext=_norm_ext(_attr(element, "ext")),
                        urlsrc=urlsrc,
                        progid=_attr(element, "progid"),
                        requires=requires,
                        default=_attr(element, "default").lower() == "true",
                        favicon=favicon,
                    )
                )
    return Discovery(actions=tuple(actions), proof_keys=_parse_proof_keys(root))


# -------------------------------------------------------------------------------------- action URLs


def transform_urlsrc(urlsrc: str, wopi_src: str, values: Mapping[str, str] | None = None) -> str:
    """Turn a discovery `urlsrc` template into an action URL (docs/wopi.md §6.1).

    Each optional part `<name=PLACEHOLDER[&]>` becomes `name=<value>[&]` when the placeholder is
    WOPI_SOURCE (the WOPISrc, URL-encoded) or a key of `values` (raw values, URL-encoded here), and
    disappears otherwise. Without a WOPI_SOURCE placeholder `WOPISrc=<encoded>` is appended.
    Empty query parameters left behind (`?&`, `&&`, a trailing `&`) are dropped.
    """
    known = {key: quote(str(value), safe="") for key, value in (values or {}).items()}
    known["WOPI_SOURCE"] = quote(wopi_src, safe="")
    has_source = False

    def substitute(match: re.Match) -> str:
        nonlocal has_source
        key, placeholder, amp = match.groups()
        if placeholder == "WOPI_SOURCE":
            has_source = True
        if placeholder not in known:
            return ""
        return f"{key}={known[placeholder]}{amp}"

    url = _PLACEHOLDER.sub(substitute, urlsrc)
    url = _LEFTOVER.sub("", url)  # anything else in angle brackets cannot belong in a URL
    if not has_source:
        url = with_query(url, "WOPISrc=" + known["WOPI_SOURCE"])
    return _tidy_query(url)


def with_query(url: str, parameters: str) -> str:
    """`url` with `parameters` (encoded, joined by &) added to its query, before any fragment."""
    base, hash_mark, fragment = url.partition("#")
    return base + ("&" if "?" in base else "?") + parameters + hash_mark + fragment


def _tidy_query(url: str) -> str:
    base, hash_mark, fragment = url.partition("#")
    path, question, query = base.partition("?")
    params = [p for p in query.split("&") if p]
    base = path + ("?" + "&".join(params) if params else "")
    return base + hash_mark + fragment


def action_url(
    discovery: Discovery,
    ext: str | None,
    action: str,
    wopi_src: str,
    *,
    values: Mapping[str, str] | None = None,
    progid: str | None = None,
    net_zones: Sequence[str] = NET_ZONE_PREFERENCE,
) -> str:
    """The URL of `action` (view, edit, editnew, ...) for a file extension (or progid), with the
    WOPISrc and the given placeholder `values` (e.g. {"UI_LLCC": "en-US", "DC_LLCC": "en-US"})
    filled in; ActionNotFound if discovery has no such action."""
    chosen = discovery.action(ext, action, progid=progid, net_zones=net_zones)
    return transform_urlsrc(chosen.urlsrc, wopi_src, values)


# ------------------------------------------------------------------------------------------ fetching


# urllib rather than requests: one GET every DISCOVERY_TTL needs no further runtime dependency, and requests
# would follow an https-to-http redirect as well, so the policy below would be needed either way.
class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to http (the proof keys would lose their protection)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old_scheme = urlsplit(req.full_url).scheme.lower()
        new_scheme = urlsplit(newurl).scheme.lower()
        if new_scheme not in ("http", "https") or (old_scheme == "https" and new_scheme != "https"):
            raise urllib.error.HTTPError(newurl, code, f"refusing redirect to {shown_source(newurl)}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in ("http", "https")


def fetch_source(source: str, timeout: float = DEFAULT_TIMEOUT_SECONDS, max_bytes: int = MAX_DISCOVERY_BYTES) -> bytes:
    """The discovery document at an http(s) URL or in a local file; DiscoveryError on failure."""
    try:
        if _is_url(source):
            opener = urllib.request.build_opener(_NoDowngradeRedirects)
            request = urllib.request.Request(
                source, headers={"User-Agent": "wopihost", "Accept": "application/xml, text/xml"}
            )
            deadline = time.monotonic() + timeout
            with opener.open(request, timeout=timeout) as response:
                data = _read_by(response, deadline, max_bytes + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise DiscoveryError(f"cannot fetch discovery from {shown_source(source)}: {exc}") from None
    if len(data) > max_bytes:
        raise DiscoveryError(f"discovery from {shown_source(source)} is larger than {max_bytes} bytes")
    return data


def _read_by(response, deadline: float, limit: int) -> bytes:
    """Up to `limit` bytes of `response`, read by `deadline`: the socket's timeout bounds each read, so a server
    that sends a byte now and then would otherwise hold the fetch, and every request waiting for the discovery,
    as long as it liked."""
    data = bytearray()
    while len(data) < limit:
        if time.monotonic() > deadline:
            raise TimeoutError("the discovery took longer than the timeout to arrive")
        piece = response.read1(min(1 << 16, limit - len(data)))
        if not piece:
            break
        data += piece
    return bytes(data)


class DiscoveryCache:
    """The WOPI client's discovery, fetched on first use and again when older than `ttl_seconds`.

    A failed fetch keeps the last good copy (and logs a warning); `get()` raises DiscoveryError only
    while there has never been a good copy. After a failure `get()` waits `retry_seconds` before
    trying again, so an unreachable client is not asked on every request. `refresh()` always
    fetches; `refresh_if_older_than()` is for the proof-failure path, where a flood of bad requests
    must not turn into a flood of discovery fetches.
    """

    def __init__(
        self,
        source: str,
        fetch: Callable[[str], bytes] | None = None,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Clock | None = None,
    ):
        if not source:
            raise ValueError("discovery source is empty")
        scheme = urlsplit(source).scheme.lower()
        if fetch is None and scheme not in ("http", "https") and len(scheme) > 1:
            raise ValueError(f"discovery source must be an http(s) URL or a file path: {source!r}")
        self.source = source
        self._fetch = fetch or (lambda src: fetch_source(src, timeout=timeout))
        self._ttl = timedelta(seconds=ttl_seconds)
        self._retry = timedelta(seconds=retry_seconds)
        self._clock = clock or Clock()
        self._lock = threading.Lock()
        self._discovery: Discovery | None = None
        self._fetched_at: datetime | None = None  # last successful fetch
        self._attempted_at: datetime | None = None  # last attempt, successful or not
        self._last_error: str | None = None

    @property
    def fetched_at(self) -> datetime | None:
        return self._fetched_at

    @property
    def last_error(self) -> str | None:
        """Why the latest fetch failed; None after a success."""
        return self._last_error

    def _due(self, now: datetime) -> bool:
        if self._attempted_at is not None and self._last_error is not None and now - self._attempted_at < self._retry:
            return False
        return self._fetched_at is None or now - self._fetched_at >= self._ttl

    def get(self) -> Discovery:
        """The cached discovery, refreshed first if it is older than the ttl."""
        current = self._discovery
        if current is not None and not self._due(self._clock.now()):
            return current
        if current is not None:
            # Stale but usable: if another thread is already fetching, don't queue behind it.
            if not self._lock.acquire(blocking=False):
                return current
        else:
            self._lock.acquire()
        try:
            if self._due(self._clock.now()):
                self._fetch_locked()
            return self._usable()
        finally:
            self._lock.release()

    def refresh(self) -> Discovery:
        """Fetch now (e.g. after a proof failed or passed only with the old key). On failure the
        last good copy stays and is returned; DiscoveryError if there never was one."""
        with self._lock:
            self._fetch_locked()
            return self._usable()

    def refresh_if_older_than(self, seconds: float) -> Discovery:
        """Fetch unless the last attempt was less than `seconds` ago; returns the discovery to use."""
        with self._lock:
            now = self._clock.now()
            if self._attempted_at is None or now - self._attempted_at >= timedelta(seconds=seconds):
                self._fetch_locked()
            return self._usable()

    def _usable(self) -> Discovery:
        if self._discovery is None:
            raise DiscoveryError(f"no discovery from {shown_source(self.source)} yet: {self._last_error}")
        return self._discovery

    def _fetch_locked(self) -> None:
        self._attempted_at = self._clock.now()
        try:
            discovery = parse_discovery(self._fetch(self.source))
        except Exception as exc:  # noqa: BLE001 - any failure of the fetch keeps the last good copy
            self._last_error = f"{type(exc).__name__}: {exc}"
            if self._discovery is not None:
                log.warning(
                    "discovery refresh from %s failed, keeping the copy fetched at %s: %s",
                    shown_source(self.source),
                    self._fetched_at,
                    self._last_error,
                )
            else:
                log.warning("discovery fetch from %s failed: %s", shown_source(self.source), self._last_error)
            return
        self._discovery = discovery
        self._fetched_at = self._attempted_at
        self._last_error = None
