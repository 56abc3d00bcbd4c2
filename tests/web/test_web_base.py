"""The web app's frame: security headers, error pages, health, no scheduler."""

from __future__ import annotations

from flask.testing import FlaskClient


def test_healthz_reports_the_database_and_no_scheduler_thread(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True and body["scheduler_threads"] == 0


def test_every_response_carries_the_security_headers(client: FlaskClient) -> None:
    for path in ("/healthz", "/no-such-page"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


def test_unknown_page_gets_a_friendly_404(client: FlaskClient) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert b"Not found" in response.data and b"<html" in response.data


def test_stylesheet_is_served_locally(client: FlaskClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert b"prefers-color-scheme" in response.data
