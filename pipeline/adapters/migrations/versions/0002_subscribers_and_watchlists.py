"""subscribers and watchlists

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:16:28.506493
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("themes", sa.JSON(), nullable=False),
        sa.Column("frequency", sa.String(length=16), server_default="daily", nullable=False),
        sa.Column("hour", sa.Integer(), server_default="7", nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber")),
        sa.UniqueConstraint("email", name=op.f("uq_subscriber_email")),
    )
    op.create_table(
        "watchlist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("instant", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name=op.f("fk_watchlist_subscriber_id_subscriber"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watchlist")),
    )
    with op.batch_alter_table("watchlist", schema=None) as batch_op:
        batch_op.create_index(
            "uq_watchlist_subscriber_id_query", ["subscriber_id", "query"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("watchlist", schema=None) as batch_op:
        batch_op.drop_index("uq_watchlist_subscriber_id_query")

    op.drop_table("watchlist")
    op.drop_table("subscriber")
