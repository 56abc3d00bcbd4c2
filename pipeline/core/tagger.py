"""The theme tagger: is an item about Pakistan, is the United States involved, which themes.

Rules are data (``TaggerRules``, built from config/themes.toml by ``pipeline.rules``); this
module reads no files. Every term of every rule is registered in one ``Matcher``; an item's
title and summary are normalised and scanned in one pass (``Matcher.owner_hits``) and the
item is scored from the hits:

- A *lexicon* is a named, weighted term set: the Pakistan anchor, US involvement, foreign
  places, and suppressors (sport, showbiz, local crime, routine weather, consumer notices).
  A *theme* is a lexicon with a threshold, context conditions and penalties.
- Score of a lexicon = sum over the distinct terms found of ``weight``, times the lexicon's
  ``title_weight`` when the term is in the title. Where two terms of one lexicon overlap the
  longer wins, so a zero-weight "US dollar" cancels "US" and "hunger strike" cancels
  "strike". A term with ``requires`` counts only when that lexicon or theme fires on its
  other terms (conditional terms are then added lexicon by lexicon, in the rules' order).
- A lexicon *fires* when its score reaches its threshold. A theme is assigned when its
  score, less the penalty of every penalising lexicon that fired, reaches its threshold and
  its ``requires`` (all) / ``requires_any`` (one) lexicons or themes fire.
- The anchor fires on the text, or with the *source prior*: an item from an outlet in a
  prior country (Pakistan) counts ``prior.anchor_weight`` towards the anchor, unless the
  item is wire copy about elsewhere: its title names a foreign place or leader and no
  Pakistani one (a Pakistani paper's "UK inflation hits 8-month high"), or its text names
  foreign ones and nothing Pakistani at all. US involvement likewise may take a prior from
  official US sources (kind ``government``, country ``US``).
- ``relevant`` = anchored and at least one theme; ``themes`` is empty when not relevant;
  ``us_link`` is decided on every item.

Evidence: ``evidence[theme_id]`` lists what the item said that counted for each assigned
theme: each matched occurrence as it stands in the item (after normalisation: Unicode
forms, Urdu letter variants, diacritics, curly quotes and dashes; a wildcard term by the
whole word), so "Pak-US", "سی پیک", "U.S." or "State Department" rather than the rule or
alias that matched, each once (compared ignoring case), title ones first, then in order of
appearance; a negative term is shown with a leading "-". It is worked out only for the
lexicons shown, from the spans kept for scoring.
Scoring is unchanged by this: an alias's spellings count once however many of them the
item uses, and the evidence lists each one it used. Keys starting with ``_`` are not
themes: ``_pakistan`` (anchor terms), ``_us`` (US terms, when us_link), ``_source`` (what
the source contributed: ``"prior:PK Pakistan Observer"``, ``"prior:PK Pakistan Observer
cancelled by foreign names"``, ``"source:US NBC News"``, ``"us-prior:government"``) and
``_suppressed`` (penalising lexicons that fired, e.g. ``"sport:-8"`` or
``"weather:-2.5>climate"``). ``scores`` holds each theme's adjusted score when above zero,
rounded to two decimals, assigned or not, so a near miss is visible.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.core.matcher import SEPARATOR, Matcher, Prepared, compile_pattern, prepare_fields

THEME_IDS: tuple[str, ...] = (
    "counterterrorism",
    "sanctions",
    "nuclear_missile",
    "military_establishment",
    "afghanistan",
    "china",
    "india",
    "democracy_rights",
    "climate",
    "iran_energy",
    "gulf",
    "economy",
    "us_diplomacy",
    "diaspora",
)


# -- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """One weighted term or phrase. ``text`` may end in ``*`` (word-prefix wildcard)."""

    text: str
    weight: float = 1.0
    case_sensitive: bool = False
    requires: str | None = None  # a lexicon or theme id that must fire for this to count
    group: str = ""  # terms of one group (an alias's spellings) count once, as its first


@dataclass(frozen=True, slots=True)
class Lexicon:
    """A named weighted term set (anchor, US involvement, suppressors, helpers)."""

    id: str
    terms: tuple[Term, ...]
    threshold: float = 1.0
    title_weight: float = 1.5


@dataclass(frozen=True, slots=True)
class ThemeRule:
    """A theme: weighted terms, title weight, threshold, context conditions, penalties."""

    id: str
    name: str
    description: str
    terms: tuple[Term, ...]
    threshold: float = 2.0
    title_weight: float = 1.5
    requires: tuple[str, ...] = ()  # every one of these lexicons/themes must fire
    requires_any: tuple[str, ...] = ()  # at least one of these must fire
    penalties: tuple[tuple[str, float], ...] = ()  # lexicon id → subtracted when it fires


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the configured feeds say about a source (a FeedSource, reduced)."""

    url: str = ""
    title: str = ""
    language: str = ""
    country: str = ""
    kind: str = ""


@dataclass(frozen=True, slots=True)
class SourcePrior:
    """How the source counts as evidence."""

    anchor_countries: tuple[str, ...] = ("PK",)
    anchor_weight: float = 2.0
    cancel_lexicon: str | None = "foreign"  # in the title, without an anchor there: no prior
    us_countries: tuple[str, ...] = ("US",)
    us_kinds: tuple[str, ...] = ("government",)
    us_weight: float = 2.0


@dataclass(frozen=True)
class TaggerRules:
    themes: tuple[ThemeRule, ...]
    lexicons: tuple[Lexicon, ...]
    anchor: str = "pakistan"  # lexicon id of the Pakistan anchor
    us: str = "us"  # lexicon id of US involvement
    text_anchor: str = "pakistan_text"  # fires when the anchor fires on the text alone
    penalties: tuple[tuple[str, float], ...] = ()  # applied to every theme
    prior: SourcePrior = field(default_factory=SourcePrior)
    sources: Mapping[str, SourceInfo] = field(default_factory=dict)  # see source_keys()


# -- items ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagInput:
    """One item as ``qasid tag`` reads it. ``summary`` may hold HTML."""

    id: Any = None
    title: str = ""
    summary: str = ""
    link: str = ""
    published: str = ""
    source: str = ""
    feed_url: str = ""


@dataclass(slots=True)
class TagResult:
    id: Any
    relevant: bool
    us_link: bool
    themes: list[str]
    scores: dict[str, float]
    evidence: dict[str, list[str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "relevant": self.relevant,
            "us_link": self.us_link,
            "themes": self.themes,
            "scores": self.scores,
            "evidence": self.evidence,
        }


_TAG = re.compile(r"<[^>]*>|<!--.*?-->", re.DOTALL)
_SPACES = re.compile(r"\s+")


def plain_text(markup: str) -> str:
    """HTML (or plain text) → plain text: tags dropped, entities decoded, spaces collapsed."""
    if "<" in markup:
        markup = _TAG.sub(" ", markup)
    if "&" in markup:
        markup = html.unescape(markup)
    return _SPACES.sub(" ", markup).strip()


# -- source lookup -------------------------------------------------------------------------

_NAME_NOISE = re.compile(r"[^\w]+")


def _name_key(name: str) -> str:
    name = name.casefold().strip()
    for sep in (" – ", " — ", " - ", " | ", ": "):
        name = name.split(sep)[0]
    name = _NAME_NOISE.sub(" ", name).strip()
    if name.startswith("the "):
        name = name[4:]
    return "name:" + name


def _url_keys(url: str) -> list[str]:
    """Most to least specific keys for a feed URL: host+path+query, host+path, host."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    host = (parts.hostname or "").casefold()
    if host.startswith("www."):
        host = host[4:]
    if not host:
        return []
    path = parts.path.rstrip("/")
    keys = []
    if parts.query:
        keys.append(f"url:{host}{path}?{parts.query}")
    keys.append(f"url:{host}{path}")
    keys.append(f"host:{host}")
    return keys


def source_keys(info: SourceInfo) -> list[str]:
    """The lookup keys under which ``info`` is indexed (URL forms, host, outlet name)."""
    keys = _url_keys(info.url) if info.url else []
    if info.title:
        keys.append(_name_key(info.title))
    return keys


def build_source_index(sources: list[SourceInfo]) -> dict[str, SourceInfo]:
    """Index sources by every key; a host or name shared by outlets of different countries
    is left out (ambiguous), the first of equal ones wins."""
    index: dict[str, SourceInfo] = {}
    ambiguous: set[str] = set()
    for info in sources:
        for key in source_keys(info):
            known = index.get(key)
            if known is None:
                if key not in ambiguous:
                    index[key] = info
            elif known.country != info.country and not key.startswith("url:"):
                ambiguous.add(key)
                del index[key]
    return index


# -- the tagger ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Lex:
    id: str
    weights: list[float]
    requires: list[int]  # per term: index of the required lexicon, -1 when none
    threshold: float
    title_weight: float
    theme: ThemeRule | None = None
    theme_requires: tuple[int, ...] = ()
    theme_requires_any: tuple[int, ...] = ()
    theme_penalties: tuple[tuple[int, float], ...] = ()
    theme_penalty_labels: tuple[tuple[int, float, str], ...] = ()  # with "_suppressed" text
    conditional: bool = False  # any term with ``requires``
    wildcards: bool = False  # any term with a trailing wildcard
    title_weights: list[float] = field(default_factory=list)  # per term: weight in the title
    # Per term, how evidence shows it: None (weight 0: not shown), "" (as matched), "-"
    # (negative: with a leading "-"), or (lexicon, "" or "-") when it has a condition.
    shows: list[Any] = field(default_factory=list)
    canonical: list[int] = field(default_factory=list)  # term → first term of its group


@dataclass(frozen=True, slots=True)
class _Source:
    anchor_weight: float = 0.0
    label: str = ""
    cancelled: str = ""
    us_weight: float = 0.0
    us_label: str = ""


_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


def _quote(prepared: Prepared, start: int, end: int, words: str, separator: int) -> str:
    """The words of a hit (``start`` to ``end`` in the prepared field; ``words``: them
    joined by single spaces, or "" to look them up) as the item has them: with what stood
    between them there ("Pak-US", "U.S."), case and script as normalised. ``separator``:
    where the fields are joined in ``prepared.text`` (-1 when there is one field)."""
    if not words:  # case folding changed lengths ("ß"): count words instead of characters
        field = prepared.field
        folded = field.folded
        stop = folded.find(" ", end)
        first = folded.count(" ", 0, start)
        count = folded.count(" ", start + 1, stop) + 1
        words = " ".join(field.surface.split(" ")[1 + first : 1 + first + count])
        if " " not in words:
            return words
    # The words lie in the normalised text no earlier than in the field, which has single
    # spaces between words and none before the first: search from there.
    text = prepared.text
    offsets = prepared.offsets
    if separator >= 0 and start >= offsets[1]:  # in the second field (the summary)
        limit = len(text)
        lowest = separator + 2 + start - offsets[1]
    else:
        limit = separator - 1 if separator >= 0 else len(text)
        lowest = start
    size = len(words)
    after = lowest + size
    if (
        text[lowest:after] == words
        and (after == limit or not text[after].isalnum())
        and (lowest == 0 or not text[lowest - 1].isalnum())
    ):
        return words  # where it can first be, and as the field has it
    head = words.partition(" ")[0]
    pattern = None
    position = text.find(head, lowest, limit)
    while position >= 0:
        if position == 0 or not text[position - 1].isalnum():
            after = position + size
            if text[position:after] == words and (after == limit or not text[after].isalnum()):
                return words  # separated by single spaces there too
            if pattern is None:
                pattern = _words_pattern(words)
            match = pattern.match(text, position, limit)
            if match is not None:
                found = match.group()
                after = match.end()
                if text[after : after + 1] == "." and _ABBREVIATION.fullmatch(found):
                    found += "."  # "U.S." rather than "U.S"
                return found
        position = text.find(head, position + 1, limit)
    return words


@functools.lru_cache(maxsize=4096)
def _words_pattern(words: str) -> re.Pattern[str]:
    """``words`` (joined by single spaces) as whole words separated by anything else."""
    return re.compile(r"[\W_]+".join(re.escape(word) for word in words.split(" ")) + r"(?![^\W_])")


class Tagger:
    """Tags items against theme rules. Build once, call ``tag`` per item."""

    def __init__(self, rules: TaggerRules) -> None:
        self.rules = rules
        self.theme_ids = [theme.id for theme in rules.themes]
        lexicons: list[_Lex] = []
        index: dict[str, int] = {}
        specs: list[tuple[str, tuple[Term, ...]]] = []
        for lexicon in rules.lexicons:
            if lexicon.id in index:
                raise ValueError(f"lexicon {lexicon.id!r} defined twice")
            index[lexicon.id] = len(lexicons)
            lexicons.append(_Lex(lexicon.id, [], [], lexicon.threshold, lexicon.title_weight))
            specs.append((lexicon.id, lexicon.terms))
        for theme in rules.themes:
            if theme.id in index:
                raise ValueError(f"theme {theme.id!r} clashes with another rule id")
            index[theme.id] = len(lexicons)
            lexicons.append(_Lex(theme.id, [], [], theme.threshold, theme.title_weight, theme))
            specs.append((theme.id, theme.terms))

        # The text-only anchor: a rule id conditions can name, with no terms of its own.
        index[rules.text_anchor] = len(lexicons)
        lexicons.append(_Lex(rules.text_anchor, [], [], 0.0, 1.0))
        specs.append((rules.text_anchor, ()))

        def ref(name: str, where: str) -> int:
            if name not in index:
                raise ValueError(f"{where}: unknown lexicon or theme {name!r}")
            return index[name]

        self._matcher = Matcher()
        for position, (owner, terms) in enumerate(specs):
            lex = lexicons[position]
            patterns = []
            first_of: dict[str, int] = {}
            for number, term in enumerate(terms):
                try:
                    pattern = compile_pattern(term.text, term.case_sensitive)
                except ValueError as error:
                    raise ValueError(f"{owner}: {error}") from error
                lex.weights.append(term.weight)
                lex.wildcards = lex.wildcards or pattern.wildcard
                lex.requires.append(ref(term.requires, owner) if term.requires else -1)
                lex.canonical.append(
                    first_of.setdefault(term.group, number) if term.group else number
                )
                patterns.append((pattern, lex.canonical[number]))  # its group counts once
            lex.conditional = any(needed >= 0 for needed in lex.requires)
            lex.title_weights = [weight * lex.title_weight for weight in lex.weights]
            lex.shows = [
                None
                if weight == 0
                else (needed, "-" if weight < 0 else "")
                if needed >= 0
                else ("-" if weight < 0 else "")
                for weight, needed in zip(lex.weights, lex.requires, strict=True)
            ]
            self._matcher.add(position, patterns)
            if lex.theme is not None:
                lex.theme_requires = tuple(ref(n, owner) for n in lex.theme.requires)
                lex.theme_requires_any = tuple(ref(n, owner) for n in lex.theme.requires_any)
                lex.theme_penalties = tuple(
                    (ref(n, owner), amount) for n, amount in lex.theme.penalties
                )
                lex.theme_penalty_labels = tuple(
                    (needed, amount, f"{n}:-{amount:g}>{owner}")
                    for (needed, amount), n in zip(
                        lex.theme_penalties, (n for n, _ in lex.theme.penalties), strict=True
                    )
                )
        self._lex = lexicons
        self._anchor = ref(rules.anchor, "anchor")
        self._us = ref(rules.us, "us")
        self._text_anchor = index[rules.text_anchor]
        cancel = rules.prior.cancel_lexicon
        self._cancel = ref(cancel, "prior.cancel_lexicon") if cancel else -1
        self._penalties = tuple((ref(n, "penalties"), amount) for n, amount in rules.penalties)
        self._penalty_labels = tuple(
            (owner, amount, f"{lexicons[owner].id}:-{amount:g}")
            for owner, amount in self._penalties
        )
        self._rounded: dict[float, float] = {}  # score → round(score, 2), for the few sums
        self._themes = [index[theme.id] for theme in rules.themes]
        self._theme_range = (len(rules.lexicons), len(rules.lexicons) + len(rules.themes) - 1)
        assert self._themes == list(range(self._theme_range[0], self._theme_range[1] + 1))
        self._thresholds = [lex.threshold for lex in lexicons]
        self._conditional = any(lex.conditional for lex in lexicons)
        # The cancel lexicon when no rule refers to it: only its presence is looked at.
        referenced = {self._anchor, self._us, self._text_anchor, *self._themes}
        referenced.update(owner for owner, _ in self._penalties)
        for lex in lexicons:
            referenced.update(needed for needed in lex.requires if needed >= 0)
            referenced.update(lex.theme_requires, lex.theme_requires_any)
            referenced.update(owner for owner, _ in lex.theme_penalties)
        self._presence_only = self._cancel if self._cancel not in referenced else -1
        self._owners = frozenset(range(len(lexicons)))  # the rules' owner ids on the matcher
        # Without the source prior, a cancel lexicon no rule refers to does not matter.
        self._owners_no_prior = self._owners - {self._presence_only}
        # Per lexicon: (per term (weight in the summary, weight in the title), requires or
        # None when no term has a condition); (None, None) for the cancel lexicon when only
        # its presence counts.
        self._weighing: list[tuple[Any, Any]] = [
            (None, None)
            if owner == self._presence_only
            else (
                list(zip(lex.weights, lex.title_weights, strict=True)),
                lex.requires if lex.conditional else None,
            )
            for owner, lex in enumerate(lexicons)
        ]
        self._sources = rules.sources
        self._source_cache: dict[tuple[str, str], _Source] = {}
        self._matcher.rebuild()

    @property
    def matcher(self) -> Matcher:
        """The shared matcher. Watchlists may register their own terms on it under owner
        ids that are not ints (the tagger's rules are the int owners), e.g. "watch:12"."""
        return self._matcher

    def source_info(self, item: TagInput) -> SourceInfo | None:
        """The configured source ``item`` comes from, by feed URL, then host, then name."""
        if not self._sources:
            return None
        for key in _url_keys(item.feed_url or ""):
            info = self._sources.get(key)
            if info is not None:
                return info
        if item.source:
            return self._sources.get(_name_key(item.source))
        return None

    def tag(self, item: TagInput) -> TagResult:
        lexicons = self._lex
        summary = item.summary or ""
        if "<" in summary or "&" in summary:  # markup or entities: the words only
            summary = plain_text(summary)
        prepared = prepare_fields(item.title or "", summary)
        body_start = prepared.offsets[1]
        source = self._source_cache.get((item.feed_url or "", item.source or ""))
        if source is None:
            source = self._source_evidence(item)
        # Per lexicon, the hits that count, in order; of overlapping hits of one lexicon,
        # the longer ("US dollar" over "US"). A hit's term is the first of its group (an
        # alias's spellings), so that the group counts once.
        kept = self._matcher.owner_hits(
            prepared.field, self._owners if source.anchor_weight else self._owners_no_prior
        )

        # Phase 1: unconditional terms. Each term counts once, in the title when any of its
        # hits is there; title hits come before body ones, so its first hit tells.
        scores: dict[int, float] = {}
        weighing = self._weighing
        for owner, hits in kept.items():
            weights, requires = weighing[owner]
            if weights is None:
                continue  # the cancel lexicon, when no rule refers to it: only its presence
            if requires is None and len(hits) == 1:
                first = hits[0]
                scores[owner] = 0.0 + weights[first[1]][first[2] < body_start]
                continue
            total = 0.0
            counted: set[int] = set()
            for _, number, start, _ in hits:
                if number in counted:
                    continue
                counted.add(number)
                if requires is None or requires[number] < 0:
                    total += weights[number][start < body_start]
            scores[owner] = total

        # Source prior: the anchor and US involvement.
        evidence: dict[str, list[str]] = {}
        anchor_text = scores.get(self._anchor, 0.0)
        if source.anchor_weight:
            anchor_hits = kept.get(self._anchor)
            foreign_hits = kept.get(self._cancel)
            # Wire copy about elsewhere: a foreign title without a Pakistani name in it, or
            # foreign names in the text and no Pakistani one anywhere. (Title hits come
            # first: a lexicon's first hit tells whether it has one in the title.)
            if foreign_hits and (
                (
                    foreign_hits[0][2] < body_start
                    and not (anchor_hits and anchor_hits[0][2] < body_start)
                )
                or not anchor_hits
            ):
                evidence["_source"] = [source.cancelled]  # "cancelled by foreign names"
            else:
                scores[self._anchor] = anchor_text + source.anchor_weight
                evidence["_source"] = [source.label]
        elif source.label:
            evidence["_source"] = [source.label]
        if source.us_weight:
            scores[self._us] = scores.get(self._us, 0.0) + source.us_weight
            evidence.setdefault("_source", []).append(source.us_label)

        thresholds = self._thresholds
        fired: set[int] = set()
        for owner, score in scores.items():
            if score >= thresholds[owner]:
                fired.add(owner)
        if anchor_text >= thresholds[self._anchor]:
            fired.add(self._text_anchor)
        # Phase 2: conditional terms, now that we know what fired, lexicon by lexicon in
        # the order of the rules (a lexicon whose conditional terms make it fire, or stop
        # short, counts as such for the ones after it).
        for owner in sorted(kept) if self._conditional else ():
            lex = lexicons[owner]
            if not lex.conditional:
                continue
            hits = kept[owner]
            extra = 0.0
            counted = set()
            for _, number, start, _ in hits:
                if number in counted:
                    continue
                counted.add(number)
                needed = lex.requires[number]
                if needed >= 0 and needed in fired:
                    extra += (
                        lex.title_weights[number] if start < body_start else lex.weights[number]
                    )
            if extra:
                scores[owner] = scores.get(owner, 0.0) + extra
                if scores[owner] >= lex.threshold:
                    fired.add(owner)
                else:
                    fired.discard(owner)

        penalty = 0.0
        suppressed: list[str] = []
        for owner, amount, label in self._penalty_labels:
            if owner in fired:
                penalty += amount
                suppressed.append(label)

        anchored = self._anchor in fired
        us_link = self._us in fired
        themes: list[int] = []
        theme_scores: dict[str, float] = {}
        rounded = self._rounded
        first_theme, last_theme = self._theme_range
        for owner in sorted(scores):  # themes in their order: the order of their ids
            if owner < first_theme or owner > last_theme:
                continue
            raw = scores[owner]
            lex = lexicons[owner]
            score = raw - penalty
            for needed, amount, label in lex.theme_penalty_labels:
                if needed in fired:
                    score -= amount
                    suppressed.append(label)
            if score > 0:
                shown = rounded.get(score)
                if shown is None:
                    if len(rounded) > 50_000:
                        rounded.clear()
                    shown = rounded[score] = round(score, 2)
                theme_scores[lex.id] = shown
            if score < lex.threshold:
                continue
            if not fired.issuperset(lex.theme_requires):
                continue
            if lex.theme_requires_any and fired.isdisjoint(lex.theme_requires_any):
                continue
            themes.append(owner)

        relevant = anchored and bool(themes)
        if not relevant:
            themes = []
        # Evidence, for the lexicons shown only: what the item said that counted.
        shown_lexicons: list[tuple[str, list[tuple[Any, Any, int, int]]]] = []
        theme_ids: list[str] = []
        for owner in themes:
            theme_ids.append(lexicons[owner].id)
            shown_lexicons.append((theme_ids[-1], kept[owner]))
        if self._anchor in kept:
            shown_lexicons.append(("_pakistan", kept[self._anchor]))
        if us_link and self._us in kept:
            shown_lexicons.append(("_us", kept[self._us]))
        if shown_lexicons:
            self._evidence(shown_lexicons, fired, prepared, evidence)
        if suppressed:
            evidence["_suppressed"] = suppressed
        return TagResult(item.id, relevant, us_link, theme_ids, theme_scores, evidence)

    def _evidence(
        self,
        shown: list[tuple[str, list[tuple[Any, Any, int, int]]]],
        fired: set[int],
        prepared: Prepared,
        evidence: dict[str, list[str]],
    ) -> None:
        """Fill ``evidence[key]`` for each lexicon's ``hits`` (kept by ``tag``) in ``shown``:
        the hits that counted (the term has a weight and its condition holds), each quoted
        as the item has it, once for the same words (ignoring case and what separates
        them), in order: title first."""
        lexicons = self._lex
        field = prepared.field
        folded = field.folded
        surface = field.surface if field.aligned else None
        quoted: dict[tuple[int, int], str] = {}  # a hit's span → its words as in the item
        separator = -2  # where prepared.text joins the fields, once needed
        for key, hits in shown:
            lex = lexicons[hits[0][0]]
            shows = lex.shows
            conditional = lex.conditional
            wildcards = lex.wildcards
            words: list[str] = []
            seen: dict[str, None] = {}
            for _, number, start, end in hits:
                show = shows[number]  # see _Lex.shows
                if show is None:
                    continue
                if conditional and type(show) is tuple:
                    if show[0] not in fired:
                        continue
                    show = show[1]
                # The hit's words, folded, to the end of the last (a wildcard hit ends
                # inside it): a repeat is skipped before any quoting.
                stop = folded.find(" ", end) if wildcards and folded[end] != " " else end
                said = show + folded[start + 1 : stop] if show else folded[start + 1 : stop]
                if said in seen:
                    continue
                seen[said] = None
                if surface is not None:
                    text = surface[start + 1 : stop]
                    if " " in text:  # several words: as the item separates them
                        known = quoted.get((start, stop))
                        if known is None:
                            if separator == -2:
                                separator = prepared.text.find(SEPARATOR)
                            known = _quote(prepared, start, stop, text, separator)
                            quoted[start, stop] = known
                        text = known
                else:  # case folding changed lengths ("ß"): count words instead
                    if separator == -2:
                        separator = prepared.text.find(SEPARATOR)
                    text = _quote(prepared, start, stop, "", separator)
                words.append(show + text if show else text)
            evidence[key] = words

    def _source_evidence(self, item: TagInput) -> _Source:
        """What the item's source contributes (cached per feed URL and source name)."""
        key = (item.feed_url or "", item.source or "")
        cached = self._source_cache.get(key)
        if cached is not None:
            return cached
        info = self.source_info(item)
        prior = self.rules.prior
        if info is None:
            result = _Source()
        else:
            name = f"{info.country or '-'} {info.title}".strip()
            anchor = info.country in prior.anchor_countries
            us = info.country in prior.us_countries and info.kind in prior.us_kinds
            result = _Source(
                anchor_weight=prior.anchor_weight if anchor else 0.0,
                label=f"prior:{name}" if anchor else f"source:{name}",
                cancelled=f"prior:{name} cancelled by foreign names",
                us_weight=prior.us_weight if us else 0.0,
                us_label=f"us-prior:{info.kind}",
            )
        if len(self._source_cache) > 10_000:
            self._source_cache.clear()
        self._source_cache[key] = result
        return result
