"""The send route and cancel: validate a send, store it, call the gateway, record the answer.

A synchronous send is stored ``queued`` and claimed before the gateway is
contacted, then becomes ``submitted`` or ``failed`` in a second write: a crash
between the two leaves a visible claimed row (housekeeping marks it
``interrupted``), never a message sent with no record of it. With
``Prefer: respond-async`` (or a ``send_at`` ahead) it is only stored, and
``api.dispatcher`` sends it. Batches are ``api.batch_sends``; reading messages
back is ``api.messages``; the call itself is ``api.gateway_call``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from typing import Any, Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, auth, changes, clock, db, encoding, gateway_call, phone, scopes, states
from api.bodies import read_body
from api.gateways import SENDER
from api.messages import fetch_message, public
from api.providers.base import SECRET_UNAVAILABLE, Outcome, Submission
from api.resources import gateway_not_found, get_or_404, path_id
from api.responses import ApiError, ok
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


def stored_send_at(value: str) -> str:
    """An RFC 3339 ``send_at`` as a stored timestamp (parsed once, here). A time in the
    past means now; one more than a year ago is a mistake."""
    stamp = clock.from_rfc3339(value)
    if stamp is None:
        raise ValueError("The send_at must be an RFC 3339 date-time with its offset, e.g. 2026-11-27T18:00:00Z.")
    if stamp < clock.iso_after(-MAX_SCHEDULE_AHEAD):
        raise ValueError("The send_at may be at most a year in the past (a time in the past means now).")
    return stamp


MAX_VALIDITY = 30 * 24 * 3600  # seconds: a month, far beyond what SMSCs keep a message for
MAX_SCHEDULE_AHEAD = 366 * 24 * 3600

SEND_SCHEMA: dict[str, Field] = {
    # parsed once, and stored, sent and fingerprinted as E.164
    "to_number": Field("string", required=True, max_length=30, clean=phone.e164),
    "from_sender": Field(
        "string", nullable=True, max_length=20, pattern=SENDER,
        pattern_message="The from_sender may hold letters, digits, spaces and + . _ - only.",
    ),
    "message": Field("text", required=True, max_length=MAX_MESSAGE_CHARS),
    "callback_url": Field("string", nullable=True, max_length=2048, check=check_url),
    "client_reference": Field("string", nullable=True, max_length=64),
    "send_at": Field("string", nullable=True, max_length=64, clean=stored_send_at),
    "validity_period": Field("integer", nullable=True, min_value=1, max_value=MAX_VALIDITY),
}


def default_callback_url(public_url: str, gateway: Mapping[str, Any]) -> str:
    route = "webhooks/jasmin" if gateway["provider_type"].startswith("jasmin") else "api/sms-gateways"
    return f"{public_url}/{route}/{gateway['id']}/dlr?token={gateway['callback_token']}"


def current_callback_url(stored: str, gateway: Mapping[str, Any], public_url: str) -> str:
    """The callback URL to send with a message stored earlier: smsgw's own default is
    rebuilt with the gateway's current token (a message may wait for days; a token
    rotated meanwhile, or revoked after a leak, must not go out with it); a URL the
    app gave is sent as it is."""
    current = default_callback_url(public_url, gateway)
    if stored != current and stored.startswith(current.split("?token=", 1)[0] + "?token="):
        return current
    return stored


def message_fields(values: dict[str, Any], gateway: Mapping[str, Any], public_url: str, now: str) -> dict[str, Any]:
    """A validated send as the columns it is stored in: the sender and callback filled in
    from the gateway, the encoding worked out. Raises ValidationFailed (unprefixed names)."""
    sender = values.get("from_sender") or gateway["default_sender_id"]
    if not sender:
        raise ValidationFailed({"from_sender": [
            "The from_sender field is required when the gateway has no default_sender_id."]})
    fields = {"to_number": values["to_number"], "from_sender": sender, "message": values["message"],
              "callback_url": values.get("callback_url") or default_callback_url(public_url, gateway),
              "client_reference": values.get("client_reference")}
    encoded = encoding.encode(values["message"])
    fields.update(encoding=encoded.encoding, segments=encoded.segments)
    if values.get("send_at") is not None:
        send_at = values["send_at"]
        if clock.seconds_between(now, send_at) > MAX_SCHEDULE_AHEAD:
            raise ValidationFailed({"send_at": ["The send_at may be at most a year ahead."]})
        fields["send_at"] = send_at
    if "validity_period" in values:  # absent: the gateway's default; null: none
        fields["validity_period"] = values["validity_period"]
    return fields


def prefers_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240): answer 202 once stored; the dispatcher sends it."""
    return any(part.split(";")[0].strip().lower() == "respond-async"
               for part in request.headers.get("prefer", "").split(","))


async def send_message(request: Request) -> JSONResponse:
    state = request.app.state
    gateway = await get_or_404(request, count=False)
    gateway_id = gateway["id"]
    body = await read_body(request, state.settings.max_body_bytes)
    values = validate(body.data, SEND_SCHEMA, from_form=body.from_form)
    countries = request.state.api_key.allowed_countries
    if not phone.allowed(values["to_number"], countries):
        refusal = country_refused(values["to_number"], countries)
        # by the country's name only: the number is the recipient's, not the trail's
        await audit.denied(request, "POST", request.scope["route"].path, refusal.message)
        raise refusal
    key = idempotency_key(request)
    fingerprint = request_fingerprint(values)
    now = clock.now_iso()
    fields = message_fields(values, gateway, state.settings.public_url, now)
    wait = not prefers_async(request) and not fields.get("send_at", now) > now
    change = changes.NewMessages(gateway_id, (fields,), claimed=wait, idempotency_key=key,
                                 request_hash=fingerprint if key else None)
    stored = await store(state.pipeline, change)
    if stored.replayed:
        return await replay(state.database, stored.message_ids[0])
    row = stored.rows[0]
    if not wait:
        state.dispatcher.wake()
        response = ok("SMS accepted: it is queued and will be sent by the dispatcher."
                      if row["state"] == states.QUEUED else f"SMS scheduled for {row['send_at']}.",
                      public(row), status=202)
        response.headers["Preference-Applied"] = "respond-async"
        return response

    outcome = await gateway_call.send(
        state.http,
        gateway,
        Submission(to=values["to_number"], sender=fields["from_sender"], text=values["message"],
                   dlr_url=fields["callback_url"], validity_minutes=validity_minutes(row, now)),
        state.settings.gateway_timeout,
        state.settings.keyring,
    )
    recorded = await record_outcome(state.pipeline, row["id"], gateway_id, outcome, want_row=True)
    message = public({**row, **recorded.values})
    if outcome.ok:
        return ok("SMS submitted successfully.", message, status=201)
    if outcome.timed_out:
        return ok("The SMS gateway did not answer in time; the message is marked failed.", message, status=504)
    if outcome.failure_code == SECRET_UNAVAILABLE:
        # 503, not 502: the gateway was never called; smsgw lacks the key to its password
        return ok("smsgw cannot read this gateway's password (see failure_reason); the message is marked "
                  "failed and was not sent.", message, status=503)
    return ok("The SMS gateway refused or failed the message.", message, status=502)


def validity_minutes(message: Mapping[str, Any], now: str) -> int | None:
    """What is left of the message's validity, in whole minutes (rounded up, at least one):
    Jasmin's ``validity-period``, so the SMSC drops it too once it is too late."""
    if message["expires_at"] is None:
        return None
    return max(1, math.ceil(clock.seconds_between(now, message["expires_at"]) / 60))


async def store(pipeline, change: changes.NewMessages) -> changes.Stored:
    """Store new messages through the pipeline; the answer to each way it can be refused."""
    try:
        result = await pipeline.submit(change)
    except Exception as exc:
        if not (change.idempotency_key and db.is_unique_violation(exc)):
            raise
        result = await pipeline.submit(change)  # another replica stored the key first: now it is found
    if isinstance(result, changes.Stored):
        return result
    if result == "missing":
        raise gateway_not_found()
    if result == "inactive":
        raise inactive()
    if result == "key_conflict":
        raise ValidationFailed({"Idempotency-Key": [
            "This key was already used with a different request within 24 hours."]})
    raise AssertionError(f"unexpected outcome {result!r}")


def country_refused(number: str, countries: frozenset[str]) -> ApiError:
    """403, not 422: the number is valid, but this key is not allowed to reach it (a
    per-key allow-list against SMS-pumping fraud). Nothing is stored or sent."""
    return ApiError(403, f"This key may not send to {phone.country_label(number)}.", {"to_number": [
        f"This key may send only to numbers in: {', '.join(sorted(countries)) or 'no country'}."]})


def inactive() -> ApiError:
    return ApiError(409, "This SMS gateway is inactive; activate it to send.",
                    {"sms_gateway_id": ["The gateway is inactive."]})


# --- idempotency: a retried send never sends twice ----------------------------------

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY.match(raw.strip()):
        raise ValidationFailed({"Idempotency-Key": [
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces."]})
    return raw.strip()


def request_fingerprint(values: Any) -> str:
    """The request as sent (before defaults are filled in), hashed: the same key must
    come with the same request."""
    canonical = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def replay(database, message_id: int) -> JSONResponse:
    """The answer to a send whose Idempotency-Key is taken by the same request: the
    original message. Nothing is stored or sent."""
    response = ok("This Idempotency-Key was used already: the original message is returned, "
                  "and nothing was sent again.", public(await fetch_message(database, message_id)))
    response.headers["Idempotent-Replayed"] = "true"
    return response


OUTCOME_RETRIES = (0.5, 1, 2, 4, 8)  # seconds between tries while the database is away


async def record_outcome(pipeline, message_id: int, gateway_id: int, outcome: Outcome, **options: Any) -> Any:
    """The gateway's answer, through the state-change pipeline: ``submitted`` (then any
    receipts that arrived first are applied) or ``failed`` (see ``api.changes``).

    It is the only record of an SMS that may have gone out, so while the database
    is away it is tried again for about 15 s before the error is let through (the
    message then stays ``queued`` and housekeeping marks it interrupted)."""
    if not outcome.ok:  # once per attempt, synchronous or dispatched: which gateway failed, and why
        log.warning("send failed: message %s, gateway %s, failure_code %s: %s", message_id, gateway_id,
                    outcome.failure_code, outcome.failure_reason, extra={
                        "message_id": message_id, "gateway_id": gateway_id, "failure_code": outcome.failure_code,
                        "failure_reason": outcome.failure_reason})
    change = changes.SendOutcome(message_id, gateway_id, outcome, **options)
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


# --- cancel ------------------------------------------------------------------------


async def cancel_message(request: Request) -> JSONResponse:
    """Cancel a message no gateway call has begun for (``scheduled``, or ``queued`` and
    waiting); 409 once one has: the SMS may be on its way, and cannot be called back."""
    state = request.app.state
    message_id = path_id(request, "SMS message not found.")
    message = await fetch_message(state.database, message_id)
    if message is None or not scopes.may_use_gateway(auth.key_of(request).gateway_ids, message["sms_gateway_id"]):
        raise ApiError(404, "SMS message not found.")
    outcome = await state.pipeline.submit(changes.Cancel(message_id))
    message = public(await fetch_message(state.database, message_id))
    if outcome == states.CANCELED:
        return ok("SMS canceled: it will not be sent.", message)
    raise ApiError(409, f"This SMS is {message['state']} and can no longer be canceled: only a message not yet "
                        "handed to its gateway can.", {"state": [f"The message is {message['state']}."]})
