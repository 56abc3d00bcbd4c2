"""Watchlist queries: parse a query into an immutable tree, then decide matches from hits.

The syntax follows Google Alerts and media-monitoring tools (``docs/watchlists.md`` is the
user's guide):

- ``IMF loan`` both words (implicit AND; ``AND`` may be written, it changes nothing);
  ``"exact phrase"``; ``F-16`` is the phrase "F 16" because words split on punctuation
  exactly as item text does (``pipeline.core.text``), so it matches "F-16" and "F 16".
- ``loan OR bailout`` (also ``|``). OR binds tighter than the implicit AND, as in Google:
  ``IMF loan OR bailout`` means IMF AND (loan OR bailout). Parentheses group.
- ``-Egypt``, ``-"New Delhi"``, ``-(cricket OR hockey)``, or ``NOT Egypt``: each negates
  the one operand that follows. A query needs at least one positive term, and so does
  every alternative of an OR (``a OR -b`` would match almost everything).
- ``sanction*``: a trailing wildcard on the last word, at least 3 letters before the ``*``.
- ``"drone strike" NEAR/10 Waziristan``: both, in either order, in the same field, with at
  most 10 other words between them. NEAR joins exactly two words or phrases and binds
  tighter than OR. (Chosen over Lucene's ``"a b"~5`` because alert users know NEAR/n and it
  works between two different phrases.)
- ``title:IMF``, ``title:"World Bank"``, ``title:(CPEC OR Gwadar)`` (``intitle:`` too):
  only the headline counts.
- Case: a word or phrase written in capitals whose words have at most three letters
  (``US``, ``ISI``, ``PM``, ``U.S.``, ``PML-N``) matches only where the text has those
  capitals, so ``US`` never matches "us" and ``PM`` never "pm". Write it in lower case
  (``us``) to match any case. Everything else ignores case, accents and Urdu spelling
  variants, folded by ``pipeline.core.text`` exactly like item text.
- Uppercase ``OR``, ``AND``, ``NOT``, ``NEAR/n`` are operators; in lower case, or in quotes
  (``"OR"``), they are words.

The parser is a small hand-written recursive descent parser. A lark grammar was tried
first: it reported an unclosed ``(`` at the end of the input rather than at the
parenthesis, confused the keyword ``OR`` with the word "OR" (``a OR OR b`` parsed), and its
errors carry no context for messages like "expected a term after OR"; mapping its generic
exceptions back to messages a reader can act on would have cost more code than the parser.
No regular expression is ever built from user input, and evaluation is linear in the
number of hits, which is at most linear in the item's size.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pipeline.core.errors import QueryError
from pipeline.core.text import Token, fold_surface, tokenize

# Limits that keep one subscriber's query from costing everyone else.
MAX_QUERY_LENGTH = 500  # characters
MAX_TERMS = 50  # words and phrases, counted each time they appear
MAX_DEPTH = 10  # nested parentheses, negations and title: scopes
MAX_NEAR_DISTANCE = 50  # words between the two sides of NEAR/n
MIN_PREFIX_LENGTH = 3  # letters before a trailing *, so "a*" cannot match half the text
CASE_SENSITIVE_MAX_LETTERS = 3  # capital words up to this long are acronyms: US, ISI, PM

FieldName = Literal["title", "body"]


class Hit(NamedTuple):
    """Where a term occurs: the field and the token position of the term's first word."""

    field: FieldName
    position: int


# --- the tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase (a phrase is a Term of several tokens).

    ``tokens`` are folded exactly like item text. ``prefix`` makes the last token a word
    prefix (``sanction*``). ``case_sensitive`` terms must also match ``surface``, the
    cased words as written; otherwise ``surface`` is only for display, and two terms are
    the same term when they match the same text (it is left out of equality).
    """

    tokens: tuple[str, ...]
    prefix: bool = False
    case_sensitive: bool = False
    surface: tuple[str, ...] = dataclasses.field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Query


@dataclass(frozen=True, slots=True)
class Near:
    """Both terms in the same field, in either order, at most ``distance`` words apart."""

    left: Term
    right: Term
    distance: int


@dataclass(frozen=True, slots=True)
class Field:
    """``child`` evaluated on one field only (``title:``)."""

    name: Literal["title"]
    child: Query


Query = Term | And | Or | Not | Near | Field


# --- lexing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # WORD PHRASE LPAREN RPAREN OR AND NOT NEAR MINUS FIELD EOF
    start: int  # 0-based offsets into the query
    end: int
    text: str = ""
    distance: int = 0


_KEYWORDS = {"OR": "OR", "AND": "AND", "NOT": "NOT"}
_FIELD_PREFIXES = ("title", "intitle")
_OPERAND_START = {"WORD", "PHRASE", "LPAREN", "MINUS", "NOT", "FIELD"}
_AFTER_MINUS = {"WORD", "PHRASE", "LPAREN", "MINUS", "FIELD"}


def _error(query: str, offset: int, message: str, expected: str) -> QueryError:
    return QueryError(query, offset + 1, message, expected)


# The end of a word in an ASCII query (``ends_word``): white space (str.isspace, which
# the pattern's \s is for str), a quote, a bracket or a bar.
_PLAIN_WORD_END = re.compile(r'[\s"()|]')


def _lex(query: str) -> list[_Tok]:
    # Classify each character by its folded form so curly quotes, fullwidth brackets and
    # typographic minus signs work like their plain forms, while offsets stay those of the
    # text the user typed.
    n = len(query)
    plain = query.isascii()  # most queries: every character is its own folded form
    folded = list(query) if plain else [fold_surface(ch) for ch in query]

    def ends_word(i: int) -> bool:
        return query[i].isspace() or folded[i] in ('"', "(", ")", "|") or folded[i].isspace()

    tokens: list[_Tok] = []
    i = 0
    at_word_start = True
    while i < n:
        ch = folded[i]
        if query[i].isspace() or ch.isspace():
            i += 1
            at_word_start = True
            continue
        if ch in ("(", ")", "|"):
            kind = {"(": "LPAREN", ")": "RPAREN", "|": "OR"}[ch]
            tokens.append(_Tok(kind, i, i + 1, query[i]))
            i += 1
            at_word_start = True
            continue
        if ch == '"':
            close = next((j for j in range(i + 1, n) if folded[j] == '"'), -1)
            if close < 0:
                raise _error(query, i, "unclosed quote", 'a closing "')
            tokens.append(_Tok("PHRASE", i, close + 1, query[i + 1 : close]))
            i = close + 1
            at_word_start = True
            continue
        if ch == "-" and at_word_start:
            tokens.append(_Tok("MINUS", i, i + 1, query[i]))
            i += 1
            continue
        if plain:  # what ends_word finds, in one search in C
            found = _PLAIN_WORD_END.search(query, i)
            j = found.start() if found else n
        else:
            j = i
            while j < n and not ends_word(j):
                j += 1
        chunk = query[i:j]
        word = chunk if plain else "".join(folded[i:j])
        if plain:
            colon = chunk.find(":")
            colon = colon + i if colon >= 0 else -1
        else:
            colon = next((k for k in range(i, j) if folded[k] == ":"), -1)
        if colon > i and "".join(folded[i:colon]).casefold() in _FIELD_PREFIXES:
            # The prefix may be followed directly by a phrase or group: cut it here.
            end = colon + 1
            tokens.append(_Tok("FIELD", i, end, query[i:end]))
            i = end
            at_word_start = True
            continue
        if word in _KEYWORDS:
            tokens.append(_Tok(_KEYWORDS[word], i, j, chunk))
        elif word == "NEAR" or word.upper().startswith("NEAR/"):
            tokens.append(_near_token(query, i, j, word))
        else:
            tokens.append(_Tok("WORD", i, j, chunk))
        i = j
        at_word_start = True
    tokens.append(_Tok("EOF", n, n))
    return tokens


def _near_token(query: str, start: int, end: int, word: str) -> _Tok:
    digits = word[5:]
    if not (digits.isascii() and digits.isdigit()):
        raise _error(query, start, "NEAR needs a distance like NEAR/5", "NEAR/n")
    distance = int(digits)
    if not 1 <= distance <= MAX_NEAR_DISTANCE:
        raise _error(
            query,
            start,
            f"NEAR distance must be between 1 and {MAX_NEAR_DISTANCE}",
            f"NEAR/1 to NEAR/{MAX_NEAR_DISTANCE}",
        )
    return _Tok("NEAR", start, end, query[start:end], distance)


# --- terms ----------------------------------------------------------------------------


def _is_cased(ch: str) -> bool:
    return ch.islower() or ch.isupper() or ch.lower() != ch.upper()


def _is_case_sensitive(surface: tuple[str, ...]) -> bool:
    """Capital acronyms (US, ISI, PM, U.S., PML-N) are case-sensitive; see module doc.

    Only ASCII capitals qualify, so the cased form is fixed by the folded tokens and
    leaving ``surface`` out of Term equality is sound.
    """
    has_capital = False
    for word in surface:
        if word.isascii():  # the letters are the cased characters: no per-character pass
            if word.upper() == word.lower():
                continue  # no letter: "16" in F-16
            if len(word) > CASE_SENSITIVE_MAX_LETTERS or not word.isupper():
                return False
            has_capital = True
            continue
        cased = [ch for ch in word if _is_cased(ch)]
        if not cased:
            continue  # "16" in F-16, or an Urdu word: no case either way
        if len(word) > CASE_SENSITIVE_MAX_LETTERS or not all("A" <= ch <= "Z" for ch in cased):
            return False
        has_capital = True
    return has_capital


def _make_term(query: str, text: str, offset: int, quoted: bool) -> Term:
    """A Term from the raw ``text`` of a word or phrase found at ``offset`` in ``query``."""
    prefix = text.endswith("*")
    stem = text[:-1] if prefix else text
    star = stem.find("*")
    if star >= 0:
        raise _error(
            query, offset + star, "* is only allowed at the end of a word", "a letter or digit"
        )
    words: list[Token] = tokenize(stem)
    if prefix and (not words or len(words[-1].text) < MIN_PREFIX_LENGTH):
        raise _error(
            query,
            offset + len(text) - 1,
            f"a wildcard needs at least {MIN_PREFIX_LENGTH} letters before *",
            "more letters before *",
        )
    if not words:
        if quoted:
            raise _error(query, offset - 1, "nothing to search for in the quotes", "a word")
        raise _error(query, offset, f"{text!r} has no letters or digits to search for", "a word")
    surface = tuple(word.surface for word in words)
    return Term(
        tokens=tuple(word.text for word in words),
        prefix=prefix,
        case_sensitive=_is_case_sensitive(surface),
        surface=surface,
    )


def parse_term(text: str) -> Term:
    """One word or phrase, folded and classified exactly as in a query (no operators).

    For callers that hold plain terms (theme lexicons, aliases). Raises QueryError.
    """
    return _make_term(text, text, 0, quoted=True)


# --- parsing --------------------------------------------------------------------------


def _is_positive(node: Query) -> bool:
    """Whether ``node`` can only match when some word or phrase is present."""
    match node:
        case Term() | Near():
            return True
        case Not():
            return False
        case Field(child=child):
            return _is_positive(child)
        case And(children=children):
            return any(_is_positive(c) for c in children)
        case Or(children=children):
            return all(_is_positive(c) for c in children)


def _join(kind: type[And] | type[Or], children: list[Query]) -> Query:
    # Flatten so a tree has one canonical shape: a (b c) is And(a, b, c).
    flat: list[Query] = []
    for child in children:
        flat.extend(child.children if isinstance(child, kind) else (child,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


class _Parser:
    """Grammar, loosest first::

    query   := and EOF
    and     := or ( ["AND"] or )*
    or      := unary ( ("OR" | "|") unary )*
    unary   := "-" unary | "NOT" unary | near          ("-" written against its operand)
    near    := primary [ "NEAR/n" primary ]            (both primaries words or phrases)
    primary := WORD | PHRASE | "(" and ")" | "title:" primary
    """

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _lex(query)
        self.pos = 0
        self.terms = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def advance(self) -> _Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def error(self, where: _Tok | int, message: str, expected: str) -> QueryError:
        offset = where.start if isinstance(where, _Tok) else where
        return _error(self.query, offset, message, expected)

    def check_depth(self, depth: int, tok: _Tok) -> None:
        if depth > MAX_DEPTH:
            raise self.error(
                tok, f"too deeply nested (at most {MAX_DEPTH} levels)", "a flatter query"
            )

    def parse(self) -> Query:
        node = self.parse_and(0, None)
        if not _is_positive(node):
            raise self.error(
                0, "a query needs at least one positive term", "a word that must appear"
            )
        return node

    def parse_and(self, depth: int, group: _Tok | None) -> Query:
        children: list[Query] = []
        while True:
            tok = self.peek()
            if tok.kind == "EOF":
                if group is not None:
                    raise self.error(group, 'unclosed "("', '")"')
                break
            if tok.kind == "RPAREN":
                if group is None:
                    raise self.error(tok, 'unbalanced ")"', 'an opening "(" before it')
                break
            if tok.kind == "AND":
                if not children:
                    raise self.error(tok, "expected a term before AND", "a term")
                self.advance()
                if self.peek().kind not in _OPERAND_START:
                    raise self.error(self.peek(), "expected a term after AND", "a term")
                continue
            if tok.kind in ("OR", "NEAR"):
                raise self.error(tok, f"expected a term before {tok.text}", "a term")
            children.append(self.parse_or(depth))
        if not children:
            if group is not None:
                raise self.error(group, "empty parentheses", "a term inside ( )")
            raise self.error(0, "the query is empty", "a term")
        return _join(And, children)

    def parse_or(self, depth: int) -> Query:
        starts = [self.peek()]
        alternatives = [self.parse_unary(depth)]
        while self.peek().kind == "OR":
            op = self.advance()
            if self.peek().kind not in _OPERAND_START:
                raise self.error(self.peek(), f"expected a term after {op.text}", "a term")
            starts.append(self.peek())
            alternatives.append(self.parse_unary(depth))
        if len(alternatives) > 1:
            for start, alternative in zip(starts, alternatives, strict=True):
                if not _is_positive(alternative):
                    raise self.error(
                        start, "each side of OR needs a positive term", "a word that must appear"
                    )
        return _join(Or, alternatives)

    def parse_unary(self, depth: int) -> Query:
        tok = self.peek()
        if tok.kind not in ("MINUS", "NOT"):
            return self.parse_near(depth)
        self.check_depth(depth + 1, tok)
        self.advance()
        nxt = self.peek()
        if tok.kind == "MINUS":
            if nxt.start != tok.end or nxt.kind not in _AFTER_MINUS:
                raise self.error(tok.end, "expected a word, phrase or ( right after -", "a term")
        elif nxt.kind not in _OPERAND_START:
            raise self.error(nxt, "expected a term after NOT", "a term")
        return Not(self.parse_unary(depth + 1))

    def parse_near(self, depth: int) -> Query:
        left = self.parse_primary(depth)
        if self.peek().kind != "NEAR":
            return left
        near = self.advance()
        if not isinstance(left, Term):
            raise self.error(
                near,
                "NEAR needs a word or phrase on its left (scope it as title:(a NEAR/5 b))",
                "a word or phrase",
            )
        if self.peek().kind not in ("WORD", "PHRASE"):
            raise self.error(
                self.peek(), f"expected a word or phrase after {near.text}", "a word or phrase"
            )
        right = self.parse_primary(depth)
        assert isinstance(right, Term)  # WORD and PHRASE always give a Term
        if self.peek().kind == "NEAR":
            raise self.error(
                self.peek(), "NEAR joins only two words or phrases", "AND, OR or the end"
            )
        return Near(left, right, near.distance)

    def parse_primary(self, depth: int) -> Query:
        tok = self.advance()
        if tok.kind in ("WORD", "PHRASE"):
            self.terms += 1
            if self.terms > MAX_TERMS:
                raise self.error(tok, f"too many terms (at most {MAX_TERMS})", "fewer terms")
            if tok.kind == "WORD":
                return _make_term(self.query, tok.text, tok.start, quoted=False)
            return _make_term(self.query, tok.text, tok.start + 1, quoted=True)
        if tok.kind == "LPAREN":
            self.check_depth(depth + 1, tok)
            inner = self.parse_and(depth + 1, tok)
            self.advance()  # the ")" that parse_and stopped at
            return inner
        if tok.kind == "FIELD":
            self.check_depth(depth + 1, tok)
            nxt = self.peek()
            if nxt.start != tok.end or nxt.kind not in ("WORD", "PHRASE", "LPAREN"):
                raise self.error(
                    tok.end, "expected a word, phrase or ( right after title:", "a term"
                )
            child = self.parse_primary(depth + 1)
            # title:(title:x) is title:x; collapsing keeps one tree per meaning.
            return child if isinstance(child, Field) else Field("title", child)
        raise AssertionError(f"parse_primary called on {tok.kind}")  # callers check first


def parse_query(text: str) -> Query:
    """Parse a watchlist query (syntax in the module docstring).

    Raises QueryError with a 1-based ``column`` and what was ``expected``; never anything
    else, whatever the input.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise _error(
            text,
            MAX_QUERY_LENGTH,
            f"the query is too long ({len(text)} characters, at most {MAX_QUERY_LENGTH})",
            "a shorter query",
        )
    query = _Parser(text).parse()
    # The canonical form can be longer than what was typed ("|" → " OR ", F-16 → "F 16");
    # refusing here keeps every accepted query's printed form parseable too.
    printed = len(format_query(query))
    if printed > MAX_QUERY_LENGTH:
        raise _error(
            text,
            min(len(text), MAX_QUERY_LENGTH),
            f"the query is too long ({printed} characters written out in full,"
            f" at most {MAX_QUERY_LENGTH})",
            "a shorter query",
        )
    return query


# --- printing -------------------------------------------------------------------------


def _format_term(term: Term) -> str:
    words = term.surface or term.tokens
    star = "*" if term.prefix else ""
    if len(words) == 1 and words[0] not in ("OR", "AND", "NOT", "NEAR"):
        return words[0] + star
    return '"' + " ".join(words) + star + '"'


def _format_operand(node: Query) -> str:
    """``node`` as the operand of - or title:, which take one primary."""
    if isinstance(node, Term | Not | Field):
        return format_query(node)
    return "(" + format_query(node) + ")"


def format_query(q: Query) -> str:
    """Canonical text of ``q``: ``parse_query(format_query(q)) == q`` for parsed trees."""
    match q:
        case Term():
            return _format_term(q)
        case And(children=children):
            return " ".join(
                "(" + format_query(c) + ")" if isinstance(c, And) else format_query(c)
                for c in children
            )
        case Or(children=children):
            return " OR ".join(
                "(" + format_query(c) + ")" if isinstance(c, And | Or) else format_query(c)
                for c in children
            )
        case Not(child=child):
            return "-" + _format_operand(child)
        case Near(left=left, right=right, distance=distance):
            return f"{_format_term(left)} NEAR/{distance} {_format_term(right)}"
        case Field(name=name, child=child):
            return f"{name}:" + _format_operand(child)


# --- evaluation -----------------------------------------------------------------------


def _walk_terms(node: Query) -> Iterator[Term]:
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


def query_terms(q: Query) -> list[Term]:
    """Every distinct Term of ``q``, negated ones included, in order of appearance.

    The matcher registers these; ``evaluate`` needs hits for all of them.
    """
    return list(dict.fromkeys(_walk_terms(q)))


HitMap = Mapping[Term, Sequence[Hit]]


def _fields(scope: FieldName | None) -> tuple[FieldName, ...]:
    return ("title", "body") if scope is None else (scope,)


def _term_found(term: Term, hits: HitMap, scope: FieldName | None) -> bool:
    return any(scope is None or field == scope for field, _ in hits.get(term, ()))


def _positions(term: Term, hits: HitMap, field: FieldName) -> list[int]:
    return sorted({position for f, position in hits.get(term, ()) if f == field})


def _near_found(near: Near, hits: HitMap, scope: FieldName | None) -> bool:
    lengths = (len(near.left.tokens), len(near.right.tokens))
    for field in _fields(scope):
        left = _positions(near.left, hits, field)
        if near.left == near.right:
            # The same term on both sides needs two occurrences, not one counted twice.
            if any(b - (a + lengths[0]) <= near.distance for a, b in itertools.pairwise(left)):
                return True
            continue
        right = _positions(near.right, hits, field)
        # One sweep over both sorted lists: each occurrence is compared with the nearest
        # earlier occurrence of the other side, which has the latest end (lengths are fixed
        # per side). Overlapping occurrences count as near.
        last_end: list[int | None] = [None, None]
        events = heapq.merge(((p, 0) for p in left), ((p, 1) for p in right))
        for position, side in events:
            other_end = last_end[1 - side]
            if other_end is not None and position - other_end <= near.distance:
                return True
            last_end[side] = position + lengths[side]
    return False


def _evaluate(node: Query, hits: HitMap, scope: FieldName | None) -> bool:
    match node:
        case Term():
            return _term_found(node, hits, scope)
        case And(children=children):
            return all(_evaluate(c, hits, scope) for c in children)
        case Or(children=children):
            return any(_evaluate(c, hits, scope) for c in children)
        case Not(child=child):
            return not _evaluate(child, hits, scope)
        case Near():
            return _near_found(node, hits, scope)
        case Field(name=name, child=child):
            return _evaluate(child, hits, name)


def evaluate(q: Query, hits: HitMap) -> bool:
    """Whether an item matches ``q``, given where each of ``query_terms(q)`` occurred.

    ``hits[term]`` lists ``(field, position)`` pairs, position being the token index of
    the term's first word in that field; a missing term has no hits.
    """
    return _evaluate(q, hits, None)


def _explain(node: Query, hits: HitMap, scope: FieldName | None, out: list[str]) -> None:
    match node:
        case Term() | Near():
            if _evaluate(node, hits, scope):
                out.append(format_query(Field("title", node) if scope else node))
        case And(children=children) | Or(children=children):
            for child in children:
                if _evaluate(child, hits, scope):
                    _explain(child, hits, scope, out)
        case Field(name=name, child=child):
            _explain(child, hits, name, out)
        case Not():
            pass  # an absent word is not a reason worth showing


def explain(q: Query, hits: HitMap) -> list[str]:
    """The words, phrases and NEAR pairs that made ``q`` match, as query text
    (``title:CPEC``, ``"drone strike" NEAR/10 waziristan``); empty when it does not match.
    """
    if not evaluate(q, hits):
        return []
    out: list[str] = []
    _explain(q, hits, None, out)
    return list(dict.fromkeys(out))


# --- slow reference -------------------------------------------------------------------


def _word_matches(term: Term, index: int, word: Token) -> bool:
    want = term.tokens[index]
    is_prefix = term.prefix and index == len(term.tokens) - 1
    if not (word.text.startswith(want) if is_prefix else word.text == want):
        return False
    if not term.case_sensitive:
        return True
    cased = (term.surface or term.tokens)[index]
    return word.surface.startswith(cased) if is_prefix else word.surface == cased


def scan_hits(q: Query, title: str, body: str) -> dict[Term, list[Hit]]:
    """Every occurrence of every term of ``q``, found by brute force over the tokens.

    The exact reference that the fast matcher's hits are checked against.
    """
    fields: tuple[tuple[FieldName, list[Token]], ...] = (
        ("title", tokenize(title)),
        ("body", tokenize(body)),
    )
    hits: dict[Term, list[Hit]] = {}
    for term in query_terms(q):
        found: list[Hit] = []
        size = len(term.tokens)
        for field, words in fields:
            for start in range(len(words) - size + 1):
                if all(_word_matches(term, k, words[start + k]) for k in range(size)):
                    found.append(Hit(field, start))
        hits[term] = found
    return hits


def matches_text(q: Query, title: str, body: str) -> bool:
    """Whether an item with this title and body (plain text) matches ``q``; slow, exact."""
    return evaluate(q, scan_hits(q, title, body))
