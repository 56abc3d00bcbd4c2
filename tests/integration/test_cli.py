"""The `qasid` command line, end to end on a real SQLite file and a real feed server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main
from tests.support.feedserver import FeedServer
from tests.support.fixtures_http import FEED_SERVER_ALLOW

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Border Post</title>'
    b"<item><title>Torkham crossing reopens</title><guid>t1</guid>"
    b"<link>https://news.example/torkham?utm_medium=rss</link>"
    b"<pubDate>Sat, 28 Nov 2026 08:00:00 GMT</pubDate>"
    b"<description>&lt;b&gt;Trade&lt;/b&gt; resumes&lt;script&gt;x()&lt;/script&gt;</description>"
    b"</item></channel></rss>"
)


Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text("# none\n")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "QASID_FEEDS_FILE": str(feeds_file),
        "QASID_FETCH_ALLOW_HOSTS": ",".join(FEED_SERVER_ALLOW),
        "QASID_FETCH_PARSE_WORKERS": "0",
    }
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_init_add_poll_and_list_as_json(run: Run, feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", body=RSS)
    assert run("init").exit_code == 0
    added = run(
        "feeds", "add", feed_server.url("/feed.xml"), "--country", "pk", "--kind", "newspaper"
    )
    assert added.exit_code == 0, added.output
    polled = run("poll", "--all")
    assert polled.exit_code == 0, polled.output
    assert "1 feeds: 1 ok" in polled.output and "1 new items" in polled.output
    feeds = json.loads(run("feeds", "list", "--json").output)
    assert feeds[0]["url"] == feed_server.url("/feed.xml")
    assert {k: feeds[0][k] for k in ("title", "status", "last_error", "failures", "items")} == {
        "title": "Border Post",
        "status": "ok",
        "last_error": None,
        "failures": 0,
        "items": 1,
    }
    items = json.loads(run("items", "list", "--json", "--limit", "5").output)
    [item] = items
    assert set(item) >= {
        "id",
        "feed",
        "title",
        "link",
        "published",
        "summary",
        "relevant",
        "us_link",
        "themes",
    }
    assert item["link"] == "https://news.example/torkham"
    assert item["published"].startswith("2026-11-28T08:00:00")
    assert "<script" not in item["summary"] and "<b>Trade</b>" in item["summary"]


def test_commands_before_init_say_how_to_fix_it(run: Run) -> None:
    result = run("feeds", "list")
    assert result.exit_code == 1
    assert "qasid db upgrade" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "javascript:alert(1)"])
def test_adding_a_bad_feed_url_fails_with_one_clear_line(run: Run, url: str) -> None:
    run("init")
    result = run("feeds", "add", url)
    assert result.exit_code == 1
    assert result.output.startswith("qasid: error:")
    assert len(result.output.strip().splitlines()) == 1


def test_bad_setting_stops_start_up_naming_key_value_and_source(run: Run, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["feeds", "list"], env={"QASID_FETCH_MAX_REDIRECTS": "many"})
    assert result.exit_code == 1
    assert "fetch.max_redirects" in result.output and "QASID_FETCH_MAX_REDIRECTS" in result.output


def test_opml_export_then_import_round_trips_the_feed_list(run: Run, tmp_path: Path) -> None:
    run("init")
    run("feeds", "add", "https://www.dawn.com/feeds/home", "--title", "Dawn", "--country", "PK")
    run(
        "feeds",
        "add",
        "https://feeds.bbci.co.uk/urdu/rss.xml",
        "--title",
        "BBC Urdu",
        "--language",
        "ur",
    )
    out = tmp_path / "feeds.opml"
    assert run("feeds", "export-opml", "-o", str(out)).exit_code == 0
    run("feeds", "remove", "https://www.dawn.com/feeds/home")
    imported = run("feeds", "import-opml", str(out))
    assert "1 feeds added, 1 already known, 0 skipped" in imported.output
    feeds = {f["url"]: f for f in json.loads(run("feeds", "list", "--json").output)}
    assert feeds["https://www.dawn.com/feeds/home"]["country"] == "PK"
    assert feeds["https://feeds.bbci.co.uk/urdu/rss.xml"]["language"] == "ur"


def test_opml_import_skips_bad_outlines_and_keeps_the_rest(run: Run, tmp_path: Path) -> None:
    run("init")
    opml = tmp_path / "mixed.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>x</title></head><body>'
        '<outline text="Good" type="rss" xmlUrl="https://www.dawn.com/feeds/home"/>'
        '<outline text="Bad" type="rss" xmlUrl="file:///etc/passwd"/>'
        "</body></opml>"
    )
    result = run("feeds", "import-opml", str(opml))
    assert "1 feeds added, 0 already known, 1 skipped" in result.output
    assert "file:///etc/passwd" in result.output


def test_poll_reports_failures_with_reasons(run: Run, feed_server: FeedServer) -> None:
    feed_server.route("/gone", status=404, body=b"no")
    run("init")
    run("feeds", "add", feed_server.url("/gone"))
    result = run("poll", "--all")
    assert "1 failed" in result.output
    assert "HTTP 404" in result.output
    status = run("feeds", "status", "--failing")
    assert "1 consecutive failures" in status.output
