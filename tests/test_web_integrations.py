"""The notification center's integrations views, in Debian's chromium (headless,
through Playwright) against a real daemon: attachments in notification cards
(images inline, other files as download links, external files as links), the
service worker showing an attached image, and the Webhooks view (create with the
URL and secret shown once, list, test, remove), each checked with axe-core.

One daemon and one browser for the module, a fresh context (cookies, storage,
service worker) and user per test, as in tests/test_web.py. With
NOTIFYD_UPDATE_SCREENSHOTS=1 the screenshots test also writes docs/img/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    deliver_push,
    new_user,
    publish,
    service_worker_ready,
    sign_in,
    watch_errors,
)
from conftest import Daemon, wait_for
from playwright.sync_api import Browser, BrowserContext, Page, expect

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"browser tests need Debian's chromium at {CHROMIUM}"
)

#: a real picture, so that the browser decodes it (naturalWidth > 0)
PNG = (REPO / "notifyd" / "web" / "static" / "icons" / "icon-192.png").read_bytes()
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + b"0" * 3000 + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("webint") / "data")
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


def writer(daemon: Daemon, label: str, **kw: Any) -> WebUser:
    """A web user who may also publish under its prefix (a webhook publishes as its
    owner, so creating one needs write rights on its topic)."""
    user = new_user(daemon, label, **kw)
    with daemon.admin() as c:
        r = c.post("/v1/acl", json={"user": user.name, "pattern": f"{user.prefix}/*",
                                    "permission": "rw"})  # fmt: skip
        assert r.status_code in (200, 201), r.text
    return user


@pytest.fixture
def user(daemon: Daemon, request: pytest.FixtureRequest) -> WebUser:
    return writer(daemon, request.node.name.removeprefix("test_").replace("_", "-")[:20])


def upload(daemon: Daemon, data: bytes, filename: str) -> dict[str, Any]:
    """Upload as the admin (who publishes the events that carry it)."""
    with daemon.admin() as c:
        r = c.post("/v1/attachments", params={"filename": filename}, content=data)
        assert r.status_code == 201, r.text
        return r.json()


def with_attachments(daemon: Daemon, user: WebUser) -> dict[str, dict[str, Any]]:
    """An image, a PDF and an external file, each on an event of the user's."""
    image = upload(daemon, PNG, "front door.png")
    pdf = upload(daemon, PDF, "report-2026-W01.pdf")
    return {
        "pdf": publish(daemon, user.topic("reports"), title="Weekly report",
                       body="The numbers for week 1.", attachment={"id": pdf["id"]}),
        "external": publish(daemon, user.topic("builds"), title="APK ready",
                            attachment={"url": "https://files.example.org/app-1.2.apk",
                                        "name": "app-1.2.apk"}),
        "image": publish(daemon, user.topic("cams"), title="Someone at the door",
                         body="Motion at the front door.", priority="high",
                         attachment={"id": image["id"]}),
    }  # fmt: skip


def image_loaded(page: Page, event_id: int) -> bool:
    return bool(
        page.evaluate(
            """(id) => {
                const img = document.querySelector(`li.event[data-id="${id}"] img.attachment-image`);
                return Boolean(img && img.complete && img.naturalWidth > 0);
            }""",
            event_id,
        )
    )


def test_attachments_in_cards(context: BrowserContext, daemon: Daemon, user: WebUser) -> None:
    requested: list[str] = []
    context.on("request", lambda req: requested.append(req.url))
    events = with_attachments(daemon, user)
    page = context.new_page()
    sign_in(page, user)

    image = events["image"]
    att = image["attachment"]
    picture = card(page, image["id"]).get_by_role("img", name="front door.png")
    expect(picture).to_be_visible()
    expect(picture).to_have_attribute("src", f"/v1/attachments/{att['id']}")
    expect(picture).to_have_attribute("loading", "lazy")
    # the page's session cookie fetches it: the reader may read the topic
    wait_for(lambda: image_loaded(page, image["id"]), message="the attached image to load")
    box = picture.bounding_box()
    assert box is not None and box["height"] <= 16 * 16 + 1  # max-height: 16rem

    pdf = events["pdf"]
    link = card(page, pdf["id"]).get_by_role("link", name="report-2026-W01.pdf")
    expect(link).to_have_attribute("href", f"/v1/attachments/{pdf['attachment']['id']}")
    expect(link).to_have_attribute("download", "report-2026-W01.pdf")
    size = pdf["attachment"]["size"]
    expect(card(page, pdf["id"]).locator(".event-attachment")).to_contain_text(
        f"(application/pdf, {size / 1024:.1f} KiB)"
    )
    assert card(page, pdf["id"]).locator("img").count() == 0
    with page.expect_download() as download:
        link.click()
    saved = download.value.path()
    assert saved is not None and Path(saved).read_bytes() == PDF

    external = card(page, events["external"]["id"]).get_by_role("link", name="app-1.2.apk")
    expect(external).to_have_attribute("href", "https://files.example.org/app-1.2.apk")
    expect(external).to_have_attribute("rel", "noopener noreferrer")
    assert not [u for u in requested if "files.example.org" in u]  # a link, never fetched

    # live: a new event with an image appears with its picture
    second = upload(daemon, PNG, "back door.png")
    live = publish(daemon, user.topic("cams"), title="Back door", attachment={"id": second["id"]})
    expect(card(page, live["id"]).get_by_role("img", name="back door.png")).to_be_visible()
    wait_for(lambda: image_loaded(page, live["id"]), message="the live image to load")


def test_gone_attachment_says_so(context: BrowserContext, daemon: Daemon, user: WebUser) -> None:
    """An attachment the server no longer serves (a 404: expired, pruned, or not
    readable) is described instead of showing a broken picture."""
    image = upload(daemon, PNG, "gone.png")
    event = publish(daemon, user.topic("cams"), title="Gone", attachment={"id": image["id"]})
    page = context.new_page()
    fetched: list[str] = []

    def gone(route: Any) -> None:
        fetched.append(route.request.url)
        route.fulfill(status=404)

    page.route(re.compile(rf".*/v1/attachments/{image['id']}(\?.*)?$"), gone)
    sign_in(page, user)
    # tried three times (a live event may come a moment before its file is served)
    expect(card(page, event["id"]).locator(".event-attachment")).to_have_text(
        "Attachment gone.png cannot be shown (expired, or the server cannot be reached)",
        timeout=15_000,
    )
    assert len(fetched) == 3, fetched
    assert card(page, event["id"]).locator("img").count() == 0


def test_service_worker_shows_an_attached_image(
    browser: Browser, daemon: Daemon, user: WebUser
) -> None:
    context = browser.new_context(base_url=daemon.url)
    context.grant_permissions(["notifications"], origin=daemon.url)
    errors = watch_errors(context)
    try:
        page = context.new_page()
        sign_in(page, user)
        service_worker_ready(page)
        own = f"{daemon.url}/v1/attachments/AbCdEfGhIjKl"
        # what the daemon pushes: the attachment's link with its signature
        signed = f"{own}?sig=Zm9vYmFyYmF6cXV4LWZvb2Jhcg_x"
        pushes = {
            "a": own,
            "s": signed,
            # any other URL of this server stays refused (it would carry the cookie),
            "b": f"{daemon.url}/v1/inbox/read-all",
            # and so does an attachment URL with another query
            "q": f"{own}?sig=x&next=/v1/inbox/read-all",
        }
        for n, (tag, image) in enumerate(pushes.items()):
            deliver_push(
                context, page, daemon.url, {"id": n + 1, "title": tag, "tag": tag, "image": image}
            )

        def shown() -> dict[str, Any]:
            notes = page.evaluate(
                """navigator.serviceWorker.ready
                    .then((reg) => reg.getNotifications())
                    .then((list) => list.map((n) => ({ tag: n.tag, image: n.image })))"""
            )
            found = {n["tag"]: n["image"] for n in notes}
            return found if set(pushes) <= set(found) else {}

        # (each notification waits for its image's fetch: slow on a loaded machine)
        images = wait_for(shown, timeout=30, message="every notification")
        assert images == {"a": own, "s": signed, "b": "", "q": ""}
        assert not errors, errors
    finally:
        context.close()


def created_box(page: Page):
    return page.locator("#hook-created")


def test_webhooks_view(context: BrowserContext, daemon: Daemon, user: WebUser) -> None:
    page = context.new_page()
    sign_in(page, user)
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_focused()
    view = page.locator("#view-hooks")
    expect(view.get_by_text("No webhooks yet.")).to_be_visible()

    # the json template's fields editor shows only for that template
    fields = page.locator("#hook-fields")
    expect(fields).to_be_hidden()
    page.get_by_label("Sender").select_option("json")
    expect(fields).to_be_visible()
    page.get_by_label("Sender").select_option("alertmanager")
    expect(fields).to_be_hidden()

    # a server refusal is shown on the field it names
    page.get_by_label("Webhook name").fill("prometheus")
    page.get_by_label("Webhook topic").fill("bad topic!")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#hook-form-error")).to_be_visible()
    expect(page.get_by_label("Webhook topic")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Webhook topic")).to_be_focused()

    page.get_by_label("Webhook topic").fill(user.topic("alerts"))
    page.get_by_label("Default priority").select_option("4")
    page.get_by_label("Tags (optional)").fill("prometheus, ops")
    page.get_by_role("button", name="Add webhook").click()

    # the URL and the secret, once, with copy buttons and a clear note
    box = created_box(page)
    expect(box).to_be_visible()
    expect(page.get_by_role("heading", name="Webhook prometheus created")).to_be_focused()
    expect(box).to_contain_text("shown only this once")
    url = page.get_by_label("Webhook URL (with its secret)").input_value()
    secret = page.get_by_label(re.compile("^Secret")).input_value()
    assert secret and url.endswith("/" + secret) and "/v1/hooks/" in url
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daemon.url)
    box.get_by_role("button", name="Copy URL").click()
    expect(page.locator("#hook-copy-status")).to_have_text("URL copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == url
    with user.http() as c:
        r = c.get("/v1/hooks")
        assert r.status_code == 200, r.text
        (stored,) = r.json()["hooks"]
    assert stored["name"] == "prometheus" and stored["tags"] == ["prometheus", "ops"]

    # listed without the secret
    item = page.locator('#hook-list li[data-name="prometheus"]')
    expect(item).to_contain_text("Prometheus Alertmanager")
    expect(item).to_contain_text(f"Publishes to {user.topic('alerts')}")
    expect(item).to_contain_text("never used")
    assert secret not in (item.text_content() or "")

    box.get_by_role("button", name="Done, I have copied it").click()
    expect(box).to_be_hidden()
    expect(page.get_by_role("heading", name="Your webhooks")).to_be_focused()
    assert secret not in page.content()  # gone from the page, inputs included
    assert page.evaluate(
        "document.getElementById('hook-created-secret').value"
    ) == ""  # fmt: skip

    # a test renders the template's sample payload; nothing is published
    before = user.http().get("/v1/events").json()["events"]
    item.get_by_role("button", name="Send a test to prometheus").click()
    results = item.locator(".hook-test")
    expect(results).to_contain_text("nothing was published")
    expect(results.locator(".rendered-event").first).to_be_visible()
    assert user.http().get("/v1/events").json()["events"] == before

    # the secret is still not visible after a reload
    page.reload()
    expect(page.locator('#hook-list li[data-name="prometheus"]')).to_be_visible()
    assert secret not in page.content()

    # remove, with confirmation
    item = page.locator('#hook-list li[data-name="prometheus"]')
    item.get_by_role("button", name="Remove webhook prometheus").click()
    page.get_by_role("button", name="Yes, remove webhook prometheus").click()
    expect(item).to_have_count(0)
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    with user.http() as c:
        assert c.get("/v1/hooks").json()["hooks"] == []


def test_json_template_fields(context: BrowserContext, user: WebUser) -> None:
    page = context.new_page()
    sign_in(page, user)
    page.goto("/#/hooks")
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    page.get_by_label("Webhook name").fill("nas")
    page.get_by_label("Webhook topic").fill(user.topic("nas"))
    page.get_by_label("Sender").select_option("json")
    page.get_by_label("Title template").fill("{{ payload.host }} is {{ payload.status }}")
    page.get_by_label("Body template").fill("{{ payload.message }}")
    page.get_by_role("button", name="Add webhook").click()
    expect(created_box(page)).to_be_visible()
    with user.http() as c:
        (hook,) = c.get("/v1/hooks").json()["hooks"]
    assert hook["template"] == "json"
    assert hook["fields"] == {"title": "{{ payload.host }} is {{ payload.status }}",
                              "body": "{{ payload.message }}"}  # fmt: skip

    # a test with a payload of one's own, rendered by those fields
    item = page.locator('#hook-list li[data-name="nas"]')
    item.get_by_text("Test with your own payload").click()
    payload = page.get_by_label("Payload for nas (JSON)")
    payload.fill("{not json")
    item.get_by_role("button", name="Send a test to nas").click()
    expect(item.locator(".hook-test")).to_contain_text("The payload is not JSON")
    expect(payload).to_have_attribute("aria-invalid", "true")
    expect(payload).to_be_focused()
    payload.fill('{"host": "nas-1", "status": "degraded", "message": "pool tank"}')
    item.get_by_role("button", name="Send a test to nas").click()
    rendered = item.locator(".rendered-event")
    expect(rendered.locator(".item-title")).to_have_text("nas-1 is degraded")
    expect(rendered.locator(".rendered-body")).to_have_text("pool tank")
    expect(item.locator(".hook-test")).to_contain_text("Your payload makes this notification")
    expect(payload).not_to_have_attribute("aria-invalid", "true")


def _check_axe(page: Page, view: str, found: dict[str, list]) -> None:
    problems = axe_violations(page)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        problems.append({"id": "horizontal-overflow", "pixels": overflow})
    found[view] = problems


def _axe_contexts(browser: Browser, daemon: Daemon) -> Iterator[tuple[str, BrowserContext]]:
    """Light on a desktop, then dark on a phone (axe needs an injected script, which
    the CSP rightly refuses: bypass_csp)."""
    for scheme, width, height in (("light", 1280, 800), ("dark", 390, 844)):
        context = browser.new_context(
            base_url=daemon.url, bypass_csp=True, viewport={"width": width, "height": height},
            color_scheme=scheme, reduced_motion="reduce",
        )  # fmt: skip
        try:
            yield scheme, context
        finally:
            context.close()


def test_accessibility_of_attachments(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    """axe-core finds nothing serious in cards with attachments, light on a desktop
    and dark on a phone; nothing scrolls sideways on the phone."""
    axe_script()
    with_attachments(daemon, user)
    found: dict[str, list] = {}
    for scheme, context in _axe_contexts(browser, daemon):
        errors = watch_errors(context)
        page = context.new_page()
        sign_in(page, user)
        expect(page.locator(".event-attachment")).to_have_count(3)
        page.wait_for_function("[...document.images].every((img) => img.complete)")
        _check_axe(page, f"inbox-attachments/{scheme}", found)
        assert not errors, errors
    problems = {view: v for view, v in found.items() if v}
    assert not problems, problems


def test_accessibility_of_webhooks(browser: Browser, daemon: Daemon, user: WebUser) -> None:
    """The same for the Webhooks view, with the once-shown secret, the json fields
    editor and a test result on screen."""
    axe_script()
    found: dict[str, list] = {}
    for scheme, context in _axe_contexts(browser, daemon):
        errors = watch_errors(context)
        page = context.new_page()
        sign_in(page, user)
        page.get_by_role("link", name="Webhooks").click()
        expect(
            page.get_by_text("No webhooks yet.").or_(page.locator("#hook-list li.item").first)
        ).to_be_visible()
        page.get_by_label("Webhook name").fill(f"ci-{scheme}")
        page.get_by_label("Webhook topic").fill(user.topic("ci"))
        page.get_by_label("Sender").select_option("gitea")
        page.get_by_role("button", name="Add webhook").click()
        expect(created_box(page)).to_be_visible()
        page.get_by_label("Sender").select_option("json")  # the fields editor, too
        item = page.locator(f'#hook-list li[data-name="ci-{scheme}"]')
        item.get_by_role("button", name=f"Send a test to ci-{scheme}").click()
        expect(item.locator(".hook-test p").first).not_to_have_text(re.compile("Rendering"))
        item.get_by_text("Test with your own payload").click()  # its labelled textarea
        _check_axe(page, f"webhooks/{scheme}", found)
        assert not errors, errors
    problems = {view: v for view, v in found.items() if v}
    assert not problems, problems


def test_screenshots(browser: Browser, daemon: Daemon) -> None:
    """The Webhooks view and an event with an image attachment, for test-artifacts/;
    with NOTIFYD_UPDATE_SCREENSHOTS=1 also for the docs (docs/img/)."""
    user = writer(daemon, "ops", exact=True)
    with_attachments(daemon, user)
    ARTIFACTS.mkdir(exist_ok=True)
    shots: dict[str, Path] = {}
    context = browser.new_context(
        base_url=daemon.url, viewport={"width": 1280, "height": 800},
        color_scheme="light", reduced_motion="reduce",
    )  # fmt: skip
    errors = watch_errors(context)
    try:
        page = context.new_page()
        sign_in(page, user)
        expect(page.locator(".event-attachment")).to_have_count(3)
        page.wait_for_function("[...document.images].every((img) => img.complete)")
        push_not_now = page.get_by_role("button", name="Not now")
        if push_not_now.is_visible():
            push_not_now.click()
        page.mouse.move(0, 0)
        shots["attachments"] = ARTIFACTS / "web-attachments-1280x800.png"
        page.screenshot(path=str(shots["attachments"]))

        page.get_by_role("link", name="Webhooks").click()
        for name, template, topic in (("alertmanager", "alertmanager", "alerts"),
                                      ("github", "github", "ci/github")):  # fmt: skip
            page.get_by_label("Webhook name").fill(name)
            page.get_by_label("Webhook topic").fill(user.topic(topic))
            page.get_by_label("Sender").select_option(template)
            page.get_by_role("button", name="Add webhook").click()
            expect(page.locator(f'#hook-list li[data-name="{name}"]')).to_be_visible()
        page.locator('#hook-list li[data-name="alertmanager"]').get_by_role(
            "button", name="Send a test to alertmanager"
        ).click()
        expect(page.locator(".rendered-event").first).to_be_visible()
        page.evaluate("document.activeElement.blur()")
        page.mouse.move(0, 0)
        shots["webhooks"] = ARTIFACTS / "web-webhooks-1280x800.png"
        page.screenshot(path=str(shots["webhooks"]), full_page=True)
        assert not errors, errors
    finally:
        context.close()
    if os.environ.get("NOTIFYD_UPDATE_SCREENSHOTS") == "1":
        docs = REPO / "docs" / "img"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots["attachments"], docs / "web-attachments.png")
        shutil.copyfile(shots["webhooks"], docs / "web-webhooks.png")
    for path in shots.values():
        assert path.stat().st_size > 10_000
