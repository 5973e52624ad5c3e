"""A message's history: every receipt and every state change, kept in order.

Nothing about a message's delivery is ever only overwritten: a receipt that
changes nothing is still recorded, with the reason why not.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import auth, pages, scopes
from api.changes import RECEIPT, STATE
from api.openapi_shapes import ANY, BOOLEAN, ID, STRING, TIME, described, enum, nullable, shape
from api.resources import path_id
from api.responses import ApiError, ok
from api.tables import events, messages

# What ``public`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "kind": described(enum((RECEIPT, STATE)), "A receipt that arrived, or a change smsgw made itself."),
    "raw_status": nullable(STRING),
    "state_before": nullable(STRING),
    "state_after": nullable(STRING),
    "changed": BOOLEAN,
    "reason": STRING,
    "payload": described(ANY, "The receipt's fields as they arrived (never its token)."),
    "source_address": nullable(STRING),
    "received_at": TIME,
    "recorded_at": TIME,
})


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "kind": row["kind"], "raw_status": row["raw_status"],
        "state_before": row["state_before"], "state_after": row["state_after"],
        "changed": bool(row["changed"]), "reason": row["reason"], "payload": row["payload"],
        "source_address": row["source_address"], "received_at": row["received_at"],
        "recorded_at": row["created_at"],
    }


async def list_message_events(request: Request) -> JSONResponse:
    """Oldest first, ``limit`` at a time (50 by default, at most 200); ``meta.next_cursor``
    continues where the page ended."""
    database = request.app.state.database
    message_id = path_id(request, "SMS message not found.")
    gateway_id = await database.fetch_val(sa.select(messages.c.sms_gateway_id).where(messages.c.id == message_id))
    # Another gateway's message is not found, exactly as an unknown id (see messages.show_message).
    if gateway_id is None or not scopes.may_use_gateway(auth.key_of(request).gateway_ids, gateway_id):
        raise ApiError(404, "SMS message not found.")
    filters = pages.query_filters(request, {})
    query = sa.select(events).where(events.c.message_id == message_id)
    items, meta = await pages.page(database, query, events.c.id, filters, public, oldest_first=True)
    return ok("SMS message events fetched successfully.", items, meta=meta)
