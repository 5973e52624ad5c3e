"""API keys: ``Authorization: Bearer <key>`` on every management route.

A key is shown once, when it is made, and stored as its SHA-256: a stolen
database does not hand out working keys. ``SMSGW_ADMIN_KEY``, when set, is
accepted too, so a first key can be made over the API without the CLI.
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

from api import clock, db
from api.responses import ApiError
from api.tables import api_keys

KEY_PREFIX = "smsgw_"
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="smsgw"'}

Endpoint = Callable[[Request], Awaitable[Response]]

ALL_SCOPES = frozenset({"messages:send", "messages:read", "gateways:read", "gateways:admin", "keys:admin"})


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


ADMIN = KeyInfo(id=None, name="admin key", scopes=ALL_SCOPES, gateway_ids=None, allowed_countries=None)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(database: Database, name: str) -> tuple[int, str]:
    """Store a new key under ``name``; return its id and the key (the only time it is seen)."""
    key = new_key()
    key_id = await database.fetch_val(
        api_keys.insert()
        .values(name=name, key_hash=hash_key(key), key_prefix=key[:12], created_at=clock.now_iso())
        .returning(api_keys.c.id)
    )
    return key_id, key


async def list_keys(database: Database) -> list[dict]:
    rows = await database.fetch_all(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.key_prefix,
                  api_keys.c.created_at, api_keys.c.revoked_at).order_by(api_keys.c.id)
    )
    return [db.as_dict(row) for row in rows]


async def revoke_key(database: Database, key_id: int) -> bool:
    rows = await database.fetch_all(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=clock.now_iso())
        .returning(api_keys.c.id)
    )
    return bool(rows)


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
    row = await database.fetch_one(
        sa.select(api_keys.c.id, api_keys.c.name).where(
            api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    return KeyInfo(id=row["id"], name=row["name"], scopes=ALL_SCOPES, gateway_ids=None, allowed_countries=None)


def require_api_key(endpoint: Endpoint) -> Endpoint:
    """Wrap a route's endpoint so it runs only for a valid API key; 401 otherwise."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        state = request.app.state
        key = await authenticate(state.database, state.settings.admin_key,
                                 bearer_token(request.headers.get("authorization")))
        if key is None:
            raise ApiError(401, "Unauthorized.", headers=UNAUTHORIZED_HEADERS)
        request.state.api_key = key
        return await endpoint(request)

    return guarded
