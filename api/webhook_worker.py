"""The webhook worker: every ``smsgw api`` process delivers the outbox's due deliveries.

A loop per process. Each round it asks the state-change pipeline to claim as
many due deliveries as it has room for (``SMSGW_WEBHOOK_CONCURRENCY``); a claim
holds each for a lease (``api.webhook_schedule``), so replicas never deliver
one at once, and one whose worker died is due again when its lease ends.
Each delivery is one signed POST (Standard Webhooks: ``api.webhook_signing``)
on a task of its own; its answer goes back through the pipeline
(``DeliveryResult``), which decides: succeeded, due again after a wait, failed,
and whether the endpoint is disabled.

The request: to an address checked when it was resolved (``api.ssrf``: no
private address unless allowed, no DNS rebinding), no proxy, no redirect
followed, at most ``SMSGW_WEBHOOK_TIMEOUT`` (15 s) for a 2xx, and only the
first 4 KiB of the answer read. The body is the event as it was when it
happened, the same on every attempt; the signature's timestamp is the attempt's.

The loop sleeps until the soonest of: a batch that may have made deliveries
committed (``committed``), a delivery finishing, or ``SMSGW_WEBHOOK_INTERVAL``
(to see deliveries other processes made, or that came due).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp
import sqlalchemy as sa

from api import clock, db, messages, metrics, secrets, ssrf, webhook_signing
from api.providers.base import retry_after
from api.tables import webhook_endpoints
from api.webhook_batches import is_webhook_change
from api.webhook_deliveries import webhook_id
from api.webhook_endpoints import signing_secrets
from api.webhook_schedule import Attempt, ClaimDeliveries, DeliveryResult

log = logging.getLogger("smsgw.webhooks")

MAX_ANSWER_BYTES = 4096
LEASE_GRACE = 5.0  # seconds a claim outlasts twice the request's timeout: time to record the answer
USER_AGENT = "smsgw-webhooks/0.1"
# Read every SMSGW_WEBHOOK_INTERVAL, so compiled once (``db.read``).
ANY_ACTIVE_ENDPOINT = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.is_active.is_(True)).limit(1)
PRESSED_SLOTS = 2  # deliveries under way at once while receipts keep the pipeline full


def payload(row: Mapping[str, Any]) -> bytes:
    """The event's body: ``{"type", "timestamp", "data"}``, ``data`` the message as the API
    returns it (``api.messages.public``) as the change left it, with its ``sequence``."""
    message = {**row, **row["snapshot"], "id": row["message_id"]}
    event = {"type": row["event_type"], "timestamp": row["occurred_at"], "data": messages.public(message)}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def open_session(settings) -> aiohttp.ClientSession:
    """The worker's HTTP client: every name it resolves is checked (``api.ssrf``), no
    proxy from the environment (the check would be of the proxy), no cookies."""
    connector = aiohttp.TCPConnector(limit=settings.webhook_concurrency, keepalive_timeout=30,
                                     resolver=ssrf.CheckedResolver(settings.webhook_allow_private))
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT},
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=False)


@functools.lru_cache(maxsize=4096)
def url_refusal(url: str, allow_http: bool, allow_private: bool) -> ssrf.Refused | None:
    """What ``api.ssrf`` says of a URL's form and of a literal address in it, before each
    request (settings may have changed since the endpoint was made). Pure, so asked once
    per URL; a name is checked by the session's resolver on each connection."""
    try:
        ssrf.check_url_form(url, allow_http=allow_http)
        ssrf.check_target(url, allow_private)
    except ssrf.Refused as refused:
        return refused
    return None


async def post(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes, settings,
               timeout: aiohttp.ClientTimeout) -> Attempt:
    """One attempt: never raises; whatever happens is an ``Attempt``."""
    started = time.monotonic()

    def took() -> float:
        return (time.monotonic() - started) * 1000

    try:
        refused = url_refusal(url, settings.webhook_allow_http, settings.webhook_allow_private)
        if refused is not None:
            raise refused
        async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                timeout=timeout) as answer:
            latency = took()
            kept = b""
            while len(kept) < MAX_ANSWER_BYTES and not answer.content.at_eof():
                chunk = await answer.content.read(MAX_ANSWER_BYTES - len(kept))
                if not chunk:
                    break
                kept += chunk
            text = kept.decode("utf-8", "replace")
            if not answer.content.at_eof():
                answer.close()  # the rest is not wanted: not read, the connection not reused
            status = answer.status
            redirect = 300 <= status < 400
            wait = retry_after(answer.headers.get("Retry-After"), datetime.now(timezone.utc))
            return Attempt(status, latency, "a redirect, not followed" if redirect else None, text or None, wait)
    except ssrf.Refused as refused:
        return Attempt(None, took(), f"{refused.code}: {refused.message}")
    except TimeoutError:
        return Attempt(None, took(), f"no answer within {settings.webhook_timeout:g} s")
    except aiohttp.ClientError as exc:
        refused = ssrf.refusal_in(exc)
        if refused is not None:
            return Attempt(None, took(), f"{refused.code}: {refused.message}")
        return Attempt(None, took(), f"could not connect: {type(exc).__name__}")
    except OSError as exc:
        return Attempt(None, took(), f"could not connect: {exc.strerror or type(exc).__name__}")


def target(url: str) -> str:
    """What a log line says of an endpoint's URL: its host and port, never its path or query."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "?"


class WebhookWorker:
    def __init__(self, pipeline, settings, database=None):
        self.pipeline = pipeline
        self.settings = settings
        self.database = database
        # Is there an active endpoint at all? Without one no delivery is ever due, so the
        # worker claims nothing (and a batch of receipts wakes nobody). Looked up again
        # every SMSGW_WEBHOOK_INTERVAL; None: not yet known.
        self.endpoints: bool | None = None if database is not None else True
        self._endpoints_read = 0.0
        self.timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout)
        self.session: aiohttp.ClientSession | None = None
        self.woken = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.delivered = 0  # answers recorded (2xx or not)
        self.lag = 0.0      # seconds the oldest delivery of the last claim had been due

    def start(self) -> None:
        self.session = open_session(self.settings)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """A route made deliveries due (a retry, a replay, an endpoint enabled): look now."""
        self._endpoints_read = 0.0
        self.woken.set()

    def committed(self, batch: list) -> None:
        """The pipeline committed ``batch``: a change of a message may have made deliveries."""
        if self.endpoints and not all(is_webhook_change(change) for change in batch):
            self.woken.set()

    async def _any_endpoint(self) -> bool:
        if self.database is not None and time.monotonic() - self._endpoints_read >= self.settings.webhook_interval:
            self.endpoints = await db.read_one(self.database, ANY_ACTIVE_ENDPOINT, {}) is not None
            self._endpoints_read = time.monotonic()
        return bool(self.endpoints)

    async def stop(self) -> None:
        """Stop claiming; let the requests under way end (bounded by the timeout) and their
        answers be recorded. One cut short is delivered again when its lease ends."""
        self.stopping = True
        self.woken.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5)
            except (TimeoutError, Exception):
                self.task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout + 5)
        if self.session is not None:
            await self.session.close()

    async def _run(self) -> None:
        while not self.stopping:
            pause = self.settings.webhook_interval
            try:
                room = self.room()
                if room > 0 and await self._any_endpoint():
                    lease = 2 * self.settings.webhook_timeout + LEASE_GRACE
                    claim = ClaimDeliveries(room, lease, self.settings.webhook_retry_schedule)
                    taken = await self.pipeline.submit(claim)
                    if taken:
                        self.lag = clock.seconds_between(min(row["due_at"] for row in taken), clock.now_iso())
                    for row in taken:
                        self._start(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: try again later
                log.warning("claiming webhook deliveries failed (%s); will retry", type(exc).__name__)
            try:
                await asyncio.wait_for(self.woken.wait(), pause)
            except TimeoutError:
                pass
            self.woken.clear()

    def room(self) -> int:
        """How many more deliveries to claim now: none until a quarter of the slots are free
        (a claim is a transaction; one per finished request would cost as much as the request).

        Receipts first: while the pipeline commits full batches of other changes (receipts
        coming in as fast as it can take them), deliveries use only ``PRESSED_SLOTS`` slots,
        so a burst of receipts is taken at nearly its full rate and the deliveries it makes
        wait in the outbox, then go at full speed once the burst is over. Only for so long:
        once the deliveries it takes were due ``SMSGW_WEBHOOK_MAX_LAG`` seconds ago or more,
        they go at full speed whatever comes in, so no app hears much later than that."""
        slots = self.settings.webhook_concurrency
        if self.pipeline.pressed and self.lag < self.settings.webhook_max_lag:
            slots = min(slots, PRESSED_SLOTS)
        free = slots - len(self.tasks)
        return free if free >= max(1, slots // 4) else 0

    def _start(self, row: Mapping[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(row))
        self.tasks.add(task)

        def done(finished: asyncio.Task) -> None:
            self.tasks.discard(finished)
            self.woken.set()

        task.add_done_callback(done)

    async def _deliver(self, row: Mapping[str, Any]) -> None:
        hook_id = webhook_id(row["message_id"], row["sequence"])
        try:
            signing = signing_secrets(row, self.settings.keyring, clock.now_iso() if row["previous_secret"] else "")
            body = payload(row)
            headers = webhook_signing.headers(signing, hook_id, int(time.time()), body)
        except secrets.SecretUnavailable:
            answer = Attempt(None, 0.0, "its secret is sealed with a key this process lacks (SMSGW_SECRET_KEY)")
        except Exception as exc:  # a fault of ours before any request: said, and counted as a failed attempt
            log.error("webhook %s could not be prepared (%s)", hook_id, type(exc).__name__)
            answer = Attempt(None, 0.0, f"smsgw could not prepare the request ({type(exc).__name__})")
        else:
            answer = await post(self.session, row["url"], headers, body, self.settings, self.timeout)
        result = DeliveryResult(row["id"], row["attempts"], answer, self.settings.webhook_retry_schedule,
                                self.settings.webhook_disable_after, random.random(), claimed_at=row["updated_at"])
        try:
            recorded = await self.pipeline.submit(result)
        except Exception as exc:  # left claimed: delivered again when its lease ends
            log.error("the answer to webhook %s could not be recorded (%s)", hook_id, type(exc).__name__)
            return
        self.delivered += 1
        metrics.delivered(recorded.outcome, answer.latency_ms / 1000)
        self._say(row, hook_id, answer, recorded)

    @staticmethod
    def _say(row: Mapping[str, Any], hook_id: str, answer: Attempt, recorded) -> None:
        if recorded.outcome in ("succeeded", "stale"):
            return
        where = f"endpoint {row['endpoint_id']} ({target(row['url'])})"
        if recorded.disabled:
            log.warning("webhook endpoint %s disabled: %s", where, recorded.endpoint["disabled_reason"])
        if recorded.outcome == "retry":
            due = recorded.delivery["next_attempt_at"]
            log.info("webhook %s (%s) to %s: attempt %d failed: %s; next attempt %s", hook_id, row["event_type"],
                     where, row["attempts"], answer.describe(), f"at {due}" if due else "when it is enabled again")
        else:
            log.warning("webhook %s (%s) to %s: attempt %d failed: %s; %s", hook_id, row["event_type"], where,
                        row["attempts"], answer.describe(),
                        "no more attempts (410 Gone)" if recorded.outcome == "gone" else "no attempts left")
