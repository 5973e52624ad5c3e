"""Sending at volume: batches, a dispatcher's queue, pacing per gateway, validity and schedules.

- Gateways gain how they may be used: ``throughput_per_second`` (null: no
  limit), ``max_in_flight`` (16), ``max_attempts`` (5), ``retry_ambiguous``
  (false) and ``default_validity_seconds`` (null: none).
- Messages gain ``client_reference``, ``batch_id``, ``send_at``,
  ``validity_period``, ``expires_at``, ``attempts``, ``next_attempt_at`` (set
  only while the message waits for the dispatcher), ``claimed_at`` (set only
  while a gateway call for it may be under way) and ``canceled_at``.
- ``ix_sms_messages_due`` finds what the dispatcher should send next, per
  gateway; ``ix_sms_messages_claimed`` finds calls that never came back
  (housekeeping). Both are partial: a receipt touches neither.
  They replace ``ix_sms_messages_queued_created``: a queued message may now
  wait for its turn for as long as its validity allows, so being old is no
  longer a sign of a crash; being claimed long ago is. A message queued when
  this runs was a synchronous send under way: it counts as claimed then.
- ``sms_batches``: one row a batch send, holding its ``Idempotency-Key``.
- ``gateway_pacing``: each gateway's token bucket, shared by every replica.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from api.db import Id

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Timestamp = sa.String(32)
QUEUED = sa.text("state = 'queued'")
WAITING = sa.text("next_attempt_at IS NOT NULL")
CLAIMED = sa.text("claimed_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "sms_batches",
        sa.Column("id", Id, primary_key=True),
        sa.Column("sms_gateway_id", Id, sa.ForeignKey("sms_gateways.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Index("ux_sms_batches_gateway_idempotency_key", "sms_gateway_id", "idempotency_key", unique=True),
    )
    op.create_table(
        "gateway_pacing",
        sa.Column("sms_gateway_id", Id, primary_key=True, autoincrement=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("refilled_at", Timestamp, nullable=False),
        sa.Column("paused_until", Timestamp),
    )
    # Plain ALTER TABLE ... ADD COLUMN (no table rebuild on SQLite: a rebuilt table
    # would forget the highest gateway id ever handed out).
    for column in (
        sa.Column("throughput_per_second", sa.Float),
        sa.Column("max_in_flight", sa.Integer, nullable=False, server_default="16"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
        sa.Column("retry_ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("default_validity_seconds", sa.Integer),
    ):
        op.add_column("sms_gateways", column)
    for column in (
        sa.Column("client_reference", sa.String(64)),
        sa.Column("batch_id", Id),
        sa.Column("send_at", Timestamp),
        sa.Column("validity_period", sa.Integer),
        sa.Column("expires_at", Timestamp),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Timestamp),
        sa.Column("claimed_at", Timestamp),
        sa.Column("canceled_at", Timestamp),
    ):
        op.add_column("sms_messages", column)
    op.execute("UPDATE sms_messages SET claimed_at = created_at, attempts = 1 WHERE state = 'queued'")
    op.execute("UPDATE sms_messages SET attempts = 1 WHERE state <> 'queued'")
    op.drop_index("ix_sms_messages_queued_created", table_name="sms_messages")
    op.create_index("ix_sms_messages_due", "sms_messages", ["sms_gateway_id", "next_attempt_at"],
                    sqlite_where=WAITING, postgresql_where=WAITING)
    op.create_index("ix_sms_messages_claimed", "sms_messages", ["claimed_at"],
                    sqlite_where=CLAIMED, postgresql_where=CLAIMED)
    op.create_index("ix_sms_messages_gateway_reference", "sms_messages",
                    ["sms_gateway_id", "client_reference", "id"])
    op.create_index("ix_sms_messages_batch_id", "sms_messages", ["batch_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_sms_messages_batch_id", table_name="sms_messages")
    op.drop_index("ix_sms_messages_gateway_reference", table_name="sms_messages")
    op.drop_index("ix_sms_messages_claimed", table_name="sms_messages")
    op.drop_index("ix_sms_messages_due", table_name="sms_messages")
    op.create_index("ix_sms_messages_queued_created", "sms_messages", ["created_at"],
                    sqlite_where=QUEUED, postgresql_where=QUEUED)
    # What the older schema cannot show: waiting, scheduled and canceled messages end failed.
    op.execute("UPDATE sms_messages SET state = 'failed', delivery_status = 'failed', failure_code = 'expired', "
               "failure_reason = 'not sent: smsgw was downgraded to a version without a dispatcher', "
               "failed_at = updated_at WHERE state IN ('scheduled', 'canceled') "
               "OR (state = 'queued' AND claimed_at IS NULL)")
    with op.batch_alter_table("sms_messages") as batch:
        for name in ("canceled_at", "claimed_at", "next_attempt_at", "attempts", "expires_at", "validity_period",
                     "send_at", "batch_id", "client_reference"):
            batch.drop_column(name)
    with op.batch_alter_table("sms_gateways", table_kwargs={"sqlite_autoincrement": True}) as batch:
        for name in ("default_validity_seconds", "retry_ambiguous", "max_attempts", "max_in_flight",
                     "throughput_per_second"):
            batch.drop_column(name)
    op.drop_table("gateway_pacing")
    op.drop_table("sms_batches")
