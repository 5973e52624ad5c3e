"""The token bucket (``api.pacing``): pure, so time is simulated and every claim pattern is tried."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from api import clock, pacing

START = "2026-11-27T12:00:00.000000Z"


def at(seconds: float) -> str:
    return clock.after(START, seconds)


def test_an_unlimited_gateway_is_held_back_only_by_a_pause():
    assert pacing.available(None, None, START) == (pacing.UNLIMITED, None)
    assert pacing.take(None, 1, None, START, 5) is None  # nothing to keep
    paused = pacing.pause(None, 1, START, 2.0)
    allowed, wait = pacing.available(paused, None, at(0.5))
    assert allowed == 0 and abs(wait - 1.5) < 1e-6
    assert pacing.available(paused, None, at(2.0))[0] == pacing.UNLIMITED


def test_a_fresh_bucket_allows_its_burst_then_one_token_per_interval():
    rate = 100.0
    # a twentieth of a second's worth now, and those of the next LEAD seconds to start at their moment
    assert pacing.available(None, rate, START) == (15, None)
    assert pacing.start_delays(None, rate, START, 7) == (0, 0, 0, 0, 0, 0.01, 0.02)
    row = pacing.take(None, 1, rate, START, 15)
    allowed, wait = pacing.available(row, rate, START)
    assert allowed == 0 and abs(wait - 0.01) < 1e-9
    assert pacing.available(row, rate, at(0.01))[0] == 1
    assert pacing.start_delays(row, rate, at(0.01), 1) == (pytest.approx(0.1),)


def test_a_pause_is_never_shortened_and_the_bucket_resumes_empty():
    rate = 10.0
    row = pacing.pause(None, 1, START, 5.0)
    shorter = pacing.pause(row, 1, at(1), 1.0)
    assert shorter["paused_until"] == row["paused_until"]
    assert pacing.available(shorter, rate, at(4.99))[0] == 0
    assert pacing.take(shorter, 1, rate, at(3), 0) is None  # nothing written while paused
    assert pacing.available(shorter, rate, at(5.0))[0] == 1  # empty at the end of the pause: one, to start
    assert pacing.start_delays(shorter, rate, at(5.0), 1) == (pytest.approx(0.1),)  # when its token comes


def test_synchronous_sends_go_into_debt_that_holds_the_dispatcher_back():
    rate = 2.0
    row = pacing.take(None, 1, rate, START, 3)  # burst 1, so 2 tokens owed
    allowed, wait = pacing.available(row, rate, START)
    assert row["tokens"] == -2 and allowed == 0 and abs(wait - (1.5 - pacing.LEAD)) < 1e-9
    deep = pacing.take(row, 1, rate, START, 100)
    assert deep["tokens"] == -2  # at most a second's worth of debt


@settings(max_examples=100, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 3.0, 20.0, 100.0, 250.0]),
       gaps=st.lists(st.floats(0.0005, 0.4), min_size=5, max_size=400),
       greed=st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_claims_made_as_the_bucket_allows_never_exceed_rate_plus_burst_in_any_second(rate, gaps, greed):
    """However often the dispatcher asks and however much of what is allowed it takes,
    sends started at their tokens' moments put no more than rate + burst(rate) in any
    one-second window."""
    row, now, starts = None, 0.0, []
    for i, gap in enumerate(gaps):
        now += gap
        allowed, _ = pacing.available(row, rate, at(now))
        count = min(allowed, int(round(allowed * greed[i % len(greed)])))
        starts += [now + delay for delay in pacing.start_delays(row, rate, at(now), count)]
        row = pacing.take(row, 1, rate, at(now), count) or row
    starts.sort()
    limit, last = rate + pacing.burst(rate), 0
    for first, start in enumerate(starts):  # the window opening at each start, by two pointers
        while last < len(starts) and starts[last] < start + 1.0:
            last += 1
        assert last - first <= limit + 1e-9, (last - first, limit)


@settings(max_examples=25, deadline=None)
@given(rate=st.sampled_from([1.0, 5.0, 50.0, 100.0, 400.0]), lateness=st.lists(st.floats(0, 0.02), min_size=1))
def test_a_dispatcher_that_sleeps_until_the_next_token_keeps_the_rate(rate, lateness):
    """Asking again when ``available`` says (waking up to 20 ms late, as a busy event loop
    and a round trip to the database do), the long-run rate stays within 2 % of the
    gateway's: the lateness is hidden by claiming ahead, not lost."""
    row, now, sent, i = None, 0.0, 0, 0
    while now < 10.0:
        allowed, wait = pacing.available(row, rate, at(now))
        row = pacing.take(row, 1, rate, at(now), allowed) or row
        sent += allowed
        if allowed:
            _, wait = pacing.available(row, rate, at(now))
        now += (wait or 0) + lateness[i % len(lateness)] + 1e-6
        i += 1
    assert abs(sent / 10.0 - rate) <= rate * 0.02 + pacing.burst(rate) / 10.0
