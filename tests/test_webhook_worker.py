"""The webhook worker's own decisions, called directly: the body it sends, how many
deliveries it takes on, and what it refuses to call before any connection."""

import json
from types import SimpleNamespace

from api import ssrf
from api.config import Settings
from api.webhook_worker import PRESSED_SLOTS, WebhookWorker, payload, url_refusal


def row(**values) -> dict:
    snapshot = {"state": "delivered", "delivery_status": "delivrd", "status_conflict": False,
                "external_message_id": "ext-1", "remote_response": {"err": "000"}, "failure_reason": None,
                "failure_code": None, "submitted_at": "2026-11-27T12:00:00.000000Z",
                "delivered_at": "2026-11-27T12:00:01.000000Z", "failed_at": None,
                "updated_at": "2026-11-27T12:00:01.000000Z", "attempts": 1, "next_attempt_at": None,
                "canceled_at": None, "sequence": 4}
    fixed = {"sms_gateway_id": 3, "to_number": "+14155550123", "from_sender": "ACME", "message": "hi",
             "callback_url": "https://sms.example.test/webhooks/jasmin/3/dlr?token=secret-token",
             "encoding": "gsm7", "segments": 1, "client_reference": "order-1", "batch_id": None, "send_at": None,
             "validity_period": None, "expires_at": None, "created_at": "2026-11-27T11:59:59.000000Z"}
    return {"id": 99, "message_id": 12, "sequence": 4, "event_type": "message.delivered",
            "occurred_at": "2026-11-27T12:00:01.000000Z", "snapshot": snapshot, **fixed, **values}


def test_the_body_is_the_event_as_it_happened_with_no_secret_and_the_same_every_time():
    body = payload(row())
    event = json.loads(body)
    assert event["type"] == "message.delivered" and event["timestamp"] == "2026-11-27T12:00:01.000000Z"
    data = event["data"]
    assert (data["id"], data["sequence"], data["state"], data["client_reference"]) == (12, 4, "delivered", "order-1")
    assert "secret-token" not in body.decode() and "token=[redacted]" in data["callback_url"]
    assert payload(row()) == body  # a retry signs the same bytes


def worker(pressed: bool, in_flight: int, concurrency: int = 64) -> WebhookWorker:
    made = WebhookWorker(SimpleNamespace(pressed=pressed), Settings(webhook_concurrency=concurrency))
    made.tasks = set(range(in_flight))
    return made


def test_it_claims_in_groups_and_leaves_receipts_the_room_when_they_pour_in():
    assert worker(False, 0).room() == 64
    assert worker(False, 50).room() == 0    # 14 free: wait for a quarter (16), one claim for many
    assert worker(False, 48).room() == 16
    assert worker(True, 0).room() == PRESSED_SLOTS
    assert worker(True, PRESSED_SLOTS).room() == 0
    assert worker(False, 0, concurrency=1).room() == 1
    late = worker(True, PRESSED_SLOTS)
    late.lag = late.settings.webhook_max_lag  # what it takes was due that long ago: no more waiting
    assert late.room() == 64 - PRESSED_SLOTS


def test_what_is_refused_before_any_connection():
    assert url_refusal("https://hooks.example.com/x", False, False) is None
    assert url_refusal("http://hooks.example.com/x", False, False).code == "insecure_scheme"
    assert url_refusal("https://169.254.169.254/latest", False, False).code == "blocked_address"
    assert url_refusal("https://[::1]:8443/x", False, False).code == "blocked_address"
    assert url_refusal("https://[::1]:8443/x", False, True) is None
    assert isinstance(url_refusal("https://user:pw@hooks.example.com/", False, False), ssrf.Refused)
