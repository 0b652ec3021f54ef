"""ntfy compatibility, tested against a real daemon from ntfy's protocol docs
(docs/publish.md, docs/subscribe/api.md) and its server's behaviour.

Publishing in every documented form (headers in each spelling, query parameters,
the JSON body of ``POST /``, webhooks via GET), read back through ``/v1/events``;
subscribing on each stream kind (json, sse, raw, ws) — on a new connection (the
raw-socket fast path) and on a reused keep-alive one (through hypercorn) — to
events published through ``/v1``; ``open`` first, keepalives at the configured
interval, ``since``/``poll`` and the filters; every form of credentials and the
refusals (which store nothing); UnifiedPush bodies; sequence ids; reserved
names; ntfy's error shape. Every wait is on a condition under a deadline.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from conftest import Daemon, EngineDatabases, pg_rows
from test_streams import http_exchange, sync

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

KEEPALIVE = 0.5  # the module daemon's ntfy_keepalive_seconds
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def nd(
    tmp_path_factory: pytest.TempPathFactory, engine: str, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    """One daemon for the module (tests use their own topics), with users:
    bob (password, rw on ``bob*``, read on ``news``), carol (no grants)."""
    databases = EngineDatabases(request, engine)
    d = Daemon(tmp_path_factory.mktemp("ntfy") / "data", database_url=databases.new(),
               extra_env={"NOTIFYD_NTFY_KEEPALIVE_SECONDS": str(KEEPALIVE)})  # fmt: skip
    d.data_dir.mkdir()
    request.addfinalizer(databases.drop_all)  # after the daemon stopped (finalizers: LIFO)
    d.start()
    d.tokens = {  # type: ignore[attr-defined]
        "bob": d.user("bob", grants={"bob*": "rw", "news": "read"}),
        "bob_read": d.user("bob", scopes=["subscribe"]),
        "carol": d.user("carol"),
    }
    with d.admin() as c:
        r = c.put("/v1/users/bob/password", json={"password": PASSWORD})
        assert r.status_code == 204, r.text
    yield d
    d.stop()


def tok(d: Daemon, name: str = "bob") -> str:
    return d.tokens[name]  # type: ignore[attr-defined]


def bearer(d: Daemon, name: str = "bob") -> dict[str, str]:
    return {"Authorization": f"Bearer {tok(d, name)}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def auth_param(header_value: str) -> str:
    """ntfy's ``?auth=``: raw (unpadded) base64 of the Authorization value."""
    return base64.urlsafe_b64encode(header_value.encode()).decode().rstrip("=")


def events(d: Daemon, topic: str) -> list[dict]:
    """The topic's history through /v1 (as the admin), oldest first."""
    with d.admin() as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 500, "archived": "include"})
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["events"]))


def last(d: Daemon, topic: str) -> dict:
    evs = events(d, topic)
    assert evs, f"nothing stored in {topic}"
    return evs[-1]


def post(d: Daemon, path: str, body: bytes | str = b"", *, method: str = "POST",
         headers: dict[str, str] | None = None, auth: str = "bob", **kw: Any) -> httpx.Response:  # fmt: skip
    h = {**(bearer(d, auth) if auth else {}), **(headers or {})}
    return httpx.request(method, d.url + path, content=body, headers=h, timeout=10, **kw)


def assert_ntfy_error(r: httpx.Response, status: int, code: int | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    # ntfy adds a documentation link to its 401/403 (Home Assistant's client needs it)
    assert set(body) == {"code", "http", "error"} | ({"link"} if status in (401, 403) else set())
    assert body["http"] == status and isinstance(body["error"], str) and body["error"]
    if code is not None:
        assert body["code"] == code, body
    return body


def scheduled_rows(d: Daemon) -> list[dict]:
    if d.engine == "postgresql":
        return [row[0] for row in pg_rows(d.database_url, "SELECT payload FROM scheduled")]
    conn = sqlite3.connect(f"file:{d.data_dir / 'notifyd.db'}?mode=ro", uri=True)
    try:
        return [json.loads(row[0]) for row in conn.execute("SELECT payload FROM scheduled")]
    finally:
        conn.close()


# -- publishing ---------------------------------------------------------------------------


def test_publish_answers_ntfys_message_object_and_stores_an_event(nd: Daemon) -> None:
    before = time.time()
    r = post(nd, "/bob-basic", "Backup successful 😀")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()
    ev = last(nd, "bob-basic")
    assert msg == {
        "id": str(ev["id"]), "time": msg["time"], "expires": msg["time"] + 30 * 86400,
        "event": "message", "topic": "bob-basic", "message": "Backup successful 😀",
    }  # fmt: skip
    assert before - 1 <= msg["time"] <= time.time() + 1
    assert ev["body"] == "Backup successful 😀" and ev["title"] == "" and ev["priority"] == 3
    assert ev["read"] is False and ev["category"] == "general"  # an ordinary notifyd event
    # PUT works too, and an empty body is ntfy's "triggered"
    r = post(nd, "/bob-basic", method="PUT")
    assert r.status_code == 200 and r.json()["message"] == "triggered"


@pytest.mark.parametrize(
    ("headers", "query", "field", "value"),
    [
        ({"X-Title": "T1"}, {}, "title", "T1"),
        ({"Title": "T2"}, {}, "title", "T2"),
        ({"t": "T3"}, {}, "title", "T3"),
        ({}, {"title": "T4"}, "title", "T4"),
        ({}, {"t": "T5"}, "title", "T5"),
        ({"X-Priority": "5"}, {}, "priority", 5),
        ({"Priority": "high"}, {}, "priority", 4),
        ({"p": "min"}, {}, "priority", 1),
        ({"prio": "max"}, {}, "priority", 5),
        ({"Priority": "urgent"}, {}, "priority", 5),
        ({}, {"priority": "low"}, "priority", 2),
        ({}, {"p": "2"}, "priority", 2),
        ({"Priority": "u=1, i"}, {}, "priority", 3),  # RFC 9218, added by browsers: ignored
        ({"X-Tags": "warning,skull"}, {}, "tags", ["warning", "skull"]),
        ({"Tags": "a, b"}, {}, "tags", ["a", "b"]),
        ({"ta": "dog"}, {}, "tags", ["dog"]),
        ({"tag": "+1,-1"}, {}, "tags", ["thumbsup", "thumbsdown"]),
        ({}, {"tags": "Daily Backup,mailsrv13"}, "tags", ["daily-backup", "mailsrv13"]),
        ({"X-Click": "https://example.com/c"}, {}, "click", "https://example.com/c"),
        ({"Click": "https://example.com/d"}, {}, "click", "https://example.com/d"),
        ({}, {"click": "https://example.com/e"}, "click", "https://example.com/e"),
        ({"X-Icon": "https://example.com/i.png"}, {}, "icon", "https://example.com/i.png"),
        ({}, {"icon": "https://example.com/j.png"}, "icon", "https://example.com/j.png"),
        ({"X-Markdown": "yes"}, {}, "format", "markdown"),
        ({"Markdown": "true"}, {}, "format", "markdown"),
        ({"md": "1"}, {}, "format", "markdown"),
        ({}, {"md": "1"}, "format", "markdown"),
        ({"Content-Type": "text/markdown"}, {}, "format", "markdown"),
        ({"X-Markdown": "no"}, {}, "format", "text"),
        ({"X-Sequence-ID": "job-1"}, {}, "collapse_key", "job-1"),
        ({"Sequence-ID": "job-2"}, {}, "collapse_key", "job-2"),
        ({"SID": "job-3"}, {}, "collapse_key", "job-3"),
        ({}, {"sid": "job-4"}, "collapse_key", "job-4"),
    ],
)  # fmt: skip
def test_publish_parameters_in_every_spelling(
    nd: Daemon, headers: dict[str, str], query: dict[str, str], field: str, value: Any
) -> None:
    topic = f"bob-spell-{abs(hash((tuple(headers.items()), tuple(query.items())))) % 10**8}"
    r = post(nd, f"/{topic}", "body text", headers=headers, params=query)
    assert r.status_code == 200, r.text
    assert last(nd, topic)[field] == value


def test_message_parameter_and_utf8_headers(nd: Daemon) -> None:
    # X-Message / ?message= give the message when there is no body; "\n" is a line break
    r = post(nd, "/bob-msg", headers={"X-Message": "line 1\\nline 2"})
    assert r.json()["message"] == "line 1\nline 2"
    r = post(nd, "/bob-msg", params={"m": "from query"})
    assert last(nd, "bob-msg")["body"] == "from query"
    # a body wins over the parameter, and is trimmed
    post(nd, "/bob-msg", "  body wins \n", params={"message": "param"})
    assert last(nd, "bob-msg")["body"] == "body wins"
    # raw UTF-8 and RFC 2047 encoded header values
    r = httpx.post(nd.url + "/bob-msg", content=b"x", timeout=10,
                   headers=[(b"Authorization", f"Bearer {tok(nd)}".encode()),
                            (b"Title", "Äpfel 🍎".encode())])  # fmt: skip
    assert r.status_code == 200 and last(nd, "bob-msg")["title"] == "Äpfel 🍎"
    post(nd, "/bob-msg", "x", headers={"Title": "=?UTF-8?B?8J+HqfCfh6o=?="})
    assert last(nd, "bob-msg")["title"] == "🇩🇪"
    post(nd, "/bob-msg", "x", headers={"Title": "=?UTF-8?Q?=C3=84pfel?="})
    assert last(nd, "bob-msg")["title"] == "Äpfel"
    # a title longer than notifyd keeps is shortened, not refused
    post(nd, "/bob-msg", "x", headers={"Title": "t" * 300})
    assert len(last(nd, "bob-msg")["title"]) == 256


def test_publish_as_json(nd: Daemon) -> None:
    doc = {
        "topic": "bob-json", "message": "Disk space is low at 5.1 GB",
        "title": "Low disk space alert", "tags": ["warning", "cd"], "priority": 4,
        "attach": "https://filesrv.lan/space.jpg", "filename": "diskspace.jpg",
        "click": "https://homecamera.lan/xasds1h2xsSsa/", "markdown": True,
        "actions": [{"action": "view", "label": "Admin panel", "url": "https://filesrv.lan/admin"}],
        "sequence_id": "disk-1", "icon": "https://example.com/icon.png",
    }  # fmt: skip
    r = post(nd, "/", json.dumps(doc), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    msg, ev = r.json(), last(nd, "bob-json")
    assert msg["id"] == str(ev["id"]) and msg["topic"] == "bob-json"
    assert (ev["title"], ev["body"], ev["priority"], ev["tags"], ev["format"]) == (
        "Low disk space alert",
        "Disk space is low at 5.1 GB",
        4,
        ["warning", "cd"],
        "markdown",
    )
    assert ev["image"] == "https://filesrv.lan/space.jpg"  # an image attachment by URL
    assert ev["click"] == "https://homecamera.lan/xasds1h2xsSsa/"
    assert ev["icon"] == "https://example.com/icon.png"
    assert ev["actions"] == [{"label": "Admin panel", "url": "https://filesrv.lan/admin"}]
    assert ev["collapse_key"] == "disk-1" and msg["sequence_id"] == "disk-1"
    # an attachment by URL, named by the JSON's "filename" (as ntfy names it)
    assert msg["attachment"]["url"] == "https://filesrv.lan/space.jpg"
    assert msg["attachment"]["name"] == "diskspace.jpg"
    assert msg["content_type"] == "text/markdown"
    # JSON fields win over headers, null means absent (the header then applies), other
    # headers still apply; no message is "triggered"
    r = post(nd, "/", json.dumps({"topic": "bob-json", "title": "json wins", "priority": None}),
             headers={"X-Title": "header", "X-Priority": "2", "X-Tags": "from-header"})  # fmt: skip
    ev = last(nd, "bob-json")
    assert (ev["title"], ev["priority"], ev["tags"], ev["body"]) == (
        "json wins",
        2,
        ["from-header"],
        "triggered",
    )
    # PUT / as well
    r = post(nd, "/", json.dumps({"topic": "bob-json", "message": "put"}), method="PUT")
    assert r.status_code == 200 and last(nd, "bob-json")["body"] == "put"
    # not message JSON
    for bad in (b"not json", b"[1, 2]", b'{"message": "no topic"}', b'{"topic": "a b"}'):
        body = assert_ntfy_error(post(nd, "/", bad), 400)
        assert body["code"] in (40017, 40009)


@pytest.mark.parametrize("verb", ["publish", "send", "trigger"])
def test_publish_via_get(nd: Daemon, verb: str) -> None:
    r = httpx.get(f"{nd.url}/bob-hook/{verb}", headers=bearer(nd), timeout=10)
    assert r.status_code == 200 and r.json()["message"] == "triggered"
    r = httpx.get(f"{nd.url}/bob-hook/{verb}", headers=bearer(nd), timeout=10,
                  params={"message": "Webhook triggered", "priority": "high",
                          "tags": "warning,skull", "title": "hook"})  # fmt: skip
    ev = last(nd, "bob-hook")
    assert r.json()["id"] == str(ev["id"])
    assert (ev["body"], ev["priority"], ev["tags"], ev["title"]) == (
        "Webhook triggered",
        4,
        ["warning", "skull"],
        "hook",
    )


def test_action_buttons_short_and_json_forms(nd: Daemon) -> None:
    short = ("view, Open portal, https://home.nest.com/, clear=true; "
             "http, Turn down, https://api.nest.com/, method=PUT")  # fmt: skip
    post(nd, "/bob-act", "A/C?", headers={"Actions": short})
    assert last(nd, "bob-act")["actions"] == [
        {"label": "Open portal", "url": "https://home.nest.com/"},
        {"label": "Turn down", "url": "https://api.nest.com/", "method": "PUT"},
    ]
    # key=value spelling, quotes around values holding commas; http defaults to POST
    post(nd, "/bob-act", "x", headers={
        "X-Actions": "action=http, label='Close, now', url=https://g.lan/close"})  # fmt: skip
    assert last(nd, "bob-act")["actions"] == [
        {"label": "Close, now", "url": "https://g.lan/close", "method": "POST"}
    ]
    # JSON array in the header; what notifyd cannot represent is left out
    actions = [
        {"action": "view", "label": "Site", "url": "https://example.com"},
        {"action": "broadcast", "label": "Take picture", "extras": {"cmd": "pic"}},
        {"action": "http", "label": "With body", "url": "https://x.lan/", "body": "{}"},
    ]
    r = post(nd, "/bob-act", "x", headers={"Actions": json.dumps(actions)})
    assert r.status_code == 200
    assert last(nd, "bob-act")["actions"] == [{"label": "Site", "url": "https://example.com"}]
    assert r.json()["actions"] == [{"id": r.json()["id"] + "-0", "action": "view", "label": "Site",
                                    "url": "https://example.com", "clear": False}]  # fmt: skip
    # invalid: unknown action, no label, no url, more than three
    for bad in ("jump, Go, https://x.lan", "view, , https://x.lan", '[{"action": "view"}]',
                "; ".join(["view, L, https://x.lan"] * 4)):  # fmt: skip
        assert_ntfy_error(post(nd, "/bob-act", "x", headers={"Actions": bad}), 400, 40018)


def test_attachments_by_url(nd: Daemon) -> None:
    r = post(nd, "/bob-att", headers={"Attach": "https://nest.com/view/yAxkasd.jpg"})
    ev = last(nd, "bob-att")
    assert ev["image"] == "https://nest.com/view/yAxkasd.jpg"
    assert ev["body"] == "You received a file: yAxkasd.jpg"
    assert r.json()["attachment"]["url"] == ev["image"]
    # other files become a button to open them
    post(nd, "/bob-att", "New version", params={"attach": "https://f-droid.org/F-Droid.apk"})
    ev = last(nd, "bob-att")
    assert ev["image"] is None
    assert ev["actions"] == [
        {"label": "Open F-Droid.apk", "url": "https://f-droid.org/F-Droid.apk"}
    ]
    # uploads are stored as files (tests/test_attachments.py has the details): a binary
    # body, a named file, and a text too long for a message, as ntfy names them
    png = post(nd, "/bob-att", b"\x89PNG\r\n\x1a\n\x00\xff", method="PUT")
    assert png.status_code == 200 and png.json()["attachment"]["name"] == "attachment.png"
    named = post(nd, "/bob-att", "short.txt", headers={"Filename": "a.txt"})
    assert named.status_code == 200 and named.json()["attachment"]["name"] == "a.txt"
    long = post(nd, "/bob-att", "x" * 4097)
    assert long.status_code == 200 and long.json()["attachment"]["name"] == "attachment.txt"
    assert_ntfy_error(post(nd, "/bob-att", "x", headers={"Attach": "ftp://x.lan/f"}), 400, 40013)
    assert_ntfy_error(post(nd, "/bob-att", "x", headers={"Icon": "file:///etc"}), 400, 40021)
    assert post(nd, "/bob-att", "é" * 4096).status_code == 200  # 4096 characters, 8 KiB


def test_scheduled_delivery_and_sequence_ids(nd: Daemon) -> None:
    now = time.time()
    r = post(nd, "/bob-later", "Good morning", headers={"In": "30m"})
    assert r.status_code == 200, r.text
    msg = r.json()
    assert msg["id"].startswith("s") and abs(msg["time"] - (now + 1800)) < 5
    assert events(nd, "bob-later") == []  # held until then
    for spelling in ({"X-Delay": str(int(now) + 3600)}, {"At": "tomorrow, 10am"},
                     {"X-In": "2 days"}, {"Delay": "2099-01-02T10:00:00Z"}):  # fmt: skip
        assert post(nd, "/bob-later", "x", headers=spelling).status_code == 200, spelling
    assert post(nd, "/bob-later", "x", params={"delay": "1h"}).status_code == 200
    assert_ntfy_error(post(nd, "/bob-later", "x", headers={"In": "5s"}), 400, 40005)
    assert_ntfy_error(post(nd, "/bob-later", "x", headers={"At": "whenever"}), 400, 40004)
    # a newer message with the same sequence id replaces a scheduled one (dead man's switch)
    for _ in range(3):
        assert post(nd, "/bob-later/heartbeat", "Server heartbeat stopped!",
                    headers={"In": "5m"}).status_code == 200  # fmt: skip
    beats = [p for p in scheduled_rows(nd) if p["collapse_key"] == "heartbeat"]
    assert len(beats) == 1 and beats[0]["topic"] == "bob-later"
    # and DELETE cancels it
    r = post(nd, "/bob-later/heartbeat", method="DELETE")
    assert r.status_code == 200 and r.json()["event"] == "message_delete"
    assert not [p for p in scheduled_rows(nd) if p["collapse_key"] == "heartbeat"]


def test_sequence_id_updates_replace_and_clear_and_delete(nd: Daemon) -> None:
    first = post(nd, "/bob-seq/dl-123", "Downloading file...").json()
    assert first["sequence_id"] == "dl-123"
    post(nd, "/bob-seq", "Download 50% ...", headers={"X-Sequence-ID": "dl-123"})
    post(nd, "/", json.dumps({"topic": "bob-seq", "message": "Download complete",
                              "sequence_id": "dl-123"}))  # fmt: skip
    # updates replace: history shows the newest only
    with nd.admin() as c:
        current = c.get("/v1/events", params={"topic": "bob-seq"}).json()["events"]
    assert [e["body"] for e in current] == ["Download complete"]
    # clear = read for the caller, on every device
    r = post(nd, "/bob-seq/dl-123/clear", method="PUT")
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("event", "topic", "sequence_id")} == {
        "event": "message_clear",
        "topic": "bob-seq",
        "sequence_id": "dl-123",
    }
    with httpx.Client(base_url=nd.url, headers=bearer(nd)) as c:
        mine = c.get("/v1/events", params={"topic": "bob-seq"}).json()["events"]
        assert mine[0]["read"] is True
        assert c.get("/bob-seq/dl-123/read").status_code == 200
        # delete = archived for the caller
        r = c.get("/bob-seq/dl-123/delete")
        assert r.status_code == 200 and r.json()["event"] == "message_delete"
        assert c.get("/v1/events", params={"topic": "bob-seq"}).json()["events"] == []
    assert_ntfy_error(post(nd, "/bob-seq", "x", headers={"X-Sequence-ID": "no spaces"}), 400)


# -- credentials ----------------------------------------------------------------------------


def test_every_form_of_credentials(nd: Daemon) -> None:
    token = tok(nd)
    forms: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"Authorization": f"Bearer {token}"}, {}),
        (basic("bob", PASSWORD), {}),
        (basic("", token), {}),
        (basic("bob", token), {}),
        ({}, {"auth": auth_param(basic("bob", PASSWORD)["Authorization"])}),
        ({}, {"auth": auth_param(f"Bearer {token}")}),
        ({}, {"authorization": auth_param(basic("", token)["Authorization"])}),
    ]
    for n, (headers, query) in enumerate(forms):
        r = httpx.post(f"{nd.url}/bob-auth", content=f"form {n}", headers=headers,
                       params=query, timeout=10)  # fmt: skip
        assert r.status_code == 200, (n, r.text)
        assert last(nd, "bob-auth")["body"] == f"form {n}"
        r = httpx.get(f"{nd.url}/bob-auth/json", headers=headers, timeout=10,
                      params={**query, "poll": "1", "since": "latest"})  # fmt: skip
        assert r.status_code == 200 and json.loads(r.text)["message"] == f"form {n}"
    # the Unix socket acts as the admin
    with nd.admin() as c:
        assert c.post("/carol-only", content="via socket").status_code == 200


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({}, {}, 401),
        (basic("bob", "wrong password"), {}, 401),
        (basic("nobody", PASSWORD), {}, 401),
        (basic("", "not-a-token"), {}, 401),
        (basic("carol", "nfy_unknown"), {}, 401),
        ({"Authorization": "Bearer nfy_unknown"}, {}, 401),
        ({"Authorization": "Bearer tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"}, {}, 401),
        ({"Authorization": "Digest x"}, {}, 401),
        ({}, {"auth": "!!!"}, 401),
        ({"Authorization": "carol"}, {}, 403),  # carol's token: no grant on bob-refused
        ({"Authorization": "bob_read"}, {}, 403),  # bob's token without scope publish
    ],
)
def test_refusals_store_nothing(
    nd: Daemon, headers: dict[str, str], query: dict[str, str], status: int
) -> None:
    if headers.get("Authorization") in ("carol", "bob_read"):
        headers = bearer(nd, headers["Authorization"])
    before = len(events(nd, "bob-refused"))
    r = httpx.post(f"{nd.url}/bob-refused", content="nope", headers=headers, params=query,
                   timeout=10)  # fmt: skip
    body = assert_ntfy_error(r, status, 40101 if status == 401 else 40301)
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "unauthorized" in body["error"]
    assert len(events(nd, "bob-refused")) == before
    # the same credentials cannot subscribe either (the read-only token can)
    r = httpx.get(f"{nd.url}/bob-refused/json", headers=headers,
                  params={**query, "poll": "1"}, timeout=10)  # fmt: skip
    if headers == bearer(nd, "bob_read"):
        assert r.status_code == 200
    else:
        assert_ntfy_error(r, status)


def test_password_changes_apply_at_once_and_guessing_is_throttled(nd: Daemon) -> None:
    nd.user("dave", grants={"dave*": "rw"})
    with nd.admin() as c:
        assert (
            c.put("/v1/users/dave/password", json={"password": "first password"}).status_code == 204
        )
        assert httpx.post(f"{nd.url}/dave-t", content="x", headers=basic("dave", "first password"),
                          timeout=10).status_code == 200  # fmt: skip
        # a remembered password is forgotten when it changes
        assert (
            c.put("/v1/users/dave/password", json={"password": "second password"}).status_code
            == 204
        )
    r = httpx.post(f"{nd.url}/dave-t", content="x", headers=basic("dave", "first password"))
    assert_ntfy_error(r, 401, 40101)
    # failed attempts share the web sign-in's throttle: 5 per user and address
    for _ in range(4):
        assert_ntfy_error(httpx.post(f"{nd.url}/dave-t", headers=basic("dave", "guess")), 401)
    r = httpx.post(f"{nd.url}/dave-t", content="x", headers=basic("dave", "second password"))
    body = assert_ntfy_error(r, 429)
    assert int(r.headers["retry-after"]) > 0 and "too many" in body["error"]
    # one throttle for every door: the web page's sign-in is refused too, and so is
    # Gotify's Basic auth, even with the right password
    r = httpx.post(f"{nd.url}/v1/session", json={"username": "dave", "password": "second password"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    r = httpx.get(f"{nd.url}/current/user", headers=basic("dave", "second password"))
    assert r.status_code == 429


def test_topic_auth_endpoint(nd: Daemon) -> None:
    ok = httpx.get(f"{nd.url}/bob-x,news/auth", headers=basic("bob", PASSWORD), timeout=10)
    assert ok.status_code == 200 and ok.json() == {"success": True}
    assert_ntfy_error(httpx.get(f"{nd.url}/bob-x/auth", timeout=10), 401, 40101)
    assert_ntfy_error(httpx.get(f"{nd.url}/bob-x,secret/auth", headers=bearer(nd), timeout=10),
                      403, 40301)  # fmt: skip
    assert_ntfy_error(
        httpx.get(f"{nd.url}/bob-x/auth", headers=basic("bob", "wrong"), timeout=10), 401
    )


# -- UnifiedPush --------------------------------------------------------------------------


def test_unifiedpush_bodies(nd: Daemon) -> None:
    binary = bytes(range(256))
    r = post(nd, "/bob-up", binary, params={"up": "1"})
    assert r.status_code == 200, r.text
    msg = r.json()
    assert msg["encoding"] == "base64" and base64.b64decode(msg["message"]) == binary
    ev = last(nd, "bob-up")
    assert ev["category"] == "unifiedpush" and base64.b64decode(ev["body"]) == binary
    # text bodies are kept as they are (not trimmed), without an encoding
    r = post(nd, "/bob-up", ' {"notification": 1} \n', headers={"X-UnifiedPush": "1"})
    assert "encoding" not in r.json() and r.json()["message"] == ' {"notification": 1} \n'
    # polled back, the binary message still says base64
    polled = httpx.get(f"{nd.url}/bob-up/json", params={"poll": "1"}, headers=bearer(nd))
    first = json.loads(polled.text.splitlines()[0])
    assert first["encoding"] == "base64" and base64.b64decode(first["message"]) == binary
    # too large for an event body once encoded
    assert_ntfy_error(post(nd, "/bob-up", b"\xff" * 3100, params={"up": "1"}), 400, 40014)
    # discovery, as ntfy answers it
    r = httpx.get(f"{nd.url}/bob-up", params={"up": "1"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"unifiedpush": {"version": 1}}


# -- names, paths and errors ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["healthz", "metrics", "static", "favicon.ico", "sw.js",
                                  "manifest.webmanifest", "swagger", "version"])  # fmt: skip
def test_reserved_names_are_refused_clearly(nd: Daemon, name: str) -> None:
    with nd.admin() as c:
        r = c.post(f"/{name}", content="x")
        body = assert_ntfy_error(r, 400, 40010)
        assert name in body["error"]
        assert_ntfy_error(c.get(f"/{name},other/json", params={"poll": "1"}), 400, 40010)
        assert_ntfy_error(c.post("/", json={"topic": name, "message": "x"}), 400, 40010)


def test_paths_that_are_not_ntfys(nd: Daemon) -> None:
    with nd.admin() as c:
        for method, path in [("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", "/v2/events"),
                             ("GET", "/v1/json"), ("POST", "/v1"), ("GET", "/a/b/c/json"),
                             ("GET", "/favicon.ico"), ("GET", "/config.py"),
                             ("GET", "/robots.txt")]:  # fmt: skip
            r = c.request(method, path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
        # a topic's page is the notification center
        r = c.get("/some-topic")
        assert r.status_code == 303 and r.headers["location"] == "/"
    # topics with '/' go through /v1 (a second path segment is a sequence id)
    post(nd, "/bob-a/b", "x")
    assert last(nd, "bob-a")["collapse_key"] == "b"


def test_invalid_input_answers_ntfys_errors(nd: Daemon) -> None:
    assert_ntfy_error(post(nd, "/bob-e", "x", headers={"Priority": "6"}), 400, 40007)
    assert_ntfy_error(post(nd, "/bob-e", "x", headers={"Priority": "loud"}), 400, 40007)
    assert_ntfy_error(post(nd, "/bob%20e", "x"), 400, 40009)
    r = httpx.get(f"{nd.url}/bob-e/json", params={"since": "yesterday"}, headers=bearer(nd))
    assert_ntfy_error(r, 400, 40008)
    r = httpx.get(f"{nd.url}/bob-e/ws", headers=bearer(nd), timeout=10)  # not an upgrade
    assert_ntfy_error(r, 400, 40016)
    assert_ntfy_error(post(nd, "/bob-e", "x", headers={"Tags": ",".join(f"t{i}" for i in range(17))}),
                      400)  # fmt: skip
    assert events(nd, "bob-e") == []


# -- subscribing ---------------------------------------------------------------------------


@asynccontextmanager
async def ntfy_stream(
    d: Daemon, path: str, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[httpx.Response]:
    client = httpx.AsyncClient(base_url=d.url, timeout=httpx.Timeout(10, read=None))
    async with (
        client,
        client.stream(
            "GET", path, params=params, headers=bearer(d) if headers is None else headers
        ) as r,
    ):
        yield r


async def lines(response: httpx.Response, n: int, *, keepalives: bool = False,
                timeout: float = 10.0) -> list[dict]:  # fmt: skip
    """The next ``n`` NDJSON events of a stream (keepalives skipped unless asked for)."""
    out: list[dict] = []
    it = response.__dict__.setdefault("_ntfy_lines", response.aiter_lines())  # one per stream
    with trio.fail_after(timeout):
        async for line in it:
            if not line:
                continue
            msg = json.loads(line)
            if keepalives or msg["event"] != "keepalive":
                out.append(msg)
            if len(out) == n:
                return out
    raise AssertionError(f"stream ended after {out}")


async def publish_v1(d: Daemon, **fields: Any) -> dict:
    return await sync(d.publish, **fields)


@pytest.mark.trio
async def test_json_stream_open_first_then_v1_events(nd: Daemon) -> None:
    async with ntfy_stream(nd, "/bob-sub1/json") as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson; charset=utf-8"
        [opened] = await lines(r, 1)
        assert opened["event"] == "open" and opened["topic"] == "bob-sub1"
        assert set(opened) == {"id", "time", "event", "topic"}
        ev = await publish_v1(
            nd, topic="bob-sub1", title="Unauthorized access", body="Act **now**",
            priority="urgent", tags=["warning", "skull"], click="https://example.com/c",
            icon="https://example.com/i.png", image="https://example.com/cam.jpg",
            format="markdown", collapse_key="alarm-1",
            actions=[{"label": "Open", "url": "https://example.com/o"},
                     {"label": "Ack", "url": "https://example.com/ack", "method": "POST"}],
        )  # fmt: skip
        [msg] = await lines(r, 1)
    assert msg == {
        "id": str(ev["id"]), "time": msg["time"], "expires": msg["time"] + 30 * 86400,
        "event": "message", "topic": "bob-sub1", "title": "Unauthorized access",
        "message": "Act **now**", "priority": 5, "tags": ["warning", "skull"],
        "click": "https://example.com/c", "icon": "https://example.com/i.png",
        "attachment": {"name": "cam.jpg", "url": "https://example.com/cam.jpg"},
        "content_type": "text/markdown", "sequence_id": "alarm-1",
        "actions": [
            {"id": f"{ev['id']}-0", "action": "view", "label": "Open",
             "url": "https://example.com/o", "clear": False},
            {"id": f"{ev['id']}-1", "action": "http", "label": "Ack",
             "url": "https://example.com/ack", "clear": False, "method": "POST"},
        ],
    }  # fmt: skip


async def sse_record(it: AsyncIterator[str], *, keepalives: bool = False) -> list[str]:
    """The next SSE record (its lines), keepalive records skipped unless asked for."""
    record: list[str] = []
    with trio.fail_after(10):
        async for line in it:
            if line:
                record.append(line)
            elif record:
                if keepalives or record[0] != "event: keepalive":
                    return record
                record = []
    raise AssertionError("the stream ended")


async def raw_line(it: AsyncIterator[str]) -> str:
    """The next non-empty line of a raw stream (open and keepalives are empty lines)."""
    with trio.fail_after(10):
        async for line in it:
            if line:
                return line
    raise AssertionError("the stream ended")


@pytest.mark.trio
async def test_sse_and_raw_streams(nd: Daemon) -> None:
    async with ntfy_stream(nd, "/bob-sub2/sse") as sse, ntfy_stream(nd, "/bob-sub2/raw") as raw:
        assert sse.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert raw.headers["content-type"] == "text/plain; charset=utf-8"
        sse_lines, raw_lines = sse.aiter_lines(), raw.aiter_lines()
        opened = await sse_record(sse_lines)
        assert opened[0] == "event: open" and json.loads(opened[1][6:])["event"] == "open"
        with trio.fail_after(10):
            assert await anext(raw_lines) == ""  # open
        ev = await publish_v1(nd, topic="bob-sub2", title="t", body="two\nlines")
        record = await sse_record(sse_lines)
        assert record[0] == f"id: {ev['id']}"  # message events have no "event:" line
        data = json.loads(record[1][len("data: ") :])
        assert data["id"] == str(ev["id"]) and data["message"] == "two\nlines"
        assert await raw_line(raw_lines) == "two lines"  # one line per message, the body only
        keepalive = await sse_record(sse_lines, keepalives=True)
        assert keepalive[0] == "event: keepalive"


@pytest.mark.trio
async def test_websocket_stream(nd: Daemon) -> None:
    url = nd.url.replace("http://", "ws://") + "/bob-sub3,news/ws"
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[(b"authorization", f"Bearer {tok(nd)}".encode())]
    ) as ws:
        with trio.fail_after(10):
            opened = json.loads(await ws.get_message())
            assert opened["event"] == "open" and opened["topic"] == "bob-sub3,news"
            a = await publish_v1(nd, topic="news", title="for news")
            b = await publish_v1(nd, topic="bob-sub3", title="for bob")
            got = []
            while len(got) < 2:
                msg = json.loads(await ws.get_message())
                if msg["event"] == "message":
                    got.append((msg["id"], msg["topic"]))
    assert got == [(str(a["id"]), "news"), (str(b["id"]), "bob-sub3")]
    # ?auth= for WebSocket clients that cannot send headers; refusals are HTTP errors
    query = "?auth=" + auth_param(f"Bearer {tok(nd)}")
    async with trio_websocket.open_websocket_url(url + query) as ws:
        with trio.fail_after(10):
            assert json.loads(await ws.get_message())["event"] == "open"
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(url):
            pass
    assert rejected.value.status_code == 401
    assert json.loads(rejected.value.body)["code"] == 40101


@pytest.mark.trio
async def test_keepalive_every_configured_interval(nd: Daemon) -> None:
    async with ntfy_stream(nd, "/bob-ka/json") as r:
        stamps = []
        with trio.fail_after(10):
            async for line in r.aiter_lines():
                msg = json.loads(line)
                stamps.append((msg["event"], trio.current_time()))
                if len(stamps) == 4:
                    break
    assert [e for e, _ in stamps] == ["open", "keepalive", "keepalive", "keepalive"]
    gaps = [b - a for (_, a), (_, b) in zip(stamps[1:], stamps[2:], strict=False)]
    assert all(KEEPALIVE * 0.7 < g < KEEPALIVE * 2.5 for g in gaps), gaps
    assert KEEPALIVE * 0.7 < stamps[1][1] - stamps[0][1] < KEEPALIVE * 2.5


@pytest.mark.trio
async def test_since_and_poll(nd: Daemon) -> None:
    old = [await publish_v1(nd, topic="bob-since", title=f"m{i}", tags=[f"t{i}"],
                            priority=i + 1) for i in range(4)]  # fmt: skip
    ids = [str(e["id"]) for e in old]

    async def poll(**params: str) -> list[str]:
        r = await sync(httpx.get, f"{nd.url}/bob-since/json",
                       params={"poll": "1", **params}, headers=bearer(nd), timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        msgs = [json.loads(x) for x in r.text.splitlines()]
        assert all(m["event"] == "message" for m in msgs)  # no open, no keepalive
        return [m["id"] for m in msgs]

    assert await poll() == ids  # poll defaults to since=all
    assert await poll(since="all") == ids
    assert await poll(since=ids[1]) == ids[2:]  # after that message
    assert await poll(since="latest") == ids[-1:]
    assert await poll(since="none") == []
    assert await poll(since="10m") == ids
    assert await poll(since=str(int(time.time()) - 600)) == ids
    assert await poll(since=str(int(time.time()) + 600)) == []
    assert await poll(si=ids[2]) == ids[3:]
    # filters
    assert await poll(id=ids[2]) == [ids[2]]
    assert await poll(title="m1") == [ids[1]]
    assert await poll(priority="1,high") == [ids[0], ids[3]]
    assert await poll(p="default") == [ids[2]]
    assert await poll(tags="t3") == [ids[3]]
    assert await poll(message="nope") == []
    # a live stream with since replays, then follows
    async with ntfy_stream(nd, "/bob-since/json", since=ids[2]) as r:
        got = await lines(r, 2)
        assert [m["event"] for m in got] == ["open", "message"] and got[1]["id"] == ids[3]
        new = await publish_v1(nd, topic="bob-since", title="live")
        [live] = await lines(r, 1)
        assert live["id"] == str(new["id"])


@pytest.mark.trio
async def test_streams_on_a_reused_keepalive_connection(nd: Daemon) -> None:
    """Through hypercorn instead of the raw-socket fast path: the same protocol."""
    async with httpx.AsyncClient(base_url=nd.url, headers=bearer(nd),
                                 timeout=httpx.Timeout(10, read=None)) as c:  # fmt: skip
        assert (await c.get("/bob-reuse/auth")).status_code == 200  # the connection is in use
        async with c.stream("GET", "/bob-reuse/json") as r:
            assert r.headers.get("transfer-encoding") == "chunked"  # served by hypercorn
            [opened] = await lines(r, 1)
            assert opened["event"] == "open"
            ev = await publish_v1(nd, topic="bob-reuse", title="reused")
            [msg] = await lines(r, 1)
            assert msg["id"] == str(ev["id"])
    # a WebSocket asked for on a used connection
    stream = await trio.open_tcp_stream("127.0.0.1", nd.port)
    async with stream:
        auth = f"Authorization: Bearer {tok(nd)}\r\n"
        head = await http_exchange(
            stream, f"GET /bob-reuse/auth HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 200"), head
        key = base64.b64encode(b"0123456789abcdef").decode()
        await stream.send_all(
            (f"GET /bob-reuse/ws?poll=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             f"Sec-WebSocket-Version: 13\r\n{auth}\r\n").encode()
        )  # fmt: skip
        data = b""
        with trio.fail_after(10):
            while b"reused" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
        assert data.startswith(b"HTTP/1.1 101")


@pytest.mark.trio
async def test_stream_refusals(nd: Daemon) -> None:
    for headers, status in (({}, 401), (bearer(nd, "carol"), 403),
                            (basic("bob", "wrong"), 401)):  # fmt: skip
        async with ntfy_stream(nd, "/bob-sub9/json", headers=headers) as r:
            assert r.status_code == status
            body = json.loads(await r.aread())
            assert body["http"] == status and body["code"] in (40101, 40301)


def test_events_published_through_ntfy_reach_v1_streams_and_history(nd: Daemon) -> None:
    """The other way round: an ntfy publish is an ordinary event for /v1 readers."""
    with httpx.Client(base_url=nd.url, headers=bearer(nd), timeout=10) as c:
        r = c.post("/bob-roundtrip", content="hello", headers={"Title": "rt", "Tags": "x"})
        eid = int(r.json()["id"])
        got = c.get(f"/v1/events/{eid}").json()
        assert (got["topic"], got["title"], got["body"], got["tags"]) == (
            "bob-roundtrip",
            "rt",
            "hello",
            ["x"],
        )
        assert c.post(f"/v1/events/{eid}/read").status_code == 200
        assert c.get(f"/v1/events/{eid}").json()["read"] is True


def test_sample_config_and_docs_mention_the_ntfy_layer() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "ntfy_keepalive_seconds = 45.0" in (root / "notifyd.toml").read_text()
    docs = (root / "docs" / "compat.md").read_text()
    for needle in ("X-Sequence-ID", "UnifiedPush", "?auth=", "since=", "ntfy_keepalive_seconds"):
        assert needle in docs, needle
