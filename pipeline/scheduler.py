"""APScheduler wiring for the `worker` process: a polling job, a delivery job, and daily
housekeeping (webhook retention).

APScheduler 3 is a single-process scheduler and its job store is not shared between
processes, so due work is decided by the database (each feed's next poll time and lease),
and the scheduler only ticks. An in-memory store is therefore enough: a restart loses
nothing, because the next tick finds everything that became due while the worker was down.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from pipeline import jobs
from pipeline.bootstrap import App

log = logging.getLogger(__name__)


HOUSEKEEPING_SECONDS = 24 * 3600


def build_scheduler(app: App) -> BackgroundScheduler:
    """Two jobs, each every ``worker.tick_seconds``: polling, and delivery; and housekeeping
    once a day (at start, then every 24 hours).

    coalesce: several missed ticks are one tick (the database query finds all due work).
    max_instances=1: a long tick is never overlapped by the next one in this process.
    misfire_grace_time=None: a tick that starts late still runs rather than being dropped.
    Both start at once; they are separate so a slow poll never holds up sending.
    """
    scheduler = BackgroundScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    tick = app.settings.worker.tick_seconds
    for job_id, name, function, seconds in (
        ("poll", "poll due feeds", poll_tick, tick),
        ("deliver", "alerts, due digests and the send queue", deliver_tick, tick),
        ("housekeeping", "webhook retention", housekeeping_tick, HOUSEKEEPING_SECONDS),
    ):
        scheduler.add_job(
            function,
            "interval",
            seconds=seconds,
            args=[app],
            id=job_id,
            name=name,
            next_run_time=datetime.now(scheduler.timezone),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    def on_event(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("scheduler tick missed: job=%s", event.job_id)
        elif event.exception is not None:
            log.error("scheduler job failed: job=%s error=%r", event.job_id, event.exception)

    scheduler.add_listener(on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    return scheduler


def poll_tick(app: App) -> None:
    """One worker tick: sync configured feeds, then poll what is due."""
    jobs.sync_configured_feeds(app)
    jobs.poll_feeds(app)


def housekeeping_tick(app: App) -> None:
    """Daily: delete webhook events and quarantined bodies past their retention."""
    jobs.purge_webhook_events(app)


def deliver_tick(app: App) -> None:
    """One delivery tick. Each step is decided by the database (what is due, what is
    queued), so a tick that runs late or twice does the same work once. A failing step is
    logged and the others still run."""
    from pipeline import delivery

    steps = (
        ("alerts", lambda: delivery.queue_alerts(app)),
        ("digests", lambda: delivery.build_due_digests(app)),
        ("recovery", lambda: delivery.recover(app)),
        ("send", lambda: _drain(app)),
    )
    for name, step in steps:
        try:
            step()
        except Exception:
            log.exception("delivery step failed: step=%s", name)


def _drain(app: App) -> None:
    from pipeline import delivery

    mailer = app.mailer()
    try:
        delivery.drain_queue(app, mailer)
    finally:
        mailer.close()


SIGNAL_POLL_SECONDS = 0.2  # how soon the worker notices SIGTERM/SIGINT


def run_worker(app: App, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then let the running tick finish."""
    stop = stop or threading.Event()
    from pipeline.delivery import check_sending_settings

    check_sending_settings(app)  # refuse to start rather than fail at the first email
    # The handlers only note the signal. A handler runs in the main thread between two of
    # its bytecodes: calling ``stop.set()`` there can wait forever for the lock that the
    # interrupted ``stop.wait()`` holds (the SIGTERM test hung twice in about 30 runs).
    signalled: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _: signalled.append(number))
    scheduler = build_scheduler(app)
    scheduler.start()
    log.info("worker started: name=%s tick=%ss", app.worker_name, app.settings.worker.tick_seconds)
    try:
        while not (signalled or stop.wait(SIGNAL_POLL_SECONDS)):
            pass
    finally:
        log.info("worker stopping: waiting for the running tick to finish")
        scheduler.shutdown(wait=True)
        log.info("worker stopped")
