"""A small local HTTP server for bundled feed snapshots (``qasid demo``, benchmarks, tests).

It behaves like a well-run feed host, so the poller's production path is what gets
exercised: feed content types, a strong ETag and Last-Modified on every answer, and 304 Not
Modified on a matching conditional request. It serves regular files directly inside one
directory and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".rdf": "application/rdf+xml; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class SnapshotServer:
    """A running server; ``url`` ends in "/" so ``server.url + "feed.rss"`` is a feed URL."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        self.directory = directory.resolve()
        self._httpd = _Server((host, port), self.directory)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"snapshot-server:{self.port}",
            daemon=True,  # never keeps the process alive on its own
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> SnapshotServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def serve_directory(directory: Path, host: str = "127.0.0.1", port: int = 0) -> SnapshotServer:
    """Serve the files in ``directory`` over HTTP from a background thread.

    ``port=0`` picks a free port; read it from ``.port`` or ``.url``. Raises
    NotADirectoryError when ``directory`` is not one, and OSError when the address is taken.
    """
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: not a directory")
    return SnapshotServer(directory, host, port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path) -> None:
        self.root = root
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "qasid-snapshots/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as real feed hosts offer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._send_plain(HTTPStatus.NOT_FOUND, "not found\n", send_body)
            return
        body = path.read_bytes()
        mtime = path.stat().st_mtime
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        last_modified = formatdate(mtime, usegmt=True)
        if self._not_modified(etag, int(mtime)):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, DEFAULT_CONTENT_TYPE))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _resolve(self) -> Path | None:
        """The file the request names, or None when it is not a file inside the root."""
        name = unquote(urlsplit(self.path).path).lstrip("/")
        if not name or "\x00" in name or any(part in ("", ".", "..") for part in name.split("/")):
            return None
        candidate = (self.server.root / name).resolve()
        # resolve() follows symlinks, so a link pointing outside the root is refused too.
        if not candidate.is_relative_to(self.server.root) or not candidate.is_file():
            return None
        return candidate

    def _not_modified(self, etag: str, mtime: int) -> bool:
        # RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since; it compares weakly.
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False  # an unparseable date is ignored, as the RFC asks
            if since.tzinfo is None:  # "-0000" zone: HTTP dates are always GMT
                since = since.replace(tzinfo=UTC)
            return mtime <= since.timestamp()
        return False

    def _send_plain(self, status: HTTPStatus, text: str, send_body: bool) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # The base class writes every request to stderr; the demo's output should stay clean.
        log.debug("snapshot server: " + format, *args)
