"""Throw malformed requests and WebSocket frames at every door over raw sockets.

A seeded corpus (deterministic: ``NOTIFYD_FUZZ_SEED``, default below; the seed and
the case are in every failure message) of requests that must all be refused:

- heads: bad request lines and versions, huge, duplicate, obs-folded and nameless
  headers, NUL and 0xFF bytes, bad Content-Length, chunked garbage, bad percent
  encoding, unicode digits in ``since``/``Last-Event-ID``, hostile ``Origin`` and
  ``Cookie`` values, broken credentials, malformed RFC 2047 ntfy headers;
- bodies: broken JSON, deep nesting, huge numbers, wrong types, invalid UTF-8;
- WebSocket frames after a valid upgrade: unmasked, RSV bits, fragmented or
  oversized control frames, unknown opcodes, 64 KiB pings, bad close codes,
  continuation frames out of place, random bytes.

Nearly every request case is doomed by construction (no or wrong credentials, or
an invalid parameter, head or body), so the only acceptable answers are a
well-formed 4xx — in the door's JSON error shape when it is JSON — or a closed
connection. A few exploratory cases carry odd values that may well be legal (an
encoded ntfy title, a Gotify form): they may succeed, but never answer 5xx. A
WebSocket case must get its 101 and then be closed (with a close frame that is not
1011, or just closed). After each batch the daemon must be the same process and
answer ``/healthz``, and the daemon must have logged no error.

``NOTIFYD_FUZZ_CASES`` (default 300, a few seconds) sets the size; ``make fuzz``
runs 20,000.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
import trio
from conftest import Daemon, wait_for
from test_guard import SHAPES

CASES = int(os.environ.get("NOTIFYD_FUZZ_CASES", "300"))
SEED = int(os.environ.get("NOTIFYD_FUZZ_SEED", "20261205"))
BATCH = 16
#: a case's connection must end within this (server timeouts are 2 s below)
CASE_TIMEOUT = 20

GOTIFY_PATHS = ("message", "stream", "application", "client", "current", "health", "version",
                "user", "plugin")  # fmt: skip


@dataclass
class World:
    d: Daemon
    pid: int
    token: str  # rw on every topic; scopes publish + subscribe
    app: str  # a publish-only token (a Gotify application)
    client: str  # a subscribe-only token (a Gotify client)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = Daemon(tmp_path_factory.mktemp("fuzz"), extra_env={
        "NOTIFYD_HEADER_TIMEOUT": "2", "NOTIFYD_BODY_TIMEOUT": "2",
        "NOTIFYD_MAX_REQUEST_BYTES": str(256 * 1024),
    })  # fmt: skip
    d.start()
    token = d.user("fuzzer", grants={"*": "rw"})
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": "fuzzer", "scopes": ["publish"], "label": "fz"})
        assert r.status_code == 201, r.text
        app = r.json()["token"]
        r = c.post("/v1/tokens", json={"user": "fuzzer", "scopes": ["subscribe"]})
        assert r.status_code == 201, r.text
        client = r.json()["token"]
    assert d.proc is not None
    yield World(d, d.proc.pid, token, app, client)
    d.stop()


# -- the corpus ---------------------------------------------------------------------------


@dataclass
class Case:
    """One connection's worth of hostility."""

    what: str
    data: bytes  # the request (head and body) as sent
    door: str  # whose error shape a JSON answer must have
    unix: bool = False
    #: a valid WebSocket upgrade: expect 101, then send ``frames`` and expect a close
    frames: bytes | None = None
    #: first a valid request on the same connection (hypercorn then serves the rest)
    reused: bool = False
    path: str = ""
    notes: list[str] = field(default_factory=list)
    #: False for exploratory cases that may be legal: any non-5xx answer will do
    doomed: bool = True


UNICODE_DIGITS = ["²", "١٢٣", "߁", "𝟗", "Ⅻ", "٣"]
SINCE_VALUES = [*UNICODE_DIGITS, "9" * 25, "-1", "1e5", "0x10", "5\t5", "all\x00", "%C2%B2",
                "18446744073709551616", "9223372036854775808", "+3", "3.0", "∞"]  # fmt: skip
#: topic lists that are all invalid (a pattern like '**' is valid: it collapses to '*';
#: core/models.py's patterns also take 'a//b', a trailing '/' and 65-character
#: segments today)
TOPICS = ["a" * 300, "é", "a," * 100, "\x00", "a b", "[", "ok,é", "a?b"]
ORIGINS = ["http://[", "http://]", "null", "http://a:b:c", "\xff", "http://[::1", "//",
           "http://" + "a" * 5000, "http://[fe80::1%25eth0]", "ftp://x", "http://\x00"]  # fmt: skip
COOKIES = ['notifyd_session="' + "\\" * 9000 + '"', "notifyd_session=", "notifyd_session",
           'notifyd_session="\\', "notifyd_session=x; " * 300, "notifyd_session=\xff\xfe",
           "=; =; =", "notifyd_session=" + "a" * 8000, 'a="b; notifyd_session=c"']  # fmt: skip
ENCODED = ["=?UTF-8?B?a?=", "=?bogus?Q?x?=", "=?UTF-8?Q?=FF?=", "=?utf-8?b?" + "!" * 10 + "?=",
           "=?UTF-8?B?8J+HqfCfh6o?=", "=??=", "=?UTF-8*en?Q?x?=", "=?UTF-8?X?abc?=",
           "=?iso-8859-1?q?=E9?= =?UTF-8?B?====?="]  # fmt: skip
AUTHS = ["Bearer", "Bearer ", "Basic !!!", "Basic " + base64.b64encode(b"nouser").decode(),
         "Basic " + base64.b64encode(b":nfy_x").decode(), "Bearer \xff", "Digest x",
         "Bearer nfy_" + "A" * 4000, "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),
         "basic " + base64.b64encode(b"admin:" + b"x" * 2000).decode(), "Bearer nfy_wrong"]  # fmt: skip
BAD_LENGTHS = ["-1", "1e3", "²", "5, 6", "0x10", "99999999999999999999999", " ", "+5"]
BODIES = [b'{"topic": "t", "title": ', b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000,
          b'{"topic": "t", "title": "x", "priority": 1e999}',
          b'{"topic": "t", "title": "x", "priority": ' + b"9" * 400 + b"}",
          b'{"topic": 123, "title": []}', b"\xff\xfe\x00garbage", b'"just a string"', b"null",
          b'{"topic": "t\\u0000", "title": "\\ud800"}', b"[]" * 100, b"{" + b" " * 3000,
          b'{"topic": "t", "title": "x", "actions": [' + b"{}," * 500 + b"{}]}"]  # fmt: skip
#: ntfy publish headers whose values are invalid
NTFY_BAD_HEADERS = [("X-Priority", "9"), ("X-Priority", "²"), ("X-Delay", "9" * 30),
                    ("X-Actions", "view, " + "x," * 500), ("X-Actions", "[{" * 200),
                    ("X-At", "tomorrow, 99pm"), ("X-In", "1e400s"),
                    ("X-Tags", ",".join(f"t{i}" for i in range(200)))]  # fmt: skip
#: odd ntfy publish headers that may or may not be legal (exploratory)
NTFY_ODD_HEADERS = [("X-Delay", "\xb2 days"), ("X-Delay", "\xd9\xa3m"), ("X-Click", "javascript:x"),
                    ("X-Timezone", "../../etc"), ("X-Icon", "ftp://x"), ("X-Attach", "x" * 3000),
                    ("X-Sequence-ID", "\xff" * 10), ("X-Email", "\x00@x"),
                    ("X-Markdown", "\xff"), ("X-Cache", "=?UTF-8?B?bm8=?="),
                    *((h, e) for h in ("X-Title", "X-Tags", "X-Message") for e in ENCODED)]  # fmt: skip


def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def head(
    method: str, target: str, headers: list[tuple[str, str]], version: str = "HTTP/1.1"
) -> bytes:
    lines = [f"{method} {target} {version}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def mutate_head(r: random.Random, data: bytes, notes: list[str]) -> bytes:
    """Damage a head in a way that never makes a doomed request valid."""
    kind = r.randrange(14)
    line_end = data.index(b"\r\n")
    notes.append(f"head-mutation {kind}")
    if kind == 0:  # garbage request line
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 60))) + data[line_end:]
    if kind == 1:  # bad version
        version = r.choice([b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1", b"http/1.1", b"",
                            b"HTTP/1.1 extra", b"HTTP/\xff"])  # fmt: skip
        return data[: data.rindex(b" ", 0, line_end) + 1] + version + data[line_end:]
    if kind == 2:  # huge header
        return data[:line_end] + b"\r\nX-Huge: " + b"h" * r.randrange(8000, 15000) + data[line_end:]
    if kind == 3:  # many headers
        extra = b"".join(b"\r\nX-N%d: v" % i for i in range(r.randrange(50, 300)))
        return data[:line_end] + extra + data[line_end:]
    if kind == 4:  # obs-fold
        return data[:line_end] + b"\r\nX-Fold: a\r\n folded" + data[line_end:]
    if kind == 5:  # a header line without a name or colon
        return data[:line_end] + r.choice([b"\r\nnocolon", b"\r\n: v", b"\r\nX Y: z",
                                           b"\r\nHost : x"]) + data[line_end:]  # fmt: skip
    if kind == 6:  # NUL / 0xFF / control bytes in a value or a name
        bad = r.choice([b"\x00", b"\xff", b"\x7f", b"\x01", b"\r", b"\xc0\xaf"])
        return data[:line_end] + b"\r\nX-Bad" + bad + b": v" + bad + b"v" + data[line_end:]
    if kind == 7:  # bad percent-encoding in the target
        sp = data.index(b" ")
        return data[: sp + 1] + data[sp + 1 : line_end].replace(b"/", b"/%zz%", 1) + data[line_end:]
    if kind == 8:  # non-UTF-8 in the target
        sp = data.index(b" ")
        return data[: sp + 2] + b"\xff\xfe" + data[sp + 2 :]
    if kind == 9:  # bad Content-Length
        return data[:line_end] + b"\r\nContent-Length: " + r.choice(BAD_LENGTHS).encode(
            "utf-8") + data[line_end:]  # fmt: skip
    if kind == 10:  # duplicate Host and Authorization
        return (
            data[:line_end] + b"\r\nHost: a\r\nHost: b\r\nAuthorization: Bearer x" + data[line_end:]
        )
    if kind == 11:  # bare LF line endings
        return data.replace(b"\r\n", b"\n")
    if kind == 12:  # truncated head (the client hangs up)
        return data[: r.randrange(1, max(2, len(data) - 4))]
    # tab and double spaces in the request line
    return data[:line_end].replace(b" ", r.choice([b"\t", b"  "]), 1) + data[line_end:]


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe='%')}" for k, v in params.items())


class Corpus:
    """Doomed requests, door by door; ``auth`` is valid credentials (absent over TCP
    when the case is doomed by credentials)."""

    def __init__(self, w: World, seed: int) -> None:
        self.w = w
        self.r = random.Random(seed)

    # -- building blocks

    def bearer(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.w.token}")]

    def doom_auth(self, headers: list[tuple[str, str]]) -> str:
        """Make a TCP request's credentials fail: none, broken, or wrong."""
        r = self.r
        choice = r.randrange(4)
        if choice == 0:
            return "no credentials"
        if choice == 1:
            headers.append(("Authorization", r.choice(AUTHS)))
            return "broken Authorization"
        if choice == 2:
            headers.append(("Cookie", r.choice(COOKIES)))
            headers.append(("Origin", r.choice(ORIGINS)))
            return "hostile cookie and origin"
        headers.append(("Cookie", "notifyd_session=nope"))
        headers.append(("Origin", r.choice(ORIGINS)))
        return "unknown session, hostile origin"

    def case(self) -> Case:
        r = self.r
        door = r.choice([self.v1_stream, self.v1_events, self.ntfy_stream, self.ntfy_publish,
                         self.gotify_message, self.websocket_frames, self.websocket_frames])  # fmt: skip
        c = door()
        if c.frames is None and r.random() < 0.35:
            c.data = mutate_head(r, c.data, c.notes)
        if c.frames is None and not c.unix and r.random() < 0.15:
            c.reused = True
        return c

    # -- doors

    def v1_stream(self) -> Case:
        r = self.r
        unix = r.random() < 0.3
        sse = r.random() < 0.6
        params: dict[str, str] = {}
        headers = [("Host", "notifyd")]
        notes: list[str] = []
        by_param = unix or r.random() < 0.5
        if by_param:
            if not unix:
                headers += self.bearer()
            bad = r.randrange(3)
            if bad == 0:
                params["since"] = r.choice(SINCE_VALUES)
            elif bad == 1:
                params["topics"] = r.choice(TOPICS[:-1])
            else:
                params["since"] = "1"
                headers.append(("Last-Event-ID", r.choice(SINCE_VALUES)))
                if sse:
                    del params["since"]
                else:
                    params["since"] = r.choice(UNICODE_DIGITS)
            notes.append(f"bad parameter {params or headers[-1]}")
        else:
            notes.append(self.doom_auth(headers))
            if r.random() < 0.5:
                params["since"] = r.choice(SINCE_VALUES)
        if not sse:
            headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Key", r.choice([ws_key(), "!" * 24, "a", ws_key()[:-2]])),
                        ("Sec-WebSocket-Version", r.choice(["13", "13", "8", "x"]))]  # fmt: skip
        path = "/v1/stream/sse" if sse else "/v1/stream"
        target = path + ("?" + _query(params) if params else "")
        return Case(f"v1 {'sse' if sse else 'websocket'}", head("GET", target, headers),
                    "notifyd", unix=unix, path=path, notes=notes)  # fmt: skip

    def v1_events(self) -> Case:
        r = self.r
        unix = r.random() < 0.3
        headers = [("Host", "notifyd")]
        notes: list[str] = []
        if r.random() < 0.5:  # publish
            body = r.choice(BODIES)
            if unix or r.random() < 0.5:
                if not unix:
                    headers += self.bearer()
                notes.append("bad body")
            else:
                notes.append(self.doom_auth(headers))
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            return Case("v1 publish", head("POST", "/v1/events", headers) + body, "notifyd",
                        unix=unix, path="/v1/events", notes=notes)  # fmt: skip
        params = {r.choice(["since", "before", "limit", "min_priority", "topic", "q", "archived"]):
                  r.choice([*SINCE_VALUES, *TOPICS[:3], '"' * 300, "NEAR(" * 50])}  # fmt: skip
        if unix or r.random() < 0.5:
            if not unix:
                headers += self.bearer()
            params["limit"] = "0"  # the one sure invalid value; the other may be legal
            notes.append(f"bad parameter {params}")
        else:
            notes.append(self.doom_auth(headers))
        return Case("v1 history", head("GET", "/v1/events?" + _query(params), headers), "notifyd",
                    unix=unix, path="/v1/events", notes=notes)  # fmt: skip

    def ntfy_stream(self) -> Case:
        r = self.r
        unix = r.random() < 0.3
        fmt = r.choice(["json", "sse", "raw", "ws"])
        topic = r.choice(["fz", "fz,other", "fz" + "x" * 30])
        headers = [("Host", "notifyd")]
        notes: list[str] = []
        query: dict[str, str] = {}
        if unix or r.random() < 0.5:
            if not unix:
                headers += self.bearer()
            bad = r.randrange(3)
            if bad == 0:
                query["since"] = r.choice(SINCE_VALUES)
            elif bad == 1:
                headers.append((r.choice(["X-Poll", "X-Since", "X-Priority", "X-Tags", "X-Title"]),
                                r.choice(ENCODED)))  # fmt: skip
                headers.append(("X-Priority", "9"))  # an encoded word may decode to a fine value
            else:
                query[r.choice(["priority", "p"])] = r.choice(["9", "²", "x", "0"])
            notes.append(f"bad parameter {query or headers[-2:]}")
        else:
            if r.random() < 0.3:
                query["auth"] = r.choice(["!!!", "YQ", base64.b64encode(b"Basic x").decode()])
                notes.append("broken ?auth=")
            else:
                notes.append(self.doom_auth(headers))
        if fmt == "ws":
            headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Key", r.choice([ws_key(), "!" * 24, ws_key()[:-2]])),
                        ("Sec-WebSocket-Version", "13")]  # fmt: skip
        path = f"/{topic}/{fmt}"
        target = path + ("?" + _query(query) if query else "")
        return Case(f"ntfy {fmt}", head("GET", target, headers), "ntfy", unix=unix, path=path,
                    notes=notes)  # fmt: skip

    def ntfy_publish(self) -> Case:
        r = self.r
        unix = r.random() < 0.3
        headers = [("Host", "notifyd")]
        notes: list[str] = []
        json_publish = r.random() < 0.3
        if unix or r.random() < 0.5:
            if not unix:
                headers += self.bearer()
            if json_publish:
                body = r.choice(BODIES)
                notes.append("bad JSON body")
            else:
                name, value = r.choice(NTFY_BAD_HEADERS)
                headers.append((name, value))
                body = r.choice([b"hello", b"\xff\xfe", b"x" * 5000, b""])
                notes.append(f"bad header {name}")
                odd = r.choice(NTFY_ODD_HEADERS)
                if r.random() < 0.5 and odd[0] != name:  # something odd besides, maybe legal
                    headers.insert(1, odd)
                    notes.append(f"odd header {odd[0]}")
                    if r.random() < 0.5:  # ... alone: an exploratory case
                        headers = [h for h in headers if h != (name, value)]
                        notes.append("exploratory")
        else:
            notes.append(self.doom_auth(headers))
            body = b"hello"
        headers.append(("Content-Length", str(len(body))))
        method = r.choice(["POST", "PUT"])
        path = "/" if json_publish else r.choice(["/fz", "/fz/seq1"])
        return Case("ntfy publish", head(method, path, headers) + body, "ntfy", unix=unix,
                    path=path, notes=notes, doomed="exploratory" not in notes)  # fmt: skip

    def gotify_message(self) -> Case:
        r = self.r
        headers = [("Host", "notifyd")]
        notes: list[str] = []
        if r.random() < 0.5:
            headers.append(("X-Gotify-Key", self.w.app))
            kind = r.randrange(3)
            if kind == 0:
                body = r.choice(BODIES)
                headers.append(("Content-Type", "application/json"))
            elif kind == 1:
                body = json.dumps(
                    {
                        "message": r.choice([None, 5, [], {}, ""]),
                        "priority": r.choice(["x", 1e300, 10**30, [], True]),
                        "extras": r.choice([[], "x", {"a": "b" * 40000}]),
                    }
                ).encode()
                headers.append(("Content-Type", "application/json"))
            else:
                body = b"message=&priority=" + r.choice([b"%C2%B2", b"x", b"9" * 40, b"%ff"])
                headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            notes.append(f"bad body kind {kind}")
        else:
            body = b'{"message": "m"}'
            if r.random() < 0.5:
                headers.append(("X-Gotify-Key", r.choice(["", "\xff", "x" * 5000, self.w.client])))
                notes.append("wrong key")  # a token without the 'publish' scope, or junk
            else:
                notes.append(self.doom_auth(headers))
            headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(body))))
        target = "/message" + r.choice(["", "?token=%ff", "?token=" + "x" * 3000])
        if "?token=" in target:
            headers = [h for h in headers if h[0] != "X-Gotify-Key"]
            notes.append("bad ?token=")
        return Case("gotify message", head("POST", target, headers) + body, "gotify",
                    path="/message", notes=notes)  # fmt: skip

    def websocket_frames(self) -> Case:
        r = self.r
        unix = r.random() < 0.3
        door, path = r.choice([("notifyd", "/v1/stream"), ("ntfy", "/fz/ws"),
                               ("gotify", "/stream")])  # fmt: skip
        headers = [("Host", "notifyd"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Key", ws_key()), ("Sec-WebSocket-Version", "13")]  # fmt: skip
        if not unix:
            headers += self.bearer() if door != "gotify" else [("X-Gotify-Key", self.w.client)]
        frames, what = bad_frames(r)
        return Case(f"{door} websocket frames: {what}", head("GET", path, headers), door,
                    unix=unix, frames=frames, path=path, reused=r.random() < 0.3,
                    notes=[what])  # fmt: skip


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length: int | None = None) -> bytes:  # fmt: skip
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    if n < 126:
        header = struct.pack("!BB", b0, (0x80 if masked else 0) | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, (0x80 if masked else 0) | 126, n)
    else:
        header = struct.pack("!BBQ", b0, (0x80 if masked else 0) | 127, n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def bad_frames(r: random.Random) -> tuple[bytes, str]:
    """A few harmless frames, then one RFC 6455 forbids."""
    prefix = b"".join(r.choice([frame(0x9, b"hi"), frame(0x1, b"x" * r.randrange(200)),
                                frame(0xA, b"")]) for _ in range(r.randrange(3)))  # fmt: skip
    kind = r.randrange(12)
    if kind == 0:
        return prefix + frame(0x1, b"hello", masked=False), "unmasked"
    if kind == 1:
        return prefix + frame(0x1, b"hello", rsv=r.randrange(1, 8)), "RSV bits"
    if kind == 2:
        return prefix + frame(0x9, b"p", fin=False), "fragmented ping"
    if kind == 3:
        return prefix + frame(
            r.choice([0x8, 0x9, 0xA]), b"c" * r.randrange(126, 300)
        ), "big control"
    if kind == 4:
        op = r.choice([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
        return prefix + frame(op, b"?"), f"opcode {op:#x}"
    if kind == 5:
        return prefix + frame(0x9, b"P" * 65536), "64 KiB ping"
    if kind == 6:
        code = r.choice([0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
        return prefix + frame(0x8, struct.pack("!H", code) + b"bye"), f"close code {code}"
    if kind == 7:
        return prefix + frame(0x8, b"\x03"), "close with a 1-byte payload"
    if kind == 8:
        return prefix + frame(0x0, b"cont"), "continuation outside a message"
    if kind == 9:
        return prefix + frame(0x1, b"a", fin=False) + frame(0x1, b"b"), "new message inside one"
    if kind == 10:
        return prefix + frame(0x1, b"", length=(1 << 63) + 5), "64-bit length with the top bit"
    return prefix + bytes(r.randrange(256) for _ in range(r.randrange(2, 64))), "random bytes"


# -- talking to the daemon ----------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*")


async def read_until_closed(stream: trio.abc.Stream, buf: bytes = b"") -> bytes:
    try:
        while chunk := await stream.receive_some(65536):
            buf += chunk
            if len(buf) > 1 << 20:
                raise AssertionError("the server keeps talking")
    except trio.BrokenResourceError:
        pass
    return buf


def _complete(buf: bytes) -> bool:
    """Whether ``buf`` holds a whole answer with a Content-Length body."""
    if b"\r\n\r\n" not in buf:
        return False
    head_, body = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head_, re.I)
    return m is not None and len(body) >= int(m.group(1))


async def read_http_answer(stream: trio.abc.Stream) -> bytes:
    """The first answer: up to the end of its Content-Length body, or until the
    server closes (an answer without a length, or none at all)."""
    buf = b""
    try:
        while not _complete(buf) and (chunk := await stream.receive_some(65536)):
            buf += chunk
            if len(buf) > 1 << 20:
                raise AssertionError("the server keeps talking")
    except trio.BrokenResourceError:
        pass
    return buf


def check_http_answer(c: Case, data: bytes) -> int | None:
    """The answer's status (None: closed without one); fails on anything but a
    well-formed 4xx in the door's shape."""
    if not data:
        return None
    assert b"\r\n\r\n" in data, f"an incomplete answer: {data[:300]!r}"
    head_, body = data.split(b"\r\n\r\n", 1)
    lines = head_.split(b"\r\n")
    m = STATUS_LINE.fullmatch(lines[0])
    assert m is not None, f"a malformed status line: {lines[0]!r}"
    status = int(m.group(1))
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        assert colon and name and name == name.strip(), f"a malformed header line {line!r}"
        headers[name.lower()] = value.strip()
    if c.doomed:
        assert 400 <= status < 500, f"status {status}: {data[:500]!r}"
    else:
        assert status < 500, f"status {status}: {data[:500]!r}"
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(body) < length and "head-mutation 12" in c.notes:
            return status  # we hung up mid-request: the answer was cut off with it
        assert len(body) >= length, f"a body shorter than its Content-Length: {data[:500]!r}"
        body = body[:length]
    if status >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
        doc = json.loads(body)
        sent_path = c.data.split(b" ", 2)[1].split(b"?")[0] if c.data.count(b" ") >= 2 else b""
        if sent_path == c.path.encode():
            SHAPES[c.door](doc, status)
        else:  # the mutation changed the path: any door may have answered
            assert any(_fits(shape, doc, status) for shape in SHAPES.values()), doc
    return status


def _fits(shape: Callable[[object, int], None], doc: object, status: int) -> bool:
    try:
        shape(doc, status)
    except (AssertionError, KeyError, TypeError):
        return False
    return True


def close_codes(data: bytes) -> list[int]:
    """Close codes in unmasked server frames."""
    codes = []
    while len(data) >= 2:
        opcode, n, pos = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            n, pos = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, pos = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < pos + n:
            break
        if opcode == 0x8:
            codes.append(struct.unpack("!H", data[pos : pos + 2])[0] if n >= 2 else 1005)
        data = data[pos + n :]
    return codes


async def run_case(w: World, c: Case) -> None:
    if c.unix:
        stream: trio.SocketStream = await trio.open_unix_socket(str(w.d.socket))
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", w.d.port)
    async with stream:
        with trio.fail_after(CASE_TIMEOUT):
            pending = b""
            if c.reused:
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\n\r\n")
                while b"}" not in pending:  # /healthz answers one small JSON object
                    chunk = await stream.receive_some(65536)
                    assert chunk, "closed after /healthz"
                    pending += chunk
                pending = b""
            try:
                await stream.send_all(c.data)
            except trio.BrokenResourceError:
                pass  # refused while we were still sending: what the answer says counts
            if c.frames is None:
                try:
                    await stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                check_http_answer(c, await read_http_answer(stream))
                return
            while b"\r\n\r\n" not in pending:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed during the handshake: {pending!r}"
                pending += chunk
            head_, rest = pending.split(b"\r\n\r\n", 1)
            assert head_.startswith(b"HTTP/1.1 101 "), head_
            try:
                await stream.send_all(c.frames)
                # a frame may announce more than was sent: the hang-up ends it
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            codes = close_codes(await read_until_closed(stream, rest))
            assert 1011 not in codes, f"closed as an internal error: {codes}"


def check_alive(w: World) -> None:
    assert w.d.proc is not None and w.d.proc.poll() is None, w.d.log()[-4000:]
    assert w.d.proc.pid == w.pid
    wait_for(lambda: httpx.get(w.d.url + "/healthz", timeout=5).status_code == 200,
             timeout=20, message="/healthz after a batch")  # fmt: skip


@pytest.mark.trio
async def test_every_door_survives_the_corpus(world: World) -> None:
    corpus = Corpus(world, SEED)
    cases = [corpus.case() for _ in range(CASES)]
    failures: list[str] = []

    async def one(i: int, c: Case) -> None:
        try:
            await run_case(world, c)
        except (AssertionError, trio.TooSlowError, OSError, ValueError) as exc:
            failures.append(
                f"case {i} ({c.what}; {', '.join(c.notes)}; unix={c.unix} reused={c.reused}): "
                f"{type(exc).__name__}: {str(exc)[:400]}\n    request: {c.data[:300]!r}"
            )

    for start in range(0, len(cases), BATCH):
        async with trio.open_nursery() as nursery:
            for i in range(start, min(start + BATCH, len(cases))):
                nursery.start_soon(one, i, cases[i])
        await trio.to_thread.run_sync(check_alive, world)
    assert not failures, (
        f"NOTIFYD_FUZZ_SEED={SEED} NOTIFYD_FUZZ_CASES={CASES}: {len(failures)} of {len(cases)} "
        "cases failed:\n" + "\n".join(failures[:30])
    )
    errors = [line for line in world.d.log().splitlines() if "level=error" in line]
    assert not errors, f"NOTIFYD_FUZZ_SEED={SEED}: the daemon logged errors:\n" + "\n".join(
        errors[:20]
    )
