"""smsgw against a real Jasmin 0.11.0 whose user may send only a few messages a second.

Jasmin limits a user's HTTP sends with ``mt_messaging_cred quota http_throughput``:
a send that comes sooner than 1/rate s after the user's last accepted one is
answered 403 ``User throughput exceeded`` (``jasmin/protocols/http/endpoints/send.py``).
smsgw is not told the limit: its dispatcher must take those 403s as "not now",
slow down and retry, so that a batch still ends delivered, each SMS sent once
(issue 12, item 10). A second gateway told a rate just under the limit should
hardly meet the 403 at all.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

import httpx
import pytest

from tests.servers import free_port, run_smsgw, start_api, start_guard, wait_until

from .jasmin import add_limited_user

RATE = 2            # the Jasmin user's http_throughput, messages a second
BATCH = 50
DEADLINE = 180.0    # seconds: 50 at 2/s is 25 s, plus backoffs after the 403s, on a slow machine
SLOW_USER = ("interop-slow", "slow-pw")
THROTTLE_MARK = "a throttle: it does not use up an attempt"  # api.retries' reason for a throttled try

# +1 415 556 nnnn: apart from test_smsgw_with_jasmin's +1 415 555 numbers (the stand-in
# records every submit of the session); none ends in 9, which the stand-in refuses.
_numbers = (n for n in itertools.count(1000) if n % 10 != 9)


def batch_items(count: int, text: str) -> list[dict]:
    return [{"to_number": f"+1415556{next(_numbers):04d}", "message": f"{text} {index}",
             "client_reference": f"{text}-{index}"} for index in range(count)]


def digits(number: str) -> str:
    """A number with or without its + (Jasmin passes on what smsgw sends; the SMSC compares digits)."""
    return number.lstrip("+")


@pytest.fixture(scope="module")
def smsgw(jasmin, tmp_path_factory):
    """The API and the guard (receipts come back through it), and the slow Jasmin user."""
    add_limited_user(jasmin, *SLOW_USER, http_throughput=RATE)
    workdir = tmp_path_factory.mktemp("interop-throughput")
    guard_port = free_port()
    api = start_api(workdir, SMSGW_PUBLIC_URL=f"http://127.0.0.1:{guard_port}", SMSGW_GATEWAY_TIMEOUT="10")
    guard = start_guard(workdir, api.env, api.url, port=guard_port)
    key = run_smsgw(api.env, "apikey", "create", "--name", "interop").stdout.strip().splitlines()[-1]
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
    yield {"api": api, "guard": guard, "client": client}
    client.close()
    guard.process.stop()
    api.process.stop()


def slow_gateway(jasmin, smsgw, name: str, **fields) -> dict:
    """A jasmin-http gateway on Jasmin's HTTP API, sending as the limited user."""
    response = smsgw["client"].post("/api/sms-gateways", json={
        "name": name, "provider_type": "jasmin-http", "server_host": "127.0.0.1",
        "server_port": int(jasmin.http_api_url.rsplit(":", 1)[1]), "username": SLOW_USER[0],
        "password": SLOW_USER[1], "default_sender_id": "smsgw", **fields})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def send_and_settle(jasmin, smsgw, gateway: dict, text: str) -> tuple[list[dict], dict]:
    """Send a batch of ``BATCH``; wait until every message is final; return them and the batch."""
    client = smsgw["client"]
    response = client.post(f"/api/sms-gateways/{gateway['id']}/messages", json={"messages": batch_items(BATCH, text)})
    assert response.status_code == 202, response.text
    batch_id = response.json()["meta"]["batch_id"]

    def batch() -> dict:
        return client.get(f"/api/sms-batches/{batch_id}").json()["data"]

    try:
        wait_until(lambda: batch()["final"] == BATCH, timeout=DEADLINE, what=f"batch {batch_id} to be final")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: counts {batch()['counts']}\n{smsgw['api'].log[-5000:]}") from None
    listed = client.get(f"/api/sms-gateways/{gateway['id']}/messages", params={"batch_id": batch_id, "limit": 200})
    assert listed.status_code == 200, listed.text
    messages = listed.json()["data"]
    assert len(messages) == BATCH
    return messages, batch()


def reasons(smsgw, message_id: int) -> list[str]:
    response = smsgw["client"].get(f"/api/sms-messages/{message_id}/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [event["reason"] or "" for event in response.json()["data"]]


def throttled_attempts(smsgw, messages: list[dict]) -> int:
    return sum(THROTTLE_MARK in text for m in messages for text in reasons(smsgw, m["id"]))


def jasmin_refusals(jasmin, username: str) -> int:
    """Jasmin's own count of the sends it refused for going too fast (its HTTP API log)."""
    log = jasmin.log_dir / "http-api.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(re.findall(rf"than fixed throughput \(.*\), user:{re.escape(username)}, rejecting message", text))


def assert_each_delivered_once(jasmin, messages: list[dict]) -> None:
    states = Counter((m["state"], m["failure_code"]) for m in messages)
    assert states == {("delivered", None): BATCH}, states
    assert all(m["delivery_status"] == "delivrd" for m in messages)
    wanted = {digits(m["to_number"]) for m in messages}
    submits = Counter(digits(s.destination) for s in jasmin.smsc.submits if digits(s.destination) in wanted)
    assert submits == {number: 1 for number in wanted}  # each SMS reached the SMSC exactly once


def test_a_batch_through_a_throughput_limited_jasmin_user_is_all_delivered(jasmin, smsgw):
    """smsgw is not told the limit (throughput_per_second null): it meets Jasmin's 403s,
    pauses, retries, and still delivers every message once, none failed ``throttled``."""
    gateway = slow_gateway(jasmin, smsgw, "Jasmin, 2 a second, not told")
    assert gateway["throughput_per_second"] is None
    refused_before = jasmin_refusals(jasmin, SLOW_USER[0])

    messages, batch = send_and_settle(jasmin, smsgw, gateway, "unpaced")

    assert batch["counts"] == {"delivered": BATCH}, batch
    assert_each_delivered_once(jasmin, messages)
    # the throttle really happened, at Jasmin and in each affected message's history
    assert jasmin_refusals(jasmin, SLOW_USER[0]) > refused_before
    assert throttled_attempts(smsgw, messages) > 0
    assert all(m["attempts"] == 1 for m in messages)  # throttled tries are not counted as attempts


def test_a_gateway_told_the_limit_paces_itself_under_it(jasmin, smsgw):
    """Told a rate a tenth under Jasmin's limit, smsgw spaces its sends itself: every message
    delivered once, and hardly a 403.

    Not at the limit itself: Jasmin's quota is a minimum interval between two sends
    (0.5 s at 2/s), not an average, so sends paced at exactly 1/rate arrive a few ms
    early about half the time and are refused (seen: 31 refusals for 50 messages).
    The 10 % margin (0.556 s) is far above the few ms of jitter on loopback."""
    gateway = slow_gateway(jasmin, smsgw, "Jasmin, 2 a second, told 1.8", throughput_per_second=RATE * 0.9)
    refused_before = jasmin_refusals(jasmin, SLOW_USER[0])

    messages, batch = send_and_settle(jasmin, smsgw, gateway, "paced")

    assert batch["counts"] == {"delivered": BATCH}, batch
    assert_each_delivered_once(jasmin, messages)
    refused = jasmin_refusals(jasmin, SLOW_USER[0]) - refused_before
    assert refused == throttled_attempts(smsgw, messages)  # smsgw saw every 403 Jasmin gave
    assert refused < BATCH // 5, f"{refused} sends of {BATCH} refused by Jasmin although smsgw paced them"
