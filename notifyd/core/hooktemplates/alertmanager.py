"""``alertmanager``: Prometheus Alertmanager's webhook (payload version 4).

One event per alert. The alert's fingerprint becomes the ``collapse_key``, so a
resolved alert (and a repeated firing notification) replaces the earlier one.
Grafana's unified alerting sends the same shape with a few more fields
(:mod:`.grafana` reuses :func:`alert_event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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

#: severity label → priority (lower case; anything else leaves the hook's default)
SEVERITY = {
    **dict.fromkeys(("critical", "crit", "page", "emergency", "emerg", "alert", "fatal",
                     "disaster", "p1", "sev1", "urgent"), 5),
    **dict.fromkeys(("high", "error", "err", "major", "warning", "warn", "p2", "sev2"), 4),
    **dict.fromkeys(("average", "medium", "moderate", "default", "p3", "sev3"), 3),
    **dict.fromkeys(("low", "minor", "info", "information", "informational", "notice", "p4",
                     "sev4"), 2),
    **dict.fromkeys(("none", "debug", "ok", "p5", "sev5"), 1),
}  # fmt: skip
#: a resolved alert's priority is at most this (it replaces the firing one quietly)
RESOLVED_PRIORITY = 2
#: labels whose values become tags (besides the alert's status)
TAG_LABELS = ("severity", "team", "env", "environment", "service")
#: labels already in the title or the tags, not repeated in the body's label line
SHOWN_LABELS = frozenset({"alertname", "instance", "job", "severity"})


def severity_priority(labels: Mapping[str, Any]) -> int | None:
    value = labels.get("severity")
    return SEVERITY.get(value.strip().lower()) if isinstance(value, str) else None


def _labels(alert: Mapping[str, Any], where: str) -> dict[str, str]:
    raw = obj(alert.get("labels"), f"{where}.labels")
    return {str(k): text(v, f"{where}.labels.{k}") for k, v in raw.items()}


def _silence_url(external: str, labels: Mapping[str, str]) -> str:
    """Alertmanager's "new silence" page with the alert's labels as matchers."""
    pairs = []
    for key in ("alertname", "instance", "job"):
        if labels.get(key):
            value = labels[key].replace("\\", "\\\\").replace('"', '\\"')
            pairs.append(f'{key}="{value}"')
    matcher = "{" + ",".join(pairs) + "}"
    return f"{external.rstrip('/')}/#/silences/new?filter={quote(matcher, safe='')}"


def alert_event(
    alert: Any, where: str, group: Mapping[str, Any], prefix: str, source: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, str], bool]:
    """The event of one alert (Alertmanager's or Grafana's), plus its labels,
    annotations and whether it is resolved, for the caller to add to."""
    alert = obj(alert, where)
    labels = _labels(alert, where)
    raw_ann = obj(alert.get("annotations"), f"{where}.annotations")
    ann = {str(k): text(v, f"{where}.annotations.{k}") for k, v in raw_ann.items()}
    status = get_text(alert, "status", where) or get_text(group, "status", "")
    resolved = status.lower() == "resolved"

    name = labels.get("alertname") or "Alert"
    instance, job = labels.get("instance", ""), labels.get("job", "")
    title = name
    if instance:
        title += f" on {instance}"
    if job and job != instance:
        title += f" ({job})"
    if resolved:
        title = f"Resolved: {title}"

    parts: list[str] = []
    for key in ("summary", "description", "message"):
        value = ann.get(key, "").strip()
        if value and value not in parts:
            parts.append(value)
    rest = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in SHOWN_LABELS and v]
    if rest:
        parts.append("Labels: " + ", ".join(rest[:20]))

    priority = severity_priority(labels)
    if resolved:
        priority = min(priority or 3, RESOLVED_PRIORITY)

    fingerprint = get_text(alert, "fingerprint", where)
    if not fingerprint:  # identify the alert by its labels, as Alertmanager does
        fingerprint = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    external = get_text(group, "externalURL", "")
    ev = event(
        title=title,
        body="\n\n".join(parts) or f"{'Resolved' if resolved else 'Firing'} ({source})",
        priority=priority,
        tags=tags(
            "resolved" if resolved else "firing", *(labels.get(k) for k in TAG_LABELS)
        ),  # fmt: skip
        click=alert.get("generatorURL") or external,
        collapse=collapse_key(prefix, fingerprint.lower()),
    )
    return ev, labels, ann, resolved


def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    group = obj(payload, "payload")
    alerts = lst(group.get("alerts"), "alerts")
    if "alerts" not in group:
        raise PayloadError("an Alertmanager webhook payload has an 'alerts' list", "alerts")
    external = get_text(group, "externalURL", "")
    events = []
    for i, alert in enumerate(alerts):
        ev, labels, ann, resolved = alert_event(alert, f"alerts[{i}]", group, "am-", "Alertmanager")
        acts = [action("Runbook", ann.get("runbook_url") or ann.get("runbook"))]
        acts.append(action("Dashboard", ann.get("dashboard_url") or ann.get("dashboard")))
        if not resolved and external:
            acts.append(action("Silence", _silence_url(external, labels)))
        kept = [a for a in acts if a is not None]
        if kept:
            ev["actions"] = kept[:3]
        events.append(ev)
    truncated = group.get("truncatedAlerts")
    if events and isinstance(truncated, int) and not isinstance(truncated, bool) and truncated > 0:
        last = events[-1]
        last["body"] = (last.get("body", "") + f"\n\n(+{truncated} alerts left out by "
                        "Alertmanager's max_alerts)")[:4096]  # fmt: skip
    if not events:
        return Result(ignored="the payload holds no alerts")
    return Result(events)


def sample() -> tuple[Any, dict[str, str]]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighCPU"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "notifyd",
        "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": {"alertname": "HighCPU", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "https://alertmanager.example.com",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighCPU", "instance": "web-1:9100", "job": "node",
                           "severity": "warning"},
                "annotations": {"summary": "CPU above 90 % for 10 minutes",
                                "description": "web-1 has been busy since 12:00."},
                "startsAt": "2026-01-01T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://prometheus.example.com/graph?g0.expr=cpu",
                "fingerprint": "3a1f6b2c9d8e7f60",
            }
        ],
    }, {}  # fmt: skip


TEMPLATE = Template("alertmanager", render, sample)
