"""Use cases for subscribers and watchlists: validate at the edge, then store.

Email syntax is checked with email-validator (no DNS look-up here; deliverability is the
mail provider's job), zones with the IANA database (zoneinfo), queries with the watchlist
query language (the saved form is the canonical one, so equal queries are one watchlist).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from pipeline.adapters.storage import StoredItem
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.query import format_query, parse_query
from pipeline.core.subscribers import (
    Subscriber,
    SubscriberError,
    SubscriberStatus,
    Watchlist,
    check_frequency,
    check_hour,
    check_themes,
)
from pipeline.core.tagger import THEME_IDS
from pipeline.core.watchlists import WatchlistIndex
from pipeline.rules import load_aliases


def normalise_email(raw: str) -> str:
    """The address as stored: syntax checked, domain lower-cased and IDNA-normalised."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise SubscriberError("email", f"{raw!r} is not a valid address: {error}") from error
    return checked.normalized


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriberError(
            "timezone", f"{name!r} is not a known time zone (e.g. Asia/Karachi, America/New_York)"
        ) from None
    return name


def subscribe(
    app: App,
    email: str,
    *,
    themes: Sequence[str] = (),
    frequency: str = "daily",
    hour: int = 7,
    timezone: str = "Asia/Karachi",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> tuple[Subscriber, bool]:
    """Add a subscriber (all themes when none are named) or update a known one's choices."""
    return SubscriberStore(app.store).add(
        normalise_email(email),
        themes=check_themes(themes, THEME_IDS) if themes else THEME_IDS,
        frequency=check_frequency(frequency),
        hour=check_hour(hour),
        timezone=check_timezone(timezone),
        status=status,
        now=app.clock(),
    )


def add_watchlist(app: App, email: str, query: str, *, instant: bool = False) -> Watchlist:
    """Parse (errors carry a column), then save the canonical form of the query."""
    canonical = format_query(parse_query(query))
    return SubscriberStore(app.store).add_watchlist(
        normalise_email(email), canonical, instant, app.clock()
    )


@dataclass(frozen=True)
class Backtest:
    """How often a query would have matched stored items, week by week."""

    query: str
    days: int
    items_scanned: int
    matches: int
    per_week: list[tuple[datetime, int]]  # (week start, matches), oldest first
    examples: list[StoredItem]

    @property
    def weekly_average(self) -> float:
        return self.matches / max(self.days / 7, 1)


def backtest_query(app: App, query: str, days: int = 30, examples: int = 5) -> Backtest:
    """Run a query over the last ``days`` of stored items so a person can tune it, with the
    engine that matches saved watchlists (aliases from config/aliases.toml included)."""
    parsed = parse_query(query)
    until = app.clock()
    since = until - timedelta(days=days)
    items = SubscriberStore(app.store).items_between(since, until)
    aliases_file = Path(app.settings.root) / "config" / "aliases.toml"
    index = WatchlistIndex(
        [(0, parsed)], aliases=load_aliases(aliases_file) if aliases_file.exists() else None
    )
    found = index.items_by_watchlist((n, i.title, i.summary_text) for n, i in enumerate(items))
    hits = [items[n] for n in found.get(0, ())]
    weeks: Counter[int] = Counter((until - i.published).days // 7 for i in hits)
    week_count = max((days + 6) // 7, 1)
    per_week = [
        (until - timedelta(days=7 * (n + 1)), weeks.get(n, 0)) for n in reversed(range(week_count))
    ]
    return Backtest(format_query(parsed), days, len(items), len(hits), per_week, hits[:examples])
