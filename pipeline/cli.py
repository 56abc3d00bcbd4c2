"""The `qasid` command line. Commands parse arguments and call jobs or the store."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from pipeline import jobs
from pipeline.bootstrap import App, build_app
from pipeline.core.errors import QasidError, QueryError
from pipeline.core.models import FeedSource, FeedState
from pipeline.core.subscribers import Subscriber
from pipeline.core.wording import counted
from pipeline.services import FeedPollReport, PollSummary
from pipeline.settings import Settings, load_settings

log = logging.getLogger("pipeline")


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


class _Context:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    @contextmanager
    def app(self, *, migrated: bool = True) -> Iterator[App]:
        app = build_app(self.settings)
        try:
            if migrated:
                app.store.require_schema()
            yield app
        finally:
            app.close()


class _Group(click.Group):
    """Turns every QasidError into one clear line and exit status 1 (never a traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueryError as error:
            # Point at the column, as a compiler would.
            click.echo(
                f"qasid: error: {error}\n  {error.query}\n  {' ' * (error.column - 1)}^", err=True
            )
            sys.exit(1)
        except QasidError as error:
            click.echo(f"qasid: error: {error}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option(
    "--config", type=click.Path(dir_okay=False), help="Settings file (default config/qasid.toml)."
)
@click.option("-v", "--verbose", count=True, help="-v for INFO logs, -vv for DEBUG.")
@click.version_option(package_name="qasid")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: int) -> None:
    """qasid: news about Pakistan and US-Pakistan relations, tagged and delivered."""
    _configure_logging(verbose)
    ctx.obj = _Context(config)


# -- set-up ---------------------------------------------------------------------------------


@main.command()
@click.pass_obj
def init(obj: _Context) -> None:
    """Create or migrate the database and load the configured feeds."""
    with obj.app(migrated=False) as app:
        app.store.upgrade()
        added, known = jobs.sync_configured_feeds(app)
        click.echo(f"database ready at {app.store.safe_url}; feeds: {added} added, {known} known")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: _Context) -> None:
    """Apply pending migrations."""
    with obj.app(migrated=False) as app:
        app.store.upgrade()
        click.echo(f"database at {app.store.safe_url} is up to date")


# -- feeds ----------------------------------------------------------------------------------


def _feed_json(state: FeedState) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "url": state.url,
        "title": state.title,
        "status": state.status,
        "last_error": state.last_error,
        "failures": state.failures,
        "items": state.items,
        "enabled": state.enabled,
        "language": state.language,
        "country": state.country,
        "kind": state.kind,
        "interval_minutes": state.interval_minutes,
        "http_status": state.http_status,
        "error_total": state.error_total,
        "last_checked": iso(state.last_checked_at),
        "last_success": iso(state.last_success_at),
        "next_poll": iso(state.next_poll_at),
    }


@main.group()
def feeds() -> None:
    """List, add and remove feeds; import and export OPML."""


@feeds.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def feeds_list(obj: _Context, as_json: bool) -> None:
    """Every feed with its last outcome."""
    with obj.app() as app:
        states = app.store.list_feeds()
    if as_json:
        click.echo(json.dumps([_feed_json(s) for s in states], indent=2, ensure_ascii=False))
        return
    if not states:
        click.echo("no feeds yet: run `qasid init` or `qasid feeds add URL`")
    for s in states:
        flag = "" if s.enabled else " [disabled]"
        click.echo(f"{s.status:<16} {s.items:>6} items  {s.title or '-'}  <{s.url}>{flag}")


@feeds.command("status")
@click.option("--failing", is_flag=True, help="Only feeds whose last poll failed.")
@click.pass_obj
def feeds_status(obj: _Context, failing: bool) -> None:
    """Feed health: last poll, outcome, failures and the reason."""
    with obj.app() as app:
        states = app.store.list_feeds()
    shown = 0
    for s in states:
        failed = s.failures > 0 or not s.enabled
        if failing and not failed:
            continue
        shown += 1
        checked = s.last_checked_at.strftime("%Y-%m-%d %H:%M") if s.last_checked_at else "never"
        nxt = s.next_poll_at.strftime("%Y-%m-%d %H:%M") if s.next_poll_at else "now"
        click.echo(f"{s.title or s.url}\n  {s.url}")
        click.echo(
            f"  status {s.status}, checked {checked} UTC, next {nxt} UTC, "
            f"{s.failures} consecutive failures ({s.error_total} in all), {s.items} items"
            + ("" if s.enabled else ", DISABLED")
        )
        if s.last_error:
            click.echo(f"  last message: {s.last_error}")
    if not shown:
        click.echo("all feeds healthy" if failing else "no feeds yet")


@feeds.command("add")
@click.argument("url")
@click.option("--title", default="")
@click.option("--language", default="en", show_default=True)
@click.option("--country", default="", help="ISO country code of the outlet, e.g. PK.")
@click.option("--kind", default="", help="newspaper, wire, broadcaster, government, ...")
@click.option("--interval", type=click.IntRange(1), default=None, help="Minutes between polls.")
@click.pass_obj
def feeds_add(
    obj: _Context,
    url: str,
    title: str,
    language: str,
    country: str,
    kind: str,
    interval: int | None,
) -> None:
    """Add a feed by URL (checked before anything is fetched)."""
    from pipeline.core.urls import check_feed_url

    checked = check_feed_url(url)
    with obj.app() as app:
        source = FeedSource(
            url=checked,
            title=title,
            language=language,
            country=country.upper(),
            kind=kind,
            interval_minutes=interval or app.settings.feeds.default_interval_minutes,
        )
        _, created = app.store.add_feed(source, "cli", app.clock())
    click.echo(f"{'added' if created else 'updated'} {checked}")


@feeds.command("remove")
@click.argument("url")
@click.pass_obj
def feeds_remove(obj: _Context, url: str) -> None:
    """Remove a feed and the items that came only from it."""
    with obj.app() as app:
        if not app.store.remove_feed(url):
            raise click.ClickException(f"no feed with URL {url}")
    click.echo(f"removed {url}")


@feeds.command("enable")
@click.argument("url")
@click.pass_obj
def feeds_enable(obj: _Context, url: str) -> None:
    """Re-enable a feed that was disabled (for example after repeated 410 Gone)."""
    with obj.app() as app:
        if not app.store.set_feed_enabled(url, True, app.clock()):
            raise click.ClickException(f"no feed with URL {url}")
    click.echo(f"enabled {url}; it will be polled on the next tick")


@feeds.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def feeds_import_opml(obj: _Context, file: Path) -> None:
    """Add every feed of an OPML file (from any feed reader)."""
    from pipeline.adapters.opml import read_opml
    from pipeline.sources import validate_feed_sources

    sources = read_opml(file.read_bytes(), str(file))
    accepted: list[FeedSource] = []
    seen: set[str] = set()
    for source in sources:
        # One bad outline (a file: URL, an unknown kind) is reported and skipped; the rest land.
        try:
            [checked] = validate_feed_sources([source], str(file))
        except QasidError as error:
            click.echo(f"skipped: {error}", err=True)
            continue
        if checked.url not in seen:
            seen.add(checked.url)
            accepted.append(checked)
    with obj.app() as app:
        added, known = app.store.sync_sources(accepted, "opml", app.clock())
    click.echo(
        f"{file}: {added} feeds added, {known} already known, "
        f"{len(sources) - len(accepted)} skipped"
    )


@feeds.command("export-opml")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.pass_obj
def feeds_export_opml(obj: _Context, output: Path | None) -> None:
    """Write every feed as OPML 2.0 (stdout by default)."""
    from pipeline.adapters.opml import write_opml

    with obj.app() as app:
        states = app.store.list_feeds()
    sources = [
        FeedSource(
            url=s.url,
            title=s.title,
            language=s.language,
            country=s.country,
            kind=s.kind,
            interval_minutes=s.interval_minutes,
            site_url=s.site_url,
        )
        for s in states
    ]
    data = write_opml(sources, "qasid feeds")
    if output:
        output.write_bytes(data)
        click.echo(f"wrote {len(sources)} feeds to {output}", err=True)
    else:
        sys.stdout.buffer.write(data)


# -- polling --------------------------------------------------------------------------------


def _poll_reporter(label: str) -> tuple[Callable[[int], None], Callable[[FeedPollReport], None]]:
    """Progress for long polls: a bar on a terminal, one line per feed otherwise."""
    state: dict[str, Any] = {"total": 0, "done": 0}
    interactive = sys.stderr.isatty()

    def on_start(total: int) -> None:
        state["total"] = total
        click.echo(f"{label}: {total} feeds", err=True)

    def on_report(report: FeedPollReport) -> None:
        state["done"] += 1
        done, total = state["done"], state["total"]
        detail = f"{report.new} new, {report.updated} updated"
        if report.outcome.is_failure or report.message:
            detail = report.message or report.outcome.value
        line = f"[{done}/{total}] {report.outcome.value:<16} {report.url}  {detail}"
        if interactive:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            click.echo(f"\r[{bar}] {done}/{total} ", nl=False, err=True)
            if done == total:
                click.echo("", err=True)
        else:
            click.echo(line, err=True)

    return on_start, on_report


def print_poll_summary(summary: PollSummary) -> None:
    click.echo(summary.line())
    for report in summary.failed:
        click.echo(f"  failed: {report.url}: {report.outcome.value}: {report.message}")


@main.command()
@click.option("--all", "all_feeds", is_flag=True, help="Poll every enabled feed, due or not.")
@click.option("--feed", "urls", multiple=True, help="Poll only this feed URL (repeatable).")
@click.pass_obj
def poll(obj: _Context, all_feeds: bool, urls: tuple[str, ...]) -> None:
    """Fetch due feeds once and store new items, with progress and a summary."""
    with obj.app() as app:
        jobs.sync_configured_feeds(app)
        on_start, on_report = _poll_reporter("polling")
        summary = jobs.poll_feeds(
            app,
            urls=list(urls) or None,
            all_feeds=all_feeds,
            on_start=on_start,
            on_report=on_report,
        )
    if not summary.reports:
        click.echo("no feeds due (use --all to poll every feed now)")
        return
    print_poll_summary(summary)


# -- items ----------------------------------------------------------------------------------


@main.group()
def items() -> None:
    """Stored items."""


@items.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.pass_obj
def items_list(obj: _Context, as_json: bool, limit: int) -> None:
    """The newest items first."""
    with obj.app() as app:
        rows = app.store.list_items(limit)
    if as_json:
        payload = [
            {
                "id": r.id,
                "feed": r.feed,
                "title": r.title,
                "link": r.link,
                "published": r.published.isoformat(),
                "summary": r.summary,
                "relevant": r.relevant,
                "us_link": r.us_link,
                "themes": r.themes,
            }
            for r in rows
        ]
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no items yet: run `qasid poll`")
    for r in rows:
        click.echo(f"{r.published:%Y-%m-%d %H:%M}  {r.title}\n    {r.link or r.feed}")


# -- tagging --------------------------------------------------------------------------------


@main.command()
@click.option(
    "--input", "input_file", type=click.File("rb"), default="-", help="JSON Lines (default stdin)."
)
@click.option("--output", "output_file", type=click.File("w"), default="-", help="Default stdout.")
@click.pass_obj
def tag(obj: _Context, input_file: Any, output_file: Any) -> None:
    """Tag JSON Lines items: relevant, us_link, themes, scores, evidence (no database)."""
    from pipeline.tagio import run_tag

    tagger = _load_tagger(obj.settings)
    status = run_tag(input_file, output_file, sys.stderr, tagger)
    output_file.flush()
    sys.exit(status)


def _load_tagger(settings: Settings) -> Any:
    from pipeline.rules import load_tagger

    return load_tagger(Path(settings.root), settings.path(settings.feeds.file))


@main.command()
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
    default=None,
    help="Only items fetched since this UTC date (default: every item).",
)
@click.pass_obj
def retag(obj: _Context, since: datetime | None) -> None:
    """Tag stored items again with the current theme rules."""
    with obj.app() as app:
        count = jobs.retag_items(app, since.replace(tzinfo=UTC) if since else None)
    click.echo(f"retagged {count} items")


@main.command()
@click.argument("item_id")
@click.pass_obj
def explain(obj: _Context, item_id: str) -> None:
    """Why an item was tagged as it was: scores and the terms that fired."""
    with obj.app() as app:
        found = app.store.get_item(item_id)
    if found is None:
        raise click.ClickException(f"no item {item_id} (or the prefix is not unique)")
    click.echo(
        f"{found.title}\n  {found.link or found.feed}\n  source: {found.source or found.feed}"
    )
    if found.relevant is None:
        click.echo("  not tagged yet: run `qasid retag`")
        return
    click.echo(
        f"  relevant: {'yes' if found.relevant else 'no'}   US involved: "
        f"{'yes' if found.us_link else 'no'}"
    )
    for theme, score in sorted(found.scores.items(), key=lambda kv: -kv[1]):
        mark = "*" if theme in found.themes else " "
        fired = ", ".join(found.evidence.get(theme, []))
        click.echo(f"  {mark} {theme:<24} {score:5.1f}  {fired}")
    for key, terms in sorted(found.evidence.items()):
        if key.startswith("_"):
            click.echo(f"    {key[1:]}: {', '.join(terms)}")
    click.echo("  (* = assigned)")


# -- subscribers and watchlists ------------------------------------------------------------


def _subscriber_json(sub: Subscriber) -> dict[str, Any]:
    return {
        "email": sub.email,
        "status": sub.status.value,
        "themes": list(sub.themes),
        "frequency": sub.frequency.value,
        "hour": sub.hour,
        "timezone": sub.timezone,
        "watchlists": [
            {"id": w.id, "query": w.query, "instant": w.instant} for w in sub.watchlists
        ],
    }


@main.group()
def subscribers() -> None:
    """Add, list and remove subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--themes", default="", help="Comma-separated theme ids (default: all themes).")
@click.option(
    "--frequency",
    type=click.Choice(["instant", "daily", "weekly"]),
    default="daily",
    show_default=True,
)
@click.option("--hour", type=int, default=7, show_default=True, help="Local delivery hour.")
@click.option("--timezone", default="Asia/Karachi", show_default=True, help="IANA zone name.")
@click.pass_obj
def subscribers_add(
    obj: _Context, email: str, themes: str, frequency: str, hour: int, timezone: str
) -> None:
    """Add a subscriber (active at once: an editor adds people who asked), or update one."""
    from pipeline.subscriptions import subscribe

    with obj.app() as app:
        sub, created = subscribe(
            app,
            email,
            themes=[t for t in themes.split(",") if t.strip()],
            frequency=frequency,
            hour=hour,
            timezone=timezone,
        )
    verb = "added" if created else "updated"
    click.echo(
        f"{verb} {sub.email}: {sub.frequency.value} at {sub.hour:02d}:00 {sub.timezone}, "
        f"{counted(len(sub.themes), 'theme')}"
    )


@subscribers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def subscribers_list(obj: _Context, as_json: bool) -> None:
    """Every subscriber with their choices and watchlists."""
    from pipeline.adapters.subscriber_store import SubscriberStore

    with obj.app() as app:
        subs = SubscriberStore(app.store).all()
    if as_json:
        click.echo(json.dumps([_subscriber_json(s) for s in subs], indent=2, ensure_ascii=False))
        return
    if not subs:
        click.echo("no subscribers yet: `qasid subscribers add EMAIL`")
    for sub in subs:
        click.echo(
            f"{sub.email}  {sub.status.value}  {sub.frequency.value} {sub.hour:02d}:00 "
            f"{sub.timezone}  themes: {', '.join(sub.themes) or '-'}  "
            f"watchlists: {len(sub.watchlists)}"
        )


@subscribers.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(obj: _Context, email: str) -> None:
    """Delete a subscriber and their watchlists."""
    from pipeline.adapters.subscriber_store import SubscriberStore
    from pipeline.subscriptions import normalise_email

    with obj.app() as app:
        if not SubscriberStore(app.store).remove(normalise_email(email)):
            raise click.ClickException(f"no subscriber {email}")
    click.echo(f"removed {email}")


@main.group()
def watchlist() -> None:
    """Keyword watchlists in the query language (see docs/watchlists.md)."""


@watchlist.command("add")
@click.argument("email")
@click.argument("query")
@click.option("--instant", is_flag=True, help="Send an alert as soon as an item matches.")
@click.pass_obj
def watchlist_add(obj: _Context, email: str, query: str, instant: bool) -> None:
    """Save a watchlist for a subscriber."""
    from pipeline.subscriptions import add_watchlist

    with obj.app() as app:
        saved = add_watchlist(app, email, query, instant=instant)
    click.echo(
        f"watchlist {saved.id} for {email}: {saved.query}" + (" [instant]" if instant else "")
    )


@watchlist.command("list")
@click.argument("email", required=False)
@click.pass_obj
def watchlist_list(obj: _Context, email: str | None) -> None:
    """Watchlists of one subscriber, or of everyone."""
    from pipeline.adapters.subscriber_store import SubscriberStore
    from pipeline.subscriptions import normalise_email

    with obj.app() as app:
        store = SubscriberStore(app.store)
        subs = [s for s in [store.get(normalise_email(email))] if s] if email else store.all()
    rows = [(s, w) for s in subs for w in s.watchlists]
    if not rows:
        click.echo("no watchlists")
    for sub, w in rows:
        click.echo(f"{w.id:>5}  {sub.email}  {w.query}" + ("  [instant]" if w.instant else ""))


@watchlist.command("remove")
@click.argument("watchlist_id", type=int)
@click.pass_obj
def watchlist_remove(obj: _Context, watchlist_id: int) -> None:
    """Delete a watchlist by its id (see `qasid watchlist list`)."""
    from pipeline.adapters.subscriber_store import SubscriberStore

    with obj.app() as app:
        if not SubscriberStore(app.store).remove_watchlist(watchlist_id):
            raise click.ClickException(f"no watchlist {watchlist_id}")
    click.echo(f"removed watchlist {watchlist_id}")


@watchlist.command("test")
@click.argument("query")
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True)
@click.pass_obj
def watchlist_test(obj: _Context, query: str, days: int) -> None:
    """How often QUERY would have matched stored items, per week, with examples."""
    from pipeline.subscriptions import backtest_query

    with obj.app() as app:
        result = backtest_query(app, query, days)
    click.echo(
        f"{result.query}: {result.matches} of {result.items_scanned} items in the last "
        f"{days} days (about {result.weekly_average:.1f} a week)"
    )
    for start, count in result.per_week:
        click.echo(f"  week of {start:%Y-%m-%d}  {'#' * min(count, 60)} {count}")
    for example in result.examples:
        click.echo(f"  e.g. {example.published:%Y-%m-%d}  {example.title}")


# -- digests and delivery -------------------------------------------------------------------


_WHEN = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"])


@main.group()
def digest() -> None:
    """Build digests: what is due, or one reader's, or the public edition."""


@digest.command("build")
@click.option("--subscriber", "email", default=None, help="Build this reader's digest.")
@click.option("--edition", is_flag=True, help="Build the public edition (every theme).")
@click.option(
    "--since", type=_WHEN, default=None, help="Period start, UTC (with --subscriber/--edition)."
)
@click.option("--until", type=_WHEN, default=None, help="Period end, UTC (default: now).")
@click.option("--dry-run", is_flag=True, help="Store and send nothing; write files instead.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --dry-run: folder for the .html, .txt and .json files.",
)
@click.pass_obj
def digest_build(
    obj: _Context,
    email: str | None,
    edition: bool,
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
    out: Path | None,
) -> None:
    """Without options, build every digest that is due now (as the worker does)."""
    from pipeline import delivery

    if email and edition:
        raise click.UsageError("--subscriber and --edition exclude each other")
    if dry_run and not (email or edition):
        raise click.UsageError("--dry-run needs --subscriber EMAIL or --edition")
    with obj.app() as app:
        if not (email or edition):
            summary = delivery.build_due_digests(app)
            click.echo(summary.line())
            return
        subscriber = None
        if email:
            from pipeline.adapters.subscriber_store import SubscriberStore
            from pipeline.subscriptions import normalise_email

            subscriber = SubscriberStore(app.store).get(normalise_email(email))
            if subscriber is None:
                raise click.ClickException(f"no subscriber {email}")
        end = until.replace(tzinfo=UTC) if until else app.clock()
        start = since.replace(tzinfo=UTC) if since else end - timedelta(days=1)
        if start >= end:
            raise click.UsageError("--since must be before --until")
        if not dry_run:
            built, edition_id, created = delivery.store_digest(app, subscriber, start, end)
            state = "stored" if created else "already stored"
            queued = " and queued" if created and subscriber and not built.empty else ""
            click.echo(
                f"{built.subject}: {len(built.item_ids)} stories; edition {edition_id} "
                f"{state}{queued}"
            )
            return
        built, rendered = delivery.preview_digest(app, subscriber, start, end)
        target = out or app.settings.path("var/preview")
        target.mkdir(parents=True, exist_ok=True)
        stem = "edition" if edition else (subscriber.email if subscriber else "digest")
        (target / f"{stem}.html").write_text(rendered.html, encoding="utf-8")
        (target / f"{stem}.txt").write_text(rendered.text, encoding="utf-8")
        from pipeline.core.digest import digest_as_dict

        (target / f"{stem}.json").write_text(
            json.dumps(digest_as_dict(built), indent=2, ensure_ascii=False), encoding="utf-8"
        )
        click.echo(f"{rendered.subject}\n{len(built.item_ids)} stories")
        click.echo(f"wrote {target / stem}.html, .txt and .json")


@main.command()
@click.option("--limit", type=click.IntRange(1), default=None, help="Send at most N emails.")
@click.pass_obj
def send(obj: _Context, limit: int | None) -> None:
    """Queue due alerts, recover stuck rows, and send what is queued."""
    from pipeline import delivery

    with obj.app() as app:
        delivery.check_sending_settings(app)
        mailer = app.mailer()
        try:
            reaped, resent = delivery.recover(app)
            summary = delivery.drain_queue(app, mailer, limit=limit)
        finally:
            mailer.close()
    if reaped or resent:
        click.echo(f"recovered: {reaped} stuck rows marked unknown, {resent} resent once")
    click.echo(summary.line())
    for error in summary.errors[:20]:
        click.echo(f"  {error}")
    if summary.fatal:
        sys.exit(1)


@main.command()
@click.pass_obj
def run(obj: _Context) -> None:
    """One full cycle: poll and tag, queue alerts, build due digests, send."""
    from pipeline import delivery

    with obj.app() as app:
        delivery.check_sending_settings(app)
        jobs.sync_configured_feeds(app)
        on_start, on_report = _poll_reporter("polling")
        poll_summary = jobs.poll_feeds(app, on_start=on_start, on_report=on_report)
        if poll_summary.reports:
            print_poll_summary(poll_summary)
        alerts = delivery.queue_alerts(app)
        built = delivery.build_due_digests(app)
        mailer = app.mailer()
        try:
            delivery.recover(app)
            sent = delivery.drain_queue(app, mailer)
        finally:
            mailer.close()
    click.echo(f"alerts queued: {alerts}")
    click.echo(built.line())
    click.echo(sent.line())
    if sent.fatal:
        sys.exit(1)


# -- processes ------------------------------------------------------------------------------


@main.command()
@click.pass_obj
def worker(obj: _Context) -> None:
    """Run the scheduler: poll due feeds every tick until SIGTERM."""
    from pipeline.scheduler import run_worker

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    with obj.app() as app:
        run_worker(app)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: [web] host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: [web] port)."
)
@click.pass_obj
def serve(obj: _Context, host: str | None, port: int | None) -> None:
    """Serve the web app for local use (in production the Procfile runs gunicorn)."""
    from pipeline.web import create_app

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    web = obj.settings.web
    host, port = host or web.host, port or web.port
    with obj.app() as app:
        site = create_app(obj.settings, core=app)
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"web app: http://{shown}:{port}/  (links in emails use {web.base_url}/)")
        click.echo("Ctrl-C to stop")
        site.run(host=host, port=port, threaded=True, use_reloader=False)


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo keeps its database (default var/demo).",
)
@click.option(
    "--serve/--no-serve",
    default=True,
    show_default=True,
    help="After the pipeline, serve the web app on 127.0.0.1 until Ctrl-C (or SIGTERM).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="The web app's port on 127.0.0.1; 0 picks a free one (the URL printed is the real one).",
)
@click.pass_obj
def demo(obj: _Context, workdir: Path | None, serve: bool, port: int) -> None:
    """Run the pipeline offline on bundled feed snapshots served on 127.0.0.1, then serve
    the web app on its database (--no-serve stops after the pipeline)."""
    from pipeline.demo import run_demo

    run_demo(obj.settings, workdir, serve=serve, port=port)


if __name__ == "__main__":
    main()
