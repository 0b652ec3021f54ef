"""``/v1/events`` and ``/v1/inbox`` against a real daemon, plus the system endpoints.

Publishing (one, a list, idempotent retries, every class of bad input with nothing
stored), history and its filters, single events, read state, collapse keys, expiry,
scheduled delivery, and persistence across a restart.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_MISSING = object()


def ts(delta: float = 0.0) -> str:
    """An RFC 3339 UTC time ``delta`` seconds from now."""
    at = datetime.now(UTC) + timedelta(seconds=delta)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_error(r: httpx.Response, status: int, code: str, field: Any = _MISSING) -> dict:
    """The response is ``status`` with the error shape ``{"error": {code, message, field?}}``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message"} <= set(err) <= {"code", "message", "field"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    if field is not _MISSING:
        assert err.get("field") == field, err
    return err


def all_events(c: httpx.Client, **params: Any) -> list[dict]:
    r = c.get("/v1/events", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"events", "next"}
    return body["events"]


def ids(events: list[dict]) -> list[int]:
    return [e["id"] for e in events]


def stored_state(c: httpx.Client) -> tuple[int, int]:
    """(events in the history incl. archived, last event id): both move on any insert."""
    return len(all_events(c, archived="include")), c.get("/healthz").json()["last_event_id"]


def publish(c: httpx.Client, topic: str = "test", **fields: Any) -> dict:
    r = c.post("/v1/events", json={"topic": topic, **fields})
    assert r.status_code == 201, r.text
    return r.json()


# -- publishing ------------------------------------------------------------------------------


def test_publish_one_returns_the_stored_event(daemon: Daemon) -> None:
    full = {
        "topic": "ci/deploy.prod-1",
        "title": "Deployed",
        "body": "**v1.2** is live",
        "format": "markdown",
        "priority": 4,
        "category": "deploy",
        "tags": ["prod", "release_1"],
        "click": "https://ci.example.com/run/42",
        "icon": "https://ci.example.com/icon.png",
        "image": "http://ci.example.com/graph.png",
        "actions": [
            {"label": "Open", "url": "https://ci.example.com/run/42"},
            {"label": "Roll back", "url": "https://ci.example.com/rollback", "method": "POST"},
        ],
        "sensitive": True,
        "collapse_key": "deploy:prod",
        "expires_at": "2999-01-02T03:04:05+01:00",
    }
    with daemon.admin() as c:
        before = time.time()
        r = c.post("/v1/events", json=full)
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/json")
        ev = r.json()
        assert isinstance(ev["id"], int) and ev["id"] >= 1
        assert RFC3339_Z.match(ev["created_at"]), ev["created_at"]
        created = datetime.strptime(ev["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - 5 <= created.timestamp() <= time.time() + 5
        expected = {
            **full, "expires_at": "2999-01-02T02:04:05.000Z", "deliver_at": None,
            "attachment": None,
        }  # fmt: skip
        assert {k: ev[k] for k in expected} == expected
        assert set(ev) == {*expected, "id", "created_at"}

        # the stored event is what GET returns, plus this user's read state
        got = c.get(f"/v1/events/{ev['id']}").json()
        assert {k: got[k] for k in ev} == ev
        assert (got["read"], got["seen"], got["archived"]) == (False, False, False)
        assert got["clicked_at"] is None and got["action"] is None
        assert all_events(c)[0] == got

        # a minimal event gets the defaults
        minimal = publish(c, "t", body="just a body")
        assert minimal["id"] > ev["id"]
        assert {k: minimal[k] for k in ("title", "format", "priority", "category")} == {
            "title": "",
            "format": "text",
            "priority": 3,
            "category": "general",
        }
        assert minimal["tags"] == [] and minimal["actions"] == [] and minimal["sensitive"] is False
        for k in ("click", "icon", "image", "collapse_key", "deliver_at", "expires_at"):
            assert minimal[k] is None

        # priorities by number and by name
        for value, number in [
            (1, 1), (5, 5), ("2", 2), ("min", 1), ("low", 2), ("default", 3), ("high", 4),
            ("urgent", 5), ("URGENT", 5),
        ]:  # fmt: skip
            assert publish(c, "prio", title="p", priority=value)["priority"] == number
        assert [e["priority"] for e in all_events(c, topic="prio")] == [5, 5, 4, 3, 2, 1, 2, 5, 1]


def test_publish_a_list(daemon: Daemon) -> None:
    with daemon.admin() as c:
        first = publish(c, "x", title="before")
        r = c.post(
            "/v1/events",
            json=[{"topic": "x", "title": f"n{i}", "priority": "high"} for i in range(5)],
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {"events"}
        got = body["events"]
        assert [e["title"] for e in got] == [f"n{i}" for i in range(5)]
        assert ids(got) == list(range(first["id"] + 1, first["id"] + 6))
        assert all(e["priority"] == 4 and RFC3339_Z.match(e["created_at"]) for e in got)
        assert ids(all_events(c)) == [*reversed(ids(got)), first["id"]]
        # a list of one is still a list
        r = c.post("/v1/events", json=[{"topic": "x", "title": "solo"}])
        assert r.status_code == 201 and len(r.json()["events"]) == 1


def test_idempotency_key_makes_retries_safe(daemon: Daemon) -> None:
    with daemon.admin() as c:
        payload = {"topic": "jobs", "title": "backup done", "tags": ["nightly"]}
        r1 = c.post("/v1/events", json=payload, headers={"Idempotency-Key": "backup-2024-01-01"})
        assert r1.status_code == 201, r1.text
        r2 = c.post("/v1/events", json=payload, headers={"Idempotency-Key": "backup-2024-01-01"})
        assert r2.status_code == 200, r2.text
        assert r2.json() == r1.json()
        assert ids(all_events(c)) == [r1.json()["id"]]

        # another key is another event
        r3 = c.post("/v1/events", json=payload, headers={"Idempotency-Key": "backup-2024-01-02"})
        assert r3.status_code == 201 and r3.json()["id"] > r1.json()["id"]

        # lists replay as lists
        batch = [{"topic": "jobs", "title": "a"}, {"topic": "jobs", "title": "b"}]
        b1 = c.post("/v1/events", json=batch, headers={"Idempotency-Key": "batch-1"})
        b2 = c.post("/v1/events", json=batch, headers={"Idempotency-Key": "batch-1"})
        assert (b1.status_code, b2.status_code) == (201, 200)
        assert b2.json() == b1.json() and len(b1.json()["events"]) == 2
        assert len(all_events(c)) == 4

        # the key survives a restart (it is stored with the events)
        daemon.restart()
    with daemon.admin() as c:
        r4 = c.post("/v1/events", json=payload, headers={"Idempotency-Key": "backup-2024-01-01"})
        assert r4.status_code == 200 and r4.json() == r1.json()
        assert len(all_events(c)) == 4

        before = stored_state(c)
        r = c.post("/v1/events", json=payload, headers={"Idempotency-Key": "k" * 129})
        assert_error(r, 422, "invalid", "Idempotency-Key")
        assert stored_state(c) == before


BAD_EVENTS: list[tuple[Any, str]] = [
    ({"topic": "a//b", "title": "x"}, "topic"),
    ({"topic": "../x", "title": "x"}, "topic"),
    ({"topic": "a/" + "s" * 65, "title": "x"}, "topic"),
    ({"topic": "", "title": "x"}, "topic"),
    ({"topic": "has space", "title": "x"}, "topic"),
    ({"topic": "/lead", "title": "x"}, "topic"),
    ({"topic": 7, "title": "x"}, "topic"),
    ({"title": "no topic"}, "topic"),
    ({"topic": "t", "title": "x" * 257}, "title"),
    ({"topic": "t", "body": "x" * 4097}, "body"),
    ({"topic": "t", "title": 5}, "title"),
    ({"topic": "t", "title": "x", "priority": 0}, "priority"),
    ({"topic": "t", "title": "x", "priority": 6}, "priority"),
    ({"topic": "t", "title": "x", "priority": "huge"}, "priority"),
    ({"topic": "t", "title": "x", "priority": True}, "priority"),
    ({"topic": "t", "title": "x", "category": "Not A Slug"}, "category"),
    ({"topic": "t", "title": "x", "category": ""}, "category"),
    ({"topic": "t", "title": "x", "tags": ["ok", "Bad Tag"]}, "tags"),
    ({"topic": "t", "title": "x", "click": "javascript:alert(1)"}, "click"),
    ({"topic": "t", "title": "x", "click": "not a url"}, "click"),
    ({"topic": "t", "title": "x", "icon": "ftp://example.com/icon.png"}, "icon"),
    ({"topic": "t", "title": "x", "image": "data:image/png;base64,AAAA"}, "image"),
    ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "https://e.com/a"}] * 4},
     "actions"),
    ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "javascript:alert(1)"}]},
     "actions[0].url"),
    ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "https://e.com/a",
                                                "extra": 1}]}, "actions[0].extra"),
    ({"topic": "t", "title": "x", "colour": "red"}, "colour"),
    ({"topic": "t"}, "body"),
    ({"topic": "t", "title": "", "body": ""}, "body"),
    ({"topic": "t", "title": "x", "deliver_at": "2030-01-01T10:00:00"}, "deliver_at"),
    ({"topic": "t", "title": "x", "expires_at": "soon"}, "expires_at"),
    ({"topic": "t", "title": "x", "format": "html"}, "format"),
    ({"topic": "t", "title": "x", "collapse_key": "no spaces please"}, "collapse_key"),
    ([], "events"),
    ([{"topic": "t", "title": "ok"}, {"topic": "t", "title": "x" * 257}], "events[1].title"),
    ([{"topic": "t", "title": "ok"}, {"topic": "t", "title": "x", "priority": 9}],
     "events[1].priority"),
]  # fmt: skip


def test_bad_input_is_rejected_and_nothing_is_stored(daemon: Daemon) -> None:
    with daemon.admin() as c:
        publish(c, "t", title="already there")
        before = stored_state(c)
        assert before[0] == 1

        for raw in [b"{bad json", b"", b'{"topic": "t", "title": "x"', b"\xff\xfe", b"[1, 2,]"]:
            r = c.post("/v1/events", content=raw, headers={"content-type": "application/json"})
            assert_error(r, 400, "bad_request")
            assert stored_state(c) == before, raw
        for shape in [b'"a string"', b"42", b"null", b"true"]:
            r = c.post("/v1/events", content=shape, headers={"content-type": "application/json"})
            assert_error(r, 400, "bad_request")
            assert stored_state(c) == before, shape

        for payload, field in BAD_EVENTS:
            r = c.post("/v1/events", json=payload)
            err = assert_error(r, 422, "invalid", field)
            assert stored_state(c) == before, (payload, err)

        # a failed publish does not burn its Idempotency-Key
        r = c.post(
            "/v1/events", json={"topic": "a//b", "title": "x"}, headers={"Idempotency-Key": "k1"}
        )
        assert_error(r, 422, "invalid", "topic")
        r = c.post(
            "/v1/events", json={"topic": "t", "title": "fixed"}, headers={"Idempotency-Key": "k1"}
        )
        assert r.status_code == 201
        assert [e["title"] for e in all_events(c)] == ["fixed", "already there"]


def test_body_over_the_limit_is_413(make_daemon: Any) -> None:
    d = make_daemon(
        extra_env={"NOTIFYD_MAX_REQUEST_BYTES": "2000", "NOTIFYD_MAX_BATCH_EVENTS": "3"}
    ).start()

    def post_once(**kw: Any) -> httpx.Response:
        # Each refused upload on a connection of its own. An answer that leaves the body
        # unread carries "connection: close" and the daemon then closes (server.py's
        # guarded_send); a client that pipelines the next request behind it would be
        # refused. (A pipelined request after an answer that read its body gets no head
        # deadline until keep_alive_timeout: known, open, see server.py's _Guard.)
        with d.admin() as once:
            return once.post("/v1/events", headers={"content-type": "application/json"}, **kw)

    def chunks() -> Any:
        yield b'{"topic": "t", "body": "'
        for _ in range(30):
            yield b"y" * 100
        yield b'"}'

    with d.admin() as c:
        before = stored_state(c)
        big = post_once(json={"topic": "t", "body": "x" * 2100})
        assert int(big.request.headers["content-length"]) > 2000
        assert_error(big, 413, "too_large")
        assert stored_state(c) == before

        # without a Content-Length (chunked), the limit still holds
        r = post_once(content=chunks())
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "too_large")
        assert stored_state(c) == before

        # too many events in one list
        r = c.post("/v1/events", json=[{"topic": "t", "title": str(i)} for i in range(4)])
        assert_error(r, 413, "too_large", "events")
        assert stored_state(c) == before

        # just under both limits is fine
        assert c.post("/v1/events", json={"topic": "t", "body": "z" * 1900}).status_code == 201
        r = c.post("/v1/events", json=[{"topic": "t", "title": str(i)} for i in range(3)])
        assert r.status_code == 201
        assert stored_state(c)[0] == before[0] + 4


# -- history -----------------------------------------------------------------------------------


def test_history_filters(daemon: Daemon) -> None:
    with daemon.admin() as c:
        e1 = publish(c, "ci/build", title="build started", category="ci", priority=2)
        e2 = publish(
            c,
            "ci/deploy",
            title="deployment finished",
            body="prod ok",
            category="deploy",
            priority=4,
        )
        e3 = publish(c, "ops/db", title="disk almost full", priority="urgent", category="ops")
        e4 = publish(c, "ops/db", title="backup done", priority="min", category="ops")
        e5 = publish(c, "misc", body="hello world, AND more")
        every = [e5, e4, e3, e2, e1]

        def got(**params: Any) -> list[int]:
            events = all_events(c, **params)
            assert ids(events) == sorted(ids(events), reverse=True), "newest first"
            return ids(events)

        assert got() == ids(every)
        # topic: exact, and '*' patterns
        assert got(topic="ops/db") == ids([e4, e3])
        assert got(topic="ci") == []
        assert got(topic="ci/*") == ids([e2, e1])
        assert got(topic="*/db") == ids([e4, e3])
        assert got(topic="*") == ids(every)
        assert got(topic="c*") == ids([e2, e1])
        # category, min_priority (number and name)
        assert got(category="ops") == ids([e4, e3])
        assert got(category="nope") == []
        assert got(min_priority=4) == ids([e3, e2])
        assert got(min_priority="high") == ids([e3, e2])
        assert got(min_priority="urgent") == ids([e3])
        assert got(min_priority="min") == ids(every)
        assert got(topic="ops/db", min_priority=5) == ids([e3])
        # full text: words, a prefix of the last word, the body, several words
        assert got(q="deployment") == ids([e2])
        assert got(q="deplo") == ids([e2])
        assert got(q="prod") == ids([e2])
        assert got(q="almost full") == ids([e3])
        assert got(q="full almost") == ids([e3])
        assert got(q="DISK") == ids([e3])
        assert got(q="hello") == ids([e5])
        assert got(q="nothing-like-this") == []
        assert got(q="backup", category="ops") == ids([e4])
        # hostile FTS syntax is taken as words, never a 500
        for hostile in ['"AND OR (', "AND", "NEAR(disk", "disk*", "* ", '"', "''", "-", "^",
                        "col:val", "title:disk", "a OR b", ")(", "\\", "%", "'; DROP TABLE events;--",
                        "é", "😀", "x" * 256]:  # fmt: skip
            r = c.get("/v1/events", params={"q": hostile})
            assert r.status_code == 200, (hostile, r.text)
        assert got(q="AND") == ids([e5])
        assert got(q="title:disk") == []
        assert_error(c.get("/v1/events", params={"q": "x" * 257}), 422, "invalid", "q")
        # since / before
        assert got(since=e2["id"]) == ids([e5, e4, e3])
        assert got(before=e3["id"]) == ids([e2, e1])
        assert got(since=e1["id"], before=e5["id"]) == ids([e4, e3, e2])
        # paging back with next until null
        for limit in (1, 2, 3, 5, 7):
            pages, cursor = [], None
            while True:
                params: dict[str, Any] = {"limit": limit}
                if cursor is not None:
                    params["before"] = cursor
                body = c.get("/v1/events", params=params).json()
                assert len(body["events"]) <= limit
                pages.extend(ids(body["events"]))
                cursor = body["next"]
                if cursor is None:
                    break
                assert cursor == body["events"][-1]["id"]
                assert len(pages) < 10, "paging does not end"
            assert pages == ids(every), limit
        # limit bounds
        assert c.get("/v1/events").json()["next"] is None  # default 50 > 5
        assert c.get("/v1/events", params={"limit": 500}).status_code == 200
        for limit in (0, 501, -1):
            assert_error(c.get("/v1/events", params={"limit": limit}), 422, "invalid", "limit")
        assert_error(c.get("/v1/events", params={"limit": "many"}), 422, "invalid", "limit")
        for bad in ("huge", 0, 6):
            r = c.get("/v1/events", params={"min_priority": bad})
            assert_error(r, 422, "invalid", "min_priority")
        assert_error(c.get("/v1/events", params={"since": -1}), 422, "invalid", "since")
        assert_error(c.get("/v1/events", params={"unread": "maybe"}), 422, "invalid", "unread")
        assert_error(c.get("/v1/events", params={"archived": "all"}), 422, "invalid", "archived")
        # unread true / false
        assert got(unread="true") == ids(every)
        assert got(unread="false") == []
        assert c.post(f"/v1/events/{e2['id']}/read").status_code == 200
        assert c.post(f"/v1/events/{e4['id']}/read").status_code == 200
        assert got(unread="true") == ids([e5, e3, e1])
        assert got(unread="false") == ids([e4, e2])
        assert got(unread="true", topic="ci/*") == ids([e1])


def test_get_one_event(daemon: Daemon) -> None:
    with daemon.admin() as c:
        ev = publish(c, "one", title="the one")
        r = c.get(f"/v1/events/{ev['id']}")
        assert r.status_code == 200 and r.json()["title"] == "the one"
        assert_error(c.get(f"/v1/events/{ev['id'] + 1}"), 404, "not_found", "id")
        assert_error(c.get("/v1/events/999999999"), 404, "not_found", "id")
        assert_error(c.get("/v1/events/0"), 422, "invalid")
        assert_error(c.get("/v1/events/abc"), 422, "invalid")


# -- read state ------------------------------------------------------------------------------------


def state(c: httpx.Client, event_id: int) -> tuple:
    e = c.get(f"/v1/events/{event_id}").json()
    return e["read"], e["seen"], e["archived"], e["clicked_at"], e["action"]


def test_state_routes(daemon: Daemon) -> None:
    with daemon.admin() as c:
        a = publish(c, "s", title="a")["id"]
        b = publish(c, "s", title="b")["id"]
        assert state(c, a) == (False, False, False, None, None)

        def post(event_id: int, what: str, **kw: Any) -> None:
            r = c.post(f"/v1/events/{event_id}/{what}", **kw)
            assert r.status_code == 200, r.text
            assert r.json() == {"id": event_id, "state": what}

        post(a, "seen")
        assert state(c, a) == (False, True, False, None, None)
        post(a, "read")
        assert state(c, a) == (True, True, False, None, None)
        assert ids(all_events(c, unread="true")) == [b]
        post(a, "unread")
        assert state(c, a) == (False, True, False, None, None)
        assert ids(all_events(c, unread="true")) == [b, a]
        post(b, "read")  # read without seen first: read implies seen
        assert state(c, b)[:2] == (True, True)

        post(a, "archive")
        assert state(c, a)[2] is True
        assert ids(all_events(c)) == [b]
        assert ids(all_events(c, archived="only")) == [a]
        assert ids(all_events(c, archived="include")) == [b, a]
        assert all_events(c, archived="only")[0]["archived"] is True
        post(a, "unarchive")
        assert state(c, a)[2] is False
        assert ids(all_events(c)) == [b, a]
        assert all_events(c, archived="only") == []

        post(a, "click", json={"action": "Open"})
        read, seen, archived, clicked_at, action = state(c, a)
        assert (read, seen, archived, action) == (True, True, False, "Open")
        assert RFC3339_Z.match(clicked_at)
        assert all_events(c)[1]["clicked_at"] == clicked_at
        post(b, "click")  # no body: a plain click
        assert state(c, b)[3] is not None and state(c, b)[4] is None
        assert_error(c.post(f"/v1/events/{a}/click", json={"action": "x" * 65}), 422, "invalid")

        missing = b + 1000
        for what in ("read", "unread", "seen", "archive", "unarchive", "click"):
            assert_error(c.post(f"/v1/events/{missing}/{what}"), 404, "not_found", "id")
            assert_error(c.post(f"/v1/events/0/{what}"), 422, "invalid")
        assert_error(c.post(f"/v1/events/{a}/destroy"), 404, "not_found")


def test_bulk_state_and_read_all(daemon: Daemon) -> None:
    with daemon.admin() as c:
        x1 = publish(c, "x", title="x1", category="alpha")["id"]
        x2 = publish(c, "x", title="x2", category="beta")["id"]
        y1 = publish(c, "y/1", title="y1", category="alpha", priority=5)["id"]
        y2 = publish(c, "y/2", title="y2", category="beta")["id"]

        r = c.post("/v1/inbox/state", json={"ids": [x1, y1, 987654, x1], "state": "read"})
        assert r.status_code == 200, r.text
        assert r.json() == {"updated": [x1, y1], "state": "read"}
        assert ids(all_events(c, unread="false")) == [y1, x1]
        r = c.post("/v1/inbox/state", json={"ids": [y1], "state": "unread"})
        assert r.json()["updated"] == [y1]
        r = c.post("/v1/inbox/state", json={"ids": [x2, y2], "state": "archive"})
        assert r.json()["updated"] == [x2, y2]
        assert ids(all_events(c)) == [y1, x1]
        c.post("/v1/inbox/state", json={"ids": [x2, y2], "state": "unarchive"})
        r = c.post("/v1/inbox/state", json={"ids": [999999], "state": "seen"})
        assert r.status_code == 200 and r.json()["updated"] == []
        for bad in [
            {"ids": [], "state": "read"},
            {"ids": [x1], "state": "bogus"},
            {"ids": [x1], "state": "click"},
            {"ids": ["a"], "state": "read"},
            {"ids": list(range(1, 502)), "state": "read"},
            {"state": "read"},
        ]:
            assert_error(c.post("/v1/inbox/state", json=bad), 422, "invalid")
        assert ids(all_events(c, unread="true")) == [y2, y1, x2]

        def count(**filters: str) -> int:
            r = c.get("/v1/inbox/count", params=filters)
            assert r.status_code == 200, r.text
            return r.json()["count"]

        # the count follows the same filters as the history, archived excluded by default
        assert count(unread="true") == 3
        assert count() == 4
        assert count(unread="true", topic="y/*") == 2
        assert count(unread="true", min_priority="urgent") == 1
        assert count(q="x2") == 1
        assert count(archived="only") == 0
        assert_error(c.get("/v1/inbox/count", params={"unread": "maybe"}), 422, "invalid")

        # read-all with filters marks only the matching ones
        r = c.post("/v1/inbox/read-all", params={"topic": "y/*", "category": "beta"})
        assert r.status_code == 200, r.text
        assert r.json()["updated"] == 1
        assert ids(all_events(c, unread="true")) == [y1, x2]
        r = c.post("/v1/inbox/read-all", params={"min_priority": "urgent"})
        assert r.json()["updated"] == 1
        assert ids(all_events(c, unread="true")) == [x2]
        r = c.post("/v1/inbox/read-all", params={"topic": "nothing"})
        assert r.json()["updated"] == 0
        assert ids(all_events(c, unread="true")) == [x2]

        # without filters: everything, and a later event stays unread
        r = c.post("/v1/inbox/read-all")
        assert r.json()["updated"] == 1
        assert r.json()["upto"] == y2
        assert all_events(c, unread="true") == []
        assert count(unread="true") == 0
        later = publish(c, "x", title="later")["id"]
        assert ids(all_events(c, unread="true")) == [later]
        # an event read via read-all can be marked unread again
        c.post(f"/v1/events/{x1}/unread")
        assert ids(all_events(c, unread="true")) == [later, x1]
        r = c.post("/v1/inbox/read-all")
        assert r.json()["updated"] == 2
        assert all_events(c, unread="true") == []
        assert_error(c.post("/v1/inbox/read-all", params={"min_priority": "x"}), 422, "invalid")


# -- collapse, expiry, scheduling --------------------------------------------------------------


def test_collapse_key_and_expiry(daemon: Daemon) -> None:
    with daemon.admin() as c:
        old = publish(c, "builds", title="build 1 running", collapse_key="build-1")["id"]
        other = publish(c, "builds", title="unrelated")["id"]
        elsewhere = publish(c, "other", title="same key, other topic", collapse_key="build-1")["id"]
        new = publish(c, "builds", title="build 1 passed", collapse_key="build-1")["id"]
        assert ids(all_events(c)) == [new, elsewhere, other]
        assert all_events(c, q="running") == []
        # within one list, the later one wins too
        r = c.post(
            "/v1/events",
            json=[
                {"topic": "builds", "title": "step 1", "collapse_key": "steps"},
                {"topic": "builds", "title": "step 2", "collapse_key": "steps"},
            ],
        )
        s1, s2 = ids(r.json()["events"])
        assert ids(all_events(c)) == [s2, new, elsewhere, other]
        assert old not in ids(all_events(c, archived="include"))

        # expires_at in the past: accepted, but hidden from the history
        gone = publish(c, "temp", title="stale", expires_at="2000-01-01T00:00:00Z")
        assert isinstance(gone["id"], int)
        fresh = publish(c, "temp", title="fresh", expires_at=ts(3600))["id"]
        assert ids(all_events(c, topic="temp")) == [fresh]
        assert all_events(c, q="stale") == []
        assert s1 not in ids(all_events(c))


def test_scheduled_delivery_and_expiry_over_time(daemon: Daemon) -> None:
    with daemon.admin() as c:
        publish(c, "sched", title="now")
        when = ts(2.5)
        # a rejected list holding a scheduled event schedules nothing
        r = c.post(
            "/v1/events",
            json=[{"topic": "sched", "title": "ghost", "deliver_at": when}, {"topic": "a//b"}],
        )
        assert_error(r, 422, "invalid", "events[1].topic")
        r = c.post("/v1/events", json={"topic": "sched", "title": "later", "deliver_at": when})
        assert r.status_code == 201, r.text
        held = r.json()
        assert held["id"] is None and held["status"] == "scheduled"
        assert held["title"] == "later" and held["topic"] == "sched"
        # a later event with the same topic and collapse key cancels a scheduled one;
        # the same key on another topic does not
        for topic in ("sched", "other"):
            r = c.post("/v1/events", json={"topic": topic, "title": "replaced",
                                           "collapse_key": "k", "deliver_at": when})  # fmt: skip
            assert r.status_code == 201 and r.json()["status"] == "scheduled", r.text
        publish(c, "sched", title="replacement", collapse_key="k")
        publish(c, "other2", title="unrelated", collapse_key="k")
        short = publish(c, "sched", title="short-lived", expires_at=ts(2.5))["id"]
        # deliver_at in the past is delivered right away
        past = publish(c, "sched", title="overdue", deliver_at="2001-01-01T00:00:00+02:00")
        assert isinstance(past["id"], int)
        assert past["deliver_at"] == "2000-12-31T22:00:00.000Z"
        assert [e["title"] for e in all_events(c, topic="sched")] == [
            "overdue", "short-lived", "replacement", "now"]  # fmt: skip

        def released() -> list[dict]:
            return [e for e in all_events(c, topic="sched") if e["title"] == "later"]

        (ev,) = wait_for(released, timeout=10, message="the scheduled event to be released")
        assert ev["id"] > past["id"]
        assert datetime.now(UTC) >= datetime.fromisoformat(when)
        assert ev["deliver_at"] == when
        wait_for(
            lambda: short not in ids(all_events(c, topic="sched")),
            timeout=10,
            message="the expiring event to disappear",
        )
        assert [e["title"] for e in all_events(c, topic="sched")] == [
            "later", "overdue", "replacement", "now"]  # fmt: skip
        # released at the same moment as "later" (one scheduler pass), or not at all
        assert [e["title"] for e in all_events(c, topic="other")] == ["replaced"]
        assert all_events(c, q="ghost") == []  # it would have been released with "later"


# -- system endpoints, routing, persistence ----------------------------------------------------------


def test_system_endpoints_and_unknown_routes(daemon: Daemon) -> None:
    with daemon.admin() as c:
        publish(c, "m", title="counted")
        h = c.get("/healthz")
        assert h.status_code == 200
        assert h.json()["status"] == "ok" and h.json()["last_event_id"] >= 1
        # /healthz needs no token over TCP either
        assert httpx.get(daemon.url + "/healthz").status_code == 200

        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert "notifyd_commit_batch_jobs" in m.text
        published = re.search(r"^notifyd_events_published_total (\S+)$", m.text, re.M)
        assert published and float(published.group(1)) >= 1

        spec = c.get("/v1/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        for path in [
            "/v1/events", "/v1/events/{event_id}", "/v1/events/{event_id}/read",
            "/v1/events/{event_id}/unread", "/v1/events/{event_id}/seen",
            "/v1/events/{event_id}/archive", "/v1/events/{event_id}/unarchive",
            "/v1/events/{event_id}/click", "/v1/inbox/state", "/v1/inbox/read-all",
            "/v1/users", "/v1/tokens", "/v1/acl", "/v1/me", "/healthz", "/metrics",
        ]:  # fmt: skip
            assert path in paths, path
        assert {"get", "post"} <= set(paths["/v1/events"])

        for method, path in [
            ("GET", "/v1/nope"),
            ("POST", "/v1/nope/deeper"),
            ("GET", "/v2/events"),
        ]:
            assert_error(c.request(method, path), 404, "not_found")
        assert_error(c.delete("/v1/events"), 405, "method_not_allowed")


def test_healthz_and_metrics_name_the_node_and_its_engine(make_daemon: Any, engine: str) -> None:
    """node_name (issue 15): /healthz says which node answered and on which engine, and
    /metrics carries the same as notifyd_node_info; by default host name and pid."""
    import socket

    named = make_daemon(node_name="eu-1.node_a").start()
    default = make_daemon().start()
    with named.admin() as c:
        health = c.get("/healthz").json()
        assert health["node"] == "eu-1.node_a" and health["engine"] == engine
        text = c.get("/metrics").text
        series = re.findall(r"^notifyd_node_info\{(.*)\} (\S+)$", text, re.M)
        assert len(series) == 1, text
        labels, value = series[0]
        assert 'node="eu-1.node_a"' in labels and f'engine="{engine}"' in labels
        assert float(value) == 1
    assert default.proc is not None
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())
    expected = f"{host[: 63 - len(str(default.proc.pid))]}-{default.proc.pid}"
    assert httpx.get(default.url + "/healthz").json()["node"] == expected
    assert f'node="{expected}"' in httpx.get(default.url + "/metrics").text


def test_events_persist_across_restart(daemon: Daemon) -> None:
    with daemon.admin() as c:
        a = publish(c, "keep", title="first", tags=["x"])
        b = publish(c, "keep", title="second")
        c.post(f"/v1/events/{a['id']}/read")
        r = c.post(
            "/v1/events", json={"topic": "keep", "title": "scheduled", "deliver_at": ts(3600)}
        )
        assert r.json()["status"] == "scheduled"
        before = all_events(c)
    daemon.restart()
    with daemon.admin() as c:
        after = all_events(c)
        assert after == before
        assert ids(after) == [b["id"], a["id"]] and after[1]["read"] is True
        assert c.get(f"/v1/events/{a['id']}").json()["tags"] == ["x"]
        assert c.get("/healthz").json()["last_event_id"] == b["id"]
        # ids keep increasing after a restart
        assert publish(c, "keep", title="third")["id"] > b["id"]
    daemon.kill()  # even without a clean shutdown
    daemon.start()
    with daemon.admin() as c:
        assert [e["title"] for e in all_events(c)] == ["third", "second", "first"]


def test_concurrent_retries_with_one_idempotency_key_store_one_event(daemon: Daemon) -> None:
    """Concurrent publishes are merged into one write by the group commit; retries
    sharing a key inside that one write must still store the event once."""
    from concurrent.futures import ThreadPoolExecutor

    def publish(n: int) -> tuple[int, dict]:
        with daemon.admin() as c:
            key = "same-key" if n % 2 == 0 else f"key-{n}"
            r = c.post(
                "/v1/events",
                json={"topic": "idem", "title": f"t{n}"},
                headers={"Idempotency-Key": key},
            )
            return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(publish, range(32)))
    same = [(status, body) for n, (status, body) in enumerate(answers) if n % 2 == 0]
    assert sorted(status for status, _ in same).count(201) == 1
    assert {body["id"] for _, body in same} == {same[0][1]["id"]}
    others = [body["id"] for n, (status, body) in enumerate(answers) if n % 2 == 1]
    assert len(set(others)) == 16
    with daemon.admin() as c:
        stored = c.get("/v1/events", params={"topic": "idem", "limit": 100}).json()["events"]
    assert len(stored) == 17
