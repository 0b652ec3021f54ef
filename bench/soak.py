"""Soak: hours of traffic compressed into minutes, with subscribers coming and going.

One daemon, ``--subscribers`` WebSocket subscribers (default 500) spread evenly over
``--topics`` topics (default 20, so each event reaches 25 of them), a paced publisher
at ``--rate`` events/s (default 200) round-robin over the topics, for ``--duration``
seconds (default 600). Churn: every ``--churn-every`` seconds (default 2) each
subscriber process closes ``--churn`` of its connections (default 5) and reopens
them with ``since=<last id it received>``; a stream the server ends (resync, EOF)
is reopened the same way. At the end every subscriber must hold every event of its
topic published since it first connected, exactly once and in order.

The daemon's RSS (VmRSS, and USS from smaps_rollup) is sampled every 10 s.
Reported: RSS at start (subscribers connected, before publishing), at the end, the
maximum, the slope of a least-squares line through the samples (MB per hour; a
leak shows as a steady positive slope), frames delivered, missing / duplicate /
out-of-order counts, reconnects, and the WARNING/ERROR lines of the daemon's log
(there should be none).

Run:  .venv/bin/python bench/soak.py [--duration 600] [--rate 200] [--subscribers 500]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import select
import sys
import threading
import time
from array import array
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    CpuMeter,
    Daemon,
    MachineMeter,
    cores_note,
    idle_check,
    print_table,
    progress,
    self_cpu_seconds,
    write_result,
)
from fanout import EVENT_PREFIX, paced_publish, ws_client_frame, ws_connect, ws_parse  # noqa: E402

SAMPLE_EVERY = 10.0


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS of ``pid`` and, where readable, its USS/PSS (smaps_rollup), in KB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    fields[parts[0].rstrip(":")] = int(parts[1])
        out["pss"] = fields.get("Pss", 0)
        out["uss"] = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    except OSError:
        pass
    return out


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- subscriber processes ------------------------------------------------------------


class _Sub:
    __slots__ = ("topic", "sock", "buf", "ids", "reconnects")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sock: Any = None
        self.buf = bytearray()
        self.ids = array("q")
        self.reconnects = 0


def soak_worker(
    addr: tuple[str, int],
    token: str,
    topics: list[str],
    since: int,
    churn_every: float,
    churn: int,
    seed: int,
    pipe: Any,
) -> None:
    """Hold one subscription per entry of ``topics``; churn; report ids at the end."""
    raise_nofile()
    rnd = random.Random(seed)
    ep = select.epoll()
    subs: list[_Sub] = [_Sub(t) for t in topics]
    by_fd: dict[int, _Sub] = {}
    closed: dict[str, int] = {}
    frames = 0

    def path(sub: _Sub) -> str:
        cursor = sub.ids[-1] if sub.ids else since
        return f"/v1/stream?topics={sub.topic}&since={cursor}&token={token}"

    def handle(sub: _Sub, data: bytes) -> bool:
        """Parse frames; False when the server ended the stream."""
        nonlocal frames
        sub.buf += data
        parsed, used = ws_parse(sub.buf)
        if used:
            del sub.buf[:used]
        for opcode, payload in parsed:
            if opcode == 0x1 and payload.startswith(EVENT_PREFIX):
                sub.ids.append(orjson.loads(payload)["event"]["id"])
                frames += 1
            elif opcode == 0x9:
                sub.sock.send(ws_client_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                closed[f"close {code}"] = closed.get(f"close {code}", 0) + 1
                return False
        return True

    def connect(sub: _Sub) -> None:
        for attempt in range(50):
            try:
                sock, rest = ws_connect(addr, path(sub))
                break
            except (OSError, ConnectionError):
                if attempt == 49:
                    raise
                time.sleep(0.1)
        sock.setblocking(False)
        sub.sock, sub.buf = sock, bytearray()
        by_fd[sock.fileno()] = sub
        ep.register(sock.fileno(), select.EPOLLIN)
        if rest:
            handle(sub, bytes(rest))

    def disconnect(sub: _Sub) -> None:
        fd = sub.sock.fileno()
        ep.unregister(fd)
        del by_fd[fd]
        sub.sock.close()
        sub.sock = None

    try:
        for sub in subs:
            connect(sub)
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    pipe.send({"ready": len(subs)})
    control = pipe.fileno()
    ep.register(control, select.EPOLLIN)
    stop: dict[str, int] | None = None
    deadline = float("inf")
    next_churn = float("inf")
    churned = 0
    while True:
        now = time.monotonic()
        if stop is not None:
            if (
                all(
                    (s.ids and s.ids[-1] >= stop.get(s.topic, 0)) or stop.get(s.topic, 0) <= since
                    for s in subs
                )
                or now > deadline
            ):
                break
        elif now >= next_churn:
            for sub in rnd.sample(subs, min(churn, len(subs))):
                disconnect(sub)
                sub.reconnects += 1
                churned += 1
                connect(sub)
            next_churn = now + churn_every
        for fd, _ev in ep.poll(0.1):
            if fd == control:
                msg = pipe.recv()
                if msg[0] == "go":
                    next_churn = time.monotonic() + churn_every
                elif msg[0] == "stop":
                    stop, deadline = msg[1], time.monotonic() + msg[2]
                continue
            sub = by_fd.get(fd)
            if sub is None:
                continue
            try:
                data = sub.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            alive = bool(data) and handle(sub, data)
            if not data:
                closed["eof"] = closed.get("eof", 0) + 1
            if not alive:  # the server ended it: resume where we are
                disconnect(sub)
                sub.reconnects += 1
                connect(sub)
    for sub in subs:
        if sub.sock is not None:
            sub.sock.close()
    pipe.send(
        {
            "subs": [(s.topic, s.ids.tobytes()) for s in subs],
            "frames": frames,
            "closed": closed,
            "churned": churned,
            "reconnects": sum(s.reconnects for s in subs),
        }
    )


# -- RSS sampler -------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            t, kb = time.monotonic() - self.t0, rss_kb(self.pid)
            self.samples.append((t, kb))
            if len(self.samples) % 6 == 1:
                progress(f"{t:5.0f} s: daemon RSS {kb['rss'] / 1024:.1f} MB")
            if self._done.wait(self.every):
                break

    def finish(self) -> None:
        self._done.set()
        self.join()
        self.samples.append((time.monotonic() - self.t0, rss_kb(self.pid)))


def slope_mb_per_hour(samples: list[tuple[float, dict[str, int]]], key: str = "rss") -> float:
    pts = [(t, s[key] / 1024) for t, s in samples if key in s]
    if len(pts) < 2:
        return float("nan")
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 3600 if den else float("nan")


# -- main ------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s")
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--topics", type=int, default=20, help="subscribers are spread over these")
    ap.add_argument("--sub-procs", type=int, default=2)
    ap.add_argument("--churn-every", type=float, default=2.0, help="seconds between churns")
    ap.add_argument("--churn", type=int, default=5, help="reconnects per process per churn")
    ap.add_argument("--pub-conns", type=int, default=8)
    args = ap.parse_args()
    print(cores_note(), file=sys.stderr)
    raise_nofile()
    topics = [f"soak.t{i}" for i in range(args.topics)]
    result: dict[str, Any] = {"args": vars(args), "other_busy_cores_before": idle_check()}
    # the subscribers reconnect while their old stream may still be counted
    with Daemon(env={"NOTIFYD_MAX_STREAMS_PER_USER": "100000"}) as d:
        since = d.health()["last_event_id"]
        children = []
        per = [topics[i % len(topics)] for i in range(args.subscribers)]
        for i in range(args.sub_procs):
            mine = per[i :: args.sub_procs]
            parent_end, child_end = mp.Pipe()
            p = mp.Process(
                target=soak_worker,
                args=(d.addr, d.token, mine, since, args.churn_every, args.churn, i, child_end),
                daemon=True,
            )
            p.start()
            child_end.close()
            children.append((p, parent_end))
        for _p, conn in children:
            if not conn.poll(120):
                raise RuntimeError("a subscriber process did not connect in time")
            msg = conn.recv()
            if "error" in msg:
                raise RuntimeError(f"subscriber process failed: {msg['error']}")
        progress(
            f"{args.subscribers} subscribers on {args.topics} topics; publishing "
            f"{args.rate:g} events/s for {args.duration:g} s with churn"
        )
        sampler = RssSampler(d.pid, SAMPLE_EVERY)
        sampler.start()
        meter, machine = CpuMeter(d.pid), MachineMeter()
        sub_meters = [CpuMeter(p.pid) for p, _conn in children]
        for m in sub_meters:
            m.start()
        meter.start()
        machine.start()
        pub_cpu0 = self_cpu_seconds()
        for _p, conn in children:
            conn.send(("go",))
        pub = paced_publish(d.addr, d.token, args.rate, 0.0, args.duration, args.pub_conns, topics)
        server_cpu, machine_cores = meter.stop(), machine.stop()
        sub_cpu = sum(m.stop() for m in sub_meters)
        pub_cpu = (self_cpu_seconds() - pub_cpu0) / pub["publish_seconds"]
        last_by_topic: dict[str, int] = {}
        expected: dict[str, list[int]] = {t: [] for t in topics}
        for ev_id in sorted(pub["ids"]):
            t = topics[pub["id_topic"][ev_id]] if len(topics) > 1 else topics[0]
            expected[t].append(ev_id)
            last_by_topic[t] = ev_id
        for _p, conn in children:
            conn.send(("stop", last_by_topic, 30.0))
        reports = []
        for p, conn in children:
            if not conn.poll(120):
                raise RuntimeError("a subscriber process did not report back")
            reports.append(conn.recv())
            p.join(10)
        sampler.finish()
        log_text = (d.tmp / "server.log").read_text(errors="replace")
    bad_lines = [
        line for line in log_text.splitlines() if "level=warning" in line or "level=error" in line
    ]
    missing = dup = reordered = 0
    for r in reports:
        for topic, raw in r["subs"]:
            got = array("q")
            got.frombytes(raw)
            got_set = set(got)
            missing += len(set(expected[topic]) - got_set)
            dup += len(got) - len(got_set)
            reordered += sum(1 for a, b in zip(got, got[1:], strict=False) if b <= a)
    samples = sampler.samples
    rss = [s["rss"] for _t, s in samples]
    result.update(
        {
            "events_published": pub["sent"],
            "events_acknowledged": len(pub["ids"]),
            "publish_seconds": pub["publish_seconds"],
            "achieved_events_per_s": pub["sent"] / pub["publish_seconds"],
            "publisher_errors": pub["errors"],
            "publish_http_latency": pub["http_latency"],
            "frames_delivered": sum(r["frames"] for r in reports),
            "frames_expected_min": sum(len(expected[t]) for t in per),
            "missing": missing,
            "duplicates": dup,
            "out_of_order": reordered,
            "churn_reconnects": sum(r["churned"] for r in reports),
            "reconnects_total": sum(r["reconnects"] for r in reports),
            "closed_by_server": {
                k: sum(r["closed"].get(k, 0) for r in reports)
                for k in {k for r in reports for k in r["closed"]}
            },
            "rss_samples": samples,
            "rss_start_kb": rss[0],
            "rss_end_kb": rss[-1],
            "rss_max_kb": max(rss),
            "rss_slope_mb_per_h": slope_mb_per_hour(samples),
            "uss_slope_mb_per_h": slope_mb_per_hour(samples, "uss"),
            "rss_slope_second_half_mb_per_h": slope_mb_per_hour(samples[len(samples) // 2 :]),
            "log_warnings_errors": bad_lines,
            "server_cpu_share": server_cpu,
            "publisher_cpu_share": pub_cpu,
            "machine_busy_cores": machine_cores,
        }
    )
    result["subscriber_cpu_share"] = sub_cpu
    result["other_busy_cores"] = max(0.0, machine_cores - server_cpu - pub_cpu - sub_cpu)
    ok = missing == 0 and dup == 0 and reordered == 0 and not bad_lines and not pub["errors"]
    rows = [
        [
            "events published / acknowledged (achieved rate)",
            f"{pub['sent']:,} / {len(pub['ids']):,} in {pub['publish_seconds']:.0f} s "
            f"({result['achieved_events_per_s']:.0f} ev/s)",
        ],
        [
            "frames delivered (incl. replays after reconnect)",
            f"{result['frames_delivered']:,} (expected >= {result['frames_expected_min']:,})",
        ],
        ["missing / duplicate / out of order", f"{missing} / {dup} / {reordered}"],
        [
            "reconnects (churn / total); closed by server",
            f"{result['churn_reconnects']} / {result['reconnects_total']}; "
            f"{result['closed_by_server'] or 'none'}",
        ],
        [
            "daemon RSS start / end / max",
            f"{rss[0] / 1024:.1f} / {rss[-1] / 1024:.1f} / {max(rss) / 1024:.1f} MB",
        ],
        [
            "RSS slope (all / second half); USS slope",
            f"{result['rss_slope_mb_per_h']:+.1f} / "
            f"{result['rss_slope_second_half_mb_per_h']:+.1f} MB/h; "
            f"{result['uss_slope_mb_per_h']:+.1f} MB/h",
        ],
        ["daemon WARNING/ERROR log lines", str(len(bad_lines))],
        [
            "POST p50 / p99",
            f"{pub['http_latency']['p50_ms']:.1f} / {pub['http_latency']['p99_ms']:.1f} ms",
        ],
        ["daemon CPU (share of one core)", f"{server_cpu:.0%}"],
        ["verdict", "OK" if ok else "FAILED"],
    ]
    print()
    print_table(
        ["soak", "figure"],
        rows,
        title=f"soak: {args.duration:g} s, {args.rate:g} ev/s, {args.subscribers} subscribers "
        f"on {args.topics} topics, churn {args.churn}/{args.churn_every:g} s per process",
    )
    for line in bad_lines[:20]:
        print("  log:", line)
    print(
        f"CPU while publishing: daemon {server_cpu:.0%}, subscribers {sub_cpu:.0%}, publisher "
        f"{pub_cpu:.0%}; other processes {result['other_busy_cores']:.2f} cores (indicative "
        "figures when this is not ~0)"
    )
    print(cores_note())
    path = write_result("soak", result)
    progress(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
