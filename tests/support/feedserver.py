"""A real, scriptable HTTP server for tests: feeds, redirects, and the faults of RELIABILITY.md.

``FeedServer`` runs a threaded ``http.server`` on a loopback address (127.0.0.2 by default,
an ephemeral port) in a background thread. Script it per path with ``Route``s::

    with FeedServer() as server:
        server.route("/feed.xml", body=RSS_BYTES, etag='"v1"')   # 304 on If-None-Match: "v1"
        server.redirect("/old", server.url("/feed.xml"), status=301)
        server.route("/slow", body=b"<rss/>", chunk_size=1, delay=0.5)   # slow drip
        server.route("/hang", hang=True)                                 # never answers
        server.route("/cut", body=b"x" * 1000, drop_after=100)           # dies mid-body
        server.route("/zip", body=lambda: iter_chunks(), headers={"Content-Encoding": "gzip"})
        ... fetch server.url("/feed.xml") ...
        assert server.hits("/feed.xml") == 1

Unknown paths answer 404 (or ``default`` when set). Every request is recorded in
``server.requests`` (method, path, lower-cased headers). Connections are HTTP/1.1 keep-alive.
``Canary`` is the same server on 127.0.0.1 answering 200 everywhere: tests point redirects
and fake DNS answers at it and assert ``canary.hits() == 0``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

Body = bytes | Callable[[], Iterable[bytes]]

RSS_CONTENT_TYPE = "application/rss+xml; charset=utf-8"


@dataclass
class Route:
    """How the server answers one path.

    body: bytes, or a zero-argument callable returning an iterable of byte chunks (called
        afresh for each request, so generators can be replayed). A callable body is sent
        chunked unless ``content_length`` is given.
    content_length: the Content-Length to announce; None means "the true length" for bytes
        bodies. Set it to lie (e.g. 100 for a 50 MB body).
    chunked: send Transfer-Encoding: chunked even for a bytes body.
    chunk_size / delay: write the body in pieces of ``chunk_size`` bytes, sleeping ``delay``
        seconds before each (``chunk_size=1, delay=0.5`` is a slow drip).
    hang: read the request and never answer (until the server stops).
    drop_after: close the connection after this many body bytes; with ``reset`` the close
        is a TCP RST instead of a FIN. With ``chunked`` this is a truncated chunked body.
    etag / last_modified: sent as headers; a matching If-None-Match (or, without one, an
        If-Modified-Since at or after ``last_modified``) gets 304 Not Modified.
    """

    status: int = 200
    body: Body = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = RSS_CONTENT_TYPE
    content_length: int | None = None
    chunked: bool = False
    chunk_size: int = 64 * 1024
    delay: float = 0.0
    hang: bool = False
    drop_after: int | None = None
    reset: bool = False
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # lower-cased names


class _Dropped(Exception):
    """The route asked for the connection to be cut."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _answer(self, *, send_body: bool) -> None:
        owner = self.server.owner
        route = owner._record_and_route(self.command, self.path, self.headers.items())
        if route.hang:
            owner._stopping.wait()
            self.close_connection = True
            return
        if self._not_modified(route):
            self.send_response(304)
            if route.etag:
                self.send_header("ETag", route.etag)
            if route.last_modified:
                self.send_header("Last-Modified", route.last_modified)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = route.body
        chunked = route.chunked or (callable(body) and route.content_length is None)
        self.send_response(route.status)
        if route.content_type:
            self.send_header("Content-Type", route.content_type)
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = route.content_length
            if length is None:
                length = len(body) if isinstance(body, bytes) else 0
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if not send_body:
            return
        try:
            self._write_body(route, chunked)
        except _Dropped:
            self._drop(route.reset)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
            self.close_connection = True

    def _not_modified(self, route: Route) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if route.etag and if_none_match:
            tags = [tag.strip() for tag in if_none_match.split(",")]
            return "*" in tags or route.etag in tags
        since = self.headers.get("If-Modified-Since")
        if route.last_modified and since and not if_none_match:
            try:
                return parsedate_to_datetime(since) >= parsedate_to_datetime(route.last_modified)
            except (TypeError, ValueError):
                return False
        return False

    def _write_body(self, route: Route, chunked: bool) -> None:
        stopping = self.server.owner._stopping
        sent = 0
        for piece in _pieces(route.body, route.chunk_size):
            if route.delay and stopping.wait(route.delay):
                raise _Dropped
            if route.drop_after is not None and sent + len(piece) >= route.drop_after:
                self._send(piece[: route.drop_after - sent], chunked)
                raise _Dropped
            self._send(piece, chunked)
            sent += len(piece)
        if route.drop_after is not None:
            raise _Dropped
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send(self, piece: bytes, chunked: bool) -> None:
        if not piece:
            return
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            self.wfile.write(piece)
        self.wfile.flush()

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        if reset:
            # Linger 0: close() sends RST, which the client sees as "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def _pieces(body: Body, chunk_size: int) -> Iterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]
        return
    for chunk in body():
        for start in range(0, len(chunk), chunk_size):
            yield chunk[start : start + chunk_size]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: FeedServer
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        # The TLS handshake runs here, in the per-connection thread, not in accept().
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-answer is expected in these tests


class _HTTP6Server(_HTTPServer):
    address_family = socket.AF_INET6


class FeedServer:
    """A scriptable HTTP(S) server on a loopback address, run in a background thread.

    ``FeedServer(host="127.0.0.2", port=0, tls=None)``; ``tls`` is a server-side
    ``ssl.SSLContext`` to serve HTTPS. Use as a context manager, or ``start()``/``stop()``.
    """

    def __init__(
        self, host: str = "127.0.0.2", port: int = 0, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self._tls = tls
        self._routes: dict[str, Route] = {}
        self.default: Route | None = None  # answer for unknown paths; None → 404
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        server_class = _HTTP6Server if ":" in self.host else _HTTPServer
        httpd = server_class((self.host, self._requested_port), _Handler)
        httpd.owner = self
        httpd.tls = self._tls
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes hanging and dripping handlers so nothing lingers."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- scripting --------------------------------------------------------------------

    def route(self, path: str, route: Route | None = None, /, **options: object) -> Route:
        """Set how ``path`` is answered: pass a Route, or Route's fields as keywords.
        Replaces any earlier route for that path and returns the new one."""
        new = route if route is not None else Route(**options)  # type: ignore[arg-type]
        with self._lock:
            self._routes[path] = new
        return new

    def redirect(self, path: str, location: str, status: int = 302) -> Route:
        """Answer ``path`` with a redirect to ``location`` (sent exactly as given)."""
        return self.route(
            path, Route(status=status, headers={"Location": location}, content_type=None)
        )

    def hits(self, path: str | None = None) -> int:
        """Requests received for ``path`` (query string ignored), or in total."""
        with self._lock:
            if path is None:
                return len(self.requests)
            return sum(1 for r in self.requests if r.path.split("?", 1)[0] == path)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def reset(self) -> None:
        """Forget routes and recorded requests."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()

    def _record_and_route(
        self, method: str, path: str, headers: Iterable[tuple[str, str]]
    ) -> Route:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, {k.lower(): v for k, v in headers}))
            route = self._routes.get(path) or self._routes.get(path.split("?", 1)[0])
        if route is not None:
            return route
        if self.default is not None:
            return self.default
        return Route(status=404, body=b"not found", content_type="text/plain")


class Canary(FeedServer):
    """A server on 127.0.0.1 that answers 200 to everything and counts the hits.

    Nothing in a test should reach it: the SSRF guard must stop every request aimed at it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.default = Route(body=b"canary secret", content_type="text/plain")
