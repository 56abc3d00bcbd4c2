"""Text normalisation and tokens shared by theme rules, watchlists and the matcher.

Both scripts are folded the same way before matching, so a term matches however a site
typed it: Unicode NFKC, case folding, Latin accents removed, curly quotes and dashes made
plain, and for Urdu the Arabic/Farsi letter variants unified (yeh, kaf, heh), diacritics
and tatweel dropped. Tokens are runs of letters and digits; a word boundary is any other
character, which holds in Urdu too (no regex ``\\b``, which fails on Arabic script).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Arabic-script letters that Urdu sites type in several ways → one form each.
_URDU_FOLD = str.maketrans(
    {
        "\u064a": "\u06cc",  # Arabic yeh → Farsi/Urdu yeh
        "\u0649": "\u06cc",  # alef maksura → yeh
        "\u06d0": "\u06cc",  # yeh with vertical dots (e) → yeh
        "\u0643": "\u06a9",  # Arabic kaf → keheh
        "\u0647": "\u06c1",  # Arabic heh → heh goal
        "\u06d5": "\u06c1",  # ae → heh goal
        "\u0629": "\u06c1",  # teh marbuta → heh goal
        "\u06c3": "\u06c1",  # teh marbuta goal → heh goal
        "\u0623": "\u0627",  # alef with hamza above → alef
        "\u0625": "\u0627",  # alef with hamza below → alef
        "\u0622": "\u0627",  # alef with madda → alef
        "\u0671": "\u0627",  # alef wasla → alef
        "\u06c2": "\u06c1",  # heh goal with hamza → heh goal
        "\u0624": "\u0648",  # waw with hamza → waw
        "\u0626": "\u06cc",  # yeh with hamza → yeh
        "\u0640": None,  # tatweel
        "\u200c": None,  # zero-width non-joiner
        "\u200d": None,  # zero-width joiner
        "\u200e": None,  # left-to-right mark
        "\u200f": None,  # right-to-left mark
        "\u00ad": None,  # soft hyphen
    }
)

# Typographic punctuation that should not split or block a match.
_PUNCT_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u060c": ",",  # Arabic comma
        "\u061f": "?",  # Arabic question mark
        "\u06d4": ".",  # Urdu full stop
    }
)

# Letters and digits of any script, after marks are gone. Everything else separates words,
# so "Pakistan's" is "pakistan" + "s" and "F-16" is "f" + "16".
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _marks_class(first: int, last: int) -> re.Pattern[str]:
    """A character class of every combining mark (canonical combining class > 0) in
    [first, last). Every such code point lies below U+20000, so the scans are short (~10 ms
    at import) and stripping runs in C instead of a Python loop over each character. The
    Basic Multilingual Plane gets its own class because the regex engine compiles a BMP-only
    class to a bitmap, while one spanning planes is a slow list of ranges.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(first, last):
        if unicodedata.combining(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return re.compile(f"[{parts}]+")


_MARKS = _marks_class(0, 0x10000)
_ASTRAL_MARKS = _marks_class(0x10000, 0x20000)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


# Both folding tables as one map and one character class, so a single regex pass touches
# only the characters that change (str.translate with a dict looks up every character).
# The tables' keys are disjoint and no replacement is itself a key, so one pass equals two.
_FOLD_MAP: dict[str, str] = {
    chr(code): ("" if value is None else value if isinstance(value, str) else chr(value))
    for table in (_URDU_FOLD, _PUNCT_FOLD)
    for code, value in table.items()
}
_FOLD_CHARS = re.compile("[" + "".join(re.escape(ch) for ch in _FOLD_MAP) + "]")


def _fold_char(match: re.Match[str]) -> str:
    return _FOLD_MAP[match.group()]


def _strip_marks(text: str) -> str:
    """Drop combining marks (Latin accents, Arabic harakat) after canonical decomposition."""
    decomposed = unicodedata.normalize("NFD", text)
    if decomposed.isascii():
        return decomposed
    decomposed = _MARKS.sub("", decomposed)
    if _ASTRAL.search(decomposed):
        decomposed = _ASTRAL_MARKS.sub("", decomposed)
    return decomposed


def fold_surface(text: str) -> str:
    """Normalise everything except case: NFKC, marks, letter variants, punctuation."""
    if text.isascii():  # nothing below changes plain ASCII: the common fast path
        return text
    text = unicodedata.normalize("NFKC", text)
    text = _FOLD_CHARS.sub(_fold_char, text)
    text = _strip_marks(text)
    return unicodedata.normalize("NFC", text)


def normalize(text: str) -> str:
    """Full fold for matching: ``fold_surface`` plus case folding."""
    return fold_surface(text).casefold()


@dataclass(frozen=True, slots=True)
class Token:
    """One word: ``text`` is fully folded, ``surface`` keeps the original case."""

    text: str
    surface: str


def tokenize(text: str) -> list[Token]:
    """Words of ``text`` in order, each folded for matching and with its cased surface."""
    surface = fold_surface(text)
    return [Token(match.casefold(), match) for match in _TOKEN.findall(surface)]


def surface_words(text: str) -> list[str]:
    """The cased surfaces of ``tokenize(text)`` without building Token objects (hot path)."""
    return _TOKEN.findall(fold_surface(text))


# ASCII letters and digits kept, every other byte a space: the ASCII fast path of tokenising.
_ASCII_WORD_BYTES = bytes(
    code if chr(code).isascii() and chr(code).isalnum() else 0x20 for code in range(256)
)


def joined_words(text: str) -> str:
    """``" ".join(surface_words(text))``, faster: plain ASCII (most English copy once folded)
    is split by a byte table in C instead of the Unicode word regex."""
    return join_folded_words(fold_surface(text))


def join_folded_words(surface: str) -> str:
    """The words of already folded (``fold_surface``) text joined by single spaces."""
    if surface.isascii():
        return b" ".join(surface.encode("ascii").translate(_ASCII_WORD_BYTES).split()).decode(
            "ascii"
        )
    return " ".join(_TOKEN.findall(surface))


def token_texts(text: str) -> list[str]:
    """Just the folded words."""
    return _TOKEN.findall(normalize(text))


def is_urdu(text: str) -> bool:
    """True when Arabic-script letters outnumber Latin ones (Urdu headlines)."""
    arabic = latin = 0
    for ch in text:
        if "\u0600" <= ch <= "\u06ff" or "\u0750" <= ch <= "\u077f" or "\ufb50" <= ch <= "\ufeff":
            arabic += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
    return arabic > latin
