"""Readers' watchlist hits, a chunk of readers at a time, with array operations.

A reader's hits are the items their watchlists matched: item id → the queries that
matched it, in watchlist order (what ``ReaderDigests.build`` takes). Most of a reader's
hits (about 60 of 90 for the benchmark's readers of 5 watchlists) are stories of one item
that holds none of the reader's chosen themes. Such a story is in no theme section (only
among the top stories or in the "your watchlists" list), and its rank holds no theme: its
place in rank order is the same for every reader (``HitTable.static``). So only the first
few of them in that order can be shown (as many as the top stories and the list take);
the others only count towards the list's "N matched" line. They are found here for the
whole chunk at once and left out of the readers' hit maps, only counted (``left_out``), so
that the per-reader work (in Python) grows with what a digest can show rather than with
what matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# A reader: their matched watchlists as (run of item places, query) in watchlist order,
# and their chosen themes as a mask (``ReaderDigests``' bits).
Reader = tuple[Sequence[tuple[int, str]], int]


@dataclass(frozen=True)
class HitTable:
    """A period's watchlist matches as runs of item places, and per item place what the
    trimming needs. ``places``: the runs' item places end to end; ``offsets``: where each
    run starts (and the last ends); ``item_ids``: by place; ``known``: the place's item
    is one of the period's stories; ``masks``: its known themes as a mask; ``static``:
    for an item that is a story on its own, its place in the order of such stories'
    ranks when no theme of theirs is chosen (ascending: best first), else -1."""

    places: np.ndarray[Any, Any]
    offsets: np.ndarray[Any, Any]
    item_ids: Sequence[str]
    known: np.ndarray[Any, Any]
    masks: np.ndarray[Any, Any]
    static: np.ndarray[Any, Any]

    @classmethod
    def of(
        cls,
        places: Any,
        offsets: Any,
        item_ids: Sequence[str],
        known: Sequence[bool],
        masks: Sequence[int],
        static: Sequence[int],
    ) -> HitTable:
        """From buffers of unsigned ints (``array.array``: shared, not copied) and lists."""
        return cls(
            np.frombuffer(places, dtype=np.dtype(f"u{places.itemsize}")),
            np.asarray(offsets, dtype=np.int64),
            item_ids,
            np.asarray(known, dtype=bool),
            np.asarray(masks, dtype=np.int64),
            np.asarray(static, dtype=np.int64),
        )

    def reader_hits(
        self, readers: Sequence[Reader], keep: int
    ) -> list[tuple[dict[str, list[str]], int]]:
        """Per reader: item id → the queries that matched it (watchlist order), less the
        hits on stories of one item outside the reader's themes past the first ``keep`` of
        them in rank order; and how many were left out. Items not among the period's
        stories are left out too (a digest has no place for them), uncounted."""
        pairs = [(run, r, query) for r, (runs, _) in enumerate(readers) for run, query in runs]
        if not pairs:
            return [({}, 0) for _ in readers]
        run_of_pair = np.fromiter((run for run, _, _ in pairs), np.int64, len(pairs))
        reader_of_pair = np.fromiter((r for _, r, _ in pairs), np.int64, len(pairs))
        theme_masks = np.fromiter((mask for _, mask in readers), np.int64, len(readers))
        starts = self.offsets[run_of_pair]
        lengths = self.offsets[run_of_pair + 1] - starts
        ends = np.cumsum(lengths)
        pair_of_hit = np.repeat(np.arange(len(pairs)), lengths)
        # each hit's position in ``places``: its run's start plus its offset in the run
        at = np.arange(int(ends[-1])) + np.repeat(starts - (ends - lengths), lengths)
        place = self.places[at].astype(np.int64)
        reader = reader_of_pair[pair_of_hit]
        static = self.static[place]
        outside = (static >= 0) & ((self.masks[place] & theme_masks[reader]) == 0)
        # Those hits by reader, then rank (an item hit by several watchlists once): the
        # first ``keep`` of each reader's are kept.
        span = max(int(self.static.max()), 0) + 1
        keys = reader[outside] * span + static[outside]
        ordered = _distinct(keys)
        owner = ordered // span
        past = np.arange(len(ordered)) - np.searchsorted(owner, owner) >= keep
        left_out = np.bincount(owner[past], minlength=len(readers)).tolist()
        wanted = self.known[place]
        wanted[outside] = ~_among(keys, ordered[past])
        chosen = np.flatnonzero(wanted)
        # hits stay in watchlist order and run order, so queries keep theirs
        bounds = np.searchsorted(reader[chosen], np.arange(len(readers) + 1)).tolist()
        chosen_places = place[chosen].tolist()
        chosen_pairs = pair_of_hit[chosen].tolist()
        item_ids = self.item_ids
        out: list[tuple[dict[str, list[str]], int]] = []
        for r in range(len(readers)):
            hits: dict[str, list[str]] = {}
            for p, pair in zip(
                chosen_places[bounds[r] : bounds[r + 1]],
                chosen_pairs[bounds[r] : bounds[r + 1]],
                strict=True,
            ):
                item_id = item_ids[p]
                listed = hits.get(item_id)
                if listed is None:
                    hits[item_id] = [pairs[pair][2]]
                else:
                    listed.append(pairs[pair][2])
            out.append((hits, left_out[r]))
        return out


def _distinct(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``np.unique(values)`` (sorted), by a sort: several times faster here than numpy's
    own for tens of thousands of int64s."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def _among(values: np.ndarray[Any, Any], ordered: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``np.isin(values, ordered)`` for ``ordered`` sorted and distinct."""
    if not len(ordered):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return np.asarray(ordered[at] == values)
