"""The poller against a hostile local origin: every feed gets a recorded outcome,
good entries are stored once and sanitized, and the next poll is conditional."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import jobs
from pipeline.adapters.parse import ParsePool, PartialParse
from pipeline.bootstrap import App
from pipeline.core import normalize
from pipeline.core.models import FeedOutcome, Item, ParsedEntry
from tests.support.app import FakeClock, add_feeds, make_app
from tests.support.feedserver import FeedServer


def rss(*entries: str, title: str = "Test feed") -> bytes:
    body = "".join(entries)
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://news.example/</link>{body}</channel></rss>"
    ).encode()


def entry(n: int, *, guid: str | None = None, link: bool = True, date: bool = True) -> str:
    parts = [f"<title>Pakistan story {n}</title>"]
    if link:
        parts.append(f"<link>https://news.example/story/{n}?utm_source=rss</link>")
    parts.append(f"<guid>{guid or f'story-{n}'}</guid>")
    if date:
        parts.append(f"<pubDate>Sat, 28 Nov 2026 {n % 24:02d}:00:00 GMT</pubDate>")
    parts.append(f"<description>Summary of story {n}</description>")
    return "<item>" + "".join(parts) + "</item>"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    app = make_app(store_url, tmp_path, clock)
    yield app
    app.close()


def outcomes(app: App) -> dict[str, str]:
    return {f.url.rsplit("/", 1)[-1]: f.status for f in app.store.list_feeds()}


def test_hostile_origin_gives_every_feed_a_recorded_outcome(
    app: App, feed_server: FeedServer
) -> None:
    s = feed_server
    s.route("/ok.xml", body=rss(entry(1), entry(2)), etag='"v1"')
    s.route("/gzip.xml", body=gzip.compress(rss(entry(3))), headers={"Content-Encoding": "gzip"})
    s.route("/moved.xml", body=rss(entry(4)))
    s.redirect("/hop2", s.url("/moved.xml"), status=302)
    s.redirect("/redirected", s.url("/hop2"), status=301)
    s.route("/missing", status=404, body=b"not here")
    s.route("/error", status=500, body=b"oops")
    s.route("/busy", status=429, headers={"Retry-After": "120"})
    s.route(
        "/page.html", body=b"<!doctype html><html><body>Hi</body></html>", content_type="text/html"
    )
    s.route("/huge.xml", body=lambda: iter([b"<rss>" + b" " * 65536] * 40))
    s.route("/never-ends", body=rss(entry(5)), chunk_size=1, delay=0.5)
    s.route("/dupes.xml", body=rss(entry(6, guid="same"), entry(7, guid="same"), entry(8)))
    s.route("/bare.xml", body=rss(entry(9, link=False, date=False)))
    s.route(
        "/latin1.xml",
        body='<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        "<item><title>Caf\xe9 in Lahore</title><guid>l1</guid></item></channel></rss>".encode(
            "latin-1"
        ),
    )
    names = [
        "ok.xml", "gzip.xml", "redirected", "missing", "error", "busy", "page.html",
        "huge.xml", "never-ends", "dupes.xml", "bare.xml", "latin1.xml",
    ]  # fmt: skip
    add_feeds(app, *(s.url(f"/{name}") for name in names))

    summary = jobs.poll_feeds(app, all_feeds=True)

    assert len(summary.reports) == len(names)
    got = outcomes(app)
    assert got["ok.xml"] == FeedOutcome.OK
    assert got["gzip.xml"] == FeedOutcome.OK
    assert got["redirected"] == FeedOutcome.OK  # 301 then 302: the stored URL stays
    assert got["missing"] == FeedOutcome.HTTP_ERROR
    assert got["error"] == FeedOutcome.HTTP_ERROR
    assert got["busy"] == FeedOutcome.HTTP_ERROR
    assert got["page.html"] == FeedOutcome.NOT_A_FEED
    assert got["huge.xml"] == FeedOutcome.TOO_LARGE
    assert got["never-ends"] == FeedOutcome.TIMEOUT
    assert got["dupes.xml"] == FeedOutcome.OK
    assert got["bare.xml"] == FeedOutcome.OK
    assert got["latin1.xml"] in (FeedOutcome.OK, FeedOutcome.MALFORMED)
    failed = {f.url.rsplit("/", 1)[-1]: f for f in app.store.list_feeds() if f.failures}
    assert set(failed) == {"missing", "error", "busy", "page.html", "huge.xml", "never-ends"}
    assert all(f.last_error for f in failed.values())
    busy = failed["busy"]
    assert busy.next_poll_at is not None
    assert (busy.next_poll_at - app.clock()).total_seconds() >= 120
    titles = sorted(i.title for i in app.store.list_items(100))
    assert titles.count("Pakistan story 6") == 1  # duplicate GUIDs: the first one wins
    assert "Pakistan story 7" not in titles
    assert "Pakistan story 9" in titles  # no link, no date: kept, dated at fetch time
    assert all("utm_source" not in i.link for i in app.store.list_items(100))


def test_redirect_chain_with_a_302_hop_keeps_the_original_url(
    app: App, feed_server: FeedServer
) -> None:
    s = feed_server
    s.route("/target.xml", body=rss(entry(1)))
    s.redirect("/temp", s.url("/target.xml"), status=302)
    s.redirect("/perm", s.url("/temp"), status=301)
    s.redirect("/perm-only", s.url("/target.xml"), status=301)
    add_feeds(app, s.url("/perm"), s.url("/perm-only"))
    jobs.poll_feeds(app, all_feeds=True)
    urls = {f.url for f in app.store.list_feeds()}
    assert s.url("/perm") in urls  # a 302 in the chain: not a permanent move
    assert s.url("/target.xml") in urls  # 301 all the way: the stored URL is updated


def test_second_poll_is_conditional_and_stores_nothing_new(
    app: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    feed_server.route(
        "/ok.xml",
        body=rss(entry(1), entry(2)),
        etag='"v1"',
        last_modified="Sat, 28 Nov 2026 10:00:00 GMT",
    )
    add_feeds(app, feed_server.url("/ok.xml"))
    first = jobs.poll_feeds(app, all_feeds=True)
    assert first.new == 2
    clock.advance(hours=1)
    second = jobs.poll_feeds(app)  # due again after the 30-minute interval
    assert [r.outcome for r in second.reports] == [FeedOutcome.NOT_MODIFIED]
    request = feed_server.requests_for("/ok.xml")[-1]
    assert request.headers.get("if-none-match") == '"v1"'
    assert request.headers.get("if-modified-since") == "Sat, 28 Nov 2026 10:00:00 GMT"
    assert app.store.count_items() == 2


def test_identical_body_without_validators_is_not_parsed_again(
    app: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    feed_server.route("/plain.xml", body=rss(entry(1)))
    add_feeds(app, feed_server.url("/plain.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    clock.advance(hours=1)
    second = jobs.poll_feeds(app)
    assert second.reports[0].outcome is FeedOutcome.NOT_MODIFIED
    assert second.reports[0].message == "body unchanged"


def test_entry_changed_at_the_source_is_updated_in_place(
    app: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    feed_server.route("/f.xml", body=rss(entry(1)))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    changed = entry(1).replace("Summary of story 1", "Corrected summary")
    feed_server.route("/f.xml", body=rss(changed))
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app)
    assert (summary.new, summary.updated) == (0, 1)
    [stored] = app.store.list_items()
    assert "Corrected summary" in stored.summary_text


def test_a_warm_poll_normalises_only_the_entries_that_changed(
    app: App,
    feed_server: FeedServer,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    feed_server.route("/f.xml", body=rss(*(entry(n) for n in range(1, 6))))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    normalised: list[str | None] = []
    real = normalize.item_from_entry

    def counting(parsed_entry: ParsedEntry, *args: object) -> Item:
        normalised.append(parsed_entry.title)
        return real(parsed_entry, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(normalize, "item_from_entry", counting)
    changed = entry(2).replace("Summary of story 2", "Corrected summary")
    feed_server.route("/f.xml", body=rss(entry(6), entry(1), changed, *map(entry, (3, 4, 5))))
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app)
    assert (summary.new, summary.updated) == (1, 1)
    assert sorted(normalised) == ["Pakistan story 2", "Pakistan story 6"]
    stored = {item.title: item for item in app.store.list_items()}
    assert len(stored) == 6 and "Corrected summary" in stored["Pakistan story 2"].summary_text

    # A new process knows nothing yet: it normalises every entry, and stores the same.
    fresh = make_app(app.settings.database.url, tmp_path / "fresh", clock)
    try:
        normalised.clear()
        feed_server.route("/f.xml", body=rss(entry(7), entry(6), entry(1), changed, entry(3)))
        clock.advance(hours=1)
        summary = jobs.poll_feeds(fresh, all_feeds=True)
        assert (summary.new, summary.updated) == (1, 0)
        assert len(normalised) == 5
    finally:
        fresh.close()


def test_same_story_in_two_feeds_is_stored_once(app: App, feed_server: FeedServer) -> None:
    feed_server.route("/a.xml", body=rss(entry(1, guid="a-1")))
    feed_server.route("/b.xml", body=rss(entry(1, guid="b-1")))
    add_feeds(app, feed_server.url("/a.xml"), feed_server.url("/b.xml"))
    summary = jobs.poll_feeds(app, all_feeds=True)
    assert summary.new == 1
    assert app.store.count_items() == 1


def test_hostile_markup_is_sanitized_before_it_is_stored(app: App, feed_server: FeedServer) -> None:
    hostile = (
        "<item><title>&lt;img src=x onerror=alert(1)&gt;Budget</title>"
        "<link>javascript:alert(1)</link><guid>x1</guid>"
        '<description>&lt;p onclick="evil()"&gt;Hi&lt;script&gt;alert(2)&lt;/script&gt;'
        '&lt;a href="javascript:alert(3)"&gt;link&lt;/a&gt;&lt;/p&gt;</description></item>'
    )
    feed_server.route("/x.xml", body=rss(hostile))
    add_feeds(app, feed_server.url("/x.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    [stored] = app.store.list_items()
    assert "<" not in stored.title
    assert stored.link == ""
    lowered = stored.summary.lower()
    assert "<script" not in lowered and "onclick" not in lowered and "javascript:" not in lowered


def test_repeated_410_disables_the_feed(
    app: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    feed_server.route("/gone.xml", status=410, body=b"gone")
    add_feeds(app, feed_server.url("/gone.xml"))
    for _ in range(3):
        jobs.poll_feeds(app, urls=[feed_server.url("/gone.xml")])
        clock.advance(days=2)
    [feed] = app.store.list_feeds()
    assert not feed.enabled
    assert feed.status == FeedOutcome.GONE
    assert jobs.poll_feeds(app).reports == []  # disabled feeds are not polled


def test_blocked_destination_is_recorded_and_other_feeds_still_poll(
    app: App, feed_server: FeedServer
) -> None:
    feed_server.route("/ok.xml", body=rss(entry(1)))
    feed_server.redirect("/sneaky", "http://127.0.0.1:9/secret", status=302)
    add_feeds(app, feed_server.url("/ok.xml"), feed_server.url("/sneaky"))
    jobs.poll_feeds(app, all_feeds=True)
    got = outcomes(app)
    assert got["ok.xml"] == FeedOutcome.OK
    assert got["sneaky"] == FeedOutcome.BLOCKED


def test_items_are_tagged_as_they_are_stored(app: App, feed_server: FeedServer) -> None:
    story = (
        "<item><title>US sanctions Pakistani firms over ballistic missile programme</title>"
        "<link>https://news.example/sanctions</link><guid>s1</guid>"
        "<description>The State Department named suppliers to Pakistan's National "
        "Development Complex.</description></item>"
    )
    sport = (
        "<item><title>Babar Azam hits a century as Pakistan beat New Zealand</title>"
        "<link>https://news.example/cricket</link><guid>c1</guid></item>"
    )
    feed_server.route("/t.xml", body=rss(story, sport))
    add_feeds(app, feed_server.url("/t.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    by_title = {i.title: i for i in app.store.list_items()}
    tagged = by_title["US sanctions Pakistani firms over ballistic missile programme"]
    assert tagged.relevant and tagged.us_link
    assert "sanctions" in tagged.themes and tagged.evidence["sanctions"]
    cricket = by_title["Babar Azam hits a century as Pakistan beat New Zealand"]
    assert cricket.relevant is False and cricket.themes == []


def test_retag_applies_the_current_rules_to_stored_items(app: App, feed_server: FeedServer) -> None:
    feed_server.route("/t.xml", body=rss(entry(1)))
    add_feeds(app, feed_server.url("/t.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    app.store.set_tags([(i.row_id, _Untagged()) for i in app.store.list_items()])
    assert app.store.list_items()[0].themes == ["stale"]
    assert jobs.retag_items(app) == 1
    assert app.store.list_items()[0].themes != ["stale"]


class _Untagged:
    relevant = True
    us_link = False
    themes = ["stale"]  # noqa: RUF012 - a stand-in for a TagResult
    scores: dict[str, float] = {}  # noqa: RUF012
    evidence: dict[str, list[str]] = {}  # noqa: RUF012


def test_an_aggregators_item_keeps_the_outlet_it_credits(app: App, feed_server: FeedServer) -> None:
    credited = (
        "<item><title>IMF staff reach agreement with Pakistan</title>"
        "<link>https://www.dawn.example/news/1</link><guid>n1</guid>"
        '<source url="https://www.dawn.example/">Dawn</source></item>'
    )
    feed_server.route("/search.xml", body=rss(credited, entry(2), title="News search"))
    add_feeds(app, feed_server.url("/search.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    sources = {i.title: i.source for i in app.store.list_items()}
    assert sources["IMF staff reach agreement with Pakistan"] == "Dawn"
    assert sources["Pakistan story 2"] == "News search"  # no <source>: the feed's own title


# --- parsing only the entries that changed (parse_since) ---------------------------------------
@pytest.fixture
def partial_parses(monkeypatch: pytest.MonkeyPatch) -> list[PartialParse]:
    """Every PartialParse the poller got back from its pool, in order."""
    seen: list[PartialParse] = []
    real = ParsePool.parse_since

    async def recording(self: ParsePool, *args: Any) -> PartialParse:
        result = await real(self, *args)
        seen.append(result)
        return result

    monkeypatch.setattr(ParsePool, "parse_since", recording)
    return seen


def stored_items(app: App) -> dict[str, tuple[object, ...]]:
    return {
        it.title: (it.id, it.link, it.published, it.summary_text, it.summary, it.language)
        for it in app.store.list_items(limit=1000)
    }


def test_a_changed_feed_parses_only_its_changed_entries_and_updates_them_in_place(
    app: App, feed_server: FeedServer, clock: FakeClock, partial_parses: list[PartialParse]
) -> None:
    feed_server.route("/f.xml", body=rss(*(entry(n) for n in range(1, 6))))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    assert partial_parses[-1].skipped == 0 and len(partial_parses[-1].feed.entries) == 5

    changed = entry(2).replace("Summary of story 2", "Corrected summary")
    feed_server.route("/f.xml", body=rss(entry(6), entry(1), changed, *map(entry, (3, 4, 5))))
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app)
    assert (summary.new, summary.updated) == (1, 1)
    parsed = partial_parses[-1]
    assert parsed.skipped == 4
    assert [e.title for e in parsed.feed.entries] == ["Pakistan story 6", "Pakistan story 2"]
    stored = stored_items(app)
    assert len(stored) == 6 and "Corrected summary" in str(stored["Pakistan story 2"][3])

    # Nothing but the channel changed: no entry is parsed, the new title is stored.
    feed_server.route(
        "/f.xml",
        body=rss(entry(6), entry(1), changed, *map(entry, (3, 4, 5)), title="Renamed feed"),
    )
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app)
    assert (summary.new, summary.updated) == (0, 0)
    assert (partial_parses[-1].skipped, partial_parses[-1].feed.entries) == (6, ())
    assert partial_parses[-1].feed.title == "Renamed feed"


def test_a_new_entry_repeating_a_stored_guid_does_not_replace_the_first_one(
    app: App, feed_server: FeedServer, clock: FakeClock, partial_parses: list[PartialParse]
) -> None:
    feed_server.route("/f.xml", body=rss(entry(1), entry(2)))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    before = stored_items(app)
    # The feed repeats story-1's GUID on a new entry after it: the first one still wins.
    repeat = entry(3, guid="story-1")
    feed_server.route("/f.xml", body=rss(entry(1), repeat, entry(2)))
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app)
    assert (summary.new, summary.updated) == (0, 0)
    assert partial_parses[-1].skipped == 0  # parsed whole
    assert stored_items(app) == before


def test_entry_memory_is_forgotten_when_the_write_fails(
    app: App,
    feed_server: FeedServer,
    clock: FakeClock,
    partial_parses: list[PartialParse],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed_server.route("/f.xml", body=rss(entry(1), entry(2)))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    [feed] = app.store.list_feeds()
    assert app.entry_memory.recall_hashes(feed.id, feed.language) is not None

    feed_server.route("/f.xml", body=rss(entry(3), entry(1), entry(2)))
    clock.advance(hours=1)
    real = app.store.write_polls

    def failing(writes: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(app.store, "write_polls", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        jobs.poll_feeds(app, all_feeds=True)
    assert partial_parses[-1].skipped == 2  # entry 3 was parsed, but never stored
    assert app.entry_memory.recall_hashes(feed.id, feed.language) is None
    assert app.entry_memory.recall(feed.id) == {}

    monkeypatch.setattr(app.store, "write_polls", real)
    clock.advance(hours=2)
    summary = jobs.poll_feeds(app, all_feeds=True)
    assert partial_parses[-1].skipped == 0  # everything parsed again
    assert summary.new == 1
    assert set(stored_items(app)) == {f"Pakistan story {n}" for n in (1, 2, 3)}


def test_polls_that_parse_only_changed_entries_store_what_full_parses_store(
    app: App,
    feed_server: FeedServer,
    clock: FakeClock,
    tmp_path: Path,
    partial_parses: list[PartialParse],
) -> None:
    """End to end over HTTP: one app remembers entries between polls, the other starts
    each poll knowing nothing (a fresh process: every document parsed whole). Their
    stores end up the same, poll after poll, through new, dropped, edited, reordered and
    repeated entries and a renamed channel."""
    versions = [
        [entry(n) for n in range(1, 9)],
        [entry(9), *(entry(n) for n in range(1, 8))],
        [entry(9), entry(1), entry(2).replace("story 2<", "story 2 (updated)<"), entry(4)],
        [entry(10, guid="story-4"), entry(9), entry(1), entry(4), entry(11, date=False)],
        [entry(12), entry(11, date=False), entry(4), entry(9), entry(1)],
    ]
    feed_server.route("/f.xml", body=rss(*versions[0]))
    add_feeds(app, feed_server.url("/f.xml"))
    other_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = make_app(other_url, tmp_path / "reference", clock)
    try:
        add_feeds(reference, feed_server.url("/f.xml"))
        for number, version in enumerate(versions):
            title = "Renamed" if number == 4 else "Test feed"
            feed_server.route("/f.xml", body=rss(*version, title=title))
            clock.advance(hours=1)
            jobs.poll_feeds(app, all_feeds=True)
            reference.__dict__.pop("entry_memory", None)  # a fresh process
            jobs.poll_feeds(reference, all_feeds=True)
            assert stored_items(app) == stored_items(reference), number
            [ours], [theirs] = app.store.list_feeds(), reference.store.list_feeds()
            assert ours.title == theirs.title
    finally:
        reference.close()
    ours_skipped = [parse.skipped for parse in partial_parses[::2]]
    assert ours_skipped[0] == 0 and sum(ours_skipped) > 10, ours_skipped
    assert not any(parse.skipped for parse in partial_parses[1::2])


def test_entry_hashes_without_fingerprints_still_store_every_new_entry(
    app: App, feed_server: FeedServer, clock: FakeClock, partial_parses: list[PartialParse]
) -> None:
    feed_server.route("/f.xml", body=rss(entry(1), entry(2)))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app, all_feeds=True)
    [feed] = app.store.list_feeds()
    memory = app.entry_memory
    hashes = memory.recall_hashes(feed.id, feed.language)
    memory.remember(feed.id, {}, hashes, feed.language)  # the fingerprints are gone

    changed = entry(2).replace("Summary of story 2", "Corrected summary")
    feed_server.route("/f.xml", body=rss(entry(3), entry(1), changed))
    clock.advance(hours=1)
    summary = jobs.poll_feeds(app, all_feeds=True)
    assert partial_parses[-1].skipped == 1
    assert (summary.new, summary.updated) == (1, 1)
    stored = stored_items(app)
    assert set(stored) == {f"Pakistan story {n}" for n in (1, 2, 3)}
    assert "Corrected summary" in str(stored["Pakistan story 2"][3])
