"""Subscribers and watchlists in the store (both engines) and from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.cli import main
from pipeline.core.errors import QueryError
from pipeline.core.models import FeedSource, Item
from pipeline.core.subscribers import MAX_WATCHLISTS, SubscriberError, SubscriberStatus
from pipeline.subscriptions import add_watchlist, backtest_query, subscribe
from tests.support.app import FakeClock, make_app


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Iterator[App]:
    app = make_app(store_url, tmp_path, FakeClock())
    yield app
    app.close()


def test_subscriber_round_trips_with_normalised_email_and_ordered_themes(app: App) -> None:
    sub, created = subscribe(
        app,
        "  Reader@Example.COM ",
        themes=["india", "sanctions"],
        frequency="weekly",
        hour=18,
        timezone="America/New_York",
    )
    assert created
    assert sub.email == "Reader@example.com"
    assert sub.themes == ("sanctions", "india")  # editorial order, not typing order
    again, created_again = subscribe(app, "reader@EXAMPLE.com".replace("reader", "Reader"))
    assert not created_again and again.id == sub.id
    assert len(again.themes) == 14  # updated to the default: every theme


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"themes": ["cricket"]}, "themes"),
        ({"frequency": "hourly"}, "frequency"),
        ({"hour": 24}, "hour"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_bad_preferences_are_refused_naming_the_field(
    app: App, kwargs: dict[str, object], field: str
) -> None:
    kwargs = dict(kwargs)  # parameters are shared between the two engines
    email = str(kwargs.pop("email", "a@example.com"))
    with pytest.raises(SubscriberError) as caught:
        subscribe(app, email, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_watchlists_are_saved_in_canonical_form_once(app: App) -> None:
    subscribe(app, "a@example.com")
    first = add_watchlist(app, "a@example.com", 'F-16   OR "fighter jets"', instant=True)
    second = add_watchlist(app, "a@example.com", 'F-16 OR "fighter jets"')
    assert first.id == second.id
    sub = SubscriberStore(app.store).get("a@example.com")
    assert sub is not None
    assert [w.query for w in sub.watchlists] == [first.query]
    assert sub.watchlists[0].instant is False  # the second save updated the flag


def test_bad_query_error_carries_the_column(app: App) -> None:
    subscribe(app, "a@example.com")
    with pytest.raises(QueryError) as caught:
        add_watchlist(app, "a@example.com", 'IMF "bailout')
    assert caught.value.column == 5


def test_watchlist_limit_per_subscriber(app: App) -> None:
    subscribe(app, "a@example.com")
    for n in range(MAX_WATCHLISTS):
        add_watchlist(app, "a@example.com", f"term{n}")
    with pytest.raises(SubscriberError, match="limit"):
        add_watchlist(app, "a@example.com", "one-too-many")


def test_removing_a_subscriber_removes_their_watchlists(app: App) -> None:
    subscribe(app, "a@example.com")
    add_watchlist(app, "a@example.com", "CPEC")
    store = SubscriberStore(app.store)
    assert store.remove("a@example.com")
    assert store.all() == []


def test_status_changes_are_stored(app: App) -> None:
    subscribe(app, "a@example.com")
    store = SubscriberStore(app.store)
    assert store.set_status("a@example.com", SubscriberStatus.PAUSED, app.clock())
    sub = store.get("a@example.com")
    assert sub is not None and sub.status is SubscriberStatus.PAUSED


def test_active_readers_are_all_active_subscribers_without_creation_times(app: App) -> None:
    from dataclasses import replace

    for n, zone in enumerate(("Asia/Karachi", "America/New_York", "Europe/London")):
        subscribe(app, f"r{n}@example.com", themes=["india", "economy"][: n + 1], timezone=zone)
        add_watchlist(app, f"r{n}@example.com", f"Gwadar OR reader{n}")
    add_watchlist(app, "r1@example.com", "IMF", instant=True)
    store = SubscriberStore(app.store)
    store.set_status("r2@example.com", SubscriberStatus.PAUSED, app.clock())
    expected = [
        replace(
            s,
            created_at=None,
            watchlists=tuple(replace(w, created_at=None) for w in s.watchlists),
        )
        for s in store.all()
        if s.status is SubscriberStatus.ACTIVE
    ]
    assert [s.email for s in expected] == ["r0@example.com", "r1@example.com"]
    assert store.active() == expected
    # what the build's watchlist engine reads of them: the same watchlists, by id
    assert store.active_queries() == {w.id: w.query for s in expected for w in s.watchlists}


def test_readers_for_sending_hold_their_instant_watchlists_and_a_count_of_all(
    app: App,
) -> None:
    subscribe(app, "a@example.com")
    subscribe(app, "b@example.com")
    subscribe(app, "c@example.com")
    add_watchlist(app, "a@example.com", "Gwadar")
    add_watchlist(app, "a@example.com", "IMF", instant=True)
    add_watchlist(app, "a@example.com", "drone strike")
    add_watchlist(app, "b@example.com", "CPEC")
    store = SubscriberStore(app.store)
    full = {s.email: s for s in store.all()}
    ids = [full[e].id for e in ("a@example.com", "b@example.com", "c@example.com")]
    readers, counts = store.for_sending(ids)
    by_email = {s.email: s for s in readers.values()}
    assert [w.query for w in by_email["a@example.com"].watchlists] == ["IMF"]
    assert by_email["b@example.com"].watchlists == by_email["c@example.com"].watchlists == ()
    assert counts == {full["a@example.com"].id: 3, full["b@example.com"].id: 1}
    assert {s.email: s.status for s in readers.values()} == {e: s.status for e, s in full.items()}
    assert store.for_sending([]) == ({}, {})


def test_readers_for_sending_are_read_with_their_instant_watchlists_index(app: App) -> None:
    """Only the instant watchlists are read (a partial index, migration 0011), not every
    watchlist of every reader of the batch: the statement is checked against SQLite's plan."""
    from sqlalchemy import event

    if not app.store.is_sqlite:
        pytest.skip("the plan is SQLite's; PostgreSQL's planner picks by its statistics")
    subscribe(app, "a@example.com")
    add_watchlist(app, "a@example.com", "Gwadar")
    add_watchlist(app, "a@example.com", "IMF", instant=True)
    store = SubscriberStore(app.store)
    seen: list[tuple[str, tuple[object, ...]]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM watchlist" in statement and "instant IS 1" in statement:
            seen.append((statement, tuple(parameters)))

    event.listen(app.store.engine, "before_cursor_execute", record)
    try:
        readers, _ = store.for_sending([s.id for s in store.all()])
    finally:
        event.remove(app.store.engine, "before_cursor_execute", record)
    assert [w.query for r in readers.values() for w in r.watchlists] == ["IMF"]
    ((statement, parameters),) = seen
    with app.store.engine.connect() as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )
    assert "ix_watchlist_instant" in plan, plan


def test_backtest_counts_matches_per_week_with_examples(app: App) -> None:
    from dataclasses import replace
    from datetime import timedelta

    feed_id, _ = app.store.add_feed(FeedSource(url="https://a.example/f"), "cli", app.clock())
    base = Item(
        guid_key="",
        link="",
        title="",
        summary_html="",
        summary_text="",
        published=app.clock(),
        language="en",
    )
    items = [
        replace(
            base,
            guid_key="1",
            title="IMF approves loan tranche",
            published=app.clock() - timedelta(days=1),
        ),
        replace(
            base,
            guid_key="2",
            title="IMF team meets Egypt officials",
            published=app.clock() - timedelta(days=9),
        ),
        replace(
            base,
            guid_key="3",
            title="Budget: IMF conditions bite",
            published=app.clock() - timedelta(days=10),
        ),
        replace(
            base, guid_key="4", title="IMF old story", published=app.clock() - timedelta(days=40)
        ),
    ]
    app.store.store_items(feed_id, "https://a.example/f", items, app.clock())
    result = backtest_query(app, "IMF -Egypt", days=30)
    assert (result.items_scanned, result.matches) == (3, 2)
    assert [count for _, count in result.per_week][-2:] == [1, 1]
    assert result.examples[0].title == "IMF approves loan tranche"


def test_cli_subscribers_and_watchlists_with_json_and_a_pointed_error(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "QASID_FEEDS_FILE": str(tmp_path / "none.toml"),
    }
    (tmp_path / "none.toml").write_text("")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env)
        return result.output

    run("db", "upgrade")
    assert "added" in run(
        "subscribers",
        "add",
        "reader@example.com",
        "--themes",
        "economy,china",
        "--hour",
        "8",
        "--timezone",
        "Asia/Karachi",
    )
    assert "watchlist 1" in run(
        "watchlist", "add", "reader@example.com", "CPEC OR Gwadar", "--instant"
    )
    [sub] = json.loads(run("subscribers", "list", "--json"))
    assert sub == {
        "email": "reader@example.com",
        "status": "active",
        "themes": ["china", "economy"],
        "frequency": "daily",
        "hour": 8,
        "timezone": "Asia/Karachi",
        "watchlists": [{"id": 1, "query": "CPEC OR Gwadar", "instant": True}],
    }
    error = run("watchlist", "add", "reader@example.com", 'IMF "bailout')
    assert "unclosed quote at column 5" in error
    assert error.rstrip().endswith("^")
    assert "removed watchlist 1" in run("watchlist", "remove", "1")
    assert "0 of 0 items" in run("watchlist", "test", "IMF")
