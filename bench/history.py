"""History at scale: queries over 1,000,000 stored events, and a retention prune of
all of them while a paced publisher measures each publish.

One command::

    .venv/bin/python bench/history.py                 # 1,000,000 events
    .venv/bin/python bench/history.py --events 200000 # a quicker run
    .venv/bin/python bench/history.py --engine postgresql            # cluster mode
    .venv/bin/python bench/history.py --database-url postgresql://postgres@127.0.0.1/postgres

With ``--engine postgresql`` (implied by ``--database-url``) the daemon runs on a
fresh PostgreSQL database ``bench_<random>`` (dropped at the end) on the server
named by ``--database-url``, else ``$NOTIFYD_BENCH_DATABASE_URL``, else a private
throwaway cluster started for the run (``tests/pg.py``'s machinery). Results go
to ``bench/results/history.json`` (SQLite) or ``history-postgresql.json``.

What it does, in order:

1. Writes an export file (JSON Lines, the format of ``notifyd export``) of
   ``--events`` events created 40 to 70 days ago: 50 topics under 5 prefixes,
   8 categories, weighted priorities, 0–3 tags, titles and bodies drawn from a
   Zipf-weighted vocabulary (a few very common words, a long tail of rare ones), and
   the read state of the user ``alice`` (90 % of the older events read, 30 % of the
   newest fifth).
2. Starts a daemon with ``retention_days = 3650`` in a config file, creates
   ``alice`` (role user, read grants on about 40 % of the topics, a subscribe
   token), imports the file through ``POST /v1/admin/import`` (keeps ``created_at``),
   then publishes ``--recent`` current events in batches (they survive the prune).
3. Measures ``GET /v1/events`` and ``/v1/inbox/count`` queries one after another on
   a keep-alive connection, as alice and as the admin: p50/p95/max per kind.
4. Starts a paced publisher (``--rate`` single-event POSTs per second, open loop),
   records ``--calm`` seconds of publish latency, then sets ``retention_days = 30``
   in the file and sends SIGHUP: the pruner notices the lower retention and starts a
   pass. Publish latency during the prune is compared with before it; the prune's
   duration and the database/WAL sizes after it are reported.

Figures are end-to-end HTTP latencies on one machine shared by daemon and client.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - the venv has orjson
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

DAY = 86400.0
PREFIXES = ("app", "ops", "home", "ci", "shop")
SUBTOPICS = ("web", "api", "db", "cache", "queue", "auth", "billing", "search", "mail", "cron")
TOPICS = [f"{p}/{s}" for p in PREFIXES for s in SUBTOPICS]
CATEGORIES = ("general", "alert", "deploy", "backup", "security", "build", "order", "reminder")
PRIORITIES = (1, 2, 3, 3, 3, 3, 3, 4, 4, 5)
TAGS = ("prod", "staging", "eu", "us", "disk", "cpu", "memory", "net", "urgent", "nightly")
#: alice may read these (about 40 % of the events)
ALICE_GRANTS = ("app/*", "ops/db", "ops/queue", "home/*", "ci/build")
COMMON = [
    "server",
    "error",
    "failed",
    "backup",
    "completed",
    "deploy",
    "started",
    "disk",
    "space",
    "warning",
    "user",
    "login",
    "request",
    "timeout",
    "database",
    "connection",
    "restored",
    "order",
    "shipped",
    "payment",
    "received",
    "build",
    "passed",
    "test",
    "report",
    "daily",
    "weekly",
    "update",
    "available",
    "certificate",
    "expires",
    "memory",
    "usage",
    "high",
    "cpu",
    "load",
    "queue",
    "length",
    "job",
    "finished",
    "retry",
    "scheduled",
]
SYLLABLES = [
    "ka",
    "ri",
    "to",
    "mo",
    "ne",
    "sa",
    "lu",
    "vi",
    "de",
    "po",
    "ga",
    "shi",
    "ren",
    "tal",
    "mor",
    "vek",
    "quin",
    "zor",
    "bal",
    "fen",
    "dri",
    "lox",
    "mar",
    "tes",
    "nov",
    "pri",
    "kel",
    "yun",
    "har",
    "sto",
]


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    """Common English-ish words first, then invented ones: rank = list index."""
    words = list(COMMON)
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def zipf_weights(n: int, s: float = 1.07) -> list[float]:
    acc, out = 0.0, []
    for rank in range(1, n + 1):
        acc += 1.0 / rank**s
        out.append(acc)
    return out


def fmt_ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def visible_to_alice(topic: str) -> bool:
    return any(topic.startswith(g[:-1]) if g.endswith("*") else topic == g for g in ALICE_GRANTS)


def write_export(path: Path, n: int, now: float, seed: int = 7) -> dict[str, Any]:
    """The export file; returns facts about it (how many events alice sees, …)."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    cum = zipf_weights(len(words))
    start, end = now - 70 * DAY, now - 40 * DAY
    step = (end - start) / n
    alice_visible = 0
    with open(path, "wb") as f:
        header = {
            "type": "header", "format": "notifyd-export", "version": 1,
            "exported_at": fmt_ts(now), "source": {"notifyd": "bench", "host": "bench"},
            "filters": {"topic": None, "since": None},
            "counts": {"events": n, "users": 1},
            "users": [{"name": "alice", "role": "user"}],
        }  # fmt: skip
        f.write(dumps(header) + b"\n")
        chunk: list[bytes] = []
        for i in range(n):
            topic = TOPICS[min(int(rng.paretovariate(0.9)) - 1, len(TOPICS) - 1)]
            if rng.random() < 0.5:
                topic = rng.choice(TOPICS)
            body_words = rng.choices(words, cum_weights=cum, k=rng.randint(8, 40))
            title_words = rng.choices(words, cum_weights=cum, k=rng.randint(2, 6))
            ev: dict[str, Any] = {
                "type": "event",
                "topic": topic,
                "title": " ".join(title_words).capitalize(),
                "body": " ".join(body_words),
                "priority": rng.choice(PRIORITIES),
                "category": rng.choice(CATEGORIES),
                "tags": rng.sample(TAGS, rng.randint(0, 3)),
                "created_at": fmt_ts(start + i * step),
            }
            if visible_to_alice(topic):
                alice_visible += 1
                p_read = 0.9 if i < 0.8 * n else 0.3
                if rng.random() < p_read:
                    ev["state"] = {"alice": {"read": True}}
            chunk.append(dumps(ev))
            if len(chunk) >= 10000:
                f.write(b"\n".join(chunk) + b"\n")
                chunk = []
            if (i + 1) % 200000 == 0:
                h.progress(f"  generated {i + 1:,} events")
        if chunk:
            f.write(b"\n".join(chunk) + b"\n")
    return {"alice_visible": alice_visible, "words": words}


# -- HTTP helpers ----------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 600) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def upload_import(sock_path: str, path: Path) -> dict[str, Any]:
    conn = UnixHTTPConnection(sock_path, timeout=3600)
    size = path.stat().st_size
    conn.putrequest("POST", "/v1/admin/import")
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    with open(path, "rb") as f:
        conn.sock.sendfile(f)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"import answered {resp.status}: {body[:500]!r}")
    return loads(body)


class Client:
    """A keep-alive HTTP client on TCP with a bearer token."""

    def __init__(self, addr: tuple[str, int], token: str) -> None:
        self.addr, self.token = addr, token
        self.conn = http.client.HTTPConnection(*addr, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, data, time.perf_counter() - t0
            except (http.client.HTTPException, OSError):
                # hypercorn closes a keep-alive connection after N requests
                self.conn.close()
                self.conn = http.client.HTTPConnection(*self.addr, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")


# -- the daemon with a config file -------------------------------------------------------


class ConfDaemon(h.Daemon):
    def __init__(self, retention_days: int, database: h.BenchDatabase | None = None) -> None:
        super().__init__()
        self.database = database
        self.conf = self.tmp / "notifyd.toml"
        self.write_conf(retention_days)

    def write_conf(self, retention_days: int) -> None:
        self.conf.write_text(f"retention_days = {retention_days}\npublish_rate = 0\n")

    def command(self) -> list[str]:
        engine = [] if self.database is None else ["--database-url", self.database.url]
        return [*super().command(), "--config", str(self.conf), *engine]

    def reload(self, retention_days: int) -> None:
        self.write_conf(retention_days)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def metric(self, name: str) -> float:
        status, text = h.request("GET", "/metrics", unix=self.socket_path)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metric_buckets(self, name: str) -> dict[str, float]:
        status, text = h.request("GET", "/metrics", unix=self.socket_path)
        out = {}
        for line in str(text).splitlines():
            if line.startswith(name + "{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[le] = float(line.rsplit(" ", 1)[1])
        return out

    def db_sizes(self) -> tuple[int, int]:
        """Database and WAL bytes (PostgreSQL: the database's size; WAL not counted)."""
        if self.database is not None:
            with self.database.connect() as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0, 0
        db = self.tmp / "data" / "notifyd.db"
        wal = Path(str(db) + "-wal")
        return db.stat().st_size, (wal.stat().st_size if wal.exists() else 0)


# -- measurements ----------------------------------------------------------------------------


def query_kinds(args: argparse.Namespace, words: list[str], top_id: int) -> list[tuple[str, Any]]:
    rng = random.Random(11)
    alice_topics = [t for t in TOPICS if visible_to_alice(t)]
    mid_words = words[40:400]
    rare_words = words[1500:]

    def topic_unread(user: str) -> str:
        topics = alice_topics if user == "alice" else TOPICS
        return f"/v1/events?topic={rng.choice(topics)}&unread=true&limit=50"

    def search(user: str) -> str:
        kind = rng.random()
        if kind < 0.4:
            q = rng.choice(COMMON)
        elif kind < 0.8:
            q = f"{rng.choice(mid_words)}+{rng.choice(COMMON)}"
        else:
            q = rng.choice(rare_words)
        return f"/v1/events?q={q}&limit=50"

    def prefix_search(user: str) -> str:
        return f"/v1/events?q={rng.choice(mid_words)[:3]}&limit=50"

    def category(user: str) -> str:
        return f"/v1/events?category={rng.choice(CATEGORIES)}&limit=50"

    def priority(user: str) -> str:
        return "/v1/events?min_priority=5&limit=50"

    def inbox(user: str) -> str:
        return "/v1/events?limit=50"

    def unread(user: str) -> str:
        return "/v1/events?unread=true&limit=50"

    def deep_page(user: str) -> str:
        return f"/v1/events?before={rng.randint(1, top_id)}&limit=50"

    def topic_pattern(user: str) -> str:
        return f"/v1/events?topic={rng.choice(PREFIXES)}/*&limit=50"

    def count_unread(user: str) -> str:
        return "/v1/inbox/count?unread=true"

    def count_topic_unread(user: str) -> str:
        topics = alice_topics if user == "alice" else TOPICS
        return f"/v1/inbox/count?topic={rng.choice(topics)}&unread=true"

    return [
        ("topic+unread", topic_unread),
        ("search q=", search),
        ("search prefix", prefix_search),
        ("category", category),
        ("min_priority=5", priority),
        ("inbox page 1", inbox),
        ("unread page 1", unread),
        ("deep page (before=)", deep_page),
        ("topic pattern a/*", topic_pattern),
        ("count unread", count_unread),
        ("count topic+unread", count_topic_unread),
    ]


def measure_queries(
    addr: tuple[str, int], tokens: dict[str, str], kinds: list[tuple[str, Any]], n: int
) -> list[dict[str, Any]]:
    out = []
    for user, token in tokens.items():
        client = Client(addr, token)
        for name, make in kinds:
            lat, rows = [], 0
            # counts scan everything the reader sees: fewer of them keep the run short
            reps = max(5, n // 10) if name.startswith("count") else n
            for i in range(reps + 3):
                path = make(user)
                status, body, dt = client.call("GET", path)
                if status != 200:
                    raise RuntimeError(f"{path} as {user}: {status} {body[:300]!r}")
                if i >= 3:  # the first ones warm the page cache
                    lat.append(dt)
                    obj = loads(body)
                    rows += len(obj["events"]) if "events" in obj else 0
            s = h.latency_summary(lat)
            out.append({"user": user, "query": name, "n": reps, "rows_avg": rows / reps, **s})
            h.progress(
                f"  {user:5} {name:22} p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms"
                f"  max {s['max_ms']:7.1f} ms"
            )
    return out


class Publisher(threading.Thread):
    """Open-loop paced single-event publisher over a few keep-alive connections."""

    def __init__(self, addr: tuple[str, int], token: str, rate: float, conns: int = 4) -> None:
        super().__init__(daemon=True)
        self.addr, self.token, self.rate, self.conns = addr, token, rate, conns
        self.samples: list[tuple[float, float]] = []  # (send time, latency)
        self.errors = 0
        self.stop_flag = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        workers = [
            threading.Thread(target=self._worker, args=(k,), daemon=True) for k in range(self.conns)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _worker(self, k: int) -> None:
        client = Client(self.addr, self.token)
        period = self.conns / self.rate
        t_next = time.monotonic() + k * period / self.conns
        seq = 0
        while not self.stop_flag.is_set():
            now = time.monotonic()
            if now < t_next:
                time.sleep(t_next - now)
            body = dumps({"topic": "app/web", "title": "pacer", "body": f"tick {k} {seq}"})
            seq += 1
            sent = time.monotonic()
            try:
                status, _, dt = client.call("POST", "/v1/events", body)
            except OSError:
                status, dt = 0, 0.0
            with self._lock:
                if status == 201:
                    self.samples.append((sent, dt))
                else:
                    self.errors += 1
            t_next += period
            if t_next < time.monotonic() - 1.0:  # fell far behind: do not burst
                t_next = time.monotonic()

    def window(self, t0: float, t1: float) -> list[float]:
        with self._lock:
            return [dt for sent, dt in self.samples if t0 <= sent < t1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000, help="old events to import")
    ap.add_argument("--recent", type=int, default=20_000, help="current events (survive the prune)")
    ap.add_argument("--queries", type=int, default=100, help="requests per query kind and user")
    ap.add_argument("--rate", type=float, default=150.0, help="publishes/s during the prune test")
    ap.add_argument(
        "--calm", type=float, default=10.0, help="seconds of publishing before the prune"
    )
    ap.add_argument("--no-prune", action="store_true", help="stop after the queries")
    ap.add_argument("--keep-db", metavar="PATH", help="copy the database here before the prune")
    ap.add_argument(
        "--profile", action="store_true", help="py-spy the daemon during the queries and the prune"
    )
    ap.add_argument(
        "--engine",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="storage engine of the daemon (default sqlite)",
    )
    ap.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL server to create the run's database on (implies --engine postgresql; "
        f"default ${h.BENCH_DATABASE_ENV}, else a private throwaway cluster)",
    )
    ap.add_argument(
        "--keep-database",
        action="store_true",
        help="PostgreSQL: leave the run's database on the server (its URL is printed)",
    )
    args = ap.parse_args()
    if args.database_url:
        args.engine = "postgresql"
    if args.keep_db and args.engine != "sqlite":
        ap.error("--keep-db copies a SQLite database: not with --engine postgresql")

    h.progress(h.cores_note())
    h.idle_check()
    now = time.time()
    work = Path(tempfile.mkdtemp(prefix="notifyd-bench-history-"))
    export = work / "events.jsonl"
    result: dict[str, Any] = {
        "machine": h.machine_info(),
        "version": h.code_version(),
        "args": {**vars(args), "database_url": None},
        "engine": args.engine,
    }
    stack = contextlib.ExitStack()
    try:
        t0 = time.monotonic()
        h.progress(f"writing {args.events:,} events to {export}")
        facts = write_export(export, args.events, now)
        gen_s = time.monotonic() - t0
        h.progress(f"  {export.stat().st_size / 1e6:.0f} MB in {gen_s:.1f} s")
        database = None
        if args.engine == "postgresql":
            database = stack.enter_context(
                h.BenchDatabase(args.database_url, keep=args.keep_database)
            )
            result["postgresql"] = {"server": database.source, **database.settings()}
        with ConfDaemon(retention_days=3650, database=database) as d:
            sock = d.socket_path
            st, _ = h.request(
                "POST", "/v1/users", unix=sock, body={"name": "alice", "role": "user"}
            )
            assert st == 201, st
            for pattern in ALICE_GRANTS:
                st, _ = h.request("POST", "/v1/acl", unix=sock,
                                  body={"user": "alice", "pattern": pattern, "permission": "read"})  # fmt: skip
                assert st == 201, st
            st, tok = h.request("POST", "/v1/tokens", unix=sock,
                                body={"user": "alice", "scopes": ["subscribe"]})  # fmt: skip
            assert st == 201, (st, tok)
            tokens = {"alice": tok["token"], "admin": d.token}

            h.progress(f"importing {args.events:,} events (POST /v1/admin/import)")
            t0 = time.monotonic()
            report = upload_import(sock, export)
            import_s = time.monotonic() - t0
            export.unlink()
            h.progress(
                f"  imported {report['imported']:,} in {import_s:.1f} s "
                f"({report['imported'] / import_s:,.0f} events/s), {report['states']:,} read states"
            )
            h.progress(f"publishing {args.recent:,} current events in batches of 1,000")
            pub = Client(d.addr, d.token)
            rng = random.Random(3)
            t0 = time.monotonic()
            for start in range(0, args.recent, 1000):
                batch = [
                    {"topic": rng.choice(TOPICS), "title": "recent " + rng.choice(COMMON),
                     "body": " ".join(rng.choices(facts["words"][:500], k=20)),
                     "category": rng.choice(CATEGORIES), "priority": rng.choice(PRIORITIES)}
                    for _ in range(min(1000, args.recent - start))
                ]  # fmt: skip
                st, body, _ = pub.call("POST", "/v1/events", dumps(batch))
                assert st == 201, (st, body[:300])
            recent_s = time.monotonic() - t0
            if database is not None:
                # The planner needs statistics of the loaded tables. autovacuum gathers
                # them within a minute of a bulk load; where it is off (as on some
                # servers), nobody does: without them every history query guesses.
                with database.connect() as conn:
                    row = conn.execute("SHOW autovacuum").fetchone()
                    t1 = time.monotonic()
                    conn.execute("ANALYZE")
                result["postgresql"]["autovacuum"] = row[0] if row else "?"
                result["postgresql"]["analyze_s"] = time.monotonic() - t1
                h.progress(
                    f"  ANALYZE in {time.monotonic() - t1:.1f} s (server's autovacuum: "
                    f"{result['postgresql']['autovacuum']})"
                )
            st, last = h.request("GET", "/v1/events?limit=1", unix=sock)
            top_id = last["events"][0]["id"]
            db, wal = d.db_sizes()
            h.progress(
                f"  {args.recent / recent_s:,.0f} events/s; database {db / 1e6:.0f} MB, WAL {wal / 1e6:.1f} MB"
            )
            result["setup"] = {
                "generate_s": gen_s, "import_s": import_s, "import_report": report,
                "recent_s": recent_s, "db_bytes": db, "wal_bytes": wal, "top_id": top_id,
                "alice_visible": facts["alice_visible"],
            }  # fmt: skip

            h.progress(f"queries: {args.queries} of each kind, as alice and as admin")
            kinds = query_kinds(args, facts["words"], top_id)
            prof = None
            if args.profile:
                prof = h.Profiler(d.pid, "history-queries", duration=60, rate=200, gil=False)
                prof.start()
            meter = h.MachineMeter()
            meter.start()
            cpu0 = h.proc_cpu_seconds(d.pid) + h.self_cpu_seconds()
            t0 = time.monotonic()
            queries = measure_queries(d.addr, tokens, kinds, args.queries)
            wall = time.monotonic() - t0
            other = max(
                0.0, meter.stop() - (h.proc_cpu_seconds(d.pid) + h.self_cpu_seconds() - cpu0) / wall
            )
            result["queries"] = queries
            result["queries_other_cores"] = other
            if prof is not None:
                print(prof.finish())

            if args.keep_db:
                import sqlite3

                h.progress(f"copying the database to {args.keep_db}")
                src = sqlite3.connect(str(d.tmp / "data" / "notifyd.db"))
                dst = sqlite3.connect(args.keep_db)
                src.backup(dst)
                dst.close()
                src.close()
            if not args.no_prune:
                result["prune"] = prune_test(d, args)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        stack.close()

    rows = [
        [q["user"], q["query"], q["rows_avg"], q["p50_ms"], q["p95_ms"], q["max_ms"]]
        for q in result["queries"]
    ]
    h.print_table(
        ["user", "query", "rows", "p50 ms", "p95 ms", "max ms"],
        rows,
        f"History queries over {args.events + args.recent:,} events on {args.engine} "
        f"(other cores {result['queries_other_cores']:.2f})",
    )
    if "prune" in result:
        p = result["prune"]
        h.print_table(
            ["window", "publishes", "p50 ms", "p99 ms", "max ms", "errors"],
            [
                [
                    "before the prune",
                    p["before"]["n"],
                    p["before"]["p50_ms"],
                    p["before"]["p99_ms"],
                    p["before"]["max_ms"],
                    p["errors_before"],
                ],
                [
                    "during the prune",
                    p["during"]["n"],
                    p["during"]["p50_ms"],
                    p["during"]["p99_ms"],
                    p["during"]["max_ms"],
                    p["errors_during"],
                ],
            ],  # fmt: skip
            f"Publishing at {args.rate:.0f}/s while {p['pruned']:,} events are pruned in "
            f"{p['prune_s']:.1f} s (other cores {p['other_cores']:.2f})",
        )
        print(
            f"database before {p['db_before'] / 1e6:.0f} MB (WAL {p['wal_before'] / 1e6:.1f} MB), "
            f"after {p['db_after'] / 1e6:.0f} MB (WAL {p['wal_after'] / 1e6:.1f} MB); "
            f"events left {p['events_left']:,}"
        )
    path = h.write_result("history" if args.engine == "sqlite" else "history-postgresql", result)
    h.progress(f"results in {path}")


def prune_test(d: ConfDaemon, args: argparse.Namespace) -> dict[str, Any]:
    db_before, wal_before = d.db_sizes()
    pruned0 = d.metric("notifyd_events_pruned_total")
    pubr = Publisher(d.addr, d.token, args.rate)
    h.progress(f"prune: publishing at {args.rate:.0f}/s for {args.calm:.0f} s before the prune")
    pubr.start()
    time.sleep(1.0)  # warm-up, not counted
    calm0 = time.monotonic()
    time.sleep(args.calm)
    errors_before = pubr.errors
    h.progress("prune: retention_days 3650 -> 30, SIGHUP")
    prof = None
    if args.profile:
        prof = h.Profiler(d.pid, "history-prune", duration=60, rate=200)
        prof.start()
    meter = h.MachineMeter()
    meter.start()
    cpu0 = h.proc_cpu_seconds(d.pid) + h.self_cpu_seconds()
    t_start = time.monotonic()
    d.reload(30)
    target = args.events
    last_log, last_n, last_change = t_start, 0.0, t_start
    while True:
        time.sleep(0.25)
        n = d.metric("notifyd_events_pruned_total") - pruned0
        now = time.monotonic()
        if n != last_n:
            last_n, last_change = n, now
        if n >= target:
            break
        if now - last_change > 120:
            raise RuntimeError(f"the prune stalled at {n:,.0f} of {target:,} events")
        if now - last_log >= 5:
            last_log = now
            h.progress(f"  pruned {n:,.0f} of {target:,} ({n / (now - t_start):,.0f}/s)")
    # the pass ends after the last batch (expired events, WAL checkpoint): its log line
    while "past retention" not in (d.tmp / "server.log").read_text(errors="replace"):
        if time.monotonic() - last_change > 120:
            raise RuntimeError("the pruning pass did not log its end")
        time.sleep(0.1)
    t_end = time.monotonic()
    wall = t_end - t_start
    other = max(
        0.0, meter.stop() - (h.proc_cpu_seconds(d.pid) + h.self_cpu_seconds() - cpu0) / wall
    )
    time.sleep(1.0)
    pubr.stop_flag.set()
    pubr.join()
    if prof is not None:
        print(prof.finish())
    commits = d.metric_buckets("notifyd_commit_seconds_bucket")
    with pubr._lock:
        slowest = sorted(pubr.samples, key=lambda x: -x[1])[:5]
    slow = [{"at_s": round(sent - t_start, 2), "ms": round(dt * 1000, 1)} for sent, dt in slowest]
    h.progress(f"  slowest publishes (s after SIGHUP, ms): {slow}")
    before = pubr.window(calm0, t_start)
    during = pubr.window(t_start, t_end)
    db_after, wal_after = d.db_sizes()
    st, body = h.request("GET", "/v1/inbox/count", unix=d.socket_path)
    events_left = body["count"] if st == 200 else -1

    def summ(v: list[float]) -> dict[str, float]:
        s = h.latency_summary(v)
        s["p99_ms"] = h.percentile(v, 99) * 1000 if v else float("nan")
        s["n"] = len(v)
        return s

    out = {
        "pruned": int(last_n), "prune_s": wall, "rate": args.rate,
        "before": summ(before), "during": summ(during),
        "errors_before": errors_before, "errors_during": pubr.errors - errors_before,
        "db_before": db_before, "wal_before": wal_before, "db_after": db_after,
        "wal_after": wal_after, "events_left": events_left, "other_cores": other,
        "slowest_publishes": slow, "commit_seconds_buckets": commits,
    }  # fmt: skip
    h.progress(
        f"  pruned {out['pruned']:,} in {wall:.1f} s; publish max before "
        f"{out['before']['max_ms']:.1f} ms, during {out['during']['max_ms']:.1f} ms"
    )
    return out


if __name__ == "__main__":
    main()
