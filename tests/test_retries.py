"""The retry rules on their own: a table of answers and verdicts, and properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.providers.base import (
    AMBIGUOUS, GATEWAY_ERROR, SAFE, THROTTLED, TIMEOUT, UNREACHABLE, UNREADABLE_REPLY, Outcome,
)
from api.retries import Policy, Verdict, backoff, verdict

ACCEPTED = Outcome(ok=True, external_id="x")
REFUSED = Outcome(ok=False, failure_code=UNREACHABLE, retry=SAFE,
                  failure_reason="could not connect to the gateway: [Errno 111] Connection refused")
THROTTLE = Outcome(ok=False, failure_code=THROTTLED, retry=SAFE,
                   failure_reason="gateway answered HTTP 403: User throughput exceeded")
BUSY = Outcome(ok=False, failure_code=GATEWAY_ERROR, retry=SAFE, failure_reason="gateway answered HTTP 503")
TIMED_OUT = Outcome(ok=False, failure_code=TIMEOUT, retry=AMBIGUOUS,
                    failure_reason="gateway did not answer within 10 s")
SERVER_ERROR = Outcome(ok=False, failure_code=GATEWAY_ERROR, retry=AMBIGUOUS, failure_reason="gateway answered HTTP 500")
BAD_NUMBER = Outcome(ok=False, failure_code=GATEWAY_ERROR,
                     failure_reason="gateway answered HTTP 400: Argument [to] has an invalid value")
UNREADABLE = Outcome(ok=False, failure_code=UNREADABLE_REPLY, failure_reason="gateway reply could not be understood")
DEFAULT = Policy()
LENIENT = Policy(retry_ambiguous=True)

# (what, outcome, attempt, policy, seconds_left, delay, the verdict)
TABLE = [
    ("accepted", ACCEPTED, 1, DEFAULT, None, 1.0, Verdict(False, True, None, "attempt 1: accepted")),
    ("refused connection, first attempt", REFUSED, 1, DEFAULT, None, 1.5, Verdict(
        True, True, 1.5, "attempt 1 of 5: could not connect to the gateway: [Errno 111] Connection refused; "
                         "retrying in 1.5 s")),
    ("refused connection, the last attempt", REFUSED, 5, DEFAULT, None, 1.5, Verdict(
        False, True, None,
        "attempt 5 of 5: could not connect to the gateway: [Errno 111] Connection refused: no attempts left")),
    ("503, within validity", BUSY, 2, DEFAULT, 60.0, 3.25, Verdict(
        True, True, 3.25, "attempt 2 of 5: gateway answered HTTP 503; retrying in 3.2 s")),
    ("503, the retry would come after the validity ends", BUSY, 2, DEFAULT, 2.0, 3.25, Verdict(
        False, True, None, "attempt 2 of 5: gateway answered HTTP 503: not retried, the message's validity "
                           "ends in 2.0 s, before the next attempt (in 3.2 s): it will expire")),
    ("a throttle past max_attempts is still retried and does not count", THROTTLE, 7, DEFAULT, None, 8.0, Verdict(
        True, False, 8.0, "attempt 7 of 5: gateway answered HTTP 403: User throughput exceeded "
                          "(a throttle: it does not use up an attempt); retrying in 8.0 s")),
    ("a throttle stops at the validity", THROTTLE, 1, DEFAULT, 0.5, 1.0, Verdict(
        False, False, None, "attempt 1 of 5: gateway answered HTTP 403: User throughput exceeded "
                            "(a throttle: it does not use up an attempt): not retried, the message's validity "
                            "ends in 0.5 s, before the next attempt (in 1.0 s): it will expire")),
    ("timeout: ambiguous, not retried", TIMED_OUT, 1, DEFAULT, None, 1.0, Verdict(
        False, True, None, "attempt 1 of 5: the gateway's answer is ambiguous (timeout): not retried")),
    ("500: ambiguous, not retried", SERVER_ERROR, 1, DEFAULT, 600.0, 1.0, Verdict(
        False, True, None, "attempt 1 of 5: the gateway's answer is ambiguous (gateway_error): not retried")),
    ("timeout, with retry_ambiguous", TIMED_OUT, 1, LENIENT, None, 2.0, Verdict(
        True, True, 2.0, "attempt 1 of 5: gateway did not answer within 10 s "
                         "(ambiguous, retried as the gateway allows); retrying in 2.0 s")),
    ("timeout, with retry_ambiguous, the last attempt", TIMED_OUT, 5, LENIENT, None, 2.0, Verdict(
        False, True, None, "attempt 5 of 5: gateway did not answer within 10 s "
                           "(ambiguous, retried as the gateway allows): no attempts left")),
    ("a bad number fails at once", BAD_NUMBER, 1, LENIENT, None, 1.0, Verdict(
        False, True, None,
        "attempt 1 of 5: gateway answered HTTP 400: Argument [to] has an invalid value: not retried")),
    ("an unreadable reply fails at once", UNREADABLE, 1, LENIENT, None, 1.0, Verdict(
        False, True, None, "attempt 1 of 5: gateway reply could not be understood: not retried")),
    ("max_attempts 1: no retry at all", REFUSED, 1, Policy(max_attempts=1), None, 1.0, Verdict(
        False, True, None,
        "attempt 1 of 1: could not connect to the gateway: [Errno 111] Connection refused: no attempts left")),
]


@pytest.mark.parametrize("what, outcome, attempt, policy, seconds_left, delay, expected", TABLE,
                         ids=[row[0] for row in TABLE])
def test_verdicts(what, outcome, attempt, policy, seconds_left, delay, expected):
    assert verdict(outcome, attempt, policy, seconds_left, delay) == expected


@pytest.mark.parametrize("attempt, rand, expected", [
    (1, 0.0, 0.5), (1, 1.0, 1.0), (2, 0.0, 1.0), (4, 0.5, 6.0), (10, 0.0, 150.0), (10, 1.0, 300.0),
    (10_000, 1.0, 300.0), (0, 0.0, 0.5), (-3, 0.0, 0.5),
])
def test_backoff_doubles_its_window_up_to_the_cap(attempt, rand, expected):
    assert backoff(attempt, None, rand=lambda: rand) == expected


@pytest.mark.parametrize("retry_after, expected", [(0.0, 0.5), (120.0, 120.0), (900.0, 900.0), (86400.0, 3600.0),
                                                   (-5.0, 0.5)])
def test_backoff_honours_retry_after_even_beyond_the_cap(retry_after, expected):
    assert backoff(1, retry_after, rand=lambda: 0.0) == expected


# --- properties ----------------------------------------------------------------

attempts = st.integers(min_value=1, max_value=200)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
waits = st.none() | st.floats(min_value=0.0, max_value=3600.0)
caps = st.floats(min_value=1.0, max_value=1000.0)
delays = st.floats(min_value=0.0, max_value=10_000.0)
lefts = st.none() | st.floats(min_value=-100.0, max_value=10_000.0)
outcomes = st.builds(
    Outcome, ok=st.booleans(), failure_code=st.sampled_from([GATEWAY_ERROR, THROTTLED, TIMEOUT, UNREACHABLE,
                                                             UNREADABLE_REPLY, None]),
    retry=st.sampled_from([SAFE, AMBIGUOUS, None]), failure_reason=st.none() | st.text(max_size=20))
policies = st.builds(Policy, max_attempts=st.integers(min_value=1, max_value=10), retry_ambiguous=st.booleans())


@settings(max_examples=300)
@given(attempts, waits, unit, caps)
def test_backoff_is_never_below_retry_after_nor_above_the_larger_of_cap_and_retry_after(attempt, wait, r, cap):
    delay = backoff(attempt, wait, rand=lambda: r, cap=cap)
    assert delay >= (wait or 0.0)
    assert 0.0 < delay <= max(cap, wait or 0.0)


@settings(max_examples=100)
@given(st.integers(min_value=1, max_value=7), st.randoms(use_true_random=False))
def test_backoff_grows_on_average_until_the_cap(attempt, rng):
    # cap 300 s, base 1 s: the window doubles through attempt 9 (256 s)
    def mean(n: int) -> float:
        return sum(backoff(n, None, rand=rng.random) for _ in range(200)) / 200
    assert mean(attempt + 1) > mean(attempt)


@settings(max_examples=500)
@given(outcomes, attempts, policies, lefts, delays)
def test_what_is_never_retried(outcome, attempt, policy, left, delay):
    result = verdict(outcome, attempt, policy, left, delay)
    if outcome.ok or outcome.retry is None:
        assert not result.retry
    if outcome.retry == AMBIGUOUS and not policy.retry_ambiguous:
        assert not result.retry
    if left is not None and delay >= left:
        assert not result.retry  # validity respected
    if result.retry:
        assert result.delay == delay and (left is None or delay < left)
    else:
        assert result.delay is None
    assert result.reason.startswith(f"attempt {attempt}") and "\n" not in result.reason


@settings(max_examples=300)
@given(attempts, policies, lefts, delays)
def test_a_throttle_never_counts_and_only_the_validity_stops_it(attempt, policy, left, delay):
    throttle = Outcome(ok=False, failure_code=THROTTLED, retry=SAFE, failure_reason="gateway answered HTTP 429")
    result = verdict(throttle, attempt, policy, left, delay)
    assert not result.counts
    assert result.retry == (left is None or delay < left)


@settings(max_examples=300)
@given(attempts, policies, lefts, delays)
def test_a_safe_failure_is_retried_while_attempts_and_validity_last(attempt, policy, left, delay):
    result = verdict(REFUSED, attempt, policy, left, delay)
    assert result.counts
    assert result.retry == (attempt < policy.max_attempts and (left is None or delay < left))

