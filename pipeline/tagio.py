"""The ``qasid tag`` JSON Lines contract (DESIGN.md), without the command-line wiring.

Input: one JSON object per line, ``{"id", "title", "summary", "link", "published", "source",
"feed_url"}``. ``id`` is required (a string or an integer) and is echoed back unchanged;
every other field may be missing, null or empty, and must otherwise be a string. Unknown
keys are ignored. ``summary`` may hold HTML (tags are dropped, entities decoded).

Output: one line per input item, in input order: ``{"id", "relevant", "us_link",
"themes", "scores", "evidence"}`` (see ``pipeline.core.tagger`` for what scores and
evidence hold; evidence keys starting with ``_`` are not themes). A malformed line (not
UTF-8, not JSON, not an object, no usable id, a field of the wrong type, longer than
``MAX_LINE`` characters) gets a message naming its line number on ``err`` and the output
line ``{"id": <the id when it could be read, else null>, "error": "line N: ..."}``, and the
run goes on. Blank (whitespace-only) lines are not items: they are skipped without output,
so a trailing empty line or a blank separator never produces an error; line numbers still
count them. Nothing here touches a database or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from pipeline.core.tagger import Tagger, TagInput

FIELDS = ("title", "summary", "link", "published", "source", "feed_url")
MAX_LINE = 1_000_000  # characters: far beyond any news item, short of a memory problem


class _LineError(Exception):
    def __init__(self, message: str, item_id: Any = None) -> None:
        super().__init__(message)
        self.item_id = item_id


def parse_line(line: str | bytes) -> TagInput | None:
    """One input line → TagInput, or None for a blank line. Raises _LineError."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _LineError(f"not UTF-8 text (byte {error.start + 1})") from None
    if line.startswith("\ufeff"):
        line = line[1:]
    if not line.strip():
        return None
    if len(line) > MAX_LINE:
        raise _LineError(f"line longer than {MAX_LINE} characters")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise _LineError(f"not valid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise _LineError("not valid JSON: nested too deeply") from None
    except ValueError as error:  # e.g. an integer beyond the conversion limit
        raise _LineError(f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise _LineError(f"expected a JSON object, got {_kind(data)}")
    item_id = data.get("id")
    if "id" not in data or item_id is None or item_id == "":
        raise _LineError('missing "id"')
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise _LineError(f'"id" must be a string or an integer, got {_kind(item_id)}')
    values: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name)
        if value is None:
            values[name] = ""
        elif isinstance(value, str):
            values[name] = value
        else:
            raise _LineError(f'"{name}" must be a string, got {_kind(value)}', item_id)
    return TagInput(id=item_id, **values)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


def run_tag(lines: Iterable[str | bytes], out: TextIO, err: TextIO, tagger: Tagger) -> int:
    """Tag every JSON Lines item of ``lines`` onto ``out`` (the contract above). Returns 1
    when any line failed, else 0. ``lines`` may be text (a text stream) or bytes (a binary
    stream, so that a line that is not UTF-8 is reported instead of stopping the run)."""
    failed = False
    for number, line in enumerate(lines, start=1):
        item = None
        try:
            item = parse_line(line)
            if item is None:
                continue
            result = tagger.tag(item).to_dict()
        except _LineError as error:
            failed = True
            message = f"line {number}: {error}"
            print(f"qasid tag: {message}", file=err)
            out.write(_dump({"id": error.item_id, "error": message}) + "\n")
            continue
        except Exception as error:  # a bug in the rules must not stop the other items
            failed = True
            message = f"line {number}: could not be tagged: {type(error).__name__}: {error}"
            print(f"qasid tag: {message}", file=err)
            out.write(_dump({"id": getattr(item, "id", None), "error": message}) + "\n")
            continue
        out.write(_dump(result) + "\n")
    out.flush()
    return 1 if failed else 0
