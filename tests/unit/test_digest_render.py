"""The digest fast path (pieces rendered once per run) gives the full path's email exactly."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.digest_render import STORY_FIELDS, DigestAssembler, escape_text
from pipeline.adapters.render import EmailRenderer, Recipient, SiteInfo
from pipeline.core.digest import (
    Digest,
    DigestCandidate,
    DigestJSON,
    DigestRequest,
    ThemeInfo,
    build_digest,
    digest_as_dict,
    expand_edition,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
END = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
SITE = SiteInfo("qasid", "https://qasid.example", "https://qasid.example/archive", "1 Main St")
TAGS = frozenset({"%%abcreason%%", "%%abcmanage%%", "%%abcunsubscribe%%", "%%abcview%%"})
HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    '"><svg onload=alert(3)>',
    "javascript:alert(4)",
    "Tom & Jerry's \u00a0“quotes” <b>bold</b>",
    "Urdu: پاکستان اور امریکہ",
    "control\x0bchars\x00and\r\nbreaks\x1f",
]
LINKS = [
    "javascript:alert(9)",
    "JaVaScRiPt:x",
    "data:text/html,x",
    "https://ok.example/a?x=1&y=2",
    'https://ok.example/"quoted"',
    "",
    "https://ok.example/b",
]
THEMES = [
    ThemeInfo("economy", "Economy <script>x</script>", context="Context <b>& more</b>"),
    ThemeInfo("india", "India", context=""),
    ThemeInfo("sanctions", "Sanctions & export controls", context="Why it matters."),
    ThemeInfo("climate", "Climate", context="Floods, heat & water."),
]
ZONES = ["Asia/Karachi", "America/New_York", "UTC"]


def candidates(rng: random.Random, count: int) -> list[DigestCandidate]:
    out = []
    for n in range(count):
        text = rng.choice(HOSTILE)
        themes = tuple(rng.sample([t.id for t in THEMES], rng.randint(1, 2)))
        story = rng.randrange(count // 2 + 1)  # shared headlines make clusters ("also")
        out.append(
            DigestCandidate(
                id=f"i{n}",
                title=f"Headline {story} {text}",
                link=rng.choice(LINKS),
                source=rng.choice(["Dawn", "The News", text, "Reuters"]),
                published=END - timedelta(minutes=rng.randrange(1, 1400)),
                summary_text=rng.choice(["", f"Summary of {story}: {text}. " * rng.randint(1, 9)]),
                themes=themes,
                scores={t: rng.uniform(1, 9) for t in themes},
                evidence={t: [rng.choice(HOSTILE), "term"] for t in themes},
                us_link=rng.random() < 0.4,
                relevant=rng.random() < 0.9,
                watchlists=tuple(
                    rng.sample(HOSTILE, rng.randint(0, 2)) if rng.random() < 0.2 else ()
                ),
                undated=n % 5 == 2,  # the feed gave no date (no draw: the seeds' cases stay)
            )
        )
    return out


def digests(seed: int) -> list[tuple[dict[str, object], Recipient, str]]:
    return [(digest_as_dict(d), recipient, heading) for d, recipient, heading in built(seed)]


def built(seed: int) -> list[tuple[Digest, Recipient, str]]:
    rng = random.Random(seed)
    out = []
    for n in range(12):
        # one theme in four digests: more watchlist hits fall outside the chosen themes
        chosen = rng.sample(
            [t.id for t in THEMES], 1 if n % 4 == 1 else rng.randint(1, len(THEMES))
        )
        request = DigestRequest(
            themes=chosen,
            period_start=END - timedelta(days=1),
            period_end=END,
            top_stories=rng.choice([0, 1, 3]),
            max_per_section=rng.choice([1, 4, 8]),
            max_watchlist_stories=rng.choice([1, 2, 10]),  # 1 and 2 cut the section short
            previous_counts={t: rng.randint(0, 5) for t in chosen} if n % 2 else None,
        )
        digest = build_digest(candidates(rng, rng.randint(0, 30)), request, THEMES)
        tagged = n % 3 == 0
        recipient = Recipient(
            reason="%%abcreason%%" if tagged else f"Because {rng.choice(HOSTILE)}",
            manage_url="%%abcmanage%%" if tagged else "https://qasid.example/manage/t",
            unsubscribe_url="%%abcunsubscribe%%" if tagged else "javascript:alert(5)",
            view_url=rng.choice(["", "%%abcview%%", "https://qasid.example/e/1/t"]),
            timezone=rng.choice(ZONES),
        )
        out.append((digest, recipient, rng.choice(["Daily digest", "Weekly <digest>"])))
    return out


@pytest.fixture
def renderer() -> EmailRenderer:
    return EmailRenderer(TEMPLATES, SITE, TAGS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_equals_the_full_render(renderer: EmailRenderer, seed: int) -> None:
    assembler = DigestAssembler(renderer)
    cases = digests(seed)
    assembler.prepare((content, recipient.timezone) for content, recipient, _ in cases[:6])
    for content, recipient, heading in cases + cases:  # the second round is all cache hits
        fast = assembler.digest(content, recipient, heading)
        full = renderer.digest(content, recipient, heading)
        assert fast == full


@pytest.mark.parametrize("seed", [4, 5])
def test_fast_path_equals_the_full_render_of_compact_editions_read_as_references(
    renderer: EmailRenderer, seed: int
) -> None:
    """As the send path reads editions: entries left as references to story parts, which
    the assembler looks up only for stories it has not rendered yet."""
    as_refs = assert_read_as_references_renders_whole(renderer, built(seed), prepared=6)
    assert any("part" in e for content, _, _ in as_refs for e in content["top"])  # type: ignore[attr-defined]


def assert_read_as_references_renders_whole(
    renderer: EmailRenderer, cases: list[tuple[Digest, Recipient, str]], prepared: int
) -> list[tuple[dict[str, object], Recipient, str]]:
    """Store the digests compact (one encoder, as a build does), read them as the send
    path does (entries as references), prepare the first ``prepared`` together and check
    every email against the full render of the whole edition. Returns what was read."""
    encoder = DigestJSON()
    stored = [(json.loads(encoder.compact(d)), r, h) for d, r, h in cases]
    parts = {key: json.loads(text) for key, text in encoder.new_parts().items()}
    as_refs = [(expand_edition(c, parts, keep_refs=True), r, h) for c, r, h in stored]
    assembler = DigestAssembler(renderer)
    assembler.prepare(((content, r.timezone) for content, r, _ in as_refs[:prepared]), parts)
    for (content, recipient, heading), (compact, _, _) in zip(as_refs, stored, strict=True):
        whole = expand_edition(compact, parts)
        assert assembler.digest(content, recipient, heading) == renderer.digest(
            whole, recipient, heading
        )
    return as_refs


@pytest.mark.parametrize(("seed", "kept"), [(6, None), (7, None), (8, 1)])
def test_shared_sections_read_as_references_render_as_the_full_render(
    renderer: EmailRenderer, seed: int, kept: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers of one theme choice whose hits leave a section (or the top stories) alone
    share it: stored as one part, read as that part's list, assembled from its stories
    flat per time zone.
    Every reader's email equals the full render of their whole edition, also when the
    assembler keeps a single shared section at a time (``kept``: it starts over)."""
    from pipeline.adapters import digest_render
    from pipeline.core.digest import ReaderDigests

    if kept is not None:
        monkeypatch.setattr(digest_render, "SHARED_KEPT", kept)
    rng = random.Random(seed)
    pool = [replace(c, watchlists=()) for c in candidates(rng, 60)]
    planner = ReaderDigests(pool, THEMES, END - timedelta(days=1), END)
    cases = []
    for n in range(24):
        chosen = [t.id for t in THEMES][: 2 + n % 3]
        hits = {c.id: [rng.choice(HOSTILE)] for c in rng.sample(pool, rng.randint(0, 3))}
        request = DigestRequest(
            themes=chosen, period_start=END - timedelta(days=1), period_end=END, max_per_section=4
        )
        recipient = Recipient(
            reason="%%abcreason%%",
            manage_url="%%abcmanage%%",
            unsubscribe_url="%%abcunsubscribe%%",
            timezone=ZONES[n % len(ZONES)],
        )
        cases.append((planner.build(request, hits), recipient, "Daily digest"))
    as_refs = assert_read_as_references_renders_whole(renderer, cases, prepared=12)
    shared = [
        s["entries_part"] for c, _, _ in as_refs for s in c["sections"] if "entries_part" in s
    ]  # type: ignore[attr-defined]
    assert len(shared) > len(set(shared)) > 1  # several sections, each of several readers
    tops = [c["top_part"] for c, _, _ in as_refs if "top_part" in c]
    assert len(tops) > len(set(tops))  # top stories of several readers, stored once


def test_an_undated_story_says_first_seen_on_both_paths_and_a_dated_one_is_stored_as_before(
    renderer: EmailRenderer,
) -> None:
    rng = random.Random(13)
    first, second = candidates(rng, 2)
    dated, undated = replace(first, undated=False), replace(second, undated=True)
    request = DigestRequest(
        themes=[t.id for t in THEMES], period_start=END - timedelta(days=1), period_end=END
    )
    digest = build_digest([dated, undated], request, THEMES)
    content = digest_as_dict(digest)
    heads = {e["id"]: e for e in content["top"]}  # type: ignore[attr-defined]
    assert heads[undated.id]["undated"] is True and "undated" not in heads[dated.id]
    recipient = Recipient(
        "why", "https://q.example/m", "https://q.example/u", timezone="Asia/Karachi"
    )
    fast = DigestAssembler(renderer).digest(content, recipient, "Daily")
    assert fast == renderer.digest(content, recipient, "Daily")
    assert fast.text.count("first seen ") == fast.html.count("first seen ") == 1
    seen = re.search(r"first seen (\d+ \w+ \d{4}, \d\d:\d\d PKT)", fast.text)
    assert seen is not None  # the time of first sight, in the reader's zone


def test_an_edition_read_as_references_needs_every_part() -> None:
    content = {"version": 2, "top": [{"part": "gone", "rank": 1.0, "reasons": []}]}
    with pytest.raises(KeyError):
        expand_edition(content, {}, keep_refs=True)


def test_a_watchlist_section_cut_short_says_so_on_both_paths(renderer: EmailRenderer) -> None:
    rng = random.Random(11)
    hits = [
        replace(c, relevant=False, themes=(), scores={}, evidence={}, watchlists=(HOSTILE[n % 3],))
        for n, c in enumerate(candidates(rng, 30))
    ]
    assembler = DigestAssembler(renderer)
    for cap in (1, 3):  # of 5 stories (the hostile texts make clusters)
        request = DigestRequest(
            themes=["economy"],
            period_start=END - timedelta(days=1),
            period_end=END,
            top_stories=0,
            max_watchlist_stories=cap,
        )
        content = digest_as_dict(build_digest(hits, request, THEMES))
        assert len(content["watchlist_entries"]) == cap  # type: ignore[arg-type]
        line = str(content["watchlist_line"])
        assert line.startswith(f"The {cap} highest-ranked of ")
        for zone in ZONES:
            recipient = Recipient(
                "why", "https://q.example/m", "https://q.example/u", timezone=zone
            )
            fast = assembler.digest(content, recipient, "Daily")
            assert fast == renderer.digest(content, recipient, "Daily")
            assert line in fast.text and line in fast.html


def test_hostile_text_stays_escaped_on_the_fast_path(renderer: EmailRenderer) -> None:
    assembler = DigestAssembler(renderer)
    rng = random.Random(7)
    request = DigestRequest(
        themes=[t.id for t in THEMES], period_start=END - timedelta(days=1), period_end=END
    )
    content = digest_as_dict(build_digest(candidates(rng, 40), request, THEMES))
    recipient = Recipient("why", "https://q.example/m", "https://q.example/u", timezone="UTC")
    html = assembler.digest(content, recipient, "Daily").html
    assert html == renderer.digest(content, recipient, "Daily").html
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert "<svg" not in html and "<img src=x" not in html
    assert not re.search(r'href="\s*(javascript|data):', html, re.IGNORECASE)


def test_story_cache_is_shared_across_readers(renderer: EmailRenderer) -> None:
    assembler = DigestAssembler(renderer)
    cases = [case for case in digests(4) if case[1].timezone == "UTC"]
    for content, recipient, heading in cases:
        assembler.digest(content, recipient, heading)
    probes = assembler.probes
    for content, recipient, heading in cases:
        assembler.digest(content, recipient, heading)
    assert assembler.probes == probes  # nothing rendered again


def test_a_story_is_rendered_once_for_every_time_zone(renderer: EmailRenderer) -> None:
    assembler = DigestAssembler(renderer)
    content, _, heading = digests(5)[0]
    in_one_zone = DigestAssembler(renderer).prepare([(content, ZONES[0])])
    assert assembler.prepare((content, zone) for zone in ZONES) == in_one_zone > 0  # not ×3
    shown = set()
    for zone in ZONES:
        recipient = Recipient("why", "https://q.example/m", "https://q.example/u", timezone=zone)
        fast = assembler.digest(content, recipient, heading)
        assert fast == renderer.digest(content, recipient, heading)
        shown.add(re.findall(r"\d\d:\d\d [A-Z+0-9-]+", fast.text)[0])
    assert len(shown) == len(ZONES)  # the same story, at each reader's local time


def test_story_templates_read_only_the_keyed_fields() -> None:
    """The story cache key is STORY_FIELDS and whether there are reasons: a template that
    showed another field of an entry would need it in the key."""
    story = (TEMPLATES / "email" / "_story.html").read_text()
    text = (TEMPLATES / "email" / "digest.txt").read_text()
    text = text[text.index("{% macro story") : text.index("{% endmacro %}")]
    used = set(re.findall(r"\be\.([a-z_]+)", story + text))
    assert used <= set(STORY_FIELDS) | {"reasons", "cut"}


@pytest.mark.parametrize("value", ["a & b < c > d", "no\u00a0break", "\"q\" 'x'", "plain"])
def test_escape_text_matches_the_inliner(renderer: EmailRenderer, value: str) -> None:
    html = renderer.env.from_string("<p>[{{ v }}]</p>").render(v=value)
    inlined = renderer.inliner.inline(html)
    assert f"[{escape_text(value)}]" in inlined


# feed text HTML escapes (& < > and no-break spaces), quotes, Urdu, line breaks, a
# word like the assembler's slots, and now and then a control character (rendered whole)
PLAIN_TEXT = st.lists(
    st.sampled_from([*"ab &<>\"'\u00a0\n\t-.:;پاکستان", "Dawn", " qslotx ", "\x0b"]),
    max_size=12,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(
    title=PLAIN_TEXT,
    source=PLAIN_TEXT,
    snippet=PLAIN_TEXT,
    also=st.lists(PLAIN_TEXT, max_size=3),
    link=st.sampled_from(["https://ok.example/b", "https://ok.example/a?x=1", "", "ftp://x/"]),
    undated=st.booleans(),
    reasons=st.booleans(),
)
def test_a_story_filled_into_its_shape_is_the_story_rendered_whole(
    title: str,
    source: str,
    snippet: str,
    also: list[str],
    link: str,
    undated: bool,
    reasons: bool,
) -> None:
    """Stories whose fields HTML shows as escape_text escapes them are filled into their
    shape's skeleton rather than rendered: the email is the full render's all the same."""
    renderer = EmailRenderer(TEMPLATES, SITE, TAGS)
    entry = {"id": "i1", "title": title, "link": link, "source": source,
             "published": (END - timedelta(hours=3)).isoformat(), "snippet": snippet,
             "also": also, "rank": 1.0, "reasons": ["watchlist: x & y"] if reasons else [],
             "themes": ["economy"], "us_link": False}  # fmt: skip
    if undated:
        entry["undated"] = True
    content = digest_as_dict(build_digest([], DigestRequest(["economy"], END, END), THEMES))
    content["top"] = [entry]
    recipient = Recipient("why", "https://qasid.example/m", "https://qasid.example/u", "", ZONES[0])
    assembler = DigestAssembler(renderer)
    assert assembler.digest(content, recipient, "Daily") == renderer.digest(
        content, recipient, "Daily"
    )
    # a story without control characters took its shape's skeleton
    assert bool(assembler._skeletons) == all(
        "\x0b" not in v and "\x00" not in v for v in (title, source, snippet, *also)
    )
