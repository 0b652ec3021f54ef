"""Admin commands of ``notifyd``: users, tokens and ACL grants."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click

from notifyd.cli import format as clifmt
from notifyd.cli.options import (
    CONTEXT,
    checked,
    client_options,
    output_options,
    print_json,
    print_table,
    read_password,
    report,
)
from notifyd.core.acl import SCOPES


@click.group(context_settings=CONTEXT)
def users() -> None:
    """Manage users (admin only).

    \b
    Examples:
      notifyd users add alice
      printf '%s' "$PW" | notifyd users add bob --admin --password-stdin
      notifyd users list
    """


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Give the user the admin role.")
@click.option("--password-stdin", is_flag=True, help="Read a web password from stdin.")
@client_options
@output_options
def users_add(client: Any, as_json: bool, name: str, admin: bool, password_stdin: bool) -> None:
    """Create user NAME, optionally with a password for the web page.

    Without --password-stdin the user has no password and uses tokens only. On a
    terminal, --password-stdin prompts without echoing.

    \b
    Examples:
      notifyd users add alice
      notifyd users add ops --admin --password-stdin
      printf '%s' "$PW" | notifyd users add bob --password-stdin
    """
    password = read_password() if password_stdin else None
    user = client.add_user(name, "admin" if admin else "user", password)
    report(as_json, user, f"added user {user.get('name', name)} ({user.get('role', 'user')})")


@users.command("list")
@client_options
@output_options
def users_list(client: Any, as_json: bool) -> None:
    """List users.

    \b
    Examples:
      notifyd users list
      notifyd users list --json | jq -r '.users[].name'
    """
    found = client.users()
    if as_json:
        print_json({"users": found})
    else:
        print_table(clifmt.users_table(found), "no users")


@users.command("remove")
@click.argument("name")
@client_options
@output_options
def users_remove(client: Any, as_json: bool, name: str) -> None:
    """Delete user NAME and everything that is theirs, at once.

    Their tokens, sessions, grants, channels (push subscriptions included),
    pending deliveries, preferences and read state go; their tokens stop working
    at once. The socket_user and the last admin cannot be removed.

    \b
    Examples:
      notifyd users remove alice
    """
    client.remove_user(name)
    report(as_json, {"user": name, "removed": True}, f"removed user {name}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (default).")
@click.option(
    "--current",
    is_flag=True,
    help="Send the current password too: needed to change your own with a token "
    "(not over the socket). From stdin: the current one on the first line, the new after.",
)
@client_options
@output_options
def users_passwd(
    client: Any, as_json: bool, name: str, password_stdin: bool, current: bool
) -> None:
    """Set the web password of user NAME, read from stdin.

    On a terminal it prompts twice without echoing. Over the socket, and for an
    admin setting someone else's password, the current one is not asked; changing
    your own with a token needs --current. The user's web sessions end (but the one
    making the change).

    \b
    Examples:
      notifyd users passwd alice
      printf '%s' "$PW" | notifyd users passwd alice --password-stdin
      printf '%s\\n%s' "$OLD" "$NEW" | notifyd users passwd me --current --url URL --token T
    """
    if not current:
        client.set_password(name, read_password())
    else:
        old, new = _current_and_new()
        client.request(
            "PUT",
            f"/v1/users/{quote(name, safe='')}/password",
            json_body={"password": new, "current_password": old},
        )
    report(as_json, {"user": name, "password_set": True}, f"password set for {name}")


def _current_and_new() -> tuple[str, str]:
    if sys.stdin.isatty():
        old = click.prompt("Current password", hide_input=True)
        return old, click.prompt("New password", hide_input=True, confirmation_prompt=True)
    old, sep, new = sys.stdin.read().partition("\n")
    new = new.removesuffix("\n").removesuffix("\r")
    if not sep or not old or not new:
        raise click.ClickException(
            "with --current, stdin holds the current password on the first line and the "
            "new one after it"
        )
    return old.removesuffix("\r"), new


def _parse_scopes(values: Any) -> list[str]:
    # clifmt.SCOPES predates 'account'; the core's list is the one the daemon checks
    scopes = [s.lower() for s in clifmt.split_csv(values)]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    return scopes


# --- tokens -------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def tokens() -> None:
    """Manage API tokens (admin only).

    \b
    Examples:
      notifyd tokens create --user alice --scope publish --topics 'alerts/*'
      notifyd tokens list --user alice
      notifyd tokens revoke 7
    """


@tokens.command("create")
@click.option("--user", required=True, help="Owner of the token.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPES",
    callback=checked(_parse_scopes, whole=True),
    help="Comma-separated: publish, subscribe, account (change the account: password, "
    "tokens, channels, preferences), admin.  [default: publish,subscribe; +admin for admins]",
)
@click.option("--topics", metavar="PATTERN", help="Limit the token to topics matching PATTERN.")
@click.option("--label", help="A note on what the token is for.")
@client_options
@output_options
def tokens_create(client: Any, as_json: bool, user: str, scopes: Any, **opts: Any) -> None:
    """Create a token and print it alone on stdout. It is shown only this once.

    \b
    A token with scope account may itself create tokens, but none wider than
    itself (scopes and topics); admin on an admin user implies every scope.

    \b
    Examples:
      notifyd tokens create --user alice
      notifyd tokens create --user alice --scope publish,subscribe,account --label laptop
      notifyd tokens create --user ci --scope publish --topics 'deploys/*' --label CI
      export NOTIFYD_TOKEN=$(notifyd tokens create --user phone --scope subscribe)
    """
    created = client.create_token(user, list(scopes or ()) or None, opts["topics"], opts["label"])
    report(as_json, created, str(created.get("token")))
    if not as_json and sys.stdout.isatty():
        click.echo("store it now: notifyd keeps only a hash and cannot show it again", err=True)


@tokens.command("list")
@click.option("--user", help="Only tokens of this user.")
@client_options
@output_options
def tokens_list(client: Any, as_json: bool, user: str | None) -> None:
    """List tokens; never their secrets, the prefix identifies each.

    \b
    Examples:
      notifyd tokens list
      notifyd tokens list --user alice --json
    """
    found = client.tokens(user)
    if as_json:
        print_json({"tokens": found})
    else:
        print_table(clifmt.tokens_table(found), "no tokens")


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@client_options
@output_options
def tokens_revoke(client: Any, as_json: bool, token_id: int) -> None:
    """Revoke token ID (see `notifyd tokens list`); it stops working at once.

    \b
    Examples:
      notifyd tokens revoke 7
    """
    client.revoke_token(token_id)
    report(as_json, {"id": token_id, "revoked": True}, f"revoked token {token_id}")


# --- ACL ----------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def acl() -> None:
    """Manage who may read and write which topics (admin only).

    Patterns are topics where * matches any run of characters, / included. Admins
    may read and write every topic without entries.

    \b
    Examples:
      notifyd acl grant alice 'alerts/*' read
      notifyd acl list --user alice
      notifyd acl revoke alice 'alerts/*'
    """


@acl.command("grant")
@click.argument("user")
@click.argument("pattern")
@click.argument("permission", type=click.Choice(["read", "write", "rw"]))
@client_options
@output_options
def acl_grant(client: Any, as_json: bool, user: str, pattern: str, permission: str) -> None:
    """Let USER read, write or both (rw) on topics matching PATTERN.

    \b
    Examples:
      notifyd acl grant alice 'alerts/*' read
      notifyd acl grant ci 'deploys/*' write
      notifyd acl grant bob backups rw
    """
    entry = client.grant(user, pattern, permission)
    may = {"rw": "read and write", "none": "no longer access"}.get(clifmt.permission_of(entry))
    report(as_json, entry, f"{user} may now {may or clifmt.permission_of(entry)} {pattern}")


@acl.command("list")
@click.option("--user", help="Only entries of this user.")
@client_options
@output_options
def acl_list(client: Any, as_json: bool, user: str | None) -> None:
    """List ACL entries.

    \b
    Examples:
      notifyd acl list
      notifyd acl list --user alice
    """
    found = client.acl(user)
    if as_json:
        print_json({"acl": found})
    else:
        print_table(clifmt.acl_table(found), "no ACL entries (admins need none)")


@acl.command("revoke")
@click.argument("user")
@click.argument("pattern")
@client_options
@output_options
def acl_revoke(client: Any, as_json: bool, user: str, pattern: str) -> None:
    """Remove USER's entry for PATTERN (exactly as `acl list` shows it).

    \b
    Examples:
      notifyd acl revoke alice 'alerts/*'
    """
    client.revoke(user, pattern)
    done = {"user": user, "pattern": pattern, "revoked": True}
    report(as_json, done, f"revoked {user}'s access to {pattern}")


# --- TUI ----------------------------------------------------------------------
