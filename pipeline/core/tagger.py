"""The theme tagger: is an item about Pakistan, is the United States involved, which themes.

Rules are data (``TaggerRules``, built from config/themes.toml by ``pipeline.rules``); this
module reads no files. Every term of every rule is registered in one ``Matcher``; an item is
scanned once per field (title, summary) and scored from the hits:

- A *lexicon* is a named, weighted term set: the Pakistan anchor, US involvement, foreign
  places, and suppressors (sport, showbiz, local crime, routine weather, consumer notices).
  A *theme* is a lexicon with a threshold, context conditions and penalties.
- Score of a lexicon = sum over the distinct terms found of ``weight``, times the lexicon's
  ``title_weight`` when the term is in the title. Where two terms of one lexicon overlap the
  longer wins, so a zero-weight "US dollar" cancels "US" and "hunger strike" cancels
  "strike". A term with ``requires`` counts only when that lexicon or theme fires too.
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
theme: the matched text as it stands in the item (after normalisation: Unicode forms, Urdu
letter variants, diacritics, curly quotes and dashes), so "Pak-US", "سی پیک" or "State
Department" rather than the rule or alias that matched, each once (compared ignoring case),
title ones first, then in order of appearance; a negative term is shown with a leading "-".
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

from pipeline.core.matcher import Field, Matcher, compile_pattern, prepare_many
from pipeline.core.text import fold_surface

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
    conditional: bool = False  # any term with ``requires``
    canonical: list[int] = field(default_factory=list)  # term → first term of its group


@dataclass(frozen=True, slots=True)
class _Source:
    anchor_weight: float = 0.0
    label: str = ""
    cancelled: str = ""
    us_weight: float = 0.0
    us_label: str = ""


_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


class _Said:
    """The item's text as matched, to quote in evidence. A hit is a span of the prepared
    field (words joined by single spaces); its words are quoted from the normalised title
    or summary with whatever stood between them there ("Pak-US", "U.S."), found on demand:
    only for the lexicons shown, and only for hits of several words."""

    __slots__ = ("_body_start", "_field", "_folded", "_texts")

    def __init__(self, field: Field, body_start: int, title: str, summary: str) -> None:
        self._field = field
        self._body_start = body_start
        self._texts = (title, summary)
        self._folded: list[str | None] = [None, None]

    def text(self, start: int, end: int) -> str:
        field = self._field
        folded = field.folded
        stop = folded.find(" ", end)  # the end of the last word (a wildcard hit ends inside)
        if field.aligned:
            words = field.surface[start + 1 : stop]
        else:  # case folding changed lengths (e.g. "ß"): count words instead of characters
            first = folded.count(" ", 0, start)
            count = folded.count(" ", start + 1, stop) + 1
            words = " ".join(field.surface.split(" ")[1 + first : 1 + first + count])
        if " " not in words:
            return words  # one word: the same in the item as in the field
        part = 0 if start < self._body_start else 1
        text = self._folded[part]
        if text is None:
            text = self._folded[part] = fold_surface(self._texts[part])
        quoted = _find_words(text, tuple(words.split(" ")))
        return quoted or words


def _find_words(text: str, words: tuple[str, ...]) -> str:
    """The first place ``text`` has ``words`` as whole words in a row, with what separates
    them there, or "" when it has not."""
    pattern = _words_pattern(words)
    first = words[0]
    position = text.find(first)
    while position >= 0:
        if position == 0 or not text[position - 1].isalnum():
            match = pattern.match(text, position)
            if match is not None:
                found = match.group()
                after = match.end()
                if text[after : after + 1] == "." and _ABBREVIATION.fullmatch(found):
                    found += "."  # "U.S." rather than "U.S"
                return found
        position = text.find(first, position + 1)
    return ""


@functools.lru_cache(maxsize=4096)
def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"[\W_]+".join(re.escape(word) for word in words) + r"(?![^\W_])")


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
                lex.requires.append(ref(term.requires, owner) if term.requires else -1)
                lex.canonical.append(
                    first_of.setdefault(term.group, number) if term.group else number
                )
                patterns.append((pattern, number))
            lex.conditional = any(needed >= 0 for needed in lex.requires)
            self._matcher.add(position, patterns)
            if lex.theme is not None:
                lex.theme_requires = tuple(ref(n, owner) for n in lex.theme.requires)
                lex.theme_requires_any = tuple(ref(n, owner) for n in lex.theme.requires_any)
                lex.theme_penalties = tuple(
                    (ref(n, owner), amount) for n, amount in lex.theme.penalties
                )
        self._lex = lexicons
        self._anchor = ref(rules.anchor, "anchor")
        self._us = ref(rules.us, "us")
        self._text_anchor = index[rules.text_anchor]
        cancel = rules.prior.cancel_lexicon
        self._cancel = ref(cancel, "prior.cancel_lexicon") if cancel else -1
        self._penalties = tuple((ref(n, "penalties"), amount) for n, amount in rules.penalties)
        self._themes = [index[theme.id] for theme in rules.themes]
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
        both, offsets = prepare_many(item.title or "", summary)
        body_start = offsets[1]
        # Per lexicon: term number → found in the title? Overlapping hits of one lexicon:
        # the longer wins. Spans arrive ordered by where they end, so each lexicon's latest
        # hit waits in ``pending`` until the next one shows it was not inside a longer one.
        found: dict[int, dict[int, bool]] = {}
        pending: dict[int, tuple[int, int, int]] = {}  # owner → (start, end, term)
        spans = self._matcher.spans(both)
        for owner, number, start, end in spans:
            if type(owner) is not int:
                continue  # another owner's term (a watchlist) on the shared matcher
            previous = pending.get(owner)
            if previous is not None:
                if start < previous[1]:  # overlaps the pending hit: keep the longer
                    if end - start > previous[1] - previous[0]:
                        pending[owner] = (start, end, number)
                    continue
                self._commit(found, owner, previous, body_start)
            pending[owner] = (start, end, number)
        for owner, previous in pending.items():
            self._commit(found, owner, previous, body_start)

        # Phase 1: unconditional terms.
        scores: dict[int, float] = {}
        for owner, terms in found.items():
            lex = lexicons[owner]
            weights = lex.weights
            title_weight = lex.title_weight
            total = 0.0
            if lex.conditional:
                requires = lex.requires
                for number, in_title in terms.items():
                    if requires[number] < 0:
                        total += weights[number] * title_weight if in_title else weights[number]
            else:
                for number, in_title in terms.items():
                    total += weights[number] * title_weight if in_title else weights[number]
            scores[owner] = total

        # Source prior: the anchor and US involvement.
        source = self._source_evidence(item)
        evidence: dict[str, list[str]] = {}
        anchor_text = scores.get(self._anchor, 0.0)
        if source.anchor_weight:
            anchor_terms = found.get(self._anchor)
            foreign_terms = found.get(self._cancel) if self._cancel >= 0 else None
            # Wire copy about elsewhere: a foreign title without a Pakistani name in it, or
            # foreign names in the text and no Pakistani one anywhere.
            if foreign_terms and (
                (any(foreign_terms.values()) and not (anchor_terms and any(anchor_terms.values())))
                or not anchor_terms
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

        fired = {owner for owner, score in scores.items() if score >= lexicons[owner].threshold}
        if anchor_text >= lexicons[self._anchor].threshold:
            fired.add(self._text_anchor)
        # Phase 2: conditional terms, now that we know what fired.
        for owner, terms in found.items():
            lex = lexicons[owner]
            if not lex.conditional:
                continue
            extra = 0.0
            for number, in_title in terms.items():
                needed = lex.requires[number]
                if needed >= 0 and needed in fired:
                    weight = lex.weights[number]
                    extra += weight * lex.title_weight if in_title else weight
            if extra:
                scores[owner] = scores.get(owner, 0.0) + extra
                if scores[owner] >= lex.threshold:
                    fired.add(owner)
                else:
                    fired.discard(owner)

        penalty = 0.0
        suppressed: list[str] = []
        for owner, amount in self._penalties:
            if owner in fired:
                penalty += amount
                suppressed.append(f"{lexicons[owner].id}:-{amount:g}")

        anchored = self._anchor in fired
        us_link = self._us in fired
        themes: list[int] = []
        theme_scores: dict[str, float] = {}
        for owner in self._themes:
            raw = scores.get(owner)
            if raw is None:
                continue
            lex = lexicons[owner]
            score = raw - penalty
            for needed, amount in lex.theme_penalties:
                if needed in fired:
                    score -= amount
                    suppressed.append(f"{lexicons[needed].id}:-{amount:g}>{lex.id}")
            if score > 0:
                theme_scores[lex.id] = round(score, 2)
            if score < lex.threshold:
                continue
            if any(needed not in fired for needed in lex.theme_requires):
                continue
            if lex.theme_requires_any and not any(
                needed in fired for needed in lex.theme_requires_any
            ):
                continue
            themes.append(owner)

        relevant = anchored and bool(themes)
        if not relevant:
            themes = []
        # Evidence, for the lexicons shown only: what the item said that counted.
        keys = {owner: lexicons[owner].id for owner in themes}
        if self._anchor in found:
            keys[self._anchor] = "_pakistan"
        if us_link and self._us in found:
            keys[self._us] = "_us"
        if keys:
            said = _Said(both, body_start, item.title or "", summary)
            for owner, words in self._evidence(spans, keys, fired, said).items():
                evidence[keys[owner]] = words
        if suppressed:
            evidence["_suppressed"] = suppressed
        theme_ids = [lexicons[owner].id for owner in themes]
        return TagResult(item.id, relevant, us_link, theme_ids, theme_scores, evidence)

    def _commit(
        self,
        found: dict[int, dict[int, bool]],
        owner: int,
        hit: tuple[int, int, int],
        body_start: int,
    ) -> None:
        number = self._lex[owner].canonical[hit[2]]  # an alias's spellings count once
        terms = found.get(owner)
        if terms is None:
            found[owner] = {number: hit[0] < body_start}
        elif hit[0] < body_start:
            terms[number] = True
        elif number not in terms:
            terms[number] = False

    def _evidence(
        self,
        spans: list[tuple[Any, Any, int, int]],
        owners: Mapping[int, str],
        fired: set[int],
        said: _Said,
    ) -> dict[int, list[str]]:
        """For each of ``owners``: the matched text of the hits that counted (the hits
        ``tag`` kept, longer over shorter, whose term has a weight and whose condition
        holds), each once, compared ignoring case, in order (title first)."""
        kept: dict[int, list[tuple[int, int, int]]] = {owner: [] for owner in owners}
        pending: dict[int, tuple[int, int, int]] = {}
        for owner, number, start, end in spans:
            if owner not in kept:
                continue
            previous = pending.get(owner)
            if previous is not None:
                if start < previous[1]:  # overlaps the pending hit: keep the longer
                    if end - start > previous[1] - previous[0]:
                        pending[owner] = (start, end, number)
                    continue
                kept[owner].append(previous)
            pending[owner] = (start, end, number)
        for owner, previous in pending.items():
            kept[owner].append(previous)
        evidence: dict[int, list[str]] = {}
        for owner, hits in kept.items():
            lex = self._lex[owner]
            words: list[str] = []
            seen: set[str] = set()
            for start, end, number in hits:
                number = lex.canonical[number]
                weight = lex.weights[number]
                needed = lex.requires[number]
                if weight == 0 or (needed >= 0 and needed not in fired):
                    continue
                text = said.text(start, end)
                if weight < 0:
                    text = "-" + text
                key = text.casefold()
                if key not in seen:
                    seen.add(key)
                    words.append(text)
            evidence[owner] = words
        return evidence

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
