"""Who is on the other end of a request: one rule, for the API and the guard alike.

Both ask the same question — the peer, or the client a proxy in front says it
saw — and differ only in whom they trust to say it: the API trusts the proxies
on its own host (the guard, nginx: loopback), the guard the addresses listed in
SMSGW_GUARD_TRUSTED_PROXIES (nginx in front of it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request

LOOPBACK = ("127.0.0.1", "::1")  # whom the API trusts: the guard and nginx, on this host


def client_address_from(peer: str | None, forwarded_for: Sequence[str], trusted: Collection[str]) -> str | None:
    """The client's address: ``peer``'s, unless ``peer`` is in ``trusted`` and its
    X-Forwarded-For values (``forwarded_for``, as received) are exactly one IP
    address, the one it saw. From anyone else the header is ignored, so a client
    cannot choose the address recorded for it; a list ("a, b") or anything that
    is not an address is not what the proxies we trust send, and is ignored too."""
    if peer in trusted and len(forwarded_for) == 1:
        try:
            return str(ipaddress.ip_address(forwarded_for[0].strip()))
        except ValueError:
            pass
    return peer


def client_address(request: Request) -> str | None:
    """The rule above for a request the API serves."""
    peer = request.client.host if request.client else None
    return client_address_from(peer, request.headers.getlist("x-forwarded-for"), LOOPBACK)
