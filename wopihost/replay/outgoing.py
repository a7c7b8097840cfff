"""A recorded request made ready to send to the host a replay is against: its URL, headers and body filled in
with what the replay has learned (bindings.py).

The body is the recorded one, changed only where a recording writes placeholders or a client repeats a value
a host gave it: a JSON body's strings, and the MessageJSON frame of a CSPP Plus framed body (re-encoded with
wopihost/cspp/frames.py; every other frame goes as recorded). A body is JSON when it parses as JSON, whatever
its type says (hosts read a body sent with none, or as application/octet-stream, as JSON all the same), but a
document is not: what a PutFile or an upload sends goes byte for byte, placeholders aside, whatever it holds.
Proof headers cannot be replayed (they sign the recorded URL and time): they are dropped, and signed afresh
when the replay has proof keys. A cookie or a proxy's credentials (an Authorization other than Bearer too) are
not sent at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..cspp import frames
from ..har import is_json
from .archive import Body, Exchange
from .bindings import Bindings

# Headers of the connection, not of the request: the HTTP library writes its own.
HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "expect", "te", "upgrade"}
)
PROOF_HEADERS = frozenset({"x-wopi-proof", "x-wopi-proofold", "x-wopi-timestamp"})
# Credentials for what stood between the client and the host (an SSO proxy's session cookie, a proxy's login),
# which the host never reads and a recording keeps only as placeholders
FOR_A_PROXY = frozenset({"cookie", "proxy-authorization"})
# Operations whose request body is framed: MessageJSON first (docs/cspp-plus.md §1.8)
FRAMED = frozenset({"PUT_CHUNKED_FILE", "GET_CHUNKED_FILE", "GET_CHUNKS"})
# Operations whose request body is a document, a piece of one, or a string the host keeps as sent (UserInfo): by
# X-WOPI-Override, and by wopihost's name for a Graph request (a PUT through a share link is always an upload)
DOCUMENTS = frozenset({"PUT", "PUT_RELATIVE", "UPDATE_UPLOAD_SESSION", "PUT_USER_INFO"})
GRAPH_DOCUMENTS = frozenset({"graph PUT content", "graph PUT uploadSession", "graph PUT share"})


class CannotReplay(Exception):
    """The request cannot be sent; the message says why, in one line."""


@dataclass
class Outgoing:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    proof: bool  # the recorded request was signed: sign it again if the replay can


def build(exchange: Exchange, bindings: Bindings, record_limit: int | None = None) -> Outgoing:
    """`exchange`'s request as it is to be sent here; Unbound if it needs a placeholder nobody gave."""
    headers, proof = [], False
    for name, value in exchange.headers:
        lower = name.lower()
        if lower in PROOF_HEADERS:
            proof = proof or lower != "x-wopi-timestamp"
        elif lower not in HOP_BY_HOP and lower not in FOR_A_PROXY and not _for_a_proxy(lower, value):
            headers.append((name, bindings.header(name, value, exchange.path)))
    return Outgoing(
        exchange.method, bindings.url(exchange.url), headers, _body(exchange, bindings, record_limit), proof
    )


def _for_a_proxy(name: str, value: str) -> bool:
    """An Authorization header the host does not read: it takes Bearer tokens only (an SSO proxy's Basic or
    Negotiate credentials are for the proxy)."""
    return name == "authorization" and value.strip().partition(" ")[0].lower() != "bearer"


def _body(exchange: Exchange, bindings: Bindings, record_limit: int | None) -> bytes | None:
    body = exchange.body
    if body is None:
        return None
    if body.incomplete:  # sent as recorded, it could save a cut-off document where the client saved nothing
        raise CannotReplay(
            f"the recording holds only the {body.size} bytes of its body the server read: the server answered "
            "before reading the rest, or the body broke off"
        )
    if body.data is None:
        limit = f" ({record_limit} bytes)" if record_limit is not None else ""
        raise CannotReplay(
            f"its body of {body.size} bytes was recorded as a digest only, over the recording's body limit "
            f"WOPIHOST_RECORD_MAX_BODY{limit}; record with a larger limit to replay it"
        )
    if exchange.override in FRAMED:
        return _framed(body.data, bindings)
    if exchange.override not in DOCUMENTS and exchange.operation not in GRAPH_DOCUMENTS:
        filled = _json(body, bindings)
        if filled is not None:
            return filled
    return _text(body, bindings) if body.text else body.data


def _json(body: Body, bindings: Bindings) -> bytes | None:
    """A JSON body with its strings filled in; None if it is not JSON."""
    assert body.data is not None
    try:
        text = body.data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    if not (body.media_type == "application/json" or body.media_type.endswith("+json") or is_json(text)):
        return None
    try:
        value = json.loads(text)
        filled = bindings.json(value)
    except (ValueError, RecursionError):  # (nested deeper than Python parses, or than it walks)
        return None  # sent as recorded: a client's malformed JSON is part of what was recorded
    return body.data if filled == value else json.dumps(filled, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _text(body: Body, bindings: Bindings) -> bytes:
    """A text body with its placeholders filled in."""
    assert body.data is not None
    text = body.data.decode("utf-8", "surrogatepass")
    filled = bindings.fill(text)
    return body.data if filled == text else filled.encode("utf-8", "surrogatepass")


def _framed(data: bytes, bindings: Bindings) -> bytes:
    """A framed body with its MessageJSON filled in; as recorded if it does not start with one."""
    if len(data) < frames.HEADER_SIZE or int.from_bytes(data[:4], "big") != frames.FrameType.MESSAGE_JSON:
        return data
    end = frames.HEADER_SIZE + int.from_bytes(data[8:16], "big")
    try:
        message = frames.parse_json(data[frames.HEADER_SIZE : end])
        filled = bindings.json(message)
    except (frames.FrameError, RecursionError):  # (nested deeper than Python walks)
        return data
    return data if filled == message else frames.message_frame(filled) + data[end:]
