"""Input built to break things: it gets a clear 4xx (or is stored harmlessly), never a 500,
and everything stored before stays readable."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api import gateway_call
from api.providers.base import Submission, gateway_url


def raw_json(client, path: str, text: str, method: str = "POST"):
    return client.request(method, path, content=text.encode("utf-8", "surrogatepass"),
                          headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("text", [
    '{"name": "n", "server_host": "h", "meta": {"x": NaN}}',
    '{"name": "n", "server_host": "h", "server_port": Infinity}',
    '{"name": "n", "server_host": "h", "meta": {"x": -Infinity}}',
])
def test_non_standard_json_numbers_are_400(client, text):
    before = client.get("/api/sms-gateways").json()["data"]
    response = raw_json(client, "/api/sms-gateways", text)
    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["The body is not valid JSON."]}
    assert client.get("/api/sms-gateways").json()["data"] == before


@pytest.mark.parametrize("text, field", [
    ('{"name": "a\\ud800b", "server_host": "h"}', "name"),
    ('{"name": "n", "server_host": "h", "notes": "\\udfff"}', "notes"),
    ('{"name": "n", "server_host": "h", "meta": {"k": "\\ud800"}}', "meta"),
    ('{"name": "n", "server_host": "h", "meta": {"\\u0000": 1}}', "meta"),
    ('{"name": "n\\u0000", "server_host": "h"}', "name"),
])
def test_text_that_cannot_be_stored_is_422(client, text, field):
    response = raw_json(client, "/api/sms-gateways", text)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]
    assert client.get("/api/sms-gateways").status_code == 200


def test_invalid_utf8_in_a_form_is_400(client):
    response = client.post("/api/sms-gateways", content=b"name=%ff&server_host=h",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert "UTF-8" in response.json()["message"]


@pytest.mark.parametrize("host", ["[::1", ":::::", "999.999.999.999", "-bad.example", "a..b", "h/x",
                                  "gw.example.com:8080", "user@host", "a" * 64 + ".com"])
def test_hosts_httpx_could_not_call_are_422(client, host):
    response = client.post("/api/sms-gateways", json={"name": "n", "server_host": host})
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["server_host"]


@pytest.mark.parametrize("host", ["::1", "[::1]", "127.0.0.1", "localhost", "gw-1.example.com", "smsc.local."])
def test_real_hosts_are_accepted(client, host):
    assert client.post("/api/sms-gateways", json={"name": "n", "server_host": host}).status_code == 201


def test_an_ipv6_gateway_is_called_correctly():
    gateway = {"server_host": "::1", "server_port": 9, "api_path": "send", "use_ssl": False}
    assert gateway_url(gateway) == "http://[::1]:9/send"


def test_a_gateway_that_cannot_be_called_still_ends_failed():
    # Whatever goes wrong inside the call, send() answers with an outcome and never raises.
    gateway = {"id": 1, "provider_type": "jasmin", "server_host": ":::::", "server_port": 1,
               "api_path": "send", "use_ssl": False, "username": None}
    sub = Submission("1", "s", "t", "http://x/dlr")

    async def run():
        async with gateway_call.open_client() as http:
            return await gateway_call.send(http, gateway, sub, timeout=1)

    outcome = asyncio.run(run())
    assert not outcome.ok and outcome.failure_code == "unreachable"


@pytest.mark.parametrize("body, field", [
    ({"server_port": None}, "server_port"),
    ({"is_active": None}, "is_active"),
    ({"api_path": ""}, "api_path"),
    ({"username": "a:b"}, "username"),
])
def test_patch_refuses_nulls_and_impossible_values(client, make_gateway, body, field):
    gateway = make_gateway()
    response = client.patch(f"/api/sms-gateways/{gateway['id']}", json=body)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]
    assert client.get(f"/api/sms-gateways/{gateway['id']}").json()["data"] == gateway


def test_unknown_gateway_wins_over_a_bad_body(client):
    assert client.post("/api/sms-gateways/987654/send", json={}).status_code == 404
    assert client.patch("/api/sms-gateways/987654", json={"name": ""}).status_code == 404


@pytest.mark.parametrize("url", ["http://a:99999999/x", "http:///path", "https://", "http://h x/", "mailto:a@b"])
def test_callback_urls_that_are_not_urls_are_422(client, stub_gateway, stub, url):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                           json={"to_number": "+14155550101", "message": "m", "callback_url": url})
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["callback_url"]
    assert stub.received == []


def test_null_sender_and_callback_mean_use_the_defaults(client, stub_gateway, stub):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                           json={"to_number": "+14155550101", "message": "m", "from_sender": None, "callback_url": ""})
    assert response.status_code == 201
    sent = stub.received[-1].json()
    assert sent["from"] == "ACME" and sent["dlr-url"].endswith(f"token={stub_gateway['callback_token']}")


def test_a_gateway_reply_with_unstorable_text_is_kept_readable(client, stub_gateway, stub):
    stub.answer(200, '{"data": "Success \\"odd-1", "note": "\\ud800 and \\u0000"}')
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert response.status_code == 201
    message = response.json()["data"]
    assert message["remote_response"]["note"] == "\ufffd and \ufffd"
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").status_code == 200


def test_a_gateway_reply_with_nan_is_unreadable_not_a_500(client, stub_gateway, stub):
    stub.answer(200, '{"data": "Success \\"nan-1", "x": NaN}')
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert response.status_code == 502
    assert response.json()["data"]["remote_response"]["body"].endswith("NaN}")
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").status_code == 200


def test_receipts_with_unstorable_text_leave_the_message_readable(client, anonymous, stub_gateway):
    message = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                          json={"to_number": "+14155550101", "message": "m"}).json()["data"]
    dlr = f"/api/sms-gateways/{stub_gateway['id']}/dlr"
    response = raw_json(anonymous, dlr, '{"id": "stub-id-1", "status": "DELIVRD", "x": "\\ud800\\u0000"}')
    assert response.json() == {"message": "DLR received"}
    now = client.get(f"/api/sms-messages/{message['id']}")
    assert now.status_code == 200
    assert now.json()["data"]["delivery_status"] == "delivrd"
    assert now.json()["data"]["remote_response"]["x"] == "\ufffd\ufffd"
    response = raw_json(anonymous, dlr, '{"id": "stub-id-1", "status": "UNDELIV", "x": NaN}')
    assert response.status_code == 400
    assert client.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "delivrd"


def test_receipt_fields_replace_stored_fields_whole(client, anonymous, stub_gateway):
    message = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                          json={"to_number": "+14155550101", "message": "m"}).json()["data"]
    anonymous.post(f"/api/sms-gateways/{stub_gateway['id']}/dlr",
                   json={"id": "stub-id-1", "data": {"a": None, "b": 1}, "extra": None})
    stored = client.get(f"/api/sms-messages/{message['id']}").json()["data"]["remote_response"]
    assert stored == {"data": {"b": 1}, "id": "stub-id-1"}


def test_search_with_control_characters_is_422(client):
    response = client.get("/api/sms-gateways", params={"search": "a\x00b"})
    assert response.status_code == 422 and list(response.json()["errors"]) == ["search"]
    assert client.get("/api/sms-gateways", params={"search": ""}).status_code == 200


@pytest.mark.parametrize("path", ["/api/sms-gateways/9223372036854775807", "/api/sms-gateways/9223372036854775808",
                                  "/api/sms-gateways/3000000000/messages", "/api/sms-messages/3000000000"])
def test_ids_up_to_and_past_64_bits_are_404(client, path):
    assert client.get(path).status_code == 404


def test_receipts_for_ids_past_64_bits_are_still_200(anonymous):
    response = anonymous.post("/api/sms-gateways/99999999999999999999/dlr", json={"id": "x"})
    assert response.json() == {"message": "DLR received"}
