"""Users, tokens and ACL grants — for admins.

Three tabs over ``/v1/users``, ``/v1/tokens`` and ``/v1/acl``. A new token's secret
is shown once, in a dialog, and forgotten when it closes. A connection that is not
an admin's gets ``403`` from these endpoints; the screen then says so instead of
showing empty tables.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from notifyd.cli.format import acl_table, permission_of, tokens_table, users_table
from notifyd.client import Client, ClientError
from notifyd.core.acl import SCOPES

from ..widgets.confirm import ConfirmDialog
from ..widgets.form_dialog import FormDialog, FormField
from ..widgets.token_secret import TokenSecretDialog
from .admin_base import AdminScreen, ScreenCommands, fill_table, plain, selected_key

TABS = {"users": "users-pane", "tokens": "tokens-pane", "acl": "acl-pane"}
HEADERS = {"ID": "ID", "TZ": "Time zone"}
MAY = {"read": "read", "write": "publish to", "rw": "read and publish to"}


class UsersCommands(ScreenCommands):
    """Command palette entries of the users and tokens screen."""

    ENTRIES = (
        ("Users: add a user", "add_user", "With a role, and a password for the web page"),
        ("Users: remove the selected user", "remove_user", "With their tokens and grants"),
        ("Tokens: create a token", "create_token", "Its secret is shown once"),
        ("Tokens: revoke the selected token", "revoke_token", "Effective at once"),
        ("Access: grant a user a topic pattern", "grant", "read, write or rw"),
        ("Access: revoke the selected grant", "revoke_grant", "Effective at once"),
        ("Users: show users", "show_tab('users')", "The users tab"),
        ("Users: show tokens", "show_tab('tokens')", "The tokens tab"),
        ("Users: show access grants", "show_tab('acl')", "The ACL tab"),
        ("Users: refresh", "refresh", "Load users, tokens and grants again"),
    )


class UsersScreen(AdminScreen):
    COMMANDS = {UsersCommands}
    BINDINGS = [
        Binding("n", "new", "New"),
        Binding("d,delete", "delete", "Remove"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.grants: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="users-tabs"):
            with TabPane("Users", id="users-pane"):
                yield DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Tokens", id="tokens-pane"):
                yield DataTable(id="tokens-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Access", id="acl-pane"):
                yield DataTable(id="acl-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="users-notice", markup=False)
        yield Static("", id="users-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#users-notice").display = False
        self.query_one("#users-status").display = False

    # -- loading --------------------------------------------------------------------

    async def load(self) -> None:
        def fetch(c: Client) -> tuple[list, list, list]:
            return c.users(), c.tokens(), c.acl()

        try:
            users, tokens, grants = await self.api(fetch)
        except ClientError as exc:
            if exc.status == 403:
                await self.show_not_admin()
            else:
                self.notify(f"Loading users: {exc}", severity="error", timeout=8)
            return
        self.query_one("#users-notice").display = False
        self.query_one("#users-tabs").display = True
        self.users = {u["name"]: u for u in users}
        self.tokens = {str(t["id"]): t for t in tokens}
        self.grants = {str(g["id"]): g for g in grants}
        self._fill("#users-table", users_table(users), [u["name"] for u in users])
        self._fill("#tokens-table", tokens_table(tokens), list(self.tokens))
        self._fill("#acl-table", acl_table(grants), list(self.grants))

    async def show_not_admin(self) -> None:
        try:
            me = await self.api(lambda c: c.request("GET", "/v1/me"))
            who = f"{me.get('user')} (role {me.get('role')}, token scopes {', '.join(me.get('scopes') or []) or 'none'})"
        except ClientError:
            who = "a user who is not an admin"
        self.query_one("#users-tabs").display = False
        notice = self.query_one("#users-notice", Static)
        notice.update(
            "Users, tokens and access grants are for admins only.\n\n"
            f"This connection acts as {who}. Connect with an admin's token that has the "
            "admin scope, or through the daemon's Unix socket on its machine."
        )
        notice.display = True

    def _fill(
        self, selector: str, table_data: tuple[list[str], list[list[Any]]], keys: list[str]
    ) -> None:
        headers, rows = table_data
        fill_table(
            self.query_one(selector, DataTable),
            [HEADERS.get(h, h.capitalize()) for h in headers],
            [(key, [plain(v, 28) for v in row]) for key, row in zip(keys, rows, strict=True)],
        )

    # -- helpers --------------------------------------------------------------------

    @property
    def tab(self) -> str:
        active = self.query_one("#users-tabs", TabbedContent).active
        return next((name for name, pane in TABS.items() if pane == active), "users")

    def action_show_tab(self, name: str) -> None:
        self.query_one("#users-tabs", TabbedContent).active = TABS[name]
        self.query_one(f"#{name}-table", DataTable).focus()

    def _selected(self, name: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        key = selected_key(self.query_one(f"#{name}-table", DataTable))
        return rows.get(key) if key else None

    def set_status(self, text: str, kind: str = "") -> None:
        status = self.query_one("#users-status", Static)
        status.update(text)
        status.set_classes(kind)
        status.display = bool(text)

    def _user_options(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self.users]

    def _default_user(self) -> str | None:
        user = self._selected("users", self.users)
        if user is not None:
            return user["name"]
        return next(iter(self.users), None)

    def _confirm(self, question: str, then: Any, confirm: str = "Remove") -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(then(), group="users-change")

        self.app.push_screen(ConfirmDialog(question, confirm), answered)

    async def _change(self, call: Any, what: str, done: str) -> None:
        if await self.api_or_notify(lambda c: call(c) or True, what):
            self.set_status(done)
            self.reload()

    # -- contextual keys ------------------------------------------------------------

    def action_new(self) -> None:
        {
            "users": self.action_add_user,
            "tokens": self.action_create_token,
            "acl": self.action_grant,
        }[self.tab]()

    def action_delete(self) -> None:
        {
            "users": self.action_remove_user,
            "tokens": self.action_revoke_token,
            "acl": self.action_revoke_grant,
        }[self.tab]()

    # -- users ----------------------------------------------------------------------

    def action_add_user(self) -> None:
        self.action_show_tab("users")
        fields = [
            FormField("name", "Name", placeholder="e.g. alice"),
            FormField(
                "role",
                "Role",
                "select",
                value="user",
                options=[("user", "user"), ("admin", "admin")],
            ),
            FormField(
                "password",
                "Password",
                "password",
                placeholder="(optional)",
                hint="Only needed to sign in to the web page; 8 characters or more.",
            ),
        ]

        async def submit(v: dict[str, Any]) -> dict:
            return await self.api(lambda c: c.add_user(v["name"], v["role"], v["password"] or None))

        def added(user: dict | None) -> None:
            if user:
                self.set_status(
                    f"Added {user['role']} {user['name']}: n on the Tokens tab "
                    "creates a token for them."
                )
                self.reload()

        self.app.push_screen(FormDialog("Add a user", fields, submit), added)

    def action_remove_user(self) -> None:
        self.action_show_tab("users")
        user = self._selected("users", self.users)
        if user is None:
            self.notify("No user selected.", severity="warning")
            return
        name = user["name"]
        self._confirm(
            f"Remove the user {name}? Their tokens, grants, channels and read state go too.",
            lambda: self._change(
                lambda c: c.remove_user(name), f"Removing {name}", f"Removed user {name}."
            ),
        )

    # -- tokens ---------------------------------------------------------------------

    def action_create_token(self) -> None:
        self.action_show_tab("tokens")
        fields = [
            FormField(
                "user", "User", "select", value=self._default_user(), options=self._user_options()
            ),
            FormField(
                "scopes",
                "Scopes",
                "checks",
                value=["publish", "subscribe"],
                options=[(s, s) for s in SCOPES],
                hint="account: change password, tokens, channels, preferences. "
                "admin works only for admin users.",
            ),
            FormField("topics", "Topics", placeholder="(all the user may access) e.g. ci/*"),
            FormField("label", "Label", placeholder="(optional) e.g. backup script"),
        ]

        async def submit(v: dict[str, Any]) -> dict:
            return await self.api(
                lambda c: c.create_token(
                    v["user"] or "", v["scopes"] or None, v["topics"] or None, v["label"] or None
                )
            )

        def created(token: dict | None) -> None:
            if token:
                self.set_status(f"Created token {token['prefix']}… for {token['user']}.")
                self.app.push_screen(TokenSecretDialog(token["token"], token["user"]))
                self.reload()

        self.app.push_screen(FormDialog("Create a token", fields, submit, "Create"), created)

    def action_revoke_token(self) -> None:
        self.action_show_tab("tokens")
        token = self._selected("tokens", self.tokens)
        if token is None:
            self.notify("No token selected.", severity="warning")
            return
        tid, label = token["id"], f"{token['prefix']}… of {token['user']}"
        self._confirm(
            f"Revoke the token {label}? Clients using it are refused at once.",
            lambda: self._change(
                lambda c: c.revoke_token(tid), "Revoking the token", f"Revoked token {label}."
            ),
            confirm="Revoke",
        )

    # -- ACL --------------------------------------------------------------------------

    def action_grant(self) -> None:
        self.action_show_tab("acl")
        fields = [
            FormField(
                "user", "User", "select", value=self._default_user(), options=self._user_options()
            ),
            FormField("pattern", "Topics", placeholder="e.g. home/* (* matches anything)"),
            FormField(
                "permission",
                "May",
                "select",
                value="read",
                options=[("read", "read"), ("write (publish)", "write"), ("read and write", "rw")],
            ),
        ]

        async def submit(v: dict[str, Any]) -> dict:
            return await self.api(lambda c: c.grant(v["user"] or "", v["pattern"], v["permission"]))

        def granted(entry: dict | None) -> None:
            if entry:
                may = MAY.get(permission_of(entry), permission_of(entry))
                self.set_status(f"{entry['user']} may now {may} {entry['pattern']}.")
                self.reload()

        self.app.push_screen(FormDialog("Grant access", fields, submit, "Grant"), granted)

    def action_revoke_grant(self) -> None:
        self.action_show_tab("acl")
        grant = self._selected("acl", self.grants)
        if grant is None:
            self.notify("No grant selected.", severity="warning")
            return
        user, pattern = grant["user"], grant["pattern"]
        self._confirm(
            f"Revoke {user}'s {permission_of(grant)} access to {pattern}?",
            lambda: self._change(
                lambda c: c.revoke(user, pattern),
                "Revoking the grant",
                f"Revoked {user}'s access to {pattern}.",
            ),
            confirm="Revoke",
        )
