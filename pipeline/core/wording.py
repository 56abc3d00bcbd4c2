"""Plain-English wording shared by emails, web pages and the command line."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and the noun in agreement: "1 theme", "0 themes", "2 stories"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
