"""A running stack with its metrics listeners on free ports, and traffic whose every count is known.

The API and the guard are real processes (``tests.servers``); the traffic is what a
user's gateways and apps cause: a send accepted, a send that fails, receipts applied,
parked and ignored, a status webhook delivered, and the guard admitting one receipt and
refusing two. ``Traffic`` says how many of each, so the tests compare scrapes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import (
    Api, Guard, StubGateway, free_port, raw_request, start_api, start_guard, wait_until,
)

ADMIN = "metrics-admin-key-" + "x" * 32
PHONE = "+14155550123"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of a metrics listener: (sample name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is not there (a counter nothing has counted yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Stack:
    api: Api
    guard: Guard
    api_metrics: int    # the API's metrics port
    guard_metrics: int  # the guard's
    good: dict          # a gateway that accepts sends (the stub)
    bad: dict           # a gateway nobody listens for
    stub: StubGateway
    hooks: StubGateway  # the webhook endpoint

    def stop(self) -> None:
        self.guard.process.stop()
        self.api.process.stop()
        self.stub.stop()
        self.hooks.stop()


@dataclass
class Traffic:
    """What ``make_traffic`` did, in counts."""

    sent_ok: int = 1
    sent_failed: int = 1
    applied: int = 1
    parked: int = 2        # one straight to the API, one admitted by the guard
    ignored: int = 1
    guard_admitted: int = 1
    guard_forbidden: int = 1
    guard_missing: int = 1


def start_stack(workdir: Path, database: dict[str, str], **overrides: str) -> Stack:
    api_metrics, guard_metrics = free_port(), free_port()
    api = start_api(workdir, SMSGW_ADMIN_KEY=ADMIN, SMSGW_METRICS_PORT=str(api_metrics),
                    SMSGW_WEBHOOK_ALLOW_HTTP="1", SMSGW_WEBHOOK_ALLOW_PRIVATE="1", **database, **overrides)
    stub, hooks = StubGateway().start(), StubGateway().start()
    stub.answer(200, {"data": 'Success "metrics-ext-1'})
    hooks.answer(204)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    gateways = []
    for name, port in (("metrics good", stub.port), ("metrics bad", free_port())):
        response = httpx.post(api.url + "/api/sms-gateways", headers=admin, timeout=30, json={
            "name": name, "server_host": "127.0.0.1", "server_port": port, "default_sender_id": "M"})
        assert response.status_code == 201, response.text
        gateways.append(response.json()["data"])
    guard = start_guard(workdir, api.env, api.url, SMSGW_GUARD_METRICS_PORT=str(guard_metrics))
    return Stack(api, guard, api_metrics, guard_metrics, gateways[0], gateways[1], stub, hooks)


def make_traffic(stack: Stack) -> Traffic:
    admin = httpx.Client(base_url=stack.api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    good, bad = stack.good["id"], stack.bad["id"]
    endpoint = admin.post("/api/webhook-endpoints", json={
        "url": f"http://127.0.0.1:{stack.hooks.port}/hook", "events": ["message.submitted", "message.delivered"],
        "gateway_ids": [good]})
    assert endpoint.status_code == 201, endpoint.text
    sent = admin.post(f"/api/sms-gateways/{good}/send", json={"to_number": PHONE, "message": "hi"})
    assert sent.status_code == 201 and sent.json()["data"]["state"] == "submitted", sent.text
    failed = admin.post(f"/api/sms-gateways/{bad}/send", json={"to_number": PHONE, "message": "hi"})
    assert failed.json()["data"]["failure_code"] == "unreachable", failed.text
    receipt = {"message_status": "DELIVRD"}
    with httpx.Client(base_url=stack.api.url, timeout=30) as direct:
        for gateway, external in ((good, "metrics-ext-1"), (good, "not-yet-sent"), (999_999, "x")):
            answer = direct.post(f"/webhooks/jasmin/{gateway}/dlr", data={"id": external, **receipt})
            assert answer.status_code == 200, answer.text
    token = stack.good["callback_token"]
    port = stack.guard.port
    assert raw_request(port, "POST", f"/webhooks/jasmin/{good}/dlr?token={token}",
                       body=b"id=via-guard&message_status=DELIVRD")[0] == 200
    assert raw_request(port, "POST", f"/webhooks/jasmin/{good}/dlr?token={'w' * len(token)}")[0] == 403
    assert raw_request(port, "POST", f"/webhooks/jasmin/{good}/dlr")[0] == 401
    # the status webhooks the send and the receipt made, delivered to the endpoint
    try:
        wait_until(lambda: len(stack.hooks.received) >= 2, timeout=60, what="two status webhooks")
    except TimeoutError:  # say what became of them: the deliveries as the API shows them, and its log
        deliveries = admin.get(f"/api/webhook-endpoints/{endpoint.json()['data']['id']}/deliveries").text
        raise AssertionError(f"{len(stack.hooks.received)} status webhooks arrived of 2; deliveries: "
                             f"{deliveries}\nthe API's log ends:\n{stack.api.log[-6000:]}") from None
    admin.close()
    return Traffic()
