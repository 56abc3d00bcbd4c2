"""The watchlist engine: agreement with the slow reference, scoping, aliases, incremental
changes, triggers, and the subscriber selection."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import QueryError
from pipeline.core.query import Not, Or, Term, matches_text, parse_query
from pipeline.core.watchlists import (
    LEARN_MIN_ITEMS,
    WatchlistIndex,
    subscribers_for_items,
    subscribers_for_watchlists,
)
from pipeline.rules import load_aliases

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class A:
    """An alias as pipeline.rules.Alias has it."""

    id: str
    names: tuple[str, ...]
    case_sensitive: tuple[str, ...] = ()


# --- agreement with the slow exact reference ------------------------------------------------

# A small vocabulary so that random queries and random items share words: Latin and Urdu,
# acronyms whose case matters, words that prefix others, a word inside another.
WORDS = [
    "pakistan", "pakistani", "imf", "loan", "loans", "us", "bus", "army", "chief", "drone",
    "strike", "strikes", "f", "16", "sale", "sanction", "sanctions", "sanctioned", "isi",
    "crisis", "talks", "pm", "cpec", "gwadar", "egypt", "new", "delhi",
    "سی", "پیک", "پاکستان", "فوج", "قرض", "امریکہ",
]  # fmt: skip
URDU_VARIANTS = str.maketrans({"ی": "ي", "ک": "ك", "ہ": "ه"})


def surface(word: str, rng: random.Random) -> str:
    """One way a site might type ``word``: case, Arabic letter variants, accents."""
    roll = rng.random()
    if not word.isascii():
        return word.translate(URDU_VARIANTS) if roll < 0.4 else word
    if roll < 0.35:
        return word.upper()
    if roll < 0.6:
        return word.capitalize()
    if roll < 0.65 and "a" in word:
        return word.replace("a", "á", 1)
    return word


def random_text(rng: random.Random, words: int) -> str:
    out = []
    for _ in range(words):
        word = surface(rng.choice(WORDS), rng)
        out.append(word + rng.choice(["", "", "", ",", ".", "'s", "-", " —", ":"]))
    return " ".join(out)


def random_operand(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return "(" + random_query(rng, depth + 1) + ")"
    if roll < 0.35:
        words = [surface(rng.choice(WORDS), rng) for _ in range(rng.randint(2, 3))]
        star = "*" if rng.random() < 0.1 and len(words[-1]) >= 3 else ""
        return '"' + " ".join(words) + star + '"'
    word = surface(rng.choice(WORDS), rng)
    if rng.random() < 0.12 and len(word) >= 3:
        word = word[: rng.randint(3, len(word))] + "*"
    return word


def random_query(rng: random.Random, depth: int = 0) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.15:
            side = rng.choice(["", "title:"])
            left = random_operand(rng, 2)
            right = random_operand(rng, 2)
            part = (
                f"{side}({left} NEAR/{rng.randint(1, 6)} {right})"
                if side
                else (f"{left} NEAR/{rng.randint(1, 6)} {right}")
            )
        elif roll < 0.35:
            part = " OR ".join(random_operand(rng, depth) for _ in range(rng.randint(2, 3)))
        elif roll < 0.45:
            part = "title:" + random_operand(rng, depth)
        else:
            part = random_operand(rng, depth)
        parts.append(part)
    if rng.random() < 0.35:
        parts.append(rng.choice(["-", "NOT "]) + random_operand(rng, 2))
    return " ".join(parts)


def random_queries(rng: random.Random, count: int) -> list[str]:
    queries: list[str] = []
    while len(queries) < count:
        text = random_query(rng)
        try:
            parse_query(text)
        except QueryError:
            continue
        queries.append(text)
    return queries


def test_agrees_with_the_reference_on_random_queries_and_items() -> None:
    rng = random.Random(20240601)
    queries = random_queries(rng, 400)
    index = WatchlistIndex(enumerate(queries))
    parsed = [parse_query(q) for q in queries]
    items = [
        (n, random_text(rng, rng.randint(0, 9)), random_text(rng, rng.randint(0, 40)))
        for n in range(150)
    ]
    batch = index.match_items(items)  # the batch path: set operations over all items
    positives = 0
    for n, title, body in items:
        expected = {i for i, q in enumerate(parsed) if matches_text(q, title, body)}
        got = index.match(title, body)  # the one-item path
        assert len(got) == len(set(got))
        assert set(got) == expected, (title, body, set(got) ^ expected)
        assert batch[n] == got
        positives += len(expected)
    assert positives > 1000  # the sample really exercises matches, not only misses


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False))
def test_agrees_with_the_reference_property(rng: random.Random) -> None:
    queries = random_queries(rng, 12)
    index = WatchlistIndex(enumerate(queries))
    items = [(n, random_text(rng, rng.randint(0, 6)), random_text(rng, 25)) for n in range(4)]
    batch = index.match_items(items)
    for n, title, body in items:
        expected = {i for i, q in enumerate(queries) if matches_text(parse_query(q), title, body)}
        assert set(index.match(title, body)) == expected
        assert set(batch[n]) == expected


def test_retuned_triggers_give_the_same_results() -> None:
    rng = random.Random(7)
    queries = random_queries(rng, 200)
    index = WatchlistIndex(enumerate(queries))
    items = [(n, random_text(rng, 8), random_text(rng, 30)) for n in range(LEARN_MIN_ITEMS + 50)]
    before = index.match_items(items)
    index.retune()  # now from the frequencies seen in those items
    assert index.match_items(items) == before


# --- scoping, case, wildcards through the engine ---------------------------------------------


def test_with_aliases_agrees_with_the_reference_on_expanded_queries() -> None:
    aliases = [
        A("cpec", ("CPEC", "China Pakistan Economic Corridor", "سی پیک")),
        A("us", ("America", "امریکہ"), ("US", "U.S.")),
        A("isi", ("Inter Services Intelligence", "آئی ایس آئی"), ("ISI",)),
        A("strike", ("drone strike*", "strike", "F-16 sale")),
    ]
    rng = random.Random(11)
    queries = random_queries(rng, 300)
    index = WatchlistIndex(enumerate(queries), aliases=aliases)
    expanded = [index.expand(q) for q in queries]
    assert any(e != parse_query(q) for e, q in zip(expanded, queries, strict=True))
    words = [*WORDS, "China", "Economic", "Corridor", "America", "Inter", "Services", "آئی"]

    def text(most: int) -> str:
        return " ".join(surface(rng.choice(words), rng) for _ in range(rng.randint(0, most)))

    items = [(n, text(8), text(30)) for n in range(120)]
    batch = index.items_by_watchlist(items)
    for n, title, body in items:
        expected = {i for i, q in enumerate(expanded) if matches_text(q, title, body)}
        assert set(index.match(title, body)) == expected, (title, body)
        assert {i for i, found in batch.items() if n in found} == expected


def test_near_with_alias_spellings_on_both_sides_follows_the_expanded_query() -> None:
    aliases = [
        A("cpec", ("CPEC", "CPEC 2.0", "China Pakistan Economic Corridor")),
        A("strike", ("strike", "drone strike")),
    ]
    queries = ["CPEC NEAR/1 CPEC", "strike NEAR/2 CPEC", 'title:("drone strike" NEAR/3 cpec)']
    index = WatchlistIndex(enumerate(queries), aliases=aliases)
    texts = [
        ("", "CPEC 2.0 talks"),  # two spellings at one place: as the expanded query says
        ("", "CPEC then CPEC"),
        ("", "CPEC and then more and CPEC"),
        ("drone strike near CPEC", "drone strike near CPEC"),
        ("China Pakistan Economic Corridor hit by a strike", ""),
        ("", "a drone strike, far, far away from the CPEC"),
    ]
    items = [(n, title, body) for n, (title, body) in enumerate(texts)]
    batch = index.match_items(items)
    for n, title, body in items:
        expected = [i for i, q in enumerate(queries) if matches_text(index.expand(q), title, body)]
        assert index.match(title, body) == expected == batch[n], (title, body)


def test_trees_that_are_not_positive_are_evaluated_on_every_item() -> None:
    # parse_query refuses these; a tree built in code is taken as it is.
    imf, egypt = parse_query("IMF"), parse_query("Egypt")
    assert isinstance(imf, Term) and isinstance(egypt, Term)
    index = WatchlistIndex([("not", Not(egypt)), ("or", Or((imf, Not(egypt))))])
    assert index.stats()["untriggered"] == 2
    items = [(1, "Egypt", ""), (2, "IMF", "Egypt"), (3, "weather", "")]
    assert index.match_items(items) == {1: [], 2: ["or"], 3: ["not", "or"]}
    assert [index.match(t, b) for _, t, b in items] == [[], ["or"], ["not", "or"]]


def test_title_scope_and_near_distance() -> None:
    index = WatchlistIndex(
        [
            ("title", "title:IMF"),
            ("near", '"drone strike" NEAR/3 Waziristan'),
            ("title-near", 'title:("F-16" NEAR/2 sale)'),
        ]
    )
    assert index.match("IMF talks", "") == ["title"]
    assert index.match("Talks", "The IMF said") == []
    assert index.match("", "a drone strike in North Waziristan") == ["near"]
    assert index.match("", "Waziristan: after the drone strike") == ["near"]
    assert index.match("", "a drone strike, said officials in the north of Waziristan") == []
    assert index.match("", "drone and strike in Waziristan") == []
    assert index.match("US approves F-16 spare sale", "") == ["title-near"]
    assert index.match("Sale", "F-16 sale approved") == []
    assert index.match("drone strike", "Waziristan") == []  # NEAR needs the same field


def test_us_is_case_sensitive_and_us_is_not() -> None:
    index = WatchlistIndex([("caps", "US envoy"), ("any", "us envoy"), ("dotted", "U.S.")])
    assert index.match("", "the envoy told us") == ["any"]
    assert sorted(index.match("US envoy in Islamabad", "")) == ["any", "caps"]
    assert index.match("", "the bus envoy") == []  # never inside a word
    assert index.match("U.S. envoy", "") == ["dotted"]  # U.S. is two words, U and S


def test_wildcards_phrases_and_exclusions() -> None:
    index = WatchlistIndex([("w", "sanction* -cricket"), ("p", '"New Delhi" -(Egypt OR Kenya)')])
    assert index.match("Sanctioned", "") == ["w"]
    assert index.match("Sanctions on cricket", "") == []
    assert index.match("", "talks in new-delhi") == ["p"]
    assert index.match("", "talks in new-delhi and Kenya") == []


def test_every_shape_of_flat_query_agrees_with_the_reference_in_a_batch() -> None:
    # A batch checks the common shapes left after a plan's start with their own set
    # operations (one more required word, one or two exclusions, one OR of two words) and
    # the rest generally: each shape, over items holding every mix of their words.
    queries = [
        "imf loan army",  # a pair plan and one more required group
        "imf loan army chief",  # two more: the general case
        "imf loan -army",  # a pair plan less one group
        "imf -army",  # a single plan less one group
        "imf -army -chief",  # less two
        "imf loan -army -chief -drone",  # the general case
        "(imf OR loan) (army OR chief)",  # an OR plan and one more clause of two
        "(imf OR loan) (army OR chief OR drone)",  # a longer clause: general
        "(imf OR loan) (army OR chief) -drone",  # a clause and an exclusion: general
        "imf (army OR chief)",  # a single plan and a clause
        "imf loan",  # nothing else to check
    ]
    index = WatchlistIndex(enumerate(queries))
    words = ["imf", "loan", "army", "chief", "drone", "talks"]
    items = [
        (n, " ".join(w for bit, w in enumerate(words) if n >> bit & 1), "")
        for n in range(2 ** len(words))
    ]
    batch = index.items_by_watchlist(items)
    for number, query in enumerate(queries):
        expected = tuple(
            n for n, title, body in items if matches_text(parse_query(query), title, body)
        )
        assert batch.get(number, ()) == expected, query


def test_a_batch_answer_is_a_read_only_view_that_later_edits_leave_alone() -> None:
    index = WatchlistIndex([("a", "IMF"), ("b", "IMF"), ("c", "loan"), ("d", "Gwadar")])
    items = [(1, "IMF loan", ""), (2, "loan", "talks")]
    found = index.items_by_watchlist(items)
    assert dict(found) == {"a": (1,), "b": (1,), "c": (1, 2)}
    assert found["a"] is found["b"]  # watchlists sharing a query share its tuple
    assert "d" not in found and found.get("d") is None and found.get("x", ()) == ()
    with pytest.raises(KeyError):
        found["d"]
    assert len(found) == 3 and sorted(found) == ["a", "b", "c"]
    index.remove_watchlist("a")
    index.add_watchlist("d", "loan")
    assert dict(found) == {"a": (1,), "b": (1,), "c": (1, 2)}
    assert index.items_by_watchlist(items) == {"b": (1,), "c": (1, 2), "d": (1, 2)}


# --- triggers ------------------------------------------------------------------------------


def test_items_with_only_excluded_words_trigger_no_evaluation() -> None:
    index = WatchlistIndex([("a", "IMF -Egypt"), ("b", "loan -(Egypt OR Kenya)")])
    assert index.candidates("Egypt and Kenya", "Egypt") == []
    assert index.match("Egypt and Kenya", "Egypt") == []
    assert sorted(index.candidates("IMF loan", "Egypt")) == ["a", "b"]


def test_an_and_is_triggered_by_one_operand_only() -> None:
    # Only the rarer operand files the query: "pakistan" occurs in every item below.
    index = WatchlistIndex([("x", "pakistan gwadar")] + [(n, f"pakistan w{n}") for n in range(20)])
    assert index.candidates("Pakistan news", "") == []
    assert index.match("Pakistan news", "about Gwadar") == ["x"]


def test_identical_queries_share_one_compiled_query() -> None:
    index = WatchlistIndex([(n, "CPEC OR Gwadar") for n in range(1000)])
    assert index.stats()["queries"] == 1
    assert index.match("Gwadar port", "") == list(range(1000))


# --- incremental ----------------------------------------------------------------------------


def test_add_and_remove_without_rebuilding() -> None:
    index = WatchlistIndex([("a", "IMF loan"), ("b", "IMF loan")])
    assert sorted(index.match("IMF loan", "")) == ["a", "b"]
    index.add_watchlist("c", '"fighter jets" OR F-16')
    assert index.match("", "F 16 fighter jets") == ["c"]
    assert index.remove_watchlist("a")
    assert index.match("IMF loan", "") == ["b"]
    assert index.remove_watchlist("b") and not index.remove_watchlist("b")
    assert index.match("IMF loan", "") == []
    assert index.stats()["queries"] == 1
    assert index.stats()["patterns"] == 2  # IMF and loan are gone from the automaton
    index.add_watchlist("c", "IMF")  # replaces c's query
    assert index.match("IMF", "F-16") == ["c"]
    assert len(index) == 1 and "c" in index


def test_many_changes_stay_consistent_with_a_fresh_index() -> None:
    rng = random.Random(3)
    queries = random_queries(rng, 300)
    index: WatchlistIndex[int] = WatchlistIndex()
    live: dict[int, str] = {}
    for step in range(3000):
        n = rng.randrange(120)
        if n in live and rng.random() < 0.5:
            index.remove_watchlist(n)
            del live[n]
        else:
            live[n] = rng.choice(queries)
            index.add_watchlist(n, live[n])
        if step % 500 == 499:
            items = [(k, random_text(rng, 6), random_text(rng, 20)) for k in range(30)]
            fresh = WatchlistIndex(live.items())
            got = {k: sorted(v) for k, v in index.match_items(items).items()}
            assert got == {k: sorted(v) for k, v in fresh.match_items(items).items()}
    assert index.stats()["queries"] <= len(live)


def test_a_bad_query_adds_nothing() -> None:
    index = WatchlistIndex([("a", "IMF")])
    with pytest.raises(QueryError):
        index.add_watchlists([("b", "loan"), ("c", '"unclosed')])
    assert index.watchlists() == ["a"]


# --- aliases --------------------------------------------------------------------------------

CPEC = A(
    "cpec",
    ("CPEC", "China-Pakistan Economic Corridor", "سی پیک", "پاک چین اقتصادی راہداری"),
)
ISI = A("isi", ("Inter-Services Intelligence", "آئی ایس آئی"), ("ISI",))


def test_an_alias_name_matches_every_spelling() -> None:
    index = WatchlistIndex(
        [("en", "CPEC"), ("ur", '"سی پیک"'), ("long", "title:CPEC")], aliases=[CPEC]
    )
    assert sorted(index.match("", "سی پیک منصوبے پر پیش رفت")) == ["en", "ur"]
    # An Urdu spelling variant (Arabic yeh and kaf) matches too.
    assert sorted(index.match("سي پيك", "")) == ["en", "long", "ur"]
    assert sorted(index.match("China Pakistan economic corridor talks", "")) == ["en", "long", "ur"]
    assert index.match("", "China Pakistan") == []


def test_alias_spellings_inside_phrases_near_and_exclusions() -> None:
    index = WatchlistIndex(
        [
            ("near", "CPEC NEAR/2 Gwadar"),
            ("not", "Gwadar -CPEC"),
        ],
        aliases=[CPEC],
    )
    # NEAR measures from the end of the spelling found, however long it is.
    assert index.match("", "the China-Pakistan Economic Corridor near Gwadar") == ["near"]
    assert index.match("", "China-Pakistan Economic Corridor, far from the port of Gwadar") == []
    assert index.match("", "Gwadar port") == ["not"]
    assert index.match("", "Gwadar and سی پیک") == ["near"]  # excluded by the Urdu spelling


def test_alias_case_rules_and_the_query_term_keep_their_case() -> None:
    index = WatchlistIndex([("caps", "ISI"), ("lower", "isi chief")], aliases=[ISI])
    assert index.match("", "Inter Services Intelligence") == ["caps"]
    assert index.match("", "آئی ایس آئی") == ["caps"]
    assert index.match("", "a crisis; Isi") == []  # "ISI" as written: capitals only
    assert sorted(index.match("", "ISI chief")) == ["caps", "lower"]
    assert index.match("", "isi chief") == ["lower"]
    pak = A("pakistan", ("Pakistan", "Pak", "پاکستان"))
    index = WatchlistIndex([("PAK", "PAK")], aliases=[pak])
    assert index.match("", "pak army") == []  # the query wrote PAK in capitals
    assert index.match("", "پاکستان") == ["PAK"]


def test_alias_by_id_and_the_configured_aliases() -> None:
    aliases = load_aliases(ROOT / "config" / "aliases.toml")
    index = WatchlistIndex(
        [("cpec", "CPEC"), ("isi", "ISI"), ("id", "@imran_khan"), ("ur", "امریکہ")],
        aliases=aliases,
    )
    assert index.match("", "چین پاکستان اقتصادی راہداری") == ["cpec"]
    assert index.match("", "Inter-Services Intelligence") == ["isi"]
    assert "id" in index.match("Imran Khan", "")
    assert index.match("US envoy", "") == ["ur"]
    explained = index.explain("", "سي پيک")
    assert explained == {"cpec": ['"سی پیک"']}


def test_explain_names_what_fired_per_watchlist() -> None:
    index = WatchlistIndex(
        [(1, "IMF loan OR bailout -Egypt"), (2, 'title:("F-16" NEAR/5 sale) OR IMF'), (3, "IMF")]
    )
    assert index.explain("F-16 sale", "IMF bailout") == {
        1: ["IMF", "bailout"],
        2: ['title:("F 16" NEAR/5 sale)', "IMF"],
        3: ["IMF"],
    }


# --- selection ------------------------------------------------------------------------------


def test_subscribers_get_their_items_once_in_order() -> None:
    index = WatchlistIndex([("w1", "IMF"), ("w2", "loan"), ("w3", "CPEC"), ("w4", "IMF")])
    items = [
        ("i1", "IMF loan", ""),
        ("i2", "CPEC", ""),
        ("i3", "weather", ""),
        ("i4", "loan", "IMF"),
    ]
    matches = index.match_items(items)
    assert matches == {"i1": ["w1", "w4", "w2"], "i2": ["w3"], "i3": [], "i4": ["w1", "w4", "w2"]}
    owner = {"w1": "ann", "w2": "ann", "w3": "bob", "w4": "cat"}
    expected = {"ann": ["i1", "i4"], "bob": ["i2"], "cat": ["i1", "i4"]}
    assert subscribers_for_items(matches, owner) == expected
    by_watchlist = index.items_by_watchlist(items)
    assert by_watchlist == {
        "w1": ("i1", "i4"),
        "w4": ("i1", "i4"),
        "w2": ("i1", "i4"),
        "w3": ("i2",),
    }
    watchlists_of = {"ann": ["w1", "w2"], "bob": ["w3"], "cat": ["w4"], "dan": []}
    assert subscribers_for_watchlists(by_watchlist, watchlists_of) == expected
