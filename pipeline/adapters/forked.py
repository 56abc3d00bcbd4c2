"""Pure work shared with forked copies of this process, results handed back to it.

A digest build (issue 4, "Speed") is CPU-bound Python: one process uses one core. Once the
job has read everything a task needs (the period's items, stories and watchlist matches),
``run_tasks`` forks helpers that share that state copy-on-write and take tasks from a
common counter; each task's result travels back through a pipe, and only this process
consumes them. A helper never uses a connection, a file or a thread of this process: tasks
are pure computations over what was loaded before, or (the send queue's) open connections
of their own once ``on_start`` has made the helper forget the inherited ones.

Nothing is lost when a helper fails: it stops at its first failing task, and every task
it took but did not hand back is run here afterwards (where an error raises as it would
without helpers). A helper killed from outside is handled the same way.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import fcntl
import gc
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar, cast

log = logging.getLogger(__name__)

R = TypeVar("R")

# What a helper sends: ("done", task, result) | ("failed", task, traceback text), then
# ("memory", MiB of its own pages); a ``ChildCall`` that relays its logs also sends
# ("log", record) as it goes; the reader thread ends with ("end",).


@dataclass
class TaskRun:
    """How ``run_tasks`` went: processes used, helpers that failed (their tasks were run
    here), and the most memory of its own (pages not shared with this process) a helper
    held at its end, in MiB (0 where /proc does not tell)."""

    processes: int = 1
    failed: int = 0
    helper_private_mib: float = 0.0


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def run_tasks(
    count: int,
    work: Callable[[int], R],
    consume: Callable[[int, R], None],
    processes: int,
    on_start: Callable[[], None] | None = None,
    first_here: int = 0,
) -> TaskRun:
    """Run ``work(0) .. work(count - 1)`` across ``processes`` processes (this one included)
    and call ``consume(task, result)`` here for each, in the order results arrive.
    ``on_start`` runs first in each helper (e.g. to drop inherited database connections).
    ``first_here``: tasks this process runs (and consumes) before the helpers start, so
    that what they leave in caches is made once and inherited rather than made again in
    every helper."""
    ran = 0
    if processes > 1 and first_here > 0:
        ran = min(first_here, count)
        for index in range(ran):
            consume(index, work(index))
    helpers = min(processes, count - ran) - 1
    if helpers < 1 or not can_fork():
        for index in range(ran, count):
            consume(index, work(index))
        return TaskRun()
    run = TaskRun(processes=helpers + 1)
    counter = TaskCounter(count, start=ran)
    take = counter.take
    started = [_fork(_helper, take, work, on_start) for _ in range(helpers)]
    arrived: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    reader = threading.Thread(target=_receive, args=([r for _, r in started], arrived), daemon=True)
    reader.start()  # a helper blocks on a full pipe: read while this process works too
    done: set[int] = set(range(ran))
    ended = False

    def drain(block: bool) -> None:
        """Consume what helpers handed back (waiting for one message when ``block``)."""
        nonlocal ended
        while not ended:
            try:
                message = arrived.get(block=block)
            except queue.Empty:
                return
            if message[0] == "done":
                consume(message[1], message[2])
                done.add(message[1])
            elif message[0] == "failed":
                run.failed += 1
                log.warning("a helper failed at task %s:\n%s", message[1], message[2])
            elif message[0] == "memory":
                run.helper_private_mib = max(run.helper_private_mib, message[1])
            else:  # "end": the reader saw every pipe close
                ended = True
            block = False

    try:
        while (task := take()) is not None:
            consume(task, work(task))
            done.add(task)
            drain(block=False)
        while not ended:
            drain(block=True)
    except BaseException:
        # An error here ends the run: helpers stop now (nobody would read their results).
        for helper, _ in started:
            helper.terminate()
        raise
    finally:
        reader.join(timeout=None if ended else 5)
        for helper, receiver in started:
            helper.join()
            receiver.close()
        counter.close()
    for helper, _ in started:
        if helper.exitcode != 0 and not run.failed:
            log.warning("a helper ended with exit code %s", helper.exitcode)
    lost = [task for task in range(count) if task not in done]
    if lost:
        run.failed = max(run.failed, 1)
        log.warning("running %d task(s) a helper did not finish in this process", len(lost))
    for index in lost:
        consume(index, work(index))
    return run


class TaskCounter:
    """The next task to take, shared by this process and the helpers forked after it.

    Takers exclude each other with a POSIX record lock (``lockf``) on a temporary file: the
    kernel releases it when its holder dies, so a helper killed while taking a task cannot
    leave the others waiting forever (a multiprocessing lock, a semaphore, would stay
    taken). The lock belongs to the process, so an inherited descriptor serves each one.
    """

    def __init__(self, count: int, start: int = 0) -> None:
        self.count = count
        self._value = multiprocessing.get_context("fork").Value("l", start, lock=False)
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    def take(self) -> int | None:
        with self._locked():
            task = int(self._value.value)
            if task >= self.count:
                return None
            self._value.value = task + 1
            return task

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = self._file.fileno()
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._file.close()


PIPE_BYTES = 1 << 20


def _fork(target: Callable[..., None], *args: Any, daemon: bool = True) -> tuple[Any, Connection]:
    """Start ``target(*args, pipe)`` in a forked child; return it and the pipe's read end.
    ``daemon``: multiprocessing ends a daemonic child when this process exits, and forbids
    it children of its own."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    _widen(receiver)
    # Collections in the child would walk (and so copy) every object it inherited.
    gc.freeze()
    try:
        child = context.Process(
            target=_orphan_proof, args=(os.getpid(), target, *args, sender), daemon=daemon
        )
        child.start()
    finally:
        gc.unfreeze()
    sender.close()
    return child, receiver


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _orphan_proof(parent: int, target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a child that dies with its parent (Linux): a helper whose
    job was killed must not go on claiming rows for nobody (or block on a full pipe)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    target(*args)


def _widen(pipe: Connection) -> None:
    """A bigger pipe buffer (Linux): the reader thread takes a result of megabytes in a few
    reads, each of which waits for the busy main thread to let go of the GIL (up to the
    5 ms switch interval): with the default 64 KB, a helper waited a second per chunk."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or over pipe-max-size
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class ChildCall(Generic[R]):
    """``work()`` run in a forked child while this process goes on; ``result()`` hands its
    value back. When the child fails or is killed, ``result()`` runs ``work()`` here (an
    error then raises here). Not forked when ``fork`` is False or impossible: ``result()``
    runs it. ``relay_logs``: what the child logs is emitted here, by this process's
    handlers, as it happens (``_LogRelay``), as if the work ran here. ``forks``: the work
    forks processes of its own (``run_tasks``, another ``ChildCall``); the child then
    ends with this process's death alone (not at its exit). ``private_mib``: the
    child's own memory at its end or the most it noted (``note_private_peak``), whichever
    is more, once ``result()`` returned."""

    def __init__(
        self,
        work: Callable[[], R],
        fork: bool = True,
        relay_logs: bool = False,
        forks: bool = False,
    ) -> None:
        self.work = work
        self.private_mib = 0.0
        self._messages: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._child: Any = None
        if not (fork and can_fork()):
            return
        self._child, self._receiver = _fork(_call, work, relay_logs, daemon=not forks)
        self._reader = threading.Thread(
            target=_receive, args=([self._receiver], self._messages), daemon=True
        )
        self._reader.start()

    def running(self) -> bool:
        """Whether the forked child is still at work (False when not forked, and once its
        answer is in)."""
        return self._child is not None and self._reader.is_alive()

    def result(self) -> R:
        if self._child is None:
            return self.work()
        self._reader.join()
        self._child.join()
        self._receiver.close()
        value: Any = None
        done = False
        while True:
            message = self._messages.get()
            if message[0] == "done":
                value, done = message[2], True
            elif message[0] == "failed":
                log.warning("a forked call failed:\n%s", message[2])
            elif message[0] == "memory":
                self.private_mib = message[1]
            else:
                break
        if not done:
            log.warning("a forked call ended with exit code %s: run here", self._child.exitcode)
            return self.work()
        return cast(R, value)


_noted_mib = 0.0  # the most private memory this process noted (``note_private_peak``)


def note_private_peak() -> None:
    """Work in a forked child calls this at its heaviest when it lets memory go before it
    ends: ``ChildCall.private_mib`` reports the most noted (or the end's, if more)."""
    global _noted_mib
    _noted_mib = max(_noted_mib, private_mib())


def _call(work: Callable[[], Any], relay_logs: bool, out: Connection) -> None:
    global _noted_mib
    _noted_mib = 0.0  # noted by this child, not inherited
    relay = _LogRelay.install(out) if relay_logs else None
    try:
        try:
            result = work()
        except BaseException:
            message: tuple[Any, ...] = ("failed", 0, traceback.format_exc())
        else:
            message = ("done", 0, result)
        memory = max(private_mib(), _noted_mib)  # before the result's pickled copy adds to it
        # not between the two parts of a record another thread relays meanwhile
        with relay.lock if relay is not None and relay.lock else contextlib.nullcontext():
            out.send(message)
            out.send(("memory", memory))
    finally:
        out.close()


class _LogRelay(logging.Handler):
    """In a ``ChildCall``'s child, in place of the root logger's handlers: each record goes
    to the parent through the result pipe, already formatted into its message (arguments
    and tracebacks may not pickle), and the parent's ``_receive`` emits it with its own
    handlers. Processes forked from the child in turn (its helpers) have no pipe of their
    own: their records go to the handlers this one replaced, as they did before."""

    def __init__(self, out: Connection, replaced: list[logging.Handler]) -> None:
        super().__init__()
        self.out = out
        self.owner = os.getpid()
        self.replaced = replaced

    @classmethod
    def install(cls, out: Connection) -> _LogRelay:
        root = logging.getLogger()
        relay = cls(out, list(root.handlers))
        root.handlers = [relay]
        return relay

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self.owner:
            for handler in self.replaced:
                if record.levelno >= handler.level:
                    handler.handle(record)
            return
        try:
            portable = copy.copy(record)
            portable.msg, portable.args = record.getMessage(), None
            if record.exc_info:
                portable.exc_text = portable.exc_text or _formatter.formatException(record.exc_info)
                portable.exc_info = None
            self.out.send(("log", portable))
        except Exception:
            self.handleError(record)


_formatter = logging.Formatter()


def _emit(record: logging.LogRecord) -> None:
    """A relayed record, emitted here as this process's logger of that name would."""
    logging.getLogger(record.name).handle(record)


def _helper(
    take: Callable[[], int | None],
    work: Callable[[int], Any],
    on_start: Callable[[], None] | None,
    out: Connection,
) -> None:
    """A forked helper's life: take tasks until none is left or one fails."""
    try:
        if on_start is not None:
            try:
                on_start()
            except BaseException:  # no task taken: the others take them all
                out.send(("failed", None, traceback.format_exc()))
                return
        while (task := take()) is not None:
            try:
                result = work(task)
            except BaseException:  # handed back: the parent runs the task again itself
                out.send(("failed", task, traceback.format_exc()))
                return
            out.send(("done", task, result))
        out.send(("memory", private_mib()))
    finally:
        out.close()


def private_mib() -> float:
    """This process's pages that no other process maps (Linux), in MiB; else 0."""
    try:
        with open("/proc/self/smaps_rollup") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return 0.0
    kib = sum(int(fields.get(key, "0 kB").split()[0]) for key in ("Private_Clean", "Private_Dirty"))
    return kib / 1024


def _receive(pipes: list[Connection], arrived: queue.SimpleQueue[tuple[Any, ...]]) -> None:
    """Move helpers' messages to ``arrived`` until every pipe is closed; then "end".

    "end" always comes: the consumer waits for it. A message read whole that does not
    unpickle (a result whose class refuses to be rebuilt) is reported as a failure of no
    task, and the pipe read on: its task is not done, so it is run again here."""
    open_pipes = list(pipes)
    try:
        while open_pipes:
            for pipe in wait(open_pipes):
                assert isinstance(pipe, Connection)
                try:
                    message = pipe.recv()
                    if message[0] == "log":
                        _emit(message[1])
                    else:
                        arrived.put(message)
                except (EOFError, OSError):
                    open_pipes.remove(pipe)
                except Exception:
                    arrived.put(("failed", None, traceback.format_exc()))
    finally:
        arrived.put(("end",))
