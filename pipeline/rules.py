"""Theme rules from config: config/themes.toml, config/aliases.toml and config/feeds.toml
read into the tagger's rule dataclasses (``pipeline.core.tagger``).

The files' formats are documented at their tops. Anything wrong (unknown or missing theme
id, a weight that is not a number, an alias that does not exist, a condition naming an
unknown lexicon) raises ConfigError naming the file and the key, so an editor can fix it.
feeds.toml is optional here: when present, each ``[[feed]]``'s url, title, language,
country and kind tell the tagger what the source of an item is (the source prior).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.core.matcher import compile_pattern
from pipeline.core.tagger import (
    THEME_IDS,
    Lexicon,
    SourceInfo,
    SourcePrior,
    Tagger,
    TaggerRules,
    Term,
    ThemeRule,
    build_source_index,
)

DEFAULT_WEIGHTS = {"strong": 3.0, "medium": 2.0, "weak": 1.0, "block": 0.0, "negative": -2.0}
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_ALIAS_KEYS = frozenset({"id", "kind", "country", "names", "case_sensitive", "note"})
_ALIAS_KINDS = frozenset({"person", "organisation", "place", "programme", "group", "country"})
_TERM_KEYS = frozenset({"term", "weight", "case", "requires"})
_LEXICON_KEYS = frozenset({"threshold", "title_weight", *DEFAULT_WEIGHTS})
_THEME_KEYS = frozenset(
    {"name", "description", "requires", "requires_any", "penalties", *_LEXICON_KEYS}
)
_TOP_KEYS = frozenset({"weights", "defaults", "tagger", "prior", "source", "lexicons", "themes"})


@dataclass(frozen=True)
class Alias:
    id: str
    kind: str
    country: str
    names: tuple[str, ...]
    case_sensitive: tuple[str, ...]


def _read_toml(path: Path, key: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(key, "file not found", str(path)) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(key, f"not valid TOML: {error}", str(path)) from error
    except OSError as error:
        raise ConfigError(key, f"cannot be read: {error.strerror}", str(path)) from error


def _number(value: Any, key: str, source: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, "must be a number", source, value)
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be at least {minimum:g}", source, value)
    return float(value)


def _strings(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(key, "must be a list of non-empty strings", source, value)
    return tuple(value)


# -- aliases -------------------------------------------------------------------------------


def load_aliases(path: Path) -> dict[str, Alias]:
    """Read config/aliases.toml into aliases by id."""
    source = str(path)
    document = _read_toml(path, "aliases")
    extra = set(document) - {"alias"}
    if extra:
        raise ConfigError(sorted(extra)[0], "unknown key; aliases are [[alias]] tables", source)
    entries = document.get("alias", [])
    if not isinstance(entries, list):
        raise ConfigError("alias", "must be an array of [[alias]] tables", source)
    aliases: dict[str, Alias] = {}
    for position, entry in enumerate(entries, start=1):
        where = f"alias[{position}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a table", source)
        alias_id = entry.get("id")
        if not isinstance(alias_id, str) or not _ID.match(alias_id):
            raise ConfigError(
                f"{where}.id", "must be lowercase letters, digits, _", source, alias_id
            )
        where = f"alias.{alias_id}"
        unknown = set(entry) - _ALIAS_KEYS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key", source)
        if alias_id in aliases:
            raise ConfigError(f"{where}.id", "defined twice", source, alias_id)
        kind = entry.get("kind", "")
        if kind and kind not in _ALIAS_KINDS:
            raise ConfigError(
                f"{where}.kind", f"must be one of {', '.join(sorted(_ALIAS_KINDS))}", source, kind
            )
        country = entry.get("country", "")
        if country and (not isinstance(country, str) or not re.match(r"^[A-Z]{2}$", country)):
            raise ConfigError(f"{where}.country", "must be an ISO alpha-2 code", source, country)
        names = _strings(entry.get("names"), f"{where}.names", source)
        cased = _strings(entry.get("case_sensitive", []), f"{where}.case_sensitive", source)
        if not names and not cased:
            raise ConfigError(f"{where}.names", "needs at least one spelling", source)
        for name in (*names, *cased):
            try:
                compile_pattern(name)
            except ValueError as error:
                raise ConfigError(f"{where}.names", str(error), source, name) from error
        aliases[alias_id] = Alias(alias_id, kind, country, names, cased)
    return aliases


# -- feeds ---------------------------------------------------------------------------------


def load_feed_infos(path: Path) -> list[SourceInfo]:
    """What config/feeds.toml says about each feed (url, title, language, country, kind).
    Other keys are pipeline.sources' business and are not checked here. A missing file or
    an OPML file gives no sources."""
    if not path.exists() or path.suffix.lower() in (".opml", ".xml"):
        return []
    source = str(path)
    document = _read_toml(path, "feeds")
    entries = document.get("feed", [])
    if not isinstance(entries, list):
        raise ConfigError("feed", "must be an array of [[feed]] tables", source)
    infos = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"feed[{position}]", "must be a table", source)
        values = {}
        for key in ("url", "title", "language", "country", "kind"):
            value = entry.get(key, "")
            if not isinstance(value, str):
                raise ConfigError(f"feed[{position}].{key}", "must be a string", source, value)
            values[key] = value
        if values["url"]:
            infos.append(SourceInfo(**values))
    return infos


# -- themes --------------------------------------------------------------------------------


class _Reader:
    """Turns the tables of themes.toml into rule dataclasses, with errors naming keys."""

    def __init__(self, source: str, aliases: dict[str, Alias], weights: dict[str, float]):
        self.source = source
        self.aliases = aliases
        self.weights = weights
        self.requires_seen: list[tuple[str, str]] = []  # (key, referenced id) to check later

    def terms(self, table: dict[str, Any], where: str) -> tuple[Term, ...]:
        collected: dict[tuple[str, str | None, str | None], Term] = {}
        for tier, default in self.weights.items():
            if tier not in table:
                continue
            items = table[tier]
            key = f"{where}.{tier}"
            if not isinstance(items, list):
                raise ConfigError(key, "must be a list of terms", self.source)
            for number, item in enumerate(items, start=1):
                for term in self._expand(item, default, f"{key}[{number}]"):
                    try:
                        pattern = compile_pattern(term.text, term.case_sensitive)
                    except ValueError as error:
                        raise ConfigError(key, str(error), self.source, term.text) from error
                    ident = (pattern.key, pattern.case_surface, term.requires)
                    known = collected.get(ident)
                    if known is None or term.weight > known.weight:
                        collected[ident] = term
        return tuple(collected.values())

    def _expand(self, item: Any, default: float, key: str) -> list[Term]:
        weight, case, requires = default, False, None
        if isinstance(item, str):
            text = item
        elif isinstance(item, dict):
            unknown = set(item) - _TERM_KEYS
            if unknown:
                raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key", self.source)
            text = item.get("term", "")
            if "weight" in item:
                weight = _number(item["weight"], f"{key}.weight", self.source)
            case = item.get("case", False)
            if not isinstance(case, bool):
                raise ConfigError(f"{key}.case", "must be true or false", self.source, case)
            requires = item.get("requires")
            if requires is not None:
                if not isinstance(requires, str):
                    raise ConfigError(f"{key}.requires", "must be a rule id", self.source)
                self.requires_seen.append((f"{key}.requires", requires))
        else:
            raise ConfigError(key, "must be a string or an inline table", self.source, item)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(key, "needs a non-empty term", self.source, text)
        if not text.startswith("@"):
            return [Term(text, weight, case, requires)]
        alias = self.aliases.get(text[1:])
        if alias is None:
            raise ConfigError(key, "unknown alias (see config/aliases.toml)", self.source, text)
        group = f"{text}/{requires or ''}"  # the spellings count once
        terms = [Term(name, weight, case, requires, group) for name in alias.names]
        terms += [Term(name, weight, True, requires, group) for name in alias.case_sensitive]
        return terms

    def ids(self, value: Any, key: str) -> tuple[str, ...]:
        names = _strings(value, key, self.source)
        self.requires_seen.extend((key, name) for name in names)
        return names

    def penalties(self, value: Any, key: str) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, dict):
            raise ConfigError(key, "must be a table of rule id = amount", self.source, value)
        pairs = []
        for name, amount in value.items():
            self.requires_seen.append((f"{key}.{name}", name))
            pairs.append((name, _number(amount, f"{key}.{name}", self.source, minimum=0)))
        return tuple(pairs)


def load_rules(
    themes_file: Path, aliases_file: Path, feeds_file: Path | None = None
) -> TaggerRules:
    """Read the three files into TaggerRules. Raises ConfigError on any bad input."""
    source = str(themes_file)
    aliases = load_aliases(aliases_file)
    document = _read_toml(themes_file, "themes")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown section", source)

    weights = dict(DEFAULT_WEIGHTS)
    for tier, value in _table(document, "weights", source).items():
        if not _ID.match(tier) or tier in _THEME_KEYS - set(DEFAULT_WEIGHTS):
            raise ConfigError(f"weights.{tier}", "not a usable tier name", source)
        weights[tier] = _number(value, f"weights.{tier}", source)
    lexicon_keys = _LEXICON_KEYS | set(weights)
    theme_keys = _THEME_KEYS | set(weights)
    defaults = _table(document, "defaults", source)
    for key in defaults:
        if key not in ("title_weight", "theme_threshold", "lexicon_threshold"):
            raise ConfigError(f"defaults.{key}", "unknown setting", source)
    title_weight = _number(
        defaults.get("title_weight", 1.5), "defaults.title_weight", source, minimum=0
    )
    theme_threshold = _number(
        defaults.get("theme_threshold", 3.0), "defaults.theme_threshold", source, minimum=0
    )
    lexicon_threshold = _number(
        defaults.get("lexicon_threshold", 2.0), "defaults.lexicon_threshold", source, minimum=0
    )
    reader = _Reader(source, aliases, weights)

    lexicons = []
    for lexicon_id, table in _table(document, "lexicons", source).items():
        where = f"lexicons.{lexicon_id}"
        if not _ID.match(lexicon_id):
            raise ConfigError(where, "ids are lowercase letters, digits, _", source)
        if lexicon_id in THEME_IDS:
            raise ConfigError(where, "a lexicon cannot take a theme's id", source)
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table", source)
        _known_keys(table, lexicon_keys, where, source)
        lexicons.append(
            Lexicon(
                lexicon_id,
                reader.terms(table, where),
                _number(
                    table.get("threshold", lexicon_threshold),
                    f"{where}.threshold",
                    source,
                    minimum=0,
                ),
                _number(
                    table.get("title_weight", title_weight),
                    f"{where}.title_weight",
                    source,
                    minimum=0,
                ),
            )
        )

    themes_table = _table(document, "themes", source)
    for theme_id in themes_table:
        if theme_id not in THEME_IDS:
            raise ConfigError(
                f"themes.{theme_id}",
                f"unknown theme id; the ids are: {', '.join(THEME_IDS)}",
                source,
            )
    themes = []
    for theme_id in THEME_IDS:
        where = f"themes.{theme_id}"
        table = themes_table.get(theme_id)
        if table is None:
            raise ConfigError(where, "missing: every one of the 14 themes needs a rule", source)
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table", source)
        _known_keys(table, theme_keys, where, source)
        for key in ("name", "description"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise ConfigError(f"{where}.{key}", "required text", source)
        terms = reader.terms(table, where)
        if not any(term.weight > 0 for term in terms):
            raise ConfigError(where, "needs at least one term with a positive weight", source)
        themes.append(
            ThemeRule(
                theme_id,
                table["name"].strip(),
                table["description"].strip(),
                terms,
                _number(
                    table.get("threshold", theme_threshold), f"{where}.threshold", source, minimum=0
                ),
                _number(
                    table.get("title_weight", title_weight),
                    f"{where}.title_weight",
                    source,
                    minimum=0,
                ),
                reader.ids(table.get("requires", []), f"{where}.requires"),
                reader.ids(table.get("requires_any", []), f"{where}.requires_any"),
                reader.penalties(table.get("penalties", {}), f"{where}.penalties"),
            )
        )

    tagger = _table(document, "tagger", source)
    _known_keys(tagger, {"anchor", "text_anchor", "us", "penalties"}, "tagger", source)
    anchor = _id_value(tagger.get("anchor", "pakistan"), "tagger.anchor", source)
    text_anchor = _id_value(
        tagger.get("text_anchor", "pakistan_text"), "tagger.text_anchor", source
    )
    us = _id_value(tagger.get("us", "us"), "tagger.us", source)
    penalties = reader.penalties(tagger.get("penalties", {}), "tagger.penalties")

    prior_table = _table(document, "prior", source)
    _known_keys(
        prior_table,
        {
            "anchor_countries",
            "anchor_weight",
            "cancel_lexicon",
            "us_countries",
            "us_kinds",
            "us_weight",
        },
        "prior",
        source,
    )
    cancel = prior_table.get("cancel_lexicon", "foreign")
    if cancel is not None:
        reader.requires_seen.append(("prior.cancel_lexicon", cancel))
    prior = SourcePrior(
        anchor_countries=_strings(
            prior_table.get("anchor_countries", ["PK"]), "prior.anchor_countries", source
        ),
        anchor_weight=_number(
            prior_table.get("anchor_weight", 2.0), "prior.anchor_weight", source, minimum=0
        ),
        cancel_lexicon=cancel or None,
        us_countries=_strings(
            prior_table.get("us_countries", ["US"]), "prior.us_countries", source
        ),
        us_kinds=_strings(prior_table.get("us_kinds", ["government"]), "prior.us_kinds", source),
        us_weight=_number(prior_table.get("us_weight", 2.0), "prior.us_weight", source, minimum=0),
    )

    known_ids = {lexicon.id for lexicon in lexicons} | set(THEME_IDS) | {text_anchor}
    for key, name in [*reader.requires_seen, ("tagger.anchor", anchor), ("tagger.us", us)]:
        if name not in known_ids:
            raise ConfigError(key, "names no lexicon or theme", source, name)
    if text_anchor in {lexicon.id for lexicon in lexicons}:
        raise ConfigError("tagger.text_anchor", "must not be a lexicon's id", source, text_anchor)

    infos = load_feed_infos(feeds_file) if feeds_file is not None else []
    extra_sources = document.get("source", [])
    if not isinstance(extra_sources, list):
        raise ConfigError("source", "must be an array of [[source]] tables", source)
    for position, entry in enumerate(extra_sources, start=1):
        where = f"source[{position}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a table", source)
        _known_keys(entry, {"title", "url", "country", "kind", "language"}, where, source)
        values = {}
        for key in ("url", "title", "language", "country", "kind"):
            value = entry.get(key, "")
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key}", "must be a string", source, value)
            values[key] = value
        if not values["title"] and not values["url"]:
            raise ConfigError(where, "needs a title or a url", source)
        infos.append(SourceInfo(**values))

    return TaggerRules(
        themes=tuple(themes),
        lexicons=tuple(lexicons),
        anchor=anchor,
        us=us,
        text_anchor=text_anchor,
        penalties=penalties,
        prior=prior,
        sources=build_source_index(infos),
    )


def _table(document: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table", source)
    return value


def _known_keys(
    table: dict[str, Any], allowed: set[str] | frozenset[str], where: str, source: str
) -> None:
    unknown = set(table) - set(allowed)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key", source)


def _id_value(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(key, "must be a rule id", source, value)
    return value


def load_tagger(root: Path, feeds_file: Path | None = None) -> Tagger:
    """The tagger for the instance at ``root``: config/themes.toml, config/aliases.toml and,
    when present, config/feeds.toml (or ``feeds_file``) for the source prior."""
    config = Path(root) / "config"
    rules = load_rules(
        config / "themes.toml",
        config / "aliases.toml",
        feeds_file if feeds_file is not None else config / "feeds.toml",
    )
    try:
        return Tagger(rules)
    except ValueError as error:  # rules the loader could not see through (should not happen)
        raise ConfigError("themes", str(error), str(config / "themes.toml")) from error
