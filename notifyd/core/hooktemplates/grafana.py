"""``grafana``: Grafana's webhook contact point (unified alerting, payload version 1).

The Alertmanager shape plus ``imageURL`` (the panel's screenshot → ``image``),
``dashboardURL``, ``panelURL`` and ``silenceURL`` (→ actions) and ``values``. The
legacy (pre-9) alert payload (``ruleName``, ``state``, ``evalMatches``) is mapped too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .alertmanager import alert_event
from .base import (
    PayloadError,
    Result,
    Template,
    action,
    collapse_key,
    event,
    get_text,
    lst,
    obj,
    tags,
    text,
)

#: at most this many of an alert's values are written into its body
MAX_VALUES = 8


def _values(alert: Mapping[str, Any], where: str) -> str:
    values = alert.get("values")
    if not isinstance(values, dict) or not values:
        return ""
    shown = []
    for key, value in list(values.items())[:MAX_VALUES]:
        if isinstance(value, float):
            value = f"{value:.6g}"
        shown.append(f"{key}={text(value, f'{where}.values.{key}')}")
    return "Values: " + ", ".join(shown)


def _legacy(data: dict[str, Any]) -> Result:
    """Grafana's legacy alerting webhook (before unified alerting)."""
    state = get_text(data, "state", "")
    resolved = state == "ok"
    name = get_text(data, "ruleName", "") or get_text(data, "title", "") or "Grafana alert"
    lines = [get_text(data, "message", "")]
    for i, match in enumerate(lst(data.get("evalMatches"), "evalMatches")[:MAX_VALUES]):
        match = obj(match, f"evalMatches[{i}]")
        metric = get_text(match, "metric", f"evalMatches[{i}]")
        value = match.get("value")
        value = f"{value:.6g}" if isinstance(value, float) else text(value, f"evalMatches[{i}]")
        lines.append(f"{metric}: {value}")
    rule = data.get("ruleId")
    key = str(rule) if isinstance(rule, int | str) and not isinstance(rule, bool) else name
    raw_tags = data.get("tags")  # a rule's tags: {"name": "value"}
    tag_values = list(raw_tags.values()) if isinstance(raw_tags, dict) else []
    ev = event(
        title=f"Resolved: {name}" if resolved else name,
        body="\n".join(line for line in lines if line),
        priority=2 if resolved else (4 if state == "alerting" else None),
        tags=tags("resolved" if resolved else state or "alerting", *tag_values),
        click=data.get("ruleUrl"),
        image=data.get("imageUrl"),
        collapse=collapse_key("gf-", f"rule:{key}"),
    )
    return Result([ev])


def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    group = obj(payload, "payload")
    if "alerts" not in group:
        if "ruleName" in group or "evalMatches" in group or "ruleUrl" in group:
            return _legacy(group)
        raise PayloadError("a Grafana webhook payload has an 'alerts' list", "alerts")
    events = []
    for i, alert in enumerate(lst(group.get("alerts"), "alerts")):
        where = f"alerts[{i}]"
        ev, labels, ann, resolved = alert_event(alert, where, group, "gf-", "Grafana")
        alert = obj(alert, where)
        values = _values(alert, where)
        if values:
            ev["body"] = (ev.get("body", "") + "\n\n" + values).strip()[:4096]
        folder = labels.get("grafana_folder")
        if folder:
            ev["tags"] = tags(*ev.get("tags", []), folder)
        image = event(image=alert.get("imageURL")).get("image")
        if image:
            ev["image"] = image
        acts = [
            action("Dashboard", alert.get("dashboardURL")),
            action("Panel", alert.get("panelURL")),
            None if resolved else action("Silence", alert.get("silenceURL")),
            action("Runbook", ann.get("runbook_url")),
        ]
        kept = [a for a in acts if a is not None][:3]
        if kept:
            ev["actions"] = kept
        events.append(ev)
    if not events:
        return Result(ignored="the payload holds no alerts")
    return Result(events)


def sample() -> tuple[Any, dict[str, str]]:
    return {
        "receiver": "notifyd",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "High memory usage", "grafana_folder": "Infra",
                           "instance": "db-1", "severity": "critical"},
                "annotations": {"summary": "Memory above 95 %"},
                "startsAt": "2026-01-01T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example.com/alerting/grafana/abc/view",
                "fingerprint": "c6eadffa33fcdf37",
                "silenceURL": "https://grafana.example.com/alerting/silence/new?matcher=x",
                "dashboardURL": "https://grafana.example.com/d/abc",
                "panelURL": "https://grafana.example.com/d/abc?viewPanel=1",
                "values": {"B": 96.5, "C": 1},
                "imageURL": "https://grafana.example.com/public/img/attachments/x.png",
            }
        ],
        "groupLabels": {"alertname": "High memory usage"},
        "commonLabels": {"alertname": "High memory usage"},
        "commonAnnotations": {},
        "externalURL": "https://grafana.example.com/",
        "version": "1",
        "groupKey": "{}:{alertname=\"High memory usage\"}",
        "truncatedAlerts": 0,
        "title": "[FIRING:1] High memory usage",
        "state": "alerting",
        "message": "**Firing**",
    }, {}  # fmt: skip


TEMPLATE = Template("grafana", render, sample)
