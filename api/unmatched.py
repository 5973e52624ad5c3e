"""Receipts that arrive before their message is known, as the API lists them.

Jasmin answers ``/send`` while its SMPP submit runs, so its level-1 receipt can
reach smsgw before smsgw has stored the id from its own send call. Such a
receipt is parked (and answered as usual), then applied by itself when a
message of that gateway records that external id (``api.changes``). Kept for
``SMSGW_UNMATCHED_TTL`` (48 h); after that it is marked expired, never deleted.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import pages
from api.changes import APPLIED, EXPIRED, PENDING
from api.openapi_shapes import ANY, ID, STRING, TIME, enum, nullable, shape
from api.resources import get_or_404
from api.responses import ok
from api.tables import unmatched_receipts
from api.validation import Field

# What ``public`` returns, as the OpenAPI document declares it (and which columns it copies).
SHAPE = shape({
    "id": ID,
    "sms_gateway_id": ID,
    "external_message_id": STRING,
    "raw_status": STRING,
    "payload": ANY,
    "source_address": nullable(STRING),
    "status": enum((PENDING, APPLIED, EXPIRED)),
    "message_id": nullable(ID),
    "received_at": TIME,
    "expires_at": TIME,
    "resolved_at": nullable(TIME),
})
FILTERS = {"status": Field("string", nullable=True, choices=(PENDING, APPLIED, EXPIRED))}


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in SHAPE["properties"]}


async def list_unmatched(request: Request) -> JSONResponse:
    """``GET /api/sms-gateways/{id}/unmatched-dlrs``: newest first, ``?status=`` and keyset pages."""
    database = request.app.state.database
    gateway_id = (await get_or_404(request, count=False))["id"]
    filters = pages.query_filters(request, FILTERS)
    query = sa.select(unmatched_receipts).where(unmatched_receipts.c.sms_gateway_id == gateway_id)
    if "status" in filters:
        query = query.where(unmatched_receipts.c.status == filters["status"])
    items, meta = await pages.page(database, query, unmatched_receipts.c.id, filters, public)
    return ok("Unmatched DLRs fetched successfully.", items, meta=meta)
