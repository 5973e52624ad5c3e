"""Status webhooks: endpoints, the outbox of events, and their deliveries.

- ``sms_messages.sequence`` grows by one with each change of a message's state
  or status; existing messages start at 0 (no row is rewritten: a large table
  stays as it is).
- ``webhook_endpoints``: where apps hear about their messages, with a signing
  secret (and the previous one while a rotation's grace lasts).
- ``webhook_events``: the outbox, one row per change some endpoint subscribes
  to, written in the change's own transaction; keyed by (message, sequence).
- ``webhook_deliveries``: one event to one endpoint, with its attempts;
  ``ix_webhook_deliveries_due`` holds only those due, ``_not_due`` only the
  others (ended, or waiting for their endpoint), by age, for pruning.
- Keys that held every scope (made with "all", or before scopes existed) gain
  the new ``webhooks:admin`` scope: "all" keeps meaning all.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import json

import sqlalchemy as sa
from alembic import op

from api.db import Id, JsonDocument as Json

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.String(32)
DUE = sa.text("next_attempt_at IS NOT NULL")
NOT_DUE = sa.text("next_attempt_at IS NULL")
# Frozen copies of api.scopes.SCOPES before and after this migration.
OLD_EVERY_SCOPE = ["messages:send", "messages:read", "gateways:read", "gateways:admin", "keys:admin"]
NEW_EVERY_SCOPE = [*OLD_EVERY_SCOPE, "webhooks:admin"]


def upgrade() -> None:
    op.add_column("sms_messages", sa.Column("sequence", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", Id, primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(255)),
        sa.Column("events", Json, nullable=False),
        sa.Column("gateway_ids", Json),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text),
        sa.Column("previous_secret_expires_at", Timestamp),
        sa.Column("failing_since", Timestamp),
        sa.Column("disabled_at", Timestamp),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "webhook_events",
        sa.Column("message_id", Id, sa.ForeignKey("sms_messages.id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sms_gateway_id", Id, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("snapshot", Json, nullable=False),
    )
    op.create_index("ix_webhook_events_occurred_at", "webhook_events", ["occurred_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", Id, primary_key=True),
        sa.Column("endpoint_id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Timestamp),
        sa.Column("last_attempt_at", Timestamp),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_latency_ms", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("last_response", sa.Text),
        sa.Column("delivered_at", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ux_webhook_deliveries_event_endpoint", "webhook_deliveries",
                    ["message_id", "sequence", "endpoint_id"], unique=True)
    op.create_index("ix_webhook_deliveries_endpoint_id", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    sqlite_where=DUE, postgresql_where=DUE)
    op.create_index("ix_webhook_deliveries_not_due", "webhook_deliveries", ["updated_at"],
                    sqlite_where=NOT_DUE, postgresql_where=NOT_DUE)
    _rescope(OLD_EVERY_SCOPE, NEW_EVERY_SCOPE)


def downgrade() -> None:
    _rescope(NEW_EVERY_SCOPE, OLD_EVERY_SCOPE)
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_column("sequence")


def _rescope(before: list[str], after: list[str]) -> None:
    """Keys holding exactly ``before``'s scopes (or more) hold ``after``'s; downgrading,
    the scope this migration added is taken away from every key."""
    connection = op.get_bind()
    keys = sa.table("api_keys", sa.column("id", Id), sa.column("scopes", Json))
    for key_id, held in connection.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        held = json.loads(held) if isinstance(held, str) else held
        if set(before) <= set(held):
            wanted = after
        else:
            wanted = [scope for scope in held if scope in after]
        if wanted != held:
            connection.execute(keys.update().where(keys.c.id == key_id).values(scopes=wanted))
