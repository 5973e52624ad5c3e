"""The API's Prometheus metrics: every one defined here, and the few functions that count.

Counted where the thing happens, at most once per batch on the receipt path:
``committed`` after each batch the state-change pipeline commits (never for one
rolled back or retried), ``sent`` after each gateway call, ``delivered`` after
each webhook attempt's answer is recorded. What only the database knows
(messages waiting or in flight, parked receipts, webhook deliveries pending) is
read when Prometheus scrapes (``api.metrics_gauges``), not here.

Labels are bounded: a gateway id, an outcome, a state, a failure_code. Never a
phone number, a URL or a token. With several API workers, each process writes
its values to ``PROMETHEUS_MULTIPROC_DIR`` (``api.metrics_server`` sets it up
before this module is imported) and the listener adds them up.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from api.changes import Receipt

disable_created_metrics()  # no *_created series beside each counter: twice the series, read by no one

UNKNOWN_GATEWAY = "unknown"  # an ignored receipt's gateway: an id no gateway has (bounded: not the id)

RECEIPTS = Counter(
    "smsgw_receipts_total", "Delivery receipts stored, by gateway and outcome: applied (to its message), "
    "parked (no message has its id yet), ignored (no such gateway).", ["gateway", "outcome"])
STATE_CHANGES = Counter(
    "smsgw_state_changes_total", "Messages entering each state (queued, scheduled, submitted, delivered, "
    "failed, canceled ...), new messages included.", ["state"])
SEND_SECONDS = Histogram(
    "smsgw_gateway_send_seconds", "Time one gateway call took (a send handed to the gateway), whatever its "
    "answer, by gateway.", ["gateway"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
GATEWAY_FAILURES = Counter(
    "smsgw_gateway_failures_total", "Gateway calls that did not hand over the message, by gateway and "
    "failure_code (gateway_error, throttled, timeout, unreachable, unreadable_reply, secret_unavailable).",
    ["gateway", "failure_code"])
BATCH_CHANGES = Histogram(
    "smsgw_pipeline_batch_changes", "Changes (receipts, send answers, new messages, claims ...) committed "
    "together in one batch by the state-change pipeline (the writer).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
COMMIT_SECONDS = Histogram(
    "smsgw_pipeline_commit_seconds", "Time one batch's transaction took, its reads and writes and commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
# Each process's own queue: added up over the live workers; a dead worker's share is dropped.
WAITING_CHANGES = Gauge(
    "smsgw_pipeline_waiting_changes", "Changes waiting for the writer when it took its last batch "
    "(its backlog), summed over the API's worker processes.", multiprocess_mode="livesum")
WEBHOOK_DELIVERIES = Counter(
    "smsgw_webhook_deliveries_total", "Webhook attempts whose answer was recorded, by outcome: succeeded, "
    "retry (failed, will be tried again), failed (no attempts left), gone (410), stale (superseded).",
    ["outcome"])
WEBHOOK_SECONDS = Histogram(
    "smsgw_webhook_delivery_seconds", "Time one webhook attempt took until the endpoint answered or failed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def never_raises(count: Callable[..., None]) -> Callable[..., None]:
    """Counting runs after a batch committed or a call ended: a failure in it must never make
    the pipeline take a committed batch for a failed one (and run it again), or fail a send.
    Said once in the log, then the count is skipped."""
    @functools.wraps(count)
    def counting(*args: Any) -> None:
        try:
            count(*args)
        except Exception:
            if count.__name__ not in _failed:
                _failed.add(count.__name__)
                logging.getLogger("smsgw.metrics").exception("counting %s failed; metrics may be short",
                                                             count.__name__)
    return counting


_failed: set[str] = set()


@never_raises
def committed(batch: Sequence[Any], outcomes: Sequence[Any], entered: Mapping[str, int], seconds: float) -> None:
    """One committed batch: its size, its time, its receipts' outcomes and the states its
    messages entered (``entered``: state -> count, from ``api.batches.apply``). A few
    microseconds a batch: a batch of one receipt is the receipt path's common case."""
    BATCH_CHANGES.observe(len(batch))
    COMMIT_SECONDS.observe(seconds)
    for key, count in receipt_outcomes(batch, outcomes).items():
        child = _receipts.get(key)
        if child is None:
            gateway, outcome = key
            child = _receipts[key] = RECEIPTS.labels(UNKNOWN_GATEWAY if outcome == "ignored" else str(gateway),
                                                     outcome)
        child.inc(count)
    for state, count in entered.items():
        child = _states.get(state)
        if child is None:
            child = _states[state] = STATE_CHANGES.labels(state)
        child.inc(count)


# Each label set's child, looked up once (prometheus_client's ``labels`` takes a lock and
# builds a key on every call). Bounded, as the labels are.
_receipts: dict[tuple[Any, str], Any] = {}
_states: dict[str, Any] = {}


def receipt_outcomes(batch: Sequence[Any], outcomes: Sequence[Any]) -> dict[tuple[Any, str], int]:
    """(gateway id, outcome) -> how many of the batch's receipts had it."""
    found: dict[tuple[Any, str], int] = {}
    for change, outcome in zip(batch, outcomes):
        if type(change) is Receipt:
            key = (change.gateway_id, outcome)
            found[key] = found.get(key, 0) + 1
    return found


@never_raises
def sent(gateway_id: Any, failure_code: str | None, seconds: float) -> None:
    """One gateway call ended: accepted (``failure_code`` None) or failed with that code."""
    gateway = str(gateway_id)
    SEND_SECONDS.labels(gateway).observe(seconds)
    if failure_code is not None:
        GATEWAY_FAILURES.labels(gateway, failure_code).inc()


@never_raises
def delivered(outcome: str, seconds: float) -> None:
    """One webhook attempt's answer recorded."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    WEBHOOK_SECONDS.observe(seconds)
