"""archive: SQLite indexes new and changed items per batch, not per row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:00:00.000000

Migration 0005 keeps SQLite's archive index (the FTS5 table ``item_fts`` and ``item_theme``)
in step with ``item`` by triggers, one run per row. For inserts that made a new item 4-5
times as expensive (issue 2, bench/store.py): FTS5 flushes what it has collected at the end
of every statement, and a trigger's INSERT is a statement of its own, so every new item
became an FTS5 segment of one row, merged again and again. The same rows indexed by one
``INSERT INTO item_fts ... SELECT ... FROM item WHERE id > :last`` per batch take 2.5 times
less engine CPU per new item, commit included (bench/archive_index.py: 83 µs against 211).

So this migration drops the insert trigger ``item_archive_insert`` and the text update
trigger ``item_archive_text``, and the store indexes each batch itself, in the batch's
transaction: its new items right after its INSERT
(``pipeline.adapters.storage.index_sqlite_archive``, two statements: FTS5 and
``item_theme``), its changed items around its UPDATE (their old text out of FTS5 before, the
new text in after, one statement each). Anything else that inserts items, or changes an
item's title or summary_text, on SQLite must do the same (the store is the only writer of
both today; tagging changes only the tag columns). The delete trigger stays (deletes are
rare and cascade from feeds), and so does ``item_archive_themes`` (tags change by re-tagging
too).

PostgreSQL is unchanged: its index work is per statement already (a transition-table
trigger for ``item_theme``), and the cost of a new item there is ``to_tsvector`` (125-145
µs for an item's ~1.2 KB of text, measured alone) and its GIN entries, which no index design
measured removes (bench/archive_index.py, backend CPU per new item: 308 µs as 0005 made it,
82 without the index; ``fastupdate=off`` 1,020; a 64 MB ``gin_pending_list_limit`` 288,
while every search scans the longer pending list; an expression index 293, but search plans
then re-parse texts, which is why 0005 stores the vector; a side table filled per batch
307).

Downgrade: both triggers are created again (as 0005 made them). Items stored meanwhile
were indexed by the store, so there is nothing to catch up.

(Migration 0008 took the index out of the write altogether: ``archive_store.index_archive``.)

Caution for later migrations on SQLite: a batch ("move and copy") alteration of ``item``
drops its triggers; recreate 0005's with ``create_sqlite_triggers`` and then drop
``item_archive_insert`` and ``item_archive_text`` again, or items are indexed twice.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0005's insert and text triggers, as 0005 created them.
_SQLITE_INSERT_TRIGGER = """
    CREATE TRIGGER item_archive_insert AFTER INSERT ON item BEGIN
      INSERT INTO item_fts (rowid, title, summary_text)
        VALUES (NEW.id, NEW.title, NEW.summary_text);
      INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)
        SELECT NEW.id, value, NEW.published_at FROM json_each(CASE WHEN
        json_type(NEW.themes) = 'array' THEN NEW.themes ELSE '[]' END);
    END
"""

_SQLITE_TEXT_TRIGGER = """
    CREATE TRIGGER item_archive_text AFTER UPDATE OF title, summary_text ON item
    WHEN OLD.title IS NOT NEW.title OR OLD.summary_text IS NOT NEW.summary_text BEGIN
      INSERT INTO item_fts (item_fts, rowid, title, summary_text)
        VALUES ('delete', OLD.id, OLD.title, OLD.summary_text);
      INSERT INTO item_fts (rowid, title, summary_text)
        VALUES (NEW.id, NEW.title, NEW.summary_text);
    END
"""
_SQLITE_TRIGGERS = {
    "item_archive_insert": _SQLITE_INSERT_TRIGGER,
    "item_archive_text": _SQLITE_TEXT_TRIGGER,
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name, statement in _SQLITE_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(statement)
