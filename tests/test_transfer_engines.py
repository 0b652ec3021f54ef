"""Moving a whole installation between engines with `notifyd export --with-accounts`
and `notifyd import` (issue 15): real daemons on SQLite and PostgreSQL nodes, the
CLI as operators run it, a real Web Push service (tests/pushservice.py) and the
``memory`` channel kind (tests/memory_plugin.py)."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, wait_for
from pushservice import PushService, Subscription
from test_cli import cli
from test_ops import memory_env

from notifyd.core.errors import ValidationFailed
from notifyd.core.transfer import _Parser

PASSWORD = "correct horse battery staple"
PREFS = {
    "rules": [{"topic": "noisy/*", "mute": True}],
    "timezone": "Europe/Berlin",
    "rate_limit_per_minute": 50,
}


@pytest.fixture
def push() -> Iterator[PushService]:
    with PushService() as ps:
        yield ps


class Source:
    """What populate() made on a daemon: the credentials a user keeps after the move."""

    def __init__(self, alice: str, bob: str, sub: Subscription) -> None:
        self.alice, self.bob, self.sub = alice, bob, sub


def populate(d: Daemon, push: PushService) -> Source:
    """Users (alice with a password), tokens, grants, channels (memory and a Web Push
    subscription), preferences, events with read state."""
    with d.admin() as c:
        r = c.post("/v1/users", json={"name": "alice", "role": "user", "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = c.post("/v1/acl", json={"user": "alice", "pattern": "alerts/*", "permission": "rw"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/acl", json={"user": "alice", "pattern": "noisy/*", "permission": "read"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/tokens", json={"user": "alice", "label": "phone",
                                       "scopes": ["publish", "subscribe", "account"]})  # fmt: skip
        assert r.status_code == 201, r.text
        alice = r.json()["token"]
        r = c.post("/v1/channels", json={"name": "box", "kind": "memory", "user": "alice",
                                         "config": {"latency": 0}})  # fmt: skip
        assert r.status_code == 201, r.text
        r = c.put("/v1/preferences", params={"user": "alice"}, json=PREFS)
        assert r.status_code == 200, r.text
    bob = d.user("bob", role="admin", scopes=["admin", "publish", "subscribe"], topics="ops/*")
    with d.http(alice) as a:
        push.vapid_public_key = a.get("/v1/webpush/vapid-public-key").json()["public_key"]
    sub = push.subscribe()
    with d.http(alice) as a:
        r = a.post("/v1/webpush/subscriptions", json=sub.info(), headers={"User-Agent": "Fx"})
        assert r.status_code == 201, r.text
    for n in range(4):
        d.publish("alerts/disk", title=f"disk {n}", priority=2)
    d.publish("noisy/x", title="muted")
    d.publish("ops/deploy", title="deployed")
    # the history went out: one memory delivery and one push per alerts event
    wait_for(lambda: len(push.received(sub)) == 4, message="the pushes on the source")
    with d.http(alice) as a:
        ids = [e["id"] for e in a.get("/v1/events").json()["events"]]
        assert a.post(f"/v1/events/{ids[-1]}/read").status_code == 200
        assert a.post(f"/v1/events/{ids[-2]}/archive").status_code == 200
        r = a.post(f"/v1/events/{ids[-3]}/click", json={"action": "open"})
        assert r.status_code == 200, r.text
    with d.http(bob) as b:  # a watermark: exported as explicit reads
        assert b.post("/v1/inbox/read-all").status_code == 200
    return Source(alice, bob, sub)


def inbox(d: Daemon, token: str) -> list[tuple]:
    with d.http(token) as c:
        r = c.get("/v1/events", params={"archived": "include", "limit": 500})
    assert r.status_code == 200, r.text
    return sorted(
        (e["created_at"], e["topic"], e["title"], e["read"], e["seen"], e["archived"],
         e["clicked_at"], e["action"])
        for e in r.json()["events"]
    )  # fmt: skip


def installation(d: Daemon) -> dict[str, Any]:
    """What the admin API shows of the accounts (ids dropped: they change)."""
    with d.admin() as c:
        # each daemon made its own admin when it first started; the others moved
        users = [{k: u[k] for k in ("name", "role", "tz", "created_at", "has_password")
                  if u["name"] != "admin" or k != "created_at"}
                 for u in c.get("/v1/users").json()["users"]]  # fmt: skip
        acl = [{k: g[k] for k in ("user", "pattern", "read", "write")}
               for g in c.get("/v1/acl").json()["acl"]]  # fmt: skip
        tokens = [{k: t[k] for k in ("user", "prefix", "label", "scopes", "topics", "created_at")}
                  for t in c.get("/v1/tokens").json()["tokens"]]  # fmt: skip
        channels = [{k: ch[k] for k in ("user", "name", "kind", "config")}
                    for ch in c.get("/v1/channels", params={"all": "true"}).json()["channels"]]  # fmt: skip
        prefs = c.get("/v1/preferences", params={"user": "alice"}).json()
    key = lambda x: json.dumps(x, sort_keys=True)  # noqa: E731
    return {"users": sorted(users, key=key), "acl": sorted(acl, key=key),
            "tokens": sorted(tokens, key=key), "channels": sorted(channels, key=key),
            "prefs": prefs}  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def export_all(d: Daemon, path: Path) -> list[dict[str, Any]]:
    r = cli(d, "export", str(path), "--with-accounts", "--json")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "the file holds secrets"
    return records(path)


def sign_in(d: Daemon, password: str) -> int:
    with d.http() as c:
        return c.post("/v1/session", json={"username": "alice", "password": password}).status_code


def move(src: Daemon, dst: Daemon, push: PushService, source: Source, tmp: Path) -> None:
    """Export the whole of ``src``, import it into ``dst`` and check that it all moved."""
    path = tmp / "move.jsonl"
    lines = export_all(src, path)
    head = lines[0]
    assert head["version"] == 2 and head["parts"] == ["accounts", "events"]
    assert head["source"]["engine"] == src.engine
    kinds = [r["type"] for r in lines[1:]]
    accounts = head["counts"]["accounts"]
    assert accounts["vapid_key"] == 1 and accounts["channel"] == 2
    assert kinds.index("vapid_key") < kinds.index("event"), "the installation comes first"
    assert PASSWORD not in path.read_text() and source.alice not in path.read_text()
    assert all(r.get("password_hash") is None or r["password_hash"].startswith("$argon2")
               for r in lines if r["type"] == "user")  # fmt: skip
    src_inbox, src_bob = inbox(src, source.alice), inbox(src, source.bob)
    src_view = installation(src)
    dst_key = (dst.data_dir / "vapid_private.pem").read_bytes()

    # a bad line anywhere (here: the last event) fails the whole import: nothing written
    bad = tmp / "bad.jsonl"
    corrupt = path.read_text().splitlines()
    corrupt[-1] = json.dumps({**json.loads(corrupt[-1]), "priority": 9})
    bad.write_text("\n".join(corrupt) + "\n")
    r = cli(dst, "import", str(bad))
    assert r.returncode == 1
    assert f"line {len(corrupt)}" in r.stderr and "priority" in r.stderr, r.stderr
    with dst.admin() as c:
        assert "alice" not in [u["name"] for u in c.get("/v1/users").json()["users"]]
        assert c.get("/v1/events").json()["events"] == []
    assert (dst.data_dir / "vapid_private.pem").read_bytes() == dst_key
    assert sign_in(dst, PASSWORD) == 401

    r = cli(dst, "import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["format_version"] == 2 and report["vapid_key"] == "installed"
    added = report["accounts"]["added"]
    assert (added["user"], added["token"], added["grant"], added["channel"],
            added["preferences"]) == (2, 2, 2, 2, 1)  # fmt: skip
    assert report["accounts"]["kept"] == []
    assert report["imported"] == 6 and report["users_missing"] == []

    # everything moved: the same password signs in, the same tokens work
    assert sign_in(dst, PASSWORD) == 200
    assert sign_in(dst, "wrong") == 401
    assert installation(dst) == src_view
    assert inbox(dst, source.alice) == src_inbox
    assert inbox(dst, source.bob) == src_bob
    assert (dst.data_dir / "vapid_private.pem").read_bytes() != dst_key
    assert stat.S_IMODE((dst.data_dir / "vapid_private.pem").stat().st_mode) == 0o600
    with dst.http(source.alice) as a:
        assert a.get("/v1/webpush/vapid-public-key").json()["public_key"] == push.vapid_public_key
    with dst.http(source.bob) as b:  # bob's token keeps its topic limit
        assert b.post("/v1/events", json={"topic": "elsewhere", "title": "x"}).status_code == 403

    # the browser subscribed on the source gets pushes signed with the same key, and
    # the memory channel delivers; alice's mute rule moved with her preferences
    ev = dst.publish("alerts/disk", title="after the move")
    dst.publish("noisy/x", title="still muted")
    got = wait_for(lambda: len(push.received(source.sub)) == 5 and push.received(source.sub),
                   message="the push from the new engine")[-1]  # fmt: skip
    assert got.error is None and got.status == 201, got.error
    assert got.payload is not None and got.payload["title"] == "after the move"
    deliveries = dst.data_dir / "memory-deliveries.jsonl"
    sent = wait_for(lambda: deliveries.exists() and records(deliveries), message="a delivery")
    assert [(s["channel"], s["user"], s["event_ids"]) for s in sent] == [
        ("box", "alice", [ev["id"]])
    ], "only the live event: imported history makes no deliveries, the muted one none"

    # again: nothing changes
    before = (installation(dst), inbox(dst, source.alice))
    r = cli(dst, "import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["imported"] == 0 and again["skipped"] == 6
    assert not any(again["accounts"]["added"].values())
    assert again["accounts"]["present"]["channel"] == 2 and again["vapid_key"] == "present"
    assert (installation(dst), inbox(dst, source.alice)) == before
    r = cli(dst, "import", str(path))
    assert r.returncode == 0 and "nothing new" in r.stdout and "already here" in r.stdout


def test_sqlite_installation_moves_to_postgresql(
    make_pg_node: Any, make_daemon: Any, push: PushService, tmp_path: Path
) -> None:
    src = make_daemon(extra_env=memory_env()).start()
    assert src.engine == "sqlite"
    source = populate(src, push)
    dst = make_pg_node(extra_env=memory_env()).start()
    move(src, dst, push, source, tmp_path)
    # a second node of the cluster shares the accounts (the key file is per node)
    node = make_pg_node(extra_env=memory_env()).start()
    assert sign_in(node, PASSWORD) == 200
    assert inbox(node, source.alice) == inbox(dst, source.alice)


def test_postgresql_installation_moves_to_sqlite(
    make_pg_node: Any, make_daemon: Any, push: PushService, tmp_path: Path
) -> None:
    src = make_pg_node(extra_env=memory_env()).start()
    source = populate(src, push)
    dst = make_daemon(extra_env=memory_env()).start()
    assert dst.engine == "sqlite"
    move(src, dst, push, source, tmp_path)


def test_a_different_vapid_key_in_use_is_not_replaced_silently(
    make_daemon: Any, push: PushService, tmp_path: Path
) -> None:
    src = make_daemon(extra_env=memory_env()).start()
    source = populate(src, push)
    path = tmp_path / "all.jsonl"
    export_all(src, path)

    dst = make_daemon(extra_env=memory_env()).start()
    carol = dst.user("carol", scopes=["subscribe", "account"], grants={"alerts/*": "read"})
    theirs = push.subscribe()
    with dst.http(carol) as c:
        r = c.post("/v1/webpush/subscriptions", json=theirs.info())
        assert r.status_code == 201, r.text
    key = (dst.data_dir / "vapid_private.pem").read_bytes()
    for args in ((), ("--dry-run",)):
        r = cli(dst, "import", str(path), *args)
        assert r.returncode == 1 and "--replace-vapid-key" in r.stderr, r.stderr
        assert "1 browser subscription" in r.stderr
    assert (dst.data_dir / "vapid_private.pem").read_bytes() == key
    with dst.admin() as c:
        assert "alice" not in [u["name"] for u in c.get("/v1/users").json()["users"]]

    r = cli(dst, "import", str(path), "--replace-vapid-key", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vapid_key"] == "replaced"
    assert (dst.data_dir / "vapid_private.pem").read_bytes() != key
    # alice's browser (the source's key) gets pushes from here now
    dst.publish("alerts/disk", title="moved")
    got = wait_for(lambda: len(push.received(source.sub)) == 5 and push.received(source.sub),
                   message="the push signed with the imported key")[-1]  # fmt: skip
    assert got.error is None, got.error


def test_an_events_only_export_holds_no_secrets(make_daemon: Any, push: PushService,
                                               tmp_path: Path) -> None:  # fmt: skip
    src = make_daemon(extra_env=memory_env()).start()
    populate(src, push)
    r = cli(src, "export", str(tmp_path / "events.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = records(tmp_path / "events.jsonl")
    assert lines[0]["version"] == 1 and "parts" not in lines[0]
    assert {r["type"] for r in lines[1:]} == {"event"}
    assert "argon2" not in (tmp_path / "events.jsonl").read_text()


# --- hostile installation records, without a daemon ----------------------------------

HEAD = {"type": "header", "format": "notifyd-export", "version": 2,
        "parts": ["accounts", "events"], "counts": {"events": 0, "accounts": {}}}  # fmt: skip
USER = {"type": "user", "name": "alice", "role": "user", "password_hash": None}
TOKEN = {"type": "token", "user": "alice", "hash": "a" * 64, "scopes": ["publish"]}


def kinds() -> dict[str, Any]:
    def memory(config: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(config.get("fail", 0), int):
            raise ValueError("fail must be an integer")
        return config

    return {"memory": memory}


def parse(lines: list[Any]) -> _Parser:
    parser = _Parser(io.BytesIO(), 0.0, None, kinds())
    for line in lines:
        parser.feed((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n")
    parser.finish()
    return parser


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{**HEAD, "counts": {"events": 0, "accounts": {"user": "x"}}}], "line 1: counts"),
        ([{**HEAD, "version": 1}, USER], "line 2: a user record, but the header announces no"),
        ([HEAD, {**USER, "role": "root"}], "line 2: role"),
        ([HEAD, {**USER, "name": "Alice"}], "line 2: name"),
        ([HEAD, {**USER, "password_hash": "plain"}], "line 2: password_hash"),
        ([HEAD, {**USER, "tz": "Mars/Olympus"}], "line 2: tz"),
        ([HEAD, {**USER, "admin": True}], "line 2: admin: unknown field"),
        ([HEAD, USER, USER], "line 3: user alice appears twice"),
        ([HEAD, TOKEN], "line 2: user: 'alice' is not among the users"),
        ([HEAD, USER, {**TOKEN, "hash": "nfy_secret"}], "line 3: hash"),
        ([HEAD, USER, {**TOKEN, "scopes": ["root"]}], "line 3: scopes"),
        ([HEAD, USER, {**TOKEN, "topics": "a b"}], "line 3: topics"),
        ([HEAD, USER, {"type": "grant", "user": "alice", "pattern": "x", "read": "yes",
                       "write": False}], "line 3: read"),
        ([HEAD, USER, {"type": "channel", "user": "alice", "name": "c", "kind": "ftp",
                       "config": {}}], "line 3: kind: channel kind 'ftp' is not available"),
        ([HEAD, USER, {"type": "channel", "user": "alice", "name": "c", "kind": "memory",
                       "config": {"fail": "x"}}], "line 3: config: fail must be"),
        ([HEAD, USER, {"type": "preferences", "user": "alice", "doc": {"volume": 11}}],
         "line 3: doc.volume"),
        ([HEAD, {"type": "vapid_key", "pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n"}],
         "line 2: pem"),
        ([{**HEAD, "counts": {"events": 0, "accounts": {"user": 2}}}, USER],
         "holds 1 user records but its header announces 2"),
        ([HEAD, {"type": "event", "topic": "t", "title": "x",
                 "created_at": "2026-01-01T00:00:00Z"}, USER], "line 3: a user record after"),
    ],
)  # fmt: skip
def test_installation_records_are_validated_naming_the_line(lines: list[Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(lines)
    assert message in info.value.message


def test_a_valid_installation_part_is_kept_in_order() -> None:
    head = {**HEAD, "counts": {"events": 0, "accounts": {"user": 1, "token": 1}}}
    parser = parse([head, USER, {**TOKEN, "scopes": ["publish", "publish", "subscribe"]}])
    assert [r["type"] for r in parser.records] == ["user", "token"]
    assert parser.records[1]["scopes"] == ["publish", "subscribe"]
