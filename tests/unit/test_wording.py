from __future__ import annotations

import pytest

from pipeline.core.wording import counted


@pytest.mark.parametrize(
    ("count", "noun", "plural", "said"),
    [
        (0, "theme", None, "0 themes"),
        (1, "theme", None, "1 theme"),
        (2, "watchlist", None, "2 watchlists"),
        (1, "story", "stories", "1 story"),
        (5, "story", "stories", "5 stories"),
    ],
)
def test_a_count_agrees_with_its_noun(count: int, noun: str, plural: str | None, said: str) -> None:
    assert counted(count, noun, plural) == said
