"""The public archive through Flask's test client: the list, theme filter and search, edition
pages, the personal "view in browser" page, the Atom feed, theme pages; escaping of hostile
feed text (X-01, X-02) and the security headers (A-05)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from pipeline.adapters.delivery_store import DeliveryStore, JSONText
from pipeline.adapters.storage import StoredItem
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.digest import DigestJSON, DigestRequest, build_digest, digest_as_dict
from pipeline.core.models import FeedSource, Item
from pipeline.core.subscribers import Frequency, SubscriberStatus
from pipeline.delivery import to_candidate
from pipeline.editorial import load_theme_infos
from pipeline.jobs import index_item_archive
from pipeline.web import svg

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # the FakeClock's time

# X-01..X-03: what feeds may carry in text fields and links.
HOSTILE_TITLES = (
    "<img src=x onerror=alert(1)>",
    "<script>alert('title')</script>",
    '"><svg onload=alert(2)>',
    "</title><script>alert(3)</script>",
    "<b onmouseover=alert(4)>hover</b>",
    "<iframe src=javascript:alert(5)></iframe>",
)
HOSTILE_LINKS = (
    'https://news.example/x"onmouseover="alert(11)',  # allowed scheme, hostile quotes
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "&#106;avascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/relative",
)
HOSTILE_TEXT = (
    "<script>alert('summary')</script><style>body{display:none}</style>"
    "<math><mi xlink:href=javascript:alert(6)>x</mi></math><form action=javascript:alert(7)>"
    "<meta http-equiv=refresh content='0;url=javascript:alert(8)'><base href=javascript:/>"
    "<img src=data:image/svg+xml;base64,PHN2Zz48L3N2Zz4= onerror=alert(9)>"
)
HOSTILE_SOURCE = "<script>alert('feed')</script> Outlet"
ECONOMY = (
    "Rupee falls against the dollar",
    "Textile exports rise in October",
    "Budget deficit widens sharply",
    "Remittances from the Gulf hit a record",
    "Gas tariffs raised for industry",
    "Karachi stock exchange rallies",
)


@dataclass
class Tags:
    themes: list[str] = field(default_factory=lambda: ["economy"])
    relevant: bool = True
    us_link: bool = True
    scores: dict[str, float] = field(default_factory=lambda: {"economy": 3.0})
    evidence: dict[str, list[str]] = field(default_factory=lambda: {"economy": ["IMF"]})


def make_item(
    n: int, title: str, *, text: str = "", link: str | None = None, hours: float = 1
) -> Item:
    return Item(
        guid_key=f"guid-{n}",
        link=f"https://news.example/story/{n}" if link is None else link,
        title=title,
        summary_html=f"<p>{text}</p>",
        summary_text=text or f"About {title}.",
        published=NOW - timedelta(hours=hours),
        language="en",
        content_hash=f"{n}-{title}",
    )


def store_items(
    core: App,
    items: Sequence[Item],
    tags: Tags | None = None,
    feed_title: str = "Outlet A",
    feed_url: str = "https://a.example/feed",
    index: bool = True,
) -> list[StoredItem]:
    feed_id, _ = core.store.add_feed(FeedSource(url=feed_url, title=feed_title), "cli", NOW)
    by_key = {it.guid_key: tags or Tags() for it in items}
    core.store.store_items(feed_id, feed_url, items, NOW, by_key)
    if index:
        index_item_archive(core)  # as the poll run does after its writes
    keys = {it.title for it in items}
    return [i for i in core.store.list_items(limit=10_000) if i.title in keys]


def publish(
    core: App,
    items: Sequence[StoredItem],
    end: datetime = NOW,
    *,
    kind: str = "public",
    subscriber_id: int | None = None,
    compact: bool = False,
) -> int:
    """An edition built by the real digest builder from ``items`` (stored as the digest
    build stores personal editions when ``compact``)."""
    themes = load_theme_infos(Path(core.settings.root))
    request = DigestRequest(
        themes=[t.id for t in themes],
        period_start=end - timedelta(days=1),
        period_end=end,
        title="qasid daily edition",
        label_date=end.date(),
        previous_counts={"economy": 1},
    )
    digest = build_digest([to_candidate(i) for i in items], request, themes)
    encoder = DigestJSON()
    spec = {
        "kind": kind,
        "subscriber_id": subscriber_id,
        "frequency": "daily",
        "period_start": request.period_start,
        "period_end": end,
        "local_date": end.date().isoformat(),
        "subject": digest.subject,
        "item_count": len(digest.item_ids),
        "content": JSONText(encoder.compact(digest)) if compact else digest_as_dict(digest),
        "now": end,
        "queue_delivery": False,
    }
    ledger = DeliveryStore(core.store)
    if compact:
        ((edition_id, created),) = ledger.create_editions([spec], encoder.new_parts())
    else:
        edition_id, created = ledger.create_edition(**spec)  # type: ignore[arg-type]
    assert created
    return edition_id


def hostile_edition(core: App) -> int:
    """A public edition whose every feed-supplied string is a payload (X-01..X-03)."""
    openings = (
        "Finance ministers met lenders in Washington",
        "Floodwater reached three districts of Sindh overnight",
        "Parliament passed the amended election law",
        "Exporters asked for cheaper gas tariffs",
        "Border crossings reopened for cargo trucks",
        "A new desalination plant began work in Gwadar",
    )
    items = [
        make_item(
            n,
            f"{title} story {n}",
            # Every summary is hostile; distinct openings keep them distinct stories.
            text=f"{openings[n]}: {HOSTILE_TEXT}" if n == 0 else f"{title} {openings[n]}",
            link=HOSTILE_LINKS[n % len(HOSTILE_LINKS)],
            hours=n + 1,
        )
        for n, title in enumerate(HOSTILE_TITLES)
    ]
    tags = Tags(
        themes=["economy", "us_diplomacy"],
        evidence={"economy": ["<script>alert('why')</script>"]},
    )
    stored = store_items(core, items, tags, feed_title=HOSTILE_SOURCE)
    stored += store_items(
        core,
        [make_item(100, f"{HOSTILE_TITLES[0]} story 0", link="javascript:alert(10)")],
        tags,
        feed_title="<img src=x onerror=alert('also')>",
        feed_url="https://b.example/feed",
    )
    return publish(core, stored)


def assert_no_live_markup(html: str) -> None:
    """Nothing from a feed became markup: no script, handler attribute or script URL."""
    assert "<script" not in html.lower()
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I), "an event handler attribute"
    for href in re.findall(r'(?:href|src|action)="([^"]*)"', html):
        assert href.startswith(("/", "https://", "http://", "#")), href
        assert not href.startswith("//"), href
    assert "<iframe" not in html and "<svg onload" not in html and "<img" not in html


def reader(core: App, email: str = "reader@example.org") -> int:
    subscriber, _ = SubscriberStore(core.store).add(
        email,
        themes=["economy"],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="America/New_York",
        status=SubscriberStatus.ACTIVE,
        now=NOW,
    )
    return subscriber.id


# -- the list ---------------------------------------------------------------------------------


def test_empty_archive_says_so(client: FlaskClient) -> None:
    response = client.get("/archive")
    assert response.status_code == 200
    assert b"No editions yet" in response.data
    assert b'href="/archive.atom"' in response.data


def test_nav_links_to_the_archive_and_themes(client: FlaskClient) -> None:
    html = client.get("/archive").get_data(as_text=True)
    assert '<a href="/archive">Archive</a>' in html and '<a href="/themes">Themes</a>' in html


def test_archive_lists_editions_newest_first_and_pages(
    client: FlaskClient, web_core: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.web import archive

    monkeypatch.setattr(archive, "PER_PAGE", 2)
    items = store_items(
        web_core, [make_item(n, f"IMF story {n}", hours=24 * n + 1) for n in range(5)]
    )
    ids = [publish(web_core, [items[n]], NOW - timedelta(days=n)) for n in range(5)]
    first = client.get("/archive").get_data(as_text=True)
    assert first.index(f"/editions/{ids[0]}") < first.index(f"/editions/{ids[1]}")
    assert f"/editions/{ids[2]}" not in first
    assert 'href="/archive?page=2" rel="next"' in first
    last = client.get("/archive?page=3").get_data(as_text=True)
    assert f"/editions/{ids[4]}" in last and 'rel="next"' not in last
    assert 'href="/archive?page=2" rel="prev"' in last
    beyond = client.get("/archive?page=9")
    assert beyond.status_code == 200 and b"No editions on this page" in beyond.data
    assert client.get("/archive?page=nonsense").status_code == 200
    assert client.get("/archive?page=-4").status_code == 200
    assert client.get(f"/archive?page={10**30}").status_code == 404  # not a database error


def test_archive_filters_by_theme(client: FlaskClient, web_core: App) -> None:
    economy = store_items(web_core, [make_item(1, "IMF tranche")])
    climate = store_items(
        web_core,
        [make_item(2, "Floods in Sindh", hours=30)],
        Tags(themes=["climate"], scores={"climate": 3.0}, evidence={}),
        feed_url="https://c.example/feed",
    )
    on_economy = publish(web_core, economy)
    on_climate = publish(web_core, climate, NOW - timedelta(days=1))
    html = client.get("/archive?theme=climate").get_data(as_text=True)
    assert f"/editions/{on_climate}" in html and f"/editions/{on_economy}" not in html
    assert '<option value="climate" selected>' in html
    empty = client.get("/archive?theme=diaspora")
    assert empty.status_code == 200 and b"No editions yet" in empty.data
    assert client.get("/archive?theme=no-such-theme").status_code == 404


def test_search_links_to_the_edition_or_the_source(client: FlaskClient, web_core: App) -> None:
    shown = store_items(web_core, [make_item(1, "Gwadar port expansion")])
    edition_id = publish(web_core, shown)
    store_items(
        web_core,
        [
            make_item(2, "Gwadar fishermen protest", hours=2),
            make_item(3, "Gwadar unsafe link", link="javascript:alert(1)", hours=3),
        ],
        feed_url="https://d.example/feed",
    )
    html = client.get("/archive?q=gwadar").get_data(as_text=True)
    assert f'href="/editions/{edition_id}#item-{shown[0].id}"' in html
    assert 'href="https://news.example/story/2"' in html
    assert "Gwadar unsafe link</h2>" in html  # no link at all rather than a script URL
    assert "javascript:" not in html
    assert html.index("Gwadar port expansion") < html.index("Gwadar fishermen protest")


def test_search_without_results_and_hostile_queries(client: FlaskClient) -> None:
    response = client.get("/archive?q=nothing+matches")
    assert response.status_code == 200 and b"No items match" in response.data
    payload = "<script>alert(1)</script>"
    hostile = client.get("/archive", query_string={"q": payload})
    assert hostile.status_code == 200
    assert b"<script>alert(1)" not in hostile.data and b"&lt;script&gt;" in hostile.data
    assert client.get("/archive?q=x&page=99").status_code == 404  # beyond the last page


# -- edition pages ----------------------------------------------------------------------------


def test_public_edition_page_shows_the_digest(client: FlaskClient, web_core: App) -> None:
    store_items(
        web_core,
        [
            make_item(1, "IMF approves loan tranche", text="The board met in Washington."),
            *(make_item(n, title, hours=n) for n, title in enumerate(ECONOMY, start=2)),
        ],
    )
    store_items(
        web_core,
        [
            make_item(
                30,
                "IMF approves loan tranche",
                text="The board met in Washington.",
                link="https://other.example/imf",
            )
        ],
        feed_title="Other Outlet",
        feed_url="https://o.example/feed",
    )
    edition_id = publish(web_core, web_core.store.list_items(limit=50))
    response = client.get(f"/editions/{edition_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    economy = next(t for t in load_theme_infos(Path(web_core.settings.root)) if t.id == "economy")
    assert "Top stories" in html
    assert str(escape(economy.name)) in html
    assert str(escape(economy.context[:60])) in html  # the context paragraph
    assert all(str(escape(title)) in html for title in ECONOMY)
    content = DeliveryStore(web_core.store).get_edition(edition_id).content  # type: ignore[union-attr]
    volume = content["sections"][0]["volume_line"]
    assert volume and str(escape(volume)) in html  # the volume line
    assert "The board met in Washington." in html  # the snippet
    assert "Why:" in html
    assert "also: Other Outlet" in html or "also: Outlet A" in html
    assert "Outlet A" in html and "PKT" in html  # source and time in Karachi
    assert f'href="/themes/{economy.id}"' in html


def test_an_item_its_feed_gave_no_date_shows_when_it_was_first_seen(
    client: FlaskClient, web_core: App
) -> None:
    undated = replace(make_item(1, "IMF approves loan tranche", hours=2), published_missing=True)
    dated = make_item(2, ECONOMY[0], hours=3)
    edition_id = publish(web_core, store_items(web_core, [undated, dated]), compact=True)
    html = client.get(f"/editions/{edition_id}").get_data(as_text=True)
    assert html.count("first seen ") == 1  # the undated item alone
    assert re.search(r"first seen \d+ \w+ \d{4}, \d\d:\d\d PKT", html)
    theme_page = client.get("/themes/economy").get_data(as_text=True)
    assert "IMF approves loan tranche" in theme_page and "first seen <time" in theme_page
    search = client.get("/archive?q=imf").get_data(as_text=True)
    assert "IMF approves loan tranche" in search and "first seen <time" in search


def test_unknown_and_personal_editions_are_not_public(client: FlaskClient, web_core: App) -> None:
    items = store_items(web_core, [make_item(1, "IMF story")])
    personal = publish(web_core, items, kind="personal", subscriber_id=reader(web_core))
    assert client.get(f"/editions/{personal}").status_code == 404
    assert client.get("/editions/999999").status_code == 404


def test_view_in_browser_needs_the_readers_token(client: FlaskClient, web_core: App) -> None:
    items = store_items(web_core, [make_item(1, "IMF story")])
    alice = reader(web_core, "alice@example.org")
    bob = reader(web_core, "bob@example.org")
    mine = publish(web_core, items, kind="personal", subscriber_id=alice)
    bobs = publish(web_core, items, NOW - timedelta(days=1), kind="personal", subscriber_id=bob)
    tokens = web_core.tokens
    good = tokens.make("view", alice, "alice@example.org", str(mine))
    response = client.get(f"/editions/{mine}/{good}")
    assert response.status_code == 200
    assert b"Your personal digest" in response.data and b"IMF story" in response.data
    assert b"EST" in response.data  # the reader's own zone (New York)
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response.headers["Cache-Control"]
    bad = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # tampered
        tokens.make("view", alice, "alice@example.org", str(bobs)),  # another edition
        tokens.make("view", bob, "bob@example.org", str(mine)),  # another reader's
        tokens.make("unsubscribe", alice, "alice@example.org", str(mine)),  # wrong purpose
        tokens.make("view", alice, "old-address@example.org", str(mine)),  # address changed
    ]
    for token in bad:
        assert client.get(f"/editions/{mine}/{token}").status_code == 404, token
    bob_token = tokens.make("view", bob, "bob@example.org", str(bobs))
    assert client.get(f"/editions/{mine}/{bob_token}").status_code == 404


def test_hostile_feed_text_is_escaped_everywhere(client: FlaskClient, web_core: App) -> None:
    """X-01/X-02: titles, sources, snippets, reasons and links from feeds never become markup
    or script URLs on the edition page, in search results, on theme pages or in the feed."""
    edition_id = hostile_edition(web_core)
    pages = {
        "edition": client.get(f"/editions/{edition_id}").get_data(as_text=True),
        "search": client.get("/archive?q=story").get_data(as_text=True),
        "theme": client.get("/themes/economy").get_data(as_text=True),
        "list": client.get("/archive").get_data(as_text=True),
    }
    for name, html in pages.items():
        assert_no_live_markup(html), name
    edition = pages["edition"]
    assert "&lt;img src=x onerror=alert(1)&gt; story 0" in edition
    assert "&lt;script&gt;alert(&#39;feed&#39;)&lt;/script&gt; Outlet" in edition
    assert "&lt;script&gt;alert(&#39;summary&#39;)" in edition
    assert "Why: " in edition and "&lt;script&gt;alert(&#39;why&#39;)" in edition
    assert "also: &lt;img src=x onerror=alert(&#39;also&#39;)&gt;" in edition
    for link in HOSTILE_LINKS[1:]:
        assert f'href="{link}' not in edition
    assert 'href="https://news.example/x&#34;onmouseover=&#34;alert(11)"' in edition
    feed = client.get("/archive.atom").get_data(as_text=True)
    parsed = feedparser.parse(feed.encode())
    assert parsed.bozo == 0
    assert "<script" not in feed and "javascript:" not in feed.replace("javascript:alert", "")


# -- the Atom feed ----------------------------------------------------------------------------


def test_atom_feed_is_valid_and_lists_editions(client: FlaskClient, web_core: App) -> None:
    items = store_items(web_core, [make_item(1, "IMF & the <budget>", hours=25)])
    older = publish(web_core, items, NOW - timedelta(days=1))
    newer = publish(
        web_core, store_items(web_core, [make_item(2, "Floods")], feed_url="https://f.example/x")
    )
    response = client.get("/archive.atom")
    assert response.status_code == 200
    assert response.mimetype == "application/atom+xml"
    parsed = feedparser.parse(response.data)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    base = web_core.settings.web.base_url
    assert parsed.feed.id == f"{base}/archive"
    assert any(
        link.rel == "self" and link.href == f"{base}/archive.atom" for link in parsed.feed.links
    )
    assert [e.id for e in parsed.entries] == [
        f"{base}/editions/{newer}",
        f"{base}/editions/{older}",
    ]
    entry = parsed.entries[1]
    assert entry.link == f"{base}/editions/{older}"
    assert entry.title.startswith("qasid daily edition")
    assert entry.updated_parsed is not None and parsed.feed.updated_parsed is not None
    body = entry.content[0].value
    assert "IMF &amp; the &lt;budget&gt;" in body  # feed text stays text inside the HTML
    assert 'href="https://news.example/story/1"' in body


def test_empty_atom_feed_is_still_valid(client: FlaskClient) -> None:
    parsed = feedparser.parse(client.get("/archive.atom").data)
    assert parsed.bozo == 0 and parsed.entries == [] and parsed.feed.title


def test_atom_feed_drops_characters_xml_forbids(client: FlaskClient, web_core: App) -> None:
    items = store_items(web_core, [make_item(1, "Bell\x07 and \x1b escape \ufffe")])
    publish(web_core, items)
    parsed = feedparser.parse(client.get("/archive.atom").data)
    assert parsed.bozo == 0 and len(parsed.entries) == 1


# -- themes -----------------------------------------------------------------------------------


def test_themes_index_and_theme_page(client: FlaskClient, web_core: App) -> None:
    store_items(
        web_core,
        [make_item(n, f"Climate story {n}", hours=24 * 7 * n + 1) for n in range(3)],
        Tags(themes=["climate"], scores={"climate": 3.0}, evidence={}),
    )
    index = client.get("/themes").get_data(as_text=True)
    themes = load_theme_infos(Path(web_core.settings.root))
    for theme in themes:
        assert f'href="/themes/{theme.id}"' in index
    climate = next(t for t in themes if t.id == "climate")
    response = client.get("/themes/climate")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert climate.context[:60] in html
    assert "Climate story 0" in html and "Climate story 2" in html
    assert "3 items tagged" in html
    svg_part = html[html.index("<svg") : html.index("</svg>")]
    assert 'role="img"' in svg_part and "<title id=" in svg_part
    assert svg_part.count('class="bar"') == 26
    assert "<script" not in html
    assert client.get("/themes/nope").status_code == 404
    empty = client.get("/themes/diaspora")
    assert empty.status_code == 200 and b"No stories tagged" in empty.data


def test_weekly_chart_is_a_pure_escaped_svg() -> None:
    from datetime import date

    weeks = [(date(2026, 6, 1) + timedelta(weeks=n), n * 3) for n in range(26)]
    chart = str(svg.weekly_bars(weeks, title="<script>x</script> & co", element_id='a"b'))
    assert chart.startswith("<svg") and chart.endswith("</svg>")
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in chart and "<script" not in chart
    assert 'id="a-b"' in chart and 'aria-labelledby="a-b-title a-b-desc"' in chart
    assert chart.count("<rect") == 26 and "Week of 1 Jun 2026: 0 items" in chart
    assert "busiest week 23 Nov 2026 with 75" in chart
    assert svg.weekly_bars(weeks, title="t", element_id="c") == chart.replace("a-b", "c").replace(
        "&lt;script&gt;x&lt;/script&gt; &amp; co", "t"
    )
    assert " on" not in chart.replace("Jun", "").replace(" on ", "")  # no event attributes
    empty = str(svg.weekly_bars([], title="none", element_id="e"))
    assert "No weeks to show." in empty
    assert [svg.nice_ceiling(n) for n in (0, 1, 3, 7, 10, 11, 45, 120)] == [
        1,
        1,
        5,
        10,
        10,
        20,
        50,
        200,
    ]


# -- headers (A-05) ---------------------------------------------------------------------------


def test_archive_pages_carry_the_security_headers(client: FlaskClient, web_core: App) -> None:
    edition_id = publish(web_core, store_items(web_core, [make_item(1, "IMF story")]))
    for path in (
        "/archive",
        "/archive?q=imf",
        f"/editions/{edition_id}",
        "/themes",
        "/themes/economy",
        "/archive.atom",
    ):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in client.get("/archive").headers  # public pages set no cookie


def test_web_app_fixture_is_the_real_app(web_app: Flask) -> None:
    assert {"archive.archive", "archive.themes", "archive.edition", "archive.feed"} <= set(
        web_app.view_functions
    )


# -- the page cache ---------------------------------------------------------------------------


def test_cached_pages_follow_new_editions_and_items(
    client: FlaskClient, web_core: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.web import archive

    monkeypatch.setattr(archive, "VERSION_SECONDS", 0.0)  # no waiting out the memo
    assert b"No editions yet" in client.get("/archive").data
    assert b"No items match" in client.get("/archive?q=gwadar").data
    assert feedparser.parse(client.get("/archive.atom").data).entries == []
    assert b"0 items tagged" in client.get("/themes/economy").data
    items = store_items(web_core, [make_item(1, "Gwadar port expansion")])
    assert b"Gwadar port expansion" in client.get("/archive?q=gwadar").data  # a new item
    assert b"1 item tagged" in client.get("/themes/economy").data
    edition_id = publish(web_core, items)
    assert f"/editions/{edition_id}".encode() in client.get("/archive").data  # a new edition
    assert len(feedparser.parse(client.get("/archive.atom").data).entries) == 1
    search = client.get("/archive?q=gwadar").get_data(as_text=True)
    assert f"/editions/{edition_id}#item-" in search  # now links to its edition
    # Stored, not indexed yet: the page rendered meanwhile is not given after the step.
    store_items(
        web_core, [make_item(2, "Gwadar airport")], feed_url="https://b.example/f", index=False
    )
    assert b"Gwadar airport" not in client.get("/archive?q=gwadar").data
    assert index_item_archive(web_core) == 1
    assert b"Gwadar airport" in client.get("/archive?q=gwadar").data


def test_pages_are_served_from_the_cache(
    client: FlaskClient, web_app: Flask, web_core: App
) -> None:
    from pipeline.web.archive import page_cache

    edition_id = publish(web_core, store_items(web_core, [make_item(1, "IMF story")]))
    first = client.get(f"/editions/{edition_id}")
    cache = page_cache(web_app)
    assert cache is not None
    hits = cache.hits
    again = client.get(f"/editions/{edition_id}")
    assert again.data == first.data and cache.hits == hits + 1
    assert again.headers["Content-Security-Policy"] == first.headers["Content-Security-Policy"]
    assert again.headers["Content-Type"] == "text/html; charset=utf-8"
    client.get("/archive")
    client.get("/archive")
    assert cache.hits == hits + 2
    # Not cached: a 404, a personal page, a HEAD, a POST, other parts of the app.
    for _ in range(2):
        client.get("/editions/999999")
        client.get(f"/editions/{edition_id}/not-a-token")
        client.head("/archive")
        client.get("/healthz")
    assert cache.hits == hits + 2
    _version, stored_at, response = cache._pages[("", "/archive", "")]
    cache._pages[("", "/archive", "")] = ((0, 0), stored_at, (response[0], response[1], b"stale"))
    assert client.get("/archive").data != b"stale"  # another data version: rendered anew


def test_page_cache_is_bounded() -> None:
    from pipeline.web.archive import PageCache

    small = PageCache(entries=2, max_bytes=1000, max_age=60)
    for n in range(3):
        small.put(n, "v", ("200 OK", [], f"page {n}".encode()))
    assert small.get(0, "v") is None and small.get(2, "v") == ("200 OK", [], b"page 2")
    assert small.get(2, "other version") is None
    small.put("big", "v", ("200 OK", [], b"x" * 200))  # more than an eighth of the budget
    assert small.get("big", "v") is None
    for n in range(10):
        small.put(("b", n), "v", ("200 OK", [], b"x" * 100))
    assert small._bytes <= 1000 and len(small._pages) <= 2
    expired = PageCache(entries=2, max_bytes=1000, max_age=0.0)
    expired.put("k", "v", ("200 OK", [], b"x"))
    assert expired.get("k", "v") is None


def test_public_pages_are_cacheable_and_token_pages_are_not(
    client: FlaskClient, web_core: App
) -> None:
    """Cache-Control is decided per endpoint: /editions/<id> shares its prefix with the
    token-bearing /editions/<id>/<token>, yet any cache may keep it; the reader's own page
    stays no-store and sends no Referer."""
    items = store_items(web_core, [make_item(1, "IMF story")])
    public = publish(web_core, items)
    alice = reader(web_core, "alice@example.org")
    mine = publish(web_core, items, NOW - timedelta(days=1), kind="personal", subscriber_id=alice)
    for path, max_age in [
        (f"/editions/{public}", 3600),
        ("/archive", 300),
        ("/archive?q=imf", 300),
        ("/archive.atom", 300),
        ("/themes", 300),
        ("/themes/economy", 300),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == f"public, max-age={max_age}", path
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", path
        assert "Set-Cookie" not in response.headers, path
    view = web_core.tokens.make("view", alice, "alice@example.org", str(mine))
    for path, status in [
        (f"/editions/{mine}/{view}", 200),
        (f"/editions/{mine}/{view}x", 404),  # a bad token: still a token page
        (f"/editions/{mine}/{view}/more", 404),  # matches no view, but holds a token
    ]:
        response = client.get(path)
        assert response.status_code == status, path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
    # Errors and private answers are never marked public.
    for path in ("/editions/999999", f"/editions/{mine}"):
        response = client.get(path)
        assert response.status_code == 404
        assert "public" not in response.headers.get("Cache-Control", "")


def test_a_compact_personal_edition_shows_the_same_page_as_one_stored_whole(
    client: FlaskClient, web_core: App
) -> None:
    items = store_items(
        web_core,
        [make_item(1, "IMF story"), make_item(2, "<script>alert(1)</script> & co", hours=3)],
    )
    pages = []
    for n, compact in enumerate((False, True)):
        email = f"reader{n}@example.org"
        owner = reader(web_core, email)
        mine = publish(web_core, items, kind="personal", subscriber_id=owner, compact=compact)
        token = web_core.tokens.make("view", owner, email, str(mine))
        response = client.get(f"/editions/{mine}/{token}")
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        pages.append(page.replace(token, "TOKEN").replace(f"/editions/{mine}/", "/editions/ID/"))
    assert "IMF story" in pages[1] and "<script>alert" not in pages[1]
    assert pages[1] == pages[0]


def test_view_in_browser_says_when_the_watchlist_section_was_cut_short(
    client: FlaskClient, web_core: App
) -> None:
    items = store_items(web_core, [make_item(1, "IMF story")])
    alice = reader(web_core, "alice@example.org")
    ledger = DeliveryStore(web_core.store)
    built = ledger.get_edition(publish(web_core, items, kind="personal", subscriber_id=alice))
    assert built is not None
    content = dict(built.content)
    content["watchlist_entries"] = content["top"]
    content["watchlist_line"] = "The 1 highest-ranked of 7 stories this day that matched <yours>."
    edition_id, _ = ledger.create_edition(
        kind="personal",
        subscriber_id=alice,
        frequency="daily",
        period_start=NOW,
        period_end=NOW + timedelta(days=1),
        local_date=(NOW + timedelta(days=1)).date().isoformat(),
        subject=built.subject,
        item_count=1,
        content=content,
        now=NOW,
        queue_delivery=False,
    )
    token = web_core.tokens.make("view", alice, "alice@example.org", str(edition_id))
    html = client.get(f"/editions/{edition_id}/{token}").get_data(as_text=True)
    assert "Your watchlists" in html
    assert "The 1 highest-ranked of 7 stories this day that matched &lt;yours&gt;." in html
