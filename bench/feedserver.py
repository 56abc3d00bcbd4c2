"""The benchmark's origin: an aiohttp server in its own process, on 127.0.0.2 only.

Serves ``/feeds/<n>.xml`` (bench.corpus documents) after a fixed latency per response, and
honours ``If-None-Match`` with ETags that name the feed's current version. Controlled over
HTTP by the benchmark:

- ``POST /_control {"bump": [n, ...]}``: those feeds get a new version (five new stories).
- ``POST /_control {"mode": "304" | "identical"}``: ``identical`` ignores conditional GET and
  sends the whole current body with no validators (servers that do that exist).
- ``POST /_control {"latency": 0.2}``, ``{"reset": true}``; the answer is the request counts.

Run as ``python -m bench.feedserver --feeds N --latency 0.2``; it prints one JSON line with
its address once every version-0 body is built and it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from aiohttp import web

from bench import corpus

HOST = "127.0.0.2"
_STATE: web.AppKey[State] = web.AppKey("state")


@dataclass
class State:
    feeds: int
    latency: float
    mode: str = "304"
    versions: list[int] = field(default_factory=list)
    bodies: dict[tuple[int, int], bytes] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def body(self, feed: int) -> bytes:
        key = (feed, self.versions[feed])
        body = self.bodies.get(key)
        if body is None:
            body = self.bodies[key] = corpus.document(*key)
        return body


def _content_type(feed: int) -> str:
    return "application/atom+xml" if corpus.is_atom(feed) else "application/rss+xml"


async def serve_feed(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    try:
        feed = int(request.match_info["n"])
        state.versions[feed]
    except (ValueError, IndexError):
        state.counts["404"] += 1
        raise web.HTTPNotFound() from None
    if state.latency:
        await asyncio.sleep(state.latency)
    state.counts["requests"] += 1
    etag = f'"{feed}-{state.versions[feed]}"'
    if state.mode == "identical":
        state.counts["200"] += 1
        return web.Response(
            body=state.body(feed), content_type=_content_type(feed), charset="utf-8"
        )
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        state.counts["conditional"] += 1
        if etag in (tag.strip() for tag in if_none_match.split(",")):
            state.counts["304"] += 1
            return web.Response(status=304, headers={"ETag": etag})
    state.counts["200"] += 1
    return web.Response(
        body=state.body(feed),
        content_type=_content_type(feed),
        charset="utf-8",
        headers={"ETag": etag},
    )


async def control(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    command = await request.json()
    for feed in command.get("bump", ()):
        state.versions[feed] += 1
        state.body(feed)  # build it now, outside the timed pass
    if "mode" in command:
        state.mode = str(command["mode"])
    if "latency" in command:
        state.latency = float(command["latency"])
    if command.get("reset"):
        state.counts.clear()
    return web.json_response(dict(state.counts))


def build(feeds: int, latency: float) -> web.Application:
    state = State(feeds=feeds, latency=latency, versions=[0] * feeds)
    for feed in range(feeds):
        state.body(feed)
    app = web.Application()
    app[_STATE] = state
    app.router.add_get("/feeds/{n}.xml", serve_feed)
    app.router.add_post("/_control", control)
    return app


async def _main(feeds: int, latency: float) -> None:
    app = build(feeds, latency)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"host": HOST, "port": port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class Origin:
    """The server process, seen from the benchmark: ``with Origin(feeds) as origin``."""

    def __init__(self, feeds: int, latency: float = 0.2) -> None:
        self.feeds = feeds
        self.latency = latency
        self.process: subprocess.Popen[str] | None = None
        self.base = ""
        # No proxies, whatever the environment says: only 127.0.0.2 is ever contacted.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Self:
        root = Path(__file__).resolve().parent.parent
        command = [sys.executable, "-m", "bench.feedserver", "--feeds", str(self.feeds)]
        command += ["--latency", str(self.latency)]
        self.process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark feed server did not start")
        address = json.loads(line)
        self.base = f"http://{address['host']}:{address['port']}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, feed: int) -> str:
        return self.base + corpus.feed_path(feed)

    def control(self, **command: object) -> dict[str, int]:
        request = urllib.request.Request(
            self.base + "/_control",
            data=json.dumps(command).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(request, timeout=120) as response:
            counts: dict[str, int] = json.loads(response.read())
        return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args.feeds, args.latency))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
