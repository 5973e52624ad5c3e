"""The dispatcher's rules over real sockets: the API process sends to the simulator process.

Each test asserts what a user sees through the API (states, failure codes,
attempts, the history's reasons) and what the gateway saw (the simulator's
accepted messages and stats). The API is the session's (SMSGW_GATEWAY_TIMEOUT=1),
on SQLite and on PostgreSQL; the simulator is one process for the module,
reset between tests, with receipts off.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.dispatching import (
    DEADLINE, events, gateway_messages_count, items, message, new_number, reasons, send_async, send_batch, settled,
    settled_one, simulator_gateway, start_simulator,
)
from tests.servers import free_port, wait_until


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    simulator = start_simulator(tmp_path_factory.mktemp("sim"))
    yield simulator
    simulator.process.stop()


@pytest.fixture
def sim(simulator):
    """The simulator with its knobs reset (receipts off) and its stats zeroed."""
    simulator.reset()
    yield simulator
    simulator.reset()


@pytest.fixture
def gateway(make_gateway, sim):
    """Make a Jasmin REST gateway pointing at the simulator."""
    return lambda **fields: make_gateway(**simulator_gateway(sim, **fields))


def rfc3339_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def with_prefix(texts: list[str], prefix: str) -> list[str]:
    return [text for text in texts if text.startswith(prefix)]


# --- 1. asynchronous sends -------------------------------------------------------------------------


def test_respond_async_is_queued_then_submitted_by_the_dispatcher(client, gateway, sim):
    gw = gateway()
    number = new_number()
    response = send_async(client, gw["id"], to_number=number)
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    queued = response.json()["data"]
    assert queued["state"] == "queued" and queued["external_message_id"] is None

    done = settled_one(client, queued["id"])
    [accepted] = sim.accepted_to(number)
    assert done["state"] == "submitted" and done["attempts"] == 1
    assert done["external_message_id"] == accepted["id"]


def test_without_the_header_the_send_is_still_synchronous(client, gateway, sim):
    gw = gateway()
    number = new_number()
    response = client.post(f"/api/sms-gateways/{gw['id']}/send", json={"to_number": number, "message": "hi"})
    assert response.status_code == 201, response.text
    assert "Preference-Applied" not in response.headers
    data = response.json()["data"]
    [accepted] = sim.accepted_to(number)
    assert data["state"] == "submitted" and data["external_message_id"] == accepted["id"]


# --- 2. batches --------------------------------------------------------------------------------------


def test_a_batch_is_answered_in_order_and_each_message_sent_once(client, gateway, sim):
    gw = gateway()
    batch = items(6)
    response = send_batch(client, gw["id"], batch)
    assert response.status_code == 202, response.text
    body = response.json()
    data, batch_id = body["data"], body["meta"]["batch_id"]
    assert body["meta"]["count"] == 6
    assert [m["to_number"] for m in data] == [item["to_number"] for item in batch]
    assert [m["message"] for m in data] == [item["message"] for item in batch]
    assert all(m["batch_id"] == batch_id and m["state"] in ("queued", "submitted") for m in data)

    done = settled(client, [m["id"] for m in data])
    assert [(m["state"], m["attempts"]) for m in done] == [("submitted", 1)] * 6
    numbers = [item["to_number"] for item in batch]
    assert sim.times_sent(numbers) == {number: 1 for number in numbers}
    by_number = {m["to"]: m["id"] for m in sim.accepted()}
    assert [m["external_message_id"] for m in done] == [by_number[number] for number in numbers]

    shown = client.get(f"/api/sms-batches/{batch_id}")
    assert shown.status_code == 200, shown.text
    counts = shown.json()["data"]
    assert (counts["id"], counts["sms_gateway_id"], counts["size"]) == (batch_id, gw["id"], 6)
    assert counts["counts"] == {"submitted": 6} and counts["final"] == 0
    assert client.get("/api/sms-batches/999999999").status_code == 404


def test_an_invalid_batch_stores_nothing(client, gateway, sim):
    gw = gateway()
    batch = items(3)
    batch[1]["to_number"] = "not a number"
    del batch[2]["message"]
    response = send_batch(client, gw["id"], batch)
    assert response.status_code == 422, response.text
    assert set(response.json()["errors"]) == {"messages.1.to_number", "messages.2.message"}

    too_many = send_batch(client, gw["id"], items(1001))  # SMSGW_MAX_BATCH is 1000
    assert too_many.status_code == 422 and "messages" in too_many.json()["errors"]
    form = client.post(f"/api/sms-gateways/{gw['id']}/messages", data={"messages": "x"})
    assert form.status_code == 422, form.text
    assert gateway_messages_count(client, gw["id"]) == 0


def test_an_idempotency_key_replays_the_batch_and_stores_nothing(client, gateway, sim):
    gw = gateway()
    batch, key = items(3), f"campaign-{uuid.uuid4().hex}"
    first = send_batch(client, gw["id"], batch, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    ids = [m["id"] for m in first.json()["data"]]
    settled(client, ids)

    again = send_batch(client, gw["id"], batch, **{"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [m["id"] for m in again.json()["data"]] == ids
    assert again.json()["meta"]["batch_id"] == first.json()["meta"]["batch_id"]

    other = send_batch(client, gw["id"], items(3), **{"Idempotency-Key": key})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["errors"]
    assert gateway_messages_count(client, gw["id"]) == 3
    numbers = [item["to_number"] for item in batch]
    assert sim.times_sent(numbers) == {number: 1 for number in numbers}


def test_client_reference_is_stored_returned_and_filterable(client, gateway, sim):
    gw = gateway()
    batch = [{**item, "client_reference": f"order-{index}"} for index, item in enumerate(items(3))]
    response = send_batch(client, gw["id"], batch)
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert [m["client_reference"] for m in data] == ["order-0", "order-1", "order-2"]
    single = send_async(client, gw["id"], client_reference="order-1")
    assert single.status_code == 202 and single.json()["data"]["client_reference"] == "order-1"
    assert message(client, data[0]["id"])["client_reference"] == "order-0"

    found = client.get(f"/api/sms-gateways/{gw['id']}/messages", params={"client_reference": "order-1"})
    assert found.status_code == 200, found.text
    assert sorted(m["id"] for m in found.json()["data"]) == sorted([data[1]["id"], single.json()["data"]["id"]])
    in_batch = client.get(f"/api/sms-gateways/{gw['id']}/messages",
                          params={"client_reference": "order-1", "batch_id": response.json()["meta"]["batch_id"]})
    assert [m["id"] for m in in_batch.json()["data"]] == [data[1]["id"]]

    too_long = send_batch(client, gw["id"], [{**items(1)[0], "client_reference": "x" * 65}])
    assert too_long.status_code == 422 and "messages.0.client_reference" in too_long.json()["errors"]
    settled(client, [m["id"] for m in data] + [single.json()["data"]["id"]])


# --- 3. and 4. throughput ---------------------------------------------------------------------------


def test_a_gateways_throughput_limit_slows_the_dispatcher_instead_of_failing(client, gateway, sim):
    sim.configure(throughput=2)  # Jasmin's 403 "User throughput exceeded" past 2 sends/s
    gw = gateway()
    assert gw["throughput_per_second"] is None and gw["max_in_flight"] == 16
    response = send_batch(client, gw["id"], items(8))
    assert response.status_code == 202, response.text
    ids = [m["id"] for m in response.json()["data"]]

    done = settled(client, ids)
    assert [m["state"] for m in done] == ["submitted"] * 8, [m["failure_reason"] for m in done]
    assert all(m["attempts"] == 1 for m in done)  # the throttled tries were not counted
    assert sim.stats()["refused"].get("throughput", 0) > 0
    throttled = [text for message_id in ids for text in reasons(client, message_id)
                 if "a throttle: it does not use up an attempt" in text]
    assert throttled and all("retrying in" in text for text in throttled)
    assert sim.times_sent(m["to_number"] for m in done) == {m["to_number"]: 1 for m in done}


def test_the_dispatcher_paces_a_gateway_at_its_throughput(client, gateway, sim):
    gw = gateway(throughput_per_second=4)
    response = send_batch(client, gw["id"], items(16))
    assert response.status_code == 202, response.text

    done = settled(client, [m["id"] for m in response.json()["data"]])
    assert [m["state"] for m in done] == ["submitted"] * 16
    stats = sim.stats()
    assert stats["accepted"] == 16 and sum(stats["per_second"].values()) == 16
    assert max(stats["per_second"].values()) <= 4 + 1  # the rate, and a burst of max(1, 4/20)


# --- 5. retries --------------------------------------------------------------------------------------


def test_503s_are_retried_with_backoff_until_accepted(client, gateway, sim):
    sim.configure(script=[{"status": 503, "retry_after": 1}, {"status": 503, "retry_after": 1}])
    gw = gateway()
    number = new_number()
    queued = send_async(client, gw["id"], to_number=number).json()["data"]

    done = settled_one(client, queued["id"])
    [accepted] = sim.accepted_to(number)
    assert (done["state"], done["attempts"], done["external_message_id"]) == ("submitted", 3, accepted["id"])
    texts = reasons(client, queued["id"])
    for attempt in (1, 2):
        [retried] = with_prefix(texts, f"attempt {attempt} of 5: ")
        assert "503" in retried and "retrying in" in retried
        assert float(re.search(r"retrying in ([0-9.]+) s", retried).group(1)) >= 1.0  # Retry-After: 1 honoured
    assert with_prefix(texts, "attempt 3: the gateway accepted it as")
    assert sim.stats()["refused"]["scripted"] == 2


def test_a_gateway_nobody_listens_on_fails_unreachable_after_max_attempts(client, make_gateway, sim):
    gw = make_gateway(server_port=free_port(), max_attempts=2)
    queued = send_async(client, gw["id"]).json()["data"]

    done = settled_one(client, queued["id"])
    assert (done["state"], done["failure_code"], done["attempts"]) == ("failed", "unreachable", 2)
    texts = reasons(client, queued["id"])
    [first] = with_prefix(texts, "attempt 1 of 2: ")
    [second] = with_prefix(texts, "attempt 2 of 2: ")
    assert "retrying in" in first and "no attempts left" in second


def test_a_refusal_fails_at_once(client, gateway, sim):
    sim.configure(script=[{"status": 400}])
    gw = gateway()
    number = new_number()
    queued = send_async(client, gw["id"], to_number=number).json()["data"]

    done = settled_one(client, queued["id"])
    assert (done["state"], done["failure_code"], done["attempts"]) == ("failed", "gateway_error", 1)
    [only] = with_prefix(reasons(client, queued["id"]), "attempt 1 of 5: ")
    assert "not retried" in only
    assert sim.accepted_to(number) == [] and sim.stats()["refused"]["scripted"] == 1


def test_a_timeout_is_ambiguous_and_never_resent(client, gateway, sim):
    sim.configure(script=[{"delay": 3}])  # answers after the API's gateway timeout of 1 s
    gw = gateway()
    number = new_number()
    queued = send_async(client, gw["id"], to_number=number).json()["data"]

    done = settled_one(client, queued["id"])
    assert (done["state"], done["failure_code"], done["attempts"]) == ("failed", "timeout", 1)
    [only] = with_prefix(reasons(client, queued["id"]), "attempt 1 of 5: ")
    assert "ambiguous (timeout): not retried" in only
    # the gateway took it after all: the SMS went out once, and only once
    wait_until(lambda: sim.accepted_to(number), timeout=DEADLINE, what="the slow send to be accepted")
    assert len(sim.accepted_to(number)) == 1
    assert message(client, queued["id"])["state"] == "failed"


def test_retry_ambiguous_resends_a_timeout(client, gateway, sim):
    sim.configure(script=[{"delay": 3}])
    gw = gateway(retry_ambiguous=True)
    number = new_number()
    queued = send_async(client, gw["id"], to_number=number).json()["data"]

    done = settled_one(client, queued["id"])
    assert (done["state"], done["attempts"]) == ("submitted", 2)
    [first] = with_prefix(reasons(client, queued["id"]), "attempt 1 of 5: ")
    assert "ambiguous, retried as the gateway allows" in first and "retrying in" in first
    # what the flag means: the gateway got the SMS twice
    wait_until(lambda: len(sim.accepted_to(number)) == 2, timeout=DEADLINE, what="both sends to be accepted")
    assert done["external_message_id"] in {m["id"] for m in sim.accepted_to(number)}


def test_a_dropped_connection_is_ambiguous(client, gateway, sim):
    sim.configure(script=[{"drop": True}])
    gw = gateway()
    number = new_number()
    queued = send_async(client, gw["id"], to_number=number).json()["data"]

    done = settled_one(client, queued["id"])
    assert (done["state"], done["failure_code"], done["attempts"]) == ("failed", "unreachable", 1)
    [only] = with_prefix(reasons(client, queued["id"]), "attempt 1 of 5: ")
    assert "ambiguous (unreachable): not retried" in only
    assert sim.stats()["refused"]["dropped"] == 1 and sim.accepted_to(number) == []


# --- 6. validity -------------------------------------------------------------------------------------


def test_a_message_not_handed_over_within_its_validity_expires_unsent(client, gateway, sim):
    gw = gateway(throughput_per_second=0.05)  # one send every 20 s
    batch = items(2, validity_period=2)
    response = send_batch(client, gw["id"], batch)
    assert response.status_code == 202, response.text
    ids = [m["id"] for m in response.json()["data"]]

    first, second = settled(client, ids, timeout=90)
    assert first["state"] == "submitted"
    assert (second["state"], second["failure_code"], second["attempts"]) == ("failed", "expired", 0)
    assert any("never sent" in text for text in reasons(client, second["id"]))
    numbers = [item["to_number"] for item in batch]
    assert sim.times_sent(numbers) == {numbers[0]: 1}
    [accepted] = sim.accepted_to(numbers[0])
    assert accepted["validity-period"] == 1  # minutes, rounded up


def test_validity_reaches_jasmin_in_minutes_and_defaults_from_the_gateway(client, gateway, sim):
    gw = gateway(default_validity_seconds=1200)
    own, default, none = items(3)
    own["validity_period"] = 600
    none["validity_period"] = None
    response = send_batch(client, gw["id"], [own, default, none])
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert [m["validity_period"] for m in data] == [600, 1200, None]
    assert [m["expires_at"] is None for m in data] == [False, False, True]

    done = settled(client, [m["id"] for m in data])
    assert [m["state"] for m in done] == ["submitted"] * 3
    sent = {m["to"]: m["validity-period"] for m in sim.accepted()}
    assert [sent[item["to_number"]] for item in (own, default, none)] == [10, 20, None]


# --- 7. schedules and cancel ------------------------------------------------------------------------


def test_a_scheduled_message_is_sent_at_its_time_and_not_before(client, gateway, sim):
    gw = gateway()
    number = new_number()
    response = client.post(f"/api/sms-gateways/{gw['id']}/send",
                           json={"to_number": number, "message": "later", "send_at": rfc3339_in(3)})
    assert response.status_code == 202, response.text
    scheduled = response.json()["data"]
    assert scheduled["state"] == "scheduled"

    done = settled_one(client, scheduled["id"])
    assert done["state"] == "submitted" and done["submitted_at"] >= done["send_at"] == scheduled["send_at"]
    assert any("its send_at has come" in text for text in reasons(client, scheduled["id"]))
    assert len(sim.accepted_to(number)) == 1


def test_a_canceled_message_is_never_sent(client, gateway, sim):
    gw = gateway()
    later = send_async(client, gw["id"], send_at=rfc3339_in(3600)).json()["data"]
    canceled = client.post(f"/api/sms-messages/{later['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["state"] == "canceled" and canceled.json()["data"]["canceled_at"]
    assert client.post(f"/api/sms-messages/{later['id']}/cancel").status_code == 409

    # two due in 3 s: one canceled; once the other is sent, the canceled one was passed over
    batch = items(2, send_at=rfc3339_in(3))
    ids = [m["id"] for m in send_batch(client, gw["id"], batch).json()["data"]]
    assert client.post(f"/api/sms-messages/{ids[0]}/cancel").status_code == 200
    kept = settled_one(client, ids[1])
    assert kept["state"] == "submitted"
    assert message(client, ids[0])["state"] == "canceled"
    assert sim.times_sent([item["to_number"] for item in batch]) == {batch[1]["to_number"]: 1}
    assert [e["state_after"] for e in events(client, ids[0])] == ["scheduled", "canceled"]


def test_cancel_answers_409_once_sent_and_404_when_unknown(client, gateway, sim):
    gw = gateway()
    sent = client.post(f"/api/sms-gateways/{gw['id']}/send", json={"to_number": new_number(), "message": "hi"})
    assert sent.status_code == 201, sent.text
    refused = client.post(f"/api/sms-messages/{sent.json()['data']['id']}/cancel")
    assert refused.status_code == 409, refused.text
    assert message(client, sent.json()["data"]["id"])["state"] == "submitted"
    assert client.post("/api/sms-messages/999999999/cancel").status_code == 404


@pytest.mark.parametrize("send_at", ["tomorrow", "2026-11-27T18:00:00", "0001-01-01T00:00:00+01:00",
                                     "9999-12-31T23:59:59-01:00", "2001-01-01T00:00:00Z", "2099-01-01T00:00:00Z"])
def test_a_send_at_without_a_date_time_and_offset_or_far_off_is_refused(client, gateway, sim, send_at):
    gw = gateway()
    response = send_async(client, gw["id"], send_at=send_at)
    assert response.status_code == 422 and "send_at" in response.json()["errors"]
    in_batch = send_batch(client, gw["id"], items(1, send_at=send_at))
    assert in_batch.status_code == 422 and "messages.0.send_at" in in_batch.json()["errors"]
    assert gateway_messages_count(client, gw["id"]) == 0


# --- 8. an inactive gateway -------------------------------------------------------------------------


def test_an_inactive_gateways_queued_messages_wait_until_it_is_active(client, gateway, sim):
    gw = gateway(throughput_per_second=0.2)  # the second message waits 5 s for its token
    batch = items(2)
    ids = [m["id"] for m in send_batch(client, gw["id"], batch).json()["data"]]
    first = settled_one(client, ids[0])
    assert first["state"] == "submitted"
    paused = client.patch(f"/api/sms-gateways/{gw['id']}", json={"is_active": False})
    assert paused.status_code == 200, paused.text

    # A witness on another gateway, due well after the first gateway's next token:
    # once it is sent, the dispatcher has passed the waiting message over.
    witness_gw = gateway()
    witness = send_async(client, witness_gw["id"], send_at=rfc3339_in(7)).json()["data"]
    assert settled_one(client, witness["id"])["state"] == "submitted"
    assert message(client, ids[1])["state"] == "queued"
    assert sim.accepted_to(batch[1]["to_number"]) == []

    resumed = client.patch(f"/api/sms-gateways/{gw['id']}", json={"is_active": True})
    assert resumed.status_code == 200, resumed.text
    second = settled_one(client, ids[1])
    assert second["state"] == "submitted" and second["submitted_at"] >= resumed.json()["data"]["updated_at"]
    assert sim.times_sent(batch_item["to_number"] for batch_item in batch) == {
        batch_item["to_number"]: 1 for batch_item in batch}
