"""Single sign-on (OpenID Connect) end to end: headless Chromium, a real notifyd
and a real OpenID provider (oidc-provider-mock) on this machine.

Two daemons serve the module. ``daemon`` offers passwords and single sign-on
against ``provider``; ``sso_only`` has ``password_login = false`` and trusts
``expiring_provider``, which issues ID tokens that expired ten minutes ago and is
started only after the daemon (which must start, and explain itself, while its
provider is down).

The provider's sign-in form takes a subject (``sub``) and an Authorize button;
users and their claims are registered with ``PUT /users/<sub>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from browser import (
    CHROMIUM,
    axe_violations,
    checked_context,
    publish,
    watch_errors,
)
from conftest import Daemon, free_port, wait_for
from oidc_provider_mock import run_server_in_thread
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    expect,
)

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"browser tests need Debian's chromium at {CHROMIUM}"
    ),
    # the provider (authlib inside oidc-provider-mock) warns about its own legacy API
    pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning"),
]

CLIENT_ID = "notifyd-web"
LABEL = "Example ID"


def _config(path: Path, issuer: str, **extra: Any) -> Path:
    settings = {
        "oidc_issuer": issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_button_label": LABEL,
        "private_destinations": "everyone",  # the provider listens on 127.0.0.1
        "default_grants": ["user/{user}/*:read"],
        "group_grants": {"ops": ["ops/*:read"]},
        **extra,
    }
    lines = [
        f"{key} = {json.dumps(value)}" for key, value in settings.items() if key != "group_grants"
    ]
    lines.append("[group_grants]")
    lines += [
        f"{group} = {json.dumps(grants)}" for group, grants in settings["group_grants"].items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_daemon(tmp: Path, issuer: str, **extra: Any) -> Daemon:
    # the provider's token endpoint takes client_secret_basic only (any secret)
    secret = tmp / "client-secret"
    secret.write_text("s3cret:with/odd chars\n")
    extra.setdefault("oidc_client_secret_file", str(secret))
    d = Daemon(tmp / "data")
    d.data_dir.mkdir()
    d.extra_args = ["--config", str(_config(tmp / "notifyd.toml", issuer, **extra))]
    return d.start()


class Provider:
    """oidc-provider-mock on a fixed port; :meth:`restart` makes it a new one there
    (a new signing key, no users), as a provider rotating its keys looks."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://localhost:{self.port}"
        self._running = ExitStack()

    def start(self) -> Provider:
        self._running.enter_context(run_server_in_thread(self.port))
        return self

    def restart(self) -> None:
        self._running.close()
        self.start()


@pytest.fixture(scope="module")
def provider_server() -> Iterator[Provider]:
    server = Provider().start()
    yield server
    server._running.close()


@pytest.fixture(scope="module")
def provider(provider_server: Provider) -> str:
    """The issuer URL of a provider issuing ordinary ID tokens."""
    return provider_server.issuer


@pytest.fixture(scope="module")
def expiring_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def daemons(
    provider: str, expiring_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, Daemon]]:
    """``daemon`` and ``sso_only``, started side by side (a start takes seconds on a
    busy machine)."""
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(_start_daemon, tmp_path_factory.mktemp("oidc"), provider),
            pool.submit(_start_daemon, tmp_path_factory.mktemp("oidc-only"),
                        f"http://localhost:{expiring_port}", password_login=False),
        ]  # fmt: skip
        wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    try:
        for future in futures:
            future.result()  # raises the first failure
        yield started[0], started[1]
    finally:
        for d in started:
            d.stop()


@pytest.fixture(scope="module")
def daemon(daemons: tuple[Daemon, Daemon]) -> Daemon:
    return daemons[0]


@pytest.fixture(scope="module")
def sso_only(daemons: tuple[Daemon, Daemon]) -> Daemon:
    return daemons[1]


@pytest.fixture(scope="module")
def expiring_provider(expiring_port: int, sso_only: Daemon) -> Iterator[str]:
    """Started after ``sso_only``: every ID token it issues expired 10 minutes ago."""
    with run_server_in_thread(expiring_port, access_token_max_age=timedelta(minutes=-10)):
        yield f"http://localhost:{expiring_port}"


@pytest.fixture
def context(browser: Browser, daemon: Daemon) -> Iterator[BrowserContext]:
    with checked_context(browser, base_url=daemon.url) as ctx:
        yield ctx


def register(issuer: str, sub: str, **claims: Any) -> None:
    r = httpx.put(f"{issuer}/users/{sub}", json=claims, timeout=10)
    assert r.status_code == 204, r.text


def authorize_at_provider(page: Page, sub: str) -> None:
    """On the provider's form: sign in as ``sub``."""
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    page.locator('input[name="sub"]').fill(sub)
    page.get_by_role("button", name="Authorize").click()


def sso_button(page: Page):
    return page.get_by_role("link", name=f"Sign in with {LABEL}")


def session_status(page: Page) -> int:
    """What ``GET /v1/session`` answers this page (200 signed in, 401 not)."""
    return page.evaluate("fetch('/v1/session', {cache: 'no-store'}).then((r) => r.status)")


def session_cookies(context: BrowserContext) -> list[dict]:
    return [c for c in context.cookies() if c["name"] == "notifyd_session"]


def test_sign_in_with_the_button_then_live_events_and_group_grants(
    context: BrowserContext, daemon: Daemon, provider: str
) -> None:
    register(provider, "alice-sub", preferred_username="alice", groups=["ops", "staff"])
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_label("Username")).to_be_visible()  # passwords are on here
    button = sso_button(page)
    expect(button).to_have_attribute("href", "/v1/session/oidc/start")
    button.click()
    authorize_at_provider(page, "alice-sub")
    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    expect(page.locator("#whoami")).to_have_text("alice")
    expect(page.locator("#connection")).to_have_text("Live")
    cookie = session_cookies(context)
    assert len(cookie) == 1 and cookie[0]["sameSite"] == "Strict" and cookie[0]["httpOnly"]
    assert not [c for c in context.cookies() if c["name"] == "notifyd_oidc"]  # attempt over

    # group_grants (ops) and default_grants ({user}) apply to the session, live
    for topic, title in (("ops/db", "from the ops group"), ("user/alice/inbox", "for alice")):
        event = publish(daemon, topic, title=title)
        expect(page.locator(f'li.event[data-id="{event["id"]}"]')).to_contain_text(title)
    hidden = publish(daemon, "finance/q3", title="not for alice")
    after = publish(daemon, "user/alice/inbox", title="after the hidden one")
    expect(page.locator(f'li.event[data-id="{after["id"]}"]')).to_be_visible()
    expect(page.locator(f'li.event[data-id="{hidden["id"]}"]')).to_have_count(0)

    # signing out, then in again: the same account
    page.get_by_role("button", name="Sign out").click()
    sso_button(page).click()
    authorize_at_provider(page, "alice-sub")
    expect(page.locator("#whoami")).to_have_text("alice")
    with daemon.admin() as c:
        assert [u["name"] for u in c.get("/v1/users").json()["users"]].count("alice") == 1


def test_a_user_without_the_group_gets_only_the_default_grants(
    browser: Browser, daemon: Daemon, provider: str
) -> None:
    register(provider, "bob-sub", preferred_username="bob")
    ctx = browser.new_context(base_url=daemon.url)
    try:
        page = ctx.new_page()
        page.goto("/")
        sso_button(page).click()
        authorize_at_provider(page, "bob-sub")
        expect(page.locator("#whoami")).to_have_text("bob")
        ops = publish(daemon, "ops/db", title="ops only")
        mine = publish(daemon, "user/bob/inbox", title="bob's")
        expect(page.locator(f'li.event[data-id="{mine["id"]}"]')).to_be_visible()
        expect(page.locator(f'li.event[data-id="{ops["id"]}"]')).to_have_count(0)
        status = page.evaluate(f"fetch('/v1/events/{ops['id']}').then((r) => r.status)")
        assert status in (403, 404)
    finally:
        ctx.close()


def _callback_url(page: Page, sub: str) -> str:
    """Run the flow up to the provider's redirect back, and return that URL (with
    a real code) without letting the browser follow it."""
    held: list[str] = []

    def hold(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        held.append(answer.headers["location"])
        route.fulfill(status=200, body="held", content_type="text/plain")

    pattern = re.compile(r"/oauth2/authorize")
    page.route(pattern, hold)
    page.goto("/v1/session/oidc/start")
    authorize_at_provider(page, sub)
    expect(page.locator("body")).to_have_text("held")
    page.unroute(pattern)
    assert "/v1/session/oidc/callback?" in held[0], held
    return held[0]


def _with(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
    return f"{parts.path}?{urlencode(query)}"


def test_wrong_state_is_refused(context: BrowserContext, provider: str) -> None:
    register(provider, "carol-sub", preferred_username="carol")
    page = context.new_page()
    callback = _callback_url(page, "carol-sub")
    page.goto(_with(callback, state="not-the-state-this-browser-sent"))
    expect(page.locator("#sso-error")).to_contain_text("does not belong to this browser")
    assert "sso_error" not in page.url  # a reload does not show it again
    assert session_status(page) == 401 and not session_cookies(context)
    # without the attempt cookie (another browser) the real state is refused too
    context.clear_cookies()
    page.goto(_with(callback))
    expect(page.locator("#sso-error")).to_contain_text("does not belong to this browser")
    assert session_status(page) == 401


def test_replayed_code_is_refused(context: BrowserContext, daemon: Daemon, provider: str) -> None:
    register(provider, "dave-sub", preferred_username="dave")
    page = context.new_page()
    callback = _callback_url(page, "dave-sub")
    page.goto(_with(callback))
    expect(page.locator("#whoami")).to_have_text("dave")
    context.clear_cookies()
    # a new attempt in this browser, answered with the old (used) code
    page.goto("/v1/session/oidc/start")
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    state = parse_qs(urlsplit(page.url).query)["state"][0]
    page.goto(_with(callback, state=state))
    expect(page.locator("#sso-error")).to_contain_text("used already")
    assert session_status(page) == 401 and not session_cookies(context)
    log = daemon.log()
    assert "refused the code (invalid_grant)" in log
    sent = parse_qs(urlsplit(callback).query)
    assert sent["code"][0] not in log and sent["state"][0] not in log and state not in log


def test_wrong_nonce_is_refused(context: BrowserContext, daemon: Daemon, provider: str) -> None:
    """The provider is made to put another nonce in the ID token (the browser's
    form post to it is rewritten): the token is refused, no session."""
    register(provider, "frank-sub", preferred_username="frank")
    page = context.new_page()

    def other_nonce(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        parts = urlsplit(route.request.url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"nonce": "replayed"}
        route.continue_(url=parts._replace(query=urlencode(query)).geturl())

    page.route(re.compile(r"/oauth2/authorize"), other_nonce)
    page.goto("/")
    sso_button(page).click()
    authorize_at_provider(page, "frank-sub")
    expect(page.locator("#sso-error")).to_contain_text("could not be verified")
    assert session_status(page) == 401 and not session_cookies(context)
    assert "nonce is not this sign-in's" in daemon.log()


def test_provider_errors_come_back_as_messages(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/v1/session/oidc/start")
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    page.get_by_role("button", name="Deny").click()  # the provider answers error=access_denied
    expect(page.locator("#sso-error")).to_have_text(
        "Sign-in was cancelled at the identity provider."
    )
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert session_status(page) == 401


def test_rotated_provider_keys_are_fetched(
    context: BrowserContext, daemon: Daemon, provider_server: Provider
) -> None:
    """The provider signs with a new key (new kid) while notifyd holds its old key
    set: the unknown kid makes notifyd fetch the keys again, and the sign-in works."""
    page = context.new_page()
    page.goto("/")
    expect(sso_button(page)).to_be_visible()
    provider_server.restart()
    register(provider_server.issuer, "gina-sub", preferred_username="gina")
    sso_button(page).click()
    authorize_at_provider(page, "gina-sub")
    expect(page.locator("#whoami")).to_have_text("gina")


def test_next_must_be_a_local_path(daemon: Daemon, provider: str) -> None:
    with daemon.http() as c:
        for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example",
                    "\\\\evil.example", "evil.example", "/\t/evil.example"):  # fmt: skip
            r = c.get("/v1/session/oidc/start", params={"next": bad})
            assert r.status_code == 400, (bad, r.status_code)
            assert "location" not in r.headers and "notifyd_oidc" not in r.headers.get(
                "set-cookie", ""
            )
        r = c.get("/v1/session/oidc/start", params={"next": "/#/settings"})
        assert r.status_code == 302
        assert r.headers["location"].startswith(f"{provider}/oauth2/authorize?")
        sent = parse_qs(urlsplit(r.headers["location"]).query)
        assert sent["code_challenge_method"] == ["S256"] and sent["client_id"] == [CLIENT_ID]
        assert sent["redirect_uri"] == [f"{daemon.url}/v1/session/oidc/callback"]
        assert len(sent["state"][0]) >= 22 and len(sent["nonce"][0]) >= 22  # ≥ 128 bits
        cookie = r.headers["set-cookie"]
        assert "Path=/v1/session/oidc" in cookie and "HttpOnly" in cookie
        assert "SameSite=lax" in cookie.replace("Lax", "lax")
        methods = c.get("/v1/session/methods").json()
        assert methods == {"password": True,
                           "sso": {"label": LABEL, "start": "/v1/session/oidc/start"}}  # fmt: skip


def test_provider_down_gives_a_503_page(sso_only: Daemon) -> None:
    """The daemon started while its provider is down; signing in explains it."""
    with sso_only.http() as c:
        r = c.get("/v1/session/oidc/start")
        assert r.status_code == 503
        assert "text/html" in r.headers["content-type"]
        assert "identity provider cannot be reached" in r.text
        assert c.get("/healthz").status_code == 200


def test_password_login_off_and_expired_id_token(
    browser: Browser, sso_only: Daemon, expiring_provider: str
) -> None:
    with sso_only.http() as c:
        r = c.post("/v1/session", json={"username": "admin", "password": "whatever"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "password_login_disabled"
        # the provider is up now: once the remembered failure is over, start redirects
        wait_for(
            lambda: c.get("/v1/session/oidc/start").status_code == 302,
            message="start to redirect once the provider is up",
        )
    register(expiring_provider, "erin-sub", preferred_username="erin")
    # bypass_csp: axe-core is an injected script, which the page's CSP refuses
    ctx = browser.new_context(base_url=sso_only.url, bypass_csp=True)
    errors = watch_errors(ctx)
    try:
        page = ctx.new_page()
        page.goto("/")
        expect(sso_button(page)).to_be_visible()
        expect(page.locator("#signin-form")).to_be_hidden()
        expect(page.get_by_label("Password", exact=True)).to_be_hidden()
        sso_button(page).focus()  # a real link: reachable and started from the keyboard
        page.keyboard.press("Enter")
        authorize_at_provider(page, "erin-sub")
        expect(page.locator("#sso-error")).to_contain_text("could not be verified")
        assert axe_violations(page) == []
        assert session_status(page) == 401
        assert not session_cookies(ctx)
        assert "ID token is not valid" in sso_only.log()
    finally:
        ctx.close()
    assert not errors, errors
