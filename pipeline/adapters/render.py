"""Rendering emails with Jinja2 templates under templates/email/, CSS inlined by css-inline.

Every string from a feed is untrusted. HTML templates are autoescaped (the environment turns
autoescape on for every ``.html`` template and for template strings), and links go through
``safe_url``, which lets only absolute http(s) URLs into an ``href`` (autoescaping does not
neutralise a ``javascript:`` URL). Text templates are not escaped: they are plain text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import css_inline
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    pass_context,
    pass_environment,
    select_autoescape,
)
from jinja2.runtime import Context


@dataclass(frozen=True)
class SiteInfo:
    name: str
    base_url: str
    archive_url: str
    postal_address: str


@dataclass(frozen=True)
class Recipient:
    """What the footer says to one reader, and the reader's links and zone."""

    reason: str  # why you got this
    manage_url: str
    unsubscribe_url: str
    view_url: str = ""
    timezone: str = "UTC"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


def safe_url(value: object) -> str:
    """The URL if it is absolute http(s) with a host, else "" (never javascript:, data:...)."""
    if not isinstance(value, str):
        return ""
    return _safe_url_text(value)


@lru_cache(maxsize=65_536)  # a story's link is checked twice per part, in every batch
def _safe_url_text(value: str) -> str:
    if any(ch in value for ch in "\r\n\t\x00 "):
        return ""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return value


@lru_cache(maxsize=16_384)  # subjects and preheaders recur across readers
def one_line(value: str) -> str:
    """Header-safe: no CR, LF or other control characters, spaces collapsed."""
    if not value.isprintable():  # checked whole in C first: most values are printable
        value = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(value.split())


def _zone_name(context: Context) -> str:
    return getattr(context.get("recipient"), "timezone", "UTC") or "UTC"


class Placeholder(str):
    """A value that filters pass through untouched: the digest assembler renders a story
    once for every time zone, with this in place of the time, and fills the time in later."""


@pass_context
def local_time(context: Context, value: str) -> str:
    if isinstance(value, Placeholder):
        return value
    return local_time_text(value, _zone_name(context))


@lru_cache(maxsize=65_536)
def local_time_text(value: str, zone: str) -> str:
    """An ISO time as emails show it in ``zone``: "29 Nov 2026, 17:05 PKT"."""
    when = datetime.fromisoformat(value).astimezone(ZoneInfo(zone))
    return f"{when.day} {when:%b %Y, %H:%M} {when.tzname()}"


@pass_context
def local_date(context: Context, value: str) -> str:
    when = datetime.fromisoformat(value).astimezone(ZoneInfo(_zone_name(context)))
    return f"{when:%A} {when.day} {when:%B %Y}"


class _EmailEnvironment(Environment):
    """Jinja2's environment, with ``x.name`` on a plain dict looking up the key first.

    The templates read digests and entries, which are dicts, as ``e.title``; Jinja2 tries
    the attribute first and raises and catches an ``AttributeError`` before it reads the
    key, about 28 times per story (a quarter of a story's render). The same value comes
    back: no key of these dicts names a dict method the templates call (``d.get``, a
    missing key, still finds the method)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


def build_environment(
    templates_dir: Path,
    placeholders: frozenset[str] = frozenset(),
    environment: type[Environment] = _EmailEnvironment,
) -> Environment:
    """``placeholders``: the renderer's own substitution tags, allowed where a URL goes
    (they become each reader's links at send time; feeds cannot guess them).
    ``environment``: plain ``jinja2.Environment`` renders as Jinja2 alone does (the
    benchmark's yardstick)."""
    env = environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=select_autoescape(enabled_extensions=("html", "xml"), default_for_string=True),
        undefined=StrictUndefined,  # a missing variable is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates do not change under a job: no stat per render
    )

    def safe_url_or_tag(value: object) -> str:
        return value if isinstance(value, str) and value in placeholders else safe_url(value)

    env.filters.update(
        safe_url=safe_url_or_tag,
        local_time=local_time,
        local_date=local_date,
        wordwrap=_remembered_wordwrap(env.filters["wordwrap"]),
    )
    return env


def _remembered_wordwrap(wordwrap: Callable[..., str]) -> Callable[..., str]:
    """Jinja2's ``wordwrap`` (textwrap, pure Python) with its results kept: the same snippet
    and context paragraph are wrapped for every time zone and every email of a run.
    ``typed``: Markup and str of equal text are different inputs."""
    remembered = lru_cache(maxsize=16_384, typed=True)(wordwrap)

    @pass_environment
    def cached(
        environment: Environment,
        s: str,
        width: int = 79,
        break_long_words: bool = True,
        wrapstring: str | None = None,
        break_on_hyphens: bool = True,
    ) -> str:
        if type(s) is str and break_long_words and break_on_hyphens and width >= 1:
            joiner = environment.newline_sequence if wrapstring is None else wrapstring
            wrapped = _greedy_wrap(s, width, joiner)
            if wrapped is not None:
                return wrapped
        return remembered(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    return cached


# Words (no whitespace, no hyphen) between single spaces: text that textwrap wraps greedily,
# one word after another, and that needs no hyphen or long-word rule.
_SIMPLE_WORDS = re.compile(r"[^\s-]+(?: [^\s-]+)*")


def _greedy_wrap(s: str, width: int, joiner: str) -> str | None:
    """What ``wordwrap`` makes of simple text (most snippets: each story's is wrapped once,
    and textwrap took a quarter of rendering them), or None for anything else."""
    if not _SIMPLE_WORDS.fullmatch(s):
        return None
    lines: list[str] = []
    line: list[str] = []
    size = 0
    for word in s.split(" "):
        if len(word) > width:
            return None  # textwrap breaks it, its own way
        if line and size + 1 + len(word) <= width:
            line.append(word)
            size += 1 + len(word)
        else:
            if line:
                lines.append(" ".join(line))
            line, size = [word], len(word)
    lines.append(" ".join(line))
    return joiner.join(lines)


class EmailRenderer:
    """Digest and alert emails: an HTML part with inlined CSS and a plain-text part."""

    def __init__(
        self, templates_dir: Path, site: SiteInfo, placeholders: frozenset[str] = frozenset()
    ) -> None:
        self.env = build_environment(templates_dir, placeholders)
        self.site = site
        # @media rules (dark mode) stay in a <style> block; everything else is inlined.
        self.inliner = css_inline.CSSInliner(keep_at_rules=True)

    def _render(self, name: str, context: Mapping[str, Any]) -> tuple[str, str]:
        html = self.env.get_template(f"email/{name}.html").render(context)
        text = self.env.get_template(f"email/{name}.txt").render(context)
        return self.inliner.inline(html), text

    def digest(
        self, content: Mapping[str, Any], recipient: Recipient, heading: str
    ) -> RenderedEmail:
        """A digest edition (``digest_as_dict`` output) for one reader: the full path, one
        Jinja2 render and one CSS inlining per email (``digest_render.DigestAssembler``
        gives the same email from pieces rendered once per run)."""
        context = self.digest_context(content, recipient, heading)
        html, text = self._render("digest", context)
        return RenderedEmail(context["subject"], context["preheader"], html, text)

    def digest_context(
        self, content: Mapping[str, Any], recipient: Recipient, heading: str
    ) -> dict[str, Any]:
        """What digest.html and digest.txt are rendered with."""
        return {
            "d": content,
            "recipient": recipient,
            "site": self.site,
            "heading": heading,
            "subject": one_line(str(content["subject"])),
            "preheader": one_line(str(content.get("preheader", ""))),
        }

    def alert(self, entry: Mapping[str, Any], recipient: Recipient, heading: str) -> RenderedEmail:
        """A short email about one item (an entry dict as in a digest)."""
        subject = one_line(f"{self.site.name} alert: {entry['title']}")[:200]
        preheader = one_line(str(entry.get("snippet", "")))[:200]
        html, text = self._render(
            "alert",
            {
                "e": entry,
                "recipient": recipient,
                "site": self.site,
                "heading": heading,
                "subject": subject,
                "preheader": preheader,
            },
        )
        return RenderedEmail(subject, preheader, html, text)

    def confirmation(self, recipient: Recipient, confirm_url: str) -> RenderedEmail:
        """The double opt-in email: one link, nothing from any feed."""
        subject = f"Confirm your subscription to {self.site.name}"
        preheader = "One click and your first digest is on its way."
        html, text = self._render(
            "confirm",
            {
                "recipient": recipient,
                "site": self.site,
                "confirm_url": confirm_url,
                "subject": subject,
                "preheader": preheader,
            },
        )
        return RenderedEmail(subject, preheader, html, text)

    def manage_link(self, recipient: Recipient) -> RenderedEmail:
        """The "your link to manage qasid" email: one link, nothing from any feed."""
        subject = f"Your link to manage {self.site.name}"
        preheader = "Change your themes, schedule and watchlists, or pause."
        context = {
            "recipient": recipient,
            "site": self.site,
            "subject": subject,
            "preheader": preheader,
        }
        html, text = self._render("link", context)
        return RenderedEmail(subject, preheader, html, text)
