"""Hostile input: does the daemon keep answering while it is attacked?

A probe asks ``GET /healthz`` every 50 ms on its own connection the whole time and
records how long each answer takes. Phases, one after the other, on one daemon:

(q) quiet: nothing else happens (the reference);
(r) the reproductions from issue 13: the requests that ended or froze the process
    before (a hostile ``Origin`` with a session cookie, unicode digits in ``since``
    and ``Last-Event-ID``, ntfy's far-future ``since``, a malformed RFC 2047 ntfy
    header, 24 stars and a ``Z`` as a stream's ``topics``, a 60,000-digit ntfy
    ``delay``), each sent 100 times;
(f) the fuzzing corpus of ``tests/test_fuzz_doors.py`` (``--cases``, 16 connections
    at a time): malformed heads, bodies and WebSocket frames at every door;
(p) adversarial patterns that the daemon accepts (at the wildcard cap) used
    everywhere at once: 50 SSE streams and a preference rule with such a pattern, a
    token narrowed by one, while 20,000 events with 255-character topics are published.

Reported per phase: probe answers, p50/p99/max latency, probes that got no answer
within 5 s, and whether the daemon is still the same process. Target: every probe
answered within 1 s. Run the same script from an older checkout (its own venv and
working directory) to compare: there the first reproduction ends the process.

Run:  .venv/bin/python bench/hostile.py [--cases 2000]
An older checkout's daemon (this script's corpus):
      cd OLD && /path/to/this/.venv/bin/python /path/to/this/bench/hostile.py \
          --daemon-python OLD/.venv/bin/python
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import trio

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest import Daemon  # noqa: E402
from test_fuzz_doors import BATCH, Corpus, World, run_case  # noqa: E402

PROBE_EVERY = 0.05
PROBE_TIMEOUT = 5.0


def _probe_loop(url: str, conn: Connection) -> None:
    """The probe, in a process of its own: the attacking side's work in this
    process must not delay (or hold the GIL against) the measurement."""
    phase = "q"
    samples: dict[str, list[float]] = {}
    missed: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=PROBE_TIMEOUT) as client:
        while True:
            while conn.poll():
                phase = conn.recv()
            if phase == "stop":
                break
            start = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            took = time.perf_counter() - start
            if ok:
                samples.setdefault(phase, []).append(took)
            else:
                missed[phase] = missed.get(phase, 0) + 1
            time.sleep(max(0.0, PROBE_EVERY - took))
    conn.send((samples, missed))


class Probe:
    """Polls /healthz from another process; latencies per phase."""

    def __init__(self, url: str) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=_probe_loop, args=(url, child), daemon=True)
        self.samples: dict[str, list[float]] = {}
        self.missed: dict[str, int] = {}

    def start(self) -> None:
        self._proc.start()

    @property
    def phase(self) -> str:
        raise AttributeError("write-only")

    @phase.setter
    def phase(self, value: str) -> None:
        self._conn.send(value)

    def finish(self) -> None:
        self._conn.send("stop")
        self.samples, self.missed = self._conn.recv()
        self._proc.join()


def reproductions(d: Daemon, token: str) -> list[tuple[str, bytes]]:
    h = f"Host: x\r\nAuthorization: Bearer {token}\r\n"
    return [
        ("cookie + Origin http://[", b"GET /v1/stream/sse HTTP/1.1\r\nHost: x\r\n"
         b"Cookie: notifyd_session=x\r\nOrigin: http://[\r\n\r\n"),
        ("since=%C2%B2", f"GET /v1/stream/sse?since=%C2%B2 HTTP/1.1\r\n{h}\r\n".encode()),
        ("Last-Event-ID: \\xb2", f"GET /v1/stream/sse HTTP/1.1\r\n{h}".encode()
         + b"Last-Event-ID: \xb2\r\n\r\n"),
        ("ntfy since=300000000000",
         f"GET /x/json?poll=1&since=300000000000 HTTP/1.1\r\n{h}\r\n".encode()),
        ("ntfy X-Poll: =?UTF-8?B?a?=",
         f"GET /x/json HTTP/1.1\r\n{h}X-Poll: =?UTF-8?B?a?=\r\n\r\n".encode()),
        ("topics=24 stars + Z", f"GET /v1/stream/sse?topics={'*' * 24}Z HTTP/1.1\r\n{h}\r\n"
         .encode()),
        ("ntfy 60,000-digit delay", f"POST /x HTTP/1.1\r\n{h}X-Delay: {'9' * 60000}\r\n"
         "Content-Length: 2\r\n\r\nhi".encode()),
    ]  # fmt: skip


async def send_raw(d: Daemon, data: bytes) -> None:
    with trio.move_on_after(3):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", d.port)
        except OSError:
            return
        async with stream:
            try:
                await stream.send_all(data)
                await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def alive(d: Daemon, pid: int) -> bool:
    return d.proc is not None and d.proc.poll() is None and d.proc.pid == pid


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [args.daemon_python, "-m", "notifyd"] if args.daemon_python else None
        d = Daemon(Path(tmp) / "data", **({"command": command} if command else {}), extra_env={
            "NOTIFYD_HEADER_TIMEOUT": "2", "NOTIFYD_BODY_TIMEOUT": "2",
            "NOTIFYD_PUBLISH_RATE": "0",
        })  # fmt: skip
        d.data_dir.mkdir()
        d.start()
        assert d.proc is not None
        pid = d.proc.pid
        token = d.user("mallory", grants={"*": "rw"})
        with d.admin() as c:
            app = c.post("/v1/tokens", json={"user": "mallory", "scopes": ["publish"]}).json()
            client = c.post("/v1/tokens", json={"user": "mallory", "scopes": ["subscribe"]}).json()
        world = World(d, pid, token, app["token"], client["token"])
        probe = Probe(d.url)
        probe.start()
        rows: list[tuple[str, str, bool]] = []
        try:
            await trio.sleep(args.quiet)  # the reference: nothing but the probe
            rows.append(("q", "quiet", alive(d, pid)))

            probe.phase = "r"
            for name, data in reproductions(d, token) if "r" in args.phases else ():
                for _ in range(100):
                    await send_raw(d, data)
                if not alive(d, pid):
                    rows.append(("r", f"reproductions: ended by {name!r}", False))
                    break
            else:
                if "r" in args.phases:
                    rows.append(("r", "reproductions (7 x 100)", True))

            if alive(d, pid) and "f" in args.phases:
                probe.phase = "f"
                corpus = Corpus(world, args.seed)
                cases = [corpus.case() for _ in range(args.cases)]

                async def one(c: object) -> None:
                    try:
                        await run_case(world, c)  # type: ignore[arg-type]
                    except (AssertionError, trio.TooSlowError, OSError, ValueError):
                        pass  # the fuzz test judges answers; here only liveness counts

                for start in range(0, len(cases), BATCH):
                    async with trio.open_nursery() as nursery:
                        for c in cases[start : start + BATCH]:
                            nursery.start_soon(one, c)
                rows.append(("f", f"fuzzing corpus ({args.cases} cases)", alive(d, pid)))

            if alive(d, pid) and "p" in args.phases:
                probe.phase = "p"
                with trio.move_on_after(args.pattern_seconds) as timer:
                    await adversarial_patterns(d, token)
                what = "adversarial patterns + publishing"
                if timer.cancelled_caught:  # the publishes never came back
                    what = f"adversarial patterns: no answer in {args.pattern_seconds:g} s"
                rows.append(("p", what, alive(d, pid)))
        finally:
            probe.finish()
            if d.proc is not None and d.proc.poll() is None:
                try:
                    d.stop()
                except AssertionError:  # frozen: SIGTERM went unanswered, it was killed
                    rows.append(("-", "SIGTERM unanswered for 20 s: killed", False))
        print_table(probe, rows)


async def adversarial_patterns(d: Daemon, token: str) -> None:
    pattern = "*a" * 8 + "Z"  # at the wildcard cap: accepted, and never matching
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=d.url, headers=headers, timeout=None) as c:
        await c.put("/v1/preferences", json={"rules": [{"topic": pattern, "mute": True}]})
        r = await c.post("/v1/tokens", json={"scopes": ["subscribe"], "topics": pattern})
        narrowed = r.json().get("token", token)

        async def stream(cancel: trio.CancelScope, tok: str) -> None:
            with cancel:
                try:
                    async with c.stream("GET", "/v1/stream/sse",
                                        params={"topics": pattern, "token": tok}) as resp:  # fmt: skip
                        async for _ in resp.aiter_bytes():
                            pass
                except httpx.HTTPError:
                    pass

        scopes = [trio.CancelScope() for _ in range(50)]
        async with trio.open_nursery() as nursery:
            for i, scope in enumerate(scopes):
                nursery.start_soon(stream, scope, narrowed if i % 2 else token)
            topic = "/".join(["a" * 63] * 4)[:255].rstrip("/")
            for _ in range(200):
                batch = [{"topic": topic, "title": "t"} for _ in range(100)]
                await c.post("/v1/events", json=batch)
            for scope in scopes:
                scope.cancel()


def print_table(probe: Probe, rows: list[tuple[str, str, bool]]) -> None:
    print("\nhostile input: /healthz every 50 ms while the daemon is attacked")
    line = "+-------+----------------------------------------------+--------+---------+---------+---------+--------+-------+"
    print(line)
    print(
        "| phase | what                                         | probes | p50 ms  | p99 ms  | max ms  | missed | alive |"
    )
    print(line)
    for key, what, ok in rows:
        xs = sorted(probe.samples.get(key, []))
        if xs:
            p50 = statistics.median(xs) * 1000
            p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000
            mx = xs[-1] * 1000
            figs = f"{p50:7.1f} | {p99:7.1f} | {mx:7.1f}"
        else:
            figs = f"{'-':>7} | {'-':>7} | {'-':>7}"
        print(f"| {key:<5} | {what[:44]:<44} | {len(xs):>6} | {figs} | "
              f"{probe.missed.get(key, 0):>6} | {'yes' if ok else 'NO':<5} |")  # fmt: skip
    print(line)
    worst = max((max(v) for v in probe.samples.values() if v), default=0.0)
    missed = sum(probe.missed.values())
    met = worst <= 1.0 and missed == 0 and all(ok for _, _, ok in rows)
    print(f"target: every probe answered within 1 s and the daemon alive: "
          f"{'met' if met else 'MISSED'} (slowest {worst * 1000:.0f} ms, {missed} missed)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="fuzzing cases for (f)")
    parser.add_argument("--seed", type=int, default=20261205, help="fuzzing corpus seed")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of (q)")
    parser.add_argument("--phases", default="rfp", help="which of r, f, p to run (q always)")
    parser.add_argument(
        "--pattern-seconds",
        type=float,
        default=60,
        help="give up on (p) after this long (a frozen daemon never answers)",
    )
    parser.add_argument(
        "--daemon-python",
        help="run the daemon with this interpreter, from the "
        "working directory (an older checkout, to compare)",
    )
    args = parser.parse_args()
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
