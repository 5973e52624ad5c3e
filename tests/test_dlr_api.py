"""Delivery receipts over HTTP, on both routes, as JSON and as Jasmin's forms."""

from __future__ import annotations

from pathlib import Path

import pytest

WIRE = Path(__file__).parent / "providers" / "jasmin" / "testdata"
ROUTES = ["/api/sms-gateways/{id}/dlr", "/webhooks/jasmin/{id}/dlr"]


@pytest.fixture
def submitted(client, stub_gateway, stub):
    """A message submitted through the stub gateway, with a unique external id."""
    counter = iter(range(10**6))

    def make() -> dict:
        external = f"ext-{stub_gateway['id']}-{next(counter)}"
        stub.answer(200, {"data": f'Success "{external}'})
        message = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                              json={"to_number": "+14155550123", "message": "hi"}).json()["data"]
        assert message["external_message_id"] == external
        return message

    return make


def message_now(client, message):
    return client.get(f"/api/sms-messages/{message['id']}").json()["data"]


@pytest.mark.parametrize("route", ROUTES)
def test_jasmin_form_receipt_sets_the_lowercased_status(client, anonymous, submitted, route):
    message = submitted()
    response = anonymous.post(route.format(id=message["sms_gateway_id"]), data={
        "id": message["external_message_id"], "message_status": "DELIVRD", "level": "2",
        "connector": "smsc1", "err": "000", "text": "hi"})
    assert response.status_code == 200
    assert response.json() == {"message": "DLR received"}
    now = message_now(client, message)
    assert now["delivery_status"] == "delivrd"
    assert now["delivered_at"].endswith("Z") and now["delivered_at"] >= message["submitted_at"]
    # the whole conversation is kept: the send reply and the receipt's fields
    assert now["remote_response"] == {**message["remote_response"], "id": message["external_message_id"],
                                      "message_status": "DELIVRD", "level": "2", "connector": "smsc1",
                                      "err": "000", "text": "hi"}


def test_json_receipt_with_message_id_and_status(client, anonymous, submitted):
    message = submitted()
    anonymous.post(f"/api/sms-gateways/{message['sms_gateway_id']}/dlr",
                   json={"message_id": message["external_message_id"], "status": "UNDELIV", "err": 12})
    now = message_now(client, message)
    assert now["delivery_status"] == "undeliv"
    assert now["remote_response"]["err"] == 12


def test_without_a_status_the_receipt_means_delivered(client, anonymous, submitted):
    message = submitted()
    anonymous.post(f"/api/sms-gateways/{message['sms_gateway_id']}/dlr",
                   json={"messageId": message["external_message_id"]})
    assert message_now(client, message)["delivery_status"] == "delivered"


def test_message_id_wins_over_id_and_status_over_message_status(client, anonymous, submitted):
    first, second = submitted(), submitted()
    anonymous.post(f"/api/sms-gateways/{first['sms_gateway_id']}/dlr", json={
        "message_id": first["external_message_id"], "id": second["external_message_id"],
        "status": "Failed", "message_status": "DELIVRD"})
    assert message_now(client, first)["delivery_status"] == "failed"
    assert message_now(client, second)["delivery_status"] == "submitted"


def test_a_receipt_for_another_gateways_message_changes_nothing(client, anonymous, submitted, make_gateway):
    message = submitted()
    other = make_gateway()
    response = anonymous.post(f"/api/sms-gateways/{other['id']}/dlr",
                              json={"message_id": message["external_message_id"], "status": "UNDELIV"})
    assert response.json() == {"message": "DLR received"}
    assert message_now(client, message)["delivery_status"] == "submitted"


@pytest.mark.parametrize("body", [
    {"message_id": "no-such-id", "status": "DELIVRD"},
    {"status": "DELIVRD"},
    {},
])
def test_unmatched_or_idless_receipts_are_200_and_change_nothing(client, anonymous, submitted, body):
    message = submitted()
    response = anonymous.post(f"/api/sms-gateways/{message['sms_gateway_id']}/dlr", json=body)
    assert response.status_code == 200 and response.json() == {"message": "DLR received"}
    assert message_now(client, message) == message


def test_a_receipt_for_an_unknown_gateway_is_200(anonymous):
    for route in ROUTES:
        response = anonymous.post(route.format(id=424242), data={"id": "x", "message_status": "DELIVRD"})
        assert (response.status_code, response.json()) == (200, {"message": "DLR received"})


def test_an_empty_receipt_is_200(anonymous):
    assert anonymous.post("/webhooks/jasmin/1/dlr").json() == {"message": "DLR received"}


@pytest.mark.parametrize("name", ["token", "Token", "X-Callback-Token", "callback_token"])
def test_the_token_in_the_body_is_not_stored(client, anonymous, submitted, stub_gateway, name):
    message = submitted()
    token = stub_gateway["callback_token"]
    anonymous.post(f"/api/sms-gateways/{message['sms_gateway_id']}/dlr?token={token}",
                   data={"id": message["external_message_id"], "message_status": "DELIVRD", name: token})
    now = message_now(client, message)
    assert now["delivery_status"] == "delivrd"  # the receipt did match
    assert now["remote_response"]["id"] == message["external_message_id"]
    assert token not in str(now)


def test_later_receipts_merge_into_the_conversation(client, anonymous, submitted):
    message = submitted()
    url = f"/webhooks/jasmin/{message['sms_gateway_id']}/dlr"
    anonymous.post(url, data={"id": message["external_message_id"], "message_status": "ESME_ROK", "level": "1"})
    anonymous.post(url, data={"id": message["external_message_id"], "message_status": "DELIVRD", "level": "2",
                              "donedate": "2611262105"})
    now = message_now(client, message)
    assert now["remote_response"]["level"] == "2"
    assert now["remote_response"]["donedate"] == "2611262105"
    assert now["remote_response"]["data"] == message["remote_response"]["data"]


@pytest.mark.parametrize("content, content_type, status", [
    (b'{"message_id": ', "application/json", 400),
    (b'"just a string"', "application/json", 400),
    (b"id=1&status=x", "text/csv", 415),
])
def test_unreadable_receipts_are_4xx_and_change_nothing(client, anonymous, submitted, content, content_type, status):
    message = submitted()
    response = anonymous.post(f"/api/sms-gateways/{message['sms_gateway_id']}/dlr", content=content,
                              headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["message"] and isinstance(response.json()["errors"], dict)
    assert message_now(client, message) == message


def test_the_dlr_route_needs_no_api_key_but_other_routes_do(anonymous):
    assert anonymous.post("/api/sms-gateways/1/dlr", json={}).status_code == 200
    assert anonymous.get("/api/sms-gateways/1").status_code == 401
    assert anonymous.put("/api/sms-gateways/1/dlr").status_code == 405


JASMIN_HEADERS = {"User-Agent": "Jasmin gateway/1.0 DLRThrower", "Accept": "text/plain"}


@pytest.mark.parametrize("route", ROUTES)
def test_jasmin_gets_exactly_ack_jasmin(client, anonymous, submitted, route):
    message = submitted()
    response = anonymous.post(route.format(id=message["sms_gateway_id"]),
                              headers={**JASMIN_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
                              content=(WIRE / "dlr-level2.form").read_bytes().replace(
                                  b"81fe3757-7dc0-46ed-a2d9-6d7801811590", message["external_message_id"].encode()),
                              )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == b"ACK/Jasmin"
    assert message_now(client, message)["delivery_status"] == "delivrd"


@pytest.mark.parametrize("headers, ack", [
    ({"User-Agent": "Jasmin gateway/1.0 DLRThrower"}, True),
    ({"Accept": "text/plain"}, True),
    ({"User-Agent": "curl/8.0", "Accept": "*/*"}, False),
    ({"Accept": "application/json"}, False),
])
def test_who_gets_ack_jasmin_and_who_gets_json(anonymous, headers, ack):
    response = anonymous.post("/webhooks/jasmin/424242/dlr", data={"id": "x"}, headers=headers)
    assert response.status_code == 200
    if ack:
        assert response.text == "ACK/Jasmin"
    else:
        assert response.json() == {"message": "DLR received"}


def test_jasmin_level1_then_level2_receipts_are_all_kept(client, anonymous, submitted):
    message = submitted()
    url = f"/webhooks/jasmin/{message['sms_gateway_id']}/dlr"
    for name in ("dlr-level1.form", "dlr-level2.form"):
        body = (WIRE / name).read_bytes().replace(b"81fe3757-7dc0-46ed-a2d9-6d7801811590",
                                                  message["external_message_id"].encode())
        anonymous.post(url, content=body, headers={**JASMIN_HEADERS,
                                                   "Content-Type": "application/x-www-form-urlencoded"})
    now = message_now(client, message)
    assert now["delivery_status"] == "delivrd"
    for key in ("id", "message_status", "level", "connector", "id_smsc", "sub", "dlvrd", "subdate", "donedate",
                "err", "text"):
        assert key in now["remote_response"], key


def test_get_receipts_carry_their_fields_in_the_query(client, anonymous, submitted, stub_gateway):
    message = submitted()
    response = anonymous.get(f"/webhooks/jasmin/{message['sms_gateway_id']}/dlr", headers=JASMIN_HEADERS, params={
        "id": message["external_message_id"], "message_status": "UNDELIV", "level": "2", "err": "001",
        "token": stub_gateway["callback_token"]})
    assert response.text == "ACK/Jasmin"
    now = message_now(client, message)
    assert now["delivery_status"] == "undeliv"
    assert now["remote_response"]["err"] == "001"
    assert "token" not in now["remote_response"]
