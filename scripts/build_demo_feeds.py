"""Build the demo's snapshot feeds from the labeled development corpus.

    python scripts/build_demo_feeds.py [CORPUS]    # default: ../shared/corpus/dev.jsonl

Writes one feed file per source group into pipeline/demo_data/feeds/ (RSS 2.0 and Atom 1.0
in turn, so the demo exercises both parsers) and pipeline/demo_data/feeds.toml listing them
with the outlets' real metadata. Items keep their real titles, summaries, links and dates;
the corpus labels (relevant, us_link, themes, note) are never copied, so the demo tags the
items itself. The output depends only on the corpus: rebuilding changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dev.jsonl"
DEMO_DATA = REPO / "pipeline" / "demo_data"
ATOM_NS = "http://www.w3.org/2005/Atom"
SEARCH_MARK = "search-tool pages corpus"  # feed_url of items found through news search
GENERATOR = "qasid scripts/build_demo_feeds.py"
SEARCH_PAGE = "https://news.google.com/search?q=Pakistan+United+States"
# XML 1.0 forbids these characters even escaped; one in a title would break the whole file.
INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Group:
    """One snapshot feed: which corpus items it holds and what the real outlet is."""

    slug: str
    title: str
    sources: frozenset[str]  # corpus "source" names; empty for the search group
    origin_url: str  # the real feed the items came from; "" for search results
    site_url: str
    language: str
    country: str
    kind: str


@dataclass
class Snapshot:
    group: Group
    fmt: str  # "rss" or "atom"
    items: list[dict[str, str]] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{self.group.slug}.{self.fmt}"


GROUPS: tuple[Group, ...] = (
    Group(
        "pakistan-observer",
        "Pakistan Observer",
        frozenset({"Pakistan Observer"}),
        "https://pakobserver.net/feed/",
        "https://pakobserver.net/",
        "en",
        "PK",
        "newspaper",
    ),
    Group(
        "al-jazeera",
        "Al Jazeera English",
        frozenset({"Al Jazeera"}),
        "https://www.aljazeera.com/xml/rss/all.xml",
        "https://www.aljazeera.com/",
        "en",
        "QA",
        "broadcaster",
    ),
    Group(
        "washington-post-world",
        "The Washington Post – World",
        frozenset({"Washington Post"}),
        "https://feeds.washingtonpost.com/rss/world",
        "https://www.washingtonpost.com/world/",
        "en",
        "US",
        "newspaper",
    ),
    Group(
        "bbc-news-asia",
        "BBC News – Asia",
        frozenset({"BBC News"}),
        "https://feeds.bbci.co.uk/news/world/asia/rss.xml",
        "https://www.bbc.com/news/world/asia",
        "en",
        "GB",
        "broadcaster",
    ),
    Group(
        "voa-urdu",
        "VOA Urdu",
        frozenset({"VOA Urdu"}),
        "https://www.urduvoa.com/api/zrqomtmopp",
        "https://www.urduvoa.com/",
        "ur",
        "US",
        "broadcaster",
    ),
    Group(
        "nbc-news-world",
        "NBC News – World",
        frozenset({"NBC News"}),
        "https://feeds.nbcnews.com/nbcnews/public/world",
        "https://www.nbcnews.com/world",
        "en",
        "US",
        "broadcaster",
    ),
    Group(
        "times-of-india",
        "The Times of India – Top Stories",
        frozenset({"Times of India"}),
        "https://timesofindia.indiatimes.com/rssfeedstopstories.cms",
        "https://timesofindia.indiatimes.com/",
        "en",
        "IN",
        "newspaper",
    ),
    Group(
        "geo-news",
        "Geo News",
        frozenset({"Geo News"}),
        "https://www.geo.tv/rss/1/1",
        "https://www.geo.tv/",
        "en",
        "PK",
        "broadcaster",
    ),
    # Found by web searches on US-Pakistan topics, not taken from one feed.
    Group(
        "news-search",
        "News search: Pakistan and the United States",
        frozenset(),
        "",
        "",
        "en",
        "",
        "search",
    ),
    # One item each in the corpus; kept so that no real item is left out of the demo.
    Group(
        "nyt-world",
        "The New York Times – World",
        frozenset({"New York Times"}),
        "https://rss.nytimes.com/services/xml/rss/nyt/World.xml",
        "https://www.nytimes.com/section/world",
        "en",
        "US",
        "newspaper",
    ),
    Group(
        "sky-news-world",
        "Sky News – World",
        frozenset({"Sky News"}),
        "https://feeds.skynews.com/feeds/rss/world.xml",
        "https://news.sky.com/world",
        "en",
        "GB",
        "broadcaster",
    ),
    Group(
        "the-intercept",
        "The Intercept",
        frozenset({"The Intercept"}),
        "https://theintercept.com/feed/?lang=en",
        "https://theintercept.com/",
        "en",
        "US",
        "magazine",
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=DEMO_DATA, help="demo_data directory")
    args = parser.parse_args(argv)
    snapshots = group_items(read_corpus(args.corpus))
    feeds_dir = args.out / "feeds"
    feeds_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*feeds_dir.glob("*.rss"), *feeds_dir.glob("*.atom")]:
        stale.unlink()
    for snapshot in snapshots:
        body = render_rss(snapshot) if snapshot.fmt == "rss" else render_atom(snapshot)
        (feeds_dir / snapshot.filename).write_bytes(body)
        print(f"{snapshot.filename}: {len(snapshot.items)} items")
    (args.out / "feeds.toml").write_text(render_feeds_toml(snapshots), encoding="utf-8")
    return 0


def read_corpus(path: Path) -> list[dict[str, str]]:
    """The corpus rows with only the fields a feed carries; the labels stay behind."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows.append(
                    {
                        key: INVALID_XML.sub("", str(row.get(key) or ""))
                        for key in ("source", "feed_url", "published", "title", "summary", "link")
                    }
                )
    return rows


def group_items(rows: Iterable[dict[str, str]]) -> list[Snapshot]:
    """Sort rows into the groups' snapshots, newest first; RSS and Atom alternate."""
    snapshots = [Snapshot(g, "rss" if i % 2 == 0 else "atom") for i, g in enumerate(GROUPS)]
    by_source = {name: s for s in snapshots for name in s.group.sources}
    search = next(s for s in snapshots if s.group.kind == "search")
    for row in rows:
        if row["feed_url"].startswith(SEARCH_MARK):
            search.items.append(row)
        elif row["source"] in by_source:
            by_source[row["source"]].items.append(row)
        else:
            raise SystemExit(f"no demo feed for source {row['source']!r}; add a Group for it")
    for snapshot in snapshots:
        # Undated items go last, as a feed reader would show them; the sort is stable.
        snapshot.items.sort(key=lambda row: parse_date(row["published"]) or _EPOCH, reverse=True)
    return [s for s in snapshots if s.items]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_date(text: str) -> datetime | None:
    """The corpus mixes full timestamps and bare dates; a bare date is taken as 00:00 UTC."""
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def render_rss(snapshot: Snapshot) -> bytes:
    group = snapshot.group
    rss = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(rss, "channel")
    _text(channel, "title", group.title)
    _text(channel, "link", _home(group))
    _text(channel, "description", _description(group))
    _text(channel, "language", group.language)
    newest = _newest(snapshot.items)
    if newest:
        _text(channel, "lastBuildDate", format_datetime(newest, usegmt=True))
    _text(channel, "generator", GENERATOR)
    for row in snapshot.items:
        item = ET.SubElement(channel, "item")
        _text(item, "title", row["title"])
        _text(item, "link", row["link"])
        ET.SubElement(item, "guid", {"isPermaLink": "true"}).text = row["link"]
        published = parse_date(row["published"])
        if published:
            _text(item, "pubDate", format_datetime(published, usegmt=True))
        if row["summary"]:
            _text(item, "description", row["summary"])
        if group.kind == "search":
            # As news-search feeds do: name the outlet each result came from.
            ET.SubElement(item, "source", {"url": _origin(row["link"])}).text = row["source"]
    return _serialise(rss)


def render_atom(snapshot: Snapshot) -> bytes:
    group = snapshot.group
    feed = ET.Element("feed", {"xmlns": ATOM_NS, "xml:lang": group.language})
    _text(feed, "id", group.origin_url or _home(group))
    _text(feed, "title", group.title)
    _text(feed, "subtitle", _description(group))
    ET.SubElement(feed, "link", {"rel": "alternate", "href": _home(group)})
    newest = _newest(snapshot.items)
    if newest:  # required by RFC 4287, but there is no honest value when no item is dated
        _text(feed, "updated", _rfc3339(newest))
    _text(feed, "generator", GENERATOR)
    for row in snapshot.items:
        entry = ET.SubElement(feed, "entry")
        _text(entry, "id", row["link"])
        ET.SubElement(entry, "title", {"type": "text"}).text = row["title"]
        ET.SubElement(entry, "link", {"rel": "alternate", "type": "text/html", "href": row["link"]})
        published = parse_date(row["published"])
        if published:
            _text(entry, "published", _rfc3339(published))
            _text(entry, "updated", _rfc3339(published))
        if row["summary"]:
            ET.SubElement(entry, "summary", {"type": "text"}).text = row["summary"]
    return _serialise(feed)


def render_feeds_toml(snapshots: Iterable[Snapshot]) -> str:
    lines = [
        "# The demo's feeds: snapshots of real outlets' feeds, served from demo_data/feeds/ by",
        "# `qasid demo` on 127.0.0.1. {port} is a placeholder the demo replaces with the port",
        "# its snapshot server listens on. Generated by scripts/build_demo_feeds.py.",
    ]
    for snapshot in snapshots:
        group = snapshot.group
        lines += ["", "[[feed]]", f'url = "http://127.0.0.1:{{port}}/{snapshot.filename}"']
        lines.append(f"title = {_toml_string(group.title)}")
        lines.append(f'language = "{group.language}"')
        if group.country:
            lines.append(f'country = "{group.country}"')
        lines.append(f'kind = "{group.kind}"')
        lines.append("interval_minutes = 30")
        if group.site_url:
            lines.append(f"site_url = {_toml_string(group.site_url)}")
    return "\n".join(lines) + "\n"


def _description(group: Group) -> str:
    if not group.origin_url:
        return "Real news items found by web searches on US-Pakistan topics, for qasid's demo."
    return f"Real items published by {group.title}, bundled for qasid's offline demo."


def _home(group: Group) -> str:
    # RSS wants a channel link; a search has no site, so give the equivalent search page.
    return group.site_url or group.origin_url or SEARCH_PAGE


def _newest(items: Iterable[dict[str, str]]) -> datetime | None:
    dates = [d for d in (parse_date(row["published"]) for row in items) if d]
    return max(dates) if dates else None


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _origin(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.scheme}://{parts.netloc}/"


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _serialise(root: ET.Element) -> bytes:
    # ElementTree escapes &, < and > in text and quotes in attributes; read_corpus has
    # already dropped the characters XML cannot carry at all.
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


if __name__ == "__main__":
    sys.exit(main())
