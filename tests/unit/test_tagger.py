"""The theme tagger: rules as data, word boundaries, aliases, conditions, source prior;
and the rules loader's errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.tagger import (
    THEME_IDS,
    Lexicon,
    SourceInfo,
    SourcePrior,
    Tagger,
    TaggerRules,
    TagInput,
    Term,
    ThemeRule,
    build_source_index,
    plain_text,
)
from pipeline.rules import load_rules, load_tagger

REPO = Path(__file__).resolve().parents[2]


def theme(theme_id: str, *terms: Term, **options: object) -> ThemeRule:
    return ThemeRule(theme_id, theme_id.title(), "test", terms, **options)  # type: ignore[arg-type]


def small_rules(**options: object) -> TaggerRules:
    """Two themes and the lexicons they need: enough to test behaviour, not the config."""
    lexicons = (
        Lexicon("pakistan", (Term("Pakistan", 3), Term("Islamabad", 2)), threshold=2),
        Lexicon(
            "us",
            (
                Term("US", 2, case_sensitive=True),
                Term("United States", 2),
                Term("to the US", 0),
            ),
            threshold=2,
        ),
        Lexicon("foreign", (Term("Syria", 2), Term("UK", 2, case_sensitive=True)), threshold=1),
        Lexicon("sport", (Term("cricket", 3),), threshold=2),
    )
    themes = (
        theme("sanctions", Term("sanctions", 3), threshold=3, requires=("pakistan_text",)),
        theme("economy", Term("tax", 3), Term("inflation", 3), threshold=3),
        theme(
            "military_establishment",
            Term("ISI", 3, case_sensitive=True),
            Term("army chief", 3),
            threshold=3,
        ),
        theme("us_diplomacy", Term("talks", 3), threshold=3, requires=("us",)),
    )
    return TaggerRules(
        themes=themes,
        lexicons=lexicons,
        penalties=(("sport", 10.0),),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(small_rules())


@pytest.fixture(scope="module")
def real() -> Tagger:
    return load_tagger(REPO)


def test_us_is_a_word_and_case_sensitive(tagger: Tagger) -> None:
    assert not tagger.tag(TagInput("1", "The bus took us to Islamabad")).us_link
    assert not tagger.tag(TagInput("2", "Pakistan: a bus crash")).us_link
    result = tagger.tag(TagInput("3", "US and Pakistan hold talks"))
    assert result.us_link
    assert result.themes == ["us_diplomacy"]
    assert result.evidence["_us"] == ["US"]


def test_a_destination_is_not_involvement(tagger: Tagger) -> None:
    # "to the US" (weight 0) covers "US": the longer term wins.
    assert not tagger.tag(TagInput("1", "Pakistani activist barred from flying to the US")).us_link


def test_isi_is_not_found_in_crisis(tagger: Tagger) -> None:
    assert tagger.tag(TagInput("1", "Pakistan faces a crisis of confidence")).themes == []
    result = tagger.tag(TagInput("2", "ISI chief meets army chief in Islamabad"))
    assert result.themes == ["military_establishment"]
    assert result.evidence["military_establishment"] == ["ISI", "army chief"]


def test_context_condition_needs_pakistan_in_the_text(tagger: Tagger) -> None:
    assert not tagger.tag(TagInput("1", "US sanctions on Syria")).relevant
    result = tagger.tag(TagInput("2", "US sanctions on Pakistan"))
    assert result.relevant and result.themes == ["sanctions"] and result.us_link


def test_relevance_needs_the_anchor_and_a_theme(tagger: Tagger) -> None:
    assert not tagger.tag(TagInput("1", "Pakistan and Sweden mark 75 years")).relevant
    assert not tagger.tag(TagInput("2", "Inflation eases in Kenya")).relevant
    result = tagger.tag(TagInput("3", "Inflation eases in Pakistan"))
    assert result.relevant and result.themes == ["economy"]
    assert result.scores["economy"] == 4.5  # strong term (3) in the title (x1.5)


def test_suppressor_vetoes_sport(tagger: Tagger) -> None:
    result = tagger.tag(TagInput("1", "Pakistan cricket board hit by new tax"))
    assert not result.relevant
    assert result.evidence["_suppressed"] == ["sport:-10"]


def source_tagger() -> Tagger:
    infos = [
        SourceInfo("https://pakobserver.net/feed/", "Pakistan Observer", "en", "PK", "newspaper"),
        SourceInfo("https://feeds.example.com/world", "Example World", "en", "US", "newspaper"),
        SourceInfo("https://www.state.gov/rss/", "State Department", "en", "US", "government"),
    ]
    return Tagger(small_rules(sources=build_source_index(infos), prior=SourcePrior()))


def test_source_prior_makes_a_pakistani_outlet_count_as_pakistan() -> None:
    tagger = source_tagger()
    title = "Cabinet approves new tax measures"
    local = tagger.tag(TagInput("1", title, feed_url="https://pakobserver.net/feed"))
    assert local.relevant and local.themes == ["economy"]
    assert local.evidence["_source"] == ["prior:PK Pakistan Observer"]
    foreign = tagger.tag(TagInput("2", title, feed_url="https://feeds.example.com/world"))
    assert not foreign.relevant
    assert foreign.evidence["_source"] == ["source:US Example World"]
    # found by outlet name when the URL is unknown
    by_name = tagger.tag(TagInput("3", title, source="Pakistan Observer"))
    assert by_name.relevant


def test_a_foreign_title_cancels_the_prior() -> None:
    tagger = source_tagger()
    result = tagger.tag(TagInput("1", "UK inflation hits 8-month high", source="Pakistan Observer"))
    assert not result.relevant
    assert "cancelled" in result.evidence["_source"][0]


def test_official_us_sources_count_as_us_involvement() -> None:
    tagger = source_tagger()
    result = tagger.tag(TagInput("1", "Readout", feed_url="https://state.gov/rss"))
    assert result.us_link
    assert "us-prior:government" in result.evidence["_source"]


def test_html_summaries_are_reduced_to_text() -> None:
    assert plain_text("<p>Army&nbsp;chief <b>met</b></p><!-- x -->") == "Army chief met"
    tagger = Tagger(small_rules())
    result = tagger.tag(TagInput("1", "Islamabad", "<p>The <i>army</i> chief &amp; the ISI</p>"))
    assert result.themes == ["military_establishment"]


def test_watchlists_share_the_matcher_without_disturbing_tags() -> None:
    tagger = Tagger(small_rules())
    before = tagger.tag(TagInput("1", "Inflation eases in Pakistan"))
    tagger.matcher.add("watch:1", [("inflation", False, "w1"), ("Pakistan", False, "w2")])
    assert tagger.tag(TagInput("1", "Inflation eases in Pakistan")) == before
    hits = tagger.matcher.scan("Inflation eases in Pakistan")
    assert {hit.payload for hit in hits if hit.owner == "watch:1"} == {"w1", "w2"}


def test_title_and_summary_do_not_join_into_one_phrase(tagger: Tagger) -> None:
    assert tagger.tag(TagInput("1", "Islamabad army", "chief")).themes == []


# -- the shipped configuration -----------------------------------------------------------


def test_config_defines_every_theme(real: Tagger) -> None:
    assert real.theme_ids == list(THEME_IDS)


def test_urdu_spelling_variants_and_aliases_match(real: Tagger) -> None:
    # Arabic yeh and kaf instead of the Urdu letters, and CPEC named in Urdu.
    result = real.tag(TagInput("1", "پاكستان اور چين سي پيك کے دوسرے مرحلے پر متفق"))
    assert result.relevant and "china" in result.themes
    assert "سی پیک" in result.evidence["china"]  # the spelling used, normalised
    # The army chief by name, in both scripts.
    for title in (
        "Asim Munir meets Saudi defence minister",
        "عاصم منیر کی سعودی وزیر دفاع سے ملاقات",
    ):
        result = real.tag(TagInput("2", title))
        assert "military_establishment" in result.themes, title


def test_evidence_quotes_what_the_item_said(real: Tagger) -> None:
    result = real.tag(
        TagInput(
            "1",
            "Pak-US ties: talks in Washington",
            "The United States and Pakistan held talks; the State Department said the U.S."
            " would back the IMF programme. Pakistani officials met White House aides.",
        )
    )
    # Spellings of one alias ("Pak-US" and "White House" both name the US government)
    # count once in the score, and each is quoted as written, title first.
    us = result.evidence["_us"]
    assert us[0] == "Pak-US"
    assert {"United States", "State Department", "U.S.", "White House"} <= set(us)
    assert us.index("United States") < us.index("State Department") < us.index("White House")
    assert len(us) == len(set(us))
    assert result.evidence["economy"] == ["IMF programme"]


def test_evidence_is_deduplicated_ignoring_case_and_keeps_the_first(tagger: Tagger) -> None:
    title = "ISI CHIEF MEETS ARMY CHIEF IN ISLAMABAD"
    result = tagger.tag(TagInput("1", title, "The army chief met the ISI in Islamabad."))
    assert result.evidence["military_establishment"] == ["ISI", "ARMY CHIEF"]
    assert result.evidence["_pakistan"] == ["ISLAMABAD"]


def test_evidence_quotes_whole_words_negatives_and_conditions() -> None:
    lexicons = (
        Lexicon("pakistan", (Term("Pakistan", 3),), threshold=2),
        Lexicon("us", (Term("U.S.", 3, case_sensitive=True),), threshold=2),
        Lexicon("sport", (Term("cricket", 3),), threshold=2),
        Lexicon("foreign", (Term("Syria", 2),), threshold=1),
    )
    themes = (
        theme(
            "counterterrorism",
            Term("terror*", 3),
            Term("hunger strike", -2),
            Term("designated", 2, requires="us"),
            Term("army chief", 1, requires="sport"),  # sport never fires here
            threshold=3,
        ),
    )
    tagger = Tagger(TaggerRules(themes=themes, lexicons=lexicons))
    summary = "The U.S. designated the group; a hunger-strike, and the army chief. Terrorism."
    result = tagger.tag(TagInput("1", "Pakistan: terrorists strike", summary))
    assert result.evidence["counterterrorism"] == [
        "terrorists",  # the whole word a wildcard matched, not "terror*"
        "designated",  # its condition (the US lexicon) holds
        "-hunger-strike",  # a negative term, as written in the item
        "Terrorism",
    ]
    assert result.evidence["_us"] == ["U.S."]


def test_us_involvement_through_a_person_or_agency(real: Tagger) -> None:
    for title in (
        "Donald Lu tells Congress cipher claims are false",
        "Blinken calls Shehbaz Sharif on flood relief",
        "CENTCOM chief visits GHQ Rawalpindi",
    ):
        result = real.tag(TagInput("1", title))
        assert result.us_link and "us_diplomacy" in result.themes, title
    assert not real.tag(TagInput("2", "IMF approves Pakistan loan tranche")).us_link
    assert real.tag(TagInput("3", "Moody's upgrades Pakistan's rating")).us_link


def test_routine_weather_is_not_climate_but_a_heatwave_is(real: Tagger) -> None:
    routine = real.tag(
        TagInput(
            "1",
            "Partly cloudy weather forecast for Lahore",
            "Met Office says maximum temperature will stay near 38°C.",
        )
    )
    assert "climate" not in routine.themes
    heat = real.tag(TagInput("2", "Heatwave kills 20 in Karachi as hospitals overflow"))
    assert heat.themes == ["climate"]


# -- the loader -----------------------------------------------------------------------------


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_loader_names_file_and_key_for_an_unknown_theme(config_copy: Path) -> None:
    _edit(config_copy / "themes.toml", "[themes.gulf]", "[themes.gulf_states]")
    with pytest.raises(ConfigError) as caught:
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")
    message = str(caught.value)
    assert "themes.gulf_states" in message and "themes.toml" in message


def test_loader_reports_a_missing_theme(config_copy: Path) -> None:
    text = (config_copy / "themes.toml").read_text(encoding="utf-8")
    start = text.index("[themes.diaspora]")
    (config_copy / "themes.toml").write_text(text[:start], encoding="utf-8")
    with pytest.raises(ConfigError, match=r"themes\.diaspora.*missing"):
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")


def test_loader_rejects_a_bad_weight_and_an_unknown_alias(config_copy: Path) -> None:
    _edit(config_copy / "themes.toml", "strong = 3.0", 'strong = "heavy"')
    with pytest.raises(ConfigError, match=r"weights\.strong.*must be a number"):
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")
    _edit(config_copy / "themes.toml", 'strong = "heavy"', "strong = 3.0")
    _edit(config_copy / "themes.toml", '"@cpec", "@china_exim"', '"@cpec_two", "@china_exim"')
    with pytest.raises(ConfigError, match=r"themes\.china\.core.*unknown alias"):
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")


def test_loader_rejects_a_condition_on_an_unknown_rule(config_copy: Path) -> None:
    _edit(config_copy / "themes.toml", "penalties = { weather = ", "penalties = { snow = ")
    with pytest.raises(ConfigError, match=r"climate\.penalties\.snow"):
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")


def test_loader_checks_aliases(config_copy: Path) -> None:
    _edit(config_copy / "aliases.toml", 'id = "gwadar"', 'id = "Gwadar Port"')
    with pytest.raises(ConfigError, match=r"alias\[\d+\]\.id.*aliases.toml"):
        load_rules(config_copy / "themes.toml", config_copy / "aliases.toml")


def test_loader_reads_feeds_for_the_source_prior(config_copy: Path) -> None:
    (config_copy / "feeds.toml").write_text(
        '[[feed]]\nurl = "https://news.example.pk/rss"\ntitle = "Example PK"\n'
        'country = "PK"\nkind = "newspaper"\ninterval_minutes = 30\n',
        encoding="utf-8",
    )
    tagger = load_tagger(config_copy.parent)
    result = tagger.tag(
        TagInput("1", "Cabinet approves new tax measures", feed_url="http://news.example.pk/rss/")
    )
    assert result.relevant
    assert result.evidence["_source"] == ["prior:PK Example PK"]
    (config_copy / "feeds.toml").write_text("[[feed]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"feeds\.toml"):
        load_tagger(config_copy.parent)
