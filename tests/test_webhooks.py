"""Status webhooks end to end, on SQLite and PostgreSQL: a real API, a real receiver process
(``smsgw webhook-receiver``), a real gateway stub; every signature checked with the
``standardwebhooks`` package, the independent implementation of the specification.

The API runs with a short retry schedule (``SMSGW_WEBHOOK_RETRY_SCHEDULE=0,1,2,2,2``) and
``SMSGW_WEBHOOK_ALLOW_HTTP`` / ``_PRIVATE``, so the receiver may listen on 127.0.0.1. Each
test's endpoint has a path and a gateway of its own, so tests sharing the API never see
each other's events.
"""

from __future__ import annotations

import itertools
import json
import signal
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.servers import (
    Reply, StubGateway, drop_postgres_database, error_body, free_port, insert_webhook_endpoint,
    postgres_database_or_skip, start_api, start_webhook_receiver, wait_until,
)

ADMIN = "webhooks-admin-key-" + "w" * 32
SCHEDULE = (0, 1, 2, 2, 2)
EVENTS = ("message.queued", "message.submitted", "message.delivered", "message.failed", "message.expired",
          "message.canceled", "message.status_updated")
SEEN_SECRETS: list[str] = []  # every secret a test was shown: none may appear in a log
_names = itertools.count(1)


def api_env(**overrides: str) -> dict[str, str]:
    return {"SMSGW_ADMIN_KEY": ADMIN, "SMSGW_WEBHOOK_ALLOW_HTTP": "1", "SMSGW_WEBHOOK_ALLOW_PRIVATE": "1",
            "SMSGW_WEBHOOK_RETRY_SCHEDULE": ",".join(map(str, SCHEDULE)), "SMSGW_WEBHOOK_TIMEOUT": "3",
            "SMSGW_WEBHOOK_INTERVAL": "0.2", "SMSGW_PUBLIC_URL": "https://sms.example.test", **overrides}


@pytest.fixture(scope="module")
def own_database(database):
    """A database of this module's own (its endpoints must not see other tests' messages)."""
    if "SMSGW_DATABASE_URL" not in database:
        yield {}
        return
    url = postgres_database_or_skip()
    yield {"SMSGW_DATABASE_URL": url}
    drop_postgres_database(url)


@pytest.fixture(scope="module")
def hooked(own_database, tmp_path_factory):
    api = start_api(tmp_path_factory.mktemp("webhooks"), **api_env(**own_database))
    yield api
    api.process.stop()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    running = start_webhook_receiver(tmp_path_factory.mktemp("receiver"))
    yield running
    running.stop()


@pytest.fixture
def admin(hooked):
    with httpx.Client(base_url=hooked.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
        yield c


@pytest.fixture
def gateway_stub():
    stub = StubGateway().start()
    yield stub
    stub.stop()


@pytest.fixture
def gateway(admin, gateway_stub) -> dict:
    response = admin.post("/api/sms-gateways", json={
        "name": f"hooked gateway {next(_names)}", "provider_type": "jasmin", "server_host": "127.0.0.1",
        "server_port": gateway_stub.port, "api_path": "secure/send", "username": "u", "password": "gw-password-x",
        "default_sender_id": "ACME"})
    assert response.status_code == 201, response.text
    return {**response.json()["data"], "stub": gateway_stub}


def subscribe(admin, url: str, gateway: dict, events=EVENTS) -> tuple[dict, str]:
    response = admin.post("/api/webhook-endpoints", json={"url": url, "events": list(events),
                                                          "gateway_ids": [gateway["id"]]})
    assert response.status_code == 201, response.text
    endpoint = response.json()["data"]
    SEEN_SECRETS.append(endpoint["secret"])
    return endpoint, endpoint["secret"]


def path() -> str:
    return f"/hooks/{next(_names)}"


def send(admin, gateway: dict, external_id: str, **fields) -> dict:
    """A synchronous send the stub gateway accepts as ``external_id``: queued, then submitted."""
    gateway["stub"].upcoming.append(Reply(200, json.dumps({"data": f'Success "{external_id}"'}).encode()))
    response = admin.post(f"/api/sms-gateways/{gateway['id']}/send",
                          json={"to_number": "+4915112345678", "message": "hello", **fields})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def receipt(admin, gateway: dict, external_id: str, status: str, level: int = 2) -> None:
    response = admin.post(f"/api/sms-gateways/{gateway['id']}/dlr",
                          data={"id": external_id, "message_status": status, "level": str(level)})
    assert response.status_code == 200, response.text


def verified(event: dict, *secrets: str) -> dict:
    """The event's body, after the ``standardwebhooks`` package verified it with each secret."""
    for secret in secrets:
        body = Webhook(secret).verify(event["raw"], event["headers"])
    return body


def delivered_ids(receiver, where: str) -> set[str]:
    return {e["webhook_id"] for e in receiver.events(where)}


def deliveries(admin, endpoint: dict) -> list[dict]:
    response = admin.get(f"/api/webhook-endpoints/{endpoint['id']}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_every_change_of_a_message_reaches_the_app_signed_numbered_and_without_secrets(admin, receiver, gateway):
    where = path()
    endpoint, secret = subscribe(admin, receiver.url + where, gateway)
    receiver.trust(secret)  # the receiver process checks each signature too, as it arrives
    try:
        message = send(admin, gateway, "ext-a1", client_reference="order-17")
        receipt(admin, gateway, "ext-a1", "ESME_ROK", level=1)
        receipt(admin, gateway, "ext-a1", "DELIVRD")
        wait_until(lambda: len(receiver.events(where)) >= 4, timeout=60, what="four webhooks")
    finally:
        receiver.trust()  # the next tests' endpoints have secrets of their own
    assert all(e["verified"] and e["status"] == 204 for e in receiver.events(where))
    bodies = sorted((verified(e, secret) for e in receiver.events(where)), key=lambda b: b["data"]["sequence"])
    assert [(b["type"], b["data"]["sequence"], b["data"]["state"]) for b in bodies] == [
        ("message.queued", 1, "queued"), ("message.submitted", 2, "submitted"),
        ("message.status_updated", 3, "accepted"), ("message.delivered", 4, "delivered")]
    for body in bodies:
        assert body["data"]["id"] == message["id"] and body["data"]["client_reference"] == "order-17"
        assert body["data"]["to_number"] == "+4915112345678" and body["data"]["message"] == "hello"
        assert body["timestamp"] == body["data"]["updated_at"]
    assert {e["webhook_id"] for e in receiver.events(where)} == {f"msg_{message['id']}_{n}" for n in (1, 2, 3, 4)}
    raw = " ".join(e["raw"] for e in receiver.events(where))
    token = admin.get(f"/api/sms-gateways/{gateway['id']}").json()["data"]["callback_token"]
    for secret_value in (secret, token, "gw-password-x", ADMIN):
        assert secret_value not in raw
    # what the app heard is what the API says now
    assert admin.get(f"/api/sms-messages/{message['id']}").json()["data"]["sequence"] == 4
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in deliveries(admin, endpoint))


def test_an_endpoint_hears_only_the_events_and_gateways_it_chose(admin, receiver, gateway, gateway_stub):
    where = path()
    subscribe(admin, receiver.url + where, gateway, events=["message.delivered"])
    send(admin, gateway, "ext-b1")
    receipt(admin, gateway, "ext-b1", "DELIVRD")
    wait_until(lambda: receiver.events(where), timeout=60, what="the delivered webhook")
    message_id = admin.get(f"/api/sms-gateways/{gateway['id']}/messages").json()["data"][0]["id"]
    # deliveries are made in the change's transaction: the submitted one was never made
    assert [e["webhook_id"] for e in receiver.events(where)] == [f"msg_{message_id}_3"]


def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(admin, gateway, tmp_path):
    port = free_port()
    where = path()
    endpoint, secret = subscribe(admin, f"http://127.0.0.1:{port}{where}", gateway)
    sent = [send(admin, gateway, f"ext-c{i}") for i in range(3)]
    receipt(admin, gateway, "ext-c0", "DELIVRD")
    wait_until(lambda: len(deliveries(admin, endpoint)) == 7 and all(
        d["attempts"] >= 2 and d["last_error"] for d in deliveries(admin, endpoint)),
        timeout=60, what="every delivery to have failed twice")
    later = start_webhook_receiver(tmp_path, port)
    try:
        expected = {f"msg_{m['id']}_{n}" for m in sent for n in (1, 2)} | {f"msg_{sent[0]['id']}_3"}
        wait_until(lambda: delivered_ids(later, where) >= expected, timeout=60, what="every event, after the outage")
        for event in later.events(where):
            verified(event, secret)
        wait_until(lambda: all(d["status"] == "succeeded" for d in deliveries(admin, endpoint)), timeout=30,
                   what="every delivery to be recorded succeeded")
    finally:
        later.stop()


def test_500_then_200_is_retried_on_the_schedule_with_the_same_id_and_body(admin, receiver, gateway):
    where = path()
    endpoint, secret = subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    receiver.script([{"status": 500, "body": "try later"}, {"status": 500}, {"status": 200}])
    send(admin, gateway, "ext-d1")
    wait_until(lambda: len(receiver.events(where)) >= 3, timeout=60, what="three attempts")
    first, second, third = receiver.events(where)[:3]
    assert first["webhook_id"] == second["webhook_id"] == third["webhook_id"]
    assert first["raw"] == second["raw"] == third["raw"]
    for event in (first, second, third):
        verified(event, secret)  # each attempt signed anew, with its own timestamp
    # never sooner than the schedule says (the jitter takes at most 10 % off)
    assert second["received_at"] - first["received_at"] >= SCHEDULE[1] * 0.9
    assert third["received_at"] - second["received_at"] >= SCHEDULE[2] * 0.9
    wait_until(lambda: deliveries(admin, endpoint)[0]["status"] == "succeeded", timeout=30, what="success")
    [delivery] = deliveries(admin, endpoint)
    assert (delivery["attempts"], delivery["last_status_code"]) == (3, 200)
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is not None


def test_only_the_first_4_kib_of_an_answer_are_kept_and_latency_is_recorded(admin, receiver, gateway):
    where = path()
    endpoint, _ = subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    receiver.script([{"status": 500, "body": "x" * 4000 + "y" * 6000}])
    send(admin, gateway, "ext-l1")
    wait_until(lambda: deliveries(admin, endpoint)[0]["last_status_code"] == 500, timeout=60,
               what="the first attempt to be recorded")
    delivery = deliveries(admin, endpoint)[0]
    assert delivery["last_response"] == "x" * 4000 + "y" * 96
    assert delivery["last_latency_ms"] > 0 and delivery["next_attempt_at"] is not None


def test_retry_after_is_honoured(admin, receiver, gateway):
    where = path()
    subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    receiver.script([{"status": 503, "retry_after": 3}, {"status": 204}])
    send(admin, gateway, "ext-e1")
    wait_until(lambda: len(receiver.events(where)) >= 2, timeout=60, what="the second attempt")
    first, second = receiver.events(where)[:2]
    assert second["received_at"] - first["received_at"] >= 3 * 0.95  # not the schedule's 1 s


def test_410_gone_disables_the_endpoint_and_says_so(admin, receiver, gateway):
    where = path()
    endpoint, _ = subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    receiver.script([{"status": 410}])
    send(admin, gateway, "ext-f1")
    wait_until(lambda: not admin.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["data"]["is_active"],
               timeout=60, what="the endpoint to be disabled")
    shown = admin.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["data"]
    assert "410" in shown["disabled_reason"] and shown["disabled_at"]
    [delivery] = deliveries(admin, endpoint)
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("failed", 1, 410)
    # what happens while it is off is kept, not sent; enabled again, a replay sends it
    later = send(admin, gateway, "ext-f2")
    assert len(deliveries(admin, endpoint)) == 1
    assert admin.patch(f"/api/webhook-endpoints/{endpoint['id']}", json={"is_active": True}).status_code == 200
    replayed = admin.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", params={"since": later["created_at"]})
    assert replayed.status_code == 202 and replayed.json()["data"]["queued"] == 1
    wait_until(lambda: len(receiver.events(where)) == 2, timeout=60, what="the kept event after re-enabling")
    assert receiver.events(where)[1]["webhook_id"] == f"msg_{later['id']}_1"


def test_a_redirect_is_not_followed(admin, receiver, gateway):
    where, elsewhere = path(), path()
    endpoint, _ = subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    receiver.script([{"status": 307, "location": receiver.url + elsewhere}])
    send(admin, gateway, "ext-g1")
    wait_until(lambda: deliveries(admin, endpoint)[0]["last_status_code"] == 307, timeout=60,
               what="the redirect to be recorded")
    delivery = deliveries(admin, endpoint)[0]
    assert delivery["status"] == "pending" and "redirect" in delivery["last_error"]
    assert receiver.events(elsewhere) == []  # a followed redirect would have come before the answer was recorded


def test_secret_rotation_signs_with_both_secrets_during_its_grace(admin, receiver, gateway):
    where = path()
    endpoint, old = subscribe(admin, receiver.url + where, gateway, events=["message.queued"])
    rotated = admin.post(f"/api/webhook-endpoints/{endpoint['id']}/secret/rotate", json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]["secret"]
    SEEN_SECRETS.append(new)
    assert new != old
    send(admin, gateway, "ext-h1")
    wait_until(lambda: receiver.events(where), timeout=60, what="a webhook after the rotation")
    event = receiver.events(where)[0]
    verified(event, old)
    verified(event, new)
    assert len(event["headers"]["webhook-signature"].split(" ")) == 2
    # grace 0: the old secret stops at once
    assert admin.post(f"/api/webhook-endpoints/{endpoint['id']}/secret/rotate",
                      json={"grace_seconds": 0}).status_code == 200
    newest = admin.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["data"]
    assert "secret" not in newest
    send(admin, gateway, "ext-h2")
    wait_until(lambda: len(receiver.events(where)) >= 2, timeout=60, what="a webhook after the second rotation")
    last = receiver.events(where)[1]
    assert len(last["headers"]["webhook-signature"].split(" ")) == 1
    with pytest.raises(Exception):
        verified(last, new)


def test_replay_sends_every_event_since_a_time_again(admin, receiver, gateway):
    where = path()
    endpoint, secret = subscribe(admin, receiver.url + where, gateway)
    message = send(admin, gateway, "ext-i1")
    wait_until(lambda: len(receiver.events(where)) >= 2, timeout=60, what="the first two webhooks")
    since = message["created_at"]
    replayed = admin.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", params={"since": since})
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["data"]["queued"] == 2
    wait_until(lambda: len(receiver.events(where)) >= 4, timeout=60, what="the replayed webhooks")
    ids = [e["webhook_id"] for e in receiver.events(where)]
    assert sorted(ids) == sorted([f"msg_{message['id']}_1", f"msg_{message['id']}_2"] * 2)


def test_a_private_address_is_refused_without_the_flag_and_at_delivery_when_dns_changes(tmp_path, empty_database):
    strict = start_api(tmp_path, **api_env(SMSGW_WEBHOOK_ALLOW_PRIVATE="0", SMSGW_DATABASE_URL=empty_database))
    try:
        with httpx.Client(base_url=strict.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
            for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://169.254.169.254/latest",
                        "http://[::1]:9/x", "http://10.0.0.1/x"):
                refused = c.post("/api/webhook-endpoints", json={"url": url, "events": ["message.queued"]})
                assert refused.status_code == 422, (url, refused.text)
                assert set(error_body(refused)) == {"message", "errors"} and refused.json()["errors"]["url"]
            # a name that resolved to a public address when the endpoint was made, and to
            # loopback now: the endpoint row as it would be, its host now pointing here
            gateway = c.post("/api/sms-gateways", json={
                "name": "strict", "provider_type": "http", "server_host": "127.0.0.1", "server_port": 9,
                "api_path": "send", "username": "u", "password": "p"}).json()["data"]
            endpoint_id = insert_webhook_endpoint(strict.env, "http://localhost:9/x", gateway["id"])
            queued = c.post(f"/api/sms-gateways/{gateway['id']}/messages", json={"messages": [
                {"to_number": "+4915112345678", "message": "hi", "from_sender": "ACME",
                 "send_at": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()}]})
            assert queued.status_code == 202, queued.text

            def attempted():
                rows = c.get(f"/api/webhook-endpoints/{endpoint_id}/deliveries").json()["data"]
                return rows and rows[0]["attempts"] >= 1 and rows[0]["last_error"]

            wait_until(attempted, timeout=60, what="an attempt to the rebound name")
            delivery = c.get(f"/api/webhook-endpoints/{endpoint_id}/deliveries").json()["data"][0]
            assert delivery["last_error"].startswith("blocked_address") and delivery["last_status_code"] is None
    finally:
        strict.process.stop()


def test_kill_9_while_deliveries_are_pending_loses_none(empty_database, tmp_path):
    """Every change that committed before the kill is delivered at least once after the restart:
    those waiting for their turn, and those whose request was under way (their lease ends)."""
    workdir = tmp_path / "api"
    workdir.mkdir()
    env = api_env(SMSGW_DATABASE_URL=empty_database)
    api = start_api(workdir, **env)
    stub = StubGateway().start()
    receiver = start_webhook_receiver(tmp_path)
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
            gateway = {**c.post("/api/sms-gateways", json={
                "name": "kill -9", "provider_type": "jasmin", "server_host": "127.0.0.1",
                "server_port": stub.port, "api_path": "secure/send", "username": "u",
                "password": "p", "default_sender_id": "ACME"}).json()["data"], "stub": stub}
            where = path()
            _, secret = subscribe(c, receiver.url + where, gateway)
            receiver.script([{"delay": 30}] * 4)  # the first requests hang: under way at the kill
            sent = [send(c, gateway, f"ext-k{i}") for i in range(6)]
            for i in range(3):
                receipt(c, gateway, f"ext-k{i}", "DELIVRD")
            wait_until(lambda: len(receiver.events(where)) >= 4, timeout=60, what="requests under way")
        api.process.popen.send_signal(signal.SIGKILL)
        api.process.popen.wait(timeout=30)
        receiver.script([])
        committed = {f"msg_{m['id']}_{n}" for m in sent for n in (1, 2)} | {
            f"msg_{m['id']}_3" for m in sent[:3]}
        again = start_api(workdir, **{**env, "SMSGW_DATABASE_URL": api.env["SMSGW_DATABASE_URL"]})
        try:
            wait_until(lambda: delivered_ids(receiver, where) >= committed, timeout=90,
                       what="every committed change delivered after the restart")
            for event in receiver.events(where):
                if event["status"] == 204:
                    verified(event, secret)
        finally:
            again.process.stop()
    finally:
        api.process.stop()
        stub.stop()
        receiver.stop()


def test_no_webhook_secret_appears_in_any_log(hooked, receiver):
    assert SEEN_SECRETS, "the tests before this one showed secrets"
    logs = hooked.log + receiver.process.log()
    for secret in SEEN_SECRETS:
        assert secret not in logs
        assert secret.removeprefix("whsec_") not in logs
