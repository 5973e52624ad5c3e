"""Writing gateway records: create, update, delete, and rotate the callback token.

Reading them (the list, one gateway, and how the API shows one) is ``api.gateway_reads``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, callback_tokens, changes, clock, db, passwords, secrets
from api.bodies import read_body
from api.gateway_reads import public
from api.providers import PROVIDERS
from api.resources import fetch_gateway, gateway_not_found, gateway_or_404, get_or_404, path_id
from api.responses import ApiError, ok
from api.tables import gateways, messages, unmatched_receipts
from api.validation import Field, ValidationFailed, validate

LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
API_PATH = re.compile(r"^/?[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
SENDER = re.compile(r"^[A-Za-z0-9 +._-]+$")


def check_host(value: str) -> str | None:
    """A DNS name or an IP address (IPv6 with or without brackets); None when valid."""
    problem = "The server_host must be a host name or an IP address, without scheme, port or path."
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(bare)
        return None
    except ValueError:
        if bare != value:
            return problem
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(LABEL.match(label) for label in labels):
        return problem
    if all(label.isdigit() for label in labels):  # 999.999.999.999 is no address
        return problem
    return None


SCHEMA: dict[str, Field] = {
    "name": Field("string", required=True, max_length=255),
    "provider_type": Field("string", choices=tuple(PROVIDERS)),
    "server_host": Field("string", required=True, max_length=255, check=check_host),
    "server_port": Field("integer", min_value=1, max_value=65535),
    "api_path": Field(
        "string", max_length=255, pattern=API_PATH,
        pattern_message="The api_path must be a URL path (no spaces, no query string).",
    ),
    "username": Field(
        "string", nullable=True, max_length=255, pattern=re.compile(r"^[^:]*$"),
        pattern_message="The username must not contain ':' (HTTP Basic Auth cannot carry it).",
    ),
    "password": Field("string", nullable=True, max_length=255),
    "default_sender_id": Field(
        "string", nullable=True, max_length=20, pattern=SENDER,
        pattern_message="The default_sender_id may hold letters, digits, spaces and + . _ - only.",
    ),
    "callback_token": Field(
        "string", max_length=255, pattern=callback_tokens.TOKEN_PATTERN,
        pattern_message="The callback_token must be 24 to 255 characters from A-Z a-z 0-9 . _ ~ -.",
    ),
    "is_active": Field("boolean"),
    "use_ssl": Field("boolean"),
    "notes": Field("text", nullable=True, max_length=10_000),
    "meta": Field("object", nullable=True),
    # how the dispatcher may use it (api.dispatcher)
    "throughput_per_second": Field("number", nullable=True, min_value=0.01, max_value=100_000),
    "max_in_flight": Field("integer", min_value=1, max_value=1000),
    "max_attempts": Field("integer", min_value=1, max_value=50),
    "retry_ambiguous": Field("boolean"),
    "default_validity_seconds": Field("integer", nullable=True, min_value=1, max_value=30 * 24 * 3600),
}
READ_ONLY = frozenset({"id", "messages_count", "created_at", "updated_at", "callback_token_previous_expires_at",
                       "callback_token_previous_expiries"})
DEFAULTS = {"provider_type": "jasmin", "is_active": True, "use_ssl": False, "max_in_flight": 16, "max_attempts": 5,
            "retry_ambiguous": False}


def default_port(values: Mapping[str, Any]) -> int:
    """Where a gateway of this type listens by default: Jasmin's ports, else HTTP's."""
    port = PROVIDERS[values["provider_type"]].default_port
    return port if port is not None else (443 if values.get("use_ssl") else 80)


async def insert_gateway(database, values: Mapping[str, Any], keyring: secrets.Keyring) -> dict[str, Any]:
    """Store a gateway from validated ``values``, filling in the defaults, its password
    sealed under ``keyring`` (SMSGW_SECRET_KEY) when one is set; return it."""
    values = passwords.sealed_values(keyring, {**DEFAULTS, **values})
    values.setdefault("api_path", PROVIDERS[values["provider_type"]].default_path)
    values.setdefault("server_port", default_port(values))
    values.setdefault("callback_token", callback_tokens.generate())
    stamp = clock.now_iso()
    gateway_id = await database.fetch_val(
        gateways.insert().values(**values, created_at=stamp, updated_at=stamp).returning(gateways.c.id)
    )
    return await fetch_gateway(database, gateway_id)


# --- the writes, as the routes and ``smsgw gateway`` (api.cli_gateways) both make them ---------------------
# Each takes values already checked against SCHEMA (api.validation.validate) and the actor the
# audit trail names (the request's key, or audit.CLI); each raises ApiError / ValidationFailed
# as the API answers them.


async def create(database, dialect: str, actor: audit.Actor, values: Mapping[str, Any],
                 keyring: secrets.Keyring) -> dict[str, Any]:
    """Store a new gateway from validated ``values`` and record it in the audit trail; return it."""
    gateway = await insert_gateway(database, values, keyring)
    await audit.record(database, dialect, actor, audit.GATEWAY_CREATED, target_type="sms_gateway",
                       target_id=gateway["id"], details={"name": gateway["name"], "fields": sorted(values)})
    return gateway


async def update(database, dialect: str, actor: audit.Actor, current: Mapping[str, Any],
                 values: Mapping[str, Any], keyring: secrets.Keyring) -> dict[str, Any]:
    """Change the gateway ``current`` (its row as read) by validated ``values`` (the password
    rule first); the audit trail gets the names of the fields that changed. Return it as it is now."""
    password_rule(current, values)
    gateway_id = current["id"]
    if values:
        updated = await database.fetch_val(
            gateways.update().where(gateways.c.id == gateway_id)
            .values(**passwords.sealed_values(keyring, values), updated_at=clock.now_iso())
            .returning(gateways.c.id)
        )
        if updated is None:
            raise gateway_not_found()
        changed = changed_fields(current, values)
        if changed:  # names only: never a value (a password, a token)
            await audit.record(database, dialect, actor, audit.GATEWAY_CHANGED, target_type="sms_gateway",
                               target_id=gateway_id, details={"fields": changed})
    return await gateway_or_404(database, gateway_id)


async def rotate_token(database, dialect: str, actor: audit.Actor, gateway_id: int, grace: int) -> dict[str, Any]:
    """A new callback token now, the current one accepted ``grace`` seconds more (see
    ``rotate_callback_token``); 404 and 409 as ApiError. Return the gateway as it is now."""
    # Read and write under the row's lock: two rotations at once each keep the other's token.
    async with db.write_transaction(database, dialect) as connection:
        row = await connection.fetch_one(
            sa.select(gateways.c.callback_token, gateways.c.previous_callback_tokens)
            .where(gateways.c.id == gateway_id).with_for_update())
        if row is None:
            raise gateway_not_found()
        gateway, stamp = db.as_dict(row), clock.now_iso()
        history = callback_tokens.history_after_rotation(
            gateway["callback_token"], gateway["previous_callback_tokens"], grace, stamp, clock.iso_after(grace))
        if len(history) > callback_tokens.MAX_PREVIOUS_TOKENS:
            raise ApiError(409, f"This gateway already has {len(history) - 1} previous callback tokens in their "
                                "grace period; rotate again once some have ended, or with grace_seconds 0 "
                                "to revoke them all.",
                           {"grace_seconds": [f"At most {callback_tokens.MAX_PREVIOUS_TOKENS} previous "
                                              "tokens may be in grace at once."]})
        await connection.execute(gateways.update().where(gateways.c.id == gateway_id).values(
            previous_callback_tokens=history, callback_token=callback_tokens.generate(), updated_at=stamp))
    await audit.record(database, dialect, actor, audit.TOKEN_ROTATED, target_type="sms_gateway",
                       target_id=gateway_id, details={"grace_seconds": grace})
    return await gateway_or_404(database, gateway_id)


# --- the routes ----------------------------------------------------------------------


async def create_gateway(request: Request) -> JSONResponse:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    values = validate(body.data, SCHEMA, from_form=body.from_form, ignored=READ_ONLY)
    gateway = await create(state.database, state.dialect, audit.actor_of(request), values, state.settings.keyring)
    return ok("SMS gateway created successfully.", public(gateway), status=201)


# Where and how smsgw sends the gateway's password. Changing any of them without
# giving the password would let a key send the stored password somewhere new
# (its own listener) and read it there: it is write-only, so it must stay so.
PASSWORD_BOUND = ("server_host", "server_port", "use_ssl", "api_path", "provider_type")


def changed_fields(current: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """The fields ``values`` change, sorted. Giving a field its present value is no change
    (a client may PUT back what it read); a secret given is always a change (the stored
    one is sealed, or never shown, so it cannot be compared)."""
    return sorted(name for name in values
                  if name in ("password", "callback_token") or values[name] != current[name])


def password_rule(current: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """422 when ``values`` change a PASSWORD_BOUND field and do not give ``password``."""
    changed = changed_fields(current, {name: values[name] for name in PASSWORD_BOUND if name in values})
    if changed and "password" not in values:
        raise ValidationFailed({"password": [
            f"The password field is required to change {', '.join(changed)}: the stored password "
            "is only ever sent where it was given for."]})


async def update_gateway(request: Request) -> JSONResponse:
    """PATCH and PUT both update the fields given and leave the others alone.

    A ``callback_token`` given here replaces the current one at once, with no
    grace period: that is what ``/callback-token/rotate`` is for.
    """
    state = request.app.state
    current = await get_or_404(request, count=False)
    body = await read_body(request, state.settings.max_body_bytes)
    values = validate(body.data, SCHEMA, partial=True, from_form=body.from_form, ignored=READ_ONLY)
    gateway = await update(state.database, state.dialect, audit.actor_of(request), current, values,
                           state.settings.keyring)
    return ok("SMS gateway updated successfully.", public(gateway))


async def delete_gateway(request: Request) -> JSONResponse:
    """Delete a gateway that has sent nothing; one with messages is kept (409).

    Its messages are its delivery history, and receipts may still arrive for
    them: deactivate it instead (``PATCH {"is_active": false}``). The check
    and the delete are one statement, so a send racing the delete cannot
    leave messages pointing at nothing.
    """
    database = request.app.state.database
    gateway_id = path_id(request)
    has_messages = sa.exists().where(messages.c.sms_gateway_id == gateway_id)
    deleted = await database.fetch_val(
        gateways.delete().where(gateways.c.id == gateway_id, ~has_messages).returning(gateways.c.id)
    )
    if deleted is not None:
        # receipts still waiting for one of its messages never will: they expire (kept, never deleted)
        waiting = await database.fetch_all(sa.select(unmatched_receipts.c.id).where(
            unmatched_receipts.c.sms_gateway_id == deleted, unmatched_receipts.c.status == changes.PENDING))
        await asyncio.gather(*(request.app.state.pipeline.submit(changes.ParkedExpiry(row[0], gateway_deleted=True))
                               for row in waiting))
        await audit.record_request(request, audit.GATEWAY_DELETED, target_type="sms_gateway", target_id=deleted)
        return ok("SMS gateway deleted successfully.", {"id": deleted})
    gateway = await get_or_404(request)
    raise ApiError(
        409,
        "This SMS gateway has messages and cannot be deleted; deactivate it instead.",
        {"messages_count": [f"The gateway has {gateway['messages_count']} messages."]},
    )


ROTATE_SCHEMA = {"grace_seconds": Field("integer", min_value=0, max_value=30 * 24 * 3600)}


async def rotate_callback_token(request: Request) -> JSONResponse:
    """A new token now; each previous one keeps working until its own grace ends.

    Body (optional): ``{"grace_seconds": N}``, default ``SMSGW_CALLBACK_TOKEN_GRACE``
    (24 h). Gateways can be moved to the new token while receipts already on
    their way with an old one still arrive; a second rotation does not cut the
    first one's grace short. ``grace_seconds: 0`` revokes every previous token
    at once (a leaked token). At most ``MAX_PREVIOUS_TOKENS`` may be in grace:
    a rotation that would keep more is refused (409), never silently shortened.
    """
    state = request.app.state
    gateway_id = path_id(request)
    body = await read_body(request, state.settings.max_body_bytes, empty_ok=True)
    values = validate(body.data, ROTATE_SCHEMA, from_form=body.from_form)
    grace = values.get("grace_seconds", state.settings.callback_token_grace)
    gateway = await rotate_token(state.database, state.dialect, audit.actor_of(request), gateway_id, grace)
    return ok("Callback token rotated successfully.", public(gateway))
