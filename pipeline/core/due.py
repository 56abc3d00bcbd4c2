"""When a subscriber's next digest is due, in their own time zone (DST-safe).

A daily digest is due at ``hour``:00 local time every day, a weekly one at that hour every
Monday. The period a digest covers ends at that scheduled instant and starts where the last
delivered digest ended (so a worker that was down catches up once, without gaps or
repeats), or one day/week earlier for a first digest.

DST: a local time that does not exist (spring forward, e.g. 02:00 in New York) resolves to
the instant one hour later on the new offset; a local time that happens twice (fall back)
is taken at its first occurrence. Either way there is exactly one digest per local day.
The zone comes in as a ``tzinfo`` so this module never reads the zone database itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

WEEKLY_WEEKDAY = 0  # Monday


@dataclass(frozen=True)
class Period:
    start: datetime  # aware UTC, inclusive
    end: datetime  # aware UTC, exclusive: the scheduled delivery instant
    local_date: date  # the reader's calendar date of the delivery


def local_instant(day: date, hour: int, zone: tzinfo) -> datetime:
    """``hour``:00 on ``day`` in ``zone`` as an aware UTC instant (fold=0: first occurrence;
    a time in a DST gap maps past the gap)."""
    local = datetime.combine(day, time(hour), tzinfo=zone)
    return local.astimezone(UTC)


def latest_scheduled(now: datetime, hour: int, zone: tzinfo, frequency: str) -> datetime:
    """The most recent scheduled delivery instant at or before ``now`` (UTC)."""
    today = now.astimezone(zone).date()
    for back in range(0, 9):
        day = today - timedelta(days=back)
        if frequency == "weekly" and day.weekday() != WEEKLY_WEEKDAY:
            continue
        instant = local_instant(day, hour, zone)
        if instant <= now:
            return instant
    raise AssertionError("a delivery instant always exists within 8 days")  # pragma: no cover


def due_period(
    now: datetime,
    hour: int,
    zone: tzinfo,
    frequency: str,
    last_end: datetime | None,
) -> Period | None:
    """The period whose digest is due now, or None when the latest one was already built.

    Instant alerts have no period: they are sent per item, not on a schedule.
    """
    if frequency not in ("daily", "weekly"):
        return None
    end = latest_scheduled(now, hour, zone, frequency)
    if last_end is not None and end <= last_end:
        return None
    span = timedelta(days=7 if frequency == "weekly" else 1)
    start = last_end if last_end is not None else end - span
    # A reader who was away for months gets the last period's news, not a book.
    start = max(start, end - 2 * span)
    return Period(start=start, end=end, local_date=end.astimezone(zone).date())


def next_scheduled(now: datetime, hour: int, zone: tzinfo, frequency: str) -> datetime:
    """The first scheduled delivery instant strictly after ``now`` (for display)."""
    today = now.astimezone(zone).date()
    for ahead in range(0, 9):
        day = today + timedelta(days=ahead)
        if frequency == "weekly" and day.weekday() != WEEKLY_WEEKDAY:
            continue
        instant = local_instant(day, hour, zone)
        if instant > now:
            return instant
    raise AssertionError("a delivery instant always exists within 8 days")  # pragma: no cover
