"""One meaning for the inbox filters: the daemon, the TUI and the web page agree.

``GET /v1/events?q=…&topic=…&category=…&min_priority=…&unread=…&archived=…`` is
answered in SQL (SQLite FTS5 for ``q``); that answer is the truth. The TUI
(``Filters.matches``, tui/widgets/filter_bar.py and notifyd/core/search.py) and the web page
(``matchesFilters``, notifyd/web/static/js/filters.js) apply the same filters to
events that arrive on the live stream, so they must give the same answer.

Two kinds of checks, each run against all three implementations:

* the vectors in tests/data/filter_vectors.json (events + filters → the events
  listed), written by hand, one rule per case;
* a seeded random differential: random titles, bodies and queries (accents,
  other scripts, punctuation, combining marks) through the daemon's HTTP API,
  compared with the TUI's and the page's answers.

The daemon is the real one (tests/conftest.py); the page's function runs in
Debian's Chromium through Playwright; the TUI's function is called directly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, launch
from conftest import Daemon
from playwright.sync_api import sync_playwright

from notifyd.tui.widgets.filter_bar import Filters

VECTORS = json.loads((Path(__file__).parent / "data" / "filter_vectors.json").read_text())
EVENTS: list[dict[str, Any]] = VECTORS["events"]
CASES: list[dict[str, Any]] = VECTORS["cases"]
CASE_IDS = [f"{i}:{json.dumps(c['filter'], ensure_ascii=False)}" for i, c in enumerate(CASES)]
STATE_DEFAULTS = {"read": False, "archived": False}

FUZZ_TOPIC = "fuzz/differential"
FUZZ_SEED = 1412
FUZZ_EVENTS = 120
FUZZ_QUERIES = 150
#: what random text is made of: ASCII, Latin accents (precomposed and combining),
#: letters whose case folding is special, Greek, Cyrillic, CJK, Devanagari, punctuation
FUZZ_ALPHABET = [
    *"abcdeABCDE019 _-.,!'\"*#/",
    *"éÉèçñüÜßøæǖắİıςΣσſµй",
    "e\u0301", "\u0301", "\u0305", "\u0903",
    *"日本語αβγάΑΒहि",
]  # fmt: skip


def _event_fields(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k not in ("name", "read", "archived")}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, int]]]:
    """A daemon holding the vector events (with their read and archived states)."""
    d = Daemon(tmp_path_factory.mktemp("filters") / "data")
    d.data_dir.mkdir()
    d.start()
    ids: dict[str, int] = {}
    try:
        with d.admin() as c:
            for ev in EVENTS:
                r = c.post("/v1/events", json=_event_fields(ev))
                assert r.status_code == 201, r.text
                ids[ev["name"]] = r.json()["id"]
                for state in ("read", "archived"):
                    if ev.get(state):
                        verb = "read" if state == "read" else "archive"
                        r = c.post(f"/v1/events/{ids[ev['name']]}/{verb}")
                        assert r.status_code == 200, r.text
        yield d, ids
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def server_ids(d: Daemon, flt: dict[str, Any], **extra: Any) -> set[int]:
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in flt.items()}
    with d.admin() as c:
        r = c.get("/v1/events", params={**params, **extra, "limit": 500})
        assert r.status_code == 200, r.text
        page = r.json()
    assert page["next"] is None  # everything fits in one page
    return {ev["id"] for ev in page["events"]}


def tui_matches(flt: dict[str, Any], ev: dict[str, Any]) -> bool:
    return Filters(**flt).matches({**STATE_DEFAULTS, **ev})


# --- the daemon is the truth: it must answer the vectors as written ---------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_daemon_answers_each_vector(loaded: tuple[Daemon, dict[str, int]], case: dict) -> None:
    d, ids = loaded
    names = {eid: name for name, eid in ids.items()}
    got = sorted(names[eid] for eid in server_ids(d, case["filter"]))
    assert got == sorted(case["match"]), case["note"]


# --- the TUI -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_tui_answers_each_vector(case: dict) -> None:
    got = sorted(ev["name"] for ev in EVENTS if tui_matches(case["filter"], ev))
    assert got == sorted(case["match"]), case["note"]


# --- the web page --------------------------------------------------------------------------

WEB_MATCH = """async ([events, cases]) => {
  const { matchesFilters } = await import("/static/js/filters.js");
  const defaults = { read: false, archived: false };
  return cases.map((f) => events.filter((ev) => matchesFilters({ ...defaults, ...ev }, f)).map((ev) => ev.name));
}"""


def web_answers(d: Daemon, events: list[dict[str, Any]], filters: list[dict]) -> list[list[str]]:
    """The page's ``matchesFilters`` for every filter, over ``events`` (with names)."""
    if not CHROMIUM.exists():
        pytest.skip(f"the web page's function runs in Debian's chromium at {CHROMIUM}")
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(base_url=d.url)
            page.goto("/")
            return page.evaluate(WEB_MATCH, [events, filters])
        finally:
            browser.close()


def test_the_web_page_answers_every_vector(loaded: tuple[Daemon, dict[str, int]]) -> None:
    d, _ = loaded
    answers = web_answers(d, EVENTS, [c["filter"] for c in CASES])
    wrong = [
        (case_id, case["note"], sorted(got), sorted(case["match"]))
        for case_id, case, got in zip(CASE_IDS, CASES, answers, strict=True)
        if sorted(got) != sorted(case["match"])
    ]
    assert not wrong, "\n".join(map(str, wrong))


# --- random differential: random text and queries, through the daemon -------------------


def _text(rnd: random.Random, longest: int) -> str:
    return "".join(rnd.choice(FUZZ_ALPHABET) for _ in range(rnd.randint(0, longest)))


def test_random_text_and_queries_get_the_daemons_answer_everywhere(
    loaded: tuple[Daemon, dict[str, int]],
) -> None:
    d, _ = loaded
    rnd = random.Random(FUZZ_SEED)
    batch = [
        {"topic": FUZZ_TOPIC, "title": "t" + _text(rnd, 14), "body": _text(rnd, 20)}
        for _ in range(FUZZ_EVENTS)
    ]
    with d.admin() as c:
        r = c.post("/v1/events", json=batch)
        assert r.status_code == 201, r.text
        stored = r.json()["events"]
    events = [{**ev, "name": str(ev["id"])} for ev in stored]
    queries = [_text(rnd, 8).strip() or "x" for _ in range(FUZZ_QUERIES)]
    filters = [{"topic": FUZZ_TOPIC, "q": q} for q in queries]

    truth = [sorted(str(i) for i in server_ids(d, f)) for f in filters]
    assert sum(1 for t in truth if t) >= FUZZ_QUERIES // 10  # the queries find things
    tui = [sorted(ev["name"] for ev in events if tui_matches(f, ev)) for f in filters]
    check("TUI", queries, tui, truth)
    web = [sorted(names) for names in web_answers(d, events, filters)]
    check("web page", queries, web, truth)


def check(name: str, queries: list[str], answers: list[list[str]], truth: list[list[str]]) -> None:
    wrong = [
        (q, sorted(set(a) ^ set(t))) for q, a, t in zip(queries, answers, truth, strict=True)
        if a != t
    ]  # fmt: skip
    assert not wrong, f"the {name} differs from the daemon: {wrong[:5]}"
