"""Alembic environment: the connection comes from qasid's store (see storage.upgrade)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from pipeline.adapters.schema import metadata

config = context.config
connection = config.attributes.get("connection")

# What migrations create that pipeline/adapters/schema.py does not describe, so that
# autogenerate and `alembic check` do not offer to drop it. All of it is migration 0005's
# archive search (items indexed by archive_store.index_archive since 0008, editions by
# triggers): the lookup tables (read by pipeline/adapters/archive_store.py), the
# archive-list index, PostgreSQL's tsvector column and its GIN index, and SQLite's FTS5
# table with the shadow tables FTS5 makes for it (item_fts_data, _idx, _docsize, _config,
# _content).
MIGRATION_OWNED_TABLES = frozenset({"item_theme", "edition_theme", "edition_item", "item_fts"})
MIGRATION_OWNED_INDEXES = frozenset({"ix_edition_public_listing", "ix_item_search"})
MIGRATION_OWNED_COLUMNS = frozenset({("item", "search_vector")})
# Migration 0009 on PostgreSQL: item's feed reference checked once per batch by the store
# (the foreign key gives way to a delete trigger on feed) and uid's unique b-tree replaced
# by a hash index. schema.py describes SQLite's (and 0001's) form of both.
POSTGRES_MIGRATION_OWNED = frozenset(
    {
        ("foreign_key_constraint", "fk_item_feed_id_feed"),
        ("unique_constraint", "uq_item_uid"),
        ("index", "ix_item_uid"),
    }
)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave the database's own archive objects (above) out of autogenerate's comparison."""
    if type_ == "table":
        return not (name in MIGRATION_OWNED_TABLES or (name or "").startswith("item_fts_"))
    if type_ == "index":
        return name not in MIGRATION_OWNED_INDEXES
    if type_ == "column":
        return (obj.table.name, name) not in MIGRATION_OWNED_COLUMNS
    return True


def include_postgres_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """``include_object``, and on PostgreSQL 0009's objects left out too."""
    if (type_, name) in POSTGRES_MIGRATION_OWNED:
        return False
    return include_object(obj, name, type_, reflected, compare_to)


def _run(conn: Connection) -> None:
    postgres = conn.dialect.name == "postgresql"
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite alters tables by copy
        include_object=include_postgres_object if postgres else include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        _run(conn)
