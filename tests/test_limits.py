"""Abuse limits: the per-token publish rate limit (429 + Retry-After on every publish
door) and the cap on channels per user."""

from __future__ import annotations

import os
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifyd.core.errors import PayloadTooLarge, RateLimited
from notifyd.core.ratelimit import PublishLimiter

LIMITED = {
    "NOTIFYD_PUBLISH_RATE": "1",
    "NOTIFYD_PUBLISH_BURST": "5",
    "NOTIFYD_MAX_CHANNELS_PER_USER": "2",
}


def events(n: int, topic: str) -> list[dict[str, Any]]:
    return [{"topic": topic, "title": f"e{i}"} for i in range(n)]


def stored(d: Daemon, topic: str) -> int:
    with d.admin() as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 500})
        assert r.status_code == 200, r.text
        return len(r.json()["events"])


def assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module; each test uses its own users, tokens and topics."""
    d = Daemon(tmp_path_factory.mktemp("limited"), extra_env=LIMITED)
    d.start()
    yield d
    d.stop()


# -- the bucket itself ---------------------------------------------------------------


def test_bucket_refills_and_memory_stays_bounded() -> None:
    now = [0.0]
    limiter = PublishLimiter(max_buckets=3, clock=lambda: now[0])
    limiter.charge(("token", 1), 5, rate=2, burst=5)
    with pytest.raises(RateLimited) as info:
        limiter.charge(("token", 1), 3, rate=2, burst=5)
    assert info.value.retry_after == 2  # 3 events at 2/s: 1.5 s, rounded up
    now[0] = 1.0
    limiter.charge(("token", 1), 2, rate=2, burst=5)  # refilled 2
    with pytest.raises(PayloadTooLarge):
        limiter.charge(("token", 2), 6, rate=2, burst=5)  # never fits
    for key in range(2, 10):
        limiter.charge(("token", key), 1, rate=2, burst=5)
    assert len(limiter) <= 3
    limiter.charge(("token", 99), 1000, rate=0, burst=5)  # 0: no limit


# -- the daemon ----------------------------------------------------------------------


def test_burst_then_429_and_nothing_stored_then_refill(limited: Daemon) -> None:
    d = limited
    token = d.user("burst", grants={"lim1": "rw"})
    with d.http(token) as c:
        assert c.post("/v1/events", json=events(3, "lim1")).status_code == 201
        # a list counts each of its events: 3 more do not fit in what is left (2)
        r = c.post("/v1/events", json=events(3, "lim1"))
        assert_limited(r)
        assert r.json()["error"]["code"] == "rate_limited"
        assert stored(d, "lim1") == 3
        assert c.post("/v1/events", json=events(2, "lim1")).status_code == 201
        assert_limited(c.post("/v1/events", json=events(1, "lim1")[0]))
        assert stored(d, "lim1") == 5
        # a list larger than the whole bucket can never pass: 413, split it
        r = c.post("/v1/events", json=events(6, "lim1"))
        assert r.status_code == 413, r.text
        # refills at 1 event/s (a refused request takes nothing)
        wait_for(
            lambda: c.post("/v1/events", json=events(1, "lim1")[0]).status_code == 201, timeout=5
        )
    assert stored(d, "lim1") == 6


def test_limit_is_per_token_not_per_user_and_admins_are_exempt(limited: Daemon) -> None:
    d = limited
    first = d.user("pertoken", grants={"lim2": "rw"})
    second = d.user("pertoken", grants={"lim2": "rw"})  # another token of the same user
    admin = d.user("boss", role="admin")
    with d.http(first) as c:
        assert c.post("/v1/events", json=events(5, "lim2")).status_code == 201
        assert_limited(c.post("/v1/events", json=events(1, "lim2")))
    with d.http(second) as c:
        assert c.post("/v1/events", json=events(5, "lim2")).status_code == 201
    with d.http(admin) as c:
        for _ in range(3):
            assert c.post("/v1/events", json=events(5, "lim2")).status_code == 201
    with d.admin() as c:  # the Unix socket
        for _ in range(3):
            assert c.post("/v1/events", json=events(5, "lim2")).status_code == 201
    assert stored(d, "lim2") == 40


def test_ntfy_publish_is_limited_in_ntfys_shape(limited: Daemon) -> None:
    d = limited
    token = d.user("ntfy", grants={"lim3": "rw"})
    with d.http(token) as c:
        for i in range(5):
            assert c.post("/lim3", content=f"m{i}").status_code == 200
        r = c.post("/lim3", content="one too many")
        assert_limited(r)
        assert r.json()["code"] == 42901 and r.json()["http"] == 429
        r = c.put("/", json={"topic": "lim3", "message": "json door"})
        assert_limited(r)
    assert stored(d, "lim3") == 5


def test_gotify_message_is_limited_in_gotifys_shape(limited: Daemon) -> None:
    d = limited
    token = d.user("app", grants={"gotify/*": "rw"}, scopes=["publish"])
    with httpx.Client(base_url=d.url, timeout=10) as c:
        for i in range(5):
            r = c.post("/message", params={"token": token}, json={"message": f"m{i}"})
            assert r.status_code == 200, r.text
        r = c.post("/message", params={"token": token}, json={"message": "too many"})
        assert_limited(r)
        assert r.json()["errorCode"] == 429 and "errorDescription" in r.json()


# -- channels ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def push_subscription(n: int) -> dict[str, Any]:
    key = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": f"https://push.example.net/sub/{n}",
        "keys": {"p256dh": b64url(key), "auth": b64url(os.urandom(16))},
    }


def test_channels_per_user_are_capped(limited: Daemon) -> None:
    d = limited
    # adding channels is an account change: tokens with the 'account' scope
    token = d.user("ann", grants={"x": "rw"}, scopes=["publish", "subscribe", "account"])
    other = d.user("ben", grants={"x": "rw"}, scopes=["publish", "subscribe", "account"])
    with d.http(token) as c:
        for n in range(2):
            r = c.post("/v1/channels", json={"name": f"m{n}", "url": f"mailto://a{n}@example.com"})
            assert r.status_code == 201, r.text
        r = c.post("/v1/channels", json={"name": "m2", "url": "mailto://a2@example.com"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "too_many_channels"
        # a browser's push subscription is a channel too
        r = c.post("/v1/webpush/subscriptions", json=push_subscription(1))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "too_many_channels"
        assert len(c.get("/v1/channels").json()["channels"]) == 2
        # removing one makes room
        assert c.delete("/v1/channels/m0").status_code in (200, 204)
        assert c.post("/v1/webpush/subscriptions", json=push_subscription(1)).status_code == 201
    with d.http(other) as c:  # the cap is per user
        r = c.post("/v1/channels", json={"name": "m0", "url": "mailto://b@example.com"})
        assert r.status_code == 201, r.text
