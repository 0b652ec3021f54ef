"""Do big uploads stall small publishes?

One daemon (SQLite, ``synchronous=FULL``). Small publishers (``--publishers``
keep-alive connections, each sending ``POST /v1/events`` at a fixed pace, together
``--rate`` events/s) are measured twice in the same run:

1. alone: the baseline;
2. while ``--uploaders`` other clients upload ``--size`` MiB files over and over
   (``POST /v1/attachments``, bytes streamed as fast as the daemon takes them) and
   publish an event carrying each one (``"attachment": {"id"}``).

Latency is from the time a request was due (its slot in the pace) to its answer,
so a stalled daemon cannot hide behind a late send. The issue's target (issue 18):
p99 of the small publishes stays under 100 ms during the big uploads.

    .venv/bin/python bench/attachments.py [--duration 10] [--publishers 8] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import sys
import threading
import time
from typing import Any

from _harness import (
    Daemon,
    ResponseParser,
    cores_note,
    latency_summary,
    print_table,
    progress,
    write_result,
)

TARGET_P99_MS = 100.0
MiB = 1024 * 1024


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _exchange(sock: socket.socket, parser: ResponseParser, data: bytes) -> tuple[int, bytes]:
    sock.sendall(data)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        answers = parser.feed(chunk)
        if answers:
            status, body, _ = answers[0]
            return status, body


def _request(addr: tuple[str, int], token: str, path: str, body: bytes, ctype: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def publisher(
    addr: tuple[str, int], token: str, n: int, start: float, stop: float, interval: float,
    out: list[float], errors: list[str],
) -> None:  # fmt: skip
    """Publish one small event per ``interval`` seconds from ``start`` to ``stop``."""
    body = json.dumps({"topic": f"bench/small/{n}", "title": "cpu", "body": "load 0.42"}).encode()
    req = _request(addr, token, "/v1/events", body, "application/json")
    sock, parser = _connect(addr), ResponseParser()
    due = start + interval * (n / 8.0)  # spread the publishers over the interval
    try:
        while due < stop:
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            status, answer = _exchange(sock, parser, req)
            done = time.monotonic()
            if status != 201:
                errors.append(f"{status} {answer[:200]!r}")
            else:
                out.append(done - due)
            due += interval
    finally:
        sock.close()


def uploader(addr: tuple[str, int], token: str, size: int, stop_at_wall: float, q: Any) -> None:
    """Upload ``size``-byte files and publish an event with each until ``stop_at_wall``
    (a child process: its sends never share the publishers' GIL)."""
    blob = bytes(range(256)) * (size // 256)
    uploads, seconds, errors = 0, [], []
    sock, parser = _connect(addr), ResponseParser()
    while time.time() < stop_at_wall:
        t0 = time.monotonic()
        status, answer = _exchange(
            sock, parser,
            _request(addr, token, "/v1/attachments?filename=big.bin", blob,
                     "application/octet-stream"),
        )  # fmt: skip
        if status != 201:
            errors.append(f"upload {status} {answer[:200]!r}")
            break
        att = json.loads(answer)["id"]
        body = json.dumps({"topic": "bench/files", "title": "nightly dump",
                           "attachment": {"id": att}}).encode()  # fmt: skip
        status, answer = _exchange(
            sock, parser, _request(addr, token, "/v1/events", body, "application/json")
        )
        if status != 201:
            errors.append(f"publish {status} {answer[:200]!r}")
            break
        seconds.append(time.monotonic() - t0)
        uploads += 1
    sock.close()
    q.put({"uploads": uploads, "seconds": seconds, "errors": errors})


def measure(
    d: Daemon, publishers: int, rate: float, duration: float, uploaders: int, size: int
) -> dict[str, Any]:
    interval = publishers / rate
    latencies: list[float] = []
    errors: list[str] = []
    procs, q = [], mp.get_context("spawn").Queue()
    if uploaders:
        stop_wall = time.time() + duration + 1.0
        for _ in range(uploaders):
            p = mp.get_context("spawn").Process(
                target=uploader, args=(d.addr, d.token, size, stop_wall, q)
            )
            p.start()
            procs.append(p)
        time.sleep(1.0)  # uploads under way before the measured window
    start = time.monotonic() + 0.05
    threads = [
        threading.Thread(
            target=publisher,
            args=(d.addr, d.token, n, start, start + duration, interval, latencies, errors),
        )
        for n in range(publishers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    up = {"uploads": 0, "seconds": [], "errors": []}
    for p in procs:
        got = q.get(timeout=120)
        up["uploads"] += got["uploads"]
        up["seconds"] += got["seconds"]
        up["errors"] += got["errors"]
        p.join(timeout=30)
    if errors or up["errors"]:
        raise RuntimeError(f"errors: {errors[:3]} {up['errors'][:3]}")
    return {"publish": latency_summary(latencies), "uploads": up}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--publishers", type=int, default=8, help="small publishers (connections)")
    ap.add_argument("--rate", type=float, default=200.0, help="small events/s, all together")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    ap.add_argument("--uploaders", type=int, default=2, help="clients uploading big files")
    ap.add_argument("--size-mib", type=float, default=10.0, help="size of each upload (MiB)")
    args = ap.parse_args()
    size = int(args.size_mib * MiB)
    env = {
        "NOTIFYD_ATTACHMENT_MAX_BYTES": str(max(size, 15 * MiB)),
        "NOTIFYD_ATTACHMENT_USER_QUOTA_BYTES": "0",
    }
    with Daemon(env) as d:
        progress("warm-up")
        measure(d, args.publishers, args.rate, 2.0, 0, size)
        progress(f"baseline: {args.publishers} publishers at {args.rate:g}/s")
        alone = measure(d, args.publishers, args.rate, args.duration, 0, size)
        progress(f"with {args.uploaders} clients uploading {args.size_mib:g} MiB files")
        busy = measure(d, args.publishers, args.rate, args.duration, args.uploaders, size)
    a, b = alone["publish"], busy["publish"]
    up = busy["uploads"]
    mib_s = up["uploads"] * size / MiB / max(sum(up["seconds"]) / max(args.uploaders, 1), 1e-9)
    rows = [
        ["alone", a["count"], a["p50_ms"], a["p95_ms"], a["p99_ms"], a["max_ms"], "-"],
        ["during uploads", b["count"], b["p50_ms"], b["p95_ms"], b["p99_ms"], b["max_ms"],
         f"{up['uploads']} × {args.size_mib:g} MiB ({mib_s:.0f} MiB/s per client)"],
        ["ratio", "", b["p50_ms"] / a["p50_ms"], b["p95_ms"] / a["p95_ms"],
         b["p99_ms"] / a["p99_ms"], b["max_ms"] / a["max_ms"], ""],
    ]  # fmt: skip
    print_table(
        ["small publishes", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "big uploads"],
        rows,
        title=f"POST /v1/events latency, {args.publishers} publishers at {args.rate:g}/s, "
        f"{args.uploaders} uploaders of {args.size_mib:g} MiB files ({cores_note()})",
    )
    ok = b["p99_ms"] < TARGET_P99_MS
    print(f"target: p99 during uploads < {TARGET_P99_MS:.0f} ms: "
          f"{'met' if ok else 'NOT met'} ({b['p99_ms']:.1f} ms)")  # fmt: skip
    path = write_result("attachments", {"args": vars(args), "alone": alone, "busy": busy})
    progress(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
