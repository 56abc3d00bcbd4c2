"""Score the tagger on a labelled corpus: ``python -m pipeline.evaluate [--corpus PATH]``.

The corpus is JSON Lines with the tag input fields plus labels ``relevant``, ``us_link`` and
``themes`` (see ../shared/corpus/README.md). Prints precision, recall and F1 for
``relevant`` and ``us_link``, per-theme precision/recall/F1 and the macro-F1 over the 14
themes, a confusion summary (for items whose predicted theme set differs from the gold one:
which gold themes were missed while which others were predicted), optionally the items
in error (``--errors``), and the tagging speed. Theme scores count every item: a theme
predicted on an item labelled irrelevant is a false positive.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipeline.core.tagger import THEME_IDS, Tagger, TagInput, TagResult
from pipeline.rules import load_tagger

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dev.jsonl"


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, gold: bool, predicted: bool) -> None:
        if gold and predicted:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif gold:
            self.fn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Report:
    items: int = 0
    relevant: Counts = field(default_factory=Counts)
    us_link: Counts = field(default_factory=Counts)
    themes: dict[str, Counts] = field(default_factory=lambda: {t: Counts() for t in THEME_IDS})
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # gold theme, nothing predicted
    spurious: Counter[str] = field(default_factory=Counter)  # predicted, no gold theme
    errors: list[tuple[int, dict[str, Any], TagResult]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def macro_f1(self) -> float:
        return sum(c.f1 for c in self.themes.values()) / len(self.themes)

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def read_corpus(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def to_input(row: dict[str, Any]) -> TagInput:
    return TagInput(
        id=row.get("id"),
        title=row.get("title") or "",
        summary=row.get("summary") or "",
        link=row.get("link") or "",
        published=row.get("published") or "",
        source=row.get("source") or "",
        feed_url=row.get("feed_url") or "",
    )


def evaluate(tagger: Tagger, rows: Sequence[dict[str, Any]], repeat: int = 1) -> Report:
    """Tag ``rows`` and compare with their labels. ``repeat`` > 1 re-tags for timing."""
    inputs = [to_input(row) for row in rows]
    started = time.perf_counter()
    results = [tagger.tag(item) for item in inputs]
    for _ in range(repeat - 1):
        for item in inputs:
            tagger.tag(item)
    report = Report(items=len(rows) * repeat, seconds=time.perf_counter() - started)
    for row, result in zip(rows, results, strict=True):
        gold_themes = set(row.get("themes") or [])
        predicted = set(result.themes)
        report.relevant.add(bool(row.get("relevant")), result.relevant)
        report.us_link.add(bool(row.get("us_link")), result.us_link)
        for theme, counts in report.themes.items():
            counts.add(theme in gold_themes, theme in predicted)
        missed, extra = gold_themes - predicted, predicted - gold_themes
        for gold in missed:
            if extra:
                for other in extra:
                    report.confusion[(gold, other)] += 1
            else:
                report.missed[gold] += 1
        if not missed:
            for other in extra:
                report.spurious[other] += 1
        wrong = (
            bool(row.get("relevant")) != result.relevant
            or bool(row.get("us_link")) != result.us_link
            or gold_themes != predicted
        )
        if wrong:
            weight = (
                2 * (bool(row.get("relevant")) != result.relevant)
                + (bool(row.get("us_link")) != result.us_link)
                + len(missed ^ extra)
            )
            report.errors.append((weight, row, result))
    report.errors.sort(key=lambda entry: -entry[0])
    return report


def _line(name: str, counts: Counts) -> str:
    return (
        f"{name:<24} P {counts.precision:5.3f}  R {counts.recall:5.3f}  F1 {counts.f1:5.3f}"
        f"   (tp {counts.tp}, fp {counts.fp}, fn {counts.fn})"
    )


def print_report(report: Report, out: TextIO, errors: int = 0) -> None:
    print(f"items: {report.items}", file=out)
    print(_line("relevant", report.relevant), file=out)
    print(_line("us_link", report.us_link), file=out)
    print("themes:", file=out)
    for theme, counts in sorted(report.themes.items(), key=lambda pair: pair[1].f1):
        print("  " + _line(theme, counts), file=out)
    print(f"theme macro-F1: {report.macro_f1:.3f}", file=out)
    print("confusion (gold theme missed → theme predicted instead):", file=out)
    rows = [f"  {g} → {p}: {n}" for (g, p), n in report.confusion.most_common()]
    rows += [f"  {g} → (none): {n}" for g, n in report.missed.most_common()]
    rows += [f"  (none) → {p}: {n}" for p, n in report.spurious.most_common()]
    for text in rows or ["  (no confusions)"]:
        print(text, file=out)
    if errors:
        print(f"worst items (up to {errors}):", file=out)
        for _, row, result in report.errors[:errors]:
            gold = "R" if row.get("relevant") else "-"
            gold += "U" if row.get("us_link") else "-"
            got = ("R" if result.relevant else "-") + ("U" if result.us_link else "-")
            print(
                f"  {row.get('id')} gold {gold} {sorted(row.get('themes') or [])}"
                f" | got {got} {sorted(result.themes)} | {row.get('title', '')[:90]}",
                file=out,
            )
            print(f"      scores {result.scores} evidence {result.evidence}", file=out)
    print(
        f"speed: {report.items_per_second:,.0f} items/s ({report.items} items in"
        f" {report.seconds:.3f} s, one core, normalisation included)",
        file=out,
    )


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="labelled JSONL")
    parser.add_argument("--root", type=Path, default=REPO, help="instance root (config/)")
    parser.add_argument(
        "--errors", type=int, nargs="?", const=40, default=0, help="list N worst items"
    )
    parser.add_argument("--repeat", type=int, default=5, help="passes for the speed figure")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.corpus.exists():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2
    tagger = load_tagger(args.root)
    rows = read_corpus(args.corpus)
    report = evaluate(tagger, rows, repeat=max(1, args.repeat))
    print_report(report, sys.stdout, errors=args.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
