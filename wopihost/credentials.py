"""Where a credential shows in text: one list for the logs, which blank each one (wopihost/logs.py), and for a
recording, which replaces each by a placeholder of its kind (wopihost/recording/).

Access tokens travel in query strings, and so do the signature and credentials of an object store's presigned
URL (Graph's downloadUrl with WOPIHOST_S3_DOWNLOAD_URL); Graph's upload, download and copy monitor URLs, FileUrls,
share links and launch links are credentials in their path; CSPP Plus upload session tokens in JSON; and our tokens
and tickets have shapes of their own, whatever quotes them. Each alternative below names its kind (wopihost/har.py's
KINDS) by the group that holds the secret, the last group of its alternative: what comes before that group
(`access_token=`, `/uploadSessions/` ...) is context, kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_VALUE = r"[^/?\s'\"\\]+"  # a path segment as a URL, a log line or a JSON string holds it
_SLASH = r"\\?/"  # JSON may write "/" as "\/" (PHP's json_encode does), and the app reads such a URL all the same
LAUNCH_ACTIONS = ("view", "edit", "editnew")  # /host/{action}/{ticket} (wopihost/launches.py)
# The path segments after which a credential follows: a path without any of them, nearly every one, needs no
# regular expression unless it is long enough to hold a token (TOKEN_SHAPE_LENGTH).
CREDENTIAL_SEGMENTS = ("/uploadSessions/", "/downloads/", "/download/", "/monitor/", "/s/", "/shares/", "/host/")
# any of them, as a path or a JSON string holds it, in one search
CREDENTIAL_SEGMENT = re.compile("|".join(re.escape(s).replace("/", _SLASH) for s in CREDENTIAL_SEGMENTS))
TOKEN_SHAPE_LENGTH = 64  # no token or ticket we issue is shorter


def _base32_token(letters: str, first: str) -> str:
    """A token as we issue it (wopihost/tokens.py), in the alphabet `letters`: the base32 of a signed ASCII
    payload of at least 65 bytes (a 16-character jti, rights, an expiry, a 43-character signature), so at least
    13 groups of 8 characters, each starting with the first 5 bits of an ASCII byte: one of `first`. A run of
    those letters is taken whole (never started inside: no backtracking into it), and its first 104 characters
    must have that shape, which few words or names of that length have (1 in 550 of random letters). A run may
    also start right after a percent or \\u escape, whose last characters may be letters of the alphabet
    (`%2f<token>`, `%253d<token>`, `\\u0022<token>`), or after a percent sign and the one or two characters a
    client wrote for an escape that is none, which gunicorn and Werkzeug leave as it came (`%zz<token>`,
    `%g<token>`: never inside a valid escape, which would start the token a character early)."""
    after_escape = (
        r"(?<=%[0-9A-Fa-f]{2})|(?<=%25[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4})"
        r"|(?<=%[^0-9A-Fa-f])|(?<=%[0-9A-Fa-f])(?![0-9A-Fa-f])|(?<=%[^0-9A-Fa-f].)|(?<=%.[^0-9A-Fa-f])"
    )
    # (the look-ahead first: at most positions it fails at once, where the look-behinds cost each a try)
    return rf"(?=[{letters}]{{104}})(?:(?<![{letters}])|{after_escape})(?:[{first}][{letters}]{{7}}){{13}}[{letters}]*+"


# A token by its shape, in whatever context: in the lower case we issue it in, or all in upper case (the same
# token to whoever turns it back), never in mixed case, as ordinary long names are
# (QuarterlyFinancialReportForTheBoard...); a download or launch ticket by its shape:
# jti.file.rights.expiry.signature (no rights in those made before 2026-12-05, which a client may still send).
# Tried only where a run of their characters starts (or an escape ends) and without backtracking (a recording
# searches every body): a run is taken whole.
_SHAPES = (
    rf"(?P<token>(?-i:{_base32_token('a-z2-7', 'a-p')}|{_base32_token('A-Z2-7', 'A-P')}))"
    r"|(?P<ticket>\b\w++\.\w++\.(?:[rw]\.)?\d++\.[\w-]{43,}+)"
)


def _escapable(name: str) -> str:
    """`name` as a URL may write it: any of its characters percent-escaped, which gunicorn and Werkzeug read as the
    character (`access%5Ftoken=` is `access_token=`, `/%73%2F<id>` is `/s/<id>`, and the credential in it works).
    A slash may also be JSON's `\\/`."""
    return "".join(_ESCAPED_SLASH if char == "/" else f"(?:{re.escape(char)}|%{ord(char):02x})" for char in name)


_ESCAPED_SLASH = r"(?:/|\\/|%2f)"  # (a slash first: what sre finds fastest)


CREDENTIALS = re.compile(
    # a query parameter, raw or percent-encoded, its name too
    rf"{_escapable('access_token')}(?:%3d|=)(?P<access_token>[^&\s'\"\\]*)"
    r"|\"access_token\"\s*:\s*\"(?P<access_token_json>[^\"\\]*)"  # ... or a JSON field
    # a presigned S3 URL fetches the object without the host until it expires: its SigV4 signature, the access
    # key it names, a temporary key's session token
    r"|x-amz-(?:signature|credential|security-token)(?:%3d|=)(?P<presigned>[^&\s'\"\\]*)"
    # an Authorization header's credentials: up to a quote, so that a JSON string around it stays one
    r"|\bbearer\s+(?P<api_token>[^\s'\"\\]+)"
    r"|\"UploadSessionToken(?:ToCommit)?\"\s*:\s*\"(?P<session_token>[^\"\\]*)"  # CSPP Plus, in JSON
    # the credential in the path of a Graph upload or download URL, a FileUrl, a Graph copy's monitor URL, a share
    # link, a Graph share id, a launch link of the host page (one alternative behind their common start: it is
    # tried at every position), their segments' names and slashes escaped or not
    rf"|{_ESCAPED_SLASH}(?:{_escapable('uploadSessions/')}(?P<upload_session>{_VALUE})"
    rf"|{_escapable('download')}(?:s|%73)?{_ESCAPED_SLASH}(?P<download>{_VALUE})"
    rf"|{_escapable('monitor/')}(?P<monitor>{_VALUE})"
    rf"|(?:{_escapable('s')}|{_escapable('shares')}){_ESCAPED_SLASH}(?P<share>{_VALUE})"
    rf"|{_escapable('host/')}(?:{'|'.join(map(_escapable, LAUNCH_ACTIONS))}){_ESCAPED_SLASH}(?P<launch>{_VALUE}))"
    rf"|{_SHAPES}",
    re.IGNORECASE,
)
# Only the shapes of our tokens and tickets: what a body that is not an API's text (a document's bytes, a
# framed body's chunks) is searched for beside the secrets its request carried. The paths of CREDENTIALS are
# ordinary text in a document (`.../downloads/release/...`, a PDF's `/S/Transparency`).
SHAPES = re.compile(_SHAPES, re.IGNORECASE)
# the kind of secret (wopihost/har.py) each value group of CREDENTIALS holds
KIND_OF_GROUP = {name: name for name in CREDENTIALS.groupindex} | {
    "access_token_json": "access_token",
    "presigned": "download",
    "ticket": "token",
}
# The kinds whose secret is the path segment after one of CREDENTIAL_SEGMENTS
_PATH_KINDS = frozenset({"upload_session", "download", "monitor", "share", "launch"})
# Where a Graph item path starts (`root:/`, `items/{id}:/`, `driveItem:/`, docs/graph.md §2): the names after it
# are a drive's folders and files, a `Downloads` or `S` folder too, never a credential (wopihost puts those
# right after its public URL or Graph's version). `https://` is no such start.
_ITEM_PATH = re.compile(rf"(?:^|/)[\w-]+:(?:{_SLASH}(?!{_SLASH})|$)")  # ($: the match goes on with "/")
# Where the text an item path may be part of ends, looking back from a match: a URL's query (a credential URL
# may be a query value), white space, a quote; `&` and `=` too, which at worst end a name early
_PATH_ENDS = (" ", "\t", "\n", "\r", '"', "'", "?", "#", "&", "=")
_PATH_LOOKBACK = 2048  # further back than this a path is taken for no item path: its names are redacted


def replace(text: str, replacement: Callable[[str, str], str], pattern: re.Pattern = CREDENTIALS) -> str:
    """`text` with each credential `pattern` finds (CREDENTIALS, or SHAPES) replaced by `replacement(kind,
    value)`; the context around it stays."""

    def one(match: re.Match) -> str:
        group = match.lastgroup
        assert group is not None  # every alternative ends in its value group
        start, kind = match.start(group), KIND_OF_GROUP[group]
        if kind in _PATH_KINDS and _in_item_path(match.string, match.start()):
            # a folder named like a credential's segment (root:/Downloads/report.txt): only a token's shape
            # is a secret in its names, as in a document
            return match.string[match.start() : start] + replace(match.group(group), replacement, SHAPES)
        return match.string[match.start() : start] + replacement(kind, match.group(group))

    return pattern.sub(one, text)


def _in_item_path(text: str, at: int) -> bool:
    """Whether `text[at:]` continues a Graph item path (docs/graph.md §2)."""
    window = text[max(0, at - _PATH_LOOKBACK) : at]
    return _ITEM_PATH.search(window[max(window.rfind(end) for end in _PATH_ENDS) + 1 :]) is not None
