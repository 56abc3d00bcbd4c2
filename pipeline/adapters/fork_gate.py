"""No fork while another thread of this process is inside SQLite.

SQLite keeps process-wide mutexes (its memory allocator's, the file layer's); a thread
holds one for a moment inside almost every call. ``fork()`` copies only the forking thread:
a mutex another thread held at that instant stays held in the child for ever, and the
child's first SQLite call (opening its own connection) hangs. SQLite's documentation warns
against it. It happened in the test suite: a build's forked child hung for ever in
``sqlite3.connect``, forked just after the test had stored items, which wakes the WAL
checkpointer's thread (the likely holder; the child's stack alone was seen). In the worker
the poll job writes items on one thread while the delivery job forks helpers that open
connections.

Every SQLite transaction of a ``Store`` (``Store._begin``) and the checkpointer's work run
``inside()`` the process's gate; ``os.register_at_fork`` makes every ``os.fork`` (the
multiprocessing forks of ``forked`` included) wait until no other thread is inside, and
keeps them out until the child exists. A thread that forks while inside itself does not
wait for itself. Threads enter freely while no fork is waiting to start, so a fork may
wait for a long transaction of another thread (a poll's batch): seconds at most.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ForkGate:
    """Counts the threads inside SQLite; a fork waits until only the forking one is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inside = 0  # entries of all threads, nested ones included
        self._mine = threading.local()  # this thread's entries

    @contextmanager
    def inside(self) -> Iterator[None]:
        with self._lock:  # held by a fork from before it starts until the child exists
            self._inside += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1
        try:
            yield
        finally:
            self._mine.depth -= 1
            with self._lock:
                self._inside -= 1
                self._changed.notify_all()

    def before_fork(self) -> None:
        """Wait until no other thread is inside, then hold the gate shut across the fork."""
        self._lock.acquire()
        own = getattr(self._mine, "depth", 0)
        while self._inside > own:
            self._changed.wait()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """The child has this thread alone: only its own entries are still open."""
        self._inside = getattr(self._mine, "depth", 0)
        self._lock.release()


GATE = ForkGate()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=GATE.before_fork,
        after_in_parent=GATE.after_fork_in_parent,
        after_in_child=GATE.after_fork_in_child,
    )
