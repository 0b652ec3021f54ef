"""The hook templates, without a daemon: each sender's documented payload shapes
(tests/data/hooks/, written from Alertmanager's, Grafana's, GitHub's, Gitea's,
GitLab's, Slack's and Apprise's documentation) mapped field by field; hostile payloads
and hostile json templates refused cleanly; the credential checks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from notifyd.core import hooks
from notifyd.core.errors import BadRequest, Unauthorized, ValidationFailed
from notifyd.core.hooktemplates import TEMPLATE_NAMES, custom
from notifyd.core.hooktemplates.slack import color_priority, mrkdwn
from notifyd.core.store import Hook

DATA = Path(__file__).parent / "data" / "hooks"
EVENT_HEADERS = {"github": "x-github-event", "gitea": "x-gitea-event"}
NO_OPTIONS: dict[str, Any] = {"priority": None, "category": None, "tags": [], "fields": None}


def fixture(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


def render(template: str, payload: Any, headers: dict[str, str] | None = None,
           options: dict[str, Any] | None = None, topic: str = "t") -> hooks.Result:  # fmt: skip
    return hooks.render(template, options or NO_OPTIONS, topic, payload, headers or {})


EXPECTED = {
    "alertmanager_firing": [
        {
            "title": "HighCPU on web-1:9100 (node)",
            "body": "CPU above 95 % for 10 minutes\n"
            "\n"
            "web-1 has been saturated since 11:50.\n"
            "\n"
            "Labels: env=prod, team=Ops Team",
            "priority": 5,
            "tags": ["firing", "critical", "ops-team", "prod"],
            "click": "https://prometheus.example.com/graph?g0.expr=cpu%3E0.95&g0.tab=1",
            "collapse_key": "am-b6e3b0f4a1c2d3e4",
            "actions": [
                {"label": "Runbook", "url": "https://runbooks.example.com/high-cpu"},
                {
                    "label": "Silence",
                    "url": "https://alertmanager.example.com/#/silences/new?filter=%7Balertname%3D%22HighCPU%22%2Cinstance%3D%22web-1%3A9100%22%2Cjob%3D%22node%22%7D",
                },
            ],
        },
        {
            "title": "DiskFilling on db-1:9100 (node)",
            "body": "Disk /var 85 % full\n\nLabels: mountpoint=/var",
            "priority": 4,
            "tags": ["firing", "warning"],
            "click": "https://prometheus.example.com/graph?g0.expr=disk",
            "collapse_key": "am-0f1e2d3c4b5a6978",
            "actions": [
                {
                    "label": "Silence",
                    "url": "https://alertmanager.example.com/#/silences/new?filter=%7Balertname%3D%22DiskFilling%22%2Cinstance%3D%22db-1%3A9100%22%2Cjob%3D%22node%22%7D",
                }
            ],
        },
    ],
    "alertmanager_resolved": [
        {
            "title": "Resolved: HighCPU on web-1:9100 (node)",
            "body": "CPU above 95 % for 10 minutes\n"
            "\n"
            "web-1 has been saturated since 11:50.\n"
            "\n"
            "Labels: env=prod, team=Ops Team",
            "priority": 2,
            "tags": ["resolved", "critical", "ops-team", "prod"],
            "click": "https://prometheus.example.com/graph?g0.expr=cpu%3E0.95&g0.tab=1",
            "collapse_key": "am-b6e3b0f4a1c2d3e4",
            "actions": [{"label": "Runbook", "url": "https://runbooks.example.com/high-cpu"}],
        }
    ],
    "apprise_notify": [
        {
            "title": "Backup *done*",
            "body": "nas: 120\xa0GB\nin 14 minutes",
            "priority": 4,
            "tags": ["warning", "backup", "nightly"],
        }
    ],
    "gitea_pull_request": [
        {
            "title": "gitea/webhooks: PR #3 opened: Improve docs",
            "body": "alice opened pull request #3 (docs → main)\n\nSome docs.",
            "tags": ["pull-request", "opened", "gitea"],
            "click": "http://localhost:3000/gitea/webhooks/pulls/3",
        }
    ],
    "gitea_pull_request_rejected": [
        {
            "title": "gitea/webhooks: bob requested changes on PR #3: Improve docs",
            "body": "Please split this.",
            "tags": ["review", "requested", "gitea"],
            "click": "http://localhost:3000/gitea/webhooks/pulls/3",
        }
    ],
    "gitea_push": [
        {
            "title": "gitea/webhooks: gitea pushed 1 commit to develop",
            "body": "- bffeb74 Webhooks Yay! (Gitea)",
            "tags": ["push", "gitea"],
            "click": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
        }
    ],
    "github_issues": [
        {
            "title": "octocat/hello-world: issue #7 opened: Crash on start",
            "body": "octocat opened issue #7\n\nIt crashes when started without a config.",
            "tags": ["issue", "opened", "github", "bug", "needs-triage"],
            "click": "https://github.com/octocat/hello-world/issues/7",
        }
    ],
    "github_ping": "ping",
    "github_pull_request": [
        {
            "title": "octocat/hello-world: PR #42 merged: Add a feature",
            "body": "octocat merged pull request #42 (feature → main)\n"
            "\n"
            "This adds the feature.\n"
            "\n"
            "Closes #7.",
            "tags": ["pull-request", "merged", "github"],
            "click": "https://github.com/octocat/hello-world/pull/42",
        }
    ],
    "github_pull_request_review": [
        {
            "title": "octocat/hello-world: hubot approved PR #42: Add a feature",
            "body": "Looks good, one nit.",
            "tags": ["review", "approved", "github"],
            "click": "https://github.com/octocat/hello-world/pull/42#pullrequestreview-80",
        }
    ],
    "github_push": [
        {
            "title": "octocat/hello-world: octocat pushed 2 commits to main",
            "body": "- 0d1a26e Update README.md (Monalisa Octocat)\n- 1a2b3c4 Fix typo (Hubot)",
            "tags": ["push", "github"],
            "click": "https://github.com/octocat/hello-world/compare/9049f1265b7d...0d1a26e67d8f",
        }
    ],
    "github_release": [
        {
            "title": "octocat/hello-world: release Version 1.2 published",
            "body": "## Changes\n- faster",
            "tags": ["release", "github"],
            "click": "https://github.com/octocat/hello-world/releases/tag/v1.2.0",
        }
    ],
    "github_star": [
        {
            "title": "octocat/hello-world: star created",
            "body": "octocat caused a star event",
            "priority": 2,
            "tags": ["star", "github"],
            "click": "https://github.com/octocat/hello-world",
        }
    ],
    "github_workflow_run": [
        {
            "title": "octocat/hello-world: CI #562 failure on main",
            "body": "Update README.md\n\nTriggered by octocat",
            "priority": 4,
            "tags": ["workflow", "failure", "github"],
            "click": "https://github.com/octocat/hello-world/actions/runs/30433642",
        }
    ],
    "gitlab_issue": [
        {
            "title": "mike/diaspora: issue #23 opened: New API: create/update/delete file",
            "body": "root opened issue #23\n\nCreate new API for manipulations with repository",
            "tags": ["issue", "opened", "gitlab", "api"],
            "click": "http://example.com/mike/diaspora/-/issues/23",
        }
    ],
    "gitlab_merge_request": [
        {
            "title": "mike/diaspora: MR !1 merged: MS-Viewport",
            "body": "root merged merge request !1 (ms-viewport → master)\n\nFixes the viewport.",
            "tags": ["merge-request", "merged", "gitlab", "api"],
            "click": "http://example.com/mike/diaspora/-/merge_requests/1",
        }
    ],
    "gitlab_note": [
        {
            "title": "mike/diaspora: root commented on issue #17: test",
            "body": "Hello world",
            "tags": ["comment", "gitlab"],
            "click": "http://example.com/mike/diaspora/-/issues/17#note_1241",
        }
    ],
    "gitlab_pipeline": [
        {
            "title": "mike/diaspora: pipeline #31 failed on master",
            "body": "test\n\nFailed jobs:\n- test: test-build\n\nTriggered by root",
            "priority": 4,
            "tags": ["pipeline", "failed", "gitlab"],
            "click": "http://example.com/mike/diaspora/-/pipelines/31",
        }
    ],
    "gitlab_pipeline_running": "pipeline not finished: only outcomes notify",
    "gitlab_push": [
        {
            "title": "mike/diaspora: jsmith pushed 4 commits to master",
            "body": "- b6568db Update Catalan translation to e38cb41. (Jordi Mallach)\n"
            "- da15608 fixed readme (GitLab dev user)\n"
            "… and 2 more",
            "tags": ["push", "gitlab"],
            "click": "http://example.com/mike/diaspora/-/compare/95790bf891e76fee5e1747ab589903a6a1f80f22...da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        }
    ],
    "gitlab_release": [
        {
            "title": "mike/diaspora: release v1.1 created",
            "body": "Release notes",
            "tags": ["release", "gitlab"],
            "click": "http://example.com/mike/diaspora/-/releases/v1.1",
        }
    ],
    "grafana_firing": [
        {
            "title": "High memory usage",
            "body": "This alert was triggered for zone us-1\n"
            "\n"
            "The system has high memory usage\n"
            "\n"
            "Labels: grafana_folder=Infra, team=blue, zone=us-1\n"
            "\n"
            "Values: B=44.2394, C=1",
            "priority": 4,
            "tags": ["firing", "warning", "blue", "infra"],
            "click": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "collapse_key": "gf-c6eadffa33fcdf37",
            "image": "https://play.grafana.org/public/img/attachments/panel-4.png",
            "actions": [
                {"label": "Dashboard", "url": "https://play.grafana.org/d/abc123"},
                {"label": "Panel", "url": "https://play.grafana.org/d/abc123?viewPanel=4"},
                {
                    "label": "Silence",
                    "url": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
                },
            ],
        }
    ],
    "grafana_legacy": [
        {
            "title": "Panel Title alert",
            "body": "Notification Message\nHigh value: 100.5",
            "priority": 4,
            "tags": ["alerting", "tag-value"],
            "click": "https://grafana.example.com/d/x?panelId=2",
            "image": "https://grafana.example.com/public/img/panel.png",
            "collapse_key": "gf-rule:7",
        }
    ],
    "slack_attachments": [
        {
            "title": "Website [DOWN]",
            "body": "Monitor alert\n"
            "\n"
            "Uptime Kuma\n"
            "\n"
            "Connection refused & timeout https://example.com\n"
            "\n"
            "**Time**: 2026-03-01 12:00\n"
            "\n"
            "Uptime Kuma",
            "format": "markdown",
            "priority": 5,
            "click": "https://status.example.com/dashboard/3",
            "image": "https://status.example.com/badge.png",
        }
    ],
    "slack_blocks": [
        {
            "title": "Deploy finished",
            "body": "**api** v2.3 is live on [production](https://app.example.com) "
            "~~slowly~~\n"
            "\n"
            "**By:** @U024BE7LH\n"
            "Took 4 min\n"
            "\n"
            "---\n"
            "\n"
            "@here 3 services",
            "format": "markdown",
            "tags": ["deploys"],
            "click": "https://logs.example.com/deploy/42",
            "icon": "https://cdn.example.com/bot.png",
            "image": "https://cdn.example.com/graph.png",
            "actions": [{"label": "Open logs", "url": "https://logs.example.com/deploy/42"}],
        }
    ],
    "slack_text": [
        {
            "title": "TrueNAS",
            "body": "TrueNAS @ nas.local\n"
            "\n"
            "New alerts:\n"
            "* Pool tank state is DEGRADED: One or more devices are faulted.",
            "format": "markdown",
            "tags": ["nas-alerts"],
        }
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_maps_every_field(name: str) -> None:
    template, _, kind = name.partition("_")
    headers = {EVENT_HEADERS[template]: kind} if template in EVENT_HEADERS else {}
    result = render(template, fixture(name), headers)
    expected = EXPECTED[name]
    if isinstance(expected, str):
        assert result.events == [] and result.ignored == expected
        return
    assert [{k: v for k, v in ev.items() if k != "topic"} for ev in result.events] == expected
    assert all(ev["topic"] == "t" for ev in result.events)


def test_every_fixture_is_used() -> None:
    assert {p.stem for p in DATA.glob("*.json")} == set(EXPECTED)


def test_firing_and_resolved_share_the_collapse_key() -> None:
    firing = render("alertmanager", fixture("alertmanager_firing")).events[0]
    resolved = render("alertmanager", fixture("alertmanager_resolved")).events[0]
    assert firing["collapse_key"] == resolved["collapse_key"]
    assert resolved["priority"] < firing["priority"] and resolved["title"].startswith("Resolved")


def test_alert_without_fingerprint_is_keyed_by_its_labels() -> None:
    payload = fixture("alertmanager_firing")
    for alert in payload["alerts"]:
        del alert["fingerprint"]
    first = render("alertmanager", payload).events
    again = render("alertmanager", payload).events
    assert first[0]["collapse_key"] == again[0]["collapse_key"] != first[1]["collapse_key"]
    assert all(len(ev["collapse_key"]) <= 64 for ev in first)


def test_hook_defaults_apply_where_the_template_gives_none() -> None:
    options = {"priority": 1, "category": "ci", "tags": ["team-a"], "fields": None}
    push = render("github", fixture("github_push"), {"x-github-event": "push"}, options).events[0]
    assert push["priority"] == 1 and push["category"] == "ci"
    assert push["tags"] == ["push", "github", "team-a"]
    run = render("github", fixture("github_workflow_run"), {"x-github-event": "workflow_run"},
                 options).events[0]  # fmt: skip
    assert run["priority"] == 4  # the template's (a failed run) wins over the default


def test_gitea_reads_its_own_header_and_github_s() -> None:
    payload = fixture("gitea_push")
    own = render("gitea", payload, {"x-gitea-event": "push"}).events
    compat = render("gitea", payload, {"x-github-event": "push"}).events
    assert own == compat and own[0]["title"].endswith("pushed 1 commit to develop")


def test_gitlab_header_names_the_event_when_object_kind_is_missing() -> None:
    payload = fixture("gitlab_push")
    del payload["object_kind"], payload["event_name"]
    ev = render("gitlab", payload, {"x-gitlab-event": "Push Hook"}).events[0]
    assert ev["title"] == "mike/diaspora: jsmith pushed 4 commits to master"


def test_unfinished_github_runs_and_repeated_release_actions_are_ignored() -> None:
    run = fixture("github_workflow_run")
    run["action"] = "in_progress"
    assert render("github", run, {"x-github-event": "workflow_run"}).ignored
    release = fixture("github_release")
    release["action"] = "created"
    assert render("github", release, {"x-github-event": "release"}).events == []


def test_slack_markup() -> None:
    assert mrkdwn("*bold* and <https://x.example|the site> <!channel> <@U1|ann> &lt;b&gt;") == (
        "**bold** and [the site](https://x.example) @channel @ann <b>"
    )
    assert mrkdwn("<https://x.example|label>", markdown=False) == "label (https://x.example)"
    assert mrkdwn("1 &lt; 2 &amp;&amp; 3 &gt; 2") == "1 < 2 && 3 > 2"
    text = "<" * 8000 + "x"  # linear: no '>' at all
    started = time.process_time()
    assert mrkdwn(text).endswith("x")
    assert time.process_time() - started < 1.0
    assert [color_priority(c) for c in ("danger", "warning", "good", "#e01e5a", "#36a64f",
                                        "#ffa500", "#439FE0", "nope", 7)] == [
        5, 4, 2, 5, 2, 4, None, None, None]  # fmt: skip


def test_apprise_types_formats_and_form_fields() -> None:
    body = b"title=Disk&body=almost+full&type=failure&tag=nas"
    payload = hooks.parse_body("apprise", body, "application/x-www-form-urlencoded")
    ev = render("apprise", payload).events[0]
    assert ev == {"title": "Disk", "body": "almost full", "priority": 5,
                  "tags": ["failure", "nas"], "topic": "t"}  # fmt: skip
    info = render("apprise", {"body": "*x*", "format": "markdown"}).events[0]
    assert info == {"body": "*x*", "format": "markdown", "topic": "t"}
    for bad, field in (({"body": "x", "type": "panic"}, "type"),
                       ({"body": "x", "format": "rtf"}, "format"), ({"title": ""}, "body")):  # fmt: skip
        with pytest.raises(ValidationFailed) as exc:
            render("apprise", bad)
        assert exc.value.field == field


# -- bodies ----------------------------------------------------------------------------------


def test_github_form_encoded_payload() -> None:
    raw = json.dumps(fixture("github_push")).encode()
    from urllib.parse import urlencode

    body = urlencode({"payload": raw}).encode()
    payload = hooks.parse_body("github", body, "application/x-www-form-urlencoded; charset=x")
    assert payload == fixture("github_push")
    with pytest.raises(BadRequest):
        hooks.parse_body("github", b"other=1", "application/x-www-form-urlencoded")


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"\xff\xfe", b"[1,", b"nul"])
def test_unreadable_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        hooks.parse_body("alertmanager", body, "application/json")


def test_content_type_is_not_trusted() -> None:
    assert hooks.parse_body("grafana", b'{"alerts": []}', "text/plain") == {"alerts": []}
    assert hooks.parse_body("grafana", b'{"alerts": []}', None) == {"alerts": []}


def test_deep_nesting_is_refused() -> None:
    deep = "[" * 200 + "]" * 200
    with pytest.raises(ValidationFailed) as exc:
        hooks.parse_body("json", deep.encode(), None)
    assert exc.value.field == "payload"
    ok = "[" * 60 + "]" * 60
    assert hooks.parse_body("json", ok.encode(), None) is not None


# -- hostile payloads ------------------------------------------------------------------------

HOSTILE = [
    ("alertmanager", [], {}, "payload"),
    ("alertmanager", "text", {}, "payload"),
    ("alertmanager", 7, {}, "payload"),
    ("alertmanager", {}, {}, "alerts"),
    ("alertmanager", {"alerts": "x"}, {}, "alerts"),
    ("alertmanager", {"alerts": [5]}, {}, "alerts[0]"),
    ("alertmanager", {"alerts": [{"labels": ["a"]}]}, {}, "alerts[0].labels"),
    (
        "alertmanager",
        {"alerts": [{"labels": {"alertname": {"x": 1}}}]},
        {},
        "alerts[0].labels.alertname",
    ),
    (
        "alertmanager",
        {"alerts": [{"annotations": {"summary": []}}]},
        {},
        "alerts[0].annotations.summary",
    ),
    ("grafana", {"alerts": [{"labels": {}, "values": {"A": [1]}}]}, {}, "alerts[0].values.A"),
    ("github", {"commits": "x"}, {"x-github-event": "push"}, "commits"),
    ("github", {"pull_request": []}, {"x-github-event": "pull_request"}, "pull_request"),
    ("github", {"repository": "x"}, {"x-github-event": "issues"}, "repository"),
    ("github", {}, {}, "x-github-event"),
    ("github", [], {"x-github-event": "push"}, "payload"),
    ("gitlab", {}, {}, "object_kind"),
    ("gitlab", {"object_kind": "push", "commits": [3]}, {}, "commits[0]"),
    (
        "gitlab",
        {"object_kind": "pipeline", "object_attributes": {"status": "failed"}, "builds": "x"},
        {},
        "builds",
    ),  # fmt: skip
    ("slack", {}, {}, "text"),
    ("slack", {"blocks": {"type": "section"}}, {}, "blocks"),
    ("slack", {"attachments": [{"fields": [1]}]}, {}, "attachments[0].fields[0]"),
    ("slack", {"text": ["x"]}, {}, "text"),
    ("apprise", {"body": {"x": 1}}, {}, "body"),
]


@pytest.mark.parametrize(("template", "payload", "headers", "field"), HOSTILE)
def test_wrong_shapes_are_422_naming_the_field(template: str, payload: Any,
                                               headers: dict[str, str], field: str) -> None:  # fmt: skip
    with pytest.raises(ValidationFailed) as exc:
        render(template, payload, headers)
    assert exc.value.field == field, exc.value.message
    assert exc.value.status == 422


def test_huge_strings_are_cut_to_the_event_limits() -> None:
    huge = "x" * 200_000
    payload = {"alerts": [{"labels": {"alertname": huge}, "annotations": {"summary": huge},
                           "generatorURL": "https://" + huge, "fingerprint": huge}]}  # fmt: skip
    ev = render("alertmanager", payload).events[0]
    assert len(ev["title"]) == 256 and ev["title"].endswith("…")
    assert len(ev["body"]) == 4096
    assert "click" not in ev  # too long to be a URL: left out, not refused
    assert len(ev["collapse_key"]) <= 64
    slack = render("slack", {"text": "*" + huge}).events[0]
    assert len(slack["body"]) == 4096


def test_urls_that_are_not_http_are_left_out() -> None:
    payload = {
        "alerts": [
            {"labels": {"alertname": "A"}, "generatorURL": "javascript:alert(1)"}
        ],  # fmt: skip
        "externalURL": "file:///etc/passwd",
    }
    ev = render("alertmanager", payload).events[0]
    assert "click" not in ev and "actions" not in ev


def test_too_many_events_are_capped_with_a_summary() -> None:
    events = [{"topic": "t", "title": str(i)} for i in range(10)]
    capped = hooks.cap_batch(events, 4, "t")
    assert [e["title"] for e in capped] == ["0", "1", "2", "7 more notifications"]


# -- the json template ---------------------------------------------------------------------


def json_options(**fields: str) -> dict[str, Any]:
    return hooks.check_options("json", fields=fields)


def test_json_template_maps_every_field() -> None:
    options = json_options(
        title="{{ host }}: {{ payload.check.name | upper }}",
        body="{% for p in problems %}- {{ p }}\n{% endfor %}",
        priority="{{ 'urgent' if status == 'down' else 'low' }}",
        tags="{{ host }}, {{ status }} Not-A-Slug!",
        click="{{ url }}",
        category="{{ kind }}",
        topic="alerts/{{ host }}",
        collapse_key="{{ host }}-{{ payload.check.name }}",
    )
    payload = {"host": "web1", "status": "down", "check": {"name": "http"}, "kind": "uptime",
               "problems": ["timeout", "500"], "url": "https://status.example.com/web1"}  # fmt: skip
    ev = render("json", payload, options=options).events[0]
    assert ev == {
        "title": "web1: HTTP", "body": "- timeout\n- 500", "priority": 5,
        "tags": ["web1", "down", "not-a-slug"], "click": "https://status.example.com/web1",
        "category": "uptime", "topic": "alerts/web1", "collapse_key": "web1-http",
    }  # fmt: skip


def test_json_template_missing_values_render_empty() -> None:
    options = json_options(title="{{ payload.a.b.c }}x", body="{{ nothing }}")
    assert render("json", {"z": 1}, options=options).events[0]["title"] == "x"
    with pytest.raises(ValidationFailed) as exc:
        render("json", {}, options=json_options(title="{{ nope }}"))
    assert exc.value.field == "fields.body"


@pytest.mark.parametrize(("fields", "field"), [
    ({}, "fields"),
    ({"colour": "x", "title": "x"}, "fields"),
    ({"title": "{{ x "}, "fields.title"),
    ({"title": "x" * 3000}, "fields.title"),
    ({"title": 5}, "fields.title"),
    ({"priority": "{{ 1 }}"}, "fields.body"),
    ({"title": "{% macro m() %}{% endmacro %}"}, "fields.title"),
    ({"title": "{% include 'x' %}"}, "fields.title"),
    ({"title": "{% set ns = namespace(a=1) %}"}, "fields.title"),
    ({"title": "{% for x in y recursive %}{{ loop(x) }}{% endfor %}"}, "fields.title"),
    ({"title": "{{" + "(" * 900 + "1" + ")" * 900 + "}}"}, "fields.title"),
])  # fmt: skip
def test_json_template_refused_at_creation(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        hooks.check_options("json", fields=fields)
    assert exc.value.field == field


def test_fields_only_for_the_json_template() -> None:
    with pytest.raises(ValidationFailed) as exc:
        hooks.check_options("github", fields={"title": "x"})
    assert exc.value.field == "fields"


HOSTILE_TEMPLATES = [
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{{ l * 100000000 }}",
    "{{ 10 ** 100000000 }}",
    "{{ (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) "
    "* (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) "
    "* (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) "
    "* (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ 'a{:>999999999}'.format(1) }}",
    "{{ 'a'.format_map({}) }}",
    "{{ range(10 ** 9) | list }}",
    "{{ l | join('x' * 60000) }}",
    "{{ big | replace('', big) }}",
    "{% set a = big ~ big %}{% set a = a ~ a %}{% set a = a ~ a %}{{ a }}",
    "{{ big + big + big }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum(100000) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ l | sum(start=[]) }}",
    "{{ self.__dict__ }}",
    "{{ ('<' * 60000) | striptags }}",
    "{% set a = [big, big] %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}{{ c }}",
    "{% set a = [s, s, s, s, s, s, s, s, s, s] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
    "{{ d | tojson }}",
    "{% set a = {'x': big, 'y': big} %}{{ a }}",
    "{{ (big, big, big) | string }}",
    "{{ l | map('tojson') | map('tojson') | list }}",
    "{{ quotes | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson }}",
    "{{ quotes | escape | escape | escape | escape | escape | escape | escape | escape }}",
    "{% set x %}{% for i in l %}{{ big }}{% endfor %}{% endset %}{{ x }}",
    "{% filter upper %}{% for i in l %}{{ big }}{% endfor %}{% endfilter %}",
    "{{ dict(a=big, b=big) }}",
    "{{ l + l + l + l + l + l + l + l + l + l + l + l + l + l + l + l + l + l + l + l }}",
    "{{ l | map('center', 100000) | list }}",
]


@pytest.mark.parametrize("source", HOSTILE_TEMPLATES)
def test_hostile_json_templates_are_bounded(source: str) -> None:
    payload = {"l": list(range(2000)), "big": "y" * 40_000, "s": "z" * 100,
               "quotes": '"' * 1000}  # fmt: skip
    started = time.process_time()
    try:
        result = render("json", payload, options=json_options(title=source, body="b"))
    except ValidationFailed as exc:
        assert (exc.field or "").startswith("fields."), exc.message
    else:
        ev = result.events[0]
        assert len(ev.get("title", "")) <= 256 and len(ev["body"]) <= 4096
        assert "class" not in ev.get("title", "") and "subclasses" not in ev.get("title", "")
    assert time.process_time() - started < 5  # the budget is 1 s; generous for slow machines


def test_ordinary_constructs_still_work() -> None:
    options = json_options(
        title="{% for k, v in d | dictsort %}{{ k }}={{ v }} {% endfor %}",
        body="{{ 'yes' if kind in ['a', 'b'] else 'no' }} {{ items | map(attribute='n') | join(',') }}"
        " {{ (1, 2) | list }} {{ {'k': kind}.k }}",
    )
    payload = {"d": {"b": 2, "a": 1}, "kind": "a", "items": [{"n": 1}, {"n": 2}]}
    ev = render("json", payload, options=options).events[0]
    assert ev["title"] == "a=1 b=2" and ev["body"] == "yes 1,2 [1, 2] a"


def test_the_step_budget_stops_a_silent_loop() -> None:
    source = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}x"
    with pytest.raises(ValidationFailed) as exc:
        render("json", {}, options=json_options(title=source))
    assert "steps" in exc.value.message and exc.value.field == "fields.title"


def test_the_template_never_sees_credentials() -> None:
    options = json_options(title="{{ headers | tojson }}")
    headers = {"authorization": "Bearer s3cret", "x-gitlab-token": "s3cret",
               "x-hub-signature-256": "sha256=s3cret", "x-event": "build"}  # fmt: skip
    title = render("json", {}, headers, options).events[0]["title"]
    assert "s3cret" not in title and "build" in title


def test_rendered_values_that_do_not_fit_name_the_field() -> None:
    for fields, field in (
        ({"title": "x", "priority": "{{ 'loud' }}"}, "fields.priority"),
        ({"title": "x", "click": "javascript:{{ 1 }}"}, "fields.click"),
        ({"title": "x", "topic": "../{{ 1 }}"}, "fields.topic"),
        ({"title": "x", "category": "{{ '!!!' }}"}, "fields.category"),
    ):
        with pytest.raises(ValidationFailed) as exc:
            render("json", {}, options=json_options(**fields))
        assert exc.value.field == field
    long_key = render("json", {}, options=json_options(title="x", collapse_key="{{ 'k' * 300 }}"))
    assert len(long_key.events[0]["collapse_key"]) <= 64


# -- credentials ----------------------------------------------------------------------------


def hook(secret: str = "s" * 43) -> Hook:
    return Hook(id="a" * 16, user_id=1, name="h", topic="t", template="github", options={},
                secret=secret, created_at="2026-01-01T00:00:00Z")  # fmt: skip


def test_ids_and_secrets_are_random_and_well_formed() -> None:
    ids = {hooks.new_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 16 and i.isalnum() and i.isascii() for i in ids)
    assert all(len(hooks.new_secret()) >= 32 for _ in range(20))


def test_plain_credentials() -> None:
    h = hook()
    for creds in (hooks.credentials(h.secret, {}),
                  hooks.credentials(None, {"authorization": f"Bearer {h.secret}"}),
                  hooks.credentials(None, {"x-gitlab-token": h.secret})):  # fmt: skip
        assert hooks.check_head(h, creds) is h
    for creds in (hooks.credentials("wrong", {}),
                  hooks.credentials(None, {"authorization": "Bearer wrong"}),
                  hooks.credentials(h.secret, {"x-gitlab-token": "wrong"}),
                  hooks.credentials("é" * 40, {})):  # fmt: skip
        with pytest.raises(Unauthorized) as exc:
            hooks.check_head(h, creds)
        assert exc.value.message == hooks.BAD_CREDENTIALS
    with pytest.raises(Unauthorized) as unknown:
        hooks.check_head(None, hooks.credentials(h.secret, {}))
    assert unknown.value.message == hooks.BAD_CREDENTIALS
    with pytest.raises(Unauthorized) as none:
        hooks.check_head(h, hooks.credentials(None, {"authorization": "Basic eDp5"}))
    assert "needs its secret" in none.value.message


def test_signatures() -> None:
    h = hook()
    body = b'{"zen": "x"}'
    digest = hmac.new(h.secret.encode(), body, hashlib.sha256).hexdigest()
    for headers in ({"x-hub-signature-256": f"sha256={digest}"},
                    {"x-hub-signature-256": f"sha256={digest.upper()}"},
                    {"x-gitea-signature": digest}):  # fmt: skip
        creds = hooks.credentials(None, headers)
        hooks.check_signatures(hooks.check_head(h, creds), creds, body)
    for headers in ({"x-hub-signature-256": f"sha256={digest}"}, {"x-gitea-signature": digest}):
        creds = hooks.credentials(None, headers)
        with pytest.raises(Unauthorized):
            hooks.check_signatures(h, creds, body + b" ")
    wrong = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    creds = hooks.credentials(h.secret, {"x-hub-signature-256": f"sha256={wrong}"})
    with pytest.raises(Unauthorized):  # every credential presented must be right
        hooks.check_signatures(hooks.check_head(h, creds), creds, body)


def test_hook_names_and_options() -> None:
    assert hooks.check_name("  Prometheus (prod)  ") == "Prometheus (prod)"
    for bad in ("", "   ", "x" * 65, "a\nb", "a\u200bb", 5, None):
        with pytest.raises(ValidationFailed):
            hooks.check_name(bad)
    assert hooks.check_options("slack", priority="high", category="ops", tags=["a", "a", "b"]) == {
        "priority": 4, "category": "ops", "tags": ["a", "b"], "fields": None}  # fmt: skip
    for kwargs, field in (({"priority": 9}, "priority"), ({"category": "Not Slug"}, "category"),
                          ({"tags": ["ok", "NO"]}, "tags[1]"), ({"tags": "x"}, "tags")):  # fmt: skip
        with pytest.raises(ValidationFailed) as exc:
            hooks.check_options("slack", **kwargs)
        assert exc.value.field == field
    with pytest.raises(ValidationFailed) as unknown:
        hooks.check_options("teams")
    assert unknown.value.field == "template"


def test_every_template_has_a_sample_that_renders() -> None:
    for name in TEMPLATE_NAMES:
        payload, headers = hooks.sample(name)
        options = json_options(title="{{ title }}") if name == "json" else NO_OPTIONS
        assert render(name, payload, headers, options).events, name
    assert custom.RENDER_STEPS > 0
