"""One multi-pattern matcher for every theme term and (later) every watchlist term.

Text is matched as its folded token stream (``pipeline.core.text``): the words of a field
joined by single spaces and padded with a space at each end, e.g. ``" us sanctions on f 16 "``.
A term is folded the same way, so the automaton key ``" f 16 "`` can only match whole words,
in Latin and Arabic script alike ("US" never inside "bus", "ISI" never inside "crisis"); a
trailing-wildcard term (``sanction*``) drops the right-hand space and matches word prefixes.
One Aho-Corasick pass (pyahocorasick, in C) over a field reports every occurrence of every
term, overlapping ones included, with token positions. Case-sensitive terms ("US", "PM") are
matched folded and then checked against the field's cased surface.

Terms are registered in sets, each under an owner id (a theme, a lexicon, a watchlist).
Owners can be added and removed at any time: a large *base* automaton holds the bulk of the
keys and a small *delta* automaton holds keys added since the base was built; only the delta
is rebuilt after a change, and the two are merged when the delta grows past a fraction of
the base. Removed owners' keys stay in the automata as dead keys (ignored) until the next
merge. Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import ahocorasick

from pipeline.core.text import (
    fold_surface,
    fold_words,
    join_folded_words,
    surface_words,
    token_texts,
)

_Owner = TypeVar("_Owner", bound=Hashable)
_NON_WORD = re.compile(r"[\W_]+")  # the complement of text._TOKEN: runs between words

# Delta automaton size that triggers a merge into the base: the larger of these.
DELTA_MIN_KEYS = 2_000
DELTA_FRACTION = 0.10


class Hit(NamedTuple):
    """One occurrence of a registered term: tokens ``start`` (inclusive) to ``end``
    (exclusive) of the scanned field."""

    owner: Hashable
    payload: Any
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Pattern:
    """A term compiled for the automaton."""

    term: str  # as written
    key: str  # " a b " (or " a b" for a trailing wildcard)
    ntokens: int
    wildcard: bool
    case_surface: str | None  # the cased words joined by spaces, when case-sensitive


def compile_pattern(term: str, case_sensitive: bool = False) -> Pattern:
    """Fold ``term`` into an automaton key. Raises ValueError when it holds no word."""
    stripped = term.strip()
    wildcard = stripped.endswith("*")
    body = stripped.rstrip("*").strip() if wildcard else stripped
    words = token_texts(body)
    if not words:
        raise ValueError(f"term {term!r} has no letters or digits")
    if wildcard and not _NON_WORD.sub("", body[-1:]):
        # "F-*" would mean "any word after F": not a prefix, refuse rather than guess.
        raise ValueError(f"term {term!r}: a wildcard must follow a letter or digit")
    key = " " + " ".join(words) + ("" if wildcard else " ")
    case_surface = " ".join(surface_words(body)) if case_sensitive else None
    return Pattern(term, key, len(words), wildcard, case_surface)


class Field(NamedTuple):
    """One field of an item prepared for scanning (see ``prepare``)."""

    folded: str  # " w1 w2 ... " folded (case and script variants)
    surface: str  # the same words with their case, aligned char-for-char when ``aligned``
    aligned: bool
    ntokens: int


def prepare(text: str) -> Field:
    """Normalise and tokenise one field: the form ``Matcher.scan`` matches against."""
    return prepare_folded(fold_surface(text))


def prepare_many(*texts: str) -> tuple[Field, list[int]]:
    """Several fields (an item's title and summary) prepared and ``join``ed in one go: one
    normalisation pass and one tokenising pass over them all, with the separator kept as a
    word of its own. Returns the joined field and each field's offset."""
    if len(texts) == 1:
        return prepare(texts[0]), [0]
    prepared = prepare_fields(*texts)
    return prepared.field, prepared.offsets


class Prepared(NamedTuple):
    """Fields prepared by ``prepare_fields``: ``field`` the fields joined (as by ``join``),
    ``offsets`` where each begins in it, and ``text`` the fields normalised by
    ``fold_surface`` (case and punctuation kept) and joined by SEPARATOR with a space
    either side: the text the words were taken from."""

    field: Field
    offsets: list[int]
    text: str


def prepare_fields(*texts: str) -> Prepared:
    """``prepare_many``, with the normalised text the words came from (to quote a hit with
    the punctuation between its words, e.g. "Pak-US" for the words "Pak US")."""
    if len(texts) == 2:  # title and summary: the hot path, spelt out
        title, body = texts
        if SEPARATOR in title:
            title = title.replace(SEPARATOR, " ")
        if SEPARATOR in body:
            body = body.replace(SEPARATOR, " ")
        raw = title + _PADDED_SEPARATOR + body
    else:
        raw = _PADDED_SEPARATOR.join(_clean(text) for text in texts)
    text, words, lowered = fold_words(raw, SEPARATOR)
    if words:
        surface = f" {words} "
        folded = f" {lowered} "
    else:
        surface = folded = " "
    if len(texts) == 2:
        offsets = [0, folded.index(SEPARATOR) + 1]
    else:
        offsets = [0]
        position = folded.find(SEPARATOR)
        while position >= 0:
            offsets.append(position + 1)
            position = folded.find(SEPARATOR, position + 1)
    # tuple.__new__: the NamedTuples without their Python-level constructors (hot path)
    field = _new(
        Field, (folded, surface, len(folded) == len(surface), surface.count(" ") - len(texts))
    )
    return _new(Prepared, (field, offsets, text))


_new = tuple.__new__


def _clean(text: str) -> str:
    return text.replace(SEPARATOR, " ") if SEPARATOR in text else text


def prepare_folded(surface: str) -> Field:
    """``prepare`` for text already through ``fold_surface``."""
    surface = join_folded_words(surface)
    if not surface:
        return Field(" ", " ", True, 0)
    surface = f" {surface} "
    folded = surface.casefold()
    return Field(folded, surface, len(folded) == len(surface), surface.count(" ") - 1)


class _Entry(NamedTuple):
    owner: Hashable
    payload: Any
    ntokens: int
    case_surface: str | None
    wildcard: bool


class Matcher:
    """All registered terms in one Aho-Corasick automaton (base + delta)."""

    def __init__(self) -> None:
        # key → who registered it. A bucket list lives as long as its key is in an
        # automaton (it is the automaton's value too): removal empties it in place, and an
        # empty bucket is a dead key, skipped until the next rebuild drops it.
        self._entries: dict[str, list[_Entry]] = {}
        self._owner_keys: dict[Hashable, set[str]] = {}
        self._base: Any = None  # ahocorasick.Automaton over the keys at the last rebuild
        self._base_size = 0
        self._delta: Any = None  # automaton over the keys added since
        self._delta_keys: set[str] = set()
        self._delta_owners: set[Hashable] = set()  # owners with a key in the delta
        self._delta_dirty = False
        self._dead = 0  # keys with an empty bucket
        # bumped on every change to the entries or the automata (for ``value_ids`` users)
        self.version = 0

    # -- registration ------------------------------------------------------------------

    def add(
        self,
        owner: Hashable,
        terms: Iterable[tuple[Any, ...]],
    ) -> int:
        """Register ``terms`` under ``owner`` (replacing whatever it had): each is
        ``(term, case_sensitive, payload)`` or ``(Pattern, payload)``. Returns the number of
        terms registered. Raises ValueError, naming the term, when one holds no word; the
        owner's earlier terms are gone by then."""
        if owner in self._owner_keys:
            self.remove(owner)
        self.version += 1
        keys: set[str] = set()
        self._owner_keys[owner] = keys
        count = 0
        for spec in terms:
            if isinstance(spec[0], Pattern):
                pattern, payload = spec[0], spec[-1]
            else:
                pattern = compile_pattern(str(spec[0]), bool(spec[1]))
                payload = spec[-1]
            entry = _Entry(owner, payload, pattern.ntokens, pattern.case_surface, pattern.wildcard)
            bucket = self._entries.get(pattern.key)
            if bucket is None:
                self._entries[pattern.key] = [entry]
                self._delta_keys.add(pattern.key)
                self._delta_owners.add(owner)
                self._delta_dirty = True
            else:
                if not bucket:
                    self._dead -= 1  # a dead key comes back to life
                bucket.append(entry)
                if pattern.key in self._delta_keys:
                    self._delta_owners.add(owner)
            keys.add(pattern.key)
            count += 1
        return count

    def remove(self, owner: Hashable) -> bool:
        """Forget every term of ``owner``. True when it was registered."""
        keys = self._owner_keys.pop(owner, None)
        if keys is None:
            return False
        self.version += 1
        for key in keys:
            bucket = self._entries[key]
            bucket[:] = [entry for entry in bucket if entry.owner != owner]
            if not bucket:
                self._dead += 1
        if self._dead > max(DELTA_MIN_KEYS, DELTA_FRACTION * self._base_size):
            self.rebuild()
        return True

    def owners(self) -> list[Hashable]:
        return list(self._owner_keys)

    def __len__(self) -> int:
        """Distinct live keys."""
        return len(self._entries) - self._dead

    # -- automata ----------------------------------------------------------------------

    def _build(self, keys: Iterable[str]) -> Any:
        automaton = ahocorasick.Automaton()
        for key in keys:
            # value: the bucket, how far back the key starts, where its last letter ends
            ends_with_space = key[-1] == " "
            automaton.add_word(key, (self._entries[key], len(key) - 1, 0 if ends_with_space else 1))
        if len(automaton):
            automaton.make_automaton()
            return automaton
        return None

    def rebuild(self) -> None:
        """Merge everything live into a fresh base automaton and empty the delta."""
        self._entries = {key: bucket for key, bucket in self._entries.items() if bucket}
        self._base = self._build(self._entries)
        self._base_size = len(self._entries)
        self._delta_keys = set()
        self._delta_owners = set()
        self._delta = None
        self._delta_dirty = False
        self._dead = 0
        self.version += 1

    def _ready(self) -> None:
        if not self._delta_dirty:
            return
        if len(self._delta_keys) > max(DELTA_MIN_KEYS, DELTA_FRACTION * self._base_size):
            self.rebuild()
        else:
            self._delta = self._build(self._delta_keys)
            self._delta_dirty = False
            self.version += 1

    # -- matching ----------------------------------------------------------------------

    def scan(self, field: Field | str) -> list[Hit]:
        """Every occurrence of every registered term in ``field`` (text or ``prepare``d),
        with token positions, in order of where they end."""
        if isinstance(field, str):
            field = prepare(field)
        folded = field.folded
        hits = []
        for owner, payload, start_char, end_char in self.spans(field):
            start = folded.count(" ", 0, start_char)
            inner = folded.count(" ", start_char + 1, end_char)  # spaces between its words
            hits.append(Hit(owner, payload, start, start + inner + 1))
        return hits

    def spans(self, field: Field) -> list[tuple[Any, Any, int, int]]:
        """The hot path of ``scan``: ``(owner, payload, start, end)`` with character offsets
        into ``field.folded`` (start at the term's leading space, end exclusive, past its
        last letter), in order of where they end. Several fields may be scanned in one call
        by joining their prepared forms with a character no term contains (``join``)."""
        if self._delta_dirty:
            self._ready()
        spans: list[tuple[Any, Any, int, int]] = []
        append = spans.append
        folded = field.folded
        surface = field.surface if field.aligned else None
        for automaton in (self._base, self._delta):
            if automaton is None:
                continue
            for end_index, (bucket, back, adjust) in automaton.iter(folded):
                start_char = end_index - back  # the key's leading space
                end_char = end_index + adjust
                for entry in bucket:
                    wanted = entry[3]  # the cased words of a case-sensitive term
                    if wanted is not None and not (
                        surface.startswith(wanted, start_char + 1)  # the key's spaces fix
                        if surface is not None  # where the words end
                        else _case_ok(field, start_char, wanted, entry.ntokens, entry.wildcard)
                    ):
                        continue
                    append((entry[0], entry[1], start_char, end_char))
        return spans

    def raw_hits(self, field: Field) -> list[list[tuple[int, Any]]]:
        """The automata's own output over ``field``, for callers that summarise hits in
        C-level passes: per automaton (base, then delta when there is one), its hits in
        order of where they end, each ``(end index, value)`` with the value ``(bucket,
        back, adjust)``: the key's entries (``owner``, ``payload``, ``ntokens``,
        ``case_surface``, ``wildcard``), how far back its leading space is, and how far
        past the end index its last letter ends. No case check is made: a bucket holding
        a case-sensitive entry must go through ``spans_of`` (see ``value_ids``)."""
        if self._delta_dirty:
            self._ready()
        folded = field.folded
        return [
            list(automaton.iter(folded)) for automaton in (self._base, self._delta) if automaton
        ]

    def hit_values(self) -> list[tuple[list[_Entry], int, int]]:
        """Every value of the automata, as ``raw_hits`` gives them (the same objects,
        while ``version`` is unchanged: they live as long as their automaton)."""
        if self._delta_dirty:
            self._ready()
        found: list[tuple[list[_Entry], int, int]] = []
        for automaton in (self._base, self._delta):
            if automaton is not None:
                found.extend(automaton.values())
        return found

    def spans_of(
        self, field: Field, hits: Iterable[tuple[int, Any]]
    ) -> list[tuple[Any, Any, int, int]]:
        """``spans`` of some of the ``raw_hits`` of ``field``, case checks included."""
        spans: list[tuple[Any, Any, int, int]] = []
        append = spans.append
        surface = field.surface if field.aligned else None
        for end_index, (bucket, back, adjust) in hits:
            start_char = end_index - back
            end_char = end_index + adjust
            for entry in bucket:
                wanted = entry[3]
                if wanted is not None and not (
                    surface.startswith(wanted, start_char + 1)
                    if surface is not None
                    else _case_ok(field, start_char, wanted, entry.ntokens, entry.wildcard)
                ):
                    continue
                append((entry[0], entry[1], start_char, end_char))
        return spans

    def owner_hits(
        self, field: Field, owners: AbstractSet[_Owner]
    ) -> dict[_Owner, list[tuple[_Owner, Any, int, int]]]:
        """The spans (as ``spans`` gives them) of the terms of ``owners``, per owner, in
        order of where they end, with overlapping spans of one owner resolved as they
        come: a span overlapping the owner's last one replaces it when longer and is
        dropped otherwise ("US dollar" wins over "US" inside it). The tagger's hot path:
        one pass over the base automaton, no list of every span; the delta automaton only
        when one of ``owners`` has keys there (the tagger's never do: it rebuilds)."""
        if self._delta_dirty:
            self._ready()
        if self._delta is not None and not owners.isdisjoint(self._delta_owners):
            late = [span for span in self.spans(field) if span[0] in owners]
            late.sort(key=_span_end)  # each automaton's spans are in order; merge them
            return _resolve(late)
        kept: dict[_Owner, list[tuple[_Owner, Any, int, int]]] = {}
        if self._base is None:
            return kept
        folded = field.folded
        surface = field.surface if field.aligned else None
        for end_index, (bucket, back, adjust) in self._base.iter(folded):
            start = end_index - back
            end = end_index + adjust
            for entry in bucket:
                owner = entry[0]
                if owner not in owners:
                    continue
                wanted = entry[3]  # the cased words of a case-sensitive term
                if wanted is not None and not (
                    surface.startswith(wanted, start + 1)
                    if surface is not None
                    else _case_ok(field, start, wanted, entry[2], entry[4])
                ):
                    continue
                hits = kept.get(owner)
                if hits is None:
                    kept[owner] = [(owner, entry[1], start, end)]
                    continue
                last = hits[-1]
                if start < last[3]:  # overlaps the last one: the longer wins
                    if end - start > last[3] - last[2]:
                        hits[-1] = (owner, entry[1], start, end)
                    continue
                hits.append((owner, entry[1], start, end))
        return kept


def _span_end(span: tuple[Any, Any, int, int]) -> int:
    return span[3]


def _resolve(
    spans: Iterable[tuple[_Owner, Any, int, int]],
) -> dict[_Owner, list[tuple[_Owner, Any, int, int]]]:
    """``owner_hits`` of spans in order of where they end."""
    kept: dict[_Owner, list[tuple[_Owner, Any, int, int]]] = {}
    for span in spans:
        hits = kept.get(span[0])
        if hits is None:
            kept[span[0]] = [span]
            continue
        last = hits[-1]
        if span[2] < last[3]:
            if span[3] - span[2] > last[3] - last[2]:
                hits[-1] = span
            continue
        hits.append(span)
    return kept


def join(fields: Iterable[Field]) -> tuple[Field, list[int]]:
    """Several prepared fields as one, separated so that no term can span two of them, and
    the offset where each begins (to tell which field a span fell in)."""
    offsets: list[int] = []
    folded: list[str] = []
    surface: list[str] = []
    aligned = True
    position = 0
    count = 0
    for item in fields:
        offsets.append(position)
        folded.append(item.folded)
        surface.append(item.surface)
        aligned = aligned and item.aligned
        position += len(item.folded) + 1
        count += item.ntokens
    return Field(SEPARATOR.join(folded), SEPARATOR.join(surface), aligned, count), offsets


SEPARATOR = "\x00"  # never part of a key: keys hold only letters, digits and spaces
_PADDED_SEPARATOR = f" {SEPARATOR} "  # folding keeps it, tokenising keeps it as a word


def case_ok(field: Field, start_char: int, wanted: str, ntokens: int, wildcard: bool) -> bool:
    """Does the cased surface of a hit (its key's leading space at ``start_char``) equal
    a case-sensitive term's cased words (``wanted``)? As ``spans`` checks it."""
    return _case_ok(field, start_char, wanted, ntokens, wildcard)


def _case_ok(field: Field, start_char: int, wanted: str, ntokens: int, wildcard: bool) -> bool:
    """Does the cased surface at the hit equal the term's cased words (``wanted``)?"""
    if field.aligned:
        # The key's own spaces already fixed where the words end.
        return field.surface.startswith(wanted, start_char + 1)
    start = field.folded.count(" ", 0, start_char)
    words = field.surface.split(" ")[1 + start : 1 + start + ntokens]
    joined = " ".join(words)
    return joined.startswith(wanted) if wildcard else joined == wanted


def leftmost_longest(hits: list[Hit]) -> list[Hit]:
    """Drop hits overlapping a longer (or earlier, equally long) hit: "US dollar" wins over
    "US" when both are registered by the same owner."""
    if len(hits) < 2:
        return hits
    ordered = sorted(hits, key=lambda hit: (hit.start, hit.start - hit.end))
    kept: list[Hit] = []
    reach = -1
    for hit in ordered:
        if hit.start >= reach:
            kept.append(hit)
            reach = hit.end
        elif hit.end > reach and hit.end - hit.start > kept[-1].end - kept[-1].start:
            # a longer term starting inside the kept one: the longer reading wins
            kept[-1] = hit
            reach = hit.end
    return kept
