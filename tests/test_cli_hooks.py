"""``notifyd hooks`` and ``notifyd send --attach`` end to end: the CLI as a subprocess
against one real daemon, over its Unix socket (as the admin) and over TCP with a
user's token.

- hooks: add prints the URL and the secret once (with a warning on stderr), list
  never shows the secret (table or --json), test renders without publishing, remove
  by name or id; refusals exit 1 with the daemon's message, bad usage exits 2.
- send --attach: the file arrives byte-identical through ``GET /v1/attachments/{id}``;
  a file over ``attachment_max_bytes`` is refused cleanly and nothing is published.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Daemon

MAX_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("clihooks")
    env = {"NOTIFYD_ATTACHMENT_MAX_BYTES": str(MAX_BYTES), "NOTIFYD_BASE_URL": "https://n.example"}
    d = Daemon(tmp / "data", extra_env=env)
    d.data_dir.mkdir()
    d.start()
    yield d
    d.stop()


def cli(daemon: Daemon, *args: str, input: str | None = "",
        env: dict | None = None, socket: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    full_env.pop("NO_COLOR", None)
    if socket:
        full_env["NOTIFYD_SOCKET"] = str(daemon.socket)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "notifyd", *args],
        input=input, capture_output=True, text=True, timeout=60, env=full_env,
    )  # fmt: skip


def event_count(daemon: Daemon) -> int:
    with daemon.admin() as c:
        r = c.get("/v1/events", params={"limit": 500, "archived": "include"})
        assert r.status_code == 200, r.text
        return len(r.json()["events"])


# --- hooks --------------------------------------------------------------------------


def test_add_prints_the_secret_once_list_never(daemon: Daemon) -> None:
    r = cli(daemon, "hooks", "add", "prom", "--topic", "alerts", "--template", "alertmanager",
            "--priority", "high", "--tag", "prometheus")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    url, secret = lines["URL"].strip(), lines["secret"].strip()
    assert secret and url.endswith("/" + secret) and "/v1/hooks/" in url
    assert "not be shown again" in r.stderr and secret not in r.stderr

    r = cli(daemon, "hooks", "list")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "TEMPLATE", "TOPIC", "USER", "LAST", "USED", "URL"]
    assert row.split()[:5] == ["prom", "alertmanager", "alerts", "admin", "never"]
    assert url.removesuffix("/" + secret) in row
    assert secret not in r.stdout

    r = cli(daemon, "hooks", "list", "--json")
    assert r.returncode == 0, r.stderr
    (listed,) = [h for h in json.loads(r.stdout)["hooks"] if h["name"] == "prom"]
    assert "secret" not in listed and secret not in r.stdout
    assert (listed["template"], listed["topic"], listed["tags"]) == ("alertmanager", "alerts",
                                                                     ["prometheus"])  # fmt: skip
    assert listed["priority"] in (4, "high")

    # a sender posts to the URL (the path is the daemon's; base_url names another host):
    # the listing shows when it was last used
    path = "/v1/hooks/" + url.split("/v1/hooks/", 1)[1]
    alert = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Up"}, "annotations": {},
         "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f1"}]}  # fmt: skip
    with daemon.http() as c:
        posted = c.post(path, json=alert)
    assert posted.status_code in (200, 201, 202), posted.text
    r = cli(daemon, "hooks", "list")
    row = next(line for line in r.stdout.splitlines() if line.startswith("prom "))
    assert "never" not in row

    # --json: the daemon's answer, the only one with the secret
    r = cli(daemon, "hooks", "add", "repo", "--topic", "ci", "--template", "github", "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert (
        created["name"] == "repo"
        and created["secret"]
        and created["url"].endswith(created["secret"])
    )

    # remove by name, then by id
    assert cli(daemon, "hooks", "remove", "prom").returncode == 0
    r = cli(daemon, "hooks", "remove", created["id"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] is True
    r = cli(daemon, "hooks", "list", "--json")
    assert [h["name"] for h in json.loads(r.stdout)["hooks"]] == []
    r = cli(daemon, "hooks", "list")
    assert r.returncode == 0 and r.stdout == "" and "no webhooks" in r.stderr


def test_refusals_exit_non_zero_with_the_daemons_message(daemon: Daemon) -> None:
    ok = cli(daemon, "hooks", "add", "dup", "--topic", "alerts", "--template", "slack")
    assert ok.returncode == 0, ok.stderr
    again = cli(daemon, "hooks", "add", "dup", "--topic", "alerts", "--template", "slack")
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and again.stdout == ""
    bad = cli(daemon, "hooks", "add", "x", "--topic", "alerts", "--template", "nosuch")
    assert bad.returncode == 1 and "template" in bad.stderr and "Traceback" not in bad.stderr
    topic = cli(daemon, "hooks", "add", "y", "--topic", "bad topic!", "--template", "slack")
    assert topic.returncode == 1 and "topic" in topic.stderr
    # usage errors, caught before the daemon is asked
    field = cli(daemon, "hooks", "add", "z", "--topic", "a", "--template", "slack",
                "--field", "title={{ payload.x }}")  # fmt: skip
    assert field.returncode == 2 and "--field works with --template json only" in field.stderr
    name = cli(daemon, "hooks", "add", "z", "--topic", "a", "--template", "json",
               "--field", "colour=red")  # fmt: skip
    assert name.returncode == 2 and "unknown field 'colour'" in name.stderr
    prio = cli(daemon, "hooks", "add", "z", "--topic", "a", "--template", "json", "-p", "loud")
    assert prio.returncode == 2 and "not a priority" in prio.stderr
    missing = cli(daemon, "hooks", "remove", "nosuchhook")
    assert missing.returncode == 1 and "no webhook named 'nosuchhook'" in missing.stderr
    missing = cli(daemon, "hooks", "test", "nosuchhook")
    assert missing.returncode == 1 and "no webhook named" in missing.stderr
    assert cli(daemon, "hooks", "remove", "dup").returncode == 0


def test_test_renders_without_publishing(daemon: Daemon, tmp_path: Path) -> None:
    assert cli(daemon, "hooks", "add", "am", "--topic", "alerts/am",
               "--template", "alertmanager").returncode == 0  # fmt: skip
    before = event_count(daemon)
    r = cli(daemon, "hooks", "test", "am")  # the template's own sample payload
    assert r.returncode == 0, r.stderr
    assert "nothing was published" in r.stderr and "topic: alerts/am" in r.stdout
    r = cli(daemon, "hooks", "test", "am", "--json")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    assert events and all(e["topic"] == "alerts/am" for e in events)

    payload = {
        "version": "4", "status": "firing", "receiver": "notifyd", "groupKey": "{}:{}",
        "externalURL": "https://am.example", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical",
                                                   "instance": "db-1"},
                    "annotations": {"summary": "Disk /srv is full"},
                    "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "https://prom.example/graph", "fingerprint": "abc123"}],
    }  # fmt: skip
    file = tmp_path / "alert.json"
    file.write_text(json.dumps(payload))
    r = cli(daemon, "hooks", "test", "am", "--payload", str(file), "--json")
    assert r.returncode == 0, r.stderr
    (rendered,) = json.loads(r.stdout)["events"]
    assert "DiskFull" in rendered["title"] and "Disk /srv is full" in (rendered["body"] or "")
    r = cli(daemon, "hooks", "test", "am", "--payload", "-", input=json.dumps(payload))
    assert r.returncode == 0, r.stderr
    assert "DiskFull" in r.stdout.splitlines()[0]
    r = cli(daemon, "hooks", "test", "am", "--payload", "-", input="{not json")
    assert r.returncode == 2 and "not JSON" in r.stderr
    r = cli(daemon, "hooks", "test", "am", "--payload", "-", input='{"alerts": 5}')
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert event_count(daemon) == before  # nothing was published

    # a custom JSON template: its fields are rendered from the payload
    r = cli(daemon, "hooks", "add", "nas", "--topic", "nas", "--template", "json",
            "--field", "title={{ payload.host }} is {{ payload.status }}",
            "--field", "body={{ payload.message }}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli(daemon, "hooks", "test", "nas", "--json", "--payload", "-",
            input=json.dumps({"host": "nas-1", "status": "degraded", "message": "pool tank"}))  # fmt: skip
    assert r.returncode == 0, r.stderr
    (rendered,) = json.loads(r.stdout)["events"]
    assert (rendered["title"], rendered["body"]) == ("nas-1 is degraded", "pool tank")
    assert event_count(daemon) == before
    # --header passes what a forge sends: GitHub's ping makes no event
    assert (
        cli(daemon, "hooks", "add", "gh", "--topic", "ci", "--template", "github").returncode == 0
    )
    r = cli(daemon, "hooks", "test", "gh", "--payload", "-", "--header", "X-GitHub-Event=ping",
            input=json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "no events" in r.stderr
    r = cli(daemon, "hooks", "test", "gh", "--header", "no-equals-sign")
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr
    assert event_count(daemon) == before
    for name in ("am", "nas", "gh"):
        assert cli(daemon, "hooks", "remove", name).returncode == 0


def test_hooks_over_tcp_need_the_account_scope(daemon: Daemon) -> None:
    narrow = daemon.user("hookie", grants={"hookie/*": "rw"}, scopes=["publish", "subscribe"])
    env = {"NOTIFYD_URL": daemon.url, "NOTIFYD_TOKEN": narrow}
    # creating one is an account change: refused without the account scope
    r = cli(daemon, "hooks", "add", "mine", "--topic", "hookie/ci", "--template", "gitea",
            env=env, socket=False)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and r.stdout == ""
    wide = daemon.user("hookie", scopes=["publish", "subscribe", "account"])
    env = {"NOTIFYD_URL": daemon.url, "NOTIFYD_TOKEN": wide}
    r = cli(daemon, "hooks", "add", "mine", "--topic", "hookie/ci", "--template", "gitea",
            env=env, socket=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli(daemon, "hooks", "list", "--json", env=env, socket=False)
    (mine,) = json.loads(r.stdout)["hooks"]
    assert (mine["name"], mine["user"]) == ("mine", "hookie")
    # the admin sees it with --all only
    r = cli(daemon, "hooks", "list", "--all", "--json")
    assert "mine" in [h["name"] for h in json.loads(r.stdout)["hooks"]]
    assert cli(daemon, "hooks", "remove", "mine", env=env, socket=False).returncode == 0


def test_help_has_examples_and_the_client_options(daemon: Daemon) -> None:
    for command in ("add", "list", "remove", "test"):
        r = cli(daemon, "hooks", command, "--help")
        assert r.returncode == 0
        assert "Examples:" in r.stdout and "--socket" in r.stdout and "--json" in r.stdout
    # shell completion offers the templates
    env = {"_NOTIFYD_COMPLETE": "bash_complete", "COMP_WORDS": "notifyd hooks add x --template g",
           "COMP_CWORD": "5"}  # fmt: skip
    notifyd = Path(sys.executable).parent / "notifyd"  # completion goes by the program name
    r = subprocess.run([str(notifyd)], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0 and {
        "plain,github",
        "plain,gitea",
        "plain,gitlab",
        "plain,grafana",
    } <= set(r.stdout.split())


# --- send --attach ----------------------------------------------------------------


def test_send_attach_round_trip_is_byte_identical(daemon: Daemon, tmp_path: Path) -> None:
    # several upload chunks; the daemon decides the type from the content
    data = b"%PDF-1.7\n" + secrets.token_bytes(3 * 1024 * 1024 + 17)
    file = tmp_path / "backup report.pdf"
    file.write_bytes(data)
    r = cli(daemon, "send", "files", "nightly report", "--attach", str(file), "--json")
    assert r.returncode == 0, r.stderr
    stored = json.loads(r.stdout)
    att = stored["attachment"]
    assert (att["name"], att["size"], att["type"]) == ("backup report.pdf", len(data),
                                                        "application/pdf")  # fmt: skip
    assert att["url"] == f"/v1/attachments/{att['id']}" and att["expires_at"]
    with daemon.admin() as c:
        got = c.get(att["url"])
    assert got.status_code == 200 and got.content == data

    # a picture and no body at all: the attachment alone is a notification
    png = tmp_path / "door.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(100))
    r = cli(daemon, "send", "cams", "--attach", str(png))
    assert r.returncode == 0, r.stderr
    event_id = int(r.stdout.strip())
    with daemon.admin() as c:
        ev = c.get(f"/v1/events/{event_id}").json()
        assert ev["attachment"]["type"] == "image/png"
        assert c.get(ev["attachment"]["url"]).content == png.read_bytes()


def test_send_attach_errors_are_clean(daemon: Daemon, tmp_path: Path) -> None:
    before = event_count(daemon)
    r = cli(daemon, "send", "files", "x", "--attach", str(tmp_path / "missing.bin"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(MAX_BYTES + 1)
    r = cli(daemon, "send", "files", "too big", "--attach", str(big))
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert event_count(daemon) == before
    # over TCP: a reader without write rights is refused before anything is stored
    token = daemon.user("reader", grants={"files": "read"}, scopes=["publish", "subscribe"])
    small = tmp_path / "small.txt"
    small.write_text("hello\n")
    env = {"NOTIFYD_URL": daemon.url, "NOTIFYD_TOKEN": token}
    r = cli(daemon, "send", "files", "x", "--attach", str(small), env=env, socket=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ")
    assert event_count(daemon) == before
