"""The watchlist engine: every watchlist's query against every item, one scan per item.

Every term of every watchlist query (``query.query_terms``) is compiled once into one
multi-pattern automaton (``pipeline.core.matcher.Matcher``). An item's title and body are
prepared together and scanned in one pass; the hits say which terms occurred, and only the
queries one of those terms can trigger are evaluated. Pure module: no I/O.

- **Spellings and term groups.** A *pattern* is one spelling registered in the automaton
  (a query ``Term``: folded tokens, wildcard and case flags). A *term group* is what a query
  term means: its own spelling plus, through the aliases (``config/aliases.toml``), every
  other spelling of the same entity. A query that says ``CPEC`` holds the group {CPEC,
  "China Pakistan Economic Corridor", سی پیک, ...}; a hit of any of them is a hit of the
  term. Each spelling and each group is registered once however many queries use it.
- **Distinct queries.** Watchlists whose queries have the same shape over the same groups
  share one compiled query: 5,000 subscribers watching ``CPEC`` cost one evaluation.
- **Triggers (the inverted index).** Each distinct query is filed under a few *trigger*
  groups such that it cannot match unless one of them occurred: for an AND its rarest
  positive operand, for an OR every alternative's triggers, for NEAR the rarer side;
  ``title:`` passes through. Negated terms are never triggers, so an item holding only a
  query's excluded words never gets it evaluated. "Rarest" is estimated from how often a
  group occurred in the items seen (after ``LEARN_MIN_ITEMS``, on ``retune``), before that
  from how many queries use it and its shape; the choice affects speed, never results.
- **One item** (``match``, ``explain``: instant alerts, tests). The queries filed under the
  groups present are checked against the set of groups present: most are *flat* (an AND of
  words, phrases, OR groups of them and exclusions), checked with a few set operations;
  ``title:`` and NEAR look at where the spellings occurred.
- **A batch** (``match_items``, ``items_by_watchlist``: a day's digest). The scan records,
  per group, the items it occurred in (and those with it in the title); each query filed
  under a group that occurred at all is then evaluated once, over the whole batch, with
  set operations on those item sets (an AND intersects its operands smallest first, an
  exclusion subtracts); for NEAR, the scan records per item how near each pair of groups
  some NEAR uses came (one sweep over the item's occurrences of them), and a NEAR keeps
  the items, among those holding both sides and passing the query's other operands, where
  its pair came near enough. The cost follows the distinct queries and the matches,
  not the number of subscribers.
- **NEAR semantics with aliases** are those of ``query.evaluate`` on the alias-expanded
  query (an OR of NEARs over pairs of spellings, see ``WatchlistIndex.expand``), so the
  distance is measured from the spelling actually found, however many words it has.
- **Incremental.** ``add_watchlist`` / ``remove_watchlist`` change the inverted index and
  register or drop spellings; the matcher's base+delta automata mean only a small delta
  automaton is rebuilt (``Matcher`` docs).

Why a second Matcher instance rather than the tagger's: ``Tagger.tag`` reads every hit of
its matcher as one of its own lexicons (foreign owners would break it), its throughput
target is per item and would pay for ~50,000 watchlist keys' hits on every call, and the
theme automaton is rebuilt when an editor changes a rule while watchlists change on their
own schedule. Both are the same ``Matcher`` class, so folding, word boundaries and case
rules are identical.

Case: a query term keeps the case rule ``query.py`` gave it (``US`` only in capitals, ``us``
in any case); alias spellings carry the case rule of the alias file (``names`` any case,
``case_sensitive`` exact). An alias spelling with the same words as the query's own term is
left out, so ``PAK`` stays capitals-only even though the alias lists "Pak" in any case.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from pipeline.core.collector import gc_paused
from pipeline.core.errors import QueryError
from pipeline.core.matcher import Field as ScanField
from pipeline.core.matcher import Matcher, Pattern, case_ok, prepare_many
from pipeline.core.query import (
    And,
    Field,
    Near,
    Not,
    Or,
    Query,
    Term,
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
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_append = list.append
# a NEAR spelling's entry in a key: its id, words, groups some NEAR uses, the entry, and
# the groups a NEAR pairs any of those with
_NearUse: TypeAlias = tuple[Any, int, tuple[int, ...], Any, frozenset[int]]
_HitTable: TypeAlias = tuple[
    dict[int, int], set[int], dict[int, tuple[_NearUse, ...]], dict[int, set[int]]
]

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


def _check_term(term: Term) -> None:
    if not term.tokens or any(not token or " " in token for token in term.tokens):
        raise ValueError(f"term {term!r} has no words to match")


def _pattern(term: Term) -> Pattern:
    _check_term(term)
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


Flat: TypeAlias = tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...]]
# What a flat query checks once its plan's items are known, as ``(kind, x, y)``: the
# common shapes spelt out so a batch checks each with a few set operations (one more
# required group; one or two excluded groups; one OR clause of two groups), else
# ``(_GENERAL, (other required groups, other OR clauses, excluded groups), None)``; None
# when nothing (the plan's items are its items).
Rest: TypeAlias = tuple[int, Any, Any] | None
PlanEntry: TypeAlias = tuple[int, Rest]  # (qid, rest)
_ONE_MORE, _LESS_ONE, _LESS_TWO, _EITHER, _GENERAL = range(5)
# A first group's pair plans as a batch runs them: the second groups of the pairs that are
# one query with nothing else to check, those queries, and the other pairs' second groups
# and plans.
_PairRun: TypeAlias = tuple[list[int], list[int], list[int], list[list[PlanEntry]]]


class _Query:
    """One distinct query, shared by every watchlist whose query has the same shape over
    the same term groups (``CPEC`` and ``"سی پیک"`` are one query when both are spellings of
    one alias): its flat form ``(required, anyof, excluded)`` when it has one, else its
    group tree. ``text`` is the first watchlist's query (text, or the tree when given as
    one), for ``explain``."""

    __slots__ = ("flat", "gtree", "plan", "positional", "text", "triggers")

    def __init__(self, text: str | Query, flat: Flat | None, gtree: GroupTree):
        self.text = text
        self.flat = flat
        self.gtree: GroupTree = None if flat is not None else gtree
        self.positional = flat is None and _is_positional(gtree)  # title: or NEAR
        self.triggers: tuple[int, ...] | None = None  # None: evaluated on every item
        self.plan: tuple[Any, ...] | None = None  # a flat query's key in the batch plans

    @property
    def shape(self) -> Any:
        """The key that makes two watchlists share this query."""
        return self.flat if self.flat is not None else self.gtree

    def groups(self) -> tuple[int, ...]:
        """Every group it uses, once."""
        if self.flat is not None:
            required, anyof, excluded = self.flat
            return tuple(dict.fromkeys(chain(required, chain.from_iterable(anyof), excluded)))
        return tuple(dict.fromkeys(_tree_groups(self.gtree)))


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
        self._term_gid: dict[tuple[Any, ...], int] = {}  # query term (pattern key) → group
        self._gkeys: dict[int, list[tuple[Any, ...]]] = {}  # group → its keys there
        # queries
        self._qid_by_shape: dict[Any, int] = {}
        self._near_pids: Counter[int] = Counter()  # spellings under a NEAR: how many uses
        self._near_gids: Counter[int] = Counter()  # groups under a NEAR: how many uses
        self._near_pairs: Counter[tuple[int, int]] = Counter()  # NEARs per pair of groups
        self._near_reach: Counter[int] = Counter()  # NEARs per distance
        self._near_version = 0  # bumped when the NEAR spellings or a payload change
        self._hit_table: tuple[tuple[int, int], _HitTable] | None = None  # _hit_tables
        self._queries: dict[int, _Query] = {}
        self._members: dict[int, list[WatchlistId]] = {}  # qid → watchlists, in order added
        self._watchlist_qid: dict[WatchlistId, int] = {}
        self._postings: dict[int, set[int]] = {}  # group → queries it triggers
        # Batch plans of flat queries, by what a batch computes first for them: the items
        # of a pair of required groups (its two rarest; ``_pair_plans[a][b]``, a < b), of
        # its one required group (``_single_plans[a]``), or of its rarest OR clause
        # (``_or_plans[clause]``) → the queries starting there, with what else each
        # checks (``PlanEntry``). A batch makes each plan's start once for all its
        # queries, and only when its groups occurred (a pair whose first group did not
        # occur costs one look-up for all its partners).
        self._pair_plans: dict[int, dict[int, list[PlanEntry]]] = {}
        # The pair plans as a batch runs them, per first group (``_PairRun``), remade
        # for the first groups whose pairs changed (``_stale_pairs``) before a batch.
        self._pair_runs: dict[int, _PairRun] = {}
        self._stale_pairs: set[int] = set()
        self._single_plans: dict[int, list[PlanEntry]] = {}
        self._or_plans: dict[tuple[int, ...], list[PlanEntry]] = {}
        self._trees: set[int] = set()  # queries that are not flat
        self._always: set[int] = set()  # queries with no trigger (never from parse_query)
        # observed frequencies
        self._seen: Counter[int] = Counter()
        self._items_seen = 0
        self._learned = False
        self._next_id = 0
        self.evaluations = 0  # queries evaluated so far (candidates), for tuning
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
        """Add (or replace) many watchlists at once: a query text (or tree object) given
        many times is parsed and compiled once, and triggers are chosen after all of them
        are counted. Returns how many distinct watchlist ids were added (the last query
        given for an id wins). Nothing changes when one fails: QueryError or ValueError."""
        with gc_paused():
            return self._add_watchlists(watchlists)

    def _add_watchlists(self, watchlists: Iterable[tuple[WatchlistId, str | Query]]) -> int:
        by_text: dict[str, int] = {}  # query text → qid, parsing each text once
        by_tree: dict[int, tuple[Query, int]] = {}  # id(tree) → (tree kept alive, qid)
        cache = self._term_gid
        fresh: list[int] = []
        wanted: dict[WatchlistId, int] = {}
        try:
            for watchlist_id, query in watchlists:
                if isinstance(query, str):
                    qid = by_text.get(query)
                    if qid is None:
                        tree = parse_query(query)
                        qid = by_text[query] = self._qid_for(tree, query, fresh, cache)
                else:
                    known = by_tree.get(id(query))
                    if known is None:
                        qid = self._qid_for(query, None, fresh, cache)
                        known = by_tree[id(query)] = (query, qid)
                    qid = known[1]
                wanted.pop(watchlist_id, None)  # keep the order of the last mention
                wanted[watchlist_id] = qid
        except (QueryError, ValueError):
            for qid in fresh:
                self._drop_query(qid)
            raise
        del by_text, by_tree
        # New memberships first, then the old ones go: a query both lost and gained in
        # this call is never dropped in between.
        replaced: list[tuple[WatchlistId, int]] = []
        for watchlist_id, qid in wanted.items():
            old = self._watchlist_qid.get(watchlist_id)
            if old == qid:
                continue
            self._members[qid].append(watchlist_id)
            self._watchlist_qid[watchlist_id] = qid
            if old is not None:
                replaced.append((watchlist_id, old))
        for watchlist_id, old in replaced:
            members = self._members[old]
            members.remove(watchlist_id)
            if not members:
                self._drop_query(old)
        for qid in fresh:
            if self._members[qid]:
                self._file(qid)
            else:
                self._drop_query(qid)
        return len(wanted)

    def _qid_for(
        self,
        tree: Query,
        text: str | None,
        fresh: list[int],
        cache: dict[tuple[Any, ...], int],
    ) -> int:
        """The distinct query for ``tree``, compiled now when new (added to ``fresh``).
        ``text``: the text ``tree`` was parsed from (its terms are valid then)."""
        if text is None:
            for term in _walk_terms(tree):
                _check_term(term)
        gtree = _group_tree(tree, lambda term: self._intern_group(term, cache))
        flat = _flat(gtree)
        shape = flat if flat is not None else gtree
        qid = self._qid_by_shape.get(shape)
        if qid is None:
            query = _Query(text if text is not None else tree, flat, gtree)
            for gid in query.groups():
                self._gusers[gid] += 1
            self._count_near(query, 1)
            qid = self._new_id()
            self._queries[qid] = query
            self._qid_by_shape[shape] = qid
            self._members[qid] = []
            fresh.append(qid)
        return qid

    def remove_watchlist(self, watchlist_id: WatchlistId) -> bool:
        """Forget one watchlist; its query and spellings go when nobody else uses them.
        True when it was registered."""
        qid = self._watchlist_qid.pop(watchlist_id, None)
        if qid is None:
            return False
        members = self._members[qid]
        members.remove(watchlist_id)
        if not members:
            self._drop_query(qid)
        return True

    @property
    def matcher(self) -> Matcher:
        """The automaton of every spelling (owners and payloads are internal ids)."""
        return self._matcher

    def compile(self) -> None:
        """Build the automaton and the batch plans now (otherwise the first match after
        a change does)."""
        with gc_paused():
            self._matcher.rebuild()
            self._pair_runs_ready()
            self._hit_tables()

    def _pair_runs_ready(self) -> dict[int, _PairRun]:
        """``_pair_runs`` brought up to date: a first group's pairs split into those that
        are one query with nothing else to check (its items are the intersection: a
        batch makes them all in one ``map``) and the others."""
        runs = self._pair_runs
        for a in self._stale_pairs:
            partners = self._pair_plans.get(a)
            if partners is None:
                runs.pop(a, None)
                continue
            seconds: list[int] = []
            qids: list[int] = []
            other_seconds: list[int] = []
            others: list[list[PlanEntry]] = []
            for b, entries in partners.items():
                if len(entries) == 1 and entries[0][1] is None:
                    seconds.append(b)
                    qids.append(entries[0][0])
                else:
                    other_seconds.append(b)
                    others.append(entries)
            runs[a] = (seconds, qids, other_seconds, others)
        self._stale_pairs.clear()
        return runs

    def watchlists(self) -> list[WatchlistId]:
        return list(self._watchlist_qid)

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
            # The payload is the pattern's list of groups itself (kept up to date in place):
            # a span says at once which groups occurred.
            groups: list[int] = []
            self._pid_groups[pid] = groups
            self._matcher.add(pid, [(_pattern(term), groups)])
        return pid

    def _variants(self, term: Term) -> list[Term]:
        """The spellings a query term stands for: itself, then its aliases' other ones."""
        found = self._aliases.get((term.tokens, term.prefix))
        if not found:
            return [term]
        own = (term.tokens, term.prefix)
        return [term, *(v for v in found if (v.tokens, v.prefix) != own)]

    def _intern_group(self, term: Term, cache: dict[tuple[Any, ...], int]) -> int:
        """The group of a query term (``cache``: pattern key → group, kept by the index
        across queries; a group is dropped, with its keys, when no query uses it)."""
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
            self._gkeys[gid] = []
            for pid in ordered:
                self._pid_groups[pid].append(gid)
            self._near_version += 1  # the spellings' payloads changed
        cache[key] = gid
        self._gkeys[gid].append(key)
        return gid

    def _count_near(self, query: _Query, step: int) -> None:
        """Keep count of the spellings, pairs of groups and distances some NEAR uses (a
        batch records how near those pairs came in each item)."""
        if query.gtree is None:
            return
        near_pids, near_gids, near_pairs = self._near_pids, self._near_gids, self._near_pairs
        reach = self._near_reach
        self._near_version += 1
        nodes = list(_near_nodes(query.gtree))
        for _, left, right, distance in nodes:
            pair = (left, right) if left <= right else (right, left)
            near_pairs[pair] += step
            if not near_pairs[pair]:
                del near_pairs[pair]
            reach[distance] += step
            if not reach[distance]:
                del reach[distance]
        for gid in chain.from_iterable(node[1:3] for node in nodes):
            near_gids[gid] += step
            if not near_gids[gid]:
                del near_gids[gid]
            for pid in self._gpids[gid]:
                near_pids[pid] += step
                if not near_pids[pid]:
                    del near_pids[pid]

    def _drop_query(self, qid: int) -> None:
        query = self._queries.pop(qid)
        del self._qid_by_shape[query.shape]
        del self._members[qid]
        self._count_near(query, -1)
        self._unfile(qid, query)
        for gid in query.groups():
            self._gusers[gid] -= 1
            if not self._gusers[gid]:
                self._drop_group(gid)

    def _drop_group(self, gid: int) -> None:
        pids = self._gpids.pop(gid)
        del self._gusers[gid], self._gprior[gid]
        for key in self._gkeys.pop(gid):
            del self._term_gid[key]
        del self._gid_by_pids[frozenset(pids)]
        self._postings.pop(gid, None)
        self._seen.pop(gid, None)
        self._near_version += 1  # the spellings' payloads change
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
        triggers: tuple[int, ...] | None
        if query.flat is not None:
            triggers = self._flat_triggers(*query.flat)
        else:
            chosen = _triggers(query.gtree, self._cost)
            triggers = chosen[1] if chosen is not None else None
        query.triggers = triggers
        if query.flat is not None:
            query.plan, rest = self._flat_plan(*query.flat)
            self._plan_entries(query.plan, True).append((qid, rest))
        else:
            self._trees.add(qid)
        if triggers is None:
            self._always.add(qid)
        else:
            for gid in triggers:
                self._postings.setdefault(gid, set()).add(qid)

    def _flat_triggers(
        self,
        required: tuple[int, ...],
        anyof: tuple[tuple[int, ...], ...],
        excluded: tuple[int, ...],
    ) -> tuple[int, ...]:
        """A flat query's triggers: its cheapest required group or OR clause."""
        options: list[tuple[float, int, tuple[int, ...]]] = [
            (self._cost(gid), position, (gid,)) for position, gid in enumerate(required)
        ]
        options += [
            (sum(self._cost(g) for g in clause), len(required) + position, clause)
            for position, clause in enumerate(anyof)
        ]
        return min(options)[2]

    def _flat_plan(
        self,
        required: tuple[int, ...],
        anyof: tuple[tuple[int, ...], ...],
        excluded: tuple[int, ...],
    ) -> tuple[tuple[Any, ...], Rest]:
        """A flat query's plan key, ``("&", a)``, ``("&", a, b)`` or ``("|", *clause)``,
        and what it checks after the plan's start."""
        if required:
            ranked = sorted(required, key=self._cost)
            start = sorted(ranked[:2])
            more = tuple(gid for gid in required if gid not in start)
            key: tuple[Any, ...] = ("&", *start)
        else:
            costs = [sum(self._cost(gid) for gid in clause) for clause in anyof]
            first = costs.index(min(costs))
            key = ("|", *anyof[first])
            more, anyof = (), anyof[:first] + anyof[first + 1 :]
        return key, _rest(more, anyof, excluded)

    def _plan_entries(self, key: tuple[Any, ...], create: bool) -> list[PlanEntry]:
        """The entries of the plan ``key`` (made when ``create``, else it must exist)."""
        if key[0] == "|":
            table: dict[Any, list[PlanEntry]] = self._or_plans
            at: Any = key[1:]
        elif len(key) == 2:
            table, at = self._single_plans, key[1]
        else:
            pairs = self._pair_plans
            table = pairs.setdefault(key[1], {}) if create else pairs[key[1]]
            at = key[2]
            self._stale_pairs.add(key[1])
        if create:
            return table.setdefault(at, [])
        return table[at]

    def _unfile(self, qid: int, query: _Query) -> None:
        key = query.plan
        if key is not None:
            entries = self._plan_entries(key, False)
            entries[:] = [entry for entry in entries if entry[0] != qid]
            if not entries:
                if key[0] == "|":
                    del self._or_plans[key[1:]]
                elif len(key) == 2:
                    del self._single_plans[key[1]]
                else:
                    partners = self._pair_plans[key[1]]
                    del partners[key[2]]
                    if not partners:
                        del self._pair_plans[key[1]]
            query.plan = None
        self._trees.discard(qid)
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

    def expand(self, query: str | Query) -> Query:
        """The query as this index matches it: every aliased term replaced by an OR of its
        spellings (a NEAR by an OR of NEARs over both sides' spellings). Without aliases,
        ``query.matches_text(index.expand(q), ...)`` is the slow reference of ``match``."""
        tree = parse_query(query) if isinstance(query, str) else query
        return self._expand(tree, register=False)[0]

    def _expand(self, tree: Query, register: bool = True) -> tuple[Query, tuple[int, ...]]:
        """``expand`` and the pattern ids the expanded tree needs (``register``: the
        spellings are interned already)."""
        pids: dict[int, None] = {}

        def spellings(term: Term) -> list[Term]:
            variants = self._variants(term)
            if register:
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

    @staticmethod
    def _positions(
        spans: list[tuple[Any, ...]], folded: str, body_at: int
    ) -> dict[int, list[QueryHit]]:
        """Where each spelling occurred, as ``query.evaluate`` wants it (for ``explain``)."""
        found: dict[int, list[QueryHit]] = {}
        for pid, _, start_char, _ in spans:
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
        present = set(chain.from_iterable([span[1] for span in spans]))
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
        self.evaluations += len(candidates)
        queries = self._queries
        matched: list[int] = []
        append = matched.append
        occurrences: _Occurrences | None = None
        for qid in candidates:
            query = queries[qid]
            flat = query.flat
            if flat is not None:
                if _flat_ok(present, *flat):
                    append(qid)
            elif not query.positional:
                if _bool_ok(query.gtree, present):
                    append(qid)
            else:
                if occurrences is None:
                    occurrences = _Occurrences(spans, field.folded, offsets[1], self._gpids)
                if _positional_ok(query.gtree, occurrences, None):
                    append(qid)
        matched.sort()  # registration order, whatever the set order was
        return matched

    def candidates(self, title: str, body: str = "") -> list[WatchlistId]:
        """The watchlists whose queries one item would get evaluated (their triggers
        occurred): for tests and tuning; ``match`` returns the ones that matched."""
        spans, _, _ = self._scan(title, body)
        present = set(chain.from_iterable([span[1] for span in spans]))
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
        in registration order. Items are matched as one batch (``items_by_watchlist``)."""
        with gc_paused():
            item_ids, by_query, _ = self._match_batch(items)
            out: dict[ItemId, list[WatchlistId]] = {item_id: [] for item_id in item_ids}
            members = self._members
            for qid in sorted(by_query):
                watchlist_ids = members[qid]
                for index in by_query[qid]:
                    out[item_ids[index]].extend(watchlist_ids)
            return out

    def items_by_watchlist(
        self, items: Iterable[tuple[ItemId, str, str]]
    ) -> WatchlistMatches[WatchlistId, ItemId]:
        """For each watchlist that matched at least one of ``(item id, title, body)``, the
        item ids in input order (a read-only mapping, ``WatchlistMatches``). Watchlists
        sharing a query share one tuple. The fan-out form: the batch is scanned once, then
        each query that could match is evaluated once over the whole batch
        (``_match_batch``), so the work grows with distinct queries and items matched, not
        with subscribers."""
        with gc_paused():
            return self._items_by_watchlist(items)

    def _items_by_watchlist(
        self, items: Iterable[tuple[ItemId, str, str]]
    ) -> WatchlistMatches[WatchlistId, ItemId]:
        item_ids, by_query, numbered = self._match_batch(items)
        shared: Iterable[tuple[ItemId, ...]]
        if numbered:  # the indexes are the item ids themselves
            shared = map(tuple, by_query.values())  # type: ignore[arg-type]
        else:
            shared = [
                itemgetter(*indexes)(item_ids) if len(indexes) > 1 else (item_ids[indexes[0]],)
                for indexes in by_query.values()
            ]
        # Per query, not per watchlist: 500,000 watchlists sharing 200,000 matched queries
        # would cost a dict of their own; the view looks a watchlist up through its query
        # (a copy of the memberships, so later changes to the index do not show).
        return WatchlistMatches(
            dict(zip(by_query, shared, strict=True)), self._watchlist_qid.copy()
        )

    def _match_batch(
        self, items: Iterable[tuple[ItemId, str, str]]
    ) -> tuple[list[ItemId], dict[int, Sequence[int]], bool]:
        """Match a batch: item ids by index, per matching query the indexes of the items
        it matches, ascending (queries may share one list: do not modify), and whether
        the item ids are their indexes (0, 1, 2, ...: a day's batch, a backtest). Then
        the caller's own int objects serve as the indexes: the id lists are the index
        lists, and the sets and lists of the batch hold objects allocated together.

        One scan per item records, per term group, the items it occurred in (and those
        with it in the title), and for each pair of groups some NEAR uses, how few words
        apart they came in it (``_record_gaps``). Flat queries are evaluated by plan
        (``_batch_flat``): the items of a plan's start (two required groups intersected,
        one group, or an OR clause's union) are made once, then narrowed per query (its
        other required groups, OR clauses and exclusions). The other queries whose
        triggers occurred are evaluated once each with set operations (``_set_eval``); a
        title:/NEAR query is narrowed the same way, ignoring positions, then a NEAR keeps
        the items where its pair came near enough.
        """
        matcher = self._matcher
        seen = self._seen
        item_ids: list[ItemId] = []
        anywhere: defaultdict[int, list[int]] = defaultdict(list)  # group → items, ascending
        in_title: defaultdict[int, list[int]] = defaultdict(list)  # group → items (title)
        # per pair of groups some NEAR uses (and in the titles alone): the items where both
        # occurred near enough for some NEAR, with the fewest words between them
        gaps: dict[tuple[int, int], dict[int, int]] = {}
        title_gaps: dict[tuple[int, int], dict[int, int]] = {}
        reach = max(self._near_reach, default=-1)
        numbered = True
        # Automaton hits are read in C-level passes, through the values' ids: the keys
        # giving one group straight from a table, the others entry by entry.
        single, other, near, partners = self._hit_tables()
        single_get = single.get
        near_keys = near.keys()
        anywhere_of, in_title_of = anywhere.__getitem__, in_title.__getitem__  # defaultdicts
        for position, (item_id, title, body) in enumerate(items):
            item_ids.append(item_id)
            if item_id.__class__ is int and item_id == position:
                index: int = item_id
            else:
                index = position
                numbered = False
            field, offsets = prepare_many(title, body)
            body_at = offsets[1]
            present: set[int | None] = set()
            titled: set[int | None] = set()
            near_hits: list[tuple[int, Any]] = []
            for hits in matcher.raw_hits(field):
                if not hits:
                    continue
                ids = list(map(id, map(_SECOND, hits)))
                present.update(map(single_get, ids))
                split = bisect_left(hits, body_at, key=_FIRST)  # the title's hits end first
                if split:
                    titled.update(map(single_get, ids[:split]))
                if not other.isdisjoint(ids):
                    spans = matcher.spans_of(field, compress(hits, map(other.__contains__, ids)))
                    present.update(chain.from_iterable([span[1] for span in spans]))
                    titled.update(
                        chain.from_iterable([span[1] for span in spans if span[2] < body_at])
                    )
                if not near_keys.isdisjoint(ids):
                    near_hits.extend(compress(hits, map(near.__contains__, ids)))
            present.discard(None)
            titled.discard(None)
            if near_hits:
                places = _item_places(field, body_at, near_hits, near, present)  # type: ignore[arg-type]
                if len(places) > 1:
                    _record_gaps(places, index, reach, partners, gaps, title_gaps)
            # each group's list gets the item, in C-level passes (None discarded)
            consume(map(_append, map(anywhere_of, present), repeat(index)))  # type: ignore[arg-type]
            consume(map(_append, map(in_title_of, titled), repeat(index)))  # type: ignore[arg-type]
        self._items_seen += len(item_ids)
        for gid, found in anywhere.items():
            seen[gid] += len(found)

        sets = _ItemSets(anywhere, in_title, len(item_ids), gaps, title_gaps)
        by_query, evaluated = _batch_flat(
            self._pair_runs_ready(), self._single_plans, self._or_plans, sets
        )
        queries = self._queries
        for qid in self._trees:
            query = queries[qid]
            triggers = query.triggers
            if triggers is not None:
                for gid in triggers:
                    if gid in anywhere:
                        break
                else:
                    continue
            evaluated += 1
            found_items = _set_eval(query.gtree, sets, None)
            if found_items:
                by_query[qid] = sorted(found_items)
        self.evaluations += evaluated
        return item_ids, by_query, numbered

    def _hit_tables(self) -> _HitTable:
        """How the batch reads the automaton's values (``Matcher.raw_hits``), by the
        ``id`` of each: ``single``, the one group of a key all of whose entries are
        case-insensitive and give that group alone; ``other``, the keys that must be
        read entry by entry (case-sensitive entries, several groups); ``near``, the keys
        of the spellings some NEAR uses; ``partners``, per group some NEAR uses, the
        groups a NEAR pairs it with. Kept while the automata, the payloads and the
        NEAR spellings are unchanged."""
        matcher = self._matcher
        key = (matcher.version, self._near_version)
        cached = self._hit_table
        if cached is None or cached[0] != key:
            single: dict[int, int] = {}
            other: set[int] = set()
            near: dict[int, tuple[_NearUse, ...]] = {}
            near_pids, near_gids = self._near_pids, self._near_gids
            pterm: Mapping[Any, Term] = self._pterm  # the entries' owners are pattern ids
            partners: dict[int, set[int]] = {gid: set() for gid in near_gids}
            for left, right in self._near_pairs:
                partners[left].add(right)
                partners[right].add(left)
            for value in matcher.hit_values():
                bucket = value[0]
                ident = id(value)
                uses = tuple(
                    (
                        entry[0],
                        len(pterm[entry[0]].tokens),
                        gids,
                        entry,
                        frozenset().union(*map(partners.__getitem__, gids)),
                    )
                    for entry in bucket
                    if entry[0] in near_pids
                    for gids in [tuple(gid for gid in entry[1] if gid in near_gids)]
                )
                if uses:
                    near[ident] = uses
                gids = {gid for entry in bucket for gid in entry[1]}
                if any(entry[3] is not None for entry in bucket) or len(gids) > 1:
                    other.add(ident)
                elif gids:
                    single[ident] = gids.pop()
            # (the automata are up to date now: hit_values readied them)
            key = (matcher.version, self._near_version)
            cached = self._hit_table = (key, (single, other, near, partners))
        return cached[1]

    def explain(self, title: str, body: str = "") -> dict[WatchlistId, list[str]]:
        """The watchlists that match one item, each with the words, phrases and NEAR pairs
        that made it match, as query text (alias spellings as found: ``"سی پیک"``)."""
        spans, field, offsets = self._scan(title, body)
        matched = self._evaluate(spans, field, offsets)
        positions = self._positions(spans, field.folded, offsets[1])
        out: dict[WatchlistId, list[str]] = {}
        for qid in matched:
            text = self._queries[qid].text
            tree, pids = self._expand(parse_query(text) if isinstance(text, str) else text)
            hits = {self._pterm[pid]: positions[pid] for pid in pids if pid in positions}
            reasons = explain_query(tree, hits)
            for watchlist_id in self._members[qid]:
                out[watchlist_id] = list(reasons)
        return out


# -- helpers over query trees -----------------------------------------------------------


class WatchlistMatches(Mapping[WatchlistId, tuple[ItemId, ...]], Generic[WatchlistId, ItemId]):
    """What ``WatchlistIndex.items_by_watchlist`` answers: watchlist → the items its query
    matched, for the watchlists that matched something. A read-only view over one tuple
    per distinct query (``by_query``) and the watchlists' queries at the time of the match
    (``query_of``): looking a watchlist up goes through its query."""

    __slots__ = ("by_query", "query_of")

    def __init__(
        self, by_query: dict[int, tuple[ItemId, ...]], query_of: dict[WatchlistId, int]
    ) -> None:
        self.by_query = by_query
        self.query_of = query_of

    def __getitem__(self, watchlist_id: WatchlistId) -> tuple[ItemId, ...]:
        return self.by_query[self.query_of[watchlist_id]]

    def get(self, watchlist_id: WatchlistId, default: Any = None) -> Any:
        qid = self.query_of.get(watchlist_id)
        return default if qid is None else self.by_query.get(qid, default)

    def __contains__(self, watchlist_id: object) -> bool:
        return self.query_of.get(watchlist_id) in self.by_query  # type: ignore[arg-type, operator]

    def __iter__(self) -> Iterator[WatchlistId]:
        matched = self.by_query
        return (watchlist for watchlist, qid in self.query_of.items() if qid in matched)

    def __len__(self) -> int:
        matched = self.by_query
        return sum(1 for qid in self.query_of.values() if qid in matched)

    def __repr__(self) -> str:
        return f"WatchlistMatches({dict(self.items())!r})"


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


def _tree_groups(node: GroupTree) -> Iterable[int]:
    if node.__class__ is int:
        yield node
    elif node[0] == _NEAR:
        yield node[1]
        yield node[2]
    elif node[0] in (_NOT, _TITLE):
        yield from _tree_groups(node[1])
    else:
        for child in node[1]:
            yield from _tree_groups(child)


def _near_nodes(node: GroupTree) -> Iterable[tuple[str, int, int, int]]:
    """Every NEAR of a group tree: ``(tag, left group, right group, distance)``."""
    if node.__class__ is int:
        return
    tag = node[0]
    if tag == _NEAR:
        yield node
    elif tag in (_NOT, _TITLE):
        yield from _near_nodes(node[1])
    else:
        for child in node[1]:
            yield from _near_nodes(child)


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


Occurrence: TypeAlias = tuple[int, int, int]  # start, end (characters), pattern id
_NearSpans: TypeAlias = tuple[dict[int, list[Occurrence]], str, int]  # by group, folded, body


class _Occurrences:
    """Where each term group occurred in one scanned item, computed on demand from the
    automaton's spans: character offsets into the folded text, where the title ends at
    ``body_at``. Words between two occurrences are the spaces between them."""

    __slots__ = ("_by_group", "_by_pattern", "_gpids", "body_at", "folded", "spans")

    def __init__(
        self,
        spans: list[tuple[Any, ...]],
        folded: str,
        body_at: int,
        gpids: dict[int, tuple[int, ...]],
    ) -> None:
        self.spans = spans
        self.folded = folded
        self.body_at = body_at
        self._gpids = gpids
        self._by_pattern: dict[int, list[Occurrence]] | None = None
        self._by_group: dict[int, list[Occurrence]] = {}

    def __call__(self, gid: int) -> list[Occurrence]:
        found = self._by_group.get(gid)
        if found is None:
            by_pattern = self._by_pattern
            if by_pattern is None:
                by_pattern = self._by_pattern = {}
                for pid, _, start, end in self.spans:
                    known = by_pattern.get(pid)
                    if known is None:
                        by_pattern[pid] = [(start, end, pid)]
                    else:
                        known.append((start, end, pid))
            found = [o for pid in self._gpids[gid] for o in by_pattern.get(pid, ())]
            self._by_group[gid] = found
        return found

    def in_title(self, gid: int) -> bool:
        body_at = self.body_at
        return any(start < body_at for start, _, _ in self(gid))

    def near(self, left: int, right: int, distance: int, scope: str | None) -> bool:
        return _near_ok(self(left), self(right), distance, scope, self.folded, self.body_at)


def _near_ok(
    lefts: list[Occurrence],
    rights: list[Occurrence],
    distance: int,
    scope: str | None,
    folded: str,
    body_at: int,
) -> bool:
    """NEAR over every spelling of both sides, exactly as ``query.evaluate`` decides it on
    the alias-expanded query (an OR of NEARs over pairs of spellings): two occurrences in
    the same field with at most ``distance`` words between them (overlapping ones count);
    the same spelling on both sides needs two different occurrences of it. Occurrences
    are character spans of ``folded``, whose body starts at ``body_at``; the words between
    two spans are the spaces between them."""
    count = folded.count
    for start, end, pid in lefts:
        titled = start < body_at
        if scope is not None and not titled:
            continue
        for other_start, other_end, other_pid in rights:
            if (other_start < body_at) is not titled or (other_pid == pid and other_start == start):
                continue
            if other_start >= start:
                gap = count(" ", end, other_start) if other_start >= end else -1
            else:
                gap = count(" ", other_end, start) if start >= other_end else -1
            if gap <= distance:
                return True
    return False


def _positional_ok(node: GroupTree, occurrences: _Occurrences, scope: str | None) -> bool:
    if node.__class__ is int:
        return bool(occurrences(node)) if scope is None else occurrences.in_title(node)
    tag = node[0]
    if tag == _AND:
        return all(_positional_ok(child, occurrences, scope) for child in node[1])
    if tag == _OR:
        return any(_positional_ok(child, occurrences, scope) for child in node[1])
    if tag == _NOT:
        return not _positional_ok(node[1], occurrences, scope)
    if tag == _TITLE:
        return _positional_ok(node[1], occurrences, "title")
    _, left, right, distance = node
    return occurrences.near(left, right, distance, scope)


# where a spelling some NEAR uses occurred: the word it starts at, the word past its end,
# whether in the title, the spelling, the groups some NEAR uses that hold it, and the
# groups a NEAR pairs any of those with
_Place: TypeAlias = tuple[int, int, bool, int, tuple[int, ...], frozenset[int]]


def _item_places(
    field: ScanField,
    body_at: int,
    hits: list[tuple[int, Any]],
    near: dict[int, tuple[_NearUse, ...]],
    present: set[int],
) -> list[_Place]:
    """Where the spellings some NEAR uses occurred in one item, in word order, from its
    hits of NEAR spellings (``raw_hits``) and the table of those spellings' keys: only
    those of groups a NEAR pairs with a group ``present`` in the item too."""
    places: list[_Place] = []
    count = field.folded.count
    for end_index, value in hits:
        start = end_index - value[1]  # the key's leading space
        for pid, size, gids, entry, partners in near[id(value)]:
            if partners.isdisjoint(present):
                continue  # no partner occurred: nothing to pair it with
            wanted = entry[3]  # the cased words of a case-sensitive term
            if wanted is not None and not case_ok(field, start, wanted, entry[2], entry[4]):
                continue
            first = count(" ", 0, start)  # the word it starts at
            places.append((first, first + size, start < body_at, pid, gids, partners))
    places.sort(key=_FIRST)
    return places


def _record_gaps(
    places: list[_Place],
    index: int,
    reach: int,
    partners: Mapping[int, set[int]],
    gaps: dict[tuple[int, int], dict[int, int]],
    title_gaps: dict[tuple[int, int], dict[int, int]],
) -> None:
    """For each pair of groups some NEAR uses (``partners``: group → the groups a NEAR
    pairs it with), the fewest words between two different occurrences of them in one
    field of item ``index`` (negative when they overlap), as ``_near_ok`` measures it,
    when at most ``reach`` (the largest NEAR distance): into ``gaps[pair][index]``, and
    into ``title_gaps`` for the title alone. Each place (``_item_places``: only groups a
    partner of which occurred) is paired with the places within ``reach`` words after it."""
    for at, (first, end, titled, pid, gids, _) in enumerate(places, 1):
        limit = end + reach
        for other_first, _, other_titled, other_pid, other_gids, _ in places[at:]:
            if other_first > limit or other_titled is not titled:
                break  # later places are further, or in the body past this title's end
            if other_first == first and other_pid == pid:
                continue  # the same occurrence
            gap = other_first - end
            for gid in gids:
                near = partners[gid]
                for other in other_gids:
                    if other not in near:
                        continue
                    pair = (gid, other) if gid <= other else (other, gid)
                    for table in (gaps, title_gaps) if titled else (gaps,):
                        found = table.get(pair)
                        if found is None:
                            table[pair] = {index: gap}
                        elif gap < found.get(index, _NO_GAP):
                            found[index] = gap


def _rest(
    more: tuple[int, ...], anyof: tuple[tuple[int, ...], ...], excluded: tuple[int, ...]
) -> Rest:
    """What a flat query checks after its plan's start (``Rest``)."""
    if not anyof:
        if not excluded:
            if not more:
                return None
            if len(more) == 1:
                return (_ONE_MORE, more[0], None)
        elif not more and len(excluded) <= 2:
            if len(excluded) == 1:
                return (_LESS_ONE, excluded[0], None)
            return (_LESS_TWO, excluded[0], excluded[1])
    elif not more and not excluded and len(anyof) == 1 and len(anyof[0]) == 2:
        return (_EITHER, anyof[0][0], anyof[0][1])
    return (_GENERAL, (more, anyof, excluded), None)


class _ItemSets:
    """A batch's item sets per group, and per pair of groups some NEAR uses the items
    where they came near enough for some NEAR with the fewest words between them
    (``gaps``; ``title_gaps`` for the titles alone)."""

    __slots__ = ("_in_title", "_titles", "gaps", "lists", "sets", "size", "title_gaps")

    def __init__(
        self,
        anywhere: Mapping[int, list[int]],
        in_title: Mapping[int, list[int]],
        size: int,
        gaps: dict[tuple[int, int], dict[int, int]],
        title_gaps: dict[tuple[int, int], dict[int, int]],
    ) -> None:
        self._in_title = in_title
        self.lists = anywhere  # group → its items, ascending
        self.sets = {gid: set(items) for gid, items in anywhere.items()}
        self._titles: dict[int, set[int]] = {}
        self.size = size
        self.gaps = gaps
        self.title_gaps = title_gaps

    def anywhere(self, gid: int) -> set[int]:
        """Items holding ``gid`` (do not modify)."""
        return self.sets.get(gid, _EMPTY)

    def title(self, gid: int) -> set[int]:
        found = self._titles.get(gid)
        if found is None:
            found = self._titles[gid] = set(self._in_title.get(gid, ()))
        return found

    def universe(self) -> set[int]:
        return set(range(self.size))


_EMPTY: set[int] = set()  # never modified


def _batch_flat(
    pair_runs: dict[int, _PairRun],
    single_plans: dict[int, list[PlanEntry]],
    or_plans: dict[tuple[int, ...], list[PlanEntry]],
    sets: _ItemSets,
) -> tuple[dict[int, Sequence[int]], int]:
    """The flat queries of a batch that match something → their items (ascending
    indexes; queries of one plan with nothing else to check share one list), and how many
    queries were evaluated. A plan whose start is empty costs one look-up for all its
    queries; otherwise its start is made once, then narrowed per query."""
    get = sets.sets.get
    out: dict[int, Sequence[int]] = {}
    evaluated = 0
    for a, (seconds, qids, other_seconds, others) in pair_runs.items():
        first = get(a)
        if first is None:
            continue
        if seconds:  # one C-level pass: intersect, keep the non-empty ones, sort them
            evaluated += len(seconds)
            bases = list(map(first.__and__, map(get, seconds, repeat(_EMPTY))))
            out.update(zip(compress(qids, bases), map(sorted, filter(None, bases)), strict=True))
        if other_seconds:  # the pairs' items in one C-level pass, then the non-empty ones
            bases = list(map(first.__and__, map(get, other_seconds, repeat(_EMPTY))))
            for base, entries in compress(zip(bases, others, strict=True), bases):
                evaluated += len(entries)
                if len(entries) == 1 and entries[0][1] is None:
                    out[entries[0][0]] = sorted(base)
                else:
                    _narrow(entries, base, None, get, out)
    for a, entries in single_plans.items():
        first = get(a)
        if first is not None:
            evaluated += len(entries)
            _narrow(entries, first, sets.lists[a], get, out)
    for clause, entries in or_plans.items():
        base = set().union(*[found for found in map(get, clause) if found is not None])
        if base:
            evaluated += len(entries)
            _narrow(entries, base, None, get, out)
    return out, evaluated


def _narrow(
    entries: list[PlanEntry],
    base: set[int],
    ordered: Sequence[int] | None,
    get: Any,
    out: dict[int, Sequence[int]],
) -> None:
    """Each query of a plan: ``base`` (the plan's items; ``ordered``: the same, ascending,
    when at hand) narrowed by its other required groups, OR clauses and exclusions
    (``Rest``). ``base`` is never changed; queries left with all of it share one list."""
    for qid, rest in entries:
        if rest is not None:
            kind, x, y = rest
            if kind == _ONE_MORE:
                found = get(x)
                if found is not None:
                    result = base & found
                    if result:
                        out[qid] = sorted(result)
                continue
            if kind == _LESS_ONE:
                found = get(x)
                if found is not None:
                    result = base - found
                    if result:
                        out[qid] = sorted(result)
                    continue
            elif kind == _LESS_TWO:
                result = base.difference(get(x, _EMPTY), get(y, _EMPTY))
                if result:
                    out[qid] = sorted(result)
                continue
            elif kind == _EITHER:
                result = base & get(x, _EMPTY)
                found = get(y)
                if found is not None:
                    result |= base & found
                if result:
                    out[qid] = sorted(result)
                continue
            else:
                _narrow_general(qid, x, base, get, out)
                continue
        if ordered is None:  # nothing else to check, or an excluded group that is absent
            ordered = sorted(base)
        out[qid] = ordered


def _narrow_general(
    qid: int,
    rest: tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...]],
    base: set[int],
    get: Any,
    out: dict[int, Sequence[int]],
) -> None:
    more, clauses, excluded = rest
    result = base
    if more:
        required = [*map(get, more)]
        if None in required:  # a required group did not occur
            return
        result = result.intersection(*required)  # each walks the smaller side
        if not result:
            return
    for clause in clauses:
        result = set().union(*[result & found for found in map(get, clause) if found])
        if not result:
            return
    if excluded:
        result = result.difference(*[found for found in map(get, excluded) if found])
    if result:
        out[qid] = sorted(result)


_NO_GAP = 1 << 30  # no two occurrences in one field


def _near_pair(
    sets: _ItemSets,
    left: int,
    right: int,
    distance: int,
    title_only: bool,
    within: set[int] | None,
) -> set[int]:
    """The items (among ``within`` when given) where groups ``left`` NEAR/distance
    ``right`` holds, from the recorded gaps alone: the scan records a pair's gap only for
    items where both groups occurred (in the title, for ``title_gaps``), so the two
    groups' items need no intersecting first."""
    if distance < -1:
        return set()  # even overlapping occurrences are -1 apart
    pair = (left, right) if left <= right else (right, left)
    gaps = (sets.title_gaps if title_only else sets.gaps).get(pair)
    if not gaps:
        return set()
    if within is None:
        return {index for index, gap in gaps.items() if gap <= distance}
    if len(within) < len(gaps):
        known = gaps.get
        return {index for index in within if known(index, _NO_GAP) <= distance}
    return {index for index, gap in gaps.items() if gap <= distance and index in within}


def _set_eval(
    node: GroupTree, sets: _ItemSets, scope: str | None, within: set[int] | None = None
) -> set[int]:
    """The items of a batch a group tree matches, among ``within`` when given. Do not
    modify the result: it may be a group's own set. ``scope`` is "title" inside
    ``title:``. An AND evaluates each operand only among the items left by the ones before
    it: its smallest plain operand, then the others without NEAR, then the other plain
    operands, then those with NEAR."""
    if node.__class__ is int:
        found = sets.title(node) if scope is not None else sets.anywhere(node)
        return found if within is None else found & within
    tag = node[0]
    if tag == _TITLE:
        return _set_eval(node[1], sets, "title", within)
    if tag == _NEAR:  # its sides are single terms: groups (see _group_tree)
        _, left, right, distance = node
        return _near_pair(sets, left, right, distance, scope is not None, within)
    if tag == _OR:
        return set().union(*[_set_eval(child, sets, scope, within) for child in node[1]])
    if tag == _NOT:
        return (within if within is not None else sets.universe()) - _set_eval(
            node[1], sets, scope, within
        )
    plain: list[set[int]] = []
    cheap: list[GroupTree] = []
    costly: list[GroupTree] = []  # with a NEAR
    negative: list[GroupTree] = []
    for child in node[1]:
        if child.__class__ is int:
            plain.append(sets.title(child) if scope is not None else sets.anywhere(child))
        elif child[0] == _NOT:
            negative.append(child[1])
        else:
            (costly if _is_costly(child) else cheap).append(child)
    if within is not None:
        plain.append(within)
    result: set[int] | None = None
    if plain:  # shared sets: never changed in place below
        plain.sort(key=len)
        result = plain.pop(0)
    # The operands without NEAR (e.g. ``title:`` ones, whose items are few) go first,
    # among the smallest plain operand's items: the other plain operands (often common
    # words) then intersect what is left; NEAR last, on the fewest items.
    for child in cheap:
        if result is not None and not result:
            return result
        result = _set_eval(child, sets, scope, result)
    if plain and result is not None:
        result = result.intersection(*plain)
    for child in costly:
        if result is not None and not result:
            return result
        result = _set_eval(child, sets, scope, result)
    if result is None:
        result = sets.universe()
    for child in negative:
        if not result:
            return result
        result = result - _set_eval(child, sets, scope, result)
    return result


def _is_costly(node: GroupTree) -> bool:
    """Whether evaluating ``node`` checks positions item by item (it holds a NEAR)."""
    if node.__class__ is int:
        return False
    tag = node[0]
    if tag == _NEAR:
        return True
    if tag in (_NOT, _TITLE):
        return _is_costly(node[1])
    return any(_is_costly(child) for child in node[1])


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


def consume(iterator: Iterator[Any]) -> None:
    """Run an iterator to its end (its items dropped), in C."""
    deque(iterator, maxlen=0)


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
    query_get: Any = None
    found_get: Any = by_watchlist.get
    if isinstance(by_watchlist, WatchlistMatches):
        # two C-level look-ups per watchlist: its query, then the query's items
        query_get, found_get = by_watchlist.query_of.get, by_watchlist.by_query.get
    with gc_paused():
        for subscriber, watchlist_ids in watchlists_of.items():
            keys: Iterable[Any] = watchlist_ids
            if query_get is not None:
                keys = map(query_get, watchlist_ids)
            found = list(filter(None, map(found_get, keys)))  # C-level: no empty lists
            if not found:
                continue
            if len(found) == 1:
                out[subscriber] = list(found[0])
            else:
                out[subscriber] = list(dict.fromkeys(chain.from_iterable(found)))
    return out
