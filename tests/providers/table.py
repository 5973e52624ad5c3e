"""What every provider's table test shares: its samples by name, and what an outcome must say."""

from __future__ import annotations

from pathlib import Path

from api.providers.base import GATEWAY_ERROR, UNREADABLE_REPLY, Outcome

HERE = Path(__file__).parent
UNREADABLE = {"ok": False, "external_id": None, "failure_code": UNREADABLE_REPLY, "retry": None}


def sample(protocol: str, name: str) -> bytes:
    """A real reply or receipt, byte for byte, from ``tests/providers/<protocol>/testdata/``."""
    return (HERE / protocol / "testdata" / name).read_bytes()


def reply(protocol: str, given: str | bytes) -> bytes:
    """A table row's reply: a sample's file name, or the bytes themselves."""
    return sample(protocol, given) if isinstance(given, str) else given


def failed(status: int, detail: str, code: str = GATEWAY_ERROR, retry: str | None = None) -> dict:
    """An error reply, read: ``retry`` None (the default) means refused for good."""
    return {"ok": False, "external_id": None, "failure_code": code, "retry": retry,
            "failure_reason": f"gateway answered HTTP {status}: {detail}"}


def said(outcome: Outcome, expected: dict) -> dict:
    """The outcome's fields that a row names, to compare with the row."""
    return {key: getattr(outcome, key) for key in expected}
