"""The ntfy compatibility layer against notifyd's own endpoints.

(e) publish rate: N keep-alive connections (default 32) in a closed loop publish
    one event per request, alternating in rounds between ``POST /v1/events`` (a
    JSON event; notifyd's bare-ASGI fast path) and ntfy's ``POST /<topic>`` (the
    same event as a text body with ``Title``/``Priority``/``Tags`` headers, served by
    the ntfy layer's bare-ASGI handler: its parameter parsing and answer). Both
    answer only after the event's group commit. Reported: requests/s, latency, ratio ntfy / v1.
(f) stream latency: S WebSocket subscribers (default 50) on one topic, a paced
    publisher at R events/s (default 100) through ``/v1/events`` for D s, once with
    the subscribers on ``/v1/stream`` and once on ntfy's ``/<topic>/ws``. Every
    event body carries the wall-clock time of its POST; reported: p50/p95/p99/max
    publish → receive latency over all deliveries, missing frames, and the ratio
    ntfy / v1 of each percentile.

The load generators are those of ``bench/publish.py`` (closed loop on raw sockets
and epoll) and ``bench/fanout.py`` (paced publisher, minimal WebSocket clients).

Run:  .venv/bin/python bench/compat.py [--clients 32] [--duration 6] [--subscribers 50]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import select
import sys
import time
from array import array
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    CpuMeter,
    Daemon,
    cores_note,
    idle_check,
    latency_summary,
    print_table,
    progress,
    self_cpu_seconds,
    write_result,
)
from fanout import TOPIC, paced_publish, ws_client_frame, ws_connect, ws_parse  # noqa: E402
from publish import SINGLE_EVENT, build_request, run_segment, summarize  # noqa: E402

NTFY_TOPIC = "bench-ntfy"


def build_ntfy_request(addr: tuple[str, int], token: str) -> bytes:
    """``SINGLE_EVENT`` as ntfy publishes it: the body is the message, the rest headers."""
    body = SINGLE_EVENT["body"].encode()
    return (
        f"POST /{NTFY_TOPIC} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
        f"Authorization: Bearer {token}\r\nTitle: {SINGLE_EVENT['title']}\r\n"
        f"Priority: {SINGLE_EVENT['priority']}\r\nTags: {','.join(SINGLE_EVENT['tags'])}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- (f) subscribers: notifyd frames or ntfy messages ------------------------------------


def subscriber_worker(addr: tuple[str, int], path: str, n_subs: int, pipe: Any) -> None:
    """Hold ``n_subs`` WebSocket subscriptions on ``path``; record arrival times of
    the measured events (body ``m:<time>``) until told to stop."""
    ep = select.epoll()
    socks, bufs, ids = {}, {}, {}
    pending = {}
    try:
        for _ in range(n_subs):
            sock, rest = ws_connect(addr, path)
            sock.setblocking(False)
            fd = sock.fileno()
            socks[fd], bufs[fd], ids[fd], pending[fd] = sock, bytearray(), array("q"), rest
            ep.register(fd, select.EPOLLIN)
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    pipe.send({"ready": len(socks)})
    control = pipe.fileno()
    ep.register(control, select.EPOLLIN)
    latencies = array("d")
    ended: set[int] = set()
    cpu_go = cpu_stop = wall_go = wall_stop = 0.0
    stop_id: int | None = None
    deadline = float("inf")
    loads, now_wall = orjson.loads, time.time

    def handle(fd: int, data: bytes, t: float) -> None:
        buf = bufs[fd]
        buf += data
        frames, used = ws_parse(buf)
        if used:
            del buf[:used]
        for opcode, payload in frames:
            if opcode == 0x1:
                obj = loads(payload)
                if obj.get("type") == "event":  # notifyd's frame
                    eid, body = obj["event"]["id"], obj["event"]["body"]
                elif obj.get("event") == "message":  # ntfy's message
                    eid, body = int(obj["id"]), obj["message"]
                else:
                    continue  # open, keepalive
                ids[fd].append(eid)
                if body[0] == "m":
                    latencies.append(t - float(body[2:]))
            elif opcode == 0x9:
                socks[fd].send(ws_client_frame(payload, 0xA))
            elif opcode == 0x8:
                ended.add(fd)
                ep.unregister(fd)

    for fd, rest in pending.items():
        if rest:
            handle(fd, rest, now_wall())
    while True:
        if stop_id is not None:
            done = all((a and a[-1] >= stop_id) or fd in ended for fd, a in ids.items())
            if done or time.monotonic() > deadline:
                break
        for fd, _ev in ep.poll(0.1):
            if fd == control:
                msg = pipe.recv()
                if msg[0] == "go":
                    cpu_go, wall_go = self_cpu_seconds(), time.monotonic()
                elif msg[0] == "stop":
                    cpu_stop, wall_stop = self_cpu_seconds(), time.monotonic()
                    stop_id, deadline = msg[1], time.monotonic() + msg[2]
                continue
            try:
                data = socks[fd].recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ended.add(fd)
                ep.unregister(fd)
                continue
            handle(fd, data, now_wall())
    for sock in socks.values():
        sock.close()
    pipe.send(
        {
            "latencies": latencies,
            "ids": [list(a) for a in ids.values()],
            "cpu_share": (cpu_stop - cpu_go) / max(wall_stop - wall_go, 1e-9),
        }
    )


def run_latency(
    d: Daemon, kind: str, subs: int, procs: int, rate: float, warmup: float, duration: float
) -> dict[str, Any]:
    since = d.health()["last_event_id"]
    if kind == "v1":
        path = f"/v1/stream?topics={TOPIC}&since={since}&token={d.token}"
    else:
        auth = base64.urlsafe_b64encode(f"Bearer {d.token}".encode()).decode().rstrip("=")
        path = f"/{TOPIC}/ws?since={since}&auth={auth}"
    progress(f"(f) {kind}: connecting {subs} WebSocket subscribers on {path.split('?')[0]}")
    children = []
    for i in range(procs):
        share = subs // procs + (1 if i < subs % procs else 0)
        parent_end, child_end = mp.Pipe()
        p = mp.Process(target=subscriber_worker, args=(d.addr, path, share, child_end), daemon=True)
        p.start()
        child_end.close()
        children.append((p, parent_end))
    for _p, conn in children:
        if not conn.poll(60):
            raise RuntimeError("a subscriber process did not connect in time")
        msg = conn.recv()
        if "error" in msg:
            raise RuntimeError(f"subscriber process failed: {msg['error']}")
    deadline = time.monotonic() + 10
    while d.health().get("stream_clients") != subs and time.monotonic() < deadline:
        time.sleep(0.05)
    meter = CpuMeter(d.pid)
    for _p, conn in children:
        conn.send(("go",))
    meter.start()
    pub = paced_publish(d.addr, d.token, rate, warmup, duration, 4)
    server_cpu = meter.stop()
    expected = pub["ids"]
    for _p, conn in children:
        conn.send(("stop", max(expected) if expected else since, 15.0))
    reports = []
    for p, conn in children:
        if not conn.poll(60):
            raise RuntimeError("a subscriber process did not report back")
        reports.append(conn.recv())
        p.join(10)
    latencies = [x for r in reports for x in r["latencies"]]
    expected_set = set(expected)
    missing = sum(len(expected_set - set(got)) for r in reports for got in r["ids"])
    result = {
        "endpoint": "/v1/stream" if kind == "v1" else f"/{TOPIC}/ws",
        "subscribers": subs,
        "rate_events_per_s": rate,
        "duration_s": duration,
        "events_acknowledged": len(expected),
        "deliveries_measured": len(latencies),
        "latency": latency_summary(latencies),
        "missing_frames": missing,
        "server_cpu_share": server_cpu,
        "subscriber_cpu_share": [r["cpu_share"] for r in reports],
        "publish_http_latency": pub["http_latency"],
    }
    lat = result["latency"]
    progress(
        f"(f) {kind}: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
        f"missing {missing}, server CPU {server_cpu:.0%}"
    )
    return result


# -- main --------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=32, help="connections in (e)")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes in (e)")
    ap.add_argument("--duration", type=float, default=6.0, help="measured seconds per case in (e)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case in (e)")
    ap.add_argument("--rounds", type=int, default=2, help="(e) alternates v1 and ntfy this often")
    ap.add_argument("--subscribers", type=int, default=50, help="WebSocket subscribers in (f)")
    ap.add_argument("--sub-procs", type=int, default=1, help="processes holding them")
    ap.add_argument("--rate", type=float, default=100.0, help="events/s published in (f)")
    ap.add_argument("--stream-duration", type=float, default=6.0, help="measured seconds in (f)")
    args = ap.parse_args()
    print(cores_note(), file=sys.stderr)
    result: dict[str, Any] = {"args": vars(args), "other_busy_cores_before": idle_check()}
    rounds = max(1, args.rounds)
    seg_dur, seg_warm = args.duration / rounds, args.warmup / rounds
    # more streams than the default max_streams_per_user when --subscribers is large
    with Daemon(env={"NOTIFYD_MAX_STREAMS_PER_USER": str(max(500, 4 * args.subscribers))}) as d:
        v1_req = build_request(d.addr, d.token, json.dumps(SINGLE_EVENT).encode())
        ntfy_req = build_ntfy_request(d.addr, d.token)
        segs: dict[str, list[dict]] = {"v1": [], "ntfy": []}
        for r in range(rounds):
            tag = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
            for kind, req in (("v1", v1_req), ("ntfy", ntfy_req)):
                label = ("POST /v1/events" if kind == "v1" else f"ntfy POST /{NTFY_TOPIC}") + tag
                segs[kind].append(
                    run_segment(
                        label, d.pid, d.addr, req, args.clients, args.procs, seg_warm, seg_dur
                    )  # fmt: skip
                )
        result["publish"] = {
            kind: summarize(kind, args.clients, s) for kind, s in segs.items()
        }  # fmt: skip
        result["stream"] = {
            kind: run_latency(
                d, kind, args.subscribers, args.sub_procs, args.rate, 1.0, args.stream_duration
            )  # fmt: skip
            for kind in ("v1", "ntfy")
        }

    pub, stream = result["publish"], result["stream"]
    for case in pub.values():
        case.pop("segment_req_per_s", None)
    pub_ratio = pub["ntfy"]["req_per_s"] / pub["v1"]["req_per_s"]
    ratios = {
        p: stream["ntfy"]["latency"][f"{p}_ms"] / stream["v1"]["latency"][f"{p}_ms"]
        for p in ("p50", "p95", "p99")
    }
    result["ratios"] = {
        "publish_req_per_s": pub_ratio,
        **{f"latency_{k}": v for k, v in ratios.items()},
    }

    def lat(c: dict) -> str:
        return f"p50 {c['latency']['p50_ms']:.1f} / p99 {c['latency']['p99_ms']:.1f} ms"

    def slat(c: dict) -> str:
        x = c["latency"]
        return (f"p50 {x['p50_ms']:.2f} / p95 {x['p95_ms']:.2f} / p99 {x['p99_ms']:.2f} / "
                f"max {x['max_ms']:.1f} ms, missing {c['missing_frames']}")  # fmt: skip

    rows = [
        [f"(e) POST /v1/events, 1 event, {args.clients} conns",
         f"{pub['v1']['req_per_s']:,.0f} req/s ({lat(pub['v1'])})", "1.00"],
        [f"(e) ntfy POST /<topic>, 1 message, {args.clients} conns",
         f"{pub['ntfy']['req_per_s']:,.0f} req/s ({lat(pub['ntfy'])})", f"{pub_ratio:.2f}"],
        [f"(f) /v1/stream WS, {args.subscribers} subs x {args.rate:g} ev/s", slat(stream["v1"]),
         "1.00"],
        [f"(f) ntfy /<topic>/ws, {args.subscribers} subs x {args.rate:g} ev/s",
         slat(stream["ntfy"]),
         " / ".join(f"{ratios[p]:.2f}" for p in ("p50", "p95", "p99")) + " (p50/p95/p99)"],
    ]  # fmt: skip
    print()
    print_table(["case", "figure", "ntfy / v1"], rows, title="ntfy compatibility benchmark")
    bad = sum(c["non_2xx"] for c in pub.values())
    if bad:
        print(f"WARNING: {bad} publish requests did not succeed: "
              f"{[c['statuses'] for c in pub.values()]}")  # fmt: skip
    path = write_result("compat", result)
    print(f"results: {path.relative_to(path.parent.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
