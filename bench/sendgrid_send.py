"""Sending digests through the real ``sendgrid`` package to a local stub (issue 4, "Speed").

    python -m bench.sendgrid_send              # 5,000 recipients, 3 runs
    python -m bench.sendgrid_send --quick      # 1,000 recipients, 1 run

The stub is a lean HTTP server in its own process on 127.0.0.1 (its CPU is not ours): it
reads each ``POST /v3/mail/send``, parses the JSON, counts the personalizations and answers
202 with an X-Message-Id (the validating stub of the tests, tests/support/sendgrid_stub.py,
checks the schema on every request and would measure jsonschema instead).

Readers come in groups of ``--group`` (200) who get the same digest (same themes, no
watchlist hit), so their emails share content and SendGrid takes a group in one request
(``digest.send_batch`` = 1,000 rows claimed per step, ``sendgrid.batch_size`` = 1,000).

- **ledger**: ``delivery.drain_queue`` with ``SendGridMailer``: claim, read editions and
  readers, compose (``DigestAssembler``), send, record (``mark_sent_many``).
- **raw**: the same rows, claimed beforehand from a copy of the database (not timed), then
  (timed) the job's set-up as ``drain_queue`` does it (``load_editorial``), ``compose`` and
  ``SendGridMailer.send_batch`` with the same batches: what sending costs without the
  ledger. Ledger overhead = ledger time / raw time - 1. The two paths alternate which runs
  first in a process (the first pays for warming up).
- **bookkeeping inside the drain**: the same ledger run, with the ledger's own calls timed
  where they happen (``claim``, ``get_editions``, ``SubscriberStore.for_sending``, ``mark_*``):
  their CPU against the rest of the drain's, a ratio that shared-machine noise moves less
  than the ratio of two separate passes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from bench.common import machine, median, spread, step, table
from bench.digest_fanout import NOW, make_app

ROOT = Path(__file__).resolve().parents[1]


# -- the stub (a child process) ------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: ClassVar[dict[str, int]] = {"requests": 0, "personalizations": 0}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/counts":
            answer = json.dumps(self.counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        payload = json.loads(body)
        self.counts["requests"] += 1
        self.counts["personalizations"] += len(payload["personalizations"])
        self.send_response(202)
        self.send_header("X-Message-Id", secrets.token_hex(8))
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve(port_file: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


class Stub:
    def __enter__(self) -> Stub:
        self.folder = tempfile.mkdtemp()
        port_file = Path(self.folder) / "port"
        command = [sys.executable, "-m", "bench.sendgrid_send", "--serve", str(port_file)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"
        return self

    def counts(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(urllib.request.Request(self.url + "/counts", b"{}")) as r:
            return dict(json.loads(r.read()))

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


# -- seeding -------------------------------------------------------------------------------


def seed(app: Any, recipients: int, group: int) -> None:
    """Readers and their queued digests: every ``group`` readers share one digest."""
    from sqlalchemy import insert

    from pipeline.adapters.delivery_store import DeliveryStore
    from pipeline.adapters.schema import subscriber
    from pipeline.core.digest import DigestRequest, ThemeInfo, build_digest, digest_as_dict
    from tests.unit.test_digest_render import END, candidates  # hostile, varied stories

    rng = random.Random(7)
    themes = [ThemeInfo(t, t.title(), context=f"Why {t} matters.") for t in ("economy", "india")]
    with app.store._begin() as conn:
        conn.execute(
            insert(subscriber),
            [
                {
                    "id": n + 1,
                    "email": f"reader{n}@bench.example",
                    "status": "active",
                    "themes": ["economy", "india"],
                    "frequency": "daily",
                    "hour": 17,
                    "timezone": "Asia/Karachi",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(recipients)
            ],
        )
    specs = []
    for start in range(0, recipients, group):
        stories = [c for c in candidates(rng, 60) if c.relevant]
        stories = [c for c in stories if set(c.themes) & {"economy", "india"}]
        request = DigestRequest(
            themes=["economy", "india"], period_start=END - timedelta(days=1), period_end=END
        )
        content = digest_as_dict(build_digest(stories, request, themes))
        for n in range(start, min(start + group, recipients)):
            specs.append(
                {
                    "kind": "personal",
                    "subscriber_id": n + 1,
                    "frequency": "daily",
                    "period_start": END - timedelta(days=1),
                    "period_end": END,
                    "local_date": NOW.date().isoformat(),
                    "subject": str(content["subject"]),
                    "item_count": len(content["item_ids"]),  # type: ignore[arg-type]
                    "content": content,
                    "now": NOW,
                    "queue_delivery": bool(content["item_ids"]),
                }
            )
    ledger = DeliveryStore(app.store)
    for start in range(0, len(specs), 500):
        ledger.create_editions(specs[start : start + 500])


def configured(app: Any, stub_url: str) -> Any:
    from pipeline.adapters.mail.sendgrid_api import SendGridMailer

    app.settings = app.settings.model_copy(
        update={
            # one process, as the target says (no forked composers: their CPU is not
            # in this process's times)
            "digest": app.settings.digest.model_copy(
                update={"send_batch": 1000, "send_workers": 1}
            ),
            "sendgrid": app.settings.sendgrid.model_copy(
                update={"host": stub_url, "api_key": "SG.bench", "batch_size": 1000}
            ),
        }
    )
    return SendGridMailer(app.settings.sendgrid)


def cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


@contextlib.contextmanager
def bookkeeping_timer() -> Iterator[dict[str, float]]:
    """CPU seconds spent in the ledger's own calls while the block runs (claiming, reading
    the readers and editions of a batch, recording outcomes), by wrapping those methods."""
    from pipeline.adapters.delivery_store import DeliveryStore
    from pipeline.adapters.subscriber_store import SubscriberStore

    spent: dict[str, float] = {}
    targets = [
        (DeliveryStore, "claim"),
        (DeliveryStore, "get_editions"),
        (DeliveryStore, "mark_sent_many"),
        (DeliveryStore, "mark_suppressed"),
        (DeliveryStore, "mark_failed"),
        (DeliveryStore, "mark_retry"),
        (DeliveryStore, "mark_unknown"),
        (SubscriberStore, "for_sending"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def timed(name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = cpu_seconds()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + cpu_seconds() - start

        return call

    for owner, name, method in originals:
        setattr(owner, name, timed(name, method))
    try:
        yield spent
    finally:
        for owner, name, method in originals:
            setattr(owner, name, method)


def ledger_pass(url: str, folder: Path, stub: Stub, out: dict[str, Any]) -> None:
    """The production drain, with its bookkeeping calls timed inside it."""
    from pipeline import delivery

    app = make_app(url, folder)
    mailer = configured(app, stub.url)
    before = stub.counts()
    with bookkeeping_timer() as spent:
        wall, cpu = time.perf_counter(), cpu_seconds()
        summary = delivery.drain_queue(app, mailer, now=NOW)
        out["ledger"] = (time.perf_counter() - wall, cpu_seconds() - cpu)
    out["bookkeeping"] = sum(spent.values())
    after = stub.counts()
    out["sent"] = summary.sent
    out["requests"] = after["requests"] - before["requests"]
    out["personalizations"] = after["personalizations"] - before["personalizations"]
    app.close()


def raw_pass(url: str, folder: Path, stub: Stub, out: dict[str, Any]) -> None:
    """The same rows and batches without the ledger: claimed beforehand (not timed)."""
    from pipeline import delivery
    from pipeline.adapters.delivery_store import DeliveryStore
    from pipeline.adapters.subscriber_store import SubscriberStore

    app = make_app(url, folder)
    mailer = configured(app, stub.url)
    ledger, people = DeliveryStore(app.store), SubscriberStore(app.store)
    batches = []
    while rows := ledger.claim(NOW, app.worker_name, 1000):
        editions = ledger.get_editions(sorted({r.edition_id for r in rows if r.edition_id}))
        readers, counts = people.for_sending(sorted({r.subscriber_id for r in rows}))
        batches.append((rows, readers, counts, editions))
    before = stub.counts()
    wall, cpu = time.perf_counter(), cpu_seconds()
    editorial = delivery.load_editorial(app, ())  # as drain_queue does
    accepted = 0
    for rows, readers, counts, editions in batches:
        emails = [
            delivery.compose(
                app,
                editorial,
                row,
                readers[row.subscriber_id],
                editions,
                counts.get(row.subscriber_id, 0),
            )
            for row in rows
        ]
        results = mailer.send_batch([e for e in emails if e is not None])
        accepted += sum(r.outcome.value == "sent" for r in results)
    out["raw"] = (time.perf_counter() - wall, cpu_seconds() - cpu)
    out["raw sent"] = accepted
    out["raw requests"] = stub.counts()["requests"] - before["requests"]
    app.close()


def one_run(recipients: int, group: int, raw_first: bool = False) -> dict[str, Any]:
    """Both paths on copies of one seeded database; ``raw_first`` alternates their order
    between runs (the first pass in a process pays for warming up)."""
    out: dict[str, Any] = {"raw first": raw_first}
    with tempfile.TemporaryDirectory() as name, Stub() as stub:
        folder = Path(name)
        url = f"sqlite:///{folder / 'send.db'}"
        app = make_app(url, folder)
        app.store.upgrade()
        seed(app, recipients, group)
        app.close()
        shutil.copy(folder / "send.db", folder / "raw.db")
        raw_url = f"sqlite:///{folder / 'raw.db'}"
        passes = [lambda: ledger_pass(url, folder, stub, out)]
        passes.insert(0 if raw_first else 1, lambda: raw_pass(raw_url, folder, stub, out))
        for one_pass in passes:
            one_pass()
    return out


def run(
    quick: bool = False, recipients: int | None = None, runs: int | None = None, group: int = 200
) -> dict[str, Any]:
    recipients = recipients or (1000 if quick else 5000)
    runs = runs or (1 if quick else 3)
    about = machine()
    step(f"sendgrid send: {recipients:,} recipients, groups of {group}; load {about['load']}")
    measured = []
    for n in range(runs):
        figures = one_run(recipients, group, raw_first=n % 2 == 1)
        step(f"run {n + 1}: {figures}")
        measured.append(figures)
    about["load after"] = machine()["load"]
    ledger_w = [m["ledger"][0] for m in measured]
    raw_w = [m["raw"][0] for m in measured]
    ledger_c = [m["ledger"][1] for m in measured]
    raw_c = [m["raw"][1] for m in measured]
    overhead = [a / b - 1 for a, b in zip(ledger_w, raw_w, strict=True)]
    overhead_cpu = [a / b - 1 for a, b in zip(ledger_c, raw_c, strict=True)]
    # Same run, same process: the drain's bookkeeping calls against the rest of the drain.
    inside = [m["bookkeeping"] / (m["ledger"][1] - m["bookkeeping"]) for m in measured]
    first = measured[0]
    rows = [
        [
            "drain_queue (ledger)",
            f"{measured[0]['sent']:,}",
            f"{first['requests']} ({first['personalizations'] / max(first['requests'], 1):.0f})",
            spread(ledger_w),
            spread(ledger_c),
            f"{recipients / median(ledger_w):,.0f}",
            f"{recipients / median(ledger_c):,.0f}",
            f"{median(overhead):+.0%} wall, {median(overhead_cpu):+.0%} CPU",
            f"{spread([m['bookkeeping'] for m in measured])} s, +{median(inside):.0%}",
        ],
        [
            "compose + send_batch (raw)",
            f"{measured[0]['raw sent']:,}",
            f"{measured[0]['raw requests']}",
            spread(raw_w),
            spread(raw_c),
            f"{recipients / median(raw_w):,.0f}",
            f"{recipients / median(raw_c):,.0f}",
            "baseline",
            "",
        ],
    ]
    text = table(
        f"SendGrid send: {recipients:,} recipients in groups of {group} sharing a digest, "
        f"sendgrid package to a local stub; load {about['load']} → {about['load after']}",
        [
            "path",
            "sent",
            "requests (personalizations each)",
            "wall s",
            "CPU s",
            "recipients/s wall",
            "recipients per CPU-s",
            "ledger overhead",
            "bookkeeping CPU inside the drain, and its share on top of the rest",
        ],
        rows,
    )
    print(text, flush=True)
    return {"machine": about, "runs": measured, "table": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sendgrid_send", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recipients", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--group", type=int, default=200)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    run(args.quick, args.recipients, args.runs, args.group)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
