"""What a recording (wopihost/recording/) writes and a replay (wopihost/replay/) reads: HTTP Archive 1.2 files
of one client session each, with every secret replaced by a placeholder `{{kind:N}}` (docs/testing.md).

N counts from 1 per kind, in order of first appearance across the whole recording, so one value is one
placeholder in every file of a recording; a replay learns what each stands for from the answers of the host it
replays against, or from its command line.
"""

from __future__ import annotations

import json
import re

HAR_VERSION = "1.2"
# The kinds of secret a recording replaces, in the order docs/testing.md lists them.
KINDS = (
    "access_token",  # WOPI access_token query parameters, wherever a URL holds one
    "api_token",  # Authorization: Bearer
    "proof",  # X-WOPI-Proof, X-WOPI-ProofOld
    "session_token",  # CSPP Plus upload session tokens
    "upload_session",  # the path segment after /uploadSessions/ (Graph upload URLs)
    "download",  # the path segment after /download/ or /downloads/ (FileUrl, Graph download URLs)
    "monitor",  # the path segment after /monitor/ (a Graph copy's monitor URL)
    "share",  # the path segment after /s/ or /shares/
    "launch",  # the ticket of a host page launch link
    "token",  # anything else of a token's shape
)
PLACEHOLDER = re.compile(r"\{\{(?P<kind>[a-z_]+):(?P<n>\d+)\}\}")
# A known secret (one a request carried in a header, one given on a replay's command line) is searched for in
# other text only if at least this long: shorter, ordinary text would be taken for it (nothing a client or a
# proxy uses as a credential is that short)
SHORTEST_KNOWN_SECRET = 8


def placeholder(kind: str, n: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"not a kind of secret: {kind!r}")
    return f"{{{{{kind}:{n}}}}}"


def is_json(text: str) -> bool:
    """Whether a body is JSON an API reads, whatever its Content-Type says (a client may send none, or
    application/octet-stream): an object or an array."""
    if not text.lstrip().startswith(("{", "[")):  # spares parsing a document
        return False
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # (nested past the parser's depth: no API body a host reads)
        return False
    return True
