"""request_keys: Idempotency-Key values of stored event batches, so a retried POST stores its events once

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_keys",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stored", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_request_keys_user", "request_keys", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_request_keys_user", "request_keys")
    op.drop_table("request_keys")
