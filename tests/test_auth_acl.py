"""Authentication, accounts and ACL isolation against a real daemon.

TCP needs a bearer token, the Unix socket acts as the admin; users, tokens and grants
are managed through ``/v1/users``, ``/v1/tokens`` and ``/v1/acl``; a user only ever
sees and touches events of topics it may read, and a property-based test checks
that over random grant sets. ``glob_match`` is checked against a reference.
"""

from __future__ import annotations

import fnmatch
import itertools
from functools import cache
from typing import Any

import httpx
import pytest
from conftest import Daemon
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notifyd.core.acl import glob_match

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

_MISSING = object()


def assert_error(r: httpx.Response, status: int, code: str, field: Any = _MISSING) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message"} <= set(err) <= {"code", "message", "field"}, err
    assert err["code"] == code, err
    if field is not _MISSING:
        assert err.get("field") == field, err
    return err


def history(c: httpx.Client, **params: Any) -> list[dict]:
    r = c.get("/v1/events", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def publish(c: httpx.Client, topic: str, **fields: Any) -> dict:
    fields.setdefault("title", f"about {topic}")
    r = c.post("/v1/events", json={"topic": topic, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def total(daemon: Daemon) -> int:
    with daemon.admin() as c:
        return len(history(c, archived="include"))


# -- authentication -----------------------------------------------------------------------------


def test_tcp_needs_a_valid_token_and_the_socket_is_admin(daemon: Daemon) -> None:
    daemon.publish("t")
    for path, method in [("/v1/events", "GET"), ("/v1/events", "POST"), ("/v1/me", "GET"),
                         ("/v1/events/1", "GET"), ("/v1/inbox/read-all", "POST"),
                         ("/v1/users", "GET"), ("/v1/tokens", "GET")]:  # fmt: skip
        with daemon.http() as h:
            r = h.request(method, path, json={"topic": "t", "title": "x"})
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
    bad_headers = [
        "Bearer nfy_" + "A" * 40,  # well-formed, unknown
        "Bearer not-a-token",
        "Bearer nfy_",
        "bearer " + "nfy_" + "B" * 40,
        "Bearer",
        "Basic YWRtaW46YWRtaW4=",
        "nfy_" + "A" * 40,
        "garbage",
    ]
    with daemon.http() as h:
        for header in bad_headers:
            auth = {"Authorization": header}
            r = h.get("/v1/events", headers=auth)
            assert_error(r, 401, "unauthorized")
            assert "WWW-Authenticate" in r.headers
            assert "A" * 40 not in r.text  # a token is never echoed
            r = h.post("/v1/events", json={"topic": "t", "title": "x"}, headers=auth)
            assert_error(r, 401, "unauthorized")
    assert total(daemon) == 1

    with daemon.admin() as c:
        me = c.get("/v1/me").json()
        assert me == {
            "user": "admin",
            "role": "admin",
            "via": "socket",
            "scopes": ["account", "admin", "publish", "subscribe"],
            "topics": None,
        }
        assert c.get("/v1/users").status_code == 200

    token = daemon.user("carol", grants={"t": "read"})
    with daemon.http(token) as h:
        me = h.get("/v1/me").json()
        assert me == {
            "user": "carol",
            "role": "user",
            "via": "token",
            "scopes": ["publish", "subscribe"],
            "topics": None,
        }
        assert [e["topic"] for e in history(h)] == ["t"]
        # the token travels in the header; a query parameter does not authenticate here
    with daemon.http() as h:
        assert h.get("/v1/events", params={"token": token}).status_code == 401


def test_users_tokens_and_acl_crud(daemon: Daemon) -> None:
    with daemon.admin() as c:
        # users
        r = c.post("/v1/users", json={"name": "dave"})
        assert r.status_code == 201, r.text
        dave = r.json()
        assert dave["name"] == "dave" and dave["role"] == "user" and dave["has_password"] is False
        assert "password" not in dave and "password_hash" not in dave
        assert_error(c.post("/v1/users", json={"name": "dave"}), 409, "conflict", "name")
        r = c.post("/v1/users", json={"name": "erin", "role": "admin", "password": "correct horse"})
        assert r.status_code == 201 and r.json()["has_password"] is True
        assert "correct horse" not in r.text and "argon2" not in r.text
        # names are topic-safe: a letter or digit, then a–z 0–9 _ . -, at most 64
        for name in ["Dave", "_dave", ".dave", "", "d" * 65, "da ve", "dave/x", "dave@x", "-dave"]:
            assert_error(c.post("/v1/users", json={"name": name}), 422, "invalid", "name")
        assert_error(c.post("/v1/users", json={"name": "frank", "role": "root"}), 422, "invalid")
        assert_error(
            c.post("/v1/users", json={"name": "frank", "password": "short"}),
            422, "invalid", "password",
        )  # fmt: skip
        users = c.get("/v1/users").json()["users"]
        assert [u["name"] for u in users] == ["admin", "dave", "erin"]
        assert all("password_hash" not in u and "argon2" not in str(u) for u in users)
        # the longest name is taken (and removed again, for what follows)
        assert c.post("/v1/users", json={"name": "d" * 64}).status_code == 201
        assert c.delete("/v1/users/" + "d" * 64).status_code == 204

        # tokens: the secret only in the answer to create
        r = c.post("/v1/tokens", json={"user": "dave", "label": "laptop"})
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["token"]
        assert secret.startswith("nfy_") and len(secret) >= 40
        assert created["user"] == "dave" and created["label"] == "laptop"
        assert created["scopes"] == ["publish", "subscribe"] and created["topics"] is None
        assert secret.startswith(created["prefix"]) and len(created["prefix"]) < len(secret) // 2
        listed = c.get("/v1/tokens").json()["tokens"]
        assert [t["id"] for t in listed] == [created["id"]]
        assert secret not in c.get("/v1/tokens").text
        assert all("token" not in t and "hash" not in t for t in listed)
        assert c.get("/v1/tokens", params={"user": "erin"}).json()["tokens"] == []
        assert_error(c.post("/v1/tokens", json={"user": "nobody"}), 404, "not_found", "user")
        assert_error(c.post("/v1/tokens", json={"user": "dave", "scopes": []}), 422, "invalid")
        assert_error(
            c.post("/v1/tokens", json={"user": "dave", "scopes": ["root"]}), 422, "invalid"
        )
        r = c.post("/v1/tokens", json={"user": "dave", "scopes": ["admin"]})
        assert_error(r, 422, "invalid", "scopes")  # only admins hold admin tokens
        r = c.post("/v1/tokens", json={"user": "dave", "topics": "bad pattern"})
        assert_error(r, 422, "invalid", "topics")

        # acl
        r = c.post("/v1/acl", json={"user": "dave", "pattern": "home/*", "permission": "read"})
        assert r.status_code == 201, r.text
        assert {k: r.json()[k] for k in ("user", "pattern", "read", "write")} == {
            "user": "dave", "pattern": "home/*", "read": True, "write": False,
        }  # fmt: skip
        r = c.post("/v1/acl", json={"user": "dave", "pattern": "home/*", "permission": "rw"})
        assert r.status_code == 201 and r.json()["write"] is True  # a second grant updates
        r = c.post("/v1/acl", json={"user": "dave", "pattern": "dave/inbox", "permission": "write"})
        assert r.status_code == 201
        acl = c.get("/v1/acl", params={"user": "dave"}).json()["acl"]
        assert [(a["pattern"], a["read"], a["write"]) for a in acl] == [
            ("home/*", True, True),
            ("dave/inbox", False, True),
        ]
        assert len(c.get("/v1/acl").json()["acl"]) == 2
        for bad, field in [
            ({"user": "dave", "pattern": "a b", "permission": "read"}, "pattern"),
            ({"user": "dave", "pattern": "a?", "permission": "read"}, "pattern"),
            ({"user": "dave", "pattern": "", "permission": "read"}, "pattern"),
            ({"user": "dave", "pattern": "x", "permission": "admin"}, "permission"),
        ]:
            assert_error(c.post("/v1/acl", json=bad), 422, "invalid", field)
        r = c.post("/v1/acl", json={"user": "nobody", "pattern": "x", "permission": "read"})
        assert_error(r, 404, "not_found", "user")

    publish_ids = []
    with daemon.admin() as c:
        publish_ids = [publish(c, t)["id"] for t in ("home/kitchen", "work/mail")]
    with daemon.http(secret) as h:
        assert h.get("/v1/me").json()["user"] == "dave"
        assert [e["topic"] for e in history(h)] == ["home/kitchen"]
        assert h.post("/v1/events", json={"topic": "dave/inbox", "title": "x"}).status_code == 201
        # dave cannot read what dave may only write
        assert [e["topic"] for e in history(h)] == ["home/kitchen"]

    with daemon.admin() as c:
        grant = {"user": "dave", "pattern": "home/*"}
        assert c.request("DELETE", "/v1/acl", params=grant).status_code == 204
        assert_error(c.request("DELETE", "/v1/acl", params=grant), 404, "not_found")
    with daemon.http(secret) as h:
        # the revoked grant takes effect at once
        assert history(h) == []
        assert_error(h.get(f"/v1/events/{publish_ids[0]}"), 404, "not_found")

    with daemon.admin() as c:
        assert c.delete("/v1/users/dave").status_code == 204
        assert_error(c.delete("/v1/users/dave"), 404, "not_found")
        assert c.get("/v1/tokens").json()["tokens"] == []
        assert [u["name"] for u in c.get("/v1/users").json()["users"]] == ["admin", "erin"]
    with daemon.http(secret) as h:
        assert_error(h.get("/v1/me"), 401, "unauthorized")


def test_non_admins_cannot_administer(daemon: Daemon) -> None:
    token = daemon.user("gina", grants={"g/*": "rw"}, scopes=["publish", "subscribe", "account"])
    other = daemon.user("hank")
    with daemon.http(token) as h:
        for method, path, body in [
            ("GET", "/v1/users", None),
            ("POST", "/v1/users", {"name": "mallory", "role": "admin"}),
            ("DELETE", "/v1/users/hank", None),
            ("GET", "/v1/acl", None),
            ("POST", "/v1/acl", {"user": "gina", "pattern": "*", "permission": "rw"}),
            ("POST", "/v1/tokens", {"user": "hank"}),
            ("PUT", "/v1/users/hank/password", {"password": "hijacked-it"}),
        ]:
            assert_error(h.request(method, path, json=body), 403, "forbidden")
        r = h.request("DELETE", "/v1/acl", params={"user": "gina", "pattern": "g/*"})
        assert_error(r, 403, "forbidden")
        r = h.post("/v1/tokens", json={"scopes": ["publish", "admin"]})
        assert r.status_code in (403, 422), r.text
        # their own tokens: yes
        r = h.post("/v1/tokens", json={"label": "phone"})
        assert r.status_code == 201 and r.json()["user"] == "gina"
        mine = h.get("/v1/tokens").json()["tokens"]
        assert {t["user"] for t in mine} == {"gina"} and len(mine) == 2
        assert r.json()["token"] not in h.get("/v1/tokens").text
        # not someone else's: hank's token id is invisible to gina
        with daemon.admin() as c:
            hank_id = c.get("/v1/tokens", params={"user": "hank"}).json()["tokens"][0]["id"]
        assert_error(h.delete(f"/v1/tokens/{hank_id}"), 404, "not_found")
        # their own password needs the current one (tests/test_scopes.py)
        r = h.put("/v1/users/gina/password", json={"password": "long enough"})
        assert_error(r, 403, "forbidden", "current_password")
    with daemon.http(other) as h:
        assert h.get("/v1/me").json()["user"] == "hank"
    with daemon.admin() as c:
        assert [u["name"] for u in c.get("/v1/users").json()["users"]] == ["admin", "gina", "hank"]
        assert len(c.get("/v1/acl").json()["acl"]) == 1

    # an admin user whose token lacks the admin scope is not an admin through it
    weak = daemon.user("ivy", role="admin", scopes=["publish", "subscribe"])
    with daemon.http(weak) as h:
        assert_error(h.get("/v1/users"), 403, "forbidden")
        assert h.get("/v1/me").json()["role"] == "admin"
    strong = daemon.user("jill", role="admin")
    with daemon.http(strong) as h:
        assert h.get("/v1/users").status_code == 200
        assert h.get("/v1/me").json()["scopes"] == ["admin", "publish", "subscribe"]


def test_token_scopes_topics_and_revocation(daemon: Daemon) -> None:
    with daemon.admin() as c:
        for t in ("ci/a", "ci/b", "ops"):
            publish(c, t)
    n = total(daemon)
    reader = daemon.user("kim", grants={"*": "rw"}, scopes=["subscribe"])
    writer = daemon.user("kim", scopes=["publish"])
    narrow = daemon.user("kim", topics="ci/*")
    with daemon.http(reader) as h:
        assert_error(h.post("/v1/events", json={"topic": "ci/a", "title": "x"}), 403, "forbidden")
        assert len(history(h)) == 3
    with daemon.http(writer) as h:
        assert h.post("/v1/events", json={"topic": "ops", "title": "w"}).status_code == 201
        assert history(h) == []  # no subscribe scope: nothing to read
        n += 1
    with daemon.http(narrow) as h:
        assert_error(h.post("/v1/events", json={"topic": "ops", "title": "x"}), 403, "forbidden")
        r = h.post(
            "/v1/events", json=[{"topic": "ci/a", "title": "x"}, {"topic": "ops", "title": "x"}]
        )
        assert_error(r, 403, "forbidden")
        assert h.post("/v1/events", json={"topic": "ci/new", "title": "ok"}).status_code == 201
        n += 1
        assert {e["topic"] for e in history(h)} == {"ci/a", "ci/b", "ci/new"}
        with daemon.admin() as c:
            ops_id = next(e["id"] for e in history(c) if e["topic"] == "ops")
        assert_error(h.get(f"/v1/events/{ops_id}"), 404, "not_found")
        assert_error(h.post(f"/v1/events/{ops_id}/read"), 404, "not_found")
        assert h.get("/v1/me").json()["topics"] == "ci/*"
    assert total(daemon) == n

    # revoking a token works on the very next request (also right after it was used)
    with daemon.http(narrow) as h:
        assert h.get("/v1/me").status_code == 200
        with daemon.admin() as c:
            tok = next(t for t in c.get("/v1/tokens").json()["tokens"] if t["topics"] == "ci/*")
            assert c.delete(f"/v1/tokens/{tok['id']}").status_code == 204
            assert_error(c.delete(f"/v1/tokens/{tok['id']}"), 404, "not_found")
        assert_error(h.get("/v1/me"), 401, "unauthorized")
        assert_error(
            h.post("/v1/events", json={"topic": "ci/a", "title": "x"}), 401, "unauthorized"
        )
    # a user can revoke their own token with it
    with daemon.http(reader) as h:
        me = next(t for t in h.get("/v1/tokens").json()["tokens"] if t["scopes"] == ["subscribe"])
        assert h.delete(f"/v1/tokens/{me['id']}").status_code == 204
        assert_error(h.get("/v1/events"), 401, "unauthorized")
    with daemon.http(writer) as h:
        assert h.get("/v1/me").status_code == 200  # the others still work
    assert total(daemon) == n


def test_token_list_shows_when_a_token_was_last_used(daemon: Daemon) -> None:
    token = daemon.user("mo")
    with daemon.http(token) as h:
        assert h.get("/v1/me").status_code == 200
        (listed,) = h.get("/v1/tokens").json()["tokens"]
    assert listed["last_used_at"] is not None


def test_a_narrow_token_cannot_mint_a_wider_one(daemon: Daemon) -> None:
    with daemon.admin() as c:
        publish(c, "x/secret")
    narrow = daemon.user("lee", grants={"x/*": "rw"}, scopes=["subscribe"], topics="x/a")
    before = total(daemon)
    with daemon.http(narrow) as h:
        r = h.post("/v1/tokens", json={})
        minted = r.json().get("token") if r.status_code == 201 else None
    if minted is not None:
        with daemon.http(minted) as h:
            assert h.post("/v1/events", json={"topic": "x/b", "title": "x"}).status_code == 403
            assert history(h) == []
    assert total(daemon) == before


def test_read_all_through_a_topic_limited_admin_token(daemon: Daemon) -> None:
    with daemon.admin() as c:
        publish(c, "ci/a")
        other = publish(c, "other")["id"]
        token = c.post("/v1/tokens", json={"topics": "ci/*"}).json()["token"]
    with daemon.http(token) as h:
        assert h.post("/v1/inbox/read-all").json()["updated"] == 1
    with daemon.admin() as c:
        assert c.get(f"/v1/events/{other}").json()["read"] is False


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/users", {"name": "eve\n"}),
        ("/v1/acl", {"user": "admin", "pattern": "x\n", "permission": "read"}),
    ],
)
@pytest.mark.sqlite_only(reason="request validation, refused before any store call")
def test_trailing_newline_in_names_and_patterns(daemon: Daemon, path: str, body: dict) -> None:
    with daemon.admin() as c:
        assert_error(c.post(path, json=body), 422, "invalid")


# -- ACL isolation ---------------------------------------------------------------------------------


def test_acl_isolation(daemon: Daemon) -> None:
    with daemon.admin() as c:
        mine = publish(c, "team/x", title="team standup notes")["id"]
        secret = publish(c, "secret/x", title="team secret plan")["id"]
        publish(c, "team/alice", title="for alice")
    alice = daemon.user("alice", grants={"team/*": "read", "team/alice": "rw"})
    n = total(daemon)
    with daemon.http(alice) as h:
        assert {e["topic"] for e in history(h)} == {"team/x", "team/alice"}
        # publishing needs write
        for topic in ("secret/x", "team/x", "elsewhere"):
            r = h.post("/v1/events", json={"topic": topic, "title": "sneaky"})
            assert_error(r, 403, "forbidden", "topic")
        r = h.post("/v1/events", json=[{"topic": "team/alice", "title": "ok"},
                                        {"topic": "secret/x", "title": "sneaky"}])  # fmt: skip
        assert_error(r, 403, "forbidden")
        assert total(daemon) == n
        own = h.post("/v1/events", json={"topic": "team/alice", "title": "mine"})
        assert own.status_code == 201
        n += 1

        # an invisible event looks exactly like a missing one
        missing = secret + 1000
        for path in (f"/v1/events/{secret}", f"/v1/events/{missing}"):
            err = assert_error(h.get(path), 404, "not_found", "id")
            assert "secret" not in err["message"]
        for what in ("read", "unread", "seen", "archive", "unarchive", "click"):
            assert_error(h.post(f"/v1/events/{secret}/{what}"), 404, "not_found", "id")
        r = h.post("/v1/inbox/state", json={"ids": [mine, secret], "state": "read"})
        assert r.json()["updated"] == [mine]
        # no filter reveals it
        assert history(h, q="secret") == []
        assert {e["id"] for e in history(h, q="team")} == {mine}
        assert history(h, topic="secret/x") == []
        assert history(h, topic="secret/*") == []
        assert secret not in {e["id"] for e in history(h, topic="*")}
        assert secret not in {e["id"] for e in history(h, since=0, archived="include")}
        r = h.post("/v1/inbox/read-all")
        assert r.json()["updated"] == 2  # team/alice and alice's own event; mine was read
        assert history(h, unread="true") == []

    # read state is per user: the admin's inbox is untouched
    with daemon.admin() as c:
        assert all(e["read"] is False for e in history(c))
        assert c.get(f"/v1/events/{secret}").json()["read"] is False
    assert total(daemon) == n


# -- property: what each user sees is exactly what its read patterns match ------------------------

TOPICS = ["a", "a/b", "a/b/c", "b", "b/x", "ops.db", "ci-1"]
PATTERNS = [*TOPICS, "a/*", "*", "b*", "*/c"]


@cache
def ref_glob(pattern: str, topic: str) -> bool:
    """Reference semantics: ``*`` matches any run of characters (``/`` too); all else literal."""
    if not pattern:
        return not topic
    if pattern[0] == "*":
        return any(ref_glob(pattern[1:], topic[i:]) for i in range(len(topic) + 1))
    return bool(topic) and topic[0] == pattern[0] and ref_glob(pattern[1:], topic[1:])


grant_sets = st.dictionaries(
    st.sampled_from(PATTERNS), st.sampled_from(["read", "write", "rw"]), max_size=4
)
user_specs = st.lists(
    st.tuples(grant_sets, st.none() | st.sampled_from(PATTERNS)), min_size=1, max_size=3
)
_names = itertools.count()


def test_each_user_sees_exactly_what_it_may_read(daemon: Daemon) -> None:
    with daemon.admin() as c:
        r = c.post("/v1/events", json=[{"topic": t, "title": f"marker {t}"} for t in TOPICS])
        by_topic = {e["topic"]: e["id"] for e in r.json()["events"]}

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(user_specs)
    @example([({}, None)])
    @example([({"*": "write"}, None)])
    @example([({"*": "read"}, "a/*"), ({"b*": "rw", "*/c": "read"}, None)])
    def check(specs: list[tuple[dict[str, str], str | None]]) -> None:
        for grants, token_topics in specs:
            name = f"u{next(_names)}"
            token = daemon.user(name, grants=grants, topics=token_topics)
            readable = [p for p, perm in grants.items() if perm in ("read", "rw")]
            expected = {
                t
                for t in TOPICS
                if any(ref_glob(p, t) for p in readable)
                and (token_topics is None or ref_glob(token_topics, t))
            }
            with daemon.http(token) as h:
                seen = history(h)
                assert sorted(e["topic"] for e in seen) == sorted(expected), (grants, token_topics)
                assert {e["id"] for e in seen} == {by_topic[t] for t in expected}
                assert {e["topic"] for e in history(h, q="marker")} == expected
                assert {e["topic"] for e in history(h, topic="*")} == expected
                for t, event_id in by_topic.items():
                    r = h.get(f"/v1/events/{event_id}")
                    assert r.status_code == (200 if t in expected else 404), (
                        t,
                        grants,
                        token_topics,
                    )

    check()


# -- glob_match against the reference --------------------------------------------------------------

GLOB_CHARS = "ab/.-*?[]"


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.text(GLOB_CHARS, max_size=8), st.text(GLOB_CHARS, max_size=10))
@example("a/*", "a/b/c")
@example("*", "")
@example("*/c", "a/b/c")
@example("a?", "ab")
@example("[ab]", "a")
@example("a*b*a", "aba")
def test_glob_match_reference(pattern: str, topic: str) -> None:
    assert glob_match(pattern, topic) == ref_glob(pattern, topic)
    if not set(pattern) & set("?[]"):
        # fnmatch agrees where the only special character is '*' ('/' is not special there)
        assert glob_match(pattern, topic) == fnmatch.fnmatchcase(topic, pattern)


def test_glob_match_examples() -> None:
    assert glob_match("a/*", "a/b/c")
    assert glob_match("*", "anything/at/all")
    assert glob_match("b*", "b/x") and glob_match("b*", "b")
    assert glob_match("*/c", "a/b/c") and not glob_match("*/c", "c")
    assert not glob_match("a/*", "a") and not glob_match("a", "a/b")
    assert not glob_match("a?", "ab") and glob_match("a?", "a?")
    assert not glob_match("A", "a")
