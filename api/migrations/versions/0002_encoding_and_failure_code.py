"""Messages record their encoding, segment count and a failure code.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch:
        batch.add_column(sa.Column("failure_code", sa.String(32)))
        batch.add_column(sa.Column("encoding", sa.String(8)))
        batch.add_column(sa.Column("segments", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_column("segments")
        batch.drop_column("encoding")
        batch.drop_column("failure_code")
