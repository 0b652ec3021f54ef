"""The built-in webhook templates (a sender's own JSON → notifyd events) and the rules
of a hook: which templates exist, what a hook's name and options may be. Used by
:mod:`notifyd.core.hooks` and by the export/import format (:mod:`notifyd.core.transfer`),
so this package imports nothing of the services or the storage."""

from __future__ import annotations

import unicodedata
from typing import Any

from ..errors import ValidationFailed
from ..models import MAX_TAGS, SLUG_RE, parse_priority
from . import alertmanager, apprise, custom, forges, grafana, slack
from .base import PayloadError, Template

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (alertmanager.TEMPLATE, grafana.TEMPLATE, forges.GITHUB, forges.GITEA,
              forges.GITLAB, slack.TEMPLATE, apprise.TEMPLATE, custom.TEMPLATE)
}  # fmt: skip
TEMPLATE_NAMES = (
    "alertmanager",
    "grafana",
    "github",
    "gitea",
    "gitlab",
    "slack",
    "apprise",
    "json",
)
NAME_MAX = 64


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name: give the hook a name (1–64 characters)", field="name")
    name = str(name).strip()
    if len(name) > NAME_MAX:
        raise ValidationFailed(f"name: at most {NAME_MAX} characters", field="name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in name):
        raise ValidationFailed("name: printable characters only", field="name")
    return str(name)


def check_options(
    template: Any,
    priority: Any = None,
    category: Any = None,
    tags: Any = None,
    fields: Any = None,
) -> dict[str, Any]:
    """The hook's options (``priority``, ``category``, ``tags``, ``fields``), checked.
    Raises ValidationFailed naming the field."""
    if template not in TEMPLATES:
        raise ValidationFailed(f"template: one of {', '.join(TEMPLATE_NAMES)}", field="template")
    options: dict[str, Any] = {"priority": None, "category": None, "tags": [], "fields": None}
    if priority is not None:
        try:
            options["priority"] = parse_priority(priority)
        except ValueError as exc:
            raise ValidationFailed(f"priority: {exc}", field="priority") from None
    if category is not None:
        if not isinstance(category, str) or not SLUG_RE.fullmatch(category):
            raise ValidationFailed(
                "category: a slug (a–z, 0–9, '-' and '_', up to 32 characters)", field="category"
            )
        options["category"] = category
    if tags is not None:
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            raise ValidationFailed(f"tags: a list of at most {MAX_TAGS} slugs", field="tags")
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not SLUG_RE.fullmatch(tag):
                raise ValidationFailed(
                    f"tags[{i}]: not a slug (a–z, 0–9, '-', '_', ≤ 32 chars)", field=f"tags[{i}]"
                )
        options["tags"] = list(dict.fromkeys(tags))
    if template == "json":
        try:
            options["fields"] = custom.check_fields(fields)
        except PayloadError as exc:
            raise invalid(exc) from None
    elif fields:
        raise ValidationFailed(
            "fields: only the json template takes field templates", field="fields"
        )
    return options


def invalid(exc: PayloadError) -> ValidationFailed:
    field = exc.field or "payload"
    return ValidationFailed(f"{field}: {exc.message}", field=field)
