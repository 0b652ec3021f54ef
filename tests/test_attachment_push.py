"""Attached images in pushes, end to end: one daemon (``base_url`` set) delivering to
the tests' real peers — the local Web Push service that decrypts RFC 8291
(tests/pushservice.py), the fake FCM (tests/fakefcm.py) and the fake APNs over
HTTP/2 and TLS (tests/fakeapns.py). An event whose attachment is an image, and
that has no ``image`` of its own, is pushed with the attachment's absolute URL as
its image; a sensitive event's push carries none of it; a PDF is no image; an
event's own image wins. Without ``base_url`` an upload's URL is left out (checked
on the channel's payload builders: no device could resolve a relative URL).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from fakeapns import FakeApns, write_p8
from fakefcm import FakeFcm
from pushservice import PushService, Subscription

from notifyd.core.attachments import link_signature
from notifyd.core.channels import ChannelRecord, Delivery
from notifyd.plugins.mobile.payload import build_message
from notifyd.plugins.webpush.channel import build_payload

BASE_URL = "https://notify.example"
KEY_ID, TEAM_ID, BUNDLE = "ABC123DEFG", "DEF123GHIJ", "com.example.notifyd"
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(200)
PDF = b"%PDF-1.4\n" + secrets.token_bytes(200) + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def push() -> Iterator[PushService]:
    with PushService() as ps:
        yield ps


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as fake:
        yield fake


@pytest.fixture(scope="module")
def apns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApns]:
    where = tmp_path_factory.mktemp("apns")
    key = write_p8(where / "AuthKey.p8")
    with FakeApns(where, key, key_id=KEY_ID, team_id=TEAM_ID, topic=BUNDLE) as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, fcm: FakeFcm, apns: FakeApns
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("attachpush")
    account = fcm.account(tmp / "service-account.json")
    env = {
        "NOTIFYD_BASE_URL": BASE_URL,
        "NOTIFYD_FCM_SERVICE_ACCOUNT_FILE": str(account.path),
        "NOTIFYD_FCM_ENDPOINT": fcm.origin,
        "NOTIFYD_APNS_KEY_FILE": str(apns.directory / "AuthKey.p8"),
        "NOTIFYD_APNS_KEY_ID": KEY_ID,
        "NOTIFYD_APNS_TEAM_ID": TEAM_ID,
        "NOTIFYD_APNS_TOPIC": BUNDLE,
        "NOTIFYD_APNS_ENDPOINT": apns.origin,
        "SSL_CERT_FILE": str(apns.ca.ca_file),
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.05",
    }
    d = Daemon(tmp / "data", extra_env=env)
    d.data_dir.mkdir()
    d.start()
    yield d
    d.stop()


def fcm_token() -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return secrets.token_hex(11) + ":APA91b" + "".join(secrets.choice(alphabet) for _ in range(134))


class Phone:
    """A user reading ``<name>/*`` with a browser subscription, an Android phone
    (FCM) and an iPhone (APNs)."""

    def __init__(self, daemon: Daemon, push: PushService, name: str) -> None:
        self.name = name
        token = daemon.user(
            name, grants={f"{name}/*": "read"}, scopes=["publish", "subscribe", "account"]
        )
        with daemon.http(token) as c:
            r = c.get("/v1/webpush/vapid-public-key")
            assert r.status_code == 200, r.text
            push.vapid_public_key = r.json()["public_key"]
            self.browser: Subscription = push.subscribe()
            r = c.post("/v1/webpush/subscriptions", json=self.browser.info())
            assert r.status_code == 201, r.text
            self.android = fcm_token()
            r = c.post("/v1/devices", json={"platform": "fcm", "token": self.android,
                                            "app": "Example"})  # fmt: skip
            assert r.status_code == 201, r.text
            self.iphone = secrets.token_hex(32)
            r = c.post("/v1/devices", json={"platform": "apns", "token": self.iphone,
                                            "app": BUNDLE})  # fmt: skip
            assert r.status_code == 201, r.text

    def received(
        self, push: PushService, fcm: FakeFcm, apns: FakeApns, count: int
    ) -> tuple[list[dict], list[dict], list[dict]]:
        """The first ``count`` Web Push payloads, FCM messages and APNs payloads."""

        def arrived() -> Any:
            web = [p.payload for p in push.received(self.browser)]
            android = [p.message for p in fcm.received(self.android)]
            ios = [p.payload for p in apns.delivered(self.iphone)]
            if min(len(web), len(android), len(ios)) >= count:
                return web[:count], android[:count], ios[:count]
            return None

        web, android, ios = wait_for(arrived, message=f"{count} push(es) on each device")
        return web, android, ios


def upload(daemon: Daemon, data: bytes, filename: str, content_type: str) -> dict:
    with daemon.admin() as c:
        r = c.post("/v1/attachments", params={"filename": filename}, content=data,
                   headers={"Content-Type": content_type})  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()


def test_an_attached_image_is_the_push_image(
    daemon: Daemon, push: PushService, fcm: FakeFcm, apns: FakeApns
) -> None:
    ann = Phone(daemon, push, "ann")
    image = upload(daemon, PNG, "door.png", "image/png")
    assert image["type"] == "image/png"
    daemon.publish("ann/door", title="Someone at the door", attachment={"id": image["id"]})
    (web,), (android,), (ios,) = ann.received(push, fcm, apns, 1)
    # a link signed for this file: the phone fetches it without credentials
    url = web["image"]
    assert url.startswith(f"{BASE_URL}/v1/attachments/{image['id']}?sig=")
    assert android["notification"]["image"] == url == ios["image"]
    local = daemon.url + url.removeprefix(BASE_URL)
    got = httpx.get(local, timeout=10)  # no credentials at all
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["x-content-type-options"] == "nosniff"
    # the bare URL, another file's signature or a forged one: 404, as for any stranger
    assert httpx.get(local.split("?")[0], timeout=10).status_code == 404
    forged = local[:-4] + ("AAAA" if not local.endswith("AAAA") else "BBBB")
    assert httpx.get(forged, timeout=10).status_code == 404
    other = upload(daemon, PNG, "other.png", "image/png")
    stolen = f"{daemon.url}/v1/attachments/{other['id']}?{url.split('?')[1]}"
    assert httpx.get(stolen, timeout=10).status_code == 404

    # a PDF is no picture; an event's own image wins over an attached one
    pdf = upload(daemon, PDF, "report.pdf", "application/pdf")
    report = daemon.publish("ann/reports", title="Weekly report", attachment={"id": pdf["id"]})
    second = upload(daemon, PNG, "graph.png", "image/png")
    graph = daemon.publish("ann/graphs", title="Graph", image="https://img.example/own.png",
                           attachment={"id": second["id"]})  # fmt: skip
    web, android, ios = ann.received(push, fcm, apns, 3)
    # deliveries run concurrently: pick each push by its event id
    by_id = {
        str(event_id): (
            next(p for p in web if str(p["id"]) == str(event_id)),
            next(m for m in android if m["data"]["id"] == str(event_id)),
            next(p for p in ios if p["id"] == str(event_id)),
        )
        for event_id in (report["id"], graph["id"])
    }
    w, a, i = by_id[str(report["id"])]
    assert w["image"] is None and "image" not in a["notification"] and "image" not in i
    w, a, i = by_id[str(graph["id"])]
    own = "https://img.example/own.png"
    assert (w["image"], a["notification"]["image"], i["image"]) == (own, own, own)


def test_a_sensitive_events_attached_image_is_not_pushed(
    daemon: Daemon, push: PushService, fcm: FakeFcm, apns: FakeApns
) -> None:
    bea = Phone(daemon, push, "bea")
    image = upload(daemon, PNG, "payslip.png", "image/png")
    daemon.publish("bea/hr", title="Payslip", body="Bob: 5000", category="hr", sensitive=True,
                   attachment={"id": image["id"]})  # fmt: skip
    (web,), (android,), (ios,) = bea.received(push, fcm, apns, 1)
    assert web["title"] == "New notification in hr" and web["image"] is None
    assert android["notification"] == {"title": "New notification in hr"}
    assert "image" not in ios
    everything = repr((web, android, ios))
    assert image["id"] not in everything and "payslip" not in everything


EXPIRES = "2999-01-01T00:00:00.000Z"


def _delivery(base_url: str, key: bytes = b"", **event: Any) -> Delivery:
    ev = {
        "id": 9, "topic": "cams/door", "title": "Door", "body": "", "format": "text",
        "priority": 3, "category": "general", "tags": [], "click": None, "icon": None,
        "image": None, "actions": [], "sensitive": False, "collapse_key": None,
        "deliver_at": None, "expires_at": None, "created_at": "",
        "attachment": {"id": "AbCdEfGhIjKl", "name": "door.jpg", "type": "image/jpeg",
                       "size": 10, "expires_at": EXPIRES, "url": "/v1/attachments/AbCdEfGhIjKl"},
    }  # fmt: skip
    record = ChannelRecord(1, 1, "alice", "x", "webpush", {})
    return Delivery(1, record, [{**ev, **event}], 1, base_url, link_key=key)


def test_payload_builders_need_base_url_for_uploads() -> None:
    key = b"k" * 32
    with_base = _delivery(BASE_URL + "/", key)
    sig = link_signature(key, "AbCdEfGhIjKl", EXPIRES)
    signed = f"{BASE_URL}/v1/attachments/AbCdEfGhIjKl?sig={sig}"
    assert build_payload(with_base)["image"] == signed == build_message(with_base).image
    # no base_url: a relative URL means nothing on a phone; leave it out (no key: too)
    without = _delivery("", key)
    assert build_payload(without)["image"] is None and build_message(without).image is None
    assert build_payload(_delivery(BASE_URL))["image"] is None
    # an external file is its own absolute URL (https only), whatever base_url says
    external = {"id": None, "name": "cam.webp", "type": "image/webp", "size": None,
                "expires_at": None, "url": "https://cams.example/cam.webp"}  # fmt: skip
    assert build_payload(_delivery("", attachment=external))["image"] == external["url"]
    plain = {**external, "url": "http://cams.example/cam.webp"}
    assert build_message(_delivery("", attachment=plain)).image is None
    # a digest has no single picture
    two = _delivery(BASE_URL, key)
    two.events.append({**two.events[0], "id": 10})
    assert build_payload(two)["image"] is None and build_message(two).image is None
