"""API keys over HTTP (scope ``keys:admin``): make one, list them, revoke one.

``smsgw apikey`` does the same from the command line. A key is shown once, in
the answer that makes it; lists never show a key or its hash. A key never
makes or revokes a key stronger than itself (``api.scopes.grant_refusal``).
"""

from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit, auth, db, scopes
from api.bodies import read_body
from api.responses import ApiError, ok
from api.tables import gateways
from api.validation import Errors, Field, ValidationFailed, validate

NAME = Field("string", required=True, max_length=255)
MAX_LIST = 1000


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
    key_id, key = await auth.create_key(state.database, state.dialect, audit.actor_of(request), named["name"],
                                        chosen, gateway_ids, countries)
    shown = await auth.fetch_key(state.database, key_id)
    return ok("API key created successfully. It is shown only this once.", {**shown, "key": key}, status=201)


async def list_keys(request: Request) -> JSONResponse:
    return ok("API keys fetched successfully.", await auth.list_keys(request.app.state.database))


async def revoke_key(request: Request) -> JSONResponse:
    state = request.app.state
    key_id = request.path_params["id"]
    target = await auth.fetch_key(state.database, key_id) if key_id <= db.MAX_ID else None
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
    if not await auth.revoke_key(state.database, state.dialect, audit.actor_of(request), key_id):
        raise ApiError(404, "No active API key has this id.")
    return ok("API key revoked successfully.", await auth.fetch_key(state.database, key_id))
