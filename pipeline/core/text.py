"""Text normalisation and tokens shared by theme rules, watchlists and the matcher.

Both scripts are folded the same way before matching, so a term matches however a site
typed it: Unicode NFKC, case folding, Latin accents removed, curly quotes and dashes made
plain, and for Urdu the Arabic/Farsi letter variants unified (yeh, kaf, heh), diacritics
and tatweel dropped. Tokens are runs of letters and digits; a word boundary is any other
character, which holds in Urdu too (no regex ``\\b``, which fails on Arabic script).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
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


def _class_body(spans: tuple[tuple[int, int], ...], wanted: Callable[[str], bool]) -> str:
    """The inside of a regex character class: the code points of the half-open ``spans``
    for which ``wanted`` holds, as ranges. A class within the Basic Multilingual Plane
    compiles to a bitmap, so a search runs in C at a few nanoseconds a character; one
    spanning planes is a slow list of ranges, hence separate classes for the astral planes.
    """
    ranges: list[tuple[int, int]] = []
    for first, last in spans:
        for code in range(first, last):
            if wanted(chr(code)):
                if ranges and ranges[-1][1] == code - 1:
                    ranges[-1] = (ranges[-1][0], code)
                else:
                    ranges.append((code, code))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


def _marks_class(first: int, last: int) -> re.Pattern[str]:
    """A character class of every combining mark (canonical combining class > 0) in
    [first, last). Every such code point lies below U+20000, so the scans are short (~10 ms
    at import) and stripping runs in C instead of a Python loop over each character."""
    return re.compile(f"[{_class_body(((first, last),), lambda c: unicodedata.combining(c) > 0)}]+")


_MARKS = _marks_class(0, 0x10000)
_ASTRAL_MARKS = _marks_class(0x10000, 0x20000)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


# Both folding tables as one map. Folding checks each key with ``in`` and replaces the ones
# present with str.replace: a few dozen scans in C, several times faster than a regex pass
# with a Python call per occurrence or str.translate with a dict (a Python lookup per
# character). The keys are single characters, disjoint between the tables, and no
# replacement is itself a key, so the order of the replacements does not matter.
_FOLD_MAP: dict[str, str] = {
    chr(code): ("" if value is None else value if isinstance(value, str) else chr(value))
    for table in (_URDU_FOLD, _PUNCT_FOLD)
    for code, value in table.items()
}
# Urdu punctuation is in nearly every Urdu sentence: look for each with ``in``; the other
# keys are rare (letter variants, typographic punctuation): one regex pass tells whether
# to look for them.
_FOLD_FREQUENT = tuple((char, _FOLD_MAP[char]) for char in "\u06d4\u060c\u061f")
_FOLD_OTHERS = tuple(item for item in _FOLD_MAP.items() if item not in _FOLD_FREQUENT)
_FOLD_RARE = re.compile("[" + "".join(re.escape(char) for char, _ in _FOLD_OTHERS) + "]")

# Letters and digits of the Latin and Arabic-script blocks. Text made of ASCII and these
# alone has no combining mark (marks are not letters) and nothing to compose, and its words
# can be split bytewise. The negated class finds any other character (a bitmap: C speed).
_WORD_RANGES = ((0x80, 0x250), (0x600, 0x700), (0x750, 0x780), (0x8A0, 0x900), (0xFB50, 0xFF00))
_NOT_PLAIN = re.compile(f"[^\\x00-\\x7f{_class_body(_WORD_RANGES, str.isalnum)}]")


# The usual Arabic-script diacritics: harakat, tanwin, shadda, sukun, hamza and madda
# marks, superscript alef.
_ARABIC_MARKS = (*(chr(code) for code in range(0x064B, 0x0660)), "\u0670")


def _strip_marks(text: str) -> str:
    """Drop combining marks (Latin accents, Arabic harakat) after canonical decomposition."""
    decomposed = unicodedata.normalize("NFD", text)
    if decomposed.isascii():
        return decomposed
    decomposed = _MARKS.sub("", decomposed)
    if _ASTRAL.search(decomposed):
        decomposed = _ASTRAL_MARKS.sub("", decomposed)
    return decomposed


def _fold_full(text: str) -> tuple[str, bool]:
    """``fold_surface`` of any text the long way (NFKC, letter and punctuation variants,
    marks, NFC), and whether the result is known to be plain (see ``_NOT_PLAIN``)."""
    text = unicodedata.normalize("NFKC", text)
    for char, folded in _FOLD_FREQUENT:
        if char in text:
            text = text.replace(char, folded)
    if _FOLD_RARE.search(text):
        for char, folded in _FOLD_OTHERS:
            if char in text:
                text = text.replace(char, folded)
    if text.isascii():
        return text, True
    if unicodedata.is_normalized("NFD", text):  # nothing to decompose (most Urdu prose)
        if not _NOT_PLAIN.search(text):
            return text, True  # and no mark to drop: nothing composes either
        # Urdu diacritics: drop them with str.replace (a regex pass over Arabic text is
        # slow), then look again
        for mark in _ARABIC_MARKS:
            if mark in text:
                text = text.replace(mark, "")
        if not _NOT_PLAIN.search(text):
            return text, True
    return unicodedata.normalize("NFC", _strip_marks(text)), False


def _ascii_folds() -> dict[str, str]:
    """Characters that fold to ASCII on their own, whatever surrounds them: those whose
    compatibility decomposition is ASCII letters followed only by combining marks (accented
    Latin letters, ligatures, full-width forms, "…", no-break spaces) and the punctuation of
    the fold tables that folds to ASCII. In text made of ASCII and these characters alone,
    NFKC decomposes each on its own and composes nothing across them, so folding the text
    is replacing each such character by its own fold (the fast path of English copy)."""
    codes = [
        *range(0x80, 0x250),  # Latin-1, Latin Extended-A and -B
        *range(0x1E00, 0x1F00),  # Latin Extended Additional
        *range(0x2000, 0x2190),  # punctuation, spaces, super/subscripts, letterlike, numbers
        *range(0x2460, 0x2500),  # enclosed alphanumerics
        *range(0xFB00, 0xFB07),  # Latin ligatures
        *range(0xFF01, 0xFF5F),  # full-width ASCII
        0x3000,  # ideographic space
        *(ord(char) for char in _FOLD_MAP),
    ]
    folds: dict[str, str] = {}
    for code in codes:
        char = chr(code)
        decomposed = unicodedata.normalize("NFKD", char)
        if decomposed == char:
            simple = char in _FOLD_MAP
        else:
            simple = decomposed[0].isascii() and all(
                part.isascii() or unicodedata.combining(part) for part in decomposed
            )
        if simple:
            folded = _fold_full(char)[0]
            if folded.isascii():
                folds[char] = folded
    return folds


_ASCII_FOLD = _ascii_folds()
_TYPOGRAPHY = tuple(
    (char, _ASCII_FOLD[char]) for char in "\u2019\u2013\u2026\u201c\u201d\u2018\u2014\u00a0"
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _fold(text: str) -> tuple[str, bool]:
    """``fold_surface``, and whether the result is known to be plain (``_NOT_PLAIN``)."""
    if text.isascii():  # nothing below changes plain ASCII: the common fast path
        return text, True
    # Mostly ASCII (English copy with curly quotes, dashes, "…", an accented name): when
    # every other character folds to ASCII on its own, replace those few and be done. The
    # usual typography first, with ``in`` (a scan in C); then any others, by regex.
    folded = text
    for char, ascii in _TYPOGRAPHY:
        if char in folded:
            folded = folded.replace(char, ascii)
    if folded.isascii():
        return folded, True
    if len(folded) - len(folded.encode("ascii", "ignore")) < 32:  # a few others at most
        others = set(_NON_ASCII.findall(folded))
        if others <= _ASCII_FOLD.keys():
            for char in others:
                folded = folded.replace(char, _ASCII_FOLD[char])
            return folded, True
    return _fold_full(text)


def fold_surface(text: str) -> str:
    """Normalise everything except case: NFKC, marks, letter variants, punctuation."""
    if text.isascii():
        return text
    return _fold(text)[0]


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
    and Urdu prose are split by a byte table in C instead of the Unicode word regex."""
    return fold_words(text)[1]


def fold_words(text: str, keep: str = "") -> tuple[str, str, str]:
    """The matcher's hot path, in one go: ``fold_surface(text)``, its words joined by
    single spaces (``join_folded_words``), and those case-folded.

    ``keep``: an ASCII character that is not a word character (a field break), kept as a
    word of its own; the caller puts spaces around it."""
    if text.isascii():
        surface, plain = text, True
    else:
        surface, plain = _fold(text)
    if surface.isascii():
        table = _ASCII_TABLES.get(keep) or _ascii_table(keep)
        words = b" ".join(surface.encode("ascii").translate(table).split()).decode("ascii")
        return surface, words, words.lower()
    if plain or not _NOT_PLAIN.search(surface):
        data = _utf8_words(surface, keep)
        words = data.decode("utf-8")
        for lead in _LATIN_LEADS:
            if lead in data:
                return surface, words, _casefold_plain(words)
        # No cased letters but ASCII ones (Arabic script has no case): lower those bytewise;
        # the bytes of other characters are >= 0x80 and stay as they are.
        lowered = data.lower()
        return surface, words, words if lowered == data else lowered.decode("utf-8")
    words = " ".join((_token_or(keep) if keep else _TOKEN).findall(surface))
    return surface, words, words.casefold()


def join_folded_words(surface: str, keep: str = "") -> str:
    """The words of already folded (``fold_surface``) text joined by single spaces.

    ``keep``: as for ``fold_words``."""
    if surface.isascii():
        table = _ASCII_TABLES.get(keep) or _ascii_table(keep)
        return b" ".join(surface.encode("ascii").translate(table).split()).decode("ascii")
    if not _NOT_PLAIN.search(surface):
        return _utf8_words(surface, keep).decode("utf-8")
    return " ".join((_token_or(keep) if keep else _TOKEN).findall(surface))


def _utf8_words(surface: str, keep: str) -> bytes:
    """The words of plain text (every non-ASCII character a letter or digit, e.g. Urdu
    prose, whose punctuation folds to ASCII): its UTF-8 bytes split on the ASCII separators,
    in C. A multi-byte character's bytes are all >= 0x80, which the table keeps."""
    table = _UTF8_TABLES.get(keep) or _utf8_table(keep)
    return b" ".join(surface.encode("utf-8").translate(table).split())


# The UTF-8 lead bytes of U+0080-U+024F, the only cased letters of plain text besides ASCII.
_LATIN_LEADS = range(0xC2, 0xCA)  # ints: ``int in bytes`` is a memchr

_UTF8_WORD_BYTES = bytes(
    code if code >= 0x80 or chr(code).isalnum() else 0x20 for code in range(256)
)


@functools.cache
def _ascii_table(keep: str) -> bytes:
    return bytes(
        code if (code < 0x80 and chr(code).isalnum()) or chr(code) == keep else 0x20
        for code in range(256)
    )


@functools.cache
def _utf8_table(keep: str) -> bytes:
    return bytes(
        code if code >= 0x80 or chr(code).isalnum() or chr(code) == keep else 0x20
        for code in range(256)
    )


_ASCII_TABLES = {"": _ASCII_WORD_BYTES, "\x00": _ascii_table("\x00")}
_UTF8_TABLES = {"": _UTF8_WORD_BYTES, "\x00": _utf8_table("\x00")}


@functools.cache
def _token_or(keep: str) -> re.Pattern[str]:
    return re.compile(r"[^\W_]+|" + re.escape(keep))


def _casefold_plain(words: str) -> str:
    """``words.casefold()`` of plain text: ``lower()`` (about twice as fast) unless it has
    one of the few Latin letters on which the two disagree."""
    for char in _CASEFOLD_ONLY:
        if char in words:
            return words.casefold()
    return words.lower()


_CASEFOLD_ONLY = tuple(
    chr(code)
    for first, last in _WORD_RANGES
    for code in range(first, last)
    if chr(code).lower() != chr(code).casefold()
)


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
