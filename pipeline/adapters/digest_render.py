"""Digest emails assembled from pieces rendered once per run (issue 4, "Speed").

``EmailRenderer.digest`` renders digest.html with Jinja2 and inlines its CSS for every email:
about 2.5 ms for a 30-story digest, 250 s for 100,000 readers. ``DigestAssembler.digest``
returns the same email (HTML and text, byte for byte) from pieces that the same templates
and the same CSS inliner produce once per run:

- **stories**: one per distinct entry (title, link, source, time, snippet, other outlets),
  for every time zone: the time is shown in the reader's zone, so the piece has a slot
  there (filled from ``local_time_text``, once per time and zone). The "Why:" line is per
  reader, so the piece has a slot there too; an entry without reasons has no "Why:"
  paragraph at all.
- **transitions**: what lies between two blocks of a digest (the head and the first block's
  opening; one block's closing and the next one's opening; the last closing and the
  footer), keyed by the two blocks, with slots for the subject, the preheader and a
  section's volume line.

How the pieces are cut. An entry holding a ``cut`` key renders as that marker alone
(_story.html and the text template's ``story`` macro). A probe digest whose stories are all
markers gives the transitions; a probe whose top block is marker, story, marker, story, ...
gives many stories in one Jinja2 render and one inlining. Slots are unique words put where
the per-reader text goes; the text filled in is escaped the way the inliner's serializer
escapes text (``&``, ``<``, ``>``, no-break space), or goes through the inliner itself when
it holds control characters. Markers and slots carry a random nonce per assembler, so feed
text cannot forge them.

This holds while a piece renders the same wherever it stands: the digest templates use no
loop indices and the stylesheet no positional selectors (tests/unit/test_digest_render.py
compares the two paths on digests of every shape, hostile feed text included).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Protocol

from markupsafe import Markup

from pipeline.adapters.render import (
    EmailRenderer,
    Placeholder,
    Recipient,
    RenderedEmail,
    local_time_text,
    one_line,
)

# Entry fields a story shows besides the reasons (the cache key, or the key of the compact
# edition part that holds them, which stands for them). A test checks that the
# story templates read no other field of ``e``.
STORY_FIELDS = ("id", "title", "link", "source", "published", "snippet", "also", "undated")

# Pieces: literal text and slot names alternating, literal first and last.
Pieces = tuple[str, ...]
_Key = tuple[Any, ...]
# Text the inliner serializes by escaping & < > and U+00A0 only (no control characters,
# which its parser drops or rewrites).
_PLAIN = re.compile(r"[^\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]*")
# A link that shows in an href as it is, in the templates' output and the inliner's (no
# character either escapes there): the rest are rendered whole.
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$()*+,;=%]*")
STORY_BATCH = 2000  # stories per probe render
ZONED_KEPT = 100_000  # stories with their time filled in kept per zone (then starts over)
# A story with its time filled in for one zone: HTML and text before the reasons' slot (as
# pieces), and after it (None when the story shows no reasons: then the first two are whole).
_Zoned = tuple[tuple[str, ...], tuple[str, ...], str | None, str | None]
HTML_TEXT_KEPT = 100_000  # texts remembered as HTML (a long-lived worker starts over)
# A shared block's stories with their times (one zone) and reasons filled in: HTML and
# text, appended to an email as they are (a day's benchmark has about 1,200 such blocks:
# about 10 KB each per zone).
_Flat = tuple[str, str]
SHARED_KEPT = 10_000  # shared blocks (their story keys; whole per zone) before starting over
_Block = tuple[_Key, str, Sequence[Mapping[str, Any]], str | None]


def escape_text(value: str) -> str:
    """An HTML text node as the CSS inliner writes it (for text without control chars)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\xa0" in value:
        value = value.replace("\xa0", "&nbsp;")
    return value


class Assembler(Protocol):
    """What the send path asks of the assembler it is given (``Editorial.assembler``):
    ``DigestAssembler``, or the benchmark's naive path (a full render per email)."""

    def prepare(
        self,
        digests: Iterable[tuple[Mapping[str, Any], str]],
        parts: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int: ...

    def digest(
        self, content: Mapping[str, Any], recipient: Recipient, heading: str
    ) -> RenderedEmail: ...

    def release(self) -> None: ...


class DigestAssembler:
    """Digest emails equal to ``renderer.digest(...)``, from pieces cached for its lifetime.

    Caches grow with the distinct stories, zones and block pairs seen: make one per job.
    """

    def __init__(self, renderer: EmailRenderer) -> None:
        self.renderer = renderer
        nonce = secrets.token_hex(8)
        self._cut_html = Markup(f"<!--qcut{nonce}-->")
        self._cut_text = f"\x1eqcut{nonce}\x1e"
        self._slot_prefix = f"qslot{nonce}"
        self._slots = re.compile(f"{self._slot_prefix}([a-z]+)Z")
        self._stories: dict[_Key, tuple[Pieces, Pieces]] = {}
        # per story shape (``_story_from_skeleton``): its pieces with a slot in each field
        self._skeletons: dict[tuple[bool, bool, bool, bool, bool], tuple[Pieces, Pieces]] = {}
        # per time zone: a story with its time filled in (``_fill_time``)
        self._zoned: dict[str, dict[_Key, _Zoned]] = {}
        self._times: dict[tuple[str, str], tuple[str, str]] = {}  # (time, zone): html, text
        self._transitions: dict[tuple[_Key, _Key], tuple[Pieces, Pieces]] = {}
        self._html_text: dict[str, str] = {}  # text → as the HTML part shows it
        # a shared block (``expand_edition``'s "entries_part", "top_part"): its stories'
        # keys, their stories rendered; and per (part, zone) its stories flat
        # (``_zoned_pieces``)
        self._shared_keys: dict[str, list[_Key]] = {}
        self._shared: dict[tuple[str, str], _Flat] = {}
        # per (content, zone) prepared together: its blocks and rendered stories, used by
        # ``digest`` (held until ``release`` or the next ``prepare``)
        self._prepared: dict[tuple[int, str], tuple[Mapping[str, Any], Any, Any]] = {}
        # a compact edition's story parts by key, for entries that are references to them
        # (``expand_edition(..., keep_refs=True)``), given to ``prepare``
        self._parts: Mapping[str, Mapping[str, Any]] = {}
        self.probes = 0  # renders of probe digests (for benchmarks and tests)

    # -- the public side ---------------------------------------------------------------------

    def digest(
        self, content: Mapping[str, Any], recipient: Recipient, heading: str
    ) -> RenderedEmail:
        """The email ``renderer.digest(content, recipient, heading)`` would give."""
        zone = recipient.timezone
        known = self._prepared.get((id(content), zone))
        if known is not None and known[0] is content:  # prepared: its stories are at hand
            blocks, pieces = known[1], known[2]
        else:
            blocks = _blocks(content)
            missing: dict[_Key, Mapping[str, Any]] = {}
            new_shared: dict[str, list[_Key]] = {}
            story_keys = [self._block_keys(block, missing, new_shared) for block in blocks]
            if missing:
                self._render_stories(list(missing.values()), str(content["period_end"]))
            self._known_shared(new_shared)
            pieces = self._zoned_pieces(blocks, story_keys, zone)
        keys = [self._start_key(content, heading, zone)]
        keys += [block[0] for block in blocks]
        keys.append(_end_key(recipient))
        pairs = list(pairwise(keys))
        if any(pair not in self._transitions for pair in pairs):
            self._probe(content, recipient, heading, blocks, keys)
        subject = one_line(str(content["subject"]))
        preheader = one_line(str(content.get("preheader", "")))
        html: list[str] = []
        text: list[str] = []
        values_html = {"subject": self._html(subject), "preheader": self._html(preheader)}
        values_text = {"subject": subject, "preheader": preheader}
        transitions = self._transitions
        for index, pair in enumerate(pairs):
            trans_html, trans_text = transitions[pair]
            if index < len(blocks):
                volume = blocks[index][1]
                values_html["volume"] = self._html(volume)
                values_text["volume"] = volume
            _fill(html, trans_html, values_html)
            _fill(text, trans_text, values_text)
            if index == len(blocks):
                break
            if blocks[index][3] is not None:  # a shared block: its stories whole
                flat_html, flat_text = pieces[index]
                html.append(flat_html)
                text.append(flat_text)
            else:
                self._add_stories(html, text, blocks[index][2], pieces[index])
        return RenderedEmail(subject, preheader, "".join(html), "".join(text))

    def prepare(
        self,
        digests: Iterable[tuple[Mapping[str, Any], str]],
        parts: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Render, in few batches, the stories of many ``(content, time zone)`` not yet
        cached (the digests themselves are assembled later). Returns stories rendered.
        ``parts``: the story parts that entries given as references name (contents
        expanded with ``keep_refs``); kept until a later ``prepare`` gives others."""
        if parts is not None:
            self._parts = parts
        wanted: dict[_Key, Mapping[str, Any]] = {}
        new_shared: dict[str, list[_Key]] = {}
        period_end = ""
        prepared = self._prepared = {}  # readers of one digest share its content
        by_content: dict[int, list[list[_Key]]] = {}  # the same for every time zone
        for content, zone in digests:
            if (id(content), zone) in prepared:
                continue
            blocks = _blocks(content)
            story_keys = by_content.get(id(content))
            if story_keys is None:
                story_keys = [self._block_keys(block, wanted, new_shared) for block in blocks]
                by_content[id(content)] = story_keys
                period_end = period_end or str(content["period_end"])
            prepared[(id(content), zone)] = (content, blocks, story_keys)
        if wanted:
            self._render_stories(list(wanted.values()), period_end)
        self._known_shared(new_shared)
        rendered = len(wanted)
        # each digest's stories, as ``digest`` assembles them
        for (content_id, zone), (content, blocks, story_keys) in prepared.items():
            pieces = self._zoned_pieces(blocks, story_keys, zone)
            prepared[(content_id, zone)] = (content, blocks, pieces)
        return rendered

    def _block_keys(
        self,
        block: _Block,
        missing: dict[_Key, Mapping[str, Any]],
        new_shared: dict[str, list[_Key]],
    ) -> list[_Key]:
        """A block's story keys; the entries whose story is not rendered yet go into
        ``missing``. A shared block's keys are made once (``new_shared`` until its
        stories are rendered: then ``_known_shared``)."""
        shared = block[3]
        if shared is not None:
            found = self._shared_keys.get(shared) or new_shared.get(shared)
            if found is not None:
                return found
        keys = [_story_key(e) for e in block[2]]
        stories = self._stories
        for e, key in zip(block[2], keys, strict=True):
            if key not in stories and key not in missing:
                missing[key] = e
        if shared is not None:
            new_shared[shared] = keys
        return keys

    def _known_shared(self, new_shared: Mapping[str, list[_Key]]) -> None:
        """Shared blocks whose stories are now rendered."""
        if len(self._shared_keys) + len(new_shared) > SHARED_KEPT:
            self._shared_keys.clear()
        self._shared_keys.update(new_shared)

    def release(self) -> None:
        """Forget what ``prepare`` kept of its digests (call when the batch is done: the
        digests' contents can then be freed)."""
        self._prepared = {}

    # -- probes ----------------------------------------------------------------------------

    def _slot(self, name: str) -> str:
        return f"{self._slot_prefix}{name}Z"

    def _start_key(self, content: Mapping[str, Any], heading: str, zone: str) -> _Key:
        return ("start", heading, str(content["period_end"]), zone)

    def _probe(
        self,
        content: Mapping[str, Any],
        recipient: Recipient,
        heading: str,
        blocks: Sequence[_Block],
        keys: Sequence[_Key],
    ) -> None:
        """Render this digest's shape with one marker per block: its transitions."""
        self.probes += 1
        found: list[list[Pieces]] = []
        for cut, kind in ((self._cut_html, "html"), (self._cut_text, "txt")):
            probe = dict(content)
            probe["subject"] = self._slot("subject")
            probe["preheader"] = self._slot("preheader")
            marker = [{"cut": cut}]
            probe["top"] = marker if content.get("top") else []
            probe["watchlist_entries"] = marker if content.get("watchlist_entries") else []
            probe["watchlist_line"] = self._slot("volume") if content.get("watchlist_line") else ""
            probe["sections"] = [
                {**section, "volume_line": self._slot("volume"), "entries": marker}
                for section in content.get("sections", ())
            ]
            output = self._render_probe(probe, recipient, heading, kind)
            found.append([self._split_slots(gap) for gap in output.split(str(cut))])
        gaps_html, gaps_text = found
        if len(gaps_html) != len(keys) - 1 or len(gaps_text) != len(keys) - 1:
            raise RuntimeError("digest probe: markers lost (a template changed its blocks?)")
        for index, pair in enumerate(pairwise(keys)):
            self._transitions[pair] = (gaps_html[index], gaps_text[index])

    def _render_stories(self, entries: Sequence[Mapping[str, Any]], period_end: str) -> None:
        """The entries' stories as pieces (slots for the time and the reasons). A story
        whose fields hold nothing that HTML escapes differently (``_plain_fields``) is its
        shape's skeleton with the fields filled in (``_skeleton``: a probe rendered once
        per shape, its fields slots); the others are rendered whole, many in one probe.
        A send process meets about 18,000 stories a day: whole, they cost it about a
        second of CPU, and the first batch's are rendered before its helpers start."""
        whole: list[Mapping[str, Any]] = []
        for e in entries:
            made = self._story_from_skeleton(e, period_end)
            if made is None:
                whole.append(e)
            else:
                self._stories[_story_key(e)] = made
        when = Placeholder(self._slot("published"))
        for start in range(0, len(whole), STORY_BATCH):
            chunk = whole[start : start + STORY_BATCH]
            shown_stories: list[Mapping[str, Any]] = []
            for e in chunk:
                story = self._story(e)
                shown = {name: story[name] for name in STORY_FIELDS if name != "undated"}
                # stored only when true (``digest._entry_head``)
                shown["undated"] = story.get("undated", False)
                shown["published"] = when
                shown["reasons"] = [self._slot("reasons")] if e.get("reasons") else []
                shown_stories.append(shown)
            found = self._render_shown(shown_stories, period_end)
            for e, (story_html, story_text) in zip(chunk, found, strict=True):
                slots = ("published", "reasons") if e.get("reasons") else ("published",)
                if story_html[1::2] != slots or story_text[1::2] != slots:
                    raise RuntimeError("digest probe: a story's slots moved (template changed?)")
                self._stories[_story_key(e)] = (story_html, story_text)
        if whole:
            self.probes += 1

    def _render_shown(
        self, shown: Sequence[Mapping[str, Any]], period_end: str, link: str = ""
    ) -> list[tuple[Pieces, Pieces]]:
        """Stories (the fields the story templates read) rendered in one probe, as pieces
        (HTML, text) split at the slots they hold; ``link``, a URL standing for the slot
        of that name, is made that slot first."""
        recipient = Recipient(reason="", manage_url="", unsubscribe_url="", timezone="UTC")
        found: list[list[Pieces]] = []
        for cut, kind in ((self._cut_html, "html"), (self._cut_text, "txt")):
            top: list[Mapping[str, Any]] = [{"cut": cut}]
            for story in shown:
                top += (story, {"cut": cut})
            probe = {
                "period_end": period_end,
                "subject": "",
                "preheader": "",
                "top": top,
                "sections": [],
                "watchlist_entries": [],
            }
            output = self._render_probe(probe, recipient, "", kind)
            if link:
                output = output.replace(link, self._slot("link"))
            parts = output.split(str(cut))
            if len(parts) != len(shown) + 2:
                raise RuntimeError("digest probe: story markers lost")
            found.append([self._split_slots(part) for part in parts[1:-1]])
        return list(zip(*found, strict=True))

    def _story_from_skeleton(
        self, e: Mapping[str, Any], period_end: str
    ) -> tuple[Pieces, Pieces] | None:
        """The entry's story from its shape's skeleton, or None when a field needs the
        whole render (``_plain_fields``)."""
        story = self._story(e)
        fields = self._plain_fields(story)
        if fields is None:
            return None
        title, link, source, also, snippet, has_also = fields
        undated = bool(story.get("undated", False))
        shape = (bool(link), undated, has_also, bool(snippet), bool(e.get("reasons")))
        skeleton = self._skeletons.get(shape)
        if skeleton is None:
            skeleton = self._skeletons[shape] = self._skeleton(shape, period_end)
        html = {"title": escape_text(title), "link": link, "source": escape_text(source)}
        text = {"title": title, "link": link, "source": source}
        if has_also:
            html["also"] = escape_text(also)
            text["also"] = also
        if snippet:
            html["snippet"] = escape_text(snippet)
            text["snippet"] = self._wrapped(snippet)
        return _fill_fields(skeleton[0], html), _fill_fields(skeleton[1], text)

    def _plain_fields(
        self, story: Mapping[str, Any]
    ) -> tuple[str, str, str, str, str, bool] | None:
        """Title, link (as the templates show it: "" when not safe), source, other outlets
        (joined as the templates join them), snippet and whether there are other outlets
        (a list of empty names still shows its line), when each is text that HTML shows
        as ``escape_text`` escapes it (no control characters: ``_PLAIN``) and the link
        needs no escaping in an attribute (``_PLAIN_URL``); else None."""
        title, source, snippet, outlets = (
            story["title"],
            story["source"],
            story["snippet"],
            story["also"],
        )
        if type(title) is not str or type(source) is not str or type(snippet) is not str:
            return None
        if not isinstance(outlets, list | tuple) or any(type(o) is not str for o in outlets):
            return None
        also = ", ".join(outlets)
        for value in (title, source, snippet, also):
            if not _PLAIN.fullmatch(value):
                return None
        link = self.renderer.env.filters["safe_url"](story["link"])
        if type(link) is not str or (link and not _PLAIN_URL.fullmatch(link)):
            return None
        return title, link, source, also, snippet, bool(outlets)

    def _skeleton(
        self, shape: tuple[bool, bool, bool, bool, bool], period_end: str
    ) -> tuple[Pieces, Pieces]:
        """A story of this shape (link, undated, other outlets, snippet, reasons) rendered
        with a slot in each field: its pieces, the fields' slots to be filled per story."""
        has_link, undated, has_also, has_snippet, has_reasons = shape
        link = f"https://{self._slot('link')}.invalid/" if has_link else ""
        shown = {
            "id": "skeleton",
            "title": self._slot("title"),
            "link": link,
            "source": self._slot("source"),
            "published": Placeholder(self._slot("published")),
            "snippet": self._slot("snippet") if has_snippet else "",
            "also": [self._slot("also")] if has_also else [],
            "undated": undated,
            "reasons": [self._slot("reasons")] if has_reasons else [],
        }
        ((story_html, story_text),) = self._render_shown([shown], period_end, link)
        wanted = {"title", "source", "published"}
        wanted |= {name for name, has in (("link", has_link), ("also", has_also),
                   ("snippet", has_snippet), ("reasons", has_reasons)) if has}  # fmt: skip
        for pieces, kind in ((story_html, "html"), (story_text, "text")):
            slots = pieces[1::2]
            if len(slots) != len(set(slots)) or set(slots) != wanted:
                raise RuntimeError(f"digest probe: a story's {kind} slots moved: {slots}")
        self.probes += 1
        return story_html, story_text

    def _wrapped(self, snippet: str) -> str:
        """The snippet as the text template wraps it."""
        env = self.renderer.env
        return str(env.call_filter("wordwrap", snippet, [70], {"wrapstring": "\n  "}))

    def _render_probe(
        self, probe: Mapping[str, Any], recipient: Recipient, heading: str, kind: str
    ) -> str:
        renderer = self.renderer
        context = renderer.digest_context(probe, recipient, heading)
        output = renderer.env.get_template(f"email/digest.{kind}").render(context)
        return renderer.inliner.inline(output) if kind == "html" else output

    def _zoned_pieces(
        self,
        blocks: Sequence[_Block],
        story_keys: Sequence[Sequence[_Key]],
        zone: str,
    ) -> list[Any]:
        """The digest's stories with their time filled in for ``zone`` (each made once
        per story and zone), block by block: a list of ``_Zoned`` per block, or for a
        shared block its stories whole (``_Flat``, made once per block and zone)."""
        out: list[Any] = []
        for block, keys in zip(blocks, story_keys, strict=True):
            shared = block[3]
            if shared is None:
                out.append(self._zoned_block(block[2], keys, zone))
                continue
            flat = self._shared.get((shared, zone))
            if flat is None:
                if len(self._shared) >= SHARED_KEPT:
                    self._shared.clear()
                html: list[str] = []
                text: list[str] = []
                self._add_stories(html, text, block[2], self._zoned_block(block[2], keys, zone))
                flat = self._shared[(shared, zone)] = ("".join(html), "".join(text))
            out.append(flat)
        return out

    def _zoned_block(
        self, entries: Sequence[Mapping[str, Any]], keys: Sequence[_Key], zone: str
    ) -> list[_Zoned]:
        """A block's stories with their time filled in for ``zone``."""
        zoned = self._zoned.setdefault(zone, {})
        pieces = []
        for e, key in zip(entries, keys, strict=True):
            found = zoned.get(key)
            if found is None:
                if len(zoned) >= ZONED_KEPT:
                    zoned.clear()
                found = zoned[key] = self._fill_time(key, self._story(e)["published"], zone)
            pieces.append(found)
        return pieces

    def _add_stories(
        self,
        html: list[str],
        text: list[str],
        entries: Sequence[Mapping[str, Any]],
        zoned: Sequence[_Zoned],
    ) -> None:
        """Append a block's stories to an email's parts, their reasons filled in."""
        for e, (head_html, head_text, tail_html, tail_text) in zip(entries, zoned, strict=True):
            html += head_html
            text += head_text
            if tail_html is not None:  # the reasons' slot between head and tail
                reasons = "; ".join(e["reasons"])
                html += (self._html(reasons), tail_html)
                text += (reasons, tail_text or "")  # set with tail_html

    def _fill_time(self, key: _Key, published: str, zone: str) -> _Zoned:
        story_html, story_text = self._stories[key]
        when = self._times.get((published, zone)) or self._time(published, zone)
        # the story's own strings, shared by every zone's tuple (not copied per zone)
        head_html = (story_html[0], when[0], story_html[2])
        head_text = (story_text[0], when[1], story_text[2])
        if len(story_html) == 3:  # the time's slot alone
            return head_html, head_text, None, None
        return head_html, head_text, story_html[4], story_text[4]  # then the reasons'

    def _time(self, published: str, zone: str) -> tuple[str, str]:
        """The time as a story shows it in ``zone``: HTML and text."""
        shown = local_time_text(published, zone)
        found = self._times[(published, zone)] = (self._html(shown), shown)
        return found

    def _story(self, e: Mapping[str, Any]) -> Mapping[str, Any]:
        """The fields the entry's story shows: its own, or its part's when the entry is a
        reference to one (needed only where a story is not cached yet)."""
        part = e.get("part")
        return e if part is None else self._parts[part]

    def _split_slots(self, piece: str) -> Pieces:
        return tuple(self._slots.split(piece))

    # -- text in HTML ------------------------------------------------------------------------

    def _html(self, value: str) -> str:
        # The same reasons, volume lines and subjects recur across readers: remembered.
        known = self._html_text.get(value)
        if known is None:
            if _PLAIN.fullmatch(value):
                known = escape_text(value)
            else:  # control characters: what the inliner itself makes of them
                cut = str(self._cut_html)
                markup = self.renderer.env.from_string("<p>{{ cut }}{{ v }}{{ cut }}</p>").render(
                    cut=self._cut_html, v=value
                )
                known = self.renderer.inliner.inline(markup).split(cut)[1]
            if len(self._html_text) >= HTML_TEXT_KEPT:
                self._html_text.clear()
            self._html_text[value] = known
        return known


def _fill(out: list[str], pieces: Pieces, values: Mapping[str, str]) -> None:
    out.append(pieces[0])
    for index in range(1, len(pieces), 2):
        out.append(values[pieces[index]])
        out.append(pieces[index + 1])


def _fill_fields(pieces: Pieces, values: Mapping[str, str]) -> Pieces:
    """``pieces`` with the slots named in ``values`` filled in (joined to the text around
    them); the other slots stay."""
    out = [pieces[0]]
    for index in range(1, len(pieces), 2):
        value = values.get(pieces[index])
        if value is None:
            out += (pieces[index], pieces[index + 1])
        else:
            out[-1] = f"{out[-1]}{value}{pieces[index + 1]}"
    return tuple(out)


def _story_key(e: Mapping[str, Any]) -> _Key:
    part = e.get("part")  # a compact edition's story part: its key names those fields
    if part is not None:
        return (bool(e.get("reasons")), part)
    return (
        bool(e.get("reasons")),
        e["id"],
        e["title"],
        e["link"],
        e["source"],
        e["published"],
        e["snippet"],
        tuple(e["also"]),
        bool(e.get("undated")),
    )


def _end_key(recipient: Recipient) -> _Key:
    return ("end", recipient.reason, recipient.manage_url, recipient.unsubscribe_url,
            recipient.view_url)  # fmt: skip


def _blocks(content: Mapping[str, Any]) -> list[_Block]:
    """The digest's blocks in order: (key, volume line, entries, the part a shared
    section's entries come from or None)."""
    blocks: list[_Block] = []
    if content.get("top"):
        blocks.append((("top",), "", content["top"], content.get("top_part")))
    for section in content.get("sections", ()):  # the template shows even an empty one
        theme = section["theme"]
        key = ("section", theme.get("id"), theme.get("name"), theme.get("context"))
        blocks.append(
            (
                key,
                str(section.get("volume_line", "")),
                section.get("entries", ()),
                section.get("entries_part"),
            )
        )
    if content.get("watchlist_entries"):
        line = str(content.get("watchlist_line") or "")
        blocks.append((("watch", bool(line)), line, content["watchlist_entries"], None))
    return blocks
