"""Callback tokens: how they are made, checked and kept out of sight.

One implementation, used by the API and by the guard: a gateway's receipts are
accepted with its current token, or with its previous one until the grace
period after a rotation runs out.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TOKEN_BYTES = 32  # 256 bits from the OS's CSPRNG
# Tokens travel in query strings and headers: URL-safe characters only.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{24,255}$")
REDACTED = "[redacted]"


def generate() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_matches(
    given: str | None,
    current: str,
    previous: Iterable[tuple[str, str]] = (),
    now_iso: str = "",
) -> bool:
    """True when ``given`` is the current token, or a previous one within its own grace.

    ``previous`` holds ``(token, expires_at)`` pairs. Every comparison runs, in
    constant time, so the answer's timing says nothing about which token (if any)
    came close. Timestamps are the fixed-width UTC text of ``api.clock``, so
    comparing them as strings compares times.
    """
    if not given:
        return False
    given_bytes = given.encode()
    ok = hmac.compare_digest(given_bytes, current.encode())
    for token, expires_at in previous:
        live = bool(token) and bool(expires_at) and now_iso < expires_at
        ok = (hmac.compare_digest(given_bytes, (token or "").encode()) and live) or ok
    return ok


def redact_url(url: str) -> str:
    """``url`` with the value of any ``token`` query parameter replaced.

    Messages show the DLR URL they were sent with; the token in it belongs to
    the gateway record, not to every client that reads a message.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "token" for key, _ in pairs):
        return url
    query = urlencode([(k, REDACTED if k == "token" else v) for k, v in pairs], safe="[]")
    return urlunsplit(parts._replace(query=query))
