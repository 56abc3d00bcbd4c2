"""archive: SQLite indexes new items per batch, not per row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:00:00.000000

Migration 0005 keeps SQLite's archive index (the FTS5 table ``item_fts`` and ``item_theme``)
in step with ``item`` by triggers, one run per row. For inserts that made a new item 4-5
times as expensive (issue 2, bench/store.py): FTS5 flushes what it has collected at the end
of every statement, and a trigger's INSERT is a statement of its own, so every new item
became an FTS5 segment of one row, merged again and again. The same rows indexed by one
``INSERT INTO item_fts ... SELECT ... FROM item WHERE id > :last`` cost a third of that.

So this migration drops the insert trigger ``item_archive_insert``, and the store indexes
each batch's new items itself, in the batch's transaction, right after its INSERT
(``pipeline.adapters.storage.index_sqlite_archive``, two statements: FTS5 and
``item_theme``). Anything else that inserts items on SQLite must call it too. The update
and delete triggers stay: changed items are few, and every writer keeps them right.

PostgreSQL is unchanged: its index work is per statement already (a transition-table
trigger for ``item_theme``), and the cost of a new item there is ``to_tsvector`` (~125 µs
for an item's ~1.2 KB of text, measured alone) and its GIN entries, which no index option
removes (measured: ``fastupdate=off`` is 3 times slower, a larger
``gin_pending_list_limit`` gains nothing over 16,000 inserts and makes every search scan
the longer pending list; an expression index re-parses the text in search plans, which is
why 0005 stores the vector).

Downgrade: the insert trigger is created again (as 0005 made it). Items stored meanwhile
were indexed by the store, so there is nothing to catch up.

Caution for later migrations on SQLite: a batch ("move and copy") alteration of ``item``
drops its triggers; recreate 0005's with ``create_sqlite_triggers`` and then drop
``item_archive_insert`` again, or every new item is indexed twice.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0005's insert trigger, as 0005 created it.
_SQLITE_INSERT_TRIGGER = """
    CREATE TRIGGER item_archive_insert AFTER INSERT ON item BEGIN
      INSERT INTO item_fts (rowid, title, summary_text)
        VALUES (NEW.id, NEW.title, NEW.summary_text);
      INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)
        SELECT NEW.id, value, NEW.published_at FROM json_each(CASE WHEN
        json_type(NEW.themes) = 'array' THEN NEW.themes ELSE '[]' END);
    END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS item_archive_insert")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS item_archive_insert")
        op.execute(_SQLITE_INSERT_TRIGGER)
