"""Benchmark: theme tagging speed (issue 3, "Speed"), against a naive baseline in the same run.

- Workload: items of about 400 characters (title + summary), normalisation included, with
  the shipped rules loaded (config/themes.toml, aliases.toml, feeds.toml: all 14 themes and
  every lexicon). English items are the dev corpus (../shared/corpus/dev.jsonl) with each
  summary extended by the summaries of the items after it until the item is ~400
  characters; Urdu items are synthetic: Urdu headlines of the corpus and Urdu spellings of
  the rules' terms in Urdu filler text, a third of them typed with Arabic letter variants
  (yeh, kaf, heh) and a sprinkle of diacritics and tatweel, as Urdu sites do, as many per
  English item as config/feeds.toml has Urdu feeds per English one.
- qasid: ``Tagger.tag`` per item (one Aho-Corasick pass over title and summary).
- Naive baseline: the same rules and terms, one compiled regular expression per term
  (``\\b`` word boundaries, words joined by non-word runs, case-insensitive unless the term
  is case-sensitive, ``\\w*`` for a trailing wildcard), searched in the normalised title and
  then summary, scored the straightforward way (same weights, title weight, thresholds,
  conditions, penalties, source prior; no "longer term wins"). Its agreement with qasid is
  printed to show it does comparable work.
- Each repetition times qasid and the baseline back to back (so both see the same machine
  noise); figures are medians over the repetitions, items per wall-clock second, with items
  per CPU-second beside them. One process, one thread: one core.

Run: ``python -m bench.tagging`` (``--quick``: fewer items for the baseline, 5 repetitions).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import re
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.matcher import compile_pattern
from pipeline.core.tagger import Tagger, TaggerRules, TagInput, Term, plain_text
from pipeline.core.text import fold_surface, is_urdu, surface_words, token_texts
from pipeline.evaluate import read_corpus, to_input
from pipeline.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "dev.jsonl"
TARGET_CHARS = 400
TARGET_RATE = 20_000.0
TARGET_RATIO = 30.0


# -- items ---------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    """``text`` cut at the last space at or before ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > 0 else limit].rstrip()


def english_items(rows: Sequence[dict[str, object]]) -> list[TagInput]:
    """Every dev item, its summary extended with the following items' summaries to make
    title + summary about ``TARGET_CHARS`` long."""
    bases = [to_input(row) for row in rows if not is_urdu(str(row.get("title") or ""))]
    summaries = [plain_text(item.summary) for item in bases]
    items = []
    for number, item in enumerate(bases):
        parts = [summaries[number]] if summaries[number] else []
        step = 1
        while len(item.title) + sum(len(p) + 1 for p in parts) < TARGET_CHARS:
            parts.append(summaries[(number + step) % len(bases)])
            step += 1
        summary = _cut(" ".join(p for p in parts if p), TARGET_CHARS - len(item.title) - 1)
        items.append(
            TagInput(
                f"en-{item.id}",
                item.title,
                summary,
                item.link,
                item.published,
                item.source,
                item.feed_url,
            )
        )
    return items


_URDU_FILLER = (
    "نے کہا کہ حکومت اس معاملے پر جلد فیصلہ کرے گی اور عوام کو آگاہ کیا جائے گا۔ "
    "ذرائع کے مطابق اجلاس میں اہم امور پر تفصیلی بات چیت ہوئی اور آئندہ کا لائحہ عمل طے کیا گیا۔ "
    "ترجمان کا کہنا تھا کہ ملک کی ترقی کے لیے سب کو مل کر کام کرنا ہو گا۔ "
    "رپورٹ کے مطابق یہ اقدام آئندہ ہفتے سے نافذ العمل ہو گا۔ "
    "مبصرین کا کہنا ہے کہ اس فیصلے کے دور رس اثرات مرتب ہوں گے۔ "
)
_ARABIC_VARIANTS = str.maketrans({"ی": "ي", "ک": "ك", "ہ": "ه"})
_URDU_SOURCES = (
    ("VOA Urdu", "https://www.urduvoa.com/api/"),
    ("BBC Urdu", "https://feeds.bbci.co.uk/urdu/rss.xml"),
    ("Geo Urdu", "https://urdu.geo.tv/rss/1"),
)


def _urdu_terms(rules: TaggerRules) -> list[str]:
    rule_terms = [term for rule in rules.lexicons for term in rule.terms]
    rule_terms += [term for rule in rules.themes for term in rule.terms]
    return sorted(
        {term.text.rstrip("*") for term in rule_terms if term.weight > 0 and is_urdu(term.text)}
    )


def urdu_items(rules: TaggerRules, rows: Sequence[dict[str, object]], count: int) -> list[TagInput]:
    """Synthetic Urdu items: corpus headlines and rule terms in filler text, ~400 chars."""
    rng = random.Random(3)
    headlines = [str(row["title"]) for row in rows if is_urdu(str(row.get("title") or ""))]
    terms = _urdu_terms(rules)
    filler = _URDU_FILLER.split("۔ ")
    items = []
    for number in range(count):
        picked = rng.sample(terms, 4)
        title = f"{picked[0]} {rng.choice(headlines)}" if number % 2 else rng.choice(headlines)
        sentences: list[str] = []
        while len(title) + sum(len(s) + 1 for s in sentences) < TARGET_CHARS + 40:
            sentence = rng.choice(filler).strip(" ۔")
            if rng.random() < 0.6:
                sentence = f"{rng.choice(picked)} {sentence} {rng.choice(terms)}"
            sentences.append(sentence + "۔")
        summary = _cut(" ".join(sentences), TARGET_CHARS - len(title) - 1)
        if number % 3 == 0:  # typed with Arabic letters, diacritics and tatweel here and there
            title = title.translate(_ARABIC_VARIANTS)
            summary = summary.translate(_ARABIC_VARIANTS).replace("ان", "اَن").replace("لم", "لـم")
        source, feed = _URDU_SOURCES[number % len(_URDU_SOURCES)]
        items.append(TagInput(f"ur-{number}", title, summary, "", "", source, feed))
    return items


def urdu_share(feeds: Path = REPO / "config" / "feeds.toml") -> float:
    """Urdu feeds per English one in the configured feeds (1/8 without a feeds file)."""
    try:
        languages = [feed.get("language", "") for feed in tomllib.loads(feeds.read_text())["feed"]]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return 1 / 8
    english = sum(language == "en" for language in languages)
    return sum(language == "ur" for language in languages) / max(1, english)


def build_items(rules: TaggerRules, corpus: Path = CORPUS) -> list[TagInput]:
    """The benchmark's item set: the English dev items, then Urdu ones in the proportion
    of Urdu to English feeds in config/feeds.toml."""
    rows = read_corpus(corpus)
    english = english_items(rows)
    return english + urdu_items(rules, rows, max(1, round(len(english) * urdu_share())))


# -- the naive baseline --------------------------------------------------------------------


def term_regex(term: Term) -> re.Pattern[str]:
    """One term as one regular expression with word boundaries."""
    body = term.text.strip()
    wildcard = body.endswith("*")
    body = body.rstrip("*").strip()
    words = surface_words(body) if term.case_sensitive else token_texts(body)
    core = r"[\W_]+".join(re.escape(word) for word in words)
    return re.compile(
        r"\b" + core + (r"\w*" if wildcard else r"\b"), 0 if term.case_sensitive else re.I
    )


@dataclass
class _NaiveRule:
    id: str
    terms: list[tuple[re.Pattern[str], float, str | None, str]]  # regex, weight, requires, group
    threshold: float
    title_weight: float
    requires: tuple[str, ...] = ()
    requires_any: tuple[str, ...] = ()
    penalties: tuple[tuple[str, float], ...] = ()
    theme: bool = False


class NaiveTagger:
    """The rules evaluated the straightforward way: every term's regex over every item."""

    def __init__(self, rules: TaggerRules, reference: Tagger) -> None:
        self.rules = rules
        self.reference = reference  # for the source lookup only (same outlets, same prior)
        self.rules_list: list[_NaiveRule] = []
        for lexicon in rules.lexicons:
            self.rules_list.append(
                _NaiveRule(
                    lexicon.id,
                    [self._term(t, n) for n, t in enumerate(lexicon.terms)],
                    lexicon.threshold,
                    lexicon.title_weight,
                )
            )
        for theme in rules.themes:
            self.rules_list.append(
                _NaiveRule(
                    theme.id,
                    [self._term(t, n) for n, t in enumerate(theme.terms)],
                    theme.threshold,
                    theme.title_weight,
                    theme.requires,
                    theme.requires_any,
                    theme.penalties,
                    theme=True,
                )
            )

    @staticmethod
    def _term(term: Term, number: int) -> tuple[re.Pattern[str], float, str | None, str]:
        compile_pattern(term.text, term.case_sensitive)  # the same validation as qasid
        return term_regex(term), term.weight, term.requires, term.group or str(number)

    def tag(self, item: TagInput) -> tuple[bool, bool, list[str]]:
        rules = self.rules
        title = fold_surface(item.title or "")
        summary = fold_surface(plain_text(item.summary or ""))
        found: dict[str, dict[str, tuple[float, str | None, bool]]] = {}
        for rule in self.rules_list:
            hits: dict[str, tuple[float, str | None, bool]] = {}
            for regex, weight, requires, group in rule.terms:
                if regex.search(title):
                    hits[group] = (weight, requires, True)
                elif group not in hits and regex.search(summary):
                    hits[group] = (weight, requires, False)
            found[rule.id] = hits
        by_id = {rule.id: rule for rule in self.rules_list}
        scores = {
            rule.id: sum(
                w * rule.title_weight if t else w
                for w, req, t in found[rule.id].values()
                if not req
            )
            for rule in self.rules_list
        }
        anchor_text = scores[rules.anchor]
        source = self.reference._source_evidence(item)
        if source.anchor_weight:
            anchor_hits = found[rules.anchor]
            cancel = rules.prior.cancel_lexicon
            foreign = found[cancel] if cancel else {}
            in_title = any(t for _, _, t in anchor_hits.values())
            foreign_title = any(t for _, _, t in foreign.values())
            if not (foreign and ((foreign_title and not in_title) or not anchor_hits)):
                scores[rules.anchor] += source.anchor_weight
        scores[rules.us] += source.us_weight
        fired = {rid for rid, score in scores.items() if score >= by_id[rid].threshold}
        if anchor_text >= by_id[rules.anchor].threshold:
            fired.add(rules.text_anchor)
        for rule in self.rules_list:
            extra = sum(
                w * rule.title_weight if t else w
                for w, req, t in found[rule.id].values()
                if req and req in fired
            )
            if extra:
                scores[rule.id] += extra
                if scores[rule.id] >= rule.threshold:
                    fired.add(rule.id)
                else:
                    fired.discard(rule.id)
        penalty = sum(amount for rid, amount in rules.penalties if rid in fired)
        themes = []
        for rule in self.rules_list:
            if not rule.theme or not found[rule.id]:
                continue
            score = scores[rule.id] - penalty
            score -= sum(amount for rid, amount in rule.penalties if rid in fired)
            if score < rule.threshold or any(r not in fired for r in rule.requires):
                continue
            if rule.requires_any and not any(r in fired for r in rule.requires_any):
                continue
            themes.append(rule.id)
        relevant = rules.anchor in fired and bool(themes)
        return relevant, rules.us in fired, themes if relevant else []


# -- measurement ---------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"
        f" ({platform.python_implementation()}), {platform.platform()},"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def busy_cpu_seconds() -> float:
    """CPU seconds (user, nice, system, irq, softirq, steal) of the whole machine so far,
    from /proc/stat; 0 where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(
    function: Callable[[TagInput], object], items: Sequence[TagInput], passes: int
) -> tuple[float, float]:
    """(items per wall second, items per CPU second) over ``passes`` passes."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(passes):
        for item in items:
            function(item)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(items) * passes
    return count / wall, count / max(cpu, 1e-9)


def run(quick: bool = False, reps: int | None = None, profile: bool = False) -> dict[str, Any]:
    """Measure, print progress and the table, and return the figures (``table``: Markdown)."""
    reps = max(5, reps or (5 if quick else 9))
    config = REPO / "config"
    started = time.perf_counter()
    rules = load_rules(config / "themes.toml", config / "aliases.toml", config / "feeds.toml")
    tagger = Tagger(rules)
    build_seconds = time.perf_counter() - started
    naive = NaiveTagger(rules, tagger)
    items = build_items(rules)
    english = [item for item in items if not str(item.id).startswith("ur-")]
    urdu = [item for item in items if str(item.id).startswith("ur-")]
    lengths = [len(item.title) + 1 + len(item.summary) for item in items]
    terms = sum(len(rule.terms) for rule in rules.lexicons)
    terms += sum(len(rule.terms) for rule in rules.themes)
    lines = [
        f"machine: {machine()}",
        f"rules: {len(rules.themes)} themes, {len(rules.lexicons)} lexicons, {terms} terms"
        f" (rules loaded and matcher built in {build_seconds:.2f} s)",
        f"items: {len(items)} ({len(english)} English from the dev corpus, {len(urdu)} Urdu"
        f" synthetic), characters median {statistics.median(lengths):.0f}"
        f" (min {min(lengths)}, max {max(lengths)})",
    ]
    # Agreement: the baseline does the same job (it lacks "longer term wins").
    agree = 0
    for item in items:
        result = tagger.tag(item)
        agree += naive.tag(item) == (result.relevant, result.us_link, result.themes)
    lines.append(
        f"the baseline agrees with qasid on {agree}/{len(items)} items (relevant, us_link, themes)"
    )
    print("\n".join(lines), flush=True)

    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        timed(tagger.tag, items, 20)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return {}

    naive_items = items[:: 6 if quick else 2]
    passes = max(1, round(0.6 * 20_000 / len(items)))  # about half a second at the target
    timed(tagger.tag, items, 1)  # warm up
    rows: dict[str, list[tuple[float, float]]] = {"all": [], "en": [], "ur": [], "naive": []}
    machine_busy, own_cpu, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    for rep in range(reps):
        gc.collect()
        rows["all"].append(timed(tagger.tag, items, passes))
        gc.collect()
        rows["naive"].append(timed(naive.tag, naive_items, 1))
        rows["en"].append(timed(tagger.tag, english, max(1, passes // 3)))
        rows["ur"].append(timed(tagger.tag, urdu, max(1, passes // 3)))
        print(
            f"  rep {rep + 1}/{reps}: qasid {rows['all'][-1][0]:,.0f} items/s,"
            f" naive {rows['naive'][-1][0]:,.0f} items/s",
            flush=True,
        )

    wall = time.perf_counter() - wall
    others = busy_cpu_seconds() - machine_busy - (time.process_time() - own_cpu)
    lines.append(
        f"during the measurement ({wall:.0f} s) other processes kept {max(0.0, others) / wall:.2f}"
        f" of the machine's {os.cpu_count()} CPUs busy (from /proc/stat)"
    )
    print(lines[-1], flush=True)

    def median(name: str, which: int) -> float:
        return statistics.median(row[which] for row in rows[name])

    rate = median("all", 0)
    ratios = [f[0] / s[0] for f, s in zip(rows["all"], rows["naive"], strict=True)]
    ratio = statistics.median(ratios)
    labels = {
        "all": f"qasid `Tagger.tag`, all {len(items)} items",
        "en": f"  of which English ({len(english)})",
        "ur": f"  of which Urdu ({len(urdu)})",
        "naive": f"naive, one regex per term ({len(naive_items)} items)",
    }
    table = [
        f"| {'':<40} | items/s (wall) | items/s (CPU) |",
        f"|{'-' * 42}|{'-' * 16}|{'-' * 15}|",
        *(
            f"| {label:<40} | {median(name, 0):>14,.0f} | {median(name, 1):>13,.0f} |"
            for name, label in labels.items()
        ),
        "",
        f"Medians of {reps} repetitions; per repetition qasid tags the {len(items)} items"
        f" {passes} times, then the baseline {len(naive_items)} items once.",
        f"Speed-up over the baseline: {ratio:.0f}x (median of the per-repetition ratios,"
        f" {min(ratios):.0f}-{max(ratios):.0f}x).",
        f"Targets: >= {TARGET_RATE:,.0f} items/s: {'met' if rate >= TARGET_RATE else 'NOT met'};"
        f" >= {TARGET_RATIO:.0f}x the baseline: {'met' if ratio >= TARGET_RATIO else 'NOT met'}.",
    ]
    text = "\n".join(table)
    print("\n" + text, flush=True)
    return {
        "items_per_second": rate,
        "items_per_cpu_second": median("all", 1),
        "english_items_per_second": median("en", 0),
        "urdu_items_per_second": median("ur", 0),
        "baseline_items_per_second": median("naive", 0),
        "speedup": ratio,
        "met": rate >= TARGET_RATE and ratio >= TARGET_RATIO,
        "table": "\n### Theme tagging (bench/tagging.py)\n\n"
        + "\n".join(lines)
        + "\n\n"
        + text
        + "\n",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tagging", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 repetitions, small baseline set")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (at least 5)")
    parser.add_argument("--profile", action="store_true", help="cProfile qasid's tagging")
    args = parser.parse_args(list(argv) if argv is not None else None)
    result = run(quick=args.quick, reps=args.reps, profile=args.profile)
    return 0 if args.profile or result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
