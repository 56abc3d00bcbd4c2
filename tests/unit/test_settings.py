"""Settings: defaults, the TOML file, environment overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError
from pipeline.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qasid.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_file_loads() -> None:
    settings = load_settings(environ={})
    assert settings.mail.backend == "outbox"
    assert settings.database.url.startswith("sqlite:///")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[fetch]\nmax_bytes = 2048\nconcurrency = 8\n")
    settings = load_settings(path, environ={"QASID_FETCH_CONCURRENCY": "16"})
    assert (settings.fetch.max_bytes, settings.fetch.concurrency) == (2048, 16)


def test_lists_come_from_comma_separated_environment_values(tmp_path: Path) -> None:
    env = {"QASID_FETCH_ALLOW_HOSTS": "127.0.0.1, 10.0.0.0/8"}
    settings = load_settings(write(tmp_path, ""), environ=env)
    assert settings.fetch.allow_hosts == ("127.0.0.1", "10.0.0.0/8")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example:5432/qasid", "postgresql+psycopg://u:p@db.example:5432/qasid"),
        ("postgresql://u@h/q", "postgresql+psycopg://u@h/q"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_accepts_the_forms_hosts_hand_out(given: str, expected: str) -> None:
    assert load_settings(environ={"DATABASE_URL": given}).database.url == expected


def test_port_and_sendgrid_key_follow_host_conventions() -> None:
    settings = load_settings(environ={"PORT": "5055", "SENDGRID_API_KEY": "SG.x"})
    assert settings.web.port == 5055
    assert settings.sendgrid.api_key == "SG.x"


def test_bad_value_names_key_value_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, "[fetch]\nmax_redirects = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "fetch.max_redirects" in message and "-1" in message and str(path) in message
    assert "\n" not in message


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="QASID_MAIL_BACKEND"):
        load_settings(environ={"QASID_MAIL_BACKEND": "pigeon"})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[fetch]\nmax_bytez = 1\n", "fetch.max_bytez"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[fetch\n", "not valid TOML"),
    ],
)
def test_unknown_keys_sections_and_broken_toml_are_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(write(tmp_path, text), environ={})


def test_unknown_environment_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"fetch\.speed"):
        load_settings(environ={"QASID_FETCH_SPEED": "11"})


def test_database_url_that_is_neither_sqlite_nor_postgres_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"database\.url"):
        load_settings(environ={"DATABASE_URL": "mysql://x"})
