"""``notifyd hooks``: inbound webhooks, the URLs that monitoring, CI and chat tools post
their own JSON to (Alertmanager, Grafana, GitHub, Gitea, GitLab, Slack-style senders,
Apprise API clients, or anything with a ``json`` template).

HTTP lives in :mod:`notifyd.client`; the API is ``/v1/hooks`` (docs/integrations.md).
A hook's secret is part of its URL and is shown once, by ``hooks add``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from notifyd.cli import format as clifmt
from notifyd.cli.options import (
    CONTEXT,
    checked,
    client_options,
    complete_priority,
    output_options,
    print_json,
    print_table,
    report,
    use_color,
)

#: the built-in templates (the daemon checks; listed here for --help and completion)
TEMPLATES = ("alertmanager", "grafana", "github", "gitea", "gitlab", "slack", "apprise", "json")
#: the event fields a ``json`` template may set, each from a Jinja2 expression
FIELDS = ("title", "body", "priority", "tags", "click", "category", "topic", "collapse_key")
#: a payload file bigger than this is refused before it is sent (the daemon limits too)
MAX_PAYLOAD = 1024 * 1024


@click.group(context_settings=CONTEXT)
def hooks() -> None:
    """Manage inbound webhooks: URLs other tools post their own JSON to.

    Each hook turns what a sender posts into events on one topic, with a built-in
    template (alertmanager, grafana, github, gitea, gitlab, slack, apprise) or your
    own (json: each field a Jinja2 expression over the payload). Events are
    published as the hook's owner. Needs the account scope, a web session or the
    socket.

    \b
    Examples:
      notifyd hooks add prometheus --topic alerts --template alertmanager
      notifyd hooks add repo --topic ci/github --template github --tag ci
      notifyd hooks add nas --topic nas --template json \\
          --field title='{{ payload.host }}: {{ payload.status }}' --field body='{{ payload.msg }}'
      notifyd hooks list
      notifyd hooks test nas --payload sample.json
      notifyd hooks remove prometheus
    """


def _parse_field(value: str) -> tuple[str, str]:
    name, sep, expr = value.partition("=")
    name = name.strip()
    if not sep or not name or not expr.strip():
        raise ValueError(
            f"{value!r} is not a field: write NAME=EXPRESSION, e.g. 'title={{{{ payload.name }}}}'"
        )
    if name not in FIELDS:
        raise ValueError(f"unknown field {name!r}: choose from {', '.join(FIELDS)}")
    return name, expr


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{value!r} is not a header: write NAME=VALUE, e.g. X-GitHub-Event=push")
    return name, text.strip()


def _complete_template(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [t for t in TEMPLATES if t.startswith(incomplete)]


@hooks.command("add")
@click.argument("name")
@click.option("--topic", required=True, help="Topic the hook's events are published to.")
@click.option(
    "--template",
    required=True,
    metavar="NAME",
    shell_complete=_complete_template,
    help="How payloads become events: " + ", ".join(TEMPLATES) + ".",
)
@click.option(
    "--priority",
    "-p",
    callback=checked(clifmt.check_priority),
    shell_complete=complete_priority,
    help="Default priority of its events (1–5 or a name; templates may raise it).",
)
@click.option("--category", help="Category of its events (a slug).")
@click.option("--tag", "tags", multiple=True, help="Tag added to every event; repeatable.")
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME=EXPR",
    callback=checked(_parse_field),
    help="json template: an event field from a Jinja2 template over the payload; "
    "NAME is one of " + ", ".join(FIELDS) + ". Repeatable.",
)
@client_options
@output_options
def hooks_add(
    client: Any, as_json: bool, name: str, fields: tuple[tuple[str, str], ...], **opts: Any
) -> None:
    """Create webhook NAME and print its URL and secret, shown only this once.

    Give the URL to the sender (Alertmanager's webhook_configs url, a GitHub
    repository's webhook "Payload URL", a Slack webhook field…). GitHub, Gitea and
    GitLab may instead use the bare URL without the secret plus the secret as
    their webhook secret / token. With --json, prints the daemon's answer.

    \b
    Examples:
      notifyd hooks add prometheus --topic alerts --template alertmanager
      notifyd hooks add grafana --topic alerts/grafana --template grafana --priority high
      notifyd hooks add repo --topic ci --template github --category ci --tag github
      notifyd hooks add truenas --topic nas --template slack
      notifyd hooks add backup --topic backups --template json \\
          --field title='Backup {{ payload.job }}' \\
          --field body='{{ payload.status }} in {{ payload.seconds }} s' \\
          --field priority='{{ "high" if payload.status == "failed" else "low" }}'
    """
    if fields and opts["template"] != "json":
        raise click.UsageError("--field works with --template json only")
    body: dict[str, Any] = {"name": name, "topic": opts["topic"], "template": opts["template"]}
    if opts["priority"]:
        body["priority"] = opts["priority"]
    if opts["category"]:
        body["category"] = opts["category"]
    tags = clifmt.split_csv(opts["tags"])
    if tags:
        body["tags"] = tags
    if fields:
        body["fields"] = dict(fields)
    created = client.create_hook(body)
    if as_json:
        print_json(created)
        return
    click.echo(f"created webhook {created.get('name', name)!r} ({created.get('template')}) "
               f"publishing to {created.get('topic')}")  # fmt: skip
    click.echo(f"URL:    {created.get('url')}")
    click.echo(f"secret: {created.get('secret')}")
    click.echo(
        "store them now: the secret (and the URL with it) will not be shown again; "
        "`notifyd hooks remove` and add it again if it is lost",
        err=True,
    )


@hooks.command("list")
@click.option("--all", "all_", is_flag=True, help="Every user's webhooks (admins).")
@client_options
@output_options
def hooks_list(client: Any, as_json: bool, all_: bool) -> None:
    """List webhooks: name, template, topic, owner, last use and URL (without its
    secret).

    \b
    Examples:
      notifyd hooks list
      notifyd hooks list --all --json
    """
    found = client.hooks(all_users=all_)
    if as_json:
        print_json({"hooks": found})
        return
    print_table(clifmt.hooks_table(found), "no webhooks")


@hooks.command("remove")
@click.argument("hook", metavar="NAME|ID")
@click.option("--all", "all_", is_flag=True, help="Look NAME up among every user's (admins).")
@client_options
@output_options
def hooks_remove(client: Any, as_json: bool, hook: str, all_: bool) -> None:
    """Remove a webhook: its URL stops working at once.

    \b
    Examples:
      notifyd hooks remove prometheus
      notifyd hooks remove 3f9c2a…      # by id (see `notifyd hooks list --json`)
    """
    found = client.find_hook(hook, all_users=all_)
    client.remove_hook(str(found["id"]))
    report(
        as_json,
        {"id": found["id"], "name": found.get("name"), "removed": True},
        f"removed webhook {found.get('name')!r}",
    )


@hooks.command("test")
@click.argument("hook", metavar="NAME|ID")
@click.option(
    "--payload",
    metavar="FILE|-",
    type=click.File("rb"),
    help="JSON payload to render (- for stdin).  [default: the template's own sample]",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    callback=checked(_parse_header),
    help="A request header the template reads, e.g. X-GitHub-Event=push; repeatable.",
)
@click.option("--all", "all_", is_flag=True, help="Look NAME up among every user's (admins).")
@client_options
@output_options
def hooks_test(
    client: Any,
    as_json: bool,
    hook: str,
    payload: Any,
    headers: tuple[tuple[str, str], ...],
    all_: bool,
) -> None:
    """Render a payload with the hook's template and print the events it would
    publish; nothing is published.

    \b
    Examples:
      notifyd hooks test prometheus
      notifyd hooks test repo --payload push.json --header X-GitHub-Event=push
      curl -s https://example.com/status.json | notifyd hooks test nas --payload -
      notifyd hooks test nas --payload sample.json --json | jq '.events[0].title'
    """
    body = None
    if payload is not None:
        raw = payload.read(MAX_PAYLOAD + 1)
        if len(raw) > MAX_PAYLOAD:
            raise click.BadParameter("larger than 1 MiB", param_hint="--payload")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    found = client.find_hook(hook, all_users=all_)
    events = client.test_hook(str(found["id"]), body, dict(headers) or None)
    if as_json:
        print_json({"events": events})
        return
    if not events:
        click.echo("no events: the template publishes nothing for this payload", err=True)
        return
    color = use_color()
    for n, event in enumerate(events):
        if n:
            click.echo("")
        for i, line in enumerate(clifmt.rendered_event_lines(event)):
            click.echo(click.style(line, bold=True) if color and i == 0 else line)
    click.echo(f"{clifmt.plural(len(events), 'event')} rendered; nothing was published", err=True)
