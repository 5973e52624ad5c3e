"""Scoped API keys, and the audit trail.

- ``api_keys`` gains ``scopes`` (JSON list), ``gateway_ids`` and ``allowed_countries``
  (JSON lists, NULL = no limit). Keys made before this keep full access: every
  existing row gets every scope.
- ``audit_events``: append-only, hash-chained (see api.audit_chain).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.String(32)

# Frozen copy of api.scopes.SCOPES as of this migration.
EVERY_SCOPE = ["messages:send", "messages:read", "gateways:read", "gateways:admin", "keys:admin"]


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", Json, nullable=True))
        batch.add_column(sa.Column("gateway_ids", Json))
        batch.add_column(sa.Column("allowed_countries", Json))
    keys = sa.table("api_keys", sa.column("scopes", Json))
    op.execute(keys.update().values(scopes=EVERY_SCOPE))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("scopes", existing_type=Json, nullable=False)
    op.create_table(
        "audit_events",
        sa.Column("id", Id, primary_key=True),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("actor_key_id", Id),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_type", sa.String(32)),
        sa.Column("target_id", Id),
        sa.Column("details", Json),
        sa.Column("source_address", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_events_action_id", "audit_events", ["action", "id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allowed_countries")
        batch.drop_column("gateway_ids")
        batch.drop_column("scopes")
