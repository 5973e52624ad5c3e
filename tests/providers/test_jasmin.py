"""Jasmin from a table: real wire samples in, outcomes out; requests as built; receipts as thrown."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest

from api.providers import jasmin
from api.providers.base import AMBIGUOUS, SAFE, Submission, WireRequest
from tests.providers.table import UNREADABLE, failed, reply, said, sample

GATEWAY = {"server_host": "jasmin.local", "server_port": 8080, "api_path": "secure/send",
           "use_ssl": False, "username": "foo", "password": "bar"}
HTTP_GATEWAY = {**GATEWAY, "server_port": 1401, "api_path": "send"}
SUB = Submission(to="+14155550123", sender="ACME", text="hello", dlr_url="https://x/dlr?token=t")
RECEIPTS = {"dlr": "yes", "dlr-url": "https://x/dlr?token=t", "dlr-level": 3, "dlr-method": "POST"}


# (reader, HTTP status, the reply: a sample's file name or bytes, what the outcome must say)
REPLIES = [
    (jasmin.read_rest, 200, "rest-send-200.json",
     {"ok": True, "external_id": "07033084-5cfd-4812-90a4-e4d24ffb6e3d",
      "remote_response": {"data": 'Success "07033084-5cfd-4812-90a4-e4d24ffb6e3d'}}),
    (jasmin.read_rest, 200, b'{"data": "Success \\"abc\\""}', {"ok": True, "external_id": "abc"}),
    (jasmin.read_rest, 412, "rest-send-412.json", failed(412, "No route found")),
    (jasmin.read_rest, 403, "rest-send-403.json", failed(403, "Authentication failure for username:foo")),
    (jasmin.read_rest, 403, "rest-send-403-throughput.json",
     failed(403, "User throughput exceeded", "throttled", SAFE)),
    (jasmin.read_rest, 503, b'{"message": "Error \\"Interception specific error code 503\\""}',
     failed(503, "Interception specific error code 503", retry=SAFE)),
    (jasmin.read_rest, 500, b'{"message": "Error \\"Cannot send submit_sm\\""}',
     failed(500, "Cannot send submit_sm", retry=AMBIGUOUS)),
    (jasmin.read_rest, 200, b"", UNREADABLE),
    (jasmin.read_rest, 200, b'Success "x"', UNREADABLE),
    (jasmin.read_rest, 200, b'{"data": "Error \\"x\\""}', UNREADABLE),
    (jasmin.read_rest, 200, b'{"data": 5}', UNREADABLE),
    (jasmin.read_rest, 200, b"[]", UNREADABLE),
    (jasmin.read_http, 200, "http-send-200.txt",
     {"ok": True, "external_id": "2f9b7a6e-5a1c-4c5e-9e57-3c1f0b5b2d11",
      "remote_response": {"http_status": 200, "body": 'Success "2f9b7a6e-5a1c-4c5e-9e57-3c1f0b5b2d11"'}}),
    (jasmin.read_http, 400, b'Error "Argument [to] has an invalid value: [abc]."',
     failed(400, "Argument [to] has an invalid value: [abc].")),
    (jasmin.read_http, 403, b'Error "Authentication failure for username:foo"',
     failed(403, "Authentication failure for username:foo")),
    (jasmin.read_http, 403, b'Error "User throughput exceeded"',
     failed(403, "User throughput exceeded", "throttled", SAFE)),
    (jasmin.read_http, 412, b'Error "No route found"', failed(412, "No route found")),
    (jasmin.read_http, 500, b'Error "Cannot send submit_sm, check SMPPClientManagerPB log file for details"',
     failed(500, "Cannot send submit_sm, check SMPPClientManagerPB log file for details", retry=AMBIGUOUS)),
    (jasmin.read_http, 503, b'Error "Interception specific error code 503"',
     failed(503, "Interception specific error code 503", retry=SAFE)),
    (jasmin.read_http, 200, b"", UNREADABLE),
    (jasmin.read_http, 200, b"OK", UNREADABLE),
    (jasmin.read_http, 200, b'Error "x"', UNREADABLE),
    (jasmin.read_http, 200, b"Success", UNREADABLE),
]


@pytest.mark.parametrize("read, status, given, expected", REPLIES)
def test_replies(read, status, given, expected):
    assert said(read(status, reply("jasmin", given)), expected) == expected


# (what, builder, gateway, submission, the request it must build)
BUILDS = [
    ("REST, GSM-7 text", jasmin.build_rest, GATEWAY, SUB, WireRequest(
        "POST", "http://jasmin.local:8080/secure/send", auth=("foo", "bar"),
        json={"to": "+14155550123", "from": "ACME", "coding": 0, "content": "hello", **RECEIPTS})),
    ("REST, text outside GSM-7 goes as UCS-2 hex", jasmin.build_rest, GATEWAY,
     Submission("+14155550123", "ACME", "Привет €", "https://x/dlr?token=t"), WireRequest(
         "POST", "http://jasmin.local:8080/secure/send", auth=("foo", "bar"),
         json={"to": "+14155550123", "from": "ACME", "coding": 8, "hex-content": "041f04400438043204350442002020ac",
               **RECEIPTS})),
    ("REST, no username means no Basic Auth", jasmin.build_rest, {**GATEWAY, "username": None}, SUB, WireRequest(
        "POST", "http://jasmin.local:8080/secure/send",
        json={"to": "+14155550123", "from": "ACME", "coding": 0, "content": "hello", **RECEIPTS})),
    ("HTTP API: a form, the credentials as fields", jasmin.build_http, HTTP_GATEWAY, SUB, WireRequest(
        "POST", "http://jasmin.local:1401/send",
        form={"to": "+14155550123", "from": "ACME", "coding": "0", "content": "hello", "dlr": "yes",
              "dlr-url": "https://x/dlr?token=t", "dlr-level": "3", "dlr-method": "POST",
              "username": "foo", "password": "bar"})),
    ("REST, a validity in minutes", jasmin.build_rest, GATEWAY,
     Submission("+14155550123", "ACME", "hello", "https://x/dlr?token=t", validity_minutes=90), WireRequest(
         "POST", "http://jasmin.local:8080/secure/send", auth=("foo", "bar"),
         json={"to": "+14155550123", "from": "ACME", "coding": 0, "content": "hello", "validity-period": 90,
               **RECEIPTS})),
    ("HTTP API, a validity in minutes", jasmin.build_http, HTTP_GATEWAY,
     Submission("+14155550123", "ACME", "hello", "https://x/dlr?token=t", validity_minutes=1440), WireRequest(
         "POST", "http://jasmin.local:1401/send",
         form={"to": "+14155550123", "from": "ACME", "coding": "0", "content": "hello", "validity-period": "1440",
               "dlr": "yes", "dlr-url": "https://x/dlr?token=t", "dlr-level": "3", "dlr-method": "POST",
               "username": "foo", "password": "bar"})),
]


@pytest.mark.parametrize("what, build, gateway, sub, expected", BUILDS, ids=[row[0] for row in BUILDS])
def test_requests(what, build, gateway, sub, expected):
    request = build(gateway, sub)
    assert request == expected
    assert set(request.json or request.form) <= jasmin.SEND_KEYS  # Jasmin refuses a key it does not know


RECEIVED_AT = datetime(2026, 11, 26, 21, 5, tzinfo=timezone.utc)
JASMIN_ID = "81fe3757-7dc0-46ed-a2d9-6d7801811590"

# (a receipt Jasmin threw, as recorded; the same receipt as smsgw's simulator and bench build it)
THROWN = [
    ("dlr-level1.form", jasmin.level1_receipt(JASMIN_ID, "smsc1")),
    ("dlr-level2.form", jasmin.level2_receipt(JASMIN_ID, "DELIVRD", "A0000002", "hello", RECEIVED_AT, RECEIVED_AT)),
]


@pytest.mark.parametrize("name, built", THROWN)
def test_receipts_are_built_byte_for_byte_as_jasmin_throws_them(name, built):
    assert urlencode(built).encode() == sample("jasmin", name)


def test_an_undelivered_level_2_receipt_says_so():
    fields = jasmin.level2_receipt("x", "UNDELIV", "B1", "a text longer than twenty", RECEIVED_AT, RECEIVED_AT)
    assert (fields["dlvrd"], fields["err"], fields["text"]) == ("000", "001", "a text longer than t")


@pytest.mark.parametrize("headers, thrower", [
    (jasmin.THROWER_HEADERS, True),
    ({"user-agent": jasmin.THROWER_USER_AGENT}, True),
    ({"user-agent": "Jasmin gateway/0.11 OtherThrower"}, True),
    ({"accept": " Text/Plain "}, True),
    ({"user-agent": "curl/8.0", "accept": "*/*"}, False),
    ({"accept": "application/json"}, False),
    ({}, False),
])
def test_who_is_jasmins_thrower(headers, thrower):
    assert jasmin.is_thrower({key.lower(): value for key, value in headers.items()}) is thrower
