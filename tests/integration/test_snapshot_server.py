"""The demo's snapshot server behaves like a good feed host, and serves nothing else."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from pipeline.adapters.snapshot_server import SnapshotServer, serve_directory
from pipeline.settings import PROJECT_ROOT

DEMO_FEEDS = PROJECT_ROOT / "pipeline" / "demo_data" / "feeds"
MTIME = 1_700_000_000  # a fixed file time, so Last-Modified is known


@pytest.fixture
def root(tmp_path: Path) -> Path:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "a.rss").write_bytes(b"<rss version='2.0'><channel/></rss>")
    (feeds / "b.atom").write_bytes(b"<feed xmlns='http://www.w3.org/2005/Atom'/>")
    (feeds / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("outside the served directory")
    (feeds / "link.rss").symlink_to(tmp_path / "secret.txt")
    for path in feeds.iterdir():
        if path.is_file() and not path.is_symlink():
            os.utime(path, (MTIME, MTIME))
    return feeds


@pytest.fixture
def server(root: Path) -> Iterator[SnapshotServer]:
    with serve_directory(root) as running:
        yield running


def get(
    server: SnapshotServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_url_and_port_describe_where_it_listens(server: SnapshotServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_feed_is_served_with_validators_then_304_on_matching_etag(server: SnapshotServer) -> None:
    status, headers, body = get(server, "/a.rss")
    assert status == 200
    assert body == b"<rss version='2.0'><channel/></rss>"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Last-Modified"] == formatdate(MTIME, usegmt=True)
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    status, headers, body = get(server, "/a.rss", {"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag


def test_etag_comparison_is_weak_and_accepts_lists(server: SnapshotServer) -> None:
    etag = get(server, "/a.rss")[1]["ETag"]
    assert get(server, "/a.rss", {"If-None-Match": f'"other", W/{etag}'})[0] == 304
    assert get(server, "/a.rss", {"If-None-Match": '"other"'})[0] == 200


def test_if_modified_since_gives_304_unless_the_file_is_newer(server: SnapshotServer) -> None:
    assert get(server, "/a.rss", {"If-Modified-Since": formatdate(MTIME, usegmt=True)})[0] == 304
    earlier = formatdate(MTIME - 60, usegmt=True)
    assert get(server, "/a.rss", {"If-Modified-Since": earlier})[0] == 200
    assert get(server, "/a.rss", {"If-Modified-Since": "yesterday-ish"})[0] == 200


def test_if_none_match_takes_precedence_over_if_modified_since(server: SnapshotServer) -> None:
    headers = {"If-None-Match": '"stale"', "If-Modified-Since": formatdate(MTIME, usegmt=True)}
    assert get(server, "/a.rss", headers)[0] == 200


def test_changed_file_gets_a_new_etag(server: SnapshotServer, root: Path) -> None:
    etag = get(server, "/a.rss")[1]["ETag"]
    (root / "a.rss").write_bytes(b"<rss version='2.0'><channel><title>new</title></channel></rss>")
    status, headers, _ = get(server, "/a.rss", {"If-None-Match": etag})
    assert status == 200
    assert headers["ETag"] != etag


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/a.rss", "application/rss+xml"), ("/b.atom", "application/atom+xml")],
)
def test_feed_content_types(server: SnapshotServer, path: str, content_type: str) -> None:
    assert get(server, path)[1]["Content-Type"].split(";")[0] == content_type


def test_head_sends_headers_without_a_body(server: SnapshotServer) -> None:
    status, headers, body = get(server, "/a.rss", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"].startswith("application/rss+xml")


@pytest.mark.parametrize(
    "path",
    [
        "/missing.rss",
        "/",
        "/sub",
        "/sub/",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2E%2E/%2E%2E/secret.txt",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/link.rss",
        "/a.rss%00.txt",
    ],
)
def test_nothing_outside_the_directory_or_not_a_file_is_served(
    server: SnapshotServer, path: str
) -> None:
    status, _, body = get(server, path)
    assert status == 404
    assert b"outside the served directory" not in body
    assert b"root:" not in body


def test_query_strings_are_ignored(server: SnapshotServer) -> None:
    assert get(server, "/a.rss?utm_source=x")[0] == 200


def test_close_releases_the_port(root: Path) -> None:
    server = serve_directory(root)
    port = server.port
    server.close()
    server.close()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/a.rss")


def test_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        serve_directory(tmp_path / "missing")


def test_bundled_demo_feeds_are_served_with_their_types() -> None:
    with serve_directory(DEMO_FEEDS) as server:
        for path in sorted(DEMO_FEEDS.iterdir()):
            status, headers, body = get(server, "/" + path.name)
            assert status == 200
            assert body == path.read_bytes()
            expected = "application/rss+xml" if path.suffix == ".rss" else "application/atom+xml"
            assert headers["Content-Type"].startswith(expected)
