"""Idle connections: how much daemon memory one live stream costs, and one event to all.

For each transport (WebSocket ``/v1/stream``, then SSE ``/v1/stream/sse``, each
against a fresh daemon): warm the daemon up with a few streams and close them,
measure its memory, open ``--connections`` idle streams (default 10,000) from
``--procs`` client processes (raw non-blocking sockets, a minimal handshake, no
reading until the end), wait until ``/healthz`` counts them all, measure again,
then publish one event and time until every connection holds it.

Memory is read from ``/proc/<pid>/status`` (VmRSS) and ``/proc/<pid>/smaps_rollup``
(USS = private pages, PSS). Reported per connection: (after − before) / N in KB.
Target (issue 7): 10,000 WebSocket subscribers at ≤ 40 KB of RSS each.

Run:  .venv/bin/python bench/connections.py [--connections 10000] [--procs 4] [--skip-sse]
"""

from __future__ import annotations

import argparse
import base64
import gc
import multiprocessing as mp
import os
import resource
import select
import socket
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    Daemon,
    cores_note,
    idle_check,
    print_table,
    progress,
    request,
    write_result,
)
from soak import raise_nofile, rss_kb  # noqa: E402

TOPIC = "bench.idle"
TARGET_KB = 40.0


def _open(addr: tuple[str, int], path: str, websocket: bool) -> socket.socket:
    sock = socket.create_connection(addr, timeout=30)
    head = f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        head += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
    sock.sendall((head + "\r\n").encode())
    return sock


def client_worker(
    addr: tuple[str, int], path: str, websocket: bool, n: int, batch: int, pipe: Any
) -> None:
    """Open ``n`` streams (``batch`` handshakes in flight at a time), hold them idle,
    then wait for one marker on every one of them."""
    raise_nofile()
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    want = b"HTTP/1.1 101" if websocket else b"HTTP/1.1 200"
    try:
        opened = 0
        while opened < n:
            wave = [_open(addr, path, websocket) for _ in range(min(batch, n - opened))]
            for sock in wave:  # every handshake answered before the next wave
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError(f"closed during the handshake: {buf[:200]!r}")
                    buf += chunk
                if not buf.startswith(want):
                    raise ConnectionError(f"stream refused: {buf[:300]!r}")
                sock.setblocking(False)
                socks[sock.fileno()] = sock
                bufs[sock.fileno()] = bytearray()
            opened += len(wave)
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc} (after {len(socks)} streams)"})
        return
    pipe.send({"ready": len(socks)})
    msg = pipe.recv()  # ("expect", marker, timeout)
    marker, timeout = msg[1], msg[2]
    for fd in socks:
        ep.register(fd, select.EPOLLIN)
    waiting = set(socks)
    last = 0.0
    closed = 0
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for fd, _ev in ep.poll(0.2):
            try:
                data = socks[fd].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed += 1
                ep.unregister(fd)
                waiting.discard(fd)
                continue
            buf = bufs[fd]
            buf += data
            if fd in waiting and marker in buf:
                waiting.discard(fd)
                last = time.time()
                buf.clear()
            elif len(buf) > 4096:
                del buf[:-256]
    pipe.send({"received": len(socks) - len(waiting) - closed, "closed": closed, "last": last})
    pipe.recv()  # ("close",)
    for sock in socks.values():
        sock.close()


def measure(kind: str, n: int, procs: int, batch: int) -> dict[str, Any]:
    websocket = kind == "websocket"
    env = {
        # the benchmark's one user holds every stream
        "NOTIFYD_MAX_STREAMS_PER_USER": str(n + 1000),
        "NOTIFYD_KEEPALIVE_SECONDS": "3600",  # idle means idle while measuring
    }
    with Daemon(env=env) as d:
        path = (
            "/v1/stream" if websocket else "/v1/stream/sse"
        ) + f"?topics={TOPIC}&token={d.token}"
        # warm-up: import and cache what the first streams need, then back to none
        warm = [_open(d.addr, path, websocket) for _ in range(50)]
        for s in warm:
            s.recv(4096)
        for s in warm:
            s.close()
        deadline = time.monotonic() + 20
        while d.health().get("stream_clients") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        before = rss_kb(d.pid)
        progress(
            f"[{kind}] daemon RSS {before['rss'] / 1024:.1f} MB; opening {n:,} streams "
            f"from {procs} processes"
        )
        t0 = time.monotonic()
        children = []
        for i in range(procs):
            share = n // procs + (1 if i < n % procs else 0)
            parent_end, child_end = mp.Pipe()
            p = mp.Process(
                target=client_worker,
                args=(d.addr, path, websocket, share, batch, child_end),
                daemon=True,
            )
            p.start()
            child_end.close()
            children.append((p, parent_end))
        for _p, conn in children:
            if not conn.poll(600):
                raise RuntimeError("a client process did not connect in time")
            msg = conn.recv()
            if "error" in msg:
                raise RuntimeError(f"client process failed: {msg['error']}")
        opened_s = time.monotonic() - t0
        deadline = time.monotonic() + 60
        while d.health().get("stream_clients") != n and time.monotonic() < deadline:
            time.sleep(0.1)
        registered = d.health().get("stream_clients")
        time.sleep(2)  # let the handshake buffers settle
        after = rss_kb(d.pid)
        progress(
            f"[{kind}] {registered:,} streams registered in {opened_s:.1f} s; daemon RSS "
            f"{after['rss'] / 1024:.1f} MB"
        )
        marker = b"idle-marker-%d" % time.time_ns()
        for _p, conn in children:
            conn.send(("expect", marker, 120.0))
        t_pub = time.time()
        status, body = request(
            "POST",
            "/v1/events",
            tcp=d.addr,
            token=d.token,
            body={"topic": TOPIC, "title": "to everyone", "body": marker.decode()},
        )
        if status != 201:
            raise RuntimeError(f"publish answered {status}: {body}")
        reports = []
        for _p, conn in children:
            if not conn.poll(180):
                raise RuntimeError("a client process did not report back")
            reports.append(conn.recv())
        after_fanout = rss_kb(d.pid)
        for p, conn in children:
            conn.send(("close",))
            p.join(30)
    received = sum(r["received"] for r in reports)
    last = max(r["last"] for r in reports)
    out = {
        "kind": kind,
        "connections": n,
        "registered": registered,
        "open_seconds": opened_s,
        "before_kb": before,
        "after_kb": after,
        "after_fanout_kb": after_fanout,
        "rss_per_conn_kb": (after["rss"] - before["rss"]) / n,
        "uss_per_conn_kb": (after.get("uss", 0) - before.get("uss", 0)) / n,
        "pss_per_conn_kb": (after.get("pss", 0) - before.get("pss", 0)) / n,
        "received": received,
        "closed_by_server": sum(r["closed"] for r in reports),
        "fanout_seconds": last - t_pub if last else float("nan"),
    }
    progress(
        f"[{kind}] {out['rss_per_conn_kb']:.1f} KB RSS / {out['uss_per_conn_kb']:.1f} KB USS per "
        f"stream; event reached {received:,} of {n:,} in {out['fanout_seconds']:.2f} s"
    )
    gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--batch", type=int, default=50, help="handshakes in flight per process")
    ap.add_argument("--skip-sse", action="store_true")
    args = ap.parse_args()
    print(cores_note(), file=sys.stderr)
    raise_nofile()
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 256:
        progress(f"WARNING: open-files limit {soft} is low for {args.connections:,} streams")
    result: dict[str, Any] = {"args": vars(args), "other_busy_cores_before": idle_check()}
    kinds = ["websocket"] + ([] if args.skip_sse else ["sse"])
    result["runs"] = [measure(k, args.connections, args.procs, args.batch) for k in kinds]
    rows = []
    for r in result["runs"]:
        ok = r["rss_per_conn_kb"] <= TARGET_KB
        rows.append(
            [
                f"{r['connections']:,} idle {r['kind']} streams",
                f"{r['before_kb']['rss'] / 1024:.1f} -> {r['after_kb']['rss'] / 1024:.1f} MB",
                f"{r['rss_per_conn_kb']:.1f} KB (USS {r['uss_per_conn_kb']:.1f})",
                f"<= {TARGET_KB:g} KB: {r['rss_per_conn_kb'] / TARGET_KB:.2f} "
                + ("met" if ok else "MISSED"),
                f"{r['received']:,}/{r['connections']:,} in {r['fanout_seconds']:.2f} s",
                f"{r['open_seconds']:.1f} s",
            ]
        )
    print()
    print_table(
        ["case", "daemon RSS", "per stream", "target", "one event reached", "opened in"],
        rows,
        title="idle connections",
    )
    print(cores_note())
    path = write_result("connections", result)
    progress(f"wrote {path}")
    ok = all(
        r["rss_per_conn_kb"] <= TARGET_KB and r["received"] == r["connections"]
        for r in result["runs"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
