"""Due-time maths in the reader's zone, DST days included (D-07, D-08)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.core.due import due_period, latest_scheduled, local_instant, next_scheduled

KARACHI = ZoneInfo("Asia/Karachi")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_seven_am_karachi_and_seven_am_new_york_are_due_at_their_own_instants() -> None:
    now = utc(2026, 11, 29, 12, 30)
    karachi = due_period(now, 7, KARACHI, "daily", None)
    new_york = due_period(now, 7, NEW_YORK, "daily", None)
    assert karachi is not None and karachi.end == utc(2026, 11, 29, 2, 0)
    assert new_york is not None and new_york.end == utc(2026, 11, 29, 12, 0)
    assert karachi.end - karachi.start == timedelta(days=1)


def test_not_due_again_until_the_next_scheduled_instant() -> None:
    end = utc(2026, 11, 29, 2, 0)
    assert due_period(end + timedelta(hours=23), 7, KARACHI, "daily", end) is None
    later = due_period(end + timedelta(days=1), 7, KARACHI, "daily", end)
    assert later is not None and (later.start, later.end) == (end, end + timedelta(days=1))


def test_a_worker_back_thirty_minutes_late_builds_the_missed_digest_once() -> None:
    last = utc(2026, 11, 28, 2, 0)
    late = utc(2026, 11, 29, 2, 30)
    period = due_period(late, 7, KARACHI, "daily", last)
    assert period is not None and period.end == utc(2026, 11, 29, 2, 0)
    assert due_period(late, 7, KARACHI, "daily", period.end) is None


def test_weekly_digests_fall_on_mondays() -> None:
    now = utc(2026, 11, 29, 12, 0)  # a Sunday
    period = due_period(now, 7, KARACHI, "weekly", None)
    assert period is not None
    assert period.local_date == date(2026, 11, 23)
    assert period.end.astimezone(KARACHI).weekday() == 0


def test_instant_subscribers_have_no_digest_period() -> None:
    assert due_period(utc(2026, 11, 29), 7, KARACHI, "instant", None) is None


@pytest.mark.parametrize(
    ("day", "hour"),
    [
        (date(2026, 3, 8), 2),  # spring forward: 02:00-03:00 does not exist in New York
        (date(2026, 11, 1), 1),  # fall back: 01:00-02:00 happens twice
        (date(2026, 3, 8), 7),
        (date(2026, 11, 1), 7),
    ],
)
def test_one_digest_per_local_day_across_dst_changes(day: date, hour: int) -> None:
    start = local_instant(day - timedelta(days=1), 12, NEW_YORK)
    last: datetime | None = local_instant(day - timedelta(days=1), hour, NEW_YORK)
    now, deliveries = start, []
    while now < start + timedelta(days=2):
        period = due_period(now, hour, NEW_YORK, "daily", last)
        if period is not None:
            deliveries.append(period.local_date)
            last = period.end
        now += timedelta(minutes=15)
    assert deliveries == [day, day + timedelta(days=1)]


def test_a_time_in_the_spring_forward_gap_moves_past_the_gap() -> None:
    instant = local_instant(date(2026, 3, 8), 2, NEW_YORK)
    assert instant == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    assert instant.astimezone(NEW_YORK).hour == 3


def test_latest_and_next_scheduled_bracket_now() -> None:
    now = utc(2026, 11, 29, 12, 30)
    before = latest_scheduled(now, 7, KARACHI, "daily")
    after = next_scheduled(now, 7, KARACHI, "daily")
    assert before <= now < after and after - before == timedelta(days=1)
