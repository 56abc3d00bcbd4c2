"""The per-feed store path as it was before the batch path (``Store.store_items`` at commit
8bbab31, with the tag and source_name columns added since), kept verbatim apart from taking
the Store as an argument, so the store benchmark measures the old and the new path in the
same run, on the same machine, with the same data."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.adapters.schema import item
from pipeline.adapters.storage import Store, item_uid
from pipeline.core.models import Item, StoreCounts

_CHUNK = 500


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _item_row(feed_id: int, feed_url: str, it: Item, fetched_at: datetime) -> dict[str, Any]:
    return {
        "uid": item_uid(feed_url, it),
        "feed_id": feed_id,
        "guid_key": it.guid_key,
        "link": it.link,
        "title": it.title,
        "summary_html": it.summary_html,
        "summary_text": it.summary_text,
        "author": it.author,
        "source_name": it.source,
        "language": it.language,
        "published_at": it.published,
        "published_missing": it.published_missing,
        "fetched_at": fetched_at,
        "updated_at": fetched_at,
        "content_hash": it.content_hash,
    }


def _tag_values(tags: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    result = tags.get(key) if tags else None
    if result is None:
        return {"relevant": None, "us_link": None, "themes": None, "scores": None, "evidence": None}
    return {
        "relevant": result.relevant,
        "us_link": result.us_link,
        "themes": list(result.themes),
        "scores": dict(result.scores),
        "evidence": {k: list(v) for k, v in result.evidence.items()},
    }


def store_items(
    store: Store,
    feed_id: int,
    feed_url: str,
    items: Sequence[Item],
    fetched_at: datetime,
    tags: Mapping[str, Any] | None = None,
) -> StoreCounts:
    if not items:
        return StoreCounts()
    by_key: dict[str, Item] = {}
    for it in items:
        by_key.setdefault(it.guid_key, it)
    with store._begin() as conn:
        known: dict[str, tuple[int, str]] = {}
        for keys in _chunks(list(by_key)):
            rows = conn.execute(
                select(item.c.guid_key, item.c.id, item.c.content_hash).where(
                    item.c.feed_id == feed_id, item.c.guid_key.in_(keys)
                )
            )
            known.update({r.guid_key: (r.id, r.content_hash) for r in rows})
        fresh = [it for key, it in by_key.items() if key not in known]
        links = sorted({it.link for it in fresh if it.link})
        elsewhere: set[str] = set()
        for chunk in _chunks(links):
            rows = conn.execute(
                select(item.c.link).where(item.c.link != "", item.c.link.in_(chunk))
            )
            elsewhere.update(r.link for r in rows)
        to_insert: list[dict[str, Any]] = []
        seen_links: set[str] = set()
        duplicates = 0
        for it in fresh:
            if it.link and (it.link in elsewhere or it.link in seen_links):
                duplicates += 1
                continue
            if it.link:
                seen_links.add(it.link)
            row = _item_row(feed_id, feed_url, it, fetched_at)
            row.update(_tag_values(tags, it.guid_key))
            to_insert.append(row)
        inserted = 0
        if to_insert:
            insert = postgresql.insert if not store.is_sqlite else sqlite.insert
            result = conn.execute(insert(item).on_conflict_do_nothing(), to_insert)
            inserted = max(result.rowcount, 0) if result.rowcount is not None else 0
            if result.rowcount is None or result.rowcount < 0:
                inserted = len(to_insert)
        changed = [
            (known[key][0], it)
            for key, it in by_key.items()
            if key in known and known[key][1] != it.content_hash
        ]
        if changed:
            conn.execute(
                update(item)
                .where(item.c.id == bindparam("b_id"))
                .values(
                    title=bindparam("b_title"),
                    summary_html=bindparam("b_summary_html"),
                    summary_text=bindparam("b_summary_text"),
                    author=bindparam("b_author"),
                    source_name=bindparam("b_source_name"),
                    content_hash=bindparam("b_content_hash"),
                    updated_at=bindparam("b_updated_at"),
                    relevant=bindparam("b_relevant"),
                    us_link=bindparam("b_us_link"),
                    themes=bindparam("b_themes"),
                    scores=bindparam("b_scores"),
                    evidence=bindparam("b_evidence"),
                ),
                [
                    {
                        "b_id": item_id,
                        "b_title": it.title,
                        "b_summary_html": it.summary_html,
                        "b_summary_text": it.summary_text,
                        "b_author": it.author,
                        "b_source_name": it.source,
                        "b_content_hash": it.content_hash,
                        "b_updated_at": fetched_at,
                        **{
                            f"b_{key}": value
                            for key, value in _tag_values(tags, it.guid_key).items()
                        },
                    }
                    for item_id, it in changed
                ],
            )
    unchanged = len(by_key) - len(fresh) - len(changed)
    return StoreCounts(
        new=inserted,
        updated=len(changed),
        unchanged=unchanged,
        duplicates=duplicates + (len(to_insert) - inserted),
    )
