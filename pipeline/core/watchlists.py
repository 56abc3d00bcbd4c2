"""The watchlist engine: every watchlist's query against every item, one scan per item.

Every term of every watchlist query (``query.query_terms``) is compiled once into one
multi-pattern automaton (``pipeline.core.matcher.Matcher``). Per item, title and body are
prepared together and scanned in one pass; the hits say which terms occurred, and only the
queries that one of those terms can trigger are evaluated. Pure module: no I/O.

How the pieces fit:

- **Patterns and terms.** A *pattern* is one spelling registered in the automaton (a query
  ``Term``, folded tokens plus wildcard and case flags). A *term group* is what a query term
  means: its own pattern plus, through the aliases (``config/aliases.toml``), every other
  spelling of the same entity. A query that says ``CPEC`` holds the group {CPEC, "China
  Pakistan Economic Corridor", سی پیک, ...}; a hit of any of them is a hit of the term. Each
  distinct pattern is registered once however many queries use it, and so is each group.
- **Distinct queries.** Watchlists with the same canonical query (``format_query``) share
  one compiled query: 5,000 subscribers watching ``CPEC`` cost one evaluation per item.
- **Triggers (the inverted index).** Each distinct query is filed under a few *trigger*
  groups, chosen so that the query cannot match unless one of them occurred: for an AND,
  its rarest positive operand; for an OR, every alternative's triggers; for NEAR, the rarer
  side; ``title:`` passes through. Negated terms are never triggers, so an item holding only
  a query's excluded words never gets it evaluated. "Rarest" is estimated from how often a
  group occurred in the items matched so far (after ``LEARN_MIN_ITEMS`` of them, see
  ``retune``), or before that from how many queries use the group and its shape (a phrase
  is rarer than a word, a wildcard commoner); the choice only affects speed, never results.
- **Evaluation.** A query made of words, phrases, OR groups and exclusions is compiled to
  flat group sets and checked against the set of groups present (what remains after the
  trigger). Other pure boolean shapes are checked on a small tree of group ids. Queries with
  ``title:`` or NEAR need positions: they are evaluated by ``query.evaluate`` on the hits of
  their own spellings, with each alias spelling standing as an OR alternative of its term
  (so NEAR distances use the length of the spelling actually found).
- **Incremental.** ``add_watchlist`` / ``remove_watchlist`` change the inverted index and
  register or drop patterns; the matcher's base+delta automata mean only a small delta
  automaton is rebuilt (``Matcher`` docs).

Why a second Matcher instance rather than the tagger's: ``Tagger.tag`` reads every hit of
its matcher as one of its own lexicons (foreign owners would break it), its throughput
target is per item and would pay for ~50,000 watchlist keys' hits on every call, and the
theme automaton is rebuilt when an editor changes a rule while watchlists change on their
own schedule. Both use the same ``Matcher`` class, so the folding, word boundaries and case
rules are identical; the poll path prepares an item once per engine.

Case: a query term keeps the case rule ``query.py`` gave it (``US`` only in capitals, ``us``
in any case); alias spellings carry the case rule of the alias file (``names`` any case,
``case_sensitive`` exact). An alias spelling with the same words as the query's own term is
left out, so ``PAK`` stays capitals-only even though the alias lists "Pak" in any case.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from pipeline.core.errors import QueryError
from pipeline.core.matcher import Matcher, Pattern, prepare_many
from pipeline.core.query import (
    And,
    Field,
    Near,
    Not,
    Or,
    Query,
    Term,
    evaluate,
    format_query,
    parse_query,
    parse_term,
)
from pipeline.core.query import Hit as QueryHit
from pipeline.core.query import explain as explain_query

WatchlistId = TypeVar("WatchlistId", bound=Hashable)
ItemId = TypeVar("ItemId", bound=Hashable)
SubscriberId = TypeVar("SubscriberId", bound=Hashable)

LEARN_MIN_ITEMS = 500  # items seen before observed frequencies replace the prior

# Group-tree node tags (a leaf is a group id, an int).
_AND, _OR, _NOT, _NEAR, _TITLE = "&", "|", "!", "~", "t"

GroupTree: TypeAlias = Any  # int | tuple[str, ...] (see _group_tree)


class AliasLike(Protocol):
    """What ``pipeline.rules.Alias`` offers: an id and spellings (any case, exact case)."""

    @property
    def id(self) -> str: ...

    @property
    def names(self) -> Sequence[str]: ...

    @property
    def case_sensitive(self) -> Sequence[str]: ...


def _pattern_key(term: Term) -> tuple[Any, ...]:
    """Identity of a spelling for the automaton: Term equality plus the cased words of a
    case-sensitive term (an alias's "LeT" and a query's ``LET`` are different spellings)."""
    return (
        term.tokens,
        term.prefix,
        term.case_sensitive,
        term.surface if term.case_sensitive else (),
    )


def _pattern(term: Term) -> Pattern:
    if not term.tokens or any(not token or " " in token for token in term.tokens):
        raise ValueError(f"term {term!r} has no words to match")
    key = " " + " ".join(term.tokens) + ("" if term.prefix else " ")
    cased = " ".join(term.surface or term.tokens) if term.case_sensitive else None
    return Pattern(format_query(term), key, len(term.tokens), term.prefix, cased)


def _shape_cost(term: Term) -> float:
    """Prior guess of how common a spelling is, relative to a plain word."""
    cost = 0.5 ** (len(term.tokens) - 1)
    if term.prefix:
        cost *= 8.0
    if term.case_sensitive:
        cost *= 0.7
    return cost


class _Query:
    """One distinct query (shared by every watchlist with the same canonical text)."""

    __slots__ = ("gids", "gtree", "key", "positional", "triggers")

    def __init__(self, key: str, gtree: GroupTree, gids: tuple[int, ...], positional: bool):
        self.key = key
        self.gtree = gtree
        self.gids = gids  # every group it uses, once (reference counts)
        self.positional = positional  # has title: or NEAR
        self.triggers: tuple[int, ...] | None = None  # None: evaluated on every item


class _Positional:
    """What a title:/NEAR query needs: its alias-expanded tree and its spellings."""

    __slots__ = ("pids", "tree")

    def __init__(self, tree: Query, pids: tuple[int, ...]):
        self.tree = tree
        self.pids = pids


class _Boolean:
    """A boolean query whose shape is not flat: checked on its group tree."""

    __slots__ = ("gtree",)

    def __init__(self, gtree: GroupTree):
        self.gtree = gtree


class WatchlistIndex(Generic[WatchlistId]):
    """Every watchlist compiled into one automaton plus an inverted index of triggers.

    ``watchlists``: ``(watchlist id, query)`` pairs, the query as text (parsed with
    ``parse_query``; QueryError propagates) or as a parsed tree. ``aliases``: the aliases
    (``pipeline.rules.load_aliases``), by id or as a sequence; a query term equal to any
    spelling (or to the id's words, for ``@id``) of an alias matches all its spellings.
    """

    def __init__(
        self,
        watchlists: Iterable[tuple[WatchlistId, str | Query]] = (),
        *,
        aliases: Mapping[str, AliasLike] | Iterable[AliasLike] | None = None,
    ) -> None:
        self._matcher = Matcher()
        # spellings (patterns)
        self._pid_by_key: dict[tuple[Any, ...], int] = {}
        self._pterm: dict[int, Term] = {}
        self._pid_groups: dict[int, list[int]] = {}  # pid → groups holding it
        # term groups
        self._gid_by_pids: dict[frozenset[int], int] = {}
        self._gpids: dict[int, tuple[int, ...]] = {}
        self._gusers: dict[int, int] = {}  # distinct queries using the group
        self._gprior: dict[int, float] = {}  # shape part of the prior cost
        # queries
        self._qid_by_key: dict[str, int] = {}
        self._queries: dict[int, _Query] = {}
        self._check: dict[int, Any] = {}  # qid → what to verify once triggered (hot path)
        self._members: dict[int, dict[WatchlistId, None]] = {}  # qid → watchlists (ordered)
        self._watchlist_qid: dict[WatchlistId, int] = {}
        self._postings: dict[int, set[int]] = {}  # group → queries it triggers
        self._always: set[int] = set()  # queries with no trigger (never from parse_query)
        # observed frequencies
        self._seen: Counter[int] = Counter()
        self._items_seen = 0
        self._learned = False
        self._next_id = 0
        self._aliases = _alias_table(aliases)
        self.add_watchlists(watchlists)

    # -- registration ------------------------------------------------------------------

    def __len__(self) -> int:
        """Watchlists registered."""
        return len(self._watchlist_qid)

    def __contains__(self, watchlist_id: object) -> bool:
        return watchlist_id in self._watchlist_qid

    def stats(self) -> dict[str, int]:
        """Sizes: watchlists, distinct queries, term groups, spellings, automaton keys."""
        return {
            "watchlists": len(self._watchlist_qid),
            "queries": len(self._queries),
            "groups": len(self._gpids),
            "patterns": len(self._pterm),
            "keys": len(self._matcher),
            "untriggered": len(self._always),
        }

    def add_watchlist(self, watchlist_id: WatchlistId, query: str | Query) -> None:
        """Add (or replace) one watchlist. Raises QueryError for a query that does not
        parse, ValueError for a tree with a term holding no words."""
        self.add_watchlists([(watchlist_id, query)])

    def add_watchlists(self, watchlists: Iterable[tuple[WatchlistId, str | Query]]) -> int:
        """Add (or replace) many watchlists at once: queries shared by several are parsed
        and compiled once, and triggers are chosen after all of them are counted. Returns
        how many were added. Nothing is added when one fails to parse."""
        parsed: dict[str, str] = {}  # text as given → canonical key (parse once per text)
        pending: list[tuple[WatchlistId, str]] = []
        trees: dict[str, Query] = {}
        for watchlist_id, query in watchlists:
            if isinstance(query, str):
                key = parsed.get(query)
                if key is None:
                    tree = parse_query(query)
                    key = parsed[query] = format_query(tree)
                    trees.setdefault(key, tree)
            else:
                key = format_query(query)
                trees.setdefault(key, query)
            pending.append((watchlist_id, key))
        for key, tree in trees.items():  # validate before changing anything
            if key not in self._qid_by_key:
                for term in _walk_terms(tree):
                    _pattern(term)
        fresh: list[int] = []
        for watchlist_id, key in pending:
            if watchlist_id in self._watchlist_qid:
                self.remove_watchlist(watchlist_id)
            qid = self._qid_by_key.get(key)
            if qid is None:
                qid = self._intern_query(key, trees[key])
                fresh.append(qid)
            self._members[qid][watchlist_id] = None
            self._watchlist_qid[watchlist_id] = qid
        for qid in fresh:
            if qid in self._queries:  # not removed again by a later duplicate id
                self._file(qid)
        return len(pending)

    def remove_watchlist(self, watchlist_id: WatchlistId) -> bool:
        """Forget one watchlist; its query and spellings go when nobody else uses them.
        True when it was registered."""
        qid = self._watchlist_qid.pop(watchlist_id, None)
        if qid is None:
            return False
        members = self._members[qid]
        del members[watchlist_id]
        if not members:
            self._drop_query(qid)
        return True

    def watchlists(self) -> list[WatchlistId]:
        return list(self._watchlist_qid)

    def query_of(self, watchlist_id: WatchlistId) -> str:
        """The canonical query text of a registered watchlist (KeyError when unknown)."""
        return self._queries[self._watchlist_qid[watchlist_id]].key

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _intern_pattern(self, term: Term) -> int:
        key = _pattern_key(term)
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._new_id()
            self._pid_by_key[key] = pid
            self._pterm[pid] = term
            self._pid_groups[pid] = []
            self._matcher.add(pid, [(_pattern(term), pid)])
        return pid

    def _variants(self, term: Term) -> list[Term]:
        """The spellings a query term stands for: itself, then its aliases' other ones."""
        found = self._aliases.get((term.tokens, term.prefix))
        if not found:
            return [term]
        own = (term.tokens, term.prefix)
        return [term, *(v for v in found if (v.tokens, v.prefix) != own)]

    def _intern_group(self, term: Term, cache: dict[tuple[Any, ...], int]) -> int:
        key = _pattern_key(term)
        gid = cache.get(key)
        if gid is not None:
            return gid
        variants = self._variants(term)
        pids = frozenset(self._intern_pattern(v) for v in variants)
        gid = self._gid_by_pids.get(pids)
        if gid is None:
            gid = self._new_id()
            self._gid_by_pids[pids] = gid
            ordered = tuple(dict.fromkeys(self._pid_by_key[_pattern_key(v)] for v in variants))
            self._gpids[gid] = ordered
            self._gusers[gid] = 0
            self._gprior[gid] = sum(_shape_cost(self._pterm[p]) for p in ordered)
            for pid in ordered:
                self._pid_groups[pid].append(gid)
        cache[key] = gid
        return gid

    def _intern_query(self, key: str, tree: Query) -> int:
        cache: dict[tuple[Any, ...], int] = {}
        gtree = _group_tree(tree, lambda term: self._intern_group(term, cache))
        gids = tuple(dict.fromkeys(cache.values()))
        for gid in gids:
            self._gusers[gid] += 1
        qid = self._new_id()
        positional = _is_positional(gtree)
        self._queries[qid] = _Query(key, gtree, gids, positional)
        self._qid_by_key[key] = qid
        self._members[qid] = {}
        if positional:
            self._check[qid] = _Positional(*self._expand(tree))
        return qid

    def _drop_query(self, qid: int) -> None:
        query = self._queries.pop(qid)
        del self._qid_by_key[query.key]
        del self._members[qid]
        del self._check[qid]
        self._unfile(qid, query)
        for gid in query.gids:
            self._gusers[gid] -= 1
            if not self._gusers[gid]:
                self._drop_group(gid)

    def _drop_group(self, gid: int) -> None:
        pids = self._gpids.pop(gid)
        del self._gusers[gid], self._gprior[gid]
        del self._gid_by_pids[frozenset(pids)]
        self._postings.pop(gid, None)
        self._seen.pop(gid, None)
        for pid in pids:
            groups = self._pid_groups[pid]
            groups.remove(gid)
            if not groups:
                del self._pid_groups[pid]
                del self._pid_by_key[_pattern_key(self._pterm.pop(pid))]
                self._matcher.remove(pid)

    # -- triggers ----------------------------------------------------------------------

    def _cost(self, gid: int) -> float:
        if self._learned:
            return (self._seen.get(gid, 0) + 0.5) / (self._items_seen + 1)
        return (1 + self._gusers[gid]) * self._gprior[gid]

    def _file(self, qid: int) -> None:
        """Choose the query's triggers and what to check once triggered; index it."""
        query = self._queries[qid]
        flat = _flat(query.gtree)
        triggers: tuple[int, ...] | None
        if flat is not None:
            triggers, self._check[qid] = self._flat_plan(*flat)
        else:
            chosen = _triggers(query.gtree, self._cost)
            triggers = chosen[1] if chosen is not None else None
            if not query.positional:
                self._check[qid] = _Boolean(query.gtree)
        query.triggers = triggers
        if triggers is None:
            self._always.add(qid)
        else:
            for gid in triggers:
                self._postings.setdefault(gid, set()).add(qid)

    def _flat_plan(
        self,
        required: tuple[int, ...],
        anyof: tuple[tuple[int, ...], ...],
        excluded: tuple[int, ...],
    ) -> tuple[tuple[int, ...], Any]:
        """Triggers for a flat query (its cheapest required group or OR clause) and the
        residual check: True (nothing left), a group id (that one must be present too), or
        ``(required, anyof, excluded)`` left to verify."""
        options: list[tuple[float, int, tuple[int, ...]]] = [
            (self._cost(gid), position, (gid,)) for position, gid in enumerate(required)
        ]
        options += [
            (sum(self._cost(g) for g in clause), len(required) + position, clause)
            for position, clause in enumerate(anyof)
        ]
        _, position, triggers = min(options)
        if position < len(required):
            required = required[:position] + required[position + 1 :]
        else:
            index = position - len(required)
            anyof = anyof[:index] + anyof[index + 1 :]
        if not anyof and not excluded:
            if not required:
                return triggers, True
            if len(required) == 1:
                return triggers, required[0]
        return triggers, (required, anyof, excluded)

    def _unfile(self, qid: int, query: _Query) -> None:
        if query.triggers is None:
            self._always.discard(qid)
            return
        for gid in query.triggers:
            posting = self._postings.get(gid)
            if posting is not None:
                posting.discard(qid)
                if not posting:
                    del self._postings[gid]

    def retune(self) -> None:
        """Re-choose every query's triggers with the current frequency estimates (what the
        items matched so far showed, once ``LEARN_MIN_ITEMS`` were seen). Results never
        change; the number of queries evaluated per item may drop."""
        self._learned = self._items_seen >= LEARN_MIN_ITEMS
        for qid, query in self._queries.items():
            self._unfile(qid, query)
            self._file(qid)

    # -- aliases -----------------------------------------------------------------------

    def _expand(self, tree: Query) -> tuple[Query, tuple[int, ...]]:
        """``tree`` with every aliased term replaced by an OR of its spellings (a NEAR by
        an OR of NEARs over both sides' spellings), and the pattern ids it needs."""
        pids: dict[int, None] = {}

        def spellings(term: Term) -> list[Term]:
            variants = self._variants(term)
            for variant in variants:
                pids[self._pid_by_key[_pattern_key(variant)]] = None
            return variants

        def walk(node: Query) -> Query:
            match node:
                case Term():
                    variants = spellings(node)
                    return node if len(variants) == 1 else Or(tuple(variants))
                case And(children=children):
                    return And(tuple(walk(c) for c in children))
                case Or(children=children):
                    return Or(tuple(walk(c) for c in children))
                case Not(child=child):
                    return Not(walk(child))
                case Field(name=name, child=child):
                    return Field(name, walk(child))
                case Near(left=left, right=right, distance=distance):
                    lefts, rights = spellings(left), spellings(right)
                    if len(lefts) == len(rights) == 1:
                        return node
                    return Or(tuple(Near(a, b, distance) for a in lefts for b in rights))
            raise TypeError(f"not a query node: {node!r}")

        return walk(tree), tuple(pids)

    # -- matching ----------------------------------------------------------------------

    def _scan(self, title: str, body: str) -> tuple[list[tuple[Any, ...]], Any, list[int]]:
        field, offsets = prepare_many(title, body)
        return self._matcher.spans(field), field, offsets

    def _positions(
        self, spans: list[tuple[Any, ...]], field: Any, offsets: list[int]
    ) -> dict[int, list[QueryHit]]:
        folded = field.folded
        body_at = offsets[1]
        found: dict[int, list[QueryHit]] = {}
        for _, pid, start_char, _ in spans:
            if start_char < body_at:
                hit = QueryHit("title", folded.count(" ", 0, start_char))
            else:
                hit = QueryHit("body", folded.count(" ", body_at, start_char))
            found.setdefault(pid, []).append(hit)
        return found

    def _match(self, title: str, body: str) -> list[int]:
        """The distinct queries (ids) that match one item."""
        return self._evaluate(*self._scan(title, body))

    def _evaluate(self, spans: list[tuple[Any, ...]], field: Any, offsets: list[int]) -> list[int]:
        pid_groups = self._pid_groups
        present: set[int] = set()
        for pid in {span[1] for span in spans}:
            present.update(pid_groups[pid])
        self._items_seen += 1
        self._seen.update(present)
        postings = self._postings
        candidates: set[int] = set(self._always)
        for gid in present:
            posting = postings.get(gid)
            if posting is not None:
                candidates.update(posting)
        if not candidates:
            return []
        checks = self._check
        matched: list[int] = []
        append = matched.append
        positions: dict[int, list[QueryHit]] | None = None
        for qid in candidates:
            check = checks[qid]
            if check is True:
                append(qid)
            elif check.__class__ is int:
                if check in present:
                    append(qid)
            elif check.__class__ is tuple:
                if _flat_ok(present, *check):
                    append(qid)
            elif check.__class__ is _Positional:
                if positions is None:
                    positions = self._positions(spans, field, offsets)
                pterm = self._pterm
                hits = {pterm[pid]: positions[pid] for pid in check.pids if pid in positions}
                if hits and evaluate(check.tree, hits):
                    append(qid)
            elif _bool_ok(check.gtree, present):
                append(qid)
        matched.sort()  # registration order, whatever the set order was
        return matched

    def candidates(self, title: str, body: str = "") -> list[WatchlistId]:
        """The watchlists whose queries one item would get evaluated (their triggers
        occurred): for tests and tuning; ``match`` returns the ones that matched."""
        spans, _, _ = self._scan(title, body)
        present: set[int] = set()
        for pid in {span[1] for span in spans}:
            present.update(self._pid_groups[pid])
        qids = set(self._always)
        for gid in present:
            qids.update(self._postings.get(gid, ()))
        return list(chain.from_iterable(self._members[qid] for qid in qids))

    def match(self, title: str, body: str = "") -> list[WatchlistId]:
        """The watchlists that match one item (title and body as plain text)."""
        members = self._members
        return list(chain.from_iterable(members[qid] for qid in self._match(title, body)))

    def match_items(
        self, items: Iterable[tuple[ItemId, str, str]]
    ) -> dict[ItemId, list[WatchlistId]]:
        """For each ``(item id, title, body)``, the watchlists it matches (possibly none),
        in input order."""
        members = self._members
        out: dict[ItemId, list[WatchlistId]] = {}
        for item_id, title, body in items:
            matched: list[WatchlistId] = []
            for qid in self._match(title, body):
                matched.extend(members[qid])
            out[item_id] = matched
        return out

    def items_by_watchlist(
        self, items: Iterable[tuple[ItemId, str, str]]
    ) -> dict[WatchlistId, tuple[ItemId, ...]]:
        """For each watchlist that matched at least one item, the item ids in input order.
        Watchlists sharing a query share one tuple: the fan-out form of ``match_items``
        (work grows with distinct queries matched, not with subscribers)."""
        by_query: dict[int, list[ItemId]] = {}
        for item_id, title, body in items:
            for qid in self._match(title, body):
                found = by_query.get(qid)
                if found is None:
                    by_query[qid] = [item_id]
                else:
                    found.append(item_id)
        out: dict[WatchlistId, tuple[ItemId, ...]] = {}
        for qid, item_ids in by_query.items():
            shared = tuple(item_ids)
            out.update(dict.fromkeys(self._members[qid], shared))
        return out

    def explain(self, title: str, body: str = "") -> dict[WatchlistId, list[str]]:
        """The watchlists that match one item, each with the words, phrases and NEAR pairs
        that made it match, as query text (alias spellings as found: ``"سی پیک"``)."""
        spans, field, offsets = self._scan(title, body)
        matched = self._evaluate(spans, field, offsets)
        positions = self._positions(spans, field, offsets)
        out: dict[WatchlistId, list[str]] = {}
        for qid in matched:
            check = self._check[qid]
            if check.__class__ is _Positional:
                tree, pids = check.tree, check.pids
            else:
                tree, pids = self._expand(parse_query(self._queries[qid].key))
            hits = {self._pterm[pid]: positions[pid] for pid in pids if pid in positions}
            reasons = explain_query(tree, hits)
            for watchlist_id in self._members[qid]:
                out[watchlist_id] = list(reasons)
        return out


# -- helpers over query trees -----------------------------------------------------------


def _walk_terms(node: Query) -> Iterable[Term]:
    match node:
        case Term():
            yield node
        case And(children=children) | Or(children=children):
            for child in children:
                yield from _walk_terms(child)
        case Not(child=child) | Field(child=child):
            yield from _walk_terms(child)
        case Near(left=left, right=right):
            yield left
            yield right


def _group_tree(node: Query, group: Any) -> GroupTree:
    """The query with each term replaced by its group id (``group(term)``)."""
    match node:
        case Term():
            return group(node)
        case And(children=children):
            return (_AND, tuple(_group_tree(c, group) for c in children))
        case Or(children=children):
            return (_OR, tuple(_group_tree(c, group) for c in children))
        case Not(child=child):
            return (_NOT, _group_tree(child, group))
        case Field(child=child):
            return (_TITLE, _group_tree(child, group))
        case Near(left=left, right=right, distance=distance):
            return (_NEAR, group(left), group(right), distance)
    raise TypeError(f"not a query node: {node!r}")


def _is_positional(node: GroupTree) -> bool:
    if node.__class__ is int:
        return False
    tag = node[0]
    if tag in (_NEAR, _TITLE):
        return True
    if tag == _NOT:
        return _is_positional(node[1])
    return any(_is_positional(child) for child in node[1])


def _flat(
    node: GroupTree,
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...]] | None:
    """``(required, anyof, excluded)`` when the query is an AND of terms, OR groups of
    terms and exclusions of those (the common shapes), else None."""

    def alternatives(child: GroupTree) -> tuple[int, ...] | None:
        if child[0] == _OR and all(c.__class__ is int for c in child[1]):
            return tuple(dict.fromkeys(child[1]))
        return None

    if node.__class__ is int:
        return (node,), (), ()
    tag = node[0]
    if tag == _OR:
        clause = alternatives(node)
        return None if clause is None else ((), (clause,), ())
    if tag != _AND:
        return None
    required: list[int] = []
    anyof: list[tuple[int, ...]] = []
    excluded: list[int] = []
    for child in node[1]:
        if child.__class__ is int:
            required.append(child)
        elif child[0] == _OR:
            clause = alternatives(child)
            if clause is None:
                return None
            anyof.append(clause)
        elif child[0] == _NOT:
            inner = child[1]
            if inner.__class__ is int:
                excluded.append(inner)
            else:
                clause = alternatives(inner)
                if clause is None:
                    return None
                excluded.extend(clause)
        else:
            return None
    if not required and not anyof:
        return None  # nothing positive: evaluated as a tree (cannot come from parse_query)
    return tuple(dict.fromkeys(required)), tuple(anyof), tuple(dict.fromkeys(excluded))


def _triggers(node: GroupTree, cost: Any) -> tuple[float, tuple[int, ...]] | None:
    """The cheapest set of groups one of which must occur for ``node`` to match."""
    if node.__class__ is int:
        return cost(node), (node,)
    tag = node[0]
    if tag == _NOT:
        return None
    if tag == _TITLE:
        return _triggers(node[1], cost)
    if tag == _NEAR:
        return min((cost(node[1]), (node[1],)), (cost(node[2]), (node[2],)))
    options = [_triggers(child, cost) for child in node[1]]
    if tag == _AND:
        usable = [option for option in options if option is not None]
        return min(usable) if usable else None
    if any(option is None for option in options):
        return None
    total = sum(option[0] for option in options if option is not None)
    groups = chain.from_iterable(option[1] for option in options if option is not None)
    return total, tuple(dict.fromkeys(groups))


def _flat_ok(
    present: set[int],
    required: tuple[int, ...],
    anyof: tuple[tuple[int, ...], ...],
    excluded: tuple[int, ...],
) -> bool:
    for gid in required:
        if gid not in present:
            return False
    for clause in anyof:
        if present.isdisjoint(clause):
            return False
    return not excluded or present.isdisjoint(excluded)


def _bool_ok(node: GroupTree, present: set[int]) -> bool:
    if node.__class__ is int:
        return node in present
    tag = node[0]
    if tag == _AND:
        return all(_bool_ok(child, present) for child in node[1])
    if tag == _OR:
        return any(_bool_ok(child, present) for child in node[1])
    if tag == _NOT:
        return not _bool_ok(node[1], present)
    raise AssertionError(f"positional node {tag!r} in a boolean check")


def _alias_table(
    aliases: Mapping[str, AliasLike] | Iterable[AliasLike] | None,
) -> dict[tuple[tuple[str, ...], bool], list[Term]]:
    """(words, wildcard) of every spelling and of each id → all the spellings it stands
    for, as query Terms (``names`` in any case, ``case_sensitive`` exact)."""
    if aliases is None:
        return {}
    entries = aliases.values() if isinstance(aliases, Mapping) else aliases
    table: dict[tuple[tuple[str, ...], bool], list[Term]] = {}
    for alias in entries:
        spellings: list[Term] = []
        for names, cased in ((alias.names, False), (alias.case_sensitive, True)):
            for name in names:
                try:
                    term = parse_term(name)
                except QueryError as error:  # a name with no word
                    raise ValueError(f"alias {alias.id!r}: {name!r}: {error}") from error
                spellings.append(dataclasses.replace(term, case_sensitive=cased))
        spellings = list(dict.fromkeys(spellings))
        keys = {(s.tokens, s.prefix) for s in spellings}
        keys.add((tuple(alias.id.split("_")), False))
        for key in keys:
            known = table.setdefault(key, [])
            known.extend(s for s in spellings if s not in known)
    return table


# -- selection ---------------------------------------------------------------------------


def subscribers_for_items(
    matches: Mapping[ItemId, Iterable[WatchlistId]],
    subscriber_of: Mapping[WatchlistId, SubscriberId],
) -> dict[SubscriberId, list[ItemId]]:
    """Per subscriber, the items any of their watchlists matched, each once, in the order
    of ``matches`` (``WatchlistIndex.match_items``). Watchlists missing from
    ``subscriber_of`` are ignored. Subscribers with nothing are left out."""
    out: dict[SubscriberId, list[ItemId]] = {}
    for item_id, watchlist_ids in matches.items():
        for watchlist_id in watchlist_ids:
            subscriber = subscriber_of.get(watchlist_id)
            if subscriber is None:
                continue
            chosen = out.get(subscriber)
            if chosen is None:
                out[subscriber] = [item_id]
            elif chosen[-1] != item_id:
                chosen.append(item_id)
    return out


def subscribers_for_watchlists(
    by_watchlist: Mapping[WatchlistId, Sequence[ItemId]],
    watchlists_of: Mapping[SubscriberId, Iterable[WatchlistId]],
) -> dict[SubscriberId, list[ItemId]]:
    """Per subscriber, the items any of their watchlists matched, each once: the
    watchlists' lists (``WatchlistIndex.items_by_watchlist``) joined in the subscriber's
    watchlist order. Subscribers with nothing are left out. The fast form for a whole
    day's fan-out: work is per subscriber and per item selected, not per watchlist hit."""
    out: dict[SubscriberId, list[ItemId]] = {}
    get = by_watchlist.get
    for subscriber, watchlist_ids in watchlists_of.items():
        found = [items for items in map(get, watchlist_ids) if items]
        if not found:
            continue
        if len(found) == 1:
            out[subscriber] = list(found[0])
        else:
            out[subscriber] = list(dict.fromkeys(chain.from_iterable(found)))
    return out
