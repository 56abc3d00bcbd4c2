"""editions and deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 21:21:02.891989
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_date", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.Text(), server_default="", nullable=False),
        sa.Column("item_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name=op.f("fk_edition_subscriber_id_subscriber"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edition")),
    )
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.create_index("ix_edition_kind_period_end", ["kind", "period_end"], unique=False)
        batch_op.create_index(
            "uq_edition_personal", ["subscriber_id", "frequency", "period_end"], unique=True
        )
        batch_op.create_index(
            "uq_edition_public",
            ["kind", "frequency", "period_end"],
            unique=True,
            sqlite_where=sa.text("kind = 'public'"),
            postgresql_where=sa.text("kind = 'public'"),
        )

    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=True),
        sa.Column("alert_item_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("resent", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_item_id"],
            ["item.id"],
            name=op.f("fk_delivery_alert_item_id_item"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["edition.id"],
            name=op.f("fk_delivery_edition_id_edition"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
            name=op.f("fk_delivery_subscriber_id_subscriber"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery")),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_status_not_before", ["status", "not_before"], unique=False
        )
        batch_op.create_index(
            "uq_delivery_subscriber_id_alert_item_id",
            ["subscriber_id", "alert_item_id"],
            unique=True,
        )
        batch_op.create_index(
            "uq_delivery_subscriber_id_edition_id", ["subscriber_id", "edition_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("uq_delivery_subscriber_id_edition_id")
        batch_op.drop_index("uq_delivery_subscriber_id_alert_item_id")
        batch_op.drop_index("ix_delivery_status_not_before")

    op.drop_table("delivery")
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_edition_public",
            sqlite_where=sa.text("kind = 'public'"),
            postgresql_where=sa.text("kind = 'public'"),
        )
        batch_op.drop_index("uq_edition_personal")
        batch_op.drop_index("ix_edition_kind_period_end")

    op.drop_table("edition")
