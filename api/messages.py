"""Sending a message, and reading messages back.

A send is stored ``queued`` before the gateway is contacted, then becomes
``submitted`` or ``failed`` in a second write: a crash between the two leaves a
visible ``queued`` row, never a message sent with no record of it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import callback_tokens, clock, db, dispatch, encoding
from api.bodies import read_body
from api.gateways import SENDER, fetch_gateway, path_id
from api.responses import ApiError, ok
from api.tables import gateways, messages
from api.validation import Field, ValidationFailed, validate

MAX_MESSAGE_CHARS = 1600  # ten concatenated UCS-2 segments and then some
PHONE = re.compile(r"^\+?[0-9]{1,29}$")
DEFAULT_PAGE = 50
MAX_PAGE = 200


def check_url(url: str) -> str | None:
    """An absolute http(s) URL with a host and a valid port; None when it is one."""
    problem = "The callback_url must be an http:// or https:// URL with a host."
    if any(c.isspace() for c in url):
        return problem
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a port out of range or not a number
    except ValueError:
        return problem
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problem
    return None


SEND_SCHEMA: dict[str, Field] = {
    "to_number": Field(
        "string", required=True, max_length=30, pattern=PHONE,
        pattern_message="The to_number must be a phone number: digits, optionally starting with +.",
    ),
    "from_sender": Field(
        "string", nullable=True, max_length=20, pattern=SENDER,
        pattern_message="The from_sender may hold letters, digits, spaces and + . _ - only.",
    ),
    "message": Field("text", required=True, max_length=MAX_MESSAGE_CHARS),
    "callback_url": Field("string", nullable=True, max_length=2048, check=check_url),
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
        "external_message_id": row["external_message_id"],
        "failure_reason": row["failure_reason"],
        "failure_code": row["failure_code"],
        "encoding": row["encoding"],
        "segments": row["segments"],
        "remote_response": row["remote_response"],
        "submitted_at": row["submitted_at"],
        "delivered_at": row["delivered_at"],
        "failed_at": row["failed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def default_callback_url(public_url: str, gateway: Mapping[str, Any]) -> str:
    route = "webhooks/jasmin" if gateway["provider_type"].startswith("jasmin") else "api/sms-gateways"
    return f"{public_url}/{route}/{gateway['id']}/dlr?token={gateway['callback_token']}"


async def fetch_message(database, message_id: int) -> dict[str, Any] | None:
    row = await database.fetch_one(sa.select(messages).where(messages.c.id == message_id))
    return db.as_dict(row) if row is not None else None


async def send_message(request: Request) -> JSONResponse:
    state = request.app.state
    database = state.database
    gateway_id = path_id(request)
    gateway = await fetch_gateway(database, gateway_id, count=False)
    if gateway is None:
        raise ApiError(404, "SMS gateway not found.")
    if not gateway["is_active"]:
        raise inactive()
    body = await read_body(request, state.settings.max_body_bytes)
    values = validate(body.data, SEND_SCHEMA, from_form=body.from_form)
    sender = values.get("from_sender") or gateway["default_sender_id"]
    if not sender:
        raise ValidationFailed({"from_sender": [
            "The from_sender field is required when the gateway has no default_sender_id."]})
    callback_url = values.get("callback_url") or default_callback_url(state.settings.public_url, gateway)

    encoded = encoding.encode(values["message"])
    message_id = await insert_queued(database, gateway_id, {
        "to_number": values["to_number"], "from_sender": sender, "message": values["message"],
        "callback_url": callback_url, "encoding": encoded.encoding, "segments": encoded.segments,
    })
    if message_id is None:  # deactivated or deleted since it was read: nothing stored
        if await fetch_gateway(database, gateway_id, count=False) is None:
            raise ApiError(404, "SMS gateway not found.")
        raise inactive()

    outcome = await dispatch.send(
        state.http,
        gateway,
        dispatch.Submission(to=values["to_number"], sender=sender, text=values["message"],
                            dlr_url=callback_url),
        state.settings.gateway_timeout,
    )
    await record_outcome(database, message_id, gateway_id, outcome)
    message = public(await fetch_message(database, message_id))
    if outcome.ok:
        return ok("SMS submitted successfully.", message, status=201)
    if outcome.timed_out:
        return ok("The SMS gateway did not answer in time; the message is marked failed.", message, status=504)
    return ok("The SMS gateway refused or failed the message.", message, status=502)


def inactive() -> ApiError:
    return ApiError(409, "This SMS gateway is inactive; activate it to send.",
                    {"sms_gateway_id": ["The gateway is inactive."]})


async def insert_queued(database, gateway_id: int, fields: dict[str, Any]) -> int | None:
    """Store the message ``queued`` if, at that instant, its gateway exists and is active.

    One INSERT ... SELECT: a gateway deactivated or deleted at the same moment
    cannot end up with a new message (SQLite serialises the two writes; on
    PostgreSQL the foreign key backs it up). Returns None when nothing was stored.
    """
    stamp = clock.now_iso()
    row = {"sms_gateway_id": gateway_id, **fields, "delivery_status": "queued",
           "created_at": stamp, "updated_at": stamp}
    source = sa.select(*(sa.literal(value, messages.c[name].type).label(name) for name, value in row.items()))
    source = source.where(sa.exists().where(gateways.c.id == gateway_id, gateways.c.is_active.is_(True)))
    return await database.fetch_val(
        messages.insert().from_select(list(row), source).returning(messages.c.id)
    )


async def record_outcome(database, message_id: int, gateway_id: int, outcome: dispatch.Outcome) -> None:
    stamp = clock.now_iso()
    where = messages.c.id == message_id
    if not outcome.ok:
        await database.execute(messages.update().where(where).values(
            delivery_status="failed", failure_reason=outcome.failure_reason, failure_code=outcome.failure_code,
            remote_response=outcome.remote_response, failed_at=stamp, updated_at=stamp,
        ))
        return
    submitted = dict(delivery_status="submitted", external_message_id=outcome.external_id,
                     remote_response=outcome.remote_response, submitted_at=stamp, updated_at=stamp)
    try:
        await database.execute(messages.update().where(where).values(**submitted))
    except Exception as exc:
        if not db.is_unique_violation(exc):
            raise
        # The gateway reused an id another message of this gateway holds. The SMS
        # went out, so the message is submitted; receipts for that id will match
        # the earlier message, and this one says why it will never get one.
        holder = await database.fetch_val(sa.select(messages.c.id).where(
            messages.c.sms_gateway_id == gateway_id,
            messages.c.external_message_id == outcome.external_id))
        submitted.update(
            external_message_id=None,
            failure_reason=(f"gateway returned id {outcome.external_id!r}, already held by message "
                            f"{holder}; receipts cannot be matched to this message"),
        )
        await database.execute(messages.update().where(where).values(**submitted))


async def show_message(request: Request) -> JSONResponse:
    message = await fetch_message(request.app.state.database, path_id(request, "SMS message not found."))
    if message is None:
        raise ApiError(404, "SMS message not found.")
    return ok("SMS message fetched successfully.", public(message))


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == "id" and number.isdigit() and int(number) <= db.MAX_ID:
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed({"cursor": ["The cursor is not one this API returned."]})


async def list_gateway_messages(request: Request) -> JSONResponse:
    """Newest first, ``limit`` at a time; ``meta.next_cursor`` fetches the next page.

    Keyset pagination (``id < cursor``) stays fast and never skips or repeats a
    row while new messages arrive, unlike OFFSET.
    """
    database = request.app.state.database
    gateway_id = path_id(request)
    if await fetch_gateway(database, gateway_id, count=False) is None:
        raise ApiError(404, "SMS gateway not found.")
    params = request.query_params
    filters = validate(
        {k: params[k] for k in ("delivery_status", "to_number", "limit", "cursor") if k in params},
        {
            "delivery_status": Field("string", nullable=True, max_length=32),
            "to_number": Field("string", nullable=True, max_length=30),
            "limit": Field("integer", nullable=True, min_value=1, max_value=MAX_PAGE),
            "cursor": Field("string", nullable=True, max_length=100),
        },
        from_form=True,
    )
    filters = {name: value for name, value in filters.items() if value is not None}
    limit = filters.get("limit", DEFAULT_PAGE)
    query = sa.select(messages).where(messages.c.sms_gateway_id == gateway_id)
    if "delivery_status" in filters:
        query = query.where(messages.c.delivery_status == filters["delivery_status"].lower())
    if "to_number" in filters:
        query = query.where(messages.c.to_number == filters["to_number"])
    if "cursor" in filters:
        query = query.where(messages.c.id < decode_cursor(filters["cursor"]))
    rows = await database.fetch_all(query.order_by(messages.c.id.desc()).limit(limit + 1))
    page = [public(db.as_dict(row)) for row in rows[:limit]]
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    return ok("SMS messages fetched successfully.", page, meta={"limit": limit, "next_cursor": next_cursor})
