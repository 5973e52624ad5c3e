"""Whether a failed send is tried again, and when: pure rules, for the dispatcher.

The gateway's answer says what trying again risks (``Outcome.retry``, set by the
providers and ``api.gateway_call``):

- SAFE: the gateway did not take the message (no connection, 429, 503, Jasmin's
  throughput 403). Retried with backoff, up to the gateway's ``max_attempts`` or
  the message's validity, whichever ends first.
- A throttle (429, Jasmin's throughput 403: failure_code ``throttled``) is the
  gateway saying "not now", not a fault of the message: it does not use up one
  of ``max_attempts``, and is retried until the gateway takes the message or
  the message's validity ends.
- AMBIGUOUS: the gateway may have taken it (a timeout, a 5xx after the request
  was sent); the SMS may be on its way, so it is retried only when the gateway
  says ``retry_ambiguous``, else it fails with its failure_code.
- None: accepted, or refused for good (bad credentials, a bad number): never retried.

Nothing here reads the clock or the database: the caller says how many
attempts were made and how long the message stays valid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from api.providers.base import AMBIGUOUS, MAX_RETRY_AFTER, SAFE, THROTTLED, Outcome


@dataclass(frozen=True)
class Policy:
    """A gateway's retry settings."""

    max_attempts: int = 5
    retry_ambiguous: bool = False


@dataclass(frozen=True)
class Verdict:
    retry: bool
    counts: bool         # does this attempt use up one of max_attempts (a throttle does not)
    delay: float | None  # seconds until the next attempt, when retry
    reason: str          # one line for the message's history


def backoff(attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random,
            base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based).

    Exponential with "equal jitter": the window ``min(cap, base * 2**(attempt-1))``
    doubles each time, and the wait is its upper half plus a random part of it.
    The jitter spreads the retries of messages that failed together (a gateway
    restarting fails every message in flight at once), so they do not all come
    back in the same instant; the fixed half keeps a retry from ever coming
    right away, which full jitter (anywhere from 0) would allow.

    ``attempt``: the attempts the message has used. A throttle uses none: what
    spaces those out is the pause every replica then keeps for the whole gateway
    (``api.pacing.pause``), not the message's own backoff. A ``Retry-After`` is
    honoured: the wait is never shorter, even beyond ``cap`` (up to an hour).
    """
    exponent = min(max(attempt, 1) - 1, 60)  # 2**60 seconds is past any cap; no float overflow
    window = min(cap, base * 2 ** exponent)
    wait = window / 2 + rand() * window / 2
    if retry_after is not None:
        wait = max(wait, min(max(retry_after, 0.0), MAX_RETRY_AFTER))
    return wait


def verdict(outcome: Outcome, attempt: int, policy: Policy, seconds_left: float | None,
            delay: float) -> Verdict:
    """Whether the send that ended in ``outcome`` is tried again, in ``delay`` seconds.

    ``attempt``: the counted attempts, this one included (1-based).
    ``seconds_left``: until the message's validity ends; None when it has none.
    ``delay``: what ``backoff`` chose. A retry that would come after the validity
    ends is not made: the message will expire instead.
    """
    if outcome.ok:
        return Verdict(False, True, None, f"attempt {attempt}: accepted")
    head = f"attempt {attempt} of {policy.max_attempts}"
    # one line, whatever the gateway put in its answer
    what = " ".join((outcome.failure_reason or outcome.failure_code or "").split()) or "failed"
    throttled = outcome.failure_code == THROTTLED and outcome.retry == SAFE
    if outcome.retry not in (SAFE, AMBIGUOUS):  # None: refused for good
        return Verdict(False, True, None, f"{head}: {what}: not retried")
    if outcome.retry == AMBIGUOUS and not policy.retry_ambiguous:
        return Verdict(False, True, None,
                       f"{head}: the gateway's answer is ambiguous ({outcome.failure_code}): not retried")
    if outcome.retry == AMBIGUOUS:
        what += " (ambiguous, retried as the gateway allows)"
    if throttled:
        what += " (a throttle: it does not use up an attempt)"
    elif attempt >= policy.max_attempts:
        return Verdict(False, True, None, f"{head}: {what}: no attempts left")
    if seconds_left is not None and delay >= seconds_left:
        left = max(seconds_left, 0.0)
        return Verdict(False, not throttled, None,
                       f"{head}: {what}: not retried, the message's validity ends in {left:.1f} s, "
                       f"before the next attempt (in {delay:.1f} s): it will expire")
    return Verdict(True, not throttled, delay, f"{head}: {what}; retrying in {delay:.1f} s")
