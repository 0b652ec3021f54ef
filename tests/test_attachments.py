"""Attachments against the real daemon, through both doors.

notifyd's: ``POST /v1/attachments`` then an event with ``"attachment": {"id"}``, then
``GET /v1/attachments/{id}``; ntfy's: ``PUT /<topic>`` with a file body and its
``/file/<id>.<ext>`` URL. Byte-identical round trips; who may download (the uploader,
readers of the topic; everyone else 404, anonymous included); size limit and quota
in each door's shape; hostile names; uploads a browser would execute served inert;
the real Apprise ntfy plugin's long message (sent as a text file); attachments by
URL. Expiry and the removal of files from disk are in tests/test_store_attachments.py
(the store's clock, no waiting).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from urllib.parse import quote

import apprise
import httpx
import pytest
from conftest import Daemon, EngineDatabases

pytestmark = pytest.mark.both_engines

MiB = 1024 * 1024
MAX = 3 * MiB
QUOTA = 8 * MiB
PASSWORD = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR"


@pytest.fixture(scope="module")
def nd(
    tmp_path_factory: pytest.TempPathFactory, engine: str, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    """bob: rw on ``bob*``; erin: read on ``bob-shared``; carol: no grants;
    quota: its own user for the quota test."""
    databases = EngineDatabases(request, engine)
    env = {
        "NOTIFYD_ATTACHMENT_MAX_BYTES": str(MAX),
        "NOTIFYD_ATTACHMENT_USER_QUOTA_BYTES": str(QUOTA),
    }
    d = Daemon(tmp_path_factory.mktemp("att") / "data", database_url=databases.new(),
               extra_env=env)  # fmt: skip
    d.data_dir.mkdir()
    request.addfinalizer(databases.drop_all)
    d.start()
    d.tokens = {  # type: ignore[attr-defined]
        "bob": d.user("bob", grants={"bob*": "rw"}),
        "erin": d.user("erin", grants={"bob-shared": "read"}),
        "carol": d.user("carol"),
        "quota": d.user("quota", grants={"quota*": "rw"}),
        "bob_sub": d.user("bob", scopes=["subscribe"]),
    }
    with d.admin() as c:
        r = c.put("/v1/users/bob/password", json={"password": PASSWORD})
        assert r.status_code == 204, r.text
    yield d
    d.stop()


def http(d: Daemon, who: str | None = "bob") -> httpx.Client:
    return d.http(None if who is None else d.tokens[who])  # type: ignore[attr-defined]


def upload(d: Daemon, data: bytes, who: str = "bob", **params: str) -> httpx.Response:
    with http(d, who) as c:
        return c.post("/v1/attachments", content=data, params=params)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_notifyd_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def assert_ntfy_error(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, r.text
    doc = r.json()
    assert (doc["http"], doc["code"]) == (status, code), doc


def files_on_disk(d: Daemon) -> set[str]:
    directory = d.data_dir / "attachments"
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


# -- notifyd's door ---------------------------------------------------------------


def test_round_trip_through_notifyd(nd: Daemon) -> None:
    data = os.urandom(2 * MiB + 777)
    r = upload(nd, data, filename="dump.bin")
    assert r.status_code == 201, r.text
    att = r.json()
    assert set(att) == {"id", "name", "type", "size", "expires_at", "url"}
    assert len(att["id"]) == 12 and att["id"].isalnum() and att["id"].isascii()
    assert (att["name"], att["type"], att["size"]) == ("dump.bin", "application/octet-stream",
                                                       len(data))  # fmt: skip
    assert att["url"] == f"/v1/attachments/{att['id']}"
    if nd.engine == "sqlite":
        assert att["id"] in files_on_disk(nd)

    # the uploader may fetch it before any event carries it
    with http(nd) as c:
        got = c.get(att["url"])
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert got.headers["content-length"] == str(len(data))
        assert c.get(att["url"], headers={"If-None-Match": got.headers["etag"]}).status_code == 304

        r = c.post("/v1/events", json={"topic": "bob-shared", "title": "nightly dump",
                                       "attachment": {"id": att["id"]}})  # fmt: skip
        assert r.status_code == 201, r.text
        ev = r.json()
        assert ev["attachment"] == att
        # shown in history, and the file can carry one event only
        [hist] = c.get("/v1/events", params={"topic": "bob-shared", "limit": 1}).json()["events"]
        assert hist["attachment"] == att
        # the same topic again (a retried publish: the readers are the same) may carry
        # it; another topic's event may not
        again = c.post("/v1/events", json={"topic": "bob-shared", "title": "again",
                                           "attachment": {"id": att["id"]}})  # fmt: skip
        assert again.status_code == 201 and again.json()["attachment"] == att
        elsewhere = c.post("/v1/events", json={"topic": "bob-other", "title": "again",
                                               "attachment": {"id": att["id"]}})  # fmt: skip
        assert_notifyd_error(elsewhere, 409, "conflict")
        unknown = c.post("/v1/events", json={"topic": "bob-shared", "title": "x",
                                             "attachment": {"id": "AAAAAAAAAAAA"}})  # fmt: skip
        assert_notifyd_error(unknown, 422, "invalid")
        assert unknown.json()["error"]["field"] == "attachment.id"
        bad = c.post("/v1/events", json={"topic": "bob-shared", "title": "x",
                                         "attachment": {"id": "../../etc"}})  # fmt: skip
        assert_notifyd_error(bad, 422, "invalid")

    # a reader of the topic gets it; someone without read rights and anonymous: 404
    with http(nd, "erin") as c:
        assert c.get(att["url"]).content == data
    with http(nd, "carol") as c:
        assert_notifyd_error(c.get(att["url"]), 404, "not_found")
    with http(nd, None) as c:
        assert_notifyd_error(c.get(att["url"]), 404, "not_found")
        assert_notifyd_error(c.get(att["url"], params={"token": "nfy_wrong"}), 404, "not_found")
        # ?token= works for clients that cannot set headers
        tok = nd.tokens["erin"]  # type: ignore[attr-defined]
        assert c.get(att["url"], params={"token": tok}).content == data
    # someone else's upload cannot be attached
    other = upload(nd, b"carol's", who="quota").json()
    with http(nd) as c:
        r = c.post("/v1/events", json={"topic": "bob-x", "title": "x",
                                       "attachment": {"id": other["id"]}})  # fmt: skip
        assert_notifyd_error(r, 422, "invalid")
    with http(nd, "carol") as c:  # nor read
        assert_notifyd_error(c.get(other["url"]), 404, "not_found")


def test_batches_external_urls_and_refusals(nd: Daemon) -> None:
    a = upload(nd, b"first", filename="a.txt").json()
    with http(nd) as c:
        r = c.post("/v1/events", json=[
            {"topic": "bob-batch", "title": "one", "attachment": {"id": a["id"]}},
            {"topic": "bob-batch", "title": "two",
             "attachment": {"url": "https://f-droid.org/repo/F-Droid.apk"}},
            {"topic": "bob-batch", "title": "three",
             "attachment": {"url": "https://example.com/x", "name": "../report.pdf"}},
        ])  # fmt: skip
        assert r.status_code == 201, r.text
        one, two, three = r.json()["events"]
        assert one["attachment"]["id"] == a["id"] and one["attachment"]["type"] == "text/plain"
        assert two["attachment"] == {
            "id": None,
            "name": "F-Droid.apk",
            "type": None,
            "size": None,
            "expires_at": None,
            "url": "https://f-droid.org/repo/F-Droid.apk",
        }
        assert three["attachment"]["name"] == "report.pdf"
        r = c.post("/v1/events", json={"topic": "bob-batch", "title": "x",
                                       "attachment": {"url": "javascript:alert(1)"}})  # fmt: skip
        assert_notifyd_error(r, 422, "invalid")
        assert r.json()["error"]["field"].startswith("attachment")
        r = c.post("/v1/events", json={"topic": "bob-batch", "title": "x", "attachment": {}})
        assert_notifyd_error(r, 422, "invalid")
    # uploading needs the publish scope
    with http(nd, "bob_sub") as c:
        assert_notifyd_error(c.post("/v1/attachments", content=b"x"), 403, "forbidden")
    with http(nd, None) as c:
        assert c.post("/v1/attachments", content=b"x").status_code == 401


def test_multipart_upload(nd: Daemon) -> None:
    data = os.urandom(300_000)
    with http(nd) as c:
        r = c.post("/v1/attachments", files={"file": ("photo.jpg", b"\xff\xd8\xff" + data)})
        assert r.status_code == 201, r.text
        att = r.json()
        assert (att["name"], att["type"], att["size"]) == ("photo.jpg", "image/jpeg",
                                                           len(data) + 3)  # fmt: skip
        got = c.get(att["url"])
        assert got.content == b"\xff\xd8\xff" + data
        assert got.headers["content-disposition"].startswith("inline;")


def test_size_limit_and_quota_in_each_doors_shape(nd: Daemon) -> None:
    too_big = os.urandom(MAX + 1)
    assert_notifyd_error(upload(nd, too_big, filename="big.bin"), 413, "too_large")
    with http(nd) as c:
        r = c.put("/bob-big", content=too_big, headers={"Filename": "big.bin"})
    assert_ntfy_error(r, 413, 41301)
    # exactly the limit is fine
    assert upload(nd, os.urandom(MAX), who="quota").status_code == 201
    assert upload(nd, os.urandom(MAX), who="quota").status_code == 201
    # 6 MiB of 8 used: 3 more would pass the quota
    r = upload(nd, os.urandom(MAX), who="quota")
    assert_notifyd_error(r, 507, "quota_exceeded")
    with http(nd, "quota") as c:
        r = c.put("/quota-files", content=os.urandom(MAX), headers={"Filename": "x.bin"})
        assert_ntfy_error(r, 413, 41301)
        # without a declared length (chunked) the quota is checked when it is stored
        r = c.post("/v1/attachments", content=iter([os.urandom(MiB)] * 3))
        assert_notifyd_error(r, 507, "quota_exceeded")
    # a smaller one still fits
    assert upload(nd, os.urandom(MiB), who="quota").status_code == 201


def test_hostile_names_are_cleaned(nd: Daemon) -> None:
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\boot.ini": "boot.ini",
        "evil\r\nSet-Cookie: a=b.txt": "evilSet-Cookie: a=b.txt",
        "\u202egnp.exe": "gnp.exe",
        "...": None,
        "résumé 📄.pdf": "résumé 📄.pdf",
    }
    for raw, want in cases.items():
        r = upload(nd, b"%PDF-1.4 hello", filename=raw)
        assert r.status_code == 201, r.text
        att = r.json()
        if want is None:
            assert att["name"].startswith("attachment.")
        else:
            assert att["name"] == want, raw
        with http(nd) as c:
            got = c.get(att["url"])
        disposition = got.headers["content-disposition"]
        assert "\r" not in disposition and "\n" not in disposition
        assert "filename*=UTF-8''" in disposition
        assert quote(att["name"], safe="") in disposition
    long = upload(nd, b"x", filename="a" * 1000 + ".txt").json()
    assert len(long["name"]) == 255 and long["name"].endswith(".txt")
    # nothing outside the attachments directory
    if nd.engine == "sqlite":
        assert not (nd.data_dir / "passwd").exists()
        assert all(len(n) == 12 for n in files_on_disk(nd))


def test_html_and_svg_are_never_served_as_such(nd: Daemon) -> None:
    html = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for data, name in ((html, "page.html"), (svg, "logo.svg"), (html, "innocent.png"),
                       (html, "x.xhtml"), (b"alert(1)", "app.js")):  # fmt: skip
        att = upload(nd, data, filename=name).json()
        with http(nd) as c:
            got = c.get(att["url"])
        ctype = got.headers["content-type"]
        assert "html" not in ctype and "svg" not in ctype and "javascript" not in ctype, ctype
        assert ctype.startswith(("text/plain", "application/octet-stream")), ctype
        assert got.headers["content-disposition"].startswith("attachment;"), (name, ctype)
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]
        assert got.content == data


# -- ntfy's door ------------------------------------------------------------------


def test_round_trip_through_ntfy(nd: Daemon) -> None:
    data = PNG + os.urandom(MiB)
    with http(nd) as c:
        r = c.put("/bob-shared", content=data, headers={"Filename": "cam.png", "Title": "Door"})
        assert r.status_code == 200, r.text
        msg = r.json()
        att = msg["attachment"]
        assert (att["name"], att["type"], att["size"]) == ("cam.png", "image/png", len(data))
        assert isinstance(att["expires"], int) and att["expires"] > msg["time"]
        assert att["url"].startswith(f"{nd.url}/file/") and att["url"].endswith(".png")
        assert msg["message"] == "You received a file: cam.png" and msg["title"] == "Door"
        ev = c.get("/v1/events", params={"topic": "bob-shared", "limit": 1}).json()["events"][0]
        assert ev["attachment"]["name"] == "cam.png" and ev["attachment"]["size"] == len(data)
        file_id = ev["attachment"]["id"]
        assert att["url"] == f"{nd.url}/file/{file_id}.png"
    path = att["url"][len(nd.url) :]
    # ntfy's apps fetch it with Basic or Bearer credentials
    with http(nd, None) as c:
        got = c.get(path, headers=basic("bob", PASSWORD))
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"].startswith("inline;")
        assert got.headers["x-content-type-options"] == "nosniff"
        # the extension is not checked; the same file by notifyd's URL
        assert c.get(f"/file/{file_id}", headers=basic("bob", PASSWORD)).content == data
        assert c.get(f"/file/{file_id}.bin", headers=basic("bob", PASSWORD)).content == data
        # nobody else: ntfy's 404
        assert_ntfy_error(c.get(path), 404, 40401)
        assert_ntfy_error(c.get(path, headers=basic("bob", "wrong password")), 404, 40401)
        assert_ntfy_error(c.get("/file/..passwd"), 404, 40401)
        assert_ntfy_error(c.get("/file/" + "A" * 5000), 404, 40401)
    with http(nd, "carol") as c:
        assert_ntfy_error(c.get(path), 404, 40401)
    with http(nd, "erin") as c:  # a reader of the topic
        assert c.get(path).content == data
        assert c.get(f"/v1/attachments/{file_id}").content == data


def test_ntfy_bodies_that_are_not_messages_become_files(nd: Daemon) -> None:
    with http(nd) as c:
        binary = b"\xff\xfe\x00" + os.urandom(100)
        r = c.post("/bob-raw", content=binary)
        assert r.status_code == 200, r.text
        assert r.json()["attachment"]["name"] == "attachment.bin"
        assert r.json()["message"] == "You received a file: attachment.bin"
        long_text = ("line of text\n" * 400).encode()  # 5,200 bytes
        r = c.post("/bob-raw", content=long_text, params={"message": "see the log"})
        assert r.status_code == 200, r.text
        msg = r.json()
        assert msg["attachment"]["name"] == "attachment.txt" and msg["message"] == "see the log"
        file_path = msg["attachment"]["url"][len(nd.url) :]
        assert c.get(file_path).content == long_text
        # a short text is a message, as before
        r = c.post("/bob-raw", content="just text")
        assert r.json()["message"] == "just text" and "attachment" not in r.json()


def test_ntfy_attach_by_url(nd: Daemon) -> None:
    with http(nd) as c:
        r = c.post("/bob-url", content="New version",
                   headers={"X-Attach": "https://f-droid.org/F-Droid.apk"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["attachment"] == {"name": "F-Droid.apk",
                                          "url": "https://f-droid.org/F-Droid.apk"}  # fmt: skip
        ev = c.get("/v1/events", params={"topic": "bob-url", "limit": 1}).json()["events"][0]
        assert ev["attachment"] == {"id": None, "name": "F-Droid.apk", "type": None, "size": None,
                                    "expires_at": None,
                                    "url": "https://f-droid.org/F-Droid.apk"}  # fmt: skip
        r = c.post("/bob-url", params={"attach": "https://x.lan/cam.jpg", "filename": "door.jpg"})
        assert r.json()["attachment"]["name"] == "door.jpg"


def test_apprise_sends_a_long_message_as_a_text_file(nd: Daemon) -> None:
    """Apprise's ntfy plugin posts messages whose JSON passes 8,000 bytes as a text
    file (``POST /<topic>?filename=<uuid>.txt``, the title and body as its content):
    the event shows the text's beginning, the file holds all of it."""
    token = nd.tokens["bob"]  # type: ignore[attr-defined]
    host = nd.url.split("://", 1)[1]
    a = apprise.Apprise()
    assert a.add(f"ntfy://{host}/bob-apprise?token={token}&auth=token")
    body = "\n".join(f"{n:05d} the backup job reported a line of output" for n in range(300))
    assert len(body) > 8000
    assert a.notify(body=body, title="Backup report")
    with http(nd) as c:
        ev = c.get("/v1/events", params={"topic": "bob-apprise", "limit": 1}).json()["events"][0]
        sent = "Backup report\n" + body
        assert ev["body"].startswith("Backup report\n00000 the backup job")
        assert len(ev["body"]) <= 4096 and ev["body"].endswith("…")
        att = ev["attachment"]
        assert att["name"].endswith(".txt") and att["type"] == "text/plain"
        got = c.get(att["url"])
        assert got.content.decode() == sent
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
    # a short message is an ordinary one
    assert a.notify(body="all good", title="Backup report")
    with http(nd) as c:
        ev = c.get("/v1/events", params={"topic": "bob-apprise", "limit": 1}).json()["events"][0]
        assert (ev["title"], ev["body"], ev["attachment"]) == ("Backup report", "all good", None)


def test_metrics_count_stored_files_and_bytes(nd: Daemon) -> None:
    def counters() -> tuple[float, float]:
        with nd.admin() as c:
            text = c.get("/metrics").text
        values = dict(
            line.rsplit(" ", 1) for line in text.splitlines()
            if line.startswith("notifyd_attachment_upload")
        )  # fmt: skip
        return (float(values.get("notifyd_attachment_uploads_total", 0)),
                float(values.get("notifyd_attachment_upload_bytes_total", 0)))  # fmt: skip

    files, size = counters()
    assert upload(nd, b"m" * 1234, filename="m.bin").status_code == 201
    assert upload(nd, b"x" * (MAX + 1), filename="big.bin").status_code == 413  # not counted
    assert counters() == (files + 1, size + 1234)


def test_multipart_refusals_store_nothing(nd: Daemon) -> None:
    boundary = "XyZzy42"
    head = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    cases = {
        "no part at all": f"--{boundary}--\r\n".encode(),
        "a part that never ends": (
            f"--{boundary}\r\nContent-Disposition: form-data; name=f; filename=a.bin\r\n\r\nabc"
        ).encode(),
        "not multipart": b"just bytes",
    }
    with http(nd) as c:
        for what, body in cases.items():
            r = c.post("/v1/attachments", content=body, headers=head)
            assert_notifyd_error(r, 400, "bad_request")
            assert r.json()["error"]["field"] == "body", what
        # a good one with a second part: only the first is the file
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=f; filename=one.txt\r\n"
            f"Content-Type: text/plain\r\n\r\nfirst part\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=g\r\n\r\nsecond\r\n--{boundary}--\r\n"
        ).encode()
        r = c.post("/v1/attachments", content=body, headers=head)
        assert r.status_code == 201, r.text
        assert (r.json()["name"], r.json()["size"]) == ("one.txt", len(b"first part"))
        assert c.get(r.json()["url"]).content == b"first part"
