"""``smsgw webhook-receiver`` as a real process: requests signed by the ``standardwebhooks``
package verify, bad ones are refused and recorded, a script of answers is followed in order,
and what it prints names each event but never a secret."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from api import webhook_signing
from simulator import receiver
from tests.servers import SMSGW, free_port, run_smsgw, start, wait_for_start, wait_until

SECRET = webhook_signing.new_secret()
OTHER = webhook_signing.new_secret()


def payload(message_id: int = 12, sequence: int = 3, state: str = "delivered") -> bytes:
    return json.dumps({"type": f"message.{state}", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"id": message_id, "state": state, "sequence": sequence,
                                "client_reference": "order-1"}}).encode()


def signed(secret: str, webhook_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers signed by the reference package, not by our code."""
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(stamp, tz=timezone.utc), body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(stamp), "webhook-signature": signature,
            "content-type": "application/json"}


class Running:
    def __init__(self, tmp_path, *args: str, env_secret: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "SMSGW_WEBHOOK_SECRET"}
        if env_secret is not None:
            env["SMSGW_WEBHOOK_SECRET"] = env_secret
        self.process = start(env, [*SMSGW, "webhook-receiver", "--port", str(self.port), "--test-controls", *args],
                             tmp_path / f"receiver-{self.port}.log")
        wait_for_start(self.process, self.answering, "the webhook receiver")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def answering(self) -> bool:
        try:
            return httpx.get(self.url + "/_receiver/events", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def events(self) -> list[dict]:
        return self.http.get("/_receiver/events").json()["data"]

    def wait_for_line(self, text: str) -> str:
        wait_until(lambda: text in self.process.log(), timeout=30, what=f"the line {text!r}")
        return self.process.log()

    def stop(self) -> None:
        self.http.close()
        self.process.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One receiver verifying with SECRET, given through the environment (kept out of ps)."""
    server = Running(tmp_path_factory.mktemp("receiver"), env_secret=SECRET)
    yield server
    server.stop()


@pytest.fixture
def rx(running):
    running.http.post("/_receiver/secrets", json={"secrets": [SECRET]}).raise_for_status()
    running.http.post("/_receiver/reset").raise_for_status()
    return running


def test_it_says_where_it_listens_and_that_it_verifies(rx):
    log = rx.process.log()
    assert f"listening on http://127.0.0.1:{rx.port}/" in log
    assert "verifying signatures with 1 secret" in log


def test_a_request_signed_by_the_package_is_answered_204_recorded_and_printed(rx):
    body = payload(12, 3)
    headers = signed(SECRET, "msg_12_3", body)
    answer = rx.http.post("/hooks/smsgw", content=body, headers=headers)
    assert answer.status_code == 204
    [event] = rx.events()
    assert event["verified"] is True and event["reason"] is None and event["status"] == 204
    assert event["webhook_id"] == "msg_12_3" and event["timestamp"] == int(headers["webhook-timestamp"])
    assert event["path"] == "/hooks/smsgw" and event["body"] == json.loads(body)
    assert event["headers"]["webhook-signature"] == headers["webhook-signature"]
    assert abs(event["received_at"] - time.time()) < 60
    log = rx.wait_for_line("(webhook-id msg_12_3)")
    assert "verified message.delivered message 12 seq 3 state delivered (webhook-id msg_12_3)" in log
    assert SECRET not in log and SECRET[6:] not in log
    assert headers["webhook-signature"].split(",", 1)[1] not in log


def test_a_bad_signature_is_refused_401_and_recorded_unverified(rx):
    body = payload(13, 1, "failed")
    wrong = signed(OTHER, "msg_13_1", body)
    answer = rx.http.post("/", content=body, headers=wrong)
    assert answer.status_code == 401 and answer.json()["message"] == "no matching signature"
    tampered = {**signed(SECRET, "msg_13_2", body), "webhook-id": "msg_13_9"}
    assert rx.http.post("/", content=body, headers=tampered).status_code == 401
    stale = signed(SECRET, "msg_13_3", body, timestamp=int(time.time()) - 3600)
    assert rx.http.post("/", content=body, headers=stale).status_code == 401
    unsigned = rx.http.post("/", content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401 and "missing header" in unsigned.json()["message"]
    events = rx.events()
    assert [e["verified"] for e in events] == [False] * 4 and [e["status"] for e in events] == [401] * 4
    assert "too old" in events[2]["reason"]
    log = rx.wait_for_line("(webhook-id msg_13_3)")
    assert ("UNVERIFIED (no matching signature) message.failed message 13 seq 1 state failed "
            "(webhook-id msg_13_1)") in log
    assert SECRET not in log and OTHER not in log


def test_the_script_is_answered_in_order_then_falls_back(rx):
    script = {"answers": [{"status": 500, "body": "boom"}, {"status": 200}, {"status": 410},
                          {"status": 307, "location": "http://127.0.0.1:9/elsewhere"},
                          {"status": 503, "retry_after": 2}, {"delay": 1}],
              "then": {"status": 202}}
    assert rx.http.post("/_receiver/script", json=script).json()["data"] == {"answers": 6, "then": True}
    answers = []
    for n in range(8):
        body = payload(20, n)
        started = time.monotonic()
        answers.append((rx.http.post("/", content=body, headers=signed(SECRET, f"msg_20_{n}", body)),
                        time.monotonic() - started))
    assert [a.status_code for a, _ in answers] == [500, 200, 410, 307, 503, 204, 202, 202]
    assert answers[0][0].text == "boom"
    assert answers[3][0].headers["location"] == "http://127.0.0.1:9/elsewhere"
    assert answers[4][0].headers["retry-after"] == "2"
    assert answers[5][1] >= 1.0  # the delayed answer waited, then gave the verified 204
    assert [e["status"] for e in rx.events()] == [500, 200, 410, 307, 503, 204, 202, 202]
    assert all(e["verified"] for e in rx.events())
    assert "answered 500" in rx.wait_for_line("(webhook-id msg_20_7)")


def test_without_then_the_script_falls_back_to_verification(rx):
    rx.http.post("/_receiver/script", json={"answers": [{"status": 500}]}).raise_for_status()
    body = payload(21, 1)
    assert rx.http.post("/", content=body, headers=signed(SECRET, "a", body)).status_code == 500
    assert rx.http.post("/", content=body, headers=signed(SECRET, "b", body)).status_code == 204
    assert rx.http.post("/", content=body, headers=signed(OTHER, "c", body)).status_code == 401


def test_reset_forgets_events_and_script(rx):
    rx.http.post("/_receiver/script", json={"answers": [{"status": 500}]}).raise_for_status()
    rx.http.post("/", content=b"{}")
    assert len(rx.events()) == 1
    rx.http.post("/_receiver/reset").raise_for_status()
    assert rx.events() == []
    body = payload()
    assert rx.http.post("/", content=body, headers=signed(SECRET, "x", body)).status_code == 204


def test_new_secrets_replace_the_old_and_a_rotation_verifies_with_either(rx):
    rx.http.post("/_receiver/secrets", json={"secrets": [OTHER]}).raise_for_status()
    body = payload(30, 1)
    assert rx.http.post("/", content=body, headers=signed(SECRET, "r1", body)).status_code == 401
    both = webhook_signing.headers([SECRET, OTHER], "r2", int(time.time()), body)  # as during a rotation's grace
    assert rx.http.post("/", content=body, headers=both).status_code == 204


def test_bad_script_or_secrets_are_422_in_the_contract_shape_and_never_echo_a_secret(rx):
    bad = rx.http.post("/_receiver/script", json={"answers": [{"status": 99}, {"delay": "soon"}], "then": 3})
    assert bad.status_code == 422
    assert set(bad.json()) == {"message", "errors"} and set(bad.json()["errors"]) == {"answers", "then"}
    assert rx.http.post("/_receiver/script", content=b"not json").status_code == 422
    almost = "whsec_" + "A" * 10
    refused = rx.http.post("/_receiver/secrets", json={"secrets": [SECRET, almost]})
    assert refused.status_code == 422 and "secret 1" in refused.json()["errors"]["secrets"][0]
    assert SECRET not in refused.text and almost[6:] not in refused.text
    body = payload()  # the old secret still holds
    assert rx.http.post("/", content=body, headers=signed(SECRET, "y", body)).status_code == 204


def test_controls_are_not_recorded_or_printed(rx):
    rx.http.post("/_receiver/script", json={"answers": []}).raise_for_status()
    assert rx.http.get("/_receiver/nothing").status_code == 404
    assert rx.http.post("/_receiver/nothing", content=b"{}").status_code == 404
    assert rx.events() == []
    assert "/_receiver" not in rx.process.log()


def test_without_a_secret_every_event_is_answered_204_and_printed_unverified(tmp_path):
    server = Running(tmp_path)
    try:
        assert "NOT verifying signatures" in server.process.log()
        body = payload(40, 2, "submitted")
        assert server.http.post("/x", content=body, headers=signed(SECRET, "msg_40_2", body)).status_code == 204
        [event] = server.events()
        assert event["verified"] is False and event["reason"] == "no secret given"
        log = server.wait_for_line("(webhook-id msg_40_2)")
        assert "UNVERIFIED (no secret given) message.submitted message 40 seq 2 state submitted" in log
    finally:
        server.stop()


def test_json_output_prints_verified_bodies_and_secrets_from_the_command_line(tmp_path):
    server = Running(tmp_path, "--json", "--secret", OTHER, "--secret", SECRET)
    try:
        assert "verifying signatures with 2 secrets" in server.process.log()
        body = payload(50, 4)
        assert server.http.post("/", content=body, headers=signed(SECRET, "msg_50_4", body)).status_code == 204
        wait_until(lambda: json.dumps(json.loads(body)) in server.process.log(), timeout=30, what="the JSON line")
        bad = payload(51, 1)
        assert server.http.post("/", content=bad, headers=signed(webhook_signing.new_secret(), "msg_51_1", bad)
                                ).status_code == 401
        log = server.wait_for_line("UNVERIFIED (no matching signature) message.delivered message 51")
        assert SECRET not in log and OTHER not in log
    finally:
        server.stop()


def test_a_malformed_secret_stops_it_at_start_without_echoing_it():
    almost = "whsec_" + "B" * 10
    env = {**os.environ, "SMSGW_WEBHOOK_SECRET": f"{SECRET},{almost}"}
    done = run_smsgw(env, "webhook-receiver", "--port", str(free_port()), check=False)
    assert done.returncode == 2
    assert "webhook secret" in done.stderr
    assert almost[6:] not in done.stderr + done.stdout and SECRET not in done.stderr + done.stdout


def test_a_printed_line_has_no_control_characters_from_the_body():
    event = {"verified": True, "reason": None, "status": 204, "webhook_id": "id\n\x1b[2Jforged",
             "body": {"type": "message.delivered\nverified message.fake", "data": {"id": 1}}}
    printed = receiver.line(event)
    assert "\n" not in printed and "\x1b" not in printed
    assert printed.startswith("verified message.delivered?verified message.fake message 1")


def test_without_test_controls_nobody_can_read_or_rewire_it(tmp_path):
    """Served for users (make run), the receiver answers webhooks only: its events, script
    and secrets are not reachable by whoever can reach its port."""
    port = free_port()
    process = start(dict(os.environ), [*SMSGW, "webhook-receiver", "--port", str(port), "--secret", SECRET],
                    tmp_path / "plain.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_start(process, lambda: _answers(url), "the receiver")
        assert httpx.get(url + "/_receiver/events").status_code == 404
        assert httpx.post(url + "/_receiver/secrets", json={"secrets": [OTHER]}).status_code == 404
        body = payload()
        assert httpx.post(url + "/hooks", content=body, headers=signed(SECRET, "msg_12_3", body)).status_code == 204
    finally:
        process.stop()


def _answers(url: str) -> bool:
    try:
        httpx.post(url + "/x", content=b"{}", timeout=1)
        return True
    except httpx.HTTPError:
        return False
