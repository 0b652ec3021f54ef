"""The ``webpush`` plugin against a real push service (tests/pushservice.py): the
channel alone, then the daemon end to end (subscribe, publish, read the decrypted push)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_for
from pushservice import PushService, Subscription

from notifyd.config import Config
from notifyd.core.channels import ChannelRecord, Delivery, DeliveryError
from notifyd.core.services import Services
from notifyd.core.sqlite.store import SQLiteStore
from notifyd.plugins.webpush.channel import MAX_PLAINTEXT, WebPushChannel, topic_header
from notifyd.plugins.webpush.subscription import SubscriptionError, parse_subscription
from notifyd.plugins.webpush.vapid import KEY_FILE, load_or_create, public_key_b64

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines


@pytest.fixture
def push() -> Iterator[PushService]:
    with PushService() as ps:
        yield ps


def event(**kw: Any) -> dict[str, Any]:
    ev = {
        "id": 7, "topic": "alerts/disk", "title": "Disk full", "body": "sda1 at 99%",
        "format": "text", "priority": 4, "category": "ops", "tags": [],
        "click": "https://example.com/disk", "icon": "https://example.com/i.png", "image": None,
        "actions": [{"label": "Open", "url": "https://example.com/a"}], "sensitive": False,
        "collapse_key": "disk-sda1", "deliver_at": None, "expires_at": None, "created_at": "",
    }  # fmt: skip
    return {**ev, **kw}


def delivery(sub: Subscription, *events: dict[str, Any]) -> Delivery:
    config = parse_subscription(sub.info(), "test-browser/1.0")
    record = ChannelRecord(1, 1, "alice", "webpush-x", "webpush", config)
    return Delivery(1, record, list(events) or [event()], 1, "http://notifyd.test")


@pytest.fixture
async def channel(tmp_path: Path, push: PushService) -> AsyncIterator[WebPushChannel]:
    config = Config(data_dir=str(tmp_path))
    ch = WebPushChannel(Services.build(config, SQLiteStore(tmp_path / "unused.db")))
    push.vapid_public_key = public_key_b64(load_or_create(tmp_path))
    yield ch
    await ch.aclose()


# -- the channel alone ----------------------------------------------------------


@pytest.mark.trio
async def test_push_is_signed_and_encrypted(channel: WebPushChannel, push: PushService) -> None:
    sub = push.subscribe()
    await channel.send(delivery(sub))
    (got,) = push.received(sub)
    assert got.error is None and got.status == 201
    assert got.claims is not None and got.claims["sub"] == "mailto:notifyd@localhost"
    assert got.payload == {
        "id": 7, "topic": "alerts/disk", "title": "Disk full", "body": "sda1 at 99%",
        "category": "ops", "priority": 4, "click": "https://example.com/disk",
        "icon": "https://example.com/i.png", "image": None,
        "actions": [{"label": "Open", "url": "https://example.com/a"}], "tag": "disk-sda1",
        "sensitive": False,
    }  # fmt: skip
    h = got.headers
    assert (h["ttl"], h["urgency"], h["topic"]) == ("86400", "high", "disk-sda1")
    assert h["content-encoding"] == "aes128gcm"


@pytest.mark.trio
async def test_sensitive_push_is_generic(channel: WebPushChannel, push: PushService) -> None:
    sub = push.subscribe()
    await channel.send(delivery(sub, event(sensitive=True, title="Salary 5000", body="IBAN DE1")))
    (got,) = push.received(sub)
    assert got.payload is not None
    assert got.payload["title"] == "New notification in ops"
    assert got.payload["body"] == "" and got.payload["sensitive"] is True
    assert (got.payload["icon"], got.payload["image"], got.payload["actions"]) == (None, None, [])
    assert got.payload["click"] == "http://notifyd.test/#event-7"  # not the event's own URL
    seen = repr(got.headers) + repr(got.payload)
    assert "Salary" not in seen and "IBAN" not in seen


@pytest.mark.parametrize(
    "priority,urgency,expires_at,ttl",
    [(1, "very-low", None, "86400"), (2, "low", None, "86400"), (3, "normal", None, "86400"),
     (5, "high", "2000-01-01T00:00:00.000Z", "0")],
)  # fmt: skip
@pytest.mark.trio
async def test_urgency_follows_priority_and_ttl_expiry(
    channel: WebPushChannel, push: PushService, priority: int, urgency: str,
    expires_at: str | None, ttl: str,
) -> None:  # fmt: skip
    sub = push.subscribe()
    await channel.send(
        delivery(sub, event(priority=priority, collapse_key=None, expires_at=expires_at))
    )
    (got,) = push.received(sub)
    assert (got.headers["urgency"], got.headers["ttl"]) == (urgency, ttl)
    assert "topic" not in got.headers


@pytest.mark.parametrize(
    "status,retry_after,retryable,gone,wait",
    [(410, None, False, True, None), (404, None, False, True, None), (500, "30", True, False, 30.0),
     (429, "7", True, False, 7.0), (503, None, True, False, None), (400, None, False, False, None),
     (403, None, False, False, None), (413, None, False, False, None)],
)  # fmt: skip
@pytest.mark.trio
async def test_answers_map_to_delivery_errors(
    channel: WebPushChannel, push: PushService, status: int, retry_after: str | None,
    retryable: bool, gone: bool, wait: float | None,
) -> None:  # fmt: skip
    sub = push.subscribe(status=status)
    sub.retry_after = retry_after
    with pytest.raises(DeliveryError) as info:
        await channel.send(delivery(sub))
    err = info.value
    assert (err.retryable, err.gone, err.retry_after) == (retryable, gone, wait)
    assert sub.id not in str(info.value)  # the endpoint path is a secret


@pytest.mark.trio
async def test_unreachable_service_is_retryable(channel: WebPushChannel, push: PushService) -> None:
    sub = push.subscribe()
    sub.endpoint = "http://127.0.0.1:9/push/secret-path"  # the discard port: refused
    with pytest.raises(DeliveryError) as info:
        await channel.send(delivery(sub))
    assert info.value.retryable and "secret-path" not in str(info.value)


@pytest.mark.trio
async def test_long_body_is_cut_to_fit_one_push(channel: WebPushChannel, push: PushService) -> None:
    sub = push.subscribe()
    await channel.send(delivery(sub, event(body="é\n" * 2000, collapse_key="a/b" * 20)))
    (got,) = push.received(sub)
    assert got.error is None and len(got.body) <= 4096
    assert got.payload is not None and got.payload["body"].endswith("…")
    assert len(got.payload["body"]) > MAX_PLAINTEXT // 4  # cut, not dropped
    assert got.headers["topic"] == topic_header("a/b" * 20) and len(got.headers["topic"]) == 32


def test_key_file_is_private_stable_and_created_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = load_or_create(tmp_path / "d")
    finally:
        os.umask(old)
    path = tmp_path / "d" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary left
    public = public_key_b64(key)
    assert len(public) == 87 and "=" not in public
    assert public_key_b64(load_or_create(tmp_path / "d")) == public


@pytest.mark.parametrize(
    "change,field",
    [({"endpoint": "ftp://x/y"}, "endpoint"), ({"endpoint": "https://" + "a" * 2048}, "endpoint"),
     ({"keys": None}, "keys"), ({"keys": {"p256dh": "BA" + "A" * 85, "auth": "A" * 22}},
     "keys.p256dh"), ({"keys": {"p256dh": "!!", "auth": "x"}}, "keys.p256dh")],
)  # fmt: skip
def test_bad_subscriptions_name_the_field(push: PushService, change: dict, field: str) -> None:
    with pytest.raises(SubscriptionError) as info:
        parse_subscription({**push.subscribe().info(), **change})
    assert info.value.field == field


# -- the daemon, end to end -----------------------------------------------------


def subscribe(daemon: Daemon, token: str, sub: Subscription, expect: int = 201) -> dict:
    ua = {"User-Agent": "Firefox/140"}
    with daemon.http(token) as c:
        r = c.post("/v1/webpush/subscriptions", json=sub.info(), headers=ua)
    assert r.status_code == expect, r.text
    return r.json()


def listed(daemon: Daemon, token: str) -> list[dict]:
    with daemon.http(token) as c:
        r = c.get("/v1/webpush/subscriptions")
    assert r.status_code == 200, r.text
    return r.json()["subscriptions"]


@pytest.fixture
def alice(daemon: Daemon, push: PushService) -> str:
    # subscribing is an account change: the page's session, or a token with 'account'
    token = daemon.user(
        "alice", grants={"alerts/*": "read"}, scopes=["publish", "subscribe", "account"]
    )
    with daemon.http(token) as c:
        r = c.get("/v1/webpush/vapid-public-key")
    assert r.status_code == 200, r.text
    push.vapid_public_key = r.json()["public_key"]
    return token


@pytest.mark.sqlite_only(reason="the VAPID key lives in a file of the data dir on every engine")
def test_vapid_key_endpoint_and_key_file(daemon: Daemon, alice: str, push: PushService) -> None:
    assert len(push.vapid_public_key or "") == 87
    assert stat.S_IMODE((daemon.data_dir / KEY_FILE).stat().st_mode) == 0o600
    with daemon.http() as c:
        assert c.get("/v1/webpush/vapid-public-key").status_code == 401


def test_published_event_reaches_the_browser(daemon: Daemon, alice: str, push: PushService) -> None:
    sub = push.subscribe()
    made = subscribe(daemon, alice, sub)
    assert made["endpoint_origin"] == push.origin and made["user_agent"] == "Firefox/140"
    assert made["name"].startswith("webpush-") and sub.id not in str(made)
    again = subscribe(daemon, alice, sub, expect=200)  # the same browser again: one channel
    assert again["id"] == made["id"] and len(listed(daemon, alice)) == 1
    ev = daemon.publish("alerts/db", title="DB down", body="primary", priority="urgent",
                        click="https://status.example", actions=[{"label": "Ack", "url": "https://a.example"}],
                        collapse_key="db")  # fmt: skip
    got = wait_for(lambda: push.received(sub), message="the push")[0]
    assert got.error is None, got.error
    p = got.payload
    assert p is not None and (p["id"], p["title"], p["body"]) == (ev["id"], "DB down", "primary")
    assert (p["click"], p["tag"], p["priority"]) == ("https://status.example", "db", 5)
    assert p["actions"] == [{"label": "Ack", "url": "https://a.example"}]
    assert [got.headers[h] for h in ("urgency", "topic", "ttl")] == ["high", "db", "86400"]
    daemon.publish("private/x", title="not for alice")  # alice may not read it
    daemon.publish("alerts/db", title="second")
    wait_for(lambda: len(push.received(sub)) == 2, message="the second push")
    assert push.received(sub)[1].payload["title"] == "second"  # type: ignore[index]


def test_sensitive_event_is_generic(daemon: Daemon, alice: str, push: PushService) -> None:
    sub = push.subscribe()
    subscribe(daemon, alice, sub)
    daemon.publish("alerts/hr", title="Salary review", body="Bob: 5000", category="hr",
                   sensitive=True, icon="https://example.com/i.png")  # fmt: skip
    got = wait_for(lambda: push.received(sub), message="the push")[0]
    assert got.payload is not None and got.payload["title"] == "New notification in hr"
    assert got.payload["body"] == "" and got.payload["icon"] is None
    seen = repr(got.headers) + repr(got.payload)
    assert "Salary" not in seen and "5000" not in seen and b"Salary" not in got.body


def test_gone_subscription_is_removed(daemon: Daemon, alice: str, push: PushService) -> None:
    sub = push.subscribe(status=410)
    subscribe(daemon, alice, sub)
    daemon.publish("alerts/a", title="one")
    wait_for(lambda: listed(daemon, alice) == [], message="the subscription to be removed")
    daemon.publish("alerts/a", title="two")
    marker = push.subscribe()  # once a live browser has "three", "two" was dispatched too
    subscribe(daemon, alice, marker)
    daemon.publish("alerts/a", title="three")
    wait_for(lambda: push.received(marker), message="the marker push")
    assert len(push.received(sub)) == 1
    assert "answered 410" in daemon.log() and sub.id not in daemon.log()  # no secret path


@pytest.mark.parametrize(
    "body,field",
    [({"keys": {"p256dh": "x", "auth": "y"}}, "endpoint"), ({"endpoint": "https://p.example/1"}, "keys"),
     ({"endpoint": "javascript:alert(1)", "keys": {"p256dh": "x", "auth": "y"}}, "endpoint"),
     ({"endpoint": "https://p.example/1", "keys": {"p256dh": "AAAA", "auth": "y"}}, "keys.p256dh")],
)  # fmt: skip
@pytest.mark.sqlite_only(reason="request validation, refused before any store call")
def test_bad_subscription_json_is_422(daemon: Daemon, alice: str, body: dict, field: str) -> None:
    with daemon.http(alice) as c:
        r = c.post("/v1/webpush/subscriptions", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_subscriptions_are_private(daemon: Daemon, alice: str, push: PushService) -> None:
    mine = subscribe(daemon, alice, push.subscribe())
    bob = daemon.user(
        "bob", grants={"alerts/*": "read"}, scopes=["publish", "subscribe", "account"]
    )
    assert listed(daemon, bob) == []
    with daemon.http(bob) as c:
        assert c.delete(f"/v1/webpush/subscriptions/{mine['id']}").status_code == 404
    assert [s["id"] for s in listed(daemon, alice)] == [mine["id"]]
    with daemon.http(alice) as c:
        assert c.delete(f"/v1/webpush/subscriptions/{mine['id']}").status_code == 204
    assert listed(daemon, alice) == []
    shared = push.subscribe()  # one browser, used by alice then bob: it follows the last one
    subscribe(daemon, alice, shared)
    subscribe(daemon, bob, shared)
    assert listed(daemon, alice) == [] and len(listed(daemon, bob)) == 1


def test_subscriptions_and_key_survive_restart(
    daemon: Daemon, alice: str, push: PushService
) -> None:
    sub = push.subscribe()
    made = subscribe(daemon, alice, sub)
    daemon.restart()
    assert [s["id"] for s in listed(daemon, alice)] == [made["id"]]
    daemon.publish("alerts/r", title="after restart")
    got = wait_for(lambda: push.received(sub), message="the push")[0]
    assert got.error is None and got.payload["title"] == "after restart"  # type: ignore[index]


def test_private_endpoints_are_refused_unless_allowed(make_daemon: Any) -> None:
    from notifyd.plugins.webpush.subscription import is_private_endpoint

    for url in ("http://127.0.0.1:9/x", "https://10.1.2.3/x", "https://[::1]/x", "https://localhost/x",
                "https://printer.local/x", "http://169.254.169.254/latest"):  # fmt: skip
        assert is_private_endpoint(url), url
    for url in ("https://fcm.googleapis.com/fcm/send/abc", "https://updates.push.services.mozilla.com/wpush/v2/x",
                "https://web.push.apple.com/abc", "https://8.8.8.8/x"):  # fmt: skip
        assert not is_private_endpoint(url), url
    for url in ("http://127.1/x", "http://0x7f000001/x", "http://2130706433/x", "http://0/x",
                "https://[::ffff:127.0.0.1]/x", "https://localhost./x"):  # fmt: skip
        assert is_private_endpoint(url), url
    # private_destinations = nobody: not even the socket (an admin) may
    d = make_daemon(extra_env={"NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "false",
                               "NOTIFYD_PRIVATE_DESTINATIONS": "nobody"}).start()  # fmt: skip
    with PushService() as service, d.admin() as c:
        r = c.post("/v1/webpush/subscriptions", json=service.subscribe().info())
        assert r.status_code == 422 and r.json()["error"]["field"] == "endpoint"
        assert "private_destinations = nobody" in r.json()["error"]["message"]
