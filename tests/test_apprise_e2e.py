"""The Apprise channel end to end: the real daemon, a real SMTP server (aiosmtpd).

A ``mailto://`` channel added through ``/v1/channels`` gets the published events
(and the test notification); a delivery is retried until the mail server is up
and then ``sent``; bad URLs are a 422 on ``url``; the password shows up nowhere:
not in the API, the CLI, ``last_error`` or the daemon's log at debug level.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from smtpsink import SMTPSink
from test_apprise import CREDS, SECRET


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    s = SMTPSink(credentials=CREDS).start()
    yield s
    s.stop()


def deliveries(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = c.get("/v1/deliveries", params=params)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def add_channel(c: httpx.Client, url: str, name: str = "mail") -> dict[str, Any]:
    r = c.post("/v1/channels", json={"name": name, "url": url})
    assert r.status_code == 201, r.text
    assert SECRET not in r.text
    return r.json()


def test_e2e_email_through_the_daemon(make_daemon: Any, sink: SMTPSink) -> None:
    d = make_daemon().start()
    with d.admin() as c:
        created = add_channel(c, sink.url())
        assert created["kind"] == "apprise" and created["config"]["service"] == "E-Mail"
        listed = c.get("/v1/channels", params={"all": "true"})
        assert listed.status_code == 200 and SECRET not in listed.text
        assert [ch["name"] for ch in listed.json()["channels"]] == ["mail"]

        ev = d.publish("alerts/disk", title="Disk almost full", body="93% on /var", priority="high")
        [mail] = sink.wait_for_messages(1)
        assert mail.subject == "Disk almost full" and mail.authenticated_as == "mailer"
        assert "93% on /var" in mail.text() and f"#event-{ev['id']}" in mail.text()
        assert mail.message["X-Priority"].startswith("2")
        wait_for(lambda: [x["state"] for x in deliveries(c)] == ["sent"], message="sent")

        d.publish("alerts/hr", title="Payroll run", body="salaries attached", sensitive=True)
        mail = sink.wait_for_messages(2)[1]
        assert mail.subject == "New notification in general"
        assert "Payroll" not in mail.message.as_string()
        assert "salaries" not in mail.message.as_string()

        r = c.post("/v1/channels/mail/test")
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
        assert sink.wait_for_messages(3)[2].subject == "Test notification from notifyd"
    assert SECRET not in d.log()


def test_e2e_retries_until_the_mail_server_is_up(make_daemon: Any) -> None:
    sink = SMTPSink(credentials=CREDS)  # not started: the server is down
    # At debug level the log holds every line Apprise and urllib3 wrote: none has the password.
    env = {"NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.2", "NOTIFYD_LOG_LEVEL": "debug"}
    d = make_daemon(extra_env=env).start()
    try:
        with d.admin() as c:
            add_channel(c, sink.url())
            d.publish("alerts", title="Retry me", body="once the server is back")
            [failed] = wait_for(
                lambda: [x for x in deliveries(c) if x["attempts"] >= 1 and x["last_error"]],
                message="a failed first attempt",
            )
            assert failed["state"] == "pending"
            assert "E-Mail" in failed["last_error"] and SECRET not in failed["last_error"]
            assert not sink.messages
            sink.start()
            [mail] = sink.wait_for_messages(1, timeout=20)
            assert mail.subject == "Retry me"
            [done] = wait_for(lambda: deliveries(c, state="sent"), message="state sent")
            assert done["attempts"] >= 2
    finally:
        sink.stop()
    log = d.log()
    assert "apprise: Applying user credentials" in log and SECRET not in log


def test_e2e_bad_urls_are_422_on_url(daemon: Daemon) -> None:
    with daemon.admin() as c:
        for url in (f"nosuch://user:{SECRET}@host", f"mailto://user:{SECRET}@", "not a url"):
            r = c.post("/v1/channels", json={"name": "bad", "url": url})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["field"] == "url"
            assert SECRET not in r.text
        assert c.get("/v1/channels").json()["channels"] == []
    assert SECRET not in daemon.log()


def test_e2e_cli_lists_channels_without_the_password(daemon: Daemon) -> None:
    url = f"mailto://mailer:{SECRET}@smtp.example.com/ops@example.com"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "notifyd", *args, "--socket", str(daemon.socket)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    added = cli("channels", "add", "mail", url)
    assert added.returncode == 0, added.stderr
    for out in (added, cli("channels", "list"), cli("channels", "list", "--json")):
        assert "mail" in out.stdout and SECRET not in out.stdout + out.stderr
