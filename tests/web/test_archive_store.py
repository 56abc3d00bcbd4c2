"""The archive's reads and migration 0005 on SQLite and PostgreSQL (every test runs on both):
search, the theme and edition lookup tables the database keeps in step, weekly volumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text

from pipeline.adapters import archive_store as archive_module
from pipeline.adapters.archive_store import (
    ArchiveStore,
    edition_item,
    edition_theme,
    fts5_match,
    item_theme,
    query_words,
)
from pipeline.adapters.delivery_store import DeliveryStore
from pipeline.adapters.storage import Store
from pipeline.core.models import FeedSource, Item

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class Tags:
    themes: list[str] = field(default_factory=lambda: ["economy"])
    relevant: bool = True
    us_link: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, list[str]] = field(default_factory=dict)


def make_item(n: int, title: str, text: str = "", **changes: Any) -> Item:
    base = Item(
        guid_key=f"guid-{n}",
        link=f"https://news.example/story/{n}",
        title=title,
        summary_html=f"<p>{text}</p>",
        summary_text=text,
        published=NOW - timedelta(hours=n),
        language="en",
        content_hash=f"{n}-{title}-{text}",
    )
    return replace(base, **changes)


def add_feed(store: Store, url: str = "https://a.example/feed") -> int:
    feed_id, _ = store.add_feed(FeedSource(url=url, title="Outlet A"), "cli", NOW)
    return feed_id


def put(store: Store, items: list[Item], tags: dict[str, Tags] | None = None) -> None:
    feed_id = add_feed(store)
    store.store_items(feed_id, "https://a.example/feed", items, NOW, tags or {})


def uids(store: Store) -> dict[str, str]:
    """title → uid of every stored item."""
    return {i.title: i.id for i in store.list_items(limit=1000)}


def public_edition(
    store: Store, end: datetime, themes: list[str], item_ids: list[str], items: int = 3
) -> int:
    content = {
        "version": 1,
        "subject": f"Edition {end:%d %b}",
        "period_start": (end - timedelta(days=1)).isoformat(),
        "period_end": end.isoformat(),
        "top": [],
        "sections": [
            {"theme": {"id": t, "name": t}, "entries": [], "volume_line": ""} for t in themes
        ],
        "watchlist_entries": [],
        "item_ids": item_ids,
    }
    edition_id, _ = DeliveryStore(store).create_edition(
        kind="public",
        subscriber_id=None,
        frequency="daily",
        period_start=end - timedelta(days=1),
        period_end=end,
        local_date=end.date().isoformat(),
        subject=content["subject"],
        item_count=items,
        content=content,
        now=end,
        queue_delivery=False,
    )
    return edition_id


# -- the words of a query ---------------------------------------------------------------------


def test_query_words_keep_words_and_drop_punctuation_only_chunks() -> None:
    assert query_words("  IMF   loan  ") == ["IMF", "loan"]
    assert query_words('" * - ( ) ^') == []
    assert query_words("F-16 deal") == ["F-16", "deal"]
    assert len(query_words(" ".join(f"w{n}" for n in range(50)))) == 8
    assert fts5_match(['say "hi"', "NEAR"]) == '"say ""hi""" "NEAR"'


# -- search -----------------------------------------------------------------------------------


def test_search_finds_items_with_every_word_newest_first(store: Store) -> None:
    put(
        store,
        [
            make_item(1, "IMF approves loan tranche", "Islamabad welcomed the decision."),
            make_item(2, "Senate debates budget", "The IMF programme shaped the budget."),
            make_item(3, "Cricket: Pakistan win", "A loan player starred."),
            make_item(4, "Old IMF loan talks", "Negotiations in Washington."),
        ],
    )
    archive = ArchiveStore(store)
    found = archive.search("IMF loan")
    assert [h.title for h in found.rows] == ["IMF approves loan tranche", "Old IMF loan talks"]
    assert not found.has_next
    in_text = archive.search("budget")
    assert [h.title for h in in_text.rows] == ["Senate debates budget"]
    assert in_text.rows[0].source == "Outlet A"
    assert in_text.rows[0].published == NOW - timedelta(hours=2)


def test_search_stems_words(store: Store) -> None:
    put(store, [make_item(1, "New sanctions announced", "Officials were sanctioned.")])
    assert [h.title for h in ArchiveStore(store).search("sanction").rows] == [
        "New sanctions announced"
    ]


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "NEAR(a b)",
        "a OR b",
        "-loan",
        "loan*",
        "title:loan",
        "'; DROP TABLE item; --",
        "%_\\",
        "^loan",
        "( )",
        "\x00",
        "loan AND",
        "x" * 500,
    ],
)
def test_search_treats_every_query_as_plain_words(store: Store, query: str) -> None:
    put(store, [make_item(1, "IMF loan approved", "Text.")])
    result = ArchiveStore(store).search(query)  # never raises
    assert all(h.title == "IMF loan approved" for h in result.rows)
    assert store.count_items() == 1


def test_search_pages(store: Store) -> None:
    put(store, [make_item(n, f"Story {n} about floods", "Rain.") for n in range(1, 8)])
    archive = ArchiveStore(store)
    first = archive.search("floods", page=1, per_page=3)
    second = archive.search("floods", page=2, per_page=3)
    third = archive.search("floods", page=3, per_page=3)
    assert [h.title for h in first.rows] == [f"Story {n} about floods" for n in (1, 2, 3)]
    assert [h.title for h in second.rows] == [f"Story {n} about floods" for n in (4, 5, 6)]
    assert [h.title for h in third.rows] == ["Story 7 about floods"]
    assert first.has_next and second.has_next and not third.has_next


def test_search_follows_changed_and_deleted_items(store: Store) -> None:
    feed_id = add_feed(store)
    store.store_items(feed_id, "https://a.example/feed", [make_item(1, "Budget talks")], NOW)
    changed = make_item(1, "Monsoon floods", content_hash="changed")
    store.store_items(feed_id, "https://a.example/feed", [changed], NOW)
    archive = ArchiveStore(store)
    assert archive.search("budget").rows == []
    assert [h.title for h in archive.search("floods").rows] == ["Monsoon floods"]
    assert store.remove_feed("https://a.example/feed")
    assert archive.search("floods").rows == []


def _expected(store: Store, word: str) -> list[str]:
    """Every item holding ``word``, newest first, by brute force."""
    items = [i for i in store.list_items(limit=1000) if word in f"{i.title} {i.summary_text}"]
    return [i.id for i in sorted(items, key=lambda i: (i.published, i.row_id), reverse=True)]


@pytest.mark.parametrize("window", [1, 3, 500])
def test_search_pages_are_exact_when_storage_order_follows_time(
    store: Store, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """Items stored as they are fetched: the newest stored matches decide each page."""
    monkeypatch.setattr(archive_module, "SQLITE_WINDOW", window)
    feed_id = add_feed(store)
    for n in range(40):
        published = NOW - timedelta(days=40 - n)
        text = "common words" if n % 3 else "rare"
        it = make_item(n, f"Story {n}", text, published=published)
        store.store_items(feed_id, "https://a.example/feed", [it], published + timedelta(minutes=5))
    expected = _expected(store, "common")
    archive = ArchiveStore(store)
    got = [h.uid for p in range(1, 8) for h in archive.search("common", page=p, per_page=4).rows]
    assert got == expected


@pytest.mark.parametrize("window", [1, 3, 500])
def test_search_pages_are_exact_when_old_items_are_stored_late(
    store: Store, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """A backfill (a new feed's archive, stored now): storage order says nothing about
    time, the window grows until the page is provably right."""
    monkeypatch.setattr(archive_module, "SQLITE_WINDOW", window)
    feed_id = add_feed(store)
    for batch in range(4):  # each batch older than the one stored before it
        items = [
            make_item(
                batch * 10 + n,
                f"Story {batch}-{n}",
                "common words",
                published=NOW - timedelta(days=10 * batch + n),
            )
            for n in range(10)
        ]
        store.store_items(feed_id, "https://a.example/feed", items, NOW)
    expected = _expected(store, "common")
    archive = ArchiveStore(store)
    first = archive.search("common", page=1, per_page=3)
    assert [h.uid for h in first.rows] == expected[:3] and first.has_next
    got = [h.uid for p in range(1, 15) for h in archive.search("common", page=p, per_page=3).rows]
    assert got == expected


def test_search_hit_links_to_the_first_public_edition_that_showed_it(store: Store) -> None:
    put(store, [make_item(1, "Gwadar port opens"), make_item(2, "Gwadar airport delayed")])
    ids = uids(store)
    first = public_edition(store, NOW - timedelta(days=2), ["economy"], [ids["Gwadar port opens"]])
    public_edition(store, NOW - timedelta(days=1), ["china"], [ids["Gwadar port opens"]])
    hits = {h.title: h.edition_id for h in ArchiveStore(store).search("gwadar").rows}
    assert hits == {"Gwadar port opens": first, "Gwadar airport delayed": None}


# -- editions and themes ------------------------------------------------------------------------


def test_editions_newest_first_filtered_by_theme_and_paged(store: Store) -> None:
    ids = [
        public_edition(
            store, NOW - timedelta(days=n), ["economy", "china"] if n % 2 else ["india"], []
        )
        for n in range(5)
    ]
    archive = ArchiveStore(store)
    page = archive.editions(1, per_page=2)
    assert [e.id for e in page.rows] == [ids[0], ids[1]] and page.has_next
    assert set(page.rows[1].themes) == {"economy", "china"}
    last = archive.editions(3, per_page=2)
    assert [e.id for e in last.rows] == [ids[4]] and not last.has_next
    china = archive.editions(1, per_page=10, theme="china")
    assert [e.id for e in china.rows] == [ids[1], ids[3]]
    assert archive.editions(1, theme="climate").rows == []


def test_empty_public_editions_are_not_listed(store: Store) -> None:
    shown = public_edition(store, NOW - timedelta(days=1), ["economy"], [], items=2)
    public_edition(store, NOW, [], [], items=0)
    assert [e.id for e in ArchiveStore(store).editions().rows] == [shown]
    assert [row[0] for row in ArchiveStore(store).latest_editions()] == [shown]


def test_personal_editions_stay_out_of_the_archive_tables(store: Store) -> None:
    from pipeline.adapters.subscriber_store import SubscriberStore
    from pipeline.core.subscribers import Frequency, SubscriberStatus

    reader, _ = SubscriberStore(store).add(
        "reader@example.org",
        themes=["economy"],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="UTC",
        status=SubscriberStatus.ACTIVE,
        now=NOW,
    )
    DeliveryStore(store).create_edition(
        kind="personal",
        subscriber_id=reader.id,
        frequency="daily",
        period_start=NOW - timedelta(days=1),
        period_end=NOW,
        local_date="2026-11-29",
        subject="Mine",
        item_count=1,
        content={"sections": [{"theme": {"id": "economy"}}], "item_ids": ["abc"]},
        now=NOW,
        queue_delivery=False,
    )
    with store.engine.connect() as conn:
        assert conn.execute(select(edition_theme)).all() == []
        assert conn.execute(select(edition_item)).all() == []
    assert ArchiveStore(store).editions().rows == []


def test_item_themes_follow_tagging(store: Store) -> None:
    put(
        store,
        [make_item(1, "One"), make_item(2, "Two")],
        {"guid-1": Tags(themes=["china", "economy"]), "guid-2": Tags(themes=[], relevant=False)},
    )
    with store.engine.connect() as conn:
        rows = conn.execute(select(item_theme.c.theme)).scalars().all()
    assert sorted(rows) == ["china", "economy"]
    one = next(i for i in store.list_items() if i.title == "One")
    two = next(i for i in store.list_items() if i.title == "Two")
    store.set_tags([(one.row_id, Tags(themes=["india"])), (two.row_id, Tags(themes=["china"]))])
    archive = ArchiveStore(store)
    assert [i.title for i in archive.theme_items("india")] == ["One"]
    assert [i.title for i in archive.theme_items("china")] == ["Two"]
    assert archive.theme_items("economy") == []


def test_weekly_volume_counts_each_week_oldest_first(store: Store) -> None:
    # NOW is Sunday 29 Nov 2026; its week starts on Monday 23 Nov.
    items = [
        make_item(1, "a", published=NOW - timedelta(days=1)),  # this week
        make_item(2, "b", published=NOW - timedelta(days=2)),  # this week
        make_item(3, "c", published=NOW - timedelta(days=8)),  # the week before
        make_item(4, "d", published=NOW - timedelta(weeks=30)),  # too old
        make_item(5, "e", published=NOW - timedelta(days=1)),  # another theme
    ]
    tags = {f"guid-{n}": Tags(themes=["climate"]) for n in range(1, 5)}
    tags["guid-5"] = Tags(themes=["india"])
    put(store, items, tags)
    weeks = ArchiveStore(store).weekly_volume("climate", NOW, weeks=4)
    assert [(str(start), count) for start, count in weeks] == [
        ("2026-11-02", 0),
        ("2026-11-09", 0),
        ("2026-11-16", 1),
        ("2026-11-23", 2),
    ]


def test_dashboard_counts(store: Store) -> None:
    put(store, [make_item(1, "One")])
    archive = ArchiveStore(store)
    assert archive.counts() == {"items": 1, "public_editions": 0, "feeds": 1}
    assert archive.suppressions() == (0, [])
    assert archive.subscribers_by_status() == {}


def test_migration_indexes_existing_rows_and_downgrades(store: Store) -> None:
    put(store, [make_item(1, "Floods in Sindh")], {"guid-1": Tags(themes=["climate"])})
    uid = uids(store)["Floods in Sindh"]
    public_edition(store, NOW, ["climate"], [uid])
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("pipeline.adapters") / "migrations")
    )
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    tables = set(inspect(store.engine).get_table_names())
    assert not {"item_theme", "edition_theme", "edition_item", "item_fts"} & tables
    store.upgrade()  # back to head: what was stored before is indexed
    archive = ArchiveStore(store)
    assert [h.edition_id is not None for h in archive.search("floods").rows] == [True]
    assert [i.title for i in archive.theme_items("climate")] == ["Floods in Sindh"]
    assert [e.themes for e in archive.editions().rows] == [("climate",)]


@pytest.mark.parametrize(
    ("recent", "sort_all", "estimate"),
    [(2, 0, None), (2000, 0, None), (2, 3000, None), (2, 0, 10**6), (2000, 0, 10**6)],
)
def test_search_pages_are_exact_across_years(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    recent: int,
    sort_all: int,
    estimate: int | None,
) -> None:
    """Matches spread over three years, a few of them recent: every page is right whether
    the newest items hold a full page, all matches are sorted, or the search widens a date
    range from the newest day (a planner estimate of a million makes it start narrow)."""
    monkeypatch.setattr(archive_module, "PG_RECENT_ITEMS", recent)
    monkeypatch.setattr(archive_module, "PG_SORT_ALL", sort_all)
    if estimate is not None:
        plan = f'[{{"Plan": {{"Plan Rows": {estimate}}}}}]'
        monkeypatch.setattr(
            archive_module,
            "_PG_ESTIMATE",
            text(f"SELECT CAST('{plan}' AS json) WHERE CAST(:q AS text) IS NOT NULL"),
        )
    monkeypatch.setattr(archive_module, "SQLITE_WINDOW", 2)
    offsets = [1, 3, 20, 45, 200, 400, 700, 1000, 1090]  # days before NOW
    items = [
        make_item(n, f"Story {n}", "sugar prices" if n % 2 else "wheat prices", published=at)
        for n, at in enumerate(
            NOW - timedelta(days=days, hours=h) for days in offsets for h in range(3)
        )
    ]
    put(store, items)
    archive = ArchiveStore(store)
    for word in ("sugar", "prices", "wheat sugar"):
        expected = [] if word == "wheat sugar" else _expected(store, word.split()[0])
        got = [h.uid for p in range(1, 20) for h in archive.search(word, page=p, per_page=2).rows]
        assert got == expected, word
    assert archive.search("nowhere").rows == []
    assert archive.search("the").rows == []  # a stop word alone matches nothing


def _migrate(store: Store, revision: str) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("pipeline.adapters") / "migrations")
    )
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        if revision == "head":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)


def _item_triggers(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(
            conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'item'")
            ).scalars()
        )


@pytest.mark.parametrize("sqlite_version", ["in place", "rebuild"])
def test_later_migrations_keep_the_archive_in_step(
    sqlite_url: str, sqlite_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going down to 0005 and up again leaves search and theme pages following new items,
    and loses nothing 0005 indexed nor any delivery. 0006's downgrade drops its column in
    place on SQLite 3.35+; older SQLite rebuilds ``item`` (batch mode), which drops the
    table's triggers and, with foreign keys on, cascades to the tables that refer to it."""
    store = Store(sqlite_url)
    store.upgrade()
    if sqlite_version == "rebuild":
        monkeypatch.setattr(store.engine.dialect, "server_version_info", (3, 31, 1))
    triggers = _item_triggers(store)
    assert len(triggers) == 4
    put(store, [make_item(1, "Floods in Sindh")], {"guid-1": Tags(themes=["climate"])})
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscriber (email, status, themes, created_at, updated_at)"
                " VALUES ('a@example.org', 'active', '[]', :now, :now)"
            ),
            {"now": NOW.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO delivery (subscriber_id, alert_item_id, channel, not_before,"
                " created_at) SELECT s.id, i.id, 'alert', :now, :now"
                " FROM subscriber AS s, item AS i"
            ),
            {"now": NOW.replace(tzinfo=None)},
        )

    _migrate(store, "0005")
    assert _item_triggers(store) == triggers
    assert "source_name" not in {c["name"] for c in inspect(store.engine).get_columns("item")}
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM delivery")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM item_theme")).scalar() == 1
    archive = ArchiveStore(store)
    assert [h.title for h in archive.search("floods").rows] == ["Floods in Sindh"]

    _migrate(store, "head")
    assert _item_triggers(store) == triggers
    put(
        store,
        [
            make_item(2, "Floods in Punjab", link=""),
            make_item(3, "Floods in Balochistan", link=""),  # the partial unique index holds
        ],
        {"guid-2": Tags(themes=["climate"]), "guid-3": Tags(themes=["climate"])},
    )
    titles = ["Floods in Sindh", "Floods in Punjab", "Floods in Balochistan"]
    assert [h.title for h in archive.search("floods").rows] == titles
    assert [i.title for i in archive.theme_items("climate")] == titles
    store.close()
