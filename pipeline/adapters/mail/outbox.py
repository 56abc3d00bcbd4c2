"""The outbox backend: one RFC 5322 ``.eml`` file per email, for local use and the demo.

The file is ``{outbox_dir}/{delivery_id}.eml``: sending the same delivery again overwrites it,
never adds a second file. It is written to a hidden temporary name in the same folder,
fsync'd and renamed, and the folder is fsync'd before ``sent`` is answered, so a ``.eml``
is either whole or absent, even across a crash (RELIABILITY: the delivery ledger).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.adapters.mail.base import not_attempted
from pipeline.core.mail import OutgoingEmail, SendOutcome, SendResult, build_mime, recipient_problem

log = logging.getLogger(__name__)


class OutboxMailer:
    """Writes each email to ``outbox_dir`` (created on first use)."""

    def __init__(self, outbox_dir: str | Path) -> None:
        self.outbox_dir = Path(outbox_dir)

    def path_for(self, delivery_id: str) -> Path:
        return self.outbox_dir / f"{delivery_id}.eml"

    def send(self, email: OutgoingEmail) -> SendResult:
        result = self._write(email)
        if result.outcome is SendOutcome.SENT:
            try:
                _fsync_dir(self.outbox_dir)
            except OSError as error:
                return self._unwritable(email, error)
        return result

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """Writes every file, then fsyncs the folder once before answering."""
        results: list[SendResult] = []
        for index, email in enumerate(emails):
            result = self._write(email)
            results.append(result)
            if result.fatal:
                results.extend(not_attempted(rest, result) for rest in emails[index + 1 :])
                break
        if any(result.outcome is SendOutcome.SENT for result in results):
            try:
                _fsync_dir(self.outbox_dir)
            except OSError as error:
                return [
                    self._unwritable(email, error) if result.outcome is SendOutcome.SENT else result
                    for email, result in zip(emails, results, strict=True)
                ]
        return results

    def close(self) -> None:
        """Nothing to release."""

    def _write(self, email: OutgoingEmail) -> SendResult:
        problem = recipient_problem(email.to)
        if problem:
            return SendResult(email.delivery_id, SendOutcome.FAILED, error=problem)
        data = build_mime(email).as_bytes()
        path = self.path_for(email.delivery_id)
        try:
            write_atomically(path, data)
        except OSError as error:
            return self._unwritable(email, error)
        log.debug("outbox: wrote %s", path.name)
        return SendResult(email.delivery_id, SendOutcome.SENT, provider_message_id=path.name)

    def _unwritable(self, email: OutgoingEmail, error: OSError) -> SendResult:
        # A folder we cannot write (missing, read-only, full) fails every email alike.
        reason = error.strerror or str(error)
        log.error("outbox %s is not writable: %s", self.outbox_dir, reason)
        return SendResult(
            email.delivery_id,
            SendOutcome.RETRY,
            error=f"outbox {self.outbox_dir}: {reason} ([mail] outbox_dir)",
            fatal=True,
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file in the same folder:
    write, fsync, rename. Readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
