"""The tagger scored on the labelled development corpus (../shared/corpus/dev.jsonl)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipeline.evaluate import DEFAULT_CORPUS, evaluate, main, print_report, read_corpus
from pipeline.rules import load_tagger

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not DEFAULT_CORPUS.exists(), reason=f"dev corpus not found at {DEFAULT_CORPUS}"
)


def test_dev_corpus_meets_the_issue_targets() -> None:
    report = evaluate(load_tagger(REPO), read_corpus(DEFAULT_CORPUS))
    out = io.StringIO()
    print_report(report, out, errors=10)
    summary = out.getvalue()
    assert report.items == len(read_corpus(DEFAULT_CORPUS))
    assert report.relevant.f1 >= 0.95, summary
    assert report.us_link.f1 >= 0.93, summary
    assert report.macro_f1 >= 0.88, summary


def test_evaluate_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--corpus", str(DEFAULT_CORPUS), "--errors", "3", "--repeat", "1"]) == 0
    printed = capsys.readouterr().out
    for needle in ("relevant", "us_link", "theme macro-F1", "confusion", "items/s"):
        assert needle in printed


def test_evaluate_main_says_when_the_corpus_is_missing(tmp_path: Path) -> None:
    assert main(["--corpus", str(tmp_path / "nope.jsonl")]) == 2
