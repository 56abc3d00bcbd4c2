"""pipeline.adapters.parse with the real feedparser: the feedparser corpus (P-01, X-03),
hostile DTDs (P-02), inputs that make feedparser raise (P-03), runaway parses killed by the
pool (P-06), a huge feed (P-08), and the rule that feedparser never sees a str or a path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import feedparser
import pytest

from pipeline.adapters import parse as parse_module
from pipeline.adapters.parse import ParsePool, parse_feed
from pipeline.core.errors import FeedError
from pipeline.core.models import ParsedFeed
from pipeline.core.normalize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    items_from_feed,
    sanitize_html,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "testdata" / "feedparser-corpus"
FETCHED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FEED_URL = "https://feeds.example.com/world/rss.xml"

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"feedparser corpus not found at {CORPUS} (shared/testdata)"
)


def rss(items: str, channel: str = "<title>Feed</title>", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>{channel}'
        f"{items}</channel></rss>"
    ).encode()


def all_strings(value: Any) -> Iterator[str]:
    """Every str inside a ParsedFeed/Item (dataclasses, tuples, lists)."""
    if isinstance(value, str):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from all_strings(getattr(value, field.name))
    elif isinstance(value, list | tuple):
        for element in value:
            yield from all_strings(element)


def assert_storable(*values: Any) -> None:
    for value in values:
        for text in all_strings(value):
            text.encode("utf-8")  # raises on lone surrogates
            assert "\x00" not in text


def corpus_files(folder: str) -> list[Path]:
    return sorted(p for p in (CORPUS / folder).rglob("*") if p.is_file() and p.name != "LICENSE")


# --- P-01: the whole corpus ---------------------------------------------------------------------
CORPUS_FOLDERS = ["wellformed", "illformed", "encoding", "entities", "http", "compression"]


@needs_corpus
@pytest.mark.parametrize("folder", CORPUS_FOLDERS)
def test_every_corpus_file_parses_to_storable_items_or_a_feed_error(folder: str) -> None:
    files = corpus_files(folder)
    assert files, f"no files under {CORPUS / folder}"
    escaped: list[str] = []
    for path in files:
        try:
            parsed = parse_feed(path.read_bytes(), f"http://example.com/{path.name}")
            items = items_from_feed(parsed, "http://example.com/", "en", FETCHED)
        except FeedError as error:
            assert error.outcome in {"parse_error", "not_a_feed"}, (path, error)
            continue
        except Exception as error:  # collected so one run names every offender
            escaped.append(f"{path.relative_to(CORPUS)}: {type(error).__name__}: {error}")
            continue
        assert_storable(parsed, items)
        if parsed.bozo:
            assert parsed.bozo_reason, path
    assert not escaped, "\n".join(escaped)


@needs_corpus
def test_illformed_feeds_with_entries_are_kept_with_their_bozo_reason() -> None:
    kept = 0
    for path in corpus_files("illformed"):
        expect = re.search(rb"Expect:(.*)", path.read_bytes())
        if not expect or b"not bozo" in expect.group(1) or b"bozo" not in expect.group(1):
            continue
        try:
            parsed = parse_feed(path.read_bytes(), "http://example.com/f")
        except FeedError:
            continue
        if parsed.entries:
            kept += 1
            assert parsed.bozo and parsed.bozo_reason, path
    assert kept >= 5


# --- the 745 sanitize cases --------------------------------------------------------------
class _MarkupAudit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        allowed = ALLOWED_ATTRIBUTES["*"] | ALLOWED_ATTRIBUTES.get(tag, set())
        allowed |= {"rel"} if tag == "a" else set()
        for name, value in attrs:
            if name not in allowed or name.startswith("on"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not re.match(r"https?://", value or ""):
                self.problems.append(f"href {value!r}")


# Titles and authors are plain text: a literal "<" may stay (renderers escape it), tags not.
TAG = re.compile(r"<[a-zA-Z][^>]*>")


def assert_nothing_executable(html: str, where: str) -> None:
    lowered = html.lower()
    for forbidden in ("<script", "<style", "<iframe", "<form", "<img", "<svg", "<math", "<meta"):
        assert forbidden not in lowered, (where, html)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", lowered), (where, html)
    assert not re.search(r"(href|src)\s*=\s*[\"']?\s*(javascript|data|vbscript):", lowered)
    audit = _MarkupAudit()
    audit.feed(html)
    assert not audit.problems, (where, audit.problems, html)


@needs_corpus
def test_sanitize_corpus_summaries_contain_nothing_executable() -> None:
    files = corpus_files("wellformed/sanitize")
    assert len(files) == 745
    started = time.monotonic()
    items_checked = 0
    for path in files:
        raw = path.read_bytes()
        # Without feedparser's own sanitizer in front: every payload in the file, unescaped.
        assert_nothing_executable(
            sanitize_html(html.unescape(raw.decode("utf-8", "replace"))), path.name
        )
        try:
            parsed = parse_feed(raw, "http://example.com/feed")
        except FeedError:
            continue
        assert not TAG.search(parsed.title)  # parse_feed reduces it to text
        for item in items_from_feed(parsed, "http://example.com/feed", "en", FETCHED):
            items_checked += 1
            assert_nothing_executable(item.summary_html, path.name)
            assert not TAG.search(item.title) and not TAG.search(item.author)
            assert not item.link or item.link.startswith(("http://", "https://"))
    assert items_checked > 150  # most payloads sanitize to nothing, and such entries are skipped
    assert time.monotonic() - started < 10


# --- P-02: hostile DTDs --------------------------------------------------------------------------
class _Canary:
    """An HTTP server on 127.0.0.1 that counts requests; a parse must never reach it."""

    def __init__(self) -> None:
        self.hits = 0
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.hits += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'<!ENTITY leak "LEAKED">')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Canary:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _laughs(one_line: bool) -> str:
    sep = "" if one_line else "\n"
    levels = ['<!ENTITY lol0 "lol">']
    levels += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return f"{sep}<!DOCTYPE rss [{sep}{sep.join(levels)}{sep}]>{sep}"


@pytest.mark.parametrize(
    ("name", "prolog", "reference"),
    [
        ("billion laughs", _laughs(one_line=False), "&lol9;"),
        ("billion laughs on one line", _laughs(one_line=True), "&lol9;"),
        ("quadratic blowup", f'<!DOCTYPE rss [<!ENTITY a "{"A" * 100_000}">]>', "&a;" * 10_000),
        ("external entity", '<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;"),
        ("parameter entity", '<!DOCTYPE rss [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>', ""),
    ],
)
def test_hostile_dtds_parse_fast_without_expansion_or_file_reads(
    name: str, prolog: str, reference: str
) -> None:
    body = rss(
        f"<item><title>t{reference}</title><link>https://ex.com/1</link></item>", prolog=prolog
    )
    started = time.monotonic()
    try:
        parsed: ParsedFeed | None = parse_feed(body, FEED_URL)
    except FeedError as error:
        assert error.outcome in {"parse_error", "not_a_feed"}
        parsed = None
    assert time.monotonic() - started < 1.0, name
    if parsed is not None:
        text = "".join(all_strings(parsed))
        assert "lollollollollollollollol" not in text
        assert "A" * 200_000 not in text
        assert "root:" not in text


def test_external_dtd_and_entities_are_never_fetched() -> None:
    with _Canary() as canary:
        prologs = [
            f'<!DOCTYPE rss SYSTEM "{canary.url}/rss.dtd">',
            f'<!DOCTYPE rss PUBLIC "-//x//EN" "{canary.url}/rss.dtd">',
            f'<!DOCTYPE rss [<!ENTITY x SYSTEM "{canary.url}/x">]>',
            f'<!DOCTYPE rss [<!ENTITY % p SYSTEM "{canary.url}/p"> %p;]>',
        ]
        for prolog in prologs:
            body = rss("<item><title>t &x; &leak;</title></item>", prolog=prolog)
            try:
                parsed = parse_feed(body, FEED_URL)
            except FeedError:
                continue
            assert "LEAKED" not in "".join(all_strings(parsed))
        assert canary.hits == 0


# --- P-03: inputs that make feedparser raise ----------------------------------------------------
@pytest.mark.parametrize(
    ("body", "exception_class"),
    [
        (rss("<item><title>a&#xD800;b</title></item>"), "UnicodeEncodeError"),
        (rss("<item><title>a&#x110000;b</title></item>"), "ValueError"),
        (rss("<item><title>a&#xFFFFFFFF;b</title></item>"), "OverflowError"),
        (
            rss(
                "<item><title>&x;</title></item>",
                prolog='\n<!DOCTYPE rss [\n<!ENTITY x "a\\d">\n]>\n',
            ),
            "re.error",
        ),
    ],
    ids=["surrogate", "beyond-unicode", "overflow", "doctype-backslash"],
)
def test_inputs_that_make_feedparser_raise_become_parse_errors(
    body: bytes, exception_class: str
) -> None:
    with pytest.raises(FeedError) as caught:
        parse_feed(body, FEED_URL)
    assert caught.value.outcome == "parse_error"
    assert caught.value.url == FEED_URL
    assert caught.value.message.startswith(f"parser failed: {exception_class}")


# --- parse_feed behaviour -----------------------------------------------------------------------
def test_html_page_is_not_a_feed() -> None:
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Hi</p></body></html>"
    with pytest.raises(FeedError, match=r"not a feed \(looks like an HTML page\)") as caught:
        parse_feed(page, FEED_URL, "text/html; charset=utf-8")
    assert caught.value.outcome == "not_a_feed"


@pytest.mark.parametrize("body", [b"", b"  \n", b"just some text", b"\x00\x01\x02\xff\xfe"])
def test_empty_or_garbage_body_is_not_a_feed(body: bytes) -> None:
    with pytest.raises(FeedError) as caught:
        parse_feed(body, FEED_URL)
    assert caught.value.outcome == "not_a_feed"


def test_ill_formed_feed_keeps_entries_and_reports_bozo() -> None:
    body = rss("<item><title>One & two</title><link>https://ex.com/1</link></item>")
    parsed = parse_feed(body, FEED_URL)
    assert [entry.title for entry in parsed.entries] == ["One & two"]
    assert parsed.bozo and parsed.bozo_reason


def test_well_formed_feed_with_a_content_type_is_not_bozo() -> None:
    parsed = parse_feed(rss("<item><title>t</title></item>"), FEED_URL, "application/rss+xml")
    assert parsed.version == "rss20" and not parsed.bozo and parsed.bozo_reason is None


def test_relative_links_resolve_against_the_feed_url() -> None:
    body = rss(
        "<item><title>t</title><link>/news/1</link>"
        '<description>&lt;a href="story/2"&gt;more&lt;/a&gt;</description></item>',
        channel="<title>F</title><link>/</link>",
    )
    parsed = parse_feed(body, FEED_URL)
    assert parsed.link == "https://feeds.example.com/"
    assert parsed.entries[0].link == "https://feeds.example.com/news/1"
    # Links inside the summary resolve when it is sanitized, against the base feedparser saw.
    assert parsed.entries[0].base == FEED_URL
    [item] = items_from_feed(parsed, FEED_URL, "en", FETCHED)
    assert 'href="https://feeds.example.com/world/story/2"' in item.summary_html


def test_relative_links_in_a_summary_follow_xml_base() -> None:
    body = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"'
        b' xml:base="https://base.example/section/"><title>t</title><entry><id>e1</id>'
        b'<title>e</title><link href="a/1.html"/><content type="html">'
        b"&lt;a href=&quot;more.html&quot;&gt;more&lt;/a&gt;</content></entry></feed>"
    )
    [item] = items_from_feed(parse_feed(body, FEED_URL), FEED_URL, "en", FETCHED)
    assert item.link == "https://base.example/section/a/1.html"
    assert 'href="https://base.example/section/more.html"' in item.summary_html


def test_feed_title_markup_is_reduced_to_text_and_entry_script_never_survives() -> None:
    body = rss(
        "<item><title>&lt;b&gt;Budget&lt;/b&gt; passed&lt;script&gt;alert(1)&lt;/script&gt;</title>"
        "<link>/news/1</link><description>&lt;p onclick=&quot;x()&quot;&gt;Text&lt;/p&gt;"
        "&lt;script&gt;steal()&lt;/script&gt;</description></item>",
        channel="<title>&lt;img src=x onerror=alert(1)&gt;Dawn &lt;i&gt;News&lt;/i&gt;</title>",
    )
    parsed = parse_feed(body, FEED_URL)
    assert parsed.title == "Dawn News"
    [item] = items_from_feed(parsed, FEED_URL, "en", FETCHED)
    assert item.title == "Budget passed"
    assert item.summary_html == "<p>Text</p>"
    assert "steal" not in item.summary_text


def test_atom_entry_fields_fall_back_to_content_and_alternate_link() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
    <feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ur-PK"><title>F</title>
      <entry><id>tag:ex.com,2026:1</id><title type="html">&lt;b&gt;Title&lt;/b&gt;</title>
        <link rel="alternate" href="https://ex.com/1"/><author><name>Staff</name></author>
        <updated>2026-02-01T10:00:00+05:00</updated>
        <content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry></feed>"""
    parsed = parse_feed(body, FEED_URL)
    [entry] = parsed.entries
    assert entry.guid == "tag:ex.com,2026:1"
    assert entry.link == "https://ex.com/1"
    assert entry.summary == "<p>Body</p>"
    assert entry.author == "Staff"
    assert entry.language == "ur-PK"
    assert entry.published is None
    assert entry.updated == datetime(2026, 2, 1, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Sat, 28 Feb 2026 14:30:00 +0500", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        ("2026-02-28T09:30:00", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        ("Fri, 31 Dec 9999 00:00:00 GMT", None),
        ("Mon, 01 Jan 0001 00:00:00 GMT", None),
        ("Mon, 01 Jan 1900 00:00:00 GMT", datetime(1900, 1, 1, tzinfo=UTC)),
        ("yesterday-ish", None),
    ],
)
def test_dates_become_aware_utc_or_none(date: str, expected: datetime | None) -> None:
    parsed = parse_feed(rss(f"<item><title>t</title><pubDate>{date}</pubDate></item>"), FEED_URL)
    assert parsed.entries[0].published == expected


def test_nul_and_invalid_utf8_are_cleaned_at_parse_time() -> None:
    body = rss("<item><title>a&#0;b</title><description>x</description></item>").replace(
        b"<description>x", b"<description>\xff\xfe bad \xc3"
    )
    parsed = parse_feed(body, FEED_URL)
    assert_storable(parsed)


def test_only_the_newest_entries_are_kept_in_document_order() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    dated = [
        f"<item><title>d{i}</title>"
        f"<pubDate>{(start + timedelta(days=day)):%a, %d %b %Y %H:%M:%S} GMT</pubDate></item>"
        for i, day in enumerate([3, 9, 1, 7, 5])
    ]
    parsed = parse_feed(rss("".join(dated)), FEED_URL, max_entries=3)
    assert [entry.title for entry in parsed.entries] == ["d1", "d3", "d4"]
    undated = "".join(f"<item><title>u{i}</title></item>" for i in range(5))
    parsed = parse_feed(rss(undated + dated[0]), FEED_URL, max_entries=3)
    assert [entry.title for entry in parsed.entries] == ["u0", "u1", "d0"]


# --- feedparser only ever gets an in-memory stream ----------------------------------------------
def test_feedparser_is_only_ever_called_with_an_in_memory_byte_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    real_parse = feedparser.parse

    def spy(source: object, *args: object, **kwargs: object) -> Any:
        seen.append(source)
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(parse_module.feedparser, "parse", spy)
    bodies = [rss("<item><title>t</title></item>"), b"/etc/passwd", b"https://ex.com/feed"]
    if CORPUS.is_dir():
        bodies += [p.read_bytes() for p in corpus_files("wellformed/rss")[:20]]
    for body in bodies:
        with contextlib.suppress(FeedError):
            parse_feed(body, FEED_URL)
    assert len(seen) == len(bodies)
    assert all(isinstance(source, io.BytesIO) for source in seen)
    with pytest.raises(TypeError):
        parse_feed("/etc/passwd", FEED_URL)  # type: ignore[arg-type]


def test_a_body_that_names_a_local_file_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_bytes(rss("<item><title>SECRET</title></item>"))
    # feedparser.parse(bytes) would open() this path; parse_feed must treat it as text.
    with pytest.raises(FeedError) as caught:
        parse_feed(str(secret).encode(), FEED_URL)
    assert caught.value.outcome == "not_a_feed"


# --- P-06: runaway parses are killed ------------------------------------------------------------
def dense_feed(size: int) -> bytes:
    """One Atom entry whose XHTML content is ``size`` bytes of paragraphs: feedparser
    rebuilds XHTML element by element in Python, about 2 s per MB on this machine."""
    markup = b"<p>x</p>" * (size // 8)
    return (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Feed</title>'
        b'<entry><title>dense</title><content type="xhtml">'
        b'<div xmlns="http://www.w3.org/1999/xhtml">%s</div></content></entry></feed>'
    ).replace(b"%s", markup)


OK_FEED = rss("<item><title>fine</title><link>https://ex.com/1</link></item>")


@pytest.mark.parametrize("size", [2_000_000, 5_000_000], ids=["2MB", "5MB"])
def test_pool_kills_an_overrunning_parse_and_serves_the_next_feed(size: int) -> None:
    with ParsePool(workers=1, timeout=1.0, max_entries=200) as pool:
        assert pool.submit(OK_FEED, "https://ex.com/warm").result(timeout=30).entries
        started = time.monotonic()
        with pytest.raises(FeedError, match=r"parse time limit of 1 s exceeded") as caught:
            pool.submit(dense_feed(size), "https://ex.com/dense").result(timeout=30)
        assert caught.value.outcome == "parse_error"
        assert caught.value.url == "https://ex.com/dense"
        assert time.monotonic() - started < 3.5
        after = pool.submit(OK_FEED, "https://ex.com/next").result(timeout=30)
        assert [entry.title for entry in after.entries] == ["fine"]


def test_async_parse_lets_other_feeds_finish_while_one_is_killed() -> None:
    async def run() -> tuple[list[object], float]:
        with ParsePool(workers=2, timeout=1.5, max_entries=200) as pool:
            await pool.parse(OK_FEED, "https://ex.com/warm")
            started = time.monotonic()
            dense = asyncio.ensure_future(pool.parse(dense_feed(2_000_000), "https://ex.com/d"))
            fine = [await pool.parse(OK_FEED, f"https://ex.com/{i}") for i in range(3)]
            quick = time.monotonic() - started
            results: list[object] = [*fine, *(await asyncio.gather(dense, return_exceptions=True))]
            return results, quick

    results, quick = asyncio.run(run())
    assert quick < 1.0  # served by the other worker while the dense parse ran
    assert all(isinstance(result, ParsedFeed) for result in results[:3])
    assert isinstance(results[3], FeedError) and "parse time limit" in str(results[3])


def test_pool_reports_feed_errors_from_workers_with_their_outcome() -> None:
    with ParsePool(workers=1, timeout=5, max_entries=200) as pool:
        with pytest.raises(FeedError) as not_a_feed:
            pool.submit(b"<html><body>hi</body></html>", "https://ex.com/page").result(timeout=30)
        assert not_a_feed.value.outcome == "not_a_feed"
        with pytest.raises(FeedError) as broken:
            pool.submit(rss("<item><title>&#xD800;</title></item>"), "https://ex.com/x").result(30)
        assert broken.value.outcome == "parse_error"
        assert "UnicodeEncodeError" in broken.value.message


def test_cancelling_an_async_parse_frees_its_worker() -> None:
    async def run() -> ParsedFeed:
        with ParsePool(workers=1, timeout=30, max_entries=200) as pool:
            task = asyncio.ensure_future(pool.parse(dense_feed(2_000_000), "https://ex.com/d"))
            await asyncio.sleep(0.8)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await asyncio.wait_for(pool.parse(OK_FEED, "https://ex.com/ok"), timeout=3)

    assert asyncio.run(run()).entries


def test_pool_with_no_workers_parses_in_process() -> None:
    with ParsePool(workers=0, timeout=1, max_entries=1) as pool:
        assert pool.submit(OK_FEED, "https://ex.com/f").result().entries[0].title == "fine"
        with pytest.raises(FeedError):
            pool.submit(b"", "https://ex.com/empty").result()
        parsed = asyncio.run(pool.parse(OK_FEED, "https://ex.com/f"))
        assert parsed.entries[0].title == "fine"


# --- P-08: a 5,000-item feed ---------------------------------------------------------------------
_BIG_FEED_SCRIPT = """
import json, sys, time


def peak_kib():
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM")))

from datetime import UTC, datetime
from pipeline.adapters.parse import parse_feed
from pipeline.core.normalize import items_from_feed
body = open(sys.argv[1], "rb").read()
started = time.monotonic()
parsed = parse_feed(body, "https://ex.com/feed", "application/rss+xml", max_entries=200)
items = items_from_feed(parsed, "https://ex.com/feed", "en", datetime.now(UTC))
print(json.dumps({
    "seconds": time.monotonic() - started,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would include the
    # pytest worker that forked this process.
    "max_rss_mb": peak_kib() / 1024,
    "titles": [item.title for item in items],
}))
"""


def test_a_5000_item_feed_keeps_the_newest_200_quickly_and_in_bounded_memory(
    tmp_path: Path,
) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8
    # Document order is shuffled against date order, so "newest" is really by date.
    order = [(i * 7919) % 5000 for i in range(5000)]
    items = "".join(
        f"<item><title>Item {n}</title><link>https://ex.com/n/{n}?utm_source=rss</link>"
        f"<guid>https://ex.com/n/{n}</guid>"
        f"<pubDate>{start + timedelta(hours=n):%a, %d %b %Y %H:%M:%S} GMT</pubDate>"
        f"<description>&lt;p&gt;{filler}&lt;/p&gt;</description></item>"
        for n in order
    )
    body = rss(items)
    assert len(body) > 3_000_000
    path = tmp_path / "big.xml"
    path.write_bytes(body)
    completed = subprocess.run(
        [sys.executable, "-c", _BIG_FEED_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    report = json.loads(completed.stdout)
    # P-08's 5 s budget is a speed target, measured by the benchmarks (BENCHMARKS.md) on a
    # quiet machine; here only a hang guard, since CI shares two cores with other work.
    assert report["seconds"] < 30
    assert report["max_rss_mb"] < 150
    assert sorted(report["titles"]) == sorted(f"Item {n}" for n in range(4800, 5000))
