"""Batch sends: up to ``SMSGW_MAX_BATCH`` messages in one request, stored together, sent by the dispatcher.

``POST /api/sms-gateways/{id}/messages`` takes ``{"messages": [{...}, ...]}``,
each item a send's fields (``api.sending.SEND_SCHEMA``). All or nothing: one
invalid item and the answer is 422 with every problem keyed by the item's
index (``messages.3.to_number``) and nothing is stored; otherwise every message
is stored ``queued`` (or ``scheduled``) in one transaction and the answer is
202 with them all, in request order. An ``Idempotency-Key`` covers the whole
batch. ``GET /api/sms-batches/{id}`` counts a batch's messages by state.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, auth, clock, db, phone, scopes, states
from api.bodies import read_body
from api.changes import NewMessages
from api.messages import public
from api.openapi_shapes import ID, INTEGER, TIME, described, shape
from api.resources import get_or_404, path_id
from api.responses import ApiError, ok
from api.sending import (
    SEND_SCHEMA, country_refused, idempotency_key, message_fields, request_fingerprint, store,
)
from api.tables import batches, messages
from api.validation import ValidationFailed, validate

# What ``show_batch`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "sms_gateway_id": ID,
    "size": INTEGER,
    "created_at": TIME,
    "counts": described({"type": "object", "additionalProperties": INTEGER},
                        "How many of its messages are in each state (states with none are left out)."),
    "final": described(INTEGER, "How many are delivered, failed or canceled."),
})
# The ``meta`` of a batch send's answer.
META = shape({"batch_id": ID, "count": INTEGER})

PER_MESSAGE_BYTES = 8 * 1024  # a long UCS-2 text as JSON escapes, and its other fields


def items_of(data: dict[str, Any], max_batch: int) -> list[Any]:
    unknown = sorted(set(data) - {"messages"})
    errors = {name: [f"The {name} field is not a known field."] for name in unknown}
    items = data.get("messages")
    if not isinstance(items, list) or not items:
        errors["messages"] = ["The messages field must be a non-empty list of messages."]
    elif len(items) > max_batch:
        errors["messages"] = [f"A batch holds at most {max_batch} messages (SMSGW_MAX_BATCH); "
                              f"this one has {len(items)}."]
    if errors:
        raise ValidationFailed(errors)
    return items


def validate_items(items: list[Any], gateway, public_url: str, now: str) -> list[dict[str, Any]]:
    """Every item checked; every problem of every item reported at once, keyed by its index."""
    errors: dict[str, list[str]] = {}
    rows = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationFailed({"": ["Each message must be a JSON object."]})
            values = validate(item, SEND_SCHEMA)
            rows.append((values, message_fields(values, gateway, public_url, now)))
        except ValidationFailed as exc:
            for name, problems in exc.errors.items():
                errors[f"messages.{index}.{name}" if name else f"messages.{index}"] = problems
    if errors:
        raise ValidationFailed(errors)
    return rows


async def send_batch(request: Request) -> JSONResponse:
    state = request.app.state
    settings = state.settings
    gateway = await get_or_404(request, count=False)
    body = await read_body(request, max(settings.max_body_bytes, settings.max_batch * PER_MESSAGE_BYTES))
    if body.from_form:
        raise ValidationFailed({"messages": ["A batch is sent as a JSON object, {\"messages\": [...]}."]})
    now = clock.now_iso()
    checked = validate_items(items_of(body.data, settings.max_batch), gateway, settings.public_url, now)
    countries = request.state.api_key.allowed_countries
    refused = [index for index, (values, _) in enumerate(checked) if not phone.allowed(values["to_number"], countries)]
    if refused:
        first = country_refused(checked[refused[0]][0]["to_number"], countries)
        await audit.denied(request, "POST", request.scope["route"].path, first.message)
        raise ApiError(403, f"This key may not send to {len(refused)} of these numbers; nothing was stored.",
                       {f"messages.{index}.to_number": first.errors["to_number"] for index in refused})
    key = idempotency_key(request)
    change = NewMessages(gateway["id"], tuple(fields for _, fields in checked), batch=True, idempotency_key=key,
                         request_hash=request_fingerprint([values for values, _ in checked]) if key else None)
    stored = await store(state.pipeline, change)
    if stored.replayed:
        response = ok("This Idempotency-Key was used already: the original batch is returned, and nothing "
                      "was stored again.", replayed := await batch_messages(state.database, stored.batch_id),
                      meta={"batch_id": stored.batch_id, "count": len(replayed)})
        response.headers["Idempotent-Replayed"] = "true"
        return response
    state.dispatcher.wake()
    return ok(f"{len(stored.rows)} SMS accepted: queued for the dispatcher.", [public(row) for row in stored.rows],
              status=202, meta={"batch_id": stored.batch_id, "count": len(stored.rows)})


async def batch_messages(database, batch_id: int) -> list[dict[str, Any]]:
    rows = await database.fetch_all(sa.select(messages).where(messages.c.batch_id == batch_id).order_by(messages.c.id))
    return [public(db.as_dict(row)) for row in rows]


async def show_batch(request: Request) -> JSONResponse:
    """A batch and how many of its messages are in each state: what ``smsgw send --wait`` watches."""
    database = request.app.state.database
    batch_id = path_id(request, "SMS batch not found.")
    batch = await database.fetch_one(sa.select(batches).where(batches.c.id == batch_id))
    if batch is None or not scopes.may_use_gateway(auth.key_of(request).gateway_ids, batch["sms_gateway_id"]):
        raise ApiError(404, "SMS batch not found.")
    counts = await database.fetch_all(
        sa.select(messages.c.state, sa.func.count()).where(messages.c.batch_id == batch_id)
        .group_by(messages.c.state))
    by_state = {row[0]: row[1] for row in counts}
    return ok("SMS batch fetched successfully.", {
        "id": batch["id"], "sms_gateway_id": batch["sms_gateway_id"], "size": batch["size"],
        "created_at": batch["created_at"], "counts": by_state,
        "final": sum(n for state, n in by_state.items() if state in states.FINAL),
    })
