"""The public archive: editions at permanent URLs, a theme filter, item search, an Atom feed
of editions, theme pages with a weekly-volume chart; and a personal digest's "view in
browser" page behind its signed link.

Everything shown here came from feeds and is untrusted: templates autoescape (``.html``
and ``.xml`` only) and every ``href`` built from feed data goes through ``safe_url`` (only
absolute http(s) URLs). The CSP forbids inline script as a second line of defence.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from pipeline.adapters.archive_store import ArchiveStore
from pipeline.adapters.delivery_store import DeliveryStore, EditionRow
from pipeline.adapters.render import safe_url
from pipeline.core.digest import ThemeInfo
from pipeline.tokens import TokenError, fingerprint
from pipeline.web import svg
from pipeline.web.context import core, themes
from pipeline.web.security import public_page

blueprint = Blueprint("archive", __name__)

PER_PAGE = 20
MAX_SEARCH_PAGE = 25  # 500 results: enough to browse, bounded work per request
MAX_PAGE = 100_000  # of editions (2,000,000 of them); a bigger number is not a page
FEED_ENTRIES = 20
THEME_ITEMS = 20
CHART_WEEKS = 26
# Cache-Control max-age of the public pages (security.public_page): lists and theme pages
# change as items and editions arrive; an edition page never changes.
LIST_MAX_AGE = 300
EDITION_MAX_AGE = 3600


def archive_store() -> ArchiveStore:
    return ArchiveStore(core().store)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def local_time_in(value: object, zone: str = "UTC") -> str:
    """ "29 Nov 2026, 12:00 PKT" in ``zone``; "" for a missing or malformed time."""
    when = _when(value)
    if when is None:
        return ""
    when = when.astimezone(_zone(zone))
    return f"{when.day} {when:%b %Y, %H:%M} {when.tzname()}"


def local_date_in(value: object, zone: str = "UTC") -> str:
    """ "Sunday 29 November 2026" in ``zone``."""
    when = _when(value)
    if when is None:
        return ""
    when = when.astimezone(_zone(zone))
    return f"{when:%A} {when.day} {when:%B %Y}"


def atom_time(value: object) -> str:
    """RFC 3339 in UTC, as Atom wants it."""
    when = _when(value) or datetime(1970, 1, 1, tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: object) -> str:
    """Text without the characters XML 1.0 forbids (C0 controls, lone surrogates, U+FFFE/F),
    which escaping does not remove and which make feed readers reject the whole feed."""
    return _NOT_XML.sub("", str(value))


def install_filters(flask: Flask) -> None:
    """The template filters of the archive and the editor pages (idempotent)."""
    filters = flask.jinja_env.filters
    filters.setdefault("safe_url", safe_url)
    filters["local_time_in"] = local_time_in
    filters["local_date_in"] = local_date_in
    filters["atom_time"] = atom_time
    flask.jinja_env.globals.setdefault("edition_href", edition_href)
    flask.jinja_env.globals.setdefault("theme_href", theme_href)


def theme_names() -> dict[str, str]:
    return {t.id: t.name for t in themes()}


def _theme(theme_id: str) -> ThemeInfo | None:
    return next((t for t in themes() if t.id == theme_id), None)


def theme_links() -> dict[str, str]:
    """theme id → its archive filter URL, built once per page (url_for costs ~50 µs)."""
    base = url_for("archive.archive")
    return {t.id: f"{base}?{urlencode({'theme': t.id})}" for t in themes()}


def edition_href(edition_id: int, anchor: str = "") -> str:
    """The permanent URL of a public edition (path only), optionally with a #fragment."""
    url = f"{request.script_root}/editions/{int(edition_id)}"
    return f"{url}#{quote(anchor, safe='')}" if anchor else url


def theme_href(theme_id: str) -> str:
    """The path of a theme's page."""
    return f"{request.script_root}/themes/{quote(str(theme_id), safe='')}"


def _page() -> int:
    page = max(1, request.args.get("page", 1, type=int) or 1)
    if page > MAX_PAGE:
        abort(404)
    return page


# -- what the edition template shows --------------------------------------------------------
# The stored digest dict is turned into small objects once, in Python: the template then
# reads plain attributes (Jinja's attribute lookup on a dict goes through an exception per
# access) and every time is formatted and every link checked here, ~4x faster than filters.


@dataclass(frozen=True)
class EntryView:
    anchor: str  # the element id, "item-<item id>"
    title: str
    href: str  # http(s) only, else ""
    source: str
    when_iso: str
    when: str
    snippet: str
    why: str
    also: str


@dataclass(frozen=True)
class SectionView:
    name: str
    href: str  # the theme's page, "" for a theme this site does not know
    context: str
    volume_line: str
    entries: list[EntryView]


@dataclass(frozen=True)
class EditionView:
    subject: str
    period: str
    top: list[EntryView]
    sections: list[SectionView]
    watchlist: list[EntryView]
    watchlist_line: str = ""  # when the section was cut short


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _entries(value: object, zone: ZoneInfo) -> list[EntryView]:
    if not isinstance(value, list):
        return []
    out = []
    for e in value:
        if not isinstance(e, Mapping):
            continue
        when = _when(e.get("published"))
        local = when.astimezone(zone) if when else None
        seen = "first seen " if e.get("undated") else ""  # the feed gave no date
        reasons = e.get("reasons")
        out.append(
            EntryView(
                anchor=f"item-{_text(e.get('id'))}",
                title=_text(e.get("title")),
                href=safe_url(e.get("link")),
                source=_text(e.get("source")),
                when_iso=when.isoformat() if when else "",
                when=f"{seen}{local.day} {local:%b %Y, %H:%M} {local.tzname()}" if local else "",
                snippet=_text(e.get("snippet")),
                why="; ".join(_text(r) for r in reasons)
                if isinstance(reasons, list)
                else _text(reasons),
                also=_text(e.get("also")),
            )
        )
    return out


def edition_view(row: EditionRow, zone_name: str) -> EditionView:
    content = row.content
    zone = _zone(zone_name)
    known = {t.id for t in themes()}
    sections = []
    raw_sections = content.get("sections")
    for s in raw_sections if isinstance(raw_sections, list) else []:
        if not isinstance(s, Mapping):
            continue
        raw_theme = s.get("theme")
        theme: Mapping[str, Any] = raw_theme if isinstance(raw_theme, Mapping) else {}
        theme_id = _text(theme.get("id"))
        sections.append(
            SectionView(
                name=_text(theme.get("name")) or theme_id,
                href=theme_href(theme_id) if theme_id in known else "",
                context=_text(theme.get("context")),
                volume_line=_text(s.get("volume_line")),
                entries=_entries(s.get("entries"), zone),
            )
        )
    start, end = _when(content.get("period_start")), _when(content.get("period_end"))
    period = (
        f"{local_time_in(start, zone_name)} to {local_time_in(end, zone_name)}"
        if start and end
        else ""
    )
    return EditionView(
        subject=_text(content.get("subject")) or row.subject or f"Edition {row.id}",
        period=period,
        top=_entries(content.get("top"), zone),
        sections=sections,
        watchlist=_entries(content.get("watchlist_entries"), zone),
        watchlist_line=_text(content.get("watchlist_line")),
    )


# -- the archive list and search ------------------------------------------------------------


@blueprint.get("/archive")
@public_page(LIST_MAX_AGE)
def archive() -> ResponseReturnValue:
    query = request.args.get("q", "", type=str).strip()[:200]
    theme_id = request.args.get("theme", "", type=str).strip()
    page = _page()
    theme = _theme(theme_id) if theme_id else None
    if theme_id and theme is None:
        abort(404)
    store = archive_store()
    zone = core().settings.digest.public_timezone
    if query:
        if page > MAX_SEARCH_PAGE:
            abort(404)
        results = store.search(query, page, PER_PAGE)
        return render_template(
            "web/archive/search.html",
            query=query,
            results=results,
            zone=zone,
            themes=themes(),
            has_next=results.has_next and page < MAX_SEARCH_PAGE,
        )
    return render_template(
        "web/archive/list.html",
        editions=store.editions(page, PER_PAGE, theme.id if theme else None),
        theme=theme,
        themes=themes(),
        names=theme_names(),
        theme_links=theme_links(),
        zone=zone,
    )


# -- editions -------------------------------------------------------------------------------


def _render_edition(row: EditionRow, zone: str, personal: bool) -> str:
    return render_template(
        "web/archive/edition.html",
        edition=row,
        d=edition_view(row, zone),
        personal=personal,
    )


def _content(content: Mapping[str, Any]) -> dict[str, Any]:
    """The stored digest dict with every part the feed template reads present."""
    d = dict(content)
    for key in ("top", "sections", "watchlist_entries"):
        value = d.get(key)
        d[key] = value if isinstance(value, list) else []
    return d


@blueprint.get("/editions/<int:edition_id>")
@public_page(EDITION_MAX_AGE)
def edition(edition_id: int) -> ResponseReturnValue:
    row = DeliveryStore(core().store).get_edition(edition_id)
    if row is None or row.kind != "public":
        abort(404)
    return _render_edition(row, core().settings.digest.public_timezone, personal=False)


@blueprint.get("/editions/<int:edition_id>/<token>")
def personal_edition(edition_id: int, token: str) -> ResponseReturnValue:
    """A personal digest's "view in browser": the token is for this edition and its reader,
    and the reader's address is still the one it was issued to."""
    app = core()
    try:
        subject, extra = app.tokens.read("view", token)
    except TokenError:
        abort(404)
    if extra != str(edition_id):
        abort(404)
    row = DeliveryStore(app.store).get_edition(edition_id)
    if row is None or row.kind != "personal" or row.subscriber_id != subject.subscriber_id:
        abort(404)
    owner = archive_store().subscriber(subject.subscriber_id)
    if owner is None or fingerprint(owner[0]) != subject.fingerprint:
        abort(404)
    return _render_edition(row, owner[1], personal=True)


# -- the Atom feed --------------------------------------------------------------------------


@blueprint.get("/archive.atom")
@public_page(LIST_MAX_AGE)
def feed() -> ResponseReturnValue:
    return Response(_feed(archive_store()), mimetype="application/atom+xml")


def _feed(store: ArchiveStore) -> str:
    settings = core().settings
    base = settings.web.base_url
    entries = []
    for edition_id, subject, created_at, content in store.latest_editions(FEED_ENTRIES):
        html = render_template(
            "web/archive/feed_entry.html",
            d=_content(content),
            zone=settings.digest.public_timezone,
            url=f"{base}/editions/{edition_id}",
        )
        entries.append(
            {
                "id": edition_id,
                "url": f"{base}/editions/{edition_id}",
                "title": xml_safe(subject or f"Edition {edition_id}"),
                "updated": created_at,
                "summary": xml_safe(content.get("preheader") or ""),
                "html": xml_safe(html),
            }
        )
    return render_template(
        "web/feed.xml",
        entries=entries,
        updated=entries[0]["updated"] if entries else datetime(2026, 1, 1, tzinfo=UTC),
        self_url=f"{base}/archive.atom",
        archive_url=f"{base}/archive",
    )


# -- themes ---------------------------------------------------------------------------------


@blueprint.get("/themes", endpoint="themes")
@public_page(LIST_MAX_AGE)
def themes_index() -> ResponseReturnValue:
    return render_template("web/archive/themes.html", themes=themes())


@blueprint.get("/themes/<theme_id>")
@public_page(LIST_MAX_AGE)
def theme(theme_id: str) -> ResponseReturnValue:
    info = _theme(theme_id)
    if info is None:
        abort(404)
    store = archive_store()
    weeks = store.weekly_volume(info.id, core().clock(), CHART_WEEKS)
    chart = svg.weekly_bars(
        weeks,
        title=f"{info.name}: items per week, last {CHART_WEEKS} weeks",
        element_id=f"chart-{info.id}",
    )
    return render_template(
        "web/archive/theme.html",
        theme=info,
        items=store.theme_items(info.id, THEME_ITEMS),
        chart=chart,
        weeks=weeks,
        total=sum(count for _, count in weeks),
        zone=core().settings.digest.public_timezone,
        names=theme_names(),
    )


# -- a cache of the public pages ------------------------------------------------------------
# Public pages are the same for everyone, and what they show changes only when an edition
# is built or items are stored. Each worker process keeps the responses it gave (status,
# headers, body: the security headers included) for the archive's public GET pages, with
# the version of the data they came from (``ArchiveStore.versions``: the newest item and
# the newest listed edition, read at most once a second); a response is given again only
# while that version holds, and for at most PAGE_MAX_AGE (an item edited in place). An
# edition page never changes. Only 200 responses without a cookie are kept; token pages,
# the editor and every other part of the app never pass through the cache. A hit is
# answered before Flask sees the request: ~0.1 ms instead of ~1 ms of a worker's CPU.

PAGE_CACHE_ENTRIES = 2048
PAGE_CACHE_BYTES = 64 * 2**20  # per worker process
PAGE_MAX_AGE = 300.0  # seconds
VERSION_SECONDS = 1.0  # how long a worker trusts the data version it last read
CACHED_PATHS = re.compile(r"/(?:archive|archive\.atom|themes(?:/[^/]+)?|editions/[0-9]+)")

Cached = tuple[str, list[tuple[str, str]], bytes]


class PageCache:
    """A thread-safe LRU of responses: key → (version, stored at, response), bounded in
    entries and in bytes."""

    def __init__(
        self,
        entries: int = PAGE_CACHE_ENTRIES,
        max_bytes: int = PAGE_CACHE_BYTES,
        max_age: float = PAGE_MAX_AGE,
    ) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._pages: OrderedDict[Hashable, tuple[Hashable, float, Cached]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, version: Hashable) -> Cached | None:
        now = time.monotonic()
        with self._lock:
            found = self._pages.get(key)
            if found is None or found[0] != version or now - found[1] > self.max_age:
                self.misses += 1
                return None
            self._pages.move_to_end(key)
            self.hits += 1
            return found[2]

    def put(self, key: Hashable, version: Hashable, response: Cached) -> None:
        size = len(response[2])
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= len(old[2][2])
            self._pages[key] = (version, time.monotonic(), response)
            self._bytes += size
            while len(self._pages) > self.entries or self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._pages.popitem(last=False)
                self._bytes -= len(dropped[2])


class PublicPages:
    """WSGI middleware in front of the app: the archive's public pages from a PageCache."""

    def __init__(self, flask: Flask, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.flask = flask
        self.wsgi_app = wsgi_app
        self.cache = PageCache()
        self._version: tuple[float, tuple[int, int, int]] | None = None

    def version(self, path: str) -> Hashable:
        if path.startswith("/editions/"):
            return None  # an edition never changes
        now = time.monotonic()
        memo = self._version
        if memo is None or now - memo[0] >= VERSION_SECONDS:
            app = self.flask.extensions["qasid"]
            memo = self._version = (now, ArchiveStore(app.store).versions())
        if path.startswith("/themes/"):  # the chart's last bar moves every Monday
            return (memo[1], app_week(self.flask))
        return memo[1]

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or not CACHED_PATHS.fullmatch(path):
            return self.wsgi_app(environ, start_response)
        key = (environ.get("SCRIPT_NAME", ""), path, environ.get("QUERY_STRING", ""))
        try:
            version = self.version(path)
        except Exception:  # the database is away: let the app answer (and fail) as usual
            return self.wsgi_app(environ, start_response)
        hit = self.cache.get(key, version)
        if hit is not None:
            start_response(hit[0], list(hit[1]))
            return [hit[2]]
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = status, headers
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        headers = answer.get("headers") or []
        if answer.get("status", "").startswith("200 ") and not any(
            name.lower() == "set-cookie" for name, _ in headers
        ):
            self.cache.put(key, version, (answer["status"], list(headers), body))
        return [body]


def app_week(flask: Flask) -> tuple[int, int]:
    now = flask.extensions["qasid"].clock()
    year, week, _ = now.astimezone(UTC).date().isocalendar()
    return year, week


def page_cache(flask: Flask) -> PageCache | None:
    """The app's public-page cache (None before ``register``)."""
    middleware = flask.extensions.get("qasid.archive.pages")
    return middleware.cache if isinstance(middleware, PublicPages) else None


def register(flask: Flask) -> None:
    install_filters(flask)
    flask.register_blueprint(blueprint)
    pages = PublicPages(flask, flask.wsgi_app)
    flask.extensions["qasid.archive.pages"] = pages
    flask.wsgi_app = pages  # type: ignore[method-assign]
