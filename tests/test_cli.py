"""The CLI end to end, as a subprocess against the real daemon (over the socket and TCP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import Daemon, wait_for


def cli(daemon: Daemon | None, *args: str, input: str | None = None, env: dict | None = None,
        socket: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    if daemon is not None and socket:
        full_env["NOTIFYD_SOCKET"] = str(daemon.socket)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "notifyd", *args],
        input=input, capture_output=True, text=True, timeout=60, env=full_env,
    )  # fmt: skip


def test_send_history_read_over_the_socket(daemon: Daemon) -> None:
    r = cli(daemon, "send", "backups", "nightly backup done", "--title", "Backup", "--priority", "high",
            "--tag", "nightly", "--action", "Logs=https://example.org/logs")  # fmt: skip
    assert r.returncode == 0, r.stderr
    event_id = int(r.stdout.strip())

    r = cli(daemon, "send", "alerts", "--category", "disk", input="disk at 91%\n")
    assert r.returncode == 0, r.stderr
    second = int(r.stdout.strip())
    assert second > event_id

    r = cli(daemon, "history", "--json", "--unread")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    assert [e["id"] for e in events] == [second, event_id]
    assert events[1]["priority"] == 4 and events[1]["tags"] == ["nightly"]
    assert events[1]["actions"] == [{"label": "Logs", "url": "https://example.org/logs"}]
    assert events[0]["body"].strip() == "disk at 91%"

    r = cli(daemon, "history")  # the table for people
    assert r.returncode == 0 and "Backup" in r.stdout and "alerts" in r.stdout

    assert cli(daemon, "read", str(event_id)).returncode == 0
    r = cli(daemon, "history", "--json", "--unread")
    assert [e["id"] for e in json.loads(r.stdout)["events"]] == [second]

    r = cli(daemon, "read", "999999")
    assert r.returncode != 0 and "999999" in (r.stderr + r.stdout)

    assert cli(daemon, "read", "--all").returncode == 0
    r = cli(daemon, "history", "--json", "--unread")
    assert json.loads(r.stdout)["events"] == []


def test_curl_publish_shows_up_in_tail(daemon: Daemon) -> None:
    """The README's tour: `notifyd tail` follows, an HTTP publish with a token appears."""
    r = cli(daemon, "tokens", "create", "--user", "admin")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("nfy_") and "\n" not in token

    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    env["NOTIFYD_SOCKET"] = str(daemon.socket)
    tail = subprocess.Popen(
        [sys.executable, "-m", "notifyd", "tail", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: httpx.get(daemon.url + "/healthz").json()["stream_clients"] >= 1,
                 timeout=20, message="tail to connect")  # fmt: skip
        r = httpx.post(
            daemon.url + "/v1/events",
            headers={"Authorization": f"Bearer {token}"},
            json={"topic": "ci/main", "title": "Build 812 failed", "priority": "urgent"},
        )
        assert r.status_code == 201
        assert tail.stdout is not None
        line = tail.stdout.readline()  # blocks until the event arrives (or tail dies)
        event = json.loads(line)
        assert event["id"] == r.json()["id"]
        assert event["title"] == "Build 812 failed" and event["priority"] == 5
    finally:
        tail.terminate()
        tail.wait(10)


def test_tcp_with_token_and_clear_errors(daemon: Daemon, tmp_path: Path) -> None:
    r = cli(daemon, "users", "add", "alice", "--password-stdin", input="correct horse battery\n")
    assert r.returncode == 0, r.stderr
    assert cli(daemon, "acl", "grant", "alice", "home/*", "rw").returncode == 0
    token = cli(daemon, "tokens", "create", "--user", "alice").stdout.strip()

    tcp = {"NOTIFYD_URL": daemon.url, "NOTIFYD_TOKEN": token}
    r = cli(daemon, "send", "home/door", "opened", env=tcp, socket=False)
    assert r.returncode == 0, r.stderr
    r = cli(daemon, "send", "work/secret", "nope", env=tcp, socket=False)
    assert r.returncode != 0 and "not allowed" in r.stderr

    r = cli(daemon, "users", "list", "--json")
    users = {u["name"]: u for u in json.loads(r.stdout)["users"]}
    assert users["alice"]["has_password"] and users["admin"]["role"] == "admin"

    # bad input: a message and a non-zero exit, nothing stored
    before = cli(daemon, "history", "--json").stdout
    r = cli(daemon, "send", "alerts", "x", "--priority", "huge")
    assert r.returncode != 0 and "priority" in r.stderr
    r = cli(daemon, "send", "bad//topic", "x")
    assert r.returncode != 0 and "topic" in r.stderr
    assert cli(daemon, "history", "--json").stdout == before

    # no token over TCP, and no daemon at all
    r = cli(None, "history", env={"NOTIFYD_URL": daemon.url})
    assert r.returncode != 0 and "token" in r.stderr.lower()
    r = cli(None, "history", env={"NOTIFYD_SOCKET": str(tmp_path / "nothing.sock")})
    assert r.returncode != 0 and "daemon running" in r.stderr


def test_channels_prefs_and_plugins_commands(daemon: Daemon) -> None:
    url = "mailto://mailer:S3CRET-pw@127.0.0.1:2525/ops@example.com?from=notifyd@example.com"
    r = cli(daemon, "channels", "add", "email", url)
    assert r.returncode == 0, r.stderr
    r = cli(daemon, "channels", "list")
    assert r.returncode == 0 and "email" in r.stdout and "S3CRET" not in r.stdout
    r = cli(daemon, "channels", "add", "bad", "nosuchservice://x")
    assert r.returncode != 0 and "S3CRET" not in r.stderr

    r = cli(daemon, "prefs", "set", "--quiet-hours", "22:00-07:00", "--timezone", "Europe/Berlin",
            "--mute", "noisy/*", "--digest", "email=600", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli(daemon, "prefs", "show", "--json").stdout)
    assert doc["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert doc["rules"][0] == {
        "topic": "noisy/*",
        "category": None,
        "min_priority": 1,
        "channels": None,
        "mute": True,
    }
    assert doc["digests"] == {"email": 600}
    r = cli(daemon, "prefs", "set", "--timezone", "Mars/Olympus")
    assert r.returncode != 0 and "timezone" in r.stderr

    r = cli(None, "plugins")
    assert r.returncode == 0 and "apprise" in r.stdout and "webpush" in r.stdout
    r = cli(daemon, "deliveries", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["deliveries"] == []
