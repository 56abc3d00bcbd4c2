"""Web fixtures: a real app on a migrated store, and Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pipeline.bootstrap import App
from pipeline.web import create_app
from tests.support.app import FakeClock, make_app


@pytest.fixture
def web_core(sqlite_url: str, tmp_path: Path) -> Iterator[App]:
    """The qasid App behind the web app (SQLite; the store suite covers PostgreSQL)."""
    app = make_app(sqlite_url, tmp_path, FakeClock())
    yield app
    app.close()


@pytest.fixture
def web_app(web_core: App) -> Flask:
    flask = create_app(core=web_core)
    flask.config.update(TESTING=True)
    return flask


@pytest.fixture
def client(web_app: Flask) -> FlaskClient:
    return web_app.test_client()
