"""Secrets out of what a recording writes: each one becomes a placeholder of its kind, the same in every worker.

A worker cannot number the secrets it meets (`{{access_token:1}}`): another worker, or another node, meets
others at the same time. It writes `{{kind:#<digest>}}` instead, where the digest is the first 16 hex digits of
HMAC-SHA256 of the value under the server's secret key: the same value gives the same digest everywhere,
whatever kind it was found as, and no digest can be turned back into its value, nor checked against a guess
without the key. Assembly numbers them (assembly.py), one placeholder for one value.

Where a secret is: wopihost/credentials.py (the patterns the logs redact), in URLs, headers and bodies of any
type; the places the contract names on top of them: the X-WOPI-Proof, X-WOPI-ProofOld and
X-WOPI-UploadSessionToken headers, the credentials of Authorization and Proxy-Authorization, a Cookie header (and
each cookie in it), and the MessageJSON frame a CSPP framed body starts with; and in a body, whatever else the request's URL and
headers carried as a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import NamedTuple

from .. import credentials
from ..credentials import CREDENTIALS
from ..cspp.frames import HEADER_SIZE, message_frame_size
from ..har import SHORTEST_KNOWN_SECRET

# What the spool holds in place of a secret; assembly turns each into har.placeholder(kind, n).
SPOOLED = re.compile(r"\{\{(?P<kind>[a-z_]+):#(?P<digest>[0-9a-f]{16})\}\}")
# Headers whose whole value is a secret of one kind (lower case); a cookie is a session's (an SSO proxy's, a
# load balancer's), whatever its shape
WHOLE_VALUE = {
    "x-wopi-proof": "proof",
    "x-wopi-proofold": "proof",
    "x-wopi-uploadsessiontoken": "session_token",
    "cookie": "token",
}
AUTHORIZATION = frozenset({"authorization", "proxy-authorization"})
# Headers that hold no credential though they may look as if (`Bearer realm="wopihost"` is a challenge)
NO_CREDENTIAL = frozenset({"www-authenticate"})
_CACHED = 4096  # secrets remembered per worker: a client sends its token with every request
# Bytes that are ASCII text (printable, or white space) -> 1, any other -> 0: where a body that cannot be written
# as text may hold a secret
_ASCII_TEXT = bytes(1 if 32 <= b < 127 or b in b"\t\n\v\f\r" else 0 for b in range(256))
# No secret of ours is shorter (our ids, an upload session's or a share's, are 22 characters), so a binary body's
# shorter runs of ASCII text need no search
_SHORTEST = 22


class Secret(NamedTuple):
    kind: str
    placeholder: str
    value: str


Seen = list[Secret]  # the secrets replaced, in order


class Redactor:
    def __init__(self, key: str):
        self._key = key.encode()
        self._digests: dict[str, str] = {}

    def placeholder(self, kind: str, value: str) -> str:
        digest = self._digests.get(value)
        if digest is None:
            if len(self._digests) >= _CACHED:
                self._digests.clear()
            message = value.encode("utf-8", "surrogatepass")
            digest = self._digests[value] = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:16]
        return f"{{{{{kind}:#{digest}}}}}"

    def text(
        self, text: str, seen: Seen | None = None, known: Sequence[Secret] = (), pattern: re.Pattern = CREDENTIALS
    ) -> str:
        """`text` with every credential `pattern` finds replaced (credentials.py: all of them, or in a document
        only the shapes of our tokens), and every secret of `known` (those of the request's URL and headers)
        that is long enough to search for."""
        for secret in known:
            if len(secret.value) >= SHORTEST_KNOWN_SECRET and secret.value in text:
                text = text.replace(secret.value, secret.placeholder)

        def replacement(kind: str, value: str) -> str:
            if not value:  # `access_token=` with nothing after it: nothing to hide
                return value
            placeholder = self.placeholder(kind, value)
            if seen is not None:
                seen.append(Secret(kind, placeholder, value))
            return placeholder

        return credentials.replace(text, replacement, pattern)

    def in_binary(
        self, data: bytes | bytearray, known: Sequence[Secret] = (), start: int = 0, pattern: re.Pattern = CREDENTIALS
    ) -> bool:
        """Whether `data[start:]`, bytes that cannot be written as text, holds a secret: one of `known`, or one
        `pattern` finds in a run of ASCII text (in a document, SHAPES: its paths are not credentials). Searching
        the runs long enough to hold one, rather than all of it, costs a document's bytes about 1 ms per MiB, not
        the 170 ms of the patterns tried at every byte."""
        for secret in known:
            if (
                len(secret.value) >= SHORTEST_KNOWN_SECRET
                and data.find(secret.value.encode("utf-8", "surrogatepass"), start) >= 0
            ):
                return True
        mask = data.translate(_ASCII_TEXT)  # (a copy no larger than the body, which is within the record limit)
        run = mask.find(b"\x01" * _SHORTEST, start)
        while run >= 0:  # the start of a run: a run starting earlier would have been found first
            end = mask.find(b"\x00", run)
            end = len(mask) if end < 0 else end
            text = data[run:end].decode("ascii")
            if self.text(text, pattern=pattern) != text:
                return True
            run = mask.find(b"\x01" * _SHORTEST, end)
        return False

    def header(self, name: str, value: str, seen: Seen | None = None, bearer: str = "api_token") -> str:
        """A header's value, `name` in lower case; `bearer` the kind of an `Authorization: Bearer` credential:
        a Graph API token, or on WOPI an access token (docs/wopi.md §1.2), often the very one of the query."""
        kind = WHOLE_VALUE.get(name)
        if kind is not None:
            whole = self._whole(kind, value, seen)
            if name == "cookie" and seen is not None:
                self._cookie_values(value, seen)
            return whole
        if name in AUTHORIZATION:
            scheme, space, rest = value.strip().partition(" ")
            if not space:  # no scheme: all of it is the credential
                return self._whole("token", value, seen)
            # a proxy's Bearer token is none of ours: an api_token names the session a request belongs to
            ours = name == "authorization" and scheme.lower() == "bearer"
            return f"{scheme} {self._whole(bearer if ours else 'token', rest.strip(), seen)}"
        if name in NO_CREDENTIAL:
            return value
        return self.text(value, seen)

    def _cookie_values(self, value: str, seen: Seen) -> None:
        """Each cookie's value, a secret of its own: a body (a user's info, an answer quoting it) may hold one
        cookie of the header without the others. Listed after the whole header's value, so that bodies are
        searched for that first."""
        for pair in value.split(";"):
            cookie = pair.partition("=")[2].strip().strip('"')
            if len(cookie) >= SHORTEST_KNOWN_SECRET and cookie != value:
                self._whole("token", cookie, seen)

    def _whole(self, kind: str, value: str, seen: Seen | None) -> str:
        if not value:
            return value
        placeholder = self.placeholder(kind, value)
        if seen is not None:
            seen.append(Secret(kind, placeholder, value))
        return placeholder

    def framed(
        self, body: bytes | bytearray, seen: Seen | None = None, known: Sequence[Secret] = ()
    ) -> tuple[str | None, int] | None:
        """For a body that starts with a CSPP MessageJSON frame: that MessageJSON's text with its secrets replaced
        (None if it holds none: the body can then be written as received), and where the frames after it start.
        None for any other body.

        UnicodeDecodeError when the MessageJSON is not UTF-8: it cannot be searched, so it cannot be written."""
        end = message_frame_size(body)
        if end is None:
            return None
        text = body[HEADER_SIZE:end].decode("utf-8")
        redacted = self.text(text, seen, known)
        return (redacted if redacted != text else None), end
