"""Work shared with forked helpers (``pipeline.adapters.forked``): real processes."""

from __future__ import annotations

import logging
import os
import time

import pytest

from pipeline.adapters import forked

pytestmark = pytest.mark.skipif(not forked.can_fork(), reason="needs fork")


def slow_square(task: int) -> tuple[int, int]:
    time.sleep(0.02)  # long enough that helpers take some of the tasks
    return task * task, os.getpid()


def collect(count: int, work, processes: int = 3) -> tuple[dict[int, object], forked.TaskRun]:  # type: ignore[no-untyped-def]
    consumed: dict[int, object] = {}
    here = os.getpid()

    def consume(task: int, result: object) -> None:
        assert os.getpid() == here  # results are handed back: only this process consumes
        assert task not in consumed, f"task {task} consumed twice"
        consumed[task] = result

    return consumed, forked.run_tasks(count, work, consume, processes)


def test_every_task_is_consumed_once_here_and_helpers_share_the_work() -> None:
    consumed, run = collect(60, slow_square)
    assert sorted(consumed) == list(range(60))
    assert all(result[0] == task * task for task, result in consumed.items())  # type: ignore[index]
    pids = {result[1] for result in consumed.values()}  # type: ignore[index]
    assert os.getpid() in pids and len(pids) == 3
    assert run.processes == 3 and run.failed == 0


def test_first_tasks_run_here_before_helpers_start_and_helpers_inherit_their_caches() -> None:
    here = os.getpid()
    warmed: dict[str, int] = {}  # a cache the first task fills

    def work(task: int) -> tuple[int, bool, int]:
        if task == 0:
            assert os.getpid() == here
            warmed["story"] = 42
        time.sleep(0.02)
        return os.getpid(), warmed.get("story") == 42, task

    order: list[int] = []
    consumed: dict[int, tuple[int, bool, int]] = {}

    def consume(task: int, result: tuple[int, bool, int]) -> None:
        order.append(task)
        consumed[task] = result

    run = forked.run_tasks(30, work, consume, 3, first_here=1)
    assert order[0] == 0 and sorted(consumed) == list(range(30))
    assert all(inherited for _, inherited, _ in consumed.values())  # every helper saw it
    assert len({pid for pid, _, _ in consumed.values()}) == 3 and run.processes == 3
    # as many first tasks as there are: no helper is started for nothing
    assert forked.run_tasks(2, work, consume, 3, first_here=5).processes == 1


def test_one_process_runs_everything_here_without_forking() -> None:
    consumed, run = collect(5, slow_square, processes=1)
    assert {result[1] for result in consumed.values()} == {os.getpid()}  # type: ignore[index]
    assert run.processes == 1


def test_a_task_that_fails_in_a_helper_is_run_again_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = os.getpid()

    def flaky(task: int) -> int:
        time.sleep(0.01)
        if os.getpid() != parent:
            raise RuntimeError(f"helper cannot do task {task}")
        return task

    with caplog.at_level(logging.WARNING):
        consumed, run = collect(20, flaky)
    assert consumed == {task: task for task in range(20)}
    assert run.failed >= 1
    assert "helper cannot do task" in caplog.text  # the helper's traceback is logged


def test_a_helper_killed_midway_loses_no_task() -> None:
    parent = os.getpid()

    def dies(task: int) -> int:
        time.sleep(0.01)
        if os.getpid() != parent and task >= 3:
            os._exit(9)  # as if killed: no message, no clean-up
        return task

    consumed, run = collect(30, dies)
    assert consumed == {task: task for task in range(30)}
    assert run.failed >= 1


def test_an_error_in_a_task_raises_here_as_without_helpers() -> None:
    def broken(task: int) -> int:
        if task == 7:
            raise ValueError("task 7 is broken")
        return task

    with pytest.raises(ValueError, match="task 7 is broken"):
        collect(12, broken)


def test_a_helper_reports_the_memory_it_did_not_share() -> None:
    def allocates(task: int) -> int:
        if os.getpid() != parent:
            block = bytearray(32 * 1024 * 1024)
            block[::4096] = b"\x01" * len(block[::4096])  # touch every page
            _kept.append(block)  # lives until the helper ends
        time.sleep(0.05)
        return task

    parent = os.getpid()
    _, run = collect(8, allocates, processes=2)
    if os.path.exists("/proc/self/smaps_rollup"):
        assert run.helper_private_mib >= 32


_kept: list[bytearray] = []


def test_a_forked_call_reports_the_peak_it_noted_before_letting_memory_go() -> None:
    def heavy_then_light() -> int:
        block = bytearray(48 * 1024 * 1024)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page
        forked.note_private_peak()
        del block  # gone before the end: the end's own figure would miss it
        return 1

    call = forked.ChildCall(heavy_then_light)
    assert call.result() == 1
    if os.path.exists("/proc/self/smaps_rollup"):
        assert call.private_mib >= 48


def test_a_forked_call_hands_its_value_back_while_this_process_goes_on() -> None:
    call = forked.ChildCall(lambda: (os.getpid(), {"big": list(range(200_000))}))
    assert sum(range(1000)) == 499500  # this process is free meanwhile
    pid, value = call.result()
    assert pid != os.getpid() and value == {"big": list(range(200_000))}


def test_a_forked_call_is_running_until_its_child_is_done(tmp_path) -> None:  # type: ignore[no-untyped-def]
    go = tmp_path / "go"

    def waits() -> int:
        while not go.exists():
            time.sleep(0.01)
        return 7

    call = forked.ChildCall(waits)
    time.sleep(0.1)
    assert call.running()  # it waits for the file
    go.touch()
    deadline = time.monotonic() + 10
    while call.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not call.running()  # done, though its answer is not taken yet
    assert call.result() == 7 and not call.running()
    assert not forked.ChildCall(os.getpid, fork=False).running()


def test_a_forked_call_that_fails_or_dies_is_run_here() -> None:
    parent = os.getpid()

    def dies() -> int:
        if os.getpid() != parent:
            os._exit(3)
        return os.getpid()

    def fails() -> int:
        if os.getpid() != parent:
            raise RuntimeError("no")
        return os.getpid()

    assert forked.ChildCall(dies).result() == parent
    assert forked.ChildCall(fails).result() == parent
    with pytest.raises(ZeroDivisionError):
        forked.ChildCall(lambda: 1 // 0).result()  # fails there, then here: raises here


def _refuse_to_load() -> None:
    raise RuntimeError("this result cannot be rebuilt here")


class ArrivesBroken:
    """Pickles in the helper, fails to unpickle in the job (as a class whose pickled
    form its own constructor refuses would)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse_to_load, ())


def test_a_result_that_does_not_unpickle_is_redone_here_without_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = os.getpid()

    def work(task: int) -> object:
        time.sleep(0.01)
        return ArrivesBroken() if os.getpid() != parent else task

    with caplog.at_level(logging.WARNING):
        consumed, run = collect(12, work)
        value = forked.ChildCall(lambda: work(5)).result()
    assert consumed == {task: task for task in range(12)}  # every task, each once, here
    assert run.failed >= 1 and value == 5
    assert "cannot be rebuilt here" in caplog.text


def test_a_forked_call_relays_its_log_records_here_as_if_it_ran_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("qasid.test.relay")

    def logs() -> int:
        log.info("step %d of %s", 1, "two")
        try:
            1 // 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("a step failed")
        # a process the child forks in turn logs to the handlers it replaced, as before
        forked.ChildCall(lambda: log.info("from a grandchild") or 0).result()
        log.info("step 2")
        return os.getpid()

    with caplog.at_level(logging.INFO, logger="qasid.test.relay"):
        pid = forked.ChildCall(logs, relay_logs=True, forks=True).result()
    assert pid != os.getpid()
    relayed = [(r.getMessage(), r.process) for r in caplog.records if r.name == log.name]
    assert relayed == [("step 1 of two", pid), ("a step failed", pid), ("step 2", pid)]
    failed = next(r for r in caplog.records if r.getMessage() == "a step failed")
    assert "ZeroDivisionError" in (failed.exc_text or "")
    # without relaying, a child's records stay in the child
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qasid.test.relay"):
        forked.ChildCall(lambda: log.info("not relayed") or 0).result()
    assert not [r for r in caplog.records if r.name == log.name]


def test_a_forked_call_that_forks_runs_helpers_of_its_own() -> None:
    def builds() -> tuple[int, int, list[int]]:
        got: list[int] = []
        run = forked.run_tasks(6, lambda task: task * task, lambda _, v: got.append(v), 2)
        return os.getpid(), run.processes, sorted(got)

    pid, processes, squares = forked.ChildCall(builds, forks=True).result()
    assert pid != os.getpid()  # done there, not failed and redone here
    assert (processes, squares) == (2, [0, 1, 4, 9, 16, 25])


def test_a_forked_call_not_forked_runs_when_asked() -> None:
    call = forked.ChildCall(os.getpid, fork=False)
    assert call.result() == os.getpid()


def test_on_start_runs_first_in_every_helper_and_not_here(tmp_path) -> None:  # type: ignore[no-untyped-def]
    started = tmp_path / "started"
    started.mkdir()

    def mark() -> None:
        (started / str(os.getpid())).touch()

    consumed: dict[int, object] = {}

    def consume(task: int, result: object) -> None:
        consumed[task] = result

    run = forked.run_tasks(30, slow_square, consume, 3, on_start=mark)
    marked = {int(p.name) for p in started.iterdir()}
    workers = {result[1] for result in consumed.values()}  # type: ignore[index]
    assert len(marked) == 2 and os.getpid() not in marked
    assert workers - {os.getpid()} <= marked  # a helper worked only after its on_start
    assert run.processes == 3 and sorted(consumed) == list(range(30))


HELPER_OF_A_KILLED_JOB = """
import os, sys, time
from pipeline.adapters import forked

def work(task):
    if task == 1:
        with open(sys.argv[1], "w") as out:
            out.write(str(os.getpid()))
    time.sleep(60)
    return task

forked.run_tasks(2, work, lambda task, result: None, 2)
"""


def test_a_helper_dies_with_its_killed_job(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "helper.pid"
    job = subprocess.Popen([sys.executable, "-c", HELPER_OF_A_KILLED_JOB, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the helper never started task 1"
            time.sleep(0.02)
        helper = int(pid_file.read_text())
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(helper):  # an orphan would sleep on, then go on taking tasks
            assert time.monotonic() < deadline, "the helper outlived its job"
            time.sleep(0.02)
    finally:
        job.kill()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has died
    except FileNotFoundError:
        return False


def test_a_helper_killed_while_taking_a_task_leaves_the_counter_usable() -> None:
    import multiprocessing

    counter = forked.TaskCounter(3)
    assert counter.take() == 0

    def die_holding_the_lock() -> None:
        held = counter._locked()  # kept: a dropped one would release the lock on its way
        held.__enter__()  # inside take()'s critical section, then killed
        os._exit(9)

    dead = multiprocessing.get_context("fork").Process(target=die_holding_the_lock)
    dead.start()
    dead.join(timeout=10)
    assert dead.exitcode == 9
    taker = multiprocessing.get_context("fork").Process(target=counter.take)
    taker.start()  # a semaphore would stay taken: this would wait forever
    taker.join(timeout=10)
    assert taker.exitcode == 0, "the lock of a dead helper was not released"
    assert counter.take() == 2 and counter.take() is None  # the taker had task 1
    counter.close()
