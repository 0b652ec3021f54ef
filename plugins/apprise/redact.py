"""Keeping an Apprise URL's secrets out of logs and error messages.

Apprise's own masking is heuristic: its privacy URL hides passwords and tokens,
but its log lines show a bot token inside a request URL, and its errors may
quote what a server answered. So while the channel validates or sends, a
per-thread :class:`Capture` knows the secrets (every piece of the URL that the
privacy URL does not show, plus the message text) and:

- the ``apprise`` logger's only handler (:class:`Relay`) blanks them, keeps the
  line as a possible failure reason and passes it on at DEBUG as
  ``notifyd.plugins.apprise``; Apprise's lines never reach the daemon's
  handlers directly;
- a filter on urllib3's loggers (:class:`Scrub`) blanks them in request lines.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import apprise

log = logging.getLogger("notifyd.plugins.apprise")

MASK = "****"
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DELIMS = re.compile(r"[/:@?&=#,;+\s]+")
NO_REASON = "no reason given"


def pieces(url: str, unquoted_split: bool = False) -> set[str]:
    """The URL's parts that may be secret (host, user, password, path segments,
    query values), raw and percent-decoded. The scheme and the query's keys are
    Apprise's vocabulary, not secrets. ``unquoted_split`` also splits the decoded
    text (for a privacy URL, whose ``bob%40example.com`` shows ``bob``)."""
    rest = SCHEME.sub("", url)
    main, _, query = rest.partition("?")
    texts = [main] + [item.partition("=")[2] for item in query.split("&")]
    if unquoted_split:
        texts += [unquote(t) for t in texts]
    out: set[str] = set()
    for text in texts:
        for piece in _DELIMS.split(text):
            if piece:
                out.update((piece, unquote(piece)))
    return out


def hidden_pieces(url: str, privacy_url: str) -> list[str]:
    """The pieces of ``url`` that Apprise's ``privacy_url`` does not show, and the
    password always (it is secret even where it equals the shown user name)."""
    shown = pieces(privacy_url, unquoted_split=True)
    out = [p for p in pieces(url) if p not in shown]
    try:
        password = urlsplit(url).password
    except ValueError:  # a port that is not a number: no password to find
        password = None
    return out + [password, unquote(password)] if password else out


class Capture:
    """What Apprise logs during one validation or send, with secrets blanked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.lines: list[tuple[int, str]] = []
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.hide(secrets)

    def hide(self, secrets: Iterable[str], min_len: int = 1, *, only: bool = False) -> None:
        """Blank ``secrets`` from now on (``only``: instead of what was hidden so far)."""
        if only:
            self._secrets.clear()
        self._secrets.update(s for s in secrets if s and len(s) >= min_len)
        # Longest first. Long secrets go wherever they appear (a bot token inside
        # ".../bot<token>/sendMessage"); short ones only as whole words, so that a
        # query value "no" does not eat into "not".
        ordered = sorted(self._secrets, key=len, reverse=True)
        alts = [re.escape(s) if len(s) >= 6 else rf"(?<!\w){re.escape(s)}(?!\w)" for s in ordered]
        self._pattern = re.compile("|".join(alts)) if alts else None

    def scrub(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def reason(self, exc: BaseException | None = None) -> str:
        """Apprise's warnings and socket errors so far (and ``exc``), joined and shortened."""
        found = [text for level, text in self.lines
                 if level >= logging.WARNING or text.startswith("Socket Exception")]  # fmt: skip
        if exc is not None:
            said = self.scrub(str(exc).strip()) or type(exc).__name__
            if not any(said in line for line in found):  # Apprise often logs, then raises
                found.append(said)
        text = "; ".join(dict.fromkeys(found)) or NO_REASON
        return text if len(text) <= 500 else text[:499] + "…"

    def because(self, exc: BaseException | None = None) -> str:
        """``": <reason>"``, or nothing when Apprise said nothing."""
        text = self.reason(exc)
        return "" if text == NO_REASON else f": {text}"


_local = threading.local()


def current() -> Capture | None:
    return getattr(_local, "capture", None)


@contextmanager
def capturing(secrets: Iterable[str]) -> Iterator[Capture]:
    """Capture (and scrub) what Apprise logs in this thread until the block ends."""
    # Per thread: Apprise logs from the worker thread that runs it.
    previous = current()
    _local.capture = capture = Capture(secrets)
    try:
        yield capture
    finally:
        _local.capture = previous


class Relay(logging.Handler):
    """The only handler of the ``apprise`` logger (see the module docstring)."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = current()
        if capture is None:  # not one of our calls: nothing is known to be safe
            return
        try:
            text = capture.scrub(record.getMessage())
        except Exception:  # a malformed log call inside Apprise
            return
        capture.lines.append((record.levelno, text))
        log.debug("apprise: %s", text)


class Scrub(logging.Filter):
    """Blanks secrets in lines that HTTP libraries log while a capture is active
    in this thread (urllib3 logs request lines, with a webhook token in the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        capture = current()
        if capture is not None:
            try:
                record.msg, record.args = capture.scrub(record.getMessage()), None
            except Exception:  # a malformed log call: drop it rather than leak it
                return False
        return True


# Logger filters do not see their children's records: name each logger.
_HTTP_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.poolmanager",
                 "urllib3.util.retry", "urllib3.connection", "requests")  # fmt: skip


def install() -> None:
    """Route Apprise's logging through :class:`Relay` and filter urllib3's (idempotent)."""
    apprise_log = logging.getLogger(apprise.LOGGER_NAME)
    if not any(isinstance(h, Relay) for h in apprise_log.handlers):
        apprise_log.handlers[:] = [Relay()]
    apprise_log.propagate = False
    # DEBUG, not TRACE: Apprise's trace lines dump parsed URLs field by field.
    apprise_log.setLevel(logging.DEBUG)
    for name in _HTTP_LOGGERS:
        http_log = logging.getLogger(name)
        if not any(isinstance(f, Scrub) for f in http_log.filters):
            http_log.addFilter(Scrub())
