"""Housekeeping deletes old webhook rows, and only those: ended deliveries and events no
delivery waits for, older than SMSGW_WEBHOOK_RETENTION (on SQLite and PostgreSQL)."""

import asyncio
import os

import sqlalchemy as sa

from api import clock, db, housekeeping
from api.tables import gateways, messages, webhook_deliveries as deliveries, webhook_events as events
from tests.servers import run_smsgw


def test_old_ended_deliveries_and_their_events_go_and_the_rest_stays(empty_database):
    env = {"SMSGW_DATABASE_URL": empty_database}
    run_smsgw({**os.environ, **env}, "migrate")
    old, recent = clock.iso_after(-40 * 86400), clock.now_iso()

    async def scenario():
        database_ = db.make_database(env["SMSGW_DATABASE_URL"])
        await database_.connect()
        try:
            await database_.execute(gateways.insert().values(
                id=1, name="g", provider_type="http", server_host="h", server_port=1, api_path="send",
                callback_token="t", is_active=True, use_ssl=False, created_at=recent, updated_at=recent))
            for message_id in (1, 2, 3):
                await database_.execute(messages.insert().values(
                    id=message_id, sms_gateway_id=1, to_number="+1", from_sender="A", message="m", callback_url="u",
                    delivery_status="delivered", state="delivered", status_conflict=False, created_at=recent,
                    updated_at=recent))
            rows = [(1, old, "succeeded", old), (2, old, "pending", old), (3, recent, "succeeded", recent)]
            for message_id, occurred, status, updated in rows:
                await database_.execute(events.insert().values(
                    message_id=message_id, sequence=1, sms_gateway_id=1, type="message.delivered",
                    occurred_at=occurred, snapshot={}))
                await database_.execute(deliveries.insert().values(
                    endpoint_id=1, message_id=message_id, sequence=1, event_type="message.delivered",
                    status=status, attempts=1, created_at=occurred, updated_at=updated))
            assert await housekeeping.prune_webhooks(database_, 30 * 86400) == 2
            left = {(r[0], r[1]) for r in await database_.fetch_all(sa.select(deliveries.c.message_id,
                                                                                 deliveries.c.status))}
            kept_events = {r[0] for r in await database_.fetch_all(sa.select(events.c.message_id))}
            assert left == {(2, "pending"), (3, "succeeded")}  # an old one still waiting stays
            assert kept_events == {2, 3}
            assert await housekeeping.prune_webhooks(database_, 30 * 86400) == 0
        finally:
            await database_.disconnect()

    asyncio.run(scenario())
