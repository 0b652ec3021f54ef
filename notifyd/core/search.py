"""What the inbox search (``q=``) means, in one place: the rules every engine and
every client applies.

The SQLite engine answers ``q=`` with FTS5 (the ``unicode61`` tokenizer,
diacritics removed) and a query built by ``core/sqlite/queries.fts_query`` from
:data:`WORD` and :data:`MAX_WORDS`; the PostgreSQL engine stores and queries the
tokens made here (``core/postgres/search.py``); the TUI filters live events with
:func:`search_matches`, and the web page has the same function in JavaScript
(``notifyd/web/static/js/filters.js``). ``tests/test_filter_semantics.py`` checks
the daemon, the TUI and the page against the vectors in
``tests/data/filter_vectors.json``. The rules (docs/api.md, "Filters and search"):

1. The query is composed (NFC); its words are the runs of letters, digits, ``_``
   and ``-`` in it; only the first :data:`MAX_WORDS` count. With no word, nothing
   matches.
2. Text (the title, the body, and each query word) is split into tokens: runs of
   letters, digits and private-use characters; everything else separates tokens
   (so ``e-mail`` and ``on_call`` are two tokens each). Tokens are compared
   case-insensitively, and a Latin letter with one accent equals the plain letter
   (``Café`` = ``cafe``); other scripts keep their accents.
3. Every word must occur as whole tokens, in the title or in the body: a word of
   several tokens (``web-frontend``) must find them one after the other in the
   same field. The last word's last token may be the start of a token
   (``deplo`` finds ``deployed``): search-as-you-type. Words with no token
   (``-``) are left out, but a query with no token at all matches nothing.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

#: the daemon's query words (``fts_query``): this pattern, the first 16 matches
WORD = re.compile(r"[\w\-]+")
MAX_WORDS = 16

#: the combining accents FTS5 removes: those of the Latin letters with one accent on
#: a–z; inside a token they vanish (``e`` + U+0301 is ``e``)
DIACRITICS = frozenset(
    chr(c)
    for c in (
        0x300, 0x301, 0x302, 0x303, 0x304, 0x306, 0x307, 0x308, 0x309, 0x30A, 0x30B,
        0x30C, 0x30F, 0x311, 0x31B, 0x323, 0x324, 0x325, 0x326, 0x327, 0x328, 0x32D,
        0x32E, 0x330, 0x331,
    )
)  # fmt: skip
#: case pairs where FTS5's folding goes further than ``str.lower``
FOLD = {
    "ς": "σ", "ſ": "s", "µ": "μ", "ϐ": "β", "ϑ": "θ", "ϕ": "φ", "ϖ": "π", "ϰ": "κ",
    "ϱ": "ρ", "ϵ": "ε",
}  # fmt: skip
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    out = []
    for ch in char.lower():
        if ch in DIACRITICS:
            continue
        ch = FOLD.get(ch, ch)
        parts = unicodedata.normalize("NFD", ch)
        if len(parts) == 2 and "a" <= parts[0] <= "z" and parts[1] in DIACRITICS:
            ch = parts[0]
        out.append(ch)
    return "".join(out)


@lru_cache(maxsize=2048)
def tokens(text: str) -> tuple[str, ...]:
    """``text`` as FTS5's ``unicode61`` tokenizer sees it (folded tokens, in order)."""
    if text.isascii():
        return tuple(_ASCII_TOKEN.findall(text.lower()))
    found: list[str] = []
    current: list[str] = []
    for char in text:
        if char in DIACRITICS:
            continue  # part of the token, and removed
        category = unicodedata.category(char)
        if category[0] in "LN" or category == "Co":
            current.append(_fold(char))
        elif current:
            found.append("".join(current))
            current = []
    if current:
        found.append("".join(current))
    return tuple(t for t in found if t)


@lru_cache(maxsize=256)
def parse(q: str) -> tuple[tuple[tuple[str, ...], ...], bool] | None:
    """The phrases (token tuples) every match must contain, and whether the last
    one ends with a prefix; None when the query can match nothing."""
    words = WORD.findall(unicodedata.normalize("NFC", q))[:MAX_WORDS]
    phrases = [tokens(w) for w in words]
    prefix = bool(phrases and phrases[-1])
    kept = tuple(p for p in phrases if p)
    if not kept:
        return None
    return kept, prefix


def _contains(field: tuple[str, ...], phrase: tuple[str, ...], prefix: bool) -> bool:
    n = len(phrase)
    for start in range(len(field) - n + 1):
        if field[start : start + n - 1] != phrase[:-1]:
            continue
        last = field[start + n - 1]
        if last == phrase[-1] or (prefix and last.startswith(phrase[-1])):
            return True
    return False


def search_matches(q: str, title: str | None, body: str | None) -> bool:
    """Whether the daemon's ``q=`` search finds an event with this title and body."""
    parsed = parse(q)
    if parsed is None:
        return False
    phrases, prefix = parsed
    fields = (tokens(title or ""), tokens(body or ""))
    last = len(phrases) - 1
    return all(
        any(_contains(field, phrase, prefix and i == last) for field in fields)
        for i, phrase in enumerate(phrases)
    )
