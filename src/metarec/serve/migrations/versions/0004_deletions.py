"""deletions: the log of users deleted on request (when, how many events; a keyed hash, never the id)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deletions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(64), nullable=False, unique=True),
        sa.Column("deleted_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deletions")
