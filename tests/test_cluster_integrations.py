"""Issue 18 in cluster mode: two real nodes on one real PostgreSQL. A file uploaded
on one node is served byte for byte by the other (its bytes live in the database,
not on the node that took them); a hook made on one node takes signed requests on
the other (its secret is shared through the database); and the installation key
that signs the attachment links of pushes is the same on every node."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable

import httpx
from conftest import Daemon
from pg import connect

from notifyd.core.attachments import LINK_KEY, link_signature

DATA = secrets.token_bytes(2 * 1024 * 1024 + 12345)  # crosses the 1 MiB chunk rows


def test_files_hooks_and_links_work_on_every_node(
    make_pg_node: Callable[..., Daemon], pg_database: str
) -> None:
    a, b = make_pg_node().start(), make_pg_node().start()
    token = a.user("bob", grants={"bob*": "rw"}, scopes=["publish", "subscribe", "account"])
    with a.http(token) as c:
        r = c.post("/v1/attachments", params={"filename": "dump.bin"}, content=DATA)
        assert r.status_code == 201, r.text
        att = r.json()
        r = c.post("/v1/events", json={"topic": "bob-files", "title": "dump",
                                        "attachment": {"id": att["id"]}})  # fmt: skip
        assert r.status_code == 201, r.text
        hook = c.post("/v1/hooks", json={"name": "gh", "topic": "bob-ci", "template": "github"})
        assert hook.status_code == 201, hook.text
    # the other node serves the file, through both doors
    with b.http(token) as c:
        got = c.get(f"/v1/attachments/{att['id']}")
        assert got.status_code == 200 and got.content == DATA
        [ev] = c.get("/v1/events", params={"topic": "bob-files"}).json()["events"]
        assert ev["attachment"]["id"] == att["id"]
    basic = base64.b64encode(f":{token}".encode()).decode()
    ntfy = httpx.get(f"{b.url}/file/{att['id']}.bin", headers={"Authorization": f"Basic {basic}"},
                     timeout=30)  # fmt: skip
    assert ntfy.status_code == 200 and ntfy.content == DATA

    # a hook made on node A takes a GitHub-signed request on node B
    made = hook.json()
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    signature = hmac.new(made["secret"].encode(), body, hashlib.sha256).hexdigest()
    r = httpx.post(f"{b.url}/v1/hooks/{made['id']}", content=body, timeout=10, headers={
        "X-GitHub-Event": "ping", "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    })  # fmt: skip
    assert r.status_code == 200 and r.json()["ignored"] == "ping", r.text
    wrong = hmac.new(b"another secret", body, hashlib.sha256).hexdigest()
    r = httpx.post(f"{b.url}/v1/hooks/{made['id']}", content=body, timeout=10,
                   headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": f"sha256={wrong}"})  # fmt: skip
    assert r.status_code == 401

    # one link key for the installation: a link signed with it opens the file on
    # either node, without credentials
    with connect(pg_database) as conn:
        rows = conn.execute("SELECT value FROM server_keys WHERE name = %s", (LINK_KEY,))
        [(key,)] = rows.fetchall()
    sig = link_signature(bytes(key), att["id"], att["expires_at"])
    for node in (a, b):
        r = httpx.get(f"{node.url}/v1/attachments/{att['id']}", params={"sig": sig}, timeout=30)
        assert r.status_code == 200 and r.content == DATA
        assert httpx.get(f"{node.url}/v1/attachments/{att['id']}", timeout=10).status_code == 404
