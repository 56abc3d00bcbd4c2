"""Watchlist query language: parsing, errors with columns, limits, evaluation, printing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import QasidError, QueryError
from pipeline.core.query import (
    MAX_DEPTH,
    MAX_NEAR_DISTANCE,
    MAX_QUERY_LENGTH,
    MAX_TERMS,
    And,
    Field,
    Hit,
    Near,
    Not,
    Or,
    Term,
    evaluate,
    explain,
    format_query,
    matches_text,
    parse_query,
    parse_term,
    query_terms,
    scan_hits,
)


def t(*tokens: str, prefix: bool = False, cs: bool = False) -> Term:
    return Term(tokens, prefix, cs)


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        ("IMF", t("imf", cs=True)),
        ("Pakistan", t("pakistan")),
        ("IMF loan", And((t("imf", cs=True), t("loan")))),
        ("IMF AND loan", And((t("imf", cs=True), t("loan")))),
        # Google convention: OR binds tighter than the implicit AND.
        ("IMF loan OR bailout", And((t("imf", cs=True), Or((t("loan"), t("bailout")))))),
        ("loan | bailout", Or((t("loan"), t("bailout")))),
        ("(IMF loan) OR bailout", Or((And((t("imf", cs=True), t("loan"))), t("bailout")))),
        ('"fighter jets"', t("fighter", "jets")),
        ("“fighter jets”", t("fighter", "jets")),  # curly quotes from phones
        ("F-16", t("f", "16", cs=True)),  # a hyphenated word is a phrase
        ("Pakistan's", t("pakistan", "s")),
        ("IMF -Egypt", And((t("imf", cs=True), Not(t("egypt"))))),
        ("IMF NOT Egypt", And((t("imf", cs=True), Not(t("egypt"))))),
        ('IMF -"New Delhi"', And((t("imf", cs=True), Not(t("new", "delhi"))))),
        ("IMF -(Egypt OR Kenya)", And((t("imf", cs=True), Not(Or((t("egypt"), t("kenya"))))))),
        ("IMF –Egypt", And((t("imf", cs=True), Not(t("egypt"))))),  # en dash
        ("sanction*", t("sanction", prefix=True)),
        ('"fighter jet*"', t("fighter", "jet", prefix=True)),
        ("title:IMF", Field("title", t("imf", cs=True))),
        ("intitle:IMF", Field("title", t("imf", cs=True))),
        ('title:"World Bank"', Field("title", t("world", "bank"))),
        (
            'title:(IMF OR "World Bank")',
            Field("title", Or((t("imf", cs=True), t("world", "bank")))),
        ),
        ('"F-16" NEAR/5 sale', Near(t("f", "16", cs=True), t("sale"), 5)),
        ("a NEAR/5 b OR c", Or((Near(t("a"), t("b"), 5), t("c")))),
        ("-a NEAR/3 b c", And((Not(Near(t("a"), t("b"), 3)), t("c")))),
        ("title:(a NEAR/3 b)", Field("title", Near(t("a"), t("b"), 3))),
        ("a (b c)", And((t("a"), t("b"), t("c")))),  # flattened: one canonical shape
        ("a OR (b OR c)", Or((t("a"), t("b"), t("c")))),
        ("((a))", t("a")),
        # Lower-case operators and quoted ones are words.
        ("war or peace", And((t("war"), t("or"), t("peace")))),
        ('"OR" gate', And((t("or", cs=True), t("gate")))),
        ("near miss", And((t("near"), t("miss")))),
        # Case: short capital words are acronyms; anything else ignores case.
        ("US", t("us", cs=True)),
        ("us", t("us")),
        ("U.S.", t("u", "s", cs=True)),
        ("PML-N", t("pml", "n", cs=True)),
        ("CPEC", t("cpec")),  # four letters: not case-sensitive
        ("LoC", t("loc")),
        ("سی پیک", And((t("سی"), t("پیک")))),
        ('"سي پيک"', t("سی", "پیک")),  # Arabic yeh folds to Farsi yeh
    ],
)
def test_parses_to_tree(query: str, tree: object) -> None:
    assert parse_query(query) == tree


def test_term_keeps_the_cased_surface_for_display_and_case_checks() -> None:
    term = parse_query("Gwadar")
    assert isinstance(term, Term)
    assert term.surface == ("Gwadar",)
    assert parse_term("Inter-Services Intelligence").tokens == ("inter", "services", "intelligence")


def test_query_terms_lists_each_distinct_term_once_including_negated_ones() -> None:
    q = parse_query('IMF loan OR IMF -Egypt title:("drone strike" NEAR/5 loan)')
    assert query_terms(q) == [
        t("imf", cs=True),
        t("loan"),
        t("egypt"),
        t("drone", "strike"),
    ]


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('IMF "loan deal', "unclosed quote at column 5"),
        ('Pakistan and "F-16 sale', "unclosed quote at column 14"),
        ("IMF loan OR", "expected a term after OR at column 12"),
        ("IMF OR  )", "expected a term after OR at column 9"),
        ("a OR OR b", "expected a term after OR at column 6"),
        ("a | ", "expected a term after | at column 5"),
        ("OR IMF", "expected a term before OR at column 1"),
        ("(OR a)", "expected a term before OR at column 2"),
        ("AND a", "expected a term before AND at column 1"),
        ("a AND", "expected a term after AND at column 6"),
        ("a NOT", "expected a term after NOT at column 6"),
        ("IMF loan (bailout)) x", 'unbalanced ")" at column 19'),
        ("IMF (loan OR bailout", 'unclosed "(" at column 5'),
        ("IMF ()", "empty parentheses at column 5"),
        ("", "the query is empty at column 1"),
        ("   ", "the query is empty at column 1"),
        ('IMF ""', "nothing to search for in the quotes at column 5"),
        ("IMF &", "'&' has no letters or digits to search for at column 5"),
        ("IMF - Egypt", "expected a word, phrase or ( right after - at column 6"),
        ("IMF -OR", "expected a word, phrase or ( right after - at column 6"),
        ("title: IMF", "expected a word, phrase or ( right after title: at column 7"),
        ("title:-IMF", "expected a word, phrase or ( right after title: at column 7"),
        ("F-16 NEAR sale", "NEAR needs a distance like NEAR/5 at column 6"),
        ("F-16 NEAR/x sale", "NEAR needs a distance like NEAR/5 at column 6"),
        ("a NEAR/0 b", "NEAR distance must be between 1 and 50 at column 3"),
        ("a NEAR/51 b", "NEAR distance must be between 1 and 50 at column 3"),
        ("NEAR/5 b", "expected a term before NEAR/5 at column 1"),
        ("a NEAR/5", "expected a word or phrase after NEAR/5 at column 9"),
        ("a NEAR/5 (b c)", "expected a word or phrase after NEAR/5 at column 10"),
        ("(a b) NEAR/5 c", "NEAR needs a word or phrase on its left"),
        ("a NEAR/5 b NEAR/5 c", "NEAR joins only two words or phrases at column 12"),
        ("a*", "a wildcard needs at least 3 letters before * at column 2"),
        ("IMF *", "a wildcard needs at least 3 letters before * at column 5"),
        ("sanc*ion", "* is only allowed at the end of a word at column 5"),
        ('"sanction* on Iran"', "* is only allowed at the end of a word at column 10"),
        ("-Egypt", "a query needs at least one positive term at column 1"),
        ("-Egypt NOT Kenya", "a query needs at least one positive term at column 1"),
        ("title:(-Egypt)", "a query needs at least one positive term at column 1"),
        ("IMF OR -Egypt", "each side of OR needs a positive term at column 8"),
    ],
)
def test_bad_query_names_what_and_where(query: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    assert str(caught.value).startswith(message)
    error = caught.value
    assert isinstance(error, QasidError)
    assert error.query == query
    assert f"at column {error.column}" in str(error)
    assert error.expected


def test_negative_parts_are_fine_beside_a_positive_term() -> None:
    assert parse_query("IMF title:(-Egypt)") == And(
        (t("imf", cs=True), Field("title", Not(t("egypt"))))
    )


# --- limits ---------------------------------------------------------------------------


def test_query_length_is_limited() -> None:
    parse_query("a" * MAX_QUERY_LENGTH)
    with pytest.raises(QueryError, match=f"too long .*at most {MAX_QUERY_LENGTH}") as caught:
        parse_query("a" * (MAX_QUERY_LENGTH + 1))
    assert caught.value.column == MAX_QUERY_LENGTH + 1


def test_query_length_counts_the_canonical_form_so_it_always_parses_back() -> None:
    typed = " ".join(f"F-{i:07}" for i in range(MAX_TERMS))  # printed as "F 0000001" …
    assert len(typed) < MAX_QUERY_LENGTH
    with pytest.raises(QueryError, match="written out in full"):
        parse_query(typed)


def test_number_of_terms_is_limited() -> None:
    words = [f"w{i}" for i in range(MAX_TERMS + 1)]
    parse_query(" ".join(words[:MAX_TERMS]))
    with pytest.raises(QueryError, match=f"too many terms \\(at most {MAX_TERMS}\\)") as caught:
        parse_query(" ".join(words))
    assert caught.value.column == len(" ".join(words[:MAX_TERMS])) + 2


def test_nesting_depth_is_limited() -> None:
    parse_query("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH)
    with pytest.raises(QueryError, match="too deeply nested") as caught:
        parse_query("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert caught.value.column == MAX_DEPTH + 1
    with pytest.raises(QueryError, match="too deeply nested"):
        parse_query("a " + "-" * (MAX_DEPTH + 1) + "b")


def test_near_distance_is_limited() -> None:
    assert parse_query(f"a NEAR/{MAX_NEAR_DISTANCE} b") == Near(t("a"), t("b"), MAX_NEAR_DISTANCE)


# --- evaluation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "title", "body", "expected"),
    [
        ("IMF loan OR bailout", "IMF approves loan", "", True),
        ("IMF loan OR bailout", "IMF bailout talks", "", True),
        ("IMF loan OR bailout", "Loan talks", "with the IMF", True),
        ("IMF loan OR bailout", "IMF review", "", False),
        # Phrases hold across punctuation, both ways round.
        ("F-16", "US approves F-16 sale", "", True),
        ("F-16", "F 16 fleet upgrade", "", True),
        ('"F-16"', "F16 fleet upgrade", "", False),
        ('"fighter jets"', "Pakistan buys fighter-jets", "", True),
        ('"fighter jets"', "jets and fighter pilots", "", False),
        ("sanction*", "US sanctioned firms", "", True),
        ("sanction*", "New sanctions", "", True),
        ("sanction*", "A sanitation drive", "", False),
        ("IMF -Egypt", "IMF deal for Pakistan", "", True),
        ("IMF -Egypt", "IMF deal for Pakistan", "and for Egypt", False),
        ("IMF NOT (Egypt OR Kenya)", "IMF deal", "Kenya too", False),
        ("title:CPEC", "CPEC phase two", "", True),
        ("title:CPEC", "Gwadar port", "part of CPEC", False),
        ("title:(CPEC OR Gwadar)", "Gwadar port", "", True),
        ("Pakistan title:(-cricket)", "Pakistan win", "cricket", True),
        ("Pakistan title:(-cricket)", "Pakistan cricket win", "", False),
        # NEAR: either order, same field, at most n words between.
        ('"drone strike" NEAR/3 Waziristan', "Drone strike in North Waziristan", "", True),
        ('"drone strike" NEAR/3 Waziristan', "Waziristan: a drone strike", "", True),
        (
            '"drone strike" NEAR/3 Waziristan',
            "Drone strike kills four near the border of South Waziristan",
            "",
            False,
        ),
        ('"drone strike" NEAR/3 Waziristan', "Drone strike", "Waziristan", False),
        ("F-16 NEAR/5 sale", "", "The F-16 package and its sale", True),
        ("F-16 NEAR/2 sale", "", "The F-16 package and its sale", False),
        ("title:(F-16 NEAR/5 sale)", "", "F-16 sale", False),
        ("Pakistan NEAR/3 Pakistan", "Pakistan says", "", False),
        ("Pakistan NEAR/3 Pakistan", "Pakistan and Pakistan", "", True),
        # Case: acronyms in capitals match only capitals.
        ("US Pakistan", "US and Pakistan talk", "", True),
        ("US Pakistan", "Pakistan tells us", "", False),
        ("us Pakistan", "Pakistan tells us", "", True),
        ("ISI", "ISI chief", "", True),
        ("ISI", "a crisis", "", False),
        ("PM", "PM Shehbaz", "", True),
        ("PM", "at 5 pm", "", False),
        ("U.S.", "U.S. aid", "", True),
        ("U.S.", "they told u.s.", "", False),
        ("pakistan", "PAKISTAN CUTS RATES", "", True),
        # Urdu: spelling variants and diacritics fold like item text.
        ("سی پیک", "سي پيک منصوبہ", "", True),
        ('"پاکستان"', "پاکِستان کے وزیر", "", True),
        ('"کراچی"', "كراچي", "", True),
        ("Café", "CAFE talks", "", True),
    ],
)
def test_matches_text(query: str, title: str, body: str, expected: bool) -> None:
    assert matches_text(parse_query(query), title, body) is expected


def test_evaluate_takes_hits_as_the_matcher_reports_them() -> None:
    q = parse_query("IMF title:(loan OR bailout) -Egypt")
    imf, loan, _bailout, egypt = query_terms(q)
    hits: dict[Term, list[Hit]] = {imf: [Hit("body", 4)], loan: [Hit("title", 0)]}
    assert evaluate(q, hits)
    assert not evaluate(q, {imf: [Hit("body", 4)], loan: [Hit("body", 9)]})
    assert not evaluate(q, {**hits, egypt: [Hit("body", 12)]})
    # Plain tuples work too, in any order.
    near = parse_query("a NEAR/2 b")
    a, b = query_terms(near)
    assert evaluate(near, {a: [("body", 30), ("body", 3)], b: [("body", 1)]})
    assert not evaluate(near, {a: [("body", 30)], b: [("body", 1), ("title", 29)]})


def test_explain_lists_the_terms_that_made_it_match() -> None:
    q = parse_query('IMF loan OR bailout -Egypt title:CPEC "drone strike" NEAR/5 Waziristan')
    title = "CPEC: IMF loan and a drone strike in Waziristan"
    hits = scan_hits(q, title, "")
    assert explain(q, hits) == [
        "IMF",
        "loan",
        "title:CPEC",
        '"drone strike" NEAR/5 Waziristan',
    ]
    assert explain(q, scan_hits(q, title, "Egypt")) == []


def test_scan_hits_reports_first_token_positions_per_field() -> None:
    q = parse_query('"F-16" sale')
    f16, sale = query_terms(q)
    hits = scan_hits(q, "F-16 sale", "The sale of F-16s and F 16 parts")
    assert hits[f16] == [Hit("title", 0), Hit("body", 6)]
    assert hits[sale] == [Hit("title", 2), Hit("body", 1)]


# --- printing and properties ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("IMF  AND loan | bailout", "IMF loan OR bailout"),
        ("(IMF loan) OR bailout", "(IMF loan) OR bailout"),
        ("IMF NOT (Egypt OR Kenya)", "IMF -(Egypt OR Kenya)"),
        ("F-16 OR “fighter jets”", '"F 16" OR "fighter jets"'),
        ("intitle:(CPEC  OR Gwadar)", "title:(CPEC OR Gwadar)"),
        ('title:(a NEAR/5 "b c")', 'title:(a NEAR/5 "b c")'),
        ('"OR" gate', '"OR" gate'),
        ("a (b c)", "a b c"),
        ("title:(title:IMF)", "title:IMF"),
    ],
)
def test_format_query_is_canonical(query: str, canonical: str) -> None:
    assert format_query(parse_query(query)) == canonical


# Pieces of query syntax, so generated strings reach deep into the grammar, plus
# arbitrary text mixed in.
_PIECES = st.sampled_from(
    [
        "IMF",
        "loan",
        "US",
        "us",
        "F-16",
        "sanction*",
        "a*",
        "سی",
        "پيک",
        "Café",
        "ﬁne",
        "OR",
        "or",
        "AND",
        "NOT",
        "|",
        "NEAR/5",
        "NEAR",
        "near/3",
        "title:",
        "intitle:",
        "-",
        "–",
        "(",
        ")",
        '"',
        "“",
        "”",
        "*",
        " ",
        " ",
        "\t",
        ":",
    ]
)
_QUERYISH = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=30).map("".join)


# Well-formed queries built from the grammar, with arbitrary Unicode inside words, so the
# round trip is exercised on deep trees and not only on what random text happens to parse.
_WORD = st.one_of(
    st.sampled_from(["IMF", "us", "US", "U.S.", "F-16", "Gwadar", "سي", "پاکِستان", "OR", "ﬁne"]),
    st.text(st.characters(categories=["L", "N", "M"]), min_size=1, max_size=6),
)
_STEM = st.one_of(
    st.sampled_from(["sanction", "IMF", "Pakistan", "پاکستان", "Café"]),
    st.text(st.characters(categories=["L", "N"]), min_size=3, max_size=6),
)
_TERM = st.one_of(
    _WORD,
    _STEM.map(lambda w: w + "*"),
    st.lists(_WORD, min_size=1, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
)
_NEAR = st.tuples(_TERM, st.integers(1, MAX_NEAR_DISTANCE), _TERM).map(
    lambda x: f"{x[0]} NEAR/{x[1]} {x[2]}"
)
_GRAMMAR = st.recursive(
    st.one_of(_TERM, _NEAR),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(" ".join),
        st.tuples(inner, inner).map(" OR ".join),
        st.tuples(inner, inner).map(" AND ".join),
        inner.map(lambda q: f"({q})"),
        inner.map(lambda q: f"title:({q})"),
        st.tuples(inner, inner).map(lambda x: f"{x[0]} -({x[1]})"),
        st.tuples(inner, inner).map(lambda x: f"{x[0]} NOT -{x[1]}"),
        st.tuples(inner, _TERM).map(lambda x: f"({x[0]}) -{x[1]}"),
        st.tuples(inner, _TERM).map(lambda x: f"{x[0]} -title:{x[1]}"),
    ),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(max_size=MAX_QUERY_LENGTH + 20), _QUERYISH, _GRAMMAR))
def test_no_input_crashes_the_parser(text: str) -> None:
    try:
        parse_query(text)
    except QueryError as error:
        assert 1 <= error.column <= len(text) + 1


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_GRAMMAR, _QUERYISH, st.text(max_size=60)))
def test_a_printed_query_parses_back_to_the_same_tree(text: str) -> None:
    try:
        q = parse_query(text)
    except QueryError:
        return
    printed = format_query(q)
    assert parse_query(printed) == q
    assert format_query(parse_query(printed)) == printed


@settings(max_examples=300, deadline=None)
@given(
    _QUERYISH,
    st.lists(
        st.sampled_from(["IMF", "loan", "US", "us", "F", "16", "سی", "پیک", "x"]), max_size=12
    ),
)
def test_evaluation_agrees_with_a_direct_reading_of_the_tree(text: str, words: list[str]) -> None:
    try:
        q = parse_query(text)
    except QueryError:
        return
    body = " ".join(words)
    hits = scan_hits(q, "", body)
    assert matches_text(q, "", body) == evaluate(q, hits)
    if evaluate(q, hits):
        assert explain(q, hits)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                '"',
                "(",
                ")",
                "|",
                "-",
                ":",
                "*",
                " ",
                "\t",
                "\x1f",
                "OR",
                "AND",
                "NOT",
                "NEAR/3",
                "title:",
                "intitle:",
                "us",
                "ISI",
                "f-16",
                "a:b",
                "x",
                "7",
            ]
        ),
        max_size=14,
    )
)
def test_an_ascii_query_is_lexed_as_the_character_by_character_path_lexes_it(
    parts: list[str],
) -> None:
    """The lexer's ASCII fast path (one search per word, no per-character fold) gives the
    tokens, or the error, that the general path gives: the same text with a non-ASCII
    space after it (which folds to a space, so it only moves the end)."""
    from pipeline.core.query import _lex

    query = "".join(parts)

    def lexed(text: str) -> object:
        try:
            return [(t.kind, t.start, t.end, t.text) for t in _lex(text)][:-1]  # EOF apart
        except QueryError as error:
            return str(error)

    assert lexed(query) == lexed(query + "\u3000")


@given(st.lists(st.text(alphabet="aZ9-.Ué", min_size=0, max_size=6), min_size=1, max_size=3))
def test_case_sensitivity_of_ascii_words_follows_the_per_character_rule(
    words: list[str],
) -> None:
    """The ASCII fast path of ``_is_case_sensitive`` decides as the rule does: capital
    acronyms of up to CASE_SENSITIVE_MAX_LETTERS characters, every cased letter A-Z."""
    from pipeline.core.query import CASE_SENSITIVE_MAX_LETTERS, _is_case_sensitive, _is_cased

    def rule(surface: list[str]) -> bool:
        capital = False
        for word in surface:
            cased = [ch for ch in word if _is_cased(ch)]
            if not cased:
                continue
            if len(word) > CASE_SENSITIVE_MAX_LETTERS or not all("A" <= c <= "Z" for c in cased):
                return False
            capital = True
        return capital

    assert _is_case_sensitive(tuple(words)) == rule(words)
