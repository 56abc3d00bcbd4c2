"""Shared benchmark helpers: progress lines, medians, tables, CPU accounting, databases."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

POSTGRES_ADMIN_DSN = os.environ.get(
    "QASID_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_STARTED = time.perf_counter()


def step(message: str) -> None:
    """One progress line, with the seconds since the benchmark process started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """ "median (min–max, n=...)" for a table cell."""
    if len(values) == 1:
        return fmt.format(values[0])
    low, high = min(values), max(values)
    return f"{fmt.format(median(values))} ({fmt.format(low)}–{fmt.format(high)}, n={len(values)})"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into BENCHMARKS.md)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [f"\n### {title}\n", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out) + "\n"


def machine() -> dict[str, str]:
    model = platform.processor() or ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- CPU accounting ----------------------------------------------------------------------------
class TreeCPU:
    """CPU seconds (user + system) of this process and all its descendants, excluding the
    subtrees rooted at ``exclude`` (the feed server). A child that exited is counted through
    its parent's ``children_*`` times once reaped: the multiprocessing forkserver reaps the
    parse workers it forks (pebble recycles them), and we reap the forkserver's children."""

    def __init__(self, exclude: Sequence[int] = ()) -> None:
        self.exclude = set(exclude)

    def _excluded(self) -> set[int]:
        pids = set()
        for pid in self.exclude:
            try:
                root = psutil.Process(pid)
                pids.add(pid)
                pids.update(p.pid for p in root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return pids

    def __call__(self) -> float:
        me = psutil.Process()
        skip = self._excluded()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid in skip:
                continue
            try:
                t = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total


@dataclass
class Span:
    """Wall and CPU seconds of a measured region."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def measure(cpu: Callable[[], float]) -> Iterator[Span]:
    span = Span()
    wall0, cpu0 = time.perf_counter(), cpu()
    try:
        yield span
    finally:
        span.wall = time.perf_counter() - wall0
        span.cpu = cpu() - cpu0


# --- databases ---------------------------------------------------------------------------------
def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    import psycopg

    name = f"qasid_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A SQLite file in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="qasid-bench-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextmanager
def database(engine: str) -> Iterator[str]:
    if engine == "postgres":
        with postgres_database() as url:
            yield url
    else:
        with sqlite_database() as url:
            yield url
