"""A batch of changes as a few statements: read everything once, plan in Python, write in bulk.

``apply`` is the whole transaction of one batch, written once for both
databases and without I/O, the way httpx's ``Auth.auth_flow`` is: a generator
that yields the steps it needs — ``Lock`` the batch's keys, ``Read`` the rows,
``Write`` many rows with one statement — and is sent each step's rows back.
``api.pipeline`` drives it: on SQLite in one thread over sqlite3, on PostgreSQL
over asyncpg. Whatever the batch's size, a batch of receipts and send outcomes makes at most
ten statements; new messages and claims add a few each.

Inside the batch, changes are planned one after the other on an in-memory view
of the rows (``View``), so two receipts for one message in one batch end
exactly as if each had been committed on its own, and a receipt parked early in
a batch is found by a send that names its id later in the same batch.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from typing import Any, Generator, Iterable, Mapping, Sequence

import sqlalchemy as sa

from api import changes, db, notices, webhook_batches
from api.changes import (
    Cancel, Change, Claim, Expiry, Facts, Interruption, NewMessages, ParkedExpiry, ParkedReceipt, PauseGateway,
    Receipt, SendOutcome,
)
from api.steps import Key, Lock, Read, Step, Write
from api.tables import (
    batches as batch_rows, events, gateways, messages, pacing as buckets, unmatched_receipts, webhook_deliveries,
    webhook_endpoints, webhook_events,
)

# Statements with their parameters bound per row (executemany).
UPDATE_MESSAGE = messages.update().where(messages.c.id == sa.bindparam("_id"))
INSERT_EVENT = events.insert()
INSERT_PARKED = unmatched_receipts.insert()
UPDATE_PARKED = unmatched_receipts.update().where(unmatched_receipts.c.id == sa.bindparam("_id"))
RESOLVED = ("status", "message_id", "resolved_at")
INSERT_MESSAGE = messages.insert()
NEW_MESSAGE_COLUMNS = tuple(c.name for c in messages.c)  # every column: a new row gives each a value
INSERT_BATCH = batch_rows.insert()
INSERT_WEBHOOK_EVENT = webhook_events.insert()
INSERT_DELIVERY = webhook_deliveries.insert()
RELEASE = {
    "message": messages.update().where(messages.c.id == sa.bindparam("_id")),
    "batch": batch_rows.update().where(batch_rows.c.id == sa.bindparam("_id")),
}
# What a plan reads of a message: never its text, unless it is to be sent (a claim).
MESSAGE_COLUMNS = [*(messages.c[name] for name in changes.FIXED), *(messages.c[name] for name in changes.MUTABLE)]
GATEWAY_COLUMNS = [gateways.c[name] for name in (
    "id", "is_active", "throughput_per_second", "max_in_flight", "default_validity_seconds")]
DISPATCHING = ""  # the lock key's external id that stands for "this gateway's dispatching" (no real id is empty)
EXPIRED_SWEEP = 100  # due messages read beyond what a claim may send: the expired among them end at once


def apply(batch: Sequence[Change | webhook_batches.WebhookChange], now: str, unmatched_ttl: float, dialect: str,
          entered: Counter | None = None) -> Generator[Step, list[Mapping[str, Any]] | None, list[Any]]:
    """The steps of one batch's transaction; returns each change's outcome, in order.

    The webhook worker's changes (``api.webhook_batches``) come after the messages'
    in the same transaction: a claim then finds the deliveries this batch made.
    ``entered``, when given, is told how many messages entered each state (the metrics).
    """
    hooks = [c for c in batch if webhook_batches.is_webhook_change(c)]
    if not hooks:
        return (yield from _apply(batch, now, unmatched_ttl, dialect, entered))
    rest = [c for c in batch if not webhook_batches.is_webhook_change(c)]
    done = iter((yield from _apply(rest, now, unmatched_ttl, dialect, entered)) if rest else ())
    answered = iter((yield from webhook_batches.apply(hooks, now, dialect)))
    return [next(answered) if webhook_batches.is_webhook_change(c) else next(done) for c in batch]


def _apply(batch: Sequence[Change], now: str, unmatched_ttl: float, dialect: str, entered: Counter | None = None
           ) -> Generator[Step, list[Mapping[str, Any]] | None, list[Any]]:
    receipt_keys = {c.key for c in batch if isinstance(c, Receipt)}
    send_keys = {c.key for c in batch if isinstance(c, SendOutcome) and c.key is not None}
    message_ids = {c.message_id for c in batch if isinstance(c, (SendOutcome, Interruption, Expiry, Cancel))}
    parked_ids = {c.parked_id for c in batch if isinstance(c, ParkedExpiry)}
    new = [c for c in batch if isinstance(c, NewMessages)]
    claims = [c for c in batch if isinstance(c, Claim)]
    paced = {c.gateway_id for c in batch if isinstance(c, (Claim, PauseGateway))}
    keys = receipt_keys | send_keys
    # A gateway's claims and pauses take its own lock too (on PostgreSQL; SQLite's write
    # lock covers all): two replicas claiming at once take turns, so each counts the
    # other's calls in flight and no bucket row is made twice.
    locked = keys | {(gateway_id, DISPATCHING) for gateway_id in paced}
    if locked:
        yield Lock(tuple(sorted(locked)))

    # Rows are read (and on PostgreSQL locked) in a fixed order: by key, then by id,
    # then the buckets by gateway; due messages last, skipping those another replica holds.
    reads = reads_for(dialect)
    found = []
    if keys:
        found += yield Read(reads.messages_by_key, db.key_params(dialect, keys))
    if message_ids:
        found += yield Read(reads.messages_by_id, db.id_params(dialect, message_ids))
    gateway_ids = {key[0] for key in receipt_keys} | {c.gateway_id for c in new} | {c.gateway_id for c in claims}
    known = []
    if gateway_ids:
        known = yield Read(reads.gateways, db.id_params(dialect, gateway_ids))
    parked = []
    if send_keys:
        parked += yield Read(reads.parked_by_key, db.key_params(dialect, send_keys))
    if parked_ids:
        parked += yield Read(reads.parked_by_id, db.id_params(dialect, parked_ids))
    view = View(found, known, parked)

    if new:
        for change in new:
            if change.idempotency_key is not None:
                kind = change.key_kind
                rows = yield Read(reads.key_holder[kind], {"gateway": change.gateway_id, "key": change.idempotency_key})
                view.key_holders.setdefault((kind, change.gateway_id, change.idempotency_key),
                                            rows[0] if rows else None)
        count = sum(len(c.rows) for c in new)
        view.new_ids = db.reserved(dialect, (yield Read(reads.next_message_ids, {"n": count})), count)
        if any(c.batch for c in new):
            count = sum(1 for c in new if c.batch)
            view.new_batch_ids = db.reserved(dialect, (yield Read(reads.next_batch_ids, {"n": count})), count)
    paced |= {c.gateway_id for c in new if c.claimed and c.gateway_id in view.gateways
              and view.gateways[c.gateway_id]["throughput_per_second"] is not None}
    if paced:
        view.buckets = {row["sms_gateway_id"]: row for row in (
            yield Read(reads.buckets, db.id_params(dialect, paced)))}
    if claims:
        view.in_flight = {row["sms_gateway_id"]: row["n"] for row in (
            yield Read(reads.in_flight, db.id_params(dialect, {c.gateway_id for c in claims})))}
        for change in claims:
            room = view.room(change, now)
            if room > 0:
                view.add_due(change.gateway_id, (
                    yield Read(reads.due, {"gateway": change.gateway_id, "now": now, "n": room + EXPIRED_SWEEP})))

    outcomes = [view.apply(change, now, unmatched_ttl) for change in batch]
    if view.notices:  # the outbox: only when some endpoint subscribes (api.notices)
        view.webhook_events, view.deliveries = notices.outbox(view.notices, (yield Read(reads.endpoints, {})), now)
    for write in view.writes(dialect):
        yield write
    if entered is not None:
        entered.update(e["state_after"] for e in view.events if e["changed"] and e["state_after"] != e["state_before"])
    return outcomes


class Reads:
    """A batch's reads for one dialect, built once. Each list a read looks up (keys, ids)
    is one parameter (``db.key_list``, ``db.id_list``), so each read is one prepared
    statement whatever the batch's size, and finds its rows through their index."""

    def __init__(self, dialect: str):
        keys, key_gateway, key_external = db.key_list(dialect)
        ids, id_value = db.id_list(dialect)
        by_message_key = sa.and_(messages.c.sms_gateway_id == key_gateway,
                                 messages.c.external_message_id == key_external)
        self.messages_by_key = (
            sa.select(*MESSAGE_COLUMNS).select_from(keys.join(messages, by_message_key))
            .order_by(messages.c.sms_gateway_id, messages.c.external_message_id).with_for_update(of=messages))
        self.messages_by_id = (
            sa.select(*MESSAGE_COLUMNS).select_from(ids.join(messages, messages.c.id == id_value))
            .order_by(messages.c.id).with_for_update(of=messages))
        self.gateways = sa.select(*GATEWAY_COLUMNS).select_from(ids.join(gateways, gateways.c.id == id_value))
        self.key_holder = {
            kind: sa.select(table.c.id, table.c.request_hash, table.c.created_at).where(
                table.c.sms_gateway_id == sa.bindparam("gateway"), table.c.idempotency_key == sa.bindparam("key"))
            for kind, table in (("message", messages), ("batch", batch_rows))}
        self.next_message_ids = db.next_ids(dialect, messages)
        self.next_batch_ids = db.next_ids(dialect, batch_rows)
        self.buckets = (
            sa.select(buckets).select_from(ids.join(buckets, buckets.c.sms_gateway_id == id_value))
            .order_by(buckets.c.sms_gateway_id).with_for_update(of=buckets))
        self.in_flight = (
            sa.select(messages.c.sms_gateway_id, sa.func.count().label("n"))
            .select_from(ids.join(messages, messages.c.sms_gateway_id == id_value))
            .where(messages.c.claimed_at.is_not(None)).group_by(messages.c.sms_gateway_id))
        self.upsert_bucket = db.upsert(dialect, buckets)
        self.endpoints = sa.select(webhook_endpoints.c.id, webhook_endpoints.c.events,
                                   webhook_endpoints.c.gateway_ids, webhook_endpoints.c.is_active)
        self.due = (
            sa.select(*MESSAGE_COLUMNS, *(messages.c[name] for name in changes.TO_SEND))
            .where(messages.c.sms_gateway_id == sa.bindparam("gateway"), messages.c.next_attempt_at.is_not(None),
                   messages.c.next_attempt_at <= sa.bindparam("now"))
            .order_by(messages.c.next_attempt_at, messages.c.id).limit(sa.bindparam("n", type_=sa.Integer))
            .with_for_update(of=messages, skip_locked=True))
        parked = unmatched_receipts.c
        by_parked_key = sa.and_(parked.sms_gateway_id == key_gateway, parked.external_message_id == key_external,
                                parked.status == changes.PENDING)
        self.parked_by_key = (
            sa.select(unmatched_receipts).select_from(keys.join(unmatched_receipts, by_parked_key))
            .order_by(parked.sms_gateway_id, parked.external_message_id, parked.id)
            .with_for_update(of=unmatched_receipts))
        self.parked_by_id = (
            sa.select(unmatched_receipts).select_from(ids.join(unmatched_receipts, parked.id == id_value))
            .order_by(parked.id).with_for_update(of=unmatched_receipts))


@functools.cache
def reads_for(dialect: str) -> Reads:
    return Reads(dialect)


def _by_id(row: Mapping[str, Any]) -> int:
    return row["id"]


class View:
    """The rows a batch touches, as the batch's changes leave them, and what to write."""

    def __init__(self, found: Iterable[Mapping[str, Any]], gateway_rows: Iterable[Mapping[str, Any]],
                 parked: Iterable[Mapping[str, Any]]):
        self.messages: dict[int, dict[str, Any]] = {row["id"]: dict(row) for row in found}
        self.by_key: dict[Key, int] = {
            (m["sms_gateway_id"], m["external_message_id"]): m["id"]
            for m in self.messages.values() if m["external_message_id"] is not None}
        self.gateways = {row["id"]: row for row in gateway_rows}
        self.parked: dict[int, dict[str, Any]] = {row["id"]: dict(row) for row in sorted(parked, key=_by_id)}
        self.waiting: dict[Key, list[dict[str, Any]]] = defaultdict(list)
        for row in self.parked.values():
            if row["status"] == changes.PENDING:
                self.waiting[(row["sms_gateway_id"], row["external_message_id"])].append(row)
        # new messages: who holds each Idempotency-Key, and the ids reserved for new rows
        self.key_holders: dict[tuple[str, int, str], Mapping[str, Any] | None] = {}
        self.new_ids: list[int] = []
        self.new_batch_ids: list[int] = []
        # claims: each gateway's bucket, its messages in flight, its due messages (ids, oldest first)
        self.buckets: dict[int, Mapping[str, Any]] = {}
        self.in_flight: dict[int, int] = {}
        self.due: dict[int, list[int]] = {}
        # what to write
        self.changed: dict[int, dict[str, Any]] = {}  # message id -> its values now
        self.events: list[dict[str, Any]] = []
        self.new_parked: list[dict[str, Any]] = []
        self.resolved: dict[int, dict[str, Any]] = {}  # parked id -> its row now
        self.inserts: list[dict[str, Any]] = []
        self.new_batches: list[dict[str, Any]] = []
        self.releases: list[tuple[str, int]] = []
        self.changed_buckets: dict[int, dict[str, Any]] = {}
        # the outbox: what apps hear about (api.notices), then the rows it makes
        self.notices: list[dict[str, Any]] = []
        self.webhook_events: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []

    def room(self, claim: Claim, now: str) -> int:
        """How many messages ``claim`` may take at most, before reading them."""
        gateway_id = claim.gateway_id
        return changes.claim_room(claim, self.gateways.get(gateway_id), self.buckets.get(gateway_id),
                                  self.in_flight.get(gateway_id, 0), now)[0]

    def add_due(self, gateway_id: int, rows: Iterable[Mapping[str, Any]]) -> None:
        ids = self.due.setdefault(gateway_id, [])
        for row in rows:
            known = self.messages.get(row["id"])
            if known is None:
                self.messages[row["id"]] = dict(row)
            else:  # read earlier in the batch: its values stay as they are now; what sending needs is added
                for name in changes.TO_SEND:
                    known.setdefault(name, row[name])
            ids.append(row["id"])

    def facts(self, change: Change) -> Facts:
        if isinstance(change, Receipt):
            message_id = self.by_key.get(change.key)
            return Facts(message=self.messages.get(message_id), gateway_exists=change.gateway_id in self.gateways)
        if isinstance(change, ParkedReceipt):
            row = change.parked
            return Facts(message=self.messages[self.by_key[(row["sms_gateway_id"], row["external_message_id"])]])
        if isinstance(change, SendOutcome):
            key = change.key
            return Facts(message=self.messages.get(change.message_id),
                         holder=self.by_key.get(key) if key else None,
                         waiting=tuple(self.waiting.get(key, ())) if key else ())
        if isinstance(change, (Interruption, Expiry, Cancel)):
            return Facts(message=self.messages.get(change.message_id))
        if isinstance(change, NewMessages):
            kind = change.key_kind
            ids, self.new_ids = self.new_ids[:len(change.rows)], self.new_ids[len(change.rows):]
            batch_id = self.new_batch_ids.pop(0) if change.batch else None
            holder = None
            if change.idempotency_key is not None:
                holder = self.key_holders.get((kind, change.gateway_id, change.idempotency_key))
            return Facts(gateway=self.gateways.get(change.gateway_id), new_ids=tuple(ids), new_batch_id=batch_id,
                         key_holder=holder,
                         bucket=self.buckets.get(change.gateway_id))
        if isinstance(change, Claim):
            gateway_id = change.gateway_id
            return Facts(gateway=self.gateways.get(gateway_id), bucket=self.buckets.get(gateway_id),
                         in_flight=self.in_flight.get(gateway_id, 0),
                         due=tuple(self.messages[i] for i in self.due.get(gateway_id, ())))
        if isinstance(change, PauseGateway):
            return Facts(bucket=self.buckets.get(change.gateway_id))
        return Facts(parked=self.parked.get(change.parked_id))

    def apply(self, change: Change, now: str, unmatched_ttl: float) -> Any:
        plan = changes.plan(change, self.facts(change), now, unmatched_ttl)
        if plan.message is not None:
            self._set_message(plan.message)
        for message in plan.messages:
            self._set_message(message)
        self.notices.extend(plan.notices)
        if plan.event is not None:
            self.events.append(plan.event)
        self.events.extend(plan.events)
        if plan.park is not None:
            row = dict(plan.park)
            self.new_parked.append(row)
            self.waiting[(row["sms_gateway_id"], row["external_message_id"])].append(row)
        if plan.resolve is not None:
            self._resolve(change, plan.resolve)
        if plan.release is not None:
            self.releases.append(plan.release)
        if plan.inserts:
            self.inserts.extend(plan.inserts)

            if change.idempotency_key is not None:  # a later change in this batch with the same key finds it
                self.key_holders[(change.key_kind, change.gateway_id, change.idempotency_key)] = \
                    plan.new_batch or plan.inserts[0]
        if plan.new_batch is not None:
            self.new_batches.append(plan.new_batch)
        if plan.bucket is not None:
            self.buckets[plan.bucket["sms_gateway_id"]] = self.changed_buckets[plan.bucket["sms_gateway_id"]] = \
                plan.bucket
        if isinstance(change, Claim):
            self.in_flight[change.gateway_id] = self.in_flight.get(change.gateway_id, 0) + len(plan.result.messages)
        for next_change in plan.later:
            self.apply(next_change, now, unmatched_ttl)
        if isinstance(plan.result, changes.Recorded):  # as the receipts it applied in turn left it
            return changes.Recorded(plan.outcome, self.messages.get(change.message_id, plan.result.values))
        return plan.outcome if plan.result is None else plan.result

    def _set_message(self, values: dict[str, Any]) -> None:
        message_id = values["id"]
        before = self.messages.get(message_id)
        if before is not None and before["external_message_id"] not in (None, values["external_message_id"]):
            self.by_key.pop((before["sms_gateway_id"], before["external_message_id"]), None)
        if values["external_message_id"] is not None:
            self.by_key[(values["sms_gateway_id"], values["external_message_id"])] = message_id
        self.messages[message_id] = self.changed[message_id] = values

    def _resolve(self, change: Change, values: dict[str, Any]) -> None:
        row = change.parked if isinstance(change, ParkedReceipt) else self.parked[change.parked_id]
        row.update(values)
        queue = self.waiting.get((row["sms_gateway_id"], row["external_message_id"]), [])
        if any(r is row for r in queue):
            queue[:] = [r for r in queue if r is not row]
        if row.get("id") is not None:
            self.resolved[row["id"]] = row

    def writes(self, dialect: str) -> list[Write]:
        """One statement per kind of row, each with every row of the batch, in an order
        that keeps every reference and unique key valid at each step."""
        writes = []
        for kind in ("message", "batch"):
            released = [{"_id": row_id, "idempotency_key": None} for k, row_id in self.releases if k == kind]
            if released:
                writes.append(Write(RELEASE[kind], released))
        if self.new_batches:
            writes.append(Write(INSERT_BATCH, self.new_batches))
        if self.inserts:
            writes.append(Write(INSERT_MESSAGE, [
                {name: row.get(name) for name in NEW_MESSAGE_COLUMNS} for row in self.inserts]))
        if self.changed:
            writes.append(Write(UPDATE_MESSAGE, [
                {"_id": message_id, **{name: row[name] for name in changes.MUTABLE}}
                for message_id, row in self.changed.items()]))
        if self.events:
            writes.append(Write(INSERT_EVENT, self.events))
        if self.webhook_events:
            writes.append(Write(INSERT_WEBHOOK_EVENT, self.webhook_events))
        if self.deliveries:
            writes.append(Write(INSERT_DELIVERY, self.deliveries))
        if self.new_parked:
            writes.append(Write(INSERT_PARKED, self.new_parked))
        if self.resolved:
            writes.append(Write(UPDATE_PARKED, [
                {"_id": parked_id, **{name: row[name] for name in RESOLVED}}
                for parked_id, row in self.resolved.items()]))
        if self.changed_buckets:
            writes.append(Write(reads_for(dialect).upsert_bucket, list(self.changed_buckets.values())))
        return writes
