"""The archive's search and theme index follow the store through the step
``index_archive`` (migration 0008): the store marks what it inserts or changes, the step
indexes it after the writes. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from pipeline.adapters.archive_store import ArchiveStore, index_archive
from pipeline.adapters.storage import FeedItems, PollWrite, Store, _Batch
from pipeline.core.models import FeedOutcome, FeedSource, Item
from pipeline.core.schedule import PollRecord
from tests.web.test_archive_store import NOW, Tags, _migrate, make_item


def feeds(store: Store, n: int) -> list[tuple[int, str]]:
    out = []
    for k in range(n):
        url = f"https://f{k}.example/feed"
        feed_id, _ = store.add_feed(FeedSource(url=url, title=f"Outlet {k}"), "cli", NOW)
        out.append((feed_id, url))
    return out


def titles(archive: ArchiveStore, query: str) -> list[str]:
    return [h.title for h in archive.search(query, per_page=100).rows]


def index_state(store: Store) -> dict[str, Any]:
    """What the index holds, to compare two states: per item its indexed words (PostgreSQL:
    the vector) or text (SQLite: the FTS5 table's own copy), and item_theme."""
    with store.engine.begin() as conn:
        if store.is_sqlite:
            indexed = conn.execute(
                text("SELECT rowid, title, summary_text FROM item_fts ORDER BY rowid")
            ).all()
        else:
            indexed = conn.execute(
                text("SELECT id, search_vector::text FROM item ORDER BY id")
            ).all()
        themes = conn.execute(
            text("SELECT item_id, theme, published_at FROM item_theme ORDER BY item_id, theme")
        ).all()
    return {"indexed": [tuple(r) for r in indexed], "themes": [tuple(r) for r in themes]}


def check_index(store: Store) -> None:
    """Once the step has run: nothing is pending, every item is indexed exactly once with
    its current text (SQLite: FTS5's own integrity check, and its copy of the text equals
    the item's; PostgreSQL: the vector is the one 0005's generated column gave), and
    item_theme holds exactly every item's themes."""
    with store.engine.begin() as conn:
        assert not conn.execute(text("SELECT count(*) FROM item WHERE archive_pending")).scalar()
        items = conn.execute(text("SELECT count(*) FROM item")).scalar()
        if store.is_sqlite:
            conn.execute(text("INSERT INTO item_fts (item_fts) VALUES ('integrity-check')"))
            assert conn.execute(text("SELECT count(*) FROM item_fts")).scalar() == items
            same = conn.execute(
                text(
                    "SELECT count(*) FROM item JOIN item_fts ON item_fts.rowid = item.id"
                    " WHERE item_fts.title = item.title"
                    " AND item_fts.summary_text = item.summary_text"
                )
            ).scalar()
            themes = (
                "SELECT item.id, t.value FROM item, json_each(CASE WHEN json_type(item.themes)"
                " = 'array' THEN item.themes ELSE '[]' END) AS t"
            )
        else:
            same = conn.execute(
                text(
                    "SELECT count(*) FROM item WHERE search_vector"
                    " = to_tsvector('english'::regconfig, title || ' ' || summary_text)"
                )
            ).scalar()
            themes = (
                "SELECT DISTINCT i.id, t.theme FROM item AS i CROSS JOIN LATERAL"
                " json_array_elements_text(CASE WHEN json_typeof(i.themes) = 'array'"
                " THEN i.themes ELSE '[]'::json END) AS t(theme)"
            )
        assert same == items
        expected = sorted(tuple(r) for r in conn.execute(text(themes)))
        got = sorted(tuple(r) for r in conn.execute(text("SELECT item_id, theme FROM item_theme")))
        assert got == expected


def poll(feed_id: int, url: str, items: list[Item], tags: dict[str, Tags]) -> PollWrite:
    record = PollRecord(
        status=FeedOutcome.OK,
        message=None,
        http_status=200,
        failures=0,
        gone_count=0,
        enabled=True,
        checked_at=NOW,
        next_poll_at=NOW + timedelta(minutes=30),
        succeeded=True,
    )
    return PollWrite(feed_id, record, feed_url=url, items=items, fetched_at=NOW, tags=tags)


def test_store_batches_items_are_searchable_and_themed(store: Store) -> None:
    (a, url_a), (b, url_b), (c, url_c) = feeds(store, 3)
    counts = store.store_batches(
        [
            FeedItems(a, url_a, [make_item(1, "Floods in Sindh", "relief camps")]),
            FeedItems(
                b,
                url_b,
                [
                    make_item(2, "Floods in Punjab", "wheat crops lost", link=""),
                    # the story feed a carries: a duplicate, stored (and indexed) once
                    make_item(3, "Floods in Sindh again", link="https://news.example/story/1"),
                ],
                {"guid-2": Tags(themes=["climate", "economy"])},
            ),
            FeedItems(c, url_c, []),
        ],
        NOW,
    )
    assert [(x.new, x.duplicates) for x in counts] == [(1, 0), (1, 1), (0, 0)]
    archive = ArchiveStore(store)
    assert titles(archive, "floods") == []  # stored, not indexed yet
    assert archive.theme_items("economy") == []
    assert index_archive(store) == 2
    assert titles(archive, "floods") == ["Floods in Sindh", "Floods in Punjab"]
    assert titles(archive, "flooded crop") == ["Floods in Punjab"]  # stemmed, every word
    assert titles(archive, "again") == []
    assert [i.title for i in archive.theme_items("economy")] == ["Floods in Punjab"]
    check_index(store)

    # The same feed twice in one call (two rounds), then the whole call again: nothing new.
    again = [
        FeedItems(a, url_a, [make_item(4, "Cyclone warning", "coastal Sindh")]),
        FeedItems(a, url_a, [make_item(5, "Cyclone landfall", "Karachi")]),
    ]
    assert [x.new for x in store.store_batches(again, NOW)] == [1, 1]
    assert index_archive(store) == 2
    assert [x.new for x in store.store_batches(again, NOW)] == [0, 0]
    assert index_archive(store) == 0
    assert titles(archive, "cyclone") == ["Cyclone warning", "Cyclone landfall"]
    assert titles(archive, "sindh") == ["Floods in Sindh", "Cyclone warning"]
    check_index(store)


def test_write_polls_items_are_searchable_and_updates_follow(store: Store) -> None:
    (a, url_a), (b, url_b) = feeds(store, 2)
    writes = [
        poll(a, url_a, [make_item(1, "Budget talks", "IMF review")], {}),
        poll(
            b,
            url_b,
            [make_item(2, "Budget passed", "tax on retailers"), make_item(3, "Polio drive")],
            {"guid-2": Tags(themes=["economy"])},
        ),
    ]
    assert [c.new for c in store.write_polls(writes)] == [1, 2]
    assert index_archive(store) == 3
    archive = ArchiveStore(store)
    assert titles(archive, "budget") == ["Budget talks", "Budget passed"]
    assert [i.title for i in archive.theme_items("economy")] == ["Budget passed"]

    # Changed at the source: the old words are gone from the index, the new ones found.
    changed = replace(make_item(2, "Budget withdrawn", "retailers protest"), content_hash="changed")
    new = make_item(4, "Retailers strike", "markets shut")
    counts = store.write_polls([poll(b, url_b, [changed, make_item(3, "Polio drive"), new], {})])
    assert (counts[0].new, counts[0].updated, counts[0].unchanged) == (1, 1, 1)
    assert index_archive(store) == 2  # the changed item and the new one
    assert titles(archive, "passed") == []
    assert titles(archive, "withdrawn") == ["Budget withdrawn"]
    assert titles(archive, "retailers") == ["Budget withdrawn", "Retailers strike"]
    assert titles(archive, "tax") == []
    check_index(store)

    # Deleted (a feed removed with its items): gone from the index.
    assert store.remove_feed(url_b)
    assert titles(archive, "budget") == ["Budget talks"]
    assert titles(archive, "retailers") == []
    check_index(store)


def test_migration_0008_round_trip_indexes_pending_items(store: Store) -> None:
    """Down to 0007 (indexing at write time) with items stored but not yet indexed, one of
    them changed since it was indexed: 0008's downgrade indexes them, 0007's index checks
    out; up again: everything stays found once, and the step indexes what comes next."""
    ((a, url_a),) = feeds(store, 1)
    tags = {f"guid-{n}": Tags() for n in range(5)}
    store.store_items(
        a, url_a, [make_item(1, "Floods indexed"), make_item(4, "Drought")], NOW, tags
    )
    index_archive(store)
    changed = replace(make_item(4, "Drought ends", "rain"), content_hash="pending")
    store.store_items(a, url_a, [make_item(2, "Floods pending"), changed], NOW, tags)
    _migrate(store, "0007")
    archive = ArchiveStore(store)
    assert titles(archive, "floods") == ["Floods indexed", "Floods pending"]
    assert titles(archive, "rain") == ["Drought ends"]
    with store.engine.begin() as conn:
        if store.is_sqlite:  # 0007's external-content table matches item exactly
            conn.execute(text("INSERT INTO item_fts (item_fts) VALUES ('integrity-check')"))
        assert conn.execute(text("SELECT count(*) FROM item_theme")).scalar() == 3
    _migrate(store, "head")
    check_index(store)
    assert titles(archive, "floods") == ["Floods indexed", "Floods pending"]
    changed = replace(make_item(4, "Drought over", "monsoon"), content_hash="head")
    store.store_items(a, url_a, [make_item(3, "Floods at head"), changed], NOW)
    assert index_archive(store) == 2
    assert titles(archive, "floods") == ["Floods indexed", "Floods pending", "Floods at head"]
    assert titles(archive, "drought") == ["Drought over"]
    assert titles(archive, "rain") == titles(archive, "ends") == []
    check_index(store)


def test_changed_tags_only_keep_the_text_indexed(store: Store) -> None:
    """An item whose content hash changed but not its words (say its HTML) is reindexed
    with the same words; its new themes reach item_theme."""
    ((a, url_a),) = feeds(store, 1)
    store.store_items(a, url_a, [make_item(1, "Wheat prices", "flour")], NOW)
    index_archive(store)
    same_words = replace(make_item(1, "Wheat prices", "flour"), content_hash="html changed")
    counts = store.store_items(a, url_a, [same_words], NOW, {"guid-1": Tags(themes=["economy"])})
    assert counts.updated == 1
    assert index_archive(store) == 1
    archive = ArchiveStore(store)
    assert titles(archive, "wheat flour") == ["Wheat prices"]
    assert [i.title for i in archive.theme_items("economy")] == ["Wheat prices"]
    check_index(store)


@pytest.mark.parametrize("count", [1, 450])
def test_bulk_batches_match_item_by_item_storage(store: Store, count: int) -> None:
    """Many items in one transaction are indexed exactly as one at a time would be."""
    ((a, url_a),) = feeds(store, 1)
    words = ["sugar", "wheat", "cotton", "rice"]
    items = [
        make_item(n, f"Story {n}", f"{words[n % 4]} prices {words[(n + 1) % 4]}")
        for n in range(count)
    ]
    store.store_batches([FeedItems(a, url_a, items)], NOW)
    assert index_archive(store, batch=100) == count
    archive = ArchiveStore(store)
    for word in words:
        expected = [
            f"Story {n}" for n in range(count) if word in (words[n % 4], words[(n + 1) % 4])
        ]
        got = [h.title for p in range(1, 30) for h in archive.search(word, page=p).rows]
        assert got == expected, word
    check_index(store)


def test_deleted_items_leave_the_index_indexed_or_not(store: Store) -> None:
    """A feed removed with its items: the indexed ones leave the index at once, the ones
    not indexed yet are never indexed; other feeds' items stay."""
    (a, url_a), (b, url_b) = feeds(store, 2)
    store.store_items(a, url_a, [make_item(1, "Floods in Sindh")], NOW)
    store.store_items(b, url_b, [make_item(2, "Floods in Punjab")], NOW)
    index_archive(store)
    changed = replace(make_item(1, "Floods recede", "Sindh"), content_hash="changed")
    store.store_items(a, url_a, [changed, make_item(3, "Floods in Thar")], NOW)
    store.store_items(b, url_b, [make_item(4, "Floods in Swat")], NOW)
    assert store.remove_feed(url_a)
    archive = ArchiveStore(store)
    assert titles(archive, "floods") == ["Floods in Punjab"]
    assert index_archive(store) == 1  # Swat; a's pending items went with it
    assert titles(archive, "floods") == ["Floods in Punjab", "Floods in Swat"]
    assert titles(archive, "sindh") == titles(archive, "thar") == []
    check_index(store)


def test_the_step_is_idempotent_and_bounded(store: Store) -> None:
    """``limit`` bounds a run; a run with nothing pending changes nothing."""
    ((a, url_a),) = feeds(store, 1)
    items = [make_item(n, f"Story {n}", "cotton prices") for n in range(7)]
    store.store_items(a, url_a, items, NOW, {f"guid-{n}": Tags() for n in range(7)})
    assert index_archive(store, limit=3, batch=2) == 3
    assert len(titles(ArchiveStore(store), "cotton")) == 3
    assert index_archive(store, batch=2) == 4
    check_index(store)
    before = index_state(store)
    assert index_archive(store) == 0
    assert index_state(store) == before
    # Re-tagging marks items for their themes; the step rebuilds them, words unchanged.
    ids = [i.row_id for i in store.list_items(limit=10)]
    store.set_tags([(row_id, Tags(themes=["climate"])) for row_id in ids[:2]])
    assert index_archive(store) == 2
    assert index_state(store)["indexed"] == before["indexed"]
    assert len(ArchiveStore(store).theme_items("climate")) == 2
    check_index(store)


@pytest.mark.postgres
def test_the_step_never_loses_an_item_a_concurrent_poll_writes(postgres_url: str) -> None:
    """PostgreSQL, several workers: a poll's transaction is open (new items inserted, an
    indexed item changed, a pending one changed) while the step runs, in this and in
    another thread. The step skips what the poll holds and cannot see what it has not
    committed; after the poll commits, the next run indexes all of it."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        ((a, url_a),) = feeds(store, 1)
        store.store_items(a, url_a, [make_item(1, "Floods indexed")], NOW)
        index_archive(store)
        store.store_items(a, url_a, [make_item(2, "Floods pending")], NOW)
        changes = [
            replace(make_item(1, "Floods indexed", "changed"), content_hash="x"),
            replace(make_item(2, "Floods pending", "changed too"), content_hash="y"),
            *(make_item(n, f"Floods new {n}") for n in range(3, 30)),
        ]
        archive = ArchiveStore(store)
        with store.engine.begin() as conn:  # the poll's transaction, not committed yet
            store._store_batches(conn, [_Batch(a, url_a, changes, NOW, None)])
            # The step in another thread (another worker) and here: neither waits for the
            # poll, neither indexes what it holds or has not committed.
            done: list[int] = []
            worker = threading.Thread(target=lambda: done.append(index_archive(store)))
            worker.start()
            worker.join(timeout=30)
            assert done == [0]
            assert index_archive(store) == 0
        assert titles(archive, "changed") == []
        assert index_archive(store) == 29
        assert titles(archive, "changed") == ["Floods indexed", "Floods pending"]
        assert len(titles(archive, "floods")) == 29
        check_index(store)
    finally:
        store.close()


@pytest.mark.postgres
def test_two_steps_at_once_index_each_item_once(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.upgrade()
    try:
        ((a, url_a),) = feeds(store, 1)
        items = [make_item(n, f"Story {n}", "sugar") for n in range(300)]
        store.store_items(a, url_a, items, NOW, {f"guid-{n}": Tags() for n in range(300)})
        counts: list[int] = []
        workers = [
            threading.Thread(target=lambda: counts.append(index_archive(store, batch=10)))
            for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        counts.append(index_archive(store))  # what a run that stopped early left
        assert sum(counts) == 300
        check_index(store)
    finally:
        store.close()
