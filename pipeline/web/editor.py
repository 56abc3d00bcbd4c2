"""The editor dashboard: feed health, recent items with their tags and evidence, deliveries
by status, suppressions and subscribers, behind ``[web] editor_password``.

- An empty password closes the dashboard: every editor URL answers 404.
- Login is a form with a CSRF token (CSRFProtect covers every POST), rate-limited per
  client, and the password is compared in constant time (``hmac.compare_digest``).
- The session holds a tag derived from the password, so changing the password signs every
  editor out; a login lasts at most ``SESSION_HOURS``. Logout is a POST (with CSRF).
- Editor pages are never cached and send no Referer.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from pipeline.adapters.archive_store import ArchiveStore
from pipeline.adapters.delivery_store import DeliveryStore
from pipeline.web.archive import install_filters, theme_names
from pipeline.web.context import core
from pipeline.web.security import limiter

blueprint = Blueprint("editor", __name__, url_prefix="/editor")

LOGIN_LIMIT = "10 per minute;30 per hour"
SESSION_HOURS = 12
MAX_PASSWORD_CHARS = 1024
RECENT_ITEMS = 30
# The tagger's evidence keys that are not themes (pipeline.core.tagger).
EVIDENCE_LABELS = {
    "_pakistan": "Pakistan terms",
    "_us": "United States terms",
    "_source": "Source",
    "_suppressed": "Held back by",
}


def _password() -> str:
    return core().settings.web.editor_password


def _tag(password: str) -> str:
    """What the session remembers of the password: an HMAC under the app's secret key."""
    key = str(core().tokens.keys[0]).encode()
    return hmac.new(key, b"qasid.editor\x00" + password.encode(), hashlib.sha256).hexdigest()


def signed_in() -> bool:
    password = _password()
    if not password:
        return False
    tag = session.get("editor")
    since = session.get("editor_since")
    if not isinstance(tag, str) or not isinstance(since, int | float):
        return False
    if time.time() - since > SESSION_HOURS * 3600:
        return False
    return hmac.compare_digest(tag, _tag(password))


@blueprint.before_request
def closed_without_password() -> None:
    if not _password():
        abort(404)


@blueprint.after_request
def private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@blueprint.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"])
def login() -> ResponseReturnValue:
    if request.method == "GET":
        if signed_in():
            return redirect(url_for("editor.dashboard"))
        return render_template("web/editor/login.html", error=None)
    given = request.form.get("password", "")[:MAX_PASSWORD_CHARS]
    if given and hmac.compare_digest(given.encode(), _password().encode()):
        session.clear()  # a fresh session (and CSRF token) for the signed-in editor
        session["editor"] = _tag(_password())
        session["editor_since"] = int(time.time())
        return redirect(url_for("editor.dashboard"))
    return render_template("web/editor/login.html", error="That password is not right."), 401


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    session.pop("editor", None)
    session.pop("editor_since", None)
    return redirect(url_for("editor.login"))


@blueprint.get("/")
@blueprint.get("")
def dashboard() -> ResponseReturnValue:
    if not signed_in():
        return redirect(url_for("editor.login"))
    app = core()
    archive = ArchiveStore(app.store)
    feeds = app.store.list_feeds()
    feeds.sort(key=lambda f: (f.failures == 0 and f.status in ("ok", "not_modified"), f.title))
    suppressed_total, suppressed_recent = archive.suppressions()
    return render_template(
        "web/editor/dashboard.html",
        feeds=feeds,
        failing=sum(1 for f in feeds if f.failures),
        items=app.store.list_items(limit=RECENT_ITEMS),
        deliveries=sorted(DeliveryStore(app.store).counts_by_status().items()),
        subscribers=sorted(archive.subscribers_by_status().items()),
        suppressed_total=suppressed_total,
        suppressed_recent=suppressed_recent,
        counts=archive.counts(),
        names={**theme_names(), **EVIDENCE_LABELS},
        zone="UTC",
        now=app.clock(),
    )


def register(flask: Flask) -> None:
    install_filters(flask)
    flask.register_blueprint(blueprint)
