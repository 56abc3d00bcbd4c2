"""Keep link tokens out of logs.

Confirm, manage, unsubscribe and "view in browser" links carry a signed token in their path,
and whoever holds one can act for its reader. A server's access log writes every request
line, so without this each reader's links would sit in the logs (and in whatever ships
them elsewhere). ``install`` puts a filter on the loggers that write request lines or URLs:

- ``gunicorn.access`` (the Procfile's server, any ``--access-logformat``: every atom, from
  ``%(r)s`` and ``%(U)s`` to ``%({raw_uri}e)s`` and the Referer, is redacted),
- ``gunicorn.error`` ("Error handling request /manage/..."),
- ``werkzeug`` (``qasid serve`` and ``qasid demo``),
- the Flask app's own logger ("Exception on /manage/... [POST]").

The token segment is replaced with ``TOKEN_MARK``: ``/manage/[token]/preferences``. Which
segments are tokens comes from the routes (a ``<token>`` argument, as in ``security``); a
test checks every such route is covered. A ``token=`` query value is redacted too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

from flask import Flask

TOKEN_MARK = "[token]"

# A token path segment: after /confirm/, /manage/, /unsubscribe/ or /editions/<id>/, up to
# the next "/", "?", "#", space or quote (percent-encoded forms included: the segment ends
# only at those characters).
_TOKEN_SEGMENT = re.compile(
    r"(?P<prefix>/(?:confirm|manage|unsubscribe|editions/[0-9]+)/)(?P<token>[^/?#\s\"']+)"
)
_TOKEN_QUERY = re.compile(r"(?P<prefix>(?:^|[?&;])token=)(?P<token>[^&;#\s\"']+)", re.IGNORECASE)

LOGGERS = ("gunicorn.access", "gunicorn.error", "werkzeug")


def redact(text: str) -> str:
    """``text`` with every link token in it replaced by ``TOKEN_MARK``."""
    if "/" not in text and "=" not in text:
        return text
    text = _TOKEN_SEGMENT.sub(rf"\g<prefix>{TOKEN_MARK}", text)
    return _TOKEN_QUERY.sub(rf"\g<prefix>{TOKEN_MARK}", text)


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Redacts link tokens in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, MutableMapping):
            # gunicorn's access atoms: changed in place, so the mapping keeps its own rules
            # (case-insensitive keys, "-" for a missing atom).
            for key, value in list(args.items()):
                if isinstance(value, str):
                    args[key] = redact(value)
        elif isinstance(args, tuple):
            record.args = tuple(_redact_value(value) for value in args)
        return True


_FILTER = RedactTokens()


def install(flask: Flask | None = None) -> None:
    """Put the filter on the loggers that write URLs (idempotent)."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    if flask is not None:
        loggers.append(flask.logger)
    for logger in loggers:
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(_FILTER)
