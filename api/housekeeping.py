"""Work the API does by itself, at start and then every ``SMSGW_HOUSEKEEPING_INTERVAL``.

- A message still ``queued`` well after any gateway call could have ended (the
  gateway timeout plus ``SMSGW_QUEUED_GRACE``, 60 s) was interrupted — the process died between
  storing it and recording the gateway's answer. It becomes ``failed`` with
  ``failure_code`` ``interrupted``. It is never resent: the gateway may have
  sent it, and a resend could deliver the SMS twice.
- Receipts that waited for their message longer than ``SMSGW_UNMATCHED_TTL``
  are marked expired (never deleted).
"""

from __future__ import annotations

import asyncio
import logging

from api import clock, db, events, states, unmatched
from api.tables import messages

log = logging.getLogger("smsgw.housekeeping")

async def interrupt_stale_queued(database, dialect: str, older_than: float) -> int:
    cutoff = clock.iso_after(-older_than)
    stamp = clock.now_iso()
    reason = "interrupted: the process stopped before the gateway's answer was recorded; not resent"
    async with db.write_transaction(database, dialect) as connection:
        rows = await connection.fetch_all(
            messages.update()
            .where(messages.c.state == states.QUEUED, messages.c.created_at < cutoff)
            .values(state=states.FAILED, delivery_status=states.FAILED, failure_code="interrupted",
                    failure_reason=reason, failed_at=stamp, updated_at=stamp)
            .returning(messages.c.id)
        )
        for row in rows:
            await events.record(connection, row[0], events.STATE, changed=True, state_before=states.QUEUED,
                                state_after=states.FAILED, reason=reason)
    return len(rows)


async def run_once(database, dialect: str, settings) -> None:
    interrupted = await interrupt_stale_queued(database, dialect, settings.gateway_timeout + settings.queued_grace)
    expired = await unmatched.expire(database)
    if interrupted or expired:
        log.info("housekeeping: %d queued messages marked interrupted, %d unmatched receipts expired",
                 interrupted, expired)


async def loop(database, dialect: str, settings) -> None:
    while True:
        try:
            await run_once(database, dialect, settings)
        except Exception as exc:  # the database may be away for a while: try again next time
            log.warning("housekeeping failed (%s); will retry", type(exc).__name__)
        await asyncio.sleep(settings.housekeeping_interval)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass

