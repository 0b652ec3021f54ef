"""The tools of docs/integrations.md, each sending to a real daemon exactly the request it
builds (read from each tool's source), and the stored event checked field by field.

- Uptime Kuma: ``server/notification-providers/ntfy.js`` (``POST /`` with JSON, the
  monitor's tags, a "view" action) and ``gotify.js`` (``POST /message?token=`` JSON).
- Healthchecks.io: ``hc/api/transports.py`` ``Ntfy`` (``POST /`` JSON, Bearer) and
  ``Gotify`` (``POST /message?token=`` JSON with markdown extras, no priority).
- Sonarr/Radarr: ``Notifications/Ntfy/NtfyProxy.cs`` (``POST /<topic>``, everything in
  ``X-`` headers, no body) and ``Gotify/GotifyProxy.cs`` (form fields; v4's
  ``GotifyMessage`` JSON with extras).
- Proxmox VE: ``proxmox-notify/src/endpoints/gotify.rs`` (``POST /message``, Bearer and
  ``X-Gotify-Key``, the body in a code block, severity → priority) and its webhook
  target as docs/integrations.md configures it (``POST /<topic>`` with ``X-`` headers).
- Watchtower: shoutrrr's ``pkg/services/gotify`` (token checked client-side).
- changedetection.io: the real Apprise library with ``ntfy://`` and ``gotify://`` URLs.

Alertmanager, Grafana, GitHub, Gitea and TrueNAS (Slack) go through inbound hooks:
their tests are in tests/test_hooks.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import apprise
import httpx
import pytest
from conftest import TLS, Daemon, EngineDatabases

PASSWORD = "correct horse battery"
#: what the tools' HTTP clients call themselves
AXIOS = "axios/1.7.7"  # Uptime Kuma
PYCURL = "healthchecks.io"  # Healthchecks' HttpTransport (pycurl) sets this
SONARR = "Sonarr/4.0.9.2244 (ubuntu 22.04)"
PROXMOX = "proxmox-backup-client/1.0"  # proxmox_http's default User-Agent
SHOUTRRR = "Go-http-client/1.1"


@pytest.fixture(scope="module")
def nd(
    tmp_path_factory: pytest.TempPathFactory, engine: str, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    """One daemon for the module; alice (password) may write the tools' topics."""
    databases = EngineDatabases(request, engine)
    d = Daemon(tmp_path_factory.mktemp("integrations") / "data", database_url=databases.new())
    d.data_dir.mkdir()
    request.addfinalizer(databases.drop_all)
    d.start()
    with d.admin() as c:
        r = c.post("/v1/users", json={"name": "alice", "role": "user", "password": PASSWORD})
        assert r.status_code == 201, r.text
        for pattern in ("uptime", "healthchecks", "sonarr", "radarr", "proxmox", "changes",
                        "gotify/*"):  # fmt: skip
            r = c.post("/v1/acl", json={"user": "alice", "pattern": pattern, "permission": "rw"})
            assert r.status_code == 201, r.text
    yield d
    d.stop()


def token(d: Daemon, topics: str | None = None) -> str:
    """A notifyd publish token of alice (``notifyd tokens create --scope publish``)."""
    body: dict[str, Any] = {"user": "alice", "scopes": ["publish"]}
    if topics:
        body["topics"] = topics
    with d.admin() as c:
        r = c.post("/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def gotify_app(d: Daemon, name: str) -> dict:
    """A Gotify application made as in Gotify's web UI (``POST /application``)."""
    with httpx.Client(base_url=d.url, timeout=10, verify=TLS) as c:
        r = c.post("/application", json={"name": name}, auth=("alice", PASSWORD))
        assert r.status_code == 200, r.text
        return dict(r.json())


def client(d: Daemon, user_agent: str) -> httpx.Client:
    return httpx.Client(base_url=d.url, timeout=10, verify=TLS,
                        headers={"User-Agent": user_agent})  # fmt: skip


def basic(name: str = "alice", password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def event(d: Daemon, event_id: int | str) -> dict:
    with d.admin() as c:
        r = c.get(f"/v1/events/{int(event_id)}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def newest(d: Daemon, topic: str) -> dict:
    with d.admin() as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 1})
        assert r.status_code == 200, r.text
        (ev,) = r.json()["events"]
        return dict(ev)


def post_json(c: httpx.Client, url: str, body: dict, **kw: Any) -> httpx.Response:
    """A JSON POST as the tools' clients send it (the body serialised by the tool)."""
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return c.post(url, content=json.dumps(body).encode(), headers=headers, **kw)


# -- Uptime Kuma ----------------------------------------------------------------------------


def test_uptime_kuma_ntfy(nd: Daemon) -> None:
    """Monitor "web" (tags env=prod and "edge") goes down, then up; then the test button.
    Settings: server URL, topic ``uptime``, priority 4, user name and password."""
    with client(nd, AXIOS) as c:
        down = post_json(c, "http://" + urlsplit(nd.url).netloc, {
            "topic": "uptime",
            "message": "[web] [🔴 Down] timeout of 48000ms exceeded",
            "priority": 5,  # Down: priority + 1
            "title": "web Down [Uptime-Kuma]",
            "tags": ["red_circle", "env: prod", "edge"],
            "actions": [{"action": "view", "label": "Open web", "url": "https://www.example.org/"}],
        }, headers={"Authorization": basic()})  # fmt: skip
        assert down.status_code == 200, down.text
        ev = event(nd, down.json()["id"])
        assert (ev["topic"], ev["title"], ev["priority"]) == ("uptime", "web Down [Uptime-Kuma]", 5)
        assert ev["body"] == "[web] [🔴 Down] timeout of 48000ms exceeded"
        assert ev["tags"] == ["red_circle", "env-prod", "edge"]
        assert ev["actions"] == [{"label": "Open web", "url": "https://www.example.org/"}]

        up = post_json(c, "/", {
            "topic": "uptime", "message": "[web] [✅ Up] 200 - OK", "priority": 4,
            "title": "web Up [Uptime-Kuma]", "tags": ["green_circle"],
            "actions": [{"action": "view", "label": "Open web", "url": "https://www.example.org/"}],
            "icon": "https://uptime.example.org/icon.svg",
        }, headers={"Authorization": basic()})  # fmt: skip
        assert up.status_code == 200, up.text
        ev = event(nd, up.json()["id"])
        assert (ev["title"], ev["priority"], ev["tags"]) == (
            "web Up [Uptime-Kuma]",
            4,
            ["green_circle"],
        )
        assert ev["icon"] == "https://uptime.example.org/icon.svg"

        # the "Test" button: no heartbeat, tag test_tube
        test = post_json(c, "/", {"topic": "uptime", "title": "uptime [Uptime-Kuma]",
                                  "message": "Uptime Kuma Testing", "priority": 4,
                                  "tags": ["test_tube"]},
                         headers={"Authorization": "Bearer " + token(nd, "uptime")})  # fmt: skip
        assert test.status_code == 200, test.text
        assert event(nd, test.json()["id"])["tags"] == ["test_tube"]


def test_uptime_kuma_gotify(nd: Daemon) -> None:
    app = gotify_app(nd, "Uptime Kuma")
    with client(nd, AXIOS) as c:
        r = post_json(c, f"/message?token={app['token']}", {
            "message": "[web] [🔴 Down] timeout of 48000ms exceeded",
            "priority": 8,  # its default
            "title": "Uptime-Kuma",
        })  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"], ev["priority"]) == ("gotify/Uptime-Kuma", "Uptime-Kuma", 5)
    assert ev["body"] == "[web] [🔴 Down] timeout of 48000ms exceeded"


# -- Healthchecks.io ------------------------------------------------------------------------------


def test_healthchecks_ntfy(nd: Daemon) -> None:
    """Integration "ntfy": server URL, topic ``healthchecks``, token; priority for
    "down" 5 (urgent), for "up" 3 (0 would mean: do not notify)."""
    cloaked = "https://healthchecks.example.org/cloaked/9f0c2a1b-7d47-4c5e-9a61-2ad3e1f4c0b7/"
    message = (
        'The check "backup-db" received a ping from 203.0.113.7.\n\n'
        "Project: homelab\nTags: backup, db\nPeriod: 1 day\nLast ping: 1 day ago"
    )
    with client(nd, PYCURL) as c:
        r = post_json(c, "/", {
            "topic": "healthchecks",
            "priority": 5,
            "title": "backup-db is DOWN",
            "message": message,
            "tags": ["red_circle"],
            "actions": [{"action": "view", "label": "View on Healthchecks", "url": cloaked}],
        }, headers={"Authorization": "Bearer " + token(nd, "healthchecks")})  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"], ev["body"]) == ("healthchecks", "backup-db is DOWN", message)
    assert (ev["priority"], ev["tags"]) == (5, ["red_circle"])
    assert ev["actions"] == [{"label": "View on Healthchecks", "url": cloaked}]


def test_healthchecks_gotify(nd: Daemon) -> None:
    app = gotify_app(nd, "Healthchecks")
    with client(nd, PYCURL) as c:
        r = post_json(c, f"/message?token={app['token']}", {
            "title": "backup-db is DOWN",
            "message": "The check **backup-db** is **DOWN** (success signal not received on time).",
            "extras": {"client::display": {"contentType": "text/markdown"}},
        })  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"], ev["format"]) == (
        "gotify/Healthchecks", "backup-db is DOWN", "markdown"
    )  # fmt: skip
    assert ev["priority"] == 1  # no priority: Gotify's 0, the lowest


# -- Sonarr / Radarr --------------------------------------------------------------------------


def test_sonarr_ntfy(nd: Daemon) -> None:
    """Connection "ntfy": server URL, access token, topics ``sonarr``, priority High,
    tags, click URL. Everything travels in headers; the body is empty."""
    with client(nd, SONARR) as c:
        r = c.post("/sonarr", content=b"", headers={
            "X-Title": "Sonarr - Episode Downloaded",
            "X-Message": "The Expanse - S06E06 - Babylon's Ashes [WEBDL-1080p]",
            "X-Priority": "4",
            "X-Tags": "tv,sonarr",
            "X-Click": "https://sonarr.example.org/series/the-expanse",
            "Authorization": "Bearer " + token(nd, "sonarr"),
        })  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"], ev["priority"]) == (
        "sonarr",
        "Sonarr - Episode Downloaded",
        4,
    )
    assert ev["body"] == "The Expanse - S06E06 - Babylon's Ashes [WEBDL-1080p]"
    assert ev["tags"] == ["tv", "sonarr"]
    assert ev["click"] == "https://sonarr.example.org/series/the-expanse"


def test_radarr_ntfy_with_user_and_password(nd: Daemon) -> None:
    """Radarr's NtfyProxy is Sonarr's; with a user name and password .NET sends Basic."""
    with client(nd, "Radarr/5.8.3.8933 (debian 12)") as c:
        r = c.post("/radarr", content=b"", headers={
            "X-Title": "Radarr - Movie Grabbed", "X-Message": "Dune: Part Two (2024) [Bluray-2160p]",
            "X-Priority": "3", "Authorization": basic(),
        })  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"], ev["body"], ev["priority"]) == (
        "radarr", "Radarr - Movie Grabbed", "Dune: Part Two (2024) [Bluray-2160p]", 3
    )  # fmt: skip


def test_sonarr_gotify(nd: Daemon) -> None:
    app = gotify_app(nd, "Sonarr")
    with client(nd, SONARR) as c:
        # GotifyProxy: form fields, the token in the query
        r = c.post(f"/message?token={app['token']}", data={
            "title": "Episode Downloaded",
            "message": "The Expanse - S06E06 - Babylon's Ashes [WEBDL-1080p]",
            "priority": "5",  # GotifyPriority.Normal
        })  # fmt: skip
        assert r.status_code == 200, r.text
        ev = event(nd, r.json()["id"])
        assert (ev["topic"], ev["title"], ev["priority"]) == (
            "gotify/Sonarr",
            "Episode Downloaded",
            3,
        )
        # v4's GotifyMessage: JSON with markdown, the poster and a link in extras
        r = post_json(c, "/message", {
            "title": "Episode Downloaded",
            "message": "**The Expanse** - S06E06",
            "priority": 8,
            "extras": {
                "client::display": {"contentType": "text/markdown"},
                "client::notification": {
                    "bigImageUrl": "https://artworks.thetvdb.com/banners/posters/280619-1.jpg",
                    "click": {"url": "https://sonarr.example.org/series/the-expanse"},
                },
            },
        }, headers={"X-Gotify-Key": app["token"]})  # fmt: skip
        assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["format"], ev["priority"]) == ("markdown", 5)
    assert ev["image"] == "https://artworks.thetvdb.com/banners/posters/280619-1.jpg"
    assert ev["click"] == "https://sonarr.example.org/series/the-expanse"


# -- Proxmox VE ----------------------------------------------------------------------------------


def test_proxmox_gotify(nd: Daemon) -> None:
    """Datacenter → Notifications → Add → Gotify: server URL and an application token.
    The body goes in a code block as markdown; severity error → priority 9."""
    app = gotify_app(nd, "Proxmox")
    text = "Backup job failed: vzdump 101 --storage nas\nERROR: Backup of VM 101 failed"
    with client(nd, PROXMOX) as c:
        r = post_json(c, "/message", {
            "title": "vzdump backup status (pve1.example.org): backup failed",
            "message": f"```\n{text}\n```",
            "priority": 9,
            "extras": {"client::display": {"contentType": "text/markdown"}},
        }, headers={"Authorization": f"Bearer {app['token']}", "X-Gotify-Key": app["token"]})  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert ev["topic"] == "gotify/Proxmox" and ev["priority"] == 5
    assert ev["title"] == "vzdump backup status (pve1.example.org): backup failed"
    assert (ev["body"], ev["format"]) == (f"```\n{text}\n```", "markdown")
    # severities info, notice, warning → Gotify 1, 3, 5 → notifyd 1, 2, 3
    with client(nd, PROXMOX) as c:
        got = []
        for prio in (1, 3, 5):
            r = post_json(c, "/message", {"title": "t", "message": "m", "priority": prio},
                          headers={"X-Gotify-Key": app["token"]})  # fmt: skip
            got.append(event(nd, r.json()["id"])["priority"])
    assert got == [1, 2, 3]


def test_proxmox_webhook_ntfy(nd: Daemon) -> None:
    """Datacenter → Notifications → Add → Webhook, as docs/integrations.md sets it up:
    method POST, URL ``{base}/proxmox``, headers ``Authorization: Bearer
    {{ secrets.token }}``, ``X-Title: {{ title }}``, ``X-Tags: proxmox,{{ severity }}``,
    body ``{{ message }}``; rendered by Proxmox, this is what arrives."""
    with client(nd, PROXMOX) as c:
        r = c.post("/proxmox", content=b"Backup of VM 101 failed: storage 'nas' is not online",
                   headers={"Authorization": "Bearer " + token(nd, "proxmox"),
                            "X-Title": "vzdump backup status (pve1): backup failed",
                            "X-Tags": "proxmox,error"})  # fmt: skip
    assert r.status_code == 200, r.text
    ev = event(nd, r.json()["id"])
    assert (ev["topic"], ev["title"]) == ("proxmox", "vzdump backup status (pve1): backup failed")
    assert ev["body"] == "Backup of VM 101 failed: storage 'nas' is not online"
    assert ev["tags"] == ["proxmox", "error"]


# -- Watchtower (shoutrrr) ------------------------------------------------------------------------


def test_watchtower_gotify(nd: Daemon) -> None:
    """``WATCHTOWER_NOTIFICATION_URL=gotify://notify.example.org/<token>``: shoutrrr
    checks the token (15 characters, ``A`` first) before it sends anything."""
    app = gotify_app(nd, "Watchtower")
    tok = app["token"]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
    assert len(tok) == 15 and tok[0] == "A" and all(ch in alphabet for ch in tok)
    with client(nd, SHOUTRRR) as c:
        r = post_json(c, f"/message?token={tok}", {
            "message": "Found new image for containrrr/watchtower:latest\n"
                       "Stopping /nginx (8e1c2d3f4a5b) with SIGTERM",
            "title": "Watchtower updates on nas",
            "priority": 0,
        })  # fmt: skip
    assert r.status_code == 200, r.text
    reply = r.json()
    assert {"id", "appid", "date", "message", "title", "priority"} <= set(reply)
    ev = event(nd, reply["id"])
    assert (ev["topic"], ev["title"], ev["priority"]) == (
        "gotify/Watchtower", "Watchtower updates on nas", 1
    )  # fmt: skip
    assert ev["body"].startswith("Found new image for containrrr/watchtower:latest\n")


# -- changedetection.io (Apprise) --------------------------------------------------------------


def apprise_send(url: str, title: str, body: str, fmt: str = apprise.NotifyFormat.TEXT) -> None:
    a = apprise.Apprise()
    assert a.add(url), url
    assert a.notify(title=title, body=body, body_format=fmt)


def test_changedetection_apprise_ntfy(nd: Daemon) -> None:
    host = urlsplit(nd.url).netloc
    title = "ChangeDetection.io Notification - https://shop.example.org/gpu"
    body = "https://shop.example.org/gpu had a change.\n---\n(changed) Price: 499 EUR\n---"
    # user name and password in the URL
    apprise_send(f"ntfy://alice:{PASSWORD.replace(' ', '%20')}@{host}/changes", title, body)
    ev = newest(nd, "changes")
    assert (ev["title"], ev["body"], ev["priority"]) == (title, body, 3)
    # a notifyd token (it does not start with ntfy's tk_, so say auth=token)
    tok = token(nd, "changes")
    apprise_send(f"ntfy://{host}/changes?token={tok}&auth=token&priority=high&tags=shop&format=markdown",
                 title, "markdown **body**", apprise.NotifyFormat.MARKDOWN)  # fmt: skip
    ev = newest(nd, "changes")
    assert (ev["body"], ev["format"], ev["priority"]) == ("markdown **body**", "markdown", 4)
    assert ev["tags"] == ["shop"]


def test_changedetection_apprise_gotify(nd: Daemon) -> None:
    app = gotify_app(nd, "changedetection")
    host = urlsplit(nd.url).netloc
    apprise_send(f"gotify://{host}/{app['token']}?priority=high", "Price changed",
                 "https://shop.example.org/gpu had a change.")  # fmt: skip
    ev = newest(nd, "gotify/changedetection")
    assert (ev["title"], ev["body"]) == (
        "Price changed",
        "https://shop.example.org/gpu had a change.",
    )
    assert ev["priority"] == 5  # Apprise's high is Gotify's 8: notifyd's 8–10 are 5
