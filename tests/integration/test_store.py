"""The store on SQLite and PostgreSQL (every test runs on both engines)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from pipeline.adapters.storage import Store, _Batch
from pipeline.core.errors import StorageError
from pipeline.core.models import FeedOutcome, FeedSource, Item, StoreCounts
from pipeline.core.schedule import BackoffPolicy, decide_after_poll

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def make_item(n: int, *, link: bool = True, content: str = "v1", **changes: object) -> Item:
    base = Item(
        guid_key=f"guid-{n}",
        link=f"https://news.example/story/{n}" if link else "",
        title=f"Story {n}",
        summary_html=f"<p>Summary {n}</p>",
        summary_text=f"Summary {n}",
        published=NOW - timedelta(minutes=n),
        language="en",
        content_hash=f"{n}-{content}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass
class Tags:
    relevant: bool = True
    us_link: bool = False
    themes: list[str] = field(default_factory=lambda: ["economy", "china"])
    scores: dict[str, float] = field(default_factory=lambda: {"economy": 0.5})
    evidence: dict[str, list[str]] = field(default_factory=lambda: {"economy": ["imf"]})


def add(store: Store, url: str = "https://a.example/feed") -> int:
    feed_id, created = store.add_feed(FeedSource(url=url, title=url), "cli", NOW)
    assert created
    return feed_id


def test_upgrade_twice_is_a_no_op_and_creates_every_table(store: Store) -> None:
    store.upgrade()
    tables = set(inspect(store.engine).get_table_names())
    assert {"feed", "item", "alembic_version"} <= tables
    store.require_schema()


def test_unmigrated_database_says_how_to_fix_it(store_url: str) -> None:
    bare = Store(store_url)
    with pytest.raises(StorageError, match="qasid db upgrade"):
        bare.require_schema()
    bare.close()


def test_polling_the_same_entries_again_adds_nothing(store: Store) -> None:
    feed_id = add(store)
    items = [make_item(n) for n in range(5)]
    first = store.store_items(feed_id, "https://a.example/feed", items, NOW)
    second = store.store_items(feed_id, "https://a.example/feed", items, NOW)
    assert (first.new, second.new, second.unchanged) == (5, 0, 5)
    assert store.count_items() == 5


def test_entry_updated_at_the_source_is_updated_not_duplicated(store: Store) -> None:
    feed_id = add(store)
    store.store_items(feed_id, "u", [make_item(1)], NOW)
    changed = make_item(1, content="v2", title="Story 1 (updated)")
    counts = store.store_items(feed_id, "u", [changed], NOW + timedelta(hours=1))
    assert (counts.new, counts.updated) == (0, 1)
    [stored] = store.list_items()
    assert stored.title == "Story 1 (updated)"


def test_same_story_url_from_two_feeds_is_stored_once(store: Store) -> None:
    first, second = add(store, "https://a.example/feed"), add(store, "https://b.example/rss")
    store.store_items(first, "a", [make_item(1)], NOW)
    counts = store.store_items(second, "b", [make_item(1, guid_key="other-guid")], NOW)
    assert (counts.new, counts.duplicates) == (0, 1)
    assert store.count_items() == 1


def test_duplicate_guids_in_one_batch_store_one_item(store: Store) -> None:
    feed_id = add(store)
    counts = store.store_items(feed_id, "u", [make_item(1), make_item(1, content="v9")], NOW)
    assert counts.new == 1
    assert store.count_items() == 1


def test_items_without_links_are_kept_apart_by_guid(store: Store) -> None:
    feed_id = add(store)
    counts = store.store_items(feed_id, "u", [make_item(n, link=False) for n in range(3)], NOW)
    assert counts.new == 3


def test_unicode_round_trips_on_both_engines(store: Store) -> None:
    feed_id = add(store)
    title = "پاکستان اور امریکہ 🇵🇰 \u200fRTL\u200e 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " + "x" * 5000
    store.store_items(feed_id, "u", [make_item(1, title=title)], NOW)
    [stored] = store.list_items()
    assert stored.title == title
    assert stored.published.tzinfo is not None
    assert stored.published == NOW - timedelta(minutes=1)


def test_items_are_listed_newest_first(store: Store) -> None:
    feed_id = add(store)
    store.store_items(feed_id, "u", [make_item(n) for n in (3, 1, 2)], NOW)
    assert [i.title for i in store.list_items()] == ["Story 1", "Story 2", "Story 3"]
    assert [i.title for i in store.list_items(limit=1)] == ["Story 1"]


def test_an_item_without_a_date_reads_back_as_undated(store: Store) -> None:
    from pipeline.delivery import to_candidate

    feed_id = add(store)
    items = [make_item(1), make_item(2, published_missing=True)]
    store.store_items(feed_id, "https://a.example/feed", items, NOW, {})
    read = {it.title: it for it in store.items_between(NOW - timedelta(hours=1), NOW)}
    assert read["Story 2"].published_missing and not read["Story 1"].published_missing
    assert to_candidate(read["Story 2"]).undated and not to_candidate(read["Story 1"]).undated


def test_claimed_feeds_are_not_claimed_again_until_the_lease_ends(store: Store) -> None:
    add(store, "https://a.example/1")
    add(store, "https://a.example/2")
    lease = timedelta(minutes=5)
    first = store.claim_feeds(NOW, "w1", lease)
    assert [f.url for f in first] == ["https://a.example/1", "https://a.example/2"]
    assert store.claim_feeds(NOW, "w2", lease) == []
    later = store.claim_feeds(NOW + lease + timedelta(seconds=1), "w2", lease)
    assert len(later) == 2


def test_concurrent_claims_never_hand_one_feed_to_two_workers(store: Store) -> None:
    for n in range(40):
        add(store, f"https://a.example/{n}")
    results: dict[str, list[int]] = {}

    def claim(name: str) -> None:
        got: list[int] = []
        for _ in range(10):
            got += [f.id for f in store.claim_feeds(NOW, name, timedelta(minutes=5), limit=3)]
        results[name] = got

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [fid for ids in results.values() for fid in ids]
    assert len(claimed) == len(set(claimed)) == 40


def test_recorded_failure_backs_off_and_releases_the_lease(store: Store) -> None:
    add(store)
    [state] = store.claim_feeds(NOW, "w1", timedelta(minutes=5))
    record = decide_after_poll(
        state, FeedOutcome.HTTP_ERROR, NOW, BackoffPolicy(), message="HTTP 500", http_status=500
    )
    store.record_poll(state.id, record)
    after = store.get_feed(state.url)
    assert after is not None
    assert (after.status, after.failures, after.error_total) == ("http_error", 1, 1)
    assert after.last_error == "HTTP 500"
    assert after.next_poll_at is not None and after.next_poll_at > NOW
    # not due yet: nothing to claim; with an explicit URL an editor can still force it
    assert store.claim_feeds(NOW, "w1", timedelta(minutes=5)) == []
    assert len(store.claim_feeds(NOW, "w1", timedelta(minutes=5), urls=[state.url])) == 1


def test_success_stores_validators_and_a_permanent_redirect_moves_the_feed(store: Store) -> None:
    add(store, "http://old.example/feed")
    [state] = store.claim_feeds(NOW, "w1", timedelta(minutes=5))
    record = decide_after_poll(state, FeedOutcome.OK, NOW, BackoffPolicy())
    store.record_poll(
        state.id,
        record,
        etag='"abc"',
        last_modified="Sun, 29 Nov 2026 10:00:00 GMT",
        body_hash="f" * 64,
        new_url="https://new.example/feed",
        title="From the feed",
    )
    assert store.get_feed("http://old.example/feed") is None
    moved = store.get_feed("https://new.example/feed")
    assert moved is not None
    assert (moved.etag, moved.body_hash, moved.failures) == ('"abc"', "f" * 64, 0)
    assert moved.last_success_at == NOW


def test_removing_a_feed_removes_its_items(store: Store) -> None:
    feed_id = add(store)
    store.store_items(feed_id, "u", [make_item(1)], NOW)
    assert store.remove_feed("https://a.example/feed")
    assert store.count_items() == 0
    assert not store.remove_feed("https://a.example/feed")


def test_syncing_sources_twice_adds_each_feed_once(store: Store) -> None:
    sources = [FeedSource(url=f"https://s.example/{n}", title=f"S{n}") for n in range(3)]
    assert store.sync_sources(sources, "config", NOW) == (3, 0)
    assert store.sync_sources(sources, "config", NOW) == (0, 3)
    listed = store.list_feeds()
    assert [f.url for f in listed] == [s.url for s in sources]
    assert all(f.items == 0 and f.status == "never" for f in listed)


@pytest.mark.parametrize(
    "title",
    [
        "NUL\x00inside and &#0; escaped",
        "bad surrogate \udc80 here",
        "emoji 🇵🇰 and non-BMP 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\u200fعمران خان\u200e RTL marks",
        "long " * 400_000,  # a 2 MB title
    ],
)
def test_hostile_strings_survive_normalisation_and_store_on_both_engines(
    store: Store, title: str
) -> None:
    from pipeline.core.models import ParsedEntry
    from pipeline.core.normalize import TITLE_MAX, item_from_entry

    entry = ParsedEntry(
        guid="g1",
        link="https://news.example/1",
        title=title,
        summary=f"<p>{title[:5000]}</p>",
        published=None,
    )
    normalised = item_from_entry(entry, "https://a.example/feed", "en", NOW)
    feed_id = add(store)
    assert store.store_items(feed_id, "u", [normalised], NOW).new == 1
    [stored] = store.list_items()
    assert stored.title == normalised.title
    assert "\x00" not in stored.title
    assert len(stored.title) <= TITLE_MAX
    stored.title.encode("utf-8")  # no lone surrogates


@pytest.mark.parametrize("copy", [True, False])
def test_new_items_are_stored_as_the_column_types_bind_them(
    store: Store, monkeypatch: pytest.MonkeyPatch, copy: bool
) -> None:
    """The insert path (PostgreSQL: binary COPY, or its INSERT ... ON CONFLICT fallback;
    SQLite: one executemany) stores what SQLAlchemy's own insert of the same values stores:
    JSON null for untagged items, lists and dicts for tagged ones, aware times, booleans."""
    from sqlalchemy import select

    from pipeline.adapters import storage
    from pipeline.adapters.schema import item

    if not copy:
        monkeypatch.setattr(storage, "_pg_copy_items", lambda conn, rows, written: False)

    first, second = add(store, "https://a.example/feed"), add(store, "https://b.example/feed")
    items = [make_item(1), make_item(2, link=False, published_missing=True)]
    store.store_items(first, "https://a.example/feed", items, NOW, {"guid-2": Tags()})
    expected = []
    for it, tags in ((items[0], None), (items[1], Tags())):
        expected.append(
            {
                "uid": f"ref-{it.guid_key}",  # unique too; compared apart
                "feed_id": second,
                "guid_key": it.guid_key,
                "link": it.link + "#ref" if it.link else "",  # the link is unique
                "title": it.title,
                "summary_html": it.summary_html,
                "summary_text": it.summary_text,
                "author": it.author,
                "source_name": it.source,
                "language": it.language,
                "published_at": it.published,
                "published_missing": it.published_missing,
                "fetched_at": NOW,
                "updated_at": NOW,
                "content_hash": it.content_hash,
                "relevant": tags.relevant if tags else None,
                "us_link": tags.us_link if tags else None,
                "themes": tags.themes if tags else None,
                "scores": tags.scores if tags else None,
                "evidence": tags.evidence if tags else None,
                "archive_pending": True,
            }
        )
    with store.engine.begin() as conn:
        conn.execute(item.insert(), expected)
    columns = [c for c in item.c if c.name not in ("id", "uid", "feed_id", "link")]
    raw = [c.label(c.name) for c in columns]
    with store.engine.begin() as conn:
        rows = conn.execute(select(item.c.feed_id, *raw).order_by(item.c.id)).all()
        links = conn.execute(select(item.c.link).order_by(item.c.id)).scalars().all()
        uids = conn.execute(select(item.c.uid).order_by(item.c.id)).scalars().all()
        # JSON null (not SQL NULL) where untagged, as SQLAlchemy's JSON type binds None
        nulls = conn.execute(
            select(item.c.feed_id).where(item.c.themes.is_(None)).order_by(item.c.id)
        ).all()
    stored = [tuple(r[1:]) for r in rows if r[0] == first]
    reference = [tuple(r[1:]) for r in rows if r[0] == second]
    assert stored == reference
    assert links == [items[0].link, "", items[0].link + "#ref", ""]
    assert uids[:2] == [storage.item_uid("https://a.example/feed", it) for it in items]
    assert nulls == []


@pytest.mark.postgres
def test_a_concurrent_writer_storing_the_same_items_first_is_not_an_error(
    postgres_url: str,
) -> None:
    """PostgreSQL: the COPY of new items meets rows another transaction stored after this
    one looked (it waits for it, then fails on the unique index): the savepoint is rolled
    back and the rows go in again by INSERT ... ON CONFLICT DO NOTHING, which skips them."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        a, b = add(store, "https://a.example/feed"), add(store, "https://b.example/feed")
        items = [make_item(n) for n in range(5)]
        result: list[object] = []
        with store.engine.begin() as conn:
            batch = _Batch(a, "https://a.example/feed", items[:3], NOW, None)
            store._store_batches(conn, [batch])  # not committed yet
            other = threading.Thread(
                target=lambda: result.append(
                    store.store_items(b, "https://b.example/feed", items, NOW)
                )
            )
            other.start()
            other.join(timeout=1)
            assert other.is_alive()  # its COPY waits for this transaction
        other.join(timeout=30)
        (counts,) = result
        assert isinstance(counts, StoreCounts)
        assert (counts.new, counts.duplicates) == (2, 3)
        assert store.count_items() == 5
    finally:
        store.close()


def test_items_of_a_removed_feed_are_refused_and_nothing_is_stored(store: Store) -> None:
    """The feed reference is checked on both engines: SQLite's foreign key per row,
    PostgreSQL's store once per batch (migration 0009), naming the feed."""
    kept, gone = add(store, "https://a.example/feed"), add(store, "https://b.example/feed")
    assert store.remove_feed("https://b.example/feed")
    batches = [
        (kept, "https://a.example/feed", [make_item(1)]),
        (gone, "https://b.example/feed", [make_item(2)]),
    ]
    with pytest.raises(StorageError) as error:
        store.store_batches(batches, NOW)
    if not store.is_sqlite:
        assert f"feed {gone}: no such feed" in str(error.value)
    assert store.count_items() == 0


def test_an_item_is_found_by_its_whole_id_or_a_unique_prefix(store: Store) -> None:
    from pipeline.adapters.storage import UID_LENGTH, item_uid

    feed_id = add(store)
    items = [make_item(n) for n in range(3)]
    store.store_items(feed_id, "https://a.example/feed", items, NOW)
    for it in items:
        uid = item_uid("https://a.example/feed", it)
        assert len(uid) == UID_LENGTH
        found = store.get_item(uid)
        assert found is not None and found.title == it.title
        assert store.get_item(uid[:12]) == found
    assert store.get_item("0" * UID_LENGTH) is None
    assert store.get_item("") is None  # every item shares the empty prefix


@pytest.mark.postgres
def test_a_feed_removed_while_its_items_are_stored_takes_them_along(postgres_url: str) -> None:
    """PostgreSQL (0009): the batch locks its feeds as the foreign key did, so a removal
    waits for the batch to commit and its delete trigger then removes those items too."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        feed_id = add(store)
        done: list[bool] = []
        with store.engine.begin() as conn:
            store._store_batches(conn, [_Batch(feed_id, "u", [make_item(1)], NOW, None)])
            remover = threading.Thread(
                target=lambda: done.append(store.remove_feed("https://a.example/feed"))
            )
            remover.start()
            remover.join(timeout=1)
            assert remover.is_alive()  # waits for the batch's lock on the feed
        remover.join(timeout=30)
        assert done == [True]
        assert store.count_items() == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_migration_0009_round_trip_restores_the_foreign_key_and_unique_uid(
    postgres_url: str,
) -> None:
    from tests.web.test_archive_store import _migrate

    store = Store(postgres_url)
    store.upgrade()
    try:
        feed_id = add(store)
        store.store_items(feed_id, "u", [make_item(1), make_item(2)], NOW)

        def shape() -> tuple[list[str], list[str], set[str], str]:
            schema = inspect(store.engine)
            with store.engine.connect() as conn:
                search = conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_item_search'"
                ).scalar_one()
            return (
                [fk["name"] for fk in schema.get_foreign_keys("item")],
                [u["name"] for u in schema.get_unique_constraints("item")],
                {i["name"] for i in schema.get_indexes("item")},
                search,
            )

        foreign_keys, uniques, indexes, search = shape()
        assert foreign_keys == [] and "uq_item_uid" not in uniques and "ix_item_uid" in indexes
        assert search.endswith("WHERE (search_vector IS NOT NULL)")
        _migrate(store, "0008")
        foreign_keys, uniques, indexes, search = shape()
        assert foreign_keys == ["fk_item_feed_id_feed"] and "uq_item_uid" in uniques
        assert "ix_item_uid" not in indexes and "WHERE" not in search
        _migrate(store, "head")
        store.store_items(feed_id, "u", [make_item(3)], NOW)
        assert store.count_items() == 3
        assert store.remove_feed("https://a.example/feed")
        assert store.count_items() == 0
    finally:
        store.close()


def test_sqlite_checkpoints_run_on_the_checkpointer_thread(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection writing item batches leaves WAL checkpoints to the store's thread
    (its own automatic checkpoint is a backstop, at four times the usual size); closing
    the store stops the thread."""
    from pipeline.adapters import storage

    monkeypatch.setattr(storage, "SQLITE_CHECKPOINT_ITEMS", 4)
    store = Store(sqlite_url)
    store.upgrade()
    feed_id = add(store)
    store.store_items(feed_id, "u", [make_item(n) for n in range(3)], NOW)
    checkpointer = store._checkpointer
    assert checkpointer is not None and checkpointer.checkpoints == 0  # 3 of 4 items
    store.store_items(feed_id, "u", [make_item(n) for n in range(3, 6)], NOW)
    assert checkpointer.wait_idle(timeout=30)
    assert checkpointer.checkpoints == 1
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages in (storage.SQLITE_WRITER_AUTOCHECKPOINT, storage.SQLITE_WAL_AUTOCHECKPOINT)
    thread = checkpointer._thread
    store.close()
    assert not thread.is_alive()
    reopened = Store(sqlite_url)
    assert reopened.count_items() == 6
    reopened.close()


def test_a_failing_checkpointer_never_stops_the_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint that fails is logged; the writer's backstop checkpoint still works."""
    from pipeline.adapters.sqlite_checkpoint import WalCheckpointer

    missing = tmp_path / "no-such-folder" / "x.db"
    checkpointer = WalCheckpointer(str(missing), every_items=1)
    checkpointer.wrote(5)
    assert checkpointer.wait_idle(timeout=30)
    checkpointer.wrote(5)  # after it stopped: still cheap and harmless
    assert checkpointer.wait_idle(timeout=5)
    checkpointer.close()
    assert checkpointer.checkpoints == 0
    assert f"WAL checkpointer for {missing} stopped" in caplog.text


@pytest.mark.postgres
def test_only_the_ingest_transaction_skips_waiting_for_the_wal_flush(postgres_url: str) -> None:
    """PostgreSQL: a batch of items commits asynchronously (SET LOCAL); the connection's
    next transaction (say the delivery ledger's) waits for the flush again."""
    store = Store(postgres_url)
    store.upgrade()
    try:
        feed_id = add(store)
        with store.engine.begin() as conn:
            store._store_batches(conn, [_Batch(feed_id, "u", [make_item(1)], NOW, None)])
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        with store.engine.begin() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        store.close()


def test_time_stamps_bind_as_utc_on_both_engines_and_naive_ones_are_refused(
    store: Store,
) -> None:
    from datetime import timezone

    from pipeline.adapters.schema import UTCDateTime

    process = UTCDateTime().bind_processor(store.engine.dialect)
    assert process is not None
    instant = datetime(2026, 12, 1, 12, tzinfo=UTC)
    karachi = instant.astimezone(timezone(timedelta(hours=5)))
    # the same instant in another zone binds the same (converted values are remembered)
    assert process(instant) == process(karachi) == process(instant)
    assert process(None) is None
    for _ in range(2):  # a refusal is not remembered as a value
        with pytest.raises(ValueError, match="naive datetime"):
            process(datetime(2026, 12, 1, 12))
