"""The ``fcm`` channel end to end: a real daemon (delivery in its worker process)
pushing to a local FCM (tests/fakefcm.py) that verifies the OAuth assertion with
the service account's public key, the bearer token and the message shape."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_for
from fakefcm import Failure, FakeFcm

from notifyd.plugins.mobile.fcm import fcm_message
from notifyd.plugins.mobile.payload import MobileMessage


def fcm_token() -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return secrets.token_hex(11) + ":APA91b" + "".join(secrets.choice(alphabet) for _ in range(134))


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, fcm: FakeFcm) -> Iterator[Daemon]:
    """One daemon for the module; each test uses a user and topic of its own."""
    tmp = tmp_path_factory.mktemp("fcm")
    account = fcm.account(tmp / "service-account.json")
    env = {
        "NOTIFYD_FCM_SERVICE_ACCOUNT_FILE": str(account.path),
        "NOTIFYD_FCM_ENDPOINT": fcm.origin,
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.05",
        "NOTIFYD_BASE_URL": "https://notify.example",
    }
    d = Daemon(tmp / "data", extra_env=env)
    d.data_dir.mkdir()
    d.start()
    yield d
    d.stop()


def device(daemon: Daemon, name: str) -> tuple[str, str, dict]:
    """A user ``name`` reading ``<name>/*``, with one registered FCM device:
    (api token, device token, the device as registered)."""
    api = daemon.user(name, grants={f"{name}/*": "read"}, scopes=["subscribe", "account"])
    token = fcm_token()
    with daemon.http(api) as c:
        r = c.post("/v1/devices", json={"platform": "fcm", "token": token, "app": "Example",
                                        "label": f"{name}'s phone"})  # fmt: skip
    assert r.status_code == 201, r.text
    return api, token, r.json()


def devices(daemon: Daemon, api: str) -> list[dict]:
    with daemon.http(api) as c:
        r = c.get("/v1/devices")
    assert r.status_code == 200, r.text
    return r.json()["devices"]


def deliveries(daemon: Daemon, user: str) -> list[dict]:
    with daemon.admin() as c:
        rows = c.get("/v1/deliveries", params={"limit": 500}).json()["deliveries"]
    return [r for r in rows if r["user"] == user]


def test_delivery_has_the_fcm_shape(daemon: Daemon, fcm: FakeFcm) -> None:
    api, token, dev = device(daemon, "ann")
    assert token not in str(dev) and dev["token"].endswith(token[-4:])
    ev = daemon.publish("ann/db", title="DB down", body="primary", priority="urgent",
                        category="ops", click="https://status.example",
                        image="https://img.example/graph.png", collapse_key="db",
                        actions=[{"label": "Ack", "url": "https://a.example"}],
                        expires_at="2999-01-01T00:00:00Z")  # fmt: skip
    (got,) = wait_for(lambda: fcm.received(token), message="the FCM message")
    assert fcm.token_requests and fcm.token_requests[-1]["aud"] == f"{fcm.origin}/token"
    assert got.project == fcm.project and got.access_token.startswith("ya29.")
    m = got.message
    assert m["notification"] == {"title": "DB down", "body": "primary",
                                 "image": "https://img.example/graph.png"}  # fmt: skip
    assert m["data"] == {
        "id": str(ev["id"]), "topic": "ann/db", "category": "ops", "priority": "5",
        "click": "https://status.example", "tag": "db", "sensitive": "false",
        "actions": '[{"label":"Ack","url":"https://a.example"}]',
    }  # fmt: skip
    android = m["android"]
    assert (android["priority"], android["collapse_key"], android["notification"]) == (
        "high", "db", {"tag": "db"})  # fmt: skip
    assert android["ttl"] == f"{28 * 24 * 3600}s"  # far expiry: the most FCM keeps
    headers = m["apns"]["headers"]
    assert (headers["apns-priority"], headers["apns-collapse-id"]) == ("10", "db")
    aps = m["apns"]["payload"]["aps"]
    assert aps["interruption-level"] == "time-sensitive" and aps["thread-id"] == "ann/db"
    # a low-priority event without collapse key or expiry
    daemon.publish("ann/db", title="fine again", priority="low")
    low = wait_for(lambda: fcm.received(token)[1:], message="the second message")[0].message
    # no collapse key: nothing collapses offline, but the event's tag makes a push
    # sent twice (at least once delivery) replace itself on the device
    tag = f"event-{ev['id'] + 1}"
    assert low["android"] == {"priority": "normal", "notification": {"tag": tag}}
    assert low["apns"]["headers"] == {"apns-priority": "5", "apns-push-type": "alert",
                                      "apns-collapse-id": tag}  # fmt: skip
    assert low["apns"]["payload"]["aps"]["interruption-level"] == "passive"
    assert "collapse_key" not in str(low) and low["data"]["tag"] == tag
    wait_for(lambda: {r["state"] for r in deliveries(daemon, "ann")} == {"sent"})
    with daemon.http(api) as c:
        assert c.get("/v1/stats").json()["by_channel"]["fcm"]["sent"] == 2
    assert token not in daemon.log()


def test_sensitive_event_sends_the_generic_line(daemon: Daemon, fcm: FakeFcm) -> None:
    _, token, _ = device(daemon, "sid")
    ev = daemon.publish("sid/hr", title="Salary review", body="Bob: 5000", category="hr",
                        sensitive=True, click="https://hr.example/bob",
                        image="https://hr.example/p.png",
                        actions=[{"label": "Approve", "url": "https://hr.example/ok"}])  # fmt: skip
    (got,) = wait_for(lambda: fcm.received(token), message="the FCM message")
    m = got.message
    assert m["notification"] == {"title": "New notification in hr"}
    assert m["data"] == {"id": str(ev["id"]), "category": "hr", "priority": "3",
                         "tag": f"event-{ev['id']}", "sensitive": "true",
                         "click": f"https://notify.example/#event-{ev['id']}"}  # fmt: skip
    seen = str(got.body)
    for secret in ("Salary", "5000", "hr.example", "Approve", "sid/hr"):
        assert secret not in seen, secret


@pytest.mark.parametrize(
    "name,failure",
    [("gone1", Failure(404, "NOT_FOUND", error_code="UNREGISTERED")),
     ("gone2", Failure(400, "INVALID_ARGUMENT", error_code="INVALID_ARGUMENT",
                       field_violation="message.token",
                       message="The registration token is not a valid FCM registration token")),
     ("gone3", Failure(404, "NOT_FOUND", message="Requested entity was not found."))],
)  # fmt: skip
def test_gone_answers_remove_the_device(
    daemon: Daemon, fcm: FakeFcm, name: str, failure: Failure
) -> None:
    api, token, _ = device(daemon, name)
    fcm.unregister(token, failure)
    daemon.publish(f"{name}/x", title="one")
    wait_for(lambda: devices(daemon, api) == [], message="the device to be removed")
    assert [s.status for s in fcm.received(token, ok=False)] == [failure.status]  # no retry


def test_other_invalid_argument_is_permanent_but_keeps_the_device(
    daemon: Daemon, fcm: FakeFcm
) -> None:
    api, token, dev = device(daemon, "kept")
    fcm.unregister(
        token, Failure(400, "INVALID_ARGUMENT", message="Invalid value at 'message.data'")
    )
    daemon.publish("kept/x", title="one")
    (row,) = wait_for(lambda: [r for r in deliveries(daemon, "kept") if r["state"] == "dead"])
    assert row["attempts"] == 1 and "400" in row["last_error"]
    assert [d["id"] for d in devices(daemon, api)] == [dev["id"]]


@pytest.mark.parametrize(
    "name,status,grpc", [("busy1", 429, "RESOURCE_EXHAUSTED"), ("busy2", 503, "UNAVAILABLE")]
)
def test_busy_answers_are_retried_after_retry_after(
    daemon: Daemon, fcm: FakeFcm, name: str, status: int, grpc: str
) -> None:
    api, token, _ = device(daemon, name)
    fcm.unregister(token, Failure(status, grpc, retry_after="2"), times=1)
    daemon.publish(f"{name}/x", title="later")
    first = wait_for(lambda: fcm.received(token, ok=False), message="the refused send")[0]
    (row,) = wait_for(lambda: [r for r in deliveries(daemon, name) if r["last_error"]])
    assert row["state"] == "pending" and str(status) in row["last_error"]
    (ok,) = wait_for(lambda: fcm.received(token), message="the retried send")
    # the backoff alone would have retried after ~0.05 s; Retry-After asked for 2 s
    assert ok.at - first.at >= 2.0
    (row,) = wait_for(lambda: [r for r in deliveries(daemon, name) if r["state"] == "sent"])
    assert row["attempts"] == 2
    assert devices(daemon, api) != []


def test_expired_access_token_is_refreshed_once(daemon: Daemon, fcm: FakeFcm) -> None:
    api, token, _ = device(daemon, "fresh")
    daemon.publish("fresh/x", title="warm up")  # makes sure a token is cached
    wait_for(lambda: fcm.received(token), message="the first message")
    fetched = len(fcm.token_requests)
    fcm.expire_tokens()
    daemon.publish("fresh/x", title="after expiry")
    wait_for(lambda: len(fcm.received(token)) == 2, message="the message after a refresh")
    sends = fcm.received(token, ok=False)
    assert [s.status for s in sends] == [200, 401, 200]
    assert sends[1].access_token == sends[0].access_token != sends[2].access_token
    assert len(fcm.token_requests) == fetched + 1

    def sent() -> list[dict]:
        rows = [r for r in deliveries(daemon, "fresh") if r["state"] == "sent"]
        return rows if len(rows) == 2 else []

    assert [r["attempts"] for r in wait_for(sent)] == [1, 1]  # refreshed within the attempt
    assert fcm.token_errors == []


def test_message_builder_shapes_ttl_and_long_collapse_keys() -> None:
    m = MobileMessage(title="t", body="", image=None, priority=3, high=False,
                      interruption_level="active", collapse_key="k" * 100, expires_at=1000.0,
                      thread=None, sensitive=False, data={"id": "1"})  # fmt: skip
    msg = fcm_message("tok", m, now=400.0)["message"]
    assert msg["android"]["ttl"] == "600s" and msg["android"]["collapse_key"] == "k" * 100
    headers = msg["apns"]["headers"]
    assert len(headers["apns-collapse-id"]) == 64 and headers["apns-expiration"] == "1000"
    expired = fcm_message("tok", m, now=2000.0)["message"]
    assert (
        expired["android"]["ttl"] == "0s" and expired["apns"]["headers"]["apns-expiration"] == "0"
    )


def test_digest_and_account_errors_are_not_crashes(tmp_path: Path) -> None:
    """A missing key file is a permanent, readable delivery error (no secret in it)."""
    import trio

    from notifyd.config import Config
    from notifyd.core.channels import ChannelRecord, Delivery, DeliveryError
    from notifyd.core.services import Services
    from notifyd.core.sqlite.store import SQLiteStore
    from notifyd.plugins.mobile.fcm import FcmChannel

    cfg = Config(data_dir=str(tmp_path), fcm_service_account_file=str(tmp_path / "missing.json"))
    channel = FcmChannel(Services.build(cfg, SQLiteStore(tmp_path / "unused.db")))
    record = ChannelRecord(1, 1, "a", "fcm-x", "fcm", {"token": fcm_token(), "app": "A"})
    ev: dict[str, Any] = {"id": 1, "topic": "t", "title": "x", "body": "", "format": "text",
                          "priority": 3, "category": "general", "sensitive": False}  # fmt: skip

    async def main() -> None:
        with pytest.raises(DeliveryError) as info:
            await channel.send(Delivery(1, record, [ev], 1))
        assert not info.value.retryable and "fcm_service_account_file" in str(info.value)
        await channel.aclose()

    trio.run(main)
