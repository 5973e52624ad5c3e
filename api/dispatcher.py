"""The dispatcher: every ``smsgw api`` process sends the messages that are due, each gateway at its pace.

A loop per process. Each round it asks the state-change pipeline to ``Claim``
the due messages of each active gateway: in one transaction, as many as the
gateway's token bucket (``api.pacing``) and ``max_in_flight`` allow, counted
over every replica (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two replicas
never claim one message; SQLite's write lock does the same). A claimed message
has ``claimed_at`` set and its attempt counted *before* its gateway is called,
so a crash after the call leaves it claimed, never due again: housekeeping
later marks it ``interrupted``, and it is never sent twice.

Each claimed message is sent on a task of its own; the answer goes back
through the pipeline as a ``SendOutcome`` with the gateway's retry policy, and
``api.changes`` decides: submitted, failed, or due again after a backoff
(``api.retries``). A gateway that says "too fast" is paused for every replica.

The loop sleeps until the soonest of: a message of its own queued (``wake``),
a call finishing, the next due time it knows of, the next token, or
``SMSGW_DISPATCH_INTERVAL`` (to see what other replicas queued).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

import sqlalchemy as sa

from api import changes, clock, db, gateway_call, retries
from api.providers.base import THROTTLED, Outcome, Submission
from api.sending import current_callback_url, record_outcome, validity_minutes
from api.tables import gateways, messages

log = logging.getLogger("smsgw.dispatcher")

GATEWAYS_TTL = 1.0     # seconds the active gateways' rows are reused between rounds
DEFAULT_PAUSE = 1.0    # seconds a gateway is paused by a "too fast" without Retry-After
# When a gateway's soonest waiting message is due: one step down ``ix_sms_messages_due``.
# Read every round, so compiled once (``db.read``).
NEXT_DUE = sa.select(sa.func.min(messages.c.next_attempt_at).label("due_at")).where(
    messages.c.sms_gateway_id == sa.bindparam("gateway"), messages.c.next_attempt_at.is_not(None))


def pause_after_throttle(gateway: Mapping[str, Any], outcome: Outcome) -> float:
    """How long every replica leaves a gateway alone after it said "too fast": its
    Retry-After; else, for a gateway paced by smsgw (which only ran a little ahead of
    the gateway's own clock), one interval of its rate; else a second."""
    if outcome.retry_after is not None:
        return outcome.retry_after
    rate = gateway["throughput_per_second"]
    return min(DEFAULT_PAUSE, 1 / rate) if rate else DEFAULT_PAUSE


class Dispatcher:
    def __init__(self, database, pipeline, http, settings):
        self.database = database
        self.pipeline = pipeline
        self.http = http
        self.settings = settings
        self.woken = asyncio.Event()
        self.calls: dict[int, int] = {}       # gateway id -> this process's calls under way
        self.turns: dict[int, asyncio.Lock] = {}  # gateway id -> whose turn it is to start (paced gateways)
        self.last_start: dict[int, float] = {}    # gateway id -> when this process last started a call
        self.tasks: set[asyncio.Task] = set()
        self._gateways: list[dict[str, Any]] = []
        self._gateways_read = 0.0
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.recorded = 0  # answers recorded (accepted or not)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self.woken.set()

    async def stop(self) -> None:
        """Stop claiming, between rounds (a claim under way is finished and its messages
        are sent: a message claimed and never sent would end interrupted); let the calls
        under way finish and their answers be recorded (they are bounded by the gateway
        timeout), so none is left claimed."""
        self.stopping = True
        self.woken.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), self.settings.gateway_timeout + 5)
            except (TimeoutError, Exception):
                self.task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.gateway_timeout + 5)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                pause = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: try again later
                log.warning("dispatching failed (%s); will retry", type(exc).__name__,
                            exc_info=not db.is_unavailable(exc))
                pause = self.settings.dispatch_interval
            if pause > 0:
                try:
                    await asyncio.wait_for(self.woken.wait(), pause)
                except TimeoutError:
                    pass
            self.woken.clear()

    async def round(self) -> float:
        """Claim and start what is due now; return how long to sleep at most."""
        pause = self.settings.dispatch_interval
        for gateway in await self.active_gateways():
            if self.stopping:
                break
            gateway_id = gateway["id"]
            free = gateway["max_in_flight"] - self.calls.get(gateway_id, 0)
            if free <= 0:
                continue  # a call finishing wakes the loop
            now = clock.now_iso()
            due_at = (await db.read_one(self.database, NEXT_DUE, {"gateway": gateway_id}))["due_at"]
            if due_at is None:
                continue
            if due_at > now:
                pause = min(pause, clock.seconds_between(now, due_at))
                continue
            claimed = await self.pipeline.submit(changes.Claim(gateway_id, free))
            # each send at its token's moment, counted from when the claim was planned
            late = clock.seconds_between(claimed.now, clock.now_iso()) if claimed.now else 0.0
            started = time.monotonic() - late
            for message, delay in zip(claimed.messages, claimed.delays):
                self._start(gateway, message, started + delay)
            if claimed.wait is not None:
                pause = min(pause, claimed.wait)
            elif len(claimed.messages) == free or claimed.expired:
                pause = 0  # there may be more: look again at once
        return max(0.0, pause)

    async def active_gateways(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._gateways_read > GATEWAYS_TTL:
            rows = await self.database.fetch_all(sa.select(gateways).where(gateways.c.is_active.is_(True)))
            self._gateways = [db.as_dict(row) for row in rows]
            self._gateways_read = time.monotonic()
        return self._gateways

    def _start(self, gateway: Mapping[str, Any], message: Mapping[str, Any], at: float) -> None:
        """Send ``message`` on a task of its own, not before ``at`` (``time.monotonic``):
        its token's moment (``api.pacing.start_delays``)."""
        gateway_id = gateway["id"]
        self.calls[gateway_id] = self.calls.get(gateway_id, 0) + 1
        task = asyncio.get_running_loop().create_task(self._send(gateway, message, at))
        self.tasks.add(task)

        def done(finished: asyncio.Task) -> None:
            self.tasks.discard(finished)
            self.calls[gateway_id] -= 1
            self.woken.set()

        task.add_done_callback(done)

    async def _send(self, gateway: Mapping[str, Any], message: Mapping[str, Any], at: float) -> None:
        await self._wait_turn(gateway, at)
        now = clock.now_iso()
        try:
            submission = Submission(
                to=message["to_number"], sender=message["from_sender"], text=message["message"],
                dlr_url=current_callback_url(message["callback_url"], gateway, self.settings.public_url),
                validity_minutes=validity_minutes(message, now))
            outcome = await gateway_call.send(self.http, gateway, submission, self.settings.gateway_timeout,
                                              self.settings.keyring)
        except Exception as exc:  # a fault of ours, before any call: said, and left for housekeeping
            log.error("message %s could not be sent (%s)", message["id"], type(exc).__name__, exc_info=True)
            return
        await self.record(gateway, message, outcome)

    async def _wait_turn(self, gateway: Mapping[str, Any], at: float) -> None:
        """Wait for ``at``; on a paced gateway also for 1/rate after this process's last
        start, in claim order. A busy event loop that wakes several sends late then lets
        them out one interval apart, not all at once: the gateway's rate holds at the
        moment of sending, not only on the bucket's books."""
        rate = gateway["throughput_per_second"]
        if not rate:
            if at > time.monotonic():
                await asyncio.sleep(at - time.monotonic())
            return
        gateway_id = gateway["id"]
        async with self.turns.setdefault(gateway_id, asyncio.Lock()):
            start = max(at, self.last_start.get(gateway_id, float("-inf")) + 1 / rate)
            if start > time.monotonic():
                await asyncio.sleep(start - time.monotonic())
            self.last_start[gateway_id] = time.monotonic()

    async def record(self, gateway: Mapping[str, Any], message: Mapping[str, Any], outcome: Outcome) -> None:
        policy = retries.Policy(max_attempts=gateway["max_attempts"], retry_ambiguous=gateway["retry_ambiguous"])
        delay = retries.backoff(message["attempts"], outcome.retry_after)
        try:
            if outcome.failure_code == THROTTLED:
                await self.pipeline.submit(changes.PauseGateway(gateway["id"], pause_after_throttle(gateway, outcome)))
            await record_outcome(self.pipeline, message["id"], gateway["id"], outcome, policy=policy, delay=delay)
            self.recorded += 1
        except Exception as exc:  # left claimed: housekeeping marks it interrupted, never resends it
            log.error("the answer for message %s could not be recorded (%s)", message["id"], type(exc).__name__)
