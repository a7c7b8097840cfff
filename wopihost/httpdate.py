"""The Date header of a response, formatted once a second.

Both gunicorn (its own Date header, on every response) and Werkzeug (`make_conditional`, on every download)
format the current time anew for each response, through email.utils: 3% of a CheckFileInfo's CPU. The
header shows whole seconds only, so it is formatted once a second, as nginx does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from werkzeug.http import http_date as _format


class DateOfTheSecond:
    """The current time as an HTTP date, formatted when the second changes; a time it is given is still
    formatted as asked."""

    def __init__(self, format_date: Callable[[float], str], clock: Callable[[], float] = time.time) -> None:
        self._format, self._clock = format_date, clock
        self._last: tuple[int, str] = (-1, "")  # replaced whole: threads read it without a lock

    def __call__(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return self._format(timestamp)
        second = int(self._clock())
        last = self._last
        if last[0] != second:
            last = self._last = (second, self._format(second))
        return last[1]


http_date = DateOfTheSecond(_format)
