"""The public archive: editions at permanent URLs, a theme filter, item search, an Atom feed
of editions, theme pages with a weekly-volume chart; and a personal digest's "view in
browser" page behind its signed link.

Everything shown here came from feeds and is untrusted: templates autoescape (``.html``
and ``.xml`` only) and every ``href`` built from feed data goes through ``safe_url`` (only
absolute http(s) URLs). The CSP forbids inline script as a second line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Flask, Response, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from pipeline.adapters.archive_store import ArchiveStore
from pipeline.adapters.delivery_store import DeliveryStore, EditionRow
from pipeline.adapters.render import safe_url
from pipeline.core.digest import ThemeInfo
from pipeline.tokens import TokenError, fingerprint
from pipeline.web import svg
from pipeline.web.context import core, themes

blueprint = Blueprint("archive", __name__)

PER_PAGE = 20
MAX_SEARCH_PAGE = 25  # 500 results: enough to browse, bounded work per request
FEED_ENTRIES = 20
THEME_ITEMS = 20
CHART_WEEKS = 26


def archive_store() -> ArchiveStore:
    return ArchiveStore(core().store)


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
    page = request.args.get("page", 1, type=int) or 1
    return max(1, page)


# -- the archive list and search ------------------------------------------------------------


@blueprint.get("/archive")
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
            names=theme_names(),
            theme_links=theme_links(),
            has_next=results.has_next and page < MAX_SEARCH_PAGE,
        )
    editions = store.editions(page, PER_PAGE, theme.id if theme else None)
    return render_template(
        "web/archive/list.html",
        editions=editions,
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
        d=_content(row.content),
        zone=zone,
        personal=personal,
        names=theme_names(),
    )


def _content(content: Mapping[str, Any]) -> dict[str, Any]:
    """The stored digest dict with every part the template reads present (old or partial
    rows render instead of failing)."""
    d = dict(content)
    for key in ("top", "sections", "watchlist_entries"):
        value = d.get(key)
        d[key] = value if isinstance(value, list) else []
    return d


@blueprint.get("/editions/<int:edition_id>")
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
def feed() -> ResponseReturnValue:
    settings = core().settings
    base = settings.web.base_url
    entries = []
    for edition_id, subject, created_at, content in archive_store().latest_editions(FEED_ENTRIES):
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
    body = render_template(
        "web/feed.xml",
        entries=entries,
        updated=entries[0]["updated"] if entries else datetime(2026, 1, 1, tzinfo=UTC),
        self_url=f"{base}/archive.atom",
        archive_url=f"{base}/archive",
    )
    return Response(body, mimetype="application/atom+xml")


# -- themes ---------------------------------------------------------------------------------


@blueprint.get("/themes", endpoint="themes")
def themes_index() -> ResponseReturnValue:
    return render_template("web/archive/themes.html", themes=themes())


@blueprint.get("/themes/<theme_id>")
def theme(theme_id: str) -> ResponseReturnValue:
    info = _theme(theme_id)
    if info is None:
        abort(404)
    store = archive_store()
    now = core().clock()
    weeks = store.weekly_volume(info.id, now, CHART_WEEKS)
    chart = svg.weekly_bars(
        weeks,
        title=f"{info.name}: items per week, last {CHART_WEEKS} weeks",
        element_id=f"chart-{info.id}",
    )
    return render_template(
        "web/archive/theme.html",
        theme=info,
        items=store.theme_items(info.id, THEME_ITEMS),
        chart=Markup(chart),
        weeks=weeks,
        total=sum(count for _, count in weeks),
        zone=core().settings.digest.public_timezone,
        names=theme_names(),
    )


def register(flask: Flask) -> None:
    install_filters(flask)
    flask.register_blueprint(blueprint)
