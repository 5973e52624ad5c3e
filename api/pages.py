"""Lists, newest first, a page at a time, with keyset cursors.

``id < cursor`` stays fast however deep the page and never skips or repeats a
row while new ones arrive, unlike OFFSET. The cursor is opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

import sqlalchemy as sa
from starlette.requests import Request

from api import db
from api.validation import Field, ValidationFailed, validate

DEFAULT_PAGE = 50
MAX_PAGE = 200
PAGE_FIELDS = {
    "limit": Field("integer", nullable=True, min_value=1, max_value=MAX_PAGE),
    "cursor": Field("string", nullable=True, max_length=100),
}


def query_filters(request: Request, fields: dict[str, Field]) -> dict[str, Any]:
    """The query parameters named in ``fields`` (plus ``limit`` and ``cursor``), validated;
    absent and empty ones left out."""
    schema = {**fields, **PAGE_FIELDS}
    params = request.query_params
    found = validate({k: params[k] for k in schema if k in params}, schema, from_form=True)
    return {name: value for name, value in found.items() if value is not None}


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


async def page(database, query: sa.Select, id_column: sa.Column, filters: dict[str, Any],
               present: Callable[[dict], dict], oldest_first: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """One page of ``query``'s rows, newest first (or oldest first, for histories),
    and its ``meta`` (limit, next_cursor)."""
    limit = filters.get("limit", DEFAULT_PAGE)
    if "cursor" in filters:
        after = decode_cursor(filters["cursor"])
        query = query.where(id_column > after if oldest_first else id_column < after)
    order = id_column.asc() if oldest_first else id_column.desc()
    rows = await database.fetch_all(query.order_by(order).limit(limit + 1))
    items = [present(db.as_dict(row)) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
    return items, {"limit": limit, "next_cursor": next_cursor}
