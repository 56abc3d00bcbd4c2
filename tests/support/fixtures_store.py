"""Store fixtures on both engines: a SQLite file and a throw-away PostgreSQL database.

PostgreSQL is the one on 127.0.0.1:5432 (user postgres, trust auth). Without it the
PostgreSQL lane is skipped, unless QASID_REQUIRE_POSTGRES=1 (as in CI), where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters.storage import Store

POSTGRES_ADMIN_URL = os.environ.get(
    "QASID_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> str:
    import psycopg

    dsn = _psycopg_dsn(POSTGRES_ADMIN_URL)
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except psycopg.OperationalError as error:
        if os.environ.get("QASID_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {dsn}: {error}")
        pytest.skip(f"PostgreSQL not reachable at {dsn}")
    return dsn


@pytest.fixture
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"qasid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'qasid.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """Both engines: every test that uses it runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on each engine."""
    s = Store(store_url)
    s.upgrade()
    yield s
    s.close()
