"""Gotify compatibility, against a real daemon: conformance tests written from
Gotify's API (its swagger spec and the server's behaviour), not from notifyd's code.

Publishing (every token spelling; JSON, urlencoded, multipart and query bodies;
default topics, titles, priorities both ways, extras kept unchanged and mapped to
markdown/click/image), the client side (``GET /message`` and its paging,
``/application/{id}/message``, deleting = archiving, ``/stream`` over WebSocket with
events from ``/v1``, ``/current/user``, ``/application``, ``/client``), the server
endpoints, and refusals that store nothing. Every wait is on a condition.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trio
import trio_websocket
from conftest import TLS, Daemon, wait_for
from trio_websocket import ConnectionRejected, WebSocketConnection

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

PASSWORD = "correct horse battery"
#: Gotify's token forms (gotify/server auth/token.go): what shoutrrr and Watchtower check
GOTIFY_APP_TOKEN = re.compile(r"A[A-Za-z0-9._-]{14}")
GOTIFY_CLIENT_TOKEN = re.compile(r"C[A-Za-z0-9._-]{14}")

# -- helpers -------------------------------------------------------------------------------


def make_user(daemon: Daemon, name: str, grants: dict[str, str], *, role: str = "user") -> None:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": name, "role": role, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for pattern, perm in grants.items():
            r = c.post("/v1/acl", json={"user": name, "pattern": pattern, "permission": perm})
            assert r.status_code == 201, r.text


def make_token(daemon: Daemon, user: str, scopes: list[str], *, topics: str | None = None,
               label: str | None = None) -> tuple[str, int]:  # fmt: skip
    """A notifyd token (secret, id)."""
    body: dict[str, Any] = {"user": user, "scopes": scopes}
    if topics is not None:
        body["topics"] = topics
    if label is not None:
        body["label"] = label
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()["token"], r.json()["id"]


def basic(name: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def gotify(daemon: Daemon, **kw: Any) -> httpx.Client:
    kw.setdefault("verify", TLS)
    return httpx.Client(base_url=daemon.url, timeout=10, **kw)


def stored(daemon: Daemon, **params: Any) -> list[dict]:
    """Every event in the admin's history (archived ones too unless asked otherwise)."""
    params.setdefault("archived", "include")
    with daemon.admin() as c:
        r = c.get("/v1/events", params={"limit": 500, **params})
        assert r.status_code == 200, r.text
        return r.json()["events"]


def last_id(daemon: Daemon) -> int:
    with daemon.admin() as c:
        return c.get("/healthz").json()["last_event_id"]


def assert_gotify_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "errorCode", "errorDescription"}, body
    assert body["errorCode"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["errorDescription"], str) and body["errorDescription"]
    return body


def assert_message(msg: dict) -> None:
    """The shape of Gotify's message object."""
    assert {"id", "appid", "message", "title", "priority", "date"} <= set(msg) <= {
        "id", "appid", "message", "title", "priority", "date", "extras",
    }, msg  # fmt: skip
    assert isinstance(msg["id"], int) and isinstance(msg["appid"], int)
    assert isinstance(msg["priority"], int) and 0 <= msg["priority"] <= 10
    assert msg["date"].endswith("Z") and "T" in msg["date"]


@pytest.fixture
def world(daemon: Daemon) -> dict[str, Any]:
    """alice may read and write gotify/* and shared; bob may read shared only.

    alice has an application token labelled "Backup Server" (default topic
    gotify/Backup-Server), a client token, and an application limited to the plain
    topic ``shared``."""
    make_user(daemon, "alice", {"gotify/*": "rw", "shared": "rw"})
    make_user(daemon, "bob", {"shared": "read"})
    app, app_id = make_token(daemon, "alice", ["publish"], label="Backup Server")
    client, client_id = make_token(daemon, "alice", ["subscribe"], label="phone")
    shared, shared_id = make_token(daemon, "alice", ["publish"], topics="shared", label="shared")
    bob_client, _ = make_token(daemon, "bob", ["subscribe"])
    return {
        "app": app, "app_id": app_id, "client": client, "client_id": client_id,
        "shared": shared, "shared_id": shared_id, "bob": bob_client,
    }  # fmt: skip


def post_message(daemon: Daemon, token: str, **fields: Any) -> dict:
    with gotify(daemon) as c:
        r = c.post("/message", params={"token": token}, json=fields)
        assert r.status_code == 200, r.text
        return r.json()


# -- publishing ------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["header", "query", "bearer"])
def test_publish_json_with_each_token_spelling(daemon: Daemon, world: dict, spelling: str) -> None:
    token = world["app"]
    kw: dict[str, Any] = {
        "header": {"headers": {"X-Gotify-Key": token}},
        "query": {"params": {"token": token}},
        "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
    }[spelling]
    with gotify(daemon) as c:
        r = c.post("/message", json={"title": "Backup", "message": "done", "priority": 5}, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()
    assert_message(msg)
    assert msg["appid"] == world["app_id"]
    assert (msg["title"], msg["message"], msg["priority"]) == ("Backup", "done", 5)
    assert "extras" not in msg
    (ev,) = stored(daemon)
    assert ev["id"] == msg["id"] and ev["created_at"] == msg["date"]
    assert ev["topic"] == "gotify/Backup-Server"
    assert (ev["title"], ev["body"], ev["priority"], ev["format"]) == ("Backup", "done", 3, "text")


def test_publish_form_bodies_and_query_fields(daemon: Daemon, world: dict) -> None:
    url = "/message?token=" + world["app"]
    with gotify(daemon) as c:
        # application/x-www-form-urlencoded
        r1 = c.post(url, data={"title": "form", "message": "urlencoded", "priority": "8"})
        # multipart/form-data, as `curl -F` sends it
        r2 = c.post(url, files={"title": (None, "multi"), "message": (None, "part"),
                                "priority": (None, "2")})  # fmt: skip
        # no body at all: the fields in the query (Gotify's form binding reads both)
        r3 = c.post(url + "&" + urlencode({"message": "query only", "priority": "10"}))
    for r in (r1, r2, r3):
        assert r.status_code == 200, r.text
        assert_message(r.json())
    assert [(m["title"], m["message"], m["priority"]) for m in (r1.json(), r2.json(), r3.json())] == [
        ("form", "urlencoded", 10), ("multi", "part", 3), ("Backup Server", "query only", 10),
    ]  # fmt: skip
    events = sorted(stored(daemon), key=lambda e: e["id"])
    assert [(e["title"], e["body"], e["priority"]) for e in events] == [
        ("form", "urlencoded", 5), ("multi", "part", 2), ("Backup Server", "query only", 5),
    ]  # fmt: skip
    assert {e["topic"] for e in events} == {"gotify/Backup-Server"}


def test_default_topics_and_titles(daemon: Daemon, world: dict) -> None:
    make_user(daemon, "carol", {"*": "rw"})
    no_label, no_label_id = make_token(daemon, "carol", ["publish"])
    prefixed, _ = make_token(daemon, "carol", ["publish"], topics="alerts/*", label="disk / space")
    cases = [
        (world["app"], "gotify/Backup-Server", "Backup Server"),
        (world["shared"], "shared", "shared"),
        (no_label, f"gotify/{no_label_id}", f"gotify/{no_label_id}"),
        (prefixed, "alerts/disk-space", "disk / space"),
    ]
    for token, topic, name in cases:
        msg = post_message(daemon, token, message="hi", title="   ")
        assert msg["title"] == name  # an empty title is the application's name
        (ev,) = [e for e in stored(daemon) if e["id"] == msg["id"]]
        assert ev["topic"] == topic and ev["title"] == name


def test_priority_mapping_all_eleven_in(daemon: Daemon, world: dict) -> None:
    expected_in = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 5, 9: 5, 10: 5}
    sent = {}
    for p in range(11):
        sent[post_message(daemon, world["app"], message=f"p{p}", priority=p)["id"]] = p
    # no priority: the application's default, which is 0 in Gotify
    default_id = post_message(daemon, world["app"], message="no priority")["id"]
    events = {e["id"]: e for e in stored(daemon)}
    assert {sent[i]: events[i]["priority"] for i in sent} == expected_in
    assert events[default_id]["priority"] == 1


def test_priority_mapping_all_five_out(daemon: Daemon, world: dict) -> None:
    for p in range(1, 6):
        daemon.publish("shared", title=f"p{p}", priority=p)
    with gotify(daemon, params={"token": world["client"]}) as c:
        r = c.get("/message")
    assert r.status_code == 200, r.text
    got = {m["title"]: m["priority"] for m in r.json()["messages"]}
    assert got == {"p1": 1, "p2": 3, "p3": 5, "p4": 7, "p5": 10}


def test_extras_round_trip_unchanged(daemon: Daemon, world: dict) -> None:
    extras = {
        "client::display": {"contentType": "text/plain"},
        "home::appliances::thermostat::change_temperature": {"temperature": 23.5, "unit": "C"},
        "android::action": {"onReceive": {"intentUrl": "geo:0,0?q=home"}},
        "custom::list": [1, "two", None, {"three": True}],
        "unicode::text": "grüße ✓",
    }
    msg = post_message(daemon, world["app"], message="with extras", extras=extras)
    assert msg["extras"] == extras
    with gotify(daemon, params={"token": world["client"]}) as c:
        (listed,) = c.get("/message").json()["messages"]
    assert listed == msg
    # the event object of /v1 is unchanged: no extras field there
    (ev,) = stored(daemon)
    assert "extras" not in ev and ev["format"] == "text"


def test_extras_map_to_markdown_click_and_image(daemon: Daemon, world: dict) -> None:
    extras = {
        "client::display": {"contentType": "text/markdown"},
        "client::notification": {
            "click": {"url": "https://example.com/backups/42"},
            "bigImageUrl": "https://example.com/chart.png",
        },
    }
    msg = post_message(daemon, world["app"], message="**done**", extras=extras)
    assert msg["extras"] == extras
    (ev,) = stored(daemon)
    assert ev["format"] == "markdown"
    assert ev["click"] == "https://example.com/backups/42"
    assert ev["image"] == "https://example.com/chart.png"
    # a click URL notifyd cannot hold stays in the extras only
    odd = {"client::notification": {"click": {"url": "myapp://open/7"}}}
    msg = post_message(daemon, world["app"], message="odd", extras=odd)
    assert msg["extras"] == odd
    ev = next(e for e in stored(daemon) if e["id"] == msg["id"])
    assert ev["click"] is None and ev["format"] == "text"


def test_events_from_v1_get_extras_from_their_fields(daemon: Daemon, world: dict) -> None:
    daemon.publish("shared", title="md", body="*hi*", format="markdown",
                   click="https://example.com/a", image="https://example.com/i.png")  # fmt: skip
    daemon.publish("shared", title="plain", body="hi")
    with gotify(daemon, params={"token": world["client"]}) as c:
        messages = {m["title"]: m for m in c.get("/message").json()["messages"]}
    assert messages["md"]["extras"] == {
        "client::display": {"contentType": "text/markdown"},
        "client::notification": {
            "click": {"url": "https://example.com/a"},
            "bigImageUrl": "https://example.com/i.png",
        },
    }
    assert "extras" not in messages["plain"]
    # appid: alice's application whose topic it is
    assert messages["plain"]["appid"] == world["shared_id"]


# -- refusals --------------------------------------------------------------------------------


def test_refused_publishes_store_nothing(daemon: Daemon, world: dict) -> None:
    make_user(daemon, "dave", {"shared": "read"})  # no write grant anywhere
    no_acl, _ = make_token(daemon, "dave", ["publish"], label="nope")
    both, _ = make_token(daemon, "bob", ["publish", "subscribe"])  # bob may only read
    body = {"title": "t", "message": "m"}
    before = last_id(daemon)
    with gotify(daemon) as c:
        assert_gotify_error(c.post("/message", json=body), 401)  # no credentials
        assert_gotify_error(c.post("/message", params={"token": "nfy_" + "x" * 40}, json=body), 401)
        assert_gotify_error(c.post("/message", params={"token": "AWH0wZ5r0Mbac.r"}, json=body), 401)
        # a client token is not an application token
        assert_gotify_error(
            c.post("/message", headers={"X-Gotify-Key": world["client"]}, json=body), 401
        )
        # user credentials are valid, but not for publishing
        assert_gotify_error(
            c.post("/message", headers={"Authorization": basic("alice")}, json=body), 403
        )
        assert_gotify_error(
            c.post("/message", headers={"Authorization": basic("alice", "wrong")}, json=body), 401
        )
        # valid application tokens without the write grant for their topic
        err = assert_gotify_error(c.post("/message", params={"token": no_acl}, json=body), 403)
        assert "gotify/nope" in err["errorDescription"]
        assert_gotify_error(c.post("/message", params={"token": both}, json=body), 403)
        # invalid messages
        t = {"token": world["app"]}
        assert_gotify_error(c.post("/message", params=t, json={"title": "no message"}), 400)
        assert_gotify_error(c.post("/message", params=t, json={"message": ""}), 400)
        assert_gotify_error(
            c.post("/message", params=t, json={"message": "m", "priority": "high"}), 400
        )
        assert_gotify_error(c.post("/message", params=t, json={"message": "m", "extras": [1]}), 400)
        assert_gotify_error(c.post("/message", params=t, json={"message": "x" * 5000}), 400)
        assert_gotify_error(
            c.post(
                "/message",
                params=t,
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        )
        assert_gotify_error(
            c.post("/message", params=t, data={"message": "m", "priority": "x"}), 400
        )
    assert last_id(daemon) == before
    assert stored(daemon) == []


def test_client_endpoints_refuse_without_a_client_credential(daemon: Daemon, world: dict) -> None:
    with gotify(daemon) as c:
        for path in ("/message", "/application", "/client", "/current/user",
                     f"/application/{world['app_id']}/message"):  # fmt: skip
            assert_gotify_error(c.get(path), 401)
            assert_gotify_error(c.get(path, params={"token": world["app"]}), 401)  # an app token
            assert_gotify_error(c.get(path, params={"token": "nfy_" + "y" * 40}), 401)
            assert_gotify_error(c.get(path, headers={"Authorization": basic("alice", "nope")}), 401)
        assert_gotify_error(c.delete("/message/1"), 401)
        assert_gotify_error(c.delete("/message"), 401)


# -- reading ---------------------------------------------------------------------------------


def test_get_message_is_the_inbox_of_every_readable_topic(daemon: Daemon, world: dict) -> None:
    a = post_message(daemon, world["app"], message="from gotify")
    daemon.publish("shared", title="from v1")
    daemon.publish("secret", title="not for alice")
    with gotify(daemon, headers={"X-Gotify-Key": world["client"]}) as c:
        r = c.get("/message")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"paging", "messages"}
    for m in body["messages"]:
        assert_message(m)
    assert [m["title"] for m in body["messages"]] == ["from v1", "Backup Server"]
    assert body["messages"][1] == a
    assert body["paging"] == {"size": 2, "since": 0, "limit": 100}
    # bob reads only `shared`
    with gotify(daemon, params={"token": world["bob"]}) as c:
        (only,) = c.get("/message").json()["messages"]
    assert only["title"] == "from v1" and only["appid"] == 0  # bob has no applications


def test_get_message_paging(daemon: Daemon, world: dict) -> None:
    ids = [post_message(daemon, world["shared"], message=f"m{i}")["id"] for i in range(5)]
    newest_first = ids[::-1]
    seen: list[int] = []
    # the token in a header: the `next` links carry only limit and since, as Gotify's do
    with gotify(daemon, headers={"X-Gotify-Key": world["client"]}) as c:
        r = c.get("/message", params={"limit": 2})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["paging"]["size"] == 2 and page["paging"]["limit"] == 2
        assert page["paging"]["since"] == newest_first[1]
        while True:
            seen += [m["id"] for m in page["messages"]]
            nxt = page["paging"].get("next")
            if nxt is None:
                assert page["paging"]["since"] == 0
                break
            parts = urlsplit(nxt)
            assert f"{parts.scheme}://{parts.netloc}" == daemon.url and parts.path == "/message"
            assert parse_qs(parts.query) == {
                "limit": ["2"],
                "since": [str(page["paging"]["since"])],
            }
            page = c.get(nxt).json()
        assert seen == newest_first
        # since: only ids below it
        r = c.get("/message", params={"since": ids[2], "limit": 100})
        assert [m["id"] for m in r.json()["messages"]] == [ids[1], ids[0]]
        assert r.json()["paging"] == {"size": 2, "since": 0, "limit": 100}
        # as the Android app finds its newest message
        r = c.get("/message", params={"limit": 1, "since": 0})
        assert [m["id"] for m in r.json()["messages"]] == [ids[4]]
        for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"since": -1}):
            assert_gotify_error(c.get("/message", params=bad), 400)


def test_application_messages(daemon: Daemon, world: dict) -> None:
    mine = post_message(daemon, world["app"], message="backup ok")
    daemon.publish("gotify/Backup-Server", title="same topic via v1")
    post_message(daemon, world["shared"], message="other app")
    with gotify(daemon, params={"token": world["client"]}) as c:
        r = c.get(f"/application/{world['app_id']}/message")
        assert r.status_code == 200, r.text
        msgs = r.json()["messages"]
        assert [m["title"] for m in msgs] == ["same topic via v1", "Backup Server"]
        assert msgs[1] == mine and {m["appid"] for m in msgs} == {world["app_id"]}
        r = c.get(f"/application/{world['shared_id']}/message", params={"limit": 1})
        assert [m["message"] for m in r.json()["messages"]] == ["other app"]
        assert_gotify_error(c.get("/application/99999/message"), 404)
        assert_gotify_error(c.get(f"/application/{world['client_id']}/message"), 404)  # a client
        assert_gotify_error(c.get("/application/abc/message"), 400)
    with gotify(daemon, params={"token": world["bob"]}) as c:  # not bob's application
        assert_gotify_error(c.get(f"/application/{world['app_id']}/message"), 404)


def test_delete_message_archives(daemon: Daemon, world: dict) -> None:
    keep = post_message(daemon, world["app"], message="keep")
    gone = post_message(daemon, world["app"], message="delete me")
    secret = daemon.publish("secret", title="invisible to alice")
    with gotify(daemon, params={"token": world["client"]}) as c:
        r = c.delete(f"/message/{gone['id']}")
        assert r.status_code == 200, r.text
        assert [m["id"] for m in c.get("/message").json()["messages"]] == [keep["id"]]
        assert_gotify_error(c.delete(f"/message/{gone['id']}"), 404)  # already deleted
        assert_gotify_error(c.delete(f"/message/{secret['id']}"), 404)
        assert_gotify_error(c.delete("/message/987654"), 404)
        assert_gotify_error(c.delete("/message/nope"), 400)
    with httpx.Client(
        base_url=daemon.url, headers={"Authorization": f"Bearer {world['client']}"}
    ) as c:
        archived = c.get("/v1/events", params={"archived": "only"}).json()["events"]
        assert [e["id"] for e in archived] == [gone["id"]]
    # the event is still stored: deleting in Gotify archives in notifyd
    assert {e["id"] for e in stored(daemon)} == {keep["id"], gone["id"], secret["id"]}


def test_delete_all_and_per_application(daemon: Daemon, world: dict) -> None:
    a = [post_message(daemon, world["app"], message=f"a{i}")["id"] for i in range(3)]
    s = [post_message(daemon, world["shared"], message=f"s{i}")["id"] for i in range(2)]
    with gotify(daemon, params={"token": world["client"]}) as c:
        assert c.delete(f"/application/{world['app_id']}/message").status_code == 200
        assert sorted(m["id"] for m in c.get("/message").json()["messages"]) == s
        assert_gotify_error(c.delete("/application/424242/message"), 404)
        assert c.delete("/message").status_code == 200
        assert c.get("/message").json()["messages"] == []
    with httpx.Client(
        base_url=daemon.url, headers={"Authorization": f"Bearer {world['client']}"}
    ) as c:
        archived = c.get("/v1/events", params={"archived": "only"}).json()["events"]
        assert sorted(e["id"] for e in archived) == sorted(a + s)
    # bob's inbox is his own: alice's deletions do not touch it
    with gotify(daemon, params={"token": world["bob"]}) as c:
        assert sorted(m["id"] for m in c.get("/message").json()["messages"]) == s


# -- the user, applications, clients ---------------------------------------------------------


def test_current_user(daemon: Daemon, world: dict) -> None:
    make_user(daemon, "root", {}, role="admin")
    with gotify(daemon) as c:
        r = c.get("/current/user", params={"token": world["client"]})
        assert r.status_code == 200, r.text
        alice = r.json()
        assert set(alice) == {"id", "name", "admin"}
        assert alice["name"] == "alice" and alice["admin"] is False
        r = c.get("/current/user", headers={"Authorization": basic("alice")})
        assert r.json() == alice
        r = c.get("/current/user", headers={"Authorization": basic("root")})
        assert r.json()["name"] == "root" and r.json()["admin"] is True


def test_applications_list_create_delete(daemon: Daemon, world: dict) -> None:
    with gotify(daemon, params={"token": world["client"]}) as c:
        r = c.get("/application")
        assert r.status_code == 200, r.text
        apps = {a["id"]: a for a in r.json()}
        assert set(apps) == {world["app_id"], world["shared_id"]}  # not the client token
        app = apps[world["app_id"]]
        assert set(app) >= {"id", "token", "name", "description", "internal", "image"}
        assert app["name"] == "Backup Server" and app["internal"] is False
        # tokens are stored hashed: only their prefix can be shown
        assert app["token"] == world["app"][:8] + "…"
        assert "gotify/Backup-Server" in app["description"]
        assert c.get("/" + app["image"]).status_code == 200
    # creating one (the user's credentials: a client token cannot mint publish tokens)
    with gotify(daemon, headers={"Authorization": basic("alice")}) as c:
        r = c.post("/application", json={"name": "Cron jobs", "description": "nightly"})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["name"] == "Cron jobs" and GOTIFY_APP_TOKEN.fullmatch(new["token"])
        assert_gotify_error(c.post("/application", json={"description": "no name"}), 400)
    msg = post_message(daemon, new["token"], message="from the new app")
    assert msg["appid"] == new["id"]
    assert next(e for e in stored(daemon) if e["id"] == msg["id"])["topic"] == "gotify/Cron-jobs"
    # deleting one too (a client token has no 'account' scope: tests/test_scopes.py)
    with gotify(daemon, headers={"Authorization": basic("alice")}) as c:
        assert c.delete(f"/application/{new['id']}").status_code == 200
        assert new["id"] not in {a["id"] for a in c.get("/application").json()}
        assert_gotify_error(c.delete(f"/application/{new['id']}"), 404)
        assert_gotify_error(c.delete(f"/application/{world['client_id']}"), 404)
    with gotify(daemon) as c:  # the revoked token no longer publishes
        assert_gotify_error(
            c.post("/message", params={"token": new["token"]}, json={"message": "x"}), 401
        )


def test_clients_as_the_android_app_signs_in_and_out(daemon: Daemon, world: dict) -> None:
    with gotify(daemon) as c:
        assert c.get("/version").status_code == 200
        assert c.get("/current/user", headers={"Authorization": basic("alice")}).status_code == 200
        r = c.post("/client", json={"name": "Pixel 8"}, headers={"Authorization": basic("alice")})
        assert r.status_code == 200, r.text
        created = r.json()
        assert created["name"] == "Pixel 8" and GOTIFY_CLIENT_TOKEN.fullmatch(created["token"])
        token = created["token"]
        post_message(daemon, world["shared"], message="hello phone")
        r = c.get("/message", params={"token": token})
        assert [m["message"] for m in r.json()["messages"]] == ["hello phone"]
        # the client list shows the caller's own token in full, others by prefix
        clients = {x["id"]: x for x in c.get("/client", params={"token": token}).json()}
        assert set(clients) == {world["client_id"], created["id"]}
        assert clients[created["id"]]["token"] == token
        assert clients[world["client_id"]]["token"] == world["client"][:8] + "…"
        # the new client can read but not publish
        assert_gotify_error(c.post("/message", params={"token": token}, json={"message": "x"}), 401)
        # sign out: the app deletes its own client
        assert c.delete(f"/client/{created['id']}", params={"token": token}).status_code == 200
        assert_gotify_error(c.get("/message", params={"token": token}), 401)
        alice = {"Authorization": basic("alice")}
        assert_gotify_error(c.delete(f"/client/{world['app_id']}", headers=alice), 404)
        assert_gotify_error(c.post("/client", json={}, headers=alice), 400)


def test_health_and_version(daemon: Daemon) -> None:
    with gotify(daemon) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json() == {"health": "green", "database": "green"}
        r = c.get("/version")
        assert r.status_code == 200
        v = r.json()
        assert set(v) == {"version", "commit", "buildDate"}
        assert v["version"].split("+")[0].count(".") == 2 and "notifyd" in v["version"]


# -- the stream ------------------------------------------------------------------------------


async def _sync(fn: Any, *args: Any, **kw: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args, **kw))


@asynccontextmanager
async def gotify_ws(daemon: Daemon, *, query: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> AsyncIterator[WebSocketConnection]:  # fmt: skip
    url = daemon.url.replace("http://", "ws://", 1) + "/stream"
    if query:
        url += "?" + urlencode(query)
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    async with trio_websocket.open_websocket_url(
        url, extra_headers=extra, connect_timeout=10, disconnect_timeout=5
    ) as ws:
        yield ws


async def _wait_clients(daemon: Daemon, n: int) -> None:
    def check() -> bool:
        with daemon.admin() as c:
            return c.get("/healthz").json()["stream_clients"] == n

    await _sync(wait_for, check, 10, message=f"{n} stream clients")


async def _next_message(ws: WebSocketConnection) -> dict:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())


@pytest.mark.trio
@pytest.mark.parametrize("how", ["query", "header", "basic"])
async def test_stream_pushes_messages_from_every_path(
    daemon: Daemon, world: dict, how: str
) -> None:
    creds: dict[str, Any] = {
        "query": {"query": {"token": world["client"]}},
        "header": {"headers": {"X-Gotify-Key": world["client"]}},
        "basic": {"headers": {"Authorization": basic("alice")}},
    }[how]
    async with gotify_ws(daemon, **creds) as ws:
        await _wait_clients(daemon, 1)
        v1 = await _sync(daemon.publish, "shared", title="via v1", body="*x*", format="markdown")
        await _sync(daemon.publish, "secret", title="not for alice")
        extras = {"client::notification": {"click": {"url": "https://example.com/z"}}, "k::v": [1]}
        sent = await _sync(
            post_message, daemon, world["app"], message="via gotify", priority=9, extras=extras
        )
        first = await _next_message(ws)
        second = await _next_message(ws)
    assert_message(first)
    assert first == {
        "id": v1["id"], "appid": world["shared_id"], "message": "*x*", "title": "via v1",
        "priority": 5, "date": v1["created_at"],
        "extras": {"client::display": {"contentType": "text/markdown"}},
    }  # fmt: skip
    assert second == sent and second["extras"] == extras and second["priority"] == 10


@pytest.mark.trio
async def test_stream_is_per_user_and_refuses_bad_credentials(daemon: Daemon, world: dict) -> None:
    for query, headers in (
        ({}, {}),
        ({"token": world["app"]}, {}),
        ({"token": "nfy_" + "z" * 40}, {}),
        ({}, {"Authorization": basic("alice", "wrong")}),
    ):
        with pytest.raises(ConnectionRejected) as info:
            async with gotify_ws(daemon, query=query, headers=headers):
                pass
        assert info.value.status_code == 401
        body = json.loads(info.value.body)
        assert body["errorCode"] == 401 and body["error"] == "Unauthorized"
    async with (
        gotify_ws(daemon, query={"token": world["bob"]}) as bob,
        gotify_ws(daemon, query={"token": world["client"]}) as alice,
    ):
        await _wait_clients(daemon, 2)
        await _sync(post_message, daemon, world["app"], message="alice only")
        shared = await _sync(post_message, daemon, world["shared"], message="both")
        got_alice = [await _next_message(alice), await _next_message(alice)]
        got_bob = await _next_message(bob)
    assert [m["message"] for m in got_alice] == ["alice only", "both"]
    assert got_bob["message"] == "both" and got_bob["id"] == shared["id"]
    assert got_bob["appid"] == 0 and got_alice[1]["appid"] == world["shared_id"]


def test_unsupported_endpoints_answer_in_gotify_shape(daemon: Daemon, world: dict) -> None:
    with gotify(daemon, params={"token": world["client"]}) as c:
        assert c.get("/plugin").json() == []
        for method, path in [
            ("PUT", f"/application/{world['app_id']}"),
            ("POST", f"/application/{world['app_id']}/image"),
            ("PUT", f"/client/{world['client_id']}"),
            ("POST", "/current/user/password"),
            ("GET", "/user"),
        ]:
            assert_gotify_error(c.request(method, path, json={}), 501)
        # a stream is a WebSocket
        assert_gotify_error(c.get("/stream"), 400)


def test_basic_auth_failures_are_throttled(daemon: Daemon, world: dict) -> None:
    with gotify(daemon) as c:
        for _ in range(5):
            assert_gotify_error(
                c.get("/current/user", headers={"Authorization": basic("alice", "bad")}), 401
            )
        r = c.get("/current/user", headers={"Authorization": basic("alice")})
        assert_gotify_error(r, 429)
        assert int(r.headers["Retry-After"]) > 0
        # tokens are not throttled
        assert c.get("/current/user", params={"token": world["client"]}).status_code == 200


# -- Gotify's token forms (shoutrrr, Watchtower) -------------------------------------------


def shoutrrr_token_valid(token: str) -> bool:
    """shoutrrr's client-side check of a gotify:// URL's token (pkg/services/gotify,
    ``isTokenValid``): 15 characters, ``A`` first, all from Gotify's alphabet."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
    return len(token) == 15 and token[0] == "A" and all(ch in alphabet for ch in token)


def create_app_and_client(daemon: Daemon) -> tuple[dict, dict]:
    alice = {"Authorization": basic("alice")}
    with gotify(daemon, headers=alice) as c:
        app = c.post("/application", json={"name": "Watchtower"})
        client = c.post("/client", json={"name": "Pixel 8"})
    assert app.status_code == 200, app.text
    assert client.status_code == 200, client.text
    return app.json(), client.json()


def test_tokens_made_through_gotify_have_gotifys_form(daemon: Daemon, world: dict) -> None:
    seen: set[str] = set()
    for _ in range(5):
        app, client = create_app_and_client(daemon)
        assert GOTIFY_APP_TOKEN.fullmatch(app["token"]), app["token"]
        assert GOTIFY_CLIENT_TOKEN.fullmatch(client["token"]), client["token"]
        assert shoutrrr_token_valid(app["token"]) and not shoutrrr_token_valid(client["token"])
        seen |= {app["token"], client["token"]}
    assert len(seen) == 10  # random, never repeated
    # they are ordinary notifyd tokens: listed with a short prefix, never in full
    with daemon.admin() as c:
        listed = {
            t["id"]: t for t in c.get("/v1/tokens", params={"user": "alice"}).json()["tokens"]
        }
    shown = listed[app["id"]]
    assert shown["prefix"] == app["token"][:4] and shown["label"] == "Watchtower"
    assert shown["scopes"] == ["publish"] and shown["topics"] == "gotify/Watchtower"
    assert listed[client["id"]]["scopes"] == ["subscribe"]
    assert app["token"] not in json.dumps(listed)
    with gotify(daemon, params={"token": world["client"]}) as c:
        apps = {a["id"]: a for a in c.get("/application").json()}
    assert apps[app["id"]]["token"] == app["token"][:4] + "…"


def test_gotify_form_tokens_authenticate_in_every_spelling(daemon: Daemon, world: dict) -> None:
    app, client = create_app_and_client(daemon)
    token = app["token"]
    for kw in (
        {"params": {"token": token}},
        {"headers": {"X-Gotify-Key": token}},
        {"headers": {"Authorization": f"Bearer {token}"}},
    ):
        with gotify(daemon, **kw) as c:
            r = c.post("/message", json={"message": "hi", "priority": 5})
        assert r.status_code == 200, r.text
        assert r.json()["appid"] == app["id"]
    # the client token reads, by Gotify's three spellings and on notifyd's own API
    for kw in (
        {"params": {"token": client["token"]}},
        {"headers": {"X-Gotify-Key": client["token"]}},
        {"headers": {"Authorization": f"Bearer {client['token']}"}},
    ):
        with gotify(daemon, **kw) as c:
            r = c.get("/message")
        assert r.status_code == 200, r.text
        assert [m["message"] for m in r.json()["messages"]] == ["hi"] * 3
    with gotify(daemon, headers={"Authorization": f"Bearer {client['token']}"}) as c:
        r = c.get("/v1/events", params={"topic": "gotify/Watchtower"})
        assert r.status_code == 200, r.text
        assert len(r.json()["events"]) == 3
        # and the application token publishes through /v1 and ntfy too, within its topic
        app_auth = {"Authorization": f"Bearer {token}"}
        r = c.post(
            "/v1/events", json={"topic": "gotify/Watchtower", "body": "v1"}, headers=app_auth
        )
        assert r.status_code == 201, r.text
        assert c.post("/v1/events", json={"topic": "shared", "body": "x"},
                      headers=app_auth).status_code == 403  # fmt: skip
    # and the client token subscribes through ntfy's door (Bearer)
    post_message(daemon, world["shared"], message="for ntfy")
    with gotify(daemon, headers={"Authorization": f"Bearer {client['token']}"}) as c:
        r = c.get("/shared/json", params={"poll": "1"})
        assert r.status_code == 200, r.text
        assert [json.loads(line)["message"] for line in r.text.splitlines()] == ["for ntfy"]
    # existing nfy_ tokens keep working beside them
    assert post_message(daemon, world["app"], message="old token")["appid"] == world["app_id"]
    # revoked like any token: at once, in every spelling
    with daemon.admin() as c:
        assert c.delete(f"/v1/tokens/{app['id']}").status_code == 204
    with gotify(daemon) as c:
        assert_gotify_error(c.post("/message", params={"token": token}, json={"message": "x"}), 401)
        assert_gotify_error(c.post("/message", headers={"X-Gotify-Key": token},
                                   json={"message": "x"}), 401)  # fmt: skip
    # a string of the form that was never issued is just an unknown token
    with gotify(daemon) as c:
        assert_gotify_error(c.post("/message", params={"token": "A" + "b" * 14},
                                   json={"message": "x"}), 401)  # fmt: skip


def test_shoutrrr_gotify_request(daemon: Daemon, world: dict) -> None:
    """The request shoutrrr (Watchtower's notifier) sends for
    ``gotify://host/<token>?title=…&priority=…``: ``POST /message?token=<token>`` with
    the JSON ``{"message", "title", "priority"}``, after checking the token's form."""
    app, _ = create_app_and_client(daemon)
    token = app["token"]
    assert shoutrrr_token_valid(token)
    body = {
        "message": "Found new image for containrrr/watchtower:latest (sha256:3c4d…)",
        "title": "Watchtower updates on nas",
        "priority": 0,
    }
    with gotify(daemon) as c:
        r = c.post(f"/message?token={token}", content=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    reply = r.json()  # shoutrrr decodes {message, title, priority, id, appid, date}
    assert isinstance(reply["id"], int) and reply["appid"] == app["id"]
    assert isinstance(reply["date"], str)
    (ev,) = [e for e in stored(daemon) if e["id"] == reply["id"]]
    assert ev["topic"] == "gotify/Watchtower"
    assert (ev["title"], ev["body"], ev["priority"]) == (body["title"], body["message"], 1)
