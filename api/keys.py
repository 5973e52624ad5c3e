"""API keys: stored, listed and revoked here, over HTTP (scope ``keys:admin``, keys not
limited to gateways) and by ``smsgw apikey`` alike; ``api.auth`` only authenticates.

A key is shown once, in the answer that makes it; lists never show a key or its
hash. A key never makes or revokes a key stronger than itself
(``api.scopes.grant_refusal``).
"""

from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa
from databases import Database
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, auth, clock, db, scopes
from api.bodies import read_body
from api.openapi_shapes import ID, STRING, TIME, array, described, enum, nullable, shape
from api.responses import ApiError, ok
from api.tables import api_keys, gateways
from api.validation import Errors, Field, ValidationFailed, validate

NAME = Field("string", required=True, max_length=255)
MAX_LIST = 1000
# The list fields ``parse_limits`` reads, as the OpenAPI document declares them (api.validation has no lists).
LIST_FIELDS = {
    "scopes": described({**array(enum([*scopes.SCOPES, scopes.EVERY])), "minItems": 1, "maxItems": MAX_LIST},
                        "What the key may do; \"all\" is every scope. Required."),
    "gateway_ids": described(nullable({**array({**ID, "maximum": db.MAX_ID}), "minItems": 1, "maxItems": MAX_LIST}),
                             "The only gateways the key may use; null or absent: every gateway."),
    "allowed_countries": described(
        nullable({**array(STRING), "minItems": 1, "maxItems": MAX_LIST}),
        "ISO 3166 alpha-2 codes of the only countries the key may send to; null or absent: anywhere."),
}
REQUIRED_LISTS = ("scopes",)


def _strings(value: Any, name: str, errors: Errors) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > MAX_LIST:
        errors.setdefault(name, []).append(f"The {name} must be a list of strings.")
        return None
    return value


def parse_limits(data: dict[str, Any]) -> tuple[frozenset[str], frozenset[int] | None, frozenset[str] | None]:
    """``scopes`` (required, non-empty; "all" is every scope), ``gateway_ids`` and
    ``allowed_countries`` (null or absent = no limit) from a JSON body; 422 listing every problem.

    Scopes are required over HTTP: a program making keys says what each is for.
    """
    errors: Errors = {}
    chosen: frozenset[str] = frozenset()
    gateway_ids = countries = None
    if "scopes" not in data or data["scopes"] in (None, []):
        errors["scopes"] = [f"The scopes field is required: a list of {', '.join(scopes.SCOPES)} (or \"all\")."]
    elif (names := _strings(data["scopes"], "scopes", errors)) is not None:
        try:
            chosen = scopes.parse_scopes(names)
        except ValueError as exc:
            errors["scopes"] = [str(exc)]
    if data.get("gateway_ids") is not None:
        ids = data["gateway_ids"]
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_LIST
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= db.MAX_ID for i in ids)):
            errors["gateway_ids"] = ["The gateway_ids must be null or a non-empty list of gateway ids."]
        else:
            gateway_ids = frozenset(ids)
    if data.get("allowed_countries") is not None:
        codes = _strings(data["allowed_countries"], "allowed_countries", errors)
        if codes is not None:
            try:
                if not codes:
                    raise ValueError("The allowed_countries must be null (anywhere) or a non-empty list.")
                countries = scopes.parse_countries(codes)
            except ValueError as exc:
                errors["allowed_countries"] = [str(exc)]
    if errors:
        raise ValidationFailed(errors)
    return chosen, gateway_ids, countries


async def unknown_gateways(database, ids: Iterable[int]) -> list[int]:
    """The ids among ``ids`` that name no gateway: a key limited to a typo is refused."""
    wanted = set(ids)
    found = {row[0] for row in await database.fetch_all(sa.select(gateways.c.id).where(gateways.c.id.in_(wanted)))}
    return sorted(wanted - found)


# --- storage (also used by ``smsgw apikey``) -----------------------------------------


def _listed(values) -> list | None:
    return None if values is None else sorted(values)


async def store_key(database: Database, dialect: str, actor: audit.Actor, name: str,
                    chosen: frozenset[str] = scopes.ALL, gateway_ids: frozenset[int] | None = None,
                    allowed_countries: frozenset[str] | None = None) -> tuple[int, str]:
    """Store a new key under ``name``; return its id and the key (the only time it is seen).

    The key and its audit row are written in one transaction.
    """
    key = auth.new_key()
    # what the key may do, as stored and as the audit row records it
    limits = {"scopes": scopes.ordered(chosen), "gateway_ids": _listed(gateway_ids),
              "allowed_countries": _listed(allowed_countries)}
    async with db.write_transaction(database, dialect) as connection:
        key_id = await connection.fetch_val(
            api_keys.insert().values(
                name=name, key_hash=auth.hash_key(key), key_prefix=key[:12], created_at=clock.now_iso(), **limits,
            ).returning(api_keys.c.id)
        )
        await audit.append(connection, dialect, actor, audit.KEY_CREATED, target_type="api_key", target_id=key_id,
                           details={"name": name, **limits})
    return key_id, key


# What ``public`` returns, as the OpenAPI document declares it.
SHAPE = shape({
    "id": ID,
    "name": STRING,
    "key_prefix": described(STRING, "The key's first characters: enough to tell keys apart, never to use one."),
    "scopes": array(enum(scopes.SCOPES)),
    "gateway_ids": nullable(array(ID)),
    "allowed_countries": nullable(array(STRING)),
    "created_at": TIME,
    "revoked_at": nullable(TIME),
})


def public(row) -> dict:
    """A key as it is listed: never the key, never its hash; the prefix identifies it."""
    return {
        "id": row["id"], "name": row["name"], "key_prefix": row["key_prefix"],
        "scopes": scopes.ordered(row["scopes"] or ()),
        "gateway_ids": row["gateway_ids"], "allowed_countries": row["allowed_countries"],
        "created_at": row["created_at"], "revoked_at": row["revoked_at"],
    }


async def stored_keys(database: Database) -> list[dict]:
    rows = await database.fetch_all(sa.select(api_keys).order_by(api_keys.c.id))
    return [public(db.as_dict(row)) for row in rows]


async def fetch_key(database: Database, key_id: int) -> dict | None:
    row = await database.fetch_one(sa.select(api_keys).where(api_keys.c.id == key_id))
    return public(db.as_dict(row)) if row is not None else None


async def revoke_stored_key(database: Database, dialect: str, actor: audit.Actor, key_id: int) -> bool:
    """Revoke an active key (and record it); False when there is no active key with this id."""
    async with db.write_transaction(database, dialect) as connection:
        rows = await connection.fetch_all(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=clock.now_iso())
            .returning(api_keys.c.id, api_keys.c.name)
        )
        if rows:
            await audit.append(connection, dialect, actor, audit.KEY_REVOKED, target_type="api_key",
                               target_id=key_id, details={"name": rows[0]["name"]})
    return bool(rows)


# --- over HTTP ------------------------------------------------------------------------


async def create_key(request: Request) -> JSONResponse:
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    data = body.data
    named = validate({"name": data["name"]} if "name" in data else {}, {"name": NAME})
    unknown = set(data) - {"name", "scopes", "gateway_ids", "allowed_countries"}
    if unknown:
        raise ValidationFailed({name: [f"The {name} field is not a known field."] for name in sorted(unknown)})
    chosen, gateway_ids, countries = parse_limits(data)
    # The grant first: a key refused the grant learns nothing about which gateway ids exist.
    actor = auth.key_of(request)
    refused = scopes.grant_refusal(actor.scopes, actor.gateway_ids, actor.allowed_countries,
                                   chosen, gateway_ids, countries)
    if refused:
        raise ApiError(403, refused)
    if gateway_ids is not None and (missing := await unknown_gateways(state.database, gateway_ids)):
        raise ValidationFailed({"gateway_ids": [f"No SMS gateway has id {', '.join(map(str, missing))}."]})
    key_id, key = await store_key(state.database, state.dialect, audit.actor_of(request), named["name"],
                                  chosen, gateway_ids, countries)
    shown = await fetch_key(state.database, key_id)
    return ok("API key created successfully. It is shown only this once.", {**shown, "key": key}, status=201)


async def list_keys(request: Request) -> JSONResponse:
    return ok("API keys fetched successfully.", await stored_keys(request.app.state.database))


async def revoke_key(request: Request) -> JSONResponse:
    state = request.app.state
    key_id = request.path_params["id"]
    target = await fetch_key(state.database, key_id) if key_id <= db.MAX_ID else None
    if target is None or target["revoked_at"] is not None:
        raise ApiError(404, "No active API key has this id.")
    actor = auth.key_of(request)
    refused = scopes.grant_refusal(
        actor.scopes, actor.gateway_ids, actor.allowed_countries, frozenset(target["scopes"]),
        None if target["gateway_ids"] is None else frozenset(target["gateway_ids"]),
        None if target["allowed_countries"] is None else frozenset(target["allowed_countries"]),
        verb="revoke a key with")
    if refused:
        raise ApiError(403, refused)
    if not await revoke_stored_key(state.database, state.dialect, audit.actor_of(request), key_id):
        raise ApiError(404, "No active API key has this id.")
    return ok("API key revoked successfully.", await fetch_key(state.database, key_id))
