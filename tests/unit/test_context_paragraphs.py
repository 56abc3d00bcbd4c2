"""The theme context paragraphs in config/context: present, one paragraph each, 60-120 words,
and written in the project's own words rather than copied from the analysis."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTEXT_DIR = REPO / "config" / "context"
ANALYSIS_DIR = REPO.parent / "shared" / "analysis"

THEME_IDS = (
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
MIN_WORDS, MAX_WORDS = 60, 120
COPY_RUN = 12  # words in a row that may not appear verbatim in the analysis


def _paragraph(theme_id: str) -> str:
    return (CONTEXT_DIR / f"{theme_id}.md").read_text(encoding="utf-8")


def _words(text: str) -> list[str]:
    """Lower-cased word tokens, with typographic apostrophes and dashes folded."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text)


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_the_theme_ids_match_the_configured_themes() -> None:
    themes = tomllib.loads((REPO / "config" / "themes.toml").read_text(encoding="utf-8"))
    assert set(themes.get("themes", {})) == set(THEME_IDS)


def test_no_stray_paragraph_files() -> None:
    names = {p.stem for p in CONTEXT_DIR.glob("*.md") if p.name != "README.md"}
    assert names == set(THEME_IDS)


@pytest.mark.parametrize("theme_id", THEME_IDS)
def test_each_theme_has_one_paragraph_of_60_to_120_words(theme_id: str) -> None:
    path = CONTEXT_DIR / f"{theme_id}.md"
    assert path.is_file(), f"missing {path}"
    text = _paragraph(theme_id).strip()
    assert text, f"{path.name} is empty"
    assert not re.search(r"\n\s*\n", text), f"{path.name} has a blank line: one paragraph only"
    for line in text.splitlines():
        stripped = line.lstrip()
        assert not stripped.startswith("#"), f"{path.name} has a heading"
        assert not re.match(r"([-*+]|\d+[.)])\s", stripped), f"{path.name} has a list item"
    assert "](" not in text and "http" not in text, f"{path.name} has a link"
    count = len(text.split())
    assert MIN_WORDS <= count <= MAX_WORDS, f"{path.name} has {count} words"


@pytest.mark.parametrize("theme_id", THEME_IDS)
def test_no_run_of_12_words_is_copied_from_the_analysis(theme_id: str) -> None:
    if not ANALYSIS_DIR.is_dir():
        pytest.skip(f"analysis folder not found at {ANALYSIS_DIR}")
    analysis_runs: set[tuple[str, ...]] = set()
    for path in sorted(ANALYSIS_DIR.glob("*.txt")):
        analysis_runs |= _runs(_words(path.read_text(encoding="utf-8")), COPY_RUN)
    assert analysis_runs, f"no analysis text in {ANALYSIS_DIR}"
    copied = _runs(_words(_paragraph(theme_id)), COPY_RUN) & analysis_runs
    assert not copied, f"{theme_id}.md copies the analysis: {' '.join(min(copied))!r}"
