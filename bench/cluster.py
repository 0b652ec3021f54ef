"""Cluster mode on PostgreSQL (issue 15): publish, fan-out across nodes, failover, history.

Every node is ``notifyd serve --database-url postgresql://… --node-name X`` on one
fresh database ``bench_<random>`` (dropped at the end) of the server named by
``--database-url``, else ``$NOTIFYD_BENCH_DATABASE_URL``, else a private throwaway
cluster started for the run (``tests/pg.py``'s machinery, with fsync on). Figures
are ratios against a baseline measured in the same run:

(a) durable single-event publish, closed loop, ``--clients`` keep-alive connections
    per node (``bench/publish.py``'s load generator): one node on PostgreSQL against
    one node on SQLite (WAL, synchronous=FULL), alternating in ``--rounds``.
    Target ≥ 0.70 ×. Then two and three nodes on PostgreSQL, each node loaded alike,
    against one (no target: on a small machine the cores cap it; the CPU of the
    notifyd processes, the PostgreSQL server and the load generators is read from
    /proc to show where the time goes).
(b) batch publish, 1,000 events per request, on one PostgreSQL node.
    Target ≥ 20,000 events/s.
(c) cross-node fan-out: ``--rate`` events/s (200) published on node A, received by
    ``--subscribers`` WebSocket subscribers (100) spread over the three nodes:
    p50/p99 latency from the POST to the frame, per node and overall; no frame may be
    missing or duplicated. Target p99 ≤ 100 ms.
(d) failover: subscribers on all three nodes while A publishes; node C is killed
    with SIGKILL; its subscribers reconnect with ``since=<last id>`` to a surviving
    node. Reported: time from the kill until every one of them receives again (and
    until each reconnected), and that no subscriber on any node missed or repeated an
    event. No target in the issue: reported.
(e) history on PostgreSQL: ``bench/history.py --engine postgresql`` (its own fresh
    database on the same server), 1,000,000 events; targets p95 ≤ 20 ms for a
    filtered page (topic + unread), ≤ 50 ms for a full-text search.

Run:  .venv/bin/python bench/cluster.py [--database-url URL] [--quick] [--json]

``--quick`` is a smoke run (short windows, 50,000 history events); the table
(metric, value, target, ratio, verdict) goes to stdout, or the whole result as JSON
with ``--json``; the chart goes to ``docs/img/bench-cluster.png`` and the result to
``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    REPO,
    RESULTS_DIR,
    BenchDatabase,
    Daemon,
    GroupCpu,
    MachineMeter,
    PgDaemon,
    code_version,
    cores_note,
    idle_check,
    latency_summary,
    percentile,
    print_table,
    progress,
    start_child,
    wait_children_ready,
    write_result,
)
from fanout import (  # noqa: E402
    EVENT_PREFIX,
    paced_publish,
    subscriber_worker,
    ws_client_frame,
    ws_connect,
    ws_parse,
)
from publish import SINGLE_EVENT, batch_body, build_request, closed_loop_worker  # noqa: E402

TOPIC = "bench.fanout"  # the topic fanout.paced_publish publishes on
TARGET_SINGLE_RATIO = 0.70
TARGET_BATCH_EVENTS = 20_000.0
TARGET_FANOUT_P99_MS = 100.0
TARGET_PAGE_P95_MS = 20.0
TARGET_SEARCH_P95_MS = 50.0
CHART = REPO / "docs" / "img" / "bench-cluster.png"
#: streams of one user on one node: above the default, for the fan-out runs
NODE_ENV = {"NOTIFYD_MAX_STREAMS_PER_USER": "100000"}


# -- CPU accounting -----------------------------------------------------------------------


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants (a node's delivery worker process, …)."""
    parents = _ppids()
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found or pid not in parents:
            continue
        found.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    return sorted(found)


def postmaster_pid(db: BenchDatabase) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine, else None."""
    if not db.server_pids():
        return None
    with db.connect() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        return _ppids().get(int(row[0])) if row else None  # read while the backend lives


# -- (a), (b): closed-loop publishing on one or more nodes ------------------------------------


def publish_segment(
    label: str,
    nodes: list[Daemon],
    body: bytes,
    clients: int,
    warmup: float,
    duration: float,
    db: BenchDatabase | None,
) -> dict[str, Any]:
    """``clients`` keep-alive connections per node, one load process per node, in a
    closed loop; throughput and latency over the measured window, and the CPU used
    meanwhile by the notifyd processes, the PostgreSQL server and the load processes."""
    progress(
        f"{label}: {clients} connections to each of {len(nodes)} node(s), "
        f"{warmup:g} s warm-up + {duration:g} s"
    )
    start_at = time.time() + 0.5
    children = []
    for d in nodes:
        req = build_request(d.addr, d.token, body)
        parent_end, child_end = mp.Pipe(duplex=False)
        p = mp.Process(
            target=closed_loop_worker,
            args=(d.addr, req, clients, start_at, warmup, duration, child_end),
            daemon=True,
        )
        p.start()
        child_end.close()
        children.append((p, parent_end))
    node_pids = process_tree([d.pid for d in nodes])
    postmaster = postmaster_pid(db) if db is not None else None
    notifyd_cpu = GroupCpu(lambda: node_pids)
    # the server's processes (postmaster, its backends and workers), found anew at each
    # sample: a backend that started meanwhile counts from zero
    pg_cpu = GroupCpu(lambda: process_tree([postmaster]) if postmaster else [])
    machine = MachineMeter()
    time.sleep(max(0.0, start_at + warmup - time.time()))
    for m in (notifyd_cpu, pg_cpu, machine):
        m.start()
    time.sleep(max(0.0, start_at + warmup + duration - time.time()))
    notifyd_cores, pg_cores, machine_cores = notifyd_cpu.stop(), pg_cpu.stop(), machine.stop()
    reports = []
    for p, conn in children:
        if not conn.poll(60):
            raise RuntimeError(f"{label}: a load process did not report back")
        reports.append(conn.recv())
        p.join(10)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for r in reports:
        statuses.update(r["statuses"])
        errors.update(r["errors"])
    completed = sum(r["completed"] for r in reports)
    load_cores = sum(r["cpu_s"] for r in reports) / duration
    out = {
        "label": label,
        "nodes": len(nodes),
        "connections_per_node": clients,
        "duration_s": duration,
        "requests": completed,
        "req_per_s": completed / duration,
        "per_node_req_per_s": [r["completed"] / duration for r in reports],
        "latency": latency_summary([x for r in reports for x in r["latencies"]]),
        "non_2xx": sum(n for st, n in statuses.items() if not 200 <= st < 300),
        "errors": dict(errors),
        "cpu_cores": {
            "notifyd": notifyd_cores,
            "postgres": pg_cores if postmaster else float("nan"),
            "load": load_cores,
            "machine": machine_cores,
            "other": max(
                0.0, machine_cores - notifyd_cores - (pg_cores if postmaster else 0.0) - load_cores
            ),
        },
    }
    c = out["cpu_cores"]
    progress(
        f"{label}: {out['req_per_s']:,.0f} req/s, p50 {out['latency']['p50_ms']:.1f} ms, "
        f"p99 {out['latency']['p99_ms']:.1f} ms; CPU cores: notifyd {c['notifyd']:.2f}, "
        f"postgres {c['postgres']:.2f}, load {c['load']:.2f}, other {c['other']:.2f}; "
        f"non-2xx {out['non_2xx']}, errors {dict(errors) or 0}"
    )
    return out


def merge_segments(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one case as one figure (requests over the summed windows)."""
    if len(segments) == 1:
        return segments[0]
    duration = sum(s["duration_s"] for s in segments)
    out = dict(segments[0])
    out["duration_s"] = duration
    out["requests"] = sum(s["requests"] for s in segments)
    out["req_per_s"] = out["requests"] / duration
    out["segment_req_per_s"] = [s["req_per_s"] for s in segments]
    out["per_node_req_per_s"] = [
        sum(s["per_node_req_per_s"][k] * s["duration_s"] for s in segments) / duration
        for k in range(len(segments[0]["per_node_req_per_s"]))
    ]
    out["non_2xx"] = sum(s["non_2xx"] for s in segments)
    out["errors"] = dict(sum((Counter(s["errors"]) for s in segments), Counter()))
    out["latency"] = {
        k: max(s["latency"][k] for s in segments) if k == "max_ms" else
        sum(s["latency"][k] * s["duration_s"] for s in segments) / duration
        for k in segments[0]["latency"]
    }  # fmt: skip
    out["cpu_cores"] = {
        k: sum(s["cpu_cores"][k] * s["duration_s"] for s in segments) / duration
        for k in segments[0]["cpu_cores"]
    }
    return out


# -- (c): fan-out across nodes ----------------------------------------------------------------


def wait_streams(nodes: Sequence[Daemon], want: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        have = [int(d.health().get("stream_clients", 0)) for d in nodes]
        if have == want or time.monotonic() > deadline:
            return have
        time.sleep(0.05)


def run_fanout(
    nodes: list[PgDaemon], subs: int, rate: float, warmup: float, duration: float, pub_conns: int
) -> dict[str, Any]:
    """Subscriber i on node i mod len(nodes); a paced publisher on nodes[0]."""
    a = nodes[0]
    since = a.health()["last_event_id"]
    path = f"/v1/stream?topics={TOPIC}&since={since}&token={a.token}"
    shares = [len(range(k, subs, len(nodes))) for k in range(len(nodes))]
    progress(f"(c) {subs} WebSocket subscribers over {len(nodes)} nodes: {shares}")
    children = []
    for d, n in zip(nodes, shares, strict=True):
        children.append(start_child(subscriber_worker, d.addr, [(path, 0)] * n))
    wait_children_ready(children)
    have = wait_streams(nodes, shares)
    progress(f"(c) stream clients per node {have}; {rate:g} events/s on node A for {duration:g} s")
    for _p, conn in children:
        conn.send(("go",))
    machine = MachineMeter()
    machine.start()
    pub = paced_publish(a.addr, a.token, rate, warmup, duration, pub_conns)
    machine_cores = machine.stop()
    expected = set(pub["ids"])
    last = max(expected) if expected else 0
    for _p, conn in children:
        conn.send(("stop", [last], 20.0))
    reports = []
    for p, conn in children:
        if not conn.poll(90):
            raise RuntimeError("a subscriber process did not report back")
        reports.append(conn.recv())
        p.join(10)
    missing = duplicates = reordered = 0
    per_node = []
    for name, r in zip((d.node_name for d in nodes), reports, strict=True):
        for got in r["ids"]:
            got_list = list(got)
            missing += len(expected - set(got_list))
            duplicates += len(got_list) - len(set(got_list))
            reordered += sum(1 for x, y in zip(got_list, got_list[1:], strict=False) if y <= x)
        per_node.append(
            {"node": name, "subscribers": len(r["ids"]), **latency_summary(r["latencies"])}
        )
    latencies = [x for r in reports for x in r["latencies"]]
    out = {
        "subscribers": subs,
        "subscribers_per_node": shares,
        "rate_events_per_s": rate,
        "duration_s": duration,
        "events_published": pub["sent"],
        "events_acknowledged": len(expected),
        "publish_errors": pub["errors"],
        "latency": latency_summary(latencies),
        "per_node": per_node,
        "deliveries_expected": len(expected) * subs,
        "missing_frames": missing,
        "duplicate_frames": duplicates,
        "out_of_order_frames": reordered,
        "closed_by_server": [r["closed"] for r in reports],
        "publish_http_latency": pub["http_latency"],
        "subscriber_cpu_share": [r["cpu_share"] for r in reports],
        "machine_busy_cores": machine_cores,
    }
    lat = out["latency"]
    progress(
        f"(c) p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms; "
        + ", ".join(f"{n['node']} p99 {n['p99_ms']:.1f}" for n in per_node)
        + f"; missing {missing}, duplicates {duplicates}"
    )
    return out


# -- (d): failover ------------------------------------------------------------------------------


def failover_worker(
    addrs: list[tuple[str, int]], home: int, n: int, since: int, token: str, pipe: Any
) -> None:
    """Hold ``n`` WebSocket subscriptions on node ``home``; when a stream ends, reconnect
    at once with ``since=<last id received>`` to the next node that accepts. Records
    every event id per subscriber, and for each reconnect: when the stream ended, when
    the new one was open, when its first event arrived (wall clock)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ep = select.epoll()
    subs: dict[int, dict[str, Any]] = {}  # fd -> subscriber

    def open_stream(sub: dict[str, Any], node: int) -> None:
        after = sub["ids"][-1] if sub["ids"] else since
        path = f"/v1/stream?topics={TOPIC}&since={after}&token={token}"
        sock, rest = ws_connect(addrs[node], path)
        sock.setblocking(False)
        sub.update(sock=sock, buf=bytearray(rest), node=node)
        subs[sock.fileno()] = sub
        ep.register(sock.fileno(), select.EPOLLIN)

    def handle(sub: dict[str, Any], t: float) -> None:
        frames, used = ws_parse(sub["buf"])
        del sub["buf"][:used]
        for opcode, payload in frames:
            if opcode == 0x1 and payload.startswith(EVENT_PREFIX):
                sub["ids"].append(orjson.loads(payload)["event"]["id"])
                rec = sub["reconnects"][-1] if sub["reconnects"] else None
                if rec is not None and rec["first_event"] is None:
                    rec["first_event"] = t
            elif opcode == 0x9:
                sub["sock"].send(ws_client_frame(payload, 0xA))
            elif opcode == 0x8:
                sub["closing"] = True

    def reconnect(sub: dict[str, Any], t: float) -> None:
        fd = sub["sock"].fileno()
        ep.unregister(fd)
        sub["sock"].close()
        del subs[fd]
        rec: dict[str, Any] = {"from": sub["node"], "ended": t, "open": None, "first_event": None}
        sub["reconnects"].append(rec)
        for step in range(1, len(addrs)):
            node = (sub["node"] + step) % len(addrs)
            try:
                open_stream(sub, node)
            except OSError:
                continue
            rec.update(to=node, open=time.time())
            return
        rec["to"] = None

    everyone: list[dict[str, Any]] = [
        {"ids": array("q"), "reconnects": [], "closing": False} for _ in range(n)
    ]
    try:
        for sub in everyone:
            open_stream(sub, home)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    pipe.send({"ready": n})
    control = pipe.fileno()
    ep.register(control, select.EPOLLIN)
    stop_at: int | None = None
    deadline = float("inf")
    while True:
        if stop_at is not None and (
            all(s["ids"] and s["ids"][-1] >= stop_at for s in everyone)
            or time.monotonic() > deadline
        ):
            break
        for fd, _ev in ep.poll(0.05):
            if fd == control:
                msg = pipe.recv()
                if msg[0] == "stop":
                    stop_at, deadline = msg[1], time.monotonic() + msg[2]
                continue
            found = subs.get(fd)
            if found is None:
                continue
            sub = found
            try:
                data = sub["sock"].recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            t = time.time()
            if data:
                sub["buf"] += data
                handle(sub, t)
            if not data or sub["closing"]:
                sub["closing"] = False
                reconnect(sub, t)
    for sub in everyone:
        with contextlib.suppress(OSError):
            sub["sock"].close()
    pipe.send([{"ids": list(s["ids"]), "reconnects": s["reconnects"]} for s in everyone])


def run_failover(
    nodes: list[PgDaemon], subs_per_node: int, rate: float, before: float, after: float
) -> dict[str, Any]:
    """Publish on nodes[0] at ``rate``; after ``before`` s kill -9 the last node; go on for
    ``after`` s; every subscriber must hold every event once."""
    a, victim = nodes[0], nodes[-1]
    since = a.health()["last_event_id"]
    addrs = [d.addr for d in nodes]
    progress(
        f"(d) {subs_per_node} subscribers on each of {len(nodes)} nodes; {rate:g} events/s on "
        f"{a.node_name}; kill -9 {victim.node_name} after {before:g} s"
    )
    children = []
    for home in range(len(nodes)):
        children.append(start_child(failover_worker, addrs, home, subs_per_node, since, a.token))
    wait_children_ready(children, "failover subscriber")
    wait_streams(nodes, [subs_per_node] * len(nodes))
    killed_at: list[float] = []

    def kill() -> None:
        assert victim.proc is not None
        killed_at.append(time.time())
        os.kill(victim.proc.pid, signal.SIGKILL)

    timer = threading.Timer(before, kill)
    timer.start()
    pub = paced_publish(a.addr, a.token, rate, 0.0, before + after, 4)
    timer.join()
    assert victim.proc is not None
    victim.proc.wait()
    expected = sorted(set(pub["ids"]))
    last = expected[-1] if expected else 0
    for _p, conn in children:
        conn.send(("stop", last, 20.0))
    reports = []
    for p, conn in children:
        if not conn.poll(90):
            raise RuntimeError("a failover subscriber process did not report back")
        reports.append(conn.recv())
        p.join(10)
    t_kill = killed_at[0]
    want = set(expected)
    missing = duplicates = 0
    to_receive, to_open, moved, unmoved = [], [], 0, 0
    for home, subs in enumerate(reports):
        for s in subs:
            ids = [i for i in s["ids"] if i > since]
            missing += len(want - set(ids))
            duplicates += len(ids) - len(set(ids))
            recs = [r for r in s["reconnects"] if r["ended"] >= t_kill]
            if home == len(nodes) - 1:
                if recs and recs[0]["first_event"] is not None:
                    moved += 1
                    to_receive.append(recs[0]["first_event"] - t_kill)
                    to_open.append(recs[0]["open"] - t_kill)
                else:
                    unmoved += 1
            elif recs:
                unmoved += 1  # a stream on a surviving node ended: counted as a failure
    out = {
        "subscribers_per_node": subs_per_node,
        "nodes": len(nodes),
        "rate_events_per_s": rate,
        "events_published": pub["sent"],
        "events_acknowledged": len(expected),
        "publish_errors": pub["errors"],
        "victim": victim.node_name,
        "victim_subscribers_moved": moved,
        "subscribers_not_recovered": unmoved,
        "receiving_again_s": {
            "p50": percentile(to_receive, 50),
            "max": max(to_receive) if to_receive else float("nan"),
        },
        "reconnected_s": {
            "p50": percentile(to_open, 50),
            "max": max(to_open) if to_open else float("nan"),
        },
        "missing_events": missing,
        "duplicate_events": duplicates,
        "deliveries_expected": len(expected) * subs_per_node * len(nodes),
    }
    progress(
        f"(d) {moved} subscribers moved; all receiving again {out['receiving_again_s']['max'] * 1e3:.0f} ms "
        f"after the kill (reconnected by {out['reconnected_s']['max'] * 1e3:.0f} ms); "
        f"missing {missing}, duplicates {duplicates}, not recovered {unmoved}"
    )
    return out


# -- (e): history ---------------------------------------------------------------------------------


def run_history(server_url: str, events: int, queries: int) -> dict[str, Any]:
    """``bench/history.py`` on PostgreSQL, queries only, in a process of its own."""
    out = RESULTS_DIR / "history-postgresql.json"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    cmd = [
        sys.executable, str(REPO / "bench" / "history.py"), "--database-url", server_url,
        "--events", str(events), "--recent", str(max(1000, events // 50)),
        "--queries", str(queries), "--no-prune",
    ]  # fmt: skip
    progress(f"(e) bench/history.py on PostgreSQL with {events:,} events")
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench/history.py failed (exit {done.returncode})")
    result = json.loads(out.read_text())
    return {
        "events": events + max(1000, events // 50),
        "queries": result["queries"],
        "other_cores": result.get("queries_other_cores"),
        "import_s": result["setup"]["import_s"],
        "db_bytes": result["setup"]["db_bytes"],
    }


def history_p95(history: dict[str, Any], query: str) -> float:
    """The worse p95 of alice and admin for one query kind."""
    return max(q["p95_ms"] for q in history["queries"] if q["query"] == query)


# -- the report -------------------------------------------------------------------------------------


def verdict_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """metric, value (text), target (text), score (measured ÷ target, higher is better,
    None = no target), verdict."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: str, target: str, score: float | None, chart: str = "") -> None:
        if score is None or score != score:
            verdict = "reported"
        else:
            verdict = "met" if score >= 1 else "MISSED"
        rows.append(
            {"metric": metric, "value": value, "target": target, "score": score,
             "verdict": verdict, "chart": chart}
        )  # fmt: skip

    pub = r.get("publish", {})
    if "sqlite" in pub and "pg1" in pub:
        sq, p1 = pub["sqlite"], pub["pg1"]
        ratio = p1["req_per_s"] / sq["req_per_s"]
        add(
            "(a) publish, 1 node on SQLite (baseline)",
            f"{sq['req_per_s']:,.0f} req/s (p99 {sq['latency']['p99_ms']:.1f} ms)",
            "reference",
            None,
        )
        add("(a) publish, 1 node on PostgreSQL",
            f"{p1['req_per_s']:,.0f} req/s (p99 {p1['latency']['p99_ms']:.1f} ms) = {ratio:.2f}x SQLite",
            f">= {TARGET_SINGLE_RATIO:.2f}x SQLite", ratio / TARGET_SINGLE_RATIO,
            f"publish, PostgreSQL vs SQLite ({ratio:.2f}x; >= 0.70x)")  # fmt: skip
        for key, n in (("pg2", 2), ("pg3", 3)):
            if key in pub:
                x = pub[key]["req_per_s"] / p1["req_per_s"]
                add(f"(a) publish, {n} nodes on PostgreSQL",
                    f"{pub[key]['req_per_s']:,.0f} req/s = {x:.2f}x one node", "reported", None)  # fmt: skip
    if "batch" in r:
        eps = r["batch"]["events_per_s"]
        add("(b) batch publish, 1,000 events/request, PostgreSQL",
            f"{eps:,.0f} events/s", f">= {TARGET_BATCH_EVENTS:,.0f} events/s",
            eps / TARGET_BATCH_EVENTS, f"batch publish ({eps:,.0f}/s; >= 20,000/s)")  # fmt: skip
    if "fanout" in r:
        f = r["fanout"]
        lat = f["latency"]
        add(f"(c) fan-out A -> {f['subscribers']} subs on 3 nodes x {f['rate_events_per_s']:g} ev/s",
            f"p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms",
            f"p99 <= {TARGET_FANOUT_P99_MS:g} ms", TARGET_FANOUT_P99_MS / lat["p99_ms"],
            f"cross-node fan-out p99 ({lat['p99_ms']:.1f} ms; <= 100 ms)")  # fmt: skip
        bad = f["missing_frames"] + f["duplicate_frames"]
        add("(c) frames missing / duplicated",
            f"{f['missing_frames']} / {f['duplicate_frames']} of {f['deliveries_expected']:,}",
            "0 / 0", 1.0 if bad == 0 else 0.0)  # fmt: skip
    if "failover" in r:
        fo = r["failover"]
        add(f"(d) failover: kill -9 a node, its {fo['subscribers_per_node']} subscribers back",
            f"receiving again after {fo['receiving_again_s']['max'] * 1e3:,.0f} ms "
            f"(reconnected {fo['reconnected_s']['max'] * 1e3:,.0f} ms)", "reported", None)  # fmt: skip
        bad = fo["missing_events"] + fo["duplicate_events"] + fo["subscribers_not_recovered"]
        add("(d) events missing / duplicated across the failover",
            f"{fo['missing_events']} / {fo['duplicate_events']} of {fo['deliveries_expected']:,}"
            + (f"; {fo['subscribers_not_recovered']} not recovered" if fo["subscribers_not_recovered"] else ""),
            "0 / 0", 1.0 if bad == 0 else 0.0)  # fmt: skip
    if "history" in r:
        hist = r["history"]
        page, search = history_p95(hist, "topic+unread"), history_p95(hist, "search q=")
        add(f"(e) history page (topic+unread), {hist['events']:,} events", f"p95 {page:.1f} ms",
            f"p95 <= {TARGET_PAGE_P95_MS:g} ms", TARGET_PAGE_P95_MS / page,
            f"history page p95 ({page:.1f} ms; <= 20 ms)")  # fmt: skip
        add(f"(e) history search (q=), {hist['events']:,} events", f"p95 {search:.1f} ms",
            f"p95 <= {TARGET_SEARCH_P95_MS:g} ms", TARGET_SEARCH_P95_MS / search,
            f"history search p95 ({search:.1f} ms; <= 50 ms)")  # fmt: skip
    return rows


def per_request(cores: float, req_per_s: float) -> str:
    """CPU microseconds per request, as text."""
    if cores != cores or not req_per_s:
        return "n/a"
    return f"{cores / req_per_s * 1e6:,.0f}"


def print_report(r: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    table = [
        [x["metric"], x["value"], x["target"], "" if x["score"] is None else f"{x['score']:.2f}",
         x["verdict"]]
        for x in rows
    ]  # fmt: skip
    print()
    print_table(["metric", "value", "target", "ratio", "verdict"], table, title="cluster benchmark")
    pub = r.get("publish", {})
    if pub or "batch" in r:
        detail = []
        for key in ("sqlite", "pg1", "batch_case", "pg2", "pg3"):
            c = pub.get(key) or (r.get("batch") if key == "batch_case" else None)
            if not c:
                continue
            cpu = c["cpu_cores"]
            detail.append(
                [c["label"], f"{c['req_per_s']:,.1f}",
                 " + ".join(f"{x:,.0f}" for x in c["per_node_req_per_s"]),
                 f"{c['latency']['p50_ms']:.1f}", f"{c['latency']['p99_ms']:.1f}",
                 c["non_2xx"] + sum(c["errors"].values()),
                 f"{cpu['notifyd']:.2f}", f"{cpu['postgres']:.2f}", f"{cpu['load']:.2f}",
                 f"{cpu['other']:.2f}", per_request(cpu["notifyd"], c["req_per_s"]),
                 per_request(cpu["postgres"], c["req_per_s"])]
            )  # fmt: skip
        print_table(
            ["case", "req/s", "per node", "p50 ms", "p99 ms", "errors", "notifyd cores",
             "postgres cores", "load cores", "other cores", "notifyd us/req",
             "postgres us/req"],
            detail,
        )  # fmt: skip
        print(
            "CPU columns: cores used during the measured window by the notifyd processes (all\n"
            "nodes, with their worker processes), the PostgreSQL server (all its processes; n/a\n"
            "when it is not on this machine or the case is SQLite), the load generators, and\n"
            "everything else on the machine (~0 on a quiet one); us/req: CPU microseconds per\n"
            "request (a batch request holds 1,000 events)."
        )
    if "fanout" in r:
        f = r["fanout"]
        print(
            "(c) per node: "
            + "; ".join(
                f"{n['node']} ({n['subscribers']} subs) p50 {n['p50_ms']:.1f} / p99 {n['p99_ms']:.1f} ms"
                for n in f["per_node"]
            )
            + f"; publish POST p99 {f['publish_http_latency']['p99_ms']:.1f} ms"
        )
    if "history" in r:
        h = r["history"]
        print_table(
            ["user", "query", "rows", "p50 ms", "p95 ms", "max ms"],
            [[q["user"], q["query"], q["rows_avg"], q["p50_ms"], q["p95_ms"], q["max_ms"]]
             for q in h["queries"]],
            title=f"(e) history on PostgreSQL, {h['events']:,} events "
            f"(other cores {h['other_cores'] or 0:.2f})",
        )  # fmt: skip
    print(cores_note())
    if r.get("other_busy_cores_before", 0) > 0.15:
        print(
            f"Measured under load: other processes kept {r['other_busy_cores_before']:.2f} cores "
            "busy before the run; absolute figures read low."
        )


# -- the chart (PNG, no dependencies) -------------------------------------------------------------

# A 5x7 bitmap font for the chart's labels: each glyph is 7 rows of 5 bits.
_GLYPHS = {
    " ": "00000" * 7,
    "0": "01110100011001110101110011000101110", "1": "00100011000010000100001000010001110",
    "2": "01110100010000100010001000100011111", "3": "11111000100010000010000011000101110",
    "4": "00010001100101010010111110001000010", "5": "11111100001111000001000011000101110",
    "6": "00110010001000011110100011000101110", "7": "11111000010001000100010000100001000",
    "8": "01110100011000101110100011000101110", "9": "01110100011000101111000010001001100",
    ".": "00000000000000000000000000110001100", ",": "00000000000000000000011000010001000",
    "%": "11000110010001000100010000100110011", "(": "00010001000100001000010000010000010",
    ")": "01000001000001000010000100010001000", "x": "00000000001000101010001000101010001",
    "=": "00000000001111100000111110000000000", "<": "00010001000100010000010000010000010",
    ">": "01000001000001000001000100010001000", ";": "00000011000110000000011000010001000",
    "/": "00000000010001000100010001000000000", "-": "00000000000000011111000000000000000",
    "+": "00000001000010011111001000010000000", ":": "00000011000110000000011000110000000",
    "a": "00000000000111000001011111000101111", "b": "10000100001011011001100011000111110",
    "c": "00000000000111010000100001000101110", "d": "00001000010110110011100011000101111",
    "e": "00000000000111010001111111000001110", "f": "00110010010100011100010000100001000",
    "g": "01111100011000110001011110000101110", "h": "10000100001011011001100011000110001",
    "i": "00100000000110000100001000010001110", "k": "10000100001001010100110001010010010",
    "l": "01100001000010000100001000010001110", "m": "00000000001101010101101011000110001",
    "n": "00000000001011011001100011000110001", "o": "00000000000111010001100011000101110",
    "p": "11110100011000110001111101000010000", "q": "01111100011000110001011110000100001",
    "r": "00000000001011011001100001000010000", "s": "00000000000111010000011100000111110",
    "t": "01000010001110001000010000100100110", "u": "00000000001000110001100011001101101",
    "v": "00000000001000110001100010101000100", "w": "00000000001000110001101011010101010",
    "y": "10001100011000110001011110000101110", "z": "00000000001111100010001000100011111",
    "j": "00010000000011000010000101001001100",
    "A": "01110100011000111111100011000110001", "B": "11110100011000111110100011000111110",
    "C": "01110100011000010000100001000101110", "D": "11100100101000110001100011001011100",
    "E": "11111100001000011110100001000011111", "F": "11111100001000011110100001000010000",
    "H": "10001100011000111111100011000110001", "I": "01110001000010000100001000010001110",
    "K": "10001100101010011000101001001010001", "L": "10000100001000010000100001000011111",
    "M": "10001110111010110101100011000110001", "N": "10001100011100110101100111000110001",
    "O": "01110100011000110001100011000101110", "P": "11110100011000111110100001000010000",
    "Q": "01110100011000110001101011001001101", "R": "11110100011000111110101001001010001",
    "S": "01111100001000001110000010000111110", "T": "11111001000010000100001000010000100",
    "U": "10001100011000110001100011000101110", "W": "10001100011000110101101011010101010",
}  # fmt: skip


#: glyphs drawn two rows lower (their tails hang below the line)
_DESCENDERS = set("gpqy,;")


class Canvas:
    """An RGB raster written as PNG with zlib only."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def rect(self, x: int, y: int, w: int, h: int, rgb: tuple[int, int, int]) -> None:
        color = bytes(rgb)
        for yy in range(max(0, y), min(self.h, y + h)):
            x0, x1 = max(0, x), min(self.w, x + w)
            if x1 > x0:
                i = (yy * self.w + x0) * 3
                self.px[i : i + (x1 - x0) * 3] = color * (x1 - x0)

    def text(
        self, x: int, y: int, s: str, rgb: tuple[int, int, int] = (0, 0, 0), scale: int = 2
    ) -> int:
        for ch in s:
            glyph = (
                _GLYPHS.get(ch)
                or _GLYPHS.get(ch.lower())
                or _GLYPHS.get(ch.upper())
                or _GLYPHS[" "]
            )
            drop = 2 if ch in _DESCENDERS else 0
            for row in range(7):
                for col in range(5):
                    if glyph[row * 5 + col] == "1":
                        self.rect(x + col * scale, y + (row + drop) * scale, scale, scale, rgb)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        import struct
        import zlib

        raw = b"".join(
            b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        head = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", head)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def draw_chart(rows: list[dict[str, Any]], path: Path, subtitle: str) -> None:
    """One bar per target, as bench/chart.py draws them: its length the figure ÷ target
    (latencies: target ÷ figure), so right of the dashed line means met."""
    data = [x for x in rows if x["chart"] and x["score"] is not None]
    left = 40 + 12 * max((len(x["chart"]) for x in data), default=20)
    bar_w, row_h, top = 400, 40, 80
    title = "notifyd cluster on PostgreSQL: measured / target"
    width = max(left + bar_w + 200, 40 + 12 * len(subtitle), 40 + 18 * len(title))
    height = top + row_h * len(data) + 50
    c = Canvas(width, height)
    c.text(20, 16, title, scale=3)
    c.text(20, 48, subtitle, (90, 90, 90), scale=2)
    scale = bar_w / 2.0
    for i, x in enumerate(data):
        y = top + i * row_h
        label = x["chart"]
        c.text(left - 12 - len(label) * 12, y + 12, label)
        length = int(min(x["score"], 2.0) * scale)
        c.rect(left, y + 6, length, 26, (46, 125, 50) if x["score"] >= 1 else (198, 40, 40))
        c.text(left + length + 8, y + 12, f"{x['score']:.2f}" + (" >" if x["score"] > 2 else ""))
    line_x = left + int(scale)
    for yy in range(top, top + row_h * len(data), 8):
        c.rect(line_x, yy, 2, 4, (40, 40, 40))
    c.text(line_x - 36, height - 34, "target")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(c.png())


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", metavar="URL",
                    help="PostgreSQL server (a role that may create databases); default "
                    "$NOTIFYD_BENCH_DATABASE_URL, else a private throwaway cluster")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--json", action="store_true", help="print the result as JSON, not tables")
    ap.add_argument("--clients", type=int, default=32, help="connections per node in (a)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per case (a, b)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case (a, b)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="(a) alternates SQLite and PostgreSQL this many times")  # fmt: skip
    ap.add_argument("--batch-clients", type=int, default=4, help="connections in (b)")
    ap.add_argument("--subscribers", type=int, default=100, help="subscribers in (c)")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s published in (c)")
    ap.add_argument("--fanout-duration", type=float, default=10.0, help="seconds of (c)")
    ap.add_argument("--failover-subscribers", type=int, default=20,
                    help="subscribers per node in (d)")  # fmt: skip
    ap.add_argument("--failover-rate", type=float, default=100.0, help="events/s in (d)")
    ap.add_argument("--history-events", type=int, default=1_000_000, help="events in (e)")
    ap.add_argument("--history-queries", type=int, default=100, help="queries per kind in (e)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["publish", "batch", "fanout", "failover", "history"],
                    help="leave a part out (repeatable)")  # fmt: skip
    ap.add_argument("--chart", type=Path, default=CHART, help="PNG to write (default %(default)s)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 1
        args.fanout_duration = 4.0
        args.history_events, args.history_queries = 50_000, 20

    print(cores_note(), file=sys.stderr)
    result: dict[str, Any] = {
        "args": {**vars(args), "database_url": None, "chart": str(args.chart)},
        "other_busy_cores_before": idle_check(),
    }
    body = json.dumps(SINGLE_EVENT).encode()
    skip = set(args.skip)
    with BenchDatabase(args.database_url) as db, contextlib.ExitStack() as nodes_stack:
        result["postgresql"] = {"server": db.source, **db.settings()}
        a = PgDaemon(db.url, "node-a", NODE_ENV)
        nodes_stack.enter_context(a)
        publish: dict[str, Any] = {}
        if "publish" not in skip:
            with Daemon() as lite:
                segs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "pg1": []}
                for n in range(args.rounds):
                    tag = f" (round {n + 1}/{args.rounds})" if args.rounds > 1 else ""
                    w, t = args.warmup / args.rounds, args.duration / args.rounds
                    segs["sqlite"].append(publish_segment(
                        "1 node, SQLite" + tag, [lite], body, args.clients, w, t, None))  # fmt: skip
                    segs["pg1"].append(publish_segment(
                        "1 node, PostgreSQL" + tag, [a], body, args.clients, w, t, db))  # fmt: skip
                publish = {k: merge_segments(v) for k, v in segs.items()}
                publish["sqlite"]["label"], publish["pg1"]["label"] = (
                    "1 node, SQLite",
                    "1 node, PostgreSQL",
                )
        if "batch" not in skip:
            size = 1000
            seg = publish_segment(
                "batch x1000, 1 node, PostgreSQL", [a], batch_body(size), args.batch_clients,
                args.warmup, args.duration, db,
            )  # fmt: skip
            seg["events_per_s"] = seg["req_per_s"] * size
            result["batch"] = seg
        b = PgDaemon(db.url, "node-b", NODE_ENV)
        nodes_stack.enter_context(b)
        if "publish" not in skip:
            publish["pg2"] = publish_segment(
                "2 nodes, PostgreSQL", [a, b], body, args.clients, args.warmup, args.duration, db
            )
        c = PgDaemon(db.url, "node-c", NODE_ENV)
        nodes_stack.enter_context(c)
        if "publish" not in skip:
            publish["pg3"] = publish_segment(
                "3 nodes, PostgreSQL", [a, b, c], body, args.clients, args.warmup, args.duration, db
            )
        if publish:
            result["publish"] = publish
        if "fanout" not in skip:
            result["fanout"] = run_fanout(
                [a, b, c], args.subscribers, args.rate, 1.0, args.fanout_duration, 8
            )
        if "failover" not in skip:
            result["failover"] = run_failover(
                [a, b, c], args.failover_subscribers, args.failover_rate, 3.0,
                2.0 if args.quick else 5.0,
            )  # fmt: skip
        nodes_stack.close()
        if "history" not in skip:
            result["history"] = run_history(
                db.server_url, args.history_events, args.history_queries
            )

    rows = verdict_rows(result)
    result["verdicts"] = rows
    path = write_result("cluster", result)
    busy = result["other_busy_cores_before"]
    subtitle = (
        f"{time.strftime('%Y-%m-%d')}, notifyd {code_version()}, {os.cpu_count()} cores, "
        + (f"measured under load (other processes: {busy:.2f} cores)" if busy > 0.15 else "quiet")
    )
    draw_chart(rows, args.chart, subtitle)
    if args.json:
        print(path.read_text())
    else:
        print_report(result, rows)
    progress(f"wrote {path} and {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
