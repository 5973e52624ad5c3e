"""The generic JSON provider from a table: sample replies in, outcomes out; the request as built."""

from __future__ import annotations


import pytest

from api.providers import http_json
from api.providers.base import AMBIGUOUS, SAFE, Submission, WireRequest
from tests.providers.table import UNREADABLE, failed, reply, said

GATEWAY = {"server_host": "gw.local", "server_port": 80, "api_path": "http/send",
           "use_ssl": False, "username": "foo", "password": "bar"}
SUB = Submission(to="+14155550123", sender="ACME", text="Привет", dlr_url="https://x/dlr?token=t")


# (HTTP status, the reply: a sample's file name or bytes, what the outcome must say)
REPLIES = [
    (201, "send-201.json", {"ok": True, "external_id": "df7a5700-462c-4282-b2c9-c332d24e43d6",
                            "remote_response": {"message_id": "df7a5700-462c-4282-b2c9-c332d24e43d6",
                                                "status": "accepted"}}),
    (401, "send-401.json", failed(401, "unauthorized")),
    (422, "send-422.json", failed(422, "to, from and content are required strings")),
    (422, b'{"error": "invalid number"}', failed(422, "invalid number")),
    (429, b'{"message": "slow down"}', failed(429, "slow down", "throttled", SAFE)),
    (503, b'{"error": "maintenance"}', failed(503, "maintenance", retry=SAFE)),
    (502, b'{"error": "bad gateway"}', failed(502, "bad gateway", retry=AMBIGUOUS)),
    (400, b'{"error": "bad request"}', failed(400, "bad request")),
    (500, b"<html>oops</html>", {"ok": False, "failure_code": "gateway_error", "retry": AMBIGUOUS,
                                 "failure_reason": "gateway answered HTTP 500",
                                 "remote_response": {"http_status": 500, "body": "<html>oops</html>"}}),
    # the id: message_id, else id, else messageId; at the top level, else inside data
    (201, b'{"message_id": "m", "id": "i", "messageId": "c"}', {"ok": True, "external_id": "m"}),
    (201, b'{"id": "i", "messageId": "c"}', {"ok": True, "external_id": "i"}),
    (200, b'{"messageId": 12}', {"ok": True, "external_id": "12"}),
    (200, b'{"data": {"message_id": "nested"}}', {"ok": True, "external_id": "nested"}),
    (200, b'{"id": ""}', UNREADABLE),
    (200, b'{"id": true}', UNREADABLE),
    (200, b'{"ok": 1}', UNREADABLE),
    (200, b'{"id": null}', UNREADABLE),
    (200, b"accepted", UNREADABLE),
]


@pytest.mark.parametrize("status, given, expected", REPLIES)
def test_replies(status, given, expected):
    assert said(http_json.read(status, reply("http_json", given)), expected) == expected


def test_request_is_json_with_basic_auth_and_the_text_as_it_is():
    assert http_json.build(GATEWAY, SUB) == WireRequest(
        "POST", "http://gw.local:80/http/send", auth=("foo", "bar"),
        json={"to": "+14155550123", "from": "ACME", "content": "Привет", "dlr-url": "https://x/dlr?token=t"})


def test_the_generic_request_carries_no_validity():
    # the generic contract has no validity field: a gateway that refuses unknown keys must not see one
    with_validity = Submission(to=SUB.to, sender=SUB.sender, text=SUB.text, dlr_url=SUB.dlr_url, validity_minutes=60)
    assert http_json.build(GATEWAY, with_validity) == http_json.build(GATEWAY, SUB)
