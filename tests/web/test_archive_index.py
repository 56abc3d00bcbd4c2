"""The archive's search and theme index follow the store's batch path (migration 0007: on
SQLite the store indexes each batch's new items itself, after its INSERT; on PostgreSQL
the database does). Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text

from pipeline.adapters.archive_store import ArchiveStore
from pipeline.adapters.storage import FeedItems, PollWrite, Store
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


def check_index(store: Store) -> None:
    """SQLite: FTS5's own check that the index holds exactly what ``item`` holds (an item
    indexed twice or not at all fails it). PostgreSQL: every item has its vector."""
    with store.engine.begin() as conn:
        if store.is_sqlite:
            conn.execute(text("INSERT INTO item_fts (item_fts) VALUES ('integrity-check')"))
            indexed = conn.execute(text("SELECT count(*) FROM item_fts_docsize")).scalar()
        else:
            indexed = conn.execute(
                text("SELECT count(*) FROM item WHERE search_vector IS NOT NULL")
            ).scalar()
        assert indexed == conn.execute(text("SELECT count(*) FROM item")).scalar()


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
    assert [x.new for x in store.store_batches(again, NOW)] == [0, 0]
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
    archive = ArchiveStore(store)
    assert titles(archive, "budget") == ["Budget talks", "Budget passed"]
    assert [i.title for i in archive.theme_items("economy")] == ["Budget passed"]

    # Changed at the source: the old words are gone from the index, the new ones found.
    changed = replace(make_item(2, "Budget withdrawn", "retailers protest"), content_hash="changed")
    new = make_item(4, "Retailers strike", "markets shut")
    counts = store.write_polls([poll(b, url_b, [changed, make_item(3, "Polio drive"), new], {})])
    assert (counts[0].new, counts[0].updated, counts[0].unchanged) == (1, 1, 1)
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


def test_items_stored_before_0007_stay_indexed_once(store: Store) -> None:
    """Down to 0006 (0005's insert and text triggers are back) and up again: items stored
    or changed at either revision are found, and none is indexed twice."""
    ((a, url_a),) = feeds(store, 1)
    store.store_items(a, url_a, [make_item(1, "Floods at head"), make_item(4, "Drought")], NOW)
    _migrate(store, "0006")
    changed = replace(make_item(4, "Drought ends", "rain"), content_hash="0006")
    store.store_items(a, url_a, [make_item(2, "Floods at 0006"), changed], NOW)
    check_index(store)
    _migrate(store, "head")
    changed = replace(make_item(4, "Drought over", "monsoon"), content_hash="head")
    store.store_items(a, url_a, [make_item(3, "Floods at head again"), changed], NOW)
    archive = ArchiveStore(store)
    assert titles(archive, "floods") == ["Floods at head", "Floods at 0006", "Floods at head again"]
    assert titles(archive, "drought") == ["Drought over"]
    assert titles(archive, "rain") == titles(archive, "ends") == []
    check_index(store)


def test_changed_tags_only_keep_the_text_indexed(store: Store) -> None:
    """An item whose content hash changed but not its words (say its HTML) is reindexed
    with the same words; its new themes reach item_theme."""
    ((a, url_a),) = feeds(store, 1)
    store.store_items(a, url_a, [make_item(1, "Wheat prices", "flour")], NOW)
    same_words = replace(make_item(1, "Wheat prices", "flour"), content_hash="html changed")
    counts = store.store_items(a, url_a, [same_words], NOW, {"guid-1": Tags(themes=["economy"])})
    assert counts.updated == 1
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
    archive = ArchiveStore(store)
    for word in words:
        expected = [
            f"Story {n}" for n in range(count) if word in (words[n % 4], words[(n + 1) % 4])
        ]
        got = [h.title for p in range(1, 30) for h in archive.search(word, page=p).rows]
        assert got == expected, word
    check_index(store)
