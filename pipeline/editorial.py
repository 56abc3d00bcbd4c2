"""The themes as readers see them: names and descriptions from config/themes.toml and the
context paragraphs of config/context/<theme>.md, in the digest's editorial order."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pipeline.core.digest import ThemeInfo
from pipeline.core.errors import ConfigError
from pipeline.core.tagger import THEME_IDS

# The order of sections in every digest: the bilateral relationship first, then security,
# the neighbourhood, the economy and energy, politics and society.
EDITORIAL_ORDER: tuple[str, ...] = (
    "us_diplomacy",
    "sanctions",
    "nuclear_missile",
    "counterterrorism",
    "military_establishment",
    "afghanistan",
    "india",
    "china",
    "economy",
    "iran_energy",
    "gulf",
    "democracy_rights",
    "climate",
    "diaspora",
)
assert sorted(EDITORIAL_ORDER) == sorted(THEME_IDS)


def load_theme_infos(root: Path) -> list[ThemeInfo]:
    """Every theme with its display name, one-line description and context paragraph."""
    config = Path(root) / "config"
    themes_file = config / "themes.toml"
    try:
        with themes_file.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError("themes", f"cannot be read: {error}", str(themes_file)) from error
    tables = document.get("themes", {})
    infos = []
    for theme_id in EDITORIAL_ORDER:
        table = tables.get(theme_id, {})
        context_file = config / "context" / f"{theme_id}.md"
        try:
            context = " ".join(context_file.read_text(encoding="utf-8").split())
        except OSError as error:
            raise ConfigError(
                f"context.{theme_id}", "the theme's context paragraph is missing", str(context_file)
            ) from error
        infos.append(
            ThemeInfo(
                id=theme_id,
                name=str(table.get("name") or theme_id.replace("_", " ").capitalize()),
                description=str(table.get("description") or ""),
                context=context,
            )
        )
    return infos
