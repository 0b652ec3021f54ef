"""The CLI's argument handling, formatting and client logic, without a daemon.

HTTP is answered in-process by ``httpx.MockTransport`` fakes; end-to-end CLI tests
against the real daemon live elsewhere.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from notifyd import cli, client
from notifyd.cli import format as clifmt

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)


# --- clifmt: arguments --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("5", 5), ("high", 4), (" Urgent ", 5), ("max", 5), ("normal", 3)],
)
def test_parse_priority(text: str, expected: int) -> None:
    assert clifmt.parse_priority(text) == expected


@pytest.mark.parametrize("text", ["0", "6", "loud", "", "-1"])
def test_parse_priority_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="priority"):
        clifmt.parse_priority(text)


def test_check_priority_keeps_the_users_spelling() -> None:
    assert clifmt.check_priority("High") == "high"
    assert clifmt.check_priority("2") == "2"


def test_parse_action() -> None:
    assert clifmt.parse_action("Open=https://e.com/a?b=c") == {
        "label": "Open",
        "url": "https://e.com/a?b=c",
    }
    assert clifmt.parse_action("Restart = post https://e.com/r") == {
        "label": "Restart",
        "url": "https://e.com/r",
        "method": "POST",
    }
    for bad in ("Open", "=https://e.com", "Open="):
        with pytest.raises(ValueError, match="LABEL=URL"):
            clifmt.parse_action(bad)


def test_split_csv_and_scopes() -> None:
    assert clifmt.split_csv(["a,b", " c ", "a", ","]) == ["a", "b", "c"]
    assert clifmt.parse_scopes(["publish,Subscribe"]) == ["publish", "subscribe"]
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        clifmt.parse_scopes(["publish,root"])


def test_parse_when() -> None:
    assert clifmt.parse_when("30m", NOW) == "2026-03-04T12:30:00.000Z"
    assert clifmt.parse_when("+2h", NOW) == "2026-03-04T14:00:00.000Z"
    assert clifmt.parse_when("1d", NOW) == "2026-03-05T12:00:00.000Z"
    assert clifmt.parse_when("2026-05-01T08:00:00+02:00") == "2026-05-01T06:00:00.000Z"
    assert clifmt.parse_when("2026-05-01T08:00:00Z") == "2026-05-01T08:00:00.000Z"
    local = datetime(2026, 5, 1, 8, 0).astimezone().astimezone(UTC)
    assert clifmt.parse_when("2026-05-01T08:00") == local.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(ValueError, match="not a time"):
        clifmt.parse_when("tomorrow")


# --- clifmt: display ----------------------------------------------------------


def test_priority_label() -> None:
    assert [clifmt.priority_label(p) for p in (1, 2, 3, 4, 5)] == [
        "min",
        "low",
        "default",
        "high",
        "urgent",
    ]
    assert clifmt.priority_label(None) == "default"
    assert clifmt.priority_label("high") == "high"


def test_short_time_is_local_and_short() -> None:
    def local(dt: datetime) -> datetime:
        return dt.astimezone()

    same_day = NOW - timedelta(minutes=5)
    stamp = same_day.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert clifmt.short_time(stamp, NOW) == local(same_day).strftime("%H:%M:%S")
    earlier = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert clifmt.short_time("2026-01-02T03:04:05.000Z", NOW) == local(earlier).strftime(
        "%b %d %H:%M"
    )
    assert clifmt.short_time("2024-01-02T03:04:05Z", NOW).startswith("2024-01-0")
    assert clifmt.short_time(None) == "-"
    assert clifmt.short_time("garbage") == "garbage"


def test_event_summary_and_line() -> None:
    event = {
        "id": 42,
        "topic": "alerts/db",
        "title": "Disk full",
        "body": "\n/var is at 98%\nmore",
        "priority": 4,
        "created_at": NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    assert clifmt.event_summary(event) == "Disk full — /var is at 98%"
    assert clifmt.event_summary({"body": "only body"}) == "only body"
    assert clifmt.event_summary({"title": "only title", "body": ""}) == "only title"
    line = clifmt.event_line(event, now=NOW)
    time = NOW.astimezone().strftime("%H:%M:%S")
    assert line == f"#42  {time}  [high]     alerts/db  Disk full — /var is at 98%"
    assert "\x1b[" not in line
    assert "\x1b[" in clifmt.event_line(event, color=True, now=NOW)


def test_render_table_aligns_and_truncates_the_last_column() -> None:
    lines = clifmt.render_table(["ID", "NAME"], [[1, "alice"], [100, None]])
    assert lines == ["ID   NAME", "1    alice", "100"]
    wide = clifmt.render_table(["A", "TEXT"], [["x", "y" * 50]], width=20)
    assert wide[1] == "x  " + "y" * 16 + "…"
    assert all(len(line) <= 20 for line in wide)


def test_render_table_styles_after_padding() -> None:
    plain = clifmt.render_table(["A", "B"], [["xx", "y"]])
    styled = clifmt.render_table(["A", "B"], [["xx", "y"]], color=True, bold_rows=[True])
    assert [click.unstyle(line) for line in styled] == plain


def test_events_table_marks_unread() -> None:
    headers, rows = clifmt.events_table(
        [
            {"id": 2, "read": False, "priority": 5, "topic": "t", "category": "c", "title": "x"},
            {"id": 1, "read": True, "priority": 3, "topic": "t", "category": "c", "body": "y"},
        ],
        now=NOW,
    )
    assert headers[0] == " ID"
    assert [r[0] for r in rows] == ["*2", " 1"]
    assert [r[2] for r in rows] == ["urgent", "default"]
    assert [r[5] for r in rows] == ["x", "y"]


def test_small_tables() -> None:
    assert clifmt.permission_of({"read": True, "write": True}) == "rw"
    assert clifmt.permission_of({"read": False, "write": True}) == "write"
    _, rows = clifmt.tokens_table([{"id": 1, "scopes": ["publish"], "last_used_at": None}])
    assert rows[0][3:7:3] == ["publish", "never"]
    assert clifmt.plural(1, "event") == "1 event"
    assert clifmt.plural(2, "event") == "2 events"


# --- client: where to connect -------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    for var in ("NOTIFYD_SOCKET", "NOTIFYD_URL", "NOTIFYD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./var/notifyd.sock here
    return monkeypatch


def test_client_resolution_order(clean_env: pytest.MonkeyPatch, tmp_path) -> None:
    assert client.Client().socket_path == "/run/notifyd/notifyd.sock"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "notifyd.sock").touch()
    assert client.Client().socket_path == "./var/notifyd.sock"

    clean_env.setenv("NOTIFYD_URL", "localhost:8780/")
    clean_env.setenv("NOTIFYD_TOKEN", "nfy_env")
    c = client.Client()
    assert (c.url, c.token, c.socket_path) == ("http://localhost:8780", "nfy_env", None)
    assert c._http.headers["Authorization"] == "Bearer nfy_env"
    assert client.Client(token="nfy_arg").token == "nfy_arg"

    clean_env.setenv("NOTIFYD_SOCKET", "/env.sock")
    c = client.Client()
    assert (c.socket_path, c.url, c.token) == ("/env.sock", None, None)
    assert "Authorization" not in c._http.headers
    assert client.Client(url="http://h:1").url == "http://h:1"
    assert client.Client(socket_path="/arg.sock").socket_path == "/arg.sock"
    with pytest.raises(client.ClientError, match="not both"):
        client.Client(socket_path="/a", url="http://b")


# --- client: errors and the stream, against in-process fakes -----------------


def _client(handler, **kwargs) -> client.Client:
    return client.Client(
        url="http://notifyd.test", transport=httpx.MockTransport(handler), **kwargs
    )


def test_http_errors_become_client_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            error = {"code": "invalid", "message": "title: too long", "field": "title"}
            return httpx.Response(422, json={"error": error})
        if request.url.path == "/v1/users":
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})
        return httpx.Response(502, text="<html>bad gateway</html>")

    c = _client(handler)
    with pytest.raises(client.ClientError) as info:
        c.publish({"topic": "t"})
    assert (info.value.status, info.value.code, info.value.field) == (422, "invalid", "title")
    assert str(info.value) == "title: too long"
    with pytest.raises(client.ClientError, match="needs a token: pass --token"):
        c.users()
    with pytest.raises(client.ClientError, match="HTTP 502 Bad Gateway: <html>") as info:
        c.acl()
    assert info.value.retryable


def test_connection_failure_says_how_to_fix_it(tmp_path) -> None:
    c = client.Client(socket_path=str(tmp_path / "missing.sock"))
    with pytest.raises(client.ClientError, match="is the daemon running") as info:
        c.users()
    assert info.value.code == "unreachable"


def test_publish_sends_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": 7, **json.loads(request.content)})

    assert _client(handler).publish({"topic": "t"}, idempotency_key="k1")["id"] == 7
    assert seen[0].headers["Idempotency-Key"] == "k1"


def _sse(*frames: dict) -> bytes:
    return b"".join(
        (f"id: {f.get('event', {}).get('id', '')}\ndata: {json.dumps(f)}\n\n").encode()
        for f in frames
    )


def _event(i: int) -> dict:
    return {"type": "event", "event": {"id": i, "topic": "t"}}


def test_follow_resumes_after_drops_without_duplicates() -> None:
    requests: list[httpx.Request] = []
    bodies = [
        _sse(_event(5), {"type": "keepalive"}, _event(6)),
        _sse({"type": "resync", "reason": "behind"}),
        b": heartbeat\n\n"
        + _sse(_event(6), {"type": "state", "id": 5, "state": "read"}, _event(7)),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/v1/events":
            return httpx.Response(200, json={"events": [{"id": 4}], "next": None})
        if not bodies:
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "gone"}})
        return httpx.Response(200, content=bodies.pop(0))

    delays: list[float] = []
    got = []
    with pytest.raises(client.ClientError, match="gone"):
        for frame in _client(handler, token="nfy_x").follow(["a", "b"], sleep=delays.append):
            got.append(frame)
    assert [f["event"]["id"] for f in got if f["type"] == "event"] == [5, 6, 7]
    assert [f["type"] for f in got] == ["event", "event", "state", "event"]
    streams = [r for r in requests if r.url.path == "/v1/stream/sse"]
    assert [r.url.params.get("since") for r in streams] == ["4", "6", "6", "7"]
    assert streams[0].url.params["topics"] == "a,b"
    assert len(delays) == 3 and all(0.5 <= d <= 0.5 * 1.25 for d in delays)


def test_follow_backs_off_while_the_daemon_is_down() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, content=_sse(_event(1)))
        if calls["n"] < 7:
            raise httpx.ConnectError("refused")
        return httpx.Response(403, json={"error": {"code": "forbidden", "message": "stop"}})

    delays: list[float] = []
    with pytest.raises(client.ClientError, match="stop"):
        list(_client(handler).follow(since=0, sleep=delays.append))
    expected = [0.5, 1, 2, 4, 8, 10]
    assert all(b <= d <= b * 1.25 for d, b in zip(delays, expected, strict=True)), delays


def test_follow_fails_fast_when_the_first_connection_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(client.ClientError, match="cannot reach notifyd"):
        next(_client(handler).follow(since=0, sleep=lambda s: None))


# --- the CLI, with a fake daemon --------------------------------------------


class FakeDaemon:
    def __init__(self, responses: dict[tuple[str, str], httpx.Response]) -> None:
        self.responses = responses
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses[(request.method, request.url.path)]

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    daemon = FakeDaemon({})

    class FakeClient(client.Client):
        def __init__(self, **kwargs) -> None:
            super().__init__(socket_path="/fake.sock", transport=httpx.MockTransport(daemon))

    monkeypatch.setattr(client, "Client", FakeClient)
    return daemon


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli.main, list(args), input=input)


def test_send_builds_the_event(fake: FakeDaemon) -> None:
    fake.responses[("POST", "/v1/events")] = httpx.Response(201, json={"id": 12})
    result = run(
        "send", "alerts", "hello", "-t", "T", "-p", "High", "--tag", "a,b", "--tag", "c",
        "--action", "Open=https://e.com", "--markdown", "--sensitive", "--click", "https://c.com",
        "--idempotency-key", "k",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "12\n"
    assert fake.body() == {
        "topic": "alerts",
        "body": "hello",
        "title": "T",
        "priority": "high",
        "format": "markdown",
        "tags": ["a", "b", "c"],
        "click": "https://c.com",
        "actions": [{"label": "Open", "url": "https://e.com"}],
        "sensitive": True,
    }
    assert fake.requests[-1].headers["Idempotency-Key"] == "k"


def test_send_reads_the_body_from_stdin(fake: FakeDaemon) -> None:
    fake.responses[("POST", "/v1/events")] = httpx.Response(201, json={"id": 3, "topic": "t"})
    result = run("send", "t", "--json", input="line one\nline two\n")
    assert result.exit_code == 0, result.output
    assert fake.body() == {"topic": "t", "body": "line one\nline two"}
    assert json.loads(result.output) == {"id": 3, "topic": "t"}


def test_daemon_errors_exit_1_with_the_message(fake: FakeDaemon) -> None:
    error = {"code": "invalid", "message": "topic: bad topic", "field": "topic"}
    fake.responses[("POST", "/v1/events")] = httpx.Response(422, json={"error": error})
    result = run("send", "b a d", "x")
    assert result.exit_code == 1
    assert "Error: topic: bad topic" in result.output


def test_read_reports_missing_ids(fake: FakeDaemon) -> None:
    fake.responses[("POST", "/v1/inbox/state")] = httpx.Response(200, json={"updated": [1]})
    result = run("read", "1", "2", "1")
    assert result.exit_code == 1
    assert fake.body() == {"ids": [1, 2], "state": "read"}
    assert "#2" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["read"],
        ["read", "1", "--all"],
        ["read", "--all", "--unread"],
        ["read", "1", "--topic", "t"],
    ],
)
def test_read_argument_errors(fake: FakeDaemon, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert not fake.requests


def test_tokens_create_prints_the_token_alone(fake: FakeDaemon) -> None:
    fake.responses[("POST", "/v1/tokens")] = httpx.Response(201, json={"token": "nfy_s", "id": 1})
    result = run("tokens", "create", "--user", "al", "--scope", "publish,subscribe")
    assert result.exit_code == 0, result.output
    assert result.output == "nfy_s\n"
    assert fake.body() == {"user": "al", "scopes": ["publish", "subscribe"], "topics": None}


def test_history_passes_filters(fake: FakeDaemon) -> None:
    fake.responses[("GET", "/v1/events")] = httpx.Response(200, json={"events": [], "next": None})
    result = run(
        "history", "--min-priority", "high", "--unread", "--search", "disk", "--limit", "5"
    )
    assert result.exit_code == 0, result.output
    params = dict(fake.requests[-1].url.params)
    assert params == {"min_priority": "4", "unread": "true", "q": "disk", "limit": "5"}


def test_serve_passes_only_given_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from notifyd import config, daemon

    calls = []
    monkeypatch.setattr(config, "load_config", lambda path, overrides: calls.append(overrides))
    monkeypatch.setattr(daemon, "run", lambda cfg, reload=None: None)
    assert run("serve", "--listen", "127.0.0.1:1", "--listen", "[::1]:2").exit_code == 0
    assert run("serve", "--data-dir", "/d", "--socket", "/s").exit_code == 0
    assert calls == [{"listen": ["127.0.0.1:1", "[::1]:2"]}, {"data_dir": "/d", "socket": "/s"}]

    def bad(path, overrides):
        raise config.ConfigError("notifyd.toml:3: unknown key 'x'")

    monkeypatch.setattr(config, "load_config", bad)
    result = run("serve")
    assert result.exit_code == 1
    assert "unknown key 'x'" in result.output


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli.main)], ids=" ".join)
def test_every_command_has_help_with_examples(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert "Examples:\n    notifyd " in result.output


def test_every_client_command_takes_the_connection_options() -> None:
    for path, command in _commands(cli.main):
        local = (
            ("serve",),
            ("migrate",),
            ("tui",),
            ("plugins",),
            ("config", "show"),
        )  # never call a daemon
        if isinstance(command, click.Group) or path in local:
            continue
        names = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert {"--socket", "--url", "--token", "--json"} <= names, path


def test_every_command_has_a_docs_entry() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    for path, command in _commands(cli.main):
        if not isinstance(command, click.Group):
            assert f"## `notifyd {' '.join(path)}`" in docs, path
