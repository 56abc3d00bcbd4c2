"""The web app: subscribe, manage preferences and watchlists, read the archive.

``create_app(settings)`` builds a Flask app around one qasid ``App`` (store, tokens,
renderer). No scheduler ever runs in a web process: the Procfile's ``worker`` is the only
place jobs run (RELIABILITY.md: APScheduler in web workers sends everything N times).
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from pipeline.bootstrap import App, build_app
from pipeline.settings import Settings, load_settings
from pipeline.web import logs, security
from pipeline.web.context import install_context

PACKAGE = Path(__file__).resolve().parent


def create_app(settings: Settings | None = None, core: App | None = None) -> Flask:
    """A WSGI app for ``settings`` (read from config/ and the environment when None)."""
    settings = settings or (core.settings if core else load_settings())
    core = core or build_app(settings)
    flask = Flask(
        __name__,
        template_folder=str(Path(settings.root) / "templates"),
        static_folder=str(PACKAGE / "static"),
        static_url_path="/static",
    )
    flask.config.update(
        SECRET_KEY=core.tokens.keys[0],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web.base_url.startswith("https://"),
        MAX_CONTENT_LENGTH=settings.web.max_request_bytes,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        JSON_SORT_KEYS=False,
    )
    flask.extensions["qasid"] = core
    security.install(flask, settings)
    logs.install(flask)  # no link token in access or error logs
    install_context(flask)

    from pipeline.web import archive, editor, health, reader, webhook

    for module in (health, webhook, reader, archive, editor):
        module.register(flask)
    return flask
