"""The WSGI layer that records each WOPI and Graph exchange into the spool, one line per exchange.

What the request says (URL, headers) is taken as it arrives, redacted at once, before anything else looks at
the environ; its body as the application reads it (body.BODY_TAP: every read of a request body goes through
wopihost/body.py), hashed whole and kept up to the size limit; the response as the server takes it. A body
the server sends by itself (sendfile, a GetFile) is left to it, untouched and unbuffered: once it has been
sent, the recorder reads the range that was sent from the file itself, or, for a whole file larger than it
keeps, takes the file's SHA-256 the application knows (streaming.CONTENT_SHA256). Nothing is written until the
server closes the response: then one line, with one write.

Requests with no credential at all (no access_token, no Authorization, no credential in the path) are left
alone: they belong to no client session (docs/testing.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence

from .. import graph
from ..body import BODY_FAILED, BODY_TAP
from ..config import Settings
from ..credentials import CREDENTIALS, SHAPES
from ..har import is_json
from ..logs import OPERATION
from ..requesturl import called_url
from ..storage import PIECE
from ..streaming import CONTENT_SHA256
from ..text import digits
from ..wsgibody import Watched
from .redaction import Redactor, Seen
from .spool import SpoolWriter

log = logging.getLogger("wopihost.recording")
# Secrets in a request path that a session's earlier response handed out: such a request belongs to that session.
HANDED_OUT = ("upload_session", "download", "monitor", "share")
_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "application/xml")


class Recorder:
    """`app`, recording every WOPI and Graph exchange with a credential into `settings.record_dir`."""

    def __init__(self, app, settings: Settings, spool: SpoolWriter | None = None):
        assert settings.record_dir is not None
        self.app = app
        self.public_url, self.trusted_proxies = settings.public_url, settings.trusted_proxies
        self.max_body = settings.record_max_body
        self.redactor = Redactor(settings.secret_key)
        self.spool = spool or SpoolWriter(settings.record_dir)
        self._failed = False  # said once in the log: a recording that cannot be written must not fail requests

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        face = "wopi" if path.startswith("/wopi/") else "graph" if graph.handles(path) else None
        exchange = _Exchange.begin(self, environ, face, start_response) if face is not None else None
        if exchange is None:
            return self.app(environ, start_response)
        environ[BODY_TAP] = exchange.request_body
        body = self.app(environ, exchange.start_response)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(body, wrapper):
            fd = _fileno(body.filelike)
            if fd is not None:
                # The server may send it with sendfile: it must get the wrapper itself, and the recorder reads
                # what it sent from the file once it closes it, from where the server starts (gunicorn too
                # starts at the file's position).
                exchange.file = fd, os.lseek(fd, 0, os.SEEK_CUR)
                exchange.close_body = getattr(body, "close", None)
                body.close = exchange.close_file
                return body
        return Watched(body, exchange.response_body, exchange.finish)

    def write(self, pieces: list[bytes]) -> None:
        try:
            self.spool.write(pieces)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.error("recording: cannot write to %s: %s; exchanges go unrecorded", self.spool.directory, exc)


class Capture:
    """A body as it passes: its size and SHA-256, and its bytes while they are no more than `limit`; past it,
    what `scan` (if set) makes of them as they pass."""

    __slots__ = ("size", "digest", "known", "kept", "limit", "last", "scan")

    def __init__(self, limit: int):
        self.size, self.limit = 0, limit
        self.digest = hashlib.sha256()
        self.known: str | None = None  # the body's SHA-256 when the application knew it, instead of `digest`
        self.kept: bytearray | None = bytearray()
        self.last = 0.0  # when the last piece passed (time.perf_counter), 0 if none did
        self.scan: _HandedOut | None = None

    def __call__(self, piece) -> None:
        self.size += len(piece)
        self.digest.update(piece)
        if self.kept is not None:
            if self.size <= self.limit:
                self.kept += piece
            else:
                if self.scan is not None:
                    self.scan(self.kept)
                    self.scan(piece)
                self.kept = None  # larger than the limit: size and hash only
        elif self.scan is not None:
            self.scan(piece)
        self.last = time.perf_counter()

    def sha256(self) -> str:
        return self.known or self.digest.hexdigest()


class _HandedOut:
    """The credentials an API answer too large to keep hands out (a Graph listing's download URLs), found as its
    pieces pass, so that the requests that use them still join its session. The end of each piece is searched
    again with the next: no credential is longer than _CARRY, so none cut between two pieces is missed (its
    first part found alone is a placeholder nothing uses)."""

    _CARRY = 4096

    def __init__(self, redactor: Redactor):
        self.redactor, self._tail = redactor, ""
        self.found: Seen = []

    def __call__(self, piece) -> None:
        text = self._tail + bytes(piece).decode("latin-1")  # every credential's shape is ASCII
        self.redactor.text(text, self.found)
        self._tail = text[-self._CARRY :]


class _Exchange:
    """One recorded request and its response, from arrival until the server closes the response."""

    __slots__ = (
        "recorder",
        "environ",
        "face",
        "wall",
        "started",
        "request",
        "session",
        "uses",
        "known",
        "request_body",
        "response_body",
        "status",
        "headers",
        "responded",
        "file",
        "close_body",
        "_start_response",
    )
    headers: Sequence[tuple[str, str]]

    def __init__(self, recorder: Recorder, environ: dict, face: str, start_response, request: dict):
        self.recorder, self.environ, self.face, self._start_response = recorder, environ, face, start_response
        self.wall, self.started = time.time(), time.perf_counter()
        self.request = request
        self.session: str | None = None
        self.uses: list[str] = []
        self.known: Seen = []  # the secrets of the request's URL and headers, searched for in its bodies
        self.request_body, self.response_body = Capture(recorder.max_body), Capture(recorder.max_body)
        self.status, self.headers, self.responded = "500 INTERNAL SERVER ERROR", (), 0.0
        self.file: tuple[int, int] | None = None  # (fd, offset) of a body the server sends from a file itself
        self.close_body = None

    @classmethod
    def begin(cls, recorder: Recorder, environ: dict, face: str, start_response) -> _Exchange | None:
        """The exchange, its request redacted; None for a request with no credential."""
        redactor = recorder.redactor
        seen: Seen = []
        url = redactor.text(called_url(environ, recorder.public_url, recorder.trusted_proxies), seen)
        session = next((secret.placeholder for secret in seen if secret.kind == "access_token"), None)
        uses = [secret.placeholder for secret in seen if secret.kind in HANDED_OUT]
        # On WOPI a Bearer token is an access token (wopi/requests.py), the query's own when both are sent, as
        # Office for the web and the validators send them: one value, one placeholder wherever it is
        bearer = "access_token" if face == "wopi" else "api_token"
        headers, in_headers, authorization = _request_headers(redactor, environ, bearer)
        if session is None:
            session = authorization
        if session is None and not uses:
            return None
        request = {
            "method": environ.get("REQUEST_METHOD", ""),
            "url": url,
            "httpVersion": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "headers": headers,
        }
        exchange = cls(recorder, environ, face, start_response, request)
        exchange.session, exchange.uses, exchange.known = session, uses, seen + in_headers
        return exchange

    def start_response(self, status: str, headers, exc_info=None):
        self.status, self.headers, self.responded = status, headers, time.perf_counter()
        if is_text(next((value for name, value in headers if name.lower() == "content-type"), "")):
            self.response_body.scan = _HandedOut(self.recorder.redactor)
        return self._start_response(status, headers, exc_info)

    def close_file(self) -> None:
        try:
            self._read_file()  # before the file is closed
        finally:
            try:
                if self.close_body is not None:
                    self.close_body()
            finally:
                self.finish()

    def _read_file(self) -> None:
        """What the server sent of the file it was handed, read again from the file (os.pread: the file's
        position is left alone), piece by piece."""
        assert self.file is not None
        fd, offset = self.file
        capture, left = self.response_body, self._sent_by_server()
        size, known = self.environ.get(CONTENT_SHA256, (None, None))
        if left == size and left > capture.limit:  # the whole content, which is not kept: no need to read it
            capture.size, capture.known, capture.kept = left, base64.b64decode(known).hex(), None
            return
        try:
            while left > 0:
                piece = os.pread(fd, min(left, PIECE), offset)
                if not piece:
                    break
                capture(piece)
                offset += len(piece)
                left -= len(piece)
        except OSError as exc:
            log.warning("recording: cannot read the body sent from a file: %s", exc)

    def _sent_by_server(self) -> int:
        """What the server sent of a file it was handed: our worker's socket counts what sendfile sent
        (wopihost/worker.py); otherwise the server wrote it all (its Content-Length), or gave up partway."""
        declared = self._response_length()
        if declared == 0:
            return 0
        sent = getattr(self.environ.get("gunicorn.socket"), "sendfile_sent", None)
        return sent if sent is not None else declared or 0

    def _response_length(self) -> int | None:
        """The length of the response's body as its head declares it: 0 where none is sent (HEAD, 204, 304),
        None where the head says nothing (a chunked body)."""
        if self.environ.get("REQUEST_METHOD") == "HEAD" or self.status[:3] in ("204", "304"):
            return 0
        length = next((value for name, value in self.headers if name.lower() == "content-length"), "")
        return int(length) if digits(length) else None

    def finish(self) -> None:
        try:
            pieces = self._line()
        except Exception:  # a recording never fails a request
            log.exception("recording: cannot record %s %s", self.request["method"], self.request["url"])
            return
        self.recorder.write(pieces)

    def _line(self) -> list[bytes]:
        """The spool line, in pieces for one writev: the JSON around the base64 of binary bodies, which needs no
        escaping and so is not passed through the JSON encoder (it would scan a megabyte for nothing)."""
        ended = time.perf_counter()
        raw = _RawPieces()
        redactor, environ = self.recorder.redactor, self.environ
        request_body, response_body = self.request_body, self.response_body
        read_until = request_body.last or self.started
        responded = self.responded or ended
        request = self.request
        request["cookies"], request["headersSize"], request["bodySize"] = [], -1, request_body.size
        if request_body.size or _declares_body(environ):
            request["postData"] = _post_data(redactor, request_body, environ.get("CONTENT_TYPE", ""), self.known, raw)
            _say_if_incomplete(
                request["postData"], "read", request_body.size, _declared(environ), environ.get(BODY_FAILED)
            )
        hands: Seen = []
        headers = [{"name": name, "value": redactor.header(name.lower(), value, hands)} for name, value in self.headers]
        mime = next((h["value"] for h in headers if h["name"].lower() == "content-type"), "")
        code, _, reason = self.status.partition(" ")
        timings = {
            "send": _ms(read_until - self.started),
            "wait": _ms(max(0.0, responded - read_until)),
            "receive": _ms(ended - responded),
        }
        content = _content(redactor, response_body, mime, hands, self.known, raw)
        if response_body.scan is not None:  # (what it found, when the answer was too large to keep)
            hands += response_body.scan.found
        _say_if_incomplete(content, "sent", response_body.size, self._response_length())
        entry = {
            "time": round(timings["send"] + timings["wait"] + timings["receive"], 3),
            "request": request,
            "response": {
                "status": int(code) if code.isdigit() else 0,
                "statusText": reason,
                "httpVersion": request["httpVersion"],
                "headers": headers,
                "cookies": [],
                "content": content,
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": response_body.size,
            },
            "cache": {},
            "timings": timings,
            "_wopihost": {
                "override": next((h["value"] for h in request["headers"] if h["name"] == "X-WOPI-Override"), None),
                "operation": environ.get(OPERATION),
                "worker": os.getpid(),
            },
        }
        line = {
            "entry": entry,  # first: assembly numbers the secrets in the order they appear
            "t": self.wall,
            "face": self.face,
            "session": self.session,
            "uses": self.uses,
            "hands": sorted({secret.placeholder for secret in hands if secret.kind in HANDED_OUT}),
            "max_body": self.recorder.max_body,
        }
        return raw.splice(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _fileno(filelike) -> int | None:
    """The file descriptor under a response body, if the server could sendfile it (gunicorn's util.has_fileno)."""
    try:
        return filelike.fileno()
    except (AttributeError, OSError, ValueError):
        return None


# -- the request's headers, as they came ----------------------------------------------------------------------

_HEADER_NAMES: dict[str, str] = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


def _header_name(key: str) -> str | None:
    """The header an environ key holds, in its usual spelling (the server has lost the client's), or None."""
    name = _HEADER_NAMES.get(key)
    if name is None and key.startswith("HTTP_"):
        name = "-".join(part.capitalize() for part in key[5:].split("_"))
        if name.startswith("X-Wopi-"):
            name = "X-WOPI-" + name[7:]
        if len(_HEADER_NAMES) < 1024:  # clients' own headers are not remembered past that
            _HEADER_NAMES[key] = name
    return name


def _request_headers(redactor: Redactor, environ: dict, bearer: str) -> tuple[list[dict], Seen, str | None]:
    """The request's headers in the order they came (the server puts them into the environ in that order,
    repeated ones joined), redacted; the secrets found in them; and the placeholder of an `Authorization:
    Bearer` credential (of kind `bearer`), if there is one."""
    headers: list[dict] = []
    seen: Seen = []
    authorization = None
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = _header_name(key)
            if name is not None and isinstance(value, str):
                found = len(seen)
                headers.append({"name": name, "value": redactor.header(name.lower(), value, seen, bearer)})
                if key == "HTTP_AUTHORIZATION" and seen[found:] and seen[-1].kind == bearer:
                    authorization = seen[-1].placeholder
    return headers, seen, authorization


def _declares_body(environ: dict) -> bool:
    length = environ.get("CONTENT_LENGTH", "")
    return (digits(length) and int(length) > 0) or "HTTP_TRANSFER_ENCODING" in environ


def _declared(environ: dict) -> int | None:
    length = environ.get("CONTENT_LENGTH", "")
    return int(length) if digits(length) else None


# -- bodies ---------------------------------------------------------------------------------------------------


def is_text(mime: str) -> bool:
    """Whether a body of this type is written as text (if it is UTF-8); everything else is binary."""
    kind = mime.partition(";")[0].strip().lower()
    return kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(("+json", "+xml"))


class _RawPieces:
    """Base64 text that goes into a spool line as it is: the JSON holds a marker in its place (private-use
    characters around a nonce of this process, which no client can send by chance), replaced by `splice`."""

    _NONCE = secrets.token_hex(8)

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def add(self, data) -> str:
        self.pieces.append(binascii.b2a_base64(data, newline=False))
        return self._marker(len(self.pieces) - 1)

    def _marker(self, i: int) -> str:
        return f"\ue000{self._NONCE}:{i}\ue000"

    def splice(self, line: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        for i, piece in enumerate(self.pieces):
            head, _, line = line.partition(self._marker(i).encode("utf-8"))
            pieces += (head, piece)
        pieces.append(line + b"\n")
        return pieces


def _stored(redactor: Redactor, capture: Capture, mime: str, seen: Seen | None, known: Seen, raw: _RawPieces) -> dict:
    """The fields that hold a body captured whole (no more than the limit), whatever its type, searched for
    secrets: its text, or base64; a CSPP framed body whose MessageJSON holds a secret as that MessageJSON's text
    (`_message`, redacted) and the bytes after it (`_rest`, base64), for assembly to put together once the
    secrets are numbered. A body the server is sent or sends as binary (no type, application/octet-stream) may
    still be JSON it reads: one holding a secret is written as its text, redacted, when it is UTF-8; a body whose
    secrets cannot be replaced in what is written (its bytes are not UTF-8) as its size alone."""
    data = capture.kept
    assert data is not None
    if not data:
        return {"text": ""}
    try:
        framed = redactor.framed(data, seen, known)
    except UnicodeDecodeError:  # a MessageJSON that is not UTF-8 cannot be searched for secrets
        return _withheld(capture)
    if framed is not None:  # (a framed body is binary, whatever its type says)
        message, end = framed
        if redactor.in_binary(data, known, end, SHAPES):  # its chunks, a document's bytes, hold a secret
            return _withheld(capture)
        if message is None:
            return _base64(raw, data)
        return {"_message": message, "_rest": raw.add(memoryview(data)[end:])}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Base64 would carry a secret whole: searched all the same, where it can be (every credential's shape
        # is ASCII), and written as its size if it holds one.
        pattern = _patterns(mime, data.decode("latin-1"))
        return _withheld(capture) if redactor.in_binary(data, known, 0, pattern) else _base64(raw, data)
    redacted = redactor.text(text, seen, known, _patterns(mime, text))
    if is_text(mime) or redacted != text:
        return {"text": redacted}
    return _base64(raw, data)


def _base64(raw: _RawPieces, data) -> dict:
    return {"text": raw.add(data), "encoding": "base64"}


def _patterns(mime: str, text: str) -> re.Pattern:
    """What a body is searched for: every credential in an API's text, which a body typed as text is, and one sent
    as binary that is JSON (a Graph sourceUrl sent with no type); only our tokens' shapes in any other, a
    document, whose URLs and paths are its own (`.../downloads/release/...`, a PDF's `/S/Transparency`)."""
    return CREDENTIALS if is_text(mime) or is_json(text) else SHAPES


def _withheld(capture: Capture) -> dict:
    return {
        "_size": capture.size,
        "comment": "it holds a secret and is not UTF-8 text, in which a placeholder could replace it: "
        "only its size and SHA-256 are recorded",
    }


def _post_data(redactor: Redactor, capture: Capture, mime: str, known: Seen, raw: _RawPieces) -> dict:
    post: dict = {"mimeType": mime}
    if capture.kept is not None:
        stored = _stored(redactor, capture, mime, None, known, raw)
        if "encoding" in stored:
            stored["_encoding"] = stored.pop("encoding")
        post.update(stored)
    else:
        post["_size"] = capture.size
    post["_sha256"] = capture.sha256()
    return post


def _say_if_incomplete(body: dict, verb: str, size: int, declared: int | None, broken: object = False) -> None:
    """Mark a body that passed only in part (`_incomplete`, and why, in its comment): a request's the server did
    not read whole (it answered first, or the body broke off: docs/testing.md), a response's the client did not
    get whole. A replay cannot send the one, nor compare the other."""
    if declared is not None and size < declared:
        why = f"the server {verb} {size} of the {declared} bytes"
    elif broken:
        why = f"the body broke off, or the server gave it up, after {size} bytes"
    else:
        return
    why += "; bodySize and _sha256 are of those"
    body["_incomplete"] = True
    body["comment"] = f"{body['comment']}; {why}" if "comment" in body else why


def _content(redactor: Redactor, capture: Capture, mime: str, seen: Seen, known: Seen, raw: _RawPieces) -> dict:
    content: dict = {"size": capture.size, "mimeType": mime}
    if capture.kept is not None:
        content.update(_stored(redactor, capture, mime, seen, known, raw))
    content["_sha256"] = capture.sha256()
    return content


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
