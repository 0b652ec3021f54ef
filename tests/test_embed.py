"""The ``<notifyd-inbox>`` component (``/embed/notifyd-inbox.js``) on another
origin's page, in headless Chromium against a real daemon.

An "application" is a small HTTP server on 127.0.0.1 (another port, so another
origin, listed in ``cors_origins``): its page imports the component from the daemon
and hands it a ``tokenProvider`` that fetches a token from the application's own
``/token`` endpoint, as a real backend would: an ``nfy_`` token, or a short-lived
HS256 JWT the application signs with a secret it shares with notifyd. A second application server on yet
another port is not listed: its pages cannot read the API. One daemon, one browser
and the two application servers serve the whole module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from browser import (
    ARTIFACTS,
    CHROMIUM,
    axe_violations,
    checked_context,
)
from conftest import Daemon, free_port, wait_for
from joserfc import jwt
from joserfc.jwk import OctKey
from playwright.sync_api import Browser, BrowserContext, Page, expect

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"browser tests need Debian's chromium at {CHROMIUM}"
)

HOST_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="color-scheme" content="light dark">
<title>Acme app</title></head>
<body>
<header><p>Acme</p>
<notifyd-inbox id="inbox" server="{server}" topics="{topics}" {theme}></notifyd-inbox></header>
<main><h1>Dashboard</h1><p>The application's own page.</p></main>
<script type="module" src="/host.js"></script>
</body>
</html>
"""

# The host page's code: import the component from notifyd, give it a token
# provider, and note what the tests measure.
HOST_SCRIPT = """
import "{server}/embed/notifyd-inbox.js";
window.providerCalls = 0;
window.shown = {{}};
window.unreadChanges = [];
window.statuses = [];
const inbox = document.getElementById("inbox");
inbox.addEventListener("notifyd-notification", (e) => {{ window.shown[e.detail.event.id] = Date.now(); }});
inbox.addEventListener("notifyd-unread-change", (e) => window.unreadChanges.push(e.detail.count));
inbox.addEventListener("notifyd-status", (e) => window.statuses.push(e.detail.status));
inbox.tokenProvider = async () => {{
  window.providerCalls += 1;
  const response = await fetch("/token" + location.search);
  return response.status === 204 ? null : response.text();
}};
"""


@dataclass
class App:
    """An application server: its page, and the token its backend hands out per user."""

    server: ThreadingHTTPServer
    daemon_url: str
    #: user name → a function returning a fresh token for them
    tokens: dict[str, Callable[[], str]] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page_url(self, user: str, topics: str = "", theme: str = "") -> str:
        return f"{self.origin}/?user={user}&topics={topics}&theme={theme}"


def serve_app(daemon_url: str, port: int = 0) -> App:
    """An application server on ``port`` (any free one by default), in a thread."""
    app: App

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/":
                theme = f'theme="{query["theme"]}"' if query.get("theme") else ""
                body = HOST_PAGE.format(
                    server=daemon_url, topics=query.get("topics", ""), theme=theme
                )
                self.answer(200, "text/html", body)
            elif url.path == "/host.js":
                self.answer(200, "text/javascript", HOST_SCRIPT.format(server=daemon_url))
            elif url.path == "/token":
                mint = app.tokens.get(query.get("user", ""))
                self.answer(204, "text/plain", "") if mint is None else self.answer(
                    200, "text/plain", mint()
                )
            else:
                self.answer(404, "text/plain", "not found")

        def answer(self, status: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind + "; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    app = App(server, daemon_url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app


APP_PORT = free_port()
#: the application signs its users' tokens with a secret it shares with notifyd
SECRET = b"an-hs256-secret-of-the-application-0123456789"
ISSUER, AUDIENCE = "https://app.example.test", "notifyd"
#: how long the application's JWTs live: short, so that the test sees them renewed
JWT_SECONDS = 3


def mint(user: str, *, lifetime: float = JWT_SECONDS) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + lifetime}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(SECRET))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("embed")
    (root / "jwt.secret").write_bytes(SECRET + b"\n")
    d = Daemon(
        root / "data",
        extra_env={
            "NOTIFYD_CORS_ORIGINS": f"http://127.0.0.1:{APP_PORT}",
            "NOTIFYD_JWT_ISSUER": ISSUER,
            "NOTIFYD_JWT_AUDIENCE": AUDIENCE,
            "NOTIFYD_JWT_SECRET_FILE": str(root / "jwt.secret"),
            "NOTIFYD_JWT_LEEWAY_SECONDS": "0",
            "NOTIFYD_DEFAULT_GRANTS": "user/{user}/*:read",
        },
    )
    d.data_dir.mkdir()
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture(scope="module")
def app(daemon: Daemon) -> Iterator[App]:
    a = serve_app(daemon.url, APP_PORT)  # the origin the daemon lists
    yield a
    a.server.shutdown()
    a.server.server_close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    with checked_context(browser, viewport={"width": 1000, "height": 700}) as ctx:
        yield ctx


@dataclass
class Person:
    name: str
    #: the application backend's publishing token (writes user/*)
    backend: str
    #: another credential of the same user (another device, the main page)
    other: str

    def topic(self, leaf: str = "news") -> str:
        return f"user/{self.name}/{leaf}"


_people = iter(range(1, 1000))


def person(daemon: Daemon, app: App) -> Person:
    """A user who may read ``user/<name>/*``, with a token the application's
    ``/token`` hands to the component and another one for "elsewhere"."""
    name = f"ann{next(_people)}"
    component = daemon.user(name, grants={f"user/{name}/*": "read"}, scopes=["subscribe"])
    other = daemon.user(name)
    backend = daemon.user(f"backend-{name}", grants={"user/*": "write"}, scopes=["publish"])
    app.tokens[name] = lambda: component
    return Person(name, backend, other)


def publish(daemon: Daemon, who: Person, **fields: Any) -> dict[str, Any]:
    """What the application's backend does: publish to the user's topic with its own token."""
    fields.setdefault("topic", who.topic())
    with daemon.http(who.backend) as c:
        r = c.post("/v1/events", json=fields)
        assert r.status_code == 201, r.text
        return r.json()


def api(daemon: Daemon, token: str, method: str, path: str, **kw: Any) -> Any:
    with daemon.http(token) as c:
        r = c.request(method, path, **kw)
        assert r.is_success, r.text
        return r.json()


def item(page: Page, event_id: int):
    # Playwright's CSS locators pierce open shadow roots
    return page.locator(f'notifyd-inbox li.item[data-id="{event_id}"]')


def open_page(context: BrowserContext, app: App, who: Person, **kw: str) -> Page:
    page = context.new_page()
    page.goto(app.page_url(who.name, **kw))
    page.wait_for_function("document.getElementById('inbox').dataset.status === 'live'")
    return page


def test_live_inbox_on_another_origin(context: BrowserContext, daemon: Daemon, app: App) -> None:
    who = person(daemon, app)
    old = publish(daemon, who, title="Earlier", body="from before the page opened")
    page = open_page(context, app, who, topics=f"user/{who.name}/*")
    bell = page.get_by_role("button", name="Notifications, 1 unread")
    expect(bell).to_be_visible()
    expect(page.locator("notifyd-inbox .badge")).to_have_text("1")

    # a new event shows up live; the time from publish to display is measured
    started = time.time() * 1000
    ev = publish(
        daemon,
        who,
        title="Build passed",
        body="**main** is *green*",
        format="markdown",
        click="https://ci.example.org/run/1",
        actions=[{"label": "Open run", "url": "https://ci.example.org/run/1"}],
    )
    shown = wait_for(
        lambda: page.evaluate(f"window.shown[{ev['id']}]"), timeout=10, message="the live event"
    )
    latency = shown - started
    print(f"\npublish → shown in the component on another origin: {latency:.0f} ms")
    (ARTIFACTS / "embed-latency.txt").parent.mkdir(exist_ok=True)
    (ARTIFACTS / "embed-latency.txt").write_text(f"{latency:.0f} ms\n")
    expect(page.locator("notifyd-inbox .badge")).to_have_text("2")
    expect(page.get_by_role("button", name="Notifications, 2 unread")).to_be_visible()

    # the panel: focus moves in, Escape brings it back to the bell
    bell = page.get_by_role("button", name="Notifications, 2 unread")
    bell.click()
    expect(bell).to_have_attribute("aria-expanded", "true")
    dialog = page.get_by_role("dialog", name="Notifications")
    expect(dialog).to_be_visible()
    expect(item(page, ev["id"])).to_be_focused()
    # text only: the markdown marks are gone, nothing was rendered as HTML
    expect(item(page, ev["id"]).locator(".body")).to_have_text("main is *green*")
    link = item(page, ev["id"]).get_by_role("link", name="Build passed")
    expect(link).to_have_attribute("href", "https://ci.example.org/run/1")
    expect(item(page, ev["id"]).get_by_role("link", name="Open run")).to_be_visible()
    page.keyboard.press("ArrowDown")
    expect(item(page, old["id"])).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(bell).to_be_focused()
    expect(bell).to_have_attribute("aria-expanded", "false")

    # read elsewhere (another credential of the same user): the badge follows
    api(daemon, who.other, "POST", f"/v1/events/{ev['id']}/read")
    expect(page.locator("notifyd-inbox .badge")).to_have_text("1")
    expect(item(page, ev["id"])).to_have_attribute("data-unread", "false")
    expect(page.get_by_role("button", name="Notifications, 1 unread")).to_be_visible()
    assert page.evaluate("window.unreadChanges").count(1) >= 1

    # archive and mark all read from the component reach the server
    page.get_by_role("button", name="Notifications, 1 unread").click()
    item(page, ev["id"]).get_by_role("button", name="Archive").click()
    expect(item(page, ev["id"])).to_have_count(0)
    wait_for(
        lambda: api(daemon, who.other, "GET", f"/v1/events/{ev['id']}")["archived"],
        message="the archive to reach the server",
    )
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("notifyd-inbox .badge")).to_be_hidden()
    expect(page.get_by_role("button", name="Notifications, no unread")).to_be_visible()
    count = api(daemon, who.other, "GET", "/v1/inbox/count", params={"unread": "true"})
    assert count == {"count": 0}
    assert api(daemon, who.other, "GET", f"/v1/events/{old['id']}")["read"] is True


def test_accessible_in_light_and_dark(context: BrowserContext, daemon: Daemon, app: App) -> None:
    who = person(daemon, app)
    publish(daemon, who, title="Deploy finished", body="v1.2.3 is live",
            actions=[{"label": "Roll back", "url": "https://deploy.example.org/rb", "method": "POST"}])  # fmt: skip
    publish(daemon, who, title="Disk almost full", priority="high")
    ARTIFACTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        page = context.new_page()
        page.emulate_media(color_scheme=scheme)
        page.goto(app.page_url(who.name))
        page.wait_for_function("document.getElementById('inbox').dataset.status === 'live'")
        page.get_by_role("button", name="Notifications, 2 unread").click()
        expect(page.get_by_role("dialog", name="Notifications")).to_be_visible()
        assert axe_violations(page) == [], scheme
        # docs/img/embed-{light,dark}.png come from here
        page.locator("notifyd-inbox").evaluate(
            "el => el.closest('header').style.minHeight = '26rem'"
        )
        page.screenshot(
            path=ARTIFACTS / f"embed-{scheme}.png",
            clip={"x": 0, "y": 0, "width": 480, "height": 440},
        )
        background = page.evaluate(
            "getComputedStyle(document.querySelector('notifyd-inbox').shadowRoot"
            ".querySelector('.panel')).backgroundColor"
        )
        assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(17, 24, 39)")
        page.close()
    # the theme attribute forces one scheme whatever the system's
    page = context.new_page()
    page.emulate_media(color_scheme="light")
    page.goto(app.page_url(who.name, theme="dark"))
    page.wait_for_function("document.getElementById('inbox').dataset.status === 'live'")
    panel = "document.querySelector('notifyd-inbox').shadowRoot.querySelector('.panel')"
    assert page.evaluate(f"getComputedStyle({panel}).backgroundColor") == "rgb(17, 24, 39)"


def test_short_lived_jwts_are_renewed(context: BrowserContext, daemon: Daemon, app: App) -> None:
    """The application hands out JWTs that live 3 s (notifyd allows no leeway here):
    the component asks its provider for the next one before each expires and resumes
    the stream with since=, so an event published after the first token expired
    arrives. The user is created on first sight, reading user/<name>/* through
    default_grants."""
    name = f"jwt{next(_people)}"
    issued: list[str] = []

    def fresh() -> str:
        issued.append(mint(name))
        return issued[-1]

    app.tokens[name] = fresh
    backend = daemon.user(f"backend-{name}", grants={"user/*": "write"}, scopes=["publish"])
    who = Person(name, backend, other="")
    page = open_page(context, app, who)
    first = issued[0]
    first_exp = jwt.decode(first, OctKey.import_key(SECRET)).claims["exp"]
    early = publish(daemon, who, title="While the first token holds")
    expect(item(page, early["id"])).to_be_attached()
    # the first token runs out; by then the provider was asked for the next one
    wait_for(lambda: time.time() > first_exp + 0.5, timeout=JWT_SECONDS + 5, message="expiry")
    with daemon.http(first) as c:
        assert c.get("/v1/events").status_code == 401  # it is really expired
    assert page.evaluate("window.providerCalls") >= 2
    late = publish(daemon, who, title="After the first token expired")
    expect(item(page, late["id"])).to_be_attached(timeout=10_000)
    expect(page.locator("notifyd-inbox .badge")).to_have_text("2")
    assert page.evaluate("document.getElementById('inbox').dataset.status") == "live"
    # the stream was opened again with the new token
    assert page.evaluate("window.statuses").count("live") >= 2


def test_a_refused_token_is_replaced(context: BrowserContext, daemon: Daemon, app: App) -> None:
    """A 401 (here: the token was revoked) makes the component ask its provider for
    a new token and resume with since=, so an event published meanwhile arrives."""
    who = person(daemon, app)
    with daemon.admin() as c:
        first = c.post("/v1/tokens", json={"user": who.name, "scopes": ["subscribe"]}).json()
        second = c.post("/v1/tokens", json={"user": who.name, "scopes": ["subscribe"]}).json()
    current = {"token": first["token"]}
    app.tokens[who.name] = lambda: current["token"]
    page = open_page(context, app, who)
    assert page.evaluate("window.providerCalls") == 1
    current["token"] = second["token"]
    with daemon.admin() as c:
        assert c.delete(f"/v1/tokens/{first['id']}").status_code == 204
    ev = publish(daemon, who, title="After the token changed")
    expect(item(page, ev["id"])).to_be_attached(timeout=15_000)
    assert page.evaluate("window.providerCalls") >= 2


def test_signed_out_and_foreign_origins(context: BrowserContext, daemon: Daemon, app: App) -> None:
    # no token from the provider: a quiet "not signed in", no error
    page = context.new_page()
    page.goto(app.page_url("nobody"))
    expect(page.get_by_role("button", name="Notifications, not signed in")).to_be_visible()
    page.get_by_role("button", name="Notifications, not signed in").click()
    expect(page.get_by_text("Not signed in.")).to_be_visible()

    # an origin not in cors_origins cannot read the API, even with a valid token
    who = person(daemon, app)
    other = serve_app(daemon.url)
    try:
        page = context.new_page()
        page.goto(f"{other.origin}/nothing-here")
        token = app.tokens[who.name]()
        result = page.evaluate(
            """async ([url, token]) => {
                try {
                    const r = await fetch(url, {headers: {Authorization: `Bearer ${token}`}});
                    return `read ${r.status}`;
                } catch (err) { return `failed: ${err.name}`; }
            }""",
            [f"{daemon.url}/v1/events", token],
        )
        assert result == "failed: TypeError", result
        # the same fetch from the listed origin works
        page = context.new_page()
        page.goto(f"{app.origin}/nothing-here")
        result = page.evaluate(
            "async ([url, token]) => (await fetch(url, {headers: {Authorization: `Bearer ${token}`}})).status",
            [f"{daemon.url}/v1/events", token],
        )
        assert result == 200
    finally:
        other.server.shutdown()
        other.server.server_close()
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200
