"""notifyd under systemd: the units in contrib/systemd, socket activation with named
descriptors, sd_notify (READY/STATUS/STOPPING/WATCHDOG) and journald-style logs.

PID 1 here is not systemd, so the daemon runs under ``systemd-socket-activate``,
which passes listening sockets the way systemd does (``LISTEN_FDS``,
``LISTEN_FDNAMES``, ``LISTEN_PID``, and only the environment it is given), and a
datagram socket bound by the test stands in for systemd's ``NOTIFY_SOCKET``. The
last test runs the daemon inside an emulation of the unit's sandbox
(``tests/sdsandbox.py``: its seccomp filters, no capabilities, a read-only system).
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, wait_for
from pushservice import PushService
from smtpsink import SMTPSink

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
UNIT_NAMES = ("notifyd.service", "notifyd.socket", "notifyd-http.socket")
NOTIFYD = Path(sys.executable).parent / "notifyd"
ACTIVATE = shutil.which("systemd-socket-activate")

needs_activate = pytest.mark.skipif(
    ACTIVATE is None, reason="systemd-socket-activate is not installed (package systemd)"
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="nfy-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- the unit files -----------------------------------------------------------


def unit_settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd): cannot verify the units",
)
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    for name in UNIT_NAMES:
        text = (UNITS / name).read_text()
        if name == "notifyd.service":
            # verify checks that ExecStart= exists: use this checkout's notifyd
            text, n = re.subn(r"(?m)^ExecStart=/opt/notifyd/bin/notifyd ",
                              f"ExecStart={NOTIFYD} ", text)  # fmt: skip
            assert n == 1, "ExecStart= should run /opt/notifyd/bin/notifyd"
        (tmp_path / name).write_text(text)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_COLOR": "0"}
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in UNIT_NAMES)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    ours = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if str(tmp_path) in line or any(n in line for n in UNIT_NAMES)
    ]
    assert r.returncode == 0 and not ours, f"rc={r.returncode}\n{r.stdout}{r.stderr}"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd): cannot verify the units",
)
def test_the_cluster_node_template_verifies_and_names_each_node(tmp_path: Path) -> None:
    """contrib/systemd/notifyd@.service: one cluster node per instance; systemd
    verifies an instance of it (notifyd@a), and each instance has its own name,
    listen address (its environment file) and admin socket."""
    text = (UNITS / "notifyd@.service").read_text()
    text, n = re.subn(r"(?m)^ExecStart=/opt/notifyd/bin/notifyd ", f"ExecStart={NOTIFYD} ", text)
    assert n == 1
    (tmp_path / "notifyd@a.service").write_text(text)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_COLOR": "0"}
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "notifyd@a.service")],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "notifyd@" in line]
    assert r.returncode == 0 and not ours, f"rc={r.returncode}\n{r.stdout}{r.stderr}"
    unit = unit_settings("notifyd@.service")
    assert unit["ExecStart"] == [
        "/opt/notifyd/bin/notifyd serve --config /etc/notifyd/notifyd.toml --node-name %i"
    ]
    assert unit["EnvironmentFile"] == ["/etc/notifyd/node-%i.env"]
    assert "NOTIFYD_SOCKET=/run/notifyd/%i.sock" in unit["Environment"]
    assert unit["RuntimeDirectoryPreserve"] == ["yes"]  # shared by the nodes
    # the same sandbox as the single-machine unit
    single = unit_settings("notifyd.service")
    for key in (
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "ProtectSystem",
        "CapabilityBoundingSet",
    ):
        assert unit[key] == single[key], key


def test_units_name_the_descriptors_and_point_at_the_service() -> None:
    service = unit_settings("notifyd.service")
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["Sockets"] == ["notifyd.socket notifyd-http.socket"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "NOTIFYD_SOCKET=/run/notifyd/notifyd.sock" in service["Environment"]
    assert "NOTIFYD_DATA_DIR=/var/lib/notifyd" in service["Environment"]
    # the Unix socket: FileDescriptorName= names every descriptor of its unit, so
    # the admin socket and the HTTP listener are two units
    admin = unit_settings("notifyd.socket")
    assert admin["ListenStream"] == ["/run/notifyd/notifyd.sock"]
    assert admin["FileDescriptorName"] == ["socket"] and admin["SocketMode"] == ["0660"]
    assert admin["Service"] == ["notifyd.service"]
    http = unit_settings("notifyd-http.socket")
    assert http["ListenStream"] == ["127.0.0.1:8780"]
    assert http["FileDescriptorName"] == ["http"] and http["Service"] == ["notifyd.service"]


# --- the daemon under systemd-socket-activate -----------------------------------


@dataclass
class NotifySocket:
    """Stands in for systemd's NOTIFY_SOCKET; records each message and its sender."""

    path: Path
    sock: socket.socket = field(init=False)
    messages: list[tuple[int, str]] = field(default_factory=list)  # (pid, text)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.05)

    def drain(self) -> list[tuple[int, str]]:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                return self.messages
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode()))

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 10) -> str:
        def found() -> str | None:
            return next((m for _, m in self.drain() if predicate(m)), None)

        return wait_for(found, timeout, message=what)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Activated:
    """notifyd exec'ed by systemd-socket-activate with a TCP and a Unix listener."""

    root: Path
    env: dict[str, str]
    order: str = "http,socket"  # the order of the -l options
    fdnames: str | None = None  # --fdname=..., None: the names matching ``order``
    port: int = field(default_factory=free_port)
    sandbox: bool = False  # run notifyd inside the unit's sandbox (tests/sdsandbox.py)
    proc: subprocess.Popen | None = None

    @property
    def unix(self) -> Path:
        return self.root / "s.sock"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Activated:
        addrs = {"http": f"127.0.0.1:{self.port}", "socket": str(self.unix)}
        kinds = self.order.split(",")
        names = self.fdnames if self.fdnames is not None else ":".join(kinds)
        cmd = [ACTIVATE or "systemd-socket-activate"]
        for kind in kinds:
            cmd += ["-l", addrs[kind]]
        if names:
            cmd.append(f"--fdname={names}")
        for key, value in self.env.items():
            cmd += ["-E", f"{key}={value}"]
        cmd.append("--")
        if self.sandbox:
            # exec after exec: LISTEN_PID stays right
            cmd += [sys.executable, str(Path(__file__).parent / "sdsandbox.py"),
                    str(UNITS / "notifyd.service"), self.env["NOTIFYD_DATA_DIR"], "--"]  # fmt: skip
        cmd += [str(NOTIFYD), "serve"]
        with (
            open(self.root / "stdout.log", "wb") as out,
            open(self.root / "stderr.log", "wb") as err,
        ):
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        return self

    def stderr(self) -> str:
        return (self.root / "stderr.log").read_text(errors="replace")

    def wait_serving(self, timeout: float = 30) -> None:
        """The first connection makes systemd-socket-activate exec notifyd."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=10).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"notifyd did not serve /healthz:\n{self.stderr()}")
            time.sleep(0.02)

    def admin(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.unix)),
                            base_url="http://notifyd", timeout=10)  # fmt: skip

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"notifyd did not stop in time\n{self.stderr()}") from None
        return self.proc.returncode


@pytest.fixture
def activate(short_dir: Path) -> Iterator[Callable[..., Activated]]:
    started: list[Activated] = []

    def make(env: dict[str, str] | None = None, **kw: Any) -> Activated:
        root = short_dir / f"a{len(started)}"
        root.mkdir()
        base = {"NOTIFYD_DATA_DIR": str(root / "data")}
        a = Activated(root, {**base, **(env or {})}, **kw)
        started.append(a)
        return a.start()

    yield make
    for a in started:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _socket_inodes(pid: int) -> dict[int, int]:
    """{inode: fd} of the sockets process ``pid`` holds."""
    out = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            out[int(m.group(1))] = int(fd.name)
    return out


def _listening_inodes() -> set[int]:
    """Inodes of every listening TCP and Unix stream socket on this machine."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        inodes |= {int(cols[9]) for cols in map(str.split, lines) if cols[3] == "0A"}
    for cols in map(str.split, Path("/proc/net/unix").read_text().splitlines()[1:]):
        # Flags with __SO_ACCEPTCON (0x10000): a listening socket
        if int(cols[3], 16) & 0x10000:
            inodes.add(int(cols[6]))
    return inodes


@needs_activate
@pytest.mark.parametrize(
    ("order", "fdnames"),
    [("http,socket", None), ("socket,http", None), ("socket,http", "")],
    ids=["named", "named-reversed", "unnamed"],
)
def test_socket_activation_serves_on_the_passed_fds_and_binds_nothing_else(
    activate: Callable[..., Activated], short_dir: Path, order: str, fdnames: str | None
) -> None:
    configured_port = free_port()
    configured_sock = short_dir / "configured.sock"
    a = activate(
        {"NOTIFYD_LISTEN": f"127.0.0.1:{configured_port}", "NOTIFYD_SOCKET": str(configured_sock)},
        order=order, fdnames=fdnames,
    )  # fmt: skip
    a.wait_serving()
    assert a.proc is not None
    pid = a.proc.pid  # systemd-socket-activate exec'ed notifyd: same process

    # the Unix socket acts as the admin; TCP needs a token
    with a.admin() as c:
        assert c.get("/v1/users").status_code == 200
        r = c.post("/v1/tokens", json={"user": "admin"})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    with httpx.Client(base_url=a.url, timeout=10) as http:
        assert http.get("/v1/users").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        r = http.post(
            "/v1/events", json={"topic": "sd", "title": "via the passed fd"}, headers=auth
        )
        assert r.status_code == 201, r.text
        event_id = r.json()["id"]
        r = http.get("/v1/events", params={"topic": "sd"}, headers=auth)
        assert [e["id"] for e in r.json()["events"]] == [event_id], r.text

    # nothing else is bound: not the configured address, not the configured socket
    assert not configured_sock.exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", configured_port))
    # the only listening sockets held by notifyd and its delivery worker are the
    # two passed in as descriptors 3 and 4
    listening = _listening_inodes()
    held = _socket_inodes(pid)
    assert sorted(fd for inode, fd in held.items() if inode in listening) == [3, 4], held
    workers = _children(pid)
    assert workers, "the delivery worker should be running"
    for child in workers:
        assert not set(_socket_inodes(child)) & listening, f"worker {child} holds a listener"
    assert a.stop() == 0, a.stderr()


@needs_activate
def test_a_tcp_listener_named_socket_is_refused(activate: Callable[..., Activated]) -> None:
    """The admin socket grants admin without credentials: never over TCP."""
    a = activate(order="http", fdnames="socket")
    # the first connection makes systemd-socket-activate exec notifyd
    conn = wait_for(lambda: socket.create_connection(("127.0.0.1", a.port), timeout=10),
                    message="systemd-socket-activate to listen")  # fmt: skip
    with conn:
        assert a.proc is not None
        assert a.proc.wait(30) != 0
    assert "is named 'socket' (the admin socket) but is not a Unix socket" in a.stderr()


@needs_activate
def test_sd_notify_ready_status_watchdog_and_stopping(
    activate: Callable[..., Activated], short_dir: Path
) -> None:
    notify = NotifySocket(short_dir / "notify")
    try:
        a = activate({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"})
        a.wait_serving()
        assert a.proc is not None
        pid = a.proc.pid
        ready = notify.wait(lambda m: "READY=1" in m.split("\n"), "READY=1")
        status = [line for line in ready.split("\n") if line.startswith("STATUS=")]
        assert status and "serving" in status[0], ready
        # pings every WATCHDOG_USEC/2
        wait_for(
            lambda: sum(m == "WATCHDOG=1" for _, m in notify.drain()) >= 5,
            timeout=10, message="five WATCHDOG=1 pings",
        )  # fmt: skip
        assert a.stop() == 0, a.stderr()
        notify.drain()
        texts = [m for _, m in notify.messages]
        stopping = [i for i, m in enumerate(texts) if "STOPPING=1" in m.split("\n")]
        assert stopping, texts
        assert any(m.startswith("STATUS=") and "stop" in m for m in texts), texts
        # NotifyAccess=main: every message comes from notifyd itself, none from its worker
        assert {sender for sender, _ in notify.messages} == {pid}, notify.messages
        # READY before STOPPING
        ready_at = next(i for i, m in enumerate(texts) if "READY=1" in m.split("\n"))
        assert ready_at < stopping[0]
    finally:
        notify.close()


@needs_activate
def test_without_watchdog_usec_there_are_no_pings(
    activate: Callable[..., Activated], short_dir: Path
) -> None:
    notify = NotifySocket(short_dir / "notify")
    try:
        a = activate({"NOTIFY_SOCKET": str(notify.path)})
        a.wait_serving()
        notify.wait(lambda m: "READY=1" in m.split("\n"), "READY=1")
        assert a.stop() == 0
        notify.drain()
        assert not any("WATCHDOG=1" in m for _, m in notify.messages), notify.messages
    finally:
        notify.close()


@needs_activate
def test_logs_under_journald_carry_priorities_and_no_timestamps(
    activate: Callable[..., Activated],
) -> None:
    # systemd sets JOURNAL_STREAM when stderr is connected to the journal
    a = activate({"JOURNAL_STREAM": "8:12345", "NOTIFYD_LOG_LEVEL": "debug"})
    a.wait_serving()
    assert a.stop() == 0
    lines = [line for line in a.stderr().splitlines() if "level=" in line]
    assert lines, a.stderr()
    for line in lines:
        assert re.match(r"<[0-7]>level=", line), line
        assert "ts=" not in line, line
    assert any(line.startswith("<6>level=info ") for line in lines), lines
    assert any(line.startswith("<7>level=debug ") for line in lines), lines


@needs_activate
def test_logs_outside_journald_carry_timestamps(activate: Callable[..., Activated]) -> None:
    a = activate()
    a.wait_serving()
    assert a.stop() == 0
    lines = [line for line in a.stderr().splitlines() if "level=" in line]
    assert lines and all(line.startswith("ts=") for line in lines), a.stderr()


def _sandbox_unavailable() -> str | None:
    if ACTIVATE is None:
        return "systemd-socket-activate is not installed (package systemd)"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed: it expands SystemCallFilter= groups"
    if os.geteuid() != 0:
        return "emulating the unit's sandbox needs root (a mount namespace, dropping capabilities)"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp is not installed: the unit's seccomp filters cannot be emulated"
    return None


@pytest.mark.skipif(_sandbox_unavailable() is not None, reason=str(_sandbox_unavailable()))
def test_daemon_and_delivery_worker_work_inside_the_units_sandbox(
    activate: Callable[..., Activated],
) -> None:
    """SystemCallFilter=, MemoryDenyWriteExecute=, RestrictAddressFamilies=, no
    capabilities, a read-only file system: argon2 (sign-in), cryptography (VAPID
    key, Web Push encryption) and Apprise (SMTP) still work, in the daemon and in
    its delivery worker."""
    with PushService() as push:
        sink = SMTPSink().start()
        try:
            a = activate({"NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "true"}, sandbox=True)
            a.wait_serving()
            assert a.proc is not None
            status = Path(f"/proc/{a.proc.pid}/status").read_text()
            assert re.search(r"^Seccomp:\s+2$", status, re.M), status
            assert re.search(r"^CapEff:\s+0+$", status, re.M), status
            with a.admin() as c:
                r = c.post("/v1/users", json={"name": "alice", "password": "correct horse"})
                assert r.status_code == 201, r.text
                r = c.post("/v1/acl", json={"user": "alice", "pattern": "sd/*", "permission": "rw"})
                assert r.status_code == 201, r.text
                scopes = ["publish", "subscribe", "account"]  # account: to subscribe
                r = c.post("/v1/tokens", json={"user": "alice", "scopes": scopes})
                token = r.json()["token"]
                r = c.post("/v1/channels", json={"name": "mail", "url": sink.url()})
                assert r.status_code == 201, r.text
            with httpx.Client(base_url=a.url, timeout=10) as web:  # argon2 verify
                r = web.post("/v1/session", json={"username": "alice", "password": "correct horse"})
                assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=a.url, headers=auth, timeout=10) as c:
                push.vapid_public_key = c.get("/v1/webpush/vapid-public-key").json()["public_key"]
                sub = push.subscribe()
                r = c.post("/v1/webpush/subscriptions", json=sub.info())
                assert r.status_code == 201, r.text
                r = c.post("/v1/events", json={"topic": "sd/x", "title": "sandboxed"})
                assert r.status_code == 201, r.text
            got = wait_for(lambda: push.received(sub), timeout=30, message="the push")[0]
            assert got.error is None and got.payload is not None, got.error
            assert got.payload["title"] == "sandboxed"
            [mail] = sink.wait_for_messages(1)
            assert mail.subject == "sandboxed"
            assert a.stop() == 0, a.stderr()
            errors = [line for line in a.stderr().splitlines()
                      if "level=error" in line or "Traceback" in line]  # fmt: skip
            assert not errors, a.stderr()
        finally:
            sink.stop()
