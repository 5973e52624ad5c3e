"""The dispatcher and the end of its process: kill -9 mid-dispatch, and a graceful stop.

A message is claimed (its attempt counted) *before* its gateway is called, so the
database alone says, after a crash, which calls may have reached the gateway: the
claimed ones. Those end ``failed`` / ``interrupted`` and are never sent again (the
gateway may have sent them, and a resend could deliver the SMS twice); every message
that was only waiting is sent after the restart. A SIGTERM instead lets the calls
under way finish and records their answers before the process exits.

Real processes throughout: ``smsgw api`` (restarted on the same database) and
``smsgw simulator`` with slow scripted replies, so calls are in flight at the kill.
What the database held at the kill is read from it directly: the process is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    SMSGW, Api, Process, drop_postgres_database, free_port, healthy, postgres_database_or_skip, start, start_api,
    wait_until,
)

ADMIN = "dispatch-crash-admin-key-" + "x" * 32
SIMULATOR_AUTH = ("crash-sim-user", "crash-sim-pass")
# Slow enough that calls are in flight for a while, well inside SMSGW_GATEWAY_TIMEOUT
# (2 s) so no call times out on a busy machine.
SLOW_REPLY = {"delay": 1.0}
API_SETTINGS = {"SMSGW_ADMIN_KEY": ADMIN, "SMSGW_HOUSEKEEPING_INTERVAL": "0.2", "SMSGW_QUEUED_GRACE": "1",
                "SMSGW_GATEWAY_TIMEOUT": "2", "SMSGW_DISPATCH_INTERVAL": "0.2"}


# --- helpers the replica tests use too ------------------------------------------------


def start_simulator(workdir: Path) -> tuple[str, Process]:
    """``smsgw simulator`` on a free port, receipts off (these tests are about sending)."""
    port = free_port()
    env = {**os.environ, "SMSGW_SIMULATOR_PORT": str(port), "SMSGW_SIMULATOR_USERNAME": SIMULATOR_AUTH[0],
           "SMSGW_SIMULATOR_PASSWORD": SIMULATOR_AUTH[1]}
    process = start(env, [*SMSGW, "simulator"], workdir / "simulator.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url + "/_simulator/config"), what="the simulator")
    reset_simulator(url)
    return url, process


def reset_simulator(url: str, **knobs) -> None:
    """Knobs back to a plain, fast gateway without receipts (plus ``knobs``), counts to zero."""
    answer = httpx.post(url + "/_simulator/config", json={
        "throw": False, "error": None, "throughput": None, "script": [], **knobs})
    assert answer.status_code == 200, answer.text
    httpx.post(url + "/_simulator/stats/reset").raise_for_status()


def simulator_stats(url: str) -> dict:
    return httpx.get(url + "/_simulator/stats").json()


def simulator_messages(url: str) -> list[dict]:
    return httpx.get(url + "/_simulator/messages").json()["data"]


def digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def admin(api: Api) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def simulator_gateway(client: httpx.Client, simulator: str, **fields) -> dict:
    response = client.post("/api/sms-gateways", json={
        "name": f"simulator {free_port()}", "server_host": "127.0.0.1", "server_port": int(simulator.rsplit(":", 1)[1]),
        "username": SIMULATOR_AUTH[0], "password": SIMULATOR_AUTH[1], "default_sender_id": "CRASH", **fields})
    assert response.status_code == 201, response.text
    return response.json()["data"]


_first_numbers = itertools.count(1000, 100)


def numbers(count: int) -> list[str]:
    """Numbers no other message of this run has (the simulator lists what it accepted across
    tests), so what the simulator received says which message it was."""
    first = next(_first_numbers)
    return [f"+1415555{first + n:04d}" for n in range(count)]


def send_batch(client: httpx.Client, gateway_id: int, to_numbers: list[str]) -> dict:
    response = client.post(f"/api/sms-gateways/{gateway_id}/messages",
                           json={"messages": [{"to_number": to, "message": "m"} for to in to_numbers]})
    assert response.status_code == 202, response.text
    return response.json()


def all_messages(client: httpx.Client, gateway_id: int, **filters) -> list[dict]:
    found, cursor = [], None
    while True:
        params = {"limit": 200, **filters, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/api/sms-gateways/{gateway_id}/messages", params=params).json()
        found += page["data"]
        cursor = page["meta"].get("next_cursor")
        if not cursor:
            return found


def nothing_waiting(client: httpx.Client, gateway_id: int) -> bool:
    """No message queued (which includes claimed) or scheduled."""
    return not any(client.get(f"/api/sms-gateways/{gateway_id}/messages",
                              params={"state": state, "limit": 1}).json()["data"]
                   for state in ("queued", "scheduled"))


def stored(database_url: str, sql: str) -> list[tuple]:
    """Rows straight from the database (SQLite file or PostgreSQL), whatever the API is doing."""
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=10)) as db:
            return db.execute(sql).fetchall()

    async def fetch():
        import asyncpg

        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def dispatch_states(database_url: str, gateway_id: int) -> dict[str, set[int]]:
    """Each message of the gateway by where the dispatcher has it: ``claimed`` (a call may be
    under way), ``waiting`` (due, never claimed), ``done`` (neither)."""
    found: dict[str, set[int]] = {"claimed": set(), "waiting": set(), "done": set()}
    for message_id, claimed_at, next_attempt_at in stored(database_url, (
            "SELECT id, claimed_at, next_attempt_at FROM sms_messages "
            f"WHERE sms_gateway_id = {int(gateway_id)}")):
        kind = "claimed" if claimed_at is not None else "waiting" if next_attempt_at is not None else "done"
        found[kind].add(message_id)
    return found


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    url, process = start_simulator(tmp_path_factory.mktemp("crash-simulator"))
    yield url
    process.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh database for one test: a SQLite file, or a PostgreSQL database of its own
    (under SMSGW_REQUIRE_SERVICES=1 a missing PostgreSQL fails the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'smsgw.db'}"
        return
    url = postgres_database_or_skip()
    yield url
    drop_postgres_database(url)


# --- the tests --------------------------------------------------------------------------


def test_kill_9_mid_dispatch_sends_nothing_twice_and_leaves_nothing_queued(simulator, database_url, tmp_path):
    count = 50
    reset_simulator(simulator, script=[SLOW_REPLY] * (2 * count))
    settings = {**API_SETTINGS, "SMSGW_DATABASE_URL": database_url}
    api = start_api(tmp_path, **settings)
    try:
        client = admin(api)
        # paced, so that at the kill some are answered, some in flight and some not yet claimed
        gateway = simulator_gateway(client, simulator, throughput_per_second=10)
        to_numbers = numbers(count)
        batch = send_batch(client, gateway["id"], to_numbers)
        ids = {m["id"] for m in batch["data"]}

        def mid_dispatch() -> bool:
            found = dispatch_states(database_url, gateway["id"])
            return all(found.values())

        wait_until(mid_dispatch, timeout=60, what="some messages sent, some in flight and some waiting")
        api.process.popen.send_signal(signal.SIGKILL)
        api.process.popen.wait(10)
        client.close()
    finally:
        api.process.stop()

    at_kill = dispatch_states(database_url, gateway["id"])
    assert all(at_kill.values()), at_kill
    assert simulator_stats(simulator)["accepted"] < count

    api = start_api(tmp_path, **settings)
    try:
        client = admin(api)
        wait_until(lambda: nothing_waiting(client, gateway["id"]), timeout=90,
                   what="no message queued or scheduled after the restart")
        final = {m["id"]: m for m in all_messages(client, gateway["id"], batch_id=batch["meta"]["batch_id"])}
        client.close()
    finally:
        api.process.stop()

    assert set(final) == ids
    ours = {digits(to) for to in to_numbers}
    received = Counter(digits(m["to"]) for m in simulator_messages(simulator) if digits(m["to"]) in ours)
    assert max(received.values()) == 1, [to for to, n in received.items() if n > 1]
    assert simulator_stats(simulator)["accepted"] == sum(received.values())
    assert dispatch_states(database_url, gateway["id"]) == {"claimed": set(), "waiting": set(), "done": ids}

    interrupted = {i for i, m in final.items() if m["state"] == "failed"}
    assert interrupted == at_kill["claimed"]  # only a call that may have been under way, and each of them
    for message_id in interrupted:
        message = final[message_id]
        assert (message["failure_code"], message["attempts"]) == ("interrupted", 1), message
    for message_id in at_kill["waiting"] | at_kill["done"]:
        message = final[message_id]
        assert (message["state"], message["attempts"]) == ("submitted", 1), message
        assert received[digits(message["to_number"])] == 1, message  # sent, once
    # An interrupted call may or may not have reached the gateway (the simulator accepts a
    # slow reply's message even after its caller died); either way it was not sent again.
    reached = {i for i in interrupted if received[digits(final[i]["to_number"])]}
    assert sum(received.values()) == count - len(interrupted) + len(reached)


def test_a_graceful_stop_waits_for_the_calls_in_flight_and_records_their_answers(simulator, database_url, tmp_path):
    reset_simulator(simulator, script=[SLOW_REPLY] * 40)
    api = start_api(tmp_path, **API_SETTINGS, SMSGW_DATABASE_URL=database_url)
    try:
        with admin(api) as client:
            gateway = simulator_gateway(client, simulator, throughput_per_second=10)
            send_batch(client, gateway["id"], numbers(20))
        wait_until(lambda: dispatch_states(database_url, gateway["id"])["claimed"], timeout=60,
                   what="calls in flight")
        in_flight = dispatch_states(database_url, gateway["id"])["claimed"]
        api.process.popen.send_signal(signal.SIGTERM)
        # uvicorn (>= 0.29) ends a graceful shutdown by raising the signal it caught again,
        # so the exit status is SIGTERM's, as for any process that honours it
        assert api.process.popen.wait(30) in (0, -signal.SIGTERM), api.log
        assert "Application shutdown complete" in api.log and "Traceback" not in api.log, api.log
    finally:
        api.process.stop()

    after = dispatch_states(database_url, gateway["id"])
    assert after["claimed"] == set()  # nothing left for housekeeping to mark interrupted
    rows = dict(((i, (state, code)) for i, state, code in stored(database_url, (
        f"SELECT id, state, failure_code FROM sms_messages WHERE sms_gateway_id = {int(gateway['id'])}"))))
    assert {i: rows[i] for i in in_flight} == {i: ("submitted", None) for i in in_flight}
    assert all(state in ("submitted", "queued") for state, _ in rows.values()), rows
