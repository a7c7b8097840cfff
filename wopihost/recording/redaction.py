"""Secrets out of what a recording writes: each one becomes a placeholder of its kind, the same in every worker.

A worker cannot number the secrets it meets (`{{access_token:1}}`): another worker, or another node, meets
others at the same time. It writes `{{kind:#<digest>}}` instead, where the digest is the first 16 hex digits of
HMAC-SHA256 under the server's secret key: the same value gives the same digest everywhere, and no digest can
be turned back into its value, nor checked against a guess without the key. Assembly numbers them
(assembly.py).

Where a secret is: wopihost/credentials.py (the patterns the logs redact), in URLs, headers and text bodies;
and the places the contract names on top of them: the X-WOPI-Proof, X-WOPI-ProofOld and
X-WOPI-UploadSessionToken headers, the credentials of Authorization and Proxy-Authorization, a Cookie header,
and the MessageJSON frame a CSPP framed body starts with.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from .. import credentials
from ..cspp.frames import HEADER_SIZE, message_frame_size

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

Seen = list[tuple[str, str]]  # (kind, placeholder) of the secrets replaced, in order


class Redactor:
    def __init__(self, key: str):
        self._key = key.encode()
        self._placeholders: dict[tuple[str, str], str] = {}

    def placeholder(self, kind: str, value: str) -> str:
        found = self._placeholders.get((kind, value))
        if found is None:
            if len(self._placeholders) >= _CACHED:
                self._placeholders.clear()
            message = f"{kind}:{value}".encode("utf-8", "surrogatepass")
            digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:16]
            found = self._placeholders[kind, value] = f"{{{{{kind}:#{digest}}}}}"
        return found

    def text(self, text: str, seen: Seen | None = None) -> str:
        """`text` with every credential credentials.py finds replaced."""

        def replacement(kind: str, value: str) -> str:
            if not value:  # `access_token=` with nothing after it: nothing to hide
                return value
            placeholder = self.placeholder(kind, value)
            if seen is not None:
                seen.append((kind, placeholder))
            return placeholder

        return credentials.replace(text, replacement)

    def header(self, name: str, value: str, seen: Seen | None = None) -> str:
        """A header's value, `name` in lower case."""
        kind = WHOLE_VALUE.get(name)
        if kind is not None:
            return self._whole(kind, value, seen)
        if name in AUTHORIZATION:
            scheme, space, rest = value.strip().partition(" ")
            if not space:  # no scheme: all of it is the credential
                return self._whole("token", value, seen)
            # a proxy's Bearer token is none of ours: an api_token names the session a request belongs to
            api = name == "authorization" and scheme.lower() == "bearer"
            return f"{scheme} {self._whole('api_token' if api else 'token', rest.strip(), seen)}"
        if name in NO_CREDENTIAL:
            return value
        return self.text(value, seen)

    def _whole(self, kind: str, value: str, seen: Seen | None) -> str:
        if not value:
            return value
        placeholder = self.placeholder(kind, value)
        if seen is not None:
            seen.append((kind, placeholder))
        return placeholder

    def framed(self, body: bytes | bytearray, seen: Seen | None = None) -> tuple[str | None, int] | None:
        """For a body that starts with a CSPP MessageJSON frame: that MessageJSON's text with its secrets replaced
        (None if it holds none: the body can then be written as received), and where the frames after it start.
        None for any other body.

        UnicodeDecodeError when the MessageJSON is not UTF-8: it cannot be searched, so it cannot be written."""
        end = message_frame_size(body)
        if end is None:
            return None
        text = body[HEADER_SIZE:end].decode("utf-8")
        redacted = self.text(text, seen)
        return (redacted if redacted != text else None), end
