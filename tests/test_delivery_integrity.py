"""Delivery-state integrity over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import threading

import httpx
import pytest

from tests.servers import StubGateway, run_smsgw, start_api, wait_until

_ids = itertools.count()


@pytest.fixture
def submit(client, stub_gateway, stub):
    def make(external: str | None = None) -> dict:
        external = external or f"int-{stub_gateway['id']}-{next(_ids)}"
        stub.answer(200, {"data": f'Success "{external}'})
        return client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                           json={"to_number": "+14155550101", "message": "m"}).json()["data"]
    return make


def receipt(http, message, status, **extra):
    return http.post(f"/webhooks/jasmin/{message['sms_gateway_id']}/dlr",
                     data={"id": message["external_message_id"], "message_status": status, **extra})


def now(client, message):
    return client.get(f"/api/sms-messages/{message['id']}").json()["data"]


def history(client, message):
    response = client.get(f"/api/sms-messages/{message['id']}/events")
    assert response.status_code == 200
    return response.json()["data"]


def test_the_state_follows_receipts_forward(client, anonymous, submit):
    message = submit()
    assert (message["state"], message["delivery_status"]) == ("submitted", "submitted")
    receipt(anonymous, message, "ESME_ROK", level="1")
    assert (now(client, message)["state"], now(client, message)["delivery_status"]) == ("accepted", "esme_rok")
    receipt(anonymous, message, "DELIVRD", level="2")
    final = now(client, message)
    assert (final["state"], final["delivery_status"], final["status_conflict"]) == ("delivered", "delivrd", False)


def test_a_late_level_1_after_delivrd_changes_nothing_but_is_kept(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "DELIVRD", level="2")
    before = now(client, message)
    receipt(anonymous, message, "ESME_ROK", level="1")
    after = now(client, message)
    assert (after["state"], after["delivery_status"], after["delivered_at"]) == (
        "delivered", "delivrd", before["delivered_at"])
    last = history(client, message)[-1]
    assert (last["kind"], last["raw_status"], last["changed"]) == ("receipt", "esme_rok", False)
    assert "already final" in last["reason"]
    assert last["payload"]["level"] == "1" and last["source_address"] == "127.0.0.1"


def test_acceptd_after_undeliv_changes_nothing(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "UNDELIV")
    receipt(anonymous, message, "ACCEPTD")
    assert (now(client, message)["state"], now(client, message)["delivery_status"]) == ("failed", "undeliv")


def test_the_same_receipt_twice_changes_nothing_the_second_time(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "DELIVRD")
    first = now(client, message)
    receipt(anonymous, message, "DELIVRD")
    assert now(client, message) == first
    receipts = [e for e in history(client, message) if e["kind"] == "receipt"]
    assert [e["changed"] for e in receipts] == [True, False]
    assert receipts[1]["reason"].startswith("duplicate")


@pytest.mark.parametrize("order", [("UNDELIV", "DELIVRD"), ("DELIVRD", "UNDELIV")])
def test_disagreeing_final_receipts_end_delivered_and_flagged_in_either_order(client, anonymous, submit, order):
    message = submit()
    for status in order:
        receipt(anonymous, message, status)
    final = now(client, message)
    assert (final["state"], final["delivery_status"], final["status_conflict"]) == ("delivered", "delivrd", True)


def test_an_unknown_status_keeps_the_state_and_is_recorded(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "SCHRODINGER")
    assert now(client, message)["state"] == "submitted"
    last = history(client, message)[-1]
    assert last["raw_status"] == "schrodinger" and not last["changed"] and "unknown" in last["reason"]


def test_the_history_tells_the_whole_story_in_order(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "ESME_ROK", level="1")
    receipt(anonymous, message, "DELIVRD", level="2")
    story = [(e["kind"], e["state_before"], e["state_after"], e["changed"]) for e in history(client, message)]
    assert story == [
        ("state", None, "queued", True),
        ("state", "queued", "submitted", True),
        ("receipt", "submitted", "accepted", True),
        ("receipt", "accepted", "delivered", True),
    ]
    assert [e["id"] for e in history(client, message)] == sorted(e["id"] for e in history(client, message))


def test_events_of_an_unknown_message_are_404_and_need_a_key(client, anonymous):
    assert client.get("/api/sms-messages/987654321/events").status_code == 404
    assert anonymous.get("/api/sms-messages/1/events").status_code == 401


@pytest.mark.parametrize("pair", [("DELIVRD", "ESME_ROK"), ("UNDELIV", "DELIVRD"), ("ACCEPTD", "REJECTD")])
def test_two_receipts_at_the_same_moment_end_as_in_either_order(api, client, submit, pair):
    """Each pair races on two connections, many times; every message ends exactly
    as the pair ends when sent one after the other."""
    expected_state = {("DELIVRD", "ESME_ROK"): ("delivered", "delivrd"),
                      ("UNDELIV", "DELIVRD"): ("delivered", "delivrd"),
                      ("ACCEPTD", "REJECTD"): ("failed", "rejectd")}[pair]
    for _ in range(8):
        message = submit()
        barrier = threading.Barrier(2)

        def post(status):
            with httpx.Client(base_url=api.url) as own:  # its own connection
                barrier.wait()
                assert receipt(own, message, status).status_code == 200

        threads = [threading.Thread(target=post, args=(status,)) for status in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        final = now(client, message)
        assert (final["state"], final["delivery_status"]) == expected_state
        assert sum(e["kind"] == "receipt" for e in history(client, message)) == 2


def test_a_receipt_that_arrives_before_the_send_result_is_applied_after_it(client, anonymous, stub_gateway, stub):
    external = f"early-{next(_ids)}"
    release = threading.Event()
    stub.answer(200, {"data": f'Success "{external}'}, hold=release)
    result = {}
    with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=10) as own:
        sender = threading.Thread(target=lambda: result.update(response=own.post(
            f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "m"})))
        sender.start()
        assert stub.arrived.wait(5)
        # Jasmin's level-1 receipt, thrown before smsgw has the id from its own send call
        early = anonymous.post(f"/webhooks/jasmin/{stub_gateway['id']}/dlr",
                               data={"id": external, "message_status": "DELIVRD", "level": "2"})
        assert early.json() == {"message": "DLR received"}
        waiting = client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs").json()["data"]
        assert [(w["external_message_id"], w["status"], w["raw_status"]) for w in waiting] == [
            (external, "pending", "delivrd")]
        release.set()
        sender.join(10)
    message = result["response"].json()["data"]
    assert result["response"].status_code == 201
    final = now(client, message)
    assert (final["state"], final["delivery_status"]) == ("delivered", "delivrd")
    [kept] = client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs").json()["data"]
    assert (kept["status"], kept["message_id"]) == ("applied", message["id"])
    assert history(client, message)[-1]["reason"] == "applied"


def test_unmatched_listing_filters_and_404s(client, anonymous, stub_gateway):
    anonymous.post(f"/api/sms-gateways/{stub_gateway['id']}/dlr", json={"message_id": "nobody", "status": "X"})
    listing = client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs", params={"status": "pending"})
    assert [w["external_message_id"] for w in listing.json()["data"]] == ["nobody"]
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs",
                      params={"status": "applied"}).json()["data"] == []
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs",
                      params={"status": "nope"}).status_code == 422
    assert client.get("/api/sms-gateways/987654/unmatched-dlrs").status_code == 404


# --- idempotent sends ------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_sends_once(client, stub_gateway, stub):
    body = {"to_number": "+14155550100", "message": "once"}
    headers = {"Idempotency-Key": f"order-{next(_ids)}"}
    first = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body, headers=headers)
    again = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert len(stub.received) == 1


def test_the_same_key_with_another_body_is_422(client, stub_gateway, stub):
    headers = {"Idempotency-Key": f"order-{next(_ids)}"}
    client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "a"},
                headers=headers)
    other = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "b"},
                        headers=headers)
    assert other.status_code == 422 and list(other.json()["errors"]) == ["Idempotency-Key"]
    assert len(stub.received) == 1


@pytest.mark.parametrize("key", [b"has space", b"", b"x" * 256, "é".encode()])
def test_bad_idempotency_keys_are_422(client, stub_gateway, stub, key):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "a"},
                           headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert stub.received == []


def test_concurrent_duplicates_send_one_sms(api, api_key, stub_gateway, stub):
    release = threading.Event()
    stub.answer(200, {"data": f'Success "dup-{next(_ids)}'}, hold=release)
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"burst-{next(_ids)}"}
    barrier, results = threading.Barrier(6), []

    def post():
        with httpx.Client(base_url=api.url, headers=headers, timeout=15) as own:
            barrier.wait()
            results.append(own.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                                    json={"to_number": "+14155550101", "message": "burst"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(results) >= 5, what="the duplicates to be answered")  # all but the one in flight
    release.set()
    for thread in threads:
        thread.join(15)
    assert len(stub.received) == 1
    assert len({r.json()["data"]["id"] for r in results}) == 1
    assert sorted(r.status_code for r in results) == [200] * 5 + [201]


# --- no message stays queued ---------------------------------------------------------------


def test_a_send_interrupted_by_a_crash_ends_failed_interrupted_and_is_not_resent(tmp_path):
    stub = StubGateway().start()
    release = threading.Event()
    stub.answer(200, {"data": 'Success "never-recorded'}, hold=release)
    overrides = {"SMSGW_GATEWAY_TIMEOUT": "5", "SMSGW_QUEUED_GRACE": "0", "SMSGW_HOUSEKEEPING_INTERVAL": "0.2"}
    api = start_api(tmp_path, **overrides)
    try:
        key = run_smsgw(api.env, "apikey", "create", "--name", "crash").stdout.strip().splitlines()[-1]
        client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        gateway = client.post("/api/sms-gateways", json={"name": "g", "server_host": "127.0.0.1",
                                                         "server_port": stub.port, "default_sender_id": "X"}).json()["data"]
        threading.Thread(target=lambda: _quietly(client.post, f"/api/sms-gateways/{gateway['id']}/send",
                                                 json={"to_number": "+14155550101", "message": "m"}), daemon=True).start()
        assert stub.arrived.wait(5)
        api.process.popen.kill()  # kill -9 while the gateway holds the answer
        api.process.popen.wait()
        release.set()
    finally:
        api.process.stop()
    restarted = start_api(tmp_path, **overrides)
    try:
        client = httpx.Client(base_url=restarted.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

        def message():
            return client.get(f"/api/sms-gateways/{gateway['id']}/messages").json()["data"][0]

        wait_until(lambda: message()["state"] == "failed", timeout=15, what="the stale message to be failed")
        assert message()["failure_code"] == "interrupted"
        assert "not resent" in message()["failure_reason"]
        assert len(stub.received) == 1  # never sent again
    finally:
        restarted.process.stop()
        stub.stop()


def _quietly(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except httpx.HTTPError:
        pass


def test_unmatched_receipts_expire_and_are_never_deleted(tmp_path):
    api = start_api(tmp_path, SMSGW_UNMATCHED_TTL="0", SMSGW_HOUSEKEEPING_INTERVAL="0.2")
    try:
        key = run_smsgw(api.env, "apikey", "create", "--name", "ttl").stdout.strip().splitlines()[-1]
        client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        gateway = client.post("/api/sms-gateways", json={"name": "g", "server_host": "127.0.0.1"}).json()["data"]
        httpx.post(f"{api.url}/api/sms-gateways/{gateway['id']}/dlr", json={"message_id": "late", "status": "x"})
        url = f"/api/sms-gateways/{gateway['id']}/unmatched-dlrs"
        wait_until(lambda: client.get(url).json()["data"][0]["status"] == "expired", what="the receipt to expire")
        assert client.get(url).json()["data"][0]["resolved_at"]
    finally:
        api.process.stop()


# --- found in review ----------------------------------------------------------------------


def test_a_receipt_id_too_long_to_store_is_answered_and_ignored(client, anonymous, stub_gateway):
    response = anonymous.post(f"/api/sms-gateways/{stub_gateway['id']}/dlr",
                              json={"message_id": "x" * 300, "status": "DELIVRD"})
    assert response.status_code == 200 and response.json() == {"message": "DLR received"}
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/unmatched-dlrs").json()["data"] == []


def test_a_gateway_id_too_long_to_store_leaves_the_message_submitted_and_says_why(client, make_gateway, stub):
    gateway = make_gateway(provider_type="http", api_path="send", server_port=stub.port)
    stub.answer(200, {"message_id": "y" * 300})
    response = client.post(f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert response.status_code == 201
    message = response.json()["data"]
    assert message["state"] == "submitted" and message["external_message_id"] is None
    assert "300 characters" in message["failure_reason"]


def test_failed_at_goes_when_delivered_wins(client, anonymous, submit):
    message = submit()
    receipt(anonymous, message, "UNDELIV")
    assert now(client, message)["failed_at"] is not None
    receipt(anonymous, message, "DELIVRD")
    final = now(client, message)
    assert final["state"] == "delivered" and final["failed_at"] is None and final["status_conflict"]


def test_a_retry_with_its_key_after_deactivation_returns_the_original(client, stub_gateway, stub):
    headers = {"Idempotency-Key": f"before-deactivation-{next(_ids)}"}
    body = {"to_number": "+14155550101", "message": "m"}
    first = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body, headers=headers)
    client.patch(f"/api/sms-gateways/{stub_gateway['id']}", json={"is_active": False})
    again = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["data"]["id"] == first.json()["data"]["id"]
    fresh = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body,
                        headers={"Idempotency-Key": f"new-{next(_ids)}"})
    assert fresh.status_code == 409


def test_a_long_history_comes_a_page_at_a_time_oldest_first(client, anonymous, submit):
    message = submit()
    for _ in range(5):
        receipt(anonymous, message, "DELIVRD")
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/api/sms-messages/{message['id']}/events", params=params).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and seen == sorted(seen)  # queued, submitted, 5 receipts
    assert client.get(f"/api/sms-messages/{message['id']}/events", params={"limit": 0}).status_code == 422
