"""Dispatching changes sharing one pipeline batch, on a real SQLite file: what one change
reads must serve the others (the batch's view of its rows), and smsgw's own callback URL
goes out with the gateway's current token."""

from __future__ import annotations

import asyncio

import pytest

from api import changes, db, secrets, states
from api.gateways import insert_gateway
from api.pipeline import SqliteBatches
from api.sending import current_callback_url, default_callback_url
from tests.test_schema import migrate

PUBLIC = "https://sms.example"


def fields(n: int, **values) -> dict:
    return {"to_number": f"+1415555{n:04d}", "from_sender": "ACME", "message": f"hello {n}",
            "callback_url": "https://app.example/cb", "encoding": "gsm7", "segments": 1, **values}


@pytest.fixture
def batches(tmp_path):
    url = f"sqlite:///{tmp_path / 'smsgw.db'}"
    migrate(url, "head")

    async def gateway():
        database = db.make_database(url)
        await database.connect()
        try:
            return await insert_gateway(database, {"name": "g", "server_host": "127.0.0.1", "server_port": 9,
                                                   "default_sender_id": "ACME"}, keyring=secrets.Keyring())
        finally:
            await database.disconnect()

    row = asyncio.run(gateway())
    driver = SqliteBatches(url, 3600)
    yield driver, row
    asyncio.run(driver.close())


def test_a_claim_and_a_cancel_in_one_batch_each_see_the_other(batches):
    driver, gateway = batches

    async def run():
        stored = (await driver.commit([changes.NewMessages(gateway["id"], (fields(1), fields(2)))]))[0]
        first, second = stored.message_ids
        # the cancel reads its message by id first; the claim then finds it due, with what it needs to send it
        canceled, claimed = await driver.commit([changes.Cancel(second), changes.Claim(gateway["id"], 10)])
        return first, second, claimed, canceled

    first, second, claimed, canceled = asyncio.run(run())
    assert canceled == states.CANCELED
    assert [m["id"] for m in claimed.messages] == [first]
    assert claimed.messages[0]["to_number"] == "+14155550001" and claimed.messages[0]["message"] == "hello 1"

    async def claim_first():
        stored = (await driver.commit([changes.NewMessages(gateway["id"], (fields(3),))]))[0]
        [message_id] = stored.message_ids
        return message_id, await driver.commit([changes.Claim(gateway["id"], 10), changes.Cancel(message_id)])

    message_id, (claimed, canceled) = asyncio.run(claim_first())
    assert [m["id"] for m in claimed.messages] == [message_id] and canceled == "not_cancelable"
    assert claimed.messages[0]["to_number"] == "+14155550003"  # the row the cancel read has the claim's columns


def test_smsgw_s_own_callback_url_is_sent_with_the_current_token_and_an_app_s_as_given():
    gateway = {"id": 7, "provider_type": "jasmin", "callback_token": "new-token-" + "x" * 30}
    stored = default_callback_url(PUBLIC, {**gateway, "callback_token": "old-token-" + "y" * 30})
    assert current_callback_url(stored, gateway, PUBLIC) == f"{PUBLIC}/webhooks/jasmin/7/dlr?token={gateway['callback_token']}"
    app = "https://app.example/receipts?token=the-app-s-own"
    assert current_callback_url(app, gateway, PUBLIC) == app
    other_gateway = f"{PUBLIC}/webhooks/jasmin/8/dlr?token=old"
    assert current_callback_url(other_gateway, gateway, PUBLIC) == other_gateway


def test_sends_woken_late_together_still_start_one_interval_apart():
    """A busy event loop may wake several sends whose moments have passed at once: on a
    paced gateway they start 1/rate apart, in claim order, so the rate holds when sending."""
    import time

    from api.config import Settings
    from api.dispatcher import Dispatcher

    dispatcher = Dispatcher(None, None, None, Settings())
    gateway = {"id": 1, "throughput_per_second": 20.0}
    starts: list[tuple[int, float]] = []

    async def send(n: int, at: float):
        await dispatcher._wait_turn(gateway, at)
        starts.append((n, time.monotonic()))

    async def run():
        past = time.monotonic() - 1.0  # every moment already gone
        await asyncio.gather(*(send(n, past) for n in range(5)))

    asyncio.run(run())
    assert [n for n, _ in starts] == [0, 1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in zip(starts, starts[1:])]
    assert all(gap >= 1 / 20.0 - 0.002 for gap in gaps), gaps  # never closer (a slow machine only widens them)
    unpaced = {"id": 2, "throughput_per_second": None}
    began = time.monotonic()
    asyncio.run(dispatcher._wait_turn(unpaced, began - 1.0))
    assert time.monotonic() - began < 1.0  # no limit: nothing to wait for
