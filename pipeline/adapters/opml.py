"""OPML import and export, so any feed reader's subscription list can come in and go out.

Reading goes through defusedxml: an OPML file is untrusted input (an editor downloads it from
somewhere), and a DTD with entity declarations is the classic billion-laughs / XXE vector.
Nested outlines (folders, categories) are flattened; only outlines with an ``xmlUrl`` are
feeds. What FeedSource knows beyond OPML's own attributes (country, kind, poll interval) is
written as attributes in a qasid namespace, which other readers ignore and we read back.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import defusedxml
import defusedxml.ElementTree as SafeET

from pipeline.core.errors import OPMLError
from pipeline.core.models import FeedSource

QASID_NS = "urn:qasid:opml:1"
_DEFAULT_INTERVAL = 30  # FeedSource's own default
_FEED_TYPES = frozenset({"rss", "atom", "feed"})
# XML 1.0 forbids these characters even when escaped; a title carrying one would make the
# exported file unreadable by every parser, ours included.
_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def read_opml(
    data: bytes, source: str, *, default_interval: int = _DEFAULT_INTERVAL
) -> list[FeedSource]:
    """Parse an OPML document into feed sources, in document order, without duplicates.

    ``source`` names the document in error messages (a path or "upload"). Outlines without
    ``xmlUrl`` are folders (their children are read) or notes (skipped); an outline that says
    it is a feed (``type="rss"``) but has no ``xmlUrl`` is an error. The same ``xmlUrl`` listed
    under two folders, as reader exports often do, is kept once.

    Raises OPMLError when the bytes are not XML (with line and column), declare entities,
    reference external entities, or are XML but not OPML.
    """
    root = _parse(data, source)
    if root.tag != "opml":
        raise OPMLError(source, f"not an OPML document: the root element is <{root.tag}>")
    body = root.find("body")
    if body is None:
        raise OPMLError(source, "OPML has no <body> element")
    sources: list[FeedSource] = []
    seen: set[str] = set()
    for position, outline in enumerate(_walk(body), start=1):
        feed = _outline_to_source(outline, position, source, default_interval)
        if feed is not None and feed.url not in seen:
            seen.add(feed.url)
            sources.append(feed)
    return sources


def write_opml(sources: Iterable[FeedSource], title: str) -> bytes:
    """Serialise feed sources as an OPML 2.0 document (UTF-8), one flat outline per feed.

    ``read_opml`` of the result gives back the same sources.
    """
    root = ET.Element("opml", {"version": "2.0", "xmlns:qasid": QASID_NS})
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = _clean(title)
    ET.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = ET.SubElement(root, "body")
    for feed in sources:
        attributes = {
            "type": "rss",
            # text is required by the spec; readers show it, so fall back to the URL.
            "text": _clean(feed.title or feed.url),
            "xmlUrl": _clean(feed.url),
        }
        if feed.title:
            attributes["title"] = _clean(feed.title)
        if feed.site_url:
            attributes["htmlUrl"] = _clean(feed.site_url)
        if feed.language:
            attributes["language"] = _clean(feed.language)
        if feed.country:
            attributes["qasid:country"] = _clean(feed.country)
        if feed.kind:
            attributes["qasid:kind"] = _clean(feed.kind)
        attributes["qasid:interval"] = str(feed.interval_minutes)
        ET.SubElement(body, "outline", attributes)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _parse(data: bytes, source: str) -> ET.Element:
    try:
        return SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.EntitiesForbidden as error:
        raise OPMLError(source, "OPML contains entity declarations") from error
    except defusedxml.ExternalReferenceForbidden as error:
        raise OPMLError(source, "OPML refers to an external entity") from error
    except defusedxml.DefusedXmlException as error:
        raise OPMLError(source, f"OPML refused: {error}") from error
    except ET.ParseError as error:
        line, column = error.position
        # expat counts columns from 0; editors count from 1.
        reason = str(error).split(":", 1)[0]
        raise OPMLError(
            source, f"not valid XML: {reason} at line {line}, column {column + 1}"
        ) from error


def _walk(element: ET.Element) -> Iterator[ET.Element]:
    """Every <outline> under ``element``, depth first, in document order."""
    for child in element:
        if child.tag == "outline":
            yield child
            yield from _walk(child)


def _outline_to_source(
    outline: ET.Element, position: int, source: str, default_interval: int
) -> FeedSource | None:
    url = (outline.get("xmlUrl") or "").strip()
    if not url:
        if (outline.get("type") or "").strip().lower() in _FEED_TYPES:
            name = outline.get("title") or outline.get("text") or ""
            raise OPMLError(source, f"outline {position} ({name!r}) is a feed without an xmlUrl")
        return None  # a folder (its children are walked separately) or a plain note
    title = (outline.get("title") or outline.get("text") or "").strip()
    if title == url:  # write_opml puts the URL in text when a feed has no title
        title = ""
    interval_text = _qasid(outline, "interval")
    interval = default_interval
    if interval_text:
        try:
            interval = int(interval_text)
        except ValueError as error:
            raise OPMLError(
                source,
                f"outline {position} ({url}): qasid:interval {interval_text!r} is not a number",
            ) from error
    return FeedSource(
        url=url,
        title=title,
        language=(outline.get("language") or "en").strip(),
        country=_qasid(outline, "country"),
        kind=_qasid(outline, "kind"),
        interval_minutes=interval,
        site_url=(outline.get("htmlUrl") or "").strip(),
    )


def _qasid(outline: ET.Element, name: str) -> str:
    return (outline.get(f"{{{QASID_NS}}}{name}") or "").strip()


def _clean(text: str) -> str:
    return _INVALID_XML_CHARS.sub("", text)
