"""Secrets are redacted from log lines, however they are quoted."""

import logging
import sys

import pytest

from wopihost.logs import REDACTED, RedactingFilter, redact

TOKEN = "oyyfurkrkjzgmslwmzkxkr3tk45g6rzx" * 4 + "abcdefgh"


@pytest.mark.parametrize("line", [
    f"GET /wopi/files/x?access_token={TOKEN} HTTP/1.1",
    f"Invalid HTTP Version: '?access_token={TOKEN} HTTP/1.1'",
    f"/wopi/files/x?a=1&access_token={TOKEN}&b=2",
    f"/wopi/files/x?access%5Ftoken=1&access_token%3D{TOKEN}",
    f"Authorization: Bearer {TOKEN}",
    f"the token {TOKEN.upper()} in upper case",
    f"a token in the path /wopi/files/x/{TOKEN}",
    f"access_token={TOKEN[:20]}",  # a short or truncated token is still a parameter value
])
def test_credentials_are_redacted(line):
    redacted = redact(line)
    assert TOKEN[:20].lower() not in redacted.lower()
    assert REDACTED in redacted


@pytest.mark.parametrize("line", [
    '127.0.0.1 "PUT /v1.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 202 90 4ms override=-',
    "GET /_api/v2.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA -> 404: the upload session does not exist",
    '"@microsoft.graph.sourceUrl": "https://h/office/v1.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA"',
    "GET /v1.0/downloads/ZLLSZyyckVxSgzA9g8FxcA?x=1",
    '127.0.0.1 "GET /wopi/download/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 200 6 1ms override=-',  # a FileUrl
    '127.0.0.1 "GET /s/ZLLSZyyckVxSgzA9g8FxcA/content HTTP/1.1" 200 6 1ms override=-',  # a share link
    "GET /office/s/ZLLSZyyckVxSgzA9g8FxcA -> 404: no such share link, or it has been revoked",
    "GET /v1.0/shares/ZLLSZyyckVxSgzA9g8FxcA/driveItem",  # a Graph share id, the link's id
    "GET /v1.0/shares/u!aHR0cHM6Ly9oL3MvWkxMU1p5eWNrVnhTZ3pBOWc4RnhjQQ/driveItem",  # or its URL, encoded
])
def test_urls_that_are_credentials_are_redacted(line):
    redacted = redact(line)
    assert "ZLLSZyyckVxSgzA9g8FxcA" not in redacted and "aHR0cHM6Ly9oL3MvWkxMU1p5" not in redacted
    assert REDACTED in redacted


def test_what_is_not_a_credential_stays():
    line = '127.0.0.1 "GET /wopi/files/oG7jw5EIRAFOO6Wa2CnDwz HTTP/1.1" 200 694 20ms override=LOCK'
    assert redact(line) == line


def test_the_filter_redacts_arguments_and_tracebacks():
    try:
        raise ValueError(f"bad url ?access_token={TOKEN}")
    except ValueError:
        record = logging.LogRecord("wopihost", logging.ERROR, __file__, 1, "failed for %s", (TOKEN,),
                                   exc_info=sys.exc_info())
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert TOKEN not in text and "failed for [redacted]" in text and "ValueError: bad url" in text
