"""HTTP for the validator: one request as built, no redirects followed, the body read as raw bytes.

The request carries only the headers the validator sends (no User-Agent or Accept-Encoding of our own), so
that the host sees what it would see from the .NET validator, and the body is read without content
decoding so that Content-Length can be checked against it. The final URL, after the HTTP library has
normalised it, is what gets signed.

A request that gets no HTTP response at all (connection refused, timeout, a malformed reply) becomes a
response with status 306 and the error in X-WOPI-ValidatorError, as the validator's ExceptionHelper does;
the NoException check, present whenever a request lists its checks, turns that into a failure.
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from ..logs import redact
from .httpclient import KEEP_LIMIT, Client, read

# What a request that got no answer raises, from the connection to a body that cannot be read or decoded: for
# the tools that report it as a test's result (here, and wopihost replay) rather than crash.
NO_ANSWER: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)

EXCEPTION_STATUS = 306  # HttpStatusCode.Unused
VALIDATOR_ERROR = "X-WOPI-ValidatorError"
TIMEOUT = 100.0  # HttpWebRequest's default


@dataclass
class HttpCall:
    """A request ready to send. `sign`, given the final URL, returns the proof headers to add."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    text_expected: bool = True
    sign: Callable[[str], dict[str, str]] | None = None
    user_agent: str | None = None


@dataclass
class Response:
    """An answer. Its body is kept only up to KEEP_LIMIT (httpclient.py), as no check needs more (the test
    resources are kilobytes): a longer one is known by its size and SHA-256 alone, and `body` is empty."""

    status: int
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""
    text_expected: bool = True
    elapsed: float = 0.0
    url: str | None = None
    size: int = -1  # the body's length; -1: len(body)
    sha256: str = ""  # the body's SHA-256; "": that of body

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.body)
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.body).hexdigest()

    @property
    def kept(self) -> bool:
        """Whether `body` is all of it."""
        return len(self.body) == self.size

    @property
    def error(self) -> str | None:
        """The exception that stood in for a response, if this is not a real one."""
        return self.headers.get(VALIDATOR_ERROR) if self.status == EXCEPTION_STATUS else None

    @property
    def text(self) -> str | None:
        """The body as text when the request expects text (UTF-8 unless a byte order mark says otherwise),
        else None: the JSON checks and JSON state fail on GetFile, GetChunkedFile and the like, and on a body
        too long to be kept."""
        if not self.text_expected or not self.kept:
            return None
        return decode_text(self.body)


def decode_text(body: bytes) -> str:
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, "replace")
    return body.decode("utf-8", "replace")


def exception_response(message: str, detail: str = "", text_expected: bool = True) -> Response:
    # an exception's text can hold the URL as sent, access token and all (requests' "Max retries exceeded")
    headers = CaseInsensitiveDict({VALIDATOR_ERROR: redact(message)})
    return Response(EXCEPTION_STATUS, headers, redact(detail).encode("utf-8"), text_expected)


class Transport:
    def __init__(self, timeout: float = TIMEOUT, verify_tls: bool = True):
        self.session = Client()
        self.session.trust_env = False  # no proxies from the environment between us and the host
        self.timeout = timeout
        self.verify_tls = verify_tls

    def close(self) -> None:
        self.session.close()

    def send(self, call: HttpCall) -> tuple[Response, str, dict[str, str]]:
        """The response, the URL as sent and the headers as sent."""
        headers = {"User-Agent": call.user_agent or SKIP_HEADER, "Accept-Encoding": SKIP_HEADER, **call.headers}
        try:
            prepared = requests.Request(call.method, call.url, headers=headers, data=call.body).prepare()
        except (requests.RequestException, ValueError) as error:
            return exception_response(f"({type(error).__name__}) {error}", "", call.text_expected), call.url, {}
        assert prepared.url is not None  # prepare() sets it
        if call.sign is not None:
            try:
                prepared.headers.update(call.sign(prepared.url))
            except ValueError as error:
                return (
                    exception_response(f"(ProofKeySigningException) {error}", "", call.text_expected),
                    prepared.url,
                    dict(call.headers),
                )
        sent = {k: v for k, v in prepared.headers.items() if v != SKIP_HEADER}
        start = time.monotonic()
        try:
            with self.session.send(
                prepared, allow_redirects=False, stream=True, timeout=self.timeout, verify=self.verify_tls
            ) as reply:
                got = read(reply, KEEP_LIMIT, decode_content=False)
                response = Response(
                    reply.status_code,
                    CaseInsensitiveDict(reply.headers),
                    got.data or b"",
                    call.text_expected,
                    time.monotonic() - start,
                    prepared.url,
                    got.size,
                    got.sha256,
                )
        except NO_ANSWER as error:
            return (exception_response(f"({type(error).__name__}) {error}", "", call.text_expected), prepared.url, sent)
        return response, prepared.url, sent
