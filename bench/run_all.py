"""Run the ingest benchmarks of issue 2 (``make bench``) and print their summary tables.

    python -m bench.run_all            # full sizes (about 5 minutes on 2 idle cores)
    python -m bench.run_all --quick    # smoke sizes (about a minute)
    python -m bench.run_all --only store --only ingest_cpu

1. poll (bench.poll): 2,000 feeds of ~50 entries (~95 KB) from a local origin with 200 ms
   of latency per response; cold pass, warm passes (304 / identical bytes), client CPU per
   unchanged feed, force_close, and the count of parses (an unchanged feed is never parsed).
2. store (bench.store): item upserts/s into SQLite and PostgreSQL, the per-feed baseline
   against the batch path, same run.
3. ingest_cpu (bench.ingest_cpu): the whole ingest's CPU against feedparser's alone.

Everything talks to 127.0.0.2 only (the origin) and to PostgreSQL on 127.0.0.1:5432 when it
is reachable (throw-away databases ``qasid_bench_*``, dropped afterwards). The tables are
also written, with the machine description, to var/bench/latest.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench.watchlist_fanout
from bench import delivery_l02, digest_fanout, ingest_cpu, poll, sendgrid_send, store, tagging
from bench.common import machine, step

ROOT = Path(__file__).resolve().parent.parent

# name → (full run, quick run)
BENCHMARKS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]]]] = {
    "poll": (
        lambda: poll.run(feeds=2000, concurrency=200, warm_runs=3, sweep=(100, 400)),
        lambda: poll.run(feeds=300, concurrency=100, warm_runs=1, force_close_runs=1),
    ),
    "store": (
        lambda: store.run(feeds=20, runs=3),
        lambda: store.run(feeds=5, runs=1),
    ),
    "ingest_cpu": (
        lambda: ingest_cpu.run(feeds=40, runs=3),
        lambda: ingest_cpu.run(feeds=12, runs=1),
    ),
    "watchlist_fanout": (
        lambda: bench.watchlist_fanout.run(),
        lambda: bench.watchlist_fanout.run(quick=True),
    ),
    "tagging": (lambda: tagging.run(), lambda: tagging.run(quick=True)),
    "digest_fanout": (lambda: digest_fanout.run(), lambda: digest_fanout.run(quick=True)),
    "sendgrid_send": (lambda: sendgrid_send.run(), lambda: sendgrid_send.run(quick=True)),
    "delivery_l02": (lambda: delivery_l02.run(), lambda: delivery_l02.run(runs=1, readers=500)),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke sizes")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    about = machine()
    step("machine: " + ", ".join(f"{k} {v}" for k, v in about.items()))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in names:
        full, quick = BENCHMARKS[name]
        step(f"=== {name} ({'quick' if args.quick else 'full'}) ===")
        results[name] = (quick if args.quick else full)()
    seconds = time.perf_counter() - started
    about["load after"] = machine()["load"]
    header = "\n".join(f"- {k}: {v}" for k, v in about.items())
    tables = "".join(str(results[name].get("table", "")) for name in names)
    report = (
        f"# qasid ingest benchmarks ({'quick' if args.quick else 'full'}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s)\n\n"
        f"{header}\n{tables}"
    )
    print("\n" + report, flush=True)
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(report, encoding="utf-8")
    (out / "latest.json").write_text(
        json.dumps({"machine": about, "seconds": seconds, "results": results}, default=str),
        encoding="utf-8",
    )
    step(f"all done in {seconds:.0f} s; written to {out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
