"""The receipt route: a gateway's delivery receipt (DLR) read, stamped and submitted to the pipeline.

``parse_receipt`` is the pure part — which field holds the id, which the
status — so the rules of the contract are tested on their own. ``submit``
hands the stamped ``changes.Receipt`` to the state-change pipeline, which
applies it to its message (``api.changes``). ``receive`` answers the
gateway: ``200 {"message": "DLR received"}`` for a receipt it could read and
store, matched or not, so a gateway's retry-on-non-2xx never fires for it;
503 with ``Retry-After`` when it could not be stored, so it is sent again. The
callback token is checked before a receipt gets here (the guard). Nothing
here sends: of the providers, only Jasmin's receipt acknowledgement is used.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api import clock, db, jsonsafe
from api.bodies import read_body
from api.changes import Receipt, keepable
from api.peer import client_address
from api.providers import jasmin
from api.responses import ApiError

log = logging.getLogger("smsgw.receipts")

ID_FIELDS = ("message_id", "id", "messageId")
STATUS_FIELDS = ("status", "message_status")
DEFAULT_STATUS = "delivered"
# Never merged into the stored conversation: the gateway's secret, under any
# name a gateway might give it (compared without case).
SECRET_FIELDS = frozenset({"token", "callback_token", "x-callback-token"})
RECEIVED = {"message": "DLR received"}


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
        external_id = jsonsafe.scrub(external_id) if keepable(external_id) else None
    status = next((t for t in (_text(fields.get(k)) for k in STATUS_FIELDS) if t), DEFAULT_STATUS)
    payload = jsonsafe.scrub({
        key: value for key, value in fields.items() if key.lower() not in SECRET_FIELDS
    })
    return Receipt(external_id=external_id, status=jsonsafe.scrub(status.lower()[:32]), payload=payload)


async def submit(state, receipt: Receipt) -> str:
    """Hand a stamped receipt to the state-change pipeline (``api.pipeline``) and wait
    until its batch has committed: "applied", "parked" or "ignored"."""
    if receipt.external_id is None or receipt.gateway_id > db.MAX_ID:
        return "ignored"  # nothing to match it with
    try:
        return await state.pipeline.submit(receipt)
    except Exception as exc:
        # Not stored (the database is away, the process is stopping): a retryable 503,
        # so the gateway sends it again, never a 2xx for a receipt that was not kept.
        log.warning("a receipt for gateway %s could not be stored (%s); answered 503",
                    receipt.gateway_id, type(exc).__name__)
        raise ApiError(503, "The receipt could not be stored now; send it again.",
                       {"receipt": ["Not stored: retry later."]}, headers={"Retry-After": "1"}) from None


def acknowledge(headers: Mapping[str, str]) -> Response:
    """Jasmin counts a receipt as delivered only when the body is exactly ``ACK/Jasmin``;
    anything else makes it retry (3 more times, 30 s apart). Everyone else gets the contract's JSON."""
    if jasmin.is_thrower(headers):
        return PlainTextResponse(jasmin.ACK)
    return JSONResponse(RECEIVED)


async def receive(request: Request) -> Response:
    """POST: fields in the body (JSON or form). GET: fields in the query string,
    as Jasmin sends them with ``dlr-method=GET``. Either way the token is not a field."""
    state = request.app.state
    if request.method == "GET":
        fields = dict(request.query_params)
    else:
        fields = (await read_body(request, state.settings.max_body_bytes, empty_ok=True)).data
    receipt = replace(parse_receipt(fields), gateway_id=request.path_params["id"],
                      source_address=client_address(request), received_at=clock.now_iso())
    await submit(state, receipt)
    return acknowledge(request.headers)
