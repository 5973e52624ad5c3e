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
    return datetime.strptime(stamp, FORMAT).replace(tzinfo=timezone.utc)


def after(stamp: str, seconds: float) -> str:
    """``stamp`` plus ``seconds``: for pure code, which is given the time instead of reading it."""
    return iso(parse(stamp) + timedelta(seconds=seconds))
