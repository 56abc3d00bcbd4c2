"""pipeline.core.normalize: URLs, HTML, text, identity, dates and language (X-02, P-04, P-05,
P-07 of RELIABILITY.md)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.core.models import ParsedEntry, ParsedFeed
from pipeline.core.normalize import (
    AUTHOR_MAX,
    SUMMARY_MAX,
    TITLE_MAX,
    canonical_url,
    clean_text,
    content_hash,
    detect_language,
    html_to_text,
    item_from_entry,
    items_from_feed,
    items_from_feed_since,
    normalise_guid,
    sanitize_html,
)

FEED = "https://feeds.example.com/world/rss.xml"
FETCHED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(**fields: object) -> ParsedEntry:
    base: dict[str, object] = {
        "guid": "https://news.example.com/a/1",
        "link": "https://news.example.com/a/1",
        "title": "IMF approves tranche for Pakistan",
        "summary": "<p>The board met on Friday.</p>",
        "published": datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
    }
    base.update(fields)
    return ParsedEntry(**base)  # type: ignore[arg-type]


def feed_of(*entries: ParsedEntry, language: str | None = None) -> ParsedFeed:
    return ParsedFeed(version="rss20", title="t", link="", language=language, entries=entries)


# --- canonical_url ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://ex.com/a?utm_source=rss&utm_medium=feed&id=7", "https://ex.com/a?id=7"),
        ("https://ex.com/a?fbclid=x&gclid=y&igshid=z", "https://ex.com/a"),
        ("https://ex.com/a?b=2&mc_cid=1&mc_eid=2&a=1", "https://ex.com/a?b=2&a=1"),
        ("https://ex.com/a?ref_src=twsrc&cmpid=x&ocid=y&_ga=1.2", "https://ex.com/a"),
        (
            "https://www.bbc.co.uk/news/x?at_medium=RSS&at_campaign=KARANGA",
            "https://www.bbc.co.uk/news/x",
        ),
        ("https://ex.com/a?UTM_Source=x&q=pakistan+imf", "https://ex.com/a?q=pakistan+imf"),
        ("https://ex.com/a?z=1&y=2&x=3", "https://ex.com/a?z=1&y=2&x=3"),
        ("https://ex.com/a?x=1&amp;y=2", "https://ex.com/a?x=1&y=2"),
    ],
)
def test_canonical_url_removes_tracking_parameters_and_keeps_others_in_order(
    raw: str, expected: str
) -> None:
    assert canonical_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://ex.com/story#comments", "https://ex.com/story"),
        ("HTTPS://EX.com/Path/Case", "https://ex.com/Path/Case"),
        ("http://ex.com:80/a", "http://ex.com/a"),
        ("https://ex.com:443/a", "https://ex.com/a"),
        ("https://ex.com:8443/a", "https://ex.com:8443/a"),
        ("https://ex.com", "https://ex.com/"),
        ("https://ex.com./a", "https://ex.com/a"),
        ("  https://ex.com/a\n", "https://ex.com/a"),
        ("https://ex.com/a?", "https://ex.com/a"),
        ("https://user:secret@ex.com/a", "https://ex.com/a"),
        ("http://bank.example@evil.example/login", "http://evil.example/login"),
    ],
)
def test_canonical_url_normalises_case_ports_fragments_and_credentials(
    raw: str, expected: str
) -> None:
    assert canonical_url(raw) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "&#106;avascript:alert(1)",
        "&#x6A;avascript:alert(1)",
        "&amp;#106;avascript:alert(1)",
        "jav&#x09;ascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "DATA:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://ex.com/x",
        "mailto:someone@ex.com",
        "feed://ex.com/rss",
        "http://",
        "https:///nohost",
        "http://ex.com:99999/",
        "http://ex<script>.com/",
        "",
    ],
)
def test_canonical_url_drops_every_non_http_scheme_even_obfuscated(hostile: str) -> None:
    assert canonical_url(hostile) == ""
    assert canonical_url(hostile, base=FEED) == ""


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("/x", FEED, "https://feeds.example.com/x"),
        ("story.html", FEED, "https://feeds.example.com/world/story.html"),
        ("/x", None, ""),
        ("//evil.example/x", None, "https://evil.example/x"),
        ("//evil.example/x", "http://feeds.example.com/", "http://evil.example/x"),
        ("/x", "javascript:alert(1)", ""),
    ],
)
def test_canonical_url_resolves_relative_and_protocol_relative_links(
    raw: str, base: str | None, expected: str
) -> None:
    assert canonical_url(raw, base) == expected


def test_canonical_url_drops_absurdly_long_urls() -> None:
    assert canonical_url("https://ex.com/" + "a" * 5000) == ""


# --- sanitize_html ---------------------------------------------------------------------------
HOSTILE_HTML = [
    "<script>alert(1)</script><p>ok</p>",
    '<p onclick="alert(1)">x</p>',
    '<img src="x" onerror="alert(1)">',
    '<img src="data:image/png;base64,AAAA">',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<svg onload="alert(1)"><script>alert(1)</script></svg>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<form action="https://evil.example"><input name="p"><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="https://evil.example/">',
    "<style>body{background:url(javascript:alert(1))}</style>",
    '<iframe src="https://evil.example"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<p><!--<script>alert(1)</script>--></p>",
    "<scr<script>ipt>alert(1)</script>",
    '<a href="https://ex.com/" onmouseover="alert(1)">x</a>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
]


@pytest.mark.parametrize("payload", HOSTILE_HTML)
def test_sanitize_html_leaves_nothing_executable(payload: str) -> None:
    cleaned = sanitize_html(payload, base=FEED).lower()
    for forbidden in ("<script", "<style", "<iframe", "<form", "<svg", "<math", "<meta", "<base"):
        assert forbidden not in cleaned
    assert "<img" not in cleaned
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", cleaned)
    assert not re.search(r"(href|src)\s*=\s*\"?\s*(javascript|data|vbscript):", cleaned)
    assert "style=" not in cleaned


def test_sanitize_html_keeps_reader_markup_and_makes_links_absolute_and_nofollow() -> None:
    cleaned = sanitize_html(
        '<h2>Head</h2><p>A <b>bold</b> <a href="/story?utm_source=x" class="c">link</a></p>'
        "<ul><li>one</li></ul><blockquote>q</blockquote>",
        base=FEED,
    )
    assert cleaned == (
        "<h2>Head</h2><p>A <b>bold</b> "
        '<a href="https://feeds.example.com/story" rel="nofollow noopener noreferrer">link</a>'
        "</p><ul><li>one</li></ul><blockquote>q</blockquote>"
    )


def test_sanitize_html_drops_images_on_purpose() -> None:
    assert sanitize_html('<p>x<img src="https://ex.com/p.png" alt="y"></p>') == "<p>x</p>"


def test_sanitize_html_truncates_long_summaries_to_the_limit_with_tags_closed() -> None:
    cleaned = sanitize_html("<p><b>" + "word " * 20_000 + "</b></p>")
    assert len(cleaned) <= SUMMARY_MAX
    assert cleaned.endswith("</b></p>")


# --- html_to_text and clean_text --------------------------------------------------------------
def test_html_to_text_decodes_entities_collapses_spaces_and_keeps_block_breaks() -> None:
    text = html_to_text("<p>One &amp;   two</p><p>three<br>four</p><ul><li>a</li><li>b</li></ul>")
    assert text == "One & two\n\nthree\nfour\n\na\nb"


def test_html_to_text_drops_script_and_style_content() -> None:
    assert html_to_text("<p>hi</p><script>var x=1;</script><style>p{}</style>") == "hi"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<img src=x onerror=alert(1)>Budget passes", "Budget passes"),
        ("<script>alert(1)</script>Budget", "Budget"),
        ("AT&amp;T <b>wins</b>", "AT&T wins"),
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),
        ("x < y and z > w", "x < y and z > w"),
        ("  many \n\t spaces  ", "many spaces"),
        ("NUL\x00 here", "NUL here"),
        ("bell\x07 and \x85 next-line", "bell and next-line"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ("emoji 🇵🇰 and 𝕏 stay", "emoji 🇵🇰 and 𝕏 stay"),
        ("\u200fآئی ایم ایف\u200f RTL marks stay", "\u200fآئی ایم ایف\u200f RTL marks stay"),
        (None, ""),
    ],
)
def test_clean_text_gives_plain_safe_one_line_text(raw: str | None, expected: str) -> None:
    assert clean_text(raw) == expected


def test_clean_text_truncates_a_2_mb_title_at_the_title_limit() -> None:
    title = clean_text("word " * 400_000)
    assert len(title) <= TITLE_MAX
    assert title.endswith("…")
    title.encode("utf-8")


# --- GUIDs and identity ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://news.example.com/a/1", "https://news.example.com/a/1"),
        ("http://NEWS.example.com:80/a/1", "https://news.example.com/a/1"),
        ("https://news.example.com/a/1?utm_source=rss", "https://news.example.com/a/1"),
        ("  tag:example.com,2026:1 ", "tag:example.com,2026:1"),
        ("urn:uuid:ABCDEF01-2345", "urn:uuid:abcdef01-2345"),
    ],
)
def test_normalise_guid_treats_equivalent_guids_as_one(first: str, second: str) -> None:
    assert normalise_guid(first) == normalise_guid(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("https://ex.com/page#item-1", "https://ex.com/page#item-2"),
        ("https://ex.com/a?id=1", "https://ex.com/a?id=2"),
        ("ABC", "abc"),
    ],
)
def test_normalise_guid_keeps_distinct_guids_distinct(first: str, second: str) -> None:
    assert normalise_guid(first) != normalise_guid(second)


def test_normalise_guid_hashes_very_long_guids() -> None:
    key = normalise_guid("x" * 10_000)
    assert key.startswith("sha256:") and len(key) < 100


def test_guid_key_survives_a_feed_moving_from_http_to_https() -> None:
    before = item_from_entry(entry(guid="http://news.example.com/a/1"), FEED, "en", FETCHED)
    after = item_from_entry(entry(guid="https://news.example.com/a/1"), FEED, "en", FETCHED)
    assert before.guid_key == after.guid_key


def test_guid_key_falls_back_to_link_then_to_a_hash_of_title_and_date() -> None:
    by_link = item_from_entry(
        entry(guid=None, link="http://news.example.com/a/9"), FEED, "en", FETCHED
    )
    assert by_link.guid_key == normalise_guid("https://news.example.com/a/9")
    by_hash = item_from_entry(entry(guid=None, link=None), FEED, "en", FETCHED)
    again = item_from_entry(
        entry(guid=" ", link="javascript:x"), FEED, "en", FETCHED + timedelta(hours=1)
    )
    assert by_hash.guid_key.startswith("sha256:")
    assert by_hash.guid_key == again.guid_key  # stable across polls: no fetch time inside
    other = item_from_entry(entry(guid=None, link=None, title="Other"), FEED, "en", FETCHED)
    assert other.guid_key != by_hash.guid_key


def test_items_from_feed_keeps_the_first_of_duplicate_guids() -> None:
    parsed = feed_of(
        entry(title="first"),
        entry(title="second"),
        entry(guid="http://news.example.com/a/1", title="third, http twin"),
        entry(guid="https://news.example.com/a/2", title="fourth"),
    )
    items = items_from_feed(parsed, FEED, "en", FETCHED)
    assert [item.title for item in items] == ["first", "fourth"]


def test_items_from_feed_skips_entries_with_no_title_link_or_summary() -> None:
    empty = entry(
        guid="g-empty", link="javascript:alert(1)", title=" ", summary="<script>x</script>"
    )
    items = items_from_feed(feed_of(empty, entry()), FEED, "en", FETCHED)
    assert [item.guid_key for item in items] == [normalise_guid("https://news.example.com/a/1")]


# --- the Item itself -----------------------------------------------------------------------
def test_item_from_entry_sanitizes_every_field() -> None:
    item = item_from_entry(
        entry(
            title="<img src=x onerror=alert(1)>Army chief\x00 visits",
            link="https://news.example.com/a/1?utm_campaign=x#top",
            summary='<p onclick="x">Body <a href="javascript:alert(1)">bad</a></p>',
            author="<b onmouseover=alert(1)>Staff</b>",
        ),
        FEED,
        "en",
        FETCHED,
    )
    assert item.title == "Army chief visits"
    assert item.link == "https://news.example.com/a/1"
    assert item.summary_html == '<p>Body <a rel="nofollow noopener noreferrer">bad</a></p>'
    assert item.summary_text == "Body bad"
    assert item.author == "Staff"


def test_item_author_is_truncated() -> None:
    assert len(item_from_entry(entry(author="a" * 5000), FEED, "en", FETCHED).author) <= AUTHOR_MAX


def test_content_hash_changes_with_the_words_not_the_markup() -> None:
    plain = item_from_entry(entry(summary="<p>Same words</p>"), FEED, "en", FETCHED)
    marked = item_from_entry(entry(summary="<div><b>Same</b> words</div>"), FEED, "en", FETCHED)
    edited = item_from_entry(entry(summary="<p>Other words</p>"), FEED, "en", FETCHED)
    assert plain.content_hash == marked.content_hash != edited.content_hash
    assert plain.content_hash == content_hash(plain.title, plain.summary_text)


# --- dates (P-07) ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("published", "updated", "expected", "missing"),
    [
        (
            datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
            None,
            datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
            False,
        ),
        (
            datetime(2026, 2, 28, 14, 30, tzinfo=timezone(timedelta(hours=5))),
            None,
            datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
            False,
        ),
        (datetime(2026, 2, 28, 9, 30), None, datetime(2026, 2, 28, 9, 30, tzinfo=UTC), False),
        (None, datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 2, 27, tzinfo=UTC), False),
        (None, None, FETCHED, True),
        (datetime(9999, 12, 31, tzinfo=UTC), None, FETCHED, False),
        (FETCHED + timedelta(days=2), None, FETCHED, False),
        (FETCHED + timedelta(minutes=5), None, FETCHED + timedelta(minutes=5), False),
        (datetime(1900, 1, 1, tzinfo=UTC), None, FETCHED, True),
        (datetime(1970, 1, 1, tzinfo=UTC), None, FETCHED, True),
    ],
    ids=[
        "utc",
        "offset",
        "naive",
        "updated-only",
        "missing",
        "9999",
        "future",
        "slack",
        "1900",
        "epoch",
    ],
)
def test_published_is_utc_with_missing_absurd_and_future_dates_replaced(
    published: datetime | None, updated: datetime | None, expected: datetime, missing: bool
) -> None:
    item = item_from_entry(entry(published=published, updated=updated), FEED, "en", FETCHED)
    assert item.published == expected
    assert item.published.utcoffset() == timedelta(0)
    assert item.published_missing is missing


# --- language ---------------------------------------------------------------------------------
URDU_TITLE = "آئی ایم ایف نے پاکستان کے لیے قسط کی منظوری دے دی"


@pytest.mark.parametrize(
    ("entry_language", "feed_language", "title", "expected"),
    [
        ("en-US", "ur", "IMF approves tranche", "en"),
        (None, "en-GB", "IMF approves tranche", "en"),
        (None, None, "IMF approves tranche", "en"),
        (None, "not a tag!", "IMF approves tranche", "en"),
        (None, "en", URDU_TITLE, "ur"),
        (None, None, URDU_TITLE, "ur"),
        ("ar", None, "صندوق النقد الدولي يوافق على الشريحة", "ar"),
        (None, "en", f"{URDU_TITLE} (IMF)", "ur"),
        (None, "en", "Pakistan: آئی ایم ایف agrees a new programme with the government", "en"),
    ],
)
def test_language_comes_from_entry_then_feed_and_urdu_script_is_detected(
    entry_language: str | None, feed_language: str | None, title: str, expected: str
) -> None:
    item = item_from_entry(
        entry(language=entry_language, title=title, summary=""), FEED, feed_language, FETCHED
    )
    assert item.language == expected


def test_detect_language_needs_a_few_letters_before_overriding() -> None:
    assert detect_language(["en"], "ب") == "en"


def test_items_from_feed_uses_the_documents_language_when_none_is_configured() -> None:
    parsed = replace(feed_of(entry(language=None)), language="de-DE")
    assert items_from_feed(parsed, FEED, None, FETCHED)[0].language == "de"


# --- incremental normalisation (warm polls) -----------------------------------------------------
def numbered(n: int, **fields: object) -> ParsedEntry:
    link = f"https://news.example.com/a/{n}"
    return entry(guid=link, link=link, title=f"Story {n}", **fields)


def test_unchanged_entries_are_skipped_and_changed_ones_match_a_full_normalise() -> None:
    first = feed_of(*(numbered(n) for n in range(10)))
    everything = items_from_feed_since(first, FEED, None, FETCHED, {})
    assert everything.items == items_from_feed(first, FEED, None, FETCHED)
    assert everything.skipped == 0 and len(everything.seen) == 10

    edited = replace(numbered(3), title="Story 3, updated")
    second = feed_of(numbered(10), *(edited if n == 3 else numbered(n) for n in range(9)))
    since = items_from_feed_since(second, FEED, None, FETCHED, everything.seen)
    full = items_from_feed(second, FEED, None, FETCHED)
    assert since.items == [item for item in full if item.title in {"Story 10", "Story 3, updated"}]
    assert since.skipped == 8
    again = items_from_feed_since(second, FEED, None, FETCHED, since.seen)
    assert again.items == [] and again.skipped == 10


def test_a_changed_entry_repeating_a_skipped_guid_falls_back_to_the_full_normalise() -> None:
    # Feeds repeat GUIDs; the first entry wins, so skipping the first would change the winner.
    first = feed_of(numbered(1), numbered(2))
    seen = items_from_feed_since(first, FEED, None, FETCHED, {}).seen
    second = feed_of(numbered(1), numbered(2), replace(numbered(1), title="Impostor"))
    since = items_from_feed_since(second, FEED, None, FETCHED, seen)
    assert since.items == items_from_feed(second, FEED, None, FETCHED)
    assert [item.title for item in since.items] == ["Story 1", "Story 2"]
    assert since.skipped == 0


def test_nothing_is_skipped_when_the_feed_url_or_language_changes() -> None:
    document = feed_of(numbered(1), numbered(2))
    seen = items_from_feed_since(document, FEED, "en", FETCHED, {}).seen
    moved = items_from_feed_since(document, FEED + "?v=2", "en", FETCHED, seen)
    relabelled = items_from_feed_since(document, FEED, "ur", FETCHED, seen)
    assert len(moved.items) == len(relabelled.items) == 2
    assert relabelled.items == items_from_feed(document, FEED, "ur", FETCHED)


def test_empty_entries_are_remembered_without_an_item() -> None:
    document = feed_of(entry(guid=None, link=None, title=None, summary=None), numbered(1))
    seen = items_from_feed_since(document, FEED, None, FETCHED, {}).seen
    assert sorted(seen.values(), key=lambda v: v is not None)[0] is None
    assert items_from_feed_since(document, FEED, None, FETCHED, seen).items == []


def test_an_entry_that_lost_its_guid_to_an_earlier_one_is_normalised_again_next_time() -> None:
    # The impostor comes first and wins; once it is gone, the real entry must be stored again
    # (its bytes did not change, but its item was never the one stored).
    impostor = replace(numbered(1), title="Impostor")
    first = feed_of(numbered(2), numbered(1))
    seen = items_from_feed_since(first, FEED, None, FETCHED, {}).seen
    second = feed_of(impostor, numbered(2), numbered(1))
    since = items_from_feed_since(second, FEED, None, FETCHED, seen)
    assert [item.title for item in since.items] == ["Impostor", "Story 2"]
    assert len(since.seen) == 2  # the impostor and story 2; not story 1, which lost
    third = feed_of(numbered(2), numbered(1))
    after = items_from_feed_since(third, FEED, None, FETCHED, since.seen)
    assert [item.title for item in after.items] == ["Story 1"]
    assert after.skipped == 1
