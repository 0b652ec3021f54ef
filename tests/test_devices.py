"""``/v1/devices`` and ``notifyd devices``: registering phones' push tokens.

One daemon for the module, with FCM configured (a key file; nothing is sent
here) and APNs not, and at most 4 channels per user."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import Daemon
from fakefcm import FakeFcm

LIMIT = 4


def fcm_token() -> str:
    return secrets.token_urlsafe(120)[:150] + ":APA91b"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("devices")
    with FakeFcm() as fake:
        account = fake.account(tmp / "service-account.json")
    env = {
        "NOTIFYD_FCM_SERVICE_ACCOUNT_FILE": str(account.path),
        "NOTIFYD_MAX_CHANNELS_PER_USER": str(LIMIT),
    }
    d = Daemon(tmp / "data", extra_env=env)
    d.data_dir.mkdir()
    d.start()
    yield d
    d.stop()


def user(daemon: Daemon, name: str, scopes: list[str] | None = None) -> str:
    return daemon.user(name, grants={f"{name}/*": "read"},
                       scopes=scopes or ["subscribe", "account"])  # fmt: skip


def register(daemon: Daemon, api: str, expect: int = 201, **body: str) -> dict:
    body = {"platform": "fcm", "app": "Example", **body}
    with daemon.http(api) as c:
        r = c.post("/v1/devices", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def listed(daemon: Daemon, api: str) -> list[dict]:
    with daemon.http(api) as c:
        r = c.get("/v1/devices")
    assert r.status_code == 200, r.text
    return r.json()["devices"]


def test_registration_is_idempotent_and_masked(daemon: Daemon) -> None:
    api = user(daemon, "ida")
    token = fcm_token()
    made = register(daemon, api, token=token, label="Pixel 8")
    assert made["platform"] == "fcm" and made["app"] == "Example" and made["label"] == "Pixel 8"
    assert made["name"].startswith("pixel-8-")
    assert made["token"] == f"{token[:6]}…{token[-4:]}"
    again = register(daemon, api, expect=200, token=token, label="Pixel 8")
    assert again["id"] == made["id"]
    assert [d["id"] for d in listed(daemon, api)] == [made["id"]]
    renamed = register(daemon, api, expect=200, token=token, label="Work phone")
    assert renamed["label"] == "Work phone" and len(listed(daemon, api)) == 1
    # the device is a channel for preferences and delivery
    with daemon.http(api) as c:
        chans = c.get("/v1/channels").json()["channels"]
    assert [(ch["kind"], ch["name"]) for ch in chans] == [("fcm", renamed["name"])]
    everything = repr(listed(daemon, api)) + repr(chans)
    assert token not in everything and token[10:40] not in everything
    apns = "A1" * 32  # upper case is stored in lower case
    with daemon.http(api) as c:
        r = c.post(
            "/v1/devices", json={"platform": "apns", "token": apns, "app": "com.example.app"}
        )
    # no APNs key on this server: the token is fine, the platform is not served
    assert r.status_code == 409 and r.json()["error"]["code"] == "platform_not_configured"
    assert r.json()["error"]["field"] == "platform" and "apns_key_file" in r.text


def test_a_token_moves_to_the_last_user(daemon: Daemon) -> None:
    alice, bob = user(daemon, "mo_a"), user(daemon, "mo_b")
    token = fcm_token()
    register(daemon, alice, token=token)
    keep = register(daemon, alice, token=fcm_token())
    moved = register(daemon, bob, token=token)  # new for bob: 201
    assert [d["id"] for d in listed(daemon, alice)] == [keep["id"]]
    assert [d["id"] for d in listed(daemon, bob)] == [moved["id"]]


def test_delete_only_own_devices(daemon: Daemon) -> None:
    alice, bob = user(daemon, "de_a"), user(daemon, "de_b")
    dev = register(daemon, alice, token=fcm_token())
    with daemon.http(bob) as c:
        r = c.delete(f"/v1/devices/{dev['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with daemon.http(alice) as c:
        assert c.delete(f"/v1/devices/{dev['id']}").status_code == 204
        assert c.delete(f"/v1/devices/{dev['id']}").status_code == 404
        assert c.delete("/v1/devices/not-a-number").status_code == 422
    assert listed(daemon, alice) == []


def test_account_scope_is_needed(daemon: Daemon) -> None:
    narrow = user(daemon, "sc", scopes=["subscribe"])
    with daemon.http(narrow) as c:
        r = c.post("/v1/devices", json={"platform": "fcm", "token": fcm_token(), "app": "A"})
        assert r.status_code == 403 and "'account' scope" in r.json()["error"]["message"]
        assert c.get("/v1/devices").status_code == 200  # reading is fine
    with daemon.http() as c:
        assert c.get("/v1/devices").status_code == 401


def test_at_most_max_channels_per_user(daemon: Daemon) -> None:
    api = user(daemon, "lim")
    tokens = [fcm_token() for _ in range(LIMIT)]
    for token in tokens:
        register(daemon, api, token=token)
    with daemon.http(api) as c:
        r = c.post("/v1/devices", json={"platform": "fcm", "token": fcm_token(), "app": "A"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_channels"
    register(daemon, api, expect=200, token=tokens[0])  # known tokens still answer
    # a token of another user does not move into a full account
    other = user(daemon, "lim_b")
    theirs = fcm_token()
    register(daemon, other, token=theirs)
    with daemon.http(api) as c:
        r = c.post("/v1/devices", json={"platform": "fcm", "token": theirs, "app": "A"})
    assert r.status_code == 409 and len(listed(daemon, other)) == 1


@pytest.mark.parametrize(
    "body,field",
    [({"platform": "web"}, "platform"),
     ({"token": "short"}, "token"),
     ({"token": "x" * 100 + "/"}, "token"),
     ({"token": "a" * 4097}, "token"),
     ({"platform": "apns", "token": "ab" * 31, "app": "com.example.app"}, "token"),
     ({"platform": "apns", "token": "g" * 64, "app": "com.example.app"}, "token"),
     ({"platform": "apns", "token": "a" * 65, "app": "com.example.app"}, "token"),
     ({"platform": "apns", "token": "ab" * 32, "app": "My App"}, "app"),
     ({"app": ""}, "app"),
     ({"app": "x" * 129}, "app"),
     ({"label": "a\u0000b"}, "label"),
     ({"label": "l" * 65}, "label"),
     ({"token": 12345}, "token"),
     ({"platform": None}, "platform")],
)  # fmt: skip
def test_bad_registrations_are_422_naming_the_field(daemon: Daemon, body: dict, field: str) -> None:
    api = user(daemon, "val")
    full = {"platform": "fcm", "token": fcm_token(), "app": "Example", **body}
    with daemon.http(api) as c:
        r = c.post("/v1/devices", json=full)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == field and err["code"] in ("invalid", "validation_error"), err
    assert listed(daemon, api) == []


def test_the_devices_command(daemon: Daemon) -> None:
    api = user(daemon, "cli")
    token = fcm_token()
    dev = register(daemon, api, token=token, label="Tablet")
    base = [sys.executable, "-m", "notifyd", "devices"]
    env = {**os.environ, "NOTIFYD_URL": daemon.url, "NOTIFYD_TOKEN": api}
    env.pop("NOTIFYD_SOCKET", None)

    def run(*args: str, **kw: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], env={**env, **kw}, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    out = run("list")
    assert out.returncode == 0, out.stderr
    assert "Tablet" in out.stdout and token[:6] in out.stdout and token not in out.stdout
    admin = run("list", "--all", "--socket", str(daemon.socket))
    assert admin.returncode == 0 and "cli" in admin.stdout and "Tablet" in admin.stdout
    gone = run("remove", str(dev["id"]))
    assert gone.returncode == 0 and f"removed device {dev['id']}" in gone.stdout
    assert listed(daemon, api) == []
    missing = run("remove", str(dev["id"]))
    assert missing.returncode != 0 and str(dev["id"]) in missing.stderr


def test_the_web_page_lists_and_removes_devices(daemon: Daemon) -> None:
    from browser import launch, new_user, sign_in, watch_errors
    from playwright.sync_api import expect, sync_playwright

    person = new_user(daemon, "webdev")
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json={"user": person.name, "scopes": ["subscribe", "account"]})
        api = r.json()["token"]
    token = fcm_token()
    dev = register(daemon, api, token=token, label="Field tablet", app="Example Ops")
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            context = browser.new_context(base_url=daemon.url)
            errors = watch_errors(context)
            page = context.new_page()
            sign_in(page, person)
            page.get_by_role("link", name="Channels", exact=True).click()
            item = page.locator(f'#subscription-list li[data-id="{dev["id"]}"]')
            expect(item).to_contain_text("Field tablet")
            expect(item).to_contain_text(f"Example Ops · token {token[:6]}…{token[-4:]}")
            assert token not in page.content()
            # listed with the devices, not again among the channels
            expect(page.locator("#channel-list")).not_to_contain_text(dev["name"])
            item.get_by_role("button", name="Remove").click()
            page.get_by_role("button", name=f"Yes, remove Field tablet ({dev['name']})").click()
            expect(page.locator("#subscription-list")).to_have_text(
                "No device receives push notifications."
            )
            assert errors == []
        finally:
            browser.close()
    assert listed(daemon, api) == []


def test_the_tui_names_devices_by_label_and_app_never_the_full_token(daemon: Daemon) -> None:
    from notifyd.tui.screens.channels import _target

    api = user(daemon, "tui")
    token = fcm_token()
    register(daemon, api, token=token, label="Pixel 8")
    with daemon.http(api) as c:
        (ch,) = c.get("/v1/channels").json()["channels"]
    assert _target(ch) == f"Pixel 8 · Example ({token[:6]}…{token[-4:]})"
