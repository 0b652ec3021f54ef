"""Shared plumbing for the benchmarks in ``bench/``.

* :class:`Daemon` starts ``python -m notifyd serve`` on a temporary data directory
  and a free port, waits for ``/healthz``, and cleans everything up afterwards.
* :class:`Baseline` does the same for ``bench/baseline_app.py`` (a bare ASGI app
  on hypercorn's trio worker), the yardstick for the publish benchmark.
* :func:`request` is a tiny blocking HTTP/1.1 client over TCP or a Unix socket
  for setup calls (tokens, health); the load generators live in the benchmarks.
* :class:`ResponseParser` parses HTTP/1.1 responses incrementally for the
  keep-alive load generators.
* :func:`percentile`, :func:`print_table`, :func:`write_result`, :func:`progress`,
  :func:`machine_info` and :class:`CpuMeter` format and record results.

Everything here is standard library only (plus the project's own venv when the
daemon runs), so the load generators stay cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
_T0 = time.monotonic()


# -- output -------------------------------------------------------------------


def progress(msg: str) -> None:
    """One progress line on stderr, stamped with the seconds since start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float, *, presorted: bool = False) -> float:
    """The p-th percentile (0–100) of ``values`` by linear interpolation; NaN if empty."""
    if not values:
        return float("nan")
    data = values if presorted else sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def latency_summary(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of latencies given in seconds, returned in milliseconds."""
    data = sorted(values_s)
    return {
        "count": len(data),
        "p50_ms": percentile(data, 50, presorted=True) * 1e3,
        "p95_ms": percentile(data, 95, presorted=True) * 1e3,
        "p99_ms": percentile(data, 99, presorted=True) * 1e3,
        "max_ms": (data[-1] * 1e3) if data else float("nan"),
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """A plain-text table on stdout, columns sized to fit."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if title:
        print(title)
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    print(line)
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |")
    print(line)
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(line, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def code_version() -> str:
    """The commit under test, with "+dirty" when notifyd's code differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "notifyd", "pyproject.toml"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "notifyd_commit": code_version(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (gitignored) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **data}
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def cores_note() -> str:
    n = os.cpu_count() or 1
    return (
        f"notifyd {code_version()}; machine: {n} CPU core(s); the daemon, its SQLite writer thread and the load "
        f"generator processes all share them, so figures are lower bounds for a server "
        f"with dedicated cores."
    )


# -- CPU accounting -------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of process ``pid``."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        out[int(tid)] = proc_cpu_seconds_path(f"/proc/{pid}/task/{tid}/stat")
    return out


def proc_cpu_seconds_path(path: str) -> float:
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU used by a process between :meth:`start` and :meth:`stop`, as a share of one core.

    ``threads`` then holds the share of the main thread (the trio loop) and of the
    busiest other thread (in notifyd, the SQLite writer).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = self.wall0 = 0.0
        self.t0: dict[int, float] = {}
        self.share = float("nan")
        self.threads: dict[str, float] = {}

    def start(self) -> None:
        self.t0 = thread_cpu_seconds(self.pid)
        self.cpu0, self.wall0 = proc_cpu_seconds(self.pid), time.monotonic()

    def stop(self) -> float:
        cpu, wall = proc_cpu_seconds(self.pid), time.monotonic()
        t1 = thread_cpu_seconds(self.pid)
        span = max(wall - self.wall0, 1e-9)
        self.share = (cpu - self.cpu0) / span
        per = {tid: (t1[tid] - self.t0.get(tid, 0.0)) / span for tid in t1}
        main = per.pop(self.pid, float("nan"))
        self.threads = {"main": main, "busiest_other": max(per.values(), default=0.0)}
        return self.share


def _proc_stat() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class MachineMeter:
    """Busy CPU of the whole machine (in cores) between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.busy0 = self.total0 = 0
        self.cores = float("nan")

    def start(self) -> None:
        self.busy0, self.total0 = _proc_stat()

    def stop(self) -> float:
        busy, total = _proc_stat()
        n = os.cpu_count() or 1
        self.cores = (busy - self.busy0) / max(total - self.total0, 1) * n
        return self.cores


def idle_check(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes right now; warn if the machine is not quiet."""
    meter = MachineMeter()
    meter.start()
    time.sleep(seconds)
    busy = meter.stop()
    if busy > 0.15:
        progress(
            f"WARNING: other processes keep {busy:.2f} cores busy before the benchmark starts; "
            "figures will read low and vary (run on a quiet machine)"
        )
    return busy


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# -- blocking HTTP for setup -------------------------------------------------------


def request(
    method: str,
    path: str,
    *,
    tcp: tuple[str, int] | None = None,
    unix: str | None = None,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One HTTP/1.1 request with ``Connection: close``; returns (status, parsed JSON or text)."""
    if unix is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(unix)
        host = "localhost"
    else:
        assert tcp is not None
        sock = socket.create_connection(tcp, timeout=timeout)
        host = f"{tcp[0]}:{tcp[1]}"
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    try:
        sock.sendall(head.encode() + b"\r\n" + data)
        parser = ResponseParser()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response was complete")
            done = parser.feed(chunk)
            if done:
                status, payload, _ = done[0]
                break
    finally:
        sock.close()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


class ResponseParser:
    """Incremental HTTP/1.1 response parser for keep-alive clients (Content-Length bodies)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes, bool]]:
        """Add bytes; return every response now complete as (status, body, server_closes)."""
        buf = self.buf
        buf += data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = bytes(buf[:end]).lower()
            status = int(head[9:12])
            i = head.find(b"content-length:")
            if i < 0:
                if b"transfer-encoding: chunked" in head:
                    raise ValueError("chunked responses are not supported by this parser")
                length = 0
            else:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return out
            out.append((status, bytes(buf[end + 4 : total]), b"connection: close" in head))
            del buf[:total]


def start_child(target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    """Start ``target(*args, conn)`` in a daemonic process; return the process and
    this side of the pipe ``conn`` is the other end of (its reports come there)."""
    import multiprocessing as mp

    parent_end, child_end = mp.Pipe()
    proc = mp.Process(target=target, args=(*args, child_end), daemon=True)
    proc.start()
    child_end.close()
    return proc, parent_end


def wait_children_ready(children: Sequence[tuple[Any, Any]], what: str = "subscriber") -> None:
    """Wait for every child of :func:`start_child` to report (``{"error": …}`` when it
    failed) that it is connected."""
    for _proc, conn in children:
        if not conn.poll(120):
            raise RuntimeError(f"a {what} process did not connect in time")
        msg = conn.recv()
        if "error" in msg:
            raise RuntimeError(f"{what} process failed: {msg['error']}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(tcp: tuple[str, int], proc: subprocess.Popen, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} during start-up")
        try:
            status, _ = request("GET", path, tcp=tcp, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s")


# -- servers under test ------------------------------------------------------------


class _Server:
    """A server subprocess on a free port, with its own temporary directory."""

    health_path = "/healthz"

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"notifyd-bench-{name}-"))
        self.port = free_port()
        self.addr = ("127.0.0.1", self.port)
        self.proc: subprocess.Popen | None = None
        self._log = None
        #: added to the server's environment (after PYTHONPATH is cleared)
        self.extra_env: dict[str, str] = {}

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> _Server:
        self._log = open(self.tmp / "server.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
        )
        try:
            wait_healthy(self.addr, self.proc, self.health_path, timeout=30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        progress(f"{self.name} up on 127.0.0.1:{self.port} (pid {self.proc.pid})")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.tmp / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    progress(f"{self.name} did not stop on SIGTERM; killing it")
                    self.proc.kill()
                    self.proc.wait()
            if exc_type is not None and exc_type is not KeyboardInterrupt:
                tail = self.log_tail()
                if tail:
                    print(f"--- last lines of the {self.name} log ---\n{tail}", file=sys.stderr)
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


class Daemon(_Server):
    """``python -m notifyd serve`` on a temporary data dir; ``.token`` is a TCP admin token."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__("notifyd")
        # the benchmark's push service listens on 127.0.0.1
        self.extra_env["NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS"] = "true"
        self.extra_env.update(env or {})
        self.socket_path = str(self.tmp / "notifyd.sock")
        self.token = ""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "notifyd",
            "serve",
            "--data-dir",
            str(self.tmp / "data"),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--socket",
            self.socket_path,
        ]

    def __enter__(self) -> Daemon:
        super().__enter__()
        try:
            self.token = self.create_token()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def create_token(self) -> str:
        status, body = request("POST", "/v1/tokens", unix=self.socket_path, body={"user": "admin"})
        if status != 201 or not isinstance(body, dict) or "token" not in body:
            raise RuntimeError(f"creating a token failed: {status} {body!r}")
        return body["token"]

    def health(self) -> dict[str, Any]:
        status, body = request("GET", "/healthz", tcp=self.addr)
        if status != 200:
            raise RuntimeError(f"/healthz answered {status}")
        return body


class Baseline(_Server):
    """``bench/baseline_app.py``: the bare hypercorn-trio ASGI app."""

    def __init__(self) -> None:
        super().__init__("baseline")

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "baseline_app.py"), f"127.0.0.1:{self.port}"]


# -- profiling (optional: py-spy from PyPI) ------------------------------------------


def py_spy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` on a server for the measured window, then a text summary.

    Writes ``bench/results/<name>.collapsed`` (collapsed stacks: feed it to
    flamegraph.pl or https://www.speedscope.app) and ``bench/results/<name>.txt``.
    With ``gil=True`` only the thread holding the GIL is sampled: for a
    single-process Python server that is the scarce resource.
    Sampling is non-blocking, so the server is not paused by the profiler; it still
    costs some CPU on a 2-core machine, so profiled runs read a little low.
    """

    def __init__(
        self, pid: int, name: str, duration: float, rate: int = 100, gil: bool = False
    ) -> None:
        self.pid, self.name, self.duration, self.rate, self.gil = pid, name, duration, rate, gil
        self.out = RESULTS_DIR / f"{name}.collapsed"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = py_spy_path()
        if exe is None:
            progress("--profile: py-spy not found (install it: .venv/bin/pip install py-spy)")
            return
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--duration",
                str(max(1, round(self.duration))),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--output",
                str(self.out),
                *(["--gil"] if self.gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self) -> str:
        if self.proc is None:
            return ""
        try:
            _, err = self.proc.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "py-spy did not finish"
        if self.proc.returncode != 0 or not self.out.exists():
            return f"py-spy failed: {err.decode(errors='replace')[-500:]}"
        text = summarize_collapsed(self.out)
        (RESULTS_DIR / f"{self.name}.txt").write_text(text)
        progress(f"profile written to {self.out} and {self.out.with_suffix('.txt')}")
        return text


def _func(frame: str) -> str:
    # "publish (notifyd/core/inbox.py:30)" -> "publish (notifyd/core/inbox.py)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0] if where else ""
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def summarize_collapsed(path: Path, top: int = 30) -> str:
    """Self and inclusive sample shares per function and per thread, as text."""
    from collections import Counter

    threads: Counter[str] = Counter()
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        body = [f for f in frames if not f.startswith(("thread", "process"))]
        threads[thread] += n
        if body:
            self_c[_func(body[-1])] += n
        for f in {_func(f) for f in body}:
            incl[f] += n
    if not total:
        return "no samples\n"
    out = [f"{total} samples", "", "by thread:"]
    out += [f"  {n / total:6.1%}  {t}" for t, n in threads.most_common()]
    out += ["", f"top {top} by self time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_c.most_common(top)]
    out += ["", f"top {top} by inclusive time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out) + "\n"


# -- PostgreSQL (cluster mode) ---------------------------------------------------------

#: the server the PostgreSQL benchmarks use when --database-url is not given
BENCH_DATABASE_ENV = "NOTIFYD_BENCH_DATABASE_URL"


def _tests_pg() -> Any:
    """``tests/pg.py`` (the test suite's PostgreSQL machinery), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_notifyd_tests_pg", REPO / "tests" / "pg.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BenchDatabase:
    """A fresh PostgreSQL database for one benchmark run, dropped at the end.

    The server is ``url`` if given, else ``$NOTIFYD_BENCH_DATABASE_URL``, else a
    private throwaway cluster started with ``tests/pg.py``'s machinery (initdb into a
    temporary directory, deleted afterwards) with ``fsync`` back on, so that a
    commit is as durable as SQLite's ``synchronous=FULL``. ``.url`` names the new
    database ``bench_<random>``; ``.server_pids()`` lists the server's processes when
    they run on this machine (for CPU accounting from /proc).
    """

    def __init__(self, url: str | None = None, keep: bool = False) -> None:
        #: leave the database in place at the end (to study it); not with a private cluster
        self.keep = keep
        self.server_url = (url or os.environ.get(BENCH_DATABASE_ENV, "")).strip()
        self.pg = _tests_pg()
        self.cluster: Any = None
        self.name = f"bench_{os.urandom(6).hex()}"
        self.url = ""

    @property
    def source(self) -> str:
        if self.cluster is not None:
            return f"private cluster in {self.cluster.base} (port {self.cluster.port}, fsync on)"
        return self.pg.redact(self.server_url)

    def __enter__(self) -> BenchDatabase:
        if not self.server_url:
            progress(
                "no --database-url nor $NOTIFYD_BENCH_DATABASE_URL: starting a private cluster"
            )
            self.cluster = self.pg.PgCluster.create()
            with open(self.cluster.data / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# notifyd benchmarks: durable commits\nfsync = on\nfull_page_writes = on\n"
                )
            try:
                self.cluster.start()
            except BaseException:
                self.cluster.destroy()
                raise
            self.server_url = self.cluster.url
        try:
            with self.pg.connect(self.server_url) as conn:
                conn.execute(f"CREATE DATABASE \"{self.name}\" TEMPLATE template0 ENCODING 'UTF8'")
        except BaseException:
            if self.cluster is not None:
                self.cluster.destroy()
            raise
        self.url = self.pg.with_database(self.server_url, self.name)
        progress(f"PostgreSQL database {self.name} on {self.source}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.keep and self.cluster is None:
            progress(f"kept the database: {self.pg.redact(self.url)}")
            return
        try:
            with self.pg.connect(self.server_url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except Exception as e:  # noqa: BLE001 - report, then still stop a private cluster
            progress(f"could not drop the database {self.name}: {e}")
        finally:
            if self.cluster is not None:
                self.cluster.destroy()

    def connect(self) -> Any:
        """An autocommit psycopg connection to the benchmark's database."""
        return self.pg.connect(self.url)

    def settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "max_connections",
        )
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                [list(names)],
            ).fetchall()
        return dict(rows)

    def server_pids(self) -> list[int]:
        """Processes of the PostgreSQL server when it runs here (a local address):
        every process named ``postgres``; [] when the server is elsewhere."""
        from urllib.parse import urlsplit

        host = urlsplit(self.server_url).hostname
        if host not in (None, "", "127.0.0.1", "localhost", "::1"):
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                        pids.append(int(entry))
        return pids


class PgDaemon(Daemon):
    """A cluster node: ``notifyd serve --database-url URL --node-name NAME``."""

    def __init__(
        self, database_url: str, node_name: str, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(env)
        self.name = f"notifyd {node_name}"
        self.database_url = database_url
        self.node_name = node_name

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--database-url",
            self.database_url,
            "--node-name",
            self.node_name,
        ]


class GroupCpu:
    """CPU seconds used by a changing set of processes (children counted while alive)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.start_cpu: dict[int, float] = {}
        self.wall0 = 0.0
        self.cores = float("nan")

    def _sample(self) -> dict[int, float]:
        out = {}
        for pid in self.pids():
            cpu = proc_cpu_seconds(pid)
            if cpu == cpu:
                out[pid] = cpu
        return out

    def start(self) -> None:
        self.start_cpu, self.wall0 = self._sample(), time.monotonic()

    def stop(self) -> float:
        now = self._sample()
        used = sum(cpu - self.start_cpu.get(pid, 0.0) for pid, cpu in now.items())
        self.cores = used / max(time.monotonic() - self.wall0, 1e-9)
        return self.cores
