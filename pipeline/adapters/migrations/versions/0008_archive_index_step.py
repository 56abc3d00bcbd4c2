"""archive: the search index and item_theme are brought up to date by a step after the
writes, not in the ingest transaction

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 07:00:00.000000

Until 0007 every item upsert also indexed the item for the archive (issue 5): FTS5
tokenising on SQLite (~60 µs of CPU per new item), the stored generated ``to_tsvector``
column and its GIN entries on PostgreSQL (~225 µs), plus ``item_theme``. The archive is read
by people browsing public pages, not by the ingest or the digest, so that work now happens
in a separate, batched, idempotent step, ``pipeline.adapters.archive_store.index_archive``,
run after every poll run, before digests and public editions are built, and by ``qasid
demo`` (see its docstring). Search results after the step are what they were.

- ``item.archive_pending`` (boolean, NULL when up to date) with a partial index
  ``ix_item_archive_pending ON item (id) WHERE archive_pending``: the items whose archive
  entries (search and ``item_theme``) are to be (re)built. The store inserts items with
  ``true``, and sets it again when it changes an item (new text or tags, ``store_batches``)
  or re-tags one (``set_tags``). The step takes the pending items in id order, rebuilds their
  entries and sets the flag to NULL, in transactions of a few thousand items. On PostgreSQL
  it takes them ``FOR UPDATE SKIP LOCKED``: an item a poll is still writing is taken by the
  next run (its transaction commits it pending), and two steps never index one item at once.
  Existing rows are NULL (indexed); on PostgreSQL the column defaults to true, so an insert
  that does not name it is indexed too; on SQLite (ADD COLUMN cannot give new rows a
  default that old rows do not get) an insert must name it, as the store's does.
- PostgreSQL: ``item.search_vector`` stays, with its GIN index, but is a plain column
  (``DROP EXPRESSION``: no rewrite, the values stay) filled by the step; the
  ``item_theme`` triggers (and their functions) are dropped: the step rebuilds a pending
  item's themes. Until the step an item is found by its previous text (a new one not at
  all).
- PostgreSQL, for the ingest itself: ``toast_tuple_target`` of ``item`` is 8,160 bytes
  (default 2,032). An item row is ~6 KB (1.2 KB of HTML, 1 KB of text, tags and evidence),
  so every insert ran the toaster, which tried to compress the large values (pglz) and
  mostly gave up; rows up to a page are now stored as they are: the server's CPU per new
  item falls by about 40% (55-65 µs to 30-40 µs in an engine-side trial of 2,000-row
  inserts), for a heap about 30% larger (52 MB against 40 MB for 20,000 items). LZ4
  compression instead saved ~25% with no growth. Applies to rows written from now on.
- SQLite: ``item_fts`` becomes an FTS5 table with its own content (same columns, same
  tokenizer) instead of external content over ``item``: an external-content entry can only
  be deleted by giving the text it was indexed with, which an updated item no longer has
  (FTS5's ``contentless_delete`` needs SQLite 3.43). It costs a copy of each item's title and
  text (~1 KB). It is filled from ``item`` here. Deletes still follow by trigger
  (``item_archive_delete`` now deletes by rowid, indexed or not); 0005's
  ``item_archive_themes`` trigger is dropped (the step does it).

Downgrade: the pending items are indexed first (0007 indexes at write time), then 0007's
schema is restored: PostgreSQL's generated column (a rewrite of ``item``) and item_theme
triggers, SQLite's external-content FTS5 table (rebuilt) and 0005's delete and theme
triggers. SQLite older than 3.35 keeps the (then unused, NULL) column rather than rebuild
``item``; upgrading again reuses it.

Caution for later migrations on SQLite: a batch ("move and copy") alteration of ``item``
drops its triggers; create ``item_archive_delete`` again as this migration does
(``_SQLITE_DELETE_TRIGGER``), or deleted items stay in the search index.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_DROP_COLUMN = (3, 35, 0)
# PostgreSQL: the largest row kept whole in its page (the maximum, 8160 of an 8 KB page).
PG_TOAST_TUPLE_TARGET = 8160

_PG_THEME_TRIGGERS = (
    ("item_theme_insert", "qasid_item_theme_insert"),
    ("item_theme_update", "qasid_item_theme_update"),
)

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE item_fts USING fts5(title, summary_text,"
    " tokenize='porter unicode61 remove_diacritics 2')"
)
_SQLITE_FTS_0005 = (
    "CREATE VIRTUAL TABLE item_fts USING fts5(title, summary_text, content='item',"
    " content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
)
_SQLITE_DELETE_TRIGGER = """
    CREATE TRIGGER item_archive_delete AFTER DELETE ON item BEGIN
      DELETE FROM item_fts WHERE rowid = OLD.id;
    END
"""

# The pending items' themes, rebuilt (what the step does, for downgrades).
_PENDING_THEMES = {
    "postgresql": (
        "DELETE FROM item_theme WHERE item_id IN (SELECT id FROM item WHERE archive_pending)",
        "INSERT INTO item_theme (item_id, theme, published_at)"
        " SELECT DISTINCT i.id, t.theme, i.published_at FROM item AS i"
        " CROSS JOIN LATERAL json_array_elements_text(CASE WHEN json_typeof(i.themes) = 'array'"
        " THEN i.themes ELSE '[]'::json END) AS t(theme) WHERE i.archive_pending"
        " ON CONFLICT DO NOTHING",
    ),
    "sqlite": (
        "DELETE FROM item_theme WHERE item_id IN (SELECT id FROM item WHERE archive_pending)",
        "INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)"
        " SELECT item.id, t.value, item.published_at FROM item, json_each(CASE WHEN"
        " json_type(item.themes) = 'array' THEN item.themes ELSE '[]' END) AS t"
        " WHERE item.archive_pending",
    ),
}


def _has_pending_column() -> bool:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        rows = bind.exec_driver_sql("PRAGMA table_info(item)").fetchall()
        return any(row[1] == "archive_pending" for row in rows)
    return bool(
        bind.exec_driver_sql(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'item' AND column_name = 'archive_pending'"
            " AND table_schema = current_schema()"
        ).first()
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not _has_pending_column():  # an old SQLite's downgrade keeps it
        op.execute("ALTER TABLE item ADD COLUMN archive_pending BOOLEAN")
    op.execute("UPDATE item SET archive_pending = NULL WHERE archive_pending IS NOT NULL")
    op.execute("CREATE INDEX ix_item_archive_pending ON item (id) WHERE archive_pending")
    if postgres:
        # Only rows inserted from now on get the default; existing ones stay NULL (indexed).
        op.execute("ALTER TABLE item ALTER COLUMN archive_pending SET DEFAULT true")
        op.execute("ALTER TABLE item ALTER COLUMN search_vector DROP EXPRESSION")
        # Rows up to a page stay whole and uncompressed (new rows; no rewrite): see above.
        op.execute(f"ALTER TABLE item SET (toast_tuple_target = {PG_TOAST_TUPLE_TARGET})")
        for trigger, function in _PG_THEME_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON item")
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
        return
    for name in ("item_archive_insert", "item_archive_text", "item_archive_themes"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TRIGGER IF EXISTS item_archive_delete")
    op.execute("DROP TABLE IF EXISTS item_fts")
    op.execute(_SQLITE_FTS)
    op.execute(
        "INSERT INTO item_fts (rowid, title, summary_text) SELECT id, title, summary_text FROM item"
    )
    op.execute(_SQLITE_DELETE_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    archive = _migration_0005()
    for statement in _PENDING_THEMES[bind.dialect.name]:
        op.execute(statement)
    op.execute("DROP INDEX IF EXISTS ix_item_archive_pending")
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE item RESET (toast_tuple_target)")
        op.execute("DROP INDEX IF EXISTS ix_item_search")
        op.execute("ALTER TABLE item DROP COLUMN search_vector")
        op.execute(
            f"ALTER TABLE item ADD COLUMN search_vector tsvector"
            f" GENERATED ALWAYS AS ({archive.PG_SEARCH_VECTOR}) STORED"
        )
        op.execute("CREATE INDEX ix_item_search ON item USING gin (search_vector)")
        op.execute("ALTER TABLE item DROP COLUMN archive_pending")
        for statement in archive._PG_FUNCTIONS[:2]:  # item_theme's insert and update
            op.execute(statement)
        for statement in archive._PG_TRIGGERS[:2]:
            op.execute(statement)
        return
    op.execute("DROP TRIGGER IF EXISTS item_archive_delete")
    op.execute("DROP TABLE IF EXISTS item_fts")
    op.execute(_SQLITE_FTS_0005)
    op.execute("INSERT INTO item_fts (item_fts) VALUES ('rebuild')")
    if tuple(bind.dialect.server_version_info or ()) >= SQLITE_DROP_COLUMN:
        op.execute("ALTER TABLE item DROP COLUMN archive_pending")
    else:  # no rebuild of item (see 0006): the column stays, unused
        op.execute("UPDATE item SET archive_pending = NULL WHERE archive_pending IS NOT NULL")
    # 0007's triggers: 0005's delete and theme triggers (0007 dropped the other two).
    for statement in archive._SQLITE_TRIGGERS:
        if "item_archive_delete" in statement or "item_archive_themes" in statement:
            op.execute(statement)


def _migration_0005() -> ModuleType:
    """Migration 0005 (its file name is no importable module name)."""
    path = Path(__file__).with_name("0005_archive_search.py")
    spec = importlib.util.spec_from_file_location("qasid_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
