"""Status webhook endpoints: create, list, show, change, delete, and rotate the signing secret.

An endpoint is where an app hears about its messages (``api.notices`` decides which
changes are events; the worker signs and sends them). Its secret is shown once, in
the answer that makes it or rotates it, like an API key; it is stored sealed under
SMSGW_SECRET_KEY when one is set (``api.secrets``), as gateway passwords are, and
opened only to sign (``signing_secrets``). Every URL given is checked by
``api.ssrf`` before it is stored: a private or plain-http target is a 422 unless the
SMSGW_WEBHOOK_ALLOW_HTTP and SMSGW_WEBHOOK_ALLOW_PRIVATE allow it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, clock, db, secrets, ssrf, webhook_schedule, webhook_signing
from api.bodies import read_body
from api.keys import unknown_gateways
from api.notices import EVENT_TYPES
from api.openapi_shapes import BOOLEAN, ID, STRING, TIME, array, described, enum, nullable, shape
from api.resources import path_id
from api.responses import ApiError, ok
from api.tables import webhook_deliveries, webhook_endpoints
from api.validation import Errors, Field, ValidationFailed, validate

# The authenticated data of a sealed secret. One purpose for both columns: a rotation
# moves the current secret, sealed as it is, into ``previous_secret``.
PURPOSE = "webhook_endpoints.secret"
NOT_FOUND = "Webhook endpoint not found."
MAX_GATEWAYS = 1000
MAX_GRACE = 30 * 24 * 3600

SCHEMA: dict[str, Field] = {
    "url": Field("string", required=True, max_length=2048),
    "description": Field("string", nullable=True, max_length=255),
    "is_active": Field("boolean"),
}
LISTS = ("events", "gateway_ids")  # checked here, not by api.validation (which has no lists)
# The list fields, as the OpenAPI document declares them (``parse_events``, ``parse_gateway_ids``).
LIST_FIELDS = {
    "events": described({**array(enum(EVENT_TYPES)), "minItems": 1, "uniqueItems": True},
                        "The event types the endpoint hears about."),
    "gateway_ids": described(nullable({**array({**ID, "maximum": db.MAX_ID}), "minItems": 1,
                                       "maxItems": MAX_GATEWAYS}),
                             "The gateways whose messages it hears about; null or absent: every gateway."),
}
CREATE_FIELDS = frozenset({"url", "events", "description", "gateway_ids"})
# What a GET shows and a client may send back unchanged in a PATCH: ignored there.
READ_ONLY = frozenset({"id", "failing_since", "disabled_at", "disabled_reason", "rotation_grace_ends_at",
                       "created_at", "updated_at"})


# --- pure: checking what a client sent ------------------------------------------------


def parse_events(value: Any, errors: Errors) -> list[str] | None:
    """A non-empty list of unique event types, returned in EVENT_TYPES order."""
    problem = f"The events must be a non-empty list of event types: {', '.join(EVENT_TYPES)}."
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
        errors.setdefault("events", []).append(problem)
        return None
    unknown = [name for name in value if name not in EVENT_TYPES]
    if unknown:
        errors.setdefault("events", []).append(
            f"Unknown event type {', '.join(map(repr, unknown[:10]))}; event types are: {', '.join(EVENT_TYPES)}.")
        return None
    if len(set(value)) != len(value):
        repeated = sorted({name for name in value if value.count(name) > 1})
        errors.setdefault("events", []).append(f"The events must not repeat: {', '.join(repeated)}.")
        return None
    return [name for name in EVENT_TYPES if name in value]


def parse_gateway_ids(value: Any, errors: Errors) -> list[int] | None:
    """None (every gateway) or a non-empty list of gateway ids, returned sorted and unique."""
    if value is None:
        return None
    if (not isinstance(value, list) or not value or len(value) > MAX_GATEWAYS
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= db.MAX_ID for i in value)):
        errors.setdefault("gateway_ids", []).append(
            "The gateway_ids must be null (every gateway) or a non-empty list of gateway ids.")
        return None
    return sorted(set(value))


def check_fields(data: Mapping[str, Any], *, partial: bool) -> tuple[dict[str, Any], Errors]:
    """Clean values of a create (``partial`` False: url and events required) or a PATCH, and
    every problem found. The URL's target is checked later (``checked_url``)."""
    errors: Errors = {}
    known = (SCHEMA.keys() | set(LISTS)) if partial else CREATE_FIELDS
    plain = {name: value for name, value in data.items() if name not in LISTS}
    unknown = {name for name in plain if name not in known and not (partial and name in READ_ONLY)}
    for name in sorted(unknown):
        errors[name] = [f"The {name} field is not a known field."]
    values: dict[str, Any] = {}
    try:
        values = validate({k: v for k, v in plain.items() if k in SCHEMA and k in known}, SCHEMA, partial=True)
    except ValidationFailed as failed:
        for name, problems in failed.errors.items():
            errors.setdefault(name, []).extend(problems)
    if not partial and "url" not in data:
        errors.setdefault("url", []).append("The url field is required.")
    if "events" in data:
        events = parse_events(data["events"], errors)
        if events is not None:
            values["events"] = events
    elif not partial:
        errors["events"] = [f"The events field is required: a list of {', '.join(EVENT_TYPES)}."]
    if "gateway_ids" in data:
        ids = parse_gateway_ids(data["gateway_ids"], errors)
        if "gateway_ids" not in errors:
            values["gateway_ids"] = ids
    return values, errors


# What ``public`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "url": STRING,
    "description": nullable(STRING),
    "events": array(enum(EVENT_TYPES)),
    "gateway_ids": nullable(array(ID)),
    "is_active": BOOLEAN,
    "failing_since": nullable(TIME),
    "disabled_at": nullable(TIME),
    "disabled_reason": nullable(STRING),
    "rotation_grace_ends_at": described(nullable(TIME), "Until when the previous secret still signs, if one does."),
    "created_at": TIME,
    "updated_at": TIME,
})


def public(row: Mapping[str, Any], now: str | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secret, nor the previous one; only when
    the previous one stops signing (``rotation_grace_ends_at``, None when none does)."""
    now = now or clock.now_iso()
    grace = row["previous_secret_expires_at"]
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "events": row["events"],
        "gateway_ids": row["gateway_ids"],
        "is_active": bool(row["is_active"]),
        "failing_since": row["failing_since"],
        "disabled_at": row["disabled_at"],
        "disabled_reason": row["disabled_reason"],
        "rotation_grace_ends_at": grace if row["previous_secret"] is not None and grace and grace > now else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def signing_secrets(endpoint: Mapping[str, Any], keyring: secrets.Keyring, now: str | datetime) -> list[str]:
    """The secrets a delivery to ``endpoint`` (its row) is signed with: the current one and,
    while ``previous_secret_expires_at > now``, the previous one. SecretUnavailable when one
    was sealed with a key this process lacks."""
    now = clock.iso(now) if isinstance(now, datetime) else now
    found = [secrets.unseal(keyring, endpoint["secret"], PURPOSE)]
    expires = endpoint["previous_secret_expires_at"]
    if endpoint["previous_secret"] is not None and expires is not None and expires > now:
        found.append(secrets.unseal(keyring, endpoint["previous_secret"], PURPOSE))
    return found


def audited_url(url: str) -> str | None:
    """What the audit trail keeps of a URL: its host. A path or query may carry a credential."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


# --- storage --------------------------------------------------------------------------

ENDPOINT = sa.select(webhook_endpoints).where(webhook_endpoints.c.id == sa.bindparam("id"))


async def fetch_endpoint(database, endpoint_id: int) -> dict[str, Any] | None:
    """The endpoint's row (secrets included: callers show it through ``public`` only)."""
    return await db.read_one(database, ENDPOINT, {"id": endpoint_id})


async def insert_endpoint(database, dialect: str, actor: audit.Actor, values: Mapping[str, Any],
                          keyring: secrets.Keyring) -> tuple[int, str]:
    """Store an endpoint from checked ``values``, active, with a new secret; return its id
    and the secret (the only time it is seen). The row and its audit row are one transaction."""
    secret = webhook_signing.new_secret()
    stamp = clock.now_iso()
    row = {"url": values["url"], "description": values.get("description"), "events": values["events"],
           "gateway_ids": values.get("gateway_ids"), "is_active": True,
           "secret": secrets.at_rest(keyring, secret, PURPOSE), "created_at": stamp, "updated_at": stamp}
    async with db.write_transaction(database, dialect) as connection:
        endpoint_id = await connection.fetch_val(
            webhook_endpoints.insert().values(**row).returning(webhook_endpoints.c.id))
        await audit.append(connection, dialect, actor, audit.WEBHOOK_CREATED, target_type="webhook_endpoint",
                           target_id=endpoint_id, details={"host": audited_url(row["url"]), "events": row["events"],
                                                           "gateway_ids": row["gateway_ids"]})
    return endpoint_id, secret


def changes(current: Mapping[str, Any], values: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The columns a PATCH of ``values`` writes. Re-enabling an endpoint (is_active true when
    it was off, or smsgw had disabled it) clears why it was off and when it began to fail:
    the 5-day count starts afresh."""
    update = {name: value for name, value in values.items() if value != current[name]}
    if values.get("is_active") is True and (not current["is_active"] or current["disabled_at"] is not None):
        update.update(is_active=True, disabled_at=None, disabled_reason=None, failing_since=None)
    if update:
        update["updated_at"] = now
    return update


async def update_endpoint(database, dialect: str, actor: audit.Actor, endpoint_id: int,
                          values: Mapping[str, Any]) -> dict[str, Any] | None:
    """Apply a PATCH under the row's lock; the columns it changed (empty: none), None when no such endpoint."""
    async with db.write_transaction(database, dialect) as connection:
        row = await connection.fetch_one(
            sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).with_for_update())
        if row is None:
            return None
        update = changes(db.as_dict(row), values, clock.now_iso())
        if update:
            await connection.execute(
                webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(**update))
            if "is_active" in update:  # a delivery of an inactive endpoint is never due (api.webhook_schedule)
                await connection.execute(
                    webhook_deliveries.update()
                    .where(webhook_deliveries.c.endpoint_id == endpoint_id,
                           webhook_deliveries.c.status == webhook_schedule.PENDING)
                    .values(next_attempt_at=update["updated_at"] if update["is_active"] else None))
            details: dict[str, Any] = {"fields": sorted(set(update) - {"updated_at"})}
            if "url" in update:
                details["host"] = audited_url(update["url"])
            await audit.append(connection, dialect, actor, audit.WEBHOOK_CHANGED, target_type="webhook_endpoint",
                               target_id=endpoint_id, details=details)
    return update


async def delete_endpoint(database, dialect: str, actor: audit.Actor, endpoint_id: int) -> bool:
    """Delete an endpoint and its deliveries (explicitly: no foreign key does it); False when none.
    The endpoint's row is locked first, then its deliveries, the order every writer of both keeps."""
    async with db.write_transaction(database, dialect) as connection:
        deleted = await connection.fetch_val(
            webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id).returning(webhook_endpoints.c.id))
        if deleted is None:
            return False
        await connection.execute(webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id))
        await audit.append(connection, dialect, actor, audit.WEBHOOK_DELETED, target_type="webhook_endpoint",
                           target_id=endpoint_id)
    return True


async def rotate_secret(database, dialect: str, actor: audit.Actor, endpoint_id: int, grace: int,
                        keyring: secrets.Keyring) -> str | None:
    """A new secret now; the current one keeps signing beside it for ``grace`` seconds (0: stops
    at once). A previous secret still in its grace is replaced: one endpoint signs with at most
    two. Returns the new secret (shown once), None when there is no such endpoint."""
    secret = webhook_signing.new_secret()
    async with db.write_transaction(database, dialect) as connection:
        current = await connection.fetch_val(
            sa.select(webhook_endpoints.c.secret).where(webhook_endpoints.c.id == endpoint_id).with_for_update())
        if current is None:
            return None
        stamp = clock.now_iso()
        await connection.execute(webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(
            secret=secrets.at_rest(keyring, secret, PURPOSE), previous_secret=current if grace else None,
            previous_secret_expires_at=clock.after(stamp, grace) if grace else None, updated_at=stamp))
        await audit.append(connection, dialect, actor, audit.WEBHOOK_SECRET_ROTATED, target_type="webhook_endpoint",
                           target_id=endpoint_id, details={"grace_seconds": grace})
    return secret


# --- over HTTP ------------------------------------------------------------------------


async def checked_url(request: Request, values: dict[str, Any], errors: Errors) -> None:
    """Refuse a URL ``api.ssrf`` refuses (https only, no private address, unless allowed)."""
    if "url" not in values:
        return
    settings = request.app.state.settings
    try:
        await ssrf.check_url(values["url"], allow_http=settings.webhook_allow_http,
                             allow_private=settings.webhook_allow_private)
    except ssrf.Refused as refused:
        errors.setdefault("url", []).append(refused.message)


async def checked(request: Request, *, partial: bool) -> dict[str, Any]:
    """The body's clean values, its URL's target and its gateways checked; 422 listing every problem."""
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    if body.from_form:
        raise ApiError(415, "Send a JSON object: events and gateway_ids are lists.",
                       {"content_type": ["application/json is required."]})
    values, errors = check_fields(body.data, partial=partial)
    await checked_url(request, values, errors)
    if values.get("gateway_ids") and (missing := await unknown_gateways(state.database, values["gateway_ids"])):
        errors["gateway_ids"] = [f"No SMS gateway has id {', '.join(map(str, missing))}."]
    if errors:
        raise ValidationFailed(errors)
    return values


def endpoint_id_of(request: Request) -> int:
    return path_id(request, not_found=NOT_FOUND)


async def get_or_404(request: Request) -> dict[str, Any]:
    """The endpoint the path names (its row, secrets included), or 404."""
    row = await fetch_endpoint(request.app.state.database, endpoint_id_of(request))
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return row


async def create_endpoint(request: Request) -> JSONResponse:
    state = request.app.state
    values = await checked(request, partial=False)
    endpoint_id, secret = await insert_endpoint(state.database, state.dialect, audit.actor_of(request), values,
                                                state.settings.keyring)
    shown = public(await fetch_endpoint(state.database, endpoint_id))
    return ok("Webhook endpoint created successfully. Its secret is shown only this once.",
              {**shown, "secret": secret}, status=201)


async def list_endpoints(request: Request) -> JSONResponse:
    rows = await request.app.state.database.fetch_all(sa.select(webhook_endpoints).order_by(webhook_endpoints.c.id))
    now = clock.now_iso()
    return ok("Webhook endpoints fetched successfully.", [public(db.as_dict(row), now) for row in rows])


async def show_endpoint(request: Request) -> JSONResponse:
    return ok("Webhook endpoint fetched successfully.", public(await get_or_404(request)))


async def update_endpoint_route(request: Request) -> JSONResponse:
    """PATCH: url (checked again), events, is_active, description, gateway_ids; the others stay."""
    state = request.app.state
    endpoint_id = endpoint_id_of(request)
    values = await checked(request, partial=True)
    update = await update_endpoint(state.database, state.dialect, audit.actor_of(request), endpoint_id, values)
    if update is None:
        raise ApiError(404, NOT_FOUND)
    if update.get("is_active") is True:
        wake(request)  # deliveries queued while it was off may be due
    return ok("Webhook endpoint updated successfully.", public(await get_or_404(request)))


async def delete_endpoint_route(request: Request) -> JSONResponse:
    state = request.app.state
    endpoint_id = endpoint_id_of(request)
    if not await delete_endpoint(state.database, state.dialect, audit.actor_of(request), endpoint_id):
        raise ApiError(404, NOT_FOUND)
    return ok("Webhook endpoint deleted successfully.", {"id": endpoint_id})


ROTATE_SCHEMA = {"grace_seconds": Field("integer", min_value=0, max_value=MAX_GRACE)}


async def rotate_secret_route(request: Request) -> JSONResponse:
    """Body (optional): ``{"grace_seconds": N}``, 0 to 30 days, default SMSGW_WEBHOOK_SECRET_GRACE."""
    state = request.app.state
    endpoint_id = endpoint_id_of(request)
    body = await read_body(request, state.settings.max_body_bytes, empty_ok=True)
    values = validate(body.data, ROTATE_SCHEMA, from_form=body.from_form)
    grace = values.get("grace_seconds", state.settings.webhook_secret_grace)
    secret = await rotate_secret(state.database, state.dialect, audit.actor_of(request), endpoint_id, grace,
                                 state.settings.keyring)
    if secret is None:
        raise ApiError(404, NOT_FOUND)
    shown = public(await get_or_404(request))
    return ok("Webhook endpoint secret rotated successfully. The new secret is shown only this once.",
              {**shown, "secret": secret})


def wake(request: Request) -> None:
    """Tell this process's webhook worker (when it runs) that deliveries are due now."""
    worker = getattr(request.app.state, "webhooks", None)
    if worker is not None:
        worker.wake()
