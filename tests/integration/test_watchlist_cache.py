"""The compiled watchlist engine kept on disk between jobs (pipeline/adapters/watchlist_cache):
a loaded and updated engine answers as one built from the texts does, and any problem with
the file means a rebuild, never a failed job."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.adapters import watchlist_cache
from pipeline.core.watchlists import WatchlistIndex
from pipeline.rules import load_aliases
from pipeline.settings import PROJECT_ROOT

ALIASES_PATH = PROJECT_ROOT / "config" / "aliases.toml"
ITEMS = [
    (1, "Imran Khan meets US envoy on IMF talks", "Islamabad hopes for a new loan."),
    (2, "Sanctions on Iran pipeline worry Islamabad", "Gas imports face US sanctions."),
    (3, "CPEC power plants: China presses for payment", "The circular debt grows."),
    (4, "Pakistan army chief visits Washington", "General Munir met officials."),
    (5, "Floods in Sindh", "Climate finance is discussed in Geneva with the IMF."),
]
FIRST = {
    10: "imran khan",
    11: "sanctions AND iran",
    12: "title:cpec OR china",
    13: '"army chief" NEAR/5 washington',
    14: "imf -floods",
    15: "imran khan",  # the same text as 10: one query, two watchlists
}


def answers(index: WatchlistIndex[int]) -> dict[int, tuple[int, ...]]:
    return dict(index.items_by_watchlist(ITEMS).items())


def fresh(queries: dict[int, str]) -> dict[int, tuple[int, ...]]:
    return answers(WatchlistIndex(queries.items(), aliases=load_aliases(ALIASES_PATH)))


def load(path: Path, queries: dict[int, str]) -> WatchlistIndex[int]:
    return watchlist_cache.load_index(path, queries, load_aliases(ALIASES_PATH), ALIASES_PATH)


def test_the_engine_is_written_then_read_back_with_the_same_answers(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "engine.pickle"
    built = load(path, FIRST)
    assert path.exists()
    assert (
        answers(built)
        == fresh(FIRST)
        == {10: (1,), 11: (2,), 12: (3,), 13: (4,), 14: (1,), 15: (1,)}
    )
    stamp = path.stat().st_mtime_ns
    loaded = load(path, FIRST)
    assert loaded is not built
    assert answers(loaded) == fresh(FIRST)
    assert path.stat().st_mtime_ns == stamp  # nothing changed: not written again


def test_removed_added_and_edited_watchlists_are_applied_to_the_cached_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "engine.pickle"
    load(path, FIRST)
    second = dict(FIRST)
    del second[11], second[15]  # removed (15 shared its text with 10)
    second[12] = "cpec AND payment"  # edited
    second[20] = "climate finance"  # added
    second[21] = "sanctions AND iran"  # added, with a text the engine dropped
    caplog.set_level(logging.INFO, logger="pipeline.adapters.watchlist_cache")
    updated = load(path, second)
    assert answers(updated) == fresh(second)
    assert "2 removed, 3 added or changed" in caplog.text
    assert answers(load(path, second)) == fresh(second)  # and written as updated
    assert sorted(updated.watchlists()) == sorted(second)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other key", "other object"])
def test_a_damaged_or_foreign_cache_is_rebuilt_from_the_texts(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    path = tmp_path / "engine.pickle"
    load(path, FIRST)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif damage == "other key":  # other engine code or aliases
        monkeypatch.setattr(watchlist_cache, "CACHE_FORMAT", watchlist_cache.CACHE_FORMAT + 1)
    else:
        with path.open("wb") as handle:
            pickle.dump(watchlist_cache.cache_key(ALIASES_PATH), handle)
            pickle.dump(({10: "imran khan"}, ["not", "an", "engine"]), handle)
    assert answers(load(path, FIRST)) == fresh(FIRST)
    assert answers(load(path, FIRST)) == fresh(FIRST)  # the rebuilt one was written


def test_an_unwritable_cache_leaves_the_job_its_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder would be")
    path = blocker / "engine.pickle"
    assert answers(load(path, FIRST)) == fresh(FIRST)
    assert "cannot write the watchlist engine cache" in caplog.text
    assert list(tmp_path.iterdir()) == [blocker]  # no temporary file left behind
