"""Poll requests to an upstream ntfy server, and ``/<topic>/json?poll=1&id=``: how
the stock ntfy iOS app gets instant notifications from a self-hosted notifyd.

One daemon for the module, with ``upstream_base_url`` pointing at a fake upstream
(an HTTP server on 127.0.0.1 that records every request and can answer 503 once)
and ``private_destinations`` at its default, so the poll requests reach the
loopback only because the daemon's own channel is trusted like an admin's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Daemon, wait_for

BASE_URL = "https://notify.example.org"
UPSTREAM_TOKEN = "tk_upstream_secret_1234"


@dataclass
class PollRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class FakeUpstream:
    """An upstream ntfy server that records what it is sent. Paths in
    ``fail_once`` get one 503 (with ``Retry-After: 0``), then 200s."""

    def __init__(self) -> None:
        self.requests: list[PollRequest] = []
        self.fail_once: set[str] = set()
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with upstream._lock:
                    status = 503 if self.path in upstream.fail_once else 200
                    upstream.fail_once.discard(self.path)
                    upstream.requests.append(PollRequest(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        body, status,
                    ))  # fmt: skip
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_PUT = do_GET = do_POST  # noqa: N815 - recorded (and failed) like a POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def for_id(self, poll_id: int | str) -> list[PollRequest]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("x-poll-id") == str(poll_id)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hashed(topic: str) -> str:
    return "/" + hashlib.sha256(f"{BASE_URL}/{topic}".encode()).hexdigest()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Daemon]:
    data = Path(tmp_path_factory.mktemp("upstream")) / "data"
    data.mkdir()
    d = Daemon(data, extra_env={
        "NOTIFYD_BASE_URL": BASE_URL,
        "NOTIFYD_UPSTREAM_BASE_URL": upstream.url,
        "NOTIFYD_UPSTREAM_ACCESS_TOKEN": UPSTREAM_TOKEN,
        # the default policy: only admins' channels reach private addresses
        "NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "false",
        "NOTIFYD_PRIVATE_DESTINATIONS": "admins",
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.2",
    })  # fmt: skip
    d.start()
    try:
        yield d
    finally:
        d.stop()


def one_poll(upstream: FakeUpstream, event_id: int) -> PollRequest:
    polls = wait_for(lambda: upstream.for_id(event_id), message=f"poll request for {event_id}")
    return polls[0]


def test_one_empty_poll_request_per_event(daemon: Daemon, upstream: FakeUpstream) -> None:
    """Both doors, a sensitive event too: one POST each to the hashed topic with the
    ntfy message id and the bearer token, and not a byte of content."""
    v1 = daemon.publish("alerts", title="Disk full", body="on db-1")
    secret = daemon.publish("alerts", title="Password reset", body="code 123456", sensitive=True)
    with daemon.admin() as c:
        r = c.post("/ops.backup", content=b"backup done", headers={"Title": "Backups"})
        assert r.status_code == 200, r.text
        ntfy_id = int(r.json()["id"])
    for event_id, topic in (
        (v1["id"], "alerts"),
        (secret["id"], "alerts"),
        (ntfy_id, "ops.backup"),
    ):
        poll = one_poll(upstream, event_id)
        assert (poll.method, poll.path, poll.body) == ("POST", hashed(topic), b"")
        assert poll.headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
        assert poll.answered == 200
    # the later ones have been sent: an extra request for an earlier one would be too
    wait_for(lambda: len(upstream.for_id(ntfy_id)) == 1)
    for event_id in (v1["id"], secret["id"], ntfy_id):
        assert len(upstream.for_id(event_id)) == 1
    with upstream._lock:
        seen = list(upstream.requests)
    for req in seen:
        assert req.body == b""
        wire = orjson.dumps(req.headers).decode() + req.path
        for content in ("Disk full", "db-1", "Password", "123456", "backup", "alerts", "ops"):
            assert content not in wire


def test_unifiedpush_messages_get_none(daemon: Daemon, upstream: FakeUpstream) -> None:
    with daemon.admin() as c:
        r = c.post("/upapp123?up=1", content=b'{"m": "wake up"}')
        assert r.status_code == 200, r.text
        up_id = int(r.json()["id"])
        later = daemon.publish("upapp123", title="an ordinary one")
        one_poll(upstream, later["id"])
        rows = c.get("/v1/deliveries", params={"limit": 500}).json()["deliveries"]
    upstream_rows = [d for d in rows if d["kind"] == "ntfy-upstream"]
    assert later["id"] in {d["event_id"] for d in upstream_rows}
    assert up_id not in {d["event_id"] for d in upstream_rows}
    assert upstream.for_id(up_id) == []


def test_scheduled_event_polls_when_released(daemon: Daemon, upstream: FakeUpstream) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    with daemon.admin() as c:
        r = c.post("/v1/events", json={"topic": "later", "title": "scheduled", "deliver_at": when})
        assert r.status_code == 201, r.text
    now = daemon.publish("later", title="right away")
    one_poll(upstream, now["id"])
    # nothing for the scheduled one yet: it has no id until it is released
    assert not [r for r in upstream.requests if r.path == hashed("later")
                and r.headers["x-poll-id"] != str(now["id"])]  # fmt: skip
    polls = wait_for(
        lambda: [
            r
            for r in upstream.requests
            if r.path == hashed("later") and r.headers["x-poll-id"] != str(now["id"])
        ],  # fmt: skip
        timeout=15,
        message="the released event's poll request",
    )
    released = int(polls[0].headers["x-poll-id"])
    assert released > now["id"]
    with daemon.admin() as c:
        assert c.get(f"/v1/events/{released}").json()["title"] == "scheduled"
    wait_for(lambda: len(upstream.for_id(released)) == 1)


def test_retried_after_503(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.fail_once.add(hashed("flaky"))
    ev = daemon.publish("flaky", title="try again")
    polls = wait_for(lambda: len(upstream.for_id(ev["id"])) >= 2 and upstream.for_id(ev["id"]),
                     message="the retried poll request")  # fmt: skip
    assert [p.answered for p in polls] == [503, 200]

    def outcome() -> tuple[str, int] | None:
        # the upstream answered; the worker records the outcome just after: ask again
        with daemon.admin() as c:
            rows = c.get("/v1/deliveries", params={"limit": 500}).json()["deliveries"]
        row = next(d for d in rows if d["kind"] == "ntfy-upstream" and d["event_id"] == ev["id"])
        return (row["state"], row["attempts"]) if row["state"] != "pending" else None

    assert wait_for(outcome, message="the retried delivery's outcome") == ("sent", 2)


def test_poll_by_id_returns_that_message_with_read_rights(daemon: Daemon) -> None:
    """What the iOS app does after a poll request: ``GET /<topic>/json?poll=1&id=``."""
    first = daemon.publish("phone", title="first", body="one")
    wanted = daemon.publish("phone", title="second", body="two")
    daemon.publish("phone", title="third", body="three")
    elsewhere = daemon.publish("other-topic", title="not here")
    reader = daemon.user("ios-reader", grants={"phone": "read"})
    outsider = daemon.user("ios-outsider", grants={"unrelated": "read"})

    def lines(token: str, path: str) -> tuple[int, list[dict[str, Any]]]:
        with daemon.http(token) as c:
            r = c.get(path)
        return r.status_code, [orjson.loads(x) for x in r.text.splitlines() if x.strip()]

    status, msgs = lines(reader, f"/phone/json?poll=1&id={wanted['id']}")
    assert status == 200
    assert [(m["id"], m["title"], m["message"]) for m in msgs] == [
        (str(wanted["id"]), "second", "two")
    ]
    with daemon.http(reader) as c:
        sse = c.get(f"/phone/sse?poll=1&id={first['id']}")
    data = [orjson.loads(x[5:]) for x in sse.text.splitlines() if x.startswith("data:")]
    assert sse.status_code == 200 and [m["id"] for m in data] == [str(first["id"])]
    # another topic's event, an unknown id, an id the caller cannot read: no lines
    assert lines(reader, f"/phone/json?poll=1&id={elsewhere['id']}") == (200, [])
    assert lines(reader, "/phone/json?poll=1&id=99999999") == (200, [])
    assert lines(reader, "/phone/json?poll=1&id=aBcDeF123456") == (200, [])
    status, body = lines(outsider, f"/phone/json?poll=1&id={wanted['id']}")
    assert status == 403 and body[0]["code"] == 40301
    status, body = lines(reader, "/phone/json?poll=1&id=../../etc")
    assert status == 400 and body[0]["code"] == 40000 and body[0]["http"] == 400


def test_the_upstream_channel_is_the_daemons(daemon: Daemon, upstream: FakeUpstream) -> None:
    """Users cannot add one; ``channels test`` on the daemon's sends a real poll
    request for a topic no app subscribes to."""
    with daemon.admin() as c:
        r = c.post("/v1/channels", json={"name": "mine", "kind": "ntfy-upstream", "config": {}})
        assert r.status_code == 422
        assert "upstream_base_url" in r.json()["error"]["message"]
        r = c.post("/v1/channels/ntfy-upstream/test", params={"user": "ntfy-upstream"})
        assert r.json() == {"ok": True}
    poll = one_poll(upstream, 0)
    assert (poll.path, poll.body) == (hashed("notifyd/test"), b"")


def test_turned_off_by_leaving_upstream_base_url_empty(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    """Last in the module: it restarts the daemon without the upstream settings."""
    del daemon.extra_env["NOTIFYD_UPSTREAM_BASE_URL"]
    del daemon.extra_env["NOTIFYD_UPSTREAM_ACCESS_TOKEN"]
    daemon.restart()
    with daemon.admin() as c:
        kinds = {
            ch["kind"] for ch in c.get("/v1/channels", params={"all": "true"}).json()["channels"]
        }
        assert "ntfy-upstream" not in kinds
    before = len(upstream.requests)
    ev = daemon.publish("alerts", title="after")
    with daemon.admin() as c:
        rows = c.get("/v1/deliveries", params={"limit": 500}).json()["deliveries"]
    assert ev["id"] not in {d["event_id"] for d in rows}
    assert len(upstream.requests) == before
