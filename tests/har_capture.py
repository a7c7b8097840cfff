"""A test client that writes what it sends and receives as a recording in the format `wopihost serve --record`
writes (docs/testing.md): HAR 1.2, one client session, each secret replaced by a placeholder `{{kind:N}}`.

The replay tests build their recordings with it from real exchanges with a real server. It is not the
recorder: it knows only the secrets a test registers (`secret`, or `secrets_in` for the URLs an answer hands
out), and checks that nothing of a credential's shape is left when it writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import requests

from wopihost import __version__, logs
from wopihost.cspp import frames
from wopihost.har import HAR_VERSION, PLACEHOLDER, placeholder

FRAMED = ("PUT_CHUNKED_FILE", "GET_CHUNKED_FILE", "GET_CHUNKS")
TEXT_TYPES = re.compile(r"application/json|[\w.+-]+/[\w.-]*\+json|text/.*|application/x-www-form-urlencoded|.*xml")
# where answers hand out credentials, and the kind of each
URL_SECRETS = (
    (re.compile(r"[?&]access_token=([^&#\"]+)"), "access_token"),
    (re.compile(r"/uploadSessions/([^/?#\"]+)"), "upload_session"),
    (re.compile(r"/downloads?/([^/?#\"]+)"), "download"),
    (re.compile(r"/(?:s|shares)/([^/?#\"]+)"), "share"),
    (re.compile(r"/host/(?:view|edit|editnew)/([^/?#\"]+)"), "launch"),
)


class Capture:
    def __init__(self, session: str, kind: str = "access_token", max_body: int = 1 << 20):
        self.http = requests.Session()
        self.http.trust_env = False
        self.max_body = max_body
        self.kind = kind
        self.entries: list[dict] = []
        self.secrets: dict[str, str] = {}  # value -> kind, in order of registration
        self.secret(session, kind)
        self.session = session

    def secret(self, value: str, kind: str) -> None:
        self.secrets.setdefault(value, kind)

    def secrets_in(self, value) -> None:
        """Register the credentials in the URLs of a JSON value (FileUrl, HostViewUrl, uploadUrl, Url ...)."""
        if isinstance(value, dict):
            for item in value.values():
                self.secrets_in(item)
        elif isinstance(value, list):
            for item in value:
                self.secrets_in(item)
        elif isinstance(value, str):
            for pattern, kind in URL_SECRETS:
                for found in pattern.finditer(value):
                    self.secret(found.group(1), kind)

    def send(self, method: str, url: str, headers: dict | None = None, body: bytes | None = None, operation=None):
        prepared = self.http.prepare_request(requests.Request(method, url, headers=headers or {}, data=body))
        started = datetime.now(UTC)
        begun = time.monotonic()
        reply = self.http.send(prepared, allow_redirects=False)
        self.entries.append(
            {
                "started": started,
                "time": (time.monotonic() - begun) * 1000,
                "method": method,
                "url": prepared.url,
                "headers": list(prepared.headers.items()),
                "body": prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode(),
                "sent_body": body is not None,
                "status": reply.status_code,
                "reason": reply.reason,
                "response_headers": list(reply.raw.headers.items()),
                "content": reply.content,
                "operation": operation,
                "override": prepared.headers.get("X-WOPI-Override"),
            }
        )
        return reply

    # -- writing

    def placeholders(self) -> dict[str, str]:
        numbers: dict[str, int] = {}
        result = {}
        for value, kind in self.secrets.items():
            numbers[kind] = numbers.get(kind, 0) + 1
            result[value] = placeholder(kind, numbers[kind])
        return result

    def hide(self, text: str) -> str:
        for value, name in sorted(self.placeholders().items(), key=lambda item: -len(item[0])):
            text = text.replace(value, name).replace(quote(value, safe=""), name)
        return text

    def har(self) -> dict:
        entries = [self._entry(e) for e in self.entries]
        document = {
            "log": {
                "version": HAR_VERSION,
                "creator": {"name": "wopihost", "version": __version__},
                "comment": "written by tests/har_capture.py",
                "_wopihost": {
                    "session": self.placeholders()[self.session],
                    "face": "graph" if self.kind == "api_token" else "wopi",
                    "max_body": self.max_body,
                },
                "pages": [],
                "entries": entries,
            }
        }
        _check_no_secret(document)
        return document

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.har(), indent=1))
        return path

    def _entry(self, e: dict) -> dict:
        url = self.hide(e["url"])
        request = {
            "method": e["method"],
            "url": url,
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": k, "value": self.hide(v)} for k, v in e["headers"]],
            "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, True)],
            "cookies": [],
            "headersSize": -1,
            "bodySize": len(e["body"]),
        }
        if e["sent_body"]:
            request["postData"] = self._body(e["body"], _header(e["headers"], "Content-Type"), e["override"], True)
        content = self._body(e["content"], _header(e["response_headers"], "Content-Type"), None, False)
        return {
            "startedDateTime": e["started"].isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "time": e["time"],
            "request": request,
            "response": {
                "status": e["status"],
                "statusText": e["reason"],
                "httpVersion": "HTTP/1.1",
                "headers": [{"name": k, "value": self.hide(v)} for k, v in e["response_headers"]],
                "cookies": [],
                "content": content,
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": len(e["content"]),
            },
            "cache": {},
            "timings": {"send": 0, "wait": e["time"], "receive": 0},
            "_wopihost": {"override": e["override"], "operation": e["operation"], "worker": 0},
        }

    def _body(self, data: bytes, mime: str | None, override: str | None, request: bool) -> dict:
        mime = mime or ""
        digest = hashlib.sha256(data).hexdigest()
        if len(data) > self.max_body:
            size = {"_size": len(data)} if request else {"size": len(data)}
            return {"mimeType": mime, **size, "_sha256": digest}
        body: dict = {"mimeType": mime} if request else {"size": len(data), "mimeType": mime}
        if override and override.upper() in FRAMED:
            data = self._framed(data)
        elif TEXT_TYPES.fullmatch(mime.split(";")[0].strip().lower()):
            try:
                body["text"] = self.hide(data.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        if "text" not in body:
            body["text"] = base64.b64encode(data).decode("ascii")
            body["_encoding" if request else "encoding"] = "base64"
        body["_sha256"] = digest
        return body

    def _framed(self, data: bytes) -> bytes:
        end = frames.HEADER_SIZE + int.from_bytes(data[8:16], "big")
        message = json.loads(self.hide(data[frames.HEADER_SIZE : end].decode("utf-8")))
        return frames.message_frame(message) + data[end:]


def _check_no_secret(value, base64_text: bool = False) -> None:
    """Nothing the logs would redact is left in any string, but for the placeholders (shown as the logs show
    secrets) and base64 bodies (where letters and digits run long by chance)."""
    if isinstance(value, dict):
        encoded = "base64" in (value.get("encoding"), value.get("_encoding"))
        for key, item in value.items():
            _check_no_secret(item, encoded and key == "text")
    elif isinstance(value, list):
        for item in value:
            _check_no_secret(item)
    elif isinstance(value, str) and not base64_text:
        text = PLACEHOLDER.sub(logs.REDACTED, value)
        assert logs.redact(text) == text, f"a secret the test did not register is left in the recording: {value}"


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)
