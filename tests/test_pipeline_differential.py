"""The state-change pipeline, differentially: one change at a time ≡ batches on SQLite ≡ batches on PostgreSQL.

Random sequences of changes — duplicates, out-of-order levels, conflicting
finals, unknown ids and gateways, receipts parked then matched by a later send,
an id given to two messages, late and overlong send answers, nested and hostile
payloads with the gateway's secret in them — are applied

(a) one at a time through ``api.changes.plan`` on a tiny in-memory model that
    finds every fact by a plain scan (so it shares nothing with
    ``api.batches.View`` but the rule itself), and
(b, c) in random batch sizes through ``api.pipeline``'s drivers on SQLite and
    on PostgreSQL,

and must leave the same outcomes, messages, events and parked rows, timestamps
aside: the batch flow is only a faster way of doing exactly what the plan says.

Times stay out of the result: ``unmatched_ttl`` is either +1 h (parked rows wait
through the whole example) or -1 h (they are expired as soon as they are
parked), and every receipt carries a fixed ``received_at`` in 2001, so a
timestamp compares as itself when it is one of those and as "set" otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from api import changes, clock, db
from api.changes import Change, Facts, Interruption, ParkedExpiry, ParkedReceipt, Receipt, SendOutcome
from api.providers.base import Outcome
from api.receipts import ID_FIELDS, SECRET_FIELDS, STATUS_FIELDS, parse_receipt
from api.pipeline import open_batches
from api.tables import events, gateways, messages, unmatched_receipts
from tests.servers import drop_postgres_database, postgres_database_or_skip, run_smsgw

GATEWAYS = (1, 2)     # inserted once per database
MISSING_GATEWAY = 77  # never inserted: its receipts are ignored
POOL = ("m1", "m2", "m3", "m4", "m5")  # external ids: receipts and sends collide on purpose
LONG_ID = "L" * 300   # longer than sms_messages.external_message_id keeps
STATUSES = ("ESME_ROK", "DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "ACCEPTD", "ENROUTE", "esme_rthrottled",
            "ESME_RINVDSTADR", "wibble", "submitted", "queued")
SECRET = "sekrit-callback-token-5f0c2e9a"
SECRET_NAMES = ("token", "callback_token", "X-Callback-Token", "TOKEN")
TTLS = (3600.0, -3600.0)
RECEIVED_BASE = datetime(2001, 1, 1, tzinfo=timezone.utc)
SET = "<set at commit time>"  # what a timestamp taken from the clock compares as


# --- the scenario --------------------------------------------------------------------


@dataclass(frozen=True)
class ExpireKth:
    """Housekeeping's ``ParkedExpiry`` of the k-th parked row (in id order). Which row that is,
    and whether it exists yet, is known only when the batch is run (see ``resolve``)."""

    k: int


@dataclass(frozen=True)
class Scenario:
    senders: tuple[int, ...]           # message i+1 belongs to gateway senders[i]
    ttl: float
    changes: tuple[Change | ExpireKth, ...]
    batch_sizes: tuple[int, ...]       # sums to len(changes)


HOSTILE_TEXT = ("x" * 5000, "ü€😀\u202e" * 700, "nul\x00and\ud800surrogate", " ", "",
                "'; DROP TABLE sms_messages; --", "null", "{\"nested\": \"json in text\"}")
def nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=12) | st.sampled_from(HOSTILE_TEXT),
    nested, max_leaves=10,
)
RESERVED = set(ID_FIELDS) | set(STATUS_FIELDS)
extra_fields = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in RESERVED and k.lower() not in SECRET_FIELDS),
    json_values, max_size=4)


def received_stamp(serial: int) -> str:
    return clock.iso(RECEIVED_BASE + timedelta(seconds=serial))


@st.composite
def receipts(draw, serial: int, keys: list[tuple[int, str]]) -> Receipt:
    """A receipt as the route makes one: the gateway's fields through ``parse_receipt``, then stamped.
    Mostly for a key some message is (or will be) given, so that it matches or is parked then matched."""
    if draw(st.integers(0, 3)):
        gateway_id, external_id = draw(st.sampled_from(keys))
    else:
        gateway_id, external_id = draw(st.sampled_from((*GATEWAYS, MISSING_GATEWAY))), draw(st.sampled_from(POOL))
    fields = dict(draw(extra_fields))
    fields[draw(st.sampled_from(ID_FIELDS))] = draw(st.sampled_from(("", " "))) + external_id
    status_field = draw(st.sampled_from((*STATUS_FIELDS, None)))
    if status_field is not None:  # none: the contract's default, "delivered"
        fields[status_field] = draw(st.sampled_from(STATUSES))
    for name in draw(st.sets(st.sampled_from(SECRET_NAMES), max_size=2)):
        fields[name] = SECRET
    receipt = dataclasses.replace(
        parse_receipt(fields),
        gateway_id=gateway_id,
        source_address=draw(st.sampled_from(("10.0.0.7", "2001:db8::7"))),
        received_at=received_stamp(serial))
    assert receipt.external_id is not None  # the route ignores id-less receipts before the pipeline
    return receipt


@st.composite
def send_outcomes(draw, senders: tuple[int, ...], ids: tuple[str, ...]) -> SendOutcome:
    """A gateway's answer to one of the messages; accepted, it names an id from ``ids`` (two
    messages of a gateway may be given the same one, and a late second answer another one)."""
    message_id = draw(st.integers(1, len(senders)))
    gateway_id = senders[message_id - 1]
    kind = draw(st.sampled_from(("ok", "ok", "long id", "failed")))
    if kind == "ok":
        external_id = draw(st.sampled_from(ids))
        return SendOutcome(message_id, gateway_id, Outcome(True, external_id, {"data": f'Success "{external_id}"'}))
    if kind == "long id":
        return SendOutcome(message_id, gateway_id, Outcome(True, LONG_ID, {"data": f'Success "{LONG_ID}"'}))
    return SendOutcome(message_id, gateway_id, Outcome(
        False, None, remote_response=draw(st.sampled_from((None, {"error": "No route", "code": 412}))),
        failure_reason=draw(st.sampled_from((None, "HTTP 412 from the gateway"))),
        failure_code=draw(st.sampled_from(("http_412", "timeout")))))


@st.composite
def scenarios(draw) -> Scenario:
    senders = tuple(draw(st.lists(st.sampled_from(GATEWAYS), min_size=3, max_size=4)))
    ids = tuple(draw(st.sampled_from(POOL[:2])) for _ in senders)  # what the gateway will call each message
    drawn: list[Change | ExpireKth] = []
    for serial in range(draw(st.integers(1, 40))):
        if drawn and draw(st.integers(0, 3)) == 0:
            drawn.append(draw(st.sampled_from(drawn)))  # a duplicate (the same receipt twice, a retried send...)
            continue
        kind = draw(st.sampled_from(("receipt",) * 5 + ("send",) * 2 + ("interruption", "expiry")))
        if kind == "receipt":
            drawn.append(draw(receipts(serial, list(zip(senders, ids)))))
        elif kind == "send":
            drawn.append(draw(send_outcomes(senders, ids)))
        elif kind == "interruption":
            drawn.append(Interruption(draw(st.integers(1, len(senders) + 1))))  # +1: no such message
        else:
            drawn.append(ExpireKth(draw(st.integers(0, 3))))
    sizes, left = [], len(drawn)
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    return Scenario(senders, draw(st.sampled_from(TTLS)), tuple(drawn), tuple(sizes))


def new_messages(senders: tuple[int, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each message as first stored (``queued``) and its first event, as ``api.sending`` makes them."""
    return [changes.new_message({"sms_gateway_id": gateway_id, "to_number": f"+49151000000{i}", "from_sender": "ACME",
                                 "message": f"hello {i}", "callback_url": "https://client.example/cb"},
                                {"default_validity_seconds": None}, clock.now_iso(), claimed=True)
            for i, gateway_id in enumerate(senders, start=1)]


def resolve(change: Change | ExpireKth, parked_ids: list[int]) -> Change | None:
    """A change as submitted: the k-th parked row's expiry only once that row is committed, else nothing."""
    if not isinstance(change, ExpireKth):
        return change
    return ParkedExpiry(parked_ids[change.k]) if change.k < len(parked_ids) else None


# --- (a) the reference: one change at a time, facts by plain scans ----------------------


class Model:
    """The three tables as lists and dicts, and each change planned and applied on its own."""

    def __init__(self, senders: tuple[int, ...]):
        self.messages: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.parked: list[dict[str, Any]] = []
        blank = {column.name: None for column in messages.c}
        for message_id, (row, event) in enumerate(new_messages(senders), start=1):
            self.messages[message_id] = {**blank, **row, "id": message_id}
            self.events.append({**event, "message_id": message_id})

    def holding(self, key) -> dict[str, Any] | None:
        found = [m for m in self.messages.values() if (m["sms_gateway_id"], m["external_message_id"]) == key]
        assert len(found) <= 1, f"two messages hold {key}"
        return dict(found[0]) if found else None

    def parked_row(self, parked_id: int) -> dict[str, Any] | None:
        return next((row for row in self.parked if row["id"] == parked_id), None)

    def facts(self, change: Change) -> Facts:
        if isinstance(change, Receipt):
            return Facts(message=self.holding(change.key), gateway_exists=change.gateway_id in GATEWAYS)
        if isinstance(change, ParkedReceipt):
            return Facts(message=self.holding((change.parked["sms_gateway_id"], change.parked["external_message_id"])))
        if isinstance(change, SendOutcome):
            message = self.messages.get(change.message_id)
            if change.key is None:
                return Facts(message=dict(message))
            holder = self.holding(change.key)
            waiting = tuple(dict(row) for row in self.parked if row["status"] == changes.PENDING
                            and (row["sms_gateway_id"], row["external_message_id"]) == change.key)
            return Facts(message=dict(message), holder=holder and holder["id"], waiting=waiting)
        if isinstance(change, Interruption):
            message = self.messages.get(change.message_id)
            return Facts(message=message and dict(message))
        row = self.parked_row(change.parked_id)
        return Facts(parked=row and dict(row))

    def apply(self, change: Change, now: str, ttl: float) -> str:
        plan = changes.plan(change, self.facts(change), now, ttl)
        if plan.message is not None:
            self.messages[plan.message["id"]] = dict(plan.message)
        if plan.event is not None:
            self.events.append(dict(plan.event))
        if plan.park is not None:
            self.parked.append({**plan.park, "id": len(self.parked) + 1})
        if plan.resolve is not None:
            parked_id = change.parked["id"] if isinstance(change, ParkedReceipt) else change.parked_id
            self.parked_row(parked_id).update(plan.resolve)
        for triggered in plan.later:
            self.apply(triggered, now, ttl)
        return plan.outcome

    def tables(self) -> "Tables":
        return Tables(list(self.messages.values()), self.events, self.parked)


# --- (b, c) the databases ---------------------------------------------------------------


@dataclass
class Tables:
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]
    parked: list[dict[str, Any]]


class Target:
    """A migrated database with its two gateways, the pipeline's drivers (one per ttl),
    and a connection of the test's own to reset, fill and read the tables."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = db.dialect_of(url)
        self.engine = create_async_engine(db.connect_url(url))
        self.drivers = {ttl: open_batches(url, ttl) for ttl in TTLS}

    async def add_gateways(self) -> None:
        now = clock.now_iso()
        async with self.engine.begin() as connection:
            await connection.execute(gateways.insert(), [
                {"id": gateway_id, "name": f"gateway {gateway_id}", "provider_type": "jasmin", "server_host": "h",
                 "server_port": 1, "api_path": "p", "callback_token": f"t{gateway_id}", "is_active": True,
                 "use_ssl": False, "created_at": now, "updated_at": now}
                for gateway_id in GATEWAYS])

    async def reset(self, senders: tuple[int, ...]) -> None:
        """Empty tables (ids start at 1 again), then the example's messages, ``queued``."""
        if self.dialect == "sqlite":  # no AUTOINCREMENT on these tables: rowids restart at 1
            wipe = ["DELETE FROM sms_message_events", "DELETE FROM unmatched_receipts", "DELETE FROM sms_messages"]
        else:
            wipe = ["TRUNCATE sms_message_events, unmatched_receipts, sms_messages RESTART IDENTITY CASCADE"]
        async with self.engine.begin() as connection:
            for statement in wipe:
                await connection.execute(sa.text(statement))
            for expected_id, (row, event) in enumerate(new_messages(senders), start=1):
                message_id = (await connection.execute(messages.insert().values(row).returning(messages.c.id))).scalar()
                assert message_id == expected_id
                await connection.execute(events.insert().values({**event, "message_id": message_id}))

    async def parked_ids(self) -> list[int]:
        async with self.engine.connect() as connection:
            result = await connection.execute(sa.select(unmatched_receipts.c.id).order_by(unmatched_receipts.c.id))
            return list(result.scalars())

    async def run(self, scenario: Scenario) -> tuple[list[Change], list[str]]:
        """Commit the scenario batch by batch; the changes actually submitted, and their outcomes."""
        await self.reset(scenario.senders)
        driver, submitted, outcomes, start = self.drivers[scenario.ttl], [], [], 0
        for size in scenario.batch_sizes:
            chunk, start = scenario.changes[start:start + size], start + size
            parked_ids = await self.parked_ids()  # what housekeeping could see: rows committed before the batch
            batch = [c for c in (resolve(change, parked_ids) for change in chunk) if c is not None]
            if batch:
                answers = await driver.commit(batch)
                assert len(answers) == len(batch)
                submitted += batch
                outcomes += answers
        return submitted, outcomes

    async def tables(self) -> Tables:
        async with self.engine.connect() as connection:
            def rows(table):
                return connection.execute(sa.select(table).order_by(table.c.id))
            return Tables(*[[dict(row) for row in (await rows(table)).mappings()]
                            for table in (messages, events, unmatched_receipts)])

    async def close(self) -> None:
        for driver in self.drivers.values():
            await driver.close()
        await self.engine.dispose()


def when(stamp: str | None) -> str | None:
    """A timestamp as compared: a receipt's fixed ``received_at`` as itself, the clock's as "set"."""
    if stamp is None or stamp.startswith("2001-"):
        return stamp
    return SET


def comparable(tables: Tables) -> dict[str, list]:
    """The tables without what depends on when they were written (created_at, updated_at; clock times as "set")."""
    stamps = ("submitted_at", "delivered_at", "failed_at", "claimed_at", "next_attempt_at", "canceled_at")
    return {
        "messages": [{name: when(value) if name in stamps else value for name, value in row.items()
                      if name not in ("created_at", "updated_at")} for row in tables.messages],
        "events": [(row["message_id"], row["kind"], row["raw_status"], row["state_before"], row["state_after"],
                    bool(row["changed"]), row["reason"], row["payload"], row["source_address"],
                    when(row["received_at"])) for row in tables.events],
        "parked": [(row["id"], row["sms_gateway_id"], row["external_message_id"], row["raw_status"], row["payload"],
                    row["source_address"], row["status"], row["message_id"], when(row["received_at"]),
                    when(row["resolved_at"])) for row in tables.parked],
    }


def assert_no_secret(tables: Tables) -> None:
    stored = [m["remote_response"] for m in tables.messages] + [e["payload"] for e in tables.events] + \
             [p["payload"] for p in tables.parked]
    assert SECRET not in json.dumps(stored, ensure_ascii=False)


def check(target: Target, scenario: Scenario, loop: asyncio.AbstractEventLoop) -> list[Change]:
    """Run the scenario on ``target``, then the same submitted sequence on the model: the same everything."""
    submitted, outcomes = loop.run_until_complete(target.run(scenario))
    stored = loop.run_until_complete(target.tables())
    model, now = Model(scenario.senders), clock.now_iso()
    assert outcomes == [model.apply(change, now, scenario.ttl) for change in submitted]
    assert comparable(stored) == comparable(model.tables())
    assert_no_secret(stored)
    return submitted


# --- fixtures and the tests ----------------------------------------------------------------


@pytest.fixture(scope="module")
def loop():
    """One event loop for the module: the drivers' connections live on it between examples."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def open_target(url: str, loop: asyncio.AbstractEventLoop) -> Target:
    run_smsgw({"SMSGW_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, "migrate")
    target = Target(url)
    loop.run_until_complete(target.add_gateways())
    return target


@pytest.fixture(scope="module")
def sqlite_target(tmp_path_factory, loop):
    target = open_target(f"sqlite:///{tmp_path_factory.mktemp('differential') / 'smsgw.db'}", loop)
    yield target
    loop.run_until_complete(target.close())


@pytest.fixture(scope="module")
def postgres_target(loop):
    url = postgres_database_or_skip()
    try:
        target = open_target(url, loop)
        yield target
        loop.run_until_complete(target.close())
    finally:
        drop_postgres_database(url)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=60, **SETTINGS)
@given(scenarios())
def test_batches_on_sqlite_leave_what_one_change_at_a_time_leaves(sqlite_target, loop, scenario):
    check(sqlite_target, scenario, loop)


@settings(max_examples=40, **SETTINGS)
@given(scenarios())
def test_batches_on_postgresql_leave_what_sqlite_and_one_at_a_time_leave(sqlite_target, postgres_target, loop,
                                                                         scenario):
    on_sqlite = check(sqlite_target, scenario, loop)
    on_postgres = check(postgres_target, scenario, loop)
    assert on_postgres == on_sqlite  # the same batch sizes: the same parked rows seen, the same changes submitted


def test_a_late_answer_with_a_new_id_then_a_receipt_for_the_old_one_in_one_batch(sqlite_target, loop):
    """Message 1 accepted as m1; then, in one batch, a late answer for it naming m2 (the message
    keeps m1) and a receipt for m1: applied to message 1, in the batch as one at a time. (Found by
    the property test when a late answer re-keyed the message and the batch kept the old key.)"""
    receipt = dataclasses.replace(parse_receipt({"message_id": "m1", "status": "ESME_ROK"}), gateway_id=1,
                                  source_address="10.0.0.7", received_at=received_stamp(0))
    check(sqlite_target, Scenario(senders=(1, 1, 1), ttl=3600.0, changes=(
        SendOutcome(1, 1, Outcome(True, "m1", {"data": 'Success "m1"'})),
        SendOutcome(1, 1, Outcome(True, "m2", {"data": 'Success "m2"'})),
        receipt,
    ), batch_sizes=(1, 2)), loop)
