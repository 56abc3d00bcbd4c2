"""The multi-pattern matcher: word boundaries in both scripts, case, wildcards, owners."""

from __future__ import annotations

import pytest

from pipeline.core.matcher import (
    Hit,
    Matcher,
    compile_pattern,
    leftmost_longest,
    prepare,
    prepare_fields,
    prepare_many,
)


def terms_found(matcher: Matcher, text: str) -> list[object]:
    return [hit.payload for hit in matcher.scan(text)]


@pytest.fixture
def matcher() -> Matcher:
    m = Matcher()
    m.add(
        "theme",
        [
            ("US", True, "US"),
            ("U.S.", True, "U.S."),
            ("ISI", True, "ISI"),
            ("United States", False, "United States"),
            ("F-16", False, "F-16"),
            ("sanction*", False, "sanction*"),
            ("سی پیک", False, "CPEC-ur"),
            ("CPEC", False, "CPEC"),
        ],
    )
    return m


def test_us_never_matches_inside_words_or_the_pronoun(matcher: Matcher) -> None:
    assert terms_found(matcher, "The bus took us to Peshawar, thus") == []
    assert terms_found(matcher, "US envoy meets army chief") == ["US"]
    assert terms_found(matcher, "Talks with the U.S. resume") == ["U.S."]


def test_isi_is_not_found_in_crisis(matcher: Matcher) -> None:
    assert terms_found(matcher, "A crisis of confidence; Isis; isi") == []
    assert terms_found(matcher, "ISI chief visits Kabul") == ["ISI"]


def test_phrases_match_across_punctuation_and_case(matcher: Matcher) -> None:
    assert terms_found(matcher, "the UNITED  STATES’ view") == ["United States"]
    assert terms_found(matcher, "an F 16 and the f-16") == ["F-16", "F-16"]
    assert terms_found(matcher, "F-16s") == []  # "16s" is another word


def test_trailing_wildcard_matches_word_prefixes(matcher: Matcher) -> None:
    assert terms_found(matcher, "sanctioned, sanctions and sanction") == ["sanction*"] * 3
    assert terms_found(matcher, "unsanctioned") == []


def test_urdu_spelling_variants_match_the_same_term(matcher: Matcher) -> None:
    # Arabic yeh and kaf, a diacritic and tatweel: all fold to the configured spelling.
    assert terms_found(matcher, "سي پيك منصوبہ") == ["CPEC-ur"]
    assert terms_found(matcher, "سیِ پیـــک") == ["CPEC-ur"]
    assert terms_found(matcher, "سی پیکر") == []  # a longer word is another word


def test_hits_carry_token_positions(matcher: Matcher) -> None:
    hits = matcher.scan("Pakistan and the United States sign F-16 deal")
    assert Hit("theme", "United States", 3, 5) in hits
    assert Hit("theme", "F-16", 6, 8) in hits


def test_owners_are_added_and_removed_without_disturbing_others(matcher: Matcher) -> None:
    matcher.add("watch:1", [("army chief", False, 1), ("CPEC", False, 2)])
    found = matcher.scan("CPEC and the army chief")
    assert {(hit.owner, hit.payload) for hit in found} == {
        ("theme", "CPEC"),
        ("watch:1", 2),
        ("watch:1", 1),
    }
    assert matcher.remove("watch:1")
    assert not matcher.remove("watch:1")
    assert [(h.owner, h.payload) for h in matcher.scan("CPEC and the army chief")] == [
        ("theme", "CPEC")
    ]
    matcher.add("watch:2", [("army chief", False, 3)])  # a dead key comes back
    assert [h.payload for h in matcher.scan("army chief")] == [3]


def test_re_adding_an_owner_replaces_its_terms() -> None:
    m = Matcher()
    m.add("w", [("alpha", False, 1)])
    m.add("w", [("beta", False, 2)])
    assert terms_found(m, "alpha beta") == [2]


def test_many_additions_merge_into_the_base_automaton() -> None:
    m = Matcher()
    m.add("base", [(f"term{i}", False, i) for i in range(100)])
    m.rebuild()
    for i in range(3000):  # each add rebuilds at most the small delta
        m.add(f"w{i}", [(f"watch{i}", False, i)])
    assert terms_found(m, "term7 watch2999 watch0") == [7, 2999, 0]
    assert len(m) == 3100


def test_a_term_without_words_is_refused() -> None:
    with pytest.raises(ValueError, match="no letters"):
        compile_pattern(" -- ")
    with pytest.raises(ValueError):
        Matcher().add("x", [("...", False, 1)])


def test_joined_fields_never_match_across_the_boundary() -> None:
    m = Matcher()
    m.add("t", [("army chief", False, 1)])
    field, offsets = prepare_many("Pakistan army", "chief of staff")
    assert m.spans(field) == []
    field, offsets = prepare_many("The army chief", "said the army chief")
    starts = [start for _, _, start, _ in m.spans(field)]
    assert starts[0] < offsets[1] <= starts[1]


def test_prepare_folds_case_and_keeps_the_surface() -> None:
    field = prepare("Pakistan’s U.S. envoy")
    assert field.folded == " pakistan s u s envoy "
    assert field.surface == " Pakistan s U S envoy "
    assert field.ntokens == 5


def test_leftmost_longest_keeps_the_longer_overlapping_hit() -> None:
    hits = [Hit("x", "US", 2, 3), Hit("x", "to the US", 0, 3), Hit("x", "aid", 4, 5)]
    assert leftmost_longest(hits) == [Hit("x", "to the US", 0, 3), Hit("x", "aid", 4, 5)]


def _resolved(spans: list[tuple[object, object, int, int]]) -> dict[object, list[object]]:
    """The reference for owner_hits: spans in order of their end, per owner, an overlapping
    span replacing the owner's last one when longer and dropped otherwise."""
    kept: dict[object, list[tuple[object, object, int, int]]] = {}
    for span in sorted(spans, key=lambda span: span[3]):
        hits = kept.setdefault(span[0], [])
        if hits and span[2] < hits[-1][3]:
            if span[3] - span[2] > hits[-1][3] - hits[-1][2]:
                hits[-1] = span
            continue
        hits.append(span)
    return kept  # type: ignore[return-value]


def test_owner_hits_resolves_overlaps_per_owner_and_skips_other_owners() -> None:
    m = Matcher()
    m.add(1, [("US", True, "us"), ("US dollar", False, "usd"), ("dollar", False, "dollar")])
    m.add(2, [("US", True, "us2"), ("sanction*", False, "sanction")])
    m.rebuild()
    m.add("watch:1", [("dollar", False, "w"), ("US sanctions", False, "w2")])  # delta
    field, _ = prepare_many("US dollar slides", "us sanctions on the US, the dollar")
    kept = m.owner_hits(field, {1, 2})
    assert [hit[1] for hit in kept[1]] == ["usd", "us", "dollar"]  # "us" (lower) is no US
    assert [hit[1] for hit in kept[2]] == ["us2", "sanction", "us2"]
    assert "watch:1" not in kept
    wanted = {1, 2}
    assert kept == _resolved([span for span in m.spans(field) if span[0] in wanted])
    # An owner with keys in the delta automaton: both automata, merged in order.
    everyone = {1, 2, "watch:1"}
    assert m.owner_hits(field, everyone) == _resolved(m.spans(field))


def test_prepare_fields_keeps_the_normalised_text_of_each_field() -> None:
    prepared = prepare_fields("Pak–US ties", "The “U.S.” said…")
    assert prepared.text == 'Pak-US ties \x00 The "U.S." said...'
    assert (prepared.field, prepared.offsets) == prepare_many("Pak–US ties", "The “U.S.” said…")
    assert prepared.field.surface == " Pak US ties \x00 The U S said "
