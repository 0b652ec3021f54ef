"""Holding up under load: the open-files limit, the per-user stream cap, and frames
encoded once per event however many subscribers receive them.

The cap (``max_streams_per_user``) is checked on every kind of live stream: notifyd's
WebSocket and SSE on the raw-socket fast path and through the ASGI fallback (a
stream asked for on a reused keep-alive connection), ntfy's ``/<topic>/json|sse|raw|ws``
and Gotify's ``/stream``. Clients are raw sockets, so the test sees exactly the
status line and body the daemon writes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Daemon, wait_for

CAP = 2
TOPIC = "scale.cap"


# -- raw clients ---------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """Read a response head; return (status, head, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def _read_body(sock: socket.socket, head: bytes, rest: bytes) -> bytes:
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    assert m, head
    n = int(m.group(1))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest[:n]


def _request(path: str, token: str, websocket: bool) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        head += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
    return (head + "\r\n").encode()


#: kind → (path, WebSocket?, through hypercorn on a reused connection?)
KINDS = {
    "ws": ("/v1/stream?topics=" + TOPIC, True, False),
    "sse": ("/v1/stream/sse?topics=" + TOPIC, False, False),
    "asgi-ws": ("/v1/stream?topics=" + TOPIC, True, True),
    "asgi-sse": ("/v1/stream/sse?topics=" + TOPIC, False, True),
    "ntfy-json": (f"/{TOPIC}/json", False, False),
    "ntfy-sse": (f"/{TOPIC}/sse", False, False),
    "ntfy-raw": (f"/{TOPIC}/raw", False, False),
    "ntfy-ws": (f"/{TOPIC}/ws", True, False),
    "asgi-ntfy-json": (f"/{TOPIC}/json", False, True),
    "gotify": ("/stream", True, True),
}


class Stream:
    """One stream request on its own connection; ``status`` is the daemon's answer."""

    def __init__(self, d: Daemon, kind: str, token: str) -> None:
        path, websocket, reused = KINDS[kind]
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        if reused:  # a first request makes the front hand the connection to hypercorn
            self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, head, rest = _read_head(self.sock)
            assert status == 200
            _read_body(self.sock, head, rest)
        self.sock.sendall(_request(path, token, websocket))
        self.status, self.head, self.rest = _read_head(self.sock)

    def error(self) -> dict:
        return json.loads(_read_body(self.sock, self.head, self.rest))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("scale") / "data")
    d.data_dir.mkdir()
    d.extra_env["NOTIFYD_MAX_STREAMS_PER_USER"] = str(CAP)
    d.start()
    yield d
    d.stop()


@pytest.mark.parametrize("kind", list(KINDS))
def test_stream_cap_refuses_one_more_and_frees_a_slot_on_close(capped: Daemon, kind: str) -> None:
    token = capped.user(f"cap-{kind}", grants={"scale.*": "read"})
    held = [Stream(capped, kind, token) for _ in range(CAP)]
    try:
        for s in held:
            assert s.status in (101, 200), (kind, s.head)
        extra = Stream(capped, kind, token)
        assert extra.status == 429, (kind, extra.head)
        body = extra.error()
        extra.close()
        if kind.startswith("ntfy") or kind == "asgi-ntfy-json":
            assert body["http"] == 429 and body["code"] == 42901, body
            assert "max_streams_per_user" in body["error"] or "streams" in json.dumps(body)
        elif kind == "gotify":
            assert body["errorCode"] == 429, body
            assert "max_streams_per_user" in body["errorDescription"], body
        else:
            assert body["error"]["code"] == "rate_limited", body
            assert "max_streams_per_user" in body["error"]["message"], body
            assert re.search(rb"(?i)retry-after: \d+", extra.head), extra.head

        held.pop().close()  # one slot comes free once the daemon sees the close

        def reopened() -> Stream | None:
            s = Stream(capped, kind, token)
            if s.status == 429:
                s.close()
                return None
            return s

        again = wait_for(reopened, 10, message=f"a {kind} stream after one closed")
        assert again.status in (101, 200)
        held.append(again)
    finally:
        for s in held:
            s.close()


def test_stream_cap_counts_every_kind_together(capped: Daemon) -> None:
    token = capped.user("cap-mixed", grants={"scale.*": "read"})
    held = [Stream(capped, "ws", token), Stream(capped, "ntfy-json", token)]
    try:
        assert [s.status for s in held] == [101, 200]
        for kind in ("sse", "asgi-ws", "ntfy-ws", "gotify"):
            s = Stream(capped, kind, token)
            s.close()
            assert s.status == 429, kind
        # other users are not affected
        other = Stream(capped, "ws", capped.user("cap-other", grants={"scale.*": "read"}))
        assert other.status == 101
        other.close()
    finally:
        for s in held:
            s.close()


def test_stream_cap_is_live_on_reload(tmp_path: Path) -> None:
    conf = tmp_path / "notifyd.toml"
    conf.write_text("max_streams_per_user = 1\n")
    d = Daemon(tmp_path / "data", extra_args=["--config", str(conf)])
    d.data_dir.mkdir()
    d.start()
    try:
        token = d.user("reloader", grants={"scale.*": "read"})
        first = Stream(d, "ws", token)
        assert first.status == 101
        second = Stream(d, "sse", token)
        second.close()
        assert second.status == 429
        conf.write_text("max_streams_per_user = 2\n")
        assert d.proc is not None
        d.proc.send_signal(1)  # SIGHUP
        wait_for(lambda: "max_streams_per_user=2" in d.log(), 10, message="the reload")
        third = Stream(d, "sse", token)
        third.close()
        first.close()
        assert third.status == 200
    finally:
        d.stop()


# -- the open-files limit -------------------------------------------------------------


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def test_daemon_raises_its_open_files_limit_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the daemon inherits this
    try:
        d = Daemon(tmp_path / "data")
        d.data_dir.mkdir()
        d.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert d.proc is not None
        assert _nofile(d.proc.pid) == (hard, hard)
        if hard < 16384:
            assert "open-files limit" in d.log()
    finally:
        d.stop()


# -- frames encoded once ---------------------------------------------------------------


def _encodings(d: Daemon) -> dict[str, float]:
    with d.admin() as c:
        text = c.get("/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^notifyd_frame_encodings_total\{transport="([^"]+)"\} (\S+)$', text, re.M
        )  # fmt: skip
    }


def test_one_event_to_many_subscribers_is_encoded_once_per_transport(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", extra_env={"NOTIFYD_KEEPALIVE_SECONDS": "3600"})
    d.data_dir.mkdir()
    d.start()
    token = d.user("many", grants={"scale.*": "read"})
    streams = (
        [Stream(d, "ws", token) for _ in range(20)]
        + [Stream(d, "sse", token) for _ in range(20)]
        + [Stream(d, "ntfy-json", token) for _ in range(10)]
    )
    try:
        assert all(s.status in (101, 200) for s in streams)
        with d.admin() as c:
            wait_for(
                lambda: c.get("/healthz").json()["stream_clients"] == len(streams),
                10,
                message="all streams registered",
            )
        before = _encodings(d)
        d.publish(TOPIC, title="once", body="to fifty subscribers")
        marker = b"to fifty subscribers"
        for s in streams:
            s.sock.settimeout(10)
            buf = s.rest
            while marker not in buf:
                chunk = s.sock.recv(65536)
                assert chunk, "stream closed before the event arrived"
                buf += chunk
        after = _encodings(d)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        assert delta["json"] == 1, delta
        assert delta["websocket"] == 1, delta
        assert delta["sse"] == 1, delta
        assert delta["ntfy:unit:json"] == 1, delta
    finally:
        for s in streams:
            s.close()
        d.stop()


def test_metrics_list_refused_streams(capped: Daemon) -> None:
    r = httpx.get(capped.url + "/metrics", timeout=10)
    if r.status_code != 200:
        with capped.admin() as c:
            r = c.get("/metrics")
    assert "notifyd_streams_refused_total" in r.text
