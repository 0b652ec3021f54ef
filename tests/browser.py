"""Helpers for the browser tests of the notification center (tests/test_web.py).

The browser is Debian's chromium driven by Playwright (no browser download);
axe-core comes from ``.cache/npm`` where ``make test`` installs it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
)

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "test-artifacts"
NOTIFYD = Path(sys.executable).parent / "notifyd"
PASSWORD = "correct-horse-battery"

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

_names = itertools.count(1)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)


@contextmanager
def checked_context(browser: Browser, **options: Any) -> Iterator[BrowserContext]:
    """A browser context that fails the test if a page logs an error or throws."""
    ctx = browser.new_context(**options)
    errors = watch_errors(ctx)
    yield ctx
    ctx.close()
    assert not errors, errors


def watch_errors(context: BrowserContext) -> list[str]:
    """Collect, from every page of the context, uncaught errors and anything the
    Content-Security-Policy refused (expected network failures are not errors)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Uncaught" in message.text:
            errors.append(f"console: {message.text}")

    def watch(page: Page) -> None:
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.on("console", on_console)

    context.on("page", watch)
    return errors


def axe_script() -> Path:
    """The axe-core bundle, or a test failure that says how to get it."""
    if not AXE.is_file():
        pytest.fail(
            f"axe-core is missing ({AXE.relative_to(REPO)}): run `make test`, or "
            "`npm install --prefix .cache/npm axe-core@4`",
            pytrace=False,
        )
    return AXE


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script()))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@dataclass
class WebUser:
    """A user with a password, allowed to read the topics under ``prefix/`` (all
    topics when the prefix is empty)."""

    name: str
    password: str
    token: str
    daemon: Daemon
    prefix: str

    def topic(self, leaf: str = "alerts") -> str:
        return f"{self.prefix}/{leaf}" if self.prefix else leaf

    def http(self) -> httpx.Client:
        return self.daemon.http(self.token)

    def event(self, event_id: int) -> dict[str, Any]:
        """The event with this user's read state, as the server has it."""
        with self.http() as c:
            r = c.get(f"/v1/events/{event_id}")
            r.raise_for_status()
            return r.json()


def new_user(d: Daemon, label: str, *, exact: bool = False, every_topic: bool = False) -> WebUser:
    """A user named after ``label`` (made unique unless ``exact``), who may read the
    topics under its name, or ``every_topic``."""
    name = label if exact else f"{label}-{next(_names)}"
    prefix = "" if every_topic else name
    with d.admin() as c:
        r = c.post("/v1/users", json={"name": name, "role": "user", "password": PASSWORD})
        assert r.status_code == 201, r.text
        pattern = f"{prefix}/*" if prefix else "*"
        r = c.post("/v1/acl", json={"user": name, "pattern": pattern, "permission": "read"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/tokens", json={"user": name})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    return WebUser(name, PASSWORD, token, d, prefix)


def publish(d: Daemon, topic: str, **fields: Any) -> dict[str, Any]:
    """Publish as the admin (over the socket); returns the stored event."""
    with d.admin() as c:
        r = c.post("/v1/events", json={"topic": topic, **fields})
        assert r.status_code == 201, r.text
        return r.json()


def cli_send(d: Daemon, topic: str, body: str, *args: str) -> int:
    """``notifyd send`` as a user would run it; returns the new event id."""
    out = subprocess.run(
        [str(NOTIFYD), "send", "--socket", str(d.socket), topic, body, *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def sign_in(page: Page, user: WebUser) -> None:
    """Open the page and sign in through the form; returns when the inbox is live."""
    page.goto("/")
    page.get_by_label("Username").fill(user.name)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Live")


def card(page: Page, event_id: int):
    return page.locator(f'li.event[data-id="{event_id}"]')


def service_worker_ready(page: Page) -> None:
    """Wait until the service worker is active and controls the page."""
    page.evaluate("navigator.serviceWorker.ready")
    page.wait_for_function("navigator.serviceWorker.controller !== null")


def notifications(page: Page) -> list[dict[str, Any]]:
    """The notifications the service worker is showing."""
    return page.evaluate(
        """navigator.serviceWorker.ready
            .then((reg) => reg.getNotifications())
            .then((list) => list.map((n) => ({
                title: n.title, body: n.body, tag: n.tag, data: n.data,
                actions: n.actions.map((a) => a.title),
            })))"""
    )


# Headless chromium cannot subscribe to a real push service (incognito contexts
# refuse, and there is no network to reach one), so the page's PushManager is
# replaced by one that hands out the subscription of the tests' local push
# service (tests/pushservice.py). Everything else — permission, the VAPID key,
# registering with the daemon, the daemon's encrypted push — is real.
_FAKE_PUSH_MANAGER = """
(() => {
  const info = %s;
  let current = null;
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  PushManager.prototype.subscribe = async function (options) {
    const key = options.applicationServerKey;
    const bytes = key instanceof ArrayBuffer ? key : key.buffer.slice(key.byteOffset, key.byteOffset + key.byteLength);
    window.__pushOptions = { userVisibleOnly: options.userVisibleOnly, applicationServerKey: b64url(bytes) };
    current = {
      endpoint: info.endpoint,
      expirationTime: null,
      options: { userVisibleOnly: true, applicationServerKey: bytes },
      toJSON: () => info,
      unsubscribe: async () => { current = null; return true; },
    };
    return current;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""


def fake_push_manager(context: BrowserContext, subscription_info: dict[str, Any]) -> None:
    context.add_init_script(_FAKE_PUSH_MANAGER % json.dumps(subscription_info))


def deliver_push(context: BrowserContext, page: Page, origin: str, payload: dict) -> None:
    """Hand a push message to the page's service worker through the DevTools protocol."""
    cdp = context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    cdp.send("ServiceWorker.enable")
    scope = origin + "/"

    def registered() -> list[dict[str, Any]]:
        page.evaluate("0")  # Playwright delivers CDP events while it talks to the browser
        return [r for r in registrations if r["scopeURL"] == scope and not r.get("isDeleted")]

    matching = wait_for(registered, timeout=5, message=f"a service worker registration for {scope}")
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": origin,
            "registrationId": matching[-1]["registrationId"],
            "data": json.dumps(payload),
        },
    )
    cdp.detach()
