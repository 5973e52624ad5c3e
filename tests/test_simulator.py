"""The Jasmin simulator as a real process: Jasmin's two send APIs and its DLR thrower."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.servers import SMSGW, Reply, StubGateway, free_port, healthy, start, wait_until

AUTH = ("sim-user", "sim-pass")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "SMSGW_SIMULATOR_PORT": str(port), "SMSGW_SIMULATOR_USERNAME": AUTH[0],
           "SMSGW_SIMULATOR_PASSWORD": AUTH[1], "SMSGW_SIMULATOR_DELAY": "0.05",
           "SMSGW_SIMULATOR_RETRY_DELAY": "0.05"}
    process = start(env, [*SMSGW, "simulator"], tmp_path_factory.mktemp("sim") / "sim.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url + "/_simulator/config"), what="the simulator")
    yield url
    process.stop()


@pytest.fixture
def receiver(simulator):
    """Where receipts are thrown: answers ACK/Jasmin; the simulator's knobs reset after each test."""
    stub = StubGateway().start()
    stub.answer(200, "ACK/Jasmin", content_type="text/plain")
    yield stub
    stub.stop()
    httpx.post(simulator + "/_simulator/config", json={
        "final_status": "DELIVRD", "duplicates": 0, "out_of_order": False, "error": None, "max_retries": 3})


def rest_send(simulator, **fields):
    return httpx.post(simulator + "/secure/send", auth=AUTH, json={"to": "+14155550111", "from": "S",
                                                                  "content": "hello", **fields})


def receipts(stub, count):
    wait_until(lambda: len(stub.received) >= count, timeout=10, what=f"{count} receipts")
    return [dict(parse_qsl(r.body.decode())) if r.method == "POST" else dict(parse_qsl(urlsplit(r.path).query))
            for r in stub.received]


def test_rest_send_answers_like_jasmin(simulator):
    response = rest_send(simulator)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data.startswith('Success "') and not data.endswith('"')  # no closing quote, as Jasmin


@pytest.mark.parametrize("kwargs, status, text", [
    ({"auth": ("sim-user", "wrong")}, 403, 'Error "Authentication failure for username:sim-user"'),
    ({"json": {"to": "abc", "from": "S", "content": "x"}}, 400, 'Error "Argument [to] has an invalid value: [abc]."'),
    ({"json": {"to": "1", "from": "S", "content": "x", "bogus": 1}}, 400, 'Error "Argument [bogus] is unknown."'),
    ({"json": {"to": "1", "from": "S"}}, 400, 'Error "content or hex-content not present."'),
])
def test_rest_send_errors(simulator, kwargs, status, text):
    response = httpx.post(simulator + "/secure/send", **{"auth": AUTH, **kwargs})
    assert response.status_code == status and response.json() == {"message": text}


def test_http_api_send_by_get_and_post(simulator):
    fields = {"username": AUTH[0], "password": AUTH[1], "to": "15550002", "from": "S", "content": "hi"}
    by_get = httpx.get(simulator + "/send", params=fields)
    by_post = httpx.post(simulator + "/send", data=fields)
    for response in (by_get, by_post):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert response.text.startswith('Success "') and response.text.endswith('"')
    bad = httpx.post(simulator + "/send", data={**fields, "password": "nope"})
    assert (bad.status_code, bad.text) == (403, 'Error "Authentication failure for username:sim-user"')
    missing = httpx.post(simulator + "/send", data={"username": AUTH[0], "password": AUTH[1], "to": "1",
                                                    "content": "x"})
    assert (missing.status_code, missing.text) == (400, 'Error "Mandatory argument [from] is not found."')


def test_ucs2_hex_content_is_read_back(simulator):
    response = httpx.post(simulator + "/secure/send", auth=AUTH, json={
        "to": "1", "from": "S", "coding": 8, "hex-content": "Привет".encode("utf-16-be").hex()})
    assert response.status_code == 200
    assert httpx.get(simulator + "/_simulator/messages").json()["data"][0]["content"] == "Привет"


def test_level_1_then_level_2_receipts_with_jasmins_headers(simulator, receiver):
    dlr_url = f"http://127.0.0.1:{receiver.port}/dlr?token=abc"
    message_id = rest_send(simulator, **{"dlr-url": dlr_url, "dlr-level": 3}).json()["data"].split('"')[1]
    first, second = receipts(receiver, 2)
    assert first == {"id": message_id, "level": "1", "message_status": "ESME_ROK", "connector": "smsc-sim"}
    assert second["id"] == message_id and second["level"] == "2" and second["message_status"] == "DELIVRD"
    assert set(second) == {"id", "level", "message_status", "connector", "id_smsc", "sub", "dlvrd", "subdate",
                           "donedate", "err", "text"}
    request = receiver.received[0]
    assert request.path == "/dlr?token=abc"
    assert request.headers["User-Agent"] == "Jasmin gateway/1.0 DLRThrower"
    assert request.headers["Accept"] == "text/plain"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_get_receipts_and_level_2_only(simulator, receiver):
    dlr_url = f"http://127.0.0.1:{receiver.port}/dlr"
    rest_send(simulator, **{"dlr-url": dlr_url, "dlr-level": 2, "dlr-method": "GET"})
    [only] = receipts(receiver, 1)
    assert receiver.received[0].method == "GET" and only["level"] == "2"


def test_a_receipt_is_thrown_again_until_ack_jasmin(simulator, receiver):
    receiver.upcoming = [Reply(200, b"OK", "text/plain"), Reply(500, b"", "text/plain")]
    rest_send(simulator, **{"dlr-url": f"http://127.0.0.1:{receiver.port}/dlr", "dlr-level": 1})
    wait_until(lambda: len(receiver.received) >= 3, what="three attempts")
    attempts = [r for r in httpx.get(simulator + "/_simulator/receipts").json()["data"]
                if r["answer"] is not None][:3]
    assert [a["acked"] for a in reversed(attempts)] == [False, False, True]


def test_knobs_final_status_duplicates_and_order(simulator, receiver):
    httpx.post(simulator + "/_simulator/config", json={"final_status": "UNDELIV", "duplicates": 1,
                                                      "out_of_order": True})
    rest_send(simulator, **{"dlr-url": f"http://127.0.0.1:{receiver.port}/dlr", "dlr-level": 3})
    thrown = receipts(receiver, 4)
    assert [(r["level"], r["message_status"]) for r in thrown] == [
        ("2", "UNDELIV"), ("2", "UNDELIV"), ("1", "ESME_ROK"), ("1", "ESME_ROK")]


def test_error_knob_makes_every_send_fail(simulator):
    httpx.post(simulator + "/_simulator/config", json={"error": {"status": 412, "text": "No route found"}})
    try:
        response = rest_send(simulator)
        assert (response.status_code, response.json()) == (412, {"message": 'Error "No route found"'})
    finally:
        httpx.post(simulator + "/_simulator/config", json={"error": None})


def test_bad_knobs_are_refused(simulator):
    response = httpx.post(simulator + "/_simulator/config", json={"final_status": "GREAT"})
    assert response.status_code == 422
    assert httpx.get(simulator + "/_simulator/config").json()["data"]["final_status"] == "DELIVRD"


def test_the_generic_json_gateway(simulator, receiver):
    receiver.answer(200, {"ok": True})
    response = httpx.post(simulator + "/http/send", auth=AUTH, json={
        "to": "1", "from": "S", "content": "hi", "dlr-url": f"http://127.0.0.1:{receiver.port}/dlr"})
    assert response.status_code == 201
    message_id = response.json()["message_id"]
    wait_until(lambda: len(receiver.received) >= 1, what="the JSON receipt")
    assert receiver.received[0].json() == {"message_id": message_id, "status": "delivered",
                                           "reported_status": "DELIVRD"}
    assert httpx.post(simulator + "/http/send", auth=("x", "y"), json={}).status_code == 401
