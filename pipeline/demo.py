"""`qasid demo`: the real pipeline, offline, on bundled snapshots of real feeds.

The snapshots (built from the labeled dev corpus: real titles, summaries, links and dates)
are served over HTTP on 127.0.0.1 and polled through the same code as production; only
the settings differ: a throw-away SQLite database and 127.0.0.1 allowed past the
private-address guard.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

import click

from pipeline import jobs
from pipeline.adapters.snapshot_server import serve_directory
from pipeline.bootstrap import build_app
from pipeline.settings import Settings


def demo_settings(settings: Settings, workdir: Path, feeds_file: Path) -> Settings:
    """The user's settings with the demo's database, feed list and local-address allowance."""
    fetch = settings.fetch.model_copy(
        update={"allow_hosts": (*settings.fetch.allow_hosts, "127.0.0.1")}
    )
    return settings.model_copy(
        update={
            "database": settings.database.model_copy(
                update={"url": f"sqlite:///{workdir / 'qasid.db'}"}
            ),
            "feeds": settings.feeds.model_copy(update={"file": str(feeds_file)}),
            "fetch": fetch,
        }
    )


def run_demo(settings: Settings, workdir: Path | None = None) -> None:
    """Serve the snapshots, poll them into a fresh database, and say where to look."""
    workdir = (workdir or settings.path("var/demo")).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    data = resources.files("pipeline.demo_data")
    snapshots = Path(str(data / "feeds"))
    server = serve_directory(snapshots, host="127.0.0.1", port=0)
    try:
        listing = (data / "feeds.toml").read_text(encoding="utf-8")
        feeds_file = workdir / "feeds.toml"
        feeds_file.write_text(listing.replace("{port}", str(server.port)), encoding="utf-8")
        app = build_app(demo_settings(settings, workdir, feeds_file))
        try:
            click.echo(f"demo: serving {snapshots.name}/ snapshots at {server.url}")
            app.store.upgrade()
            added, _ = jobs.sync_configured_feeds(app)
            click.echo(f"demo: database {app.store.safe_url}, {added} feeds")

            def on_report(report: jobs.FeedPollReport) -> None:
                click.echo(
                    f"  {report.outcome.value:<14} {report.new:>4} new  {report.url}", err=False
                )

            summary = jobs.poll_feeds(app, all_feeds=True, on_report=on_report)
            click.echo(f"demo: {summary.line()}")
            for report in summary.failed:
                click.echo(f"  failed: {report.url}: {report.message}")
            count = app.store.count_items()
        finally:
            app.close()
    finally:
        server.close()
    env = f"DATABASE_URL=sqlite:///{workdir / 'qasid.db'}"
    # Name the installed command by its path: the venv's bin is often not on PATH.
    installed = Path(sys.executable).parent / "qasid"
    qasid = str(installed) if installed.exists() else f"{sys.executable} -m pipeline"
    click.echo(
        f"\ndemo finished: {count} items stored.\nLook at them with:\n"
        f"  {env} {qasid} items list --limit 10\n"
        f"  {env} {qasid} feeds status\n"
        f"  {env} {qasid} items list --json --limit 3"
    )
