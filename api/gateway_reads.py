"""Reading gateway records: the list, one gateway, and how the API shows one; no row is written here.

Writing them is ``api.gateways``. The password is never shown; the callback
token only to a key with ``gateways:admin`` (``shown``).
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import auth, callback_tokens, clock, db, scopes
from api.openapi_shapes import (
    BOOLEAN, ID, INTEGER, NUMBER, OBJECT, STRING, TIME, array, described, enum, nullable, shape,
)
from api.providers import PROVIDERS
from api.resources import get_or_404, messages_count
from api.responses import ok
from api.tables import gateways
from api.validation import Field, validate


# What ``public`` returns, as the OpenAPI document declares it. The token fields are
# left out for a key without gateways:admin (``shown``).
SHAPE = shape({
    "id": ID,
    "name": STRING,
    "provider_type": enum(PROVIDERS),
    "server_host": STRING,
    "server_port": INTEGER,
    "api_path": STRING,
    "username": nullable(STRING),
    "default_sender_id": nullable(STRING),
    "callback_token": described(STRING, "Only for a key with gateways:admin."),
    "callback_token_previous_expires_at": described(
        nullable(TIME), "When the latest previous token stops being accepted; only for gateways:admin."),
    "callback_token_previous_expiries": described(
        array(TIME), "When each previous token stops being accepted, soonest first; only for gateways:admin."),
    "is_active": BOOLEAN,
    "use_ssl": BOOLEAN,
    "notes": nullable(STRING),
    "meta": nullable(OBJECT),
    "throughput_per_second": nullable(NUMBER),
    "max_in_flight": INTEGER,
    "max_attempts": INTEGER,
    "retry_ambiguous": BOOLEAN,
    "default_validity_seconds": nullable(INTEGER),
    "messages_count": INTEGER,
    "created_at": TIME,
    "updated_at": TIME,
}, optional=("callback_token", "callback_token_previous_expires_at", "callback_token_previous_expiries"))


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A gateway as the API shows it: the password never, previous tokens never (only
    until when each is still accepted, soonest first; the latest in the older single field)."""
    expiries = [e["expires_at"] for e in callback_tokens.in_grace(row["previous_callback_tokens"], clock.now_iso())]
    return {
        "id": row["id"],
        "name": row["name"],
        "provider_type": row["provider_type"],
        "server_host": row["server_host"],
        "server_port": row["server_port"],
        "api_path": row["api_path"],
        "username": row["username"],
        "default_sender_id": row["default_sender_id"],
        "callback_token": row["callback_token"],
        "callback_token_previous_expires_at": expiries[-1] if expiries else None,
        "callback_token_previous_expiries": expiries,
        "is_active": bool(row["is_active"]),
        "use_ssl": bool(row["use_ssl"]),
        "notes": row["notes"],
        "meta": row["meta"],
        "throughput_per_second": row["throughput_per_second"],
        "max_in_flight": row["max_in_flight"],
        "max_attempts": row["max_attempts"],
        "retry_ambiguous": bool(row["retry_ambiguous"]),
        "default_validity_seconds": row["default_validity_seconds"],
        "messages_count": row["messages_count"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def shown(request: Request, row: Mapping[str, Any]) -> dict[str, Any]:
    """``public(row)`` as the request's key may see it: token fields only with gateways:admin."""
    return scopes.without_secrets(public(row), auth.key_of(request).scopes)


def like_escape(text: str) -> str:
    """``text`` matched literally by LIKE: its own %, _ and escape character escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


FILTERS = {"search": Field("string", nullable=True, max_length=255)}


def listing(search: str | None, gateway_ids=None) -> sa.Select:
    """Gateways in id order, with their message counts: those whose name, host or provider type
    holds ``search`` (any case), of ``gateway_ids`` when given. The API's list and ``smsgw gateway list``."""
    query = sa.select(gateways, messages_count).order_by(gateways.c.id)
    if search:
        # The pattern is built here, not by SQLAlchemy's icontains(): `databases`
        # %-formats the compiled SQL on SQLite, which breaks on a literal '%'.
        pattern = "%" + like_escape(search.lower()) + "%"
        query = query.where(sa.or_(*(
            sa.func.lower(column).like(pattern, escape="\\")
            for column in (gateways.c.name, gateways.c.server_host, gateways.c.provider_type)
        )))
    if gateway_ids is not None:  # a key limited to some gateways lists only those
        query = query.where(gateways.c.id.in_(sorted(gateway_ids)))
    return query


async def list_gateways(request: Request) -> JSONResponse:
    params = request.query_params
    search = validate({"search": params["search"]} if "search" in params else {}, FILTERS, from_form=True).get("search")
    query = listing(search, auth.key_of(request).gateway_ids)
    rows = await request.app.state.database.fetch_all(query)
    return ok("SMS gateways fetched successfully.", [shown(request, db.as_dict(row)) for row in rows])


async def show_gateway(request: Request) -> JSONResponse:
    return ok("SMS gateway fetched successfully.", shown(request, await get_or_404(request)))
