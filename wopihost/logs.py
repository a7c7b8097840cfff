"""Logging that never shows a secret.

Credentials travel in query strings, paths and JSON (wopihost/credentials.py says where), and a
log line can quote a request target for many reasons: gunicorn
quotes a malformed request line whole ("Invalid HTTP Version: '?access_token=...'"), an error message may
name a URL. Rather than trust every message, each handler gunicorn logs through redacts what looks like a
credential on the way out, tracebacks included, and the application's own loggers write through the same
handlers.

With WOPIHOST_LOG_FORMAT=json every line is one JSON object (JsonFormatter), gunicorn's own lines included,
and an access line carries the request's operation, file id, status, duration and bytes as fields.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from gunicorn.glogging import Logger

from . import credentials
from .config import log_format
from .credentials import CREDENTIAL_SEGMENT, TOKEN_SHAPE_LENGTH

REDACTED = "[redacted]"
# What the application says about a request, in its WSGI environ, for the access line (metrics.Observer)
OPERATION = "wopihost.operation"
FILE_ID = "wopihost.file_id"
# A file id longer than any of ours is the client's invention: cut short, once redacted (a token cut short would
# no longer have a token's shape, and keep most of its text)
LONGEST_FILE_ID = 100
# %(U)s is the path without the query string: the access token travels in the query
# string and must never reach a log (the filter below redacts what slips through anyway).
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms override=%({x-wopi-override}i)s'
# Libraries whose debug lines hold credentials of no shape a pattern could tell: SQLAlchemy's engine writes each
# result row (upload session tokens, share link ids; the parameters it hides, db.make_engine), botocore each
# request's Authorization header and signature, a presigned URL's among them. Their lines below INFO are dropped,
# whatever level a logging configuration gives them.
SECRETS_BELOW_INFO = ("sqlalchemy.engine", "botocore")  # and the loggers under them


def redact(text: str) -> str:
    return credentials.replace(text, _blank)


def _blank(_kind: str, _value: str) -> str:
    return REDACTED


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def _escape_controls(text: str) -> str:
    """`text` with its ASCII control characters written as Python escapes them (`\\n`, `\\x1b`), as nginx's
    access log writes them: a line of the log is one line whatever a client sent. The rest stays as it came
    (a WSGI string: what is not ASCII are the bytes of a UTF-8 name, in Latin-1)."""
    return _CONTROLS.sub(lambda control: ascii(control[0])[1:-1], text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with its secrets redacted and the control characters of its
    text arguments escaped, and drops the debug lines of SECRETS_BELOW_INFO."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # written redacted (GunicornLogger.access)
            return True
        if record.levelno < logging.INFO and record.name.startswith(SECRETS_BELOW_INFO):
            return False
        # Text arguments are what a client can choose (a path, a name): each stays on its line. The message's own
        # line ends, and an exception's, are the program's and stay.
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, str) and not arg.isprintable() for arg in args):
            record.args = tuple(_escape_controls(arg) if isinstance(arg, str) else arg for arg in args)
        elif isinstance(args, dict):  # gunicorn's access line in another format: its fields (SafeAtoms, kept)
            for name, value in args.items():
                if isinstance(value, str) and not value.isprintable():
                    args[name] = _escape_controls(value)
        message = record.getMessage()
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, a traceback inside it rather than on lines of
    its own, and the fields of an access line (`access`, set by GunicornLogger.access)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if access is not None:
            entry.update(access)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


_GIVEN_TO_ROOT: list[logging.Handler] = []  # the error log's handlers, as GunicornLogger.setup gave them to the root


class GunicornLogger(Logger):
    """gunicorn's logger (`logger_class`), with every handler redacting, those a logging configuration
    (--log-config, logconfig_dict) gives any logger included, and the application's loggers (`wopihost.*`)
    writing through its error log's handlers at its level.

    The access log in wopihost's own format (ACCESS_LOG_FORMAT) is written directly: gunicorn would build
    a dictionary of every header and environ variable for each request, and the filter would then search
    the whole line for credentials, where only the path can hold one (the query string, which carries the
    access token, is never written).
    """

    as_json = False  # WOPIHOST_LOG_FORMAT=json, read in setup
    # The access log's only handler when it writes each line as it is, to a stream or file: access() then
    # writes to it directly (see _plain_handler)
    _plain: logging.StreamHandler | None = None

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if cfg.accesslog == "-":  # which gunicorn writes to stdout: every log line goes to stderr (docs/deploy.md)
            for handler in self.access_log.handlers:
                if getattr(handler, "_gunicorn", False) and isinstance(handler, logging.StreamHandler):
                    handler.setStream(sys.stderr)
        self.as_json = log_format() == "json"
        for handler in _configured_handlers():
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
        if self.as_json:
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(JsonFormatter())
        app_log = logging.getLogger("wopihost")
        app_log.handlers = list(self.error_log.handlers)
        app_log.setLevel(self.error_log.level)
        app_log.propagate = False
        if self.as_json or logging.root.handlers in ([], _GIVEN_TO_ROOT):
            # Libraries' loggers would otherwise reach stderr as plain text, unredacted (Python's last resort
            # handler, when nothing configured the root logger); in JSON Python's warnings too. Again on a reload
            # (HUP), which replaces the error log's handlers: the old ones' files are reopened no more.
            logging.root.handlers = list(self.error_log.handlers)
            _GIVEN_TO_ROOT[:] = logging.root.handlers
        if self.as_json:
            logging.captureWarnings(True)
        self._plain = self._plain_handler()

    def _plain_handler(self) -> logging.StreamHandler | None:
        """gunicorn's own handler of the access log, if it writes each message as it is (`access_fmt`) to stderr,
        stdout or a file (`accesslog`), and the line would pass its level and filters: a LogRecord, the filter and
        the formatter cost more than the line itself, about 9 of 12 µs per request. Anything else, syslog or
        JSON, a handler added by a configuration, goes through logging as before."""
        handlers = self.access_log.handlers
        if self.as_json or len(handlers) != 1 or not self.access_log.isEnabledFor(logging.INFO):
            return None
        handler = handlers[0]
        if (
            not isinstance(handler, logging.StreamHandler)
            or type(handler) not in (logging.StreamHandler, logging.FileHandler)  # not a subclass's own emit
            or getattr(handler.formatter, "_fmt", None) != self.access_fmt
            or handler.level > logging.INFO
            or not all(isinstance(f, RedactingFilter) for f in handler.filters)  # which passes a redacted line
        ):
            return None
        return handler

    def access(self, resp, req, environ, request_time) -> None:
        # gunicorn counts what it writes, but not what sendfile sends (a whole GetFile): our worker's socket does
        # (wopihost/worker.py), and this is called once for each response.
        by_sendfile = getattr(getattr(resp, "sock", None), "sendfile_sent", None)
        if by_sendfile:
            resp.sent += by_sendfile
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT or not self.access_log_enabled:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        path = environ.get("PATH_INFO", "")
        if len(path) >= TOKEN_SHAPE_LENGTH or CREDENTIAL_SEGMENT.search(path):
            path = redact(path)
        if not path.isprintable():  # decoded by gunicorn: %0A would end the line, and the client write the next
            path = _escape_controls(path)
        override = environ.get("HTTP_X_WOPI_OVERRIDE", "-")
        if override != "-":
            override = redact(override)
        elapsed = request_time.seconds * 1000 + request_time.microseconds // 1000
        sent = getattr(resp, "sent", None)
        extra: dict[str, Any] = {"redacted": True}
        if self.as_json:
            file_id = environ.get(FILE_ID)
            length = environ.get("CONTENT_LENGTH", "")
            extra["access"] = {
                "remote_addr": environ.get("REMOTE_ADDR"),
                "method": environ.get("REQUEST_METHOD"),
                "path": path,
                "protocol": environ.get("SERVER_PROTOCOL"),
                "operation": environ.get(OPERATION),
                "file_id": redact(file_id)[:LONGEST_FILE_ID] if file_id else None,
                "status": _int(status),
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "bytes_in": int(length) if length.isdigit() else 0,
                "bytes_out": sent,
            }
        try:
            line = (
                f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD")} {path} '
                f'{environ.get("SERVER_PROTOCOL")}" {status} {sent} {elapsed}ms override={override}'
            )
            plain = self._plain
            # (checked again for each line: a handler added since setup, or the file closed at shutdown)
            if plain is not None and self.access_log.handlers == [plain] and plain.stream is not None:
                plain.acquire()  # as its emit() does; gunicorn's reopen_files (SIGUSR1) takes the same lock
                try:
                    plain.stream.write(line + plain.terminator)
                    plain.stream.flush()
                finally:
                    plain.release()
            else:
                self.access_log.info("%s", line, extra=extra)
        except Exception:  # as gunicorn's own access(): a log line never fails a request
            self.error(traceback.format_exc())


def _configured_handlers() -> set[logging.Handler]:
    """The handlers of the root logger and of every other: gunicorn's, and any a logging configuration made."""
    loggers = [logging.root, *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return {handler for logger in loggers for handler in logger.handlers}


def _int(status) -> int | str:
    try:
        return int(status)
    except (TypeError, ValueError):
        return status
