"""Topic globs: ``*`` matches any run of characters, ``/`` included; nothing else is special.

Patterns come from users (stream ``topics=``, preference rules stored in the
database, token topic patterns, ACL grants, history filters), so matching must
stay cheap on any pattern, including the ones old databases may hold (runs of
stars, many stars). A regex translation (``*`` → ``.*``) backtracks: with k stars
and a topic of n characters that cannot match, ``re`` tries on the order of
n^k ways to split the topic, and holds the GIL while it does — the whole trio
loop stops. This module does not backtrack at all.

How: a pattern is split at ``*`` into literal pieces. The first piece must be a
prefix of the topic, the last a suffix, and the pieces between are looked for
left to right with :meth:`str.find`, each one after the end of the previous.
Taking the leftmost occurrence of each middle piece is always right for
``*``-only globs: an earlier end leaves at least as much room for the rest, so
if any placement of the pieces works, the greedy one does too. So a match costs
one ``startswith``, one ``endswith`` and one ``find`` per middle piece, and the
``find`` windows move only forward: at most (pieces × topic length) character
comparisons, never a retry.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["Pieces", "glob_match", "split_pattern"]

#: (prefix, middle pieces in order, suffix) of a pattern that contains ``*``
Pieces = tuple[str, tuple[str, ...], str]


@lru_cache(maxsize=4096)
def split_pattern(pattern: str) -> Pieces:
    """``a*b**c*`` → ``("a", ("b", "c"), "")``. Empty middle pieces (from runs of
    stars) are dropped: they match anywhere, so they cost nothing and change
    nothing. Cached: the same few patterns are matched against every event."""
    parts = pattern.split("*")
    return parts[0], tuple(p for p in parts[1:-1] if p), parts[-1]


def glob_match(pattern: str, topic: str) -> bool:
    """True if ``topic`` matches ``pattern`` (``*`` = any run of characters, ``/`` included)."""
    if "*" not in pattern:
        return pattern == topic
    return _match(split_pattern(pattern), topic, None)


def _match(pieces: Pieces, topic: str, trace: list[tuple[str, int, int]] | None) -> bool:
    """The matcher. ``trace``, when given, receives one ``(operation, start, end)``
    per string operation, so tests can check the amount of work without a clock."""
    head, middle, tail = pieces
    lo, hi = len(head), len(topic) - len(tail)
    if hi < lo:  # prefix and suffix would overlap
        return False
    if trace is not None:
        trace.append(("startswith", 0, lo))
    if not topic.startswith(head):
        return False
    if trace is not None:
        trace.append(("endswith", hi, len(topic)))
    if not topic.endswith(tail):
        return False
    for piece in middle:
        if trace is not None:
            trace.append(("find", lo, hi))
        at = topic.find(piece, lo, hi)
        if at < 0:
            return False
        lo = at + len(piece)
    return True


def match_trace(pattern: str, topic: str) -> tuple[bool, list[tuple[str, int, int]]]:
    """:func:`glob_match` and the string operations it made (for tests and audits)."""
    trace: list[tuple[str, int, int]] = []
    if "*" not in pattern:
        trace.append(("equals", 0, len(topic)))
        return pattern == topic, trace
    return _match(split_pattern(pattern), topic, trace), trace
