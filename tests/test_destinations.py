"""private_destinations: one destination policy for every outbound channel.

Classification of hosts in every spelling the C library accepts; the send-time
guard against real clients (trio/httpx, requests, smtplib) and real local
servers; and the real daemon: refusals at creation (POST /v1/channels,
POST /v1/webpush/subscriptions), refusals at send time for a destination that
turned private after creation, and peers that answer with an endless body.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import smtplib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests
import trio
from conftest import Daemon, wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushservice import PushService
from smtpsink import SMTPSink

from notifyd.core import destinations
from notifyd.core.destinations import (
    PrivateDestination,
    classify,
    classify_literal,
    is_private_address,
    may_reach_private,
    outbound,
)

# -- classification ----------------------------------------------------------

PRIVATE = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0", "017700000001", "0x7f.1",
    "127.0.0.1.", "[::1]", "::1", "::ffff:127.0.0.1", "[::ffff:7f00:1]", "0.0.0.0",
    "169.254.169.254", "100.64.0.1", "224.0.0.1", "10.1.2.3", "192.168.1.1",
    "172.16.0.1", "240.0.0.1", "255.255.255.255", "[fe80::1%25eth0]", "fe80::1%eth0",
    "fc00::1", "fec0::1", "ff02::1", "64:ff9b::a00:1", "2002:7f00:1::", "::127.0.0.1",
    "localhost", "LOCALHOST.", "api.localhost", "printer.local",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "134744072", "0x08080808", "2606:4700:4700::1111",
          "[2001:4860:4860::8888]", "::ffff:8.8.8.8", "64:ff9b::808:808"]  # fmt: skip


@pytest.mark.parametrize("host", PRIVATE)
def test_private_in_every_spelling(host: str) -> None:
    verdict = classify_literal(host)
    assert verdict is not None and verdict.private, (host, verdict)
    for url in (f"http://{host}/x", f"https://{host}:8443/push/abc"):
        if ":" in host.strip("[]") and not host.startswith("["):
            url = f"http://[{host}]/x"
        verdict = classify_literal(url)
        assert verdict is not None and verdict.private, (url, verdict)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_are_allowed(host: str) -> None:
    verdict = classify_literal(host)
    assert verdict is not None and verdict.kind == "public", (host, verdict)


def test_address_objects() -> None:
    for text in ("127.0.0.1", "::ffff:10.0.0.1", "100.127.255.255", "198.18.0.1", "::"):
        assert is_private_address(ipaddress.ip_address(text)), text
    for text in ("8.8.8.8", "100.128.0.1", "2a00:1450:4001::1"):
        assert not is_private_address(ipaddress.ip_address(text)), text


def test_names_are_resolved_and_unresolvable_names_are_unknown() -> None:
    assert classify_literal("push.example.org") is None  # a name: needs a lookup
    assert classify("no-such-host.invalid").kind == "unknown"
    # This machine's own name resolves to one of its addresses (in /etc/hosts).
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        pytest.skip("this machine's name does not resolve here")
    if any(is_private_address(ipaddress.ip_address(i[4][0].partition("%")[0])) for i in infos):
        assert classify(name).private


def test_webpush_compatible_check() -> None:
    from notifyd.plugins.webpush.subscription import is_private_endpoint

    assert is_private_endpoint("http://0x7f000001/push/x")
    assert is_private_endpoint("https://[::ffff:127.0.0.1]:8443/x")
    assert not is_private_endpoint("https://fcm.googleapis.com/fcm/send/abc")


def test_policy() -> None:
    assert may_reach_private("admins", owner_is_admin=True)
    assert not may_reach_private("admins", owner_is_admin=False)
    assert may_reach_private("everyone", owner_is_admin=False)
    assert not may_reach_private("nobody", owner_is_admin=True)


def test_apprise_destinations_name_servers_not_tokens() -> None:
    from notifyd.plugins.apprise import AppriseChannel

    def hosts(url: str) -> list[str]:
        return AppriseChannel.destinations({"url": url})

    assert hosts("form://2130706433:8080/") == ["2130706433"]
    assert hosts("mailto://u:p@example.org/to@example.org?smtp=127.0.0.1") == ["127.0.0.1"]
    assert hosts("ntfys://ntfy.example.org/topic") == ["ntfy.example.org"]
    assert hosts("json://gotify:8080/") == ["gotify"]  # a single-label name is a server too
    assert hosts("ntfy://topic") == []  # ntfy.sh
    assert hosts("tgram://123456789:AAHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/-1001234567") == []
    assert hosts("matrix://abcdefghijklmnop") == []  # t2bot: the "host" is a token


# -- the send-time guard, against real clients and local servers -------------


class Peer:
    """A local HTTP server: answers every POST/GET with ``status``, and with an
    endless body when ``endless`` (until the client hangs up)."""

    def __init__(self, status: int = 200, endless: bool = False) -> None:
        self.requests: list[str] = []
        self.sent = 0
        self.hung_up = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                peer.requests.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if not endless:
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                self.end_headers()  # HTTP/1.0, no length: the body lasts until we close
                chunk = b"x" * 16384
                try:
                    while True:
                        self.wfile.write(chunk)
                        peer.sent += len(chunk)
                except OSError:
                    peer.hung_up.set()

            do_POST = do_GET = _answer  # noqa: N815 - http.server's naming

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.daemon = True

    def __enter__(self) -> Peer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer() as p:
        yield p


@pytest.fixture
def endless() -> Iterator[Peer]:
    with Peer(endless=True) as p:
        yield p


@pytest.mark.trio
async def test_guard_refuses_private_addresses_in_trio_and_threads(peer: Peer) -> None:
    url = f"http://0x7f000001:{peer.port}/x"
    with outbound(allow_private=False) as rule:
        with pytest.raises(PrivateDestination, match="private_destinations"):
            await trio.socket.getaddrinfo("127.0.0.1", peer.port)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
        with pytest.raises(requests.ConnectionError):
            await trio.to_thread.run_sync(lambda: requests.get(url, timeout=5))
        with pytest.raises(PrivateDestination):
            await trio.to_thread.run_sync(lambda: smtplib.SMTP("localhost", peer.port, timeout=5))
        assert rule.refused >= {"127.0.0.1", "0x7f000001", "localhost"}
    assert peer.requests == []
    # allowed sends, and code outside any send, connect as usual
    with outbound(allow_private=True):
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200
    assert await trio.to_thread.run_sync(lambda: requests.get(url, timeout=5).status_code) == 200
    assert len(peer.requests) == 2


@pytest.mark.trio
async def test_response_cap_stops_an_endless_body(endless: Peer) -> None:
    url = f"http://127.0.0.1:{endless.port}/x"
    with outbound(allow_private=True) as rule, pytest.raises(requests.RequestException):
        await trio.to_thread.run_sync(lambda: requests.post(url, data=b"{}", timeout=5))
    assert rule.oversized
    await trio.to_thread.run_sync(endless.hung_up.wait, 10)
    assert endless.hung_up.is_set()


@pytest.mark.trio
async def test_response_cap_stops_an_endless_smtp_reply() -> None:
    # A "mail server" whose greeting is a multi-line reply that never ends.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    hung_up = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            while True:
                conn.sendall(b"220-" + b"y" * 1000 + b"\r\n")
        except OSError:
            hung_up.set()
        finally:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with outbound(allow_private=True) as rule, pytest.raises(smtplib.SMTPException):
            await trio.to_thread.run_sync(lambda: smtplib.SMTP("127.0.0.1", port, timeout=5))
        assert rule.oversized
        await trio.to_thread.run_sync(hung_up.wait, 10)
        assert hung_up.is_set()
    finally:
        listener.close()


# -- the real daemon ---------------------------------------------------------


def member(d: Daemon, name: str, **grants: str) -> str:
    """A non-admin user's token that may manage its own channels."""
    return d.user(name, grants=grants, scopes=["publish", "subscribe", "account"])


def restricted(make_daemon: Any, policy: str = "admins", **env: str) -> Daemon:
    return make_daemon(
        extra_env={
            "NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "false",
            "NOTIFYD_PRIVATE_DESTINATIONS": policy,
            **env,
        }
    ).start()


def browser(endpoint: str) -> dict[str, Any]:
    """A PushSubscription JSON as a browser posts it, for ``endpoint``."""
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return {"endpoint": endpoint, "keys": {"p256dh": b64(public), "auth": b64(os.urandom(16))}}


def private_targets(port: int) -> list[dict[str, Any]]:
    """Channel bodies that each aim at this machine, spelled in a different way."""
    return [
        {"name": "w1", "kind": "webpush", "config": browser(f"http://127.1:{port}/push/a")},
        {"name": "w2", "kind": "webpush", "config": browser(f"http://[::ffff:127.0.0.1]:{port}/p")},
        {"name": "a1", "url": f"json://0x7f000001:{port}/hook"},
        {"name": "a2", "url": f"form://2130706433:{port}/"},
        {"name": "a3", "url": f"xml://localhost:{port}/"},
        {"name": "a4", "url": "mailto://u:p@example.org/to@example.org?smtp=127.0.0.1"},
        {"name": "a5", "url": f"json://169.254.169.254:{port}/latest"},
    ]


def assert_refused(r: httpx.Response, field: str, policy: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "private_destination" and error["field"] == field, error
    assert f"private_destinations = {policy}" in error["message"]


def test_admins_policy_refuses_users_and_lets_admins(make_daemon: Any, peer: Peer) -> None:
    d = restricted(make_daemon)
    alice = member(d, "alice")
    with d.http(alice) as c:
        for body in private_targets(peer.port):
            field = "url" if "url" in body else "config"
            assert_refused(c.post("/v1/channels", json=body), field, "admins")
        r = c.post("/v1/webpush/subscriptions",
                   json=browser(f"http://0x7f000001:{peer.port}/push/x"))  # fmt: skip
        assert_refused(r, "endpoint", "admins")
        # an admin may not aim a user's channel there either: the owner decides
        with d.admin() as admin:
            r = admin.post("/v1/channels", json={"name": "x", "url": f"json://127.0.0.1:{peer.port}/",
                                                 "user": "alice"})  # fmt: skip
            assert_refused(r, "url", "admins")
        # public destinations and fixed services are fine (nothing connects at creation)
        for body in (
            {"name": "pub", "url": "json://8.8.8.8/hook"},
            {"name": "tg", "url": "tgram://123456789:AAHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/-100123"},
            {"name": "fcm", "kind": "webpush", "config": browser("https://8.8.4.4/fcm/send/x")},
            {"name": "dns", "url": "json://no-such-host.invalid/"},  # checked when sending
        ):
            assert c.post("/v1/channels", json=body).status_code == 201, body
        assert c.get("/v1/channels").json()["channels"].__len__() == 4
    with d.admin() as c:
        for body in private_targets(peer.port):
            assert c.post("/v1/channels", json=body).status_code == 201, body
        r = c.post("/v1/webpush/subscriptions", json=browser(f"http://0x7f000001:{peer.port}/p"))
        assert r.status_code == 201, r.text
    assert peer.requests == []


def test_nobody_policy_refuses_admins_too(make_daemon: Any, peer: Peer) -> None:
    d = restricted(make_daemon, "nobody")
    with d.admin() as c:
        for body in private_targets(peer.port)[:3]:
            field = "url" if "url" in body else "config"
            assert_refused(c.post("/v1/channels", json=body), field, "nobody")
        r = c.post("/v1/webpush/subscriptions", json=browser(f"http://[::1]:{peer.port}/p"))
        assert_refused(r, "endpoint", "nobody")


def test_everyone_policy_lets_users(make_daemon: Any, peer: Peer) -> None:
    d = restricted(make_daemon, "everyone")
    alice = member(d, "alice")
    with d.http(alice) as c:
        for body in private_targets(peer.port):
            assert c.post("/v1/channels", json=body).status_code == 201, body


def deliveries(d: Daemon) -> list[dict[str, Any]]:
    with d.admin() as c:
        r = c.get("/v1/deliveries")
        assert r.status_code == 200, r.text
        return r.json()["deliveries"]


@pytest.mark.parametrize("in_daemon", [False, True], ids=["worker", "in-daemon"])
def test_a_destination_that_turned_private_is_refused_when_sending(
    make_daemon: Any, peer: Peer, in_daemon: bool
) -> None:
    # Created while private destinations were allowed for everyone, as if the
    # names had resolved publicly then (DNS rebinding); sending under "admins"
    # must look at the address actually connected to.
    d = make_daemon(extra_env={"NOTIFYD_DELIVERY_PROCESS": "false" if in_daemon else "true",
                               "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.1"}).start()  # fmt: skip
    alice = member(d, "alice", **{"alerts/*": "read"})
    sink = SMTPSink().start()
    try:
        with PushService() as push:
            with d.admin() as c:
                push.vapid_public_key = c.get("/v1/webpush/vapid-public-key").json()["public_key"]
            user_sub, admin_sub = push.subscribe(), push.subscribe()
            for client, sub, hook, mail in (
                (d.http(alice), user_sub, f"json://127.0.0.1:{peer.port}/alice",
                 f"mailto://localhost:{sink.port}/alice@example.org?from=n@example.org"),
                (d.admin(), admin_sub, f"json://2130706433:{peer.port}/admin",
                 f"mailto://127.0.0.1:{sink.port}/admin@example.org?from=n@example.org"),
            ):  # fmt: skip
                with client as c:
                    assert c.post("/v1/webpush/subscriptions", json=sub.info()).status_code == 201
                    for name, url in (("hook", hook), ("mail", mail)):
                        r = c.post("/v1/channels", json={"name": name, "url": url})
                        assert r.status_code == 201, r.text
            d.extra_env.update({"NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "false",
                                "NOTIFYD_PRIVATE_DESTINATIONS": "admins"})  # fmt: skip
            d.restart()
            d.publish("alerts/db", title="rebound")

            def settled() -> list[dict[str, Any]] | None:
                rows = deliveries(d)
                done = [x for x in rows if x["state"] in ("sent", "dead")]
                return rows if len(rows) == 6 and len(done) == 6 else None

            rows = wait_for(settled, timeout=30, message="every delivery sent or dead")
            states = sorted((x["user"], x["kind"], x["state"]) for x in rows)
            assert states == sorted(
                [(user, kind, "sent" if user == "admin" else "dead")
                 for user in ("admin", "alice") for kind in ("apprise", "apprise", "webpush")]
            ), rows  # fmt: skip
            for row in rows:
                if row["state"] == "dead":
                    assert row["last_error"].startswith("refused: "), row
                    assert "private_destinations = admins" in row["last_error"], row
            # the admin's channels reached the same peers; alice's reached nothing
            assert [p.subscription for p in push.received()] == [admin_sub.id]
            assert peer.requests == ["/admin"]
            assert [m.rcpt_tos for m in sink.messages] == [["admin@example.org"]]

            # /test says the same, from the daemon's own process
            with d.http(alice) as c:
                for name in ("hook", "mail"):
                    r = c.post(f"/v1/channels/{name}/test")
                    assert r.status_code == 200 and r.json()["ok"] is False, r.text
                    assert "private_destinations" in r.json()["error"], r.text
                    assert r.json()["retryable"] is False
            assert peer.requests == ["/admin"] and len(sink.messages) == 1
    finally:
        sink.stop()


def test_endless_answers_are_cut_short(make_daemon: Any, endless: Peer) -> None:
    d = make_daemon().start()  # the fixture's default: private destinations allowed
    with d.admin() as c:
        r = c.post(
            "/v1/channels", json={"name": "hook", "url": f"json://127.0.0.1:{endless.port}/"}
        )
        assert r.status_code == 201, r.text
        r = c.post("/v1/webpush/subscriptions",
                   json=browser(f"http://127.0.0.1:{endless.port}/push/x"))  # fmt: skip
        assert r.status_code == 201, r.text
        push_name = r.json()["name"]
        # Apprise (requests) stops reading at the cap: a failure with a short summary
        r = c.post("/v1/channels/hook/test", timeout=60)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["ok"] is False and len(result["error"]) <= 500, result
        assert "xxxxxxxxxxxxxxxx" not in result["error"]
        assert "64 KiB" in result["error"]  # the cap is what ended it
        # Web Push: the status decides; the body is read up to the cap, then dropped
        r = c.post(f"/v1/channels/{push_name}/test", timeout=60)
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
        assert len(r.content) < 1024
        assert c.get("/healthz").status_code == 200
    assert endless.requests == ["/", "/push/x"]
    wait_for(endless.hung_up.is_set, message="the daemon to hang up on the endless body")
    assert d.proc is not None and d.proc.poll() is None


def test_guard_is_installed_process_wide() -> None:
    destinations.install()
    assert socket.getaddrinfo is destinations._guarded_getaddrinfo
    # outside a send nothing is filtered
    assert socket.getaddrinfo("127.0.0.1", 80)
