"""Watchlist fan-out (issue 3): 100,000 subscribers x 5 queries against one day of 20,000 items.

    python -m bench.watchlist_fanout            # full size, 3 measured runs
    python -m bench.watchlist_fanout --quick    # 10,000 subscribers, 4,000 items, 1 run
    python -m bench.watchlist_fanout --max-volume 0.01   # broader queries (more matches)

The workload is synthetic and fixed by a seed (see ``make_workload``):

- Vocabulary: 50,000 distinct terms in a Zipf (s=1) rank order: ~100 real English and ~30
  real Urdu terms (names, places, programmes, acronyms such as US, ISI, IMF, F-16, CPEC)
  spread over the top ranks, then synthetic words, two- and three-word phrases, Urdu words
  and phrases, and capital acronyms (case-sensitive in queries).
- Items: 90% English, 10% Urdu, ~400 characters (title + body). About one word slot in
  five draws a vocabulary term by Zipf rank (English items from the English terms, Urdu
  items from the Urdu ones), the rest is filler. Aliased terms appear under any of their
  spellings (CPEC as "China-Pakistan Economic Corridor" or سی پیک), Urdu words with Arabic
  letter variants a third of the time, acronyms in capitals.
- Queries: each subscriber writes 5, each term drawn by Zipf rank from the same vocabulary
  (so popular terms and whole queries are shared): single terms, AND pairs, OR groups (some
  across scripts), exclusions, NEAR between two different terms, title:, trailing
  wildcards; 10% of queries in Urdu. Like a reader tuning a query with ``qasid watchlist
  test``, a query whose expected volume is over ``MAX_VOLUME`` of the day's items (0.25%,
  50 items) gets another AND term, up to three times; ``--max-volume 0.01`` is a heavier
  variant (queries left at up to 200 items a day).

Each measured run is a fresh process (so peak RSS is that of one run): load the workload,
build the index from the query texts (parsing included) with config/aliases.toml, build the
automaton, then match every item and select each subscriber's items. The parent then checks
the engine against the slow exact reference (``query.matches_text``) on a sample: recall
against the plain queries, and recall and precision against the alias-expanded queries; the
reference's time per evaluation, extrapolated, is the naive baseline.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import machine, median, spread, step, table

ROOT = Path(__file__).resolve().parents[1]
SEED = 20250301
# A query expected to match more than this share of the day's items gets another AND term
# (up to three), as a reader tuning it with `qasid watchlist test` would: 0.25% of 20,000
# items is 50 a day. `--max-volume 0.01` (200 a day) is the heavier variant.
MAX_VOLUME = 0.0025

# -- vocabulary ------------------------------------------------------------------------------

REAL_EN = [
    "Pakistan", "IMF", "CPEC", "army", "Imran Khan", "ISI", "US", "F-16", "Gwadar",
    "Balochistan", "drone strike", "sanctions", "TTP", "Taliban", "Kabul", "India", "Kashmir",
    "Shehbaz Sharif", "Asim Munir", "budget", "inflation", "loan", "State Bank", "Karachi",
    "Lahore", "Islamabad", "Peshawar", "Quetta", "Waziristan", "Khyber Pakhtunkhwa", "PTI",
    "PML-N", "PPP", "Supreme Court", "election", "Afghanistan", "China", "Iran",
    "Saudi Arabia", "World Bank", "FATF", "terrorism", "militants", "blasphemy", "floods",
    "heatwave", "climate", "petrol prices", "electricity tariff", "circular debt",
    "remittances", "diaspora", "visa", "Washington", "State Department", "Pentagon",
    "Trump", "nuclear", "missile", "Line of Control", "Modi", "Indus Waters Treaty", "Qatar",
    "UAE", "Bilawal Bhutto", "Maryam Nawaz", "Nawaz Sharif", "Zardari", "Ishaq Dar", "NAB",
    "FBR", "SBP", "PSX", "Reko Diq", "Chinese engineers", "suicide bombing", "BLA",
    "Jaffar Express", "Torkham", "refugees", "deportation", "polio", "smog", "wheat",
    "sugar", "cotton", "textile exports", "Eurobond", "credit rating", "Moody's", "Fitch",
    "Inter-Services Intelligence", "China-Pakistan Economic Corridor", "PM", "U.S.",
]  # fmt: skip
REAL_UR = [
    "پاکستان", "سی پیک", "عمران خان", "فوج", "قرض", "مہنگائی", "بجٹ", "امریکہ",
    "آئی ایم ایف", "بلوچستان", "کراچی", "لاہور", "اسلام آباد", "دہشت گردی", "طالبان",
    "افغانستان", "بھارت", "کشمیر", "چین", "ایران", "سیلاب", "انتخابات", "سپریم کورٹ",
    "شہباز شریف", "عاصم منیر", "پٹرول", "بجلی", "گوادر", "وزیر اعظم", "آرمی چیف",
]  # fmt: skip
FILLER_EN = (
    "the of and to in a on for with that as by at from its was is are were has have had "
    "be been will would said says after over about more than new also it this but not or "
    "which who their they he she his her an into up out two three first last year week "
    "day month today government minister officials official report people country "
    "according told statement meeting talks plan deal amid under against between during "
    "while since before could should may can must per cent million billion rupees dollars "
    "local national federal provincial senior former chief city region area support "
    "move decision issue security economic political public major key recent further "
    "expected announced called held took made set part since least many other several "
    "both each such well still even back down off only just however because despite"
).split()
FILLER_UR = (
    "کے میں نے اور کی سے کو پر ہے کہا گیا ایک یہ وہ تھا تھی ہیں گی گے کر کیا جس بھی "
    "لیے بعد دوران حوالے مطابق کہ تک اب نہیں ساتھ"
).split()
LATIN_C = "bcdfghjklmnprstvwz"
LATIN_V = "aeiou"
URDU_C = "بپتٹجچحخدڈرزسشصطعغفقکگلمنوہ"
URDU_V = ["ا", "ی", "و", ""]
URDU_VARIANTS = str.maketrans({"ی": "ي", "ک": "ك", "ہ": "ه"})


@dataclass(frozen=True)
class Vocab:
    terms: list[str]  # by rank
    urdu: list[bool]
    acronym: list[bool]
    spellings: dict[str, list[str]]  # aliased term → how items may write it


def _latin_word(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 3, 3, 3, 4))
    word = "".join(rng.choice(LATIN_C) + rng.choice(LATIN_V) for _ in range(syllables))
    return word + (rng.choice(LATIN_C) if rng.random() < 0.4 else "")


def _urdu_word(rng: random.Random) -> str:
    return "".join(rng.choice(URDU_C) + rng.choice(URDU_V) for _ in range(rng.choice((2, 3))))


def make_vocab(size: int, rng: random.Random, aliases: dict[str, Any]) -> Vocab:
    reserved = set(FILLER_EN) | set(FILLER_UR) | {t.casefold() for t in REAL_EN + REAL_UR}
    seen = set(reserved)
    words: list[str] = []
    urdu_words: list[str] = []
    while len(words) < 40_000:
        w = _latin_word(rng)
        if w not in seen:
            seen.add(w)
            words.append(w)
    while len(urdu_words) < 10_000:
        w = _urdu_word(rng)
        if w not in seen:
            seen.add(w)
            urdu_words.append(w)
    synthetic: list[tuple[str, bool, bool]] = []
    used: set[str] = set()
    word_iter = iter(words)
    while len(synthetic) < size - len(REAL_EN) - len(REAL_UR):
        roll = rng.random()
        if roll < 0.66:
            term, ur, ac = next(word_iter), False, False
        elif roll < 0.84:
            term, ur, ac = f"{rng.choice(words)} {rng.choice(words)}", False, False
        elif roll < 0.88:
            term = " ".join(rng.choice(words) for _ in range(3))
            ur, ac = False, False
        elif roll < 0.95:
            term, ur, ac = rng.choice(urdu_words), True, False
        elif roll < 0.98:
            term, ur, ac = f"{rng.choice(urdu_words)} {rng.choice(urdu_words)}", True, False
        else:
            term = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(rng.choice((2, 3))))
            ur, ac = False, True
        if term.casefold() in used or term.casefold() in reserved:
            continue
        used.add(term.casefold())
        synthetic.append((term, ur, ac))
    # Real terms spread over the top 600 ranks.
    real = [(t, False, t.isupper() or t in ("F-16", "U.S.", "PML-N")) for t in REAL_EN]
    real += [(t, True, False) for t in REAL_UR]
    ranks = sorted(rng.sample(range(600), len(real)))
    order = list(synthetic)
    for rank, entry in zip(ranks, rng.sample(real, len(real)), strict=True):
        order.insert(rank, entry)
    spellings: dict[str, list[str]] = {}
    for alias in aliases.values():
        names = [*alias.names, *alias.case_sensitive]
        for name in names:
            if name in REAL_EN or name in REAL_UR:
                spellings[name] = names
    return Vocab(
        [t for t, _, _ in order], [u for _, u, _ in order], [a for _, _, a in order], spellings
    )


class Zipf:
    """Draw indexes of ``population`` with probability proportional to 1 / (rank + 1)."""

    def __init__(self, ranks: list[int]) -> None:
        self.ranks = ranks
        self.cum = list(itertools.accumulate(1.0 / (r + 1) for r in ranks))
        self.total = self.cum[-1]

    def draw(self, rng: random.Random) -> int:
        return self.ranks[bisect.bisect(self.cum, rng.random() * self.total)]

    def p(self, rank: int) -> float:
        return (1.0 / (rank + 1)) / self.total


# -- items -----------------------------------------------------------------------------------


def _render(term: str, vocab: Vocab, rank: int, rng: random.Random, title: bool) -> str:
    spellings = vocab.spellings.get(term)
    if spellings and rng.random() < 0.35:
        term = rng.choice(spellings)
    if vocab.urdu[rank] or not term.isascii():
        return term.translate(URDU_VARIANTS) if rng.random() < 0.33 else term
    if vocab.acronym[rank] or term.isupper():
        return term
    roll = rng.random()
    if title or roll < 0.25:
        return " ".join(w[:1].upper() + w[1:] for w in term.split(" "))
    if roll < 0.3:
        return term + "'s"
    return term


def make_item(
    n: int, vocab: Vocab, zipf_en: Zipf, zipf_ur: Zipf, rng: random.Random
) -> tuple[int, str, str]:
    urdu = rng.random() < 0.10
    zipf, filler = (zipf_ur, FILLER_UR) if urdu else (zipf_en, FILLER_EN)

    def words(chars: int, title: bool) -> str:
        out: list[str] = []
        length = 0
        while length < chars:
            if rng.random() < 0.2:
                rank = zipf.draw(rng)
                word = _render(vocab.terms[rank], vocab, rank, rng, title)
            else:
                word = rng.choice(filler)
                if title and not urdu:
                    word = word.capitalize()
            if not title and rng.random() < 0.06:
                word += rng.choice((",", ".", ":"))
            out.append(word)
            length += len(word) + 1
        return " ".join(out)

    return n, words(rng.randint(50, 80), True), words(rng.randint(300, 360), False)


# -- queries ---------------------------------------------------------------------------------


def _query_term(term: str, vocab: Vocab, rank: int, rng: random.Random) -> str:
    if " " in term or "-" in term or "'" in term:
        return f'"{term}"'
    if vocab.acronym[rank] or term.isupper() or not term.isascii():
        return term
    return term.capitalize() if rng.random() < 0.3 else term


def make_query(
    vocab: Vocab,
    zipf_en: Zipf,
    zipf_ur: Zipf,
    df: list[float],
    rng: random.Random,
    max_volume: float = MAX_VOLUME,
) -> str:
    """One subscriber query. Its terms come from one script (90% English, 10% Urdu: items
    are in one language, an AND across scripts would never match), except that an OR may
    add the other script's spelling; NEAR joins two different terms."""
    urdu = rng.random() < 0.10
    main, other = (zipf_ur, zipf_en) if urdu else (zipf_en, zipf_ur)

    def pick(z: Zipf = main, avoid: str = "") -> tuple[str, float]:
        while True:
            rank = z.draw(rng)
            text = _query_term(vocab.terms[rank], vocab, rank, rng)
            if text.casefold() != avoid.casefold():
                return text, df[rank]

    roll = rng.random()
    parts: list[str] = []
    volume = 1.0  # expected fraction of items matched, terms taken as independent
    if roll < 0.30:
        (a, pa) = pick()
        parts, volume = [a], pa
    elif roll < 0.52:
        (a, pa), (b, pb) = pick(), pick()
        parts, volume = [a, b], pa * pb
    elif roll < 0.66:
        (a, pa) = pick()
        (b, pb) = pick(other if rng.random() < 0.2 else main)
        if rng.random() < 0.5:
            parts, volume = [f"{a} OR {b}"], min(1.0, pa + pb)
        else:
            (c, pc) = pick()
            parts, volume = [c, f"({a} OR {b})"], pc * min(1.0, pa + pb)
    elif roll < 0.78:
        (a, pa), (b, pb), (c, _) = pick(), pick(), pick()
        if rng.random() < 0.5:
            parts, volume = [a, b, f"-{c}"], pa * pb
        else:
            (d, _) = pick()
            parts, volume = [a, f"-({c} OR {d})"], pa
    elif roll < 0.84:
        (a, pa) = pick()
        (b, pb) = pick(avoid=a)
        parts, volume = [f"{a} NEAR/{rng.choice((3, 5, 10))} {b}"], pa * pb * 0.3
    elif roll < 0.90:
        (a, pa), (b, pb) = pick(), pick()
        if rng.random() < 0.5:
            parts, volume = [f"title:{a}", b], pa * pb * 0.3
        else:
            parts, volume = [f"title:({a} OR {b})"], min(1.0, pa + pb) * 0.3
    else:
        while True:
            rank = zipf_en.draw(rng)
            term = vocab.terms[rank]
            if term.isascii() and term.isalpha() and len(term) >= 6:
                break
        (b, pb) = pick(zipf_en)
        parts, volume = [term[: rng.randint(4, len(term) - 1)] + "*", b], df[rank] * 2 * pb
    for _ in range(3):  # tuned like a reader with `qasid watchlist test`
        if volume <= max_volume:
            break
        (extra, pe) = pick()
        parts.append(extra)
        volume *= pe
    return " ".join(parts)


@dataclass
class Workload:
    queries: list[str]  # watchlist id = index; subscriber = index // per_subscriber
    per_subscriber: int
    items: list[tuple[int, str, str]]
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def make_workload(
    subscribers: int,
    per_subscriber: int,
    vocab_size: int,
    n_items: int,
    max_volume: float = MAX_VOLUME,
) -> Workload:
    from pipeline.rules import load_aliases

    started = time.perf_counter()
    rng = random.Random(SEED)
    aliases = load_aliases(ROOT / "config" / "aliases.toml")
    vocab = make_vocab(vocab_size, rng, aliases)
    ranks_en = [r for r in range(len(vocab.terms)) if not vocab.urdu[r]]
    ranks_ur = [r for r in range(len(vocab.terms)) if vocab.urdu[r]]
    zipf_en, zipf_ur = Zipf(ranks_en), Zipf(ranks_ur)
    items = [make_item(n, vocab, zipf_en, zipf_ur, rng) for n in range(n_items)]
    # Expected share of items holding each term (what a backtest would show a reader).
    per_item_draws = 400 / 6.5 * 0.2
    df = []
    for rank in range(len(vocab.terms)):
        z, share = (zipf_ur, 0.10) if vocab.urdu[rank] else (zipf_en, 0.90)
        df.append(share * (1 - (1 - z.p(rank)) ** per_item_draws))
    queries = [
        make_query(vocab, zipf_en, zipf_ur, df, rng, max_volume)
        for _ in range(subscribers * per_subscriber)
    ]
    notes = {
        "vocabulary": len(vocab.terms),
        "urdu terms": sum(vocab.urdu),
        "phrases": sum(" " in t for t in vocab.terms),
        "mean item chars": round(sum(len(t) + len(b) + 1 for _, t, b in items) / len(items)),
        "distinct queries": len(set(queries)),
    }
    return Workload(queries, per_subscriber, items, time.perf_counter() - started, notes)


# -- one measured run (fresh process) --------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` is not used: Linux carries the
    parent's peak over into a child across fork/vfork + exec, so a child smaller than the
    parent that started it would report the parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child(path: Path, sample_path: Path | None) -> dict[str, Any]:
    from pipeline.core.matcher import prepare_many
    from pipeline.core.query import parse_query
    from pipeline.core.watchlists import WatchlistIndex, subscribers_for_watchlists
    from pipeline.rules import load_aliases

    with path.open("rb") as handle:
        work: Workload = pickle.load(handle)
    aliases = load_aliases(ROOT / "config" / "aliases.toml")
    per = work.per_subscriber
    watchlists_of = {s: range(s * per, (s + 1) * per) for s in range(len(work.queries) // per)}
    out: dict[str, Any] = {"rss_loaded_mib": rss_mib()}
    cpu = time.process_time

    # Parsing alone, on a sample of distinct texts (the index parses each text once).
    distinct = list(dict.fromkeys(work.queries))
    sample = distinct[:: max(1, len(distinct) // 20_000)]
    t0 = time.perf_counter()
    for text in sample:
        parse_query(text)
    out["parse_per_query_s"] = (time.perf_counter() - t0) / len(sample)
    out["distinct_texts"] = len(distinct)
    del distinct, sample

    index: WatchlistIndex[int] = WatchlistIndex(aliases=aliases)
    w0, c0 = time.perf_counter(), cpu()
    index.add_watchlists(enumerate(work.queries))
    w1, c1 = time.perf_counter(), cpu()
    index.compile()
    w2, c2 = time.perf_counter(), cpu()
    out.update(index_s=w1 - w0, index_cpu_s=c1 - c0, automaton_s=w2 - w1, automaton_cpu_s=c2 - c1)
    out["stats"] = index.stats()
    out["rss_built_mib"] = rss_mib()
    # The index is built with the cyclic GC paused, so its millions of objects all sit in
    # the youngest generation; their promotion (two collections walking them all, ~1 s
    # each here) would otherwise land in whichever later phase happens to trigger it. A
    # long-lived index pays it once: settle it here, timed on its own.
    w0 = time.perf_counter()
    gc.collect()
    out["gc_after_build_s"] = time.perf_counter() - w0

    # The automaton pass alone (prepare + scan), for scale.
    matcher = index.matcher
    t0 = time.perf_counter()
    spans = 0
    for _, title, body in work.items:
        spans += len(matcher.spans(prepare_many(title, body)[0]))
    out["scan_s"] = time.perf_counter() - t0
    out["spans_per_item"] = spans / len(work.items)

    w0, c0 = time.perf_counter(), cpu()
    by_watchlist = index.items_by_watchlist(work.items)
    w1, c1 = time.perf_counter(), cpu()
    selected = subscribers_for_watchlists(by_watchlist, watchlists_of)
    w2, c2 = time.perf_counter(), cpu()
    out.update(match_s=w1 - w0, match_cpu_s=c1 - c0, select_s=w2 - w1, select_cpu_s=c2 - c1)
    out["queries_evaluated"] = index.evaluations
    out["maxrss_mib"] = peak_rss_mib()
    per_watchlist = sorted(len(by_watchlist.get(w, ())) for w in range(len(work.queries)))
    per_subscriber = sorted(len(selected.get(s, ())) for s in watchlists_of)
    out["pairs_watchlist_item"] = sum(per_watchlist)
    out["pairs_subscriber_item"] = sum(per_subscriber)
    out["per_watchlist"] = _quantiles(per_watchlist)
    out["per_subscriber"] = _quantiles(per_subscriber)
    out["subscribers_with_items"] = sum(1 for n in per_subscriber if n)

    # The one-item path (instant alerts), on the first items, and that it agrees.
    first = work.items[: min(1_000, len(work.items))]
    index.evaluations = 0
    w0 = time.perf_counter()
    one_by_one = [index.match(title, body) for _, title, body in first]
    out["one_item_s"] = (time.perf_counter() - w0) / len(first)
    out["one_item_evaluated"] = index.evaluations / len(first)
    batch_view: dict[int, set[int]] = {n: set() for n, _, _ in first}
    for watchlist, found in by_watchlist.items():
        for n in found:
            if n in batch_view:
                batch_view[n].add(watchlist)
    out["one_item_same"] = all(
        set(got) == batch_view[n] for (n, _, _), got in zip(first, one_by_one, strict=True)
    )

    if sample_path is not None:  # the engine's answers on the reference sample
        with sample_path.open() as handle:
            wanted = json.load(handle)
        items = set(wanted["items"])
        chosen = {}
        for w in wanted["watchlists"]:
            chosen[str(w)] = [i for i in by_watchlist.get(w, ()) if i in items]
        out["sample"] = chosen
    return out


def _quantiles(values: list[int]) -> dict[str, float]:
    n = len(values)
    return {
        "median": values[n // 2],
        "mean": round(sum(values) / n, 2),
        "p90": values[int(n * 0.9)],
        "p99": values[int(n * 0.99)],
        "max": values[-1],
        "zero": sum(1 for v in values if v == 0) / n,
    }


def run_child(path: Path, sample_path: Path | None) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.watchlist_fanout", "--child", str(path)]
    if sample_path is not None:
        args += ["--sample", str(sample_path)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measured run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- reference ---------------------------------------------------------------------------------


def reference(
    work: Workload, watchlists: list[int], items: list[int], engine: dict[str, list[int]]
) -> dict[str, Any]:
    """Compare with ``matches_text`` on the sample: the plain query (recall: every match it
    finds the engine finds too) and the alias-expanded query (recall and precision)."""
    from pipeline.core.query import matches_text, parse_query
    from pipeline.core.watchlists import WatchlistIndex
    from pipeline.rules import load_aliases

    expander: WatchlistIndex[int] = WatchlistIndex(
        aliases=load_aliases(ROOT / "config" / "aliases.toml")
    )
    by_id = {n: work.items[n] for n in items}
    plain_found = expanded_found = engine_found = 0
    plain_missed = expanded_missed = extra = 0
    evaluations = 0
    started = time.perf_counter()
    for w in watchlists:
        query = parse_query(work.queries[w])
        expanded = expander.expand(query)
        got = set(engine[str(w)])
        engine_found += len(got)
        for n in items:
            _, title, body = by_id[n]
            hit_expanded = matches_text(expanded, title, body)
            evaluations += 1
            if expanded == query:
                hit_plain = hit_expanded
            else:
                hit_plain = matches_text(query, title, body)
                evaluations += 1
            plain_found += hit_plain
            expanded_found += hit_expanded
            plain_missed += hit_plain and n not in got
            expanded_missed += hit_expanded and n not in got
            extra += n in got and not hit_expanded
    seconds = time.perf_counter() - started
    return {
        "pairs": len(watchlists) * len(items),
        "reference_plain_matches": plain_found,
        "reference_expanded_matches": expanded_found,
        "engine_matches": engine_found,
        "recall_plain": 1 - plain_missed / plain_found if plain_found else 1.0,
        "recall_expanded": 1 - expanded_missed / expanded_found if expanded_found else 1.0,
        "precision_expanded": 1 - extra / engine_found if engine_found else 1.0,
        "seconds_per_evaluation": seconds / evaluations,
    }


# -- main --------------------------------------------------------------------------------------


def run(
    quick: bool = False, runs: int | None = None, max_volume: float = MAX_VOLUME
) -> dict[str, Any]:
    """Generate the workload, measure ``runs`` fresh processes, check against the
    reference; returns the figures and ``table`` (Markdown)."""
    if quick:
        subscribers, n_items, runs = 10_000, 4_000, runs or 1
        sample_watchlists, sample_items = 400, 100
    else:
        subscribers, n_items, runs = 100_000, 20_000, runs or 3
        sample_watchlists, sample_items = 1_500, 200
    step(
        f"workload: {subscribers:,} subscribers x 5 queries, {n_items:,} items, "
        f"queries tuned to at most {max_volume:.2%} of the items"
    )
    work = make_workload(subscribers, 5, 50_000, n_items, max_volume)
    step(f"generated in {work.seconds:.1f}s: {work.notes}")
    rng = random.Random(SEED + 1)
    sample_w = sorted(rng.sample(range(len(work.queries)), sample_watchlists))
    sample_i = sorted(rng.sample(range(n_items), sample_items))

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qasid-fanout-") as folder:
        path = Path(folder) / "workload.pickle"
        with path.open("wb") as handle:
            pickle.dump(work, handle, protocol=pickle.HIGHEST_PROTOCOL)
        sample_path = Path(folder) / "sample.json"
        sample_path.write_text(json.dumps({"watchlists": sample_w, "items": sample_i}))
        for run in range(runs):
            step(f"run {run + 1}/{runs} (fresh process)")
            result = run_child(path, sample_path if run == 0 else None)
            results.append(result)
            step(
                f"  index {result['index_s']:.2f}s, automaton {result['automaton_s']:.2f}s, "
                f"match {result['match_s']:.2f}s, select {result['select_s']:.2f}s, "
                f"peak {result['maxrss_mib']:.0f} MiB"
            )
    step(f"reference check: {sample_watchlists:,} watchlists x {sample_items} items")
    check = reference(work, sample_w, sample_i, results[0]["sample"])
    step(f"  {check}")

    first = results[0]

    def col(key: str) -> list[float]:
        return [r[key] for r in results]

    fanout = [r["match_s"] + r["select_s"] for r in results]
    fanout_cpu = [r["match_cpu_s"] + r["select_cpu_s"] for r in results]
    naive_s = check["seconds_per_evaluation"] * len(work.queries) * n_items
    parse_s = median(col("parse_per_query_s")) * first["distinct_texts"]
    rows = [
        ["index build from query texts, parsing included", spread(col("index_s"), "{:.1f}"), ""],
        ["  of which parsing (estimated from a sample)", f"{parse_s:.1f}", ""],
        ["automaton + batch plans build (compile)", spread(col("automaton_s"), "{:.2f}"), "< 2 s"],
        ["full GC after the build (not in any other row)",
         spread(col("gc_after_build_s"), "{:.2f}"), ""],
        ["scan alone (prepare + automaton), all items", spread(col("scan_s"), "{:.2f}"), ""],
        ["matching, all items (scan included)", spread(col("match_s"), "{:.2f}"), ""],
        ["each subscriber's selection", spread(col("select_s"), "{:.2f}"), ""],
        ["matching + selection, wall", spread(fanout, "{:.2f}"), "< 5 s"],
        ["matching + selection, CPU (one core)", spread(fanout_cpu, "{:.2f}"), "< 5 s"],
        ["peak RSS of the run (MiB, VmHWM)", spread(col("maxrss_mib"), "{:.0f}"), "< 1024"],
        ["  RSS after loading the workload (MiB)", spread(col("rss_loaded_mib"), "{:.0f}"), ""],
        ["one-item path (instant alerts), ms per item", spread(
            [1000 * v for v in col("one_item_s")], "{:.2f}"), ""],
        ["naive: every query by the slow reference (s, extrapolated)", f"{naive_s:,.0f}", ""],
        ["  speed-up of matching + selection over naive", f"{naive_s / median(fanout):,.0f}x", ""],
    ]  # fmt: skip
    title = f"Watchlist fan-out ({'quick' if quick else 'full'}; seconds, median (min-max, n=runs))"
    tables = [table(title, ["", "value", "target"], rows)]
    quality = [
        ["sample (watchlists x items)", f"{sample_watchlists:,} x {sample_items}"],
        ["reference matches (plain queries)", check["reference_plain_matches"]],
        ["reference matches (alias-expanded)", check["reference_expanded_matches"]],
        ["engine matches", check["engine_matches"]],
        ["recall vs plain reference", f"{check['recall_plain']:.4f}"],
        ["recall vs alias-expanded reference", f"{check['recall_expanded']:.4f}"],
        ["precision vs alias-expanded reference", f"{check['precision_expanded']:.4f}"],
        ["reference time per evaluation (us)", f"{check['seconds_per_evaluation'] * 1e6:.0f}"],
        ["one-item path agrees with the batch", all(col("one_item_same"))],
    ]
    tables.append(table("Agreement with the slow exact reference", ["", "value"], quality))
    keys = ("median", "mean", "p90", "p99", "max")
    stats = first["stats"]
    shape = [
        ["watchlists", f"{len(work.queries):,}"],
        ["distinct query texts", f"{first['distinct_texts']:,}"],
        ["index: " + ", ".join(stats), ", ".join(f"{v:,}" for v in stats.values())],
        ["automaton hits per item", f"{first['spans_per_item']:.1f}"],
        ["distinct queries evaluated for the day", f"{first['queries_evaluated']:,}"],
        ["queries evaluated per item on the one-item path", f"{first['one_item_evaluated']:.0f}"],
        ["(watchlist, item) matches", f"{first['pairs_watchlist_item']:,}"],
        ["(subscriber, item) selections", f"{first['pairs_subscriber_item']:,}"],
        ["items per watchlist: " + ", ".join(keys),
         ", ".join(str(first["per_watchlist"][k]) for k in keys)],
        ["items per subscriber: " + ", ".join(keys),
         ", ".join(str(first["per_subscriber"][k]) for k in keys)],
        ["subscribers with at least one item", f"{first['subscribers_with_items']:,}"],
    ]  # fmt: skip
    tables.append(table("Workload shape (first run)", ["", "value"], shape))
    ok = (
        median(col("automaton_s")) < 2
        and median(fanout_cpu) < 5
        and median(col("maxrss_mib")) < 1024
        and check["recall_plain"] == 1.0
        and check["recall_expanded"] == 1.0
        and check["precision_expanded"] == 1.0
    )
    verdict = "targets met" if ok else "targets NOT all met"
    return {
        "table": "".join(tables) + f"\n{verdict}; machine: {machine()}\n",
        "targets_met": ok,
        "runs": results,
        "check": check,
        "notes": {**work.notes, "max_volume": max_volume, "naive_s": naive_s},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--runs", type=int, default=None, help="measured runs (default 3)")
    parser.add_argument(
        "--max-volume", type=float, default=MAX_VOLUME, help="query tuning cap (share of items)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.sample)))
        return 0
    result = run(args.quick, args.runs, args.max_volume)
    print(result["table"])
    if args.json:
        result.pop("table")
        args.json.write_text(json.dumps(result, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
