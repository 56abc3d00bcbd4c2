"""A fork never copies another thread in the middle of a SQLite call (fork_gate)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pipeline.adapters import forked
from pipeline.adapters.fork_gate import ForkGate
from pipeline.adapters.storage import Store


def test_a_fork_waits_for_another_threads_transaction_and_the_child_can_use_the_database(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'gate.db'}")
    store.upgrade()
    entered, left = threading.Event(), []

    def long_transaction() -> None:
        with store._begin() as conn:
            conn.exec_driver_sql("SELECT 1").all()
            entered.set()
            time.sleep(0.5)
            left.append(time.monotonic())

    other = threading.Thread(target=long_transaction)
    other.start()
    entered.wait()

    def in_child() -> tuple[int, float, int]:
        started = time.monotonic()
        store.engine.dispose(close=False)
        return os.getpid(), started, store.count_items()

    pid, started, items = forked.ChildCall(in_child).result()
    other.join()
    assert pid != os.getpid() and items == 0
    assert started >= left[0]  # forked once the other thread's transaction was over
    store.close()


def test_a_thread_that_forks_while_inside_does_not_wait_for_itself() -> None:
    gate = ForkGate()
    with gate.inside(), gate.inside():
        gate.before_fork()  # returns: the only entries are this thread's own
        gate.after_fork_in_parent()
    entered, release = threading.Event(), threading.Event()

    def holds() -> None:
        with gate.inside():
            entered.set()
            release.wait()

    other = threading.Thread(target=holds)
    other.start()
    entered.wait()
    forking = threading.Thread(target=lambda: (gate.before_fork(), gate.after_fork_in_parent()))
    forking.start()
    forking.join(timeout=0.2)
    assert forking.is_alive()  # waits for the other thread
    release.set()
    forking.join(timeout=5)
    other.join()
    assert not forking.is_alive()
