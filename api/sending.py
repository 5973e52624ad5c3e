"""The send route and its writes: validate a send, store it, call the gateway, record the answer.

A send is stored ``queued`` before the gateway is contacted, then becomes
``submitted`` or ``failed`` in a second write: a crash between the two leaves a
visible ``queued`` row, never a message sent with no record of it. Reading
messages back is ``api.messages``; the call itself is ``api.gateway_call``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from typing import Any, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, changes, clock, db, encoding, gateway_call, phone
from api.bodies import read_body
from api.gateways import SENDER
from api.messages import fetch_message, public
from api.providers.base import SECRET_UNAVAILABLE, Outcome, Submission
from api.resources import fetch_gateway, gateway_not_found, get_or_404
from api.responses import ApiError, ok
from api.tables import events, gateways, messages
from api.validation import Field, ValidationFailed, validate

log = logging.getLogger("smsgw.sending")

MAX_MESSAGE_CHARS = 1600  # ten concatenated UCS-2 segments and then some


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
    "to_number": Field("string", required=True, max_length=30, check=phone.problem),
    "from_sender": Field(
        "string", nullable=True, max_length=20, pattern=SENDER,
        pattern_message="The from_sender may hold letters, digits, spaces and + . _ - only.",
    ),
    "message": Field("text", required=True, max_length=MAX_MESSAGE_CHARS),
    "callback_url": Field("string", nullable=True, max_length=2048, check=check_url),
}


def default_callback_url(public_url: str, gateway: Mapping[str, Any]) -> str:
    route = "webhooks/jasmin" if gateway["provider_type"].startswith("jasmin") else "api/sms-gateways"
    return f"{public_url}/{route}/{gateway['id']}/dlr?token={gateway['callback_token']}"


async def send_message(request: Request) -> JSONResponse:
    state = request.app.state
    database = state.database
    gateway = await get_or_404(request, count=False)
    gateway_id = gateway["id"]
    body = await read_body(request, state.settings.max_body_bytes)
    values = validate(body.data, SEND_SCHEMA, from_form=body.from_form)
    values["to_number"] = phone.e164(values["to_number"])  # stored, sent and fingerprinted as E.164
    countries = request.state.api_key.allowed_countries
    if not phone.allowed(values["to_number"], countries):
        refusal = country_refused(values["to_number"], countries)
        # by the country's name only: the number is the recipient's, not the trail's
        await audit.denied(request, "POST", request.scope["route"].path, refusal.message)
        raise refusal
    key = idempotency_key(request)
    fingerprint = request_fingerprint(values)
    if key and await key_taken(database, gateway_id, key):
        return await replay(database, gateway_id, key, fingerprint)  # even if deactivated since
    if not gateway["is_active"]:
        raise inactive()
    sender = values.get("from_sender") or gateway["default_sender_id"]
    if not sender:
        raise ValidationFailed({"from_sender": [
            "The from_sender field is required when the gateway has no default_sender_id."]})
    callback_url = values.get("callback_url") or default_callback_url(state.settings.public_url, gateway)

    encoded = encoding.encode(values["message"])
    fields = {"to_number": values["to_number"], "from_sender": sender, "message": values["message"],
              "callback_url": callback_url, "encoding": encoded.encoding, "segments": encoded.segments,
              "idempotency_key": key, "request_hash": fingerprint if key else None}
    try:
        message_id = await insert_queued(database, state.dialect, gateway_id, fields)
    except Exception as exc:
        if not (key and db.is_unique_violation(exc)):
            raise
        return await replay(database, gateway_id, key, fingerprint)
    if message_id is None:  # deactivated or deleted since it was read: nothing stored
        if await fetch_gateway(database, gateway_id, count=False) is None:
            raise gateway_not_found()
        raise inactive()

    outcome = await gateway_call.send(
        state.http,
        gateway,
        Submission(to=values["to_number"], sender=sender, text=values["message"],
                   dlr_url=callback_url),
        state.settings.gateway_timeout,
        state.settings.keyring,
    )
    await record_outcome(state.pipeline, message_id, gateway_id, outcome)
    message = public(await fetch_message(database, message_id))
    if outcome.ok:
        return ok("SMS submitted successfully.", message, status=201)
    if outcome.timed_out:
        return ok("The SMS gateway did not answer in time; the message is marked failed.", message, status=504)
    if outcome.failure_code == SECRET_UNAVAILABLE:
        # 503, not 502: the gateway was never called; smsgw lacks the key to its password
        return ok("smsgw cannot read this gateway's password (see failure_reason); the message is marked "
                  "failed and was not sent.", message, status=503)
    return ok("The SMS gateway refused or failed the message.", message, status=502)


def country_refused(number: str, countries: frozenset[str]) -> ApiError:
    """403, not 422: the number is valid, but this key is not allowed to reach it (a
    per-key allow-list against SMS-pumping fraud). Nothing is stored or sent."""
    return ApiError(403, f"This key may not send to {phone.country_label(number)}.", {"to_number": [
        f"This key may send only to numbers in: {', '.join(sorted(countries)) or 'no country'}."]})


def inactive() -> ApiError:
    return ApiError(409, "This SMS gateway is inactive; activate it to send.",
                    {"sms_gateway_id": ["The gateway is inactive."]})


# --- idempotency: a retried send never sends twice ----------------------------------

IDEMPOTENCY_WINDOW = 24 * 3600
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY.match(raw.strip()):
        raise ValidationFailed({"Idempotency-Key": [
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces."]})
    return raw.strip()


def request_fingerprint(values: dict[str, Any]) -> str:
    """The request as sent (before defaults are filled in), hashed: the same key must
    come with the same request."""
    canonical = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def key_taken(database, gateway_id: int, key: str) -> bool:
    """Is ``key`` held by a message of this gateway from within the window?"""
    return await database.fetch_val(sa.select(messages.c.id).where(
        messages.c.sms_gateway_id == gateway_id, messages.c.idempotency_key == key,
        messages.c.created_at >= clock.iso_after(-IDEMPOTENCY_WINDOW))) is not None


async def replay(database, gateway_id: int, key: str, fingerprint: str) -> JSONResponse:
    """The answer to a send whose Idempotency-Key is already taken: the original
    message when the request is the same, 422 when it is not. Nothing is sent."""
    row = await database.fetch_one(sa.select(messages).where(
        messages.c.sms_gateway_id == gateway_id, messages.c.idempotency_key == key))
    if row is None:  # the other request rolled back: the caller may simply retry
        raise ApiError(409, "A request with this Idempotency-Key is being processed; retry.",
                       {"Idempotency-Key": ["A request with this key did not finish; retry."]})
    original = db.as_dict(row)
    if original["request_hash"] != fingerprint:
        raise ValidationFailed({"Idempotency-Key": [
            "This key was already used with a different request within 24 hours."]})
    response = ok("This Idempotency-Key was used already: the original message is returned, "
                  "and nothing was sent again.", public(original))
    response.headers["Idempotent-Replayed"] = "true"
    return response


# --- the two writes of a send ------------------------------------------------------


async def insert_queued(database, dialect: str, gateway_id: int, fields: dict[str, Any]) -> int | None:
    """Store the message ``queued`` if, at that instant, its gateway exists and is active.

    One INSERT ... SELECT: a gateway deactivated or deleted at the same moment
    cannot end up with a new message (SQLite serialises the two writes; on
    PostgreSQL the foreign key backs it up). Returns None when nothing was stored.
    An Idempotency-Key already taken raises the unique violation; a key older
    than the window is released first, in the same transaction.
    """
    row, event = changes.new_message({"sms_gateway_id": gateway_id, **fields}, clock.now_iso())
    source = sa.select(*(sa.literal(value, messages.c[name].type).label(name) for name, value in row.items()))
    source = source.where(sa.exists().where(gateways.c.id == gateway_id, gateways.c.is_active.is_(True)))
    async with db.write_transaction(database, dialect) as connection:
        if fields.get("idempotency_key"):
            await connection.execute(messages.update().where(
                messages.c.sms_gateway_id == gateway_id,
                messages.c.idempotency_key == fields["idempotency_key"],
                messages.c.created_at < clock.iso_after(-IDEMPOTENCY_WINDOW),
            ).values(idempotency_key=None))
        message_id = await connection.fetch_val(
            messages.insert().from_select(list(row), source).returning(messages.c.id)
        )
        if message_id is not None:
            await connection.execute(events.insert().values(**{**event, "message_id": message_id}))
    return message_id


OUTCOME_RETRIES = (0.5, 1, 2, 4, 8)  # seconds between tries while the database is away


async def record_outcome(pipeline, message_id: int, gateway_id: int, outcome: Outcome) -> str:
    """The gateway's answer, through the state-change pipeline: ``submitted`` (then any
    receipts that arrived first are applied) or ``failed`` (see ``api.changes``).

    It is the only record of an SMS that may have gone out, so while the database
    is away it is tried again for about 15 s before the error is let through (the
    message then stays ``queued`` and housekeeping marks it interrupted)."""
    change = changes.SendOutcome(message_id, gateway_id, outcome)
    for pause in OUTCOME_RETRIES:
        try:
            return await pipeline.submit(change)
        except Exception as exc:
            if not db.is_unavailable(exc):
                raise
            log.warning("the answer for message %s could not be recorded yet (%s); trying again in %g s",
                        message_id, type(exc).__name__, pause)
            await asyncio.sleep(pause)
    return await pipeline.submit(change)
