"""Time as smsgw stores and shows it: UTC, ISO 8601, with ``Z``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed width (microseconds always present) so stored text sorts in time order."""
    return moment.astimezone(timezone.utc).strftime(FORMAT)


def now_iso() -> str:
    return iso(now())


def iso_after(seconds: float) -> str:
    return iso(now() + timedelta(seconds=seconds))


def parse(stamp: str) -> datetime:
    """A stored timestamp as a datetime (``fromisoformat``: C, some 20 times faster than
    ``strptime``, and a batch of 1,000 messages parses several each)."""
    return datetime.fromisoformat(stamp)


def after(stamp: str, seconds: float) -> str:
    """``stamp`` plus ``seconds``: for pure code, which is given the time instead of reading it."""
    return iso(parse(stamp) + timedelta(seconds=seconds))


def seconds_between(start: str, end: str) -> float:
    """``end`` minus ``start``, in seconds (negative when ``end`` is earlier)."""
    return (parse(end) - parse(start)).total_seconds()


def from_rfc3339(text: str) -> str | None:
    """An RFC 3339 date-time with its offset (``2026-11-27T18:00:00+01:00``, ``...Z``)
    as a stored timestamp; None when it is not one (a time without an offset is
    ambiguous, so it is refused)."""
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None or "T" not in text.upper() or not 1900 < moment.year < 9000:
            return None  # (years far off would not format or sort as stored timestamps do)
        return iso(moment)
    except (ValueError, OverflowError):
        return None
