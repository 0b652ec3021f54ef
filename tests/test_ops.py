"""Operations commands end to end: backup, export/import and doctor, run as CLI
subprocesses against real daemons."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Daemon, wait_for
from test_cli import cli

from notifyd import cli as notifyd_cli

TESTS = str(Path(__file__).parent)


def memory_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": TESTS + (os.pathsep + path if path else ""),
        "NOTIFYD_PLUGINS": "memory_plugin",
    }


def export_records(d: Daemon, tmp: Path, name: str) -> tuple[dict, list[dict]]:
    out = tmp / name
    r = cli(d, "export", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return lines[0], lines[1:]


# --- backup -----------------------------------------------------------------


def test_backup_while_publishing_is_consistent_and_complete(daemon: Daemon, tmp_path: Path) -> None:
    # enough data that copying it takes a while (several backup steps)
    with daemon.admin() as c:
        for n in range(4):
            batch = [
                {"topic": f"bulk/{n}", "body": "x" * 1000, "title": f"#{i}"} for i in range(2500)
            ]
            assert c.post("/v1/events", json=batch).status_code == 201

    acked: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            with daemon.admin() as c:
                while not stop.is_set():
                    r = c.post("/v1/events", json={"topic": "live", "title": "tick"})
                    assert r.status_code == 201, r.text
                    acked.append(r.json()["id"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        wait_for(lambda: len(acked) >= 20, message="publishing to get going")
        before = list(acked)
        target = tmp_path / "backup.db"
        r = cli(daemon, "backup", str(target), "--json")
        during = len(acked) - len(before)
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["integrity"] == "ok" and summary["file"] == str(target)
    assert during > 0, "publishing went on while the backup ran"

    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in conn.execute("SELECT id FROM events")}
        assert set(before) <= ids, "every event acknowledged before the backup is in it"
        assert len(ids) >= 10_000 + len(before)
        # a snapshot: ids have no holes up to the newest one it holds
        assert ids == set(range(1, max(ids) + 1))
        assert summary["last_event_id"] == max(ids)
    finally:
        conn.close()
    assert os.stat(target).st_mode & 0o077 == 0, "backups are private (mode 0600)"
    assert not list(daemon.data_dir.glob(".backup-*")), "the daemon's temporary copy is gone"

    # never overwritten without --force
    stamp = target.stat().st_mtime_ns
    r = cli(daemon, "backup", str(target))
    assert r.returncode == 1 and "--force" in r.stderr
    assert target.stat().st_mtime_ns == stamp
    r = cli(daemon, "backup", str(target), "--force")
    assert r.returncode == 0, r.stderr
    assert "integrity ok" in r.stdout
    assert not list(tmp_path.glob(".backup.db.*")), "no temporary file left next to FILE"


# --- export / import -----------------------------------------------------------


def _fill_source(d: Daemon) -> None:
    alice = d.user("alice", grants={"home/*": "read", "shared": "read"})
    bob = d.user("bob", grants={"*": "read"})
    with d.admin() as c:
        rich = {
            "topic": "home/door", "title": "Door", "body": "**opened**", "format": "markdown",
            "priority": "high", "category": "security", "tags": ["door", "front"],
            "click": "https://example.org/cam", "icon": "https://example.org/i.png",
            "image": "https://example.org/snap.jpg", "sensitive": True,
            "actions": [{"label": "Lock", "url": "https://example.org/lock", "method": "POST"},
                        {"label": "View", "url": "https://example.org/view"}],
            "expires_at": "2099-01-01T00:00:00Z", "deliver_at": "2020-01-01T00:00:00+02:00",
        }  # fmt: skip
        assert c.post("/v1/events", json=rich).status_code == 201
        for n in range(3):  # a collapse key: the first two end up superseded
            d.publish("home/temp", title=f"{20 + n} °C", collapse_key="temp")
        # identical events published together share created_at: all must come through
        same = [{"topic": "shared", "title": "same", "body": "twin"}] * 3
        assert c.post("/v1/events", json=same).status_code == 201
        for n in range(5):
            d.publish("work/ci", title=f"build {n}", priority=n % 5 + 1)
    ids = [e["id"] for e in d.admin().get("/v1/events", params={"limit": 500}).json()["events"]]
    first, last = min(ids), max(ids)

    with d.http(alice) as a:
        assert a.post(f"/v1/events/{first}/read").status_code == 200
        assert a.post(f"/v1/events/{first}/archive").status_code == 200
        shared = a.get("/v1/events", params={"topic": "shared"}).json()["events"]
        assert a.post(f"/v1/events/{shared[0]['id']}/seen").status_code == 200
        assert (
            a.post(f"/v1/events/{shared[1]['id']}/click", json={"action": "View"}).status_code
            == 200
        )
    with d.http(bob) as b:  # bob's "read all" writes one receipt per event
        assert b.post("/v1/inbox/read-all", params={"topic": "work/*"}).json()["updated"] == 5
        assert b.post(f"/v1/events/{last - 2}/archive").status_code == 200
    with d.admin() as c:  # the admin's is a watermark; then one exception below it
        assert c.post("/v1/inbox/read-all").json()["upto"] == last
        assert c.post(f"/v1/events/{last - 1}/unread").status_code == 200
    d.publish("work/ci", title="after the watermark")


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "id"} for r in records]


def _inbox(d: Daemon, token: str | None) -> list[tuple]:
    with d.http(token) if token else d.admin() as c:
        events = c.get("/v1/events", params={"archived": "include", "limit": 500}).json()["events"]
    return sorted(
        (e["created_at"], e["topic"], e["title"], e["read"], e["seen"], e["archived"],
         e["clicked_at"], e["action"])
        for e in events
        if e["topic"] != "elsewhere"
    )  # fmt: skip


def test_export_import_round_trip(make_daemon: Any, tmp_path: Path) -> None:
    src = make_daemon().start()
    _fill_source(src)
    head, events = export_records(src, tmp_path, "src.jsonl")
    assert head["format"] == "notifyd-export" and head["version"] == 1
    assert head["counts"]["events"] == len(events) == 13
    assert {u["name"] for u in head["users"]} == {"admin", "alice", "bob"}
    assert sum(e["superseded"] for e in events) == 2
    door = events[0]
    assert door["actions"][0] == {
        "label": "Lock",
        "url": "https://example.org/lock",
        "method": "POST",
    }
    assert door["state"]["alice"]["read"] and door["state"]["alice"]["archived_at"]
    assert door["state"]["admin"] == {"read": True}  # the watermark, made explicit
    assert "bob" not in door["state"]
    assert events[-1]["state"] == {}  # published after the read-all
    assert events[-2]["state"]["admin"] == {"read": True}
    assert events[-2]["state"]["bob"]["read"] and events[-2]["state"]["bob"]["read_at"]
    assert events[-3]["state"]["admin"] == {"read": False}  # unread below the watermark
    assert events[-4]["state"]["bob"]["archived_at"]

    dst = make_daemon().start()
    dst.publish("elsewhere", title="already here")  # ids on the target move on
    # same users on the target, created before the import; alice may read less here
    alice = dst.user("alice", grants={"home/*": "read", "shared": "read"})
    bob = dst.user("bob", grants={"*": "read"})

    src_file = tmp_path / "src.jsonl"
    r = cli(dst, "import", str(src_file), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["imported"] == 13 and report["skipped"] == 0
    assert report["first_id"] == 2 and report["last_id"] == 14
    assert report["users_missing"] == [] and report["states"] > 0

    head2, copied = export_records(dst, tmp_path, "dst.jsonl")
    copied = [e for e in copied if e["topic"] != "elsewhere"]
    assert _strip(copied) == _strip(events), "every field but the id, and all read state"
    assert [e["id"] for e in copied] == list(range(2, 15)), "new ids, in the source's order"

    src_alice = src.user("alice")  # another token for the same users
    src_bob = src.user("bob")
    assert _inbox(dst, alice) == _inbox(src, src_alice)
    assert _inbox(dst, bob) == _inbox(src, src_bob)
    assert _inbox(dst, None) == _inbox(src, None)

    # again: nothing new; from stdin, with a summary for people
    r = cli(dst, "import", "-", input=src_file.read_text())
    assert r.returncode == 0, r.stderr
    assert "nothing new" in r.stdout
    r = cli(dst, "import", str(src_file), "--json")
    again = json.loads(r.stdout)
    assert again["imported"] == 0 and again["skipped"] == 13
    _, after = export_records(dst, tmp_path, "dst2.jsonl")
    assert len(after) == 14

    # filters; stdout
    r = cli(src, "export", "-", "--topic", "home/*", "--since", str(events[0]["id"]))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[0]["filters"] == {"topic": "home/*", "since": events[0]["id"]}
    assert [e["title"] for e in lines[1:]] == ["20 °C", "21 °C", "22 °C"]
    assert "exported 3 events" in r.stderr


def test_bad_line_imports_nothing_and_imports_make_no_deliveries(
    make_daemon: Any, tmp_path: Path
) -> None:
    d = make_daemon(extra_env=memory_env()).start()
    with d.admin() as c:
        r = c.post("/v1/channels", json={"name": "box", "kind": "memory", "user": "admin"})
        assert r.status_code == 201, r.text
    header = {"type": "header", "format": "notifyd-export", "version": 1}
    good = {"type": "event", "topic": "old/news", "title": "from the past", "priority": 4,
            "created_at": "2030-01-02T03:04:05.678+01:00", "state": {"admin": {"read": True},
                                                                      "ghost": {"read": True}}}  # fmt: skip
    rows = [header] + [{**good, "title": f"old {n}"} for n in range(5)]
    rows.insert(4, {**good, "priority": 9})  # line 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = cli(d, "import", str(bad))
    assert r.returncode == 1
    assert "line 5" in r.stderr and "priority" in r.stderr
    bad.write_text(bad.read_text().replace('"priority": 9', '"priority": 4'))
    garbled = bad.read_text().splitlines()
    garbled[2] = garbled[2][:-5]
    (tmp_path / "garbled.jsonl").write_text("\n".join(garbled) + "\n")
    r = cli(d, "import", str(tmp_path / "garbled.jsonl"))
    assert r.returncode == 1 and "line 3" in r.stderr and "JSON" in r.stderr
    with d.admin() as c:
        assert c.get("/v1/events").json()["events"] == [], "nothing was imported"

    r = cli(d, "import", str(bad), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["imported"] == 6
    assert report["users_missing"] == ["ghost"] and report["states_skipped"] == 6
    with d.admin() as c:
        events = c.get("/v1/events").json()["events"]
        assert len(events) == 6 and all(e["read"] for e in events)
        assert events[0]["created_at"] == "2030-01-02T02:04:05.678Z"
        # a live event goes out through the channel; the imported history did not
        d.publish("new/news", title="today")
        wait_for(lambda: c.get("/v1/deliveries").json()["deliveries"], message="a delivery")
        deliveries = c.get("/v1/deliveries").json()["deliveries"]
        assert len(deliveries) == 1, deliveries
        assert deliveries[0]["event_id"] == max(e["id"] for e in events) + 1


# --- doctor ------------------------------------------------------------------------


def test_doctor(daemon: Daemon, tmp_path: Path) -> None:
    base = ("doctor", "--data-dir", str(daemon.data_dir), "--socket", str(daemon.socket))
    r = cli(None, *base, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    for name in ("config", "vapid", "socket", "daemon", "database", "deliveries", "channels"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["disk"]["status"] in ("ok", "warn")  # depends on the machine
    r = cli(None, *base)
    assert r.returncode == 0
    assert any(line.startswith("ok    daemon") for line in r.stdout.splitlines())

    bad = tmp_path / "bad.toml"
    bad.write_text('retention_days = 30\nlisten = ["127.0.0.1:1"]\nbogus_key = 1\n')
    r = cli(None, *base, "--config", str(bad))
    assert r.returncode == 1
    line = next(line for line in r.stdout.splitlines() if line.startswith("fail  config"))
    assert "bogus_key" in line and f"{bad}:3" in line

    os.chmod(daemon.socket, 0o666)
    try:
        r = cli(None, *base, "--json")
    finally:
        os.chmod(daemon.socket, 0o660)
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["socket"]["status"] == "fail" and "0666" in checks["socket"]["detail"]

    daemon.stop()
    r = cli(None, *base)
    assert r.returncode == 1
    assert any(line.startswith("fail  daemon") for line in r.stdout.splitlines())
    # the database is then checked on the file
    assert "checked on the file" in r.stdout


# --- help ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["backup", "export", "import", "doctor"])
def test_help_shows_examples(command: str) -> None:
    result = CliRunner().invoke(notifyd_cli.main, [command, "--help"])
    assert result.exit_code == 0
    assert f"Examples:\n    notifyd {command}" in result.output


def test_clear_errors_without_a_daemon(tmp_path: Path) -> None:
    gone = {"NOTIFYD_SOCKET": str(tmp_path / "none.sock")}
    r = cli(None, "backup", str(tmp_path / "b.db"), env=gone)
    assert r.returncode == 1 and "is the daemon running" in r.stderr
    assert not list(tmp_path.iterdir()), "nothing left behind"
    r = cli(None, "export", "-", "--json", env=gone)
    assert r.returncode == 2 and "needs a FILE" in r.stderr


# --- the format's rules, without a daemon ----------------------------------------------


def _parse(lines: list[Any]) -> Any:
    import io

    from notifyd.core.transfer import _Parser

    parser = _Parser(io.BytesIO(), 0.0, None)
    for line in lines:
        parser.feed((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n")
    parser.finish()
    return parser


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "line 1: the file is empty"),
        ([{"type": "event", "topic": "t", "title": "x"}], "line 1: expected the header"),
        ([{"type": "header", "format": "notifyd-export", "version": 3}], "version 3"),
        ([{"type": "header", "format": "other", "version": 1}], "format"),
        (
            [{"type": "header", "format": "notifyd-export", "version": 1, "counts": {"events": 2}},
             {"type": "event", "topic": "t", "title": "x", "created_at": "2026-01-01T00:00:00Z"}],
            "incomplete",
        ),
        (
            [{"type": "header", "format": "notifyd-export", "version": 1},
             {"type": "event", "topic": "t", "title": "x"}],
            "line 2: created_at",
        ),
        (
            [{"type": "header", "format": "notifyd-export", "version": 1}, "",
             {"type": "event", "topic": "t", "title": "x", "created_at": "2026-01-01T00:00:00Z",
              "state": {"bob": {"read": "yes"}}}],
            "line 3: state.bob.read",
        ),
        (
            [{"type": "header", "format": "notifyd-export", "version": 1},
             {"type": "event", "topic": "t", "title": "x", "created_at": "2026-01-01T00:00:00Z",
              "color": "red"}],
            "line 2: color: unknown field",
        ),
    ],
)  # fmt: skip
def test_import_validation_names_the_line(lines: list[Any], message: str) -> None:
    from notifyd.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as info:
        _parse(lines)
    assert message in info.value.message


def test_identical_events_are_counted_within_their_publish() -> None:
    head = {"type": "header", "format": "notifyd-export", "version": 1}
    ev = {"type": "event", "topic": "t", "title": "x", "created_at": "2026-01-01T00:00:00Z"}
    later = {**ev, "created_at": "2026-01-01T00:00:01Z"}
    parser = _parse([head, ev, ev, {**ev, "title": "y"}, ev, later])
    parser.spool.seek(0)
    occurrences = [json.loads(line)["o"] for line in parser.spool.read().splitlines()]
    assert occurrences == [1, 2, 1, 3, 1]
