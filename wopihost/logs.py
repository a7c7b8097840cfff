"""Logging that never shows a secret.

Access tokens travel in query strings; Graph's upload and download URLs, FileUrls and share links are
credentials in their path; and a
log line can quote a request target for many reasons: gunicorn
quotes a malformed request line whole ("Invalid HTTP Version: '?access_token=...'"), an error message may
name a URL. Rather than trust every message, each handler gunicorn logs through redacts what looks like a
credential on the way out, tracebacks included, and the application's own loggers write through the same
handlers.
"""

from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger

REDACTED = "[redacted]"

_SECRETS = re.compile(
    r"(?P<param>access_token(?:%3d|=))[^&\s'\"\\]*"  # a query parameter, raw or percent-encoded
    r"|(?P<scheme>\bbearer\s+)\S+"  # an Authorization header's credentials
    # the credential in the path of a Graph upload or download URL, a FileUrl, a share link, a Graph share id
    r"|(?P<path>/(?:uploadSessions|downloads|download|s|shares)/)[^/?\s'\"\\]+"
    r"|[a-z2-7]{64,}",  # a token by its shape: long base32, whatever spelling or context (ours are ~150)
    re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group("param") or m.group("scheme") or m.group("path") or "") + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with its secrets redacted."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class GunicornLogger(Logger):
    """gunicorn's logger (`logger_class`), with every handler redacting, and the application's loggers
    (`wopihost.*`) writing through its error log's handlers at its level."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
        app_log = logging.getLogger("wopihost")
        app_log.handlers = list(self.error_log.handlers)
        app_log.setLevel(self.error_log.level)
        app_log.propagate = False
