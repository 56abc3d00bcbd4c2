"""Building a digest: select, rank, cluster near-duplicates, and lay out sections.

Pure: takes tagged items, a subscriber's choices and the period, returns a Digest. Ranking is
a sum of named parts so an editor can explain any position:

    rank = theme score (best of the item's chosen themes, capped)
         + US involvement bonus
         + title bonus (the theme's evidence is in the headline)
         + source variety (other outlets carrying the same story)
         + recency (newer items within the period score higher; an item its feed gave no
           date earns none: when qasid first saw it says little about when it was published)
         + watchlist bonus (the reader asked for this explicitly)
"""

from __future__ import annotations

import copyreg
import hashlib
import heapq
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import islice
from json.encoder import encode_basestring_ascii
from operator import is_, itemgetter
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from pipeline.core.text import token_texts

# Whether this module runs compiled by mypyc (``pipeline.native``): its classes then hold
# no ``__dict__`` to fill, so the shortcuts below that fill one use constructors instead.
COMPILED = not __file__.endswith(".py")

# Ranking weights: small integers so that a reader can follow the arithmetic.
THEME_SCORE_CAP = 12.0
US_BONUS = 2.0
TITLE_BONUS = 1.5
VARIETY_BONUS = 1.0  # per other outlet, up to VARIETY_CAP
VARIETY_CAP = 3.0
# A stored edition's compact form (``DigestJSON.compact``); version 2, which also held
# ``item_ids`` and listed every reference's watchlists, is still read.
COMPACT_VERSION = 3
COMPACT_VERSIONS = (2, 3)
WATCH_PREFIX = "watchlist: "  # a reason a watchlist gives: this, then its query
RECENCY_BONUS = 2.0  # for an item at the very end of the period, falling linearly to 0
WATCHLIST_BONUS = 3.0

TOP_STORIES = 3
MAX_PER_SECTION = 8
# Stories shown in "Your watchlists" (hits outside the chosen themes), the best first; the
# section says how many matched. Uncapped, a busy watchlist made emails of megabytes, and
# Gmail hides everything after the first 102 KB (the footer's unsubscribe link included).
MAX_WATCHLIST_STORIES = 10
SNIPPET_CHARS = 240
SIMILARITY_THRESHOLD = 0.5  # Jaccard of headline words, or of summary word 3-grams
# Words too common to say two headlines are about the same story.
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or said says that the to "
    "was were will with after over amid into new".split()
)


@dataclass(frozen=True)
class ThemeInfo:
    """A theme as a reader sees it: name, one-line description, context paragraph."""

    id: str
    name: str
    description: str = ""
    context: str = ""


@dataclass(frozen=True)
class DigestCandidate:
    """A stored, tagged item as the digest builder needs it."""

    id: str
    title: str
    link: str
    source: str  # the outlet's name
    published: datetime  # aware UTC
    summary_text: str
    themes: tuple[str, ...]
    scores: Mapping[str, float]
    evidence: Mapping[str, Sequence[str]]
    us_link: bool
    relevant: bool
    watchlists: tuple[str, ...] = ()  # queries of the reader's watchlists that matched
    # the feed gave no date: ``published`` is when the item was first seen, and says so
    undated: bool = False


@dataclass(frozen=True)
class DigestEntry:
    """One story in a digest: the best-ranked item of a cluster and the other outlets."""

    item: DigestCandidate
    rank: float
    reasons: tuple[str, ...]  # why it is here: evidence terms or the watchlist hit
    also: tuple[str, ...] = ()  # other outlets that carried the same story
    snippet: str = ""


@mypyc_attr(native_class=False)  # compiled, still a Python class: native ones cannot subclass tuple
class SharedEntries(tuple[DigestEntry, ...]):
    """A section's entries that many readers' digests hold as they are (the same entry
    objects, in the same order): ``ReaderDigests`` hands every such reader this one
    tuple, and ``DigestJSON.compact`` stores it once, as a part the editions refer to.
    Equal to a plain tuple of the same entries."""

    __slots__ = ()


@dataclass(frozen=True)
class DigestSection:
    theme: ThemeInfo
    entries: tuple[DigestEntry, ...]
    count: int  # stories in this theme this period (before the per-section cap)
    previous_count: int | None  # the same in the previous period, when known
    volume_line: str = ""


@dataclass(frozen=True)
class Digest:
    period_start: datetime
    period_end: datetime
    subject: str
    preheader: str
    top: tuple[DigestEntry, ...]
    sections: tuple[DigestSection, ...]
    watchlist_entries: tuple[DigestEntry, ...] = ()  # matched a watchlist, no chosen theme
    item_ids: tuple[str, ...] = field(default_factory=tuple)  # every item shown, once
    theme_counts: Mapping[str, int] = field(default_factory=dict)  # stories per chosen theme
    watchlist_line: str = ""  # when more stories matched a watchlist than the section shows

    @property
    def empty(self) -> bool:
        return not self.item_ids


@dataclass(frozen=True)
class DigestRequest:
    """What to build: whose choices, which period, how it is titled."""

    themes: Sequence[str]  # the reader's themes; all themes for the public edition
    period_start: datetime
    period_end: datetime
    title: str = "qasid"
    label_date: date | None = None  # the reader's local date for the subject line
    previous_counts: Mapping[str, int] | None = None  # theme → stories in the prior period
    top_stories: int = TOP_STORIES
    max_per_section: int = MAX_PER_SECTION
    max_watchlist_stories: int = MAX_WATCHLIST_STORIES


# -- similarity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    title: frozenset[str]  # headline words without stop words
    body: frozenset[str]  # word 3-grams of the opening of the summary


def _signature(candidate: DigestCandidate) -> _Signature:
    return _text_signature(candidate.title, candidate.summary_text)


# Digests for many readers over one day's items tokenise the same texts again and again:
# these caches make it once per text (bounded, for a long-running worker).
@lru_cache(maxsize=1 << 16)
def _text_signature(title: str, summary_text: str) -> _Signature:
    title_words = [w for w in token_texts(title) if w not in _STOP]
    body_words = [w for w in token_texts(summary_text)[:60] if w not in _STOP]
    shingles = {" ".join(body_words[i : i + 3]) for i in range(max(len(body_words) - 2, 0))}
    return _Signature(frozenset(title_words), frozenset(shingles))


@lru_cache(maxsize=1 << 16)
def _words(text: str) -> frozenset[str]:
    return frozenset(token_texts(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|, and 0 when either is empty."""
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)  # the union's size, without building it


def similarity(a: _Signature, b: _Signature) -> float:
    """Headlines that share most words, or summaries that share most phrases (wire copy
    under a rewritten headline), are the same story."""
    body = jaccard(a.body, b.body) if min(len(a.body), len(b.body)) >= 5 else 0.0
    return max(jaccard(a.title, b.title), body)


def cluster(
    candidates: Sequence[DigestCandidate], threshold: float = SIMILARITY_THRESHOLD
) -> list[list[DigestCandidate]]:
    """Group near-duplicate stories (greedy, in the given order: pass them best first).

    Each cluster's first member is its representative. Items sharing a link are always one
    story; otherwise titles and opening text must overlap by ``threshold`` (Jaccard). A
    story joins the first cluster (in creation order) that it matches.

    Only clusters that can match are compared. Two sets with Jaccard at least t > 0:
    share one of the first |x| - ceil(t·|x|) + 1 elements of each in one fixed order
    (prefix filter; rarest first keeps the lists short); have sizes within a factor t of
    each other; and overlap by at least t/(1+t)·(|x|+|y|), which their first common
    element bounds (positional filter: at most 1 + min of the elements left after it in
    each). The result is the full scan's (tests/unit/test_digest.py).

    Headlines are short and share common words, so their one-token prefixes reach long
    posting lists (a day of 20,000 items: ~24 million entries visited, most of the day's
    clustering). A headline needing at least two common words is looked up by counts
    instead: two sets overlapping by o ≥ k share at least k of the first |x| - o + k
    elements of each (the prefix principle; o ≥ ceil(t·|x|) for either side), so with k
    = 3 (2 for headlines of three or four words) the clusters that can match are those
    holding three (two) of its prefix's tokens, counted over the tokens' posting bit masks.
    """
    signatures = [_signature(candidate) for candidate in candidates]
    if threshold <= 0:
        return _cluster_scan(candidates, signatures, threshold)
    frequency: dict[str, int] = {}
    for sig in signatures:
        for word in sig.title:
            frequency[word] = frequency.get(word, 0) + 1
        for shingle in sig.body:
            frequency[shingle] = frequency.get(shingle, 0) + 1
    # Any one order of the tokens serves the filters (the result is the full scan's):
    # rarest first, ties in the order first met, sorted by the count alone (cheap).
    rank = {token: n for n, token in enumerate(sorted(frequency, key=frequency.__getitem__))}
    slack = 1e-9
    share = threshold / (1 + threshold)

    def least_overlap(size: int) -> int:
        return math.ceil(threshold * size - slack)

    def prefix(ordered: list[str], k: int = 1) -> list[str]:
        """The first |x| - ceil(t·|x|) + k of a set's tokens, given in rank order."""
        return ordered[: len(ordered) - least_overlap(len(ordered)) + k]

    def probe_shared(tokens: list[str], postings: Mapping[str, int], k: int) -> list[int]:
        """The indexed clusters holding at least ``k`` (2 or 3) of ``tokens``, the prefix of
        length |x| - o + k. Each token's posting is a bit mask (bit i: cluster i); the
        masks are counted bit-wise, saturating at three (``ones``, ``twos``, ``threes``:
        the clusters met at least that often). A day's headlines share common words: their
        posting sets held hundreds of clusters each, and intersecting every pair and triple
        of them took about 40% of the clustering."""
        ones = twos = threes = 0
        for token in tokens:
            mask = postings.get(token, 0)
            threes |= twos & mask
            twos |= ones & mask
            ones |= mask
        return _bit_places(threes if k == 3 else twos)

    def probe(
        tokens: list[str], size: int, postings: Mapping[str, list[tuple[int, int, int]]]
    ) -> Iterator[int]:
        seen: set[int] = set()
        for i, token in enumerate(tokens):
            for index, j, other in postings.get(token, ()):
                if index in seen:
                    continue
                seen.add(index)  # first common element: the bound only falls after it
                if other < threshold * size - slack or size < threshold * other - slack:
                    continue
                if 1 + min(size - i - 1, other - j - 1) >= share * (size + other) - slack:
                    yield index

    clusters: list[list[DigestCandidate]] = []
    reps: list[_Signature] = []
    links: list[set[str]] = []
    title_sizes: list[int] = []
    by_title: dict[str, list[tuple[int, int, int]]] = {}
    by_title_shared: dict[int, dict[str, int]] = {2: {}, 3: {}}
    by_body: dict[str, list[tuple[int, int, int]]] = {}
    by_link: dict[str, list[int]] = {}
    for candidate, sig in zip(candidates, signatures, strict=True):
        title_order = sorted(sig.title, key=rank.__getitem__)
        title_prefix = prefix(title_order)
        shared_prefixes = {k: prefix(title_order, k) for k in (2, 3)} if sig.title else {}
        body_prefix = prefix(sorted(sig.body, key=rank.__getitem__)) if len(sig.body) >= 5 else []
        k = min(least_overlap(len(sig.title)), 3)
        if k >= 2:
            # Only the headlines that do match: a cluster matching by its summary is found
            # by the summary's own probe below (and one sharing the link by the link).
            size = len(sig.title)
            possible = {
                index
                for index in probe_shared(shared_prefixes[k], by_title_shared[k], k)
                if (other := title_sizes[index]) >= threshold * size - slack
                and size >= threshold * other - slack
                and (common := len(sig.title & reps[index].title)) / (size + other - common)
                >= threshold
            }
        else:
            possible = set(probe(title_prefix, len(sig.title), by_title))
        possible.update(probe(body_prefix, len(sig.body), by_body))
        if candidate.link:
            possible.update(by_link.get(candidate.link, ()))
        for index in sorted(possible):
            same_link = bool(candidate.link) and candidate.link in links[index]
            rep = reps[index]
            if (
                same_link
                or jaccard(sig.title, rep.title) >= threshold
                or (  # similarity() is max(title, body): the body decides
                    min(len(sig.body), len(rep.body)) >= 5
                    and jaccard(sig.body, rep.body) >= threshold
                )
            ):
                clusters[index].append(candidate)
                if candidate.link and candidate.link not in links[index]:
                    links[index].add(candidate.link)
                    by_link.setdefault(candidate.link, []).append(index)
                break
        else:
            index = len(clusters)
            clusters.append([candidate])
            reps.append(sig)
            links.append({candidate.link} if candidate.link else set())
            if candidate.link:
                by_link.setdefault(candidate.link, []).append(index)
            title_sizes.append(len(sig.title))
            # A token met once (most of a day's summary phrases) is in no other story:
            # nothing will look it up, so it is not indexed.
            for j, word in enumerate(title_prefix):
                if frequency[word] > 1:
                    by_title.setdefault(word, []).append((index, j, len(sig.title)))
            bit = 1 << index
            for shared, words in shared_prefixes.items():
                masks = by_title_shared[shared]
                for word in words:
                    if frequency[word] > 1:
                        masks[word] = masks.get(word, 0) | bit
            for j, shingle in enumerate(body_prefix):
                if frequency[shingle] > 1:
                    by_body.setdefault(shingle, []).append((index, j, len(sig.body)))
    return clusters


def _bit_places(mask: int) -> list[int]:
    """The places of the set bits of ``mask`` (non-negative), highest first."""
    digits = bin(mask)  # "0b" and the highest bit first
    last = len(digits) - 1
    places: list[int] = []
    at = digits.find("1", 2)
    while at >= 0:
        places.append(last - at)
        at = digits.find("1", at + 1)
    return places


def _cluster_scan(
    candidates: Sequence[DigestCandidate], signatures: Sequence[_Signature], threshold: float
) -> list[list[DigestCandidate]]:
    """``cluster`` comparing each story with every cluster (any threshold)."""
    clusters: list[list[DigestCandidate]] = []
    reps: list[_Signature] = []
    links: list[set[str]] = []
    for candidate, sig in zip(candidates, signatures, strict=True):
        for index, members in enumerate(clusters):
            same_link = bool(candidate.link) and candidate.link in links[index]
            if same_link or similarity(sig, reps[index]) >= threshold:
                members.append(candidate)
                if candidate.link:
                    links[index].add(candidate.link)
                break
        else:
            clusters.append([candidate])
            reps.append(sig)
            links.append({candidate.link} if candidate.link else set())
    return clusters


# -- ranking -------------------------------------------------------------------------------


def rank_parts(
    candidate: DigestCandidate,
    themes: Iterable[str],
    period_start: datetime,
    period_end: datetime,
    other_outlets: int = 0,
) -> dict[str, float]:
    """The named parts of an item's rank, for display and for tests."""
    chosen = [t for t in themes if t in candidate.themes]
    theme_score = max((candidate.scores.get(t, 0.0) for t in chosen), default=0.0)
    title_words = _words(candidate.title)
    in_title = any(
        _words(term) <= title_words
        for t in chosen
        for term in candidate.evidence.get(t, ())
        if _words(term)
    )
    span = (period_end - period_start).total_seconds() or 1.0
    age = (period_end - min(candidate.published, period_end)).total_seconds()
    recency = 0.0 if candidate.undated else max(0.0, 1.0 - age / span) * RECENCY_BONUS
    return {
        "theme": min(theme_score, THEME_SCORE_CAP),
        "us": US_BONUS if candidate.us_link else 0.0,
        "title": TITLE_BONUS if in_title else 0.0,
        "variety": min(other_outlets * VARIETY_BONUS, VARIETY_CAP),
        "recency": round(recency, 3),
        "watchlist": WATCHLIST_BONUS if candidate.watchlists else 0.0,
    }


def _reasons(
    candidate: DigestCandidate, themes: Sequence[str], names: Mapping[str, str]
) -> tuple[str, ...]:
    return _watch_reasons(candidate.watchlists) + _theme_reasons(candidate, themes, names)


@lru_cache(maxsize=1 << 16)  # readers share queries: a build shows the same ones often
def _watch_reasons(queries: tuple[str, ...]) -> tuple[str, ...]:
    """The reasons the reader's watchlist queries give (before the themes')."""
    return tuple(f"{WATCH_PREFIX}{query}" for query in queries)


def _theme_reasons(
    candidate: DigestCandidate, themes: Sequence[str], names: Mapping[str, str]
) -> tuple[str, ...]:
    """The reasons the candidate's evidence gives for the chosen ``themes``, each named as
    readers know it (``names``: theme id → name; the id where it has none)."""
    reasons = []
    for theme in themes:
        if theme in candidate.themes:
            terms = list(dict.fromkeys(candidate.evidence.get(theme, ())))[:4]
            if terms:
                reasons.append(f"{names.get(theme, theme)}: {', '.join(terms)}")
    return tuple(reasons)


def theme_names(themes: Iterable[ThemeInfo]) -> dict[str, str]:
    """Theme id → the name readers see (what a story's reasons call its themes)."""
    return {t.id: t.name for t in themes}


def _entry_of(
    item: DigestCandidate,
    rank: float,
    reasons: tuple[str, ...],
    also: tuple[str, ...],
    snippet: str,
) -> DigestEntry:
    """``DigestEntry(item, rank, reasons, also, snippet)`` without the frozen dataclass's
    field-by-field ``__init__`` (no ``__post_init__``: nothing else to run). A build makes
    one per shown hit story of every reader."""
    if COMPILED:
        # Compiled, the fields are stored straight into the new native object, which the
        # dataclass's interpreted ``__init__`` (``object.__setattr__`` per field) cannot:
        # 0.08 against 1.0 µs. Outside compiled code the object stays frozen.
        made = DigestEntry.__new__(DigestEntry)
        made.item = item  # type: ignore[misc]
        made.rank = rank  # type: ignore[misc]
        made.reasons = reasons  # type: ignore[misc]
        made.also = also  # type: ignore[misc]
        made.snippet = snippet  # type: ignore[misc]
        return made
    entry = object.__new__(DigestEntry)
    entry.__dict__.update(item=item, rank=rank, reasons=reasons, also=also, snippet=snippet)
    return entry


def _section_of(
    theme: ThemeInfo,
    entries: tuple[DigestEntry, ...],
    count: int,
    previous_count: int | None,
    volume_line: str,
) -> DigestSection:
    """``DigestSection(...)``, made as ``_entry_of`` makes an entry."""
    if COMPILED:
        made = DigestSection.__new__(DigestSection)
        made.theme = theme  # type: ignore[misc]
        made.entries = entries  # type: ignore[misc]
        made.count = count  # type: ignore[misc]
        made.previous_count = previous_count  # type: ignore[misc]
        made.volume_line = volume_line  # type: ignore[misc]
        return made
    return DigestSection(theme, entries, count, previous_count, volume_line)


_SENTENCE_END = re.compile(r"(?<=[.!?۔])\s")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One or two sentences of the summary, cut on a word boundary."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    sentences = _SENTENCE_END.split(text)
    out = ""
    for sentence in sentences:
        if len(out) + len(sentence) + 1 > limit:
            break
        out = f"{out} {sentence}".strip()
    if out:
        return out
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


# -- building ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)  # a build's sections repeat a few counts
def _volume_line(count: int, previous: int | None, period_word: str) -> str:
    stories = "story" if count == 1 else "stories"
    if previous is None:
        return f"{count} {stories} this {period_word}."
    if previous == count:
        trend = "the same as"
    elif count > previous:
        trend = f"up from {previous} in"
    else:
        trend = f"down from {previous} in"
    return f"{count} {stories} this {period_word}, {trend} the {period_word} before."


def _watchlist_line(shown: int, matched: int, period_word: str) -> str:
    """Said only when the section leaves stories out."""
    if matched <= shown:
        return ""
    return (
        f"The {shown} highest-ranked of {matched} stories this {period_word} that matched "
        "your watchlists and none of your themes."
    )


@lru_cache(maxsize=256)
def _period_word(start: datetime, end: datetime) -> str:
    days = (end - start) / timedelta(days=1)
    if days <= 1.5:
        return "day"
    if days <= 8:
        return "week"
    return "period"


@dataclass(frozen=True)
class DayStories:
    """One period's items grouped into stories once, for every reader (``day_stories``)."""

    story_of: Mapping[str, int]  # item id → story
    members: Sequence[Sequence[DigestCandidate]]  # per story, best first (day order)

    def group(self, pool: Sequence[DigestCandidate]) -> list[list[DigestCandidate]]:
        """A reader's pool (best first) in the day's stories, as ``cluster`` returns them:
        stories in order of their best member, members in pool order."""
        out: dict[object, list[DigestCandidate]] = {}
        for candidate in pool:
            key = self.story_of.get(candidate.id, candidate.id)
            found = out.get(key)
            if found is None:
                out[key] = [candidate]
            else:
                found.append(candidate)
        return list(out.values())


def _rebuilt(obj: Any) -> tuple[Any, ...]:
    """A frozen dataclass pickled as its class and its fields' values (mypyc's native
    classes would be unpickled by setting each field, which a frozen class refuses)."""
    return (type(obj), tuple(getattr(obj, each.name) for each in fields(obj)))


if COMPILED:  # digests, public editions and the day's stories cross forked processes
    for _frozen in (
        ThemeInfo,
        DigestCandidate,
        DigestEntry,
        DigestSection,
        Digest,
        DigestRequest,
        _Signature,
        DayStories,
    ):
        copyreg.pickle(_frozen, _rebuilt)


def day_stories(
    candidates: Iterable[DigestCandidate],
    theme_order: Sequence[str],
    period_start: datetime,
    period_end: datetime,
) -> DayStories:
    """Cluster a period's items once, ranked as for a reader of every theme."""
    pool = [c for c in candidates if period_start <= c.published < period_end]
    base = {c.id: sum(rank_parts(c, theme_order, period_start, period_end).values()) for c in pool}
    pool.sort(key=lambda c: (-base[c.id], c.published, c.id))
    groups = cluster(pool)
    return DayStories({c.id: n for n, members in enumerate(groups) for c in members}, groups)


def _entry_order(entry: DigestEntry) -> tuple[float, datetime, str]:
    return (-entry.rank, entry.item.published, entry.item.id)


def _reader_pool(
    candidates: Iterable[DigestCandidate], request: DigestRequest, wanted: Sequence[str]
) -> list[DigestCandidate]:
    """What the reader can be shown, best first."""
    pool = [
        c
        for c in candidates
        if request.period_start <= c.published < request.period_end
        and ((c.relevant and any(t in c.themes for t in wanted)) or c.watchlists)
    ]
    base = {
        c.id: sum(rank_parts(c, wanted, request.period_start, request.period_end).values())
        for c in pool
    }
    pool.sort(key=lambda c: (-base[c.id], c.published, c.id))
    return pool


def _story_entry(
    members: Sequence[DigestCandidate],
    request: DigestRequest,
    wanted: Sequence[str],
    names: Mapping[str, str],
) -> DigestEntry:
    lead = members[0]
    outlets = [m.source for m in members[1:] if m.source and m.source != lead.source]
    also = tuple(dict.fromkeys(outlets))
    parts = rank_parts(lead, wanted, request.period_start, request.period_end, len(also))
    watchlists = tuple(dict.fromkeys(q for m in members for q in m.watchlists))
    if watchlists != lead.watchlists:
        lead = replace(lead, watchlists=watchlists)
    return DigestEntry(
        item=lead,
        rank=round(sum(parts.values()), 3),
        reasons=_reasons(lead, wanted, names),
        also=also,
        snippet=snippet(lead.summary_text),
    )


def _item_themes(entry: DigestEntry, wanted: Sequence[str]) -> list[str]:
    return [t for t in wanted if t in entry.item.themes and entry.item.relevant]


def _home(item: DigestCandidate, item_themes: Sequence[str], order: Sequence[str]) -> str:
    return max(item_themes, key=lambda t: (item.scores.get(t, 0.0), -order.index(t)))


def build_digest(
    candidates: Iterable[DigestCandidate],
    request: DigestRequest,
    themes: Sequence[ThemeInfo],
    stories: DayStories | None = None,
) -> Digest:
    """Select, rank, cluster and lay out one digest. ``themes`` gives the editorial order.

    An item appears once: in the top stories, or else in the section of its best-scoring
    chosen theme, or else (matched only by a watchlist) under "Your watchlists".
    ``stories``: the period's stories formed once for all readers (``day_stories``),
    instead of clustering this reader's pool.
    """
    order = [t.id for t in themes]
    wanted = [t for t in order if t in set(request.themes)]
    pool = _reader_pool(candidates, request, wanted)
    groups = cluster(pool) if stories is None else stories.group(pool)
    names = theme_names(themes)
    entries = [_story_entry(members, request, wanted, names) for members in groups]
    entries.sort(key=_entry_order)

    top = tuple(entries[: request.top_stories])
    shown = {e.item.id for e in top}
    by_theme: dict[str, list[DigestEntry]] = {t: [] for t in wanted}
    counts = dict.fromkeys(wanted, 0)
    watch_only: list[DigestEntry] = []
    for entry in entries:
        item_themes = _item_themes(entry, wanted)
        for t in item_themes:
            counts[t] += 1
        if entry.item.id in shown:
            continue
        if item_themes:
            by_theme[_home(entry.item, item_themes, order)].append(entry)
        else:
            watch_only.append(entry)
    return _assemble(top, by_theme, watch_only, counts, request, themes, wanted)


def _assemble(
    top: tuple[DigestEntry, ...],
    by_theme: Mapping[str, Sequence[DigestEntry]],
    watch_only: Sequence[DigestEntry],
    counts: Mapping[str, int],
    request: DigestRequest,
    themes: Sequence[ThemeInfo],
    wanted: Sequence[str],
    watch_matched: int | None = None,
) -> Digest:
    """The digest from its blocks' entries. ``watch_only``: the stories matched only by a
    watchlist, best first (the head of them, when ``watch_matched`` says how many)."""
    order = [t.id for t in themes]
    period_word = _period_word(request.period_start, request.period_end)
    info = {t.id: t for t in themes}
    sections = []
    for theme_id in wanted:
        found = by_theme[theme_id]
        listed = (
            found
            if type(found) is SharedEntries and len(found) <= request.max_per_section
            else tuple(found[: request.max_per_section])
        )
        if not listed:
            continue
        previous = (request.previous_counts or {}).get(theme_id)
        if request.previous_counts is not None and previous is None:
            previous = 0
        sections.append(
            _section_of(
                info[theme_id],
                listed,
                counts[theme_id],
                previous,
                _volume_line(counts[theme_id], previous, period_word),
            )
        )
    watch_shown = watch_only[: request.max_watchlist_stories]
    shown_ids = [e.item.id for e in top]
    shown_ids += [e.item.id for s in sections for e in s.entries]
    shown_ids += [e.item.id for e in watch_shown]
    covered = sorted((t for t in wanted if counts[t]), key=lambda t: (-counts[t], order.index(t)))
    lead_names = [info[t].name for t in covered[:3]]
    return Digest(
        period_start=request.period_start,
        period_end=request.period_end,
        subject=digest_subject(
            request.title,
            request.label_date or request.period_end.date(),
            lead_names,
            len(sections),
        ),
        preheader=_preheader(top),
        top=top,
        sections=tuple(sections),
        watchlist_entries=tuple(watch_shown),
        item_ids=tuple(dict.fromkeys(shown_ids)),
        theme_counts=counts,
        watchlist_line=_watchlist_line(
            len(watch_shown),
            len(watch_only) if watch_matched is None else watch_matched,
            period_word,
        ),
    )


_Row = tuple[tuple[float, datetime, str], int, DigestCandidate, tuple[str, ...], float]


def _with_watchlists(candidate: DigestCandidate, watchlists: tuple[str, ...]) -> DigestCandidate:
    """``replace(candidate, watchlists=watchlists)`` at a fifth of the cost (compiled: a
    thirtieth, as ``_entry_of``): the fields are copied as they are (a frozen dataclass
    with no ``__post_init__``: nothing to re-run)."""
    if COMPILED:
        made = DigestCandidate.__new__(DigestCandidate)
        made.id = candidate.id  # type: ignore[misc]
        made.title = candidate.title  # type: ignore[misc]
        made.link = candidate.link  # type: ignore[misc]
        made.source = candidate.source  # type: ignore[misc]
        made.published = candidate.published  # type: ignore[misc]
        made.summary_text = candidate.summary_text  # type: ignore[misc]
        made.themes = candidate.themes  # type: ignore[misc]
        made.scores = candidate.scores  # type: ignore[misc]
        made.evidence = candidate.evidence  # type: ignore[misc]
        made.us_link = candidate.us_link  # type: ignore[misc]
        made.relevant = candidate.relevant  # type: ignore[misc]
        made.watchlists = watchlists  # type: ignore[misc]
        made.undated = candidate.undated  # type: ignore[misc]
        return made
    copied = object.__new__(DigestCandidate)
    copied.__dict__.update(candidate.__dict__, watchlists=watchlists)
    return copied


# The fields the compiled constructors above store, one by one: a field added to one of
# these classes must be added there too.
for _class, _names in (
    (DigestEntry, "item rank reasons also snippet"),
    (DigestSection, "theme entries count previous_count volume_line"),
    (
        DigestCandidate,
        "id title link source published summary_text themes scores evidence us_link "
        "relevant watchlists undated",
    ),
):
    if [each.name for each in fields(_class)] != _names.split():
        raise RuntimeError(f"{_class.__name__}'s fields changed: update its constructor")


_StoryRow = tuple[_Row, tuple[str, ...], str]  # row, the themes it counts for, home section
# A story a reader's hits changed: sort key, lead, the queries of its hits (deduplicated
# when it is shown), other outlets, rank, the chosen themes it counts for, its home
# section (None when it counts for none).
_Fresh = tuple[
    tuple[float, datetime, str],
    DigestCandidate,
    Sequence[str],
    tuple[str, ...],
    float,
    tuple[str, ...],
    str | None,
]
# A one-item story holding a hit: its sort key, lead, rank, the chosen themes it counts
# for and its home, the same for every reader whose choice holds the same of its themes.
_HitAlone = tuple[tuple[float, datetime, str], DigestCandidate, float, tuple[str, ...], str | None]
# A story of several items holding hits, for every reader whose choice holds the same of
# its themes and whose hits are on the same members: sort key, lead, the members ranked
# (whose queries make the watchlists), other outlets, rank, the chosen themes it counts
# for, its home, and the chosen themes it counted for without the hits.
_HitStory = tuple[
    tuple[float, datetime, str],
    DigestCandidate,
    tuple[DigestCandidate, ...],
    tuple[str, ...],
    float,
    tuple[str, ...],
    str | None,
    tuple[str, ...],
]
HIT_STORIES_KEPT = 200_000  # cached hit stories of several items before starting over
_first_field = itemgetter(0)  # a row's (or keyed candidate's) sort key
SPARE_ROWS = 64  # stories kept per list past what a digest shows (readers' hits remove some)
# A story of up to this many themes has its row for every subset of them made in advance
# (``_MultiTheme``): 255 rows at most; one of more is ranked when a choice holds it.
MULTI_THEME_WIDEST = 8


@dataclass
class _ThemeBase:
    """A theme choice's digest without watchlist hits: stories in rank order as rows
    (sort key, story, lead, other outlets, rank), the head of each list only."""

    rows: list[_Row]
    by_home: dict[str, list[_Row]]  # by home section
    complete: bool  # the lists hold every story
    counts: dict[str, int]
    entries: dict[int, DigestEntry] = field(default_factory=dict)  # built when first shown
    # per (home section, stories shown, top stories): the section of a reader whose hits
    # change neither it nor the top stories, and the stories of the rows it is read from
    # (``ReaderDigests._shared_section``)
    sections: dict[tuple[str, int, int], tuple[SharedEntries, frozenset[int]]] = field(
        default_factory=dict
    )
    # per number of top stories: those of a reader whose hits do not change them
    tops: dict[int, SharedEntries] = field(default_factory=dict)


class _Truncated(Exception):
    """A reader's hits removed more stories than a theme choice's lists keep."""


class _MultiTheme:
    """The period's stories of several themes in arrays, each as it ranks for every subset
    of its themes a choice can hold: its row, the themes its lead counts for and its home
    section (``ReaderDigests._story_row``), made once. A theme choice's lists are then
    picked out in bulk (``choice``) rather than story by story: the benchmark's 2,570 theme
    choices each hold a median 1,256 of its 2,097 such stories. A story of more than
    ``widest`` themes (2 ** themes - 1 subsets) is left in ``wide``, ranked when a choice
    holds it (``ReaderDigests.base``)."""

    def __init__(self, planner: ReaderDigests, widest: int) -> None:
        themes_of = planner._story_themes
        stories = [s for s, themes in enumerate(themes_of) if 1 < len(themes) <= widest]
        self.wide = [(s, themes) for s, themes in enumerate(themes_of) if len(themes) > widest]
        widths = [len(planner._story_themes[s]) for s in stories]
        self.width = max(widths, default=0)
        self.masks = np.array([planner._story_masks[s] for s in stories], dtype=np.int64)
        # per story: the bit of each of its themes (in its order), and where its subsets'
        # rows start (a subset's row is at start + its themes as bits of that order - 1)
        self.bits = np.zeros((len(stories), self.width), dtype=np.int64)
        self.start = np.zeros(len(stories), dtype=np.int64)
        self.rows: list[_Row] = []
        homes: list[int] = []
        counted: list[int] = []
        for n, story in enumerate(stories):
            themes = planner._story_themes[story]
            self.start[n] = len(self.rows)
            for i, theme in enumerate(themes):
                self.bits[n, i] = planner._bit[theme]
            for subset in range(1, 1 << len(themes)):
                chosen = tuple(t for i, t in enumerate(themes) if subset >> i & 1)
                row, counted_for, home = planner._story_row(story, chosen)
                self.rows.append(row)
                homes.append(planner._bit[home])
                counted.append(planner._mask(counted_for))
        self.homes = np.array(homes, dtype=np.int64)
        self.counted = np.array(counted, dtype=np.int64)
        order = sorted(range(len(self.rows)), key=lambda v: self.rows[v][0])
        self.rank = np.empty(len(self.rows), dtype=np.int64)  # a row's place in rank order
        self.rank[order] = np.arange(len(self.rows))

    def count(self, mask: int) -> int:
        """How many of the stories a choice (its themes as a mask) holds."""
        return int(np.count_nonzero(self.masks & mask))

    def choice(
        self, mask: int, bits: Sequence[int], keep: int
    ) -> tuple[list[_Row], list[list[_Row]], list[int]]:
        """For a choice (its themes as a mask, each theme's bit): the first ``keep`` rows of
        the stories it holds, the same per home section (by ``bits``), and per theme how
        many of the stories' leads count for it."""
        held = np.flatnonzero(self.masks & mask)
        chosen = self.masks[held] & mask
        subset = np.zeros(len(held), dtype=np.int64)
        for i in range(self.width):
            subset |= ((chosen & self.bits[held, i]) != 0).astype(np.int64) << i
        variant = self.start[held] + subset - 1
        rank = self.rank[variant]
        counted = self.counted[variant]
        homes = self.homes[variant]
        return (
            self._first(variant, rank, keep),
            [self._first(variant[homes == bit], rank[homes == bit], keep) for bit in bits],
            [int(np.count_nonzero(counted & bit)) for bit in bits],
        )

    def _first(
        self, variant: np.ndarray[Any, Any], rank: np.ndarray[Any, Any], keep: int
    ) -> list[_Row]:
        """The rows of the first ``keep`` variants by rank, in rank order."""
        if keep <= 0:
            return []
        if keep < len(variant):
            picked = np.argpartition(rank, keep - 1)[:keep]
            variant, rank = variant[picked], rank[picked]
        rows = self.rows
        return [rows[v] for v in variant[np.argsort(rank)].tolist()]


class ReaderDigests:
    """``build_digest(..., stories=day)`` for many readers of one period, sharing work.

    The period's items are clustered once (``day_stories``) and each item's rank parts
    computed once. What depends only on the chosen themes (pool, ranks, counts, the head
    of each list) is computed once per theme choice. A reader's watchlist hits change only
    the stories holding a hit: those are built again from their members and merged with
    the rest. The result equals ``build_digest(pool, request, themes, stories)`` where
    ``pool`` holds the period's candidates with the reader's hits as ``watchlists``
    (tests/unit/test_digest.py checks it).
    """

    def __init__(
        self,
        candidates: Iterable[DigestCandidate],
        themes: Sequence[ThemeInfo],
        period_start: datetime,
        period_end: datetime,
        spare: int = SPARE_ROWS,
    ) -> None:
        self.themes = themes
        self.order = [t.id for t in themes]
        self._names = theme_names(themes)
        self.period_start, self.period_end = period_start, period_end
        self.spare = spare
        self.candidates = {c.id: c for c in candidates if period_start <= c.published < period_end}
        self.by_theme: dict[str, list[DigestCandidate]] = {}
        for c in self.candidates.values():
            if c.relevant:
                for t in c.themes:
                    self.by_theme.setdefault(t, []).append(c)
        # rank_parts' reader-independent parts, per item: US bonus, recency, and per theme
        # the score and whether the theme's evidence is in the headline.
        span = (period_end - period_start).total_seconds() or 1.0
        self._parts: dict[str, tuple[float, float, dict[str, tuple[float, bool]]]] = {}
        # Per item: its known themes in editorial order, and the same by home preference
        # (best score first, then editorial order: what ``_home`` picks among them).
        self._ordered: dict[str, tuple[str, ...]] = {}
        self._preferred: dict[str, tuple[str, ...]] = {}
        for c in self.candidates.values():
            age = (period_end - min(c.published, period_end)).total_seconds()
            recency = 0.0 if c.undated else round(max(0.0, 1.0 - age / span) * RECENCY_BONUS, 3)
            title_words = _words(c.title)
            per_theme = {
                t: (
                    c.scores.get(t, 0.0),
                    any(
                        _words(term) <= title_words
                        for term in c.evidence.get(t, ())
                        if _words(term)
                    ),
                )
                for t in c.themes
            }
            self._parts[c.id] = (US_BONUS if c.us_link else 0.0, recency, per_theme)
            ordered = tuple(t for t in self.order if t in c.themes)
            self._ordered[c.id] = ordered
            self._preferred[c.id] = tuple(
                sorted(ordered, key=lambda t: (-c.scores.get(t, 0.0), self.order.index(t)))
            )
        # A total depends on the item, which of its themes are chosen, the other outlets
        # and the watchlist bonus: a few values per item, shared by every choice and reader.
        self._totals: dict[tuple[str, tuple[str, ...], int, bool], float] = {}
        self._theme_reasons: dict[tuple[str, Sequence[str]], tuple[str, ...]] = {}
        self._snippets: dict[str, str] = {}
        self.stories = day_stories(self.candidates.values(), self.order, period_start, period_end)
        self._bases: dict[tuple[str, ...], _ThemeBase] = {}
        # A theme choice as a bit mask (a bit per theme in editorial order), and per item
        # of a one-item story: the story and the mask of the item's themes.
        self._bit = {t: 1 << n for n, t in enumerate(self.order)}
        self._alone: dict[str, tuple[int, int]] = {}
        self._all_themes: list[int] = []  # per story: the mask of its members' themes
        self._hit_stories: dict[tuple[int, int, tuple[tuple[int, bool], ...]], _HitStory] = {}
        # by story and the mask of the chosen themes among its item's (all that its rank
        # depends on): key ``story << len(order) | mask``
        self._hits_alone: dict[int, _HitAlone] = {}
        # A story's row (its members in a choice's pool, ranked) depends only on which of
        # its themes (those of its relevant members) are chosen: one row per story and
        # subset of them (``_story_row``, keyed ``story << len(order) | mask`` of them). A
        # story of one theme has the same row for every choice holding that theme: those
        # rows are made here, per theme, in rank order; the stories of several themes have
        # theirs made once for every subset, in arrays a choice picks from (``_MultiTheme``,
        # made on first use).
        self._story_rows: dict[int, _StoryRow] = {}
        self._multi_rows: _MultiTheme | None = None
        self.widest = MULTI_THEME_WIDEST  # (``_MultiTheme``)
        self._story_themes: list[tuple[str, ...]] = []
        self._story_masks: list[int] = []  # per story: its themes as a mask
        self._single: dict[str, list[_Row]] = {t: [] for t in self.order}
        self._member_at: dict[str, int] = {}  # an item's place among its story's members
        for story, members in enumerate(self.stories.members):
            for n, c in enumerate(members):
                self._member_at[c.id] = n
            known = {t for c in members if c.relevant for t in self._ordered[c.id]}
            story_themes = tuple(t for t in self.order if t in known)
            self._story_themes.append(story_themes)
            self._story_masks.append(self._mask(story_themes))
            self._all_themes.append(self._mask({t for c in members for t in c.themes}))
            if len(members) == 1:
                self._alone[members[0].id] = (story, self._mask(self._ordered[members[0].id]))
            if len(story_themes) == 1:
                self._single[story_themes[0]].append(self._story_row(story, story_themes)[0])
        for rows in self._single.values():
            rows.sort(key=_first_field)

    def theme_mask(self, chosen: Iterable[str]) -> int:
        """A theme choice as the mask of its known themes (``static_order``'s masks)."""
        return self._mask(chosen)

    def _mask(self, themes: Iterable[str]) -> int:
        bit, out = self._bit, 0
        for t in themes:
            out |= bit.get(t, 0)
        return out

    def _total(
        self, c: DigestCandidate, wanted: Collection[str], other_outlets: int, watched: bool
    ) -> float:
        """sum(rank_parts(c, wanted, start, end, other_outlets).values()), same order, for
        ``c`` with watchlists when ``watched``."""
        us, recency, per_theme = self._parts[c.id]
        chosen = tuple(filter(wanted.__contains__, per_theme)) if per_theme else ()
        key = (c.id, chosen, other_outlets, watched)
        found = self._totals.get(key)
        if found is None:
            variety = min(other_outlets * VARIETY_BONUS, VARIETY_CAP)
            watch = WATCHLIST_BONUS if watched else 0.0
            picked = [per_theme[t] for t in chosen]
            theme = min(max((score for score, _ in picked), default=0.0), THEME_SCORE_CAP)
            title = TITLE_BONUS if any(flag for _, flag in picked) else 0.0
            found = self._totals[key] = sum((theme, us, title, variety, recency, watch))
        return found

    def _ranked(
        self, members: Sequence[DigestCandidate], wanted: set[str]
    ) -> list[DigestCandidate]:
        """Best first, as ``build_digest`` orders a reader's pool."""
        total = self._total
        keyed = [
            ((-total(c, wanted, 0, bool(c.watchlists)), c.published, c.id), c) for c in members
        ]
        keyed.sort(key=_first_field)  # ids are unique: no tie reaches the candidates
        return [c for _, c in keyed]

    def _snippet(self, c: DigestCandidate) -> str:
        found = self._snippets.get(c.id)
        if found is None:
            found = self._snippets[c.id] = snippet(c.summary_text)
        return found

    def wanted(self, chosen: Iterable[str]) -> tuple[str, ...]:
        chosen = set(chosen)
        return tuple(t for t in self.order if t in chosen)

    def _row(self, members: Sequence[DigestCandidate], wanted: set[str]) -> _Row:
        lead = members[0]
        outlets = [m.source for m in members[1:] if m.source and m.source != lead.source]
        also = tuple(dict.fromkeys(outlets))
        rank = round(self._total(lead, wanted, len(also), bool(lead.watchlists)), 3)
        return ((-rank, lead.published, lead.id), self.stories.story_of[lead.id], lead, also, rank)

    def _story_row(self, story: int, themes: tuple[str, ...]) -> _StoryRow:
        """The story's row for a theme choice holding ``themes`` of the story's themes
        (not empty), the chosen themes its lead counts for, and its home section."""
        key = story << len(self.order) | self._mask(themes)
        found = self._story_rows.get(key)
        if found is None:
            chosen = set(themes)  # a member's other themes are not chosen: same totals
            members = [
                c
                for c in self.stories.members[story]
                if c.relevant and not chosen.isdisjoint(c.themes)
            ]
            row = self._row(self._ranked(members, chosen), chosen)
            lead = row[2].id
            counted = tuple(t for t in self._ordered[lead] if t in chosen)
            home = next(t for t in self._preferred[lead] if t in chosen)  # as ``_home``
            found = self._story_rows[key] = (row, counted, home)
        return found

    def base(self, wanted: tuple[str, ...], complete: bool = False) -> _ThemeBase:
        found = self._bases.get(wanted)
        if found is not None and (found.complete or not complete):
            return found
        mask = self._mask(wanted)
        counts = {t: len(self._single[t]) for t in wanted}
        multi = self._multi_theme()
        # the few stories of very many themes (``widest``), visited one by one
        chosen = set(wanted)
        wide = sorted(
            (
                self._story_row(story, tuple(filter(chosen.__contains__, themes)))
                for story, themes in multi.wide
                if self._story_masks[story] & mask
            ),
            key=lambda found: found[0][0],
        )
        total = sum(counts.values()) + multi.count(mask) + len(wide)
        keep = total if complete else self.spare + 3 + 8
        bits = [self._bit[t] for t in wanted]
        everything, homes, counted = multi.choice(mask, bits, keep)
        for t, extra in zip(wanted, counted, strict=True):
            counts[t] += extra
        for _, counted_for, _ in wide:
            for t in counted_for:
                counts[t] += 1

        def head(lists: list[list[_Row]]) -> list[_Row]:
            """The first ``keep`` rows of sorted lists, in rank order (keys are unique)."""
            if complete:
                return sorted((row for rows in lists for row in rows), key=_first_field)
            return list(islice(heapq.merge(*lists, key=_first_field), max(keep, 0)))

        wide_at: dict[str, list[_Row]] = {t: [] for t in wanted}  # by home section
        for row, _, home in wide:
            wide_at[home].append(row)
        found = _ThemeBase(
            head([self._single[t] for t in wanted] + [everything, [row for row, _, _ in wide]]),
            {
                t: head([self._single[t], rows, wide_at[t]])
                for t, rows in zip(wanted, homes, strict=True)
            },
            complete or keep >= total,
            counts,
        )
        if complete or wanted not in self._bases:
            self._bases[wanted] = found
        return found

    def _multi_theme(self) -> _MultiTheme:
        if self._multi_rows is None:
            self._multi_rows = _MultiTheme(self, self.widest)
        return self._multi_rows

    def counts(self, chosen: Iterable[str]) -> dict[str, int]:
        """Stories per chosen theme (what a previous period contributes)."""
        return dict(self.base(self.wanted(chosen)).counts)

    def build(
        self, request: DigestRequest, hits: Mapping[str, Sequence[str]], left_out: int = 0
    ) -> Digest:
        """The reader's digest: ``request`` for this period, ``hits`` item id → the
        reader's watchlist queries it matched. ``hits`` may leave out hits on stories of
        one item holding none of the chosen themes, past the first
        ``request.top_stories + request.max_watchlist_stories`` of them in their rank
        order (``static_order``): none of those can be shown. ``left_out`` says how many
        (they count in the watchlist line)."""
        wanted = self.wanted(request.themes)
        try:
            return self._build(request, hits, wanted, self.base(wanted), left_out)
        except _Truncated:
            return self._build(request, hits, wanted, self.base(wanted, complete=True), left_out)

    def static_order(self, item_ids: Sequence[str]) -> tuple[list[bool], list[int], list[int]]:
        """Per item of ``item_ids``: whether it is one of the period's stories' items; for
        a story of that item alone, its known themes as a mask (else 0) and its place
        among such stories in rank order when none of its themes is chosen (else -1).
        Such a story's rank then holds no theme: the order is every reader's (``hits`` of
        ``build``, ``reader_hits.HitTable``)."""
        keys = sorted(
            (self._hit_alone(story, (), set())[0], item_id)
            for item_id, (story, _) in self._alone.items()
        )
        place = {item_id: n for n, (_, item_id) in enumerate(keys)}
        known = [item_id in self.stories.story_of for item_id in item_ids]
        masks = [self._alone.get(item_id, (0, 0))[1] for item_id in item_ids]
        static = [place.get(item_id, -1) for item_id in item_ids]
        return known, masks, static

    def _counted(self, story: int, chosen: set[str]) -> tuple[str, ...]:
        """The chosen themes that the story's lead counts for without the reader's hits
        (none when no member is in the theme choice's pool)."""
        themes = tuple(filter(chosen.__contains__, self._story_themes[story]))
        return self._story_row(story, themes)[1] if themes else ()

    def _fresh(
        self,
        story: int,
        hits: Mapping[str, Sequence[str]],
        wanted: tuple[str, ...],
        present: tuple[tuple[int, bool], ...],
        chosen: set[str],
        mask: int,
    ) -> tuple[_Fresh, tuple[str, ...]]:
        """The story with the reader's hits (as ``build_digest`` would rank them), and the
        chosen themes it counted for without them. Its entry is made only if it is shown
        (``_shown``): most of a reader's hits are not. ``present``: the members holding a
        hit, in order (place, whether it has queries); ``chosen``: ``wanted`` as a set,
        ``mask`` as a mask."""
        get = hits.get
        key = (story, mask & self._all_themes[story], present)
        found = self._hit_stories.get(key)
        if found is None:
            if len(self._hit_stories) >= HIT_STORIES_KEPT:
                self._hit_stories.clear()
            found = self._hit_stories[key] = self._hit_story(story, hits, wanted, chosen)
        sort_key, lead, listing, also, rank, themes, home, before = found
        watchlists: list[str] = []
        for c in listing:
            queries = get(c.id)
            watchlists += c.watchlists if queries is None else queries
        return (sort_key, lead, watchlists, also, rank, themes, home), before

    def _hit_story(
        self,
        story: int,
        hits: Mapping[str, Sequence[str]],
        wanted: tuple[str, ...],
        chosen: set[str],
    ) -> _HitStory:
        """``_fresh``'s story: what depends on the hit members and the choice alone."""
        total = self._total
        keyed: list[tuple[tuple[float, datetime, str], DigestCandidate, bool]] = []
        for c in self.stories.members[story]:
            queries = hits.get(c.id)
            if queries is not None:
                watched = bool(queries)
            elif c.relevant and not chosen.isdisjoint(c.themes):
                watched = bool(c.watchlists)
            else:
                continue
            keyed.append(((-total(c, chosen, 0, watched), c.published, c.id), c, watched))
        keyed.sort(key=_first_field)
        _, lead, lead_watched = keyed[0]
        outlets = [c.source for _, c, _ in keyed[1:] if c.source and c.source != lead.source]
        also = tuple(dict.fromkeys(outlets))
        rank = round(total(lead, wanted, len(also), lead_watched), 3)
        themes = tuple(t for t in wanted if t in lead.themes) if lead.relevant else ()
        home = _home(lead, themes, self.order) if themes else None
        listing = tuple(c for _, c, _ in keyed)
        before = self._counted(story, chosen)
        return ((-rank, lead.published, lead.id), lead, listing, also, rank, themes, home, before)

    def _hit_alone(self, story: int, wanted: tuple[str, ...], chosen: set[str]) -> _HitAlone:
        """A one-item story holding a hit: its sort key, lead, rank, the chosen themes it
        counts for and its home section."""
        lead = self.stories.members[story][0]
        rank = round(self._total(lead, wanted, 0, True), 3)
        themes = tuple(filter(chosen.__contains__, self._ordered[lead.id])) if lead.relevant else ()
        home = _home(lead, themes, self.order) if themes else None
        return ((-rank, lead.published, lead.id), lead, rank, themes, home)

    def _shown(self, fresh: _Fresh, wanted: Sequence[str]) -> DigestEntry:
        """A fresh story's entry, as ``_story_entry`` makes it."""
        _, lead, queries, also, rank, _, _ = fresh
        watchlists = tuple(dict.fromkeys(queries))
        if watchlists != lead.watchlists:
            lead = _with_watchlists(lead, watchlists)
        # as ``_reasons``; the themes' are the same for every reader of the choice: made
        # once per item and choice
        key = (lead.id, wanted)
        themed = self._theme_reasons.get(key)
        if themed is None:
            if len(self._theme_reasons) >= HIT_STORIES_KEPT:
                self._theme_reasons.clear()
            themed = self._theme_reasons[key] = _theme_reasons(lead, wanted, self._names)
        reasons = _watch_reasons(watchlists) + themed
        return _entry_of(lead, rank, reasons, also, self._snippet(lead))

    def _build(
        self,
        request: DigestRequest,
        hits: Mapping[str, Sequence[str]],
        wanted: tuple[str, ...],
        base: _ThemeBase,
        left_out: int = 0,
    ) -> Digest:
        if (request.period_start, request.period_end) != (self.period_start, self.period_end):
            raise ValueError("ReaderDigests serves one period")
        chosen = set(wanted)
        counts = dict(base.counts)
        story_of = self.stories.story_of
        alone_of, hits_alone = self._alone, self._hits_alone
        shift, mask = len(self.order), self._mask(wanted)
        touched: set[int] = set()
        fresh: list[_Fresh] = []
        # hit stories of several items (or whose hit has no query): their members holding
        # a hit, as (place among the story's members, whether the hit has queries)
        several: dict[int, list[tuple[int, bool]]] = {}
        member_at = self._member_at
        for item_id, queries in hits.items():
            at = alone_of.get(item_id)
            if at is None or not queries:
                story = story_of.get(item_id)
                if story is not None:
                    held = several.get(story)
                    if held is None:
                        several[story] = [(member_at[item_id], bool(queries))]
                    else:
                        held.append((member_at[item_id], bool(queries)))
                continue
            # Most hit stories: the hit alone. Its lead and the themes it counts for are
            # those without the hits (the counts stand); its rank is the same for every
            # reader whose choice holds the same of its item's themes.
            story, item_mask = at
            key = story << shift | (item_mask & mask)
            alone = hits_alone.get(key)
            if alone is None:
                alone = hits_alone[key] = self._hit_alone(story, wanted, chosen)
            touched.add(story)
            # its queries as given: deduplicated by ``_shown``, for the few hits shown
            fresh.append((alone[0], alone[1], queries, (), alone[2], alone[3], alone[4]))
        for story, held in several.items():
            if len(held) > 1:
                held.sort()
            found_story, before = self._fresh(story, hits, wanted, tuple(held), chosen, mask)
            for t in before:  # the story without the hits
                counts[t] -= 1
            for t in found_story[5]:
                counts[t] += 1
            fresh.append(found_story)
        touched.update(several)
        fresh.sort(key=_first_field)
        shown_entry = self._shown

        def take(
            rows: Sequence[_Row], added: Sequence[_Fresh], count: int, skip: set[str]
        ) -> list[DigestEntry]:
            """The first ``count`` of the theme choice's rows (less the touched stories and
            those in ``skip``) merged with fresh stories (none in ``skip``), in rank order;
            past the rows kept, nothing is known: a reader who needs more is built from
            complete lists."""

            # Both are in rank order: merged in one pass, a row before a fresh story of an
            # equal key (and the end of the known rows before both).
            out: list[DigestEntry] = []
            a = 0
            for row in rows:
                if row[1] in touched or row[2].id in skip:
                    continue
                while a < len(added) and len(out) < count and added[a][0] < row[0]:
                    out.append(shown_entry(added[a], wanted))
                    a += 1
                if len(out) == count:
                    return out
                out.append(self._entry(base, row, wanted))
            last = rows[-1][0] if rows and not base.complete else None
            while a < len(added) and len(out) < count and (last is None or added[a][0] < last):
                out.append(shown_entry(added[a], wanted))
                a += 1
            if last is not None and len(out) < count:
                raise _Truncated
            return out

        top: tuple[DigestEntry, ...] = tuple(take(base.rows, fresh, request.top_stories, set()))
        shared_top = self._shared_top(base, wanted, request)
        if len(shared_top) == len(top) and all(map(is_, top, shared_top)):
            top = shared_top  # the theme choice's own: stored once, like its sections
        shown = {e.item.id for e in top}
        # the fresh stories in the top are the first of them (``take`` merges in order)
        taken = 0
        while taken < len(fresh) and fresh[taken][1].id in shown:
            taken += 1
        fresh_home: dict[str, list[_Fresh]] = {t: [] for t in wanted}
        watch_only: list[_Fresh] = []
        for found in islice(fresh, taken, None):
            home = found[6]
            if home is not None:
                fresh_home[home].append(found)
            else:
                watch_only.append(found)
        by_theme: dict[str, Sequence[DigestEntry]] = {}
        clean_top = top is shared_top
        for t in wanted:
            # most readers' hits leave most sections as the theme choice's own: then
            # they hold that one tuple, which editions store once
            shared, reach = self._shared_section(base, t, wanted, request)
            if (
                clean_top
                and not fresh_home[t]
                and reach.isdisjoint(touched)
                and (base.complete or len(shared) == request.max_per_section)
            ):
                # what ``take`` would give: no hit story among the rows it would read
                by_theme[t] = shared
                continue
            listed = take(base.by_home[t], fresh_home[t], request.max_per_section, shown)
            same = len(shared) == len(listed) and all(map(is_, listed, shared))
            by_theme[t] = shared if same else listed
        watch_shown = [shown_entry(f, wanted) for f in watch_only[: request.max_watchlist_stories]]
        return _assemble(
            top,
            by_theme,
            watch_shown,
            counts,
            request,
            self.themes,
            wanted,
            len(watch_only) + left_out,
        )

    def _shared_top(
        self, base: _ThemeBase, wanted: Sequence[str], request: DigestRequest
    ) -> SharedEntries:
        """The top stories of the theme choice's readers whose hits do not change them
        (about half of a day's readers)."""
        found = base.tops.get(request.top_stories)
        if found is None:
            rows = base.rows[: request.top_stories]
            found = base.tops[request.top_stories] = SharedEntries(
                self._entry(base, row, wanted) for row in rows
            )
        return found

    def _shared_section(
        self, base: _ThemeBase, home: str, wanted: Sequence[str], request: DigestRequest
    ) -> tuple[SharedEntries, frozenset[int]]:
        """The section ``home`` of the theme choice's readers whose hits change neither it
        nor the top stories: the first stories of its list less the top ones; and the
        stories of the rows it is read from (a reader whose top stories are the choice's
        and who holds no hit on these has that section). A reader's section is compared
        with it entry by entry (``_build``), so rows past those the lists keep (a
        truncated list) only make it differ."""
        key = (home, request.max_per_section, request.top_stories)
        found = base.sections.get(key)
        if found is None:
            top = {row[2].id for row in base.rows[: request.top_stories]}
            rows: list[_Row] = []
            read = 0  # the rows of the list this section reads (those of top stories too)
            for row in base.by_home[home]:
                if len(rows) == request.max_per_section:
                    break
                read += 1
                if row[2].id not in top:
                    rows.append(row)
            found = base.sections[key] = (
                SharedEntries(self._entry(base, row, wanted) for row in rows),
                frozenset(row[1] for row in base.by_home[home][:read]),
            )
        return found

    def _entry(self, base: _ThemeBase, row: _Row, wanted: Sequence[str]) -> DigestEntry:
        found = base.entries.get(row[1])
        if found is None:
            _, story, lead, also, rank = row
            found = base.entries[story] = _entry_of(
                lead, rank, _reasons(lead, wanted, self._names), also, self._snippet(lead)
            )
        return found


def digest_subject(title: str, day_of: date, lead_themes: Sequence[str], sections: int) -> str:
    """E.g. "qasid, 29 Nov: Sanctions, The economy, India (+2 more)"."""
    return _subject(title, day_of, tuple(lead_themes), sections)


@lru_cache(maxsize=4096)  # a build's readers share a few dates and theme choices
def _subject(title: str, day_of: date, lead_themes: tuple[str, ...], sections: int) -> str:
    day = f"{day_of.day} {day_of:%b}"
    if not lead_themes:
        return f"{title}, {day}: your watchlists"
    more = sections - len(lead_themes)
    tail = f" (+{more} more)" if more > 0 else ""
    return f"{title}, {day}: {', '.join(lead_themes)}{tail}"


PREHEADER_CHARS = 200  # inboxes show the first 90-140 of them beside the subject


def _preheader(top: Sequence[DigestEntry]) -> str:
    """The top stories' titles; cut at a word (with an ellipsis) when they run long."""
    text = " · ".join(e.item.title for e in top)
    if len(text) <= PREHEADER_CHARS:
        return text
    cut = text[: PREHEADER_CHARS - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ·") + "…"


# -- serialisation: what an edition stores and templates render ----------------------------


def _entry_head(entry: DigestEntry) -> dict[str, object]:
    """An entry's fields that depend on its item alone (``DigestJSON`` encodes them once)."""
    item = entry.item
    head: dict[str, object] = {
        "id": item.id,
        "title": item.title,
        "link": item.link,
        "source": item.source,
        "published": item.published.isoformat(),
        "snippet": entry.snippet,
        "themes": list(item.themes),
        "us_link": item.us_link,
    }
    if item.undated:  # only then: a dated item's stored form is as it always was
        head["undated"] = True
    return head


def entry_as_dict(entry: DigestEntry) -> dict[str, object]:
    item = entry.item
    return {
        **_entry_head(entry),
        "rank": entry.rank,
        "reasons": list(entry.reasons),
        "also": list(entry.also),
        "watchlists": list(item.watchlists),
    }


def digest_as_dict(digest: Digest) -> dict[str, object]:
    """A JSON-safe form of a digest: stored with its edition, rendered by templates."""
    return {
        "version": 1,
        "period_start": digest.period_start.isoformat(),
        "period_end": digest.period_end.isoformat(),
        "subject": digest.subject,
        "preheader": digest.preheader,
        "top": [entry_as_dict(e) for e in digest.top],
        "sections": [
            {
                "theme": {
                    "id": s.theme.id,
                    "name": s.theme.name,
                    "description": s.theme.description,
                    "context": s.theme.context,
                },
                "count": s.count,
                "previous_count": s.previous_count,
                "volume_line": s.volume_line,
                "entries": [entry_as_dict(e) for e in s.entries],
            }
            for s in digest.sections
        ],
        "watchlist_entries": [entry_as_dict(e) for e in digest.watchlist_entries],
        "watchlist_line": digest.watchlist_line,
        "item_ids": list(digest.item_ids),
    }


_dumps = json.dumps
_join = ", ".join


def _number(value: float) -> str:
    """``json.dumps(value)`` (a finite float is its repr), without its per-call set-up."""
    return float.__repr__(value) if type(value) is float and math.isfinite(value) else _dumps(value)


_string = encode_basestring_ascii  # ``json.dumps`` of a str


def _count(value: int | None) -> str:
    """``json.dumps`` of a count (or None)."""
    return "null" if value is None else int.__repr__(value) if type(value) is int else _dumps(value)


def _strings(values: Iterable[str]) -> str:
    """``json.dumps(list(values))`` for strings (ASCII-escaped, as json.dumps does)."""
    return f"[{_join(map(_string, values))}]"


class DigestJSON:
    """``json.dumps(digest_as_dict(digest))``, byte for byte, for the many digests of a
    build. Readers' digests repeat the same stories: an item's fields, a theme, and an
    entry object shared by readers (``ReaderDigests`` reuses them) are encoded once and
    spliced (``json.dumps`` of a dict or list is its parts' encodings joined by ", ")."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit  # pieces remembered before starting over (a long-lived worker)
        self._heads: dict[str, tuple[tuple[object, ...], str]] = {}  # item id → fields, text
        self._entries: dict[int, tuple[DigestEntry, str]] = {}  # by identity, kept alive
        self._themes: dict[ThemeInfo, str] = {}
        # the compact form's pieces: entry (by identity) → its reference's text; story
        # (head text, other outlets) → part key; theme → part key
        self._refs: dict[int, tuple[DigestEntry, str]] = {}
        self._story_parts: dict[tuple[str, tuple[str, ...]], str] = {}
        self._theme_parts: dict[ThemeInfo, str] = {}
        # shared sections' entries (by identity, kept alive) → their reference's text
        self._sections: dict[int, tuple[SharedEntries, str]] = {}
        self._new_parts: dict[str, str] = {}  # parts not handed out yet: key → JSON text
        self._handed: dict[str, None] = {}  # the keys of the parts handed out (or about to be)
        self._met: dict[str, None] = {}  # the keys of block lists met once, kept in the edition

    def entry(self, entry: DigestEntry) -> str:
        """``json.dumps(entry_as_dict(entry))``."""
        return self._by_identity(self._entries, entry, self._entry_text)

    def _entry_text(self, entry: DigestEntry) -> str:
        return (
            f'{self._head(entry)}, "rank": {_number(entry.rank)}, '
            f'"reasons": {_strings(entry.reasons)}, "also": {_strings(entry.also)}, '
            f'"watchlists": {_strings(entry.item.watchlists)}}}'
        )

    def _by_identity(
        self,
        cache: dict[int, tuple[DigestEntry, str]],
        entry: DigestEntry,
        make: Callable[[DigestEntry], str],
    ) -> str:
        """``make(entry)``, remembered for this very entry object (readers share entry
        objects; the cache keeps each alive, so its id is not reused)."""
        found = cache.get(id(entry))
        if found is not None and found[0] is entry:
            return found[1]
        text = make(entry)
        if len(cache) >= self._limit:
            cache.clear()
        cache[id(entry)] = (entry, text)
        return text

    def _head(self, entry: DigestEntry) -> str:
        """``json.dumps(_entry_head(entry))`` less its closing brace."""
        item = entry.item
        # What the head encodes, compared by value: equal values encode the same (the
        # time zone and the flag's type decide what an equal time or flag looks like).
        shown: tuple[object, ...] = (
            item.title,
            item.link,
            item.source,
            item.published,
            item.published.tzinfo,
            entry.snippet,
            item.themes,
            item.us_link,
            type(item.us_link),
            item.undated,
        )
        cached = self._heads.get(item.id)
        if cached is not None and cached[0] == shown:
            head = cached[1]
        else:
            if len(self._heads) >= self._limit:
                self._heads.clear()
            head = _dumps(_entry_head(entry))[:-1]
            self._heads[item.id] = (shown, head)
        return head

    def _theme(self, theme: ThemeInfo) -> str:
        found = self._themes.get(theme)
        if found is None:
            found = self._themes[theme] = _dumps(
                {
                    "id": theme.id,
                    "name": theme.name,
                    "description": theme.description,
                    "context": theme.context,
                }
            )
        return found

    def encode(self, digest: Digest) -> str:
        """``json.dumps(digest_as_dict(digest))``."""
        return self._document(digest, 1, self.entry, self._theme)

    # -- the compact form: what readers share is stored once -------------------------------

    def compact(self, digest: Digest) -> str:
        """The digest as ``"version": 3`` JSON: each entry a reference to its story's part
        (``{"part": key, "rank", "reasons", "watched"}``: what is the reader's own stays
        here) and each section's theme a reference to the theme's part. A section or top
        stories whose entries many readers share (``SharedEntries``, or a list without
        watchlist hits met before) hold a reference to a part that lists their
        references (``{"entries": [...]}``), one part however many readers and theme
        choices hold it. The parts it needs that this encoder has not handed out
        yet are taken by ``new_parts``; ``expand_edition`` gives back what
        ``digest_as_dict`` gives. Unlike version 2, it leaves out ``item_ids``: the shown
        entries' item ids in order, which ``expand_edition`` reads off the expanded
        entries (a quarter of a personal edition's bytes, stored for nothing); and a
        reference's watchlists are said by how many of its reasons spell them
        (``"watched": n``; ``_watched``), an entry without any says nothing of them."""
        return self._document(
            digest,
            COMPACT_VERSION,
            self._ref,
            lambda theme: f'{{"part": "{self._theme_part(theme)}"}}',
            self._block_entries,
        )

    def _document(
        self,
        digest: Digest,
        version: int,
        entry: Callable[[DigestEntry], str],
        theme: Callable[[ThemeInfo], str],
        section_entries: Callable[[tuple[DigestEntry, ...]], str] | None = None,
    ) -> str:
        """Either form's text: ``entry`` and ``theme`` encode those (whole or as refs),
        ``section_entries`` a section's entries (by default the list of ``entry``)."""

        def listed(entries: tuple[DigestEntry, ...]) -> str:
            return f"[{_join(map(entry, entries))}]"

        entries_of = section_entries or listed
        # the compact form leaves them out: ``expand_edition`` reads them off the entries
        ids = "" if version == COMPACT_VERSION else f', "item_ids": {_strings(digest.item_ids)}'
        sections = [
            f'{{"theme": {theme(s.theme)}, "count": {_count(s.count)}, '
            f'"previous_count": {_count(s.previous_count)}, '
            f'"volume_line": {_string(s.volume_line)}, '
            f'"entries": {entries_of(s.entries)}}}'
            for s in digest.sections
        ]
        return (
            f'{{"version": {version}, "period_start": {_string(digest.period_start.isoformat())}, '
            f'"period_end": {_string(digest.period_end.isoformat())}, '
            f'"subject": {_string(digest.subject)}, "preheader": {_string(digest.preheader)}, '
            f'"top": {entries_of(digest.top)}, "sections": [{_join(sections)}], '
            f'"watchlist_entries": [{_join(map(entry, digest.watchlist_entries))}], '
            f'"watchlist_line": {_string(digest.watchlist_line)}{ids}}}'
        )

    def new_parts(self) -> dict[str, str]:
        """Part key → JSON text of the parts ``compact`` referred to since the last call
        for the first time (what must be stored with those editions)."""
        parts, self._new_parts = self._new_parts, {}
        return parts

    def _ref(self, entry: DigestEntry) -> str:
        if entry.item.watchlists:
            # a reader's own entry (their watchlists' queries): no other digest holds it
            return self._ref_text(entry)
        return self._by_identity(self._refs, entry, self._ref_text)

    def _ref_text(self, entry: DigestEntry) -> str:
        head = self._head(entry)
        story = (head, entry.also)
        key = self._story_parts.get(story)
        if key is None:
            if len(self._story_parts) >= self._limit:
                self._story_parts.clear()
            key = self._story_parts[story] = self._part(f'{head}, "also": {_strings(entry.also)}}}')
        return (
            f'{{"part": "{key}", "rank": {_number(entry.rank)}, '
            f'"reasons": {_strings(entry.reasons)}{_watched(entry)}}}'
        )

    def _block_entries(self, entries: tuple[DigestEntry, ...]) -> str:
        """A section's entries or the top stories: a list of references, or a reference
        to a part holding that list, for entries many readers share (``SharedEntries``)
        and for a list met before (another reader's hits moved the same stories: a list
        holding no watchlist hit, so no reader's own query goes into a part)."""
        if not entries:
            return "[]"
        shared = type(entries) is SharedEntries
        if shared:
            found = self._sections.get(id(entries))
            if found is not None and found[0] is entries:
                return found[1]
        listed = f"[{_join(map(self._ref, entries))}]"
        if not shared and any(e.item.watchlists for e in entries):
            return listed  # the reader's own: stays in their edition
        text = f'{{"entries": {listed}}}'
        key = part_key(text)
        if not shared and key not in self._handed and key not in self._met:
            if len(self._met) >= self._limit:
                self._met.clear()
            self._met[key] = None  # once: the list stays in the edition
            return listed
        reference = f'{{"part": "{self._part(text, key)}"}}'
        if type(entries) is SharedEntries:
            # equal sections of other choices (other tuples) are the same part, handed
            # out once; this tuple is kept alive, so its id is not reused
            if len(self._sections) >= self._limit:
                self._sections.clear()
            self._sections[id(entries)] = (entries, reference)
        return reference

    def _theme_part(self, theme: ThemeInfo) -> str:
        key = self._theme_parts.get(theme)
        if key is None:
            key = self._theme_parts[theme] = self._part(self._theme(theme))
        return key

    def _part(self, text: str, key: str | None = None) -> str:
        """The part's key (``key``, when already made); its text goes to ``new_parts``
        the first time the key is met."""
        key = key or part_key(text)
        if key not in self._handed:
            if len(self._handed) >= self._limit:
                self._handed.clear()
            self._handed[key] = None
            self._new_parts[key] = text
        return key


def _watched(entry: DigestEntry) -> str:
    """A compact reference's watchlists: none (no key), how many of its first reasons spell
    them (``"watched"``: ``_watch_reasons`` made them, the usual case), or the list."""
    queries = entry.item.watchlists
    if not queries:
        return ""
    if entry.reasons[: len(queries)] == _watch_reasons(queries):
        return f', "watched": {len(queries)}'
    return f', "watchlists": {_strings(queries)}'


def _ref_watchlists(ref: Mapping[str, Any]) -> Any:
    """A reference's watchlists (``_watched``; version 2 lists them always)."""
    listed = ref.get("watchlists")
    if listed is not None:
        return listed
    return [reason[len(WATCH_PREFIX) :] for reason in ref["reasons"][: ref.get("watched", 0)]]


def part_key(text: str) -> str:
    """A part's key: a hash of its JSON text (the same text gives the same key in every
    process, so parts are written once however many helpers meet them)."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def part_keys(
    content: Mapping[str, Any], parts: Mapping[str, Mapping[str, Any]] | None = None
) -> set[str]:
    """The parts a stored edition's content refers to (none for a whole one). A shared
    block's entries (a section's, or the top stories) are a part that refers to story
    parts in turn: those are among the keys when ``parts`` holds the block's part (read
    it first, then ask again)."""
    if content.get("version") not in COMPACT_VERSIONS:
        return set()
    keys: set[str] = set()

    def block(entries: Any) -> None:
        if isinstance(entries, dict):  # a reference to a shared list of entries (JSON: a dict)
            keys.add(entries["part"])
            found = None if parts is None else parts.get(entries["part"])
            if found is not None:
                keys.update(e["part"] for e in found["entries"])
        else:
            keys.update(e["part"] for e in entries)

    block(content.get("top", ()))
    keys.update(e["part"] for e in content.get("watchlist_entries", ()))
    for section in content.get("sections", ()):
        keys.add(section["theme"]["part"])
        block(section.get("entries", ()))
    return keys


def _parts_present(
    content: Mapping[str, Any],
    parts: Mapping[str, Mapping[str, Any]],
    whole_blocks: set[str] | None,
) -> bool:
    """``parts.keys() >= part_keys(content, parts)``, a shared block's story parts checked
    once (``whole_blocks``)."""
    whole_blocks = set() if whole_blocks is None else whole_blocks

    def present(entries: Any) -> bool:
        if not isinstance(entries, dict):  # a list of references
            return all(e["part"] in parts for e in entries)
        key = entries["part"]
        if key in whole_blocks:
            return True
        block = parts.get(key)
        if block is None or not all(e["part"] in parts for e in block["entries"]):
            return False
        whole_blocks.add(key)
        return True

    return (
        present(content.get("top", ()))
        and present(content.get("watchlist_entries", ()))
        and all(
            section["theme"]["part"] in parts and present(section.get("entries", ()))
            for section in content.get("sections", ())
        )
    )


def expand_edition(
    content: Mapping[str, Any],
    parts: Mapping[str, Mapping[str, Any]],
    keep_refs: bool = False,
    whole_blocks: set[str] | None = None,
) -> dict[str, Any]:
    """A stored edition's content as ``digest_as_dict`` gave it: references (``compact``)
    replaced by their parts. With ``keep_refs`` the entries stay references (``part``,
    rank, reasons, watchlists), their story in ``parts``: the send path's digest
    assembler caches a story's rendering by its part's key, and reads the part itself
    only for a story it has not rendered yet (a batch makes tens of thousands of
    entries); a shared block's entries (a section's, or the top stories) are then its
    part's own list (not a copy: read only), and the block names that part
    (``"entries_part"`` in the section, ``"top_part"`` in the content), which the
    assembler caches the block's rendering by. Raises ``KeyError`` for a part not in
    ``parts``. ``whole_blocks``: the shared blocks' parts whose story parts were all found
    in ``parts`` (filled in here; a batch's editions share a few hundred blocks, each
    checked once; forget it when ``parts`` loses any). A version 3 content's ``item_ids``
    (not stored) are read off its entries, except with ``keep_refs`` (references hold no
    item ids; the send path needs none)."""
    version = content.get("version")
    if version not in COMPACT_VERSIONS:
        return dict(content)
    if keep_refs and not _parts_present(content, parts, whole_blocks):
        raise KeyError("a part the edition refers to")

    def entries(refs: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        if keep_refs:
            return list(refs)
        return [
            {
                **parts[ref["part"]],
                "rank": ref["rank"],
                "reasons": ref["reasons"],
                "watchlists": _ref_watchlists(ref),
            }
            for ref in refs
        ]

    def block(refs: Any) -> tuple[Sequence[Mapping[str, Any]], str | None]:
        """A block's entries, and the part they come from when kept as references."""
        if not isinstance(refs, dict):  # a list (JSON), or a reference to a shared one
            return entries(refs), None
        if keep_refs:
            return parts[refs["part"]]["entries"], refs["part"]
        return entries(parts[refs["part"]]["entries"]), None

    def section_of(section: Mapping[str, Any]) -> dict[str, Any]:
        out = {**section, "theme": dict(parts[section["theme"]["part"]])}
        out["entries"], shared = block(section.get("entries", ()))
        if shared is not None:
            out["entries_part"] = shared
        return out

    out = {
        **content,
        "version": 1,
        "sections": [section_of(section) for section in content.get("sections", ())],
        "watchlist_entries": entries(content.get("watchlist_entries", ())),
    }
    out["top"], shared_top = block(content.get("top", ()))
    if shared_top is not None:
        out["top_part"] = shared_top
    if version == COMPACT_VERSION and not keep_refs:
        # in the order ``_assemble`` gives them: top stories, sections, watchlist stories
        # (a digest never shows an item twice; fromkeys as it does)
        shown = [e["id"] for e in out["top"]]
        shown += [e["id"] for section in out["sections"] for e in section["entries"]]
        shown += [e["id"] for e in out["watchlist_entries"]]
        out = {**out, "item_ids": list(dict.fromkeys(shown))}
    return out


def single_entry(
    candidate: DigestCandidate, themes: Sequence[str], names: Mapping[str, str]
) -> DigestEntry:
    """One item as a story on its own (an instant alert); ``names``: ``theme_names``."""
    return DigestEntry(
        item=candidate,
        rank=0.0,
        reasons=_reasons(candidate, themes, names),
        snippet=snippet(candidate.summary_text),
    )


def alert_worthy(candidate: DigestCandidate, alert_themes: Iterable[str]) -> bool:
    """High priority: relevant, the United States involved, in one of the alert themes."""
    return (
        candidate.relevant
        and candidate.us_link
        and any(theme in candidate.themes for theme in alert_themes)
    )
