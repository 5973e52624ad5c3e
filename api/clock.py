"""Time as smsgw stores and shows it: UTC, ISO 8601, with ``Z``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed width (microseconds always present) so stored text sorts in time order."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return iso(now())


def iso_after(seconds: float) -> str:
    return iso(now() + timedelta(seconds=seconds))
