"""Sending over HTTP to a real stub gateway: what it receives, and every way it can fail."""

from __future__ import annotations

import asyncio
import base64
import threading
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.servers import Reply, error_body, free_port, run_smsgw


def send(client, gateway, **body):
    return client.post(f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": "+14155550123",
                                                                        "message": "hello", **body})


def test_a_send_reaches_the_gateway_in_jasmin_rest_format(client, stub_gateway, stub):
    response = send(client, stub_gateway, from_sender="ACME2", message="Your code is 1234")
    assert response.status_code == 201
    assert response.json()["message"] == "SMS submitted successfully."
    [request] = stub.received
    assert (request.method, request.path) == ("POST", "/secure/send")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"jasmin-user:jasmin-secret-pw").decode()
    body = request.json()
    assert body["to"] == "+14155550123" and body["from"] == "ACME2"
    assert body["content"] == "Your code is 1234"
    assert body["dlr"] == "yes" and body["dlr-level"] == 3 and body["dlr-method"] == "POST"
    assert body["dlr-url"].endswith(f"/webhooks/jasmin/{stub_gateway['id']}/dlr?token={stub_gateway['callback_token']}")


def test_success_records_submitted_with_the_gateway_id(client, stub_gateway):
    message = send(client, stub_gateway).json()["data"]
    assert message["delivery_status"] == "submitted"
    assert message["external_message_id"] == "stub-id-1"
    assert message["remote_response"] == {"data": 'Success "stub-id-1'}
    assert message["submitted_at"].endswith("Z")
    assert message["created_at"] <= message["submitted_at"]
    assert message["failure_reason"] is None and message["delivered_at"] is None
    assert client.get(f"/api/sms-messages/{message['id']}").json()["data"] == message


def test_the_message_is_stored_queued_before_the_gateway_is_contacted(client, stub_gateway, stub):
    release = threading.Event()
    stub.answer(200, {"data": 'Success "held-1'}, hold=release)
    result = {}
    sender = threading.Thread(target=lambda: result.update(response=send(client.__class__(
        base_url=client.base_url, headers=client.headers, timeout=10), stub_gateway)))
    sender.start()
    try:
        assert stub.arrived.wait(5), "the gateway was never called"
        listing = client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"]
        assert [m["delivery_status"] for m in listing] == ["queued"]
        assert listing[0]["submitted_at"] is None
    finally:
        release.set()
        sender.join(10)
    assert result["response"].status_code == 201


def test_default_sender_is_the_gateways(client, stub_gateway, stub):
    message = send(client, stub_gateway).json()["data"]
    assert message["from_sender"] == "ACME"
    assert stub.received[-1].json()["from"] == "ACME"


def test_without_any_sender_the_send_is_422_and_nothing_is_sent(client, make_gateway, stub):
    gateway = make_gateway(server_port=stub.port, default_sender_id=None)
    response = send(client, gateway)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["from_sender"]
    assert stub.received == []
    assert client.get(f"/api/sms-gateways/{gateway['id']}/messages").json()["data"] == []


def test_explicit_callback_url_is_passed_as_dlr_url(client, stub_gateway, stub):
    message = send(client, stub_gateway, callback_url="https://app.example.com/dlr?ref=42").json()["data"]
    assert stub.received[-1].json()["dlr-url"] == "https://app.example.com/dlr?ref=42"
    assert message["callback_url"] == "https://app.example.com/dlr?ref=42"


def test_the_callback_token_is_not_shown_on_the_message(client, stub_gateway):
    message = send(client, stub_gateway).json()["data"]
    assert stub_gateway["callback_token"] not in str(message)
    assert message["callback_url"].endswith("dlr?token=%5Bredacted%5D") or message["callback_url"].endswith(
        "dlr?token=[redacted]")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"message": "m"}, "to_number"),
        ({"to_number": "", "message": "m"}, "to_number"),
        ({"to_number": "+14155550101" * 31, "message": "m"}, "to_number"),
        ({"to_number": "call me", "message": "m"}, "to_number"),
        ({"to_number": 15551234567, "message": "m"}, "to_number"),
        ({"to_number": "+14155550102"}, "message"),
        ({"to_number": "+14155550102", "message": ""}, "message"),
        ({"to_number": "+14155550102", "message": ["a"]}, "message"),
        ({"to_number": "+14155550102", "message": "x" * 1601}, "message"),
        ({"to_number": "+14155550102", "message": "m", "from_sender": "x" * 21}, "from_sender"),
        ({"to_number": "+14155550102", "message": "m", "callback_url": "ftp://x"}, "callback_url"),
        ({"to_number": "+14155550102", "message": "m", "callback_url": 5}, "callback_url"),
        ({"to_number": "+14155550102", "message": "m", "priority": 1}, "priority"),
    ],
)
def test_invalid_sends_are_422_and_store_and_send_nothing(client, stub_gateway, stub, body, field):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json=body)
    assert response.status_code == 422
    assert field in response.json()["errors"]
    assert stub.received == []
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}").json()["data"]["messages_count"] == 0


def test_malformed_json_send_is_400(client, stub_gateway, stub):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", content=b'{"to_number": ',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["The body is not valid JSON."]}
    assert stub.received == []


def test_a_form_send_works(client, stub_gateway, stub):
    response = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                           data={"to_number": "+14155550113", "message": "form"})
    assert response.status_code == 201
    assert stub.received[-1].json()["content"] == "form"


def test_unknown_gateway_is_404(client):
    assert client.post("/api/sms-gateways/987654/send", json={"to_number": "+14155550101", "message": "m"}).status_code == 404


def test_inactive_gateway_is_409_and_nothing_is_stored_or_sent(client, stub_gateway, stub):
    client.patch(f"/api/sms-gateways/{stub_gateway['id']}", json={"is_active": False})
    response = send(client, stub_gateway)
    assert response.status_code == 409
    assert "inactive" in response.json()["message"]
    assert stub.received == []
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"] == []


def failed(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    message = response.json()["data"]
    if code is not None:
        assert message["failure_code"] == code
    assert message["delivery_status"] == "failed"
    assert message["failed_at"].endswith("Z") and message["submitted_at"] is None
    assert message["external_message_id"] is None
    return message


def test_gateway_timeout_is_504_and_failed(client, stub_gateway, stub):
    stub.answer(200, {"data": 'Success "late'}, hold=threading.Event())  # released at teardown
    message = failed(send(client, stub_gateway), 504, "timeout")
    assert "did not answer within 1 s" in message["failure_reason"]


def test_connection_refused_is_502_and_failed(client, make_gateway):
    gateway = make_gateway(server_port=free_port())  # nothing listens there
    message = failed(send(client, gateway), 502, "unreachable")
    assert "could not connect" in message["failure_reason"]


def test_gateway_hanging_up_is_502_and_failed(client, stub_gateway, stub):
    stub.answer(hang_up=True)
    message = failed(send(client, stub_gateway), 502)
    assert message["failure_reason"]


def test_gateway_500_is_502_with_its_error(client, stub_gateway, stub):
    stub.answer(500, {"message": 'Error "Cannot send submit_sm, check SMPPClientManagerPB log file for details"'})
    message = failed(send(client, stub_gateway), 502, "gateway_error")
    assert message["failure_reason"] == (
        "gateway answered HTTP 500: Cannot send submit_sm, check SMPPClientManagerPB log file for details")
    assert message["remote_response"] == {
        "message": 'Error "Cannot send submit_sm, check SMPPClientManagerPB log file for details"'}


def test_gateway_4xx_with_an_error_body_is_502_with_its_error(client, stub_gateway, stub):
    stub.answer(412, {"message": 'Error "No route found"'})
    message = failed(send(client, stub_gateway), 502)
    assert message["failure_reason"] == "gateway answered HTTP 412: No route found"


def test_gateway_error_without_json_keeps_the_raw_reply(client, stub_gateway, stub):
    stub.answer(403, "<html>Forbidden</html>", content_type="text/html")
    message = failed(send(client, stub_gateway), 502)
    assert message["failure_reason"] == "gateway answered HTTP 403"
    assert message["remote_response"] == {"http_status": 403, "body": "<html>Forbidden</html>"}


@pytest.mark.parametrize("body", ["not json at all", '{"data": "Queued"}', "[1, 2, 3]"])
def test_gateway_200_with_an_unparseable_body_is_502(client, stub_gateway, stub, body):
    stub.answer(200, body)
    message = failed(send(client, stub_gateway), 502, "unreadable_reply")
    assert message["failure_reason"].startswith("gateway reply could not be understood (HTTP 200)")
    assert message["remote_response"]


def test_no_fault_leaves_a_message_queued(client, stub_gateway, stub):
    faults = [
        dict(status=500, body=b"boom"),
        dict(status=412, body=b'{"message": "Error \\"No route found\\""}'),
        dict(status=200, body=b"garbage"),
        dict(hang_up=True),
        dict(hold=threading.Event()),  # times out; released at teardown
    ]
    for fault in faults:
        stub.reply = Reply(**fault)
        send(client, stub_gateway)
    client.patch(f"/api/sms-gateways/{stub_gateway['id']}", json={"server_port": free_port()})
    send(client, stub_gateway)  # connection refused
    listing = client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"]
    assert len(listing) == len(faults) + 1
    assert {m["delivery_status"] for m in listing} == {"failed"}
    assert all(m["failure_reason"] and m["failed_at"] for m in listing)


def test_jasmin_throttling_is_recorded_as_throttled(client, stub_gateway, stub):
    stub.answer(403, {"message": 'Error "User throughput exceeded"'})
    message = failed(send(client, stub_gateway), 502, "throttled")
    assert message["failure_reason"] == "gateway answered HTTP 403: User throughput exceeded"


@pytest.mark.parametrize("text, encoding, segments", [
    ("Hello", "gsm7", 1), ("a" * 161, "gsm7", 2), ("Привет", "ucs2", 1), ("ж" * 71, "ucs2", 2),
])
def test_the_message_records_its_encoding_and_segments(client, stub_gateway, stub, text, encoding, segments):
    message = send(client, stub_gateway, message=text).json()["data"]
    assert (message["encoding"], message["segments"]) == (encoding, segments)
    sent = stub.received[-1].json()
    if encoding == "gsm7":
        assert (sent["coding"], sent["content"]) == (0, text)
    else:
        assert sent["coding"] == 8 and bytes.fromhex(sent["hex-content"]).decode("utf-16-be") == text


def test_a_jasmin_http_gateway_gets_a_form_with_its_credentials(client, make_gateway, stub):
    stub.answer(200, 'Success "http-api-1"', content_type="text/plain")
    gateway = make_gateway(provider_type="jasmin-http", api_path="send", server_port=stub.port)
    response = send(client, gateway, message="Hi there")
    assert response.status_code == 201
    message = response.json()["data"]
    assert message["external_message_id"] == "http-api-1"
    request = stub.received[-1]
    assert (request.method, request.path) == ("POST", "/send")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in request.headers
    form = dict(parse_qsl(request.body.decode()))
    assert form["username"] == "jasmin-user" and form["password"] == "jasmin-secret-pw"
    assert (form["to"], form["content"], form["dlr-level"], form["dlr-method"]) == ("+14155550123", "Hi there",
                                                                                      "3", "POST")
    assert form["dlr-url"].endswith(f"/webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']}")
    # the password never shows in what smsgw returns
    assert "jasmin-secret-pw" not in response.text


def test_generic_http_gateway_reads_the_id_from_the_reply(client, make_gateway, stub):
    gateway = make_gateway(server_port=stub.port, provider_type="http", api_path="/v1/messages")
    for reply, expected in (({"message_id": "a1"}, "a1"), ({"id": 77}, "77"),
                            ({"messageId": "c3"}, "c3"), ({"data": {"id": "d4"}}, "d4")):
        stub.answer(202, reply)
        message = send(client, gateway).json()["data"]
        assert message["external_message_id"] == expected
        assert message["remote_response"] == reply
    assert stub.received[-1].path == "/v1/messages"
    assert stub.received[-1].json()["to"] == "+14155550123"


def test_messages_list_filters_and_paginates_newest_first(client, stub_gateway, stub):
    ids = []
    for n in range(5):
        stub.answer(200, {"data": f'Success "page-{n}'})
        ids.append(send(client, stub_gateway, to_number=f"+1415555010{n % 2}").json()["data"]["id"])
    stub.answer(500, "")
    failed_id = send(client, stub_gateway).json()["data"]["id"]
    base = f"/api/sms-gateways/{stub_gateway['id']}/messages"

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(base, params=params).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert seen == [failed_id, *reversed(ids)]

    by_status = client.get(base, params={"delivery_status": "FAILED"}).json()["data"]
    assert [m["id"] for m in by_status] == [failed_id]
    by_number = client.get(base, params={"to_number": "+14155550101"}).json()["data"]
    assert [m["id"] for m in by_number] == [ids[3], ids[1]]


@pytest.mark.parametrize("params, field", [({"limit": "0"}, "limit"), ({"limit": "abc"}, "limit"),
                                           ({"limit": "1000"}, "limit"), ({"cursor": "%%%"}, "cursor"),
                                           ({"cursor": "bm9wZQ"}, "cursor")])
def test_bad_list_parameters_are_422(client, stub_gateway, params, field):
    response = client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages", params=params)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]


# --- destination numbers: E.164, and only numbers that can be placed ----------------


def test_a_number_typed_with_punctuation_is_stored_and_sent_as_e164(client, stub_gateway, stub):
    response = send(client, stub_gateway, to_number="+1 (415) 555-0123")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["to_number"] == "+14155550123"
    assert stub.received[-1].json()["to"] == "+14155550123"


@pytest.mark.parametrize("number, says", [
    ("1", "international format"),
    ("4155550123", "international format"),
    ("0044 20 7946 0958", "international format"),
    ("+15555550123", "not a valid phone number"),
    ("+44 999", "not a valid phone number"),
    ("+1-800-FLOWERS", "only digits"),
])
def test_a_number_that_cannot_be_placed_is_422_and_nothing_is_stored_or_sent(client, stub_gateway, stub,
                                                                             number, says):
    response = send(client, stub_gateway, to_number=number)
    assert response.status_code == 422, response.text
    [problem] = response.json()["errors"]["to_number"]
    assert says in problem and "+14155550123" in problem
    assert stub.received == []
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"] == []


def test_a_premium_rate_number_is_422_and_nothing_is_stored_or_sent(client, stub_gateway, stub):
    response = send(client, stub_gateway, to_number="+1 900 555 0199")
    assert response.status_code == 422, response.text
    [problem] = response.json()["errors"]["to_number"]
    assert "premium-rate numbers are not accepted" in problem
    assert stub.received == []
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"] == []


def test_the_list_finds_a_number_however_it_is_typed(client, stub_gateway):
    sent = send(client, stub_gateway, to_number="+14155550177").json()["data"]
    base = f"/api/sms-gateways/{stub_gateway['id']}/messages"
    for typed in ("+14155550177", "+1 (415) 555-0177"):
        assert [m["id"] for m in client.get(base, params={"to_number": typed}).json()["data"]] == [sent["id"]]
    assert client.get(base, params={"to_number": "+14155550178"}).json()["data"] == []


# --- a key's destination countries (against SMS-pumping fraud) ----------------------


def test_a_key_limited_to_a_country_may_send_only_there(api, client, stub_gateway, stub):
    made = run_smsgw(api.env, "apikey", "create", "--name", "uk only", "--country", "GB").stdout
    with httpx.Client(base_url=api.url, timeout=10,
                      headers={"Authorization": f"Bearer {made.strip().splitlines()[-1]}"}) as uk_only:
        for number, country in (("+1 415 555 0123", "United States (US)"), ("+33 6 12 34 56 78", "France (FR)")):
            refused = send(uk_only, stub_gateway, to_number=number)
            assert refused.status_code == 403, refused.text
            assert error_body(refused) == {"message": f"This key may not send to {country}.",
                                      "errors": {"to_number": ["This key may send only to numbers in: GB."]}}
        assert stub.received == []
        assert client.get(f"/api/sms-gateways/{stub_gateway['id']}/messages").json()["data"] == []
        # an invalid number is still a 422 about the number, not a 403 about the country
        assert send(uk_only, stub_gateway, to_number="+15555550123").status_code == 422

        allowed = send(uk_only, stub_gateway, to_number="+44 20 7946 0958")
        assert allowed.status_code == 201, allowed.text
        assert stub.received[-1].json()["to"] == "+442079460958"
    # an unlimited key still sends anywhere
    assert send(client, stub_gateway, to_number="+1 415 555 0123").status_code == 201
    # the refusal is in the audit trail, by key name, without the number
    denied = client.get("/api/audit-events", params={"action": "scope.denied"}).json()["data"]
    mine = [event for event in denied if event["actor"] == "uk only"]
    assert mine and mine[0]["details"]["reason"] == "This key may not send to United States (US)."
    assert "4155550123" not in str(mine)


def test_sends_at_the_same_moment_are_each_stored_and_sent(api, api_key, stub_gateway, stub):
    """Sends that arrive together are stored in one transaction: each is its own message,
    sent once (none is taken for another's replay), and each answer is its own."""
    numbers = [f"+1415555{n:04d}" for n in range(1, 25)]

    async def send_all():
        async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {api_key}"},
                                     timeout=30) as http:
            return await asyncio.gather(*(http.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                                                    json={"to_number": n, "message": "together"}) for n in numbers))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [201] * len(numbers), [
        r.json()["data"]["failure_reason"] for r in responses if r.status_code != 201]
    messages = [r.json()["data"] for r in responses]
    assert [m["to_number"] for m in messages] == numbers
    assert len({m["id"] for m in messages}) == len(numbers)
    assert sorted(r.json()["to"] for r in stub.received) == numbers
