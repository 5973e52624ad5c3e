"""A batch of changes as a few statements: read everything once, plan in Python, write in bulk.

``apply`` is the whole transaction of one batch, written once for both
databases and without I/O, the way httpx's ``Auth.auth_flow`` is: a generator
that yields the steps it needs — ``Lock`` the batch's keys, ``Read`` the rows,
``Write`` many rows with one statement — and is sent each step's rows back.
``api.pipeline`` drives it: on SQLite in one thread over sqlite3, on PostgreSQL
over asyncpg. Whatever the batch's size, it makes at most ten statements.

Inside the batch, changes are planned one after the other on an in-memory view
of the rows (``View``), so two receipts for one message in one batch end
exactly as if each had been committed on its own, and a receipt parked early in
a batch is found by a send that names its id later in the same batch.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generator, Iterable, Mapping, Sequence

import sqlalchemy as sa

from api import changes, db
from api.changes import Change, Facts, Interruption, ParkedExpiry, ParkedReceipt, Receipt, SendOutcome
from api.tables import events, gateways, messages, unmatched_receipts

Key = tuple[int, str]


@dataclass(frozen=True)
class Lock:
    """Hold these (gateway, external id) keys until commit, in this (sorted) order: a
    receipt racing the send that names its id is either found by it or finds it."""

    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Read:
    statement: sa.Select
    params: dict[str, Any]


@dataclass(frozen=True)
class Write:
    statement: sa.Executable
    rows: list[dict[str, Any]]


Step = Lock | Read | Write

# Statements with their parameters bound per row (executemany).
UPDATE_MESSAGE = messages.update().where(messages.c.id == sa.bindparam("_id"))
INSERT_EVENT = events.insert()
INSERT_PARKED = unmatched_receipts.insert()
UPDATE_PARKED = unmatched_receipts.update().where(unmatched_receipts.c.id == sa.bindparam("_id"))
RESOLVED = ("status", "message_id", "resolved_at")
# What a plan reads of a message: never its text.
MESSAGE_COLUMNS = [messages.c.id, messages.c.sms_gateway_id, *(messages.c[name] for name in changes.MUTABLE)]


def apply(batch: Sequence[Change], now: str, unmatched_ttl: float, dialect: str
          ) -> Generator[Step, list[Mapping[str, Any]] | None, list[str]]:
    """The steps of one batch's transaction; returns each change's outcome, in order."""
    receipt_keys = {c.key for c in batch if isinstance(c, Receipt)}
    send_keys = {c.key for c in batch if isinstance(c, SendOutcome) and c.key is not None}
    message_ids = {c.message_id for c in batch if isinstance(c, (SendOutcome, Interruption))}
    parked_ids = {c.parked_id for c in batch if isinstance(c, ParkedExpiry)}
    keys = receipt_keys | send_keys
    if keys:
        yield Lock(tuple(sorted(keys)))

    # Rows are read (and on PostgreSQL locked) in a fixed order: by key, then by id.
    reads = reads_for(dialect)
    found = []
    if keys:
        found += yield Read(reads.messages_by_key, db.key_params(dialect, keys))
    if message_ids:
        found += yield Read(reads.messages_by_id, db.id_params(dialect, message_ids))
    known = set()
    if receipt_keys:
        rows = yield Read(reads.gateways, db.id_params(dialect, {key[0] for key in receipt_keys}))
        known = {row["id"] for row in rows}
    parked = []
    if send_keys:
        parked += yield Read(reads.parked_by_key, db.key_params(dialect, send_keys))
    if parked_ids:
        parked += yield Read(reads.parked_by_id, db.id_params(dialect, parked_ids))

    view = View(found, known, parked)
    outcomes = [view.apply(change, now, unmatched_ttl) for change in batch]
    for write in view.writes():
        yield write
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
        self.gateways = sa.select(gateways.c.id).select_from(ids.join(gateways, gateways.c.id == id_value))
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

    def __init__(self, found: Iterable[Mapping[str, Any]], gateway_ids: Iterable[int],
                 parked: Iterable[Mapping[str, Any]]):
        self.messages: dict[int, dict[str, Any]] = {row["id"]: dict(row) for row in found}
        self.by_key: dict[Key, int] = {
            (m["sms_gateway_id"], m["external_message_id"]): m["id"]
            for m in self.messages.values() if m["external_message_id"] is not None}
        self.gateway_ids = set(gateway_ids)
        self.parked: dict[int, dict[str, Any]] = {row["id"]: dict(row) for row in sorted(parked, key=_by_id)}
        self.waiting: dict[Key, list[dict[str, Any]]] = defaultdict(list)
        for row in self.parked.values():
            if row["status"] == changes.PENDING:
                self.waiting[(row["sms_gateway_id"], row["external_message_id"])].append(row)
        self.changed: dict[int, dict[str, Any]] = {}  # message id -> its values now
        self.events: list[dict[str, Any]] = []
        self.new_parked: list[dict[str, Any]] = []
        self.resolved: dict[int, dict[str, Any]] = {}  # parked id -> its row now

    def facts(self, change: Change) -> Facts:
        if isinstance(change, Receipt):
            message_id = self.by_key.get(change.key)
            return Facts(message=self.messages.get(message_id), gateway_exists=change.gateway_id in self.gateway_ids)
        if isinstance(change, ParkedReceipt):
            row = change.parked
            return Facts(message=self.messages[self.by_key[(row["sms_gateway_id"], row["external_message_id"])]])
        if isinstance(change, SendOutcome):
            key = change.key
            return Facts(message=self.messages.get(change.message_id),
                         holder=self.by_key.get(key) if key else None,
                         waiting=tuple(self.waiting.get(key, ())) if key else ())
        if isinstance(change, Interruption):
            return Facts(message=self.messages.get(change.message_id))
        return Facts(parked=self.parked.get(change.parked_id))

    def apply(self, change: Change, now: str, unmatched_ttl: float) -> str:
        plan = changes.plan(change, self.facts(change), now, unmatched_ttl)
        if plan.message is not None:
            self._set_message(plan.message)
        if plan.event is not None:
            self.events.append(plan.event)
        if plan.park is not None:
            row = dict(plan.park)
            self.new_parked.append(row)
            self.waiting[(row["sms_gateway_id"], row["external_message_id"])].append(row)
        if plan.resolve is not None:
            self._resolve(change, plan.resolve)
        for next_change in plan.later:
            self.apply(next_change, now, unmatched_ttl)
        return plan.outcome

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

    def writes(self) -> list[Write]:
        """One statement per kind of row, each with every row of the batch."""
        writes = []
        if self.changed:
            writes.append(Write(UPDATE_MESSAGE, [
                {"_id": message_id, **{name: row[name] for name in changes.MUTABLE}}
                for message_id, row in self.changed.items()]))
        if self.events:
            writes.append(Write(INSERT_EVENT, self.events))
        if self.new_parked:
            writes.append(Write(INSERT_PARKED, self.new_parked))
        if self.resolved:
            writes.append(Write(UPDATE_PARKED, [
                {"_id": parked_id, **{name: row[name] for name in RESOLVED}}
                for parked_id, row in self.resolved.items()]))
        return writes
