"""`qasid tag` as a process: the JSON Lines contract of DESIGN.md, no database, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ITEMS = [
    {
        "id": "a",
        "title": "US sanctions Pakistani firms over ballistic missile programme",
        "summary": "<p>The <b>State Department</b> said the entities supplied equipment.</p>",
        "link": "https://example.com/a",
        "published": "2024-12-18T10:00:00Z",
        "source": "Dawn",
        "feed_url": "https://www.dawn.com/feeds/home",
    },
    {"id": 7, "title": "Babar Azam scores a century as Pakistan beat New Zealand"},
    {"id": "c"},
]


def run_tag(stdin: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@192.0.2.1:1/none"}  # never used
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "tag", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd,
    )


def test_one_output_line_per_item_in_input_order() -> None:
    result = run_tag("".join(json.dumps(i) + "\n" for i in ITEMS))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", 7, "c"]
    first = rows[0]
    assert set(first) == {"id", "relevant", "us_link", "themes", "scores", "evidence"}
    assert first["relevant"] and first["us_link"]
    assert "sanctions" in first["themes"]
    assert all(isinstance(v, float) for v in first["scores"].values())
    assert rows[1]["relevant"] is False and rows[1]["themes"] == []


def test_malformed_lines_are_reported_by_number_and_the_run_goes_on() -> None:
    lines = [
        json.dumps(ITEMS[0]),
        "{not json",
        json.dumps({"title": "no id"}),
        json.dumps(ITEMS[1]),
    ]
    result = run_tag("\n".join(lines) + "\n")
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4
    assert rows[1] == {"id": None, "error": rows[1]["error"]} and "line 2" in rows[1]["error"]
    assert "line 3" in rows[2]["error"]
    assert rows[3]["id"] == 7 and "error" not in rows[3]
    assert "line 2" in result.stderr and "line 3" in result.stderr


def test_input_and_output_files(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    target = tmp_path / "out.jsonl"
    source.write_text(json.dumps(ITEMS[0]) + "\n", encoding="utf-8")
    result = run_tag("", "--input", str(source), "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text(encoding="utf-8"))["id"] == "a"
