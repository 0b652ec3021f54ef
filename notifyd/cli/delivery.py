"""Delivery commands of ``notifyd``: channels, deliveries, stats and plugins."""

from __future__ import annotations

import sys
from typing import Any

import click

from notifyd.cli import format as clifmt
from notifyd.cli.options import (
    CONTEXT,
    client_options,
    output_options,
    print_json,
    print_table,
    report,
)


@click.group(context_settings=CONTEXT)
def channels() -> None:
    """Manage where notifications are delivered: email and 100+ services (Apprise
    URLs) and Web Push subscriptions of browsers and phones.

    \b
    Examples:
      notifyd channels add email 'mailto://me:app-password@smtp.example.org?to=me@example.org'
      notifyd channels add phone 'ntfys://ntfy.sh/my-secret-topic'
      notifyd channels list
      notifyd channels test email
      notifyd channels remove phone
    """


@channels.command("add")
@click.argument("name")
@click.argument("apprise_url", metavar="URL")
@click.option("--user", help="Add it for another user (admins).")
@client_options
@output_options
def channels_add(client: Any, as_json: bool, name: str, apprise_url: str, user: str | None) -> None:
    """Add an Apprise URL as channel NAME; it is checked before it is stored.

    Secrets in the URL are never shown again: listings mask them.

    \b
    Examples:
      notifyd channels add email 'mailtos://user:pass@smtp.example.org?to=ops@example.org'
      notifyd channels add chat 'tgram://bottoken/chatid' --user alice
    """
    body: dict[str, Any] = {"name": name, "url": apprise_url}
    if user:
        body["user"] = user
    created = client.request("POST", "/v1/channels", json_body=body)
    report(as_json, created, f"added channel {name!r} ({created['kind']})")


@channels.command("list")
@click.option("--user", help="Another user's channels (admins).")
@click.option("--all", "all_", is_flag=True, help="Every user's channels (admins).")
@client_options
@output_options
def channels_list(client: Any, as_json: bool, user: str | None, all_: bool) -> None:
    """List channels with their state and last error.

    \b
    Examples:
      notifyd channels list
      notifyd channels list --all --json
    """
    found = client.request(
        "GET", "/v1/channels", params={"user": user, "all": "true" if all_ else None}
    )
    if as_json:
        print_json(found)
        return
    rows = [
        [c["name"], c["user"], c["kind"], _target(c), clifmt.yes_no(c["enabled"] and c["available"]),
         c["last_success_at"] or "-", c["last_error"] or ""]
        for c in found["channels"]
    ]  # fmt: skip
    print_table(
        (["NAME", "USER", "KIND", "TARGET", "ACTIVE", "LAST SENT", "LAST ERROR"], rows),
        "no channels",
    )


def _target(channel: dict) -> str:
    cfg = channel.get("config") or {}
    return str(cfg.get("url") or cfg.get("endpoint_origin") or cfg.get("service") or "")


@channels.command("test")
@click.argument("name")
@click.option("--user", help="Another user's channel (admins).")
@client_options
@output_options
def channels_test(client: Any, as_json: bool, name: str, user: str | None) -> None:
    """Send a test notification to channel NAME now; exit 1 if it fails.

    \b
    Examples:
      notifyd channels test email
    """
    result = client.request("POST", f"/v1/channels/{name}/test", params={"user": user})
    if as_json:
        print_json(result)
    elif result["ok"]:
        click.echo(f"test notification sent to {name!r}")
    else:
        click.echo(f"channel {name!r} failed: {result['error']}", err=True)
    if not result["ok"]:
        sys.exit(1)


@channels.command("remove")
@click.argument("name")
@click.option("--user", help="Another user's channel (admins).")
@client_options
@output_options
def channels_remove(client: Any, as_json: bool, name: str, user: str | None) -> None:
    """Remove channel NAME; its pending deliveries are dropped.

    \b
    Examples:
      notifyd channels remove phone
    """
    client.request("DELETE", f"/v1/channels/{name}", params={"user": user})
    report(as_json, {"name": name, "removed": True}, f"removed channel {name!r}")


@click.group(context_settings=CONTEXT)
def deliveries() -> None:
    """Inspect and retry deliveries (the outbox).

    \b
    Examples:
      notifyd deliveries list --state dead
      notifyd deliveries retry 42
    """


@deliveries.command("list")
@click.option("--state", type=click.Choice(["pending", "sent", "dead"]), help="Only this state.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@client_options
@output_options
def deliveries_list(client: Any, as_json: bool, state: str | None, limit: int) -> None:
    """List deliveries, newest first, with attempts and the last error.

    \b
    Examples:
      notifyd deliveries list
      notifyd deliveries list --state pending --json
    """
    found = client.request("GET", "/v1/deliveries", params={"state": state, "limit": limit})
    if as_json:
        print_json(found)
        return
    rows = [
        [d["id"], d["event_id"], d["user"], d["channel"] or "(removed)", d["state"], d["attempts"],
         d["next_attempt_at"] if d["state"] == "pending" else (d["sent_at"] or ""), d["last_error"] or ""]
        for d in found["deliveries"]
    ]  # fmt: skip
    headers = ["ID", "EVENT", "USER", "CHANNEL", "STATE", "TRIES", "NEXT/SENT", "LAST ERROR"]
    print_table((headers, rows), "no deliveries")


@deliveries.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@client_options
@output_options
def deliveries_retry(client: Any, as_json: bool, ids: tuple[int, ...]) -> None:
    """Send deliveries again now (dead ones included).

    \b
    Examples:
      notifyd deliveries retry 42 43
    """
    done = [client.request("POST", f"/v1/deliveries/{i}/retry") for i in ids]
    report(
        as_json,
        {"retried": [d["id"] for d in done]},
        f"queued {clifmt.plural(len(done), 'delivery')} again",
    )


@click.command(context_settings=CONTEXT)
@client_options
@output_options
def stats(client: Any, as_json: bool) -> None:
    """Deliveries by channel kind and state, and how much of it was read and clicked.

    \b
    Examples:
      notifyd stats
      notifyd stats --json
    """
    found = client.request("GET", "/v1/stats")
    if as_json:
        print_json(found)
        return
    for title, table in (("CHANNEL", found["by_channel"]), ("CATEGORY", found["by_category"])):
        rows = [
            [name, s.get("pending", 0), s.get("sent", 0), s.get("dead", 0),
             s.get("read", 0), s.get("clicked", 0),
             "-" if s.get("read_rate") is None else f"{s['read_rate']:.0%}"]
            for name, s in sorted(table.items())
        ]  # fmt: skip
        print_table(
            ([title, "PENDING", "SENT", "DEAD", "READ", "CLICKED", "READ RATE"], rows),
            "no deliveries yet",
        )


@click.command(context_settings=CONTEXT)
@output_options
def plugins(as_json: bool) -> None:
    """List the plugins this installation loads (no daemon needed).

    \b
    Examples:
      notifyd plugins
      notifyd plugins --json
    """
    import os
    from dataclasses import asdict

    from notifyd.core.plugins import Plugins

    manager = Plugins(modules=[m for m in os.environ.get("NOTIFYD_PLUGINS", "").split(",") if m])
    infos = manager.info()
    kinds = {kind: cls.__module__ for kind, cls in manager.channel_kinds().items()}
    if as_json:
        print_json({"plugins": [asdict(p) for p in infos], "channel_kinds": kinds})
        return
    rows: list[list[object]] = [
        [p.name, p.source, ", ".join(p.hooks), p.error or ""] for p in infos
    ]
    print_table((["PLUGIN", "SOURCE", "HOOKS", "ERROR"], rows), "no plugins")
    click.echo("channel kinds: " + (", ".join(sorted(kinds)) or "none"))


@click.group(context_settings=CONTEXT)
def prefs() -> None:
    """Show and change what arrives where: rules, mutes, quiet hours, digests, rate limit.

    \b
    Examples:
      notifyd prefs show
      notifyd prefs set --quiet-hours 22:00-07:00 --timezone Europe/Berlin
      notifyd prefs set --mute 'noisy/*' --digest email=600 --rate-limit 20
      notifyd prefs set --file prefs.json
    """


@prefs.command("show")
@click.option("--user", help="Another user's preferences (admins).")
@client_options
@output_options
def prefs_show(client: Any, as_json: bool, user: str | None) -> None:
    """Show preferences.

    \b
    Examples:
      notifyd prefs show
      notifyd prefs show --user alice --json
    """
    doc = client.request("GET", "/v1/preferences", params={"user": user})
    if as_json:
        print_json(doc)
        return
    quiet = doc["quiet_hours"]
    click.echo(f"time zone:    {doc['timezone']}")
    click.echo(
        f"quiet hours:  {quiet['start'] + '–' + quiet['end'] if quiet else 'off'} (urgent passes)"
    )
    digests = ", ".join(f"{k} every {v} s" for k, v in doc["digests"].items()) or "off"
    click.echo(f"digests:      {digests}")
    limit = doc["rate_limit_per_minute"]
    click.echo(f"rate limit:   {f'{limit} per channel per minute' if limit else 'off'}")
    rows = [
        [i + 1, r["topic"], r["category"] or "*", clifmt.PRIORITY_LABELS.get(r["min_priority"], r["min_priority"]),
         "MUTE" if r["mute"] else ("all" if r["channels"] is None else (", ".join(r["channels"]) or "inbox only"))]
        for i, r in enumerate(doc["rules"])
    ]  # fmt: skip
    print_table(
        (["#", "TOPIC", "CATEGORY", "MIN PRIORITY", "CHANNELS"], rows),
        "no rules: everything goes everywhere",
    )


def _seconds(value: str) -> tuple[str, int]:
    name, sep, secs = value.partition("=")
    if not sep or not secs.isdigit():
        raise click.BadParameter("use NAME=SECONDS, e.g. email=600")
    return name, int(secs)


@prefs.command("set")
@click.option("--user", help="Another user's preferences (admins).")
@click.option(
    "--file",
    "file_",
    type=click.File("r"),
    help="Replace everything with this JSON document ('-' = stdin).",
)
@click.option(
    "--quiet-hours", metavar="HH:MM-HH:MM|off", help="Hold all but urgent between these times."
)
@click.option("--timezone", metavar="ZONE", help="Time zone for quiet hours, e.g. Europe/Berlin.")
@click.option(
    "--digest",
    "digests",
    multiple=True,
    metavar="CHANNEL=SECONDS",
    help="Bundle a channel's notifications.",
)
@click.option("--rate-limit", metavar="N|off", help="Most notifications per channel per minute.")
@click.option(
    "--mute", "mutes", multiple=True, metavar="PATTERN", help="Mute topics matching PATTERN."
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="JSON",
    help='Append a rule, e.g. \'{"topic": "ci/*", "channels": ["phone"]}\'.',
)
@click.option("--clear-rules", is_flag=True, help="Remove all rules (and mutes) first.")
@client_options
@output_options
def prefs_set(client: Any, as_json: bool, user: str | None, file_: Any, quiet_hours: str | None,
              timezone: str | None, digests: tuple[str, ...], rate_limit: str | None,
              mutes: tuple[str, ...], rules: tuple[str, ...], clear_rules: bool) -> None:  # fmt: skip
    """Change preferences; options not given keep their current value.

    \b
    Examples:
      notifyd prefs set --quiet-hours 22:00-07:00 --timezone Europe/Berlin
      notifyd prefs set --quiet-hours off
      notifyd prefs set --mute 'noisy/*' --rule '{"topic": "ci/*", "min_priority": "high", "channels": ["phone"]}'
      notifyd prefs set --digest email=600 --rate-limit 20
      notifyd prefs show --json > p.json && $EDITOR p.json && notifyd prefs set --file p.json
    """
    import json

    if file_ is not None:
        try:
            doc = json.load(file_)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from None
    else:
        doc = client.request("GET", "/v1/preferences", params={"user": user})
    if quiet_hours is not None:
        if quiet_hours == "off":
            doc["quiet_hours"] = None
        else:
            start, sep, end = quiet_hours.partition("-")
            if not sep:
                raise click.BadParameter("use HH:MM-HH:MM or off", param_hint="--quiet-hours")
            doc["quiet_hours"] = {"start": start, "end": end}
    if timezone is not None:
        doc["timezone"] = timezone
    for value in digests:
        name, secs = _seconds(value)
        doc.setdefault("digests", {})[name] = secs
    if rate_limit is not None:
        doc["rate_limit_per_minute"] = (
            None if rate_limit == "off" else int(rate_limit) if rate_limit.isdigit() else rate_limit
        )
    if clear_rules:
        doc["rules"] = []
    for pattern in mutes:
        doc.setdefault("rules", []).insert(0, {"topic": pattern, "mute": True})
    for raw in rules:
        try:
            doc.setdefault("rules", []).append(json.loads(raw))
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--rule") from None
    saved = client.request("PUT", "/v1/preferences", params={"user": user}, json_body=doc)
    report(as_json, saved, "preferences saved")
