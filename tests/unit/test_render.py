"""Email rendering: escaping of hostile feed text (X-01, X-02, X-04), both parts, links."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.adapters.render import (
    EmailRenderer,
    Recipient,
    SiteInfo,
    build_environment,
    one_line,
    safe_url,
)
from pipeline.core.digest import (
    DigestCandidate,
    DigestRequest,
    ThemeInfo,
    build_digest,
    digest_as_dict,
    entry_as_dict,
    single_entry,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
END = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    '"><svg onload=alert(3)>',
    "javascript:alert(4)",
]
SITE = SiteInfo("qasid", "https://qasid.example", "https://qasid.example/archive", "1 Main St")
RECIPIENT = Recipient(
    reason="You get this because you subscribed.",
    manage_url="https://qasid.example/manage/t",
    unsubscribe_url="https://qasid.example/unsubscribe/t",
    view_url="https://qasid.example/e/1/t",
    timezone="Asia/Karachi",
)


def hostile_digest() -> dict[str, object]:
    candidates = [
        DigestCandidate(
            id=f"i{n}",
            title=f"{payload} headline {n}",
            link=[
                "javascript:alert(9)",
                "JaVaScRiPt:x",
                "data:text/html,x",
                "https://ok.example/a",
            ][n],
            source=payload,
            published=END - timedelta(hours=n + 1),
            summary_text=f"Summary {payload}",
            themes=("economy",),
            scores={"economy": 5.0},
            evidence={"economy": [payload]},
            us_link=False,
            relevant=True,
            watchlists=(payload,),
        )
        for n, payload in enumerate(PAYLOADS)
    ]
    theme = ThemeInfo("economy", f"Economy {PAYLOADS[0]}", context=f"Context {PAYLOADS[1]}")
    request = DigestRequest(
        themes=["economy"], period_start=END - timedelta(days=1), period_end=END, top_stories=1
    )
    return digest_as_dict(build_digest(candidates, request, [theme]))


@pytest.fixture
def renderer() -> EmailRenderer:
    return EmailRenderer(TEMPLATES, SITE)


def test_hostile_feed_text_is_escaped_in_the_html_part(renderer: EmailRenderer) -> None:
    email = renderer.digest(hostile_digest(), RECIPIENT, "Daily digest")
    html = email.html
    assert (
        "<script" not in html.lower().replace("<script", "<script", 0)
        or "<script>alert" not in html
    )
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "<svg onload" not in html
    assert not re.search(r"<[^>]+\son\w+=", html), "an event handler attribute got through"


def test_only_http_links_reach_an_href(renderer: EmailRenderer) -> None:
    html = renderer.digest(hostile_digest(), RECIPIENT, "Daily digest").html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs and all(h.startswith(("https://", "http://")) for h in hrefs)
    assert "https://ok.example/a" in hrefs


def test_text_part_shows_the_literal_text_and_every_footer_link(renderer: EmailRenderer) -> None:
    text = renderer.digest(hostile_digest(), RECIPIENT, "Daily digest").text
    assert "<script>alert(1)</script> headline 0" in text
    for url in (RECIPIENT.manage_url, RECIPIENT.unsubscribe_url, SITE.archive_url):
        assert url in text
    assert SITE.postal_address in text
    assert "https://ok.example/a" in text
    for bad_link in ("javascript:alert(9)", "JaVaScRiPt:x", "data:text/html,x"):
        assert bad_link not in text


def test_html_part_has_the_footer_preheader_and_inlined_css(renderer: EmailRenderer) -> None:
    email = renderer.digest(hostile_digest(), RECIPIENT, "Daily digest")
    assert RECIPIENT.unsubscribe_url in email.html and SITE.postal_address in email.html
    assert 'class="preheader"' in email.html
    assert 'style="' in email.html  # inlined
    assert "prefers-color-scheme" in email.html  # dark mode rules kept


def test_times_are_shown_in_the_readers_zone(renderer: EmailRenderer) -> None:
    text = renderer.digest(hostile_digest(), RECIPIENT, "Daily digest").text
    assert "PKT" in text


def test_subject_and_preheader_never_carry_line_breaks(renderer: EmailRenderer) -> None:
    content = hostile_digest()
    content["subject"] = "Digest\r\nBcc: victim@example.com"
    email = renderer.digest(content, RECIPIENT, "Daily digest")
    assert "\r" not in email.subject and "\n" not in email.subject


def test_alert_renders_one_story(renderer: EmailRenderer) -> None:
    entry = hostile_digest()["top"][0]  # type: ignore[index]
    email = renderer.alert(entry, RECIPIENT, "Sanctions, with US involvement")
    assert email.subject.startswith("qasid alert: ")
    assert "&lt;script&gt;" in email.html and "<script>" not in email.html


@pytest.mark.parametrize("undated", [False, True])
def test_an_alert_for_an_item_without_a_date_says_when_it_was_first_seen(
    renderer: EmailRenderer, undated: bool
) -> None:
    candidate = DigestCandidate(
        id="i1",
        title="Treasury designates network",
        link="https://news.example/1",
        source="Dawn",
        published=END - timedelta(hours=2),  # 05:00 PKT
        summary_text="The designation names three firms.",
        themes=("sanctions",),
        scores={"sanctions": 6.0},
        evidence={"sanctions": ["designates"]},
        us_link=True,
        relevant=True,
        undated=undated,
    )
    entry = entry_as_dict(single_entry(candidate, ["sanctions"], {"sanctions": "Sanctions"}))
    email = renderer.alert(entry, RECIPIENT, "Sanctions, with US involvement")
    for part in (email.text, re.sub(r"<[^>]+>", "", email.html)):
        assert "29 Nov 2026, 05:00 PKT" in part
        assert ("first seen 29 Nov 2026" in part) is undated


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " https://x", "data:text/html,x", "//evil.example/x", "/relative", ""],
)
def test_safe_url_refuses_everything_but_absolute_http(url: str) -> None:
    assert safe_url(url) == ""


def test_every_html_template_is_autoescaped() -> None:
    env = build_environment(TEMPLATES)
    names = env.list_templates()
    html_like = [n for n in names if re.search(r"\.(html?|xml|xhtml|svg)$", n)]
    assert html_like, "no templates found"
    assert all(n.endswith(".html") or n.endswith(".xml") for n in html_like)
    assert all(env.autoescape(n) if callable(env.autoescape) else env.autoescape for n in html_like)
    assert not any(n.endswith((".htm", ".jinja", ".j2")) for n in names)


@given(st.text())
def test_one_line_leaves_no_control_character_and_collapses_spaces(value: str) -> None:
    # The fast path (a printable value) must give what the character-by-character one does.
    slow = " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())
    assert one_line(value) == slow
    assert one_line(value).isprintable() or not one_line(value)


@given(
    st.text(alphabet=st.sampled_from(list("ab cd-e. ,\u00a0\u2014\u00e9\n\t\x1e")), max_size=120)
    | st.lists(st.text(alphabet="xyz.'", min_size=1, max_size=12), max_size=30).map(" ".join),
    st.integers(1, 80),
    st.sampled_from([None, "\n  ", " | "]),
)
def test_wordwrap_wraps_as_jinja_does(text: str, width: int, wrapstring: str | None) -> None:
    from jinja2 import Environment
    from jinja2.filters import do_wordwrap

    from pipeline.adapters.render import build_environment

    ours = build_environment(TEMPLATES).filters["wordwrap"]
    plain = Environment()
    assert ours(plain, text, width, wrapstring=wrapstring) == do_wordwrap(
        plain, text, width, wrapstring=wrapstring
    )


@given(
    st.dictionaries(
        st.sampled_from(["title", "link", "cut", "x"]),
        st.text(max_size=8) | st.integers() | st.none(),
        max_size=4,
    )
)
def test_a_dicts_fields_read_in_templates_as_in_plain_jinja(fields: dict[str, object]) -> None:
    """The email environment reads ``x.name`` on a dict by its key first (no
    ``AttributeError`` raised and caught per field): what a template shows is what plain
    Jinja2 shows, a missing field is undefined, and a dict method the templates call
    (``d.get``) still answers."""
    from jinja2 import Environment, StrictUndefined

    source = (
        "{{ e.title is defined }}|{% if e.title is defined %}{{ e.title }}{% endif %}|"
        "{{ e.x is defined }}|{{ e.cut is defined }}|{{ e.get('link', '-') }}"
    )
    plain = Environment(undefined=StrictUndefined, autoescape=True).from_string(source)
    ours = build_environment(TEMPLATES).from_string(source)
    assert ours.render(e=fields) == plain.render(e=fields)


def test_a_dict_key_named_like_a_method_is_read_as_the_key() -> None:
    # The one difference from plain Jinja2 (which gives the method): no digest or entry
    # field is named like a dict method.
    env = build_environment(TEMPLATES)
    assert env.from_string("{{ e.items }}").render(e={"items": "three"}) == "three"
    digest = hostile_digest()
    sections = cast(list[dict[str, Any]], digest["sections"])
    entries = cast(list[dict[str, Any]], digest["top"]) + [
        e for section in sections for e in section["entries"]
    ]
    names = set(digest) | {k for s in sections for k in s} | {k for e in entries for k in e}
    names |= {k for s in sections for k in s["theme"]}
    assert entries and not names & set(dir(dict))


def test_safe_url_answers_the_same_for_a_link_met_again() -> None:
    for url in ("https://news.example/a?b=1&c=2", "javascript:alert(1)", "https://x y"):
        assert safe_url(url) == safe_url(url) == (url if url.startswith("https://n") else "")
    assert safe_url(["https://news.example/"]) == ""  # not a string: refused, not cached
