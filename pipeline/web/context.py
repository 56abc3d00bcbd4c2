"""What every view and template shares: the qasid App, the themes, helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, current_app, url_for

from pipeline.bootstrap import App
from pipeline.core.digest import ThemeInfo
from pipeline.editorial import load_theme_infos


def core() -> App:
    """The qasid App of this web app (store, settings, tokens, clock)."""
    app = current_app.extensions["qasid"]
    assert isinstance(app, App)
    return app


def themes() -> list[ThemeInfo]:
    cached = current_app.extensions.get("qasid.themes")
    if cached is None:
        cached = load_theme_infos(Path(core().settings.root))
        current_app.extensions["qasid.themes"] = cached
    return list(cached)


def install_context(flask: Flask) -> None:
    def link(endpoint: str, **values: Any) -> str:
        """url_for, or "" when that part of the app is not installed."""
        if endpoint not in flask.view_functions:
            return ""
        return url_for(endpoint, **values)

    @flask.context_processor
    def shared() -> dict[str, Any]:
        settings = core().settings
        return {
            "site_name": settings.digest.site_name,
            "base_url": settings.web.base_url,
            "postal_address": settings.mail.postal_address,
            "link": link,
        }
