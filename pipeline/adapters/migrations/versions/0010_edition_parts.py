"""edition_part: the stories and theme headings personal editions share

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:00:00.000000

Personal editions built from this revision on store their stories and themes as references
(content ``"version": 2``) to rows of this table, each written once per distinct text;
editions stored before it keep their whole content and are read as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edition_part",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("content", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    # Editions that refer to parts cannot be read without them: they go with the table
    # (the ledger's rows of theirs cascade), as if they had not been built.
    op.execute("DELETE FROM edition WHERE CAST(content AS TEXT) LIKE '{\"version\": 2,%'")
    op.drop_table("edition_part")
