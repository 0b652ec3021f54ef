"""Inbound webhooks move with `notifyd export --with-accounts` / `notifyd import`: a
hook made on a SQLite daemon keeps its URL, its secret and its options on a
PostgreSQL daemon (the CLI over the socket) and on another SQLite daemon (the admin
API), so senders change nothing; importing twice adds nothing; a malformed hook
record fails the whole import, naming its line and field."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon
from test_cli import cli

from notifyd.core.errors import ValidationFailed
from notifyd.core.transfer import (
    _Parser,
    plan_accounts,
)

DATA = Path(__file__).parent / "data" / "hooks"


def fixture_bytes(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    d: Daemon, path: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    with d.http() as c:
        return c.post(path, content=body,
                      headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip


class Hooks:
    """What make_hooks() made: alice's token and her hooks as created (with secrets)."""

    def __init__(self, token: str, made: dict[str, dict[str, Any]]) -> None:
        self.token, self.made = token, made


def make_hooks(d: Daemon) -> Hooks:
    """alice with three hooks (GitHub, Alertmanager with options, the json template),
    the GitHub one used once on the source (its last_used_at moves too)."""
    token = d.user("alice", grants={"alice/*": "rw"}, scopes=["publish", "subscribe", "account"])
    made: dict[str, dict[str, Any]] = {}
    with d.http(token) as c:
        for body in (
            {"name": "gh", "topic": "alice/code", "template": "github"},
            {"name": "Prometheus", "topic": "alice/alerts", "template": "alertmanager",
             "priority": "high", "category": "ops", "tags": ["prod", "disk"]},
            {"name": "custom", "topic": "alice/custom", "template": "json",
             "fields": {"title": "{{ what }}", "body": "{{ detail }}"}},
        ):  # fmt: skip
            r = c.post("/v1/hooks", json=body)
            assert r.status_code == 201, r.text
            made[str(body["name"])] = r.json()
    github_push(d, made["gh"], expect=200)
    return Hooks(token, made)


def github_push(d: Daemon, hook: dict[str, Any], expect: int, secret: str | None = None) -> None:
    body = fixture_bytes("github_push")
    headers = {
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": sign(secret or hook["secret"], body),
    }
    r = post(d, f"/v1/hooks/{hook['id']}", body, headers)
    assert r.status_code == expect, r.text


def listing(d: Daemon) -> list[dict[str, Any]]:
    """Every hook as the admin API shows it (the URL without the daemon's origin)."""
    with d.admin() as c:
        r = c.get("/v1/hooks", params={"all": "true"})
    assert r.status_code == 200, r.text
    return [{**h, "url": h["url"].rsplit("/v1/", 1)[1]} for h in r.json()["hooks"]]


def history(d: Daemon, token: str, topic: str) -> list[dict[str, Any]]:
    with d.http(token) as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def check_export(text: str, hooks: Hooks) -> None:
    lines = lines_of(text)
    head = lines[0]
    assert head["version"] == 2 and head["counts"]["accounts"]["hook"] == 3
    kinds = [r["type"] for r in lines[1:]]
    assert kinds.index("user") < kinds.index("hook") < kinds.index("event")
    records = {r["name"]: r for r in lines if r["type"] == "hook"}
    for name, made in hooks.made.items():
        assert records[name]["id"] == made["id"] and records[name]["secret"] == made["secret"]
        assert records[name]["user"] == "alice"
    assert records["Prometheus"]["options"] == {
        "priority": 4, "category": "ops", "tags": ["prod", "disk"], "fields": None
    }  # fmt: skip
    assert records["gh"]["last_used_at"] is not None


def check_moved(src: Daemon, dst: Daemon, hooks: Hooks, before: list[dict[str, Any]]) -> None:
    """The hooks on ``dst`` are the source's and take the senders' requests unchanged."""
    assert listing(dst) == before
    gh, prom, custom = (hooks.made[n] for n in ("gh", "Prometheus", "custom"))
    # GitHub signs with the old secret at the old URL (the source's event moved too)
    moved = {e["id"] for e in history(dst, hooks.token, "alice/code")}
    github_push(dst, gh, expect=200)
    github_push(dst, gh, expect=401, secret="not the secret")
    (ev,) = [e for e in history(dst, hooks.token, "alice/code") if e["id"] not in moved]
    assert ev["title"] == "octocat/hello-world: octocat pushed 2 commits to main"
    # the secret in the path; the hook's options (priority, category, tags) apply
    r = post(dst, f"/v1/hooks/{prom['id']}/{prom['secret']}", fixture_bytes("alertmanager_firing"))
    assert r.status_code == 200, r.text
    alerts = history(dst, hooks.token, "alice/alerts")
    assert alerts and all(e["category"] == "ops" and {"prod", "disk"} <= set(e["tags"])
                          for e in alerts)  # fmt: skip
    r = post(dst, f"/v1/hooks/{custom['id']}", b'{"what": "moved", "detail": "ok"}',
             {"Authorization": f"Bearer {custom['secret']}"})  # fmt: skip
    assert r.status_code == 200, r.text
    (ev,) = history(dst, hooks.token, "alice/custom")
    assert (ev["title"], ev["body"]) == ("moved", "ok")


def test_hooks_move_from_sqlite_to_postgresql(
    make_pg_node: Any, make_daemon: Any, tmp_path: Path
) -> None:
    src = make_daemon().start()
    assert src.engine == "sqlite"
    hooks = make_hooks(src)
    before = listing(src)
    path = tmp_path / "move.jsonl"
    r = cli(src, "export", str(path), "--with-accounts")
    assert r.returncode == 0, r.stderr
    check_export(path.read_text(), hooks)

    dst = make_pg_node().start()
    # a malformed hook record (here: an unknown template) fails the whole import
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "hook")
    bad = tmp_path / "bad.jsonl"
    lines[at] = json.dumps({**json.loads(lines[at]), "template": "jenkins"})
    bad.write_text("\n".join(lines) + "\n")
    r = cli(dst, "import", str(bad))
    assert r.returncode == 1
    assert f"line {at + 1}" in r.stderr and "template" in r.stderr, r.stderr
    with dst.admin() as c:
        assert "alice" not in [u["name"] for u in c.get("/v1/users").json()["users"]]
    assert listing(dst) == []

    r = cli(dst, "import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["records"]["hook"] == 3 and report["accounts"]["added"]["hook"] == 3
    check_moved(src, dst, hooks, before)

    # again: nothing added, the hooks as they are (last_used_at of the requests above)
    after = listing(dst)
    r = cli(dst, "import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert not any(again["accounts"]["added"].values()) and again["accounts"]["kept"] == []
    assert again["accounts"]["present"]["hook"] == 3
    assert listing(dst) == after
    # another node of the cluster takes the same URLs
    node = make_pg_node().start()
    github_push(node, hooks.made["gh"], expect=200)


def test_hooks_move_from_postgresql_to_sqlite(
    make_pg_node: Any, make_daemon: Any, tmp_path: Path
) -> None:
    src = make_pg_node().start()
    hooks = make_hooks(src)
    before = listing(src)
    path = tmp_path / "back.jsonl"
    r = cli(src, "export", str(path), "--with-accounts")
    assert r.returncode == 0, r.stderr
    check_export(path.read_text(), hooks)
    dst = make_daemon().start()
    assert dst.engine == "sqlite"
    r = cli(dst, "import", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accounts"]["added"]["hook"] == 3
    check_moved(src, dst, hooks, before)


def test_hooks_move_between_sqlite_daemons_through_the_admin_api(
    make_daemon: Any, tmp_path: Path
) -> None:
    src = make_daemon().start()
    hooks = make_hooks(src)
    before = listing(src)
    with src.admin() as c:
        r = c.get("/v1/admin/export", params={"accounts": "true"})
    assert r.status_code == 200, r.text
    check_export(r.text, hooks)
    dst = make_daemon().start()
    assert dst.engine == "sqlite"
    for _ in range(2):
        with dst.admin() as c:
            done = c.post("/v1/admin/import", content=r.content)
        assert done.status_code == 200, done.text
    report = done.json()  # the second: nothing new
    assert report["accounts"]["added"]["hook"] == 0 and report["accounts"]["present"]["hook"] == 3
    assert listing(dst) == before
    check_moved(src, dst, hooks, before)


def test_an_installation_without_hooks_does_not_count_them(make_daemon: Any) -> None:
    """A notifyd that predates hooks refuses a header naming a record type it does
    not know; without hooks the header stays as it was."""
    src = make_daemon().start()
    with src.admin() as c:
        r = c.get("/v1/admin/export", params={"accounts": "true"})
    assert r.status_code == 200, r.text
    head = lines_of(r.text)[0]
    assert "hook" not in head["counts"]["accounts"] and "user" in head["counts"]["accounts"]


# --- hostile hook records, without a daemon -------------------------------------------

HEAD: dict[str, Any] = {"type": "header", "format": "notifyd-export", "version": 2,
        "parts": ["accounts", "events"], "counts": {"events": 0, "accounts": {}}}  # fmt: skip
USER: dict[str, Any] = {"type": "user", "name": "alice", "role": "user", "password_hash": None}
SECRET = "s3cr3t-Pa55-Xq9vZ"
HOOK: dict[str, Any] = {"type": "hook", "user": "alice", "id": "AbCd1234EfGh5678", "name": "gh",
        "topic": "alice/code", "template": "github",
        "options": {"priority": None, "category": None, "tags": [], "fields": None},
        "secret": SECRET, "created_at": "2026-01-01T00:00:00.000Z", "last_used_at": None}  # fmt: skip


def parse(lines: list[Any]) -> _Parser:
    parser = _Parser(io.BytesIO(), 0.0, None, {})
    for line in lines:
        parser.feed(json.dumps(line).encode() + b"\n")
    parser.finish()
    return parser


@pytest.mark.parametrize(
    ("lines", "message", "field"),
    [
        ([HEAD, HOOK], "line 2: user: 'alice' is not among the users", "user"),
        ([HEAD, USER, {**HOOK, "id": "has-dash"}], "line 3: id", "id"),
        ([HEAD, USER, {**HOOK, "id": "x" * 65}], "line 3: id", "id"),
        ([HEAD, USER, {**HOOK, "id": 7}], "line 3: id", "id"),
        ([HEAD, USER, {**HOOK, "name": " "}], "line 3: name", "name"),
        ([HEAD, USER, {**HOOK, "name": "x" * 65}], "line 3: name", "name"),
        ([HEAD, USER, {**HOOK, "topic": "a b"}], "line 3: topic", "topic"),
        ([HEAD, USER, {**HOOK, "topic": "alice/../x"}], "line 3: topic", "topic"),
        ([HEAD, USER, {**HOOK, "template": "jenkins"}], "line 3: template", "template"),
        ([HEAD, USER, {**HOOK, "options": []}], "line 3: options: expected an object", "options"),
        ([HEAD, USER, {**HOOK, "options": {"colour": "red"}}], "line 3: options.colour",
         "options.colour"),
        ([HEAD, USER, {**HOOK, "options": {"priority": 9}}], "line 3: options.priority",
         "options.priority"),
        ([HEAD, USER, {**HOOK, "options": {"tags": ["Not A Slug"]}}], "line 3: options.tags[0]",
         "options.tags[0]"),
        ([HEAD, USER, {**HOOK, "options": {"fields": {"title": "x"}}}], "line 3: options.fields",
         "options.fields"),
        ([HEAD, USER, {**HOOK, "template": "json", "options": {}}], "line 3: options.fields",
         "options.fields"),
        ([HEAD, USER, {**HOOK, "secret": ""}], "line 3: secret", "secret"),
        ([HEAD, USER, {**HOOK, "secret": "x" * 257}], "line 3: secret", "secret"),
        ([HEAD, USER, {**HOOK, "secret": None}], "line 3: secret: this field", "secret"),
        ([HEAD, USER, {**HOOK, "created_at": "yesterday"}], "line 3: created_at", "created_at"),
        ([HEAD, USER, {**HOOK, "last_used_at": 5}], "line 3: last_used_at", "last_used_at"),
        ([HEAD, USER, {**HOOK, "url": "https://x"}], "line 3: url: unknown field", "url"),
        ([HEAD, USER, HOOK, {**HOOK, "name": "other"}], "line 4: hook alice/other: an earlier",
         "id"),
        ([HEAD, USER, HOOK, {**HOOK, "id": "Other1"}], "line 4: hook alice/gh appears twice",
         "name"),
        ([{**HEAD, "counts": {"events": 0, "accounts": {"hook": 2}}}, USER, HOOK],
         "holds 1 hook records but its header announces 2", None),
        # what a notifyd that predates a record type does with a header counting it
        ([{**HEAD, "counts": {"events": 0, "accounts": {"widget": 1}}}], "line 1: counts",
         "counts"),
    ],
)  # fmt: skip
def test_hook_records_are_validated_naming_line_and_field(
    lines: list[Any], message: str, field: str | None
) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(lines)
    assert message in info.value.message
    assert info.value.field == field
    assert SECRET not in info.value.message and HOOK["id"] not in info.value.message


def test_a_valid_hook_record_is_normalised() -> None:
    head = {**HEAD, "counts": {"events": 0, "accounts": {"user": 1, "hook": 1}}}
    record = {**HOOK, "template": "alertmanager", "options": {"priority": "high", "tags": ["a"]}}
    del record["last_used_at"]
    parser = parse([head, USER, record])
    assert [r["type"] for r in parser.records] == ["user", "hook"]
    hook = parser.records[1]
    assert hook["options"] == {"priority": 4, "category": None, "tags": ["a"], "fields": None}
    assert (hook["id"], hook["secret"], hook["last_used_at"]) == (HOOK["id"], SECRET, None)


def test_a_hook_id_held_already_is_left_as_it_is() -> None:
    """The import's rules (the same on both engines): by id, present when equal, else
    kept; a new id under a name the user's hook has already is kept too."""
    record = parse([HEAD, USER, HOOK]).records[1]
    held = {**record, "secret": "the target's"}
    other = {**record, "id": "Different1"}
    plan = plan_accounts([USER | {"tz": "UTC"}, record], [record])
    assert plan.result.present["hook"] == 1 and plan.insert["hook"] == []
    plan = plan_accounts([held], [record])
    assert plan.result.kept == ["hook alice/gh"] and plan.insert["hook"] == []
    plan = plan_accounts([other], [record])
    assert plan.result.kept == ["hook alice/gh"] and plan.insert["hook"] == []
    plan = plan_accounts([], [record, {**record, "id": "Second", "name": "gh2"}])
    assert plan.result.added["hook"] == 2 and len(plan.insert["hook"]) == 2
