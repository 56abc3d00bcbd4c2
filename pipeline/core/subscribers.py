"""Subscribers and their watchlists: the domain types and the rules on their preferences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pipeline.core.errors import QasidError


class SubscriberError(QasidError):
    """A subscriber's preferences or watchlist are not acceptable. Names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


class Frequency(StrEnum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"


class SubscriberStatus(StrEnum):
    PENDING = "pending"  # signed up, not yet confirmed
    ACTIVE = "active"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"

    @property
    def suppressed(self) -> bool:
        """Never mailed again (until they subscribe afresh)."""
        return self in (
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.BOUNCED,
            SubscriberStatus.COMPLAINED,
        )


MAX_WATCHLISTS = 25  # per subscriber: enough for a newsroom desk, not for abuse


@dataclass(frozen=True, slots=True)
class Watchlist:
    id: int
    query: str  # canonical form (format_query of the parsed query)
    instant: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    status: SubscriberStatus
    themes: tuple[str, ...]
    frequency: Frequency
    hour: int  # local delivery hour, 0-23
    timezone: str  # IANA zone name, e.g. "Asia/Karachi"
    watchlists: tuple[Watchlist, ...] = field(default_factory=tuple)
    created_at: datetime | None = None


def check_themes(themes: Iterable[str], known: Sequence[str]) -> tuple[str, ...]:
    """Deduplicated theme ids in the editorial order of ``known``; unknown ids refused."""
    wanted = {t.strip() for t in themes if t.strip()}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise SubscriberError(
            "themes", f"unknown theme {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return tuple(t for t in known if t in wanted)


def check_frequency(value: str) -> Frequency:
    try:
        return Frequency(value.strip().lower())
    except ValueError:
        choices = ", ".join(f.value for f in Frequency)
        raise SubscriberError("frequency", f"{value!r} is not one of {choices}") from None


def check_hour(value: int) -> int:
    if not 0 <= value <= 23:
        raise SubscriberError("hour", f"{value} is not an hour of the day (0-23)")
    return value
