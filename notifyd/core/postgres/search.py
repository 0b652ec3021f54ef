"""Full-text search (``q=``) on PostgreSQL, with the meaning SQLite FTS5 gives it.

The rules are those of docs/api.md ("Search"), which the SQLite engine gets from
FTS5's ``unicode61`` tokenizer: text is split into tokens (runs of letters, digits
and private-use characters), folded (case, and one accent on a Latin letter);
every word of the query must occur as whole tokens in the title or in the body,
a word of several tokens (``web-front``) as adjacent tokens of one field, and
the last word's last token may be the start of a token.

PostgreSQL's own parsers split text differently (``e-mail``, ``example.org``,
``v2.3`` are single tokens there), so the tokens are made here, in Python, and
stored as a ``tsvector`` with explicit positions (cast from its text form, which
takes lexemes as given). The title's tokens take positions 1…n and the body's
start at n + 3, so that a phrase (``<->``, exactly one position apart) never
runs from the title into the body. The query is a ``tsquery`` of the same
tokens: ``'web' <-> 'front':*`` per word, the words joined with ``&``; it is
answered by a GIN index on ``events.search``.

Limits of the ``tsvector`` type, where this differs from FTS5 on extreme text:
positions stop at 16383 (later tokens share the last position: still found, but
a phrase there may match loosely), and tokens are cut to :data:`MAX_TOKEN`
characters, on both sides alike (a longer token matches any token sharing its
first :data:`MAX_TOKEN` characters).

The tokens and the query's words come from ``core/search.py``, the one place
the rules are written in Python (the TUI uses it for live events too);
``tests/test_postgres_events.py`` checks this module against the shared vectors.
"""

from __future__ import annotations

from typing import Any

from .. import search as rules

#: longest token kept (``tsvector`` lexemes must stay under 2 KB)
MAX_TOKEN = 256
#: highest ``tsvector`` position
MAX_POSITION = 16383
#: positions left empty between the title's tokens and the body's
FIELD_GAP = 2


def _lexeme(token: str) -> str:
    token = token[:MAX_TOKEN]
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def document(title: str | None, body: str | None) -> str:
    """The text form of the ``tsvector`` of an event's title and body."""
    entries: list[str] = []
    position = 0
    for n, field in enumerate((title or "", body or "")):
        if n:
            position += FIELD_GAP
        for token in rules.tokens(field):
            position += 1
            entries.append(f"{_lexeme(token)}:{min(position, MAX_POSITION)}")
    return " ".join(entries)


def query(text: str) -> str | None:
    """The text form of the ``tsquery`` for what a person typed; None when it has
    no token (such a query matches nothing)."""
    parsed = rules.parse(text)
    if parsed is None:
        return None
    kept, prefix = parsed
    parts = []
    for n, phrase in enumerate(kept):
        lexemes = [_lexeme(token) for token in phrase]
        if prefix and n == len(kept) - 1:
            lexemes[-1] += ":*"
        parts.append("(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)


def exact_part(text: str) -> str | None:
    """The ``tsquery`` of the query's words without its trailing prefix (the last
    word's last token); None when there is no prefix or nothing besides it.

    Every event the whole query matches also matches this part. The history query
    asks the GIN index for this part only and checks the whole query on the rows it
    finds: in the index a prefix stands for every token that starts with it, and
    for a common word (``error:*``) that means gathering hundreds of thousands of
    rows before the other words narrow them (GIN skips through exact tokens'
    entries, not through a prefix's)."""
    parsed = rules.parse(text)
    if parsed is None:
        return None
    kept, prefix = parsed
    if not prefix:
        return None
    phrases = [list(p) for p in kept[:-1]]
    if len(kept[-1]) > 1:
        phrases.append(list(kept[-1][:-1]))
    if not phrases:
        return None
    return " & ".join("(" + " <-> ".join(_lexeme(t) for t in p) + ")" for p in phrases)


#: a search whose indexed words the planner expects in at most this many events is
#: answered through the GIN index: every match is read, then sorted
BITMAP_ROWS = 2_000


def history_order(conn: Any, text: str) -> str:
    """The ORDER BY of a history page that searches ``text``.

    ``e.id DESC`` lets the planner walk the primary key backwards and test each
    event until the page is full: right for common words, whatever it assumes. For
    a rare word it assumes the matches spread evenly over the ids, which they need
    not be (old events have words new ones lack): it then walks through most of the
    table (~100 ms at 1M events) for a page the GIN index finds in a few. So when the
    planner's estimate of the indexed part is small, ``e.id + 0 DESC`` (which no
    index can give) makes it use the index and sort the few matches. The estimate
    costs one EXPLAIN (about 0.5 ms)."""
    exact = exact_part(text)
    indexed = exact or query(text)
    if indexed is None:
        return "e.id DESC"
    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE search @@ %s::tsquery", [indexed]
    ).fetchone()
    rows = float(plan[0][0]["Plan"]["Plan Rows"]) if plan else 0.0
    return "e.id + 0 DESC" if rows <= BITMAP_ROWS else "e.id DESC"
