"""Normalisation and tokens, in both scripts."""

from __future__ import annotations

import pytest

from pipeline.core.text import (
    fold_surface,
    fold_words,
    is_urdu,
    joined_words,
    normalize,
    surface_words,
    token_texts,
    tokenize,
)


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("سي پيک", "سی پیک"),  # Arabic yeh
        ("پاكستان", "پاکستان"),  # Arabic kaf
        ("پاکـــستان", "پاکستان"),  # tatweel
        ("پاکِستان", "پاکستان"),  # diacritic
        ("وزيراعظم", "وزیراعظم"),
        ("آرمی", "ارمی"),  # alef madda
    ],
)
def test_urdu_spelling_variants_fold_to_one_form(variant: str, canonical: str) -> None:
    assert normalize(variant) == normalize(canonical)


def test_latin_accents_quotes_and_dashes_are_folded() -> None:
    assert normalize("Café “Zarb-e-Azb” – Pakistan’s") == 'cafe "zarb-e-azb" - pakistan\'s'


def test_tokens_split_on_punctuation_and_keep_the_cased_surface() -> None:
    tokens = tokenize("U.S. F-16 sale to Pakistan’s air force")
    assert [t.text for t in tokens] == [
        "u",
        "s",
        "f",
        "16",
        "sale",
        "to",
        "pakistan",
        "s",
        "air",
        "force",
    ]
    assert tokens[0].surface == "U"


def test_word_boundaries_hold_so_short_terms_never_match_inside_words() -> None:
    assert "isi" not in token_texts("a crisis in Islamabad")
    assert "us" not in token_texts("the bus to Peshawar")


def test_urdu_is_detected_by_script() -> None:
    assert is_urdu("امریکہ اور پاکستان کے تعلقات")
    assert not is_urdu("US and Pakistan")


def test_fold_surface_keeps_case() -> None:
    assert fold_surface("US") == "US"


@pytest.mark.parametrize(
    "text",
    [
        "US sanctions on Pakistan",
        "Pakistan’s “army chief” – in talks… with the U.S.",
        "Café Zürich, naïve ﬁnance; ＩＳＩ chief",
        "STRASSE ß and İstanbul",
        "پاكستان اور چين سي پيك کے دوسرے مرحلے پر متفق۔ عاصم منیر، وزیرِ اعظم",
        "پاکـــستان کی فوج نے کہا: ‘امن’ — US aid",
        "mixed \x01 field \x1e break _under_score 3.14",
        "",
    ],
)
def test_fold_words_is_fold_then_words_then_casefold(text: str) -> None:
    surface, words, folded = fold_words(text)
    assert surface == fold_surface(text)
    assert words == " ".join(surface_words(text)) == joined_words(text)
    assert folded == words.casefold()
    assert fold_words(text + " \x00 " + text, "\x00")[1] == " ".join(
        part for part in (words, "\x00", words) if part
    )
