"""/healthz: for load balancers, and to prove no scheduler runs in a web process (D-09)."""

from __future__ import annotations

import os
import threading

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

from pipeline.web.context import core

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    names = [t.name for t in threading.enumerate()]
    scheduler_threads = [n for n in names if "APScheduler" in n or "apscheduler" in n.lower()]
    database_ok = True
    try:
        core().store.require_schema()
    except Exception:
        database_ok = False
    return jsonify(
        ok=database_ok,
        database=database_ok,
        pid=os.getpid(),
        threads=len(names),
        scheduler_threads=len(scheduler_threads),
    ), (200 if database_ok else 503)


def register(flask: Flask) -> None:
    flask.register_blueprint(blueprint)
