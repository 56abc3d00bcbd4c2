"""item.source_name: the outlet an aggregator credits an item to

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:45:00.000000

SQLite downgrade: SQLite 3.35+ drops the column in place (``ALTER TABLE ... DROP COLUMN``),
which keeps 0005's archive triggers on ``item`` and touches no other table. Older SQLite needs
a batch ("move and copy") rebuild of ``item``, and that costs more than the column:

- the rebuild drops every trigger on ``item``, so 0005's are created again afterwards
  (``create_sqlite_triggers``), or search and theme pages would stop following new items;
- with ``PRAGMA foreign_keys=ON`` (the store's setting, which cannot change inside the
  migration's transaction) dropping the old ``item`` deletes its rows first and cascades to
  ``item_theme`` and to alert deliveries; those are put back: ``item_theme`` from
  ``item.themes``, the alert deliveries from a copy taken before the rebuild.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_DROP_COLUMN = (3, 35, 0)  # the first SQLite with ALTER TABLE ... DROP COLUMN


def upgrade() -> None:
    # An add_column with a constant default is a plain ALTER TABLE on SQLite: no rebuild.
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_name", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    dialect = op.get_bind().dialect
    if dialect.name != "sqlite":
        op.drop_column("item", "source_name")
    elif tuple(dialect.server_version_info or ()) >= SQLITE_DROP_COLUMN:
        op.execute("ALTER TABLE item DROP COLUMN source_name")
    else:
        _downgrade_sqlite_by_rebuild()


def _downgrade_sqlite_by_rebuild() -> None:
    archive = _migration_0005()
    op.execute("DROP TABLE IF EXISTS temp._qasid_0006_alert_delivery")
    op.execute(
        "CREATE TEMP TABLE _qasid_0006_alert_delivery AS"
        " SELECT * FROM delivery WHERE alert_item_id IS NOT NULL"
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_column("source_name")
    # The rebuild dropped the triggers on item (edition's survive): create all of 0005's again.
    for name in archive._SQLITE_TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    archive.create_sqlite_triggers()
    # item_fts keeps its rows (external content keyed by item.id, which the copy keeps).
    op.execute(
        "INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)"
        " SELECT item.id, t.value, item.published_at FROM item, json_each(CASE WHEN"
        " json_type(item.themes) = 'array' THEN item.themes ELSE '[]' END) AS t"
    )
    op.execute(
        "INSERT OR IGNORE INTO delivery SELECT * FROM temp._qasid_0006_alert_delivery"
        " WHERE alert_item_id IN (SELECT id FROM item)"
    )
    op.execute("DROP TABLE temp._qasid_0006_alert_delivery")


def _migration_0005() -> ModuleType:
    """Migration 0005 (its file name is no importable module name)."""
    path = Path(__file__).with_name("0005_archive_search.py")
    spec = importlib.util.spec_from_file_location("qasid_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
