"""Who is on the other end of a request: one rule for receipts and the audit trail."""

from __future__ import annotations

from starlette.requests import Request

LOOPBACK = ("127.0.0.1", "::1")


def client_address(request: Request) -> str | None:
    """The peer, or, when the peer is a proxy on this host (the guard, nginx), the
    client address it put in X-Forwarded-For. From anyone else the header is
    ignored: a client cannot choose the address recorded for it."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in LOOPBACK:
        return forwarded.split(",")[0].strip()[:64]
    return peer
