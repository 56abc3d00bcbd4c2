"""What every mail backend shares: when a batch stops, and the answers for the rest."""

from __future__ import annotations

from pipeline.core.mail import OutgoingEmail, SendOutcome, SendResult


def not_attempted(email: OutgoingEmail, cause: SendResult) -> SendResult:
    """The answer for an email a batch stopped before: nothing was sent, so ``retry``, with
    the cause's ``fatal`` and ``retry_after`` so the caller treats it like the cause."""
    return SendResult(
        delivery_id=email.delivery_id,
        outcome=SendOutcome.RETRY,
        error=f"not attempted: {cause.error}" if cause.error else "not attempted",
        retry_after=cause.retry_after,
        fatal=cause.fatal,
    )


def stops_batch(result: SendResult) -> bool:
    """A fatal result or a rate limit (a delay asked for, or HTTP 429 even without one) ends
    a batch: the next email would meet the same."""
    if result.fatal:
        return True
    return result.outcome is SendOutcome.RETRY and (
        result.retry_after is not None or result.status == 429
    )
