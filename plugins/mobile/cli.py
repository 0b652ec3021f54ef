"""``notifyd devices``: the phones registered for push (channels of kinds fcm/apns)."""

from __future__ import annotations

from typing import Any

import click

from notifyd.cli.options import (
    CONTEXT,
    client_options,
    output_options,
    print_json,
    print_table,
    report,
)

KINDS = ("fcm", "apns")


@click.group(context_settings=CONTEXT)
def devices() -> None:
    """Phones and apps registered for native push (FCM, APNs).

    Apps register themselves with POST /v1/devices; here you see and remove them.
    Tokens are shown shortened: the full token is never given out again.

    \b
    Examples:
      notifyd devices list
      notifyd devices list --all
      notifyd devices remove 12
    """


def _others(client: Any, user: str | None, all_: bool) -> list[dict[str, Any]]:
    """Devices of another user (or everyone's), through /v1/channels (admins)."""
    found = client.request(
        "GET", "/v1/channels", params={"user": user, "all": "true" if all_ else None}
    )
    return [
        {"id": c["id"], "platform": c["kind"], "name": c["name"], "user": c["user"],
         **(c.get("config") or {}), "created_at": c["created_at"],
         "last_success_at": c["last_success_at"], "last_error": c["last_error"]}
        for c in found["channels"] if c["kind"] in KINDS
    ]  # fmt: skip


@devices.command("list")
@click.option("--user", help="Another user's devices (admins).")
@click.option("--all", "all_", is_flag=True, help="Every user's devices (admins).")
@client_options
@output_options
def devices_list(client: Any, as_json: bool, user: str | None, all_: bool) -> None:
    """List registered devices: id, platform, app, label, shortened token.

    \b
    Examples:
      notifyd devices list
      notifyd devices list --user alice --json
    """
    if user or all_:
        rows = _others(client, user, all_)
    else:
        rows = client.request("GET", "/v1/devices")["devices"]
    if as_json:
        print_json({"devices": rows})
        return
    table = [
        [str(d["id"]), d.get("user", ""), d["platform"], d.get("app", ""), d.get("label", ""),
         d.get("token", ""), d["last_success_at"] or "-", d["last_error"] or ""]
        for d in rows
    ]  # fmt: skip
    head = ["ID", "USER", "PLATFORM", "APP", "LABEL", "TOKEN", "LAST SENT", "LAST ERROR"]
    if not (user or all_):
        head.pop(1)
        table = [r[:1] + r[2:] for r in table]
    print_table((head, table), "no devices")


@devices.command("remove")
@click.argument("device_id", metavar="ID", type=int)
@click.option("--user", help="A device of another user (admins).")
@client_options
@output_options
def devices_remove(client: Any, as_json: bool, device_id: int, user: str | None) -> None:
    """Remove device ID (from `notifyd devices list`); it gets no more pushes.

    \b
    Examples:
      notifyd devices remove 12
      notifyd devices remove 40 --user alice
    """
    if user:
        match = [d for d in _others(client, user, False) if d["id"] == device_id]
        if not match:
            raise click.ClickException(f"{user} has no device {device_id}")
        client.request("DELETE", f"/v1/channels/{match[0]['name']}", params={"user": user})
    else:
        client.request("DELETE", f"/v1/devices/{device_id}")
    report(as_json, {"id": device_id, "removed": True}, f"removed device {device_id}")
