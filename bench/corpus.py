"""Deterministic benchmark feeds: about 50 entries and about 100 KB per document.

Text comes from the real items bundled for the demo (``pipeline/demo_data/feeds``: titles,
summaries and links published by the outlets in ``config/feeds.toml``), so markup, lengths
and scripts (English and Urdu) look like the feeds qasid polls. Every feed is RSS 2.0 or Atom
(one in five), each entry has a title, a tracked link, a GUID, a date, an author, categories
and an HTML description of a few paragraphs, a link and an image (which the sanitizer drops).
A few stories appear in several feeds under one URL, as wire copy does.

``document(feed, version)`` is a pure function of its arguments: version ``v`` holds entries
``5v .. 5v+49`` (newest first), so each new version adds five stories and drops five.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from importlib import resources

import feedparser

ENTRIES = 50
NEW_PER_VERSION = 5
SHARED_EVERY = 25  # one entry in 25 links to a story that several feeds carry
_BASE_TIME = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Source:
    title: str
    summary: str
    link: str
    urdu: bool


@cache
def sources() -> tuple[tuple[Source, ...], tuple[Source, ...]]:
    """(English-ish sources, Urdu sources) from the bundled demo feeds."""
    english: list[Source] = []
    urdu: list[Source] = []
    folder = resources.files("pipeline.demo_data") / "feeds"
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith((".rss", ".atom")):
            continue
        parsed = feedparser.parse(path.read_bytes(), sanitize_html=False)
        for entry in parsed.entries:
            title = entry.get("title") or ""
            summary = entry.get("summary") or title
            link = entry.get("link") or ""
            if not title or not link:
                continue
            is_urdu = "urdu" in path.name
            (urdu if is_urdu else english).append(Source(title, summary, link, is_urdu))
    if not english or not urdu:
        raise RuntimeError("the demo feeds under pipeline/demo_data/feeds are missing")
    return tuple(english), tuple(urdu)


def is_atom(feed: int) -> bool:
    return feed % 5 == 4


def is_urdu(feed: int) -> bool:
    return feed % 20 == 7


def _entry_fields(feed: int, j: int) -> dict[str, str]:
    english, urdu = sources()
    rng = random.Random(feed * 1_000_003 + j)
    pool = urdu if is_urdu(feed) else english
    lead = rng.choice(pool)
    extra = 8 if is_urdu(feed) else 5  # Urdu summaries in the demo data are shorter
    paragraphs = [lead.summary] + [rng.choice(pool).summary for _ in range(extra)]
    host = f"news{feed % 97}.example.com"
    slug = "-".join(lead.link.rstrip("/").rsplit("/", 1)[-1].split("-")[:6]) or "story"
    if j % SHARED_EVERY == 3:
        link = f"https://wire.example.org/{j}/{slug}"  # the same story in many feeds
    else:
        link = f"https://{host}/{feed}/{j}/{slug}"
    when = _BASE_TIME + timedelta(minutes=7 * j + feed % 60)
    body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs[:-1])
    body += (
        f'<p>{html.escape(paragraphs[-1])} <a href="{link}?utm_source=feed&amp;ref=rss">'
        "Read more</a></p>\n"
        f'<img src="https://{host}/img/{j}.jpg" width="640" height="360" alt="" />'
    )
    return {
        "title": f"{lead.title} ({j})",
        "link": f"{link}?utm_source=rss&utm_medium=feed&utm_campaign=latest",
        "guid": f"{host}:{feed}:{j}",
        "date": format_datetime(when, usegmt=True),
        "iso": when.isoformat().replace("+00:00", "Z"),
        "author": rng.choice(("Staff Reporter", "News Desk", "Our Correspondent", "APP")),
        "category": rng.choice(("Pakistan", "World", "Business", "Politics", "National")),
        "html": body,
    }


def _rss_entry(fields: dict[str, str]) -> str:
    esc = html.escape
    return (
        "<item>\n"
        f"  <title>{esc(fields['title'], quote=False)}</title>\n"
        f"  <link>{esc(fields['link'], quote=False)}</link>\n"
        f'  <guid isPermaLink="false">{esc(fields["guid"], quote=False)}</guid>\n'
        f"  <pubDate>{fields['date']}</pubDate>\n"
        f"  <dc:creator>{esc(fields['author'], quote=False)}</dc:creator>\n"
        f"  <category>{fields['category']}</category>\n"
        f"  <description><![CDATA[{fields['html']}]]></description>\n"
        "</item>\n"
    )


def _atom_entry(fields: dict[str, str]) -> str:
    esc = html.escape
    return (
        "<entry>\n"
        f"  <id>tag:{esc(fields['guid'])}</id>\n"
        f'  <title type="text">{esc(fields["title"], quote=False)}</title>\n'
        f'  <link rel="alternate" type="text/html" href="{esc(fields["link"])}"/>\n'
        f"  <published>{fields['iso']}</published>\n"
        f"  <updated>{fields['iso']}</updated>\n"
        f"  <author><name>{esc(fields['author'], quote=False)}</name></author>\n"
        f'  <category term="{fields["category"]}"/>\n'
        f'  <summary type="html">{esc(fields["html"], quote=False)}</summary>\n'
        "</entry>\n"
    )


def document(feed: int, version: int = 0) -> bytes:
    """The whole feed document ``feed`` at ``version``, as UTF-8 bytes."""
    first = version * NEW_PER_VERSION
    newest_first = range(first + ENTRIES - 1, first - 1, -1)
    language = "ur" if is_urdu(feed) else "en"
    title = f"Benchmark feed {feed}"
    site = f"https://news{feed % 97}.example.com/{feed}/"
    if is_atom(feed):
        entries = "".join(_atom_entry(_entry_fields(feed, j)) for j in newest_first)
        text = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{language}">\n'
            f"<id>{site}</id>\n<title>{title}</title>\n"
            f'<link rel="alternate" href="{site}"/>\n'
            f"<updated>{_BASE_TIME.isoformat()}</updated>\n{entries}</feed>\n"
        )
    else:
        entries = "".join(_rss_entry(_entry_fields(feed, j)) for j in newest_first)
        text = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
            f"<title>{title}</title>\n<link>{site}</link>\n"
            f"<description>Feed {feed} for qasid's benchmark</description>\n"
            f"<language>{language}</language>\n{entries}</channel>\n</rss>\n"
        )
    return text.encode("utf-8")


def feed_path(feed: int) -> str:
    return f"/feeds/{feed}.xml"
