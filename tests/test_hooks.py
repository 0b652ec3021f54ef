"""Inbound webhooks against a real daemon: making hooks (the secret shown once), every
way a sender authenticates, the templates end to end (fixtures in tests/data/hooks/),
Alertmanager's resolved alert replacing its firing one, rights, the json template,
ntfy's ?template=, and bad or oversized bodies storing nothing.

One daemon for the module, with a small max_request_bytes and max_batch_events; on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import Daemon, EngineDatabases

DATA = Path(__file__).parent / "data" / "hooks"
LIMIT = 256 * 1024
BATCH = 50
pytestmark = pytest.mark.both_engines


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, engine: str, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    databases = EngineDatabases(request, engine)
    d = Daemon(tmp_path_factory.mktemp("hooks") / "data", database_url=databases.new(),
               extra_env={"NOTIFYD_MAX_REQUEST_BYTES": str(LIMIT),
                          "NOTIFYD_MAX_BATCH_EVENTS": str(BATCH)})  # fmt: skip
    d.data_dir.mkdir()
    request.addfinalizer(databases.drop_all)
    d.start()
    yield d
    d.stop()


def fixture_bytes(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def user(daemon: Daemon, name: str, scopes: list[str] | None = None) -> str:
    return daemon.user(name, grants={f"{name}/*": "rw"},
                       scopes=scopes or ["publish", "subscribe", "account"])  # fmt: skip


def make_hook(daemon: Daemon, token: str, expect: int = 201, **body: Any) -> dict[str, Any]:
    with daemon.http(token) as c:
        r = c.post("/v1/hooks", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def history(daemon: Daemon, token: str, topic: str) -> list[dict[str, Any]]:
    with daemon.http(token) as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def post(daemon: Daemon, path: str, body: bytes, headers: dict[str, str] | None = None,
         ) -> httpx.Response:  # fmt: skip
    with daemon.http() as c:
        return c.post(path, content=body,
                      headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_create_shows_the_secret_once(daemon: Daemon) -> None:
    token = user(daemon, "ann")
    made = make_hook(daemon, token, name="Prometheus", topic="ann/alerts",
                     template="alertmanager", priority="high", tags=["prod"])  # fmt: skip
    assert set(made) == {"id", "name", "user", "topic", "template", "priority", "category",
                         "tags", "fields", "url", "secret", "created_at", "last_used_at"}  # fmt: skip
    assert made["user"] == "ann" and made["priority"] == 4 and made["tags"] == ["prod"]
    assert len(made["id"]) == 16 and made["id"].isalnum() and len(made["secret"]) >= 32
    assert made["url"] == f"{daemon.url}/v1/hooks/{made['id']}/{made['secret']}"
    assert made["last_used_at"] is None
    with daemon.http(token) as c:
        listed = c.get("/v1/hooks")
    assert listed.status_code == 200
    assert made["secret"] not in listed.text
    (shown,) = listed.json()["hooks"]
    assert "secret" not in shown and shown["url"] == f"{daemon.url}/v1/hooks/{made['id']}"
    # a second hook of the same name is a conflict
    make_hook(daemon, token, expect=409, name="Prometheus", topic="ann/x", template="grafana")
    # used: last_used_at is recorded, the secret still never shown
    r = post(
        daemon, f"/v1/hooks/{made['id']}/{made['secret']}", fixture_bytes("alertmanager_firing")
    )
    assert r.status_code == 200, r.text
    with daemon.http(token) as c:
        (again,) = c.get("/v1/hooks").json()["hooks"]
    assert again["last_used_at"] is not None and "secret" not in again
    assert made["secret"] not in daemon.log()


def test_alertmanager_resolved_replaces_firing(daemon: Daemon) -> None:
    token = user(daemon, "amy")
    hook = make_hook(daemon, token, name="am", topic="amy/alerts", template="alertmanager")
    r = post(
        daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", fixture_bytes("alertmanager_firing")
    )
    assert r.status_code == 200, r.text
    assert r.json()["published"] == 2 and len(r.json()["ids"]) == 2
    firing = {e["title"]: e for e in history(daemon, token, "amy/alerts")}
    cpu = firing["HighCPU on web-1:9100 (node)"]
    assert cpu["priority"] == 5 and cpu["tags"] == ["firing", "critical", "ops-team", "prod"]
    assert cpu["body"].startswith("CPU above 95 % for 10 minutes\n\nweb-1 has been saturated")
    assert cpu["click"] == "https://prometheus.example.com/graph?g0.expr=cpu%3E0.95&g0.tab=1"
    assert cpu["collapse_key"] == "am-b6e3b0f4a1c2d3e4"
    assert [a["label"] for a in cpu["actions"]] == ["Runbook", "Silence"]
    assert firing["DiskFilling on db-1:9100 (node)"]["priority"] == 4

    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}",
             fixture_bytes("alertmanager_resolved"))  # fmt: skip
    assert r.status_code == 200 and r.json()["published"] == 1
    live = history(daemon, token, "amy/alerts")
    titles = sorted(e["title"] for e in live)
    assert titles == ["DiskFilling on db-1:9100 (node)", "Resolved: HighCPU on web-1:9100 (node)"]
    resolved = next(e for e in live if e["title"].startswith("Resolved"))
    assert resolved["priority"] == 2 and resolved["collapse_key"] == cpu["collapse_key"]
    assert resolved["id"] > cpu["id"]


def test_github_signature(daemon: Daemon) -> None:
    token = user(daemon, "gus")
    hook = make_hook(daemon, token, name="gh", topic="gus/code", template="github")
    body = fixture_bytes("github_push")
    url = f"/v1/hooks/{hook['id']}"
    good = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(hook["secret"], body)}
    r = post(daemon, url, body, good)
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "gus/code")
    assert ev["title"] == "octocat/hello-world: octocat pushed 2 commits to main"
    assert ev["body"] == "- 0d1a26e Update README.md (Monalisa Octocat)\n- 1a2b3c4 Fix typo (Hubot)"
    assert ev["click"].startswith("https://github.com/octocat/hello-world/compare/")
    assert r.json()["ids"] == [ev["id"]]

    wrong = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign("nope", body)}
    refused = post(daemon, url, body, wrong)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    missing = post(daemon, url, body, {"X-GitHub-Event": "push"})
    assert missing.status_code == 401
    # an unknown hook answers like a wrong secret
    unknown = post(
        daemon, f"/v1/hooks/{'Z' * 16}/{hook['secret']}", body, {"X-GitHub-Event": "push"}
    )
    bad_secret = post(daemon, f"{url}/{'x' * 43}", body, {"X-GitHub-Event": "push"})
    assert unknown.status_code == bad_secret.status_code == 401
    assert unknown.json() == bad_secret.json()
    ping = post(daemon, url, fixture_bytes("github_ping"),
                {"X-GitHub-Event": "ping",
                 "X-Hub-Signature-256": "sha256=" + sign(hook["secret"], fixture_bytes("github_ping"))})  # fmt: skip
    assert ping.status_code == 200 and ping.json() == {"published": 0, "ids": [], "ignored": "ping"}
    assert len(history(daemon, token, "gus/code")) == 1


def test_github_form_encoded(daemon: Daemon) -> None:
    token = user(daemon, "gwen")
    hook = make_hook(daemon, token, name="gh", topic="gwen/code", template="github")
    body = urlencode({"payload": fixture_bytes("github_issues").decode()}).encode()
    r = post(daemon, f"/v1/hooks/{hook['id']}", body, {
        "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "issues",
        "X-Hub-Signature-256": "sha256=" + sign(hook["secret"], body)})  # fmt: skip
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "gwen/code")
    assert ev["title"] == "octocat/hello-world: issue #7 opened: Crash on start"
    assert ev["tags"] == ["issue", "opened", "github", "bug", "needs-triage"]


def test_gitea_signature_gitlab_token_and_bearer(daemon: Daemon) -> None:
    token = user(daemon, "gil")
    gitea = make_hook(daemon, token, name="gitea", topic="gil/gitea", template="gitea")
    body = fixture_bytes("gitea_pull_request")
    r = post(daemon, f"/v1/hooks/{gitea['id']}", body,
             {"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sign(gitea["secret"], body)})  # fmt: skip
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "gil/gitea")
    assert ev["title"] == "gitea/webhooks: PR #3 opened: Improve docs"
    assert ev["click"] == "http://localhost:3000/gitea/webhooks/pulls/3"
    r = post(daemon, f"/v1/hooks/{gitea['id']}", body,
             {"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sign("x", body)})  # fmt: skip
    assert r.status_code == 401

    gitlab = make_hook(daemon, token, name="gitlab", topic="gil/gitlab", template="gitlab",
                       tags=["ci"])  # fmt: skip
    body = fixture_bytes("gitlab_pipeline")
    hdr = {"X-Gitlab-Event": "Pipeline Hook"}
    r = post(daemon, f"/v1/hooks/{gitlab['id']}", body, {**hdr, "X-Gitlab-Token": gitlab["secret"]})
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "gil/gitlab")
    assert ev["title"] == "mike/diaspora: pipeline #31 failed on master" and ev["priority"] == 4
    assert ev["tags"] == ["pipeline", "failed", "gitlab", "ci"]
    assert post(daemon, f"/v1/hooks/{gitlab['id']}", body,
                {**hdr, "X-Gitlab-Token": "wrong"}).status_code == 401  # fmt: skip
    running = post(daemon, f"/v1/hooks/{gitlab['id']}", fixture_bytes("gitlab_pipeline_running"),
                   {**hdr, "Authorization": f"Bearer {gitlab['secret']}"})  # fmt: skip
    assert running.status_code == 200 and running.json()["published"] == 0
    assert post(daemon, f"/v1/hooks/{gitlab['id']}", body,
                {**hdr, "Authorization": "Bearer nope"}).status_code == 401  # fmt: skip


def test_slack_answers_ok(daemon: Daemon) -> None:
    token = user(daemon, "sal")
    hook = make_hook(daemon, token, name="truenas", topic="sal/nas", template="slack")
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", fixture_bytes("slack_text"))
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["content-type"].startswith("text/plain")
    (ev,) = history(daemon, token, "sal/nas")
    assert ev["format"] == "markdown" and ev["body"].startswith("TrueNAS @ nas.local")
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", fixture_bytes("slack_attachments"))
    assert r.status_code == 200
    latest = history(daemon, token, "sal/nas")[0]
    assert latest["title"] == "Website [DOWN]" and latest["priority"] == 5
    assert latest["click"] == "https://status.example.com/dashboard/3"


def test_apprise_form_fields(daemon: Daemon) -> None:
    token = user(daemon, "abe")
    hook = make_hook(daemon, token, name="apprise", topic="abe/x", template="apprise")
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}",
             b"title=Backup&body=done&type=success&tag=nas",
             {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "abe/x")
    assert (ev["title"], ev["body"], ev["priority"], ev["tags"]) == (
        "Backup", "done", 2, ["success", "nas"])  # fmt: skip


def test_rights(daemon: Daemon) -> None:
    token = user(daemon, "cat")
    publisher = user(daemon, "cat", scopes=["publish", "subscribe"])
    with daemon.http(publisher) as c:
        r = c.post("/v1/hooks", json={"name": "x", "topic": "cat/x", "template": "github"})
    assert r.status_code == 403 and "account" in r.json()["error"]["message"]
    # a topic the user may not publish to
    make_hook(daemon, token, expect=403, name="x", topic="elsewhere", template="github")
    hook = make_hook(daemon, token, name="x", topic="cat/x", template="alertmanager")
    # the owner loses the right to publish there: the hook's requests get 403, nothing stored
    with daemon.admin() as c:
        assert c.delete("/v1/acl", params={"user": "cat", "pattern": "cat/*"}).status_code == 204
        r = c.post("/v1/acl", json={"user": "cat", "pattern": "cat/*", "permission": "read"})
        assert r.status_code == 201
    r = post(
        daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", fixture_bytes("alertmanager_firing")
    )
    assert r.status_code == 403 and r.json()["error"]["field"] == "topic"
    assert history(daemon, token, "cat/x") == []


def test_other_users_cannot_see_or_remove(daemon: Daemon) -> None:
    dee = user(daemon, "dee")
    eve = user(daemon, "eve")
    hook = make_hook(daemon, dee, name="mine", topic="dee/x", template="grafana")
    with daemon.http(eve) as c:
        assert c.get("/v1/hooks").json() == {"hooks": []}
        assert c.get("/v1/hooks", params={"all": "true"}).status_code == 403
        assert c.delete(f"/v1/hooks/{hook['id']}").status_code == 404
        assert c.post(f"/v1/hooks/{hook['id']}/test", json={}).status_code == 404
    with daemon.admin() as c:
        every = c.get("/v1/hooks", params={"all": "true"}).json()["hooks"]
    assert any(h["id"] == hook["id"] and h["user"] == "dee" for h in every)
    assert all("secret" not in h for h in every)
    with daemon.http(dee) as c:
        assert c.delete(f"/v1/hooks/{hook['id']}").status_code == 204
        assert c.delete(f"/v1/hooks/{hook['id']}").status_code == 404
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", fixture_bytes("grafana_firing"))
    assert r.status_code == 401


def test_grafana_put_with_bearer(daemon: Daemon) -> None:
    token = user(daemon, "gra")
    hook = make_hook(daemon, token, name="grafana", topic="gra/x", template="grafana")
    with daemon.http() as c:  # Grafana's contact point may use PUT and a Bearer header
        r = c.put(f"/v1/hooks/{hook['id']}", content=fixture_bytes("grafana_firing"),
                  headers={"Authorization": f"Bearer {hook['secret']}"})  # fmt: skip
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "gra/x")
    assert ev["title"] == "High memory usage" and ev["priority"] == 4
    assert ev["image"] == "https://play.grafana.org/public/img/attachments/panel-4.png"
    assert ev["collapse_key"] == "gf-c6eadffa33fcdf37"
    assert [a["label"] for a in ev["actions"]] == ["Dashboard", "Panel", "Silence"]


def test_test_route_renders_without_publishing(daemon: Daemon) -> None:
    token = user(daemon, "tim")
    hook = make_hook(daemon, token, name="g", topic="tim/x", template="grafana", category="infra")
    with daemon.http(token) as c:
        sample = c.post(f"/v1/hooks/{hook['id']}/test")
        assert sample.status_code == 200, sample.text
        (ev,) = sample.json()["events"]
        assert (
            ev["topic"] == "tim/x"
            and ev["category"] == "infra"
            and ev["image"].startswith("https://")
        )
        given = c.post(f"/v1/hooks/{hook['id']}/test",
                       json={"payload": json.loads(fixture_bytes("grafana_firing"))})  # fmt: skip
        assert given.status_code == 200
        (ev,) = given.json()["events"]
        assert ev["title"] == "High memory usage"
        assert [a["label"] for a in ev["actions"]] == ["Dashboard", "Panel", "Silence"]
        bad = c.post(f"/v1/hooks/{hook['id']}/test", json={"payload": {"alerts": 3}})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "alerts"
        gh = make_hook(daemon, token, name="gh", topic="tim/x", template="github")
        ping = c.post(f"/v1/hooks/{gh['id']}/test",
                      json={"payload": {"zen": "x"}, "headers": {"X-GitHub-Event": "ping"}})  # fmt: skip
        assert ping.json() == {"events": [], "ignored": "ping"}
    assert history(daemon, token, "tim/x") == []


def test_json_template(daemon: Daemon) -> None:
    token = user(daemon, "jo")
    fields = {
        "title": "{{ host }}: {{ check | upper }}",
        "body": "{% for p in problems %}- {{ p }}\n{% endfor %}",
        "priority": "{{ 'urgent' if status == 'down' else 'low' }}",
        "tags": "{{ host }}, {{ status }}",
        "click": "{{ payload.links.status }}",
        "topic": "{{ 'jo/' ~ area if area else '' }}",
        "collapse_key": "{{ host }}-{{ check }}",
    }
    hook = make_hook(daemon, token, name="custom", topic="jo/default", template="json",
                     fields=fields)  # fmt: skip
    assert hook["fields"] == fields
    payload = {"host": "web1", "check": "http", "status": "down", "problems": ["timeout"],
               "links": {"status": "https://status.example.com/web1"}, "area": "web"}  # fmt: skip
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}", json.dumps(payload).encode())
    assert r.status_code == 200, r.text
    (ev,) = history(daemon, token, "jo/web")
    assert (ev["title"], ev["body"], ev["priority"], ev["tags"], ev["click"], ev["collapse_key"]) == (
        "web1: HTTP", "- timeout", 5, ["web1", "down"], "https://status.example.com/web1",
        "web1-http")  # fmt: skip
    # a topic the owner may not write, named by the payload: 403, nothing stored
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}",
             json.dumps({**payload, "area": "x", "host": "h"}).encode())  # fmt: skip
    assert r.status_code == 200  # jo/x is jo's
    hostile = {**payload, "area": None}
    hostile_fields_hook = make_hook(daemon, token, name="loop", topic="jo/loop", template="json",
                                    fields={"title": "{% for a in range(1000) %}{% for b in "
                                            "range(1000) %}{% endfor %}{% endfor %}x"})  # fmt: skip
    r = post(daemon, f"/v1/hooks/{hostile_fields_hook['id']}/{hostile_fields_hook['secret']}",
             json.dumps(hostile).encode())  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["field"] == "fields.title"
    assert history(daemon, token, "jo/loop") == []
    refused = make_hook(daemon, token, expect=422, name="bad", topic="jo/x", template="json",
                        fields={"title": "{{ ''.__class__ }}{% macro m() %}{% endmacro %}"})  # fmt: skip
    assert refused["error"]["field"] == "fields.title"
    other = make_hook(daemon, token, name="other", topic="jo/x", template="json",
                      fields={"title": "x", "topic": "{{ where }}"})  # fmt: skip
    r = post(daemon, f"/v1/hooks/{other['id']}/{other['secret']}", b'{"where": "not-jos"}')
    assert r.status_code == 403
    assert history(daemon, token, "not-jos") == []


def test_bad_payloads_store_nothing(daemon: Daemon) -> None:
    token = user(daemon, "bo")
    hook = make_hook(daemon, token, name="am", topic="bo/x", template="alertmanager")
    url = f"/v1/hooks/{hook['id']}/{hook['secret']}"
    for body, status in ((b"{not json", 400), (b"", 400), (b"[1, 2]", 422), (b'"text"', 422),
                         (b'{"alerts": [{"labels": ["x"]}]}', 422),
                         (b"[" * 100 + b"]" * 100, 422)):  # fmt: skip
        r = post(daemon, url, body)
        assert r.status_code == status, (body, r.text)
        assert set(r.json()["error"]) >= {"code", "message"}
    # one good alert and one bad: nothing of the batch is stored
    good = json.loads(fixture_bytes("alertmanager_firing"))
    good["alerts"].append({"labels": {"alertname": {"x": 1}}})
    r = post(daemon, url, json.dumps(good).encode())
    assert r.status_code == 422 and r.json()["error"]["field"] == "alerts[2].labels.alertname"
    too_big = b'{"alerts": [], "pad": "' + b"x" * LIMIT + b'"}'
    r = post(daemon, url, too_big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert history(daemon, token, "bo/x") == []
    # a wrong secret is refused before the large body is read
    r = post(daemon, f"/v1/hooks/{hook['id']}/{'y' * 43}", too_big)
    assert r.status_code == 401


def test_more_alerts_than_a_batch(daemon: Daemon) -> None:
    token = user(daemon, "max")
    hook = make_hook(daemon, token, name="am", topic="max/x", template="alertmanager")
    alerts = [{"status": "firing", "labels": {"alertname": f"A{i}"}, "fingerprint": f"{i:016x}"}
              for i in range(BATCH + 10)]  # fmt: skip
    r = post(daemon, f"/v1/hooks/{hook['id']}/{hook['secret']}",
             json.dumps({"version": "4", "alerts": alerts}).encode())  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["published"] == BATCH
    stored = history(daemon, token, "max/x")
    assert len(stored) == BATCH and stored[0]["title"] == "11 more notifications"


def test_ntfy_template(daemon: Daemon) -> None:
    token = daemon.user("nat", grants={"nat-*": "rw"}, scopes=["publish", "subscribe"])
    with daemon.http(token) as c:
        r = c.post(
            "/nat-alerts?template=alertmanager", content=fixture_bytes("alertmanager_firing")
        )
        assert r.status_code == 200, r.text
        msg = r.json()
        assert msg["event"] == "message" and msg["topic"] == "nat-alerts"
        assert msg["title"] == "DiskFilling on db-1:9100 (node)"
        r = c.post("/nat-code", params={"template": "github"}, content=fixture_bytes("github_release"),
                   headers={"X-GitHub-Event": "release"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "octocat/hello-world: release Version 1.2 published"
        r = c.post("/nat-code?tpl=github", content=fixture_bytes("github_ping"),
                   headers={"X-GitHub-Event": "ping"})  # fmt: skip
        assert r.status_code == 200 and r.json()["id"] == ""
        r = c.post("/nat-code?template=grafana", content=b"{oops")
        assert r.status_code == 400 and r.json()["http"] == 400 and "code" in r.json()
        r = c.post("/nat-code?template=grafana", content=b'{"alerts": "x"}')
        assert r.status_code == 400 and "alerts" in r.json()["error"]
        r = c.post("/elsewhere?template=github", content=fixture_bytes("github_push"),
                   headers={"X-GitHub-Event": "push"})  # fmt: skip
        assert r.status_code == 403 and r.json()["http"] == 403
    assert len(history(daemon, token, "nat-alerts")) == 2
    assert [e["title"] for e in history(daemon, token, "nat-code")] == [
        "octocat/hello-world: release Version 1.2 published"]  # fmt: skip


def test_openapi_documents_the_routes(daemon: Daemon) -> None:
    with daemon.http() as c:
        doc = c.get("/v1/openapi.json").json()
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/v1/hooks"])
    assert "delete" in paths["/v1/hooks/{hook_id}"] and "post" in paths["/v1/hooks/{hook_id}"]
    assert "post" in paths["/v1/hooks/{hook_id}/test"]
    assert "post" in paths["/v1/hooks/{hook_id}/{secret}"]
    assert "HookCreated" in doc["components"]["schemas"]


def _counter(daemon: Daemon, sample: str) -> float:
    """The value of one sample line of /metrics (0 when absent)."""
    with daemon.admin() as c:
        text = c.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_hook_requests_by_template_and_outcome(daemon: Daemon) -> None:
    token = user(daemon, "mia")
    hook = make_hook(daemon, token, name="am", topic="mia/alerts", template="alertmanager")
    samples = {
        "published": 'notifyd_hook_requests_total{outcome="published",template="alertmanager"}',
        "invalid": 'notifyd_hook_requests_total{outcome="invalid",template="alertmanager"}',
        "refused": 'notifyd_hook_requests_total{outcome="unauthorized",template="unknown"}',
    }
    before = {k: _counter(daemon, v) for k, v in samples.items()}
    assert post(daemon, hook["url"], fixture_bytes("alertmanager_firing")).status_code == 200
    assert post(daemon, hook["url"], b'{"alerts": 5}').status_code == 422
    # a wrong secret is counted without naming the hook's template (ids stay unprobeable)
    assert post(daemon, f"/v1/hooks/{hook['id']}/{'x' * 43}", b"{}").status_code == 401
    after = {k: _counter(daemon, v) for k, v in samples.items()}
    assert {k: after[k] - before[k] for k in samples} == {
        "published": 1,
        "invalid": 1,
        "refused": 1,
    }
