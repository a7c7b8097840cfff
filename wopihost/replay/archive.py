"""Reading a recording: one HTTP Archive (HAR 1.2) file of one client session, as `wopihost serve --record`
writes it (docs/testing.md), into the exchanges a replay sends and the answers it compares with.

Anything that is not such a file is refused with one line saying where it stops being one. The file is read
whole: bodies over the recording's limit (WOPIHOST_RECORD_MAX_BODY) are only a size and a SHA-256 in it, so
its size does not grow with the bodies it describes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..har import HAR_VERSION, PLACEHOLDER
from ..text import is_unicode


class RecordingError(ValueError):
    """The file is not a recording; the message is one line."""


@dataclass(frozen=True)
class Body:
    """A recorded body: its bytes, or only their size and SHA-256 when it was over the recording's limit."""

    mime: str
    size: int
    sha256: str | None
    data: bytes | None
    text: bool  # recorded as text (JSON, text/*, forms, XML), not base64
    incomplete: bool = False  # only part of it passed: the server answered before reading it all, or it broke off

    @property
    def media_type(self) -> str:
        return self.mime.split(";")[0].strip().lower()


@dataclass(frozen=True)
class Exchange:
    number: int  # 1, 2 ... in the recording's order
    started: datetime
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: Body | None  # None: the request had no body
    status: int
    response_headers: tuple[tuple[str, str], ...]
    content: Body
    operation: str  # wopihost's name for it (CheckFileInfo ...), else its X-WOPI-Override, else its method
    override: str | None

    @property
    def path(self) -> str:
        """The recorded URL's path: on WOPI, the file (or container) the request is about."""
        return urlsplit(self.url).path

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def response_header(self, name: str) -> str | None:
        return _header(self.response_headers, name)


@dataclass(frozen=True)
class Recording:
    name: str
    session: str  # the placeholder of the credential that defines the session, e.g. {{access_token:1}}
    face: str | None
    max_body: int | None
    exchanges: tuple[Exchange, ...]


def _url(text: str) -> bool:
    try:
        urlsplit(text)
    except ValueError:  # "Invalid IPv6 URL"
        return False
    return True


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name.lower()]
    return ", ".join(values) if values else None


def read(path: Path) -> Recording:
    try:
        with open(path, "rb") as f:
            document = json.load(f)
    except OSError as error:
        raise RecordingError(f"{path}: {error.strerror or error}") from None
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        raise RecordingError(f"{path} is not a recording: it is not JSON") from None
    return parse(document, str(path))


def parse(document: Any, name: str) -> Recording:
    return _Reader(name).recording(document)


class _Reader:
    def __init__(self, name: str):
        self.name = name

    def fail(self, where: str, what: str) -> RecordingError:
        return RecordingError(f"{self.name} is not a recording: {where} {what}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            if default is not ...:
                return default
            raise self.fail(f"{where}.{key}", "is missing")
        value, kinds = obj[key], kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.fail(f"{where}.{key}", f"is not {_kind_name(kind)}")
        if isinstance(value, str) and not is_unicode(value):  # JSON's "\ud800", which nothing can print or send
            raise self.fail(f"{where}.{key}", "is not valid Unicode (it holds an unpaired surrogate)")
        return value

    def recording(self, document: Any) -> Recording:
        if not isinstance(document, dict) or not isinstance(document.get("log"), dict):
            raise self.fail("the file", "has no HAR log object")
        log = document["log"]
        version = self.get(log, "version", str, "log")
        if version != HAR_VERSION:
            raise self.fail("log.version", f"is {version!r}, not {HAR_VERSION!r}")
        own = self.get(log, "_wopihost", dict, "log", None)
        if own is None:
            raise self.fail("log._wopihost", "is missing (a HAR written by another tool?)")
        session = self.get(own, "session", str, "log._wopihost")
        if not PLACEHOLDER.fullmatch(session):
            raise self.fail(
                "log._wopihost.session", f"is {session!r}, not a placeholder such as {{{{access_token:1}}}}"
            )
        face = self.get(own, "face", str, "log._wopihost", None)
        max_body = self.get(own, "max_body", int, "log._wopihost", None)
        entries = self.get(log, "entries", list, "log")
        if not entries:
            raise self.fail("log.entries", "is empty: no requests to replay")
        exchanges = tuple(self.exchange(entry, n) for n, entry in enumerate(entries, 1))
        return Recording(self.name, session, face, max_body, exchanges)

    def exchange(self, entry: Any, number: int) -> Exchange:
        where = f"log.entries[{number - 1}]"
        if not isinstance(entry, dict):
            raise self.fail(where, "is not an object")
        started_text = self.get(entry, "startedDateTime", str, where)
        try:
            started = datetime.fromisoformat(started_text)
        except ValueError:
            raise self.fail(f"{where}.startedDateTime", f"is not an ISO 8601 time: {started_text!r}") from None
        if started.tzinfo is None:  # HAR's times carry one; without, --speed recorded could not space them
            raise self.fail(f"{where}.startedDateTime", f"has no UTC offset: {started_text!r}")
        request = self.get(entry, "request", dict, where)
        response = self.get(entry, "response", dict, where)
        method = self.get(request, "method", str, f"{where}.request")
        url = self.get(request, "url", str, f"{where}.request")
        if not url.startswith(("http://", "https://")) or not _url(url):
            raise self.fail(f"{where}.request.url", f"is not an absolute http(s) URL: {url[:100]!r}")
        headers = self.headers(request, f"{where}.request")
        post = self.get(request, "postData", dict, f"{where}.request", None)
        body = None if post is None else self.body(post, f"{where}.request.postData", request)
        status = self.get(response, "status", int, f"{where}.response")
        content = self.body(self.get(response, "content", dict, f"{where}.response"), f"{where}.response.content")
        own = self.get(entry, "_wopihost", dict, where, {})
        override = self.get(own, "override", (str, type(None)), f"{where}._wopihost", None)
        operation = self.get(own, "operation", (str, type(None)), f"{where}._wopihost", None)
        if override is None:
            override = _header(headers, "X-WOPI-Override")
        override = override.strip().upper() if override else None
        return Exchange(
            number,
            started,
            method.upper(),
            url,
            headers,
            body,
            status,
            self.headers(response, f"{where}.response"),
            content,
            operation or override or method.upper(),
            override,
        )

    def headers(self, message: dict, where: str) -> tuple[tuple[str, str], ...]:
        pairs = []
        for i, header in enumerate(self.get(message, "headers", list, where)):
            name = self.get(header, "name", str, f"{where}.headers[{i}]")
            pairs.append((name, self.get(header, "value", str, f"{where}.headers[{i}]")))
        return tuple(pairs)

    def body(self, obj: dict, where: str, request: dict | None = None) -> Body:
        mime = self.get(obj, "mimeType", str, where, "")
        sha256 = self.get(obj, "_sha256", str, where, None)
        text = self.get(obj, "text", str, where, None)
        # a request's postData says base64 with _encoding, a response's content with encoding (HAR's own key)
        encoding = self.get(obj, "_encoding" if request is not None else "encoding", str, where, None)
        incomplete = self.get(obj, "_incomplete", bool, where, False)
        if text is None:
            if request is not None:
                size = self.get(obj, "_size", int, where)
            else:
                size = self.get(obj, "size", int, where)
            if size and sha256 is None:
                raise self.fail(where, "has neither text nor _sha256")
            return Body(mime, size, sha256, None if size else b"", False, incomplete)
        if encoding == "base64":
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise self.fail(f"{where}.text", "is not valid base64") from None
        elif encoding is None:
            data = text.encode("utf-8", "surrogatepass")
        else:
            raise self.fail(where, f"has an encoding {encoding!r} other than base64")
        return Body(mime, len(data), sha256, data, encoding is None, incomplete)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", dict: "an object", list: "an array", type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
