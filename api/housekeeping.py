"""Work the API does by itself, at start and then every ``SMSGW_HOUSEKEEPING_INTERVAL``.

- A message claimed for a gateway call well after any call could have ended (the
  gateway timeout plus ``SMSGW_QUEUED_GRACE``, 60 s) was interrupted — the process died between
  claiming it and recording the gateway's answer. It becomes ``failed`` with
  ``failure_code`` ``interrupted``. It is never resent: the gateway may have
  sent it, and a resend could deliver the SMS twice.
- Receipts that waited for their message longer than ``SMSGW_UNMATCHED_TTL``
  are marked expired (never deleted).
- Messages that waited for the dispatcher past their validity end ``failed``,
  ``expired`` (the dispatcher's claims catch most; this catches those of a gateway
  that is inactive or paused).
- Status webhooks older than ``SMSGW_WEBHOOK_RETENTION`` (30 days) are deleted:
  deliveries that ended, then events no delivery waits for. A replay reaches back
  that far.

Each is found with a plain read and then submitted to the state-change
pipeline, which decides again under its locks (``api.changes``): a message
whose answer is recorded meanwhile is left alone.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from api import changes, clock, webhook_schedule
from api.tables import messages, unmatched_receipts, webhook_deliveries, webhook_events

log = logging.getLogger("smsgw.housekeeping")

CHUNK = 1000  # rows found per read; the next round finds the rest


async def interrupt_stale_claims(database, pipeline, older_than: float) -> int:
    """Messages whose gateway call began longer ago than any call can last."""
    rows = await database.fetch_all(
        sa.select(messages.c.id)
        .where(messages.c.claimed_at.is_not(None), messages.c.claimed_at < clock.iso_after(-older_than))
        .order_by(messages.c.id).limit(CHUNK))
    return await _submit(pipeline, [changes.Interruption(row[0]) for row in rows], changes.INTERRUPTED)


async def expire_waiting(database, pipeline) -> int:
    """Messages that waited past their validity without being claimed (e.g. their gateway
    is inactive or paused): failed, ``expired``, never sent."""
    rows = await database.fetch_all(
        sa.select(messages.c.id)
        .where(messages.c.next_attempt_at.is_not(None), messages.c.expires_at <= clock.now_iso())
        .order_by(messages.c.id).limit(CHUNK))
    return await _submit(pipeline, [changes.Expiry(row[0]) for row in rows], changes.EXPIRED_CODE)


async def expire_parked(database, pipeline) -> int:
    rows = await database.fetch_all(
        sa.select(unmatched_receipts.c.id)
        .where(unmatched_receipts.c.status == changes.PENDING, unmatched_receipts.c.expires_at <= clock.now_iso())
        .order_by(unmatched_receipts.c.id).limit(CHUNK))
    return await _submit(pipeline, [changes.ParkedExpiry(row[0]) for row in rows], changes.EXPIRED)


async def prune_webhooks(database, retention: float) -> int:
    """Deliveries that ended and events no delivery waits for, older than ``retention``
    seconds: a chunk of each a round, each one short statement, so the pipeline's writer
    is never held up for long. Only webhook rows: the messages' own history stays."""
    before = clock.iso_after(-retention)
    ended = await database.fetch_all(  # along ix_webhook_deliveries_not_due, oldest first
        sa.select(webhook_deliveries.c.id)
        .where(webhook_deliveries.c.next_attempt_at.is_(None), webhook_deliveries.c.updated_at < before,
               webhook_deliveries.c.status.in_((webhook_schedule.SUCCEEDED, webhook_schedule.FAILED)))
        .order_by(webhook_deliveries.c.updated_at).limit(CHUNK))
    if ended:
        await database.execute(webhook_deliveries.delete().where(webhook_deliveries.c.id.in_([r[0] for r in ended])))
    events = webhook_events.c
    unwanted = sa.and_(events.occurred_at < before, ~sa.exists().where(
        webhook_deliveries.c.message_id == events.message_id, webhook_deliveries.c.sequence == events.sequence))
    old = await database.fetch_all(  # along ix_webhook_events_occurred_at, oldest first
        sa.select(events.message_id).where(unwanted).order_by(events.occurred_at).limit(CHUNK))
    if old:
        await database.execute(webhook_events.delete().where(events.message_id.in_({r[0] for r in old}), unwanted))
    return len(ended) + len(old)


async def _submit(pipeline, found: list[changes.Change], outcome: str) -> int:
    """Submit together (one batch, when nothing else waits); how many had ``outcome``."""
    outcomes = await asyncio.gather(*(pipeline.submit(change) for change in found))
    return sum(1 for o in outcomes if o == outcome)


async def run_once(database, pipeline, settings) -> None:
    interrupted = await interrupt_stale_claims(database, pipeline, settings.gateway_timeout + settings.queued_grace)
    expired = await expire_parked(database, pipeline)
    outlived = await expire_waiting(database, pipeline)
    pruned = await prune_webhooks(database, settings.webhook_retention)
    if interrupted or expired or outlived or pruned:
        log.info("housekeeping: %d gateway calls that never came back marked interrupted, %d unmatched "
                 "receipts expired, %d waiting messages expired, %d old webhook rows deleted",
                 interrupted, expired, outlived, pruned)


async def loop(database, pipeline, settings) -> None:
    while True:
        try:
            await run_once(database, pipeline, settings)
        except Exception as exc:  # the database may be away for a while: try again next time
            log.warning("housekeeping failed (%s); will retry", type(exc).__name__)
        await asyncio.sleep(settings.housekeeping_interval)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
