"""`qasid demo`: the real pipeline, offline, on bundled snapshots of real feeds.

The snapshots (built from the labeled dev corpus: real titles, summaries, links and dates)
are served over HTTP on 127.0.0.1 and polled through the same code as production; only
the settings differ: a throw-away SQLite database and 127.0.0.1 allowed past the
private-address guard. Then the web app serves that database on 127.0.0.1 until Ctrl-C or
SIGTERM (``--no-serve`` stops after the pipeline). Its port is taken before the pipeline
runs, so a busy port fails at once, ``--port 0`` can pick a free one, and the links in the
demo's emails point at the server that is really running.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from pipeline import jobs
from pipeline.adapters.snapshot_server import serve_directory
from pipeline.bootstrap import App, build_app
from pipeline.settings import Settings

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 8000


def demo_settings(
    settings: Settings, workdir: Path, feeds_file: Path, site_port: int | None = None
) -> Settings:
    """The user's settings with the demo's database, feed list, local-address allowance,
    and mail to the outbox folder (never a real provider); with ``site_port`` (the demo's
    own web server on 127.0.0.1), the web app's address and the links in emails point
    there."""
    fetch = settings.fetch.model_copy(
        update={"allow_hosts": (*settings.fetch.allow_hosts, "127.0.0.1")}
    )
    web = settings.web
    if site_port is not None:
        web = web.model_copy(
            update={
                "base_url": f"http://{DEMO_HOST}:{site_port}",
                "host": DEMO_HOST,
                "port": site_port,
            }
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
            "web": web,
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


def deliver_demo_digests(app: App) -> tuple[Path, int]:
    """Demo readers, their digests over the snapshots' whole span, the public edition, and
    every email written to the outbox through the real ledger and mail backend. Returns the
    outbox folder and the public edition's id."""
    from pipeline import delivery
    from pipeline.subscriptions import add_watchlist, subscribe

    outbox = app.settings.path(app.settings.mail.outbox_dir)
    if outbox.exists():
        for old in outbox.glob("*.eml"):
            old.unlink()  # the demo's own earlier emails
    jobs.index_item_archive(app)  # the archive's search (poll_feeds did it too)
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
    return outbox, edition_id


def demo_data() -> Traversable:
    """The bundled snapshots and their feed list (``pipeline/demo_data/``)."""
    return resources.files("pipeline.demo_data")


def run_demo(
    settings: Settings,
    workdir: Path | None = None,
    serve: bool = True,
    port: int = DEMO_PORT,
) -> None:
    """Serve the snapshots, poll them into a fresh database, deliver the demo digests, say
    where to look; with ``serve``, then serve the web app on that database on 127.0.0.1
    (``port``; 0 picks a free one) until Ctrl-C or SIGTERM."""
    listener = listen(port) if serve else None  # a busy port fails before the pipeline runs
    try:
        settings_for_demo = run_pipeline(settings, workdir, listener.port if listener else None)
        if listener is not None:
            serve_demo_site(settings_for_demo, listener)
    finally:
        if listener is not None:
            listener.server_close()


def listen(port: int) -> BaseWSGIServer:
    """A threaded WSGI server bound to 127.0.0.1:``port`` (0: a free port), with no app yet
    (``serve_demo_site`` gives it one). Connections wait in the backlog until it serves."""
    from werkzeug.serving import make_server

    def not_yet(environ: Any, start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"the demo is still running the pipeline\n"]

    try:
        return make_server(DEMO_HOST, port, not_yet, threaded=True)
    except SystemExit:  # werkzeug has printed why (e.g. the port is in use)
        raise click.ClickException(
            f"cannot serve the demo on {DEMO_HOST}:{port}; "
            "choose another port with --port (0 picks a free one) or use --no-serve"
        ) from None


def run_pipeline(settings: Settings, workdir: Path | None, site_port: int | None) -> Settings:
    """The demo's pipeline in ``workdir`` (default var/demo, emptied first); returns the
    settings it ran with (the web app serves the same database)."""
    workdir = (workdir or settings.path("var/demo")).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    data = demo_data()
    snapshots = Path(str(data / "feeds"))
    server = serve_directory(snapshots, host="127.0.0.1", port=0)
    try:
        listing = (data / "feeds.toml").read_text(encoding="utf-8")
        feeds_file = workdir / "feeds.toml"
        feeds_file.write_text(listing.replace("{port}", str(server.port)), encoding="utf-8")
        settings_for_demo = demo_settings(settings, workdir, feeds_file, site_port)
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
            outbox, edition_id = deliver_demo_digests(app)
        finally:
            app.close()
    finally:
        server.close()
    database = f"sqlite:///{workdir / 'qasid.db'}"
    env = f"DATABASE_URL={database}"
    # Name the installed command by its path: the venv's bin is often not on PATH.
    installed = Path(sys.executable).parent / "qasid"
    qasid = str(installed) if installed.exists() else f"{sys.executable} -m pipeline"
    emails = sorted(outbox.glob("*.eml"))
    if site_port is not None:
        site = settings_for_demo.web.base_url
        archive = f"archive: {site}/archive (public edition: {site}/editions/{edition_id})"
    else:
        archive = (
            f"archive: public edition {edition_id} in {database}; to read it in a browser:\n"
            f"  {env} {qasid} serve"
        )
    click.echo(
        f"\ndemo finished: {count} items, {len(emails)} emails in {outbox}/\n"
        + "".join(f"  {path}\n" for path in emails)
        + f"{archive}\n"
        "Look further with:\n"
        f"  {env} {qasid} subscribers list\n"
        f"  {env} {qasid} items list --limit 10\n"
        f"  {env} {qasid} explain <item id>\n"
        f"  {env} {qasid} feeds status"
    )
    return settings_for_demo


class _Stop(BaseException):
    """Raised by the SIGTERM handler to leave ``serve_forever``. Not an ``Exception``, as
    ``KeyboardInterrupt`` is not: a signal that lands while a request is being handled
    raises it there, and the server's request loop (``socketserver``) logs an
    ``Exception`` and goes on serving, so the demo did not stop (seen once in CI)."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def serve_demo_site(settings: Settings, listener: BaseWSGIServer) -> None:
    """The web app on the demo's database, on ``listener``, until Ctrl-C or SIGTERM (both
    end the demo with exit status 0)."""
    from pipeline.web import create_app

    url = settings.web.base_url
    app = build_app(settings)
    try:
        listener.app = create_app(settings, core=app)
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _stop) if in_main else None
        try:
            click.echo(
                f"\nweb app: {url}/  (archive: {url}/archive, themes: {url}/themes); Ctrl-C to stop"
            )
            listener.serve_forever()  # returns on KeyboardInterrupt (werkzeug catches it)
        except _Stop:
            pass
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        click.echo("demo: web app stopped")
    finally:
        app.close()
