"""Publish throughput: notifyd ``POST /v1/events`` against a bare hypercorn-trio app.

(a) single events: N keep-alive connections (default 32) each send one request,
    wait for the answer, send the next (closed loop), for a fixed duration after a
    warm-up. The same load generator, in the same run, loads
    ``bench/baseline_app.py`` (a bare ASGI app on hypercorn's trio worker that
    reads the body and answers 201) and notifyd, whose 201 comes only after the
    event's group commit (WAL, synchronous=FULL), alternating between the two in
    rounds (``--rounds``, default 2) so background load hits both alike.
    Target: notifyd ≥ 0.70 × baseline.
(b) batches: 1,000 events per request from a few connections. Target: ≥ 20,000
    events/s durably.

The load generator is a hand-written HTTP/1.1 client on raw non-blocking sockets
and epoll (no asyncio, no httpx), in separate processes from the server, so it
costs a few microseconds per request; its CPU share is measured and printed.

Run:  .venv/bin/python bench/publish.py [--clients 32] [--duration 10] [--procs 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import socket
import sys
import time
from array import array
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    Baseline,
    CpuMeter,
    Daemon,
    MachineMeter,
    Profiler,
    ResponseParser,
    cores_note,
    idle_check,
    latency_summary,
    print_table,
    progress,
    self_cpu_seconds,
    write_result,
)

SINGLE_EVENT = {
    "topic": "bench.publish",
    "title": "Backup finished",
    "body": "Nightly backup of /srv finished in 42 s; 1.2 GiB written, 0 errors.",
    "priority": "default",
    "tags": ["backup"],
}
TARGET_RATIO = 0.70
TARGET_BATCH_EVENTS = 20_000


def build_request(addr: tuple[str, int], token: str | None, body: bytes) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return head.encode() + b"\r\n" + body


def batch_body(size: int) -> bytes:
    events = [
        {
            "topic": "bench.batch",
            "title": f"Batch event {i}",
            "body": f"Event {i} of a {size}-event batch: disk usage on node-{i % 17} at 81 %.",
            "priority": 1 + i % 5,
            "category": "monitoring",
        }
        for i in range(size)
    ]
    return json.dumps(events).encode()


# -- the load generator (runs in child processes) -----------------------------------


class _Conn:
    __slots__ = ("sock", "parser", "sent_at", "out", "busy")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = ResponseParser()
        self.sent_at = 0.0
        self.out = memoryview(b"")
        self.busy = False


def closed_loop_worker(
    addr: tuple[str, int],
    req: bytes,
    n_conns: int,
    start_at: float,
    warmup: float,
    duration: float,
    pipe: Any,
) -> None:
    """Keep ``n_conns`` requests in flight; report what completed in the window.

    A connection the server closes (hypercorn ends keep-alive connections after
    ``keep_alive_max_requests`` = 1000 requests, for notifyd and the baseline alike)
    is reopened at once, as a real client would; that cost is part of the figure.
    """
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    clock = time.perf_counter
    offset = time.time() - clock()
    t_start = start_at - offset
    t_measure = t_start + warmup
    t_end = t_measure + duration
    latencies = array("d")
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    completed = reconnects = 0
    cpu0 = cpu1 = 0.0
    measuring = stopping = False
    req_mv = memoryview(req)

    def open_conn() -> _Conn:
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        c = conns[s.fileno()] = _Conn(s)
        ep.register(s.fileno(), select.EPOLLIN)
        return c

    def drop(c: _Conn) -> None:
        fd = c.sock.fileno()
        ep.unregister(fd)
        c.sock.close()
        del conns[fd]

    def send(c: _Conn, now: float) -> None:
        c.sent_at = now
        c.busy = True
        try:
            n = c.sock.send(req_mv)
        except BlockingIOError:
            n = 0
        if n < len(req_mv):
            c.out = req_mv[n:]
            ep.modify(c.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    for _ in range(n_conns):
        open_conn()
    while clock() < t_start:
        time.sleep(min(0.01, t_start - clock()))
    now = clock()
    for c in list(conns.values()):
        send(c, now)
    drain_deadline = t_end + 15.0
    while True:
        now = clock()
        if not measuring and not stopping and now >= t_measure:
            measuring, cpu0 = True, self_cpu_seconds()
        if not stopping and now >= t_end:
            stopping, measuring, cpu1 = True, False, self_cpu_seconds()
        if stopping and (not any(c.busy for c in conns.values()) or now > drain_deadline):
            break
        for fd, ev in ep.poll(0.05):
            c = conns.get(fd)
            if c is None:
                continue
            if ev & select.EPOLLOUT and c.out:
                try:
                    n = c.sock.send(c.out)
                except BlockingIOError:
                    n = 0
                except OSError:
                    n = len(c.out)  # the read side reports the failure
                c.out = c.out[n:]
                if not c.out:
                    ep.modify(fd, select.EPOLLIN)
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = c.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                errors[type(exc).__name__] += 1
                data = b""
            done = c.parser.feed(data) if data else []
            now = clock()
            if done:
                c.busy = False
                if measuring and now < t_end:
                    completed += len(done)
                    latencies.append(now - c.sent_at)
                    for status, _body, _close in done:
                        statuses[status] += 1
            if not data or (done and done[-1][2]):  # the server closed the connection
                if c.busy:
                    errors["closed mid-request"] += 1
                drop(c)
                if not stopping:
                    reconnects += 1
                    send(open_conn(), now)
            elif done and not stopping:
                send(c, now)
    for c in conns.values():
        c.sock.close()
    pipe.send(
        {
            "completed": completed,
            "latencies": latencies,
            "statuses": dict(statuses),
            "errors": dict(errors),
            "reconnects": reconnects,
            "cpu_s": cpu1 - cpu0,
        }
    )
    pipe.close()


def run_segment(
    label: str,
    pid: int,
    addr: tuple[str, int],
    req: bytes,
    clients: int,
    procs: int,
    warmup: float,
    duration: float,
    profile: str | None = None,
    profile_mode: str | None = None,
) -> dict[str, Any]:
    """One closed-loop run from ``procs`` processes: raw counts, latencies and CPU shares."""
    procs = max(1, min(procs, clients))
    progress(
        f"{label}: {clients} connections from {procs} process(es), "
        f"{warmup:g} s warm-up + {duration:g} s measured"
    )
    start_at = time.time() + 0.5
    children = []
    for i in range(procs):
        share = clients // procs + (1 if i < clients % procs else 0)
        parent_end, child_end = mp.Pipe(duplex=False)
        p = mp.Process(
            target=closed_loop_worker,
            args=(addr, req, share, start_at, warmup, duration, child_end),
            daemon=True,
        )
        p.start()
        child_end.close()
        children.append((p, parent_end))
    meter, machine = CpuMeter(pid), MachineMeter()
    profiler = Profiler(pid, profile, duration, gil=profile_mode == "gil") if profile else None
    time.sleep(max(0.0, start_at + warmup - time.time()))
    meter.start()
    machine.start()
    if profiler:
        profiler.start()
    time.sleep(max(0.0, start_at + warmup + duration - time.time()))
    server_cpu, machine_cores = meter.stop(), machine.stop()
    if profiler:
        print(f"--- py-spy profile of {label} ---\n{profiler.finish()}", file=sys.stderr)
    reports = []
    for p, conn in children:
        if not conn.poll(60):
            raise RuntimeError(f"{label}: a load process did not report back")
        reports.append(conn.recv())
        p.join(10)
    seg = {
        "duration": duration,
        "completed": sum(r["completed"] for r in reports),
        "latencies": [x for r in reports for x in r["latencies"]],
        "statuses": Counter(),
        "errors": Counter(),
        "reconnects": sum(r["reconnects"] for r in reports),
        "server_cpu_s": server_cpu * duration,
        "server_main_thread_cpu_s": meter.threads["main"] * duration,
        "server_other_thread_cpu_s": meter.threads["busiest_other"] * duration,
        "client_cpu_s": sum(r["cpu_s"] for r in reports),
        "machine_cpu_s": machine_cores * duration,
        "procs": procs,
    }
    for r in reports:
        seg["statuses"].update(r["statuses"])
        seg["errors"].update(r["errors"])
    progress(f"{label}: {seg['completed'] / duration:,.0f} req/s in this segment")
    return seg


def summarize(label: str, clients: int, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the segments of one case into its figures."""
    duration = sum(s["duration"] for s in segments)
    completed = sum(s["completed"] for s in segments)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for s in segments:
        statuses.update(s["statuses"])
        errors.update(s["errors"])
    bad = sum(n for st, n in statuses.items() if not 200 <= st < 300)
    server = sum(s["server_cpu_s"] for s in segments) / duration
    client = sum(s["client_cpu_s"] for s in segments) / duration
    machine = sum(s["machine_cpu_s"] for s in segments) / duration
    main_thread = sum(s["server_main_thread_cpu_s"] for s in segments) / duration
    other_thread = sum(s["server_other_thread_cpu_s"] for s in segments) / duration
    out = {
        "label": label,
        "connections": clients,
        "load_processes": segments[0]["procs"],
        "segments": len(segments),
        "segment_req_per_s": [s["completed"] / s["duration"] for s in segments],
        "duration_s": duration,
        "requests": completed,
        "req_per_s": completed / duration,
        "latency": latency_summary([x for s in segments for x in s["latencies"]]),
        "statuses": {str(k): v for k, v in statuses.items()},
        "non_2xx": bad,
        "errors": dict(errors),
        "reconnects": sum(s["reconnects"] for s in segments),
        "server_cpu_share": server,
        "server_main_thread_cpu_share": main_thread,
        "server_busiest_other_thread_cpu_share": other_thread,
        "client_cpu_share": client,
        "machine_busy_cores": machine,
        "other_busy_cores": max(0.0, machine - server - client),
    }
    progress(
        f"{label}: {out['req_per_s']:,.0f} req/s, p50 {out['latency']['p50_ms']:.1f} ms, "
        f"p99 {out['latency']['p99_ms']:.1f} ms, server CPU {server:.0%}, load CPU {client:.0%}, "
        f"other processes {out['other_busy_cores']:.2f} cores, non-2xx {bad}, "
        f"errors {dict(errors) or 0}"
    )
    return out


# -- main --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=32, help="concurrent connections for (a)")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="(a) alternates baseline and notifyd this many times, splitting duration and "
        "warm-up between rounds, so drifting background load hits both alike",
    )
    ap.add_argument("--batch-size", type=int, default=1000, help="events per request in (b)")
    ap.add_argument("--batch-clients", type=int, default=4, help="connections for (b)")
    ap.add_argument("--skip-batch", action="store_true", help="only run (a)")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        choices=["gil", "threads"],
        help="record each server with py-spy during the measured window (bench/results/): "
        "'gil' samples the thread holding the GIL (default), 'threads' every active thread",
    )
    args = ap.parse_args()
    if args.profile:
        args.rounds = 1

    print(cores_note(), file=sys.stderr)
    idle_before = idle_check()
    body = json.dumps(SINGLE_EVENT).encode()
    rounds = max(1, args.rounds)
    seg_dur, seg_warm = args.duration / rounds, args.warmup / rounds
    cases: dict[str, Any] = {}
    base_segs: list[dict] = []
    single_segs: list[dict] = []

    with Baseline() as base, Daemon() as d:
        base_req = build_request(base.addr, None, body)
        single_req = build_request(d.addr, d.token, body)
        for r in range(rounds):
            tag = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
            base_segs.append(
                run_segment(
                    "baseline hypercorn-trio" + tag,
                    base.pid,
                    base.addr,
                    base_req,
                    args.clients,
                    args.procs,
                    seg_warm,
                    seg_dur,
                    "publish-baseline" if args.profile else None,
                    args.profile,
                )
            )
            single_segs.append(
                run_segment(
                    "notifyd single" + tag,
                    d.pid,
                    d.addr,
                    single_req,
                    args.clients,
                    args.procs,
                    seg_warm,
                    seg_dur,
                    "publish-single" if args.profile else None,
                    args.profile,
                )
            )
        cases["baseline"] = summarize("baseline hypercorn-trio", args.clients, base_segs)
        cases["single"] = summarize("notifyd single", args.clients, single_segs)
        if not args.skip_batch:
            req = build_request(d.addr, d.token, batch_body(args.batch_size))
            label = f"notifyd batch x{args.batch_size}"
            seg = run_segment(
                label,
                d.pid,
                d.addr,
                req,
                args.batch_clients,
                args.procs,
                args.warmup,
                args.duration,
                "publish-batch" if args.profile else None,
                args.profile,
            )
            batch = summarize(label, args.batch_clients, [seg])
            batch["events_per_request"] = args.batch_size
            batch["events_per_s"] = batch["req_per_s"] * args.batch_size
            cases["batch"] = batch
        health = d.health()
        progress(f"notifyd stored {health.get('last_event_id')} events in total")

    base_rps = cases["baseline"]["req_per_s"]
    single = cases["single"]
    ratio = single["req_per_s"] / base_rps if base_rps else float("nan")
    verdicts: dict[str, Any] = {"single_ratio": ratio, "single_ratio_met": ratio >= TARGET_RATIO}

    def lat(c: dict) -> str:
        return f"p50 {c['latency']['p50_ms']:.1f} ms / p99 {c['latency']['p99_ms']:.1f} ms"

    rows = [
        [
            f"(a) bare hypercorn-trio ASGI POST, {args.clients} conns",
            f"{base_rps:,.0f} req/s ({lat(cases['baseline'])})",
            "(reference)",
            "1.00",
        ],
        [
            f"(a) notifyd POST /v1/events, 1 event, {args.clients} conns",
            f"{single['req_per_s']:,.0f} req/s ({lat(single)})",
            f">= {TARGET_RATIO:.2f} x baseline",
            f"{ratio:.2f} {'met' if ratio >= TARGET_RATIO else 'MISSED'}",
        ],
    ]
    if "batch" in cases:
        b = cases["batch"]
        met = b["events_per_s"] >= TARGET_BATCH_EVENTS
        verdicts["batch_met"] = met
        rows.append(
            [
                f"(b) notifyd batch {args.batch_size} events/req, {args.batch_clients} conns",
                f"{b['events_per_s']:,.0f} events/s ({b['req_per_s']:.1f} req/s, {lat(b)})",
                f">= {TARGET_BATCH_EVENTS:,} events/s",
                f"{b['events_per_s'] / TARGET_BATCH_EVENTS:.2f} {'met' if met else 'MISSED'}",
            ]
        )
    print()
    print_table(["case", "figure", "target", "ratio/met"], rows, title="publish benchmark")
    detail = [
        [
            c["label"],
            f"{c['req_per_s']:,.1f}",
            c["requests"],
            f"{c['latency']['p50_ms']:.1f}",
            f"{c['latency']['p99_ms']:.1f}",
            f"{c['latency']['max_ms']:.1f}",
            c["non_2xx"] + sum(c["errors"].values()),
            f"{c['server_cpu_share']:.0%} ({c['server_main_thread_cpu_share']:.0%}"
            f" + {c['server_busiest_other_thread_cpu_share']:.0%})",
            f"{c['client_cpu_share']:.0%}",
            f"{c['other_busy_cores']:.2f}",
        ]
        for c in cases.values()
    ]
    print_table(
        [
            "case",
            "req/s",
            "requests",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "server CPU (main + writer)",
            "load CPU",
            "other cores",
        ],
        detail,
    )
    print(
        "CPU columns are shares of one core during the measured windows. Server: the whole\n"
        "process, then its main (trio) thread + its busiest other thread (notifyd: the SQLite\n"
        "writer; the process total can pass 100 % only where that thread runs without the\n"
        "GIL). Other cores: CPU used meanwhile by processes outside this benchmark (~0 on a\n"
        "quiet machine)."
    )
    if rounds > 1:
        print(
            "(a) rounds, req/s: baseline "
            + ", ".join(f"{x:,.0f}" for x in cases["baseline"]["segment_req_per_s"])
            + "; notifyd "
            + ", ".join(f"{x:,.0f}" for x in single["segment_req_per_s"])
        )
    print(cores_note())
    path = write_result(
        "publish",
        {
            "cases": cases,
            "verdicts": verdicts,
            "args": vars(args),
            "other_busy_cores_before": idle_before,
        },
    )
    progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
