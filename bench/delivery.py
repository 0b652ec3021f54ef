"""Delivery through the outbox: Web Push and email throughput, and what delivery costs publishing.

(1) Web Push: 50 subscriptions (``--push-subs``), made with
    ``POST /v1/webpush/subscriptions`` and pointing at a local push service; 100
    events (``--push-events``) published in batches of 50, i.e. 5,000 pushes. The
    result is deliveries/s from the first publish until ``/v1/stats`` shows every
    delivery ``sent``, and the time from the first publish to the last push.
(2) Email: 10 Apprise ``mailto://`` channels (``--mail-channels``) to an aiosmtpd
    server on 127.0.0.1; 50 events (``--mail-events``), i.e. 500 emails; the same
    figures.
(4) FCM and (5) APNs: 50 devices each (``--mobile-devices``) registered with
    ``POST /v1/devices`` for the admin, 100 events (``--mobile-events``) in batches
    of 50, i.e. 5,000 pushes each; the same figures as (1). They run against the
    test suite's fakes (tests/fakefcm.py: HTTP/1.1, an OAuth2 token endpoint that
    verifies the signed assertion, a send endpoint that checks the bearer token and
    the message's shape; tests/fakeapns.py: HTTP/2 over TLS, verifying the ES256
    provider token, the headers and the payload), each in its own process. A push
    counts as checked when the fake answered it 200 after its checks.
(3) Added publish cost: single-event ``POST /v1/events`` from 32 keep-alive
    connections (the raw client of bench/publish.py) for 2 s of warm-up + 8 s, first
    with no channel at all, then with users who may read the topic, each with 3
    channels (2 Web Push subscriptions + 1 email address), while the outbox sends
    in the background: 1 user (3 deliveries per event), then 20 users (60 per
    event; ``--users 1,20``). Target: ≥ 0.90 × the rate without channels. Reports
    the rates, the ratios, what the outbox sent meanwhile and its backlog after.

The local push service is a small epoll HTTP/1.1 server in its own process: it
answers every ``POST /push/<id>`` with 201 and counts it. It keeps a sample of
the pushes (``--sample``, default 100, spread evenly), which this script then
checks as a push service and a browser would: the VAPID JWT (ES256, signed with
the daemon's key, ``aud`` = the service's origin) and the aes128gcm body,
decrypted with the subscription's private key into the JSON of a published
event. The SMTP server is aiosmtpd in its own process; it accepts and counts
every message, and this script checks the subject of a sample. Both report their
CPU use.

Run:  .venv/bin/python bench/delivery.py [--only push,email,publish,fcm,apns] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import select
import socket
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    REPO,
    CpuMeter,
    Daemon,
    MachineMeter,
    Profiler,
    cores_note,
    free_port,
    idle_check,
    percentile,
    print_table,
    proc_cpu_seconds,
    proc_cpu_seconds_path,
    progress,
    request,
    self_cpu_seconds,
    write_result,
)
from publish import SINGLE_EVENT, build_request, closed_loop_worker, summarize  # noqa: E402

TARGET_PUBLISH_RATIO = 0.90
MOBILE_LABELS = {"fcm": "(4) FCM", "apns": "(5) APNs"}
PUSH_TOPIC = "bench.push"
MAIL_TOPIC = "bench.mail"
FROM_ADDR = "notifyd@example.com"

# -- the local push service (runs in a child process) --------------------------------

_PUSH_OK = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"


def _header(head: bytes, name: bytes) -> str:
    """The value of header ``name`` (lower case) in a raw request head, or ""."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


def push_sink_worker(listener: socket.socket, pipe: Any) -> None:
    """Answer every ``POST /push/<id>`` with 201; count pushes and keep a sample.

    Commands on ``pipe``: ``("reset", stride)`` zeroes the counters and keeps
    every ``stride``-th push from then on (0: none); ``("stats",)`` answers the
    counters, arrival times, the sample and this process's CPU seconds;
    ``("stop",)`` ends the process.
    """
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    ep.register(pipe.fileno(), select.EPOLLIN)
    conns: dict[int, tuple[socket.socket, bytearray]] = {}
    clock = time.monotonic
    arrivals = array("d")
    per_sub: Counter[str] = Counter()
    sample: list[tuple[str, str, str, bytes]] = []
    stride = 0
    count = 0
    bad = 0
    while True:
        for fd, _ev in ep.poll(1.0):
            if fd == listener.fileno():
                while True:
                    try:
                        s, _ = listener.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[s.fileno()] = (s, bytearray())
                    ep.register(s.fileno(), select.EPOLLIN)
                continue
            if fd == pipe.fileno():
                cmd = pipe.recv()
                if cmd[0] == "reset":
                    arrivals, per_sub, sample = array("d"), Counter(), []
                    stride, count, bad = cmd[1], 0, 0
                elif cmd[0] == "stats":
                    t = os.times()
                    pipe.send(
                        {
                            "count": count,
                            "bad": bad,
                            "arrivals": arrivals,
                            "per_sub": dict(per_sub),
                            "sample": sample,
                            "cpu_s": t.user + t.system,
                            "connections": len(conns),
                        }
                    )
                elif cmd[0] == "stop":
                    return
                continue
            s, buf = conns[fd]
            try:
                data = s.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                s.close()
                del conns[fd]
                continue
            buf += data
            out = []
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end])
                length = int(_header(head, b"content-length") or 0)
                total = end + 4 + length
                if len(buf) < total:
                    break
                now = clock()
                path = head.split(b" ", 2)[1].decode("latin-1")
                if path.startswith("/push/"):
                    sub = path[6:]
                    count += 1
                    arrivals.append(now)
                    per_sub[sub] += 1
                    if stride and count % stride == 0:
                        sample.append(
                            (
                                sub,
                                _header(head, b"authorization"),
                                _header(head, b"content-encoding"),
                                bytes(buf[end + 4 : total]),
                            )
                        )
                    out.append(_PUSH_OK)
                else:
                    bad += 1
                    out.append(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                del buf[:total]
            if out:
                s.setblocking(True)  # 201s are tiny; a blocking send never waits here
                s.sendall(b"".join(out))
                s.setblocking(False)


# -- the SMTP server (runs in a child process) ----------------------------------------


def smtp_sink_worker(port: int, pipe: Any) -> None:
    """aiosmtpd on 127.0.0.1:``port``, accepting every message; same commands as the
    push service (``("reset", keep)`` keeps the first ``keep`` raw messages)."""
    import threading

    from aiosmtpd.controller import Controller

    lock = threading.Lock()
    state: dict[str, Any] = {"arrivals": array("d"), "per_rcpt": Counter(), "sample": [], "keep": 0}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            now = time.monotonic()
            with lock:
                state["arrivals"].append(now)
                for rcpt in envelope.rcpt_tos:
                    state["per_rcpt"][rcpt] += 1
                if len(state["sample"]) < state["keep"]:
                    state["sample"].append(bytes(envelope.content))
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    pipe.send("ready")
    try:
        while True:
            cmd = pipe.recv()
            if cmd[0] == "reset":
                with lock:
                    state.update(arrivals=array("d"), per_rcpt=Counter(), sample=[], keep=cmd[1])
            elif cmd[0] == "stats":
                t = os.times()
                with lock:
                    pipe.send(
                        {
                            "count": len(state["arrivals"]),
                            "arrivals": state["arrivals"],
                            "per_rcpt": dict(state["per_rcpt"]),
                            "sample": list(state["sample"]),
                            "cpu_s": t.user + t.system,
                        }
                    )
            elif cmd[0] == "stop":
                break
    finally:
        controller.stop()


class Sink:
    """A sink child process and its command pipe; ``with Sink.push() as s: s.port``."""

    def __init__(self, name: str, target: Any, args: tuple, port: int) -> None:
        self.name, self.port = name, port
        self.pipe, child = mp.Pipe()
        self.proc = mp.Process(target=target, args=(*args, child), daemon=True)
        self._child = child
        self._listener: socket.socket | None = None  # the push service's, until forked

    @classmethod
    def push(cls) -> Sink:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        sink = cls("push service", push_sink_worker, (listener,), listener.getsockname()[1])
        sink._listener = listener
        return sink

    @classmethod
    def smtp(cls) -> Sink:
        port = free_port()
        return cls("SMTP server", smtp_sink_worker, (port,), port)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def __enter__(self) -> Sink:
        self.proc.start()
        self._child.close()
        if self._listener is not None:
            self._listener.close()  # the child has its own copy
        elif not self.pipe.poll(15) or self.pipe.recv() != "ready":
            raise RuntimeError(f"the {self.name} did not start")
        progress(f"{self.name} up on 127.0.0.1:{self.port} (pid {self.pid})")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.pipe.send(("stop",))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()

    def reset(self, keep: int) -> None:
        self.pipe.send(("reset", keep))

    def stats(self) -> dict[str, Any]:
        self.pipe.send(("stats",))
        if not self.pipe.poll(30):
            raise RuntimeError(f"the {self.name} did not answer")
        return self.pipe.recv()


# -- the fake FCM and APNs (run in a child process) ---------------------------------------

APNS_KEY_ID = "BENCHKEY01"
APNS_TEAM_ID = "BENCHTEAM1"
APNS_TOPIC = "org.notifyd.bench"


def mobile_sink_worker(kind: str, directory: str, pipe: Any) -> None:
    """tests/fakefcm.py (``kind`` "fcm") or tests/fakeapns.py ("apns") in this
    process. Sends ``("ready", settings)`` with the daemon settings that point at it,
    then answers the push service's commands: ``("reset", _)`` starts counting
    anew, ``("stats",)`` answers the pushes since (count of 200s, arrival times,
    per device, refused ones and why) and this process's CPU seconds."""
    from pathlib import Path

    sys.path.insert(0, str(REPO))
    where = Path(directory)
    fake: Any
    if kind == "fcm":
        from tests.fakefcm import FakeFcm

        fake = FakeFcm(project="notifyd-bench")
        fake.__enter__()
        account = fake.account(where / "fcm-key.json")
        settings = {"NOTIFYD_FCM_SERVICE_ACCOUNT_FILE": str(account.path),
                    "NOTIFYD_FCM_ENDPOINT": fake.origin}  # fmt: skip

        def pushes() -> list[tuple[float, str, int, str]]:
            with fake._lock:
                return [(x.at, str(x.message.get("token")), x.status, x.error or "")
                        for x in fake.sent]  # fmt: skip
    else:
        from tests.fakeapns import FakeApns, write_p8

        key = write_p8(where / "apns-key.p8")
        fake = FakeApns(where / "apns", key, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID,
                        topic=APNS_TOPIC)  # fmt: skip
        fake.__enter__()
        settings = {"NOTIFYD_APNS_KEY_FILE": str(where / "apns-key.p8"),
                    "NOTIFYD_APNS_KEY_ID": APNS_KEY_ID, "NOTIFYD_APNS_TEAM_ID": APNS_TEAM_ID,
                    "NOTIFYD_APNS_TOPIC": APNS_TOPIC, "NOTIFYD_APNS_ENVIRONMENT": "sandbox",
                    "NOTIFYD_APNS_ENDPOINT": fake.origin,
                    "SSL_CERT_FILE": str(fake.ca.ca_file)}  # fmt: skip

        def pushes() -> list[tuple[float, str, int, str]]:
            return [(x.at, x.device, x.status, x.reason) for x in fake.received()]

    pipe.send(("ready", settings))
    start = 0
    try:
        while True:
            cmd = pipe.recv()
            if cmd[0] == "reset":
                start = len(pushes())
            elif cmd[0] == "stats":
                seen = pushes()[start:]
                ok = [x for x in seen if x[2] == 200]
                t = os.times()
                pipe.send({
                    "count": len(ok),
                    "arrivals": array("d", (x[0] for x in ok)),
                    "per_device": dict(Counter(x[1] for x in ok)),
                    "refused": dict(Counter(f"{x[2]} {x[3]}"[:100] for x in seen
                                            if x[2] != 200)),
                    "requests": len(seen),
                    "cpu_s": t.user + t.system,
                })  # fmt: skip
            elif cmd[0] == "stop":
                break
    finally:
        fake.__exit__(None, None, None)


class MobileSink(Sink):
    """The fake FCM or APNs in a child process; ``settings`` point the daemon at it."""

    def __init__(self, kind: str, directory: str) -> None:
        name = {"fcm": "fake FCM", "apns": "fake APNs"}[kind]
        super().__init__(name, mobile_sink_worker, (kind, directory), 0)
        self.settings: dict[str, str] = {}

    def __enter__(self) -> MobileSink:
        self.proc.start()
        self._child.close()
        if not self.pipe.poll(30):
            raise RuntimeError(f"the {self.name} did not start")
        msg = self.pipe.recv()
        if not (isinstance(msg, tuple) and msg[0] == "ready"):
            raise RuntimeError(f"the {self.name} did not start: {msg!r}")
        self.settings = msg[1]
        progress(f"{self.name} up (pid {self.pid})")
        return self


# -- daemon helpers ---------------------------------------------------------------------


def api(d: Daemon, method: str, path: str, body: Any = None, expect: tuple = (200, 201)) -> Any:
    """A call over the daemon's Unix socket (as the admin)."""
    status, out = request(method, path, unix=d.socket_path, body=body, timeout=300)
    if status not in expect:
        raise RuntimeError(f"{method} {path} answered {status}: {out!r}")
    return out


def delivery_states(d: Daemon) -> dict[str, dict[str, int]]:
    """``/v1/stats`` ``by_channel``: {kind: {state: count}} (read rates dropped)."""
    by = api(d, "GET", "/v1/stats")["by_channel"]
    return {
        kind: {s: n for s, n in row.items() if s in ("pending", "sending", "sent", "dead")}
        for kind, row in by.items()
    }


def writer_counters(d: Daemon) -> dict[str, float]:
    """The writer's group-commit counters from ``/metrics``."""
    text = api(d, "GET", "/metrics")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("notifyd_commit_batch_jobs_sum", "notifyd_commit_seconds_count",
                    "notifyd_commit_seconds_sum"):  # fmt: skip
            out[name] = float(value)
    return out


def writer_figures(before: dict[str, float], after: dict[str, float], span: float) -> dict:
    """Commits/s, jobs per commit, time per commit and the share of time spent
    running and committing groups (the writer's busy share, fsync included)."""
    commits = after["notifyd_commit_seconds_count"] - before["notifyd_commit_seconds_count"]
    jobs = after["notifyd_commit_batch_jobs_sum"] - before["notifyd_commit_batch_jobs_sum"]
    secs = after["notifyd_commit_seconds_sum"] - before["notifyd_commit_seconds_sum"]
    return {
        "commits_per_s": commits / span,
        "jobs_per_s": jobs / span,
        "jobs_per_commit": jobs / commits if commits else float("nan"),
        "ms_per_commit": secs / commits * 1e3 if commits else float("nan"),
        "busy_share": secs / span,
    }


def writer_text(w: dict[str, float]) -> str:
    return (
        f"{w['commits_per_s']:,.0f} commits/s × {w['jobs_per_commit']:.1f} jobs, "
        f"{w['ms_per_commit']:.2f} ms each, busy {w['busy_share']:.0%}"
    )


def daemon_env(args: argparse.Namespace) -> dict[str, str]:
    """``--daemon-env NAME=VALUE`` options as a dict."""
    return dict(kv.split("=", 1) for kv in args.daemon_env)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """A simulated browser subscription: the keys a push is encrypted to."""

    sub_id: str
    endpoint: str
    private_key: Any
    auth: bytes

    @classmethod
    def make(cls, origin: str, sub_id: str) -> Browser:
        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(sub_id, f"{origin}/push/{sub_id}", ec.generate_private_key(ec.SECP256R1()),
                   os.urandom(16))  # fmt: skip

    def subscription(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives import serialization

        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(self.auth)},
        }


def check_vapid(header: str, public_key: str, origin: str) -> None:
    """Verify an RFC 8292 ``vapid t=<jwt>, k=<key>`` header as a push service does.

    Raises:
        ValueError: what is wrong with it.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"scheme {scheme!r}")
    parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
    if parts.get("k") != public_key:
        raise ValueError("signed with another key than the daemon's")
    head, claims, sig_b64 = parts.get("t", "..").split(".")
    sig = _b64url_decode(sig_b64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(public_key))
    key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    aud = json.loads(_b64url_decode(claims)).get("aud")
    if aud != origin:
        raise ValueError(f"aud {aud!r} is not {origin}")


def check_push_sample(
    sample: list, browsers: dict[str, Browser], vapid_key: str, origin: str, titles: dict[int, str]
) -> dict[str, Any]:
    """Verify VAPID and decrypt each sampled push; its JSON must be a published event."""
    import http_ece

    ok, errors = 0, Counter()
    for sub_id, authorization, encoding, body in sample:
        try:
            check_vapid(authorization, vapid_key, origin)
            if encoding != "aes128gcm":
                raise ValueError(f"content-encoding {encoding!r}")
            b = browsers[sub_id]
            plain = http_ece.decrypt(
                body, private_key=b.private_key, auth_secret=b.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
            if titles.get(payload.get("id")) != payload.get("title"):
                raise ValueError("payload is not one of the published events")
            ok += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
    return {"checked": len(sample), "ok": ok, "errors": dict(errors)}


# -- CPU per thread -----------------------------------------------------------------------


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[int(tid)] = (name, proc_cpu_seconds_path(f"/proc/{pid}/task/{tid}/stat"))
    return out


class ThreadSplit:
    """The daemon's CPU between :meth:`start` and :meth:`stop`, in shares of one core:
    ``total``, ``main`` (the trio loop), ``writer`` (the busiest thread that is not
    a trio worker thread: the SQLite writer), ``workers`` (trio's worker threads
    together: store reads and Apprise's blocking sends), ``other``.
    Also meters other processes (the sinks) and the machine."""

    def __init__(self, d: Daemon, extra: dict[str, int] | None = None) -> None:
        self.d, self.pid, self.extra = d, d.pid, extra or {}
        self.machine = MachineMeter()
        self.shares: dict[str, float] = {}
        self.writer: dict[str, float] = {}

    def start(self) -> None:
        self.w0 = writer_counters(self.d)
        self.t0, self.wall0 = _threads(self.pid), time.monotonic()
        self.p0 = {k: proc_cpu_seconds(p) for k, p in self.extra.items()}
        self.total0 = proc_cpu_seconds(self.pid)
        self.self0 = self_cpu_seconds()
        self.machine.start()

    def stop(self) -> dict[str, float]:
        t1, wall = _threads(self.pid), time.monotonic()
        total = proc_cpu_seconds(self.pid)
        machine = self.machine.stop()
        span = max(wall - self.wall0, 1e-9)
        main = writer = workers = other = 0.0
        others = []
        # Threads that Python started (the writer) keep the process's name; trio
        # names its worker threads "Trio thread N", renamed after each job while
        # it runs.
        process_name = t1.get(self.pid, ("python", 0.0))[0]
        for tid, (name, cpu) in t1.items():
            used = (cpu - self.t0.get(tid, (name, 0.0))[1]) / span
            if tid == self.pid:
                main = used
            elif name != process_name:
                workers += used
            else:
                others.append(used)
        others.sort(reverse=True)
        if others:
            writer, other = others[0], sum(others[1:])
        s = {
            "span_s": span,
            "daemon": (total - self.total0) / span,
            "main": main,
            "writer": writer,
            "workers": workers,
            "other_threads": other,
            "bench_process": (self_cpu_seconds() - self.self0) / span,
        }
        for k, p in self.extra.items():
            s[k] = (proc_cpu_seconds(p) - self.p0[k]) / span
        s["machine_cores"] = machine
        s["other_cores"] = max(
            0.0, machine - s["daemon"] - s["bench_process"] - sum(s[k] for k in self.extra)
        )
        self.shares = s
        self.writer = writer_figures(self.w0, writer_counters(self.d), span)
        return s


def cpu_text(s: dict[str, float]) -> str:
    text = (
        f"{s['daemon']:.0%} (main {s['main']:.0%} + writer {s['writer']:.0%}"
        f" + workers {s['workers']:.0%}"
    )
    if s["other_threads"] >= 0.005:
        text += f" + other {s['other_threads']:.0%}"
    return text + ")"


# -- (1) and (2): delivery throughput ------------------------------------------------------


def publish_batches(d: Daemon, topic: str, count: int, batch: int, tag: str) -> dict[int, str]:
    """Publish ``count`` events in batches over TCP; return {id: title}."""
    titles: dict[int, str] = {}
    for start in range(0, count, batch):
        events = [
            {
                "topic": topic,
                "title": f"{tag} {i}: backup of node-{i % 17} finished",
                "body": f"Nightly backup {i} of /srv finished in 42 s; 1.2 GiB written, 0 errors.",
                "priority": "default",
                "tags": ["backup"],
                "click": f"https://example.com/backups/{i}",
            }
            for i in range(start, min(count, start + batch))
        ]
        status, out = request("POST", "/v1/events", tcp=d.addr, token=d.token, body=events)
        if status != 201:
            raise RuntimeError(f"publishing a batch answered {status}: {out!r}")
        titles.update({e["id"]: e["title"] for e in out["events"]})
    return titles


def wait_delivered(
    d: Daemon, kind: str, expected: int, timeout: float, poll: float
) -> tuple[float | None, list[tuple[float, int, int, int]]]:
    """Poll ``/v1/stats`` until ``expected`` deliveries of ``kind`` are sent or dead.

    Returns the monotonic time the poll first saw them all done (None on timeout)
    and the timeline [(time, sent, dead, pending + sending)].
    """
    timeline = []
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        row = delivery_states(d).get(kind, {})
        now = time.monotonic()
        sent, dead = row.get("sent", 0), row.get("dead", 0)
        backlog = row.get("pending", 0) + row.get("sending", 0)
        timeline.append((now, sent, dead, backlog))
        if sent + dead >= expected and backlog == 0:
            return now, timeline
        if now > deadline:
            return None, timeline
        if now - last_report > 2.0:
            progress(f"  {kind}: {sent:,} sent, {dead:,} dead, {backlog:,} to go")
            last_report = now
        time.sleep(poll)


def drain_figures(
    expected: int,
    t0: float,
    t_published: float,
    t_done: float | None,
    timeline: list,
    sink: dict[str, Any],
) -> dict[str, Any]:
    """Rates and times of one delivery run, from /v1/stats and from the sink's clock."""
    arrivals = sorted(sink["arrivals"])
    sent = timeline[-1][1] if timeline else 0
    dead = timeline[-1][2] if timeline else 0
    out: dict[str, Any] = {
        "expected": expected,
        "sent": sent,
        "dead": dead,
        "backlog_at_end": timeline[-1][3] if timeline else None,
        "received": sink["count"],
        "complete": t_done is not None and sent == expected,
        "publish_s": t_published - t0,
    }
    if t_done is not None:
        out["all_sent_s"] = t_done - t0
        out["deliveries_per_s"] = sent / (t_done - t0)
    else:
        span = timeline[-1][0] - t0
        out["deliveries_per_s"] = sent / span if span > 0 else float("nan")
    if arrivals:
        out["first_delivery_s"] = arrivals[0] - t0
        out["last_delivery_s"] = arrivals[-1] - t0
        out["received_per_s"] = len(arrivals) / max(arrivals[-1] - t0, 1e-9)
        lo, hi = percentile(arrivals, 10, presorted=True), percentile(arrivals, 90, presorted=True)
        out["steady_per_s"] = 0.8 * len(arrivals) / (hi - lo) if hi > lo else float("nan")
    return out


def run_push(args: argparse.Namespace) -> dict[str, Any]:
    expected = args.push_subs * args.push_events
    progress(
        f"(1) Web Push: {args.push_subs} subscriptions × {args.push_events} events = "
        f"{expected:,} pushes"
    )
    with Sink.push() as sink, Daemon(env=daemon_env(args)) as d:
        vapid_key = api(d, "GET", "/v1/webpush/vapid-public-key")["public_key"]
        browsers: dict[str, Browser] = {}
        for i in range(args.push_subs):
            b = Browser.make(sink.origin, f"sub{i:03d}-{os.urandom(6).hex()}")
            api(d, "POST", "/v1/webpush/subscriptions", b.subscription(), expect=(201,))
            browsers[b.sub_id] = b
        sink.reset(max(1, expected // args.sample) if args.sample else 0)
        meter = ThreadSplit(d, {"push_service": sink.pid})
        profiler = profile_start(args, d.pid, "delivery-push", args.profile_seconds)
        meter.start()
        t0 = time.monotonic()
        titles = publish_batches(d, PUSH_TOPIC, args.push_events, args.batch, "push")
        t_published = time.monotonic()
        t_done, timeline = wait_delivered(d, "webpush", expected, args.drain_timeout, args.poll)
        cpu = meter.stop()
        profile_finish(profiler, "(1) Web Push")
        stats = sink.stats()
        result = drain_figures(expected, t0, t_published, t_done, timeline, stats)
        per_sub = stats["per_sub"]
        result["subscriptions_with_wrong_count"] = sum(
            1 for b in browsers if per_sub.get(b, 0) != args.push_events
        )
        result["sample_check"] = check_push_sample(
            stats["sample"], browsers, vapid_key, sink.origin, titles
        )
        result["dead_errors"] = dead_errors(d) if result["dead"] else {}
        result["cpu"] = cpu
        result["writer"] = meter.writer
        result["push_service_connections"] = stats["connections"]
    result.update(subscriptions=args.push_subs, events=args.push_events, batch=args.batch)
    log_drain("(1) Web Push", result)
    return result


def mobile_token(kind: str) -> str:
    """A device token of the platform's shape: FCM's ~160 URL-safe characters, APNs'
    64 hex digits."""
    if kind == "fcm":
        return "bench" + base64.urlsafe_b64encode(os.urandom(120)).decode().rstrip("=")[:155]
    return os.urandom(32).hex()


def run_mobile(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    label = MOBILE_LABELS[kind]
    expected = args.mobile_devices * args.mobile_events
    progress(
        f"{label}: {args.mobile_devices} devices × {args.mobile_events} events = "
        f"{expected:,} pushes"
    )
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp, \
            MobileSink(kind, tmp) as sink, \
            Daemon(env={**sink.settings, **daemon_env(args)}) as d:  # fmt: skip
        app = APNS_TOPIC if kind == "apns" else "notifyd-bench"
        tokens = [mobile_token(kind) for _ in range(args.mobile_devices)]
        for i, token in enumerate(tokens):
            api(d, "POST", "/v1/devices",
                {"platform": kind, "token": token, "app": app, "label": f"bench {i}"},
                expect=(201,))  # fmt: skip
        sink.reset(0)
        meter = ThreadSplit(d, {"mobile_service": sink.pid})
        profiler = profile_start(args, d.pid, f"delivery-{kind}", args.profile_seconds)
        meter.start()
        t0 = time.monotonic()
        publish_batches(d, f"bench.{kind}", args.mobile_events, args.batch, kind)
        t_published = time.monotonic()
        t_done, timeline = wait_delivered(d, kind, expected, args.drain_timeout, args.poll)
        cpu = meter.stop()
        profile_finish(profiler, label)
        stats = sink.stats()
        result = drain_figures(expected, t0, t_published, t_done, timeline, stats)
        per_device = stats["per_device"]
        result["devices_with_wrong_count"] = sum(
            1 for t in tokens if per_device.get(t, 0) != args.mobile_events
        )
        # the fake checks every request (credentials, headers, shape) before its 200
        result["sample_check"] = {
            "checked": stats["requests"],
            "ok": stats["count"],
            "errors": stats["refused"],
        }
        result["dead_errors"] = dead_errors(d) if result["dead"] else {}
        result["cpu"] = cpu
        result["writer"] = meter.writer
    result.update(devices=args.mobile_devices, events=args.mobile_events, batch=args.batch)
    log_drain(label, result)
    return result


def run_email(args: argparse.Namespace) -> dict[str, Any]:
    expected = args.mail_channels * args.mail_events
    progress(
        f"(2) email: {args.mail_channels} mailto channels × {args.mail_events} events = "
        f"{expected:,} emails"
    )
    with Sink.smtp() as sink, Daemon(env=daemon_env(args)) as d:
        for i in range(args.mail_channels):
            url = f"mailto://127.0.0.1:{sink.port}/user{i:02d}@example.com?from={FROM_ADDR}"
            api(d, "POST", "/v1/channels", {"name": f"email-{i:02d}", "url": url}, expect=(201,))
        sink.reset(args.sample)
        meter = ThreadSplit(d, {"smtp_server": sink.pid})
        profiler = profile_start(args, d.pid, "delivery-email", args.profile_seconds)
        meter.start()
        t0 = time.monotonic()
        titles = publish_batches(d, MAIL_TOPIC, args.mail_events, args.batch, "mail")
        t_published = time.monotonic()
        t_done, timeline = wait_delivered(d, "apprise", expected, args.drain_timeout, args.poll)
        cpu = meter.stop()
        profile_finish(profiler, "(2) email")
        stats = sink.stats()
        result = drain_figures(expected, t0, t_published, t_done, timeline, stats)
        per_rcpt = stats["per_rcpt"]
        result["recipients_with_wrong_count"] = sum(
            1
            for i in range(args.mail_channels)
            if per_rcpt.get(f"user{i:02d}@example.com", 0) != args.mail_events
        )
        result["sample_check"] = check_mail_sample(stats["sample"], set(titles.values()))
        result["dead_errors"] = dead_errors(d) if result["dead"] else {}
        result["cpu"] = cpu
        result["writer"] = meter.writer
    result.update(channels=args.mail_channels, events=args.mail_events, batch=args.batch)
    log_drain("(2) email", result)
    return result


def check_mail_sample(sample: list[bytes], titles: set[str]) -> dict[str, Any]:
    import email
    import email.policy

    ok, errors = 0, Counter()
    for raw in sample:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if str(msg["subject"] or "") in titles:
            ok += 1
        else:
            errors[f"unexpected subject {str(msg['subject'])[:60]!r}"] += 1
    return {"checked": len(sample), "ok": ok, "errors": dict(errors)}


def dead_errors(d: Daemon) -> dict[str, int]:
    rows = api(d, "GET", "/v1/deliveries?state=dead&limit=500")["deliveries"]
    return dict(Counter(str(r.get("last_error"))[:120] for r in rows))


def log_drain(label: str, r: dict[str, Any]) -> None:
    progress(
        f"{label}: {r['sent']:,}/{r['expected']:,} sent, {r['deliveries_per_s']:,.0f} deliveries/s, "
        f"last delivery after {r.get('last_delivery_s', float('nan')):.2f} s, "
        f"daemon CPU {cpu_text(r['cpu'])}, other cores {r['cpu']['other_cores']:.2f}"
    )


# -- (3): what delivery costs publishing ----------------------------------------------------


def run_load(
    label: str,
    d: Daemon,
    req: bytes,
    args: argparse.Namespace,
    sinks: dict[str, Sink],
    profile_name: str | None = None,
) -> dict[str, Any]:
    """One closed-loop publish run (bench/publish.py's client), metered per thread."""
    progress(
        f"{label}: {args.clients} connections, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured"
    )
    start_at = time.time() + 0.5
    parent_end, child_end = mp.Pipe(duplex=False)
    p = mp.Process(
        target=closed_loop_worker,
        args=(d.addr, req, args.clients, start_at, args.warmup, args.duration, child_end),
        daemon=True,
    )
    p.start()
    child_end.close()
    meter = ThreadSplit(d, {f"{k}": s.pid for k, s in sinks.items()} | {"load": p.pid})
    cpu_meter = CpuMeter(d.pid)
    time.sleep(max(0.0, start_at + args.warmup - time.time()))
    received0 = {k: s.stats()["count"] for k, s in sinks.items()}
    profiler = profile_start(args, d.pid, profile_name, args.duration) if profile_name else None
    meter.start()
    cpu_meter.start()
    time.sleep(max(0.0, start_at + args.warmup + args.duration - time.time()))
    cpu_meter.stop()
    cpu = meter.stop()
    received = {k: s.stats()["count"] - received0[k] for k, s in sinks.items()}
    profile_finish(profiler, label)
    if not parent_end.poll(60):
        raise RuntimeError(f"{label}: the load process did not report back")
    report = parent_end.recv()
    p.join(10)
    seg = {
        "duration": args.duration,
        "completed": report["completed"],
        "latencies": report["latencies"],
        "statuses": Counter(report["statuses"]),
        "errors": Counter(report["errors"]),
        "reconnects": report["reconnects"],
        "server_cpu_s": cpu_meter.share * args.duration,
        "server_main_thread_cpu_s": cpu_meter.threads["main"] * args.duration,
        "server_other_thread_cpu_s": cpu_meter.threads["busiest_other"] * args.duration,
        "client_cpu_s": report["cpu_s"],
        "machine_cpu_s": cpu["machine_cores"] * args.duration,
        "procs": 1,
    }
    out = summarize(label, args.clients, [seg])
    out["cpu"] = cpu
    out["writer"] = meter.writer
    out["other_busy_cores"] = cpu["other_cores"]
    out["received_during_window"] = received
    out["received_per_s"] = {k: n / args.duration for k, n in received.items()}
    return out


def setup_fanout_users(
    d: Daemon, args: argparse.Namespace, first: int, last: int, push: Sink, smtp: Sink
) -> int:
    """Users ``first``..``last - 1``, who may read bench.*, each with its channels;
    returns the number of channels made."""
    made = 0
    for u in range(first, last):
        name = f"bench-u{u:02d}"
        api(d, "POST", "/v1/users", {"name": name}, expect=(201,))
        api(d, "POST", "/v1/acl", {"user": name, "pattern": "bench.*", "permission": "read"},
            expect=(201,))  # fmt: skip
        chans: list[dict[str, Any]] = []
        if args.channel_kind == "memory":
            chans = [{"name": f"mem{i}", "kind": "memory", "config": {}}
                     for i in range(args.push_per_user + args.mail_per_user)]  # fmt: skip
        else:
            for i in range(args.push_per_user):
                b = Browser.make(push.origin, f"{name}-{i}-{os.urandom(6).hex()}")
                chans.append({"name": f"browser{i}", "kind": "webpush", "config": b.subscription()})
            for i in range(args.mail_per_user):
                url = f"mailto://127.0.0.1:{smtp.port}/{name}.{i}@example.com?from={FROM_ADDR}"
                chans.append({"name": f"email{i}", "url": url})
        for ch in chans:
            api(d, "POST", "/v1/channels", {**ch, "user": name}, expect=(201,))
            made += 1
    return made


def run_publish_cost(args: argparse.Namespace) -> dict[str, Any]:
    per_user = args.push_per_user + args.mail_per_user
    steps = sorted({int(x) for x in str(args.users).split(",") if x.strip()})
    kinds = (
        "memory"
        if args.channel_kind == "memory"
        else f"{args.push_per_user} Web Push + {args.mail_per_user} email"
    )
    progress(
        "(3) publish cost: no channels, then "
        + ", then ".join(f"{n} user(s) × {per_user} channels ({kinds})" for n in steps)
    )
    env = {}
    if args.channel_kind == "memory":
        env = {"NOTIFYD_PLUGINS": "memory_plugin", "PYTHONPATH": str(REPO / "tests")}
    env.update(daemon_env(args))
    body = json.dumps(SINGLE_EVENT).encode()
    phases = []
    with Sink.push() as push, Sink.smtp() as smtp, Daemon(env=env) as d:
        sinks = {"push_service": push, "smtp_server": smtp}
        req = build_request(d.addr, d.token, body)
        bare = run_load("publish, no channels", d, req, args, sinks)
        users = channels = 0
        for n in steps:
            channels += setup_fanout_users(d, args, users, n, push, smtp)
            users = n
            progress(f"{users} user(s) with {channels} channels now")
            label = f"publish, {users} user{'s' if users != 1 else ''} × {per_user} channels"
            name = f"delivery-publish-{channels}" if args.profile else None
            loaded = run_load(label, d, req, args, sinks, profile_name=name)
            t = time.monotonic()
            states = delivery_states(d)
            progress(f"outbox after this run ({time.monotonic() - t:.1f} s to count): {states}")
            ratio = loaded["req_per_s"] / bare["req_per_s"] if bare["req_per_s"] else float("nan")
            phases.append({"users": users, "channels": channels, "deliveries_per_event": channels,
                           "kinds": kinds, "result": loaded, "ratio": ratio,
                           "ratio_met": ratio >= TARGET_PUBLISH_RATIO,
                           "states_at_end": states})  # fmt: skip
    return {"no_channels": bare, "phases": phases}


# -- profiling -----------------------------------------------------------------------------


def profile_start(args: argparse.Namespace, pid: int, name: str | None, seconds: float) -> Any:
    if not args.profile or name is None:
        return None
    profiler = Profiler(pid, name, seconds, gil=args.profile == "gil")
    profiler.start()
    return profiler


def profile_finish(profiler: Any, label: str) -> None:
    if profiler is not None:
        print(f"--- py-spy profile of {label} ---\n{profiler.finish()}", file=sys.stderr)


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", default="push,email,publish,fcm,apns",
                    help="comma-separated parts to run: push, email, publish, fcm, apns")  # fmt: skip
    ap.add_argument("--push-subs", type=int, default=50, help="(1) Web Push subscriptions")
    ap.add_argument("--push-events", type=int, default=100, help="(1) events published")
    ap.add_argument("--mail-channels", type=int, default=10, help="(2) mailto channels")
    ap.add_argument("--mail-events", type=int, default=50, help="(2) events published")
    ap.add_argument("--mobile-devices", type=int, default=50,
                    help="(4)(5) FCM / APNs devices registered")  # fmt: skip
    ap.add_argument("--mobile-events", type=int, default=100, help="(4)(5) events published")
    ap.add_argument("--batch", type=int, default=50,
                    help="(1)(2)(4)(5) events per publish request")  # fmt: skip
    ap.add_argument("--sample", type=int, default=100,
                    help="(1)(2) pushes decrypted / emails parsed to check them")  # fmt: skip
    ap.add_argument("--drain-timeout", type=float, default=45.0,
                    help="(1)(2) give up waiting for every delivery after this many seconds")  # fmt: skip
    ap.add_argument("--poll", type=float, default=0.1, help="/v1/stats polling interval, s")
    ap.add_argument("--users", default="1,20",
                    help="(3) users who read the topic, each with its channels; a list runs "
                    "one case per figure, adding users between cases")  # fmt: skip
    ap.add_argument("--push-per-user", type=int, default=2, help="(3) Web Push channels per user")
    ap.add_argument("--mail-per-user", type=int, default=1, help="(3) mailto channels per user")
    ap.add_argument("--channel-kind", choices=["real", "memory"], default="real",
                    help="(3) 'memory': the test plugin's memory channel instead of Web Push "
                    "and email (isolates the outbox's own cost)")  # fmt: skip
    ap.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the daemons, for ablations "
                    "(e.g. NOTIFYD_SYNCHRONOUS=normal)")  # fmt: skip
    ap.add_argument("--clients", type=int, default=32, help="(3) publishing connections")
    ap.add_argument("--warmup", type=float, default=2.0, help="(3) warm-up seconds per case")
    ap.add_argument("--duration", type=float, default=8.0, help="(3) measured seconds per case")
    ap.add_argument("--profile", nargs="?", const="gil", choices=["gil", "threads"],
                    help="py-spy the daemon: (1)(2) the first --profile-seconds of delivery, "
                    "(3) the measured window with channels (bench/results/delivery-*.txt)")  # fmt: skip
    ap.add_argument("--profile-seconds", type=float, default=5.0)
    args = ap.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if parts - {"push", "email", "publish", "fcm", "apns"}:
        ap.error(f"unknown part(s) in --only: {', '.join(sorted(parts))}")

    print(cores_note(), file=sys.stderr)
    idle_before = idle_check()
    results: dict[str, Any] = {}
    if "push" in parts:
        results["webpush"] = run_push(args)
    for kind in ("fcm", "apns"):
        if kind in parts:
            results[kind] = run_mobile(args, kind)
    if "email" in parts:
        results["email"] = run_email(args)
    if "publish" in parts:
        results["publish_cost"] = run_publish_cost(args)

    verdicts = report(results, args)
    path = write_result(
        "delivery",
        {"cases": results, "verdicts": verdicts, "args": vars(args),
         "other_busy_cores_before": idle_before},
    )  # fmt: skip
    progress(f"wrote {path}")
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    rows, cpu_rows = [], []
    for key, label in (("webpush", "(1) Web Push"), ("fcm", MOBILE_LABELS["fcm"]),
                       ("apns", MOBILE_LABELS["apns"]), ("email", "(2) email (Apprise mailto)")):  # fmt: skip
        r = results.get(key)
        if r is None:
            continue
        if key == "webpush":
            what = f"{r['subscriptions']} subs × {r['events']} events"
        elif key in MOBILE_LABELS:
            what = f"{r['devices']} devices × {r['events']} events"
        else:
            what = f"{r['channels']} channels × {r['events']} events"
        done = "all sent" if r["complete"] else f"INCOMPLETE: {r['sent']:,}/{r['expected']:,} sent"
        fig = (
            f"{r['deliveries_per_s']:,.0f} deliveries/s ({done}; {r['dead']} dead; "
            f"steady {r.get('steady_per_s', float('nan')):,.0f}/s)"
        )
        timing = (
            f"first {r.get('first_delivery_s', float('nan')):.2f} s, "
            f"last {r.get('last_delivery_s', float('nan')):.2f} s, "
            f"all sent {r.get('all_sent_s', float('nan')):.2f} s"
        )
        chk = r["sample_check"]
        rows.append([f"{label}: {what}", fig, timing,
                     f"{r['received']:,} received; sample {chk['ok']}/{chk['checked']} ok"])  # fmt: skip
        cpu_rows.append([label, cpu_text(r["cpu"]), writer_text(r["writer"]),
                         f"{r['cpu'].get('push_service', r['cpu'].get('smtp_server', r['cpu'].get('mobile_service', 0))):.0%}",
                         f"{r['cpu']['bench_process']:.0%}", f"{r['cpu']['other_cores']:.2f}"])  # fmt: skip
        verdicts[f"{key}_complete"] = r["complete"]
    if rows:
        print()
        print_table(
            ["case", "throughput", "after the first publish", "checked"],
            rows,
            title="delivery throughput",
        )
    pc = results.get("publish_cost")
    if pc:
        bare = pc["no_channels"]

        def lat(c: dict) -> str:
            return f"p50 {c['latency']['p50_ms']:.1f} / p99 {c['latency']['p99_ms']:.1f} ms"

        prow = [[f"(3) publish, no channels, {args.clients} conns",
                 f"{bare['req_per_s']:,.0f} req/s ({lat(bare)})", "(reference)", "1.00"]]  # fmt: skip
        for ph in pc["phases"]:
            r = ph["result"]
            recv = r["received_per_s"]
            backlog = {k: v.get("pending", 0) + v.get("sending", 0)
                       for k, v in ph["states_at_end"].items()}  # fmt: skip
            sent = {k: v.get("sent", 0) for k, v in ph["states_at_end"].items()}
            dead = sum(v.get("dead", 0) for v in ph["states_at_end"].values())
            prow.append([
                f"(3) publish, {ph['users']} user{'s' if ph['users'] != 1 else ''} × "
                f"{ph['channels'] // max(ph['users'], 1)} "
                f"channels ({ph['deliveries_per_event']} deliveries/event)",
                f"{r['req_per_s']:,.0f} req/s ({lat(r)})",
                f">= {TARGET_PUBLISH_RATIO:.2f} x no channels",
                f"{ph['ratio']:.2f} {'met' if ph['ratio_met'] else 'MISSED'}",
            ])  # fmt: skip
            sending = (
                f"sent {recv.get('push_service', 0):,.0f} pushes/s + "
                f"{recv.get('smtp_server', 0):,.0f} emails/s"
                if args.channel_kind == "real"
                else "memory channel"
            )
            prow.append([
                "    outbox meanwhile",
                f"{r['req_per_s'] * ph['deliveries_per_event']:,.0f} deliveries/s queued; {sending}",
                "", "",
            ])  # fmt: skip
            prow.append([
                "    outbox at the end",
                "backlog " + ", ".join(f"{k} {v:,}" for k, v in backlog.items())
                + "; sent " + ", ".join(f"{k} {v:,}" for k, v in sent.items())
                + f"; dead {dead:,}",
                "", "",
            ])  # fmt: skip
            cpu_rows.append([r["label"], cpu_text(r["cpu"]), writer_text(r["writer"]),
                             f"{r['cpu'].get('push_service', 0):.0%} + "
                             f"{r['cpu'].get('smtp_server', 0):.0%}",
                             f"{r['cpu']['load']:.0%} + {r['cpu']['bench_process']:.0%}",
                             f"{r['cpu']['other_cores']:.2f}"])  # fmt: skip
        cpu_rows.insert(len(cpu_rows) - len(pc["phases"]),
                        [bare["label"], cpu_text(bare["cpu"]), writer_text(bare["writer"]),
                         f"{bare['cpu'].get('push_service', 0):.0%} + "
                         f"{bare['cpu'].get('smtp_server', 0):.0%}",
                         f"{bare['cpu']['load']:.0%} + {bare['cpu']['bench_process']:.0%}",
                         f"{bare['cpu']['other_cores']:.2f}"])  # fmt: skip
        verdicts["publish_ratios"] = {p["deliveries_per_event"]: p["ratio"] for p in pc["phases"]}
        verdicts["publish_ratio_met"] = all(p["ratio_met"] for p in pc["phases"])
        print()
        print_table(["case", "figure", "target", "ratio/met"], prow, title="added publish cost")
    if cpu_rows:
        print_table(
            ["case", "daemon CPU (trio main + SQLite writer + worker threads)",
             "SQLite writer groups", "sink(s)", "load + this script", "other cores"],
            cpu_rows,
        )  # fmt: skip
    print(
        "CPU columns are shares of one core over the measured window ((1)(2)(4)(5): first publish until\n"
        "all sent). Worker threads: trio's thread pool (store reads; Apprise's blocking sends).\n"
        "Writer groups: group commits/s × write jobs per commit, the time to run and commit one\n"
        "group (fsync included), and the share of the window the writer spent doing so.\n"
        "The push service only counts pushes (it answers 201) and keeps a sample, which is\n"
        "checked afterwards as a push service and a browser would (VAPID signature, aes128gcm\n"
        "decryption to a published event). The SMTP server (aiosmtpd) accepts every message.\n"
        "The fake FCM and APNs (tests/fakefcm.py, tests/fakeapns.py) check every request\n"
        "(OAuth2 bearer / ES256 provider token, headers, message shape) before answering 200.\n"
        "Other cores: CPU used meanwhile by processes outside this benchmark (~0 on a quiet machine)."
    )
    print(cores_note())
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
