"""Checkpoints of a SQLite database's write-ahead log, on a thread of their own.

A checkpoint copies the pages the WAL holds into the database file and syncs it. SQLite
runs one inside the commit that takes the WAL past ``wal_autocheckpoint`` pages, so the
connection writing item batches paid for it: about a fifth of a new item's time in
bench/store.py (every few batches, a commit that copied and synced ~128 MB). SQLite's
documentation suggests, for write-heavy applications, turning automatic checkpoints off on
the writer and running them on another thread or process; a PASSIVE checkpoint never
blocks the writer (WAL mode lets writers append while the log is copied), and the
``sqlite3`` module releases the GIL while SQLite works, so the copy runs on the other core.

The store tells the checkpointer how many items each commit wrote; once ``every_items``
have been written since the last checkpoint it runs one. The writer's own
``wal_autocheckpoint`` stays on, set higher (``backstop_pages``), in case this thread falls
behind or stops.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from pipeline.adapters.fork_gate import GATE

log = logging.getLogger(__name__)


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection to ``path`` once
    ``every_items`` items have been reported written since the last one."""

    def __init__(self, path: str, every_items: int) -> None:
        self.path = path
        self.every_items = every_items
        self.checkpoints = 0  # completed, for tests and benchmarks
        self._written = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="qasid-wal-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, items: int) -> None:
        """Report a commit that wrote ``items`` items (cheap: a counter and, at the
        threshold, a wake-up)."""
        if not self._thread.is_alive():  # stopped (closed, or its connection failed)
            return
        with self._lock:
            self._written += items
            due = self._written >= self.every_items
            if due:
                self._written = 0
                self._idle.clear()
        if due:
            self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no checkpoint is due or running (tests, benchmarks)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            with GATE.inside():  # no fork copies this thread inside SQLite (fork_gate)
                connection = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    with GATE.inside():
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as error:  # the writer's backstop still checkpoints
                    log.warning("WAL checkpoint of %s failed: %s", self.path, error)
                finally:
                    if not self._wake.is_set():
                        self._idle.set()
        except sqlite3.Error as error:
            log.warning("WAL checkpointer for %s stopped: %s", self.path, error)
        finally:
            self._idle.set()
            if connection is not None:
                with GATE.inside():
                    connection.close()
