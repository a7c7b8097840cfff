"""Time, in one place, so tests can move it instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock UTC time as naive datetimes (how the database stores it)."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


class FrozenClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None):
        self._now = start or Clock().now()

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += timedelta(**delta)


def to_epoch_ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def iso_round_trip(moment: datetime) -> str:
    """ISO 8601 with 7 fractional digits and Z, the .NET round-trip format WOPI asks for."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "0Z"


def parse_iso(text: str) -> datetime | None:
    """Parse an ISO 8601 time (any fraction length, Z or offset) to naive UTC; None if malformed.

    Python 3.11's fromisoformat reads what WOPI and Graph clients send, .NET's seven fractional digits
    (it keeps six) and a Z included, so no date library is needed; only the lower-case z and t that
    RFC 3339 allows need upper-casing first."""
    try:
        moment = datetime.fromisoformat(text.strip().upper())
        if moment.tzinfo is not None:  # out of range in UTC (year 1 east of it, 9999 west): OverflowError
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return moment
