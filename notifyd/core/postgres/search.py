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

The TUI (``tui/search.py``) and the web page implement the same rules for live
events; ``tests/test_postgres_events.py`` checks this module against the shared
vectors and against the TUI's function on random text.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

#: a query's words: runs of letters, digits, ``_`` and ``-`` (after NFC); the
#: first :data:`MAX_WORDS`
QUERY_WORD = re.compile(r"[\w\-]+")
MAX_WORDS = 16
#: longest token kept (``tsvector`` lexemes must stay under 2 KB)
MAX_TOKEN = 256
#: highest ``tsvector`` position
MAX_POSITION = 16383
#: positions left empty between the title's tokens and the body's
FIELD_GAP = 2

#: combining accents that vanish from a token (FTS5 ``remove_diacritics``: those
#: that put one accent on a Latin letter a–z)
_REMOVED_MARKS = frozenset(
    map(
        chr,
        [
            0x300, 0x301, 0x302, 0x303, 0x304, 0x306, 0x307, 0x308, 0x309, 0x30A,
            0x30B, 0x30C, 0x30F, 0x311, 0x31B, 0x323, 0x324, 0x325, 0x326, 0x327,
            0x328, 0x32D, 0x32E, 0x330, 0x331,
        ],
    )
)  # fmt: skip
#: where FTS5 folds case further than :meth:`str.lower`
_EXTRA_FOLD = str.maketrans(
    {
        "ς": "σ",
        "ſ": "s",
        "µ": "μ",
        "ϐ": "β",
        "ϑ": "θ",
        "ϕ": "φ",
        "ϖ": "π",
        "ϰ": "κ",
        "ϱ": "ρ",
        "ϵ": "ε",
    }
)
_ASCII_RUN = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """One token character, folded: lower case, FTS5's extra pairs, and a Latin
    letter with one removable accent reduced to the letter."""
    folded = []
    for ch in char.lower().translate(_EXTRA_FOLD):
        if ch in _REMOVED_MARKS:
            continue
        decomposed = unicodedata.normalize("NFD", ch)
        if len(decomposed) == 2 and "a" <= decomposed[0] <= "z" and decomposed[1] in _REMOVED_MARKS:
            ch = decomposed[0]
        folded.append(ch)
    return "".join(folded)


def _is_token_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LN" or category == "Co"


@lru_cache(maxsize=2048)
def tokenize(text: str) -> tuple[str, ...]:
    """The folded tokens of ``text``, in order."""
    if text.isascii():
        return tuple(_ASCII_RUN.findall(text.lower()))
    out: list[str] = []
    run: list[str] = []
    for char in text:
        if char in _REMOVED_MARKS:
            continue  # inside a token it vanishes; it never splits one
        if _is_token_char(char):
            run.append(_fold_char(char))
            continue
        if run:
            out.append("".join(run))
            run = []
    if run:
        out.append("".join(run))
    return tuple(token for token in out if token)


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
        for token in tokenize(field):
            position += 1
            entries.append(f"{_lexeme(token)}:{min(position, MAX_POSITION)}")
    return " ".join(entries)


def query(text: str) -> str | None:
    """The text form of the ``tsquery`` for what a person typed; None when it has
    no token (such a query matches nothing)."""
    words = QUERY_WORD.findall(unicodedata.normalize("NFC", text))[:MAX_WORDS]
    phrases = [tokenize(word) for word in words]
    prefix = bool(phrases and phrases[-1])  # only when the last word has a token
    kept = [phrase for phrase in phrases if phrase]
    if not kept:
        return None
    parts = []
    for n, phrase in enumerate(kept):
        lexemes = [_lexeme(token) for token in phrase]
        if prefix and n == len(kept) - 1:
            lexemes[-1] += ":*"
        parts.append("(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)
