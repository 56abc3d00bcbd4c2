"""`qasid demo`: the real pipeline, offline, on bundled snapshots of real feeds.

The snapshots (built from the labeled dev corpus: real titles, summaries, links and dates)
are served over HTTP on 127.0.0.1 and polled through the same code as production; only
the settings differ: a throw-away SQLite database and 127.0.0.1 allowed past the
private-address guard.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import click

from pipeline import jobs
from pipeline.adapters.snapshot_server import serve_directory
from pipeline.bootstrap import App, build_app
from pipeline.settings import Settings


def demo_settings(settings: Settings, workdir: Path, feeds_file: Path) -> Settings:
    """The user's settings with the demo's database, feed list, local-address allowance,
    and mail to the outbox folder (never a real provider)."""
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
            "mail": settings.mail.model_copy(
                update={
                    "backend": "outbox",
                    "postal_address": settings.mail.postal_address or DEMO_POSTAL_ADDRESS,
                }
            ),
        }
    )


DEMO_POSTAL_ADDRESS = "qasid demo, 1 Constitution Avenue, Islamabad 44000, Pakistan"
_EPOCH = datetime(1990, 1, 1, tzinfo=UTC)

# Readers with different themes, rhythms, zones and watchlists.
DEMO_READERS: list[dict[str, Any]] = [
    {
        "email": "analyst@example.org",
        "themes": [],  # every theme
        "frequency": "daily",
        "hour": 7,
        "timezone": "Asia/Karachi",
        "watchlists": [("CPEC OR Gwadar", False), ("IMF -Egypt", False)],
    },
    {
        "email": "journalist@example.com",
        "themes": ["us_diplomacy", "sanctions", "nuclear_missile", "counterterrorism"],
        "frequency": "weekly",
        "hour": 8,
        "timezone": "America/New_York",
        "watchlists": [('F-16 OR "fighter jets"', False)],
    },
    {
        "email": "diaspora.reader@example.net",
        "themes": ["diaspora", "democracy_rights", "economy", "climate"],
        "frequency": "instant",
        "hour": 18,
        "timezone": "America/Chicago",
        "watchlists": [("title:(Imran OR PTI)", True)],
    },
]


def deliver_demo_digests(app: App) -> Path:
    """Demo readers, their digests over the snapshots' whole span, the public edition, and
    every email written to the outbox through the real ledger and mail backend."""
    from pipeline import delivery
    from pipeline.subscriptions import add_watchlist, subscribe

    outbox = app.settings.path(app.settings.mail.outbox_dir)
    if outbox.exists():
        for old in outbox.glob("*.eml"):
            old.unlink()  # the demo's own earlier emails
    items = app.store.items_between(_EPOCH, app.clock())
    since = min(i.published for i in items)
    until = max(i.published for i in items) + timedelta(seconds=1)
    # The snapshots span many months: each reader's digest covers all of it, once.
    for reader in DEMO_READERS:
        subscriber, _ = subscribe(
            app,
            reader["email"],
            themes=reader["themes"],
            frequency=reader["frequency"],
            hour=reader["hour"],
            timezone=reader["timezone"],
        )
        for query, instant in reader["watchlists"]:
            add_watchlist(app, reader["email"], query, instant=instant)
    from pipeline.adapters.subscriber_store import SubscriberStore

    for subscriber in SubscriberStore(app.store).all():
        built, _, _ = delivery.store_digest(app, subscriber, since, until)
        click.echo(f"demo: digest for {subscriber.email}: {built.subject}")
    public, edition_id, _ = delivery.store_digest(app, None, since, until)
    click.echo(f"demo: public edition {edition_id} in the archive: {public.subject}")
    mailer = app.mailer()
    try:
        sent = delivery.drain_queue(app, mailer)
    finally:
        mailer.close()
    click.echo(f"demo: {sent.line()}")
    return outbox


def run_demo(settings: Settings, workdir: Path | None = None, serve: bool = False) -> None:
    """Serve the snapshots, poll them into a fresh database, deliver the demo digests, say
    where to look; with ``serve``, then serve the web app on that database until Ctrl-C."""
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
        settings_for_demo = demo_settings(settings, workdir, feeds_file)
        app = build_app(settings_for_demo)
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
            relevant = len(app.store.items_between(_EPOCH, app.clock(), relevant_only=True))
            click.echo(f"demo: {count} items stored and tagged, {relevant} about Pakistan")
            outbox = deliver_demo_digests(app)
        finally:
            app.close()
    finally:
        server.close()
    env = f"DATABASE_URL=sqlite:///{workdir / 'qasid.db'}"
    # Name the installed command by its path: the venv's bin is often not on PATH.
    installed = Path(sys.executable).parent / "qasid"
    qasid = str(installed) if installed.exists() else f"{sys.executable} -m pipeline"
    emails = sorted(outbox.glob("*.eml"))
    click.echo(
        f"\ndemo finished: {count} items, {len(emails)} emails in {outbox}/\n"
        + "".join(f"  {path}\n" for path in emails)
        + "Look further with:\n"
        f"  {env} {qasid} subscribers list\n"
        f"  {env} {qasid} items list --limit 10\n"
        f"  {env} {qasid} explain <item id>\n"
        f"  {env} {qasid} feeds status"
    )
    if serve:
        serve_demo_site(settings_for_demo)


def serve_demo_site(settings: Settings) -> None:
    """The web app on the demo's database, on 127.0.0.1, until interrupted."""
    from pipeline.web import create_app

    web = settings.web
    app = build_app(settings)
    try:
        site = create_app(settings, core=app)
        click.echo(
            f"\nweb app: {web.base_url}/  (archive: {web.base_url}/archive, "
            f"themes: {web.base_url}/themes); Ctrl-C to stop"
        )
        site.run(host=web.host, port=web.port, threaded=True, use_reloader=False)
    finally:
        app.close()
