"""The `qasid tag` JSON Lines contract: order, malformed lines, missing fields, HTML."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipeline.core.tagger import Tagger
from pipeline.rules import load_tagger
from pipeline.tagio import MAX_LINE, run_tag

REPO = Path(__file__).resolve().parents[2]
KEYS = {"id", "relevant", "us_link", "themes", "scores", "evidence"}


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return load_tagger(REPO)


def run(tagger: Tagger, lines: list[str] | list[bytes]) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_tag(lines, out, err, tagger)
    return status, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def item(**fields: object) -> str:
    return json.dumps(fields) + "\n"


def test_one_line_per_item_in_input_order(tagger: Tagger) -> None:
    lines = [
        item(id="a", title="US sanctions Pakistan's ballistic missile suppliers"),
        item(id="b", title="Babar Azam hits century as Pakistan win T20 series"),
        item(id=3, title="IMF approves $7bn loan for Pakistan"),
    ]
    status, out, err = run(tagger, lines)
    assert status == 0 and err == ""
    assert [row["id"] for row in out] == ["a", "b", 3]
    assert all(set(row) == KEYS for row in out)
    assert out[0]["relevant"] and out[0]["us_link"] and "sanctions" in out[0]["themes"]
    assert not out[1]["relevant"] and out[1]["themes"] == []
    assert out[2]["themes"] == ["economy"] and not out[2]["us_link"]
    assert set(out[0]["evidence"]) >= set(out[0]["themes"])


def test_malformed_lines_are_reported_and_the_run_goes_on(tagger: Tagger) -> None:
    lines = [
        item(id="ok-1", title="Pakistan army chief meets Saudi crown prince"),
        "{not json\n",
        "[1, 2]\n",
        item(title="no id here"),
        item(id="x", title=["a", "list"]),
        item(id=True, title="a boolean id"),
        item(id="ok-2", title="Floods kill 30 in Khyber Pakhtunkhwa"),
    ]
    status, out, err = run(tagger, lines)
    assert status == 1
    assert len(out) == len(lines)
    assert [row["id"] for row in out] == ["ok-1", None, None, None, "x", None, "ok-2"]
    assert out[1]["error"].startswith("line 2: not valid JSON")
    assert out[2]["error"] == "line 3: expected a JSON object, got an array"
    assert out[3]["error"] == 'line 4: missing "id"'
    assert out[4]["error"] == 'line 5: "title" must be a string, got an array'
    assert "line 6" in out[5]["error"]
    assert out[6]["themes"] == ["climate"]
    for number in (2, 3, 4, 5, 6):
        assert f"line {number}:" in err
    assert "line 1:" not in err and "line 7:" not in err


def test_missing_null_and_empty_fields_are_fine(tagger: Tagger) -> None:
    status, out, err = run(
        tagger,
        [item(id="only-id"), item(id="nulls", title=None, summary=None, source="", link=None)],
    )
    assert status == 0 and err == ""
    assert out[0] == {
        "id": "only-id",
        "relevant": False,
        "us_link": False,
        "themes": [],
        "scores": {},
        "evidence": {},
    }
    assert out[1]["id"] == "nulls"


def test_html_summary_is_read_as_text(tagger: Tagger) -> None:
    summary = (
        '<p>The <a href="https://example.com/isi">ISI</a> chief met the '
        "<b>U.S.</b>&nbsp;envoy in <em>Islamabad</em> &amp; discussed Afghanistan.</p>"
    )
    status, out, _ = run(tagger, [item(id="h", title="Talks held", summary=summary)])
    assert status == 0
    row = out[0]
    assert row["relevant"] and row["us_link"]
    assert "military_establishment" in row["themes"]
    # Evidence quotes the item ("ISI"), not the alias's first name.
    assert "ISI" in row["evidence"]["military_establishment"]
    assert row["evidence"]["_us"] == ["U.S."]


def test_blank_lines_are_skipped_but_counted(tagger: Tagger) -> None:
    status, out, _ = run(tagger, ["\n", "   \n", item(id="z", title=None), "{bad\n", ""])
    assert status == 1
    assert [row["id"] for row in out] == ["z", None]
    assert out[1]["error"].startswith("line 4:")


def test_bytes_input_reports_bad_utf8_and_a_bom(tagger: Tagger) -> None:
    lines = [
        "\ufeff".encode() + item(id="bom", title="Pakistan IMF talks").encode(),
        b'{"id": "bad", "title": "\xff\xfe"}\n',
        item(id="urdu", title="پاکستان میں سیلاب").encode(),
    ]
    status, out, _ = run(tagger, lines)
    assert status == 1
    assert out[0]["id"] == "bom" and out[0]["relevant"]
    assert out[1] == {"id": None, "error": "line 2: not UTF-8 text (byte 25)"}
    assert out[2]["themes"] == ["climate"]


def test_oversized_and_odd_json_do_not_crash(tagger: Tagger) -> None:
    lines = [
        "x" * (MAX_LINE + 1) + "\n",
        '{"id": 1' + "1" * 5000 + "}\n",
        "[" * 100_000 + "\n",
        item(id="after", title="Pakistan budget"),
    ]
    status, out, _ = run(tagger, lines)
    assert status == 1
    assert [row.get("error", "")[:7] for row in out[:3]] == ["line 1:", "line 2:", "line 3:"]
    assert out[3]["id"] == "after"
