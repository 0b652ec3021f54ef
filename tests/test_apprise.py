"""The Apprise channel against real peers: an SMTP server (aiosmtpd) and a local
webhook, no daemon (that is ``test_apprise_e2e.py``).

``validate``/``public`` with secrets masked; ``send`` of hand-built deliveries:
subject and body, markdown, priority (email headers, ntfy), the privacy of
sensitive events, failures as retryable errors, and the password or webhook
token never in an error message nor in what reaches the log handlers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from conftest import free_port
from smtpsink import SMTPSink

from notifyd.config import Config
from notifyd.core.channels import ChannelRecord, Delivery, DeliveryError
from notifyd.core.plugins import Plugins
from notifyd.plugins.apprise import AppriseChannel

SECRET = "hunter2-Zq9"
CREDS = ("mailer", SECRET)


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    s = SMTPSink(credentials=CREDS).start()
    yield s
    s.stop()


def event(**fields: Any) -> dict[str, Any]:
    return {
        "id": 7, "topic": "backups/nightly", "title": "Backup failed", "body": "disk /dev/sdb1 full",
        "format": "text", "priority": 3, "category": "ops", "tags": ["disk"],
        "click": None, "icon": "https://example.com/i.png", "image": None, "actions": [],
        "sensitive": False, "collapse_key": None, **fields,
    }  # fmt: skip


def delivery(url: str, base_url: str = "https://notify.example.com", **fields: Any) -> Delivery:
    chan = ChannelRecord(id=1, user_id=1, user="alice", name="mail", kind="apprise",
                         config=AppriseChannel.validate({"url": url}))  # fmt: skip
    return Delivery(id=1, channel=chan, events=[event(**fields)], attempt=1, base_url=base_url)


def channel() -> AppriseChannel:
    return AppriseChannel(SimpleNamespace(config=Config()))


# -- validate / public ---------------------------------------------------------------


def test_registered_as_builtin_plugin() -> None:
    assert Plugins(load_entry_points=False).channel_kinds()["apprise"] is AppriseChannel


@pytest.mark.parametrize(
    "url",
    ["mailto://user:pw@example.com", "mailtos://u:p@smtp.example.com:465/bob@example.com",
     "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123", "ntfys://ntfy.sh/alerts",
     "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi",
     "https://discord.com/api/webhooks/4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"],
)  # fmt: skip
def test_validate_accepts_apprise_urls(url: str) -> None:
    assert AppriseChannel.validate({"url": f"  {url} "}) == {"url": url}


@pytest.mark.parametrize(
    ("url", "says"),
    [("", "url is required"), (None, "url is required"), (42, "url is required"),
     ("just text", "not an Apprise URL"),
     (f"nosuch://user:{SECRET}@host", "unknown Apprise service nosuch://"),
     (f"mailto://user:{SECRET}@", "not a valid E-Mail URL"),
     (f"tgram://{SECRET}/", "not a valid Telegram URL"),
     (f"mailto://user:{SECRET}@example.com?mode=bogus", "not a valid E-Mail URL")],
)  # fmt: skip
def test_validate_rejects_with_a_message_that_hides_secrets(url: Any, says: str) -> None:
    with pytest.raises(ValueError) as info:
        AppriseChannel.validate({"url": url})
    assert says in str(info.value)
    assert SECRET not in str(info.value)


def test_public_masks_password_and_tokens() -> None:
    shown = AppriseChannel.public(
        {"url": f"mailto://user:{SECRET}@mail.example.com/bob@example.com"}
    )
    assert shown["service"] == "E-Mail"
    assert shown["url"].startswith("mailto://user:")
    assert "mail.example.com" in shown["url"] and SECRET not in shown["url"]
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    shown = AppriseChannel.public({"url": f"tgram://{token}/-100123"})
    assert shown["service"] == "Telegram"
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in shown["url"]


def test_public_of_an_unloadable_url_shows_only_the_scheme() -> None:
    assert AppriseChannel.public({"url": f"nosuch://{SECRET}@x"}) == {
        "url": "nosuch://****",
        "service": None,
    }


# -- send to a real SMTP server ----------------------------------------------------------


@pytest.mark.trio
async def test_send_email_with_subject_body_and_link(sink: SMTPSink) -> None:
    await channel().send(delivery(sink.url(), click="https://example.com/run/42"))
    [mail] = sink.wait_for_messages(1)
    assert mail.authenticated_as == "mailer"
    assert mail.rcpt_tos == ["alice@example.com"]
    assert mail.subject == "Backup failed"
    text = mail.text()
    assert "disk /dev/sdb1 full" in text and "https://example.com/run/42" in text
    # Nothing else of the event goes out: no topic, tags or icon.
    assert "backups/nightly" not in str(mail.message) and "i.png" not in str(mail.message)
    assert "X-Priority" not in mail.message


@pytest.mark.trio
async def test_send_markdown_and_urgent_priority(sink: SMTPSink) -> None:
    await channel().send(delivery(sink.url(), format="markdown", body="**disk** full", priority=5))
    [mail] = sink.wait_for_messages(1)
    assert "<strong>disk</strong>" in mail.text()
    assert mail.message["X-Priority"].startswith("1") and mail.message["Importance"] == "high"
    # Without a click URL of its own the link leads to the notification center.
    assert "https://notify.example.com/#event-7" in mail.text()


@pytest.mark.trio
async def test_sensitive_event_sends_only_the_generic_line(sink: SMTPSink) -> None:
    await channel().send(
        delivery(sink.url(), sensitive=True, click="https://example.com/secret-report")
    )
    [mail] = sink.wait_for_messages(1)
    assert mail.subject == "New notification in ops"
    raw = mail.message.as_string()
    for content in ("Backup failed", "sdb1", "secret-report", "backups/nightly"):
        assert content not in raw
    assert "https://notify.example.com/#event-7" in mail.text()


@pytest.mark.trio
async def test_sensitive_event_without_base_url_still_sends(sink: SMTPSink) -> None:
    await channel().send(delivery(sink.url(), base_url="", sensitive=True))
    [mail] = sink.wait_for_messages(1)
    assert mail.subject == "New notification in ops" and "Backup" not in mail.message.as_string()


@pytest.mark.trio
async def test_server_down_is_retryable_and_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    down = SMTPSink(port=free_port(), credentials=CREDS)
    with pytest.raises(DeliveryError) as info:
        await channel().send(delivery(down.url()))
    assert info.value.retryable and not info.value.gone
    assert "E-Mail" in str(info.value)
    assert SECRET not in str(info.value)
    assert caplog.text and SECRET not in caplog.text


@pytest.mark.trio
async def test_wrong_password_is_retryable_and_hidden(
    sink: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = sink.url().replace(SECRET, "wrong-Pass-77")
    with pytest.raises(DeliveryError) as info:
        await channel().send(delivery(url))
    assert info.value.retryable
    assert sink.failed_logins >= 1 and not sink.messages
    for text in (str(info.value), caplog.text):
        assert "wrong-Pass-77" not in text and "Backup failed" not in text


@pytest.mark.trio
async def test_url_that_no_longer_loads_is_permanent() -> None:
    d = delivery("mailto://user:pw@example.com")
    d.channel.config = {"url": f"nosuch://user:{SECRET}@example.com"}
    with pytest.raises(DeliveryError) as info:
        await channel().send(d)
    assert not info.value.retryable
    assert "nosuch://" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.trio
async def test_send_is_cancellable_while_the_server_hangs() -> None:
    # A listener that never answers: the SMTP greeting never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"mailto://127.0.0.1:{silent.getsockname()[1]}/a@example.com?from=n@example.com"
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
            await channel().send(delivery(url))
        assert trio.current_time() - start < 2


# -- secrets in logs of HTTP services (a local fake webhook peer) ------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def daemon_log() -> Iterator[list[str]]:
    """What the daemon's log handlers (on the root logger) would get, at DEBUG."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name}: {record.getMessage()}")

    root, handler = logging.getLogger(), Collect()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


TOKEN = "whTok3n9xQ7pL2mZ"


@pytest.mark.trio
async def test_webhook_token_is_used_but_never_logged(
    webhook: ThreadingHTTPServer, daemon_log: list[str]
) -> None:
    port = webhook.server_address[1]
    await channel().send(delivery(f"mmost://127.0.0.1:{port}/{TOKEN}"))
    assert [path for path, _ in webhook.requests] == [f"/hooks/{TOKEN}"]  # type: ignore[attr-defined]
    text = "\n".join(daemon_log)
    # Apprise and urllib3 both log the request URL; the token is blanked in each.
    assert "apprise: Mattermost webhook POST URL" in text and "/hooks/****" in text
    assert TOKEN not in text and "Backup failed" not in text


@pytest.mark.trio
async def test_webhook_down_error_hides_token(daemon_log: list[str]) -> None:
    with pytest.raises(DeliveryError) as info:
        await channel().send(delivery(f"mmost://127.0.0.1:{free_port()}/{TOKEN}"))
    assert info.value.retryable and "Connection refused" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in "\n".join(daemon_log)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("priority", "query", "header"),
    [(5, "", "max"), (4, "", "high"), (1, "", "min"), (3, "", None), (5, "?priority=low", "low")],
)
async def test_ntfy_priority_follows_the_event_unless_the_url_sets_it(
    webhook: ThreadingHTTPServer, priority: int, query: str, header: str | None
) -> None:
    port = webhook.server_address[1]
    await channel().send(delivery(f"ntfy://127.0.0.1:{port}/alerts{query}", priority=priority))
    [(_, headers)] = webhook.requests  # type: ignore[attr-defined]
    assert headers.get("X-Priority") == header
