"""Callback tokens: how they are made, checked and kept out of sight.

One implementation, used by the API and by the guard: a gateway's receipts are
accepted with its current token, or with a previous one until the grace period
of the rotation that replaced it runs out (each previous token has its own).
"""

from __future__ import annotations

import functools

import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TOKEN_BYTES = 32  # 256 bits from the OS's CSPRNG
# Tokens travel in query strings and headers: URL-safe characters only.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{24,255}$")
REDACTED = "[redacted]"
# Previous tokens a gateway may have in grace at once: each is compared on every receipt.
MAX_PREVIOUS_TOKENS = 10


def generate() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def well_formed(token: object) -> bool:
    """Whether ``token`` could be a callback token at all: 24-255 characters of the
    URL-safe alphabet, and nothing else (no newline, nothing outside ASCII).

    Receipts carry tokens as text the sender chose: mitmproxy decodes a raw byte
    such as 0xFF in a header as a lone surrogate, which cannot even be encoded.
    Such a token is simply wrong; no token can have it."""
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


def token_matches(
    given: str | None,
    current: str,
    previous: Iterable[tuple[str, str]] = (),
    now_iso: str = "",
) -> bool:
    """True when ``given`` is the current token, or a previous one within its own grace.

    ``previous`` holds ``(token, expires_at)`` pairs. A ``given`` that is not
    ``well_formed`` never matches (and never raises). Otherwise every comparison
    runs, in constant time, so the answer's timing says nothing about which token
    (if any) came close. Timestamps are the fixed-width UTC text of ``api.clock``,
    so comparing them as strings compares times.
    """
    if not well_formed(given):
        return False
    given_bytes = given.encode("ascii")  # stored tokens come from the database: valid text
    ok = hmac.compare_digest(given_bytes, current.encode())
    for token, expires_at in previous:
        live = bool(token) and still_in_grace(expires_at, now_iso)
        ok = (hmac.compare_digest(given_bytes, (token or "").encode()) and live) or ok
    return ok


def still_in_grace(expires_at: str | None, now_iso: str) -> bool:
    """The one rule for a previous token: valid while ``now_iso`` is before its ``expires_at``
    (fixed-width UTC text, so the string comparison compares times); no expiry, no grace."""
    return bool(expires_at) and now_iso < expires_at


def in_grace(history: Iterable[Mapping[str, str]] | None, now_iso: str) -> list[dict[str, str]]:
    """The previous tokens (``{"token", "expires_at"}``) whose grace has not ended, soonest end first."""
    return sorted(({"token": e["token"], "expires_at": e["expires_at"]} for e in history or []
                   if still_in_grace(e["expires_at"], now_iso)), key=lambda e: e["expires_at"])


def history_after_rotation(current: str, history, grace_seconds: int, now_iso: str,
                           until_iso: str) -> list[dict[str, str]]:
    """The previous tokens once ``current`` is replaced: every one still in its grace keeps it,
    and ``current`` joins them until ``until_iso``. A rotation with no grace revokes them all
    at once, the current one included: that is the answer to a leaked token, and a leak may
    have taken an older token too."""
    if grace_seconds <= 0:
        return []
    return in_grace([*(history or []), {"token": current, "expires_at": until_iso}], now_iso)


@functools.lru_cache(maxsize=1024)
def redact_url(url: str) -> str:
    """``url`` with the value of any ``token`` query parameter replaced.

    Messages show the DLR URL they were sent with; the token in it belongs to
    the gateway record, not to every client that reads a message. Remembered: a
    gateway's messages nearly all carry its one default URL, and a batch's answer
    shows a thousand of them.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "token" for key, _ in pairs):
        return url
    query = urlencode([(k, REDACTED if k == "token" else v) for k, v in pairs], safe="[]")
    return urlunsplit(parts._replace(query=query))
