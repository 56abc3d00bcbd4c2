"""The poll decider: back-off, Retry-After, 410 handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.core.models import FeedOutcome, FeedState
from pipeline.core.schedule import BackoffPolicy, backoff_delay, decide_after_poll, is_due

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
POLICY = BackoffPolicy(base_minutes=5, max_minutes=120, gone_after=3)


def state(**kw: object) -> FeedState:
    return FeedState(id=1, url="https://a.example/feed", interval_minutes=30, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failures", "minutes"), [(1, 30), (2, 30), (3, 30), (4, 40), (5, 80), (6, 120), (60, 120)]
)
def test_backoff_doubles_from_the_base_never_below_the_interval_and_stops_at_the_cap(
    failures: int, minutes: int
) -> None:
    assert backoff_delay(failures, 30, POLICY) == timedelta(minutes=minutes)


@pytest.mark.parametrize(
    "outcome", [FeedOutcome.OK, FeedOutcome.NOT_MODIFIED, FeedOutcome.MALFORMED]
)
def test_success_resets_failures_and_polls_again_after_the_interval(outcome: FeedOutcome) -> None:
    record = decide_after_poll(state(failures=4, gone_count=1), outcome, NOW, POLICY)
    assert (record.failures, record.gone_count, record.succeeded) == (0, 0, True)
    assert record.next_poll_at == NOW + timedelta(minutes=30)


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    record = decide_after_poll(
        state(), FeedOutcome.HTTP_ERROR, NOW, POLICY, http_status=429, retry_after=3600
    )
    assert record.next_poll_at == NOW + timedelta(hours=1)


def test_retry_after_cannot_push_a_feed_past_the_backoff_cap() -> None:
    record = decide_after_poll(
        state(), FeedOutcome.HTTP_ERROR, NOW, POLICY, http_status=503, retry_after=10**9
    )
    assert record.next_poll_at == NOW + timedelta(minutes=120)


def test_repeated_410_disables_the_feed_with_a_message() -> None:
    record = decide_after_poll(
        state(failures=2, gone_count=2), FeedOutcome.HTTP_ERROR, NOW, POLICY, http_status=410
    )
    assert record.status is FeedOutcome.GONE
    assert not record.enabled
    assert record.message and "410" in record.message


def test_a_single_410_only_backs_off() -> None:
    record = decide_after_poll(state(), FeedOutcome.HTTP_ERROR, NOW, POLICY, http_status=410)
    assert record.enabled and record.gone_count == 1


def test_due_when_never_polled_or_time_has_come_and_enabled() -> None:
    assert is_due(state(), NOW)
    assert is_due(state(next_poll_at=NOW), NOW)
    assert not is_due(state(next_poll_at=NOW + timedelta(seconds=1)), NOW)
    assert not is_due(state(enabled=False), NOW)
