"""The compiled watchlist engine kept on disk between jobs.

Every digest job matched the period's items against every watchlist, and built the engine
(``WatchlistIndex``) for it from the query texts: for 500,000 watchlists (100,000 readers
with 5 each) about 40 s of CPU, mostly parsing texts that had not changed since the day
before. The engine is now kept in a file under ``var/`` together with the watchlist texts
it was built from; a job loads it (~3 s at that size) and applies what changed since:
watchlists removed, added or edited (``remove_watchlist``, ``add_watchlists``). Matching
results do not depend on the engine's history (its learned item frequencies only steer
which checks run first), so a loaded and updated engine answers as a fresh one does
(tests/integration/test_watchlist_cache.py).

The file is a pickle, written atomically by this process only (temporary file, then
rename) in the installation's own ``var/`` directory; it is read only when its header
names this format, the exact source of the engine's modules and the aliases file it was
built with; anything else (no file, another version, a damaged file) is logged and the
engine is built from the texts as before, and the file written again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import native, rules
from pipeline.core import matcher, query, text, watchlists
from pipeline.core.collector import gc_paused
from pipeline.core.watchlists import WatchlistIndex

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Modules whose code decides what a pickled engine holds and means.
_ENGINE_MODULES = (watchlists, query, matcher, text, rules)


def cache_key(aliases_path: Path) -> str:
    """What a cached engine must have been built with: this format, the engine's source
    and the aliases file."""
    digest = hashlib.sha256(f"qasid-watchlist-cache-{CACHE_FORMAT}".encode())
    for module in _ENGINE_MODULES:  # the sources, also of a module compiled by mypyc
        digest.update(native.source_path(module.__name__).read_bytes())
    digest.update(aliases_path.read_bytes() if aliases_path.exists() else b"")
    return digest.hexdigest()


def load_index(
    path: Path,
    queries: Mapping[int, str],
    aliases: Mapping[str, Any],
    aliases_path: Path,
) -> WatchlistIndex[int]:
    """The engine for ``queries`` (watchlist id → query text): the cached one brought up
    to date, or a new one. The cache is rewritten when anything changed."""
    return up_to_date(path, aliases_path, read_cached(path, aliases_path), queries, aliases)


Cached = tuple[WatchlistIndex[int], dict[int, str]]  # the engine, the texts it was built from


def read_cached(path: Path, aliases_path: Path) -> Cached | None:
    """The engine kept in ``path`` and the watchlist texts it was built from, if the file
    is there and was written by this code with these aliases (the slow part: unpickling)."""
    return _read(path, cache_key(aliases_path))


def up_to_date(
    path: Path,
    aliases_path: Path,
    cached: Cached | None,
    queries: Mapping[int, str],
    aliases: Mapping[str, Any],
) -> WatchlistIndex[int]:
    """``read_cached``'s engine with what changed since applied (or a new one when there
    was none), for ``queries``; the file is rewritten when anything changed (its key,
    which ``read_cached`` checked, is made again only then)."""
    if cached is None:
        index: WatchlistIndex[int] = WatchlistIndex(queries.items(), aliases=aliases)
        _write(path, cache_key(aliases_path), dict(queries), index)
        return index
    index, texts = cached
    removed = [wid for wid in texts if wid not in queries]
    changed = [(wid, q) for wid, q in queries.items() if texts.get(wid) != q]
    for wid in removed:
        index.remove_watchlist(wid)
    if changed:
        index.add_watchlists(changed)
    if removed or changed:
        log.info(
            "watchlist engine loaded from %s: %d removed, %d added or changed",
            path,
            len(removed),
            len(changed),
        )
        _write(path, cache_key(aliases_path), dict(queries), index)
    return index


def _read(path: Path, key: str) -> tuple[WatchlistIndex[int], dict[int, str]] | None:
    try:
        with path.open("rb") as handle, gc_paused():
            header = pickle.load(handle)
            if header != key:
                log.info("watchlist engine cache %s is for other code or aliases", path)
                return None
            texts, index = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as error:  # a damaged or foreign file: build anew
        log.warning("watchlist engine cache %s unreadable (%s); rebuilding", path, error)
        return None
    if not isinstance(index, WatchlistIndex) or not isinstance(texts, dict):
        log.warning("watchlist engine cache %s holds something else; rebuilding", path)
        return None
    return index, texts


def _write(path: Path, key: str, texts: dict[int, str], index: WatchlistIndex[int]) -> None:
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, delete=False) as handle,
            gc_paused(),
        ):
            temporary = Path(handle.name)
            pickle.dump(key, handle, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump((texts, index), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    except OSError as error:  # the job goes on without the cache
        log.warning("cannot write the watchlist engine cache %s: %s", path, error)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
