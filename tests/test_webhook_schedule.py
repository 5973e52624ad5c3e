"""When a webhook delivery is tried again, and what each answer does (api.webhook_schedule): pure."""

from api import clock
from api.config import DEFAULT_RETRY_SCHEDULE
from api.webhook_schedule import (
    DELIVERING, FAILED, PENDING, SUCCEEDED, Attempt, DeliveryResult, after_attempt, claimed, next_wait,
)

NOW = "2026-11-27T12:00:00.000000Z"
DAY = 24 * 3600.0


def delivery(**values) -> dict:
    row = {"id": 1, "endpoint_id": 9, "status": PENDING, "attempts": 0, "next_attempt_at": NOW,
           "delivered_at": None, "updated_at": NOW, "last_status_code": None, "last_latency_ms": None,
           "last_error": None, "last_response": None, "last_attempt_at": None}
    return {**row, **values}


def endpoint(**values) -> dict:
    return {"id": 9, "is_active": True, "failing_since": None, "disabled_at": None, "disabled_reason": None,
            "updated_at": NOW, **values}


def result(answer: Attempt, attempt: int = 1, schedule=DEFAULT_RETRY_SCHEDULE, jitter=0.5,
           disable_after=5 * DAY) -> DeliveryResult:
    return DeliveryResult(1, attempt, answer, schedule, disable_after, jitter)


def test_the_schedule_is_standard_webhooks_example_within_ten_percent_and_honours_retry_after():
    waits = [next_wait(n, DEFAULT_RETRY_SCHEDULE, None, 0.5) for n in range(1, 9)]
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert next_wait(1, DEFAULT_RETRY_SCHEDULE, None, 0.0) == 4.5
    assert next_wait(1, DEFAULT_RETRY_SCHEDULE, None, 0.999999) < 5.5
    assert next_wait(1, DEFAULT_RETRY_SCHEDULE, 120.0, 0.5) == 120.0  # never sooner than asked
    assert next_wait(2, DEFAULT_RETRY_SCHEDULE, 10.0, 0.5) == 300.0   # nor sooner than scheduled


def test_a_claim_counts_the_attempt_and_holds_the_delivery_for_its_lease():
    taken = claimed(delivery(), NOW, 45)
    assert (taken["status"], taken["attempts"], taken["next_attempt_at"]) == (DELIVERING, 1, clock.after(NOW, 45))


def test_a_2xx_succeeds_and_heals_a_failing_endpoint():
    recorded = after_attempt(result(Attempt(204, 12.3)), claimed(delivery(), NOW, 45),
                             endpoint(failing_since="2026-11-26T12:00:00.000000Z"), NOW)
    assert recorded.outcome == SUCCEEDED
    assert (recorded.delivery["status"], recorded.delivery["next_attempt_at"], recorded.delivery["delivered_at"]) \
        == (SUCCEEDED, None, NOW)
    assert recorded.endpoint["failing_since"] is None and recorded.endpoint["is_active"]


def test_a_failure_is_due_again_on_the_schedule_and_marks_the_endpoint_failing():
    recorded = after_attempt(result(Attempt(500, 3.0, response="oops")), claimed(delivery(), NOW, 45), endpoint(), NOW)
    assert recorded.outcome == "retry"
    assert recorded.delivery["status"] == PENDING
    assert recorded.delivery["next_attempt_at"] == clock.after(NOW, 5)
    assert (recorded.delivery["last_status_code"], recorded.delivery["last_response"]) == (500, "oops")
    assert recorded.endpoint["failing_since"] == NOW and recorded.endpoint["is_active"]


def test_the_last_attempt_of_the_schedule_fails_the_delivery():
    last = claimed(delivery(attempts=7), NOW, 45)
    recorded = after_attempt(result(Attempt(None, 15000, "no answer"), attempt=8), last, endpoint(), NOW)
    assert recorded.outcome == FAILED
    assert (recorded.delivery["status"], recorded.delivery["next_attempt_at"]) == (FAILED, None)


def test_410_gone_fails_it_and_disables_the_endpoint_saying_why():
    recorded = after_attempt(result(Attempt(410, 2.0)), claimed(delivery(), NOW, 45), endpoint(), NOW)
    assert recorded.outcome == "gone" and recorded.disabled
    assert recorded.delivery["status"] == FAILED
    assert "410" in recorded.endpoint["disabled_reason"] and recorded.endpoint["disabled_at"] == NOW


def test_an_endpoint_failing_for_days_in_a_row_is_disabled_and_its_delivery_waits_for_it():
    since = clock.after(NOW, -5 * DAY)
    recorded = after_attempt(result(Attempt(503, 1.0)), claimed(delivery(), NOW, 45), endpoint(failing_since=since),
                             NOW)
    assert recorded.disabled and since in recorded.endpoint["disabled_reason"]
    assert (recorded.delivery["status"], recorded.delivery["next_attempt_at"]) == (PENDING, None)
    younger = after_attempt(result(Attempt(503, 1.0)), claimed(delivery(), NOW, 45),
                            endpoint(failing_since=clock.after(NOW, -4 * DAY)), NOW)
    assert younger.endpoint is None and younger.delivery["next_attempt_at"] is not None


def test_an_answer_for_an_older_claim_changes_nothing():
    taken_again = claimed(claimed(delivery(), NOW, 45), NOW, 45)  # the lease ran out and it was claimed again
    assert after_attempt(result(Attempt(200, 1.0), attempt=1), taken_again, endpoint(), NOW).outcome == "stale"
    assert after_attempt(result(Attempt(200, 1.0)), delivery(status=SUCCEEDED, attempts=1), endpoint(),
                         NOW).outcome == "stale"
    assert after_attempt(result(Attempt(200, 1.0)), None, None, NOW).outcome == "stale"
    # retried by a user, then claimed again with the same attempt number: the old answer is not its
    retried_and_claimed = claimed(delivery(attempts=0), clock.after(NOW, 60), 45)
    old_answer = DeliveryResult(1, 1, Attempt(200, 1.0), DEFAULT_RETRY_SCHEDULE, 5 * DAY, 0.5, claimed_at=NOW)
    assert after_attempt(old_answer, retried_and_claimed, endpoint(), clock.after(NOW, 61)).outcome == "stale"
    fresh = DeliveryResult(1, 1, Attempt(200, 1.0), DEFAULT_RETRY_SCHEDULE, 5 * DAY, 0.5,
                           claimed_at=retried_and_claimed["updated_at"])
    assert after_attempt(fresh, retried_and_claimed, endpoint(), clock.after(NOW, 61)).outcome == SUCCEEDED
