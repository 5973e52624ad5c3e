"""The gauges only the database knows, read when Prometheus scrapes.

Messages waiting for the dispatcher or in flight, receipts parked for a message
not yet known, webhook deliveries not yet ended: these are rows, written by
every worker and every replica. Read at scrape time, not kept up to date by
each change: the receipt path pays nothing, a scrape (every 15 s or so) pays
five short reads along partial indexes, the value is the database's as of the
scrape (not as of a housekeeping round up to a minute old), and with several
workers the listener's process reads them once instead of each worker keeping
a copy that would have to be told apart from the others'.

They describe the whole database: every replica on it reports the same values
(aggregate them across instances with ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from api import changes, clock, db
from api.tables import gateways, messages, unmatched_receipts, webhook_deliveries

log = logging.getLogger("smsgw.metrics")

READ_TIMEOUT = 5.0  # seconds a scrape waits for the database before saying it did not answer

GATEWAY_IDS = sa.select(gateways.c.id)
# along ix_sms_messages_due: due now, not yet claimed (the dispatcher's backlog)
QUEUED = (sa.select(messages.c.sms_gateway_id, sa.func.count().label("n"))
          .where(messages.c.next_attempt_at.is_not(None), messages.c.next_attempt_at <= sa.bindparam("now"))
          .group_by(messages.c.sms_gateway_id))
# along ix_sms_messages_claimed: a gateway call begun, its answer not yet recorded
IN_FLIGHT = (sa.select(messages.c.sms_gateway_id, sa.func.count().label("n"))
             .where(messages.c.claimed_at.is_not(None)).group_by(messages.c.sms_gateway_id))
# along ix_unmatched_receipts_status_expires
PARKED = (sa.select(unmatched_receipts.c.sms_gateway_id, sa.func.count().label("n"))
          .where(unmatched_receipts.c.status == changes.PENDING).group_by(unmatched_receipts.c.sms_gateway_id))
# along ix_webhook_deliveries_due: waiting for an attempt, or one under way
WEBHOOKS_PENDING = sa.select(sa.func.count().label("n")).where(webhook_deliveries.c.next_attempt_at.is_not(None))


async def read(url: str) -> dict[str, Any]:
    """What the gauges show, read in one short connection of its own (read-only)."""
    database = db.make_readonly_database(url)
    await database.connect()
    try:
        found = {"gateways": [row[0] for row in await database.fetch_all(GATEWAY_IDS)]}
        for name, query in (("queued", QUEUED.params(now=clock.now_iso())), ("in_flight", IN_FLIGHT),
                            ("parked", PARKED)):
            found[name] = {row[0]: row[1] for row in await database.fetch_all(query)}
        found["webhooks_pending"] = await database.fetch_val(WEBHOOKS_PENDING)
        return found
    finally:
        await database.disconnect()


def per_gateway(name: str, documentation: str, gateway_ids: Iterable[int],
                counts: Mapping[int, int]) -> GaugeMetricFamily:
    """One gauge with a value for every gateway: 0 where it has no rows (a series that
    vanished would read as "no data", not as "none")."""
    family = GaugeMetricFamily(name, documentation, labels=["gateway"])
    for gateway_id in sorted(set(gateway_ids) | set(counts)):
        family.add_metric([str(gateway_id)], counts.get(gateway_id, 0))
    return family


def families(found: Mapping[str, Any] | None) -> list[GaugeMetricFamily]:
    """The gauges for what ``read`` found; None: the database did not answer (only
    ``smsgw_database_up`` 0 then, no stale numbers)."""
    up = GaugeMetricFamily("smsgw_database_up", "1 when the database answered this scrape's reads, else 0.",
                           value=0 if found is None else 1)
    if found is None:
        return [up]
    ids = found["gateways"]
    pending = GaugeMetricFamily("smsgw_webhook_deliveries_pending",
                                "Webhook deliveries not yet ended: waiting for an attempt, or one under way.",
                                value=found["webhooks_pending"] or 0)
    return [
        up,
        per_gateway("smsgw_messages_queued", "Messages due to be sent and waiting for the dispatcher to take "
                    "them (its backlog), by gateway.", ids, found["queued"]),
        per_gateway("smsgw_messages_in_flight", "Messages whose gateway call has begun and whose answer is not "
                    "yet recorded, by gateway.", ids, found["in_flight"]),
        per_gateway("smsgw_parked_receipts_pending", "Receipts waiting for their message (no message had their "
                    "external id yet; kept SMSGW_UNMATCHED_TTL), by gateway.", ids, found["parked"]),
        pending,
    ]


class DatabaseGauges:
    """A collector for the listener's registry: one read of the database per scrape."""

    def __init__(self, url: str):
        self.url = url

    def collect(self) -> list[GaugeMetricFamily]:
        try:
            found = asyncio.run(asyncio.wait_for(read(self.url), READ_TIMEOUT))  # on the scrape's own thread
        except Exception as exc:  # away, locked, no schema: said in the gauge, and in the log
            log.warning("metrics: the database did not answer the scrape's reads (%s)", type(exc).__name__)
            found = None
        return families(found)

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # registered without a read: the first one is the first scrape's
