"""Turn raw feed text into clean, bounded, safe values: URLs, sanitized HTML, plain text, GUIDs,
and finally ``Item``s.

Pure: no I/O, no clock (the fetch time is passed in). Every feed field is untrusted
(RELIABILITY fact 3: feedparser leaves text/plain titles, authors and links raw), so every
string that leaves this module is sanitized, stripped of NULs, control characters and lone
surrogates (PostgreSQL rejects NUL, UTF-8 rejects surrogates) and cut to a documented limit.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

import nh3

from pipeline.core.models import Item, ParsedEntry, ParsedFeed

# --- limits (characters, not bytes) -------------------------------------------------------
TITLE_MAX = 1_000  # a headline; anything longer is a broken feed, not journalism
SUMMARY_MAX = 20_000  # sanitized summary HTML and its plain-text copy, each
SUMMARY_INPUT_MAX = 200_000  # raw HTML fed to the sanitizer; bounds work on hostile input
AUTHOR_MAX = 200
URL_MAX = 4_096  # longer "links" are garbage or payloads; dropped rather than cut
GUID_MAX = 512  # longer keys are hashed, to keep the unique index small

# Dates: feeds are wrong about time in both directions. Dates older than this are placeholders
# (epoch 0, 1900); dates ahead of the fetch by more than the slack are clamped so a
# "published 2099" item cannot sit at the top of every digest.
OLDEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(minutes=15)

DEFAULT_LANGUAGE = "en"

# --- URLs -----------------------------------------------------------------------------------
_SAFE_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Query keys that only identify a campaign or a click, never the page.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "ref_src",
        "ref_url",
        "cmpid",
        "ocid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "wt.mc_id",
        "s_cid",
        "__twitter_impression",
    }
)
# Prefixes: utm_* (Google Analytics), at_* (AT Internet / Piano, used by the BBC:
# at_medium, at_campaign, at_link_id, at_custom1...).
TRACKING_PREFIXES = ("utm_", "at_")

_URL_STRIP = "".join(chr(c) for c in range(0x21)) + "\x7f"  # C0 controls, space, DEL
_URL_INNER_JUNK = re.compile(r"[\t\n\r]")  # browsers delete these anywhere in a URL
_BAD_HOST = re.compile(r"[\s<>\"'`\\^{}|%]")


def _url_probe(url: str) -> str:
    """What a browser would see after undoing HTML escaping (``&#106;avascript:``), possibly
    twice (double-escaped feeds), and dropping the characters it ignores."""
    probe = url
    for _ in range(3):
        unescaped = html.unescape(probe)
        if unescaped == probe:
            break
        probe = unescaped
    # U+0020 is the only character that is both printable and whitespace, so a printable
    # string without a space has nothing to drop (the common case: skip the per-char loop).
    if not probe.isprintable() or " " in probe:
        probe = "".join(ch for ch in probe if ch.isprintable() and not ch.isspace())
    return probe.strip(_URL_STRIP)


def _has_scheme(url: str) -> str:
    """The scheme as urlsplit sees it, lowercased ('' for relative references)."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return "invalid"


def _drop_tracking(query: str) -> str:
    kept = []
    for part in query.split("&"):
        if not part:
            continue
        key = unquote_plus(part.split("=", 1)[0]).strip().lower()
        if key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES):
            continue
        kept.append(part)
    return "&".join(kept)


def canonical_url(url: str | None, base: str | None = None) -> str:
    """Return the canonical absolute http(s) form of ``url``, or "" if it has none.

    - Relative references (``/x``, ``x``) resolve against ``base``; without a usable base
      they are dropped. Protocol-relative ``//host/x`` takes ``base``'s scheme, or https
      without a base (it names a host explicitly, so it is no more dangerous than an
      absolute link; https is the safer guess).
    - Any scheme other than http/https is dropped, including ones hidden by HTML escaping
      (``&#106;avascript:``), mixed case, or embedded tabs/newlines.
    - Scheme and host are lowercased, default ports, user:password@ (a phishing trick:
      ``http://bank.com@evil.example``), fragments and tracking parameters are removed;
      other parameters keep their order and their original encoding.
    - ``&amp;`` is decoded to ``&``: feeds often double-escape query strings.
    """
    if not url:
        return ""
    raw = _URL_INNER_JUNK.sub("", url).strip(_URL_STRIP)
    while "&amp;" in raw:
        raw = raw.replace("&amp;", "&")
    if not raw or len(raw) > URL_MAX:
        return ""
    probe = _url_probe(raw)
    raw_scheme = _has_scheme(raw)
    for scheme in (raw_scheme, _has_scheme(probe) if probe != raw else raw_scheme):
        if scheme and scheme not in _SAFE_SCHEMES:
            return ""
    if not raw_scheme:
        base_url = _canonical_base(base) if base else ""
        if raw.startswith("//"):
            raw = (_has_scheme(base_url) or "https") + ":" + raw
        elif base_url:
            raw = urljoin(base_url, raw)
        else:
            return ""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if scheme not in _SAFE_SCHEMES or not host or _BAD_HOST.search(host):
        return ""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = parts.path or "/"
    result = urlunsplit((scheme, netloc, path, _drop_tracking(parts.query), ""))
    return result if len(result) <= URL_MAX else ""


@functools.lru_cache(maxsize=512)
def _canonical_base(base: str) -> str:
    """canonical_url of a base URL: the same few (a feed's, its entries') resolve every
    relative link of a document."""
    return canonical_url(base)


# --- text -----------------------------------------------------------------------------------
# C0/C1 controls except tab/newline/CR (those become spaces when whitespace is collapsed),
# and lone surrogates, which cannot be encoded as UTF-8.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LOOKS_LIKE_MARKUP = re.compile(r"<[a-zA-Z/!?]")


def strip_unsafe_chars(text: str) -> str:
    """Remove NULs, control characters and lone surrogates; keep everything else, including
    RTL marks and non-BMP characters (emoji) that Urdu and other feeds use legitimately."""
    return _CONTROL.sub("", text)


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, on a word boundary when one is near,
    marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


def clean_text(value: str | None, limit: int = TITLE_MAX) -> str:
    """Plain one-line text from a feed field that may hold raw HTML or entities (titles,
    authors): tags dropped (script/style content too), entities decoded, whitespace
    collapsed, unsafe characters removed, cut to ``limit`` characters."""
    if not value:
        return ""
    text = strip_unsafe_chars(value[:SUMMARY_INPUT_MAX])
    if _LOOKS_LIKE_MARKUP.search(text):
        # nh3 parses like a browser; with no allowed tags it keeps only escaped text.
        text = nh3.clean(text, tags=set(), clean_content_tags=_DROP_WITH_CONTENT)
    text = strip_unsafe_chars(html.unescape(html.unescape(text)))
    return truncate(" ".join(text.split()), limit)


# --- HTML -----------------------------------------------------------------------------------
# What a reader needs to read a summary, and nothing that can run, track or restyle.
# No <img>: remote images in email are tracking pixels and break layouts; the link to the
# article is the way to see pictures. No tables, no classes, no style.
ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "cite",
        "code",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "ins",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "strong",
        "sub",
        "sup",
        "u",
        "ul",
    }
)
# "*" applies to every allowed tag: lang and dir keep Urdu/Arabic passages readable.
ALLOWED_ATTRIBUTES = {"*": {"dir", "lang", "title"}, "a": {"href"}}
LINK_REL = "nofollow noopener noreferrer"
# Dropped together with their content (their text is code, styling or widgets, not prose).
_DROP_WITH_CONTENT = {
    "script",
    "style",
    "template",
    "noscript",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "textarea",
    "select",
    "title",
    "head",
}


def sanitize_html(markup: str | None, base: str | None = None) -> str:
    """Sanitize summary HTML for the web archive and email: ALLOWED_TAGS only; links only
    absolute http(s) (relative ones resolved against ``base``, tracking parameters dropped)
    with ``rel="nofollow noopener noreferrer"``; no attributes but href/title; comments
    dropped. Output is at most SUMMARY_MAX characters."""
    if not markup:
        return ""
    source = strip_unsafe_chars(markup[:SUMMARY_INPUT_MAX])

    def keep_attribute(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "href":
            return canonical_url(value, base) or None
        return value

    def clean(text: str) -> str:
        return nh3.clean(
            text,
            tags=set(ALLOWED_TAGS),
            clean_content_tags=_DROP_WITH_CONTENT,
            attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
            attribute_filter=keep_attribute,
            strip_comments=True,
            link_rel=LINK_REL,
            url_schemes={"http", "https"},
        )

    result = clean(source).strip()
    if len(result) <= SUMMARY_MAX:
        return result
    # Cut before any tag that would straddle the limit, re-sanitize so open elements are
    # closed again, and shrink the budget until those closing tags fit too.
    full, budget = result, SUMMARY_MAX - 1
    while budget > 0:
        cut = full[:budget]
        if cut.rfind("<") > cut.rfind(">"):
            cut = cut[: cut.rfind("<")]
        result = clean(cut.rstrip() + "…").strip()
        if len(result) <= SUMMARY_MAX:
            return result
        budget -= len(result) - SUMMARY_MAX + 64
    return ""


# Paragraph-like elements are separated by a blank line, line-like ones by a line break.
_PARAGRAPH_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "div",
        "dl",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    }
)
_LINE_TAGS = frozenset({"br", "dd", "dt", "li", "tr"})
_BLOCK_TAGS = _PARAGRAPH_TAGS | _LINE_TAGS


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.parts.append("\n\n")
        elif tag in _LINE_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


_SIMPLE_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)>")


def _block_text(safe: str) -> str:
    """What ``_TextExtractor`` makes of ``safe``. nh3 output with no attributes allowed is
    text (with ``<`` escaped) and bare ``<tag>``/``</tag>`` markup, which a regex splits
    exactly as HTMLParser does, several times faster; anything else goes to HTMLParser."""
    tags = list(_SIMPLE_TAG.finditer(safe))
    if safe.count("<") != len(tags):
        extractor = _TextExtractor()
        extractor.feed(safe)
        extractor.close()
        return "".join(extractor.parts)
    parts: list[str] = []
    position = 0
    for tag in tags:
        if tag.start() > position:
            parts.append(html.unescape(safe[position : tag.start()]))
        name = tag.group(2).lower()
        if name in _PARAGRAPH_TAGS:
            parts.append("\n\n")
        elif name in _LINE_TAGS and not tag.group(1):
            parts.append("\n")
        position = tag.end()
    parts.append(html.unescape(safe[position:]))
    return "".join(parts)


def _collapse_spaces(line: str) -> str:
    """``" ".join(line.split())``, without splitting lines that are already collapsed: the
    space is the only printable whitespace character."""
    if line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " ":
        return line
    return " ".join(line.split())


def html_to_text(markup: str | None, limit: int = SUMMARY_MAX) -> str:
    """Plain text of an HTML fragment: entities decoded, runs of spaces collapsed, block
    elements (p, br, li, headings...) kept as line breaks, at most one blank line in a row."""
    if not markup:
        return ""
    # Sanitize first: the stdlib parser then only ever sees well-formed, comment-free
    # markup, so hostile input cannot make it slow, and script/style text is already gone.
    safe = nh3.clean(
        strip_unsafe_chars(markup[:SUMMARY_INPUT_MAX]),
        tags=set(_BLOCK_TAGS),
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes={},
    )
    text = "\n".join(map(_collapse_spaces, _block_text(safe).split("\n")))
    while "\n\n\n" in text:  # at most one blank line in a row (faster than a regex here)
        text = text.replace("\n\n\n", "\n\n")
    text = text.strip()
    return truncate(strip_unsafe_chars(text), limit)


# --- identity ---------------------------------------------------------------------------------
def _sha256(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "ignore")).hexdigest()
    return f"sha256:{digest}"


def normalise_guid(guid: str | None) -> str:
    """A stable key from a feed GUID. URL-shaped GUIDs lose their scheme (so a feed moving
    from http to https keeps its items), default port, tracking parameters and host case; the
    fragment stays, since some feeds number items on one page with it. Other GUIDs are only
    stripped (``urn:uuid:`` ones lowercased). Keys longer than GUID_MAX are hashed."""
    if not guid:
        return ""
    key = " ".join(strip_unsafe_chars(guid).split())
    if not key:
        return ""
    scheme = _has_scheme(key)
    if scheme in _SAFE_SCHEMES:
        fragment = urlsplit(key).fragment
        canonical = canonical_url(key)
        if canonical:
            key = canonical.split(":", 1)[1] + (f"#{fragment}" if fragment else "")
    elif key.lower().startswith("urn:uuid:"):
        key = key.lower()
    return key if len(key) <= GUID_MAX else _sha256(key)


def content_hash(title: str, summary_text: str) -> str:
    """Changes when the words of an item change, not when only its markup does."""
    return _sha256(title, summary_text).removeprefix("sha256:")


# --- language ---------------------------------------------------------------------------------
# Languages written in Arabic script: an item in one of these is left alone, any other
# declared (or defaulted) language is overridden by "ur" when Arabic script dominates, since
# Pakistani outlets often label Urdu feeds "en" or nothing.
_ARABIC_SCRIPT_LANGUAGES = frozenset({"ar", "fa", "ps", "sd", "ug", "ku", "ckb", "bal", "skr"})
_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}$")


def normalise_language(tag: str | None) -> str:
    """Primary subtag of a BCP 47 / RSS language tag ("en-US" → "en"), or "" if invalid."""
    if not tag:
        return ""
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if _LANGUAGE_TAG.match(primary) else ""


def is_mostly_arabic_script(text: str, minimum_letters: int = 3) -> bool:
    """True when more than half of the letters in ``text`` are Arabic-script letters."""
    if not _ARABIC_SCRIPT.search(text):
        return False  # the common case, decided without a per-letter loop
    letters = "".join(filter(str.isalpha, text))
    if len(letters) < minimum_letters:
        return False
    arabic = len(_ARABIC_SCRIPT.findall(letters))
    return arabic * 2 > len(letters)


def detect_language(declared: Iterable[str | None], text: str) -> str:
    """The first valid declared language (entry, then feed), else DEFAULT_LANGUAGE; "ur"
    instead when the text is mostly Arabic script and no Arabic-script language was named."""
    language = next((lang for lang in map(normalise_language, declared) if lang), "")
    language = language or DEFAULT_LANGUAGE
    if language not in _ARABIC_SCRIPT_LANGUAGES and is_mostly_arabic_script(text):
        return "ur"
    return language


# --- items -------------------------------------------------------------------------------------
def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def item_from_entry(
    entry: ParsedEntry, feed_url: str, feed_language: str | None, fetched_at: datetime
) -> Item:
    """Normalise one parsed entry into an Item.

    Identity (``guid_key``, unique per feed): the normalised GUID, else the normalised
    canonical link, else a hash of the title and the published date as the feed gave it.
    ``published`` is UTC; a missing date, or one before OLDEST_PLAUSIBLE, becomes
    ``fetched_at`` with ``published_missing=True``; a date more than FUTURE_SLACK after
    ``fetched_at`` is clamped to ``fetched_at``.
    """
    fetched = _as_utc(fetched_at)
    link = canonical_url(entry.link, feed_url)
    title = clean_text(entry.title, TITLE_MAX)
    summary_html = sanitize_html(entry.summary, entry.base or link or feed_url)
    summary_text = html_to_text(summary_html)

    raw_date = entry.published or entry.updated
    published, missing = fetched, True
    if raw_date is not None:
        candidate = _as_utc(raw_date)
        if candidate >= OLDEST_PLAUSIBLE:
            missing = False
            published = fetched if candidate > fetched + FUTURE_SLACK else candidate

    return Item(
        guid_key=normalise_guid(entry.guid) or _fallback_key(link, title, raw_date),
        link=link,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        published=published,
        language=detect_language((entry.language, feed_language), f"{title} {summary_text}"),
        author=clean_text(entry.author, AUTHOR_MAX),
        source=clean_text(entry.source, AUTHOR_MAX),
        content_hash=content_hash(title, summary_text),
        published_missing=missing,
    )


def _fallback_key(link: str, title: str, raw_date: datetime | None) -> str:
    """The guid_key of an entry without a usable GUID: its canonical link, else a hash of its
    title and date as the feed gave it."""
    key = normalise_guid(link)
    if not key:
        when = _as_utc(raw_date).isoformat() if raw_date is not None else ""
        key = _sha256(title, when)
    return key


def entry_guid_key(entry: ParsedEntry, feed_url: str) -> str:
    """``item_from_entry(entry, feed_url, ...).guid_key`` without normalising the rest of
    the entry (its summary above all): what a parse worker can afford for every entry."""
    return normalise_guid(entry.guid) or _fallback_key(
        canonical_url(entry.link, feed_url),
        clean_text(entry.title, TITLE_MAX),
        entry.published or entry.updated,
    )


def items_from_feed(
    parsed: ParsedFeed, feed_url: str, feed_language: str | None, fetched_at: datetime
) -> list[Item]:
    """Items of one document, in document order: entries with no title, link or summary are
    skipped, and when two share a guid_key the first one wins (feeds do repeat GUIDs)."""
    language = feed_language or parsed.language
    seen: set[str] = set()
    items: list[Item] = []
    for entry in parsed.entries:
        item = item_from_entry(entry, feed_url, language, fetched_at)
        if not (item.title or item.link or item.summary_text):
            continue
        if item.guid_key in seen:
            continue
        seen.add(item.guid_key)
        items.append(item)
    return items


def entry_fingerprint(entry: ParsedEntry, feed_url: str, language: str | None) -> int:
    """A 64-bit digest of everything ``item_from_entry`` reads but the fetch time: equal
    fingerprints mean the entry normalises to the same item (same content hash)."""
    raw = repr((entry, feed_url, language)).encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class IncrementalItems:
    """``items_from_feed`` for the entries that changed since the last poll.

    ``items``: the changed entries' items (what ``items_from_feed`` would give, less the
    entries skipped); ``seen``: every entry's fingerprint mapped to the ``hash()`` of its
    item's guid_key (None when the entry has nothing to store), to pass to the next call in
    this process; ``skipped``: how many stored items were left out as unchanged."""

    items: list[Item]
    seen: dict[int, int | None]
    skipped: int


def items_from_feed_since(
    parsed: ParsedFeed,
    feed_url: str,
    feed_language: str | None,
    fetched_at: datetime,
    previous: Mapping[int, int | None],
) -> IncrementalItems:
    """Items of one document, skipping the entries whose fingerprint is in ``previous``
    (the ``seen`` of the last poll whose items were stored): 45 of a changed feed's 50
    entries are usually the same, and normalising them again would only find that out.

    Exactly ``items_from_feed``, minus items the store would find unchanged: when a changed
    entry shares its guid_key with a skipped one (a feed repeating a GUID, where the first
    entry wins), every entry is normalised as ``items_from_feed`` does. ``seen`` holds only
    the entries whose items are stored: an entry that lost its GUID to an earlier one is
    normalised again next time (the first one may be gone by then). ``previous`` must come
    from this process (it holds ``hash()`` values)."""
    language = feed_language or parsed.language
    seen: dict[int, int | None] = {}
    skipped_keys: set[int] = set()
    items: list[Item] = []
    taken: set[str] = set()
    for entry in parsed.entries:
        fingerprint = entry_fingerprint(entry, feed_url, language)
        if fingerprint in previous:
            key = seen[fingerprint] = previous[fingerprint]
            if key is not None:
                skipped_keys.add(key)
            continue
        item = item_from_entry(entry, feed_url, language, fetched_at)
        if not (item.title or item.link or item.summary_text):
            seen.setdefault(fingerprint, None)
            continue
        if item.guid_key in taken:
            continue  # the first entry with this guid_key is stored, not this one
        taken.add(item.guid_key)
        items.append(item)
        seen[fingerprint] = hash(item.guid_key)  # a collision only costs the fallback
    if skipped_keys and not skipped_keys.isdisjoint(map(hash, taken)):
        return _every_item(parsed, feed_url, language, fetched_at)
    return IncrementalItems(items, seen, skipped=len(skipped_keys))


def _every_item(
    parsed: ParsedFeed, feed_url: str, language: str | None, fetched_at: datetime
) -> IncrementalItems:
    """``items_from_feed`` with the ``seen`` of ``items_from_feed_since``."""
    seen: dict[int, int | None] = {}
    items: list[Item] = []
    taken: set[str] = set()
    for entry in parsed.entries:
        fingerprint = entry_fingerprint(entry, feed_url, language)
        item = item_from_entry(entry, feed_url, language, fetched_at)
        if not (item.title or item.link or item.summary_text):
            seen.setdefault(fingerprint, None)
            continue
        if item.guid_key in taken:
            continue
        taken.add(item.guid_key)
        items.append(item)
        seen[fingerprint] = hash(item.guid_key)
    return IncrementalItems(items, seen, skipped=0)


__all__ = [
    "AUTHOR_MAX",
    "SUMMARY_MAX",
    "TITLE_MAX",
    "IncrementalItems",
    "canonical_url",
    "clean_text",
    "content_hash",
    "detect_language",
    "entry_fingerprint",
    "entry_guid_key",
    "html_to_text",
    "item_from_entry",
    "items_from_feed",
    "items_from_feed_since",
    "normalise_guid",
    "normalise_language",
    "sanitize_html",
]
