"""One error tree for qasid. Every error names the thing it is about."""

from __future__ import annotations


class QasidError(Exception):
    """Root of every error qasid raises on purpose."""


class ConfigError(QasidError):
    """A setting is missing or wrong. The message names the key, the value and the source."""

    def __init__(self, key: str, message: str, source: str = "", value: object = None) -> None:
        self.key = key
        self.source = source
        self.value = value
        where = f" (from {source})" if source else ""
        shown = f" = {value!r}" if value is not None else ""
        super().__init__(f"{key}{shown}{where}: {message}")


class FeedError(QasidError):
    """Fetching or parsing one feed failed. ``outcome`` is a FeedOutcome value."""

    def __init__(
        self,
        url: str,
        message: str,
        outcome: str = "error",
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.message = message
        self.outcome = outcome
        self.http_status = http_status
        self.retry_after = retry_after
        super().__init__(f"{url}: {message}")


class BlockedAddressError(FeedError):
    """The URL, or an address it resolved or redirected to, is not allowed (SSRF guard)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, message, outcome="blocked")


class FeedURLError(QasidError):
    """A feed URL is not acceptable (scheme, shape) before any connection is tried."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"{url!r}: {message}")


class OPMLError(QasidError):
    """An OPML document could not be read."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class StorageError(QasidError):
    """The store could not do what was asked (connection, migration, constraint)."""


class QueryError(QasidError):
    """A watchlist query cannot be parsed. ``column`` is 1-based; ``expected`` says what
    would have fitted there."""

    def __init__(self, query: str, column: int, message: str, expected: str = "") -> None:
        self.query = query
        self.column = column
        self.expected = expected
        self.message = message
        super().__init__(f"{message} at column {column}")
