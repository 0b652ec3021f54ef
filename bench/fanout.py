"""Live fan-out latency and replay speed of notifyd's stream endpoints.

(c) publish → WebSocket latency: S subscribers (default 100) on one topic, a
    publisher at a steady R events/s (default 200, so 20,000 frames/s) for D s
    (default 10, after a 1 s warm-up that is left out of the figures). Every event
    body carries the wall-clock time (``time.time()``) just before its POST was
    written; every subscriber notes when the frame arrived. Reported: p50/p95/p99/max
    publish → receive latency over all deliveries, delivered frames/s, missing or
    duplicated frames, and the CPU share of the subscriber processes (if they are
    saturated, their own queueing shows up as latency). Target: p99 ≤ 50 ms.
(d) replay: 10,000 events are published in batches of 1,000, then a new client
    connects with ``since=<the id before them>`` and the time until it holds all
    10,000 is measured, for WebSocket and for SSE (3 runs each; the median counts).
    Target: ≤ 2 s.

Subscribers are hand-written minimal WebSocket clients on raw non-blocking sockets
and epoll (upgrade request, then unmasked server frames parsed in place), spread
over separate processes from the daemon; the publisher is a paced HTTP/1.1 client
on raw keep-alive sockets in the main process.

Run:  .venv/bin/python bench/fanout.py [--subscribers 100] [--rate 200] [--duration 10]
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import sys
import time
from array import array
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
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
    request,
    self_cpu_seconds,
    write_result,
)

TOPIC = "bench.fanout"
REPLAY_TOPIC = "bench.replay"
TARGET_P99_MS = 50.0
TARGET_REPLAY_S = 2.0
#: (e): 2,000 connected subscribers, 200 events/s, each event to 100 of them
TARGET_SPREAD_P99_MS = 100.0
TARGET_SPREAD_FRAMES = 20_000.0
EVENT_PREFIX = b'{"type":"event"'


# -- a minimal WebSocket client ------------------------------------------------------


def ws_connect(
    addr: tuple[str, int], path: str, timeout: float = 10.0
) -> tuple[socket.socket, bytearray]:
    """Open a WebSocket; return the socket and any bytes that followed the 101."""
    sock = socket.create_connection(addr, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed during the WebSocket handshake: {buf!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"WebSocket upgrade refused: {head[:200]!r} {rest[:300]!r}")
    return sock, bytearray(rest)


def ws_client_frame(payload: bytes, opcode: int) -> bytes:
    """A masked client frame (control frames only: small payloads)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def ws_parse(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the start of ``buf`` as (opcode, payload), and bytes used."""
    frames = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        opcode = buf[pos] & 0x0F
        n = buf[pos + 1] & 0x7F
        hl = 2
        if n == 126:
            if size - pos < 4:
                break
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            hl = 4
        elif n == 127:
            if size - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            hl = 10
        end = pos + hl + n
        if end > size:
            break
        frames.append((opcode, bytes(buf[pos + hl : end])))
        pos = end
    return frames, pos


# -- subscriber processes ------------------------------------------------------------


def subscriber_worker(addr: tuple[str, int], subs: list[tuple[str, int]], pipe: Any) -> None:
    """Hold one WebSocket subscription per ``(path, topic index)`` of ``subs``; record
    arrival times until told to stop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ep = select.epoll()
    topic_of: dict[int, int] = {}
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    ids: dict[int, array] = {}
    pending: dict[int, bytearray] = {}
    opened: dict[int, float] = {}
    ended: set[int] = set()  # streams the server closed
    lifetimes: list[float] = []  # seconds from upgrade to the server ending the stream
    try:
        for path, topic_index in subs:
            sock, rest = ws_connect(addr, path)
            sock.setblocking(False)
            fd = sock.fileno()
            topic_of[fd] = topic_index
            opened[fd] = time.monotonic()
            socks[fd], bufs[fd], ids[fd] = sock, bytearray(), array("q")
            pending[fd] = rest
            ep.register(fd, select.EPOLLIN)
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    pipe.send({"ready": len(socks)})
    control = pipe.fileno()
    ep.register(control, select.EPOLLIN)

    latencies = array("d")
    first_rx = last_rx = 0.0
    closed: dict[str, int] = {}
    other_frames = 0
    cpu_go = cpu_stop = wall_go = wall_stop = 0.0
    stop_ids: list[int] | None = None
    deadline = float("inf")
    loads = orjson.loads
    now_wall = time.time

    def handle(fd: int, data: bytes, t: float) -> None:
        nonlocal first_rx, last_rx, other_frames
        buf = bufs[fd]
        buf += data
        frames, used = ws_parse(buf)
        if used:
            del buf[:used]
        for opcode, payload in frames:
            if opcode == 0x1 and payload.startswith(EVENT_PREFIX):
                ev = loads(payload)["event"]
                ids[fd].append(ev["id"])
                body = ev["body"]
                if body[0] == "m":
                    latencies.append(t - float(body[2:]))
                    if not first_rx:
                        first_rx = t
                    last_rx = t
            elif opcode == 0x9:
                socks[fd].send(ws_client_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                closed[f"close {code}"] = closed.get(f"close {code}", 0) + 1
                lifetimes.append(time.monotonic() - opened[fd])
                ended.add(fd)
                ep.unregister(fd)
            else:
                other_frames += 1

    for fd, rest in pending.items():
        if rest:
            handle(fd, rest, now_wall())
    while True:
        if stop_ids is not None:
            done = all(
                (a and a[-1] >= stop_ids[topic_of[fd]]) or fd in ended or not stop_ids[topic_of[fd]]
                for fd, a in ids.items()
            )
            if done or time.monotonic() > deadline:
                break
        for fd, _ev in ep.poll(0.1):
            if fd == control:
                msg = pipe.recv()
                if msg[0] == "go":
                    cpu_go, wall_go = self_cpu_seconds(), time.monotonic()
                elif msg[0] == "stop":
                    cpu_stop, wall_stop = self_cpu_seconds(), time.monotonic()
                    stop_ids, deadline = msg[1], time.monotonic() + msg[2]
                continue
            try:
                data = socks[fd].recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            t = now_wall()
            if not data:
                closed["eof"] = closed.get("eof", 0) + 1
                lifetimes.append(time.monotonic() - opened[fd])
                ended.add(fd)
                ep.unregister(fd)
                continue
            handle(fd, data, t)
    for sock in socks.values():
        sock.close()
    pipe.send(
        {
            "latencies": latencies,
            "ids": list(ids.values()),
            "first_rx": first_rx,
            "last_rx": last_rx,
            "closed": closed,
            "lifetimes": lifetimes,
            "other_frames": other_frames,
            "cpu_share": (cpu_stop - cpu_go) / max(wall_stop - wall_go, 1e-9),
        }
    )


# -- the paced publisher ---------------------------------------------------------------


class _PubConn:
    __slots__ = ("sock", "parser", "sent_at", "busy")

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.parser = ResponseParser()
        self.sent_at = 0.0
        self.busy = False


def paced_publish(
    addr: tuple[str, int],
    token: str,
    rate: float,
    warmup: float,
    duration: float,
    n_conns: int,
    topics: list[str] | None = None,
) -> dict[str, Any]:
    """Publish single events at a steady ``rate`` (open loop) over a few keep-alive conns,
    round-robin over ``topics`` (default: the one fan-out topic)."""
    topic_names = [t.encode() for t in (topics or [TOPIC])]
    n_topics = len(topic_names)
    id_topic: dict[int, int] = {}  # event id -> index in topics
    conns = [_PubConn(addr) for _ in range(n_conns)]
    by_fd = {c.sock.fileno(): c for c in conns}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    ).encode()

    def reopen(old: _PubConn) -> _PubConn:
        ep.unregister(old.sock.fileno())
        del by_fd[old.sock.fileno()]
        old.sock.close()
        conns.remove(old)
        new = _PubConn(addr)
        conns.append(new)
        by_fd[new.sock.fileno()] = new
        ep.register(new.sock.fileno(), select.EPOLLIN)
        return new

    n_warm = int(rate * warmup)
    total = n_warm + int(rate * duration)
    interval = 1.0 / rate
    clock = time.perf_counter
    t0 = clock() + 0.05
    sent = 0
    ids: list[int] = []
    http_lat = array("d")
    lag_max = 0.0
    late = 0
    errors: dict[str, int] = {}
    first_measured_send = 0.0
    idle = list(conns)
    while sent < total or len(idle) < len(conns):
        now = clock()
        while sent < total and idle and now >= t0 + sent * interval:
            c = idle.pop(0)  # round-robin: no connection sits idle for long
            due = t0 + sent * interval
            lag = now - due
            if lag > 0.002:
                late += 1
            lag_max = max(lag_max, lag)
            wall = time.time()
            kind = "w" if sent < n_warm else "m"
            if sent == n_warm:
                first_measured_send = wall
            body = b'{"topic":"%s","title":"fanout %d","body":"%s:%.6f"}' % (
                topic_names[sent % n_topics],
                sent,
                kind.encode(),
                wall,
            )
            c.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            c.sent_at, c.busy = clock(), True
            sent += 1
            now = clock()
        if sent < total and idle:
            timeout = max(0.0, t0 + sent * interval - clock())
        else:
            timeout = 0.05
        for fd, _ev in ep.poll(timeout):
            c = by_fd[fd]
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data or not c.busy:
                # The server may close (or time out, 408) a keep-alive connection
                # that sat idle: open another. Only a request in flight is lost.
                if c.busy:
                    raise ConnectionError("the daemon closed a publisher connection mid-request")
                if data:
                    errors["unsolicited answer on an idle connection"] = (
                        errors.get("unsolicited answer on an idle connection", 0) + 1
                    )
                idle.remove(c)
                idle.append(reopen(c))
                continue
            for status, payload, close in c.parser.feed(data):
                http_lat.append(clock() - c.sent_at)
                c.busy = False
                if status == 201:
                    ev = orjson.loads(payload)
                    ids.append(ev["id"])
                    if n_topics > 1:
                        id_topic[ev["id"]] = int(ev["title"][7:]) % n_topics
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                if close:  # hypercorn's keep_alive_max_requests: reopen
                    c = reopen(c)
                idle.append(c)
    for c in conns:
        c.sock.close()
    return {
        "sent": sent,
        "warmup_events": n_warm,
        "ids": ids,
        "id_topic": id_topic,
        "http_latency": latency_summary(http_lat),
        "late_sends": late,
        "max_send_lag_ms": lag_max * 1e3,
        "errors": errors,
        "first_measured_send": first_measured_send,
        "publish_seconds": clock() - t0,
    }


# -- (c) fan-out -----------------------------------------------------------------------


def run_fanout(
    d: Daemon,
    subs: int,
    procs: int,
    rate: float,
    warmup: float,
    duration: float,
    pub_conns: int,
    profile: str | None = None,
    n_topics: int = 1,
    label: str = "(c)",
) -> dict[str, Any]:
    """``subs`` subscribers spread evenly over ``n_topics`` topics (subscriber i on topic
    i mod n_topics); events are published round-robin over the topics, so each event
    reaches ``subs / n_topics`` subscribers."""
    since = d.health()["last_event_id"]
    topics = [TOPIC] if n_topics == 1 else [f"{TOPIC}.{i}" for i in range(n_topics)]
    paths = [
        (f"/v1/stream?topics={topics[i % n_topics]}&since={since}&token={d.token}", i % n_topics)
        for i in range(subs)
    ]
    progress(
        f"{label} connecting {subs} WebSocket subscribers on {n_topics} topic(s) "
        f"from {procs} process(es)"
    )
    children = []
    shares = []
    for i in range(procs):
        mine = paths[i::procs]
        shares.append(mine)
        parent_end, child_end = mp.Pipe()
        p = mp.Process(target=subscriber_worker, args=(d.addr, mine, child_end), daemon=True)
        p.start()
        child_end.close()
        children.append((p, parent_end))
    for _p, conn in children:
        if not conn.poll(120):
            raise RuntimeError("a subscriber process did not connect in time")
        msg = conn.recv()
        if "error" in msg:
            raise RuntimeError(f"subscriber process failed: {msg['error']}")
    deadline = time.monotonic() + 30
    while d.health().get("stream_clients") != subs and time.monotonic() < deadline:
        time.sleep(0.05)
    progress(
        f"{label} {d.health().get('stream_clients')} stream clients; publishing {rate:g} "
        f"events/s for {warmup:g} s warm-up + {duration:g} s"
    )
    meter, machine = CpuMeter(d.pid), MachineMeter()
    for _p, conn in children:
        conn.send(("go",))
    meter.start()
    machine.start()
    pub_cpu0 = self_cpu_seconds()
    profiler = None
    if profile:
        profiler = Profiler(d.pid, "fanout", warmup + duration, gil=profile == "gil")
        profiler.start()
    pub = paced_publish(
        d.addr, d.token, rate, warmup, duration, pub_conns, topics if n_topics > 1 else None
    )
    server_cpu, machine_cores = meter.stop(), machine.stop()
    if profiler:
        print(f"--- py-spy profile of the fan-out run ---\n{profiler.finish()}", file=sys.stderr)
    pub_cpu = (self_cpu_seconds() - pub_cpu0) / pub["publish_seconds"]
    expected = pub["ids"]
    expected_by_topic: list[set[int]] = [set() for _ in topics]
    for ev_id in expected:
        expected_by_topic[pub["id_topic"].get(ev_id, 0)].add(ev_id)
    last_ids = [max(e) if e else 0 for e in expected_by_topic]
    for _p, conn in children:
        conn.send(("stop", last_ids, 15.0))
    reports = []
    for p, conn in children:
        if not conn.poll(60):
            raise RuntimeError("a subscriber process did not report back")
        reports.append(conn.recv())
        p.join(10)
    progress(f"{label} done; computing figures")

    latencies: list[float] = []
    missing = duplicates = reordered = 0
    closed: dict[str, int] = {}
    lifetimes = sorted(x for r in reports for x in r["lifetimes"])
    for share, r in zip(shares, reports, strict=True):
        latencies.extend(r["latencies"])
        for code, n in r["closed"].items():
            closed[code] = closed.get(code, 0) + n
        for (_path, topic_index), got in zip(share, r["ids"], strict=True):
            got_list = list(got)
            got_set = set(got_list)
            missing += len(expected_by_topic[topic_index] - got_set)
            duplicates += len(got_list) - len(got_set)
            reordered += sum(1 for a, b in zip(got_list, got_list[1:], strict=False) if b <= a)
    first_send = pub["first_measured_send"]
    last_rx = max(r["last_rx"] for r in reports)
    span = last_rx - first_send if last_rx and first_send else float("nan")
    measured_deliveries = len(latencies)
    result = {
        "subscribers": subs,
        "subscriber_processes": procs,
        "rate_events_per_s": rate,
        "duration_s": duration,
        "events_published": pub["sent"],
        "events_acknowledged": len(expected),
        "deliveries_measured": measured_deliveries,
        "deliveries_expected_measured": (pub["sent"] - pub["warmup_events"]) * subs // n_topics,
        "topics": n_topics,
        "subscribers_per_event": subs // n_topics,
        "latency": latency_summary(latencies),
        "delivered_frames_per_s": measured_deliveries / span if span == span else float("nan"),
        "missing_frames": missing,
        "duplicate_frames": duplicates,
        "out_of_order_frames": reordered,
        "closed_by_server": closed,
        "closed_stream_lifetime_s": [lifetimes[0], lifetimes[-1]] if lifetimes else None,
        "publish_http_latency": pub["http_latency"],
        "publisher_late_sends": pub["late_sends"],
        "publisher_max_send_lag_ms": pub["max_send_lag_ms"],
        "publisher_errors": pub["errors"],
        "server_cpu_share": server_cpu,
        "server_main_thread_cpu_share": meter.threads["main"],
        "server_busiest_other_thread_cpu_share": meter.threads["busiest_other"],
        "subscriber_cpu_share": [r["cpu_share"] for r in reports],
        "publisher_cpu_share": pub_cpu,
        "machine_busy_cores": machine_cores,
    }
    result["other_busy_cores"] = max(
        0.0, machine_cores - server_cpu - pub_cpu - sum(result["subscriber_cpu_share"])
    )
    lat = result["latency"]
    progress(
        f"{label} p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms, "
        f"{result['delivered_frames_per_s']:,.0f} frames/s, missing {missing}, "
        f"server CPU {server_cpu:.0%}, subscriber CPU "
        + ", ".join(f"{c:.0%}" for c in result["subscriber_cpu_share"])
    )
    return result


# -- (d) replay ---------------------------------------------------------------------------


def publish_batches(d: Daemon, count: int, batch: int) -> tuple[int, int]:
    """Publish ``count`` events on the replay topic; return (id before them, last id)."""
    before = d.health()["last_event_id"]
    last = before
    for start in range(0, count, batch):
        n = min(batch, count - start)
        events = [
            {
                "topic": REPLAY_TOPIC,
                "title": f"replay {start + i}",
                "body": f"Replay event {start + i}: certificate for host-{i % 50} renews in 14 days.",
            }
            for i in range(n)
        ]
        status, body = request("POST", "/v1/events", tcp=d.addr, body=events, token=d.token)
        if status != 201:
            raise RuntimeError(f"batch publish answered {status}: {str(body)[:200]}")
        last = body["events"][-1]["id"]
    return before, last


def ws_replay(d: Daemon, since: int, last: int, count: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    sock, buf = ws_connect(
        d.addr, f"/v1/stream?topics={REPLAY_TOPIC}&since={since}&token={d.token}"
    )
    t_open = time.perf_counter() - t0
    got: list[int] = []
    first = 0.0
    try:
        while True:
            frames, used = ws_parse(buf)
            del buf[:used]
            for opcode, payload in frames:
                if opcode == 0x1 and payload.startswith(EVENT_PREFIX):
                    if not got:
                        first = time.perf_counter() - t0
                    got.append(orjson.loads(payload)["event"]["id"])
                elif opcode == 0x8:
                    raise ConnectionError(f"server closed the stream: {payload!r}")
            if got and got[-1] >= last:
                break
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the stream")
            buf += chunk
        elapsed = time.perf_counter() - t0
    finally:
        sock.close()
    return _replay_result("websocket", elapsed, t_open, first, got, since, count)


def sse_replay(d: Daemon, since: int, last: int, count: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    sock = socket.create_connection(d.addr, timeout=10)
    path = f"/v1/stream/sse?topics={REPLAY_TOPIC}&since={since}&token={d.token}"
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {d.addr[0]}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    buf = b""
    got: list[int] = []
    first = t_open = 0.0
    header_done = False
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the SSE stream")
            buf += chunk
            if not header_done:
                if b"\r\n\r\n" not in buf:
                    continue
                head, _, buf = buf.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(f"SSE refused: {head[:200]!r}")
                header_done, t_open = True, time.perf_counter() - t0
            records = buf.split(b"\n\n")
            buf = records.pop()
            for rec in records:
                if rec.startswith(b"id: "):
                    if not got:
                        first = time.perf_counter() - t0
                    got.append(int(rec[4 : rec.index(b"\n")]))
            if got and got[-1] >= last:
                break
        elapsed = time.perf_counter() - t0
    finally:
        sock.close()
    return _replay_result("sse", elapsed, t_open, first, got, since, count)


def _replay_result(
    kind: str, elapsed: float, t_open: float, first: float, got: list[int], since: int, count: int
) -> dict[str, Any]:
    expected = set(range(since + 1, since + count + 1))
    return {
        "kind": kind,
        "seconds": elapsed,
        "open_seconds": t_open,
        "first_event_seconds": first,
        "received": len(got),
        "missing": len(expected - set(got)),
        "in_order": all(a < b for a, b in zip(got, got[1:], strict=False)),
        "events_per_s": len(got) / elapsed if elapsed else float("nan"),
    }


def run_replay(d: Daemon, count: int, batch: int, runs: int) -> dict[str, Any]:
    progress(f"(d) publishing {count:,} events in batches of {batch:,}")
    since, last = publish_batches(d, count, batch)
    progress(f"(d) replaying ids {since + 1}..{last}, {runs} runs each over WebSocket and SSE")
    out: dict[str, Any] = {"events": count, "since": since, "last_id": last}
    for kind, fn in (("websocket", ws_replay), ("sse", sse_replay)):
        results = [fn(d, since, last, count) for _ in range(runs)]
        secs = [r["seconds"] for r in results]
        out[kind] = {
            "runs": results,
            "median_seconds": statistics.median(secs),
            "best_seconds": min(secs),
        }
        progress(
            f"(d) {kind}: "
            + ", ".join(f"{s:.3f} s" for s in secs)
            + f"; missing {[r['missing'] for r in results]}"
        )
    return out


# -- main --------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subscribers", type=int, default=100, help="WebSocket subscribers in (c)")
    ap.add_argument("--sub-procs", type=int, default=2, help="processes holding the subscribers")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s published in (c)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds in (c)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds in (c)")
    ap.add_argument("--pub-conns", type=int, default=8, help="publisher keep-alive connections")
    ap.add_argument("--replay-events", type=int, default=10_000, help="events replayed in (d)")
    ap.add_argument("--replay-runs", type=int, default=3, help="runs per protocol in (d)")
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        choices=["gil", "threads"],
        help="record the daemon with py-spy while publishing in (c) (bench/results/fanout.*)",
    )
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument(
        "--spread-subscribers",
        type=int,
        default=2000,
        help="(e): subscribers spread over --spread-topics topics, events round-robin at --rate",
    )
    ap.add_argument("--spread-topics", type=int, default=20)
    ap.add_argument(
        "--one-topic-rate",
        type=float,
        default=10.0,
        help="(f): events/s when all --spread-subscribers share one topic",
    )
    ap.add_argument("--skip-spread", action="store_true", help="skip (e) and (f)")
    args = ap.parse_args()
    print(cores_note(), file=sys.stderr)
    result: dict[str, Any] = {"args": vars(args), "other_busy_cores_before": idle_check()}
    # (e)/(f) hold 2,000 streams of one user: above the default max_streams_per_user
    with Daemon(env={"NOTIFYD_MAX_STREAMS_PER_USER": "100000"}) as d:
        if not args.skip_fanout:
            result["fanout"] = run_fanout(
                d,
                args.subscribers,
                args.sub_procs,
                args.rate,
                args.warmup,
                args.duration,
                args.pub_conns,
                args.profile,
            )
        if not args.skip_spread:
            result["spread"] = run_fanout(
                d, args.spread_subscribers, args.sub_procs, args.rate, args.warmup,
                args.duration, args.pub_conns, n_topics=args.spread_topics, label="(e)",
            )  # fmt: skip
            result["one_topic"] = run_fanout(
                d, args.spread_subscribers, args.sub_procs, args.one_topic_rate, args.warmup,
                args.duration, args.pub_conns, label="(f)",
            )  # fmt: skip
        if not args.skip_replay:
            result["replay"] = run_replay(d, args.replay_events, 1000, args.replay_runs)

    rows = []
    cases = [
        ("fanout", "(c)", TARGET_P99_MS, None),
        ("spread", "(e)", TARGET_SPREAD_P99_MS, TARGET_SPREAD_FRAMES),
        ("one_topic", "(f)", TARGET_SPREAD_P99_MS, None),
    ]
    for key, label, target_p99, target_frames in cases:
        if key not in result:
            continue
        f = result[key]
        lat = f["latency"]
        met = lat["p99_ms"] <= target_p99
        complete = f["missing_frames"] == 0 and f["duplicate_frames"] == 0
        want = f["subscribers_per_event"] * f["rate_events_per_s"]
        if target_frames is not None:
            want = max(want, target_frames)
        shape = (
            f"{f['subscribers']} subs on {f['topics']} topics ({f['subscribers_per_event']} per "
            f"event) x {f['rate_events_per_s']:g} ev/s"
            if f["topics"] > 1
            else f"{f['subscribers']} subs on 1 topic x {f['rate_events_per_s']:g} ev/s"
        )
        rows.append(
            [
                f"{label} publish->WS, {shape}",
                f"p50 {lat['p50_ms']:.1f} / p95 {lat['p95_ms']:.1f} / p99 {lat['p99_ms']:.1f} / "
                f"max {lat['max_ms']:.1f} ms",
                f"p99 <= {target_p99:g} ms",
                f"{lat['p99_ms'] / target_p99:.2f} {'met' if met else 'MISSED'}",
            ]
        )
        frames_ok = complete and f["delivered_frames_per_s"] >= 0.95 * want
        rows.append(
            [
                f"{label} delivered frames/s; missing/duplicate frames",
                f"{f['delivered_frames_per_s']:,.0f} frames/s; missing {f['missing_frames']:,} "
                f"of {f['events_acknowledged'] * f['subscribers_per_event']:,}, "
                f"dup {f['duplicate_frames']}",
                f"{want:,.0f} frames/s, none missing",
                f"{f['delivered_frames_per_s'] / want:.2f} {'met' if frames_ok else 'MISSED'}",
            ]
        )
        f["latency_met"] = met
        f["complete"] = complete
    if "replay" in result:
        r = result["replay"]
        for kind in ("websocket", "sse"):
            med = r[kind]["median_seconds"]
            miss = sum(x["missing"] for x in r[kind]["runs"])
            ok = med <= TARGET_REPLAY_S and miss == 0
            r[kind]["met"] = ok
            rows.append(
                [
                    f"(d) replay {r['events']:,} events over {'WebSocket' if kind == 'websocket' else 'SSE'}",
                    f"{med:.3f} s median of {len(r[kind]['runs'])} "
                    f"(best {r[kind]['best_seconds']:.3f} s, {r['events'] / med:,.0f} ev/s)",
                    f"<= {TARGET_REPLAY_S:g} s",
                    f"{med / TARGET_REPLAY_S:.2f} {'met' if ok else 'MISSED'}",
                ]
            )
    print()
    print_table(["case", "figure", "target", "ratio/met"], rows, title="fan-out benchmark")
    for key, label, _t, _f in cases:
        if key not in result:
            continue
        f = result[key]
        h = f["publish_http_latency"]
        print(
            f"{label} publisher: {f['events_published']} events, POST p50 {h['p50_ms']:.1f} ms / "
            f"p99 {h['p99_ms']:.1f} ms, {f['publisher_late_sends']} sent > 2 ms late "
            f"(max lag {f['publisher_max_send_lag_ms']:.1f} ms)"
        )
        print(
            f"{label} CPU (share of one core while publishing): daemon {f['server_cpu_share']:.0%} "
            f"(trio thread {f['server_main_thread_cpu_share']:.0%}, SQLite writer "
            f"{f['server_busiest_other_thread_cpu_share']:.0%}), "
            "subscriber processes "
            + ", ".join(f"{c:.0%}" for c in f["subscriber_cpu_share"])
            + f", publisher {f['publisher_cpu_share']:.0%}; other processes "
            f"{f['other_busy_cores']:.2f} cores (should be ~0). A subscriber process near "
            "100 % would add its own queueing to the latency."
        )
        if f["closed_by_server"]:
            lo, hi = f["closed_stream_lifetime_s"]
            print(
                f"WARNING: the server ended {sum(f['closed_by_server'].values())} of "
                f"{f['subscribers']} streams before the run was over ({f['closed_by_server']}), "
                f"{lo:.1f}-{hi:.1f} s after they opened; frames after that count as missing."
            )
    print(cores_note())
    path = write_result("fanout", result)
    progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
