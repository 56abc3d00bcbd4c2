"""Readers' hits trimmed in bulk (``HitTable.reader_hits``) give the digests of all hits."""

from __future__ import annotations

from array import array
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.digest import ReaderDigests
from pipeline.core.reader_hits import HitTable
from tests.unit.test_digest import ALL, END, START, THEMES, WORDS, item, request


def table_of(planner: ReaderDigests, runs: list[list[int]], item_ids: list[str]) -> HitTable:
    places, offsets = array("I"), array("L", [0])
    for run in runs:
        places.extend(run)
        offsets.append(len(places))
    return HitTable.of(places, offsets, item_ids, *planner.static_order(item_ids))


def all_hits(
    watchlists: list[tuple[int, str]], runs: list[list[int]], item_ids: list[str]
) -> dict[str, list[str]]:
    """What a reader's watchlists matched, every hit (watchlist order, then run order)."""
    hits: dict[str, list[str]] = {}
    for run, query in watchlists:
        for place in runs[run]:
            hits.setdefault(item_ids[place], []).append(query)
    return hits


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
            st.lists(st.sampled_from(ALL), min_size=1, max_size=2),
            st.booleans(),
            st.integers(0, 40),
        ),
        min_size=10,
        max_size=40,
    ),
    st.lists(st.lists(st.integers(0, 44), max_size=30, unique=True).map(sorted), max_size=8),
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(ALL), min_size=1, max_size=2),
            st.lists(st.integers(0, 7), max_size=4),
            st.integers(0, 3),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_trimmed_hits_build_the_digests_of_all_hits(
    stories: list[tuple[list[str], list[str], bool, int]],
    runs: list[list[int]],
    readers: list[tuple[list[str], list[int], int, int]],
) -> None:
    candidates = [
        item(
            n,
            # most are stories of their own (hits on those are what is trimmed)
            title=" ".join(words) + (f" own{n} words{n}" if n % 4 else ""),
            themes=tuple(dict.fromkeys(themes)),
            scores={t: 1.0 + (n * 7 + len(t)) % 9 for t in themes},
            evidence={t: [words[0]] for t in themes},
            relevant=relevant,
            us_link=n % 3 == 0,
            published=END - timedelta(hours=hours % 30),  # some outside the period
        )
        for n, (words, themes, relevant, hours) in enumerate(stories)
    ]
    # matched items: the candidates and a few ids of items no story holds
    item_ids = [f"i{n}" for n in range(45)]
    runs = [[p for p in run if p < len(candidates) + 5] for run in runs]
    planner = ReaderDigests(candidates, THEMES, START, END)
    table = table_of(planner, runs, item_ids)
    asked = []
    for chosen, lists, top, most in readers:
        watchlists = [(run, f"q{run}") for run in lists if run < len(runs)]
        req = request(themes=chosen, top_stories=top, max_watchlist_stories=most)
        asked.append((req, watchlists))
    keep = max(req.top_stories + req.max_watchlist_stories for req, _ in asked)
    trimmed = table.reader_hits(
        [(watchlists, planner.theme_mask(req.themes)) for req, watchlists in asked], keep
    )
    for (req, watchlists), (hits, left_out) in zip(asked, trimmed, strict=True):
        every = all_hits(watchlists, runs, item_ids)
        assert set(hits) <= set(every)
        assert all(hits[i] == every[i] for i in hits)  # queries as matched, in order
        assert planner.build(req, hits, left_out) == planner.build(req, every)


def test_hits_past_the_few_a_digest_can_show_are_only_counted() -> None:
    """Twelve one-item stories outside the reader's themes, one inside: the reader's hits
    keep the inside one and the first ``keep`` outside ones in rank order, and count
    the rest; items no story holds are left out."""
    candidates = [
        item(n, themes=("india",), scores={"india": 3.0}, published=END - timedelta(hours=n + 1))
        for n in range(12)
    ] + [item(12, themes=("economy",), scores={"economy": 5.0})]
    planner = ReaderDigests(candidates, THEMES, START, END)
    item_ids = [f"i{n}" for n in range(14)]  # i13: not a story of the period
    runs = [list(range(14)), [12, 13]]
    table = table_of(planner, runs, item_ids)
    [(hits, left_out)] = table.reader_hits(
        [([(0, "first"), (1, "second")], planner.theme_mask(["economy"]))], 4
    )
    # the most recent rank first (nothing else differs): i0, i1, i2, i3
    assert hits == {
        "i0": ["first"],
        "i1": ["first"],
        "i2": ["first"],
        "i3": ["first"],
        "i12": ["first", "second"],
    }
    assert left_out == 8
    req = request(themes=["economy"], top_stories=1, max_watchlist_stories=3)
    every = all_hits([(0, "first"), (1, "second")], runs, item_ids)
    built = planner.build(req, hits, left_out)
    assert built == planner.build(req, every)
    assert [e.item.id for e in built.top] == ["i12"]
    assert [e.item.id for e in built.watchlist_entries] == ["i0", "i1", "i2"]
    assert built.watchlist_line.startswith("The 3 highest-ranked of 12 stories this day")
