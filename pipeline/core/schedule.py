"""When to poll a feed next, and what its record says after a poll: the pure "decider".

The poller carries these decisions out; nothing here touches the network or the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.core.models import FeedOutcome, FeedState


@dataclass(frozen=True)
class BackoffPolicy:
    base_minutes: float = 5.0
    max_minutes: float = 24 * 60.0
    gone_after: int = 3  # consecutive 410 answers before the feed is disabled


@dataclass(frozen=True)
class PollRecord:
    """Everything the store writes about a feed after one poll."""

    status: FeedOutcome
    message: str | None
    http_status: int | None
    failures: int
    gone_count: int
    enabled: bool
    checked_at: datetime
    next_poll_at: datetime
    succeeded: bool


def backoff_delay(failures: int, interval_minutes: float, policy: BackoffPolicy) -> timedelta:
    """Exponential back-off after ``failures`` consecutive failures, never below the interval."""
    exponent = min(max(failures - 1, 0), 30)  # 2**30 minutes is already past any cap
    minutes = min(policy.max_minutes, policy.base_minutes * 2**exponent)
    return timedelta(minutes=max(minutes, interval_minutes))


def decide_after_poll(
    state: FeedState,
    outcome: FeedOutcome,
    now: datetime,
    policy: BackoffPolicy,
    *,
    message: str | None = None,
    http_status: int | None = None,
    retry_after: float | None = None,
) -> PollRecord:
    """Fold one poll's outcome into the feed's record and pick its next poll time."""
    interval = timedelta(minutes=state.interval_minutes)
    if not outcome.is_failure:
        return PollRecord(
            status=outcome,
            message=message,
            http_status=http_status,
            failures=0,
            gone_count=0,
            enabled=True,
            checked_at=now,
            next_poll_at=now + interval,
            succeeded=True,
        )

    failures = state.failures + 1
    gone_count = state.gone_count + 1 if http_status == 410 else 0
    enabled = True
    status = outcome
    if gone_count >= policy.gone_after:
        enabled = False
        status = FeedOutcome.GONE
        message = (
            f"HTTP 410 Gone {gone_count} times in a row: feed disabled "
            "(re-enable with `qasid feeds enable`)"
        )
    delay = backoff_delay(failures, state.interval_minutes, policy)
    if retry_after is not None and retry_after > 0:
        # The server told us when to come back; honour it, within the back-off cap.
        asked = timedelta(seconds=min(retry_after, policy.max_minutes * 60))
        delay = max(delay, asked)
    return PollRecord(
        status=status,
        message=message,
        http_status=http_status,
        failures=failures,
        gone_count=gone_count,
        enabled=enabled,
        checked_at=now,
        next_poll_at=now + delay,
        succeeded=False,
    )


def is_due(state: FeedState, now: datetime) -> bool:
    """A feed is due when enabled and its next poll time has come (or was never set)."""
    return state.enabled and (state.next_poll_at is None or state.next_poll_at <= now)
