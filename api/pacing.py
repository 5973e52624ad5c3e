"""Each gateway's pace: a token bucket kept in the database, so every replica draws from one.

A gateway with ``throughput_per_second`` = r gains r tokens a second; a send
takes one. The bucket holds at most ``burst(r)`` (a twentieth of a second's
worth, at least one), so after a quiet spell the dispatcher may send that many
at once and no more: in any one-second window at most r + burst(r) sends start
(105 at r = 100). A claim may take tokens up to ``LEAD`` ahead of their time;
each such send waits for its own moment (``start_delays``). The bucket's row (``gateway_pacing``) is read under lock in
the claim's transaction (``api.batches``), so two replicas claiming at once
take turns and never share a token.

A gateway that answers "too fast" (Jasmin's 403 ``User throughput exceeded``,
HTTP 429) is paused: no replica claims for it until ``paused_until``, and its
bucket restarts empty.

A synchronous send is never held back (its caller waits for the gateway's
answer), but it takes its token too, into debt if need be: the dispatcher then
waits until the debt is paid, so the gateway's rate holds as a whole.

Pure: the time is given as an ``api.clock`` timestamp; rows are plain dicts.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from api import clock

UNLIMITED = 1 << 30  # "as many as you like": the other limits (max_in_flight, the due messages) decide
# Tokens may be claimed this far ahead of their time; the send then waits for its
# token's moment (``start_delays``). The dispatcher's own latency (a round trip to the
# database, a busy event loop) is then hidden instead of lost: a bucket of one token
# claimed only when it is full runs at 1/(1/r + latency), well under r.
LEAD = 0.1


def burst(rate: float) -> float:
    return max(1.0, rate / 20)


def _paused_for(bucket: Mapping[str, Any] | None, now: str) -> float:
    if bucket is None or bucket["paused_until"] is None or bucket["paused_until"] <= now:
        return 0.0
    return clock.seconds_between(now, bucket["paused_until"])


def _tokens(bucket: Mapping[str, Any] | None, rate: float, now: str) -> float:
    """The tokens in the bucket at ``now``: refilled since it was last written, up to its burst."""
    if bucket is None:
        return burst(rate)
    since = max(0.0, clock.seconds_between(bucket["refilled_at"], now))
    return min(burst(rate), bucket["tokens"] + rate * since)


def available(bucket: Mapping[str, Any] | None, rate: float | None, now: str) -> tuple[int, float | None]:
    """How many sends may be claimed now (each to start at its token's moment, at most
    ``LEAD`` seconds ahead), and, when that is none, in how many seconds one may."""
    paused = _paused_for(bucket, now)
    if paused > 0:
        return 0, paused
    if rate is None:
        return UNLIMITED, None
    ahead = _tokens(bucket, rate, now) + rate * LEAD
    if ahead >= 1:
        return int(ahead), None
    return 0, (1 - ahead) / rate


def start_delays(bucket: Mapping[str, Any] | None, rate: float | None, now: str, count: int) -> tuple[float, ...]:
    """When each of ``count`` sends claimed now may start, in seconds from now: at once
    while there are tokens, then one every 1/rate."""
    if rate is None:
        return (0.0,) * count
    tokens = _tokens(bucket, rate, now)
    return tuple(max(0.0, (i + 1 - tokens) / rate) for i in range(count))


def take(bucket: Mapping[str, Any] | None, gateway_id: int, rate: float | None, now: str, count: int
         ) -> dict[str, Any] | None:
    """The bucket's row after ``count`` sends start now; None when there is nothing to write
    (no limit, or nothing taken during a pause, whose row already says when it ends)."""
    if rate is None or (count == 0 and _paused_for(bucket, now) > 0):
        return None  # nothing to write: no limit, or a pause (its row already says when it ends)
    # Synchronous sends take tokens they may not have (their caller is waiting): the debt,
    # at most a second's worth, holds the dispatcher back until it is paid.
    tokens = max(-max(rate, 1.0), _tokens(bucket, rate, now) - count)
    return {"sms_gateway_id": gateway_id, "tokens": tokens, "refilled_at": now,
            "paused_until": bucket["paused_until"] if bucket is not None else None}


def wait_for_token(bucket: Mapping[str, Any] | None, rate: float | None, now: str) -> float | None:
    """Seconds until the next send may start; None when that is not the bucket's to say."""
    allowed, wait = available(bucket, rate, now)
    if allowed > 0 or wait is None:
        return 0.0 if rate is not None and allowed > 0 else None
    return wait


def pause(bucket: Mapping[str, Any] | None, gateway_id: int, now: str, seconds: float) -> dict[str, Any]:
    """The row after the gateway said "too fast": paused for ``seconds`` (never shortened by a
    second, shorter pause), and empty when it resumes."""
    until = clock.after(now, max(0.0, seconds))
    if bucket is not None and bucket["paused_until"] is not None and bucket["paused_until"] > until:
        until = bucket["paused_until"]
    tokens = 0.0
    if bucket is not None and math.isfinite(bucket["tokens"]):
        tokens = min(0.0, bucket["tokens"])
    return {"sms_gateway_id": gateway_id, "tokens": tokens, "refilled_at": until, "paused_until": until}
