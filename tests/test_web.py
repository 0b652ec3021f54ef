"""The browser notification center, in a real browser against a real daemon.

One daemon and one chromium serve the whole module; each test gets a fresh
browser context (its own cookies, storage and service worker) and its own user,
who may read only the topics under its name, so tests cannot see each other's
notifications.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import (
    ARTIFACTS,
    CHROMIUM,
    REPO,
    WebUser,
    axe_script,
    axe_violations,
    card,
    checked_context,
    cli_send,
    deliver_push,
    fake_push_manager,
    new_user,
    notifications,
    publish,
    service_worker_ready,
    sign_in,
    watch_errors,
)
from conftest import Daemon, wait_for
from playwright.sync_api import Browser, BrowserContext, Page, expect
from pushservice import PushService
from smtpsink import SMTPSink

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"browser tests need Debian's chromium at {CHROMIUM}"
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("web") / "data")
    d.data_dir.mkdir()
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture
def context(browser: Browser, daemon: Daemon) -> Iterator[BrowserContext]:
    with checked_context(
        browser, base_url=daemon.url, viewport={"width": 1280, "height": 800}
    ) as ctx:
        yield ctx


@pytest.fixture
def user(daemon: Daemon, request: pytest.FixtureRequest) -> WebUser:
    return new_user(daemon, request.node.name.removeprefix("test_").replace("_", "-")[:20])


def test_service_worker_caches_the_whole_shell() -> None:
    """Every file the page is made of is in the service worker's offline cache."""
    web = REPO / "notifyd" / "web"
    listed = re.search(r"const SHELL = \[(.*?)\];", (web / "sw.js").read_text(), re.S)
    assert listed is not None
    cached = set(re.findall(r'"([^"]+)"', listed.group(1)))
    files = {"/" + str(p.relative_to(web)) for p in (web / "static").rglob("*") if p.is_file()}
    assert cached == {"/", "/manifest.webmanifest", *files}


def test_sign_in_and_out(context: BrowserContext, user: WebUser) -> None:
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(user.name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_role("heading", name="Inbox")).to_be_hidden()

    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(user.name)
    expect(page.get_by_text("No notifications yet.")).to_be_visible()

    # the session survives a reload (HttpOnly cookie; nothing secret in the page)
    page.reload()
    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    assert user.password not in page.content()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # guessing is throttled, and the page says for how long
    page.get_by_label("Username").fill(user.name)
    for _ in range(5):  # a success cleared the count; five more failures
        page.get_by_label("Password").fill("guess")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many failed attempts. Try again in")


def test_cli_event_appears_live(context: BrowserContext, daemon: Daemon, user: WebUser) -> None:
    page = context.new_page()
    sign_in(page, user)
    event_id = cli_send(daemon, user.topic("ci"), "Build 1284 passed", "--title", "CI green")
    # the CLI returned once the event was durable; the page must show it within 1 s
    expect(card(page, event_id)).to_be_visible(timeout=1000)
    expect(card(page, event_id).get_by_role("heading")).to_have_text("CI green")
    expect(page).to_have_title("(1) notifyd")
    expect(page.locator("#announce-polite")).to_contain_text("New notification: CI green")

    urgent = cli_send(
        daemon, user.topic("db"), "primary down", "--title", "DB down", "--priority", "urgent"
    )
    expect(card(page, urgent)).to_be_visible(timeout=1000)
    expect(page.locator("#announce-assertive")).to_contain_text("Urgent notification: DB down")
    expect(page).to_have_title("(2) notifyd")


def test_sse_fallback_when_websockets_fail(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    # a proxy that breaks WebSockets: every connection closes before opening
    context = browser.new_context(base_url=daemon.url)
    errors = watch_errors(context)
    context.add_init_script(
        """window.WebSocket = class extends EventTarget {
            constructor() {
                super();
                window.__websocketAttempts = (window.__websocketAttempts || 0) + 1;
                setTimeout(() => this.dispatchEvent(Object.assign(new Event("close"), { code: 1006 })));
            }
            close() {}
        };"""
    )
    try:
        page = context.new_page()
        sign_in(page, user)  # waits for "Live": the stream is up over SSE
        assert page.evaluate("window.__websocketAttempts") == 2
        event_id = cli_send(daemon, user.topic(), "over SSE", "--title", "Event stream")
        expect(card(page, event_id)).to_be_visible(timeout=1000)
        assert not errors, errors
    finally:
        context.close()


def test_read_state_syncs_between_devices(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    first = browser.new_context(base_url=daemon.url)
    second = browser.new_context(base_url=daemon.url)
    errors = [watch_errors(first), watch_errors(second)]
    try:
        pages = [first.new_page(), second.new_page()]
        events = [publish(daemon, user.topic(), title=f"Event {n}")["id"] for n in range(3)]
        for page in pages:
            sign_in(page, user)
            expect(page.locator("li.event")).to_have_count(3)
            expect(page).to_have_title("(3) notifyd")
        one, two = pages

        one.get_by_role("button", name="Mark read: Event 0").click()
        expect(card(two, events[0])).to_have_attribute("data-state", "read")
        expect(two).to_have_title("(2) notifyd")

        two.get_by_role("button", name="Mark unread: Event 0").click()
        expect(card(one, events[0])).to_have_attribute("data-state", "unread")

        one.get_by_role("button", name="Archive: Event 1").click()
        expect(card(two, events[1])).to_have_count(0)
        expect(two).to_have_title("(2) notifyd")

        two.get_by_role("button", name="Mark all read").click()
        expect(card(one, events[0])).to_have_attribute("data-state", "read")
        expect(card(one, events[2])).to_have_attribute("data-state", "read")
        expect(one).to_have_title("notifyd")
        assert user.event(events[2])["read"] is True
        assert errors == [[], []]
    finally:
        first.close()
        second.close()


def test_hostile_html_is_shown_as_text(
    context: BrowserContext, daemon: Daemon, user: WebUser
) -> None:
    title = "<img src=x onerror=window.__pwned=1>"
    body = (
        "<script>window.__pwned=2</script> <img src=x onerror=window.__pwned=3>\n\n"
        '**bold** [click me](javascript:window.__pwned=4) <a href="javascript:alert(1)">x</a>\n\n'
        "![pic](https://example.com/tracker.png) `<b>code</b>`"
    )
    stored = publish(daemon, user.topic(), title=title, body=body, format="markdown")
    page = context.new_page()
    sign_in(page, user)
    # one from history, one live over the stream, one plain text
    live = publish(daemon, user.topic(), title=title, body=body, format="markdown")
    plain = publish(daemon, user.topic(), title=title, body=body)
    for event in (stored, live, plain):
        item = card(page, event["id"])
        expect(item.get_by_role("heading")).to_have_text(title)
        expect(item.locator(".event-body")).to_contain_text("<script>window.__pwned=2</script>")
    expect(card(page, stored["id"]).locator("strong")).to_have_text("bold")
    expect(card(page, stored["id"]).locator("code")).to_have_text("<b>code</b>")
    # markdown images become links, never <img>: nothing loads from event content
    expect(card(page, stored["id"]).get_by_role("link", name="pic")).to_have_attribute(
        "href", "https://example.com/tracker.png"
    )
    lst = page.locator("#event-list")
    assert lst.locator("img, script, iframe, b").count() == 0
    assert lst.locator('a[href^="javascript"]').count() == 0
    for link in lst.locator("a").all():
        assert link.get_attribute("rel") == "noopener noreferrer"
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_event_images_never_load_from_this_server(
    context: BrowserContext, daemon: Daemon, user: WebUser
) -> None:
    """An event's icon or image pointing at this server would be fetched with the
    reader's session cookie, acting in the reader's name: such images are not
    loaded at all. Images on other https origins are."""
    requested: list[str] = []
    context.on("request", lambda req: requested.append(req.url))
    serve_foreign_icon(context)
    own = publish(
        daemon, user.topic(), title="same origin",
        icon=f"{daemon.url}/v1/inbox/read-all",
        image=f"{daemon.url}/static/icons/icon-192.png?from-an-event",
    )  # fmt: skip
    foreign = publish(daemon, user.topic(), title="other origin", icon=FOREIGN_ICON)
    page = context.new_page()
    sign_in(page, user)
    expect(card(page, foreign["id"]).locator("img.icon")).to_have_count(1)
    expect(card(page, own["id"]).get_by_role("heading")).to_have_text("same origin")
    assert card(page, own["id"]).locator("img").count() == 0
    assert not [u for u in requested if "read-all" in u or "from-an-event" in u], requested


def test_history_scroll_filters_and_search(
    context: BrowserContext, daemon: Daemon, user: WebUser
) -> None:
    events = [
        {
            "topic": user.topic("ci" if n % 2 else "backups"),
            "title": f"Run {n:02d}",
            "body": "nightly report" if n % 10 == 0 else "routine",
            "priority": 5 if n == 7 else 3,
            "category": "builds" if n % 2 else "general",
        }
        for n in range(70)
    ]
    with daemon.admin() as c:
        r = c.post("/v1/events", json=events)
        assert r.status_code == 201, r.text
    page = context.new_page()
    sign_in(page, user)
    items = page.locator("li.event")
    expect(items).to_have_count(30)  # one page
    expect(items.first.get_by_role("heading")).to_have_text("Run 69")
    # scrolling to the end loads older pages (IntersectionObserver + before=)
    page.locator("#load-more").scroll_into_view_if_needed()
    expect(items).not_to_have_count(30)
    page.mouse.wheel(0, 50_000)
    expect(items).to_have_count(70)
    expect(page.locator("#load-more")).to_be_hidden()
    expect(items.last.get_by_role("heading")).to_have_text("Run 00")
    ids = [int(i) for i in items.evaluate_all("(els) => els.map((el) => el.dataset.id)")]
    assert ids == sorted(set(ids), reverse=True)

    page.get_by_label("Search").fill("nightly rep")
    expect(items).to_have_count(7)
    page.get_by_label("Search").fill("")
    page.get_by_text("More filters").click()
    page.get_by_label("Topic", exact=True).fill(user.topic("ci"))
    expect(items).to_have_count(30)
    page.get_by_label("Priority", exact=True).select_option("5")
    expect(items).to_have_count(1)
    expect(items.first.get_by_role("heading")).to_have_text("Run 07")
    expect(page.locator("#filter-count")).to_have_text("(2 active)")
    page.get_by_role("button", name="Clear filters").click()
    expect(items).to_have_count(30)

    # a live event that does not match the filter stays out of the list
    page.get_by_label("Category", exact=True).fill("builds")
    expect(items.first.get_by_role("heading")).to_have_text("Run 69")
    publish(daemon, user.topic("other"), title="Not a build")
    publish(daemon, user.topic("ci"), title="A build", category="builds")
    expect(items.first.get_by_role("heading")).to_have_text("A build")
    expect(page.get_by_role("heading", name="Not a build")).to_have_count(0)
    expect(page).to_have_title("(72) notifyd")

    page.get_by_label("Category", exact=True).fill("")
    page.get_by_label("Unread only").check()
    page.get_by_role("button", name="Mark read: Not a build").click()
    expect(page).to_have_title("(71) notifyd")


def test_markdown_renderer(context: BrowserContext) -> None:
    """The page's own renderer, called directly: every case as the DOM it builds."""
    cases = {
        "**bold** *em* _em_ snake_case ~~gone~~": (
            "<p><strong>bold</strong> <em>em</em> <em>em</em> snake_case <del>gone</del></p>"
        ),
        "*a **b** c*": "<p><em>a <strong>b</strong> c</em></p>",
        "`<b>` and ``a ` b``": "<p><code>&lt;b&gt;</code> and <code>a ` b</code></p>",
        "[ok](https://example.com) [bad](javascript:alert(1)) [rel](/v1/me)": (
            '<p><a href="https://example.com/" rel="noopener noreferrer" target="_blank">ok</a>'
            " bad rel</p>"
        ),
        "mail mailto:me@example.org, see https://example.org/a_b.": (
            '<p>mail <a href="mailto:me@example.org" rel="noopener noreferrer" target="_blank">'
            'mailto:me@example.org</a>, see <a href="https://example.org/a_b" '
            'rel="noopener noreferrer" target="_blank">https://example.org/a_b</a>.</p>'
        ),
        "- one\n- two\n  - nested\n\n1. first\n2. second": (
            "<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>"
            "<ol><li>first</li><li>second</li></ol>"
        ),
        "```sh\necho '<script>'\n```": (
            '<pre tabindex="0"><code data-lang="sh">echo \'&lt;script&gt;\'</code></pre>'
        ),
        "> quoted\n\nline one\nline two": (
            "<blockquote><p>quoted</p></blockquote><p>line one<br>line two</p>"
        ),
        "<img src=x onerror=alert(1)> ![alt](https://example.com/a.png)": (
            "<p>&lt;img src=x onerror=alert(1)&gt; "
            '<a href="https://example.com/a.png" rel="noopener noreferrer" target="_blank">alt</a></p>'
        ),
        "# Title\n\n---\n\n2 * 3 * 4": (
            '<p class="md-heading md-h1"><strong>Title</strong></p><hr><p>2 * 3 * 4</p>'
        ),
    }
    page = context.new_page()
    page.goto("/")
    rendered = page.evaluate(
        """async (sources) => {
            const { renderMarkdown } = await import("/static/js/markdown.js");
            return sources.map((source) => {
                const div = document.createElement("div");
                div.append(renderMarkdown(source));
                return div.innerHTML;
            });
        }""",
        list(cases),
    )
    assert dict(zip(cases, rendered, strict=True)) == cases


def test_push_on_this_device(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    """Enable push from the page, get a real encrypted push from the daemon, and
    hand its payload to the service worker, which shows it."""
    with daemon.http(user.token) as c:
        vapid_key = c.get("/v1/webpush/vapid-public-key").json()["public_key"]
    with PushService() as service:
        service.vapid_public_key = vapid_key
        device = service.subscribe()
        context = browser.new_context(base_url=daemon.url)
        context.grant_permissions(["notifications"], origin=daemon.url)
        errors = watch_errors(context)
        fake_push_manager(context, device.info())
        try:
            page = context.new_page()
            sign_in(page, user)
            service_worker_ready(page)
            page.get_by_role("link", name="Channels", exact=True).click()
            settings = page.locator("#view-settings")
            expect(settings.get_by_role("heading", name="Channels and devices")).to_be_visible()
            settings.get_by_role("button", name="Enable notifications on this device").click()
            expect(page.locator("#push-status")).to_have_text(
                "This device receives push notifications, also when this page is closed."
            )
            expect(page.locator("#subscription-list")).to_contain_text("This device")
            assert page.evaluate("window.__pushOptions") == {
                "userVisibleOnly": True,
                "applicationServerKey": vapid_key,
            }

            event = publish(
                daemon, user.topic("deploys"), title="Deploy finished", body="v2.3 is live",
                priority="high", collapse_key="deploy-prod", click="https://example.com/releases/2.3",
                actions=[
                    {"label": "Open release", "url": "https://example.com/releases/2.3"},
                    {"label": "Roll back", "url": "https://ci.example.com/rollback", "method": "POST"},
                ],
            )  # fmt: skip
            [push] = wait_for(lambda: service.received(device), timeout=10, message="the push")
            assert push.payload is not None, push.error
            assert push.payload["id"] == event["id"]

            deliver_push(context, page, daemon.url, push.payload)

            def shown() -> list:
                return [n for n in notifications(page) if n["title"] == "Deploy finished"]

            [note] = wait_for(shown, timeout=30, message="the pushed notification to be shown")
            assert note["body"] == "v2.3 is live"
            assert note["tag"] == "deploy-prod"
            assert note["actions"] == ["Open release", "Roll back"]
            assert note["data"]["id"] == event["id"]
            assert note["data"]["click"] == "https://example.com/releases/2.3"

            # a newer push with the same tag replaces the notification on the device
            deliver_push(context, page, daemon.url, {**push.payload, "title": "Deploy rolled back"})
            wait_for(
                lambda: [n["title"] for n in notifications(page)] == ["Deploy rolled back"],
                timeout=10,
                message="the collapsed notification",
            )

            # a click on a notification that leads to the notification center: the
            # open page shows the event, and the server records the click
            deliver_push(
                context, page, daemon.url,
                {**push.payload, "tag": "center", "click": f"{daemon.url}/#event-{event['id']}"},
            )  # fmt: skip
            wait_for(lambda: any(n["tag"] == "center" for n in notifications(page)), timeout=10)
            [worker] = context.service_workers
            worker.evaluate(
                """async () => {
                    const shown = await self.registration.getNotifications({ tag: "center" });
                    await openNotification(shown[0], "action-1");
                }"""
            )
            expect(page).to_have_url(re.compile(f"#event-{event['id']}$"))
            expect(card(page, event["id"])).to_have_class(re.compile("highlight"))
            clicked = user.event(event["id"])
            assert clicked["read"] is True
            assert clicked["clicked_at"] is not None
            assert clicked["action"] == "Roll back"

            # turning push off removes this device's subscription from the server
            page.get_by_role("link", name="Channels", exact=True).click()
            page.get_by_role("button", name="Turn off notifications on this device").click()
            expect(page.locator("#subscription-list")).to_have_text(
                "No device receives push notifications."
            )
            with daemon.http(user.token) as c:
                assert c.get("/v1/webpush/subscriptions").json()["subscriptions"] == []
            assert not errors, errors
        finally:
            context.close()


def test_offline_changes_are_queued_and_sent(
    context: BrowserContext, daemon: Daemon, user: WebUser
) -> None:
    event = publish(daemon, user.topic(), title="Disk almost full", body="/var at 95%")
    other = publish(daemon, user.topic(), title="Certificate renewed")
    page = context.new_page()
    sign_in(page, user)
    service_worker_ready(page)
    expect(card(page, event["id"])).to_have_attribute("data-state", "unread")

    context.set_offline(True)
    expect(page.get_by_text("You are offline.")).to_be_visible()
    # the app shell and the last notifications come from this device
    page.reload()
    expect(card(page, event["id"])).to_be_visible()
    expect(page.locator("#offline-banner")).to_be_visible()
    page.get_by_role("button", name="Mark read: Disk almost full").click()
    page.get_by_role("button", name="Archive: Certificate renewed").click()
    expect(card(page, event["id"])).to_have_attribute("data-state", "read")
    expect(card(page, event["id"]).get_by_text("syncs when online")).to_be_visible()
    expect(card(page, other["id"])).to_have_count(0)
    assert user.event(event["id"])["read"] is False
    assert user.event(other["id"])["archived"] is False
    missed = publish(daemon, user.topic(), title="Published during the outage")

    context.set_offline(False)
    wait_for(lambda: user.event(event["id"])["read"], timeout=10, message="the queued read")
    wait_for(lambda: user.event(other["id"])["archived"], timeout=10, message="the queued archive")
    expect(card(page, event["id"]).get_by_text("syncs when online")).to_be_hidden()
    # and the stream is back, resuming where it left off
    expect(page.locator("#connection")).to_have_text("Live")
    expect(card(page, missed["id"])).to_be_visible()
    later = cli_send(daemon, user.topic(), "after the outage", "--title", "Back online")
    expect(card(page, later)).to_be_visible(timeout=2000)


#: an icon on another origin, answered by serve_foreign_icon (the machine is offline)
FOREIGN_ICON = "https://icons.example.com/ci.png"


def serve_foreign_icon(context: BrowserContext) -> None:
    icon = REPO / "notifyd" / "web" / "static" / "icons" / "icon-192.png"
    context.route("https://icons.example.com/**", lambda route: route.fulfill(path=str(icon)))


def _populate(daemon: Daemon, user: WebUser) -> None:
    """A realistic inbox: urgent, markdown, buttons, an icon, a read one."""
    topic = user.topic
    with user.daemon.admin() as c:
        r = c.post(
            "/v1/channels",
            json={
                "name": "mail",
                "url": "mailto://localhost:25/me@example.org?from=notifyd@example.org",
                "user": user.name,
            },
        )
        assert r.status_code == 201, r.text
        r = c.put(
            "/v1/preferences",
            params={"user": user.name},
            json={
                "rules": [
                    {"topic": topic("noisy/*"), "mute": True},
                    {"topic": topic("ci/*"), "min_priority": "high", "channels": ["mail"]},
                    {"topic": topic("backups/*"), "channels": []},
                ],
                "quiet_hours": {"start": "22:00", "end": "07:00"},
                "timezone": "Europe/Berlin",
                "digests": {"mail": 600},
                "rate_limit_per_minute": 20,
            },
        )
        assert r.status_code == 200, r.text
    backup = publish(
        daemon, topic("backups/nas"), title="Backup finished", body="412 GB in 38 minutes.",
        priority="low", category="backup",
    )  # fmt: skip
    with user.http() as c:
        c.post(f"/v1/events/{backup['id']}/read").raise_for_status()
    publish(
        daemon,
        topic("ci/main"),
        title="Nightly build #1284 passed",
        format="markdown",
        body=(
            "All **2,418 tests** passed on `main` in *11 min*.\n\n"
            "- coverage 91.2 %\n- 3 flaky tests retried\n\n"
            "[Full log](https://ci.example.com/builds/1284)"
        ),
        tags=["ci", "nightly"],
        icon=FOREIGN_ICON,
        click="https://ci.example.com/builds/1284",
    )
    publish(
        daemon,
        topic("deploys/prod"),
        title="Deploy v2.3 to production?",
        body="Staging has been green for 2 hours. Approve to roll out.",
        priority="high",
        category="deploys",
        actions=[
            {"label": "Approve", "url": "https://ci.example.com/deploy/2.3", "method": "POST"},
            {"label": "View diff", "url": "https://git.example.com/compare/v2.2...v2.3"},
        ],
    )
    publish(
        daemon,
        topic("ops/db"),
        title="Database primary unreachable",
        body="db-1 stopped answering health checks at 03:12 UTC. Failover to db-2 is in progress.",
        priority="urgent",
        category="ops",
        actions=[{"label": "Open runbook", "url": "https://wiki.example.com/runbooks/db-failover"}],
    )


def test_accessibility(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    """axe-core finds nothing serious on any view, light on a desktop and dark on
    a phone; no view scrolls sideways on the phone."""
    axe_script()  # fail early, with instructions, when axe-core is not installed
    _populate(daemon, user)
    found: dict[str, list] = {}

    def check(page: Page, view: str) -> None:
        problems = axe_violations(page)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append({"id": "horizontal-overflow", "pixels": overflow})
        found[view] = problems

    for scheme, width, height in (("light", 1280, 800), ("dark", 390, 844)):
        # the CSP (rightly) refuses injected scripts; axe needs one
        context = browser.new_context(
            base_url=daemon.url,
            bypass_csp=True,
            viewport={"width": width, "height": height},
            color_scheme=scheme,
            reduced_motion="reduce",
        )
        errors = watch_errors(context)
        try:
            page = context.new_page()
            page.goto("/")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            check(page, f"sign-in/{scheme}")
            sign_in(page, user)
            expect(page.locator("li.event")).to_have_count(4)
            check(page, f"inbox/{scheme}")
            page.get_by_text("More filters").click()
            check(page, f"inbox-filters/{scheme}")
            page.get_by_role("link", name="Channels", exact=True).click()
            expect(page.locator('#channel-list li[data-name="mail"]')).to_be_visible()
            check(page, f"channels/{scheme}")
            page.get_by_role("link", name="Preferences").click()
            expect(page.locator("#rules-body tr")).to_have_count(2)
            check(page, f"preferences/{scheme}")
            assert not errors, errors
        finally:
            context.close()
    problems = {view: v for view, v in found.items() if v}
    assert not problems, problems


def test_keyboard_and_preferences_errors(context: BrowserContext, user: WebUser) -> None:
    page = context.new_page()
    sign_in(page, user)
    page.get_by_role("link", name="Preferences").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Preferences", level=1)).to_be_focused()
    page.get_by_role("button", name="Add rule").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Topic pattern, rule 1")).to_be_focused()
    page.keyboard.type("bad topic!")
    page.get_by_role("button", name="Save preferences").click()
    alert = page.locator("#prefs-error")
    expect(alert).to_contain_text("Rule 1, topic")
    expect(page.get_by_label("Topic pattern, rule 1")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Topic pattern, rule 1")).to_be_focused()

    page.get_by_label("Topic pattern, rule 1").fill("ci/*")
    page.get_by_label("Quiet hours on").check()
    page.get_by_label("Topics to mute, one per line").fill("noisy/*")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_text("Preferences saved.")).to_be_visible()
    with user.http() as c:
        prefs = c.get("/v1/preferences").json()
    assert prefs["rules"][0] == {"topic": "noisy/*", "category": None, "min_priority": 1,
                                 "channels": None, "mute": True}  # fmt: skip
    assert prefs["rules"][1]["topic"] == "ci/*"
    assert prefs["quiet_hours"] == {"start": "22:00", "end": "07:00"}


def test_channels(context: BrowserContext, user: WebUser) -> None:
    sink = SMTPSink(credentials=("alerts", "s3cret-pass")).start()
    try:
        page = context.new_page()
        sign_in(page, user)
        page.get_by_role("link", name="Channels", exact=True).click()
        settings = page.locator("#view-settings")
        expect(settings.get_by_text("No channels yet.")).to_be_visible()

        # the server's validation message is shown on the field it names
        page.get_by_label("Name", exact=True).fill("mail")
        page.get_by_label("Apprise URL").fill("nosuchservice://example")
        page.get_by_role("button", name="Add channel").click()
        expect(page.locator("#channel-form-error")).to_contain_text("nosuchservice")
        expect(page.get_by_label("Apprise URL")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Apprise URL")).to_be_focused()

        page.get_by_label("Apprise URL").fill(sink.url(to="me@example.org"))
        page.get_by_role("button", name="Add channel").click()
        item = page.locator('#channel-list li[data-name="mail"]')
        expect(item).to_contain_text("E-Mail")
        expect(page.locator("#channel-form-error")).to_be_hidden()
        assert "s3cret-pass" not in page.content()  # Apprise masks the password

        item.get_by_role("button", name="Send test to mail").click()
        expect(item.get_by_role("status")).to_have_text("Test sent.")
        [mail] = sink.wait_for_messages(1)
        assert mail.authenticated_as == "alerts"

        item.get_by_role("button", name="Remove channel mail").click()
        page.get_by_role("button", name="Yes, remove channel mail").click()
        expect(item).to_have_count(0)
        with user.http() as c:
            assert c.get("/v1/channels").json()["channels"] == []
    finally:
        sink.stop()


def test_screenshots(browser: Browser, make_daemon: Callable[..., Daemon]) -> None:
    """The inbox on a desktop and a phone, light and dark, for test-artifacts/; with
    NOTIFYD_UPDATE_SCREENSHOTS=1 (``make screenshots``) also for the README
    (docs/img/), so an ordinary test run leaves the tracked files alone. A daemon of
    its own, so the pictures show plain topic names and a plain user name."""
    daemon = make_daemon().start()
    user = new_user(daemon, "alice", exact=True, every_topic=True)
    _populate(daemon, user)
    ARTIFACTS.mkdir(exist_ok=True)
    docs = REPO / "docs" / "img"
    docs.mkdir(parents=True, exist_ok=True)
    shots: dict[str, Path] = {}
    for width, height in ((1280, 800), (390, 844)):
        for scheme in ("light", "dark"):
            context = browser.new_context(
                base_url=daemon.url,
                viewport={"width": width, "height": height},
                color_scheme=scheme,
                reduced_motion="reduce",
            )
            errors = watch_errors(context)
            serve_foreign_icon(context)
            try:
                page = context.new_page()
                sign_in(page, user)
                expect(page.locator("li.event")).to_have_count(4)
                expect(page.locator("li.event img.icon")).to_have_count(1)
                page.wait_for_function("[...document.images].every((img) => img.complete)")
                page.get_by_role("button", name="Not now").click()  # the push invitation
                expect(page.locator("#push-callout")).to_be_hidden()
                page.mouse.move(0, 0)
                path = ARTIFACTS / f"web-inbox-{width}x{height}-{scheme}.png"
                page.screenshot(path=str(path))
                shots[f"{width}-{scheme}"] = path
                assert not errors, errors
            finally:
                context.close()
    if os.environ.get("NOTIFYD_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shots["1280-light"], docs / "web-inbox.png")
        shutil.copyfile(shots["390-light"], docs / "web-inbox-phone.png")
    for path in shots.values():
        assert path.stat().st_size > 10_000


def test_unread_count_is_exact_beyond_one_page(
    context: BrowserContext, daemon: Daemon, user: WebUser
) -> None:
    # more unread than the page keeps in memory (500): the count comes from the server
    with daemon.admin() as c:
        batch = [{"topic": user.topic("bulk"), "title": f"n{i}"} for i in range(520)]
        r = c.post("/v1/events", json=batch)
        assert r.status_code == 201, r.text
    page = context.new_page()
    sign_in(page, user)
    expect(page).to_have_title("(520) notifyd")
    expect(page.locator("#unread-summary")).to_have_text("520 unread")
    last = publish(daemon, user.topic("bulk"), title="one more")
    expect(card(page, last["id"])).to_be_visible()
    expect(page).to_have_title("(521) notifyd")
    with user.http() as c:
        assert c.post(f"/v1/events/{last['id']}/read").status_code == 200
    expect(page).to_have_title("(520) notifyd")
