"""Secrets are redacted from log lines, however they are quoted."""

import io
import json
import logging
import socket
import sys
import threading
from datetime import datetime, timedelta

import pytest

from wopihost.ids import new_id
from wopihost.logs import ACCESS_LOG_FORMAT, FILE_ID, OPERATION, REDACTED, JsonFormatter, RedactingFilter, redact
from wopihost.tokens import Grant, Tokens
from wopihost.worker import IdleTimeoutSocket

TOKEN = "oyyfurkrkjzgmslwmzkxkr3tk45g6rzx" * 4 + "abcdefgh"


# What the logs must redact; tests/test_recording.py checks that a recording finds exactly the same.
TOKEN_LINES = [
    f"GET /wopi/files/x?access_token={TOKEN} HTTP/1.1",
    f"Invalid HTTP Version: '?access_token={TOKEN} HTTP/1.1'",
    f"/wopi/files/x?a=1&access_token={TOKEN}&b=2",
    f"/wopi/files/x?access%5Ftoken=1&access_token%3D{TOKEN}",
    f"Authorization: Bearer {TOKEN}",
    f"the token {TOKEN.upper()} in upper case",
    f"a token in the path /wopi/files/x/{TOKEN}",
    f"access_token={TOKEN[:20]}",  # a short or truncated token is still a parameter value
    # the name and the value percent-escaped, which Werkzeug reads all the same: no token's shape is left to see
    f"Invalid HTTP Version: '?access%5Ftoken=%{ord(TOKEN[0]):02x}{TOKEN[1:]} HTTP/1.1'",
    "/wopi/files/x?%61ccess%5ftoken=" + "".join(f"%{ord(char):02X}" for char in TOKEN),
]


@pytest.mark.parametrize("line", TOKEN_LINES)
def test_credentials_are_redacted(line):
    redacted = redact(line)
    assert TOKEN[:20].lower() not in redacted.lower() and TOKEN[1:20] not in redacted
    assert REDACTED in redacted


# Ordinary text the shape of a token must not take: long names in mixed case, long lower-case words
NOT_TOKENS = [
    "X-WOPI-RelativeTarget: QuarterlyFinancialReportForTheBoardOfDirectorsAndShareholdersDraft.docx",
    "CoauthLockMetadata: CoauthExclusiveLockRequestOnExistingCoauthExclusiveLockAndTheSharedLockOfTheFile",
    "longwopitestfilename" * 6 + ".wopitest",  # Microsoft's validator
    "Longwopitestfilename" * 6,
]


@pytest.mark.parametrize("line", NOT_TOKENS)
def test_long_names_are_not_tokens(line):
    assert redact(line) == line


def test_every_token_we_issue_is_redacted_by_its_shape(clock):
    tokens = Tokens("a secret key of 32 characters...", clock)
    grants = [
        Grant("j" * 16, "", "u", "r", datetime(1970, 1, 1, 0, 0, 1)),  # the shortest a token can be
        Grant(new_id(16), "", "u", "w", clock.now() + timedelta(hours=1)),  # an API token
        Grant(new_id(16), new_id(), "u", "w", clock.now() + timedelta(hours=10)),  # a file's
        Grant(new_id(16), "c-" + new_id(), "u", "lcmw", clock.now() + timedelta(hours=10), "lcmw"),  # a container's
        Grant(new_id(16), "e-", "u", "l", clock.now() + timedelta(hours=10)),  # the ecosystem's
    ]
    for grant in grants:
        token = tokens.derive(grant, grant.resource, grant.rights, grant.reach).token
        contexts = (token, f"/wopi/files/x/{token}", f'"{token}"', f"the token {token.upper()}.")
        # right after an escape whose last characters are letters of a token's alphabet
        escaped = (f"u=https%3a%2f%2fh%2fx%2f{token}", f"q=%22{token}%22", f"x%3faccess_token%253d{token}")
        # ... or after a percent sign that starts no escape, which gunicorn leaves in the path it decodes
        escaped += (f"/wopi/files/x/%zz{token}", f"/x/%g{token}", f"/x/%2z{token}", f"/x/%z2{token}")
        for text in (*contexts, *escaped, f"\\u0022{token}\\u0022"):
            assert redact(text) == text.replace(token, REDACTED).replace(token.upper(), REDACTED), text


CREDENTIAL_URL_LINES = [
    '127.0.0.1 "PUT /v1.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 202 90 4ms override=-',
    "GET /_api/v2.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA -> 404: the upload session does not exist",
    '"@microsoft.graph.sourceUrl": "https://h/office/v1.0/uploadSessions/ZLLSZyyckVxSgzA9g8FxcA"',
    "GET /v1.0/downloads/ZLLSZyyckVxSgzA9g8FxcA?x=1",
    "Location: https://h/v1.0/monitor/ZLLSZyyckVxSgzA9g8FxcA",  # a Graph copy's monitor URL
    '127.0.0.1 "GET /wopi/download/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 200 6 1ms override=-',  # a FileUrl
    '127.0.0.1 "GET /s/ZLLSZyyckVxSgzA9g8FxcA/content HTTP/1.1" 200 6 1ms override=-',  # a share link
    "GET /office/s/ZLLSZyyckVxSgzA9g8FxcA -> 404: no such share link, or it has been revoked",
    "GET /v1.0/shares/ZLLSZyyckVxSgzA9g8FxcA/driveItem",  # a Graph share id, the link's id
    "GET /v1.0/shares/u!aHR0cHM6Ly9oL3MvWkxMU1p5eWNrVnhTZ3pBOWc4RnhjQQ/driveItem",  # or its URL, encoded
    'CreateUploadSession -> {"UploadSessionToken":"ZLLSZyyckVxSgzA9g8FxcA"}',  # a CSPP Plus session, in JSON
    '{"UploadSessionTokenToCommit": "ZLLSZyyckVxSgzA9g8FxcA", "Signatures": []}',
    '{"access_token": "ZLLSZyyckVxSgzA9g8FxcA"}',
    # JSON may escape "/" (PHP's json_encode does): the same URLs, as such JSON holds them
    '{"@microsoft.graph.sourceUrl":"https:\\/\\/h\\/v1.0\\/uploadSessions\\/ZLLSZyyckVxSgzA9g8FxcA"}',
    '{"FileUrl":"https:\\/\\/h\\/wopi\\/download\\/ZLLSZyyckVxSgzA9g8FxcA"}',
    '{"url":"https:\\/\\/h\\/v1.0\\/downloads\\/ZLLSZyyckVxSgzA9g8FxcA"}',
    '{"url":"https:\\/\\/h\\/s\\/ZLLSZyyckVxSgzA9g8FxcA\\/content"}',
    '{"url":"https:\\/\\/h\\/v1.0\\/shares\\/ZLLSZyyckVxSgzA9g8FxcA\\/driveItem"}',
    '{"HostEditUrl":"https:\\/\\/h\\/host\\/edit\\/ZLLSZyyckVxSgzA9g8FxcA"}',
    # an object store's presigned GET (Graph's downloadUrl with WOPIHOST_S3_DOWNLOAD_URL): signature, key, session
    "https://s3.example.test/b/k?X-Amz-Signature=ZLLSZyyckVxSgzA9g8FxcA&X-Amz-Date=20261206T015901Z",
    "https://s3.example.test/b/k?X-Amz-Credential=ZLLSZyyckVxSgzA9g8FxcA%2F20261206%2Fus-east-1%2Fs3%2Faws4_request",
    "https://s3.example.test/b/k?x-amz-security-token=ZLLSZyyckVxSgzA9g8FxcA",
    "https%3A%2F%2Fs3.example.test%2Fb%2Fk%3FX-Amz-Signature%3DZLLSZyyckVxSgzA9g8FxcA",  # in another URL's query
    # a segment's name or slash percent-escaped, as a request line (%(r)s) holds it: gunicorn and Werkzeug read it,
    # and route it, as the segment
    '127.0.0.1 "GET /%73/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 200 6',
    '127.0.0.1 "PUT /v1.0/%75ploadSessions%2FZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 202 90',
    '127.0.0.1 "GET /v1.0/downloads%2fZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 200 6',
    '127.0.0.1 "GET /host/%65dit/ZLLSZyyckVxSgzA9g8FxcA HTTP/1.1" 200 6',
]


@pytest.mark.parametrize("line", CREDENTIAL_URL_LINES)
def test_urls_that_are_credentials_are_redacted(line):
    redacted = redact(line)
    assert "ZLLSZyyckVxSgzA9g8FxcA" not in redacted and "aHR0cHM6Ly9oL3MvWkxMU1p5" not in redacted
    assert REDACTED in redacted


def test_a_download_ticket_is_redacted_by_its_shape(wopi):
    ticket = wopi.check_file_info().json["FileUrl"].rsplit("/", 1)[1]
    jti, file_id, rights, expiry, signature = ticket.split(".")
    older = f"{jti}.{file_id}.{expiry}.{signature}"  # without the rights: a client may still send one it had
    for shown in (ticket, older):
        redacted = redact(f"failed to serve {shown}: gone")
        assert signature not in redacted and redacted == f"failed to serve {REDACTED}: gone", shown


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1 "GET /wopi/files/oG7jw5EIRAFOO6Wa2CnDwz HTTP/1.1" 200 694 20ms override=LOCK',
        "GET /v1.0/me/drive -> 401: an API token is required (Authorization: Bearer)",  # Graph's own answer
    ],
)
def test_what_is_not_a_credential_stays(line):
    assert redact(line) == line


def test_the_filter_redacts_arguments_and_tracebacks():
    try:
        raise ValueError(f"bad url ?access_token={TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "wopihost", logging.ERROR, __file__, 1, "failed for %s", (TOKEN,), exc_info=sys.exc_info()
        )
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert TOKEN not in text and "failed for [redacted]" in text and "ValueError: bad url" in text


class _Response:
    def __init__(self, status: str, sent: int | None, sock=None):
        self.status, self.sent, self.headers = status, sent, [("Content-Type", "application/json")]
        self.sock = sock


def _logger(log, fmt: str, logger_class):
    """A gunicorn logger (`logger_class`) writing its access log to the file `log` in the format `fmt`."""
    from gunicorn.config import Config

    cfg = Config()
    cfg.set("accesslog", str(log))
    cfg.set("access_log_format", fmt)
    return logger_class(cfg)


def _access_lines(
    tmp_path, fmt: str, path: str, direct: bool, environ: dict | None = None, sock=None, sent: int = 694
) -> str:
    from datetime import timedelta

    from gunicorn.glogging import Logger

    from wopihost.logs import GunicornLogger

    log = tmp_path / f"access-{direct}.log"
    logger = _logger(log, fmt, GunicornLogger if direct else Logger)
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "RAW_URI": f"{path}?access_token={TOKEN}",
        "QUERY_STRING": f"access_token={TOKEN}",
        "HTTP_X_WOPI_OVERRIDE": "LOCK",
        **(environ or {}),
    }
    request = type("Request", (), {"headers": [("X-WOPI-OVERRIDE", "LOCK")]})()
    logger.access(_Response("200 OK", sent, sock), request, environ, timedelta(milliseconds=20, microseconds=400))
    for handler in logger.access_log.handlers:
        handler.close()
    return log.read_text()


def test_the_direct_access_log_writes_what_gunicorn_would(tmp_path):
    path = "/wopi/files/oG7jw5EIRAFOO6Wa2CnDwz"
    direct = _access_lines(tmp_path, ACCESS_LOG_FORMAT, path, True)
    assert direct == _access_lines(tmp_path, ACCESS_LOG_FORMAT, path, False)
    assert direct == f'127.0.0.1 "POST {path} HTTP/1.1" 200 694 20ms override=LOCK\n'


@pytest.mark.parametrize("path", ["/s/ZLLSZyyckVxSgzA9g8FxcA/content", f"/wopi/files/x/{TOKEN}"])
def test_the_direct_access_log_redacts_credentials_in_the_path(tmp_path, path):
    line = _access_lines(tmp_path, ACCESS_LOG_FORMAT, path, True)
    assert "ZLLSZyyckVxSgzA9g8FxcA" not in line and TOKEN[:20] not in line and REDACTED in line


def test_a_path_cannot_forge_an_access_line(tmp_path):
    """gunicorn decodes the path (%0A is a line feed): a client wrote lines of its choosing into the access log,
    a forged request from another address under its own. Control characters are written escaped, as nginx's
    access log writes them; the bytes of a UTF-8 name stay as gunicorn wrote them."""
    forged = '/wopi/files/x\n10.0.0.1 "POST /wopi/files/y HTTP/1.1" 200 0 1ms override=PUT\r\x1b/\xc3\x9c'
    line = _access_lines(tmp_path, ACCESS_LOG_FORMAT, forged, True)
    assert line == (
        '127.0.0.1 "POST /wopi/files/x\\n10.0.0.1 "POST /wopi/files/y HTTP/1.1" 200 0 1ms override=PUT\\r\\x1b/\xc3\x9c '
        'HTTP/1.1" 200 694 20ms override=LOCK\n'
    )


def test_a_path_cannot_forge_a_line_of_the_error_log():
    """The application logs a refused request's path (app.py: "POST /wopi/files/x -> 404: ..."), as decoded: a
    client's %0A started a line of its choosing. The arguments' control characters are escaped; the program's
    own line ends stay."""
    record = logging.LogRecord(
        "wopihost.app",
        logging.INFO,
        __file__,
        1,
        "%s %s -> %s: %s\nsecond line",
        ("POST", "/wopi/files/x\n[2026-12-06 18:00:00 +0000] [1] [INFO] forged", 404, "unknown file"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == (
        "POST /wopi/files/x\\n[2026-12-06 18:00:00 +0000] [1] [INFO] forged -> 404: unknown file\nsecond line"
    )


def test_a_path_cannot_forge_a_line_of_an_access_log_in_another_format(tmp_path):
    """gunicorn's own access line (an admin's access_log_format) takes its fields as one mapping."""
    line = _access_lines(tmp_path, "%(U)s %(s)s %({x-wopi-override}i)s", "/wopi/files/x\nforged", True)
    assert line == "/wopi/files/x\\nforged 200 LOCK\n"


def test_another_access_log_format_is_gunicorns_and_still_redacted(tmp_path):
    line = _access_lines(tmp_path, "%(r)s %(s)s", "/wopi/files/x", True)
    assert line.startswith("POST /wopi/files/x?access_token=[redacted] HTTP/1.1 200")


def test_another_access_log_format_redacts_a_request_line_as_the_client_escaped_it(tmp_path):
    # gunicorn decodes the path (PATH_INFO: /s/<id>, whose credential the access log finds) but %(r)s and %(q)s
    # quote it as it came, and Werkzeug reads the escaped name of the parameter as access_token
    escaped = "".join(f"%{ord(char):02x}" for char in TOKEN)
    raw = {
        "RAW_URI": f"/%73%2FZLLSZyyckVxSgzA9g8FxcA?access%5Ftoken={escaped}",
        "QUERY_STRING": f"access%5Ftoken={escaped}",
    }
    line = _access_lines(tmp_path, "%(r)s %(q)s %(U)s", "/s/ZLLSZyyckVxSgzA9g8FxcA", True, raw)
    assert "ZLLSZ" not in line and escaped[:12] not in line
    assert line == "POST /%73%2F[redacted]?access%5Ftoken=[redacted] HTTP/1.1 access%5Ftoken=[redacted] /s/[redacted]\n"


def test_a_launch_link_is_redacted_by_its_shape(wopi):
    link = wopi.check_file_info().json["HostEditUrl"]
    ticket = link.rsplit("/", 1)[1]
    redacted = redact(f'127.0.0.1 "GET {link.removeprefix("https://wopi.example.test")} HTTP/1.1" 200')
    assert ticket.rsplit(".", 1)[1] not in redacted and f"/host/edit/{REDACTED}" in redacted


# -- WOPIHOST_LOG_FORMAT=json ---------------------------------------------------------------------------


def _json_logger(stream) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("wopihost.test")
    logger.addHandler(handler)
    return logger


def test_a_json_line_holds_its_traceback_redacted():
    out = io.StringIO()
    try:
        raise ValueError(f"bad url\n?access_token={TOKEN}")
    except ValueError:
        _json_logger(out).exception("failed for %s", f"/wopi/files/x?access_token={TOKEN}")
    (line,) = out.getvalue().splitlines()  # the traceback's lines are inside the one object
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "wopihost.test" and entry["time"].endswith("+00:00")
    assert entry["message"] == f"failed for /wopi/files/x?access_token={REDACTED}"
    assert entry["exception"].startswith("Traceback") and "ValueError: bad url" in entry["exception"]
    assert TOKEN not in line


def test_json_access_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("WOPIHOST_LOG_FORMAT", "json")
    path = "/wopi/files/oG7jw5EIRAFOO6Wa2CnDwz"
    entry = json.loads(
        _access_lines(
            tmp_path,
            ACCESS_LOG_FORMAT,
            path,
            True,
            {OPERATION: "Lock", FILE_ID: "oG7jw5EIRAFOO6Wa2CnDwz", "CONTENT_LENGTH": "12"},
        )
    )
    assert entry["logger"] == "gunicorn.access" and entry["level"] == "INFO"
    assert entry["message"] == f'127.0.0.1 "POST {path} HTTP/1.1" 200 694 20ms override=LOCK'
    assert {
        key: entry[key]
        for key in ("method", "path", "operation", "file_id", "status", "duration_ms", "bytes_in", "bytes_out")
    } == {
        "method": "POST",
        "path": path,
        "operation": "Lock",
        "file_id": "oG7jw5EIRAFOO6Wa2CnDwz",
        "status": 200,
        "duration_ms": 20.4,
        "bytes_in": 12,
        "bytes_out": 694,
    }


def test_a_json_access_line_redacts_a_token_for_a_file_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WOPIHOST_LOG_FORMAT", "json")
    line = _access_lines(tmp_path, ACCESS_LOG_FORMAT, f"/wopi/files/{TOKEN}", True, {FILE_ID: TOKEN})
    assert TOKEN[:20] not in line and json.loads(line)["file_id"] == REDACTED


def test_the_access_line_counts_what_sendfile_sent(tmp_path):
    sock = IdleTimeoutSocket.adopt(socket.socket())
    with sock:
        sock.sendfile_sent = 5000
        line = _access_lines(tmp_path, ACCESS_LOG_FORMAT, "/wopi/files/x/contents", True, sock=sock, sent=0)
    assert " 200 5000 " in line


def test_the_worker_socket_counts_what_sendfile_sends(tmp_path):
    content = tmp_path / "blob"
    content.write_bytes(b"z" * 300_000)
    left, right = socket.socketpair()
    sock = IdleTimeoutSocket.adopt(left)
    received = bytearray()
    reader = threading.Thread(target=lambda: _read_all(right, received))
    reader.start()
    with sock, right, open(content, "rb") as file:
        sock.settimeout(10)
        sock.sendfile(file, 1000, 200_000)
        sock.sendfile(file, 0, 50)
        assert sock.sendfile_sent == 200_050
        sock.shutdown(socket.SHUT_WR)
        reader.join()
    assert len(received) == 200_050


def _read_all(sock: socket.socket, into: bytearray) -> None:
    while data := sock.recv(65536):
        into += data


def _direct_logger(log):
    from wopihost.logs import GunicornLogger

    logging.getLogger("gunicorn.access").handlers.clear()  # (a handler another test's caplog left there)
    return _logger(log, ACCESS_LOG_FORMAT, GunicornLogger)


def _access(logger, path: str) -> None:
    from datetime import timedelta

    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_PROTOCOL": "HTTP/1.1"}
    logger.access(_Response("200 OK", 5, None), None, environ, timedelta(milliseconds=1))


def test_the_access_log_goes_to_stderr_with_every_other_line(capsys):
    """gunicorn writes `accesslog = "-"` to stdout: `wopihost serve --json` then had more than its one JSON value
    there, and whoever kept stderr (docs/deploy.md §12: every line goes there) had no access lines."""
    logger = _direct_logger("-")
    _access(logger, "/healthz")
    written = capsys.readouterr()
    assert written.out == "" and '"GET /healthz HTTP/1.1" 200' in written.err


def test_the_access_log_written_directly_follows_a_reopened_file(tmp_path):
    log = tmp_path / "access.log"
    logger = _direct_logger(log)
    assert logger._plain is logger.access_log.handlers[0]  # written without logging's machinery
    _access(logger, "/wopi/files/before")
    log.rename(tmp_path / "access.log.1")  # what logrotate does before it sends gunicorn SIGUSR1
    logger.reopen_files()
    _access(logger, "/wopi/files/after")
    for handler in logger.access_log.handlers:
        handler.close()
    assert (
        tmp_path / "access.log.1"
    ).read_text() == '127.0.0.1 "GET /wopi/files/before HTTP/1.1" 200 5 1ms override=-\n'
    assert log.read_text() == '127.0.0.1 "GET /wopi/files/after HTTP/1.1" 200 5 1ms override=-\n'


def test_a_handler_added_to_the_access_log_gets_every_line_redacted(tmp_path):
    logger = _direct_logger(tmp_path / "access.log")
    added = logging.StreamHandler(io.StringIO())
    logger.access_log.addHandler(added)
    try:
        _access(logger, f"/wopi/files/x/{TOKEN}")
    finally:
        logger.access_log.removeHandler(added)
        for handler in logger.access_log.handlers:
            handler.close()
    for text in (added.stream.getvalue(), (tmp_path / "access.log").read_text()):
        assert text.startswith('127.0.0.1 "GET /wopi/files/x/[redacted] HTTP/1.1" 200 5') and TOKEN[:20] not in text


def test_json_access_lines_go_through_logging(tmp_path, monkeypatch):
    monkeypatch.setenv("WOPIHOST_LOG_FORMAT", "json")
    assert _direct_logger(tmp_path / "access.log")._plain is None


def test_a_librarys_warning_goes_to_the_error_log_redacted(tmp_path, monkeypatch, capsys):
    """With no logging configuration the root logger has no handler, and Python's last resort would print a
    library's warning to stderr as it is: it goes through the error log instead, redacted like every line."""
    from gunicorn.config import Config

    from wopihost.logs import GunicornLogger

    monkeypatch.setattr(logging.root, "handlers", [])
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    GunicornLogger(cfg)
    logging.getLogger("urllib3.connectionpool").warning("Retrying GET /wopi/files/x?access_token=%s", TOKEN)
    written = (tmp_path / "error.log").read_text() + capsys.readouterr().err
    assert "Retrying GET /wopi/files/x?access_token=" in written and TOKEN not in written


def test_after_a_reload_a_librarys_warning_goes_to_the_error_log_reopened_after_rotation(tmp_path, monkeypatch):
    """A reload (HUP) sets the logger up again with new handlers of the error log; the root logger must follow
    them, or a library's lines go on to a file logrotate has moved away, which USR1 never reopens."""
    from gunicorn.config import Config

    from wopihost.logs import GunicornLogger

    monkeypatch.setattr(logging.root, "handlers", [])
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    log = GunicornLogger(cfg)
    log.setup(cfg)  # what gunicorn's arbiter does on HUP
    (tmp_path / "error.log").rename(tmp_path / "error.log.1")  # logrotate
    log.reopen_files()  # USR1
    logging.getLogger("urllib3.connectionpool").warning("a library's warning")
    assert "a library's warning" in (tmp_path / "error.log").read_text()
