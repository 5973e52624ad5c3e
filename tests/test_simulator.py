"""The Jasmin simulator as a real process: Jasmin's two send APIs, its DLR thrower, and a
real gateway's limits (throughput, scripted refusals, slow replies, dropped connections)."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from simulator import limits
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
def knobs(simulator):
    """The simulator's knobs, reset after the test."""
    yield simulator + "/_simulator/config"
    httpx.post(simulator + "/_simulator/config", json={
        "final_status": "DELIVRD", "duplicates": 0, "out_of_order": False, "error": None, "max_retries": 3,
        "throughput": None, "script": []})


@pytest.fixture
def receiver(simulator, knobs):
    """Where receipts are thrown: answers ACK/Jasmin; the simulator's knobs reset after each test."""
    stub = StubGateway().start()
    stub.answer(200, "ACK/Jasmin", content_type="text/plain")
    yield stub
    stub.stop()


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


# --- a real gateway's limits ---------------------------------------------------

HTTP_FIELDS = {"username": AUTH[0], "password": AUTH[1], "to": "15550002", "from": "S"}


def send_on(simulator, route, content):
    """One send on ``route`` (rest, http or generic) carrying ``content``."""
    if route == "rest":
        return rest_send(simulator, content=content)
    if route == "http":
        return httpx.post(simulator + "/send", data={**HTTP_FIELDS, "content": content})
    return httpx.post(simulator + "/http/send", auth=AUTH, json={"to": "1", "from": "S", "content": content})


def accepted_contents(simulator):
    return [m["content"] for m in httpx.get(simulator + "/_simulator/messages").json()["data"]]


def stats(simulator):
    return httpx.get(simulator + "/_simulator/stats").json()


THROTTLED = {
    "rest": lambda r: r.status_code == 403 and r.json() == {"message": 'Error "User throughput exceeded"'},
    "http": lambda r: r.status_code == 403 and r.text == 'Error "User throughput exceeded"',
    "generic": lambda r: (r.status_code == 429 and r.json() == {"error": "too many requests"}
                          and int(r.headers["Retry-After"]) >= 1),
}


@pytest.mark.parametrize("route", ["rest", "http", "generic"])
def test_throughput_refuses_a_send_too_soon_after_the_last_accepted(simulator, knobs, route):
    assert httpx.post(knobs, json={"throughput": 0.5}).status_code == 200  # one every 2 s: a generous margin
    # The first send accepted (once any earlier test's last one is 2 s old)...
    wait_until(lambda: send_on(simulator, route, "paced-first").status_code < 300, what="an accepted send")
    # ...makes the next one, sent at once, too soon: refused as Jasmin refuses it.
    before = stats(simulator)["refused"]["throughput"]
    too_soon = send_on(simulator, route, f"too-soon-{route}")
    assert THROTTLED[route](too_soon), (too_soon.status_code, too_soon.headers, too_soon.text)
    assert f"too-soon-{route}" not in accepted_contents(simulator)
    assert stats(simulator)["refused"]["throughput"] >= before + 1
    # A send spaced by the interval is accepted again.
    wait_until(lambda: send_on(simulator, route, "paced-later").status_code < 300, what="a spaced send accepted")


def test_pace_is_jasmins_minimum_interval_between_accepted_sends():
    pace = limits.Pace()
    assert pace.admit(2, 100.0) == 0  # the first send always goes
    assert pace.admit(2, 100.1) == pytest.approx(0.4)
    assert pace.admit(2, 100.4) == pytest.approx(0.1)  # a refusal does not move the mark
    assert pace.admit(2, 100.5) == 0
    assert pace.admit(None, 100.5) == 0  # no throughput: no pacing
    assert limits.retry_after(0.1) == "1" and limits.retry_after(2.2) == "3"


def test_per_second_counts_forget_seconds_older_than_ten_minutes():
    counts = limits.Stats()
    for now in (1000.2, 1000.7, 1001.0, 1000.0 + limits.KEEP_SECONDS + 1):
        counts.count_accepted(now)
    assert counts.accepted == 4
    assert counts.per_second == {1001: 1, 1000 + limits.KEEP_SECONDS + 1: 1}


def test_without_throughput_back_to_back_sends_are_all_accepted(simulator, knobs):
    httpx.post(knobs, json={"throughput": None})
    assert [send_on(simulator, "generic", "free").status_code for _ in range(5)] == [201] * 5


def test_a_scripted_status_answers_once_on_each_route_then_sends_are_normal(simulator, knobs):
    script = [{"status": 503, "text": "Service unavailable", "retry_after": 2}] * 3
    assert httpx.post(knobs, json={"script": script}).status_code == 200
    rest, http, generic = (send_on(simulator, route, "scripted-503") for route in ("rest", "http", "generic"))
    assert (rest.status_code, rest.json()) == (503, {"message": 'Error "Service unavailable"'})
    assert (http.status_code, http.text) == (503, 'Error "Service unavailable"')
    assert (generic.status_code, generic.json()) == (503, {"error": "Service unavailable"})
    assert {r.headers["Retry-After"] for r in (rest, http, generic)} == {"2"}
    assert "scripted-503" not in accepted_contents(simulator)
    assert httpx.get(knobs).json()["data"]["script"] == []
    assert send_on(simulator, "rest", "after-script").status_code == 200


def test_a_scripted_delay_is_a_timeout_for_the_caller_but_the_message_is_accepted(simulator, knobs):
    httpx.post(knobs, json={"script": [{"delay": 1.5}]})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(simulator + "/secure/send", auth=AUTH, timeout=0.3,
                   json={"to": "1", "from": "S", "content": "slow-one"})
    wait_until(lambda: "slow-one" in accepted_contents(simulator), what="the slow send accepted")
    assert send_on(simulator, "rest", "fast-again").status_code == 200


def test_a_scripted_drop_closes_the_connection_unanswered(simulator, knobs):
    httpx.post(knobs, json={"script": [{"drop": True}]})
    before = stats(simulator)["refused"]["dropped"]
    with pytest.raises(httpx.RemoteProtocolError):
        send_on(simulator, "generic", "dropped-one")
    assert "dropped-one" not in accepted_contents(simulator)
    assert stats(simulator)["refused"]["dropped"] == before + 1
    assert send_on(simulator, "generic", "after-drop").status_code == 201


@pytest.mark.parametrize("changes", [
    {"throughput": 0}, {"throughput": "fast"}, {"script": {"status": 503}}, {"script": [{"status": 200}]},
    {"script": [{"status": 503, "retry_after": 1.5}]}, {"script": [{"delay": -1}]}, {"script": [{"drop": 1}]},
    {"script": [{"drop": True, "delay": 1}]}, {"script": [{"wait": 1}]},
])
def test_bad_limits_are_refused(simulator, knobs, changes):
    response = httpx.post(knobs, json=changes)
    assert response.status_code == 422, changes
    current = httpx.get(knobs).json()["data"]
    assert (current["throughput"], current["script"]) == (None, [])


def test_stats_count_every_accepted_send_per_second_and_refusals_until_reset(simulator, knobs):
    httpx.post(simulator + "/_simulator/stats/reset")
    for _ in range(3):
        assert send_on(simulator, "generic", "counted").status_code == 201
    httpx.post(knobs, json={"error": {"status": 412, "text": "No route found"}})
    assert send_on(simulator, "rest", "not-counted").status_code == 412
    counted = stats(simulator)
    assert counted["accepted"] == 3 and sum(counted["per_second"].values()) == 3
    assert all(second.isdigit() for second in counted["per_second"])
    assert counted["refused"]["error"] == 1
    httpx.post(simulator + "/_simulator/stats/reset")
    assert stats(simulator) == {"accepted": 0, "refused": dict.fromkeys(counted["refused"], 0), "per_second": {}}


def test_the_listing_records_validity_period(simulator):
    assert rest_send(simulator, **{"validity-period": 30}).status_code == 200
    assert httpx.get(simulator + "/_simulator/messages").json()["data"][0]["validity-period"] == 30
