"""Reading messages back: one message, and a gateway's messages page by page; no row is written here.

Sending (the route and its writes) is ``api.sending``.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import auth, callback_tokens, db, encoding, pages, phone, scopes, states
from api.openapi_shapes import ANY, BOOLEAN, ID, INTEGER, STRING, TIME, described, enum, nullable, shape
from api.resources import get_or_404, path_id
from api.responses import ApiError, ok
from api.tables import messages
from api.validation import Field


# What ``public`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "sms_gateway_id": ID,
    "to_number": described(STRING, "E.164, as it was sent."),
    "from_sender": STRING,
    "message": STRING,
    "callback_url": described(STRING, "Where the gateway sends receipts; a token in it is redacted."),
    "delivery_status": described(STRING, "The last status a gateway reported, lowercased."),
    "state": enum(states.RANK),
    "status_conflict": BOOLEAN,
    "external_message_id": nullable(STRING),
    "failure_reason": nullable(STRING),
    "failure_code": nullable(STRING),
    "encoding": nullable(enum((encoding.GSM7, encoding.UCS2))),
    "segments": nullable(INTEGER),
    "remote_response": described(ANY, "The gateway's answer to the send, as it was; null before one."),
    "client_reference": nullable(STRING),
    "batch_id": nullable(ID),
    "send_at": nullable(TIME),
    "validity_period": nullable(INTEGER),
    "expires_at": nullable(TIME),
    "attempts": INTEGER,
    "next_attempt_at": nullable(TIME),
    "submitted_at": nullable(TIME),
    "delivered_at": nullable(TIME),
    "failed_at": nullable(TIME),
    "canceled_at": nullable(TIME),
    "created_at": TIME,
    "updated_at": TIME,
    "sequence": described(INTEGER, "How many changes the message has had: its webhooks' order."),
})
# The filters of a gateway's message list (``?state=`` ...), besides paging (api.pages).
FILTERS = {
    "delivery_status": Field("string", nullable=True, max_length=32),
    "state": Field("string", nullable=True, choices=tuple(states.RANK)),
    "to_number": Field("string", nullable=True, max_length=30),
    "client_reference": Field("string", nullable=True, max_length=64),
    "batch_id": Field("integer", nullable=True, min_value=1),
}


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sms_gateway_id": row["sms_gateway_id"],
        "to_number": row["to_number"],
        "from_sender": row["from_sender"],
        "message": row["message"],
        "callback_url": callback_tokens.redact_url(row["callback_url"]),
        "delivery_status": row["delivery_status"],
        "state": row["state"],
        "status_conflict": bool(row["status_conflict"]),
        "external_message_id": row["external_message_id"],
        "failure_reason": row["failure_reason"],
        "failure_code": row["failure_code"],
        "encoding": row["encoding"],
        "segments": row["segments"],
        "remote_response": row["remote_response"],
        "client_reference": row["client_reference"],
        "batch_id": row["batch_id"],
        "send_at": row["send_at"],
        "validity_period": row["validity_period"],
        "expires_at": row["expires_at"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"],
        "submitted_at": row["submitted_at"],
        "delivered_at": row["delivered_at"],
        "failed_at": row["failed_at"],
        "canceled_at": row["canceled_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sequence": row["sequence"],
    }


MESSAGE = sa.select(messages).where(messages.c.id == sa.bindparam("id"))


async def fetch_message(database, message_id: int) -> dict[str, Any] | None:
    return await db.read_one(database, MESSAGE, {"id": message_id})


async def show_message(request: Request) -> JSONResponse:
    message = await fetch_message(request.app.state.database, path_id(request, "SMS message not found."))
    # A message of a gateway the key may not use is not found, as an unknown id
    # is: a 403 would tell which ids exist on other gateways.
    if message is None or not scopes.may_use_gateway(auth.key_of(request).gateway_ids, message["sms_gateway_id"]):
        raise ApiError(404, "SMS message not found.")
    return ok("SMS message fetched successfully.", public(message))


def stored_form(number: str) -> str:
    """A ``to_number`` filter as sends store it: E.164 when it is a valid number, so a
    user finds what they sent however they type it; as given otherwise, so messages
    stored before numbers were validated (e.g. ``15550001``) can still be found."""
    try:
        return phone.e164(number)
    except phone.InvalidNumber:
        return number


async def list_gateway_messages(request: Request) -> JSONResponse:
    """Newest first, ``limit`` at a time; ``meta.next_cursor`` fetches the next page (see api.pages)."""
    database = request.app.state.database
    gateway_id = (await get_or_404(request, count=False))["id"]
    filters = pages.query_filters(request, FILTERS)
    query = sa.select(messages).where(messages.c.sms_gateway_id == gateway_id)
    if "delivery_status" in filters:
        query = query.where(messages.c.delivery_status == filters["delivery_status"].lower())
    if "state" in filters:
        query = query.where(messages.c.state == filters["state"])
    if "to_number" in filters:
        query = query.where(messages.c.to_number == stored_form(filters["to_number"]))
    if "client_reference" in filters:
        query = query.where(messages.c.client_reference == filters["client_reference"])
    if "batch_id" in filters:
        query = query.where(messages.c.batch_id == filters["batch_id"])
    items, meta = await pages.page(database, query, messages.c.id, filters, public)
    return ok("SMS messages fetched successfully.", items, meta=meta)
