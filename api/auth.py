"""API keys: ``Authorization: Bearer <key>`` on every management route.

Authentication only: which key a request carries and what it may do; storing,
listing and revoking keys is ``api.keys``. A key is stored as its SHA-256: a
stolen database does not hand out working keys. ``SMSGW_ADMIN_KEY``, when set,
is accepted too (with every scope), so a first key can be made over the API
without the CLI. What a key may do — its scopes, its gateways, its destination
countries — is decided in ``api.scopes``; ``require_api_key`` enforces it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable

import sqlalchemy as sa
from databases import Database
from starlette.requests import Request
from starlette.responses import Response

from api import audit, db
from api import scopes as scopes_module
from api.responses import ApiError
from api.tables import api_keys

KEY_PREFIX = "smsgw_"
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="smsgw"'}

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class KeyInfo:
    """The key a request was made with, as routes see it (``request.state.api_key``).

    Never holds the key itself: only what it may do.
    """

    id: int | None            # None for SMSGW_ADMIN_KEY
    name: str
    scopes: frozenset[str]
    gateway_ids: frozenset[int] | None   # None = every gateway
    allowed_countries: frozenset[str] | None  # None = any destination


ADMIN = KeyInfo(id=None, name="admin key", scopes=scopes_module.ALL, gateway_ids=None, allowed_countries=None)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_info(row) -> KeyInfo:
    ids, countries = row["gateway_ids"], row["allowed_countries"]
    return KeyInfo(
        id=row["id"], name=row["name"], scopes=frozenset(row["scopes"] or ()),
        gateway_ids=None if ids is None else frozenset(int(i) for i in ids),
        allowed_countries=None if countries is None else frozenset(countries),
    )


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        return None
    return value


async def authenticate(database: Database, admin_key: str | None, key: str | None) -> KeyInfo | None:
    """The key's KeyInfo, or None when it is missing, unknown or revoked."""
    if not key:
        return None
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return ADMIN
    row = await db.read_one(database, KEY_BY_HASH, {"key_hash": hash_key(key)})
    return key_info(row) if row is not None else None


KEY_BY_HASH = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.scopes, api_keys.c.gateway_ids,
                        api_keys.c.allowed_countries).where(
    api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None))


def require_api_key(endpoint: Endpoint) -> Endpoint:
    """Wrap a route's endpoint so it runs only for a valid API key (401 otherwise)
    that holds the route's scope and may use the gateway it names (403 otherwise,
    recorded in the audit trail). The rules are ``api.scopes.ROUTES``: one table
    for every route, looked up by the route's path template."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        state = request.app.state
        key = await authenticate(state.database, state.settings.admin_key,
                                 bearer_token(request.headers.get("authorization")))
        if key is None:
            raise ApiError(401, "Unauthorized.", headers=UNAUTHORIZED_HEADERS)
        request.state.api_key = key
        method = "GET" if request.method == "HEAD" else request.method
        route = request.scope["route"].path
        refused = scopes_module.refusal(method, route, key.scopes, key.gateway_ids, request.path_params.get("id"))
        if refused is not None:
            await audit.denied(request, method, route, refused)
            raise ApiError(403, refused)
        return await endpoint(request)

    return guarded


def key_of(request: Request) -> KeyInfo:
    """The key the request was authenticated with (set by ``require_api_key``)."""
    return request.state.api_key
