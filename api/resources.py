"""Request helpers shared by the handlers: the id in the path, and the gateway it names or 404.

Every handler that reads ``/…/{id:int}`` or needs "this gateway, else 404" uses
these, so an id too large for the database and an unknown gateway answer the
same way on every route.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from api import db
from api.responses import ApiError
from api.tables import gateways, messages

messages_count = (
    sa.select(sa.func.count(messages.c.id))
    .where(messages.c.sms_gateway_id == gateways.c.id)
    .scalar_subquery()
    .label("messages_count")
)


def path_id(request: Request, not_found: str = "SMS gateway not found.") -> int:
    """The integer id in the path; one too large for the database is simply not found."""
    value = request.path_params["id"]
    if value > db.MAX_ID:
        raise ApiError(404, not_found)
    return value


GATEWAY = sa.select(gateways).where(gateways.c.id == sa.bindparam("id"))
GATEWAY_COUNTED = sa.select(gateways, messages_count).where(gateways.c.id == sa.bindparam("id"))


async def fetch_gateway(database, gateway_id: int, *, count: bool = True) -> dict[str, Any] | None:
    """The gateway's row; ``count=False`` skips counting its messages (sends, lookups)."""
    return await db.read_one(database, GATEWAY_COUNTED if count else GATEWAY, {"id": gateway_id})


def gateway_not_found() -> ApiError:
    return ApiError(404, "SMS gateway not found.")


async def gateway_or_404(database, gateway_id: int, *, count: bool = True) -> dict[str, Any]:
    """The gateway's row, or the 404 ApiError (a route's answer, the CLI's message)."""
    gateway = await fetch_gateway(database, gateway_id, count=count)
    if gateway is None:
        raise gateway_not_found()
    return gateway


async def get_or_404(request: Request, *, count: bool = True) -> dict[str, Any]:
    """The gateway the path names, or 404; ``count=False`` skips counting its messages."""
    return await gateway_or_404(request.app.state.database, path_id(request), count=count)
