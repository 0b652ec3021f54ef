"""The ``apns`` channel against a local APNs (tests/fakeapns.py: HTTP/2 over TLS, a CA
made per run, provider tokens verified with the public half of the test's .p8 key):
the channel alone for what is cheap to check in-process, then the real daemon end to
end (devices registered at /v1/devices, pushes sent by the delivery worker)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Daemon, wait_for
from fakeapns import FakeApns, write_p8

from notifyd.config import Config
from notifyd.core.channels import ChannelRecord, Delivery, DeliveryError
from notifyd.core.services import Services
from notifyd.core.sqlite.store import SQLiteStore
from notifyd.plugins.mobile.apns import MAX_PAYLOAD, TOKEN_LIFETIME, ApnsChannel, ProviderToken
from notifyd.plugins.mobile.payload import MAX_TTL

KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
BUNDLE = "com.example.notifyd"


@pytest.fixture(scope="module")
def apns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApns]:
    where = tmp_path_factory.mktemp("apns")
    key = write_p8(where / "AuthKey.p8")
    with FakeApns(where, key, key_id=KEY_ID, team_id=TEAM_ID, topic=BUNDLE) as fake:
        yield fake


def device() -> str:
    return secrets.token_hex(32)


def settings(apns: FakeApns) -> dict[str, str]:
    return {
        "apns_key_file": str(apns.directory / "AuthKey.p8"), "apns_key_id": KEY_ID,
        "apns_team_id": TEAM_ID, "apns_topic": BUNDLE, "apns_endpoint": apns.origin,
    }  # fmt: skip


def event(**kw: Any) -> dict[str, Any]:
    ev = {
        "id": 7, "topic": "alerts/disk", "title": "Disk full", "body": "sda1 at 99%",
        "format": "text", "priority": 4, "category": "ops", "tags": [],
        "click": "https://example.com/disk", "icon": None, "image": "https://example.com/d.png",
        "actions": [], "sensitive": False, "collapse_key": "disk-sda1", "deliver_at": None,
        "expires_at": None, "created_at": "",
    }  # fmt: skip
    return {**ev, **kw}


# -- the channel alone ----------------------------------------------------------


class World:
    def __init__(self, channel: ApnsChannel, user_id: int) -> None:
        self.channel = channel
        self.user_id = user_id

    def delivery(self, token: str, *events: dict[str, Any]) -> Delivery:
        config = ApnsChannel.validate({"token": token, "app": BUNDLE})
        record = ChannelRecord(1, self.user_id, "alice", "apns-x", "apns", config)
        return Delivery(1, record, list(events) or [event()], 1, "http://notifyd.test")

    async def send(self, token: str, *events: dict[str, Any]) -> None:
        await self.channel.send(self.delivery(token, *events))


@pytest.fixture
async def world(
    tmp_path: Path, apns: FakeApns, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.setenv("SSL_CERT_FILE", str(apns.ca.ca_file))
    store = SQLiteStore(tmp_path / "a.db")
    await store.start()
    try:
        user = await store.create_user("alice", "admin", None)
        svc = Services.build(Config(data_dir=str(tmp_path), **settings(apns)), store)
        channel = ApnsChannel(svc)
        yield World(channel, user.id)
        await channel.aclose()
    finally:
        await store.close()


@pytest.mark.trio
async def test_push_headers_payload_and_token(world: World, apns: FakeApns) -> None:
    token = device()
    await world.send(token, event(expires_at="2999-01-01T00:00:00Z"))
    (got,) = apns.received(token)
    assert got.ok, got.reason
    assert got.http_version == "2"
    assert got.claims is not None and got.claims["iss"] == TEAM_ID
    h = got.headers
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (BUNDLE, "alert", "10")
    assert h["apns-collapse-id"] == "disk-sda1"
    # the event expires in 2999: APNs keeps it four weeks at most
    assert time.time() < int(h["apns-expiration"]) <= time.time() + MAX_TTL
    assert got.payload == {
        "aps": {"alert": {"title": "Disk full", "body": "sda1 at 99%"}, "sound": "default",
                "badge": 0, "thread-id": "alerts/disk", "interruption-level": "active",
                "mutable-content": 1},
        "id": "7", "topic": "alerts/disk", "category": "ops", "priority": "4",
        "click": "https://example.com/disk", "tag": "disk-sda1", "sensitive": "false",
        "image": "https://example.com/d.png",
    }  # fmt: skip


@pytest.mark.parametrize(
    "priority,apns_priority,level", [(1, "5", "passive"), (3, "5", "active"), (5, "10", "time-sensitive")]
)  # fmt: skip
@pytest.mark.trio
async def test_priority_maps_to_apns_priority_and_interruption_level(
    world: World, apns: FakeApns, priority: int, apns_priority: str, level: str
) -> None:
    token = device()
    await world.send(token, event(priority=priority, collapse_key=None, image=None,
                                  expires_at="2000-01-01T00:00:00Z"))  # fmt: skip
    (got,) = apns.received(token)
    assert got.ok and got.payload is not None
    assert got.headers["apns-priority"] == apns_priority
    assert got.payload["aps"]["interruption-level"] == level
    assert "mutable-content" not in got.payload["aps"] and "image" not in got.payload
    # no collapse key: the event's own tag, so that a push sent twice replaces itself
    assert got.headers["apns-collapse-id"] == got.payload["tag"]
    assert got.payload["tag"].startswith("event-")
    assert got.headers["apns-expiration"] == "0"  # expired: try once, keep nothing


@pytest.mark.trio
async def test_sensitive_event_is_the_generic_line(world: World, apns: FakeApns) -> None:
    token = device()
    await world.send(token, event(sensitive=True, title="Salary 5000", body="IBAN DE1",
                                  topic="hr/salaries"))  # fmt: skip
    (got,) = apns.received(token)
    assert got.ok and got.payload is not None
    assert got.payload["aps"]["alert"] == {"title": "New notification in ops"}
    assert got.payload["click"] == "http://notifyd.test/#event-7"  # not the event's URL
    assert "thread-id" not in got.payload["aps"] and "image" not in got.payload
    seen = repr(got.headers) + got.body.decode()
    for secret in ("Salary", "IBAN", "hr/salaries", "example.com"):
        assert secret not in seen


@pytest.mark.trio
async def test_long_body_is_cut_to_fit(world: World, apns: FakeApns) -> None:
    token = device()
    await world.send(token, event(body="\U0001f600" * 2000, collapse_key="k" * 100))
    (got,) = apns.received(token)
    assert got.ok, got.reason
    assert len(got.body) <= MAX_PAYLOAD and got.payload is not None
    body = got.payload["aps"]["alert"]["body"]
    assert body.endswith("…") and len(body.encode()) > MAX_PAYLOAD // 2  # cut, not dropped
    assert len(got.headers["apns-collapse-id"]) == 64  # hashed, not cut


@pytest.mark.parametrize(
    "answer,retryable,gone,wait",
    [((410, "Unregistered"), False, True, None), ((400, "BadDeviceToken"), False, True, None),
     ((400, "DeviceTokenNotForTopic"), False, True, None),
     ((429, "TooManyRequests", "7"), True, False, 7.0),
     ((503, "ServiceUnavailable", "30"), True, False, 30.0),
     ((500, "InternalServerError"), True, False, None),
     ((400, "BadTopic"), False, False, None), ((413, "PayloadTooLarge"), False, False, None)],
)  # fmt: skip
@pytest.mark.trio
async def test_answers_map_to_delivery_errors(
    world: World, apns: FakeApns, answer: tuple, retryable: bool, gone: bool, wait: float | None
) -> None:
    token = device()
    apns.script(token, answer)
    with pytest.raises(DeliveryError) as info:
        await world.send(token)
    err = info.value
    assert (err.retryable, err.gone, err.retry_after) == (retryable, gone, wait)
    assert answer[1] in str(err) and token not in str(err)
    assert len(apns.received(token)) == 1


@pytest.mark.trio
async def test_refused_provider_token_is_renewed_once(world: World, apns: FakeApns) -> None:
    tokens = world.channel.tokens
    first = device()
    await world.send(first)
    apns.expire_tokens()
    # a burst of sends refused with the same stale token: one renewal, every send retried
    devices = [device() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        for d in devices:
            nursery.start_soon(world.send, d)
    assert tokens.signed == 2
    for d in devices:
        refused, accepted = apns.received(d)
        assert (refused.status, refused.reason) == (403, "ExpiredProviderToken")
        assert accepted.ok and accepted.token != refused.token
    # InvalidProviderToken is worth one new token too; refused again, it is permanent
    again = device()
    apns.script(again, (403, "InvalidProviderToken"), (403, "InvalidProviderToken"))
    with pytest.raises(DeliveryError) as info:
        await world.send(again)
    assert not info.value.retryable and "apns_key_id" in str(info.value)
    assert tokens.signed == 3 and len(apns.received(again)) == 2


def test_provider_token_is_renewed_every_40_minutes(apns: FakeApns) -> None:
    tokens = ProviderToken(str(apns.directory / "AuthKey.p8"), KEY_ID, TEAM_ID)
    first = tokens.current(1_000_000.0)
    assert tokens.current(1_000_000.0 + TOKEN_LIFETIME - 1) == first
    assert tokens.current(1_000_000.0 + TOKEN_LIFETIME) != first
    assert 20 * 60 <= TOKEN_LIFETIME <= 50 * 60 and tokens.signed == 2


@pytest.mark.trio
async def test_unconfigured_or_bad_key_is_permanent(tmp_path: Path, apns: FakeApns) -> None:
    store = SQLiteStore(tmp_path / "unused.db")
    bad_key = tmp_path / "bad.p8"
    bad_key.write_text("not a key")
    for cfg, said in ((Config(data_dir=str(tmp_path)), "not configured"),
                      (Config(data_dir=str(tmp_path), **{**settings(apns), "apns_key_file": str(bad_key)}),
                       "not an APNs signing key")):  # fmt: skip
        channel = ApnsChannel(Services.build(cfg, store))
        record = ChannelRecord(1, 1, "a", "x", "apns", {"token": device(), "app": BUNDLE})
        with pytest.raises(DeliveryError) as info:
            await channel.send(Delivery(1, record, [event()], 1))
        assert not info.value.retryable and said in str(info.value)
        await channel.aclose()


def test_device_config_is_checked() -> None:
    good = ApnsChannel.validate({"token": "AB" * 32, "app": BUNDLE})
    assert good["token"] == "ab" * 32
    assert ApnsChannel.public(good)["token"] != good["token"]
    for bad in ({"token": "xyz", "app": BUNDLE}, {"token": "ab" * 32}, {"app": BUNDLE}):
        with pytest.raises(ValueError):
            ApnsChannel.validate(bad)


# -- the daemon, end to end -----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, apns: FakeApns) -> Iterator[Daemon]:
    """One daemon for the module, sending to the fake through its delivery worker; it
    trusts the fake's CA through SSL_CERT_FILE, as an operator's private CA would be."""
    env = {f"NOTIFYD_{k.upper()}": v for k, v in settings(apns).items()}
    env.update({
        "SSL_CERT_FILE": str(apns.ca.ca_file),
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.1",
        "NOTIFYD_DELIVERY_BACKOFF_MAX_SECONDS": "5",
    })  # fmt: skip
    d = Daemon(tmp_path_factory.mktemp("daemon") / "data", extra_env=env)
    d.data_dir.mkdir()
    d.start()
    d.first_push = len(apns.received())  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.stop()


def person(server: Daemon, name: str) -> str:
    """A user who reads ``<name>/*``, with a token that may register devices."""
    return server.user(
        name, grants={f"{name}/*": "read"}, scopes=["publish", "subscribe", "account"]
    )


def register(server: Daemon, token: str, device_token: str) -> dict[str, Any]:
    with server.http(token) as c:
        r = c.post("/v1/devices", json={"platform": "apns", "token": device_token,
                                        "app": BUNDLE, "label": "iPhone"})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def devices(server: Daemon, token: str) -> list[str]:
    with server.http(token) as c:
        r = c.get("/v1/devices")
    assert r.status_code == 200, r.text
    return [d["token"] for d in r.json()["devices"]]


def pushed(apns: FakeApns, device_token: str, count: int = 1) -> list[Any]:
    return wait_for(
        lambda: len(apns.delivered(device_token)) >= count and apns.delivered(device_token),
        message=f"{count} push(es) to the device",
    )


def test_event_reaches_the_phone_with_badge_and_headers(server: Daemon, apns: FakeApns) -> None:
    bob = person(server, "bob")
    phone = device()
    register(server, bob, phone)
    first = server.publish("bob/db", title="DB down", body="primary", priority="urgent",
                           click="https://status.example", collapse_key="db",
                           image="https://status.example/graph.png")  # fmt: skip
    (got,) = pushed(apns, phone)
    h = got.headers
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (BUNDLE, "alert", "10")
    assert h["apns-collapse-id"] == "db" and int(h["apns-expiration"]) > time.time()
    p = got.payload
    assert p["aps"] == {
        "alert": {"title": "DB down", "body": "primary"}, "sound": "default", "badge": 1,
        "thread-id": "bob/db", "interruption-level": "time-sensitive", "mutable-content": 1,
    }  # fmt: skip
    assert (p["id"], p["topic"], p["click"]) == (
        str(first["id"]),
        "bob/db",
        "https://status.example",
    )
    assert p["image"] == "https://status.example/graph.png"
    assert got.claims["iss"] == TEAM_ID and got.http_version == "2"
    # the badge is the unread count: two unread, one read, then a third event
    server.publish("bob/db", title="second", priority="low")
    assert pushed(apns, phone, 2)[1].payload["aps"]["badge"] == 2
    with server.http(bob) as c:
        assert c.post(f"/v1/events/{first['id']}/read").status_code == 200
        server.publish("bob/db", title="third")
        assert pushed(apns, phone, 3)[2].payload["aps"]["badge"] == 2
        assert c.get("/v1/inbox/count", params={"unread": "true"}).json()["count"] == 2

        def all_sent() -> list[dict[str, Any]]:
            # asked again each time: the worker records an outcome after the push
            rows: list[dict[str, Any]] = c.get("/v1/deliveries").json()["deliveries"]
            return rows if rows and all(r["state"] == "sent" for r in rows) else []

        rows = wait_for(all_sent, message="the three deliveries recorded as sent")
    assert {r["kind"] for r in rows} == {"apns"} and len(rows) == 3


def test_sensitive_event_sends_only_the_generic_line(server: Daemon, apns: FakeApns) -> None:
    carol = person(server, "carol")
    phone = device()
    register(server, carol, phone)
    server.publish("carol/hr", title="Salary review", body="Bob: 5000", category="hr",
                   sensitive=True, click="https://hr.example/x",
                   image="https://hr.example/p.png")  # fmt: skip
    (got,) = pushed(apns, phone)
    assert got.payload["aps"]["alert"] == {"title": "New notification in hr"}
    assert "mutable-content" not in got.payload["aps"] and "thread-id" not in got.payload["aps"]
    seen = repr(got.headers) + got.body.decode()
    for secret in ("Salary", "5000", "hr.example", "carol/hr"):
        assert secret not in seen
    assert "#event-" in got.payload["click"]  # the notification center, behind sign-in


def test_dead_device_tokens_are_removed(server: Daemon, apns: FakeApns) -> None:
    dave = person(server, "dave")
    unregistered, bad, alive = device(), device(), device()
    apns.script(unregistered, (410, "Unregistered"))
    apns.script(bad, (400, "BadDeviceToken"))
    for phone in (unregistered, bad, alive):
        register(server, dave, phone)
    server.publish("dave/x", title="one")
    wait_for(lambda: devices(server, dave) == [alive[:6] + "…" + alive[-4:]],
             message="the dead devices to be removed")  # fmt: skip
    server.publish("dave/x", title="two")
    pushed(apns, alive, 2)  # "two" was dispatched, and not to the removed devices
    assert len(apns.received(unregistered)) == len(apns.received(bad)) == 1
    log = server.log()
    assert "Unregistered" in log and "BadDeviceToken" in log
    assert unregistered not in log and bad not in log  # device tokens stay out of the log


def test_429_and_503_are_retried_honouring_retry_after(server: Daemon, apns: FakeApns) -> None:
    erin = person(server, "erin")
    phone = device()
    apns.script(phone, (429, "TooManyRequests", "1"), (503, "ServiceUnavailable"))
    register(server, erin, phone)
    server.publish("erin/x", title="eventually")
    pushed(apns, phone)
    busy, down, ok = apns.received(phone)
    assert (busy.status, down.status, ok.status) == (429, 503, 200)
    assert down.at - busy.at >= 0.9  # Retry-After: 1, not the 0.1 s backoff
    with server.http(erin) as c:
        rows = wait_for(
            lambda: [r for r in c.get("/v1/deliveries").json()["deliveries"] if r["state"] == "sent"],
            message="the delivery recorded as sent",
        )  # fmt: skip
    assert rows[0]["attempts"] == 3


def test_expired_provider_token_is_renewed(server: Daemon, apns: FakeApns) -> None:
    fay = person(server, "fay")
    phones = [device() for _ in range(3)]
    for phone in phones:
        register(server, fay, phone)
    server.publish("fay/x", title="before")
    for phone in phones:
        pushed(apns, phone)
    apns.expire_tokens()
    server.publish("fay/x", title="after")
    renewed = set()
    for phone in phones:
        refused, accepted = pushed(apns, phone, 2)[0], apns.received(phone)[-1]
        assert accepted.ok and accepted.payload["aps"]["alert"]["title"] == "after"
        assert [p.reason for p in apns.received(phone)[1:]] == ["ExpiredProviderToken", ""]
        assert accepted.token != refused.token and accepted.claims["iat"] >= refused.claims["iat"]
        renewed.add(accepted.token)
    assert len(renewed) == 1  # refused together, renewed once


def test_one_connection_serves_every_push(server: Daemon, apns: FakeApns) -> None:
    gus = person(server, "gus")
    phone = device()
    register(server, gus, phone)
    for n in range(5):
        server.publish("gus/x", title=f"n{n}")
    pushed(apns, phone, 5)
    ours = apns.received()[server.first_push :]  # type: ignore[attr-defined]
    assert len(ours) > 15 and len({p.connection for p in ours}) == 1
