"""Status webhook deliveries as an app's operator sees them: the list, a retry, a replay.

A delivery is one event (``webhook_events``, keyed by message and sequence) to one
endpoint. The outbox writer makes them and the worker sends them; here a person
looks at them (newest first), sends one again now, or queues again every event
since a time (after an outage on the app's side). Retried and replayed deliveries
start the retry schedule over, with the same ``webhook-id``: a receiver that did
get one before drops the repeat.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, clock, db, pages
from api.openapi_shapes import ID, INTEGER, NUMBER, STRING, TIME, described, enum, nullable, shape
from api.resources import path_id
from api.responses import ApiError, ok
from api.tables import webhook_deliveries, webhook_endpoints, webhook_events
from api.validation import Field, ValidationFailed
from api.webhook_endpoints import NOT_FOUND, endpoint_id_of, get_or_404, wake
from api.notices import EVENT_TYPES
from api.webhook_schedule import DELIVERING, FAILED, PENDING, STATUSES, SUCCEEDED, started_over

ENDED = (SUCCEEDED, FAILED)
DELIVERY_NOT_FOUND = "Webhook delivery not found."
TIME_EXAMPLE = "an RFC 3339 time with its offset, such as 2026-11-27T18:00:00Z"


def webhook_id(message_id: int, sequence: int) -> str:
    """The ``webhook-id`` of an event: the same for every attempt, retry and replay of it,
    so a receiver de-duplicates by it (Standard Webhooks)."""
    return f"msg_{message_id}_{sequence}"


# What ``public`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "endpoint_id": ID,
    "webhook_id": described(STRING, "The same on every attempt, retry and replay of the event: de-duplicate by it."),
    "event_type": enum(EVENT_TYPES),
    "message_id": ID,
    "sequence": INTEGER,
    "status": enum(STATUSES),
    "attempts": INTEGER,
    "last_status_code": nullable(INTEGER),
    "last_latency_ms": nullable(NUMBER),
    "last_error": nullable(STRING),
    "last_response": described(nullable(STRING), "The first 4 KiB of the last answer."),
    "next_attempt_at": nullable(TIME),
    "last_attempt_at": nullable(TIME),
    "delivered_at": nullable(TIME),
    "created_at": TIME,
    "updated_at": TIME,
})
FILTERS = {"status": Field("string", nullable=True, choices=STATUSES)}


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "webhook_id": webhook_id(row["message_id"], row["sequence"]),
        "event_type": row["event_type"],
        "message_id": row["message_id"],
        "sequence": row["sequence"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_latency_ms": row["last_latency_ms"],
        "last_error": row["last_error"],
        "last_response": row["last_response"],
        "next_attempt_at": row["next_attempt_at"],
        "last_attempt_at": row["last_attempt_at"],
        "delivered_at": row["delivered_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# --- pure: the replay's window --------------------------------------------------------


def replay_window(params: Mapping[str, str], now: str) -> tuple[str, str | None]:
    """``since`` (required, not in the future) and ``until`` (optional, after since) as
    stored timestamps; ValidationFailed naming what is wrong."""
    errors: dict[str, list[str]] = {}
    since = until = None
    if not (params.get("since") or "").strip():
        errors["since"] = [f"The since parameter is required: {TIME_EXAMPLE}."]
    elif (since := clock.from_rfc3339(params["since"])) is None:
        errors["since"] = [f"The since parameter must be {TIME_EXAMPLE}."]
    elif since > now:
        errors["since"] = ["The since parameter is in the future: nothing has happened since then yet."]
    if (params.get("until") or "").strip():
        if (until := clock.from_rfc3339(params["until"])) is None:
            errors["until"] = [f"The until parameter must be {TIME_EXAMPLE}."]
        elif since is not None and until <= since:
            errors["until"] = ["The until parameter must be later than since."]
    if errors:
        raise ValidationFailed(errors)
    return since, until


# --- storage --------------------------------------------------------------------------

ACTIVE_ENDPOINT = sa.exists().where(webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id,
                                    webhook_endpoints.c.is_active.is_(True))


async def retry_delivery(database, dialect: str, actor: audit.Actor, delivery_id: int, now: str) -> dict | None:
    """Make a delivery due now with the schedule started over, unless it is being delivered
    right now or its endpoint is off: one conditional UPDATE, so a worker's claim racing it
    cannot slip through. The delivery's row when it was retried, None otherwise."""
    async with db.write_transaction(database, dialect) as connection:
        row = await connection.fetch_one(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.status != DELIVERING, ACTIVE_ENDPOINT)
            .values(started_over(now))
            .returning(*webhook_deliveries.c))
        if row is not None:
            await audit.append(connection, dialect, actor, audit.WEBHOOK_RETRIED, target_type="webhook_delivery",
                               target_id=delivery_id, details={"endpoint_id": row["endpoint_id"]})
    return db.as_dict(row) if row is not None else None


async def why_not_retried(database, delivery_id: int) -> ApiError:
    """The answer to a retry that changed nothing: no such delivery, or why not now."""
    row = await database.fetch_one(
        sa.select(webhook_deliveries.c.status, webhook_endpoints.c.is_active)
        .select_from(webhook_deliveries.outerjoin(
            webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id))
        .where(webhook_deliveries.c.id == delivery_id))
    if row is None:
        return ApiError(404, DELIVERY_NOT_FOUND)
    if row["status"] == DELIVERING or row["is_active"]:  # (or was, a moment ago: the worker claimed it)
        return ApiError(409, "This delivery is being attempted right now; retry it once the attempt has ended.",
                        {"status": [f"The delivery is {DELIVERING}."]})
    return ApiError(409, "This delivery's webhook endpoint is not active: enable it first "
                         "(PATCH it with is_active true).", {"endpoint": ["The endpoint is not active."]})


MAX_REPLAY = 100_000  # events one replay may queue (about a second's work under SQLite's write lock)


def matching_events(endpoint: Mapping[str, Any], since: str, until: str | None) -> list[sa.ColumnElement]:
    """The conditions on webhook_events that pick what ``endpoint`` subscribes to in the window."""
    where = [webhook_events.c.occurred_at >= since, webhook_events.c.type.in_(endpoint["events"])]
    if until is not None:
        where.append(webhook_events.c.occurred_at < until)
    if endpoint["gateway_ids"] is not None:
        where.append(webhook_events.c.sms_gateway_id.in_(endpoint["gateway_ids"]))
    return where


async def replay(database, dialect: str, actor: audit.Actor, endpoint_id: int, since: str, until: str | None,
                 now: str) -> int | None:
    """Queue again every event of the window the endpoint subscribes to: a new delivery where it
    has none, an ended one (succeeded, failed) made pending with the schedule started over; one
    pending or being delivered is left as it is. Two portable statements in one transaction,
    under the endpoint's row lock (two replays of one endpoint cannot insert the same delivery).
    How many were queued; None when there is no such endpoint; ApiError 409 when it is off."""
    async with db.write_transaction(database, dialect) as connection:
        row = await connection.fetch_one(
            sa.select(webhook_endpoints.c.events, webhook_endpoints.c.gateway_ids, webhook_endpoints.c.is_active)
            .where(webhook_endpoints.c.id == endpoint_id).with_for_update())
        if row is None:
            return None
        endpoint = db.as_dict(row)
        if not endpoint["is_active"]:
            raise ApiError(409, "This webhook endpoint is not active: enable it first (PATCH it with is_active "
                                "true), then replay.", {"endpoint": ["The endpoint is not active."]})
        wanted = matching_events(endpoint, since, until)
        # One transaction holds SQLite's write lock: a window too large would hold receipts up.
        found = await connection.fetch_val(sa.select(sa.func.count()).select_from(webhook_events).where(*wanted))
        if found > MAX_REPLAY:
            raise ValidationFailed({"until": [
                f"The window holds {found} events; at most {MAX_REPLAY} are replayed at once: give an until "
                "that ends it sooner, then replay the rest from there."]})
        in_window = sa.select(webhook_events.c.message_id, webhook_events.c.sequence).where(*wanted)
        reset = await connection.fetch_all(
            webhook_deliveries.update()
            .where(sa.tuple_(webhook_deliveries.c.message_id, webhook_deliveries.c.sequence).in_(in_window),
                   webhook_deliveries.c.endpoint_id == endpoint_id, webhook_deliveries.c.status.in_(ENDED))
            .values(started_over(now))
            .returning(webhook_deliveries.c.id))
        has_delivery = sa.exists().where(webhook_deliveries.c.endpoint_id == endpoint_id,
                                         webhook_deliveries.c.message_id == webhook_events.c.message_id,
                                         webhook_deliveries.c.sequence == webhook_events.c.sequence)
        new = (sa.select(sa.literal(endpoint_id, db.Id), webhook_events.c.message_id, webhook_events.c.sequence,
                         webhook_events.c.type, sa.literal(PENDING), sa.literal(0), sa.literal(now),
                         sa.literal(now), sa.literal(now))
               .where(*wanted, ~has_delivery)
               .order_by(webhook_events.c.occurred_at, webhook_events.c.message_id, webhook_events.c.sequence))
        inserted = await connection.fetch_all(
            webhook_deliveries.insert()
            .from_select(["endpoint_id", "message_id", "sequence", "event_type", "status", "attempts",
                          "next_attempt_at", "created_at", "updated_at"], new)
            .returning(webhook_deliveries.c.id))
        queued = len(reset) + len(inserted)
        await audit.append(connection, dialect, actor, audit.WEBHOOK_REPLAYED, target_type="webhook_endpoint",
                           target_id=endpoint_id, details={"since": since, "until": until, "queued": queued})
    return queued


# --- over HTTP ------------------------------------------------------------------------


async def list_deliveries(request: Request) -> JSONResponse:
    """``GET /api/webhook-endpoints/{id}/deliveries``: newest first, keyset pages, ``?status=``."""
    endpoint = await get_or_404(request)
    filters = pages.query_filters(request, FILTERS)
    query = sa.select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint["id"])
    if "status" in filters:
        query = query.where(webhook_deliveries.c.status == filters["status"])
    items, meta = await pages.page(request.app.state.database, query, webhook_deliveries.c.id, filters, public)
    return ok("Webhook deliveries fetched successfully.", items, meta=meta)


async def retry(request: Request) -> JSONResponse:
    """``POST /api/webhook-deliveries/{id}/retry``: due now, attempts back to 0."""
    state = request.app.state
    delivery_id = path_id(request, not_found=DELIVERY_NOT_FOUND)
    row = await retry_delivery(state.database, state.dialect, audit.actor_of(request), delivery_id, clock.now_iso())
    if row is None:
        raise await why_not_retried(state.database, delivery_id)
    wake(request)
    return ok("Webhook delivery queued to be sent again now.", public(row))


async def replay_route(request: Request) -> JSONResponse:
    """``POST /api/webhook-endpoints/{id}/replay?since=...[&until=...]``: 202 with how many were queued."""
    state = request.app.state
    endpoint_id = endpoint_id_of(request)
    now = clock.now_iso()
    since, until = replay_window(request.query_params, now)
    queued = await replay(state.database, state.dialect, audit.actor_of(request), endpoint_id, since, until, now)
    if queued is None:
        raise ApiError(404, NOT_FOUND)
    if queued:
        wake(request)
    return ok(f"{queued} webhook deliveries queued to be sent again.", {"queued": queued}, status=202)
