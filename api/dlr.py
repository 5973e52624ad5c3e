"""Delivery receipts (DLRs): what a receipt says, and applying it to its message.

``parse_receipt`` is the pure part — which field holds the id, which the
status — so the rules of the contract are tested on their own. ``receive``
answers the gateway: always ``200 {"message": "DLR received"}`` for a receipt
it could read, matched or not, so a gateway's retry-on-non-2xx never fires.
The callback token is checked before a receipt gets here (the guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api import clock, db, jsonsafe, unmatched
from api.bodies import read_body
from api.delivery import Incoming, apply_to_message
from api.peer import client_address
from api.tables import gateways, messages

ID_FIELDS = ("message_id", "id", "messageId")
STATUS_FIELDS = ("status", "message_status")
DEFAULT_STATUS = "delivered"
# Never merged into the stored conversation: the gateway's secret, under any
# name a gateway might give it (compared without case).
SECRET_FIELDS = frozenset({"token", "callback_token", "x-callback-token"})
RECEIVED = {"message": "DLR received"}
JASMIN_ACK = "ACK/Jasmin"
MAX_EXTERNAL_ID = 255  # sms_messages.external_message_id


@dataclass(frozen=True)
class Receipt:
    external_id: str | None
    status: str
    payload: dict[str, Any]  # what is merged into remote_response


def _text(value: Any) -> str | None:
    """A scalar field as text; objects, lists and blanks count as absent."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def parse_receipt(fields: Mapping[str, Any]) -> Receipt:
    """The contract's rules: id from ``message_id``, else ``id``, else ``messageId``;
    status from ``status``, else ``message_status``, else ``delivered``; lowercased."""
    external_id = next((t for t in (_text(fields.get(k)) for k in ID_FIELDS) if t), None)
    if external_id is not None:
        # Longer than any id smsgw stores: it can never match, so it is no id at all.
        external_id = jsonsafe.scrub(external_id) if len(external_id) <= MAX_EXTERNAL_ID else None
    status = next((t for t in (_text(fields.get(k)) for k in STATUS_FIELDS) if t), DEFAULT_STATUS)
    payload = jsonsafe.scrub({
        key: value for key, value in fields.items() if key.lower() not in SECRET_FIELDS
    })
    return Receipt(external_id=external_id, status=jsonsafe.scrub(status.lower()[:32]), payload=payload)


@dataclass(frozen=True)
class Work:
    gateway_id: int
    external_id: str
    incoming: Incoming


async def process(state, gateway_id: int, receipt: Receipt, source_address: str | None) -> str:
    """Apply a receipt to its message, or keep it for the message it is waiting for.

    It goes through the group-commit writer (``api.writer``): applied in a
    transaction with others, and this returns only once that is committed.
    Returns what happened: "applied", "parked" or "ignored".
    """
    if receipt.external_id is None or gateway_id > db.MAX_ID:
        return "ignored"  # nothing to match it with
    work = Work(gateway_id, receipt.external_id,
                Incoming(receipt.status, receipt.payload, source_address, clock.now_iso()))
    return await state.writer.submit((gateway_id, receipt.external_id), work)


def applier(dialect: str, unmatched_ttl: float):
    """The writer's per-receipt step, inside its transaction.

    It holds the (gateway, external id) lock and the message's row: two
    receipts for one message are applied one after the other, each deciding on
    what the other left; a receipt racing the send that stores its external id
    is either applied here or found by the send's transaction.
    """

    async def apply(connection, work: Work) -> str:
        await db.lock_key(connection, dialect, work.gateway_id, work.external_id)
        row = await connection.fetch_one(
            sa.select(messages).where(messages.c.sms_gateway_id == work.gateway_id,
                                      messages.c.external_message_id == work.external_id).with_for_update()
        )
        if row is not None:
            await apply_to_message(connection, dialect, db.as_dict(row), work.incoming)
            return "applied"
        known = await connection.fetch_val(sa.select(gateways.c.id).where(gateways.c.id == work.gateway_id))
        if known is None:
            return "ignored"  # no such gateway: nothing will ever match
        await unmatched.park(connection, work.gateway_id, work.external_id, work.incoming, unmatched_ttl)
        return "parked"

    return apply


def from_jasmin(headers: Mapping[str, str]) -> bool:
    """Jasmin's thrower says who it is, and asks for text/plain."""
    return headers.get("user-agent", "").startswith("Jasmin gateway/") or \
        headers.get("accept", "").strip().lower() == "text/plain"


def acknowledge(headers: Mapping[str, str]) -> Response:
    """Jasmin counts a receipt as delivered only when the body is exactly ``ACK/Jasmin``;
    anything else makes it retry (3 more times, 30 s apart). Everyone else gets the contract's JSON."""
    if from_jasmin(headers):
        return PlainTextResponse(JASMIN_ACK)
    return JSONResponse(RECEIVED)


async def receive(request: Request) -> Response:
    """POST: fields in the body (JSON or form). GET: fields in the query string,
    as Jasmin sends them with ``dlr-method=GET``. Either way the token is not a field."""
    state = request.app.state
    if request.method == "GET":
        fields = dict(request.query_params)
    else:
        fields = (await read_body(request, state.settings.max_body_bytes, empty_ok=True)).data
    await process(state, request.path_params["id"], parse_receipt(fields), client_address(request))
    return acknowledge(request.headers)
