"""parse_feed_since: feedparser sees only the entries whose bytes changed, and what it gives
back is exactly what a full parse gives for those entries (the property, on the feedparser
corpus, on benchmark feeds and on generated changes), with the same channel; every case the
splice could get wrong falls back to the full parse."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bench import corpus as bench_corpus
from pipeline.adapters import parse as parse_module
from pipeline.adapters.parse import (
    EntryHashes,
    ParsePool,
    PartialParse,
    parse_feed,
    parse_feed_since,
)
from pipeline.core.errors import FeedError
from pipeline.core.models import ParsedFeed

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "testdata" / "feedparser-corpus"
URL = "https://feeds.example.com/world/rss.xml"
NEWS = "https://news.example/"

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"feedparser corpus not found at {CORPUS} (shared/testdata)"
)


def rss(*items: str, channel: str = "<title>Feed</title>", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>{channel}'
        + "\n".join(items)
        + "</channel></rss>"
    ).encode()


def item(n: int, *, guid: str | None = None, text: str = "", link: str | None = None) -> str:
    """An RSS item; ``guid=""`` leaves the GUID out."""
    guid = f"story-{n}" if guid is None else guid
    return (
        f"<item><title>Story {n}</title><link>{link or f'https://news.example/{n}'}</link>"
        + (f"<guid>{guid}</guid>" if guid else "")
        + f"<pubDate>Sat, 28 Nov 2026 {n % 24:02d}:00:00 GMT</pubDate>"
        f"<pubDate>Sat, 28 Nov 2026 {n % 24:02d}:00:00 GMT</pubDate>"
        f"<description>Summary of story {n}{text}</description></item>"
    )


def entry_hashes(body: bytes, content_type: str | None = None) -> tuple[int, ...]:
    split = parse_module._split_entries(
        parse_module._defuse_entities(body), URL, content_type, parse_module.DEFAULT_MAX_ENTRIES
    )
    assert split is not None
    return split.hashes


def channel(feed: ParsedFeed) -> ParsedFeed:
    return dataclasses.replace(feed, entries=())


def check_splice(
    old: bytes,
    new: bytes,
    content_type: str | None = None,
    known: set[int] | None = None,
    url: str = URL,
) -> str:
    """Parse ``new`` remembering ``old``'s entries (those at the positions ``known``, or
    all), and check the property against full parses. Returns "fallback" (nothing to
    remember), "full" (parsed whole) or "partial"."""
    try:
        old_full = parse_feed(old, url, content_type)
    except FeedError as error:
        with pytest.raises(FeedError) as raised:
            parse_feed_since(old, url, content_type)
        assert (raised.value.message, raised.value.outcome) == (error.message, error.outcome)
        return "fallback"
    first = parse_feed_since(old, url, content_type)
    assert first.feed == old_full and first.skipped == 0
    if first.hashes is None:
        return "fallback"
    old_hashes = entry_hashes(old, content_type)
    stored = first.hashes.keys
    remembered = {
        h: stored[h]
        for index, h in enumerate(old_hashes)
        if (known is None or index in known) and h in stored
    }
    previous = EntryHashes.of(first.hashes.context, remembered)
    old_entries = dict(zip(old_hashes, old_full.entries, strict=True))

    new_full = parse_feed(new, url, content_type)
    result = parse_feed_since(new, url, content_type, previous=previous)
    fresh_start = parse_feed_since(new, url, content_type)
    assert result.hashes == fresh_start.hashes  # what is remembered does not depend on memory
    if result.skipped == 0 and len(result.feed.entries) == len(new_full.entries):
        assert result.feed == new_full
        return "full"
    new_hashes = entry_hashes(new, content_type)
    fresh = [index for index, h in enumerate(new_hashes) if h not in remembered]
    assert result.skipped == len(new_hashes) - len(fresh)
    assert result.feed.entries == tuple(new_full.entries[index] for index in fresh)
    assert channel(result.feed) == channel(new_full)
    for index, h in enumerate(new_hashes):  # what was skipped parses as it did last time
        if h in remembered:
            assert new_full.entries[index] == old_entries[h]
    return "partial"


# --- the feedparser corpus ------------------------------------------------------------------
_HEADER = re.compile(rb"^Header:\s*Content-type:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def corpus_cases() -> list[tuple[Path, str | None]]:
    files = sorted(p for p in CORPUS.rglob("*.xml") if p.is_file())
    cases: list[tuple[Path, str | None]] = []
    for path in files:
        header = _HEADER.search(path.read_bytes()[:2000])
        content_type = header.group(1).decode("ascii", "replace") if header else None
        cases.append((path, content_type))
    return cases


def mutate_entry(body: bytes, content_type: str | None, index: int) -> bytes | None:
    """The document with a newline added inside the ``index``-th entry, before its end tag."""
    split = parse_module._split_entries(
        parse_module._defuse_entities(body), URL, content_type, parse_module.DEFAULT_MAX_ENTRIES
    )
    if split is None or parse_module._defuse_entities(body) != body:
        return None
    start, end = split.spans[index]
    closing = body.rfind(b"</", start, end)
    return body[:closing] + b"\n" + body[closing:]


_INERT_START = re.compile(rb"<(title|description|subtitle|lastBuildDate|updated|generator|id)>")


def mutate_channel(body: bytes, content_type: str | None) -> bytes | None:
    """The document with text added to a channel element before the entries that cannot
    affect them (its title, its description, ...)."""
    split = parse_module._split_entries(
        parse_module._defuse_entities(body), URL, content_type, parse_module.DEFAULT_MAX_ENTRIES
    )
    if split is None or parse_module._defuse_entities(body) != body:
        return None
    match = _INERT_START.search(body, 0, split.spans[0][0])
    if match is None:
        return None
    return body[: match.end()] + b"Changed " + body[match.end() :]


@needs_corpus
def test_every_corpus_document_falls_back_or_parses_its_new_entries_as_a_full_parse_would() -> None:
    outcomes: dict[str, int] = {"fallback": 0, "full": 0, "partial": 0}
    for path, content_type in corpus_cases():
        body = path.read_bytes()
        try:
            for known in (None, set(), {0}, set(range(1, 200, 2))):
                outcomes[check_splice(body, body, content_type, known)] += 1
            for index in (0, -1):
                changed = mutate_entry(body, content_type, index)
                if changed is not None:
                    outcomes[check_splice(body, changed, content_type)] += 1
            renamed = mutate_channel(body, content_type)
            if renamed is not None:
                outcomes[check_splice(body, renamed, content_type)] += 1
        except AssertionError as error:
            raise AssertionError(f"{path.relative_to(CORPUS)}: {error}") from error
    # The property was checked on many splices, not just on fallbacks.
    assert outcomes["partial"] > 2000, outcomes
    assert outcomes["fallback"] > 100, outcomes


@needs_corpus
def test_ill_formed_corpus_documents_fall_back_and_stay_bozo() -> None:
    checked = 0
    for path in sorted((CORPUS / "illformed").rglob("*.xml")):
        body = path.read_bytes()
        try:
            full = parse_feed(body, URL)
        except FeedError:
            continue
        result = parse_feed_since(body, URL, previous=EntryHashes.of(0, {}))
        assert result.feed == full, path
        if full.bozo:
            assert result.hashes is None and full.bozo_reason, path
            checked += 1
    assert checked >= 10


# --- benchmark feeds and generated changes ------------------------------------------------
@pytest.mark.parametrize("feed", [0, 4, 7, 24])  # RSS, Atom, Urdu RSS, Atom
def test_benchmark_feed_versions_parse_only_their_new_entries(feed: int) -> None:
    url = f"http://127.0.0.2/feeds/{feed}.xml"
    for version in range(3):
        old = bench_corpus.document(feed, version)
        new = bench_corpus.document(feed, version + 1)
        assert check_splice(old, new, "application/rss+xml", url=url) == "partial"
        previous = parse_feed_since(old, url).hashes
        result = parse_feed_since(new, url, previous=previous)
        assert (result.skipped, len(result.feed.entries)) == (45, 5)
        assert result.feed.entries == parse_feed(new, url).entries[:5]


def test_nothing_changed_gives_the_channel_and_no_entries() -> None:
    body = rss(item(1), item(2), channel="<title>Dawn</title><language>ur</language>")
    first = parse_feed_since(body, URL)
    again = parse_feed_since(body, URL, previous=first.hashes)
    assert again.skipped == 2 and again.feed.entries == ()
    assert channel(again.feed) == channel(parse_feed(body, URL))
    assert again.hashes == first.hashes


def test_a_changed_entry_with_the_same_guid_is_parsed_again() -> None:
    old = rss(item(1), item(2), item(3))
    new = rss(item(1), item(2, text=" (corrected)"), item(3))
    assert check_splice(old, new) == "partial"
    result = parse_feed_since(new, URL, previous=parse_feed_since(old, URL).hashes)
    [changed] = result.feed.entries
    assert changed == parse_feed(new, URL).entries[1]
    assert changed.summary == "Summary of story 2 (corrected)"


def test_generated_changes_keep_the_property() -> None:
    items = [item(n) for n in range(12)]
    old = rss(*items)
    changes = [
        rss(item(12), *items[:-1]),  # one new, one dropped
        rss(*reversed(items)),  # reordered
        rss(*items[:5], item(5, text="!"), *items[6:]),  # one edited
        rss(*items, *items[:2]),  # an entry repeated byte for byte
        rss(*items, channel="<title>Renamed</title><lastBuildDate>now</lastBuildDate>"),
        rss(item(40), *items[::2]),
    ]
    for new in changes:
        for known in (None, {0, 1, 2}, set(range(0, 12, 3))):
            assert check_splice(old, new, known=known) in {"partial", "full"}


def test_a_new_entry_repeating_a_skipped_entrys_guid_falls_back_to_the_full_parse() -> None:
    old = rss(item(1), item(2))
    bare = rss(item(1, guid=""), item(2, guid=""))
    for before, new in (
        (old, rss(item(1), item(3, guid="story-1"), item(2))),  # after the skipped one: it loses
        (old, rss(item(3, guid="story-2"), item(1), item(2))),  # before it: it wins
        # no GUIDs: the same canonical link is the same item
        (
            bare,
            rss(item(1, guid=""), item(3, guid="", link=f"{NEWS}1?utm_source=x"), item(2, guid="")),
        ),
        (bare, rss(item(1, guid=""), item(3, guid=f"{NEWS}1"))),
    ):
        result = parse_feed_since(new, URL, previous=parse_feed_since(before, URL).hashes)
        assert result.skipped == 0
        assert result.feed == parse_feed(new, URL)
        assert result.hashes == parse_feed_since(new, URL).hashes


def test_more_entries_than_max_entries_are_parsed_whole_and_not_remembered() -> None:
    small = rss(*(item(n) for n in range(3)))
    big = rss(*(item(n) for n in range(5)))
    previous = parse_feed_since(small, URL, max_entries=3).hashes
    assert previous is not None
    result = parse_feed_since(big, URL, max_entries=3, previous=previous)
    assert result == PartialParse(parse_feed(big, URL, max_entries=3), None)


def test_ill_formed_document_falls_back_and_keeps_its_bozo_reason() -> None:
    old = rss(item(1), item(2))
    broken = rss(item(1), item(2), item(3).replace("Story 3", "Story & 3"))
    result = parse_feed_since(broken, URL, previous=parse_feed_since(old, URL).hashes)
    full = parse_feed(broken, URL)
    assert full.bozo and full.bozo_reason
    assert result == PartialParse(full, None)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (rss(item(1), item(2)).replace(b"utf-8", b"iso-8859-1"), None),
        (rss(item(1), item(2)), "application/xml; charset=windows-1252"),
        (rss(item(1), item(2)).replace(b"utf-8", b"utf-16").decode().encode("utf-16"), None),
        # namespace declared inside an entry: feedparser tracks it document-wide
        (rss(item(1), item(2).replace("<item>", '<item xmlns:x="urn:x">')), None),
        (rss(item(1), "<!-- between -->", item(2)), None),  # not contiguous
        (rss(item(1), "<item/>"), None),  # an empty entry: its end is not reported
        (rss(item(1), f"<item>{item(2)}</item>"), None),  # nested entries
        (rss(channel="<title>No entries</title>"), None),
    ],
)
def test_documents_the_splice_could_break_are_parsed_whole(
    body: bytes, content_type: str | None
) -> None:
    assert parse_module._split_entries(
        parse_module._defuse_entities(body), URL, content_type, 200
    ) is None or not parse_module._splice_encoding_ok(body, content_type)
    result = parse_feed_since(body, URL, content_type, previous=EntryHashes.of(0, {}))
    assert result == PartialParse(parse_feed(body, URL, content_type), None)


def test_a_changed_context_means_a_full_parse() -> None:
    old = rss(item(1), item(2), channel="<title>F</title><language>en</language>")
    previous = parse_feed_since(old, URL).hashes
    assert previous is not None
    for new, url, content_type in (
        (rss(item(1), item(2), channel="<title>F</title><language>ur</language>"), URL, None),
        (old, "https://elsewhere.example/rss.xml", None),
        (old, URL, "text/xml"),
        (old.replace(b"<rss ", b'<rss xml:base="https://b.example/" '), URL, None),
    ):
        result = parse_feed_since(new, url, content_type, previous=previous)
        assert result.skipped == 0
        assert result.feed == parse_feed(new, url, content_type)


def test_namespaced_atom_and_rdf_entries_are_split() -> None:
    atom = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<a:feed xmlns:a="http://www.w3.org/2005/Atom"><a:title>T</a:title>'
        + b"".join(
            f"<a:entry><a:id>tag:{n}</a:id><a:title>E{n}</a:title>"
            f'<a:link href="https://ex.com/{n}"/></a:entry>'.encode()
            for n in range(3)
        )
        + b"</a:feed>"
    )
    rdf = (
        b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        b' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="https://ex.com/">'
        b"<title>R</title><link>https://ex.com/</link></channel>"
        + b"".join(
            f'<item rdf:about="https://ex.com/{n}"><title>I{n}</title>'
            f"<link>https://ex.com/{n}</link></item>\n".encode()
            for n in range(3)
        )
        + b"</rdf:RDF>"
    )
    for body in (atom, rdf):
        assert len(entry_hashes(body)) == 3
        for known in ({0}, {1, 2}, {0, 1, 2}):
            assert check_splice(body, body, known=known) == "partial"


def test_the_pool_runs_parse_since_in_its_workers() -> None:
    old = rss(item(1), item(2))
    new = rss(item(3), item(1), item(2))
    with ParsePool(workers=1, timeout=5) as pool:
        first = pool.submit_since(old, URL).result(timeout=30)
        second = pool.submit_since(new, URL, None, first.hashes).result(timeout=30)
        with pytest.raises(FeedError) as raised:
            pool.submit_since(b"<html><body>hi</body></html>", URL).result(timeout=30)
    assert raised.value.outcome == "not_a_feed"
    assert second.skipped == 2
    assert second.feed.entries == parse_feed(new, URL).entries[:1]


def test_atom_entries_with_inline_xhtml_are_split() -> None:
    """The XHTML default namespace declared in each entry's content changes nothing
    feedparser tracks document-wide; another prefix for a namespace does."""

    def atom(*ids: int, prefix: str = "") -> bytes:
        colon = f"{prefix}:" if prefix else ""
        declaration = f"xmlns{':' + prefix if prefix else ''}"
        return (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            "<title>X</title>"
            + "".join(
                f"<entry><id>tag:{n}</id><title>E{n}</title>"
                f'<content type="xhtml"><{colon}div {declaration}="http://www.w3.org/1999/xhtml">'
                f"<{colon}p>Body <{colon}b>{n}</{colon}b></{colon}p></{colon}div></content></entry>"
                for n in ids
            )
            + "</feed>"
        ).encode()

    assert check_splice(atom(1, 2, 3), atom(4, 1, 2, 3)) == "partial"
    assert check_splice(atom(1, 2, 3), atom(1, 2, 3), known={1}) == "partial"
    assert parse_feed_since(atom(1, 2, prefix="h"), URL).hashes is None


def test_an_entry_that_lost_its_guid_to_an_earlier_one_is_parsed_again_next_time() -> None:
    old = rss(item(3, guid="story-1"), item(1), item(2))
    remembered = parse_feed_since(old, URL).hashes
    assert remembered is not None and len(remembered.keys) == 2  # not item 1: it lost
    new = rss(item(1), item(2))  # the impostor is gone: item 1's item must be stored now
    result = parse_feed_since(new, URL, previous=remembered)
    assert result.skipped == 1
    assert result.feed.entries == parse_feed(new, URL).entries[:1]
