"""The pure halves of dispatch and receipts, on real Jasmin wire samples."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from api import dispatch
from api.dlr import parse_receipt

WIRE = Path(__file__).parent / "wire"
GATEWAY = {"server_host": "jasmin.local", "server_port": 8080, "api_path": "secure/send",
           "use_ssl": False, "username": "foo", "password": "bar"}
SUB = dispatch.Submission(to="+14155550123", sender="ACME", text="hello", dlr_url="https://x/dlr?token=t")


def sample(name: str) -> bytes:
    return (WIRE / "jasmin" / name).read_bytes()


def test_jasmin_rest_request():
    req = dispatch.build_jasmin_rest(GATEWAY, SUB)
    assert (req.method, req.url, req.auth) == ("POST", "http://jasmin.local:8080/secure/send", ("foo", "bar"))
    assert req.json == {"to": "+14155550123", "from": "ACME", "coding": 0, "content": "hello", "dlr": "yes",
                        "dlr-url": "https://x/dlr?token=t", "dlr-level": 3, "dlr-method": "POST"}


def test_text_outside_gsm7_goes_as_ucs2_hex():
    req = dispatch.build_jasmin_rest(GATEWAY, dispatch.Submission("1", "S", "Привет €", "http://x"))
    assert req.json["coding"] == 8 and "content" not in req.json
    assert req.json["hex-content"] == "041f04400438043204350442002020ac"


def test_jasmin_http_request_is_a_form_with_credentials_as_fields():
    gateway = {**GATEWAY, "server_port": 1401, "api_path": "send"}
    req = dispatch.build_jasmin_http(gateway, SUB)
    assert (req.method, req.url, req.auth, req.json) == ("POST", "http://jasmin.local:1401/send", None, None)
    assert req.form == {"username": "foo", "password": "bar", "to": "+14155550123", "from": "ACME",
                        "coding": "0", "content": "hello", "dlr": "yes", "dlr-url": "https://x/dlr?token=t",
                        "dlr-level": "3", "dlr-method": "POST"}


def test_jasmin_http_success():
    outcome = dispatch.read_jasmin_http(200, sample("http-send-200.txt"))
    assert outcome.ok and outcome.external_id == "2f9b7a6e-5a1c-4c5e-9e57-3c1f0b5b2d11"
    assert outcome.remote_response == {"http_status": 200, "body": 'Success "2f9b7a6e-5a1c-4c5e-9e57-3c1f0b5b2d11"'}


@pytest.mark.parametrize("status, body, reason, code", [
    (400, b'Error "Argument [to] has an invalid value: [abc]."', "Argument [to] has an invalid value: [abc].",
     "gateway_error"),
    (403, b'Error "Authentication failure for username:foo"', "Authentication failure for username:foo",
     "gateway_error"),
    (403, b'Error "User throughput exceeded"', "User throughput exceeded", "throttled"),
    (412, b'Error "No route found"', "No route found", "gateway_error"),
    (500, b'Error "Cannot send submit_sm, check SMPPClientManagerPB log file for details"',
     "Cannot send submit_sm, check SMPPClientManagerPB log file for details", "gateway_error"),
    (503, b'Error "Interception specific error code 503"', "Interception specific error code 503", "gateway_error"),
])
def test_jasmin_http_errors(status, body, reason, code):
    outcome = dispatch.read_jasmin_http(status, body)
    assert not outcome.ok
    assert outcome.failure_reason == f"gateway answered HTTP {status}: {reason}"
    assert outcome.failure_code == code


@pytest.mark.parametrize("body", [b"", b"OK", b'Error "x"', b"Success"])
def test_jasmin_http_unreadable_200(body):
    outcome = dispatch.read_jasmin_http(200, body)
    assert not outcome.ok and outcome.failure_code == "unreadable_reply"


def test_gateway_url_forms():
    assert dispatch.gateway_url({**GATEWAY, "use_ssl": True, "api_path": "/a/b"}) == "https://jasmin.local:8080/a/b"
    assert dispatch.gateway_url({**GATEWAY, "server_host": "::1"}) == "http://[::1]:8080/secure/send"


def test_no_username_means_no_basic_auth():
    assert dispatch.build_jasmin_rest({**GATEWAY, "username": None}, SUB).auth is None


def test_jasmin_rest_success_without_closing_quote():
    outcome = dispatch.read_jasmin_rest(200, sample("rest-send-200.json"))
    assert outcome.ok and outcome.external_id == "07033084-5cfd-4812-90a4-e4d24ffb6e3d"
    assert outcome.remote_response == {"data": 'Success "07033084-5cfd-4812-90a4-e4d24ffb6e3d'}


def test_jasmin_rest_success_with_closing_quote_too():
    assert dispatch.read_jasmin_rest(200, b'{"data": "Success \\"abc\\""}').external_id == "abc"


@pytest.mark.parametrize("status, name, reason, code", [
    (412, "rest-send-412.json", "gateway answered HTTP 412: No route found", "gateway_error"),
    (403, "rest-send-403.json", "gateway answered HTTP 403: Authentication failure for username:foo",
     "gateway_error"),
    (403, "rest-send-403-throughput.json", "gateway answered HTTP 403: User throughput exceeded", "throttled"),
])
def test_jasmin_rest_errors(status, name, reason, code):
    outcome = dispatch.read_jasmin_rest(status, sample(name))
    assert not outcome.ok and outcome.failure_reason == reason and outcome.external_id is None
    assert outcome.failure_code == code


@pytest.mark.parametrize("body", [b"", b"Success \"x\"", b'{"data": "Error \\"x\\""}', b'{"data": 5}', b"[]"])
def test_jasmin_rest_unreadable_200(body):
    outcome = dispatch.read_jasmin_rest(200, body)
    assert not outcome.ok and outcome.failure_reason.startswith("gateway reply could not be understood")


@pytest.mark.parametrize("reply, expected", [
    (b'{"message_id": "m", "id": "i", "messageId": "c"}', "m"),
    (b'{"id": "i", "messageId": "c"}', "i"),
    (b'{"messageId": 12}', "12"),
    (b'{"data": {"message_id": "nested"}}', "nested"),
])
def test_http_json_id_precedence(reply, expected):
    assert dispatch.read_http_json(201, reply).external_id == expected


@pytest.mark.parametrize("reply", [b'{"id": ""}', b'{"id": true}', b'{"ok": 1}', b'{"id": null}'])
def test_http_json_without_usable_id_fails(reply):
    assert not dispatch.read_http_json(200, reply).ok


def test_http_json_error_reason():
    outcome = dispatch.read_http_json(422, b'{"error": "invalid number"}')
    assert outcome.failure_reason == "gateway answered HTTP 422: invalid number"


def form(name: str) -> dict[str, str]:
    return dict(parse_qsl(sample(name).decode()))


def test_jasmin_level1_receipt():
    receipt = parse_receipt(form("dlr-level1.form"))
    assert receipt.external_id == "81fe3757-7dc0-46ed-a2d9-6d7801811590"
    assert receipt.status == "esme_rok"
    assert receipt.payload == form("dlr-level1.form")


def test_jasmin_level2_receipt_keeps_every_field():
    receipt = parse_receipt(form("dlr-level2.form"))
    assert receipt.status == "delivrd"
    assert set(receipt.payload) == {"id", "level", "message_status", "connector", "id_smsc", "sub", "dlvrd",
                                    "subdate", "donedate", "err", "text"}


@pytest.mark.parametrize("fields, external_id, status", [
    ({"message_id": "a", "id": "b", "messageId": "c"}, "a", "delivered"),
    ({"id": "b", "messageId": "c"}, "b", "delivered"),
    ({"messageId": "c"}, "c", "delivered"),
    ({"message_id": "", "id": "b"}, "b", "delivered"),
    ({"message_id": 42, "status": "DELIVERED"}, "42", "delivered"),
    ({"status": "Failed", "message_status": "DELIVRD"}, None, "failed"),
    ({"status": "  ", "message_status": "UNDELIV"}, None, "undeliv"),
    ({"message_id": {"nested": 1}}, None, "delivered"),
    ({}, None, "delivered"),
])
def test_receipt_field_rules(fields, external_id, status):
    receipt = parse_receipt(fields)
    assert (receipt.external_id, receipt.status) == (external_id, status)


def test_receipt_payload_drops_the_token_and_nulls():
    assert parse_receipt({"id": "a", "token": "secret", "err": None}).payload == {"id": "a"}
