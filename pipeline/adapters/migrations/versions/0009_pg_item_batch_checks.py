"""PostgreSQL: item's feed reference is checked once per batch; uid has a hash index; the
search index leaves out items not indexed yet

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 09:00:00.000000

New items reach PostgreSQL by binary COPY, 2,000 in a transaction (issue 2's ingest). Two
per-row costs of the server were left that do nothing a batch check could not do
(bench/store.py; an engine-side trial of 2,000-row inserts, server CPU per new row: ~37 µs
as migrated, ~28.5 without the first, ~34 with the second):

- The foreign key ``fk_item_feed_id_feed`` ran a referential-integrity query for every row
  (``SELECT 1 FROM feed WHERE id = $1 FOR KEY SHARE``), 2,000 times per batch for the ten
  feeds of the batch. It is dropped. The store does the same check once per batch instead:
  ``Store._store_round`` takes ``FOR KEY SHARE`` locks on the batch's feeds before it
  inserts (the lock the foreign key took per row) and refuses the batch, with a clear error,
  when one of them is gone. A feed being deleted meanwhile waits for the batch to commit,
  as before. The cascade stays in the database: a ``BEFORE DELETE`` row trigger on ``feed``
  deletes its items (``item_theme`` and alert deliveries follow from those by their own
  foreign keys).
- The unique b-tree index ``uq_item_uid`` on a hash of the item's link: every insert went
  to a random leaf page. No query relied on it for uniqueness (a uid is a hash of the link,
  or of the feed and guid, both unique already) and none could use it for a prefix search
  (``LIKE`` under this database's collation does not use a b-tree). It becomes a hash
  index, ``ix_item_uid``, which serves exact look-ups (``Store.get_item`` with a whole id).
- The GIN index on ``search_vector`` took an entry for every new row's NULL vector (filled
  later by the archive step, 0008). It becomes partial, ``WHERE search_vector IS NOT NULL``:
  a search's ``search_vector @@ query`` implies it, so the planner still uses the index.

SQLite is unchanged: its foreign-key check is one probe of feed's primary key, and its
b-tree on uid costs an insert little (bench/store.py, indexes dropped one at a time).

Downgrade: the trigger and its function go, the foreign key and the unique constraint come
back (validated against the rows; a uid stored twice fails the downgrade, as it should), and
the search index covers every row again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_DELETE_FEED_ITEMS = """
CREATE OR REPLACE FUNCTION qasid_delete_feed_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM item WHERE feed_id = OLD.id;
    RETURN OLD;
END
$$
"""
PG_DELETE_FEED_TRIGGER = (
    "CREATE TRIGGER feed_delete_items BEFORE DELETE ON feed"
    " FOR EACH ROW EXECUTE FUNCTION qasid_delete_feed_items()"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE item DROP CONSTRAINT fk_item_feed_id_feed")
    op.execute(PG_DELETE_FEED_ITEMS)
    op.execute(PG_DELETE_FEED_TRIGGER)
    op.execute("ALTER TABLE item DROP CONSTRAINT uq_item_uid")
    op.execute("CREATE INDEX ix_item_uid ON item USING hash (uid)")
    op.execute("DROP INDEX ix_item_search")
    op.execute(
        "CREATE INDEX ix_item_search ON item USING gin (search_vector)"
        " WHERE search_vector IS NOT NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_item_search")
    op.execute("CREATE INDEX ix_item_search ON item USING gin (search_vector)")
    op.execute("DROP INDEX IF EXISTS ix_item_uid")
    op.execute("ALTER TABLE item ADD CONSTRAINT uq_item_uid UNIQUE (uid)")
    op.execute("DROP TRIGGER IF EXISTS feed_delete_items ON feed")
    op.execute("DROP FUNCTION IF EXISTS qasid_delete_feed_items()")
    op.execute(
        "ALTER TABLE item ADD CONSTRAINT fk_item_feed_id_feed FOREIGN KEY (feed_id)"
        " REFERENCES feed (id) ON DELETE CASCADE"
    )
