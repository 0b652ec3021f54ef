"""TUI responsiveness with a large history: first paint and scrolling, lazily paged.

A daemon on a temporary data dir gets ``--events`` events (default 100,000),
published over its Unix socket in batches of 1,000. Then the real TUI app
(``notifyd.tui.app.make_app``) runs headless with ``App.run_test(size=(120, 40))``
against it, over the socket, with its live feed connected, and this script
measures:

(a) first paint: from entering ``run_test`` (the app starting) until the first
    history rows are in the table and a refresh has run;
(b) PageDown within loaded rows: from a key press until the screen update that shows
    the cursor a page further down, into rows that are loaded but were never drawn
    (``--pages`` single presses from the top, p50/p95/max);
(c) a page that must be fetched: End (cursor to the last loaded row, where the next
    page is not loaded yet) until that next page is in the table and painted, i.e.
    ``GET /v1/events?before=<cursor>&limit=<page>``, the append and a refresh — at
    ``--fetches`` depths, the deepest about ``fetches × page`` rows into history;
(d) PageDown held: ``--hold`` presses back to back, on past the loaded rows, while
    the inbox prefetches the next pages (three screens ahead): how often the cursor
    reached the end of the loaded rows and had to wait;
(e) rows held in memory afterwards (a few pages, not the whole history), and the
    process's peak RSS;
(f) for scale: what loading everything would cost — every event fetched through
    the API in pages of 500 (no table), which lazy paging never does.

Run:  .venv/bin/python bench/tui.py [--events 100000] [--page-size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    Daemon,
    cores_note,
    idle_check,
    latency_summary,
    print_table,
    progress,
    request,
    write_result,
)
from textual import events  # noqa: E402
from textual._compositor import CompositorUpdate  # noqa: E402

from notifyd.client import Client  # noqa: E402
from notifyd.tui.app import NotifydApp, make_app  # noqa: E402
from notifyd.tui.screens.inbox import InboxScreen  # noqa: E402
from notifyd.tui.widgets.event_table import EventTable  # noqa: E402

SIZE = (120, 40)
BATCH = 1000
TOPICS = ["ci/main", "ci/nightly", "backup", "alerts/disk", "mail", "deploy/web"]
# targets: what "responsive" means here
TARGET_FIRST_PAINT_MS = 1000.0
TARGET_LOADED_PAGE_MS = 100.0
TARGET_FETCHED_PAGE_MS = 300.0


def publish_history(d: Daemon, total: int) -> float:
    """Publish ``total`` events in batches; returns the seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, total, BATCH):
        batch = [
            {
                "topic": TOPICS[i % len(TOPICS)],
                "title": f"Event {i}: {TOPICS[i % len(TOPICS)]} reported something",
                "body": f"Body of event {i}. " * 4,
                "priority": 1 + i % 5,
                "category": ("build", "backup", "alert", "mail")[i % 4],
            }
            for i in range(start, min(start + BATCH, total))
        ]
        status, body = request("POST", "/v1/events", unix=d.socket_path, body=batch, timeout=120)
        if status != 201:
            raise RuntimeError(f"publishing failed: {status} {body!r}")
        if (start // BATCH) % 20 == 19:
            progress(f"published {start + len(batch):,} events")
    return time.perf_counter() - t0


class Paints:
    """Records every screen update the app makes (the moment it would be written to
    the terminal), with the table's cursor row and row count at that moment.

    Headless apps compute each update but skip turning it into terminal output;
    the hook does that too (``render_segments``), so its cost is counted.
    """

    def __init__(self, app: NotifydApp) -> None:
        self.app = app
        self.log: list[tuple[float, int, int]] = []
        self._display = app._display
        app._display = self._record  # type: ignore[method-assign]

    def _record(self, screen: Any, renderable: Any) -> None:
        self._display(screen, renderable)
        if isinstance(renderable, CompositorUpdate):
            renderable.render_segments(self.app.console)
        table = screen.query_one(EventTable) if isinstance(screen, InboxScreen) else None
        if renderable is not None and table is not None:
            self.log.append((time.perf_counter(), table.cursor_row, table.row_count))

    async def first(self, check: Any, since: int, what: str, timeout: float = 60.0) -> float:
        """Wait for the first update after index ``since`` for which ``check(cursor_row,
        row_count)`` holds; return its time."""
        deadline = time.monotonic() + timeout
        while True:
            for when, cursor, rows in self.log[since:]:
                if check(cursor, rows):
                    return when
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.0005)


async def wait_until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(app: NotifydApp) -> None:
    """Let the detail pane (debounced) and any follow-up refresh finish."""
    await asyncio.sleep(0.15)


async def key_to_paint(app: NotifydApp, paints: Paints, key: str, check: Any, what: str) -> float:
    """Press ``key`` and return the milliseconds until the screen shows its effect."""
    since = len(paints.log)
    start = time.perf_counter()
    app.post_message(events.Key(key, None))
    painted = await paints.first(check, since, what)
    return (painted - start) * 1e3


async def measure_ui(socket_path: str, page_size: int, pages: int, fetches: int, hold: int) -> dict:
    t0 = time.perf_counter()
    app = make_app(socket_path=socket_path, browser=False, page_size=page_size)
    paints = Paints(app)
    out: dict[str, Any] = {}
    async with app.run_test(size=SIZE):
        painted = await paints.first(lambda cursor, rows: rows > 0, 0, "the first rows")
        out["first_paint_ms"] = (painted - t0) * 1e3
        screen = app.screen
        assert isinstance(screen, InboxScreen)
        table = screen.table
        await wait_until(lambda: app.connection.state == "connected", "the stream")
        out["connected_ms"] = (time.perf_counter() - t0) * 1e3
        out["first_page_rows"] = table.row_count
        out["visible_rows"] = table.scrollable_content_region.height - 1
        await settle(app)

        # (c) End at the last loaded row: the next page has to come from the daemon
        fetched_ms = []
        for _ in range(fetches):
            await wait_until(lambda: not screen.fetching, "an idle table")
            await settle(app)
            count = table.row_count
            fetched_ms.append(
                await key_to_paint(
                    app, paints, "end", lambda cursor, rows, n=count: rows > n, "the next page"
                )
            )
        out["page_fetched"] = latency_summary([ms / 1e3 for ms in fetched_ms])
        out["deepest_row_fetched"] = table.row_count
        await wait_until(lambda: not screen.fetching, "an idle table")

        # (b) PageDown through loaded rows that were never drawn (cells render cold),
        # one press at a time, from the top
        table.move_cursor(row=0)
        await settle(app)
        loaded_ms = []
        visible = out["visible_rows"]
        for _ in range(pages):
            before = table.cursor_row
            if table.row_count - before < 5 * visible:
                break  # stay clear of the prefetch distance: this is about drawing
            loaded_ms.append(
                await key_to_paint(
                    app, paints, "pagedown", lambda c, r, b=before: c > b, "a page down"
                )
            )
            await settle(app)
        out["pagedown_loaded"] = latency_summary([ms / 1e3 for ms in loaded_ms])

        # (d) holding PageDown: presses back to back, on past the loaded rows, while
        # the prefetch loads the next pages in the background
        stalls = 0
        hold_ms = []
        start_row = table.cursor_row
        for _ in range(hold):
            if table.cursor_row >= table.row_count - 1:
                stalls += 1
                count = table.row_count
                await wait_until(lambda n=count: table.row_count > n, "a page")
            before = table.cursor_row
            hold_ms.append(
                await key_to_paint(
                    app, paints, "pagedown", lambda c, r, b=before: c > b, "a page down"
                )
            )
        out["pagedown_held"] = latency_summary([ms / 1e3 for ms in hold_ms])
        out["held_rows"] = [start_row, table.cursor_row]
        out["held_stalls"] = stalls

        await wait_until(lambda: not screen.fetching, "an idle table")
        await settle(app)
        ids = table.ordered_ids()
        out["rows_in_memory"] = table.row_count
        out["events_in_memory"] = len(table.events)
        out["duplicate_rows"] = len(ids) - len(set(ids))
        out["ordered_newest_first"] = ids == sorted(ids, reverse=True)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def fetch_everything(socket_path: str) -> dict:
    """What eager loading would cost: every event through the API, 500 at a time."""
    t0 = time.perf_counter()
    count = requests = 0
    before = None
    with Client(socket_path) as client:
        while True:
            page = client.events(limit=500, before=before)
            requests += 1
            count += len(page["events"])
            before = page.get("next")
            if before is None:
                break
    return {"events": count, "requests": requests, "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000, help="events in history")
    ap.add_argument("--page-size", type=int, default=100, help="events per history page")
    ap.add_argument("--pages", type=int, default=20, help="single PageDown presses in (b)")
    ap.add_argument("--hold", type=int, default=80, help="back-to-back PageDowns in (d)")
    ap.add_argument("--fetches", type=int, default=10, help="pages fetched in (c)")
    ap.add_argument("--skip-eager", action="store_true", help="skip (f)")
    args = ap.parse_args()
    print(cores_note(), file=sys.stderr)
    result: dict[str, Any] = {"args": vars(args), "other_busy_cores_before": idle_check()}
    with Daemon() as d:
        progress(f"publishing {args.events:,} events in batches of {BATCH:,}")
        seconds = publish_history(d, args.events)
        result["publish_seconds"] = seconds
        progress(f"published in {seconds:.1f} s; starting the TUI at {SIZE[0]}x{SIZE[1]}")
        ui = asyncio.run(
            measure_ui(d.socket_path, args.page_size, args.pages, args.fetches, args.hold)
        )
        result["ui"] = ui
        if not args.skip_eager:
            progress("fetching the whole history through the API, for scale")
            result["eager"] = fetch_everything(d.socket_path)

    loaded, fetched, held = ui["pagedown_loaded"], ui["page_fetched"], ui["pagedown_held"]

    def met(value: float, target: float) -> str:
        return f"{value / target:.2f} {'met' if value <= target else 'MISSED'}"

    rows = [
        [
            f"(a) first paint, {args.events:,} events in history",
            f"{ui['first_paint_ms']:.0f} ms ({ui['first_page_rows']} rows; stream connected "
            f"at {ui['connected_ms']:.0f} ms)",
            f"<= {TARGET_FIRST_PAINT_MS:g} ms",
            met(ui["first_paint_ms"], TARGET_FIRST_PAINT_MS),
        ],
        [
            "(b) PageDown, next rows loaded (not drawn before)",
            f"p50 {loaded['p50_ms']:.1f} / p95 {loaded['p95_ms']:.1f} / max {loaded['max_ms']:.1f} ms",
            f"p95 <= {TARGET_LOADED_PAGE_MS:g} ms",
            met(loaded["p95_ms"], TARGET_LOADED_PAGE_MS),
        ],
        [
            f"(c) page fetched from the daemon (to row {ui['deepest_row_fetched']:,})",
            f"p50 {fetched['p50_ms']:.1f} / p95 {fetched['p95_ms']:.1f} / max {fetched['max_ms']:.1f} ms",
            f"p95 <= {TARGET_FETCHED_PAGE_MS:g} ms",
            met(fetched["p95_ms"], TARGET_FETCHED_PAGE_MS),
        ],
        [
            f"(d) PageDown held: {args.hold} presses, rows {ui['held_rows'][0]:,} to "
            f"{ui['held_rows'][1]:,}",
            f"p50 {held['p50_ms']:.1f} / p95 {held['p95_ms']:.1f} / max {held['max_ms']:.1f} ms; "
            f"{ui['held_stalls']} waits at the end of loaded rows",
            "no waits",
            "met" if ui["held_stalls"] == 0 else "MISSED",
        ],
        [
            "(e) rows held in memory afterwards",
            f"{ui['rows_in_memory']:,} rows ({ui['rows_in_memory'] / args.events:.1%} of history); "
            f"{ui['duplicate_rows']} duplicates; peak RSS {ui['peak_rss_mib']:.0f} MiB",
            "a few pages",
            "met"
            if ui["rows_in_memory"] <= ui["held_rows"][1] + 4 * args.page_size
            and not ui["duplicate_rows"]
            and ui["ordered_newest_first"]
            else "MISSED",
        ],
    ]
    if "eager" in result:
        e = result["eager"]
        rows.append(
            [
                "(f) for scale: fetching all of history (no UI)",
                f"{e['seconds']:.1f} s for {e['events']:,} events in {e['requests']} requests",
                "never done",
                "-",
            ]
        )
    print()
    print_table(["case", "figure", "target", "ratio/met"], rows, title="TUI benchmark")
    print(
        f"page size {args.page_size}; terminal {SIZE[0]}x{SIZE[1]} "
        f"({ui['visible_rows']} table rows visible); publishing took {seconds:.1f} s"
    )
    print(cores_note())
    path = write_result("tui", result)
    progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
