"""Work the API does by itself, at start and then every ``SMSGW_HOUSEKEEPING_INTERVAL``.

- A message still ``queued`` well after any gateway call could have ended (the
  gateway timeout plus ``SMSGW_QUEUED_GRACE``, 60 s) was interrupted — the process died between
  storing it and recording the gateway's answer. It becomes ``failed`` with
  ``failure_code`` ``interrupted``. It is never resent: the gateway may have
  sent it, and a resend could deliver the SMS twice.
- Receipts that waited for their message longer than ``SMSGW_UNMATCHED_TTL``
  are marked expired (never deleted).

Both are found with a plain read and then submitted to the state-change
pipeline, which decides again under its locks (``api.changes``): a message
whose answer is recorded meanwhile is left alone.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from api import changes, clock, states
from api.tables import messages, unmatched_receipts

log = logging.getLogger("smsgw.housekeeping")

CHUNK = 1000  # rows found per read; the next round finds the rest


async def interrupt_stale_queued(database, pipeline, older_than: float) -> int:
    rows = await database.fetch_all(
        sa.select(messages.c.id)
        # 'queued' inline, not bound: only then can SQLite use the partial index on queued messages
        .where(messages.c.state == sa.literal(states.QUEUED, literal_execute=True),
               messages.c.created_at < clock.iso_after(-older_than))
        .order_by(messages.c.id).limit(CHUNK))
    return await _submit(pipeline, [changes.Interruption(row[0]) for row in rows], changes.INTERRUPTED)


async def expire_parked(database, pipeline) -> int:
    rows = await database.fetch_all(
        sa.select(unmatched_receipts.c.id)
        .where(unmatched_receipts.c.status == changes.PENDING, unmatched_receipts.c.expires_at <= clock.now_iso())
        .order_by(unmatched_receipts.c.id).limit(CHUNK))
    return await _submit(pipeline, [changes.ParkedExpiry(row[0]) for row in rows], changes.EXPIRED)


async def _submit(pipeline, found: list[changes.Change], outcome: str) -> int:
    """Submit together (one batch, when nothing else waits); how many had ``outcome``."""
    outcomes = await asyncio.gather(*(pipeline.submit(change) for change in found))
    return sum(1 for o in outcomes if o == outcome)


async def run_once(database, pipeline, settings) -> None:
    interrupted = await interrupt_stale_queued(database, pipeline, settings.gateway_timeout + settings.queued_grace)
    expired = await expire_parked(database, pipeline)
    if interrupted or expired:
        log.info("housekeeping: %d queued messages marked interrupted, %d unmatched receipts expired",
                 interrupted, expired)


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
