"""The configured feed list: the shipped defaults load, and bad entries say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters.opml import write_opml
from pipeline.core.errors import ConfigError
from pipeline.core.models import FeedSource
from pipeline.settings import PROJECT_ROOT
from pipeline.sources import KINDS, load_feed_sources, read_feeds_toml, source_lookup

SHIPPED = PROJECT_ROOT / "config" / "feeds.toml"
DEMO = PROJECT_ROOT / "pipeline" / "demo_data" / "feeds.toml"


def write(tmp_path: Path, text: str, name: str = "feeds.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_feeds_load_with_every_kind_and_both_languages() -> None:
    sources = load_feed_sources(SHIPPED, 30)
    assert len(sources) >= 25
    assert {s.kind for s in sources} == KINDS
    assert {s.language for s in sources} == {"en", "ur"}
    assert all(s.title and s.kind and s.interval_minutes for s in sources)
    assert all(s.country for s in sources if s.kind != "search")


def test_shipped_feeds_include_the_sources_the_field_needs() -> None:
    urls = {s.url for s in load_feed_sources(SHIPPED, 30)}
    assert "https://pakobserver.net/feed/" in urls
    assert "https://feeds.bbci.co.uk/news/world/asia/rss.xml" in urls
    assert "https://www.aljazeera.com/xml/rss/all.xml" in urls
    assert "https://timesofindia.indiatimes.com/rssfeedstopstories.cms" in urls
    assert (
        "https://news.google.com/rss/search?q=Pakistan+United+States&hl=en-US&gl=US&ceid=US:en"
        in urls
    )
    assert (
        "https://www.federalregister.gov/api/v1/documents.rss?conditions%5Bterm%5D=Pakistan" in urls
    )


def test_demo_feeds_load_once_the_port_is_filled_in() -> None:
    text = DEMO.read_text(encoding="utf-8").replace("{port}", "8765")
    sources = read_feeds_toml(text, str(DEMO), 30)
    assert len(sources) >= 9
    assert all(s.url.startswith("http://127.0.0.1:8765/") for s in sources)
    assert {s.language for s in sources} == {"en", "ur"}
    assert "search" in {s.kind for s in sources}


def test_missing_interval_takes_the_default_and_urls_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, '[[feed]]\nurl = "HTTPS://Example.ORG"\ntitle = " Ex "\n')
    assert load_feed_sources(path, 42) == [
        FeedSource(url="https://example.org/", title="Ex", interval_minutes=42)
    ]


def test_empty_file_means_no_feeds(tmp_path: Path) -> None:
    assert load_feed_sources(write(tmp_path, "# nothing yet\n"), 30) == []


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[[feed]]\ntitle = "No URL"\n', "feed[0].url", "missing"),
        ('[[feed]]\nurl = "  "\n', "feed[0].url", "missing"),
        (
            '[[feed]]\nurl = "https://a.example/f"\n[[feed]]\nurl = "https://a.example/f"\n',
            "feed[1].url",
            "duplicate of feed[0]",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\n[[feed]]\nurl = "https://A.EXAMPLE/f#top"\n',
            "feed[1].url",
            "duplicate of feed[0]",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\nkind = "blog"\n',
            "feed[0].kind (https://a.example/f)",
            "unknown kind; expected one of broadcaster,",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ninterval_minutes = 0\n',
            "feed[0].interval_minutes (https://a.example/f)",
            "must be between 1 and 10080 minutes",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ninterval_minutes = "30"\n',
            "feed[0].interval_minutes (https://a.example/f)",
            "must be a whole number",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ninterval_minutes = true\n',
            "feed[0].interval_minutes (https://a.example/f)",
            "must be a whole number",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ninterval_minutes = 12.5\n',
            "feed[0].interval_minutes (https://a.example/f)",
            "must be a whole number",
        ),
        (
            '[[feed]]\nurl = "ftp://a.example/f"\n',
            "feed[0].url",
            "the ftp: scheme is not allowed",
        ),
        ('[[feed]]\nurl = "/feeds/home"\n', "feed[0].url", "not an absolute URL"),
        (
            '[[feed]]\nurl = "https://a.example/f"\nintervall = 5\n',
            "feed[0].intervall (https://a.example/f)",
            "unknown key",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ncountry = "Pakistan"\n',
            "feed[0].country (https://a.example/f)",
            "ISO 3166 alpha-2",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\nlanguage = "Urdu"\n',
            "feed[0].language (https://a.example/f)",
            "language code",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\ntitle = 7\n',
            "feed[0].title (https://a.example/f)",
            "must be a string",
        ),
        (
            '[[feed]]\nurl = "https://a.example/f"\nsite_url = "javascript:alert(1)"\n',
            "feed[0].site_url (https://a.example/f)",
            "http or https",
        ),
        ('[feeds]\nurl = "https://a.example/f"\n', "feeds", "unknown key"),
        ('feed = "https://a.example/f"\n', "feed", "array of tables"),
        ("[[feed]\n", "feeds", "not valid TOML"),
    ],
)
def test_bad_entries_name_the_file_entry_and_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_feed_sources(path, 30)
    assert caught.value.key == key
    assert caught.value.source == str(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_feed_sources(tmp_path / "nope.toml", 30)
    assert caught.value.key == "feeds.file"


def test_opml_file_is_read_by_extension_and_validated(tmp_path: Path) -> None:
    sources = [
        FeedSource(
            url="https://www.dawn.com/feeds/home",
            title="Dawn",
            country="PK",
            kind="newspaper",
            interval_minutes=15,
        ),
        FeedSource(url="https://feeds.bbci.co.uk/urdu/rss.xml", title="BBC Urdu", language="ur"),
    ]
    path = tmp_path / "feeds.opml"
    path.write_bytes(write_opml(sources, "export"))
    assert load_feed_sources(path, 30) == sources


def test_opml_without_intervals_takes_the_default(tmp_path: Path) -> None:
    path = tmp_path / "reader.opml"
    path.write_bytes(b"<opml><body><outline text='D' xmlUrl='https://d.example/f'/></body></opml>")
    assert load_feed_sources(path, 25)[0].interval_minutes == 25


def test_opml_problems_become_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.opml"
    path.write_bytes(b'<!DOCTYPE opml [<!ENTITY a "b">]><opml><body/></opml>')
    with pytest.raises(ConfigError, match="OPML contains entity declarations") as caught:
        load_feed_sources(path, 30)
    assert str(path) in str(caught.value)


def test_opml_entries_get_the_same_checks(tmp_path: Path) -> None:
    path = tmp_path / "bad.opml"
    path.write_bytes(b"<opml><body><outline text='x' xmlUrl='file:///etc/passwd'/></body></opml>")
    with pytest.raises(ConfigError, match="scheme is not allowed") as caught:
        load_feed_sources(path, 30)
    assert caught.value.key == "feed[0].url"


def test_source_lookup_is_keyed_by_url() -> None:
    sources = load_feed_sources(SHIPPED, 30)
    lookup = source_lookup(sources)
    assert len(lookup) == len(sources)
    assert lookup["https://pakobserver.net/feed/"].title == "Pakistan Observer"
