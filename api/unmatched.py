"""Receipts that arrive before their message is known.

Jasmin answers ``/send`` while its SMPP submit runs, so its level-1 receipt can
reach smsgw before smsgw has stored the id from its own send call. Such a
receipt is kept here (and answered as usual), then applied by itself when a
message of that gateway records that external id. Kept for
``SMSGW_UNMATCHED_TTL`` (48 h); after that it is marked expired, never deleted.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import clock, db, pages
from api.delivery import Incoming, apply_to_message
from api.gateways import get_or_404
from api.responses import ok
from api.tables import unmatched_receipts
from api.validation import Field

PENDING, APPLIED, EXPIRED = "pending", "applied", "expired"


async def park(connection, gateway_id: int, external_id: str, receipt: Incoming, ttl: float) -> None:
    await connection.execute(unmatched_receipts.insert().values(
        sms_gateway_id=gateway_id, external_message_id=external_id, raw_status=receipt.status,
        payload=receipt.payload, source_address=receipt.source_address, status=PENDING,
        received_at=receipt.received_at, expires_at=clock.iso_after(ttl),
    ))


async def apply_pending(connection, dialect: str, message: Mapping[str, Any]) -> int:
    """Apply, in arrival order, the receipts waiting for this message's external id.

    The caller holds the message's row and its (gateway, external id) lock.
    """
    rows = await connection.fetch_all(
        sa.select(unmatched_receipts).where(
            unmatched_receipts.c.sms_gateway_id == message["sms_gateway_id"],
            unmatched_receipts.c.external_message_id == message["external_message_id"],
            unmatched_receipts.c.status == PENDING,
            unmatched_receipts.c.expires_at > clock.now_iso(),
        ).order_by(unmatched_receipts.c.id)
    )
    current = dict(message)
    for row in map(db.as_dict, rows):
        decision = await apply_to_message(connection, dialect, current, Incoming(
            row["raw_status"], row["payload"] or {}, row["source_address"], row["received_at"]))
        current.update(state=decision.state, delivery_status=decision.delivery_status,
                       status_conflict=current["status_conflict"] or decision.conflict)
        await connection.execute(unmatched_receipts.update().where(unmatched_receipts.c.id == row["id"]).values(
            status=APPLIED, message_id=message["id"], resolved_at=clock.now_iso()))
    return len(rows)


async def expire(database) -> int:
    """Mark pending receipts past their time as expired; return how many."""
    rows = await database.fetch_all(
        unmatched_receipts.update()
        .where(unmatched_receipts.c.status == PENDING, unmatched_receipts.c.expires_at <= clock.now_iso())
        .values(status=EXPIRED, resolved_at=clock.now_iso())
        .returning(unmatched_receipts.c.id)
    )
    return len(rows)


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in (
        "id", "sms_gateway_id", "external_message_id", "raw_status", "payload", "source_address", "status",
        "message_id", "received_at", "expires_at", "resolved_at")}


async def list_unmatched(request: Request) -> JSONResponse:
    """``GET /api/sms-gateways/{id}/unmatched-dlrs``: newest first, ``?status=`` and keyset pages."""
    database = request.app.state.database
    gateway_id = (await get_or_404(request, count=False))["id"]
    filters = pages.query_filters(request, {
        "status": Field("string", nullable=True, choices=(PENDING, APPLIED, EXPIRED)),
    })
    query = sa.select(unmatched_receipts).where(unmatched_receipts.c.sms_gateway_id == gateway_id)
    if "status" in filters:
        query = query.where(unmatched_receipts.c.status == filters["status"])
    items, meta = await pages.page(database, query, unmatched_receipts.c.id, filters, public)
    return ok("Unmatched DLRs fetched successfully.", items, meta=meta)
