"""Digest building: selection, ranking, near-duplicates, sections, subject."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.digest import (
    MAX_WATCHLIST_STORIES,
    DigestCandidate,
    DigestEntry,
    DigestJSON,
    DigestRequest,
    ThemeInfo,
    build_digest,
    cluster,
    digest_as_dict,
    entry_as_dict,
    expand_edition,
    part_keys,
    rank_parts,
    snippet,
)

END = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
START = END - timedelta(days=1)
THEMES = [
    ThemeInfo("counterterrorism", "Counterterrorism", context="Why CT matters."),
    ThemeInfo("sanctions", "Sanctions"),
    ThemeInfo("india", "India"),
    ThemeInfo("economy", "The economy"),
]
ALL = [t.id for t in THEMES]
WORDS = "apple banana cherry damson elder fig grape hazel iris juniper kiwi lime mango".split()


def item(n: int, **changes: object) -> DigestCandidate:
    base = DigestCandidate(
        id=f"i{n}",
        title=f"Story {n}: {WORDS[n % len(WORDS)]} {WORDS[(n * 7 + 3) % len(WORDS)]}",
        link=f"https://news.example/{n}",
        source="Dawn",
        published=END - timedelta(hours=n % 20 + 1),
        summary_text=f"Body text {n} distinct words alpha{n} beta{n} gamma{n}.",
        themes=("economy",),
        scores={"economy": 4.0},
        evidence={"economy": ["IMF"]},
        us_link=False,
        relevant=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def request(**changes: object) -> DigestRequest:
    return replace(DigestRequest(themes=ALL, period_start=START, period_end=END), **changes)  # type: ignore[arg-type]


def test_top_stories_lead_and_sections_follow_the_editorial_order() -> None:
    items = [
        item(1, themes=("economy",), scores={"economy": 5.0}),
        item(2, themes=("india",), scores={"india": 9.0}, evidence={"india": ["LoC"]}),
        item(3, themes=("counterterrorism",), scores={"counterterrorism": 4.0}),
        item(4, themes=("india",), scores={"india": 4.0}),
        item(5, themes=("economy",), scores={"economy": 3.6}),
    ]
    digest = build_digest(items, request(top_stories=1), THEMES)
    assert [e.item.id for e in digest.top] == ["i2"]
    assert [s.theme.id for s in digest.sections] == ["counterterrorism", "india", "economy"]
    assert digest.sections[0].theme.context == "Why CT matters."
    assert sorted(digest.item_ids) == ["i1", "i2", "i3", "i4", "i5"]


def test_us_involvement_and_a_headline_hit_raise_the_rank() -> None:
    plain = item(1)
    with_us = replace(plain, us_link=True)
    titled = replace(plain, title="IMF mission arrives in Islamabad")
    parts = [rank_parts(c, ALL, START, END) for c in (plain, with_us, titled)]
    assert parts[1]["us"] > parts[0]["us"]
    assert parts[2]["title"] > parts[0]["title"]


def test_an_item_without_a_date_earns_no_recency_and_ranks_below_a_dated_one() -> None:
    # Its first-seen time stands in for the date (shown as "first seen"), but says little
    # about when it was published: a new feed's backlog is all first seen at once.
    dated = item(1, published=END - timedelta(minutes=5))
    undated = replace(dated, id="i2", title="Story 2: other words", undated=True)
    assert rank_parts(dated, ALL, START, END)["recency"] > 1.9
    assert rank_parts(undated, ALL, START, END)["recency"] == 0.0
    digest = build_digest([undated, dated], request(top_stories=1), THEMES)
    assert [e.item.id for e in digest.top] == ["i1"]


def test_a_storys_reasons_name_its_themes_as_readers_know_them() -> None:
    story = item(1, watchlists=("IMF",), evidence={"economy": ["IMF", "IMF", "loan"]})
    digest = build_digest([story], request(), THEMES)
    assert digest.top[0].reasons == ("watchlist: IMF", "The economy: IMF, loan")
    from pipeline.core.digest import ReaderDigests

    planner = ReaderDigests([replace(story, watchlists=())], THEMES, START, END)
    assert planner.build(request(), {"i1": ["IMF"]}) == digest


def test_the_same_story_from_several_outlets_appears_once_naming_the_others() -> None:
    story = "Pakistan and IMF reach staff-level agreement on loan programme"
    items = [
        item(1, title=story, source="Dawn", scores={"economy": 6.0}),
        item(2, title=story + " - report", source="Reuters", link="https://r.example/x"),
        item(
            3, title="IMF and Pakistan reach staff-level agreement on loan programme", source="Geo"
        ),
    ]
    digest = build_digest(items, request(), THEMES)
    [entry] = [*digest.top, *(e for s in digest.sections for e in s.entries)]
    assert entry.item.source == "Dawn"
    assert entry.also == ("Reuters", "Geo")
    assert digest.item_ids == ("i1",)


def test_different_stories_are_not_merged() -> None:
    a = item(1, title="Senate passes budget with new taxes on retailers")
    b = item(2, title="Army chief meets CENTCOM commander in Rawalpindi")
    assert len(cluster([a, b])) == 2


def test_items_outside_the_period_or_not_relevant_are_left_out() -> None:
    items = [
        item(1, published=START - timedelta(minutes=1)),
        item(2, published=END),  # the end is exclusive
        item(3, relevant=False),
        item(4, themes=("gulf",), scores={"gulf": 9.0}),  # a theme the reader did not choose
    ]
    assert build_digest(items, request(), THEMES).empty


def test_watchlist_matches_come_in_even_without_a_chosen_theme() -> None:
    hit = item(1, relevant=False, themes=(), scores={}, watchlists=('F-16 OR "fighter jets"',))
    digest = build_digest([hit, item(2)], request(top_stories=0, themes=["economy"]), THEMES)
    assert [e.item.id for e in digest.watchlist_entries] == ["i1"]
    assert digest.watchlist_entries[0].reasons == ('watchlist: F-16 OR "fighter jets"',)


def test_the_watchlist_section_shows_its_best_stories_and_says_how_many_matched() -> None:
    hits = [
        item(n, relevant=False, themes=(), scores={}, watchlists=("IMF",), us_link=n % 3 == 0)
        for n in range(12)  # distinct headlines: 12 stories
    ]
    digest = build_digest(hits, request(top_stories=0, themes=["economy"]), THEMES)
    ranks = sorted((e.rank for e in build_digest(hits, request(
        top_stories=0, themes=["economy"], max_watchlist_stories=99), THEMES).watchlist_entries),
        reverse=True)  # fmt: skip
    assert len(digest.watchlist_entries) == MAX_WATCHLIST_STORIES == 10
    assert [e.rank for e in digest.watchlist_entries] == ranks[:10]
    assert digest.item_ids == tuple(e.item.id for e in digest.watchlist_entries)
    assert digest.watchlist_line == (
        "The 10 highest-ranked of 12 stories this day that matched your watchlists "
        "and none of your themes."
    )
    assert digest_as_dict(digest)["watchlist_line"] == digest.watchlist_line
    few = build_digest(hits[:10], request(top_stories=0, themes=["economy"]), THEMES)
    assert len(few.watchlist_entries) == 10 and few.watchlist_line == ""


def test_volume_line_compares_with_the_previous_period() -> None:
    items = [item(n) for n in range(3)]
    up = build_digest(items, request(top_stories=0, previous_counts={"economy": 1}), THEMES)
    assert up.sections[0].volume_line == "3 stories this day, up from 1 in the day before."
    none_before = build_digest(items, request(top_stories=0, previous_counts={}), THEMES)
    assert "up from 0" in none_before.sections[0].volume_line
    unknown = build_digest(items, request(top_stories=0), THEMES)
    assert unknown.sections[0].volume_line == "3 stories this day."


def test_subject_names_the_lead_themes_and_the_date() -> None:
    items = [
        item(1, themes=("india",), scores={"india": 5.0}),
        item(
            2, themes=("india",), scores={"india": 5.0}, title="Kashmir LoC ceasefire holds again"
        ),
        item(3),
    ]
    digest = build_digest(items, request(label_date=date(2026, 11, 29)), THEMES)
    assert digest.subject.startswith("qasid, 29 Nov: ")
    assert "India" in digest.subject and "The economy" in digest.subject


def test_the_preheader_lists_the_top_titles_and_cuts_a_long_one_at_a_word() -> None:
    short = [item(n, title=f"Title {n}") for n in (1, 2)]
    digest = build_digest(short, request(top_stories=2), THEMES)
    assert digest.preheader in ("Title 1 · Title 2", "Title 2 · Title 1")
    words = " ".join(["word"] * 30)  # 149 characters each
    long = [item(n, title=f"{n} {words}", summary_text=f"text{n}") for n in (1, 2)]
    preheader = build_digest(long, request(top_stories=2), THEMES).preheader
    assert len(preheader) <= 200 and preheader.endswith("word…")


def test_snippet_keeps_whole_sentences_within_the_limit() -> None:
    text = "First sentence here. Second one is longer than the first. " + "x " * 200
    assert snippet(text, 60) == "First sentence here. Second one is longer than the first."
    assert snippet("word " * 100, 30).endswith("…")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # title family: equal families are near-duplicates
            st.sampled_from(ALL),
            st.floats(0, 15),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_a_digest_never_repeats_an_item(rows: list[tuple[int, str, float, bool]]) -> None:
    items = [
        item(
            n,
            title=f"Story family {family} about {theme} developments",
            themes=(theme,),
            scores={theme: score},
            us_link=us,
        )
        for n, (family, theme, score, us) in enumerate(rows)
    ]
    digest = build_digest(items, request(), THEMES)
    shown = [e.item.id for e in digest.top]
    shown += [e.item.id for s in digest.sections for e in s.entries]
    shown += [e.item.id for e in digest.watchlist_entries]
    assert len(shown) == len(set(shown))
    assert set(shown) == set(digest.item_ids)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            # up to 12 headline words: the pair (3+ words) and triple (5+ at 0.5) look-ups
            st.lists(st.sampled_from(WORDS), min_size=0, max_size=12),
            st.lists(st.sampled_from(WORDS), min_size=0, max_size=14),
            st.sampled_from(
                ["", "https://a.example/1", "https://a.example/2", "https://b.example"]
            ),
        ),
        max_size=30,
    ),
    st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.8, 1.0]),
)
def test_prefix_filtered_clustering_equals_the_full_scan(
    stories: list[tuple[list[str], list[str], str]], threshold: float
) -> None:
    from pipeline.core.digest import _cluster_scan, _signature

    candidates = [
        item(n, title=" ".join(title), summary_text=" ".join(body), link=link)
        for n, (title, body, link) in enumerate(stories)
    ]
    fast = cluster(candidates, threshold)
    slow = _cluster_scan(candidates, [_signature(c) for c in candidates], threshold)
    assert [[c.id for c in members] for members in fast] == [
        [c.id for c in members] for members in slow
    ]


def test_prefix_filtered_clustering_equals_the_full_scan_past_a_machine_word_of_clusters() -> None:
    # the look-ups' posting masks hold a bit per cluster: hundreds of clusters make them
    # integers of several machine words (a compiled module handles those apart)
    import random

    from pipeline.core.digest import _cluster_scan, _signature

    rng = random.Random(7)
    words = [f"{word}{n}" for word in WORDS for n in range(4)]  # 52 words
    candidates = [
        item(
            n,
            title=" ".join(rng.sample(words, rng.randint(3, 9))),
            summary_text=" ".join(rng.choices(words[:12], k=rng.randint(0, 14))),
        )
        for n in range(400)
    ]
    fast = cluster(candidates, 0.5)
    slow = _cluster_scan(candidates, [_signature(c) for c in candidates], 0.5)
    assert len(fast) > 100
    assert [[c.id for c in members] for members in fast] == [
        [c.id for c in members] for members in slow
    ]


def test_bit_places_are_the_set_bits_highest_first() -> None:
    from pipeline.core.digest import _bit_places

    assert _bit_places(0) == []
    assert _bit_places(1) == [0]
    assert _bit_places(0b1011) == [3, 1, 0]
    assert _bit_places(1 << 200 | 1 << 64 | 1 << 3) == [200, 64, 3]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
            st.lists(st.sampled_from(ALL), min_size=1, max_size=2),
            st.booleans(),
            st.sampled_from(["Dawn", "Geo", "Reuters"]),
            st.integers(0, 40),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(ALL), min_size=1, max_size=3),
            st.dictionaries(st.integers(0, 45), st.sampled_from(["q1", "q2", "q3"]), max_size=6),
            st.integers(0, 4),
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_reader_digests_equal_build_digest_over_the_day_stories(
    stories: list[tuple[list[str], list[str], bool, str, int, bool]],
    readers: list[tuple[list[str], dict[int, str], int, int]],
) -> None:
    from pipeline.core.digest import ReaderDigests

    candidates = [
        item(
            n,
            title=" ".join(words),
            summary_text=" ".join(words * 3),
            link=f"https://news.example/{n % 25}",
            themes=tuple(dict.fromkeys(themes)),
            scores={t: 1.0 + (n * 7 + len(t)) % 9 for t in themes},
            evidence={t: [words[0]] for t in themes},
            relevant=relevant,
            source=source,
            published=END - timedelta(hours=hours % 30),  # some outside the period
            undated=undated,  # no recency bonus
        )
        for n, (words, themes, relevant, source, hours, undated) in enumerate(stories)
    ]
    planner = ReaderDigests(candidates, THEMES, START, END)
    short = ReaderDigests(candidates, THEMES, START, END, spare=-9)  # lists cut at 2 rows
    wide = ReaderDigests(candidates, THEMES, START, END)
    wide.widest = 1  # every story of several themes ranked when a choice holds it
    encoder = DigestJSON()  # shared across readers, as in a build
    parts: dict[str, object] = {}  # what the build stored so far
    for chosen, hit_list, top, per_section in readers:
        hits = {f"i{n}": [query] for n, query in hit_list.items()}
        req = request(themes=chosen, top_stories=top, max_per_section=per_section)
        pool = [replace(c, watchlists=tuple(hits[c.id])) if c.id in hits else c for c in candidates]
        expected = build_digest(pool, req, THEMES, stories=planner.stories)
        built = planner.build(req, hits)
        assert built == expected
        assert short.build(req, hits) == expected
        assert wide.build(req, hits) == expected
        assert encoder.encode(built) == json.dumps(digest_as_dict(expected))
        compact = json.loads(encoder.compact(built))
        handed = encoder.new_parts()
        assert not handed.keys() & parts.keys()  # each part handed out once
        parts.update({key: json.loads(text) for key, text in handed.items()})
        assert part_keys(compact) <= parts.keys()
        assert expand_edition(compact, parts) == json.loads(json.dumps(digest_as_dict(expected)))


def test_readers_whose_hits_leave_a_section_alone_share_it_and_editions_store_it_once() -> None:
    """Sections that a reader's hits do not change are the theme choice's one tuple of
    entries (``SharedEntries``); a compact edition refers to it as one part, which names
    its story parts, and reads back as the digest's own dict."""
    from pipeline.core.digest import ReaderDigests, SharedEntries

    def story(n: int, theme: str, score: float) -> DigestCandidate:  # one story each
        return item(n, title=f"Headline q{n}x r{n}y", themes=(theme,), scores={theme: score})

    economy = [story(n, "economy", 4.0 + n % 5) for n in range(12)]
    india = [story(20 + n, "india", 5.0) for n in range(12)]
    elsewhere = item(  # in no chosen theme, and a story of its own
        40, title="Floods in Sindh", themes=("climate",), scores={"climate": 3.0}
    )
    planner = ReaderDigests([*economy, *india, elsewhere], THEMES, START, END)
    req = request(themes=["economy", "india"], top_stories=2, max_per_section=4)
    alone = planner.build(req, {})
    watching = planner.build(req, {"i40": ["floods"]})  # a hit outside the chosen themes
    in_economy = planner.build(req, {"i5": ["IMF"]})  # a hit that moves an economy story
    for digest in (alone, watching):
        assert all(type(s.entries) is SharedEntries for s in digest.sections)
        assert type(digest.top) is SharedEntries
    assert watching.top is alone.top
    assert [s.entries for s in alone.sections] == [s.entries for s in watching.sections]
    assert all(
        a.entries is b.entries for a, b in zip(alone.sections, watching.sections, strict=True)
    )
    assert watching.watchlist_entries and not alone.watchlist_entries
    assert [s.theme.id for s in alone.sections] == ["india", "economy"]
    assert in_economy.sections[0].entries is alone.sections[0].entries  # india's
    assert in_economy.sections[1].entries != alone.sections[1].entries
    assert type(in_economy.sections[1].entries) is tuple

    encoder = DigestJSON()
    parts: dict[str, object] = {}
    for digest in (alone, watching, in_economy):
        stored = json.loads(encoder.compact(digest))
        handed = encoder.new_parts()
        assert not handed.keys() & parts.keys()  # the shared section handed out once
        parts.update({key: json.loads(text) for key, text in handed.items()})
        refs = [s["entries"] for s in stored["sections"]]
        assert [isinstance(r, dict) for r in refs] == [True, digest is not in_economy]
        assert part_keys(stored, parts) <= parts.keys()
        assert part_keys(stored) < part_keys(stored, parts)  # the section's story parts
        assert expand_edition(stored, parts) == json.loads(json.dumps(digest_as_dict(digest)))
        as_refs = expand_edition(stored, parts, keep_refs=True)
        for section, ref in zip(as_refs["sections"], refs, strict=True):
            if isinstance(ref, dict):
                assert section["entries_part"] == ref["part"]
                assert section["entries"] is parts[ref["part"]]["entries"]  # type: ignore[index]
        # a shared block's story parts are checked once per set of blocks found whole
        whole: set[str] = set()
        assert expand_edition(stored, parts, True, whole) == as_refs
        assert expand_edition(stored, parts, True, whole) == as_refs
        assert whole == {r["part"] for r in refs if isinstance(r, dict)} | (
            {stored["top"]["part"]} if isinstance(stored["top"], dict) else set()
        )
        shared = next(r["part"] for r in refs if isinstance(r, dict))
        story = parts[shared]["entries"][0]["part"]  # type: ignore[index]
        without = {key: part for key, part in parts.items() if key != story}
        with pytest.raises(KeyError):
            expand_edition(stored, without, True, set())
        with pytest.raises(KeyError):
            expand_edition(stored, without, True)


def test_a_list_without_hits_met_again_is_stored_once_and_a_hit_never_goes_into_a_part() -> None:
    """Two readers whose same hit lifts a story into the top stories: their top holds
    the hit (their own: it stays in each edition), and the section the story left is the
    same list of other stories for both, stored in the second edition as a part naming
    it. Read back, both are their digests."""
    from pipeline.core.digest import ReaderDigests

    def story(n: int, theme: str, score: float) -> DigestCandidate:
        return item(n, title=f"Headline q{n}x r{n}y", themes=(theme,), scores={theme: score})

    economy = [story(n, "economy", 4.0 + n % 5) for n in range(12)]
    planner = ReaderDigests(economy, THEMES, START, END)
    req = request(themes=["economy"], top_stories=2, max_per_section=4)
    hits = {"i3": ["my secret query"]}  # an economy story outside the top, lifted by the hit
    first, second = planner.build(req, hits), planner.build(req, dict(hits))
    assert "i3" in {e.item.id for e in first.top}
    assert first.sections[0].entries == second.sections[0].entries
    assert not any(e.item.watchlists for e in first.sections[0].entries)

    encoder = DigestJSON()
    stored = []
    parts: dict[str, object] = {}
    for digest in (first, second):
        stored.append(json.loads(encoder.compact(digest)))
        parts.update({k: json.loads(v) for k, v in encoder.new_parts().items()})
    assert isinstance(stored[0]["sections"][0]["entries"], list)  # met once: in the edition
    ref = stored[1]["sections"][0]["entries"]
    assert ref == {"part": ref["part"]} and parts[ref["part"]] == {
        "entries": stored[0]["sections"][0]["entries"]
    }
    assert [type(s["top"]) for s in stored] == [list, list]  # the hit: the reader's own
    assert "my secret query" not in json.dumps(parts)
    for digest, compact in zip((first, second), stored, strict=True):
        assert expand_edition(compact, parts) == json.loads(json.dumps(digest_as_dict(digest)))


def test_reader_digests_share_hit_stories_only_between_readers_they_fit() -> None:
    """Readers of every theme choice, one after another on one planner, hitting the same
    stories of several outlets (members sharing themes) and one-item stories: what the
    planner remembers from one reader must never leak into another's digest."""
    from itertools import combinations

    from pipeline.core.digest import ReaderDigests

    words = "army chief meets imf team over loan talks".split()
    retold = [  # one story told by three outlets, its members with overlapping themes
        item(
            n,
            title=" ".join(words),
            summary_text=" ".join(words * 3),
            themes=themes,
            scores={t: 2.0 + n + len(t) % 3 for t in themes},
            source=source,
        )
        for n, themes, source in [
            (1, ("economy", "india"), "Dawn"),
            (2, ("india", "sanctions"), "Geo"),
            (3, ("economy", "sanctions"), "Reuters"),
        ]
    ]
    alone = [
        item(10 + n, themes=themes, scores={t: 1.0 + n for t in themes})
        for n, themes in enumerate([("india",), ("sanctions", "economy"), ()])
    ]
    candidates = retold + alone
    planner = ReaderDigests(candidates, THEMES, START, END)
    assert len(planner.stories.members) == 1 + len(alone)
    hit_sets = [{"i1": ["q1"]}, {"i2": ["q2"], "i3": ["q1"]}, {"i3": ["q3"], "i10": ["q1"]}]
    choices = [c for size in (1, 2, 3, 4) for c in combinations(ALL, size)]
    for hits in [*hit_sets, {"i11": ["q2"], "i12": ["q1"]}]:
        for chosen in choices:
            req = request(themes=list(chosen), top_stories=1, max_per_section=2)
            pool = [
                replace(c, watchlists=tuple(hits[c.id])) if c.id in hits else c for c in candidates
            ]
            assert planner.build(req, hits) == build_digest(
                pool, req, THEMES, stories=planner.stories
            ), (chosen, hits)


def test_digest_json_is_json_dumps_of_digest_as_dict_byte_for_byte() -> None:
    odd = 'Q\u00e9 "quoted" \\ back\u2028 \U0001f600 <b>& \x01 \u0627\u0631\u062f\u0648'
    themes = [replace(THEMES[0], name=odd, description=odd), *THEMES[1:]]
    items = [
        item(1, title=odd, source=odd, link=f"https://x.example/{odd}", us_link=True),
        item(2, themes=("india", "economy"), scores={"india": 7.0, "economy": 2.5}),
        item(3, themes=("counterterrorism",), scores={"counterterrorism": 3.25}),
        item(4, relevant=False, themes=(), watchlists=(odd, "q")),
        item(5, summary_text=odd * 40, evidence={"economy": [odd, "IMF"]}),
    ]
    encoder = DigestJSON()
    for previous in (None, {"economy": 3}):
        req = request(previous_counts=previous, title=odd)
        digest = build_digest(items, req, themes)
        assert encoder.encode(digest) == json.dumps(digest_as_dict(digest))
        assert encoder.encode(digest) == json.dumps(digest_as_dict(digest))  # from memory
    empty = build_digest([], request(), themes)
    assert encoder.encode(empty) == json.dumps(digest_as_dict(empty))
    for rank in (0.0, -1.5, 1e-7, 12.345, float("inf"), float("nan")):
        entry = DigestEntry(items[3], rank, reasons=(odd, "x"), also=(odd,), snippet=odd)
        assert encoder.entry(entry) == json.dumps(entry_as_dict(entry))


def test_compact_edition_shares_stories_and_keeps_the_readers_own_text_out_of_parts() -> None:
    odd = 'Q\u00e9 "quoted" \\ back\u2028 <b>& \x01 \u0627\u0631\u062f\u0648'
    items = [
        item(1, title=odd, source=odd, link=f"https://x.example/{odd}", us_link=True),
        item(2, themes=("india", "economy"), scores={"india": 7.0, "economy": 2.5}),
        item(3, themes=("counterterrorism",), scores={"counterterrorism": 3.25}),
        item(4, relevant=False, themes=(), watchlists=("my secret query",)),
    ]
    encoder = DigestJSON()
    digest = build_digest(items, request(title=odd), THEMES)
    compact = encoder.compact(digest)
    parts = encoder.new_parts()
    assert "my secret query" in compact
    assert not any("my secret query" in text for text in parts.values())
    assert len(parts) == len(digest.item_ids) + len(digest.sections)  # stories and themes
    whole = expand_edition(json.loads(compact), {k: json.loads(v) for k, v in parts.items()})
    assert whole == json.loads(json.dumps(digest_as_dict(digest)))
    # a second reader with the same stories needs no new story part: the top stories,
    # a list met before holding no watchlist hit, are now one part naming them
    again = encoder.compact(digest)
    (key, top_text), *more = encoder.new_parts().items()
    assert not more and json.loads(again)["top"] == {"part": key}
    assert json.loads(top_text) == {"entries": json.loads(compact)["top"]}
    parts[key] = top_text
    assert "my secret query" in again and "my secret query" not in top_text
    whole_again = expand_edition(json.loads(again), {k: json.loads(v) for k, v in parts.items()})
    assert whole_again == whole
    # a third needs nothing new, and an edition that was stored whole (before compact
    # editions) reads as it is
    assert encoder.compact(digest) == again and encoder.new_parts() == {}
    assert expand_edition(digest_as_dict(digest), {}) == digest_as_dict(digest)


def test_a_compact_edition_leaves_its_item_ids_out_and_reads_them_off_its_entries() -> None:
    items = [
        item(1, themes=("india",), scores={"india": 9.0}),
        item(2, themes=("economy",), scores={"economy": 2.0}),
        item(3, themes=("counterterrorism",), scores={"counterterrorism": 3.0}),
        item(4, relevant=False, themes=(), watchlists=("q",)),
        item(5, themes=("india", "economy"), scores={"india": 5.0, "economy": 5.0}),
    ]
    encoder = DigestJSON()
    digest = build_digest(items, request(top_stories=2), THEMES)
    stored = json.loads(encoder.compact(digest))
    assert stored["version"] == 3 and "item_ids" not in stored
    parts = {k: json.loads(v) for k, v in encoder.new_parts().items()}
    whole = expand_edition(stored, parts)
    assert whole["item_ids"] == list(digest.item_ids) == ["i1", "i5", "i3", "i2", "i4"]
    assert whole == json.loads(json.dumps(digest_as_dict(digest)))
    # an edition stored before (version 2) holds them, and reads as it did
    before = {**stored, "version": 2, "item_ids": ["as", "stored"]}
    assert expand_edition(before, parts) == {**whole, "item_ids": ["as", "stored"]}


def test_a_compact_reference_says_its_watchlists_by_the_reasons_that_spell_them() -> None:
    hit = item(1, watchlists=("IMF", 'loan OR "bail out"'))
    digest = build_digest([hit, item(2)], request(top_stories=2), THEMES)
    encoder = DigestJSON()
    stored = json.loads(encoder.compact(digest))
    assert [e.item.id for e in digest.top] == ["i1", "i2"]  # the watchlist bonus
    own = stored["top"][0]
    assert own["watched"] == 2 and "watchlists" not in own
    assert own["reasons"][:2] == ["watchlist: IMF", 'watchlist: loan OR "bail out"']
    assert all("watched" not in ref and "watchlists" not in ref for ref in stored["top"][1:])
    parts = {k: json.loads(v) for k, v in encoder.new_parts().items()}
    assert expand_edition(stored, parts) == json.loads(json.dumps(digest_as_dict(digest)))
    # reasons that do not spell them (an entry made by hand): listed
    odd = replace(digest, top=(replace(digest.top[0], reasons=("made by hand",)),))
    listed = json.loads(DigestJSON().compact(odd))["top"][0]
    assert listed["watchlists"] == list(odd.top[0].item.watchlists) and "watched" not in listed


def test_the_builders_quick_constructors_make_equal_frozen_objects() -> None:
    from dataclasses import FrozenInstanceError

    from pipeline.core.digest import DigestSection, _entry_of, _section_of, _with_watchlists

    lead = item(1)
    copied = _with_watchlists(lead, ("imf",))
    assert copied == replace(lead, watchlists=("imf",))
    entry = _entry_of(copied, 7.5, ("economy: IMF",), ("Reuters",), "A snippet.")
    assert entry == DigestEntry(copied, 7.5, ("economy: IMF",), ("Reuters",), "A snippet.")
    section = _section_of(THEMES[0], (entry,), 3, None, "3 stories")
    assert section == DigestSection(THEMES[0], (entry,), 3, None, "3 stories")
    for made, field in ((copied, "title"), (entry, "rank"), (section, "count")):
        with pytest.raises(FrozenInstanceError):
            setattr(made, field, None)
