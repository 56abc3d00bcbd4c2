"""OPML import/export: reader exports come in, our export goes back out, hostile XML is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.adapters.opml import read_opml, write_opml
from pipeline.core.errors import OPMLError
from pipeline.core.models import FeedSource

# Shaped like Feedly's export: folders as outer outlines, text and title both set, a feed
# listed under two folders.
FEEDLY_EXPORT = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
    <head>
        <title>Kashif subscriptions in feedly Cloud</title>
    </head>
    <body>
        <outline text="Pakistan" title="Pakistan">
            <outline type="rss" text="Dawn - Home" title="Dawn - Home"
                xmlUrl="https://www.dawn.com/feeds/home" htmlUrl="https://www.dawn.com"/>
            <outline type="rss" text="The Express Tribune" title="The Express Tribune"
                xmlUrl="https://tribune.com.pk/feed/home" htmlUrl="https://tribune.com.pk"/>
        </outline>
        <outline text="World" title="World">
            <outline type="rss" text="BBC News - Asia" title="BBC News - Asia"
                xmlUrl="https://feeds.bbci.co.uk/news/world/asia/rss.xml"
                htmlUrl="https://www.bbc.co.uk/news/world/asia"/>
            <outline type="rss" text="Dawn - Home" title="Dawn - Home"
                xmlUrl="https://www.dawn.com/feeds/home" htmlUrl="https://www.dawn.com"/>
        </outline>
    </body>
</opml>
"""

# Shaped like Inoreader's export: OPML 2.0, text only (no title), folders nested two deep,
# Urdu titles, a loose feed at the top level.
INOREADER_EXPORT = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head>
    <title>Subscriptions from Inoreader [https://www.inoreader.com]</title>
  </head>
  <body>
    <outline text="News" title="News">
      <outline text="Urdu" title="Urdu">
        <outline text="بی بی سی اردو" type="rss"
          xmlUrl="https://feeds.bbci.co.uk/urdu/rss.xml" htmlUrl="https://www.bbc.com/urdu"/>
      </outline>
      <outline text="Al Jazeera English" type="rss"
        xmlUrl="https://www.aljazeera.com/xml/rss/all.xml" htmlUrl="https://www.aljazeera.com"/>
    </outline>
    <outline text="Pakistan Observer" type="rss" xmlUrl="https://pakobserver.net/feed/"/>
  </body>
</opml>
""".encode()


def test_feedly_export_is_flattened_and_deduplicated() -> None:
    sources = read_opml(FEEDLY_EXPORT, "feedly.opml")
    assert [s.url for s in sources] == [
        "https://www.dawn.com/feeds/home",
        "https://tribune.com.pk/feed/home",
        "https://feeds.bbci.co.uk/news/world/asia/rss.xml",
    ]
    assert sources[0].title == "Dawn - Home"
    assert sources[0].site_url == "https://www.dawn.com"


def test_inoreader_export_reads_nested_folders_and_text_titles() -> None:
    sources = read_opml(INOREADER_EXPORT, "inoreader.opml")
    assert [(s.title, s.url) for s in sources] == [
        ("بی بی سی اردو", "https://feeds.bbci.co.uk/urdu/rss.xml"),
        ("Al Jazeera English", "https://www.aljazeera.com/xml/rss/all.xml"),
        ("Pakistan Observer", "https://pakobserver.net/feed/"),
    ]
    assert sources[2].site_url == ""


def test_defaults_apply_when_the_opml_says_nothing() -> None:
    (source,) = read_opml(
        b'<opml version="2.0"><body><outline text="x" xmlUrl="https://e.com/f"/></body></opml>',
        "x.opml",
        default_interval=45,
    )
    assert source == FeedSource(url="https://e.com/f", title="x", interval_minutes=45)


def test_language_attribute_is_read() -> None:
    data = (
        b'<opml version="2.0"><body><outline text="BBC Urdu" language="ur"'
        b' xmlUrl="https://feeds.bbci.co.uk/urdu/rss.xml"/></body></opml>'
    )
    assert read_opml(data, "x.opml")[0].language == "ur"


SOURCES = [
    FeedSource(
        url="https://www.dawn.com/feeds/home",
        title="Dawn",
        language="en",
        country="PK",
        kind="newspaper",
        interval_minutes=15,
        site_url="https://www.dawn.com/",
    ),
    FeedSource(
        url="https://news.google.com/rss/search?q=Pakistan+%22United+States%22&hl=en-US&gl=US",
        title='Google News: "Pakistan" & <the US>',
        kind="search",
        interval_minutes=60,
    ),
    FeedSource(url="https://feeds.bbci.co.uk/urdu/rss.xml", title="بی بی سی اردو", language="ur"),
    FeedSource(url="https://example.org/untitled.xml"),
]


def test_write_then_read_gives_back_the_same_sources() -> None:
    assert read_opml(write_opml(SOURCES, "qasid feeds"), "export.opml") == SOURCES


def test_export_is_opml_2_with_escaped_attributes() -> None:
    data = write_opml(SOURCES, "Feeds & <friends>")
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    text = data.decode()
    assert '<opml version="2.0"' in text
    assert "<title>Feeds &amp; &lt;friends&gt;</title>" in text
    assert 'title="Google News: &quot;Pakistan&quot; &amp; &lt;the US&gt;"' in text
    assert "q=Pakistan+%22United+States%22&amp;hl=en-US&amp;gl=US" in text


def test_untitled_feed_is_exported_with_its_url_as_text() -> None:
    text = write_opml([FeedSource(url="https://example.org/f.xml")], "t").decode()
    assert 'text="https://example.org/f.xml"' in text
    assert " title=" not in text


def test_control_characters_are_dropped_so_the_export_stays_readable() -> None:
    source = FeedSource(url="https://example.org/f.xml", title="bad\x00ti\x1ftle")
    assert read_opml(write_opml([source], "t\x07"), "t.opml")[0].title == "badtitle"


def test_billion_laughs_is_refused_quickly() -> None:
    entities = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    data = (
        f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY lol0 "lol">{entities}]>'
        '<opml version="2.0"><body><outline text="&lol9;" xmlUrl="https://e.com/f"/></body></opml>'
    ).encode()
    started = time.perf_counter()
    with pytest.raises(OPMLError, match="OPML contains entity declarations") as caught:
        read_opml(data, "laughs.opml")
    assert time.perf_counter() - started < 1.0
    assert caught.value.source == "laughs.opml"


def test_external_entity_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<opml version="2.0"><body><outline text="&xxe;" xmlUrl="https://e.com/f"/></body></opml>'
    ).encode()
    with pytest.raises(OPMLError, match="OPML contains entity declarations"):
        read_opml(data, "xxe.opml")


def test_external_dtd_is_not_loaded(tmp_path: Path) -> None:
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leak "TOP SECRET">')
    data = (
        f'<?xml version="1.0"?><!DOCTYPE opml SYSTEM "file://{dtd}">'
        '<opml version="2.0"><body><outline text="plain" xmlUrl="https://e.com/f"/></body></opml>'
    ).encode()
    (source,) = read_opml(data, "dtd.opml")
    assert source.title == "plain"


def test_malformed_xml_error_gives_line_and_column() -> None:
    data = b'<?xml version="1.0"?>\n<opml version="2.0">\n  <body><outline text="a" <</body>\n'
    with pytest.raises(
        OPMLError, match=r"not valid XML: not well-formed \(invalid token\) at line 3, column 27"
    ) as caught:
        read_opml(data, "broken.opml")
    assert str(caught.value).startswith("broken.opml: ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid XML: no element found at line 1, column 1"),
        (b"<rss version='2.0'><channel/></rss>", "not an OPML document: the root element is <rss>"),
        (b"<opml version='2.0'><head/></opml>", "OPML has no <body> element"),
        (
            b"<opml><body><outline type='rss' text='Lost'/></body></opml>",
            "outline 1 \\('Lost'\\) is a feed without an xmlUrl",
        ),
        (
            b"<opml xmlns:q='urn:qasid:opml:1'><body>"
            b"<outline text='x' xmlUrl='https://e.com/f' q:interval='often'/></body></opml>",
            "qasid:interval 'often' is not a number",
        ),
    ],
)
def test_documents_that_are_not_usable_opml_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(OPMLError, match=message):
        read_opml(data, "x.opml")


def test_folders_and_notes_without_xmlurl_are_not_feeds() -> None:
    data = (
        b"<opml version='2.0'><body><outline text='Empty folder'/>"
        b"<outline text='A note' type='link' url='https://e.com/page'/>"
        b"<outline text='F'><outline text='Feed' xmlUrl='https://e.com/f'/></outline>"
        b"</body></opml>"
    )
    assert [s.url for s in read_opml(data, "x.opml")] == ["https://e.com/f"]
