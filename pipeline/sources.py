"""The configured feed list: config/feeds.toml (or an OPML file) read into FeedSources.

Every entry is checked before any network use, and a bad one stops start-up with a
ConfigError naming the file, the entry (its position and URL) and the key at fault, so an
editor can fix it without guessing.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.adapters.opml import read_opml
from pipeline.core.errors import ConfigError, FeedURLError, OPMLError
from pipeline.core.models import FeedSource
from pipeline.core.urls import check_feed_url

KINDS = frozenset(
    {
        "newspaper",
        "wire",
        "broadcaster",
        "government",
        "state_media",
        "search",
        "magazine",
        "think_tank",
    }
)
MAX_INTERVAL_MINUTES = 7 * 24 * 60  # a feed polled less than weekly is a mistake, not a plan
OPML_SUFFIXES = frozenset({".opml", ".xml"})

_STRING_KEYS = ("url", "title", "language", "country", "kind", "site_url")
_KEYS = frozenset({*_STRING_KEYS, "interval_minutes"})
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # BCP 47 shape: en, ur, en-GB
_COUNTRY = re.compile(r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2


def load_feed_sources(path: Path, default_interval: int) -> list[FeedSource]:
    """Read and validate the feed list at ``path``: TOML, or OPML when it ends in .opml/.xml.

    Entries without ``interval_minutes`` get ``default_interval``. Raises ConfigError when
    the file is missing or unreadable, or any entry is wrong (unknown key or kind, missing or
    unacceptable URL, duplicate URL, bad interval, language or country).
    """
    origin = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ConfigError("feeds.file", "file not found", origin) from error
    except OSError as error:
        raise ConfigError("feeds.file", f"cannot be read: {error.strerror}", origin) from error
    if path.suffix.lower() in OPML_SUFFIXES:
        try:
            sources = read_opml(data, origin, default_interval=default_interval)
        except OPMLError as error:
            raise ConfigError("feeds.file", str(error)) from error
        return validate_feed_sources(sources, origin)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError("feeds.file", "not UTF-8 text", origin) from error
    return read_feeds_toml(text, origin, default_interval)


def read_feeds_toml(text: str, origin: str, default_interval: int) -> list[FeedSource]:
    """Parse feeds.toml text (``[[feed]]`` tables) and validate it; ``origin`` names it in
    errors. Used directly by callers that rewrite the text first (the demo fills in its port).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("feeds", f"not valid TOML: {error}", origin) from error
    for key in document:
        if key != "feed":
            raise ConfigError(key, "unknown key; feeds are [[feed]] tables", origin)
    entries = document.get("feed", [])
    if not isinstance(entries, list):
        raise ConfigError("feed", "must be an array of tables ([[feed]])", origin)
    sources = [
        _entry_to_source(entry, index, origin, default_interval)
        for index, entry in enumerate(entries)
    ]
    return validate_feed_sources(sources, origin)


def validate_feed_sources(sources: Iterable[FeedSource], origin: str) -> list[FeedSource]:
    """Check every source's values and that no URL appears twice; return them with each URL
    in the form ``check_feed_url`` gives. Raises ConfigError naming the entry and key."""
    checked: list[FeedSource] = []
    first_seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        where = f"feed[{index}]"
        url = _checked_url(source.url, f"{where}.url", origin)
        if url in first_seen:
            raise ConfigError(
                f"{where}.url", f"duplicate of feed[{first_seen[url]}]", origin, source.url
            )
        first_seen[url] = index
        label = f"{where}.{{}} ({url})"
        if source.kind and source.kind not in KINDS:
            raise ConfigError(
                label.format("kind"),
                f"unknown kind; expected one of {', '.join(sorted(KINDS))}",
                origin,
                source.kind,
            )
        if not _LANGUAGE.match(source.language):
            raise ConfigError(
                label.format("language"),
                "expected a language code such as en or ur",
                origin,
                source.language,
            )
        if source.country and not _COUNTRY.match(source.country):
            raise ConfigError(
                label.format("country"),
                "expected an ISO 3166 alpha-2 code such as PK or US",
                origin,
                source.country,
            )
        if not 1 <= source.interval_minutes <= MAX_INTERVAL_MINUTES:
            raise ConfigError(
                label.format("interval_minutes"),
                f"must be between 1 and {MAX_INTERVAL_MINUTES} minutes",
                origin,
                source.interval_minutes,
            )
        if source.site_url and not source.site_url.lower().startswith(("http://", "https://")):
            raise ConfigError(
                label.format("site_url"), "must be an http or https URL", origin, source.site_url
            )
        checked.append(source if url == source.url else dataclasses.replace(source, url=url))
    return checked


def source_lookup(sources: Iterable[FeedSource]) -> dict[str, FeedSource]:
    """Sources keyed by URL, for finding what the configuration says about a feed."""
    return {source.url: source for source in sources}


def _entry_to_source(entry: object, index: int, origin: str, default_interval: int) -> FeedSource:
    where = f"feed[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(where, "must be a table", origin)
    url = entry.get("url")
    if url is None or (isinstance(url, str) and not url.strip()):
        raise ConfigError(f"{where}.url", "missing; every feed needs a url", origin)
    label = f"{where}.{{}} ({url})"
    for key in entry:
        if key not in _KEYS:
            raise ConfigError(
                label.format(key), f"unknown key; expected {', '.join(sorted(_KEYS))}", origin
            )
    values: dict[str, Any] = {}
    for key in _STRING_KEYS:
        if key in entry:
            value = entry[key]
            if not isinstance(value, str):
                raise ConfigError(label.format(key), "must be a string", origin, value)
            values[key] = value.strip()
    interval = entry.get("interval_minutes", default_interval)
    # TOML booleans are not numbers here, although Python's bool is an int.
    if not isinstance(interval, int) or isinstance(interval, bool):
        raise ConfigError(
            label.format("interval_minutes"), "must be a whole number of minutes", origin, interval
        )
    values["interval_minutes"] = interval
    return FeedSource(**values)


def _checked_url(url: str, key: str, origin: str) -> str:
    if not url.strip():
        raise ConfigError(key, "missing; every feed needs a url", origin)
    try:
        return check_feed_url(url.strip())
    except FeedURLError as error:
        raise ConfigError(key, str(error), origin) from error
