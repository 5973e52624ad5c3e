"""When a webhook delivery is tried, and what each attempt's answer does: pure.

A delivery (``webhook_deliveries``) is one event for one endpoint:

    pending ──claim──▶ delivering ──2xx──▶ succeeded
       ▲                   │ ──410──▶ failed (and the endpoint is disabled)
       └──── retry ────────┘ ──anything else, schedule used up──▶ failed

``next_attempt_at`` says when it is due: its next attempt, or while it is
delivering the end of the worker's lease, so a delivery whose worker died
(``kill -9``) is due again when the lease ends — delivered at least once, never
lost. A result for an older claim (the lease ran out and another worker took
it, or a user retried it) is stale and changes nothing. A delivery of an
inactive endpoint is never due (``next_attempt_at`` NULL) until the endpoint is
active again.

Waits follow ``SMSGW_WEBHOOK_RETRY_SCHEDULE`` (Standard Webhooks' example: at
once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each drawn within ±10 % so
deliveries that failed together do not all come back at once, and never
sooner than the endpoint's ``Retry-After``. An endpoint failing every attempt
for ``SMSGW_WEBHOOK_DISABLE_AFTER`` (5 days) is disabled, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from api import clock

PENDING, DELIVERING, SUCCEEDED, FAILED = "pending", "delivering", "succeeded", "failed"
STATUSES = (PENDING, DELIVERING, SUCCEEDED, FAILED)
JITTER = 0.1                  # each wait is drawn within ±10 %
NEVER_ANSWERED = "the last attempt's answer was never recorded (the process stopped); no attempts left"
MAX_RETRY_AFTER = 24 * 3600   # a longer Retry-After is taken as a day
# What an attempt's row keeps of it.
ATTEMPT_COLUMNS = ("last_status_code", "last_latency_ms", "last_error", "last_response", "last_attempt_at")
# Every column a delivery's plan sets (each write sets all of them).
DELIVERY_COLUMNS = ("status", "attempts", "next_attempt_at", "delivered_at", "updated_at", *ATTEMPT_COLUMNS)
ENDPOINT_COLUMNS = ("is_active", "failing_since", "disabled_at", "disabled_reason", "updated_at")


@dataclass(frozen=True)
class Attempt:
    """What one attempt got: a status code, or an error before any (its text starts with
    what kind when a user may look it up: ``blocked_address: ...``)."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    response: str | None = None      # the first 4 KiB of the answer's body
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410

    def describe(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}" + (f" ({self.error})" if self.error else "")
        return self.error or "no answer"


# --- the changes (submitted to the state-change pipeline, ``api.webhook_batches``) ------


@dataclass(frozen=True)
class ClaimDeliveries:
    """The worker asks for at most ``limit`` due deliveries, each held for ``lease`` seconds.
    One whose ``schedule`` is used up (its last attempt never answered: the worker died)
    ends failed instead of being tried again."""

    limit: int
    lease: float
    schedule: tuple[float, ...] = (0.0,)


@dataclass(frozen=True)
class DeliveryResult:
    """One attempt's answer for a delivery the worker claimed as its ``attempt``-th."""

    delivery_id: int
    attempt: int
    answer: Attempt
    schedule: tuple[float, ...]
    disable_after: float
    jitter: float = 0.5  # in [0, 1): where in ±JITTER the next wait falls (drawn by the caller)
    claimed_at: str | None = None  # the claim's time (its ``updated_at``): the claim this answers


# --- the rules ----------------------------------------------------------------------


def started_over(now: str) -> dict[str, Any]:
    """A delivery sent again by a user (a retry, a replay): due now, its schedule from the start."""
    return {"status": PENDING, "attempts": 0, "next_attempt_at": now, "updated_at": now}


def claimed(delivery: Mapping[str, Any], now: str, lease: float) -> dict[str, Any]:
    """A due delivery taken by a worker: its attempt counted, due again when the lease ends."""
    return {**delivery, "status": DELIVERING, "attempts": delivery["attempts"] + 1,
            "next_attempt_at": clock.after(now, lease), "updated_at": now,
            "due_at": delivery["next_attempt_at"]}  # (not stored) how late it is sent: the worker's lag


def next_wait(attempts: int, schedule: tuple[float, ...], retry_after: float | None, jitter: float) -> float | None:
    """Seconds before the next attempt after ``attempts`` failed ones; None when the schedule is used up."""
    if attempts >= len(schedule):
        return None
    wait = schedule[attempts] * (1 + JITTER * (2 * jitter - 1))
    if retry_after is not None:
        wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
    return wait


@dataclass(frozen=True)
class Recorded:
    """What a ``DeliveryResult`` did: its outcome in a word, the delivery's values and,
    when it changed, the endpoint's."""

    outcome: str  # succeeded, retry, failed, gone, stale
    delivery: dict[str, Any] | None = None
    endpoint: dict[str, Any] | None = None

    @property
    def disabled(self) -> bool:
        return self.endpoint is not None and not self.endpoint["is_active"]


def after_attempt(result: DeliveryResult, delivery: Mapping[str, Any] | None, endpoint: Mapping[str, Any] | None,
                  now: str) -> Recorded:
    """The delivery (and its endpoint) after one attempt's answer."""
    if (delivery is None or delivery["status"] != DELIVERING or delivery["attempts"] != result.attempt
            or (result.claimed_at is not None and delivery["updated_at"] != result.claimed_at)):
        return Recorded("stale")  # a later claim holds it (its lease ran out, or a user retried it)
    answer = result.answer
    values = {**delivery, "last_status_code": answer.status_code, "last_latency_ms": round(answer.latency_ms, 1),
              "last_error": answer.error, "last_response": answer.response, "last_attempt_at": now,
              "updated_at": now}
    active = endpoint is not None and endpoint["is_active"]
    if answer.ok:
        values.update(status=SUCCEEDED, next_attempt_at=None, delivered_at=now)
        healed = None
        if endpoint is not None and endpoint["failing_since"] is not None:
            healed = {**endpoint, "failing_since": None, "updated_at": now}
        return Recorded(SUCCEEDED, values, healed)
    if answer.gone:
        values.update(status=FAILED, next_attempt_at=None)
        disabled = None
        if active:
            disabled = _disabled(endpoint, now, "the endpoint answered 410 Gone: it asked not to be sent to again")
        return Recorded("gone", values, disabled)
    failing = None
    if endpoint is not None:
        since = endpoint["failing_since"] or now
        if active and clock.seconds_between(since, now) >= result.disable_after:
            failing = _disabled({**endpoint, "failing_since": since}, now, (
                f"every attempt since {since} failed (the last: {answer.describe()}); "
                "enable it again once it answers"))
        elif endpoint["failing_since"] is None:
            failing = {**endpoint, "failing_since": since, "updated_at": now}
    still_active = active and (failing is None or failing["is_active"])
    wait = next_wait(delivery["attempts"], result.schedule, answer.retry_after, result.jitter)
    if wait is None:
        values.update(status=FAILED, next_attempt_at=None)
        return Recorded(FAILED, values, failing)
    values.update(status=PENDING, next_attempt_at=clock.after(now, wait) if still_active else None)
    return Recorded("retry", values, failing)


def _disabled(endpoint: Mapping[str, Any], now: str, reason: str) -> dict[str, Any]:
    return {**endpoint, "is_active": False, "disabled_at": now, "disabled_reason": reason, "updated_at": now}
