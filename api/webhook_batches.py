"""The webhook worker's changes as a batch's steps: claims of due deliveries, and attempts' answers.

They go through the state-change pipeline like every other write, so on
SQLite they share its one writer and its commits (a receipt's batch and the
answers of many deliveries commit together), and on PostgreSQL a claim reads
due deliveries ``FOR UPDATE SKIP LOCKED``: replicas never hold one delivery at
once. The rules are ``api.webhook_schedule``'s; this module only reads and writes.

A claim reads, with each delivery, all a request needs: the endpoint's URL and
secrets, the event, and the message's columns the event did not keep (its
text, number...), so sending it reads nothing more.
"""

from __future__ import annotations

import functools
from typing import Any, Generator, Mapping, Sequence

import sqlalchemy as sa

from api import changes, db, notices
from api.steps import Read, Step, Write
from api.tables import messages, webhook_deliveries as deliveries, webhook_endpoints as endpoints, webhook_events
from api.webhook_schedule import (
    DELIVERY_COLUMNS, ENDPOINT_COLUMNS, FAILED, NEVER_ANSWERED, PENDING, ClaimDeliveries, DeliveryResult,
    after_attempt, claimed,
)

WebhookChange = ClaimDeliveries | DeliveryResult
# What a delivery's request needs of its message besides the event's snapshot.
MESSAGE_COLUMNS = tuple(c.name for c in messages.c if c.name not in notices.SNAPSHOT and c.name not in (
    "id", "idempotency_key", "request_hash", "claimed_at"))
UPDATE_DELIVERY = deliveries.update().where(deliveries.c.id == sa.bindparam("_id"))
UPDATE_ENDPOINT = endpoints.update().where(endpoints.c.id == sa.bindparam("_id"))
# A disabled endpoint's waiting deliveries are due no more (until it is enabled again).
PARK = deliveries.update().where(deliveries.c.endpoint_id == sa.bindparam("_id"),
                                 deliveries.c.status == sa.literal_column(f"'{PENDING}'"))


class Reads:
    def __init__(self, dialect: str):
        ids, id_value = db.id_list(dialect)
        d, e, ev, m = deliveries.c, endpoints.c, webhook_events.c, messages.c
        self.due = (
            sa.select(d.id, d.endpoint_id, d.message_id, d.sequence, d.event_type, *(d[name] for name in DELIVERY_COLUMNS),
                      e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
                      ev.occurred_at, ev.snapshot, *(m[name] for name in MESSAGE_COLUMNS))
            .select_from(deliveries.join(endpoints, e.id == d.endpoint_id)
                         .join(webhook_events, sa.and_(ev.message_id == d.message_id, ev.sequence == d.sequence))
                         .join(messages, m.id == d.message_id))
            .where(d.next_attempt_at.is_not(None), d.next_attempt_at <= sa.bindparam("now"), e.is_active.is_(True))
            .order_by(d.next_attempt_at, d.id).limit(sa.bindparam("n", type_=sa.Integer))
            .with_for_update(of=deliveries, skip_locked=True))
        # whose a delivery is never changes: read without a lock
        self.owners = sa.select(d.endpoint_id).select_from(ids.join(deliveries, d.id == id_value)).distinct()
        self.deliveries = (
            sa.select(*(d[name] for name in ("id", "endpoint_id", *DELIVERY_COLUMNS)))
            .select_from(ids.join(deliveries, d.id == id_value)).order_by(d.id).with_for_update(of=deliveries))
        self.endpoints = (
            sa.select(e.id, *(e[name] for name in ENDPOINT_COLUMNS))
            .select_from(ids.join(endpoints, e.id == id_value)).order_by(e.id).with_for_update(of=endpoints))


@functools.cache
def reads_for(dialect: str) -> Reads:
    return Reads(dialect)


def apply(batch: Sequence[WebhookChange], now: str, dialect: str) -> Generator[Step, list[Mapping[str, Any]], list]:
    """The steps of a batch's webhook changes; returns each one's outcome, in order: a
    claim's list of deliveries (rows, as claimed), a result's ``webhook_schedule.Recorded``."""
    reads = reads_for(dialect)
    results = [c for c in batch if isinstance(c, DeliveryResult)]
    claims = [c for c in batch if isinstance(c, ClaimDeliveries)]
    changed: dict[int, dict[str, Any]] = {}
    changed_endpoints: dict[int, dict[str, Any]] = {}
    outcomes: dict[int, Any] = {}
    if results:
        # Endpoints are locked before their deliveries, as the routes that change both do
        # (PATCH, DELETE, replay): so neither waits for the other in a circle.
        ids = db.id_params(dialect, {c.delivery_id for c in results})
        owners = {r["endpoint_id"] for r in (yield Read(reads.owners, ids))}
        known = {r["id"]: r for r in (yield Read(reads.endpoints, db.id_params(dialect, owners)))} if owners else {}
        rows = {r["id"]: r for r in (yield Read(reads.deliveries, ids))}
        for change in results:
            delivery = changed.get(change.delivery_id) or rows.get(change.delivery_id)
            endpoint = delivery and (changed_endpoints.get(delivery["endpoint_id"]) or known.get(delivery["endpoint_id"]))
            recorded = after_attempt(change, delivery, endpoint, now)
            if recorded.delivery is not None:
                changed[change.delivery_id] = recorded.delivery
            if recorded.endpoint is not None:
                changed_endpoints[recorded.endpoint["id"]] = recorded.endpoint
            outcomes[id(change)] = recorded
    if claims:
        off = {i for i, row in changed_endpoints.items() if not row["is_active"]}  # disabled in this batch
        due = [row for row in (yield Read(reads.due, {"now": now, "n": sum(c.limit for c in claims)}))
               if row["id"] not in changed  # answered in this very batch: as it is now, not as read
               and row["endpoint_id"] not in off]
        allowed = len(claims[0].schedule)  # a process's claims all carry its one schedule
        for row in due:
            if row["attempts"] >= allowed:  # its last attempt never answered (the worker died): it ends
                changed[row["id"]] = {**row, "status": FAILED, "next_attempt_at": None, "updated_at": now,
                                      "last_error": NEVER_ANSWERED}
        due = [row for row in due if row["attempts"] < allowed]
        for change in claims:
            taken, due = due[:change.limit], due[change.limit:]
            rows = [claimed(row, now, change.lease) for row in taken]
            for row in rows:
                changed[row["id"]] = row
            outcomes[id(change)] = rows
    if changed:
        yield Write(UPDATE_DELIVERY, [{"_id": i, **{name: row[name] for name in DELIVERY_COLUMNS}}
                                      for i, row in changed.items()])
    if changed_endpoints:
        yield Write(UPDATE_ENDPOINT, [{"_id": i, **{name: row[name] for name in ENDPOINT_COLUMNS}}
                                      for i, row in changed_endpoints.items()])
        parked = [{"_id": i, "next_attempt_at": None} for i, row in changed_endpoints.items() if not row["is_active"]]
        if parked:
            yield Write(PARK, parked)
    return [outcomes[id(change)] for change in batch]


def is_webhook_change(change: changes.Change | WebhookChange) -> bool:
    return isinstance(change, (ClaimDeliveries, DeliveryResult))
