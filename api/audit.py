"""The audit trail: who did what to keys, gateways and webhook endpoints, when, and from where.

Rows are only ever appended. Each append takes one lock (SQLite's write lock;
on PostgreSQL an advisory lock), reads the last row's hash and inserts the new
row chained to it (``api.audit_chain``), so two API replicas on one database
cannot fork the chain. No route changes or deletes a row.

A row names the key by id and name ("admin key" for SMSGW_ADMIN_KEY, "cli" for
the command line), never by the key; gateway changes list the fields that
changed, never their values.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import audit_chain, clock, db, pages
from api.openapi_shapes import ANY, ID, STRING, TIME, described, enum, nullable, shape
from api.peer import client_address
from api.responses import ok
from api.tables import audit_events
from api.validation import Field

# What happened (the ``action`` column).
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
GATEWAY_CREATED = "gateway.created"
GATEWAY_CHANGED = "gateway.changed"
GATEWAY_DELETED = "gateway.deleted"
TOKEN_ROTATED = "gateway.token_rotated"
SCOPE_DENIED = "scope.denied"
WEBHOOK_CREATED = "webhook.created"
WEBHOOK_CHANGED = "webhook.changed"
WEBHOOK_DELETED = "webhook.deleted"
WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"
WEBHOOK_RETRIED = "webhook.delivery_retried"
WEBHOOK_REPLAYED = "webhook.replayed"
ACTIONS = (KEY_CREATED, KEY_REVOKED, GATEWAY_CREATED, GATEWAY_CHANGED, GATEWAY_DELETED, TOKEN_ROTATED,
           SCOPE_DENIED, WEBHOOK_CREATED, WEBHOOK_CHANGED, WEBHOOK_DELETED, WEBHOOK_SECRET_ROTATED,
           WEBHOOK_RETRIED, WEBHOOK_REPLAYED)

log = logging.getLogger("smsgw.api")

CHAIN_LOCK = ("audit_events", "chain")


@dataclass(frozen=True)
class Actor:
    key_id: int | None
    name: str
    address: str | None = None


CLI = Actor(None, "cli")


def actor_of(request: Request) -> Actor:
    key = request.state.api_key
    return Actor(key.id, key.name, client_address(request))


async def append(connection, dialect: str, actor: Actor, action: str, *, target_type: str | None = None,
                 target_id: int | None = None, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Append one row inside the caller's write transaction (``db.write_transaction``)."""
    await db.lock_key(connection, dialect, *CHAIN_LOCK)
    prev = await connection.fetch_val(sa.select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1))
    row = {
        "occurred_at": clock.now_iso(), "actor_key_id": actor.key_id, "actor": actor.name, "action": action,
        "target_type": target_type, "target_id": target_id, "details": dict(details) if details else None,
        "source_address": actor.address,
    }
    prev = prev or audit_chain.GENESIS
    row.update(prev_hash=prev, hash=audit_chain.link(prev, row))
    await connection.execute(audit_events.insert().values(**row))
    return row


async def record(database, dialect: str, actor: Actor, action: str, **fields: Any) -> None:
    """Append one row in a transaction of its own."""
    async with db.write_transaction(database, dialect) as connection:
        await append(connection, dialect, actor, action, **fields)


async def record_request(request: Request, action: str, **fields: Any) -> None:
    state = request.app.state
    await record(state.database, state.dialect, actor_of(request), action, **fields)


# --- refusals: recorded, but a flood of them cannot fill the disk -------------------

DENIED_EVERY_S = 60.0
_MAX_REMEMBERED = 10_000


class DeniedLimiter:
    """At most one row per key and route per DENIED_EVERY_S in this process; the
    refusals in between are counted into the next row (``details.suppressed``)."""

    def __init__(self, every: float = DENIED_EVERY_S, now=time.monotonic) -> None:
        self.every, self.now = every, now
        self.last: dict[tuple, tuple[float, int]] = {}
        self.lock = threading.Lock()

    def admit(self, key: tuple) -> int | None:
        """None: do not write a row now. Otherwise how many refusals were left unwritten before it."""
        with self.lock:
            moment = self.now()
            seen = self.last.get(key)
            if seen is not None and moment - seen[0] < self.every:
                self.last[key] = (seen[0], seen[1] + 1)
                return None
            if len(self.last) >= _MAX_REMEMBERED:
                self.last = {k: v for k, v in self.last.items() if moment - v[0] < self.every}
                if len(self.last) >= _MAX_REMEMBERED:
                    return None  # a flood over this many keys and routes at once: counted nowhere
            self.last[key] = (moment, 0)
            return seen[1] if seen is not None else 0


denied_limiter = DeniedLimiter()


async def denied(request: Request, method: str, route: str, message: str) -> None:
    """Record a refused request (rate-limited, see DeniedLimiter). Never raises: the
    refusal stands even when the trail cannot be written, and is logged by type only."""
    key = request.state.api_key
    suppressed = denied_limiter.admit((key.id, key.name, method, route))
    if suppressed is None:
        return
    try:
        await record_request(request, SCOPE_DENIED, details={
            "method": method, "route": route, "reason": message, "suppressed": suppressed})
    except Exception as exc:
        log.warning("a refused request could not be recorded in the audit trail (%s)", type(exc).__name__)


# --- reading it ---------------------------------------------------------------------


# What ``public`` returns, as the OpenAPI document declares it (and which columns it copies).
SHAPE = shape({
    "id": ID,
    "occurred_at": TIME,
    "actor_key_id": described(nullable(ID), "Null for the admin key and the command line."),
    "actor": described(STRING, "The key's name, \"admin key\" or \"cli\"."),
    "action": enum(ACTIONS),
    "target_type": nullable(STRING),
    "target_id": nullable(ID),
    "details": ANY,
    "source_address": nullable(STRING),
    "prev_hash": STRING,
    "hash": STRING,
})
FILTERS = {
    "action": Field("string", nullable=True, choices=ACTIONS),
    "order": Field("string", nullable=True, choices=("newest", "oldest")),
}


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in SHAPE["properties"]}


async def list_audit_events(request: Request) -> JSONResponse:
    """``GET /api/audit-events``: newest first (``?order=oldest`` for oldest first),
    ``?action=``, and keyset pages as every other list."""
    filters = pages.query_filters(request, FILTERS)
    query = sa.select(audit_events)
    if "action" in filters:
        query = query.where(audit_events.c.action == filters["action"])
    items, meta = await pages.page(request.app.state.database, query, audit_events.c.id, filters, public,
                                   oldest_first=filters.get("order") == "oldest")
    return ok("Audit events fetched successfully.", items, meta=meta)


async def verify(database, page_size: int = 1000, anchors: Mapping[int, str] | None = None) -> audit_chain.Verdict:
    """Check the whole chain, oldest first, a page at a time, and the ``anchors`` (id → hash noted earlier)."""
    checker = audit_chain.Checker(anchors)
    after = 0
    while True:
        rows = await database.fetch_all(
            sa.select(audit_events).where(audit_events.c.id > after).order_by(audit_events.c.id).limit(page_size))
        for row in map(db.as_dict, rows):
            bad = checker.feed(row)
            if bad is not None:
                return bad
            after = row["id"]
        if len(rows) < page_size:
            return checker.verdict()
