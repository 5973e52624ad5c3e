"""Normalised state, receipt history, receipts that arrive first, idempotency keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.String(32)

# The state of rows written before this migration, from their raw status (frozen copy).
BACKFILL = r"""
UPDATE sms_messages SET state = CASE
    WHEN delivery_status IN ('queued', 'submitted', 'failed') THEN delivery_status
    WHEN delivery_status IN ('delivrd', 'delivered') THEN 'delivered'
    WHEN delivery_status IN ('undeliv', 'undelivered', 'rejectd', 'rejected', 'expired', 'deleted', 'error')
        THEN 'failed'
    WHEN delivery_status IN ('esme_rok', 'acceptd', 'accepted', 'enroute', 'sent', 'buffered', 'unknown')
        THEN 'accepted'
    WHEN delivery_status LIKE 'esme\_r%' ESCAPE '\' AND delivery_status <> 'esme_rthrottled' THEN 'failed'
    ELSE 'submitted'
END
"""


def upgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("status_conflict", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("idempotency_key", sa.String(255)))
        batch.add_column(sa.Column("request_hash", sa.String(64)))
    op.execute(BACKFILL)
    with op.batch_alter_table("sms_messages") as batch:
        batch.alter_column("state", existing_type=sa.String(16), nullable=False)
        batch.create_index("ux_sms_messages_gateway_idempotency_key", ["sms_gateway_id", "idempotency_key"],
                           unique=True)
        batch.create_index("ix_sms_messages_state_created", ["state", "created_at"])
    op.create_table(
        "sms_message_events",
        sa.Column("id", Id, primary_key=True),
        sa.Column("message_id", Id, sa.ForeignKey("sms_messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("raw_status", sa.String(32)),
        sa.Column("state_before", sa.String(16)),
        sa.Column("state_after", sa.String(16)),
        sa.Column("changed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", Json),
        sa.Column("source_address", sa.String(64)),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_sms_message_events_message_id", "sms_message_events", ["message_id", "id"])
    op.create_table(
        "unmatched_receipts",
        sa.Column("id", Id, primary_key=True),
        sa.Column("sms_gateway_id", Id, nullable=False),
        sa.Column("external_message_id", sa.String(255), nullable=False),
        sa.Column("raw_status", sa.String(32), nullable=False),
        sa.Column("payload", Json),
        sa.Column("source_address", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", Id),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("resolved_at", Timestamp),
    )
    op.create_index("ix_unmatched_receipts_lookup", "unmatched_receipts",
                    ["sms_gateway_id", "external_message_id", "status"])
    op.create_index("ix_unmatched_receipts_gateway_id", "unmatched_receipts", ["sms_gateway_id", "id"])
    op.create_index("ix_unmatched_receipts_status_expires", "unmatched_receipts", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("unmatched_receipts")
    op.drop_table("sms_message_events")
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_index("ix_sms_messages_state_created")
        batch.drop_index("ux_sms_messages_gateway_idempotency_key")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("status_conflict")
        batch.drop_column("state")
