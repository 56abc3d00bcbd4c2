"""archive: full-text search over items, theme and edition lookup tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00.000000

What the web archive reads fast (pipeline/adapters/archive_store.py), kept in step with
``item`` and ``edition`` by the database itself, so no writer has to know about it:

- search over item title + summary_text:
  - PostgreSQL: a stored generated column ``item.search_vector`` =
    ``to_tsvector('english', title || ' ' || summary_text)`` with a GIN index. Stored, not
    an expression index: a plan that walks items newest first checks each one against the
    stored vector (~1 µs) instead of re-parsing its text (~100 µs). Adding the column
    rewrites ``item`` once (about a minute per million items).
  - SQLite: an FTS5 table ``item_fts`` with external content (``item``), porter stemming,
    kept in sync by AFTER INSERT/UPDATE/DELETE triggers on ``item``.
- ``item_theme(item_id, theme, published_at)``: one row per theme an item is tagged with
  (theme pages, weekly volumes), from ``item.themes``.
- ``ix_edition_public_listing``: the archive list (public, non-empty editions by period_end)
  read from an index alone.
- ``edition_theme(edition_id, theme, period_end)`` and ``edition_item(edition_id, item_uid)``
  for *public* editions (the archive's theme filter; a search hit links to its edition),
  from ``edition.content`` (``digest_as_dict``: ``sections[].theme.id`` and ``item_ids``).

Triggers: per statement with transition tables on PostgreSQL (one INSERT for a whole ingest
batch), per row on SQLite. Rows that exist already are indexed by this migration.

Caution for later migrations on SQLite: a batch ("move and copy") alteration of ``item`` or
``edition`` drops the triggers on that table; recreate them with ``create_sqlite_triggers``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_SEARCH_VECTOR = "to_tsvector('english'::regconfig, title || ' ' || summary_text)"

# -- PostgreSQL -------------------------------------------------------------------------------


# An edition's themes: its sections' and those its stories (top and in sections) are tagged
# with; and the ids of the items it shows. The stored json (about 40 KB for a day) is parsed
# once, as jsonb, and read with lax JSON paths (a missing or odd part yields nothing).
_PG_EDITION_THEMES = (
    "CROSS JOIN LATERAL (SELECT {content}::jsonb AS c) AS j CROSS JOIN LATERAL ("
    " SELECT jsonb_path_query(j.c, '$.sections[*].theme.id') AS v"
    " UNION SELECT jsonb_path_query(j.c, '$.top[*].themes[*]')"
    " UNION SELECT jsonb_path_query(j.c, '$.sections[*].entries[*].themes[*]')"
    ") AS t"
)
_PG_EDITION_ITEMS = (
    "CROSS JOIN LATERAL (SELECT {content}::jsonb AS c) AS j"
    " CROSS JOIN LATERAL jsonb_path_query(j.c, '$.item_ids[*]') AS u(v)"
)


_PG_FUNCTIONS = [
    """
    CREATE FUNCTION qasid_item_theme_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO item_theme (item_id, theme, published_at)
      SELECT DISTINCT n.id, t.theme, n.published_at
      FROM new_rows AS n
      CROSS JOIN LATERAL json_array_elements_text(
        CASE WHEN json_typeof(n.themes) = 'array' THEN n.themes ELSE '[]'::json END
      ) AS t(theme)
      ON CONFLICT DO NOTHING;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION qasid_item_theme_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM item_theme AS it USING new_rows AS n, old_rows AS o
      WHERE it.item_id = n.id AND o.id = n.id
        AND (o.themes::text IS DISTINCT FROM n.themes::text
             OR o.published_at IS DISTINCT FROM n.published_at);
      INSERT INTO item_theme (item_id, theme, published_at)
      SELECT DISTINCT n.id, t.theme, n.published_at
      FROM new_rows AS n
      JOIN old_rows AS o ON o.id = n.id
      CROSS JOIN LATERAL json_array_elements_text(
        CASE WHEN json_typeof(n.themes) = 'array' THEN n.themes ELSE '[]'::json END
      ) AS t(theme)
      WHERE o.themes::text IS DISTINCT FROM n.themes::text
         OR o.published_at IS DISTINCT FROM n.published_at
      ON CONFLICT DO NOTHING;
      RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION qasid_edition_index() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO edition_theme (edition_id, theme, period_end)
      SELECT DISTINCT n.id, t.v #>> '{{}}', n.period_end
      FROM new_rows AS n {_PG_EDITION_THEMES.format(content="n.content")}
      WHERE n.kind = 'public' AND jsonb_typeof(t.v) = 'string'
      ON CONFLICT DO NOTHING;
      INSERT INTO edition_item (edition_id, item_uid)
      SELECT DISTINCT n.id, u.v #>> '{{}}'
      FROM new_rows AS n {_PG_EDITION_ITEMS.format(content="n.content")}
      WHERE n.kind = 'public' AND jsonb_typeof(u.v) = 'string'
      ON CONFLICT DO NOTHING;
      RETURN NULL;
    END $$
    """,
]

_PG_TRIGGERS = [
    "CREATE TRIGGER item_theme_insert AFTER INSERT ON item REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION qasid_item_theme_insert()",
    "CREATE TRIGGER item_theme_update AFTER UPDATE ON item"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION qasid_item_theme_update()",
    "CREATE TRIGGER edition_index AFTER INSERT ON edition REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION qasid_edition_index()",
]

# -- SQLite -----------------------------------------------------------------------------------

_SQLITE_THEMES = (
    "json_each(CASE WHEN json_type(NEW.themes) = 'array' THEN NEW.themes ELSE '[]' END)"
)


def _sqlite_edition_inserts(row: str) -> list[str]:
    """The INSERTs that index public editions: ``row`` is "NEW" in the trigger, "edition"
    when the migration indexes the rows already stored. An edition's themes are its
    sections' and those its stories (top and in sections) are tagged with."""
    source = "" if row == "NEW" else "edition, "
    public = "" if row == "NEW" else "edition.kind = 'public' AND "
    theme = (
        "INSERT OR IGNORE INTO edition_theme (edition_id, theme, period_end)"
        f" SELECT {row}.id, {{value}}, {row}.period_end FROM {source}"
    )
    return [
        theme.format(value="json_extract(s.value, '$.theme.id')")
        + f"json_each({row}.content, '$.sections') AS s"
        + f" WHERE {public}s.type = 'object' AND json_extract(s.value, '$.theme.id') IS NOT NULL",
        theme.format(value="t.value")
        + f"json_each({row}.content, '$.top') AS e, json_each(e.value, '$.themes') AS t"
        + f" WHERE {public}e.type = 'object' AND t.type = 'text'",
        theme.format(value="t.value")
        + f"json_each({row}.content, '$.sections') AS s, json_each(s.value, '$.entries') AS e,"
        + " json_each(e.value, '$.themes') AS t"
        + f" WHERE {public}s.type = 'object' AND e.type = 'object' AND t.type = 'text'",
        "INSERT OR IGNORE INTO edition_item (edition_id, item_uid)"
        + f" SELECT {row}.id, u.value FROM {source}json_each({row}.content, '$.item_ids') AS u"
        + f" WHERE {public}u.type = 'text'",
    ]


_SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER item_archive_insert AFTER INSERT ON item BEGIN
      INSERT INTO item_fts (rowid, title, summary_text)
        VALUES (NEW.id, NEW.title, NEW.summary_text);
      INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)
        SELECT NEW.id, value, NEW.published_at FROM {_SQLITE_THEMES};
    END
    """,
    """
    CREATE TRIGGER item_archive_delete AFTER DELETE ON item BEGIN
      INSERT INTO item_fts (item_fts, rowid, title, summary_text)
        VALUES ('delete', OLD.id, OLD.title, OLD.summary_text);
    END
    """,
    """
    CREATE TRIGGER item_archive_text AFTER UPDATE OF title, summary_text ON item
    WHEN OLD.title IS NOT NEW.title OR OLD.summary_text IS NOT NEW.summary_text BEGIN
      INSERT INTO item_fts (item_fts, rowid, title, summary_text)
        VALUES ('delete', OLD.id, OLD.title, OLD.summary_text);
      INSERT INTO item_fts (rowid, title, summary_text)
        VALUES (NEW.id, NEW.title, NEW.summary_text);
    END
    """,
    f"""
    CREATE TRIGGER item_archive_themes AFTER UPDATE OF themes, published_at ON item
    WHEN OLD.themes IS NOT NEW.themes OR OLD.published_at IS NOT NEW.published_at BEGIN
      DELETE FROM item_theme WHERE item_id = OLD.id;
      INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)
        SELECT NEW.id, value, NEW.published_at FROM {_SQLITE_THEMES};
    END
    """,
    f"""
    CREATE TRIGGER edition_archive_insert AFTER INSERT ON edition WHEN NEW.kind = 'public'
    BEGIN
      {";".join(_sqlite_edition_inserts("NEW"))};
    END
    """,
]

_SQLITE_TRIGGER_NAMES = (
    "item_archive_insert",
    "item_archive_delete",
    "item_archive_text",
    "item_archive_themes",
    "edition_archive_insert",
)


def create_sqlite_triggers() -> None:
    for statement in _SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "item_theme",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("theme", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_item_theme_item_id_item"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", "theme", name=op.f("pk_item_theme")),
    )
    op.create_index("ix_item_theme_theme_published_at", "item_theme", ["theme", "published_at"])
    op.create_table(
        "edition_theme",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("theme", sa.String(length=64), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["edition.id"],
            name=op.f("fk_edition_theme_edition_id_edition"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("edition_id", "theme", name=op.f("pk_edition_theme")),
    )
    op.create_index(
        "ix_edition_theme_theme_period_end", "edition_theme", ["theme", "period_end", "edition_id"]
    )
    op.create_table(
        "edition_item",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("item_uid", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["edition.id"],
            name=op.f("fk_edition_item_edition_id_edition"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("edition_id", "item_uid", name=op.f("pk_edition_item")),
    )
    op.create_index("ix_edition_item_item_uid", "edition_item", ["item_uid", "edition_id"])
    # The archive list: public, non-empty editions newest first, from the index alone.
    op.create_index(
        "ix_edition_public_listing",
        "edition",
        ["period_end", "id"],
        sqlite_where=sa.text("kind = 'public' AND item_count > 0"),
        postgresql_where=sa.text("kind = 'public' AND item_count > 0"),
    )

    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _upgrade_postgresql() -> None:
    op.execute(
        f"ALTER TABLE item ADD COLUMN search_vector tsvector"
        f" GENERATED ALWAYS AS ({PG_SEARCH_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_item_search ON item USING gin (search_vector)")
    for statement in _PG_FUNCTIONS:
        op.execute(statement)
    for statement in _PG_TRIGGERS:
        op.execute(statement)
    # Index what is stored already.
    op.execute(
        "INSERT INTO item_theme (item_id, theme, published_at)"
        " SELECT DISTINCT i.id, t.theme, i.published_at FROM item AS i"
        " CROSS JOIN LATERAL json_array_elements_text(CASE WHEN json_typeof(i.themes) = 'array'"
        " THEN i.themes ELSE '[]'::json END) AS t(theme)"
    )
    op.execute(
        "INSERT INTO edition_theme (edition_id, theme, period_end)"
        " SELECT DISTINCT e.id, t.v #>> '{}', e.period_end FROM edition AS e "
        + _PG_EDITION_THEMES.format(content="e.content")
        + " WHERE e.kind = 'public' AND jsonb_typeof(t.v) = 'string'"
    )
    op.execute(
        "INSERT INTO edition_item (edition_id, item_uid)"
        " SELECT DISTINCT e.id, u.v #>> '{}' FROM edition AS e "
        + _PG_EDITION_ITEMS.format(content="e.content")
        + " WHERE e.kind = 'public' AND jsonb_typeof(u.v) = 'string'"
    )


def _upgrade_sqlite() -> None:
    op.execute(
        "CREATE VIRTUAL TABLE item_fts USING fts5(title, summary_text, content='item',"
        " content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
    )
    op.execute("INSERT INTO item_fts (item_fts) VALUES ('rebuild')")
    create_sqlite_triggers()
    op.execute(
        "INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)"
        " SELECT item.id, t.value, item.published_at FROM item, json_each(CASE WHEN"
        " json_type(item.themes) = 'array' THEN item.themes ELSE '[]' END) AS t"
    )
    for statement in _sqlite_edition_inserts("edition"):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS edition_index ON edition")
        op.execute("DROP TRIGGER IF EXISTS item_theme_update ON item")
        op.execute("DROP TRIGGER IF EXISTS item_theme_insert ON item")
        op.execute("DROP FUNCTION IF EXISTS qasid_edition_index()")
        op.execute("DROP FUNCTION IF EXISTS qasid_item_theme_update()")
        op.execute("DROP FUNCTION IF EXISTS qasid_item_theme_insert()")
        op.execute("DROP INDEX IF EXISTS ix_item_search")
        op.execute("ALTER TABLE item DROP COLUMN IF EXISTS search_vector")
    else:
        for name in _SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS item_fts")
    op.drop_index("ix_edition_public_listing", table_name="edition")
    op.drop_index("ix_edition_item_item_uid", table_name="edition_item")
    op.drop_table("edition_item")
    op.drop_index("ix_edition_theme_theme_period_end", table_name="edition_theme")
    op.drop_table("edition_theme")
    op.drop_index("ix_item_theme_theme_published_at", table_name="item_theme")
    op.drop_table("item_theme")
